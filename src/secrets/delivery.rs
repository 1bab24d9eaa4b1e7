//! This machine's memory filesystem (tmpfs) for decrypted values that must be a file here
//! for a moment (the value typed into `$EDITOR` by `berth secrets set`), and the pod's user
//! as numbers (the owner of its secret files).
//!
//! Secrets no longer reach containers through this directory: they go into a
//! memory-backed volume on the container's own engine (`engine::secrets`). Earlier
//! versions of berth made a directory per container here, bind-mounted at `/run/secrets`;
//! [`sweep`] removes those no container mounts any more.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// Overrides where the per-container directories are made (must be a tmpfs).
pub const ENV_RUNTIME_DIR: &str = "BERTH_RUNTIME_DIR";

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no memory filesystem (tmpfs) to hold decrypted secrets: {0}")]
    NoTmpfs(String),
    #[error("cannot prepare secrets in `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeliveryError + '_ {
    move |source| DeliveryError::Io {
        path: path.to_owned(),
        source,
    }
}

fn is_memory(fs: Option<&str>) -> bool {
    matches!(fs, Some("tmpfs" | "ramfs"))
}

/// The directory under which per-container directories are made: `$BERTH_RUNTIME_DIR`,
/// else `$XDG_RUNTIME_DIR/berth`, `/run/berth` or `/dev/shm/berth-UID`, whichever is first
/// on a memory filesystem. Never a directory on disk. Made (mode 0700) if it is missing.
pub fn root() -> Result<PathBuf, DeliveryError> {
    locate(true)
}

/// [`root`] without making or changing anything: where it would be, or why it would be
/// refused (a `$BERTH_RUNTIME_DIR` on disk is refused without being created). For the
/// pre-flight, and for those that only look (a sweep finds nothing where nothing is).
pub fn check_root() -> Result<PathBuf, DeliveryError> {
    locate(false)
}

