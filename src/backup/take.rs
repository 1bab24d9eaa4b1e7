//! `berth backup run`: a backup taken, read back whole, and recorded as verified.
//!
//! A volume is read through the engine's archive API from a helper container that mounts
//! it and is never started (it needs no tar, nor anything else, inside any image; its image
//! is one the project's containers already run). The pod keeps running unless the backup
//! says `consistent: stop`; then the pods that write to it stop for the read, journaled as
//! a restore's stops are (so that `berth recover` starts them again after a crash). A host
//! path is read by berth itself; a command's output is read from its stdout in the pod.

use std::path::Path;

use futures_util::StreamExt;

use super::ops::{Backups, failed};
use super::restore::record_undo;
use crate::apply::Undo;
use crate::apply::journal::{Journal, Kind, Outcome, Record, StepState};
use crate::archive::helpers::{ENV_FAULT_BACKUP_KILL, create_helper, fault_point};
use crate::archive::store::Store;
use crate::archive::{MANIFEST_FORMAT, Manifest, new_id, pipeline, verify};
use crate::error::OpError;
use crate::spec::{Backup, Consistency};

/// A backup taken: its manifest, what its read-back found, and what became of each copy.
pub struct Taken {
    pub manifest: Manifest,
    pub verified: crate::archive::Verified,
    pub copies: Vec<super::copies::CopyOutcome>,
}

impl Backups {
    /// The journal of a `consistent: stop` backup, begun (kept with a restore's: the same
    /// undos, the same `berth recover`): its undos start again the pods it stops.
    fn begin_stop_backup(&self, name: &str) -> Result<Journal, OpError> {
        let latest = crate::state::revisions::latest(&self.project.state)?;
        Ok(Journal::begin_kind(
            &self.project.state,
            Kind::Restore,
            Record::Begin {
                command: format!("berth backup run {name}"),
                project: self.project.spec.project.value.clone(),
                spec: String::new(),
                spec_sha256: String::new(),
                spec_text: String::new(),
                profiles: Vec::new(),
                from_revision: latest,
                revision: latest,
                at: crate::clock::now(),
                restore: None,
            },
        )?)
    }

    /// A backup's start: the project's lock (waiting for an apply or a restore to
    /// finish); refused while a restore is unfinished (the volume may be empty or
    /// half-restored until `berth recover`); the helper containers a killed backup or
    /// restore left are removed.
    pub fn lock_for_backup(&self) -> Result<crate::state::lock::Lock, OpError> {
        let lock = self.lock("berth backup run")?;
        self.refuse_if_interrupted(&[Kind::Restore])?;
        self.sweep_helpers()?;
        Ok(lock)
    }

    /// Takes a backup, reads it back, and records it as verified (or says why not).
    pub fn run(&self, name: &str, safety: bool) -> Result<Taken, OpError> {
        self.run_leaving_out(name, safety, None)
    }

