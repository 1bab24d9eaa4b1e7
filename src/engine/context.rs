//! Build contexts: a pod's `build.context` directory read as the engine's build input (a
//! tar stream) and as a content digest, so that a change to the files is a change to the
//! pod (and only a change to the files: modification times do not count, so a fresh
//! checkout of the same commit is the same image).
//!
//! `.dockerignore` at the context's root is honoured as the docker CLI does: patterns in
//! order, `!` re-includes, `**` spans directories, a pattern that matches a directory
//! leaves out everything under it, and the last pattern that matches a path decides. The
//! Dockerfile and `.dockerignore` are sent all the same (the engine needs the Dockerfile).
//! `.git` is never sent.

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

/// The rules of a context's `.dockerignore`.
struct Ignore {
    /// Each pattern, and whether it re-includes (`!`).
    rules: Vec<(globset::GlobMatcher, bool)>,
}

impl Ignore {
    fn read(root: &Path) -> Result<Ignore, ContextError> {
        let path = root.join(".dockerignore");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ContextError {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob = globset::GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| ContextError {
                    path: path.clone(),
                    reason: format!("line {}: {e}", n + 1),
                })?;
            rules.push((glob.compile_matcher(), negated));
        }
        Ok(Ignore { rules })
    }

    /// Whether a relative path is left out: the last rule matching it or one of its
    /// parent directories decides.
    fn excludes(&self, rel: &Path) -> bool {
        let mut excluded = false;
        for (glob, negated) in &self.rules {
            if rel
                .ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| glob.is_match(a))
            {
                excluded = !negated;
            }
        }
        excluded
    }
}

/// A pattern as the docker CLI reads it: `/` at either end and `./` parts removed.
fn clean(pattern: &str) -> String {
    pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// The files of a context, relative paths sorted: `.git` and what `.dockerignore` excludes
/// left out, except the Dockerfile and `.dockerignore` themselves.
fn files(root: &Path, dockerfile: &str) -> Result<Vec<PathBuf>, ContextError> {
    let err = |reason: String| ContextError {
        path: root.to_path_buf(),
        reason,
    };
    let ignore = Ignore::read(root)?;
    let always = [
        PathBuf::from(clean(dockerfile)),
        PathBuf::from(".dockerignore"),
    ];
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
            } else if (kind.is_file() || kind.is_symlink())
                && (!ignore.excludes(&rel) || always.contains(&rel))
            {
                out.push(rel);
            }
            // Sockets, pipes and devices are not build input (reading a pipe would block).
        }
    }
    out.sort();
    Ok(out)
}

/// SHA-256 over every file's relative path, mode and content (or link target), hex.
pub fn digest(root: &Path, dockerfile: &str) -> Result<String, ContextError> {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Sha256::new();
    for rel in files(root, dockerfile)? {
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
    Ok(crate::encode::hex(&h.finalize()))
}

/// The context as a tar archive for the engine's build call.
pub fn tar(root: &Path, dockerfile: &str) -> Result<Vec<u8>, ContextError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    for rel in files(root, dockerfile)? {
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
        let a = digest(&dir, "Dockerfile").unwrap();
        // Rewriting the same bytes (a fresh checkout) is the same context.
        std::fs::write(dir.join("src/app"), "one").unwrap();
        assert_eq!(digest(&dir, "Dockerfile").unwrap(), a);
        std::fs::write(dir.join("src/app"), "two").unwrap();
        assert_ne!(digest(&dir, "Dockerfile").unwrap(), a);
        let archive = tar(&dir, "Dockerfile").unwrap();
        let names: Vec<String> = tar::Archive::new(archive.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "src/app"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn names(dir: &Path, dockerfile: &str) -> Vec<String> {
        files(dir, dockerfile)
            .unwrap()
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    #[test]
    fn dockerignore_rules_as_the_docker_cli_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "Dockerfile",
            "app.rs",
            "notes.md",
            "docs/guide.md",
            "docs/keep.md",
            "target/debug/app",
            "deep/a/b/cache.tmp",
            "secrets/key.age",
        ] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), f).unwrap();
        }
        std::fs::write(
            d.join(".dockerignore"),
            "# build output\n/target\n*.md\ndocs\n!docs/keep.md\n**/*.tmp\n./secrets/\nDockerfile\n",
        )
        .unwrap();
        assert_eq!(
            names(d, "Dockerfile"),
            [".dockerignore", "Dockerfile", "app.rs", "docs/keep.md"]
        );
        // What is left out does not count: changing it is not a new image.
        let before = digest(d, "Dockerfile").unwrap();
        std::fs::write(d.join("target/debug/app"), "rebuilt").unwrap();
        assert_eq!(digest(d, "Dockerfile").unwrap(), before);
        std::fs::write(d.join("app.rs"), "changed").unwrap();
        assert_ne!(digest(d, "Dockerfile").unwrap(), before);
        // A bad pattern is an error that names the line.
        std::fs::write(d.join(".dockerignore"), "ok\n[z-a\n").unwrap();
        let e = files(d, "Dockerfile").unwrap_err();
        assert!(e.reason.contains("line 2"), "{}", e.reason);
    }
}
