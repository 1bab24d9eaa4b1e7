//! One mutating command (apply, destroy, recover, rollback) per project and state directory
//! at a time.
//!
//! The lock is the kernel's (`flock` on `STATE/lock`), so it ends with its process however
//! that process ends: a killed apply never leaves a lock that blocks the next one. The file
//! also holds who took it (pid, host, command, since), for the diagnostic a second command
//! gets. A file whose holder is gone is a stale lock: the next command takes it over and
//! says so.

use std::io::{Seek, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{StateDir, StateError, io_error};

/// Who holds (or held) a lock.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub command: String,
    /// Seconds since the epoch.
    pub since: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (pid {} on {}, since {})",
            self.command,
            self.pid,
            self.host,
            crate::clock::format_time(self.since)
        )
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockError {
    #[error("project `{project}` is locked by {holder}")]
    #[diagnostic(
        code(berth::locked),
        help("wait for it to finish, or pass --lock-wait 5m to wait here; nothing was changed")
    )]
    Held { project: String, holder: Holder },
    #[error("project `{project}` is still locked by {holder} after waiting {waited:?}")]
    #[diagnostic(
        code(berth::locked),
        help(
            "it is still running: wait longer, or find out why it takes so long; nothing was changed"
        )
    )]
    Timeout {
        project: String,
        holder: Holder,
        waited: Duration,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] StateError),
}

/// A held lock; released when dropped (and by the kernel if the process dies).
#[derive(Debug)]
pub struct Lock {
    file: std::fs::File,
    path: PathBuf,
    /// The holder found in the file when it was taken: a stale lock, taken over.
    pub stale: Option<Holder>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Empty the record, remove the file, and only then let go: whoever waits on this
        // file finds it gone (`same_file`) and locks the next one, so there is never more
        // than one holder.
        let _ = self.file.set_len(0);
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Takes the project's lock for `command`; with `wait`, waits that long for a holder to
/// finish, otherwise fails at once naming the holder.
pub fn acquire(
    dir: &StateDir,
    project: &str,
    command: &str,
    wait: Option<Duration>,
) -> Result<Lock, LockError> {
    dir.create()?;
    let path = dir.file("lock");
    let started = Instant::now();
    loop {
        let mut file = crate::fsutil::open_nofollow(&path, 0o600).map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => {
                // The file may have been removed by the holder that just let go: lock the
                // file that is at the path, or try again.
                if !same_file(&file, &path) {
                    continue;
                }
                let stale = read_holder(&path);
                let me = Holder {
                    pid: std::process::id(),
                    host: super::hostname(),
                    command: command.to_owned(),
                    since: crate::clock::now(),
                };
                let text = serde_json::to_vec(&me).unwrap_or_default();
                file.set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| file.write_all(&text))
                    .and_then(|()| file.sync_all())
                    .map_err(io_error(&path))?;
                {
                    use std::os::unix::fs::PermissionsExt;
                    // On the open file, never by path.
                    file.set_permissions(std::fs::Permissions::from_mode(0o600))
                        .map_err(io_error(&path))?;
                }
                return Ok(Lock { file, path, stale });
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = read_holder(&path).unwrap_or(Holder {
                    pid: 0,
                    host: "?".into(),
                    command: "another berth".into(),
                    since: 0,
                });
                match wait {
                    Some(w) if started.elapsed() < w => {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Some(w) => {
                        return Err(LockError::Timeout {
                            project: project.to_owned(),
                            holder,
                            waited: w,
                        });
                    }
                    None => {
                        return Err(LockError::Held {
                            project: project.to_owned(),
                            holder,
                        });
                    }
                }
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path)(e).into()),
        }
    }
}

/// Removes a lock record nobody holds (`berth unlock`), holding the lock while it does, so
/// that it never removes a live holder's file. Says whose record it was, if anyone's.
pub fn clear(dir: &StateDir, project: &str) -> Result<Option<Holder>, LockError> {
    let path = dir.file("lock");
    if !path.exists() {
        return Ok(None);
    }
    let lock = acquire(dir, project, "berth unlock", None)?;
    Ok(lock.stale.clone())
}

/// Who holds the lock now, if anyone does.
pub fn holder(dir: &StateDir) -> Option<Holder> {
    let path = dir.file("lock");
    let file = std::fs::File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => read_holder(&path),
    }
}

fn read_holder(path: &std::path::Path) -> Option<Holder> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

fn same_file(file: &std::fs::File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_and_told_who_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir {
            path: tmp.path().join("p"),
        };
        let first = acquire(&dir, "p", "berth apply", None).unwrap();
        assert!(first.stale.is_none());
        assert_eq!(holder(&dir).unwrap().command, "berth apply");
        match acquire(&dir, "p", "berth destroy", None) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.command, "berth apply");
            }
            other => panic!("{other:?}"),
        }
        let waited = acquire(&dir, "p", "x", Some(Duration::from_millis(300)));
        assert!(matches!(waited, Err(LockError::Timeout { .. })));
        drop(first);
        assert!(holder(&dir).is_none());
        let again = acquire(&dir, "p", "berth destroy", None).unwrap();
        assert!(again.stale.is_none());
    }

    #[test]
    fn a_symlink_planted_at_the_lock_is_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir {
            path: tmp.path().join("p"),
        };
        std::fs::create_dir(&dir.path).unwrap();
        crate::fsutil::set_mode(&dir.path, 0o700).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        crate::fsutil::set_mode(&victim, 0o644).unwrap();
        std::os::unix::fs::symlink(&victim, dir.file("lock")).unwrap();
        assert!(acquire(&dir, "p", "berth apply", None).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(crate::fsutil::mode_of(&victim).unwrap(), 0o644);
    }

    #[test]
    fn a_state_dir_of_another_user_is_refused_and_left_as_it_is() {
        if crate::fsutil::effective_uid() != 0 {
            return; // only root can give a directory to another user
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir {
            path: tmp.path().join("p"),
        };
        std::fs::create_dir(&dir.path).unwrap();
        crate::fsutil::set_mode(&dir.path, 0o777).unwrap();
        std::os::unix::fs::chown(&dir.path, Some(65534), Some(65534)).unwrap();
        let e = acquire(&dir, "p", "berth apply", None).unwrap_err();
        assert!(e.to_string().contains("owned by user 65534"), "{e}");
        assert_eq!(crate::fsutil::mode_of(&dir.path).unwrap(), 0o777);
        assert!(!dir.file("lock").exists());
    }

    #[test]
    fn a_record_left_by_a_dead_holder_is_stale_and_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir {
            path: tmp.path().to_path_buf(),
        };
        let dead = Holder {
            pid: 999_999,
            host: "h".into(),
            command: "berth apply".into(),
            since: 1,
        };
        std::fs::write(dir.file("lock"), serde_json::to_vec(&dead).unwrap()).unwrap();
        let lock = acquire(&dir, "p", "berth apply", None).unwrap();
        assert_eq!(lock.stale, Some(dead));
    }
}
