//! [`LocalStore`]: a store that is a directory on the host (0700, files 0600), each
//! backup name a folder of data files and their manifests. Made, adopted or refused as
//! [`super::inspect`] says; a data file being written is locked (`flock`) until its
//! manifest is written, so that another process never takes it for an incomplete one.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{DATA, Found, Incomplete, MANIFEST, MARKER, Store, inspect, is_backup_id};
use crate::archive::{BackupError, Manifest};
use crate::fsutil;

/// A store in a directory on the host.
pub struct LocalStore {
    pub root: PathBuf,
    /// The data files this process is writing, each open and locked (`flock`) until its
    /// manifest is written or it is discarded: another process sees them as in progress,
    /// never as incomplete. The kernel lets go of the lock when the writer dies.
    writing: std::sync::Mutex<Vec<(PathBuf, std::fs::File)>>,
}

/// How long an empty data file counts as just made (created, and not locked yet).
const JUST_MADE: u64 = 60;

impl LocalStore {
    /// Opens a store directory, making it (0700, with its marker) when it does not exist
    /// or adopting it when berth may ([`Found::Adoptable`]); refuses one that is not
    /// berth's, or that other users can read or enter.
    pub fn open(root: &Path) -> Result<LocalStore, BackupError> {
        Self::prepare(root, false).map(|(store, _)| store)
    }

    /// As [`LocalStore::open`], for `apply`: a store of berth's that others can read is
    /// given mode 0700 again. Says what it did.
    pub fn set_up(root: &Path) -> Result<(LocalStore, String), BackupError> {
        Self::prepare(root, true)
    }

    fn prepare(root: &Path, heal: bool) -> Result<(LocalStore, String), BackupError> {
        let shown = root.display().to_string();
        let io = |e: std::io::Error| BackupError::Store(format!("`{shown}`: {e}"));
        let done = match inspect(root) {
            Found::Refused(why) => return Err(BackupError::Store(why)),
            Found::Missing => {
                fsutil::create_dir_all(root, 0o700).map_err(io)?;
                mark(root).map_err(io)?;
                "made (0700)".to_owned()
            }
            Found::Adoptable => {
                fsutil::set_mode(root, 0o700).map_err(io)?;
                mark(root).map_err(io)?;
                "made berth's (0700)".to_owned()
            }
            Found::Ours { mode } if mode & 0o077 != 0 => {
                if !heal {
                    return Err(BackupError::Store(format!(
                        "`{shown}` has mode {mode:04o}: other users can see the backups (chmod 700 it, or run `berth apply`)"
                    )));
                }
                fsutil::set_mode(root, 0o700).map_err(io)?;
                format!("mode {mode:04o} -> 0700")
            }
            Found::Ours { .. } => "0700".to_owned(),
        };
        Ok((LocalStore::at(root), done))
    }

    /// A store that exists already, to read (plan looks, and never creates).
    pub fn open_existing(root: &Path) -> Option<LocalStore> {
        root.is_dir().then(|| LocalStore::at(root))
    }

    fn at(root: &Path) -> LocalStore {
        LocalStore {
            root: root.to_path_buf(),
            writing: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Lets go of a data file this process was writing.
    fn done_writing(&self, path: &Path) {
        if let Ok(mut w) = self.writing.lock() {
            w.retain(|(p, _)| p != path);
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn data(&self, name: &str, id: &str) -> PathBuf {
        self.dir(name).join(format!("{id}{DATA}"))
    }

    fn manifest(&self, name: &str, id: &str) -> PathBuf {
        self.dir(name).join(format!("{id}{MANIFEST}"))
    }
}

/// Writes the marker that makes a directory berth's store.
fn mark(root: &Path) -> std::io::Result<()> {
    let text = format!(
        "berth backup store\nmade {} by berth {}: berth may change the mode of this directory\n",
        crate::clock::format_time(crate::clock::now()),
        env!("CARGO_PKG_VERSION")
    );
    fsutil::write_atomic(&root.join(MARKER), text.as_bytes(), 0o600)
}

impl Store for LocalStore {
    fn create(&self, name: &str, id: &str) -> Result<Box<dyn Write + Send>, BackupError> {
        let dir = self.dir(name);
        fsutil::create_dir_all(&dir, 0o700)
            .map_err(|e| BackupError::Store(format!("`{}`: {e}", dir.display())))?;
        let path = self.data(name, id);
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| BackupError::Store(format!("`{}`: {e}", path.display())))?;
        // Locked (through a handle of its own, kept until the manifest is written) so that
        // no other process takes it for one a killed backup left. (One that looks at it
        // holds the lock only a moment: waited for.)
        let held = f
            .try_clone()
            .and_then(|h| h.lock().map(|()| h))
            .map_err(|e| BackupError::Store(format!("`{}`: {e}", path.display())))?;
        if let Ok(mut w) = self.writing.lock() {
            w.push((path, held));
        }
        Ok(Box::new(SyncOnDrop(Some(f))))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), BackupError> {
        let path = self.manifest(&manifest.name, &manifest.id);
        let mut text = serde_json::to_vec_pretty(manifest).unwrap_or_default();
        text.push(b'\n');
        fsutil::write_atomic(&path, &text, 0o600)
            .map_err(|e| BackupError::Store(format!("`{}`: {e}", path.display())))?;
        self.done_writing(&self.data(&manifest.name, &manifest.id));
        Ok(())
    }

    fn discard(&self, name: &str, id: &str) {
        let _ = std::fs::remove_file(self.manifest(name, id));
        let _ = std::fs::remove_file(self.data(name, id));
        self.done_writing(&self.data(name, id));
    }

    fn manifest_files(&self, name: &str) -> Result<Vec<String>, BackupError> {
        let dir = self.dir(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BackupError::Store(format!("`{}`: {e}", dir.display()))),
        };
        Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(MANIFEST))
            .collect())
    }

