//! The state directory of a project on a host: the lock and the revisions applied so far
//! (the intent journal of the apply in progress is kept there too, by
//! [`crate::apply::journal`]). berth does not need it to know what exists (the engines'
//! labels say that); it needs it to apply safely and to go back.
//!
//! Where: `--state-dir DIR` (or `$BERTH_STATE_DIR`) is the project's directory itself;
//! otherwise `$BERTH_STATE_HOME/PROJECT`, else `/var/lib/berth/PROJECT` as root, else
//! `$XDG_STATE_HOME/berth/PROJECT` (`~/.local/state/berth/PROJECT`). The directory is 0700,
//! every file 0600, and every write atomic (temporary file, fsync, rename, fsync of the
//! directory), so that a crash leaves either the old file or the new one.
//!
//! - [`lock`]: one mutating command per project and state directory at a time;
//! - [`revisions`]: what each successful apply deployed.

pub mod drills;
pub mod lock;
pub mod revisions;

use std::path::{Path, PathBuf};

use crate::fsutil;

/// Names the project's state directory exactly.
pub const ENV_DIR: &str = "BERTH_STATE_DIR";
/// The directory under which each project's state directory is made.
pub const ENV_HOME: &str = "BERTH_STATE_HOME";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StateError {
    #[error("cannot use the state directory `{path}`: {source}")]
    #[diagnostic(
        code(berth::state_dir),
        help(
            "berth keeps its lock, journal and revisions there: check that it is writable, or choose another with --state-dir"
        )
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is damaged: {reason}")]
    #[diagnostic(
        code(berth::state_damaged),
        help(
            "this file is berth's own; restore it from a backup, or move it aside if you know what you are doing"
        )
    )]
    Damaged { path: PathBuf, reason: String },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A project's state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub path: PathBuf,
}

impl StateDir {
    /// Where `project`'s state lives, `explicit` (`--state-dir`) first.
    pub fn locate(project: &str, explicit: Option<&Path>) -> StateDir {
        if let Some(p) = explicit {
            return StateDir {
                path: p.to_path_buf(),
            };
        }
        let home = std::env::var_os(ENV_HOME)
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                if is_root() {
                    PathBuf::from("/var/lib/berth")
                } else {
                    std::env::var_os("XDG_STATE_HOME")
                        .filter(|h| !h.is_empty())
                        .map_or_else(|| fsutil::expand_home("~/.local/state"), PathBuf::from)
                        .join("berth")
                }
            });
        StateDir {
            path: home.join(project),
        }
    }

    /// Creates the directory (0700) if it is missing; refuses one another user owns.
    pub fn create(&self) -> Result<(), StateError> {
        fsutil::private_dir(&self.path).map_err(io_error(&self.path))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a file of the state directory atomically, mode 0600.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.create()?;
        let path = self.file(name);
        fsutil::write_atomic(&path, bytes, 0o600).map_err(io_error(&path))
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `user@host`, for the lock and the revisions.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self")
                .map_or_else(|_| "?".into(), |m| format!("uid {}", m.uid()))
        });
    format!("{user}@{}", hostname())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_directory_wins() {
        let d = StateDir::locate("shop", Some(Path::new("/tmp/x")));
        assert_eq!(d.path, Path::new("/tmp/x"));
    }
}