    /// [`Backups::run`], a path backup leaving out `skip` (a directory inside the path: a
    /// restore's safety copy leaves out the backup being unpacked beside the data).
    pub(super) fn run_leaving_out(
        &self,
        name: &str,
        safety: bool,
        skip: Option<&Path>,
    ) -> Result<Taken, OpError> {
        let backup = self.get(name)?;
        let store = self.store(backup)?;
        let recipients = self.recipients(backup);
        if recipients.is_empty() {
            return Err(failed(
                name,
                "there is no recipient to encrypt to",
                "list `recipients:` (or name an `identity:` whose key may decrypt)",
            ));
        }
        // Every backup is read back after it is written: that needs the identity.
        let identity = self.identity(name)?;
        // The manifest is authenticated with the spec's key: read it before any work.
        let key = self.manifest_key()?;
        let millis = crate::archive::now_millis();
        let at = (millis / 1000) as u64;
        let id = new_id(millis);
        let out = store.create(name, &id)?;
        // Written to the copies off the host in the same pass.
        let (out, copying) = self.tee(backup, name, &id, out, safety);
        // A restore's safety copy is taken while the pods are stopped, and kept a week: at
        // zstd's fastest level, on as many threads as the backup's own.
        let compression = if safety {
            pipeline::Compression {
                level: 1,
                ..backup.compression()
            }
        } else {
            backup.compression()
        };
        let source = &backup.source.value;
        let (described, sealed) = if let Some(volume) = &source.volume {
            (
                format!("volume {}", volume.value),
                self.seal_volume(name, &volume.value, backup, compression, &recipients, out),
            )
        } else if let Some(path) = &source.path {
            let root = self
                .project
                .spec_dir
                .join(crate::fsutil::expand_home(&path.value));
            (
                format!("path {}", root.display()),
                seal_path(&root, skip, &recipients, out, compression).map_err(|e| {
                    failed(
                        name,
                        e.to_string(),
                        "check that the path exists and is readable",
                    )
                }),
            )
        } else if let (Some(pod), Some(cmd)) = (&source.pod, &source.exec) {
            (
                format!("exec in pod {}: {}", pod.value, cmd.join(" ")),
                self.seal_exec(name, &pod.value, cmd, compression, &recipients, out),
            )
        } else {
            // The writers go first: a copy's upload ends only once its writer is gone.
            drop(out);
            store.discard(name, &id);
            copying.discard(name, &id);
            return Err(failed(
                name,
                "its source names no volume, path, or pod with `exec`",
                "give `source: { volume: NAME }`, `{ path: /abs }` or `{ pod: NAME, exec: [...] }`",
            ));
        };
        let format = if source.exec.is_some() {
            "stream+zstd+age"
        } else {
            "tar+zstd+age"
        };
        let stats = match sealed {
            Ok(s) => s,
            Err(e) => {
                store.discard(name, &id);
                copying.discard(name, &id);
                return Err(e);
            }
        };
        fault_point(ENV_FAULT_BACKUP_KILL, "sealed");
        let mut manifest = Manifest {
            format_version: MANIFEST_FORMAT,
            id: id.clone(),
            name: name.to_owned(),
            project: self.project.spec.project.value.clone(),
            source: described,
            format: format.into(),
            created_at: at,
            revision: crate::state::revisions::latest(&self.project.state)?,
            berth_version: env!("CARGO_PKG_VERSION").into(),
            recipients,
            plain_bytes: stats.plain_bytes,
            plain_sha256: stats.plain_sha256,
            stored_bytes: stats.stored_bytes,
            stored_sha256: stats.stored_sha256,
            verified: false,
            safety,
            mac: None,
        };
        manifest.mac = key.map(|k| k.sign(&manifest));
        store.commit(&manifest)?;
        // Read back before success is reported; a failure leaves it marked unverified.
        // The copies checked where they are while the host's is read back whole.
        let (verified, checks) = std::thread::scope(|s| {
            let checking = s.spawn(|| copying.check(&manifest));
            let verified = verify(&store, &manifest, identity);
            (verified, checking.join())
        });
        let checked = match verified {
            Ok(v) => v,
            Err(e) => {
                copying.discard(name, &id);
                return Err(e.into());
            }
        };
        let checks =
            checks.unwrap_or_else(|_| vec![Some("checking the copy failed".into()); copying.len()]);
        manifest.verified = true;
        store.commit(&manifest)?;
        // Each copy, once the host's verified: marked verified there too.
        let copies = self.finish_copies(copying, &manifest, checks);
        Ok(Taken {
            manifest,
            verified: checked,
            copies,
        })
    }

    /// The running container of a pod (its first replica), on the primary region.
    pub(super) async fn pod_container(&self, name: &str, pod: &str) -> Result<String, OpError> {
        let engine = self.engine(name)?;
        let project = self.project.spec.project.value.as_str();
        let address = crate::graph::Address::new(crate::graph::Kind::Pod, pod);
        let wanted = crate::apply::container::container_name_of(project, &address);
        let containers = engine.containers(project).await?;
        containers
            .into_iter()
            .find(|c| (c.name == wanted || c.name == format!("{wanted}-0")) && c.state == "running")
            .map(|c| c.id)
            .ok_or_else(|| {
                failed(
                    name,
                    format!("pod `{pod}` has no running container here"),
                    "apply the spec (or start the pod) first",
                )
            })
    }

