//! Where backups are kept. A [`Store`] holds, per backup name, data files and their
//! manifests; [`LocalStore`] is a directory on the host (refused under /tmp and when others
//! can read it; created 0700, files 0600). An object store can follow behind the same trait.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{BackupError, Manifest};
use crate::fsutil;

/// A place that keeps backups.
pub trait Store {
    /// Where a new backup's data goes, as a writer; [`Store::commit`] makes it visible.
    fn create(&self, name: &str, id: &str) -> Result<Box<dyn Write + Send>, BackupError>;
    /// Publishes a backup: its manifest, written after the data, atomically.
    fn commit(&self, manifest: &Manifest) -> Result<(), BackupError>;
    /// Removes a backup whose data could not be written or verified.
    fn discard(&self, name: &str, id: &str);
    /// The manifests of a backup name, oldest first.
    fn list(&self, name: &str) -> Result<Vec<Manifest>, BackupError>;
    /// The data of a backup, to read.
    fn open(&self, name: &str, id: &str) -> Result<Box<dyn std::io::Read + Send>, BackupError>;
    /// Deletes a backup (data, then manifest).
    fn delete(&self, name: &str, id: &str) -> Result<(), BackupError>;
    /// Where the data of a backup is, for people (and the disaster-recovery one-liner).
    fn locate(&self, name: &str, id: &str) -> String;
    /// When the data of a backup was last written (seconds since the epoch), if known: a
    /// witness of the manifest's time that the manifest cannot forge.
    fn modified(&self, name: &str, id: &str) -> Option<u64>;
}

pub struct LocalStore {
    pub root: PathBuf,
}

const DATA: &str = ".tar.zst.age";
const MANIFEST: &str = ".manifest.json";

impl LocalStore {
    /// Opens (and creates, 0700) a store directory; refuses one under a temporary
    /// directory, or that other users can read or enter.
    pub fn open(root: &Path) -> Result<LocalStore, BackupError> {
        let shown = root.display().to_string();
        if !root.is_absolute() {
            return Err(BackupError::Store(format!(
                "`{shown}` is not an absolute path"
            )));
        }
        for tmp in ["/tmp", "/var/tmp", "/dev/shm"] {
            if root.starts_with(tmp) {
                return Err(BackupError::Store(format!(
                    "`{shown}` is under {tmp}, which is cleared on reboot and often shared"
                )));
            }
        }
        let io = |e: std::io::Error| BackupError::Store(format!("`{shown}`: {e}"));
        fsutil::create_dir_all(root, 0o700).map_err(io)?;
        let mode = fsutil::mode_of(root).map_err(io)?;
        if mode & 0o077 != 0 {
            return Err(BackupError::Store(format!(
                "`{shown}` has mode {mode:04o}: other users can see the backups (chmod 700 it)"
            )));
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    /// A store that exists already, to read (plan looks, and never creates).
    pub fn open_existing(root: &Path) -> Option<LocalStore> {
        root.is_dir().then(|| LocalStore {
            root: root.to_path_buf(),
        })
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
        Ok(Box::new(SyncOnDrop(Some(f))))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), BackupError> {
        let path = self.manifest(&manifest.name, &manifest.id);
        let mut text = serde_json::to_vec_pretty(manifest).unwrap_or_default();
        text.push(b'\n');
        fsutil::write_atomic(&path, &text, 0o600)
            .map_err(|e| BackupError::Store(format!("`{}`: {e}", path.display())))
    }

    fn discard(&self, name: &str, id: &str) {
        let _ = std::fs::remove_file(self.manifest(name, id));
        let _ = std::fs::remove_file(self.data(name, id));
    }

    fn list(&self, name: &str) -> Result<Vec<Manifest>, BackupError> {
        let dir = self.dir(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BackupError::Store(format!("`{}`: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if !file.ends_with(MANIFEST) {
                continue;
            }
            let text = std::fs::read(e.path())
                .map_err(|x| BackupError::Store(format!("`{}`: {x}", e.path().display())))?;
            let m: Manifest = serde_json::from_slice(&text).map_err(|x| BackupError::Damaged {
                what: e.path().display().to_string(),
                why: format!("the manifest does not parse ({x})"),
            })?;
            // A manifest under another name than its id, or of another backup, is not
            // this backup's (a copy, or a swap): it is left out, never restored or pruned.
            if file != format!("{}{MANIFEST}", m.id) || m.name != name {
                continue;
            }
            out.push(m);
        }
        // Ids begin with the time to the millisecond: their order is the order taken.
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_under_tmp_or_readable_by_others_are_refused() {
        assert!(LocalStore::open(Path::new("/tmp/backups")).is_err());
        assert!(LocalStore::open(Path::new("relative")).is_err());
        let here = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&here);
        LocalStore::open(&here).unwrap();
        assert_eq!(fsutil::mode_of(&here).unwrap(), 0o700);
        fsutil::set_mode(&here, 0o755).unwrap();
        let e = LocalStore::open(&here).err().unwrap().to_string();
        assert!(e.contains("0755"), "{e}");
        std::fs::remove_dir_all(&here).unwrap();
    }
}
