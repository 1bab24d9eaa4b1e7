//! Putting data back in place: a volume or a directory made to hold exactly what a
//! backup holds. Used by a restore and, to put its safety copy back, by the undo of one
//! (`berth recover`, or a restore's own unwind).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::helpers::{ENV_FAULT_RESTORE_KILL, create_helper, fault_point};
use super::pipeline;
use super::store::{LocalStore, Store};
use crate::engine::Engine;
use crate::secrets::age::Identity;

/// A backup to read: its store, name and id, and the identity file that opens it.
pub struct BackupRef {
    pub store: PathBuf,
    pub name: String,
    pub id: String,
    pub identity: PathBuf,
}

impl BackupRef {
    /// Its data, opened (a backup that cannot be opened stops a restore before anything is
    /// emptied).
    pub fn open(&self) -> Result<Box<dyn std::io::Read + Send>, RefillError> {
        let store = LocalStore::open(&self.store)?;
        Ok(store.open(&self.name, &self.id)?)
    }
}

impl BackupRef {
    /// What putting this backup back read (`stats`) compared with its manifest: what went
    /// in must be what it holds (an undo puts a safety copy back with no read-back before).
    pub fn check(&self, stats: &pipeline::Stats) -> Result<(), RefillError> {
        let store = LocalStore::open(&self.store)?;
        let Some(manifest) = store
            .list(&self.name)?
            .into_iter()
            .find(|m| m.id == self.id)
        else {
            return Err(super::BackupError::Failed {
                name: self.name.clone(),
                why: format!("backup {} has no manifest", self.id),
                help: "list the backups: `berth backup list`".into(),
            }
            .into());
        };
        super::read_back_matches(store.locate(&self.name, &self.id), &manifest, stats)?;
        Ok(())
    }
}