fn locate(make: bool) -> Result<PathBuf, DeliveryError> {
    if let Some(dir) = std::env::var_os(ENV_RUNTIME_DIR).filter(|d| !d.is_empty()) {
        return given_root(PathBuf::from(dir), make);
    }
    let uid = current_uid();
    let mut candidates = Vec::new();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        candidates.push((PathBuf::from(x), "berth".to_owned()));
    }
    if uid == 0 {
        candidates.push((PathBuf::from("/run"), "berth".to_owned()));
    }
    candidates.push((PathBuf::from("/dev/shm"), format!("berth-{uid}")));
    for (base, name) in &candidates {
        if base.is_dir() && is_memory(fsutil::filesystem_of(base).as_deref()) {
            let dir = base.join(name);
            if make {
                fsutil::create_dir_all(&dir, 0o700).map_err(io(&dir))?;
            }
            if make || std::fs::symlink_metadata(&dir).is_ok() {
                owned_private_memory(&dir, make)?;
            }
            return Ok(dir);
        }
    }
    Err(DeliveryError::NoTmpfs(format!(
        "none of {} is a tmpfs; set ${ENV_RUNTIME_DIR} to a tmpfs directory",
        candidates
            .iter()
            .map(|(b, _)| b.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The root under a `$BERTH_RUNTIME_DIR` of `dir`: `dir` itself when it is the user's alone
/// (or yet to be made, 0700), else berth's own `berth-UID` directory inside it. Made when
/// `make`; else only where it would be, or why it would be refused.
fn given_root(dir: PathBuf, make: bool) -> Result<PathBuf, DeliveryError> {
    // A directory yet to be made would be on the filesystem of its nearest existing
    // ancestor.
    let existing = if make {
        fsutil::create_dir_all(&dir, 0o700).map_err(io(&dir))?;
        dir.clone()
    } else {
        let abs = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
        abs.ancestors()
            .find(|a| std::fs::symlink_metadata(a).is_ok())
            .unwrap_or(&abs)
            .to_path_buf()
    };
    let fs = fsutil::filesystem_of(&existing);
    if !is_memory(fs.as_deref()) {
        return Err(DeliveryError::NoTmpfs(format!(
            "${ENV_RUNTIME_DIR} is `{}`, on {}, which keeps what is written to it; point it at a tmpfs",
            dir.display(),
            fs.unwrap_or_else(|| "an unknown filesystem".into())
        )));
    }
    // A directory that is berth's user's alone is used as it is. Any other (a shared
    // tmpfs such as /dev/shm, mode 1777) is never chmod-ed: berth makes its own
    // directory inside it.
    let meta = std::fs::symlink_metadata(&dir);
    if meta.as_ref().is_err() && !make {
        return Ok(dir); // made 0700, the user's alone, when it is needed
    }
    let private = meta.is_ok_and(|m| m.is_dir() && fsutil::is_mine(&m) && m.mode() & 0o077 == 0);
    if private {
        return Ok(dir);
    }
    let own = dir.join(format!("berth-{}", current_uid()));
    if make {
        fsutil::create_dir_all(&own, 0o700).map_err(io(&own))?;
    }
    if make || std::fs::symlink_metadata(&own).is_ok() {
        owned_private_memory(&own, make)?;
    }
    Ok(own)
}

/// A directory of ours that nobody else can use against us: a real directory (not a
/// symlink planted in a shared /dev/shm), owned by this user, mode 0700 (set when `fix`,
/// else only checked to be fixable), on a memory filesystem.
fn owned_private_memory(dir: &Path, fix: bool) -> Result<(), DeliveryError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    if !meta.is_dir() || meta.uid() != current_uid() {
        return Err(DeliveryError::NoTmpfs(format!(
            "`{}` is not a directory of this user (a symlink, or someone else's): refusing to put secrets there",
            dir.display()
        )));
    }
    if fix && meta.mode() & 0o077 != 0 {
        fsutil::set_mode(dir, 0o700).map_err(io(dir))?;
    }
    if !is_memory(fsutil::filesystem_of(dir).as_deref()) {
        return Err(DeliveryError::NoTmpfs(format!(
            "`{}` is not on a memory filesystem",
            dir.display()
        )));
    }
    Ok(())
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of a directory this process just made is this process's user.
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// Removes the project's delivery directories (made by an earlier berth) that are not in
/// `keep` (those no container mounts any more). Returns how many went.
pub fn sweep(project: &str, keep: &std::collections::HashSet<PathBuf>) -> usize {
    let Ok(root) = check_root() else { return 0 };
    let base = root.join(project);
    // Only a real directory of this user's: a symlink planted for it is never followed.
    let ours = std::fs::symlink_metadata(&base).is_ok_and(|m| m.is_dir() && fsutil::is_mine(&m));
    if !ours {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(&base) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        // Only real directories of ours: a planted symlink is removed, never followed.
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if !is_dir {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if keep.contains(&path) {
            continue;
        }
        // 0500 keeps the container's user from changing it; the owner needs 0700 to empty it.
        let _ = fsutil::set_mode(&path, 0o700);
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// `uid[:gid]` as numbers; `None` for a user name (which only the image can resolve).
pub fn numeric_user(user: &str) -> Option<(u32, u32)> {
    let user = user.trim();
    if user.is_empty() {
        return Some((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let uid: u32 = u.parse().ok()?;
    let gid: u32 = if g.is_empty() { uid } else { g.parse().ok()? };
    Some((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::secrets::token;

    #[test]
    fn users() {
        assert_eq!(numeric_user(""), Some((0, 0)));
        assert_eq!(numeric_user("1000"), Some((1000, 1000)));
        assert_eq!(numeric_user("1000:50"), Some((1000, 50)));
        assert_eq!(numeric_user("postgres"), None);
        assert_eq!(numeric_user("1000:staff"), None);
    }

    #[test]
    fn a_shared_runtime_dir_is_never_chmod_ed_berth_makes_its_own_inside() {
        // A shared tmpfs like /dev/shm: mode 1777, owned by root.
        let Ok(base) = tempfile::tempdir_in("/dev/shm") else {
            return; // no /dev/shm here
        };
        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        fsutil::set_mode(&shared, 0o1777).unwrap();
        let got = given_root(shared.clone(), true).unwrap();
        assert_eq!(fsutil::mode_of(&shared).unwrap(), 0o1777);
        assert_eq!(got, shared.join(format!("berth-{}", current_uid())));
        assert_eq!(fsutil::mode_of(&got).unwrap(), 0o700);
    }

    #[test]
    fn directories_no_container_mounts_are_swept() {
        let Ok(root) = root() else {
            return; // no tmpfs on this machine
        };
        let project = format!("unit-{}", token());
        let gone = root.join(&project).join("gone");
        let kept = root.join(&project).join("kept");
        fsutil::create_dir_all(&gone, 0o700).unwrap();
        fsutil::create_dir_all(&kept, 0o700).unwrap();
        fsutil::set_mode(&gone, 0o500).unwrap();
        let keep = std::collections::HashSet::from([kept.clone()]);
        assert_eq!(sweep(&project, &keep), 1);
        assert!(!gone.exists() && kept.exists());
        let _ = std::fs::remove_dir_all(root.join(&project));
    }
}
