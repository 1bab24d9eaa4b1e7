//! Build contexts: a pod's `build.context` directory read as the engine's build input (a
//! tar stream) and as a content digest, so that a change to the files is a change to the
//! pod (and only a change to the files: modification times do not count, so a fresh
//! checkout of the same commit is the same image).
//!
//! TODO-design: `.dockerignore` is not read yet; everything but `.git` is sent.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot read the build context `{path}`: {reason}")]
#[diagnostic(
    code(berth::build_context),
    help("`build.context` is a directory relative to the spec, holding a Dockerfile")
)]
pub struct ContextError {
    pub path: PathBuf,
    pub reason: String,
}

/// The files of a context, relative paths sorted, `.git` left out.
fn files(root: &Path) -> Result<Vec<PathBuf>, ContextError> {
    let err = |reason: String| ContextError {
        path: root.to_path_buf(),
        reason,
    };
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries =
            std::fs::read_dir(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| err(e.to_string()))?;
            let name = entry.file_name();
            if name == ".git" {
                continue;
            }
            let rel = rel.join(&name);
            let kind = entry.file_type().map_err(|e| err(e.to_string()))?;
            if kind.is_dir() {
                stack.push(rel);
            } else if kind.is_file() || kind.is_symlink() {
                out.push(rel);
            }
            // Sockets, pipes and devices are not build input (reading a pipe would block).
        }
    }
    out.sort();
    Ok(out)
}

/// SHA-256 over every file's relative path, mode and content (or link target), hex.
pub fn digest(root: &Path) -> Result<String, ContextError> {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Sha256::new();
    for rel in files(root)? {
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| ContextError {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(meta.permissions().mode().to_le_bytes());
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            h.update(target.to_string_lossy().as_bytes());
        } else {
            let bytes = std::fs::read(&path).map_err(|e| ContextError {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The context as a tar archive for the engine's build call.
pub fn tar(root: &Path) -> Result<Vec<u8>, ContextError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    for rel in files(root)? {
        builder
            .append_path_with_name(root.join(&rel), &rel)
            .map_err(|e| ContextError {
                path: root.join(&rel),
                reason: e.to_string(),
            })?;
    }
    builder.into_inner().map_err(|e| ContextError {
        path: root.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_content_not_times() {
        let dir = std::env::temp_dir().join(format!("berth-ctx-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.join("src/app"), "one").unwrap();
        let a = digest(&dir).unwrap();
        // Rewriting the same bytes (a fresh checkout) is the same context.
        std::fs::write(dir.join("src/app"), "one").unwrap();
        assert_eq!(digest(&dir).unwrap(), a);
        std::fs::write(dir.join("src/app"), "two").unwrap();
        assert_ne!(digest(&dir).unwrap(), a);
        let archive = tar(&dir).unwrap();
        let names: Vec<String> = tar::Archive::new(archive.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "src/app"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