/// Why a volume or a directory could not be made to hold what a backup holds.
#[derive(Debug, thiserror::Error)]
pub enum RefillError {
    /// The backup's store or data could not be opened.
    #[error(transparent)]
    Store(#[from] Box<super::BackupError>),
    /// The identity that opens the backup could not be loaded.
    #[error(transparent)]
    Identity(#[from] crate::secrets::age::AgeError),
    /// The engine refused or failed a request.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// Containers berth does not manage use the volume.
    #[error("{}", foreign_users(volume, names))]
    ForeignUsers { volume: String, names: Vec<String> },
    /// A file or directory of the place could not be listed or removed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The backup could not be decrypted or decompressed (into a directory).
    #[error(transparent)]
    Open(std::io::Error),
    /// The backup could not be decrypted or decompressed (into a volume).
    #[error("the backup could not be read: {0}")]
    Unreadable(#[source] std::io::Error),
    /// The backup, read, could not be written into the directory.
    #[error("unpacking into {}: {source}", root.display())]
    Unpack {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A thread of the pipeline was lost or panicked (`what` says which).
    #[error("the {what}")]
    Thread { what: &'static str },
}

impl From<super::BackupError> for RefillError {
    fn from(e: super::BackupError) -> Self {
        RefillError::Store(Box::new(e))
    }
}

/// Whether a container's bind mounts reach `root` (it, inside it, or around it).
pub fn binds(mounts: &[(String, String)], root: &Path) -> bool {
    mounts
        .iter()
        .any(|(src, _)| root.starts_with(src) || Path::new(src).starts_with(root))
}

/// Makes `volume` hold exactly what the backup holds: the project's containers that mount
/// it are removed, the volume removed and made again with `volume_labels`, the backup
/// unpacked into it through a helper container made from `image`. Idempotent: it starts
/// from nothing each time, so that a restore (or its undo) cut short is simply done again.
pub async fn refill_volume(
    engine: &Engine,
    project: &str,
    volume: &str,
    volume_labels: &std::collections::BTreeMap<String, String>,
    image: &str,
    from: &BackupRef,
) -> Result<pipeline::Stats, RefillError> {
    let data = from.open()?;
    // Checked before anything is removed: a container berth does not manage keeps the
    // volume in use, and the engine would refuse to remove it after the pods had gone.
    let foreign = engine.foreign_on_volume(volume, project).await?;
    if !foreign.is_empty() {
        return Err(RefillError::ForeignUsers {
            volume: volume.to_owned(),
            names: foreign,
        });
    }
    for c in engine.containers(project).await? {
        if c.volumes.iter().any(|v| v == volume) {
            engine.remove(&c.id).await?;
        }
    }
    engine.remove_volume(volume).await?;
    let l: HashMap<String, String> = volume_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    engine.create_volume(volume, l).await?;
    fault_point(ENV_FAULT_RESTORE_KILL, "emptied");
    fill_volume(engine, project, volume, image, data, &from.identity).await
}

/// Unpacks a backup's `data` into the (new, empty) `volume` through a helper container
/// made from `image`, decrypted and decompressed on threads of their own; what went in,
/// for the caller to compare with the manifest.
pub async fn fill_volume(
    engine: &Engine,
    project: &str,
    volume: &str,
    image: &str,
    data: Box<dyn std::io::Read + Send>,
    identity: &Path,
) -> Result<pipeline::Stats, RefillError> {
    let helper = create_helper(engine, project, image, volume).await?;
    // Decrypted and decompressed on threads, streamed into the helper.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Bytes, std::io::Error>>(4);
    let opener = open_into(data, identity, tx);
    // The receiver is shared, so that it can be dropped here whatever the engine's client
    // still holds: a pipeline thread blocked on a full channel then ends.
    let shared = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let stream = futures_util::stream::unfold(shared.clone(), |s| async move {
        let item = match s.lock().await.as_mut() {
            Some(rx) => rx.recv().await,
            None => None,
        };
        item.map(|i| (i, s))
    });
    let uploaded = engine.upload(&helper, "/volume", stream).await;
    shared.lock().await.take();
    let opened = tokio::task::spawn_blocking(move || opener.join())
        .await
        .map_err(|_| RefillError::Thread {
            what: "restore thread was lost",
        })?;
    let removed = engine.remove(&helper).await;
    uploaded?;
    let stats = match opened {
        Ok(Ok(stats)) => stats,
        Ok(Err(e)) => return Err(RefillError::Unreadable(e)),
        Err(_) => {
            return Err(RefillError::Thread {
                what: "restore thread panicked",
            });
        }
    };
    removed?;
    Ok(stats)
}

/// Why a volume that containers berth does not manage use cannot be made again.
pub(crate) fn foreign_users(volume: &str, names: &[String]) -> String {
    format!(
        "volume {volume} is in use by container(s) berth does not manage ({}); berth never removes them: stop and remove them (`docker rm -f NAME`), or detach them from the volume, first",
        names.join(", ")
    )
}

/// Makes the directory `root` hold exactly what the backup holds: emptied, then the backup
/// unpacked into it. Idempotent, like [`refill_volume`]. The containers that bind-mount it
/// are the caller's to stop.
pub fn refill_path(root: &Path, from: &BackupRef) -> Result<pipeline::Stats, RefillError> {
    let data = from.open()?;
    let identity = Identity::load(&from.identity)?;
    for e in std::fs::read_dir(root).map_err(io(root))?.flatten() {
        let p = e.path();
        let r = if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(io(&p))?;
    }
    fault_point(ENV_FAULT_RESTORE_KILL, "emptied");
    unpack_into(root, data, &identity, &mut |_| {}, &|_| true)
}

/// The entries of the backup that `keep` accepts (all of them, for `|_| true`) unpacked
/// into the directory `dst`, which the caller made for it: a restore that touches nothing
/// live. The stats cover the whole stream (what was left out is read too), for the caller
/// to compare with the manifest.
pub fn unpack_to(
    dst: &Path,
    from: &BackupRef,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<pipeline::Stats, RefillError> {
    let data = from.open()?;
    let identity = Identity::load(&from.identity)?;
    unpack_into(dst, data, &identity, &mut |_| {}, keep)
}

/// The plain stream of a backup (a command's output) written to `file`, made new (0600).
pub fn stream_to(file: &Path, from: &BackupRef) -> Result<pipeline::Stats, RefillError> {
    use std::os::unix::fs::OpenOptionsExt;
    let data = from.open()?;
    let identity = Identity::load(&from.identity)?;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(io(file))?;
    pipeline::open(data, &identity, std::io::BufWriter::new(out)).map_err(RefillError::Open)
}

/// The backup unpacked into `staging`, a new directory inside the place it goes back to
/// (so that [`swap_in`] moves it in by renames, on the same file system), giving `seen`
/// the name of each entry: the one pass that reads a backup for a restore. The stats are
/// the caller's to compare with the manifest before anything is moved in.
pub fn stage_path(
    staging: &Path,
    from: &BackupRef,
    seen: &mut dyn FnMut(&Path),
) -> Result<pipeline::Stats, RefillError> {
    let data = from.open()?;
    let identity = Identity::load(&from.identity)?;
    std::fs::create_dir(staging).map_err(io(staging))?;
    unpack_into(staging, data, &identity, seen, &|_| true)
}

/// Makes `root` hold what `staging` (a directory inside it) holds, by renames: what root
/// holds now moved into `trash` (a new directory inside it), staging's entries moved into
/// root, root given staging's mode and times (the backup's own), then staging and
/// the trash removed. Interrupted, root holds a part of each: the caller's journal puts
/// the safety copy back.
pub fn swap_in(root: &Path, staging: &Path, trash: &Path) -> Result<(), RefillError> {
    // The backup's mode and times of the tree itself, before moving entries changes them.
    let own = std::fs::symlink_metadata(staging).map_err(io(staging))?;
    std::fs::create_dir(trash).map_err(io(trash))?;
    for e in std::fs::read_dir(root).map_err(io(root))? {
        let e = e.map_err(io(root))?;
        let p = e.path();
        if p != staging && p != trash {
            std::fs::rename(&p, trash.join(e.file_name())).map_err(io(&p))?;
        }
    }
    fault_point(ENV_FAULT_RESTORE_KILL, "emptied");
    for e in std::fs::read_dir(staging).map_err(io(staging))? {
        let e = e.map_err(io(staging))?;
        let p = e.path();
        std::fs::rename(&p, root.join(e.file_name())).map_err(io(&p))?;
    }
    std::fs::set_permissions(root, own.permissions()).map_err(io(root))?;
    std::fs::remove_dir(staging).map_err(io(staging))?;
    std::fs::remove_dir_all(trash).map_err(io(trash))?;
    // Last: moving entries in and out changed root's times.
    let times = std::fs::FileTimes::new()
        .set_accessed(own.accessed().map_err(io(staging))?)
        .set_modified(own.modified().map_err(io(staging))?);
    std::fs::File::open(root)
        .and_then(|f| f.set_times(times))
        .map_err(io(root))
}

/// A path's I/O failure, said with the path.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RefillError {
    let path = path.to_path_buf();
    move |source| RefillError::Io { path, source }
}

/// Decrypts, decompresses and unpacks `data` into the directory `dst`.
fn unpack_into(
    dst: &Path,
    data: Box<dyn std::io::Read + Send>,
    identity: &Identity,
    seen: &mut dyn FnMut(&Path),
    keep: &dyn Fn(&Path) -> bool,
) -> Result<pipeline::Stats, RefillError> {
    let opened = pipeline::open_with(data, identity, |r| {
        unpack_seeing(r, dst, seen, keep).map_err(|e| {
            // Said as the unpacking's failure, whatever the kind, unless the stream itself
            // broke (a stage before it stopped: its own error is the one reported).
            std::io::Error::new(e.kind(), UnpackFailed(e.to_string()))
        })
    });
    match opened {
        Ok((stats, ())) => Ok(stats),
        Err(e) if e.get_ref().is_some_and(|i| i.is::<UnpackFailed>()) => Err(RefillError::Unpack {
            root: dst.to_path_buf(),
            source: e,
        }),
        Err(e) => Err(RefillError::Open(e)),
    }
}

/// Unpacks a tar stream into `dst` as `tar -x` does, modes, owners and modification times
/// kept: directories last, deepest first, so that a read-only one does not stop what goes
/// into it, and their times are the backup's (the tar crate sets a file's, not a
/// directory's). `seen` is given each entry's name.
fn unpack_seeing(
    r: &mut dyn std::io::BufRead,
    dst: &Path,
    seen: &mut dyn FnMut(&Path),
    keep: &dyn Fn(&Path) -> bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut archive = tar::Archive::new(r);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?;
        // What the read-back refuses (the tar crate would pass it over): a backup restores
        // whole or not at all.
        if super::inside_name(&path).is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("an entry is named `{}`, outside the tree", path.display()),
            ));
        }
        seen(&path);
        // Left out: its bytes are read past (and hashed) all the same.
        if !keep(&path) {
            continue;
        }
        if entry.header().entry_type() == tar::EntryType::Directory {
            directories.push(entry);
        } else {
            entry.unpack_in(dst)?;
        }
    }
    directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut d in directories {
        let path = d.path()?.into_owned();
        let mtime = d.header().mtime();
        // The tree's own entry (`./`), which the tar crate passes over: its mode here.
        let own = path.components().all(|c| c == std::path::Component::CurDir);
        if own {
            let mode = d.header().mode()?;
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if (own || d.unpack_in(dst)?)
            && let Ok(secs) = mtime
        {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            std::fs::File::open(dst.join(&path)).and_then(|f| f.set_modified(at))?;
        }
    }
    Ok(())
}

/// An unpacking's own failure, told apart from the pipeline's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UnpackFailed(String);

/// Decrypts and decompresses a backup on a thread of its own into an async channel (for
/// an upload or a command's stdin). A failure is sent down the channel too, so that the
/// receiving side stops with it: a half-read backup must never look complete. The thread
/// loads the identity again from its file (an identity is not shared across threads).
pub(crate) fn open_into(
    data: Box<dyn std::io::Read + Send>,
    key: &Path,
    tx: tokio::sync::mpsc::Sender<Result<hyper::body::Bytes, std::io::Error>>,
) -> std::thread::JoinHandle<std::io::Result<pipeline::Stats>> {
    let key = key.to_path_buf();
    std::thread::spawn(move || {
        let identity = Identity::load(&key).map_err(std::io::Error::other)?;
        let r = pipeline::open(data, &identity, BlockingSink { tx: tx.clone() });
        if let Err(e) = &r {
            let _ = tx.try_send(Err(std::io::Error::other(e.to_string())));
        }
        r
    })
}

/// The receiving side drops its receiver when it gives up, so that a blocked send ends.
struct BlockingSink {
    tx: tokio::sync::mpsc::Sender<Result<hyper::body::Bytes, std::io::Error>>,
}

impl std::io::Write for BlockingSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(hyper::body::Bytes::copy_from_slice(b)))
            .map(|()| b.len())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// What the staging directory holds takes the place of what the tree held, with the
    /// staging directory's mode and time (the backup's own `./`); neither the staging
    /// directory nor the old entries are left.
    #[test]
    fn swap_in_puts_the_staged_tree_in_place_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "old a").unwrap();
        std::fs::write(root.join("sub/b.txt"), "old b").unwrap();
        let staging = root.join(".berth-restore-x");
        std::fs::create_dir_all(staging.join("new")).unwrap();
        std::fs::write(staging.join("a.txt"), "new a").unwrap();
        std::fs::write(staging.join("new/c.txt"), "c").unwrap();
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o750)).unwrap();
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::open(&staging)
            .unwrap()
            .set_modified(at)
            .unwrap();

        swap_in(&root, &staging, &root.join(".berth-restore-x.old")).unwrap();

        assert_eq!(names(&root), ["a.txt", "new"]);
        assert_eq!(
            std::fs::read_to_string(root.join("a.txt")).unwrap(),
            "new a"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("new/c.txt")).unwrap(),
            "c"
        );
        let m = std::fs::metadata(&root).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o750);
        assert_eq!(m.modified().unwrap(), at);
    }
}
