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
    fn open(&self) -> Result<Box<dyn std::io::Read + Send>, RefillError> {
        let store = LocalStore::open(&self.store)?;
        Ok(store.open(&self.name, &self.id)?)
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
    let helper = create_helper(engine, project, image, volume).await?;
    // Decrypted and decompressed on threads, streamed into the helper.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Bytes, std::io::Error>>(4);
    let opener = open_into(data, &from.identity, tx);
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
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RefillError::Io { path, source }
    };
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
    let opened = pipeline::open_with(data, &identity, |r| {
        let mut a = tar::Archive::new(r);
        a.set_preserve_permissions(true);
        a.set_preserve_ownerships(true);
        a.set_overwrite(true);
        a.unpack(root).map_err(|e| {
            // Said as the unpacking's failure, whatever the kind, unless the stream itself
            // broke (a stage before it stopped: its own error is the one reported).
            std::io::Error::new(e.kind(), UnpackFailed(e.to_string()))
        })
    });
    match opened {
        Ok((stats, ())) => Ok(stats),
        Err(e) if e.get_ref().is_some_and(|i| i.is::<UnpackFailed>()) => Err(RefillError::Unpack {
            root: root.to_path_buf(),
            source: e,
        }),
        Err(e) => Err(RefillError::Open(e)),
    }
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
