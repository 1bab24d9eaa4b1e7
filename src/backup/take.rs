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
    pub fn run(
        &self,
        name: &str,
        safety: bool,
    ) -> Result<(Manifest, crate::archive::Verified), OpError> {
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
        let millis = crate::archive::now_millis();
        let at = (millis / 1000) as u64;
        let id = new_id(millis);
        let out = store.create(name, &id)?;
        let source = &backup.source.value;
        let (described, sealed) = if let Some(volume) = &source.volume {
            (
                format!("volume {}", volume.value),
                self.seal_volume(name, &volume.value, backup, &recipients, out),
            )
        } else if let Some(path) = &source.path {
            let root = self
                .project
                .spec_dir
                .join(crate::fsutil::expand_home(&path.value));
            (
                format!("path {}", root.display()),
                seal_path(&root, &recipients, out).map_err(|e| {
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
                self.seal_exec(name, &pod.value, cmd, &recipients, out),
            )
        } else {
            store.discard(name, &id);
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
        };
        store.commit(&manifest)?;
        // Read back before success is reported; a failure leaves it marked unverified.
        let checked = verify(&store, &manifest, identity)?;
        manifest.verified = true;
        store.commit(&manifest)?;
        Ok((manifest, checked))
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
        recipients: &[String],
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<pipeline::Stats, OpError> {
        let engine = self.engine(name)?;
        self.project.runtime.block_on(async {
            let container = self.pod_container(name, pod).await?;
            let (exec_id, io) = engine.exec(&container, cmd, false).await?;
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
            let sealed = stream_into_seal(Box::pin(stdout), recipients, out).await;
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
                    let r = stream_into_seal(engine.download(&id, "/volume/."), recipients, out).await;
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

/// Bridges an async stream of chunks into the pipeline's threads.
async fn stream_into_seal(
    mut stream: impl futures_util::Stream<Item = Result<hyper::body::Bytes, crate::engine::EngineError>>
    + Unpin,
    recipients: &[String],
    out: Box<dyn std::io::Write + Send>,
) -> Result<pipeline::Stats, SealError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let recipients = recipients.to_vec();
    let sealer = std::thread::spawn(move || {
        pipeline::seal(pipeline::ChannelReader::new(rx), &recipients, out)
    });
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                let tx = tx.clone();
                let sent = tokio::task::spawn_blocking(move || tx.send(bytes.to_vec())).await;
                if !matches!(sent, Ok(Ok(()))) {
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
    let sealed = sealer
        .join()
        .map_err(|_| SealError::Panicked {
            what: "the pipeline",
        })?
        .map_err(SealError::Seal);
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

/// A host directory as a tar stream (symlinks as links), sealed into `out`.
fn seal_path(
    root: &Path,
    recipients: &[String],
    out: Box<dyn std::io::Write + Send>,
) -> Result<pipeline::Stats, SealError> {
    if !root.is_dir() {
        return Err(SealError::NotADir {
            root: root.to_path_buf(),
        });
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let root = root.to_path_buf();
    let tarrer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut b = tar::Builder::new(crate::archive::ChannelSink::new(tx));
        b.follow_symlinks(false);
        b.append_dir_all(".", &root)?;
        b.finish()
    });
    let sealed = pipeline::seal(pipeline::ChannelReader::new(rx), recipients, out);
    let tarred = tarrer.join().map_err(|_| SealError::Panicked {
        what: "the tar thread",
    })?;
    tarred.map_err(SealError::Path)?;
    sealed.map_err(SealError::Seal)
}