    /// The standard output of a command in a pod, sealed into `out`; a command that fails
    /// (non-zero exit) fails the backup, with the end of its stderr.
    fn seal_exec(
        &self,
        name: &str,
        pod: &str,
        cmd: &[String],
        compression: pipeline::Compression,
        recipients: &[String],
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<pipeline::Stats, OpError> {
        let engine = self.engine(name)?;
        self.project.runtime.block_on(async {
            let container = self.pod_container(name, pod).await?;
            let (exec_id, io) = engine.exec(&container, cmd, false, false).await?;
            let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
            let tail = stderr.clone();
            let stdout = io.output.filter_map(move |frame| {
                let tail = tail.clone();
                async move {
                    match frame {
                        Ok(bollard::container::LogOutput::StdOut { message }) => Some(Ok(message)),
                        Ok(bollard::container::LogOutput::StdErr { message }) => {
                            if let Ok(mut t) = tail.lock() {
                                t.extend_from_slice(&message);
                                let excess = t.len().saturating_sub(4096);
                                t.drain(..excess);
                            }
                            None
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(crate::engine::EngineError::Call {
                            region: engine.region.clone(),
                            call: "exec output",
                            reason: e.to_string(),
                        })),
                    }
                }
            });
            let sealed = stream_into_seal(Box::pin(stdout), recipients, out, compression).await;
            let code = engine.exec_exit_code(&exec_id).await?;
            let stderr = stderr
                .lock()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            if code != Some(0) {
                return Err(failed(
                    name,
                    format!(
                        "`{}` exited with {} in pod `{pod}`: {}",
                        cmd.join(" "),
                        code.map_or("no status".into(), |c| c.to_string()),
                        stderr.trim()
                    ),
                    "run the command by hand in the pod to see why",
                ));
            }
            sealed.map_err(|e| failed(name, e.to_string(), "check the engine and the store's disk"))
        })
    }

    /// The tar stream of a volume, through a helper container, sealed into `out`.
    fn seal_volume(
        &self,
        name: &str,
        volume: &str,
        backup: &Backup,
        compression: pipeline::Compression,
        recipients: &[String],
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<pipeline::Stats, OpError> {
        let engine = self.engine(name)?;
        let project = self.project.spec.project.value.as_str();
        let object = crate::apply::container::object_name(project, volume);
        self.project.runtime.block_on(async {
            let containers = engine.containers(project).await?;
            let image = containers
                .iter()
                .find(|c| c.volumes.contains(&object))
                .or_else(|| containers.first())
                .map(|c| c.image_id.clone())
                .ok_or_else(|| {
                    failed(
                        name,
                        format!("no container of `{project}` runs here, so there is no image to make a helper from"),
                        "apply the spec first",
                    )
                })?;
            // Consistency by stopping: the pods that write to the volume, for the read.
            let stopped: Vec<String> = if backup.consistent == Some(Consistency::Stop) {
                containers
                    .iter()
                    .filter(|c| c.volumes.contains(&object) && c.state == "running")
                    .map(|c| c.id.clone())
                    .collect()
            } else {
                Vec::new()
            };
            // The stops are journaled like a restore's (each with its undo, start it again),
            // so that a backup killed while they are stopped leaves `plan` and `apply`
            // refusing until `berth recover` starts them again.
            let mut journal = if stopped.is_empty() {
                None
            } else {
                Some(self.begin_stop_backup(name)?)
            };
            // Stopped one by one; a failure starts again those already stopped.
            for (n, id) in stopped.iter().enumerate() {
                if let Some(j) = journal.as_mut() {
                    record_undo(
                        j,
                        Undo::StartContainer {
                            region: self.region(name)?,
                            id: id.clone(),
                        },
                    )?;
                }
                if let Err(e) = engine.stop(id).await {
                    let mut all = true;
                    for started in &stopped[..n] {
                        all &= engine.start(started).await.is_ok();
                    }
                    if let Some(j) = journal
                        && all
                    {
                        j.end(Outcome::RolledBack)?;
                    }
                    return Err(e.into());
                }
            }
            if let Some(j) = journal.as_mut() {
                j.append(Record::Step {
                    address: format!("backup.{name}"),
                    state: StepState::Started,
                })?;
            }
            let made = create_helper(engine, project, &image, &object).await;
            let result = match made {
                Ok(id) => {
                    let r = stream_into_seal(
                        engine.download(&id, "/volume/."),
                        recipients,
                        out,
                        compression,
                    )
                    .await;
                    let _ = engine.remove(&id).await;
                    r.map_err(|e| failed(name, e.to_string(), "check the engine and the store's disk"))
                }
                Err(e) => Err(e.into()),
            };
            // Started again whatever happened; the first failure is the one reported.
            let mut restarted = Ok(());
            for id in &stopped {
                if let Err(e) = engine.start(id).await
                    && restarted.is_ok()
                {
                    restarted = Err(e);
                }
            }
            // Every pod runs again: the journal ends. Otherwise it stays, and `berth
            // recover` starts them.
            if let Some(j) = journal
                && restarted.is_ok()
            {
                j.end(Outcome::Applied)?;
            }
            let sealed = result?;
            restarted?;
            Ok(sealed)
        })
    }
}

/// Bridges an async stream of chunks into the pipeline's threads: the chunks go through a
/// bounded channel that the pipeline's source thread reads with a blocking receive.
async fn stream_into_seal(
    mut stream: impl futures_util::Stream<Item = Result<hyper::body::Bytes, crate::engine::EngineError>>
    + Unpin,
    recipients: &[String],
    out: Box<dyn std::io::Write + Send>,
    compression: pipeline::Compression,
) -> Result<pipeline::Stats, SealError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<hyper::body::Bytes>(64);
    let recipients = recipients.to_vec();
    let sealer = std::thread::spawn(move || {
        pipeline::seal_with(
            move |w| {
                while let Some(b) = rx.blocking_recv() {
                    std::io::Write::write_all(w, &b)?;
                }
                Ok(())
            },
            &recipients,
            out,
            compression,
        )
    });
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if tx.send(bytes).await.is_err() {
                    break; // the pipeline stopped: its error says why
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let sealed = tokio::task::spawn_blocking(move || sealer.join())
        .await
        .map_err(|_| SealError::Panicked {
            what: "the pipeline",
        })?
        .map_err(|_| SealError::Panicked {
            what: "the pipeline",
        })?
        .map_err(|e| SealError::Seal(e.into()));
    match failure {
        Some(f) => Err(SealError::Source(f)),
        None => sealed,
    }
}

/// Why a backup's data could not be read and sealed into the store.
#[derive(Debug, thiserror::Error)]
enum SealError {
    /// The path to back up is not a directory.
    #[error("`{}` is not a directory", root.display())]
    NotADir { root: std::path::PathBuf },
    /// The volume (or the command's output) could not be read from the engine.
    #[error("reading the volume failed: {0}")]
    Source(#[source] crate::engine::EngineError),
    /// The directory could not be read.
    #[error("reading the path failed: {0}")]
    Path(#[source] std::io::Error),
    /// Compressing, encrypting or writing to the store failed.
    #[error(transparent)]
    Seal(std::io::Error),
    /// A thread of the pipeline panicked.
    #[error("{what} panicked")]
    Panicked { what: &'static str },
}

/// A host directory as a tar stream (symlinks as links, hard links as links to the first
/// path of the same file), sealed into `out`.
fn seal_path(
    root: &Path,
    skip: Option<&Path>,
    recipients: &[String],
    out: Box<dyn std::io::Write + Send>,
    compression: pipeline::Compression,
) -> Result<pipeline::Stats, SealError> {
    if !root.is_dir() {
        return Err(SealError::NotADir {
            root: root.to_path_buf(),
        });
    }
    pipeline::seal_with(|w| tar_tree(root, skip, w), recipients, out, compression).map_err(|e| {
        match e {
            pipeline::SealError::Source(e) => SealError::Path(e),
            pipeline::SealError::Sink(e) => SealError::Seal(e),
        }
    })
}

/// Writes the tree under `root` as a tar stream, as `tar -cf - -C ROOT .` would: the root
/// as `./`, every entry under `./`, symlinks as symlinks, and a file with several hard
/// links once, its other paths as hard-link entries to the first (restored as links).
///
/// A regular file is opened once (not following a symlink put in its place) and its
/// entry written from that handle, with the handle's own metadata: a file replaced
/// between the walk's look and the read is stored as what was read, and is the first path
/// of its inode only if it is still the file the walk saw. A later path is a link entry
/// only to a first path of the same device, inode, size and modification time (an inode
/// reused during the walk is a new file). A file that grows or shrinks while it is read is
/// stored with the size its header says (cut, or padded with zeros, as GNU tar does).
/// `skip`, a path under `root`, is left out with what it holds.
pub fn tar_tree(
    root: &Path,
    skip: Option<&Path>,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    // The first path of each file with more than one link, by device and inode, with the
    // size and modification time it had.
    let mut linked: std::collections::HashMap<(u64, u64), (std::path::PathBuf, u64, i64, i64)> =
        std::collections::HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(src) = stack.pop() {
        let rel = src.strip_prefix(root).map_err(std::io::Error::other)?;
        let dest = Path::new(".").join(rel);
        let meta = std::fs::symlink_metadata(&src)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&src)? {
                let p = entry?.path();
                if Some(p.as_path()) != skip {
                    stack.push(p);
                }
            }
            b.append_dir(&dest, &src)?;
            continue;
        }
        if !meta.is_file() {
            b.append_path_with_name(&src, &dest)?;
            continue;
        }
        let same = |first: &(std::path::PathBuf, u64, i64, i64), m: &std::fs::Metadata| {
            first.1 == m.size() && first.2 == m.mtime() && first.3 == m.mtime_nsec()
        };
        if meta.nlink() > 1
            && let Some(first) = linked.get(&(meta.dev(), meta.ino()))
            && same(first, &meta)
        {
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, &dest, &first.0)?;
            continue;
        }
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&src)
        {
            Ok(f) => f,
            // Replaced by a symlink since the look: stored as one.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                b.append_path_with_name(&src, &dest)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let held = file.metadata()?;
        if !held.is_file() {
            drop(file);
            b.append_path_with_name(&src, &dest)?;
            continue;
        }
        if held.nlink() > 1 && (held.dev(), held.ino()) == (meta.dev(), meta.ino()) {
            linked.insert(
                (held.dev(), held.ino()),
                (dest.clone(), held.size(), held.mtime(), held.mtime_nsec()),
            );
        }
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&held, tar::HeaderMode::Complete);
        let size = held.size();
        use std::io::Read;
        let exact = (&file).take(size).chain(std::io::repeat(0)).take(size);
        b.append_data(&mut h, &dest, exact)?;
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with three paths is in the tar stream once, its other paths hard-link entries
    /// to the first; unpacked, they are one file again.
    #[test]
    fn hard_links_are_tarred_once_and_unpacked_as_links() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("a"), &big).unwrap();
        std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
        std::fs::hard_link(root.join("a"), root.join("sub/c")).unwrap();
        std::fs::write(root.join("single"), b"one").unwrap();
        std::os::unix::fs::symlink("a", root.join("link")).unwrap();
        let mut tarred = Vec::new();
        tar_tree(&root, None, &mut tarred).unwrap();
        assert!(
            tarred.len() < 2 * big.len(),
            "the linked file's data is in the stream once ({} bytes)",
            tarred.len()
        );
        let mut links = 0;
        for e in tar::Archive::new(tarred.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            if e.header().entry_type() == tar::EntryType::Link {
                links += 1;
                assert_eq!(e.header().size().unwrap(), 0);
            }
        }
        assert_eq!(links, 2);
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        tar::Archive::new(tarred.as_slice()).unpack(&out).unwrap();
        let ino = |p: &str| std::fs::metadata(out.join(p)).unwrap().ino();
        assert_eq!(ino("a"), ino("b"));
        assert_eq!(ino("a"), ino("sub/c"));
        assert_eq!(std::fs::metadata(out.join("a")).unwrap().nlink(), 3);
        assert_eq!(std::fs::read(out.join("sub/c")).unwrap(), big);
        assert_eq!(std::fs::read(out.join("single")).unwrap(), b"one");
        assert_eq!(
            std::fs::read_link(out.join("link")).unwrap(),
            Path::new("a")
        );
    }
}