    fn read_manifest(&self, name: &str, file: &str) -> Result<Manifest, String> {
        read_manifest(&self.dir(name).join(file)).map_err(|e| e.to_string())
    }

    fn manifest_place(&self, name: &str, file: &str) -> String {
        self.dir(name).join(file).display().to_string()
    }

    fn open(&self, name: &str, id: &str) -> Result<Box<dyn std::io::Read + Send>, BackupError> {
        let path = self.data(name, id);
        let f = std::fs::File::open(&path)
            .map_err(|e| BackupError::Store(format!("`{}`: {e}", path.display())))?;
        Ok(Box::new(std::io::BufReader::with_capacity(256 * 1024, f)))
    }

    fn delete(&self, name: &str, id: &str) -> Result<(), BackupError> {
        for path in [self.data(name, id), self.manifest(name, id)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(BackupError::Store(format!("`{}`: {e}", path.display())));
                }
                _ => {}
            }
        }
        fsutil::sync_dir(&self.dir(name)).ok();
        Ok(())
    }

    fn locate(&self, name: &str, id: &str) -> String {
        self.data(name, id).display().to_string()
    }

    fn modified(&self, name: &str, id: &str) -> Option<u64> {
        let at = std::fs::symlink_metadata(self.data(name, id))
            .ok()?
            .modified()
            .ok()?;
        Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
    }

    fn incomplete(&self, name: &str) -> Result<Vec<Incomplete>, BackupError> {
        let dir = self.dir(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BackupError::Store(format!("`{}`: {e}", dir.display()))),
        };
        let now = crate::clock::now();
        let mut out = Vec::new();
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            // Only a file named as berth names its data, and only a regular file.
            let Some(id) = file.strip_suffix(DATA).filter(|id| is_backup_id(id)) else {
                continue;
            };
            if self.manifest(name, id).exists() {
                continue;
            }
            let Some((bytes, modified)) = self.abandoned(name, id, now) else {
                continue;
            };
            // Locked: its writer is alive. (The lock taken here goes with the handle.)
            let unlocked =
                std::fs::File::open(self.data(name, id)).is_ok_and(|f| f.try_lock().is_ok());
            if !unlocked {
                continue;
            }
            out.push(Incomplete {
                id: id.to_owned(),
                bytes,
                modified,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn remove_incomplete(&self, name: &str, id: &str) -> Result<bool, BackupError> {
        if !is_backup_id(id) {
            return Ok(false);
        }
        let path = self.data(name, id);
        let io = |e: std::io::Error| BackupError::Store(format!("`{}`: {e}", path.display()));
        let f = match std::fs::OpenOptions::new().read(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        // Held while it is checked and removed: a writer that appears in between (a file of
        // the same id cannot) finds nothing to clash with.
        if f.try_lock().is_err() {
            return Ok(false);
        }
        if self.manifest(name, id).exists()
            || self.abandoned(name, id, crate::clock::now()).is_none()
        {
            return Ok(false);
        }
        std::fs::remove_file(&path).map_err(io)?;
        fsutil::sync_dir(&self.dir(name)).ok();
        Ok(true)
    }
}

impl LocalStore {
    /// The size and time of a data file this process does not write: a regular file, and
    /// not an empty one made a moment ago (between its creation and its writer's lock).
    /// `None` otherwise. Whether another process holds its lock is the caller's to check.
    fn abandoned(&self, name: &str, id: &str, now: u64) -> Option<(u64, u64)> {
        let path = self.data(name, id);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let modified = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        if meta.len() == 0 && now.saturating_sub(modified) < JUST_MADE {
            return None;
        }
        let writing = self
            .writing
            .lock()
            .map(|w| w.iter().any(|(p, _)| p == &path))
            .unwrap_or(true);
        (!writing).then_some((meta.len(), modified))
    }
}

/// One manifest file, or why it cannot be read.
fn read_manifest(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read(path).map_err(ManifestError::Read)?;
    serde_json::from_slice(&text).map_err(ManifestError::Parse)
}

/// Why a manifest file cannot be used (said after its path by `damaged`).
#[derive(Debug, thiserror::Error)]
enum ManifestError {
    #[error("it cannot be read ({0})")]
    Read(#[source] std::io::Error),
    #[error("the manifest does not parse ({0})")]
    Parse(#[source] serde_json::Error),
}

/// A data file flushed to disk when the pipeline lets go of it.
struct SyncOnDrop(Option<std::fs::File>);

impl Write for SyncOnDrop {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(f) => f.write(b),
            None => Ok(0),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.0 {
            Some(f) => f.sync_all(),
            None => Ok(()),
        }
    }
}

impl Drop for SyncOnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            let _ = f.sync_all();
        }
    }
}
