//! `berth backup run | list | verify | prune`: the backups of a spec, on its store, from
//! its engines.
//!
//! A volume is read through the engine's archive API from a helper container that mounts
//! it and is never started (it needs no tar, nor anything else, inside any image; its image
//! is one the project's containers already run). The pod keeps running unless the backup
//! says `consistent: stop`. A host path is read by berth itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::store::{LocalStore, Store};
use super::{BackupError, MANIFEST_FORMAT, Manifest, new_id, pipeline, verify};
use crate::apply::Undo;
use crate::apply::journal::{Journal, Kind, Outcome, Record, StepState};
use crate::engine::{Engine, labels};
use crate::ops::OpError;
use crate::secrets::age::Identity;
use crate::spec::{Backup, Consistency, Spec};

/// A spec's backups on this machine: the spec, its engines, the identity.
pub struct Backups {
    pub spec: Spec,
    pub spec_dir: PathBuf,
    pub state: crate::state::StateDir,
    runtime: tokio::runtime::Runtime,
    engines: HashMap<String, Engine>,
    pub identity: Option<Identity>,
}

fn failed(name: &str, why: impl Into<String>, help: impl Into<String>) -> OpError {
    OpError::Backup(BackupError::Failed {
        name: name.to_owned(),
        why: why.into(),
        help: help.into(),
    })
}

impl Backups {
    pub fn open(path: &Path, state_dir: Option<&Path>) -> Result<Backups, OpError> {
        let valid = crate::ops::load_valid(path)?;
        let spec_dir = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let state = crate::state::StateDir::locate(&valid.spec.project.value, state_dir);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(OpError::Runtime)?;
        // Only connected: observing happens under the project's lock (an apply in progress
        // has two containers claiming a pod for a moment, which observing would refuse).
        let engines = runtime.block_on(crate::ops::connect_engines(&valid.spec))?;
        let identity = Identity::load(&crate::secrets::files::identity_path(
            &valid.spec,
            &spec_dir,
        ))
        .ok();
        Ok(Backups {
            spec: valid.spec,
            spec_dir,
            state,
            runtime,
            engines,
            identity,
        })
    }

    /// A restore's start: the project's lock; no interrupted apply or restore may be
    /// pending (`berth recover` first); the helper containers a killed backup or restore
    /// left are removed.
    fn lock_for_restore(&self) -> Result<crate::state::lock::Lock, OpError> {
        let project = &self.spec.project.value;
        // Waits for an apply (or another restore) to finish, as `backup run` does.
        let lock = crate::state::lock::acquire(
            &self.state,
            project,
            "berth backup restore",
            Some(std::time::Duration::from_secs(600)),
        )?;
        self.refuse_if_interrupted()?;
        self.sweep_helpers()?;
        Ok(lock)
    }

    /// Refuses while an apply or a restore is unfinished (`berth recover` first).
    fn refuse_if_interrupted(&self) -> Result<(), OpError> {
        for kind in [Kind::Apply, Kind::Restore] {
            if let Some(m) = crate::apply::journal::read_kind(&self.state, kind)? {
                return Err(OpError::Interrupted {
                    project: self.spec.project.value.clone(),
                    detail: crate::ops::interrupted_detail(&m),
                });
            }
        }
        Ok(())
    }

    /// Removes the helper containers a killed backup or restore left (under the lock).
    pub fn sweep_helpers(&self) -> Result<(), OpError> {
        let project = self.spec.project.value.as_str();
        self.runtime.block_on(async {
            for engine in self.engines.values() {
                sweep_helpers(engine, project).await?;
            }
            Ok::<_, OpError>(())
        })
    }

    /// The journal of a restore, begun: its undo records say how to put back what was
    /// there, for a failure here or for `berth recover` after a crash.
    fn begin_restore(
        &self,
        name: &str,
        manifest: &Manifest,
        spec_path: &Path,
        latest: u64,
    ) -> Result<Journal, OpError> {
        let spec = std::path::absolute(spec_path).unwrap_or_else(|_| spec_path.to_path_buf());
        Ok(Journal::begin_kind(
            &self.state,
            Kind::Restore,
            Record::Begin {
                command: format!("berth backup restore {name}"),
                project: self.spec.project.value.clone(),
                spec: spec.display().to_string(),
                spec_sha256: String::new(),
                spec_text: String::new(),
                from_revision: latest,
                revision: latest + 1,
                at: crate::state::now(),
                restore: Some(manifest.id.clone()),
            },
        )?)
    }

    /// The journal of a `consistent: stop` backup, begun (kept with a restore's: the same
    /// undos, the same `berth recover`): its undos start again the pods it stops.
    fn begin_stop_backup(&self, name: &str) -> Result<Journal, OpError> {
        let latest = crate::state::revisions::latest(&self.state)?;
        Ok(Journal::begin_kind(
            &self.state,
            Kind::Restore,
            Record::Begin {
                command: format!("berth backup run {name}"),
                project: self.spec.project.value.clone(),
                spec: String::new(),
                spec_sha256: String::new(),
                spec_text: String::new(),
                from_revision: latest,
                revision: latest,
                at: crate::state::now(),
                restore: None,
            },
        )?)
    }

    /// A journaled step: started, then succeeded or failed.
    fn step<T>(
        &self,
        journal: &mut Journal,
        address: &str,
        f: impl FnOnce() -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        journal.append(Record::Step {
            address: address.to_owned(),
            state: StepState::Started,
        })?;
        let r = f();
        journal.append(Record::Step {
            address: address.to_owned(),
            state: if r.is_ok() {
                StepState::Succeeded
            } else {
                StepState::Failed
            },
        })?;
        r
    }

    /// The safety copy of what is there now (a journaled step).
    fn safety_copy(&self, journal: &mut Journal, name: &str) -> Result<Manifest, OpError> {
        self.step(journal, "restore.safety", || {
            self.run(name, true).map(|(m, _)| m)
        })
    }

    /// Where backup `id` of `name` is, and what opens it.
    fn backup_ref(&self, name: &str, id: &str) -> Result<BackupRef, OpError> {
        Ok(BackupRef {
            store: self.store(self.get(name)?)?.root,
            name: name.to_owned(),
            id: id.to_owned(),
            identity: self.identity(name)?.path.clone(),
        })
    }

    /// A restore's end: the journal ends when it went through; otherwise it is unwound
    /// (the safety copy back, the pods as they were), and the error says what happened.
    fn finish_restore(
        &self,
        mut journal: Journal,
        name: &str,
        forward: Result<Manifest, OpError>,
        spec_path: &Path,
        state_dir: Option<&Path>,
    ) -> Result<Manifest, OpError> {
        let e = match forward {
            Ok(safety) => {
                journal.end(Outcome::Applied)?;
                return Ok(safety);
            }
            Err(e) => e,
        };
        let why = match e {
            OpError::Backup(BackupError::Failed { why, .. }) => why,
            other => other.to_string(),
        };
        let safety = journal
            .machine()
            .undos
            .iter()
            .find_map(|(_, u, _)| match u {
                Undo::RefillVolume { id, .. } | Undo::RefillPath { id, .. } => Some(id.clone()),
                _ => None,
            });
        let command = format!("berth backup restore {name}");
        let ctx = crate::ops::UnwindCtx {
            spec_path,
            state_dir,
            command: &command,
        };
        let (lines, ok) = crate::ops::unwind(
            &self.runtime,
            &mut journal,
            &self.engines,
            &self.spec.project.value,
            &ctx,
        )?;
        if !ok {
            // The journal stays open: plan and apply refuse until `berth recover` is done.
            return Err(failed(
                name,
                format!("{why}; and rolling back failed:\n{}", lines.join("\n")),
                "run `berth recover` to put the safety copy back",
            ));
        }
        journal.end(Outcome::RolledBack)?;
        Err(failed(
            name,
            why,
            match safety {
                Some(id) => format!(
                    "the safety copy {id} was put back and the pods run on the data from before the restore"
                ),
                None => {
                    "nothing had been emptied: the data is as it was, and the pods run again".into()
                }
            },
        ))
    }

    /// A backup's start (under the lock): refused while a restore is unfinished (the
    /// volume may be empty or half-restored until `berth recover`); the helper containers a
    /// killed backup or restore left are removed.
    pub fn ready_for_backup(&self) -> Result<(), OpError> {
        if let Some(m) = crate::apply::journal::read_kind(&self.state, Kind::Restore)? {
            return Err(OpError::Interrupted {
                project: self.spec.project.value.clone(),
                detail: crate::ops::interrupted_detail(&m),
            });
        }
        self.sweep_helpers()
    }

    /// The identity that decrypts backups, or why there is none.
    fn identity(&self, name: &str) -> Result<&Identity, OpError> {
        self.identity.as_ref().ok_or_else(|| {
            failed(
                name,
                "there is no identity on this machine to decrypt it with",
                "run where the identity is (`berth secrets init`), or point `identity:` (or $BERTH_IDENTITY) at it",
            )
        })
    }

    /// The backup named `name` in the spec.
    pub fn get(&self, name: &str) -> Result<&Backup, OpError> {
        self.spec.backups.get(name).ok_or_else(|| {
            let names: Vec<&str> = self
                .spec
                .backups
                .iter()
                .map(|b| b.name.value.as_str())
                .collect();
            failed(
                name,
                "the spec has no such backup",
                crate::spec::check::hint_for(
                    name,
                    &names,
                    "declare it under `backups:`",
                    "declare it under `backups:`",
                ),
            )
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.spec
            .backups
            .iter()
            .map(|b| b.name.value.clone())
            .collect()
    }

    pub fn store(&self, backup: &Backup) -> Result<LocalStore, OpError> {
        let root = self
            .spec_dir
            .join(crate::fsutil::expand_home(&backup.store.value));
        Ok(LocalStore::open(&root)?)
    }

    fn recipients(&self, backup: &Backup) -> Vec<String> {
        crate::secrets::files::recipients_for(
            &self.spec,
            backup.recipients.as_deref(),
            self.identity.as_ref(),
        )
    }

    fn primary(&self) -> Result<&Engine, OpError> {
        let name = self.spec.region_names()[0];
        self.engines.get(name).ok_or_else(|| OpError::Refused {
            message: format!("region `{name}` is not connected"),
            help: "this is a bug in berth: please report it".into(),
        })
    }

    /// Takes a backup, reads it back, and records it as verified (or says why not).
    pub fn run(&self, name: &str, safety: bool) -> Result<(Manifest, super::Verified), OpError> {
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
        let millis = super::now_millis();
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
            let root = self.spec_dir.join(crate::fsutil::expand_home(&path.value));
            (
                format!("path {}", root.display()),
                seal_path(&root, &recipients, out)
                    .map_err(|e| failed(name, e, "check that the path exists and is readable")),
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
            project: self.spec.project.value.clone(),
            source: described,
            format: format.into(),
            created_at: at,
            revision: crate::state::revisions::latest(&self.state)?,
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
    async fn pod_container(&self, name: &str, pod: &str) -> Result<String, OpError> {
        let engine = self.primary()?;
        let project = self.spec.project.value.as_str();
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
        let engine = self.primary()?;
        self.runtime.block_on(async {
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
                            region: String::new(),
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
            sealed.map_err(|e| failed(name, e, "check the engine and the store's disk"))
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
        let engine = self.primary()?;
        let project = self.spec.project.value.as_str();
        let object = crate::apply::container::object_name(project, volume);
        self.runtime.block_on(async {
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
                            region: self.spec.region_names()[0].to_owned(),
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
                    r.map_err(|e| failed(name, e, "check the engine and the store's disk"))
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
) -> Result<pipeline::Stats, String> {
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
                failure = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let sealed = sealer
        .join()
        .map_err(|_| "the pipeline panicked".to_owned())?
        .map_err(|e| e.to_string());
    match failure {
        Some(f) => Err(format!("reading the volume failed: {f}")),
        None => sealed,
    }
}

/// A host directory as a tar stream (symlinks as links), sealed into `out`.
fn seal_path(
    root: &Path,
    recipients: &[String],
    out: Box<dyn std::io::Write + Send>,
) -> Result<pipeline::Stats, String> {
    if !root.is_dir() {
        return Err(format!("`{}` is not a directory", root.display()));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let root = root.to_path_buf();
    let tarrer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut b = tar::Builder::new(super::ChannelSink::new(tx));
        b.follow_symlinks(false);
        b.append_dir_all(".", &root)?;
        b.finish()
    });
    let sealed = pipeline::seal(pipeline::ChannelReader::new(rx), recipients, out);
    let tarred = tarrer
        .join()
        .map_err(|_| "the tar thread panicked".to_owned())?;
    tarred.map_err(|e| format!("reading the path failed: {e}"))?;
    sealed.map_err(|e| e.to_string())
}

/// What `prune` decided for one backup, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneDecision {
    pub id: String,
    pub delete: bool,
    pub why: String,
}

/// What `prune` decided (and, unless a dry run, did) for one backup name.
#[derive(Clone, Debug, Default)]
pub struct Pruned {
    /// Oldest first.
    pub decisions: Vec<PruneDecision>,
    /// Backups that failed their read-back just now (kept, marked unverified).
    pub damaged: Vec<(String, String)>,
    /// No backup of the name verifies now: nothing was deleted.
    pub nothing_verifies: bool,
    /// Data files a killed backup or safety copy left without a manifest: deleted (unless
    /// a dry run) when a backup of the name verifies now, kept otherwise.
    pub incomplete: Vec<PruneDecision>,
    /// The backup has no `retention`: only incomplete files are pruned.
    pub no_retention: bool,
}

impl Backups {
    /// Decides what `prune` keeps and deletes for `name`, the same way with `dry_run` or
    /// without. Before anything is deleted, every backup the decision counts on (a period
    /// of the policy, the newest verified) is read back whole; one that fails is marked
    /// damaged, counts for nothing, and the decision is made again. A backup whose time is
    /// not trusted is kept and counts for nothing. When no backup verifies now, nothing is
    /// deleted. Without `dry_run`, damaged ones are then marked unverified in their
    /// manifests, and the others are deleted.
    pub fn prune(&self, name: &str, dry_run: bool) -> Result<Pruned, OpError> {
        let backup = self.get(name)?;
        let store = self.store(backup)?;
        let mut pruned = match &backup.retention {
            Some(policy) => self.prune_policy(name, policy, &store, dry_run)?,
            None => Pruned {
                no_retention: true,
                ..Pruned::default()
            },
        };
        let incomplete = store.incomplete(name)?;
        if incomplete.is_empty() {
            return Ok(pruned);
        }
        // A file cut short may still open by hand (the one-liner): it goes only when the
        // name has a backup that verifies now, read back whole.
        let verifies = if pruned.no_retention {
            match self.newest_trusted(name, |m| m.verified && !m.safety)? {
                (Some(m), _) => verify(&store, &m, self.identity(name)?).is_ok(),
                (None, _) => false,
            }
        } else {
            // Some backup was read back whole just now (none when there is none at all).
            !pruned.nothing_verifies && !pruned.decisions.is_empty()
        };
        for i in incomplete {
            let what = format!(
                "incomplete: cut short while it was written ({}), no manifest, never verified",
                crate::state::format_time(i.modified)
            );
            let delete = verifies && (dry_run || store.remove_incomplete(name, &i.id)?);
            pruned.incomplete.push(PruneDecision {
                id: i.id,
                delete,
                why: if delete {
                    what
                } else {
                    format!("{what}; kept while no backup of this name verifies now")
                },
            });
        }
        Ok(pruned)
    }

    fn prune_policy(
        &self,
        name: &str,
        policy: &crate::spec::Retention,
        store: &LocalStore,
        dry_run: bool,
    ) -> Result<Pruned, OpError> {
        use super::retention::{self, Entry};
        let list = self.list(name)?;
        if list.is_empty() {
            return Ok(Pruned::default());
        }
        // Nothing is deleted on the word of a manifest: the backups kept in its place are
        // read back first, and that needs the identity.
        let identity = self.identity(name)?;
        let now = crate::state::now();
        let mut entries: Vec<Entry> = list
            .iter()
            .map(|m| Entry {
                id: m.id.clone(),
                at: m.created_at,
                verified: m.verified,
                safety: m.safety,
                untrusted: retention::untrusted_time(
                    m.created_at,
                    store.modified(name, &m.id),
                    now,
                ),
            })
            .collect();
        let mut read_back = std::collections::HashSet::new();
        let mut damaged: Vec<(String, String)> = Vec::new();
        let kept = loop {
            let kept = retention::keep(&entries, policy, now);
            let unread: Vec<String> = retention::counted(&kept, &entries)
                .into_iter()
                .filter(|id| !read_back.contains(*id))
                .map(str::to_owned)
                .collect();
            if unread.is_empty() {
                break kept;
            }
            for id in unread {
                read_back.insert(id.clone());
                let Some(m) = list.iter().find(|m| m.id == id) else {
                    continue;
                };
                if let Err(e) = verify(store, m, identity) {
                    damaged.push((id.clone(), e.to_string()));
                    if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
                        e.verified = false;
                    }
                }
            }
        };
        let nothing_verifies = retention::counted(&kept, &entries).is_empty();
        let describe = describe_policy(policy);
        let decisions: Vec<PruneDecision> = entries
            .iter()
            .map(|e| {
                let keep = |why: String| PruneDecision {
                    id: e.id.clone(),
                    delete: false,
                    why,
                };
                if let Some((_, why)) = kept.iter().find(|(id, _)| *id == e.id) {
                    return keep(why.clone());
                }
                if let Some((_, why)) = damaged.iter().find(|(id, _)| *id == e.id) {
                    return keep(format!(
                        "damaged, counts for nothing: {why}; marked unverified (the next prune deletes it)"
                    ));
                }
                if nothing_verifies {
                    return keep(
                        "no backup of this name verifies now at a trusted time: nothing is deleted"
                            .into(),
                    );
                }
                let why = if e.safety {
                    "a restore's safety copy older than 7 days".to_owned()
                } else if !e.verified {
                    "unverified (its read-back failed when it was taken)".to_owned()
                } else {
                    format!("in none of the kept periods ({describe})")
                };
                PruneDecision {
                    id: e.id.clone(),
                    delete: true,
                    why,
                }
            })
            .collect();
        if !dry_run {
            for (id, _) in &damaged {
                if let Some(m) = list.iter().find(|m| &m.id == id) {
                    let mut m = m.clone();
                    m.verified = false;
                    store.commit(&m)?;
                }
            }
            for d in decisions.iter().filter(|d| d.delete) {
                store.delete(name, &d.id)?;
            }
        }
        Ok(Pruned {
            decisions,
            damaged,
            nothing_verifies,
            ..Pruned::default()
        })
    }
}

/// A retention policy as the spec writes it: `daily 7, weekly 4`.
fn describe_policy(policy: &crate::spec::Retention) -> String {
    [
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
    ]
    .iter()
    .filter_map(|(k, n)| n.map(|n| format!("{k} {n}")))
    .collect::<Vec<_>>()
    .join(", ")
}

/// What a restore would do or did.
pub struct Restored {
    pub manifest: Manifest,
    /// The safety copy taken first (none for a dry run).
    pub safety: Option<Manifest>,
    /// Lines for the person: what was (or would be) overwritten, created, removed.
    pub lines: Vec<String>,
}

/// Backups passed over as a default, each with why (id, reason).
pub type Passed = Vec<(String, String)>;

impl Backups {
    /// This project's backups of `name`, oldest first (a store may be shared by projects).
    pub fn list(&self, name: &str) -> Result<Vec<Manifest>, OpError> {
        let store = self.store(self.get(name)?)?;
        Ok(store
            .list(name)?
            .into_iter()
            .filter(|m| m.project == self.spec.project.value)
            .collect())
    }

    /// The newest backup of `name` that `eligible` accepts and whose time is trusted (as
    /// for retention: [`super::retention::untrusted_time`]), and the newer eligible ones
    /// passed over for their time, each with why. A manifest's word alone (a date in 2100,
    /// or far from when its data was written) never makes a backup the default.
    pub fn newest_trusted(
        &self,
        name: &str,
        eligible: impl Fn(&Manifest) -> bool,
    ) -> Result<(Option<Manifest>, Passed), OpError> {
        let store = self.store(self.get(name)?)?;
        let now = crate::state::now();
        let mut skipped = Vec::new();
        for m in self.list(name)?.into_iter().rev().filter(|m| eligible(m)) {
            match super::retention::untrusted_time(m.created_at, store.modified(name, &m.id), now) {
                Some(why) => skipped.push((m.id, why)),
                None => return Ok((Some(m), skipped)),
            }
        }
        Ok((None, skipped))
    }

    /// The backup to restore: `id`, or the newest verified one that is not a safety copy
    /// and whose time is trusted (those passed over are named on stderr).
    pub fn choose(&self, name: &str, id: Option<&str>) -> Result<Manifest, OpError> {
        let found = match id {
            Some(id) => self.list(name)?.into_iter().find(|m| m.id == id),
            None => {
                let (found, skipped) = self.newest_trusted(name, |m| m.verified && !m.safety)?;
                for (id, why) in skipped {
                    eprintln!(
                        "backup `{name}`: passing over {id} ({why}); name its id to restore it anyway"
                    );
                }
                found
            }
        };
        found.ok_or_else(|| {
            failed(
                name,
                match id {
                    Some(id) => format!("there is no backup `{id}`"),
                    None => "there is no verified backup at a trusted time to restore".into(),
                },
                "`berth backup list` shows them",
            )
        })
    }

    /// The entries of a backup's tar stream (verifying it on the way).
    fn entries_of(&self, name: &str, m: &Manifest) -> Result<Vec<String>, OpError> {
        let identity = self.identity(name)?;
        let store = self.store(self.get(name)?)?;
        verify(&store, m, identity)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let data = store.open(name, &m.id)?;
        let names = std::thread::scope(|s| {
            let walker = s.spawn(move || tar_names(pipeline::ChannelReader::new(rx)));
            let _ = pipeline::open(data, identity, super::ChannelSink::new(tx));
            walker.join().unwrap_or_default()
        });
        Ok(names)
    }

    /// Restores a volume backup: verifies it, takes a safety copy of the volume, stops and
    /// removes the containers that mount it, puts the backup into a fresh volume, and
    /// applies the latest revision again, through its health gates. If a gate fails, the
    /// safety copy goes back the same way, and the pods run on the old data.
    pub fn restore(
        &self,
        name: &str,
        id: Option<&str>,
        dry_run: bool,
        state_dir: Option<&Path>,
        spec_path: &Path,
    ) -> Result<Restored, OpError> {
        let backup = self.get(name)?;
        // The lock first (waiting for an apply to finish), before the engine is observed
        // or anything read (listing a volume mounts it in a helper): an unfinished apply or
        // restore is recovered first.
        let _lock = self.lock_for_restore()?;
        if backup.source.value.exec.is_some() {
            return self.restore_exec(name, id, dry_run);
        }
        if let Some(path) = &backup.source.value.path {
            let root = self.spec_dir.join(crate::fsutil::expand_home(&path.value));
            return self.restore_path(name, id, dry_run, &root, spec_path, state_dir);
        }
        let Some(volume) = backup.source.value.volume.as_ref().map(|v| v.value.clone()) else {
            return Err(failed(
                name,
                "its source names no volume, path, or pod with `exec`",
                "give `source: { volume: NAME }`, `{ path: /abs }` or `{ pod: NAME, exec: [...] }`",
            ));
        };
        // Restoring makes the volume again: never one berth does not manage.
        if self.spec.volumes.get(&volume).is_some_and(|v| v.external) {
            return Err(failed(
                name,
                format!("volume `{volume}` is external: berth never removes or makes it"),
                "restore it by hand with the one-liner in the README, into a container that mounts it",
            ));
        }
        let engine = self.primary()?;
        let project = self.spec.project.value.as_str();
        let object = crate::apply::container::object_name(project, &volume);
        // Restoring removes the volume: a container berth does not manage that uses it
        // would make that fail after the pods had gone. Refused before anything is touched.
        let foreign = self
            .runtime
            .block_on(engine.foreign_on_volume(&object, project))?;
        if !foreign.is_empty() {
            return Err(failed(
                name,
                foreign_users(&object, &foreign),
                "nothing was changed; run the restore again once they are gone",
            ));
        }
        let manifest = self.choose(name, id)?;
        let incoming = self.entries_of(name, &manifest)?;
        let current = self
            .runtime
            .block_on(self.volume_entries(engine, &object))?;
        let mut lines = Vec::new();
        let overwritten: Vec<&String> = incoming.iter().filter(|e| current.contains(e)).collect();
        let created: Vec<&String> = incoming.iter().filter(|e| !current.contains(e)).collect();
        let removed: Vec<&String> = current.iter().filter(|e| !incoming.contains(e)).collect();
        lines.push(format!(
            "{} from backup {} ({}): {} entries overwritten, {} created, {} removed (not in the backup)",
            if dry_run { "would restore volume" } else { "restoring volume" },
            manifest.id,
            crate::state::format_time(manifest.created_at),
            overwritten.len(),
            created.len(),
            removed.len()
        ));
        for (what, list) in [
            ("overwrite", &overwritten),
            ("create", &created),
            ("remove", &removed),
        ] {
            for e in list.iter().take(20) {
                lines.push(format!("  {what} {e}"));
            }
            if list.len() > 20 {
                lines.push(format!("  ... and {} more to {what}", list.len() - 20));
            }
        }
        if dry_run {
            return Ok(Restored {
                manifest,
                safety: None,
                lines,
            });
        }
        let latest = crate::state::revisions::latest(&self.state)?;
        if latest == 0 {
            return Err(failed(
                name,
                "the project has no applied revision to bring its pods back with",
                "apply the spec first",
            ));
        }
        // The helper's image, chosen while the pods still run (a failed gate removes them).
        let image = self.runtime.block_on(async {
            let containers = engine.containers(project).await?;
            containers
                .iter()
                .filter(|c| !c.labels.contains_key(labels::HELPER))
                .find(|c| c.volumes.contains(&object))
                .or_else(|| containers.first())
                .map(|c| c.image_id.clone())
                .ok_or_else(|| {
                    failed(
                        name,
                        "no container of the project runs here",
                        "apply the spec first",
                    )
                })
        })?;
        let volume_labels: std::collections::BTreeMap<String, String> = self
            .runtime
            .block_on(engine.labels_of(crate::engine::docker::ObjectKind::Volume, &object))?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut journal = self.begin_restore(name, &manifest, spec_path, latest)?;
        let region = self.spec.region_names()[0].to_owned();
        let forward = (|| -> Result<Manifest, OpError> {
            // The pods that write to it stop first, so that the safety copy holds
            // everything; each stop journaled with its undo (start it again).
            let running: Vec<String> = self.runtime.block_on(async {
                Ok::<_, OpError>(
                    engine
                        .containers(project)
                        .await?
                        .into_iter()
                        .filter(|c| c.volumes.contains(&object) && c.state == "running")
                        .map(|c| c.id)
                        .collect(),
                )
            })?;
            self.stop_journaled(&mut journal, engine, &region, &running)?;
            let safety = self.safety_copy(&mut journal, name)?;
            // The pods go (they mount the volume): applying the revision again brings them
            // back, after the data (undo records run newest first).
            record_undo(&mut journal, Undo::Reapply { revision: latest })?;
            // The volume is emptied: the safety copy is what undoes it.
            record_undo(
                &mut journal,
                Undo::RefillVolume {
                    region: region.clone(),
                    volume: object.clone(),
                    labels: volume_labels.clone(),
                    image: image.clone(),
                    store: self.store(self.get(name)?)?.root,
                    backup: name.to_owned(),
                    id: safety.id.clone(),
                    identity: self.identity(name)?.path.clone(),
                },
            )?;
            self.step(&mut journal, "restore.volume", || {
                let from = self.backup_ref(name, &manifest.id)?;
                self.runtime
                    .block_on(refill_volume(
                        engine,
                        project,
                        &object,
                        &volume_labels,
                        &image,
                        &from,
                    ))
                    .map_err(|e| {
                        failed(
                            name,
                            format!("restoring volume `{volume}` failed: {e}"),
                            "verify the backup: `berth backup verify`",
                        )
                    })
            })?;
            self.step(&mut journal, "restore.pods", || {
                crate::ops::reapply(
                    spec_path,
                    state_dir,
                    latest,
                    &format!("berth backup restore {name}"),
                )
                .map_err(|e| {
                    failed(
                        name,
                        format!("the pods did not come back healthy on the restored data ({e})"),
                        "see the pods' logs",
                    )
                })
            })?;
            Ok(safety)
        })();
        self.finish_restore(journal, name, forward, spec_path, state_dir)
            .map(|safety| {
                lines.push(format!("safety copy of the volume taken: {}", safety.id));
                lines.push(format!(
                    "the pods are back on the data of {}, healthy",
                    manifest.id
                ));
                Restored {
                    manifest,
                    safety: Some(safety),
                    lines,
                }
            })
    }

    /// Restores a command's output through the source's `restore` command, in the running
    /// pod: verified first, a safety copy (the command's output now) taken, the backup piped
    /// into the command, then the pod's health gate. If the command or the gate fails, the
    /// safety copy is piped back the same way.
    fn restore_exec(
        &self,
        name: &str,
        id: Option<&str>,
        dry_run: bool,
    ) -> Result<Restored, OpError> {
        let source = &self.get(name)?.source.value;
        let (Some(pod), Some(cmd)) = (source.pod.as_ref(), source.restore.as_ref()) else {
            return Err(failed(
                name,
                "a command's output is restored through a command, and the source has no `restore`",
                "add `restore: [...]` to the source (e.g. `[pg_restore, -d, shop]`), or pipe the one-liner's output into it by hand",
            ));
        };
        let pod = pod.value.clone();
        let manifest = self.choose(name, id)?;
        let identity = self.identity(name)?;
        let store = self.store(self.get(name)?)?;
        verify(&store, &manifest, identity)?;
        let mut lines = vec![format!(
            "{} backup {} ({}, {} bytes) into `{}` in pod `{pod}`",
            if dry_run { "would pipe" } else { "piping" },
            manifest.id,
            crate::state::format_time(manifest.created_at),
            manifest.plain_bytes,
            cmd.join(" ")
        )];
        if dry_run {
            return Ok(Restored {
                manifest,
                safety: None,
                lines,
            });
        }
        let (safety, _) = self.run(name, true)?;
        lines.push(format!("safety copy taken: {}", safety.id));
        let attempt = self
            .pipe_into(name, &pod, cmd, &manifest)
            .and_then(|()| self.pod_gate(name, &pod));
        match attempt {
            Ok(()) => {
                lines.push(format!(
                    "pod `{pod}` is healthy on the data of {}",
                    manifest.id
                ));
                Ok(Restored {
                    manifest,
                    safety: Some(safety),
                    lines,
                })
            }
            Err(e) => {
                self.pipe_into(name, &pod, cmd, &safety)?;
                self.pod_gate(name, &pod)?;
                Err(failed(
                    name,
                    format!("restoring {} failed ({e})", manifest.id),
                    format!(
                        "the safety copy {} was piped back and pod `{pod}` is healthy on the data from before",
                        safety.id
                    ),
                ))
            }
        }
    }

    /// Restores a host path: verified first, a safety copy taken, the pods that bind-mount
    /// it stopped, its contents replaced by the backup's, the pods started and gated; the
    /// safety copy goes back the same way if a gate fails.
    fn restore_path(
        &self,
        name: &str,
        id: Option<&str>,
        dry_run: bool,
        root: &Path,
        spec_path: &Path,
        state_dir: Option<&Path>,
    ) -> Result<Restored, OpError> {
        // Restoring empties the directory first: its real path (no `..`, no symlink),
        // never a top-level one, and never one that holds anything berth needs to undo it.
        let root = &std::fs::canonicalize(root).map_err(|e| {
            failed(
                name,
                format!("`{}`: {e}", root.display()),
                "the path must exist",
            )
        })?;
        let store_root = self.store(self.get(name)?)?.root;
        let precious = [
            (
                "the backup store",
                std::fs::canonicalize(&store_root).unwrap_or(store_root),
            ),
            ("the spec", self.spec_dir.clone()),
            ("the state directory", self.state.path.clone()),
        ];
        let identity_path = self.identity.as_ref().map(|i| i.path.clone());
        for (what, p) in precious
            .into_iter()
            .chain(identity_path.map(|p| ("the identity", p)))
        {
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            if p.starts_with(root) {
                return Err(failed(
                    name,
                    format!(
                        "{what} is inside `{}`, which a restore empties",
                        root.display()
                    ),
                    "keep the store, the spec, the state and the key outside the backed-up path",
                ));
            }
        }
        if root.components().count() < 3 {
            return Err(failed(
                name,
                format!(
                    "`{}` is too close to the root to be emptied and restored",
                    root.display()
                ),
                "back up (and restore) a directory of its own, such as /srv/APP/uploads",
            ));
        }
        let manifest = self.choose(name, id)?;
        let incoming = self.entries_of(name, &manifest)?;
        let current = walk(root);
        let overwritten = incoming.iter().filter(|e| current.contains(e)).count();
        let created = incoming.len() - overwritten;
        let removed: Vec<&String> = current.iter().filter(|e| !incoming.contains(e)).collect();
        let mut lines = vec![format!(
            "{} {} from backup {} ({}): {overwritten} entries overwritten, {created} created, {} removed (not in the backup)",
            if dry_run {
                "would restore"
            } else {
                "restoring"
            },
            root.display(),
            manifest.id,
            crate::state::format_time(manifest.created_at),
            removed.len()
        )];
        for e in removed.iter().take(20) {
            lines.push(format!("  remove {e}"));
        }
        if dry_run {
            return Ok(Restored {
                manifest,
                safety: None,
                lines,
            });
        }
        let latest = crate::state::revisions::latest(&self.state)?;
        let engine = self.primary()?;
        let project = self.spec.project.value.as_str();
        let region = self.spec.region_names()[0].to_owned();
        let mut journal = self.begin_restore(name, &manifest, spec_path, latest)?;
        let forward = (|| -> Result<(Manifest, Vec<String>), OpError> {
            // The containers that bind-mount it stop, each journaled with its undo.
            let users: Vec<(String, Option<String>)> = self.runtime.block_on(async {
                Ok::<_, OpError>(
                    engine
                        .containers(project)
                        .await?
                        .into_iter()
                        .filter(|c| c.state == "running" && binds(&c.binds, root))
                        .map(|c| {
                            let pod = labels::decode(&c.labels).map(|d| d.address.name);
                            (c.id, pod)
                        })
                        .collect(),
                )
            })?;
            let ids: Vec<String> = users.iter().map(|(id, _)| id.clone()).collect();
            self.stop_journaled(&mut journal, engine, &region, &ids)?;
            let safety = self.safety_copy(&mut journal, name)?;
            // The directory is emptied: the safety copy is what undoes it.
            let undo = self.backup_ref(name, &safety.id)?;
            record_undo(
                &mut journal,
                Undo::RefillPath {
                    region: region.clone(),
                    path: root.to_path_buf(),
                    store: undo.store,
                    backup: undo.name,
                    id: undo.id,
                    identity: undo.identity,
                },
            )?;
            self.step(&mut journal, "restore.path", || {
                refill_path(root, &self.backup_ref(name, &manifest.id)?).map_err(|why| {
                    failed(
                        name,
                        format!("restoring {} failed: {why}", root.display()),
                        "verify the backup: `berth backup verify`",
                    )
                })
            })?;
            // The pods start again, and pass their gates on the restored data.
            self.step(&mut journal, "restore.pods", || {
                self.runtime.block_on(async {
                    for (id, _) in &users {
                        engine.start(id).await?;
                    }
                    Ok::<_, OpError>(())
                })?;
                let mut pods: Vec<String> = users.iter().filter_map(|(_, p)| p.clone()).collect();
                pods.sort();
                pods.dedup();
                pods.iter()
                    .try_for_each(|p| self.pod_gate(name, p))
                    .map_err(|e| match e {
                        OpError::Backup(BackupError::Failed { why, help, .. }) => failed(
                            name,
                            format!("the pods failed their gates on the restored data ({why})"),
                            help,
                        ),
                        other => other,
                    })?;
                Ok(pods)
            })
            .map(|pods| (safety, pods))
        })();
        let forward = forward.map(|(safety, _)| safety);
        let safety = self.finish_restore(journal, name, forward, spec_path, state_dir)?;
        lines.push(format!("safety copy taken: {}", safety.id));
        lines.push(format!(
            "{} holds the data of {}",
            root.display(),
            manifest.id
        ));
        Ok(Restored {
            manifest,
            safety: Some(safety),
            lines,
        })
    }

    /// Decrypts a backup and pipes it into `cmd` in the pod; fails when the command does.
    fn pipe_into(
        &self,
        name: &str,
        pod: &str,
        cmd: &[String],
        m: &Manifest,
    ) -> Result<(), OpError> {
        use tokio::io::AsyncWriteExt;
        let engine = self.primary()?;
        let identity = self.identity(name)?;
        let store = self.store(self.get(name)?)?;
        let data = store.open(name, &m.id)?;
        self.runtime.block_on(async {
            let container = self.pod_container(name, pod).await?;
            let (exec_id, io) = engine.exec(&container, cmd, true).await?;
            let crate::engine::docker::ExecIo {
                mut output,
                mut input,
            } = io;
            let (tx, mut rx) =
                tokio::sync::mpsc::channel::<Result<hyper::body::Bytes, std::io::Error>>(4);
            let opener = open_into(data, &identity.path, tx);
            // Moves the receiver in: when the command stops reading, the channel closes and
            // the pipeline thread stops too (no thread is left blocked on a full channel).
            let writer = async move {
                let mut result = Ok(());
                while let Some(item) = rx.recv().await {
                    let written = match item {
                        Ok(bytes) => input.write_all(&bytes).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = written {
                        result = Err(e);
                        break;
                    }
                }
                // Always the end of input, so that the command finishes (and its output
                // with it), failed or not.
                let _ = input.shutdown().await;
                result
            };
            let reader = async {
                let mut tail = Vec::new();
                while let Some(frame) = output.next().await {
                    // Its stderr only: what it prints on stdout may be the data itself.
                    if let Ok(bollard::container::LogOutput::StdErr { message }) = frame {
                        tail.extend_from_slice(&message);
                        let excess = tail.len().saturating_sub(4096);
                        tail.drain(..excess);
                    }
                }
                tail
            };
            // The writer owns the receiver: when it is done, a blocked send ends.
            let (written, tail) = tokio::join!(writer, reader);
            let opened = tokio::task::spawn_blocking(move || opener.join())
                .await
                .map_err(|_| {
                    failed(name, "the restore thread was lost", "run the restore again")
                })?;
            let code = engine.exec_exit_code(&exec_id).await?;
            let said = String::from_utf8_lossy(&tail).trim().to_owned();
            if !matches!(opened, Ok(Ok(_))) {
                return Err(failed(
                    name,
                    "the backup could not be read while restoring",
                    "verify it: `berth backup verify`",
                ));
            }
            if let Err(e) = written {
                return Err(failed(
                    name,
                    format!("`{}` stopped reading: {e} ({said})", cmd.join(" ")),
                    "run the command by hand in the pod to see why",
                ));
            }
            if code != Some(0) {
                return Err(failed(
                    name,
                    format!(
                        "`{}` exited with {}: {said}",
                        cmd.join(" "),
                        code.map_or("no status".into(), |c| c.to_string())
                    ),
                    "run the command by hand in the pod to see why",
                ));
            }
            Ok(())
        })
    }

    /// The pod's gates (health, then checks) on its running container.
    fn pod_gate(&self, name: &str, pod: &str) -> Result<(), OpError> {
        let engine = self.primary()?;
        let Some(spec_pod) = self.spec.pods.get(pod) else {
            return Ok(());
        };
        let network = crate::apply::container::object_name(&self.spec.project.value, "default");
        self.runtime.block_on(async {
            let container = self.pod_container(name, pod).await?;
            let verdict = match crate::apply::gate::healthy(engine, &container, &network, spec_pod)
                .await
            {
                Ok(()) => crate::apply::gate::checks(engine, &container, &network, spec_pod).await,
                failed => failed,
            };
            verdict.map_err(|f| {
                failed(
                    name,
                    format!("pod `{pod}` failed its `{}` gate: {}", f.gate, f.detail),
                    "see the pod's logs",
                )
            })
        })
    }

    /// The entries now in a volume (through a helper container).
    async fn volume_entries(&self, engine: &Engine, object: &str) -> Result<Vec<String>, OpError> {
        let project = self.spec.project.value.as_str();
        let containers = engine.containers(project).await?;
        let Some(image) = containers.first().map(|c| c.image_id.clone()) else {
            return Ok(Vec::new());
        };
        let helper = create_helper(engine, project, &image, object).await?;
        // Streamed to a thread that reads the names: memory stays bounded whatever the
        // volume holds.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let lister = std::thread::spawn(move || tar_names(pipeline::ChannelReader::new(rx)));
        let mut stream = engine.download(&helper, "/volume/.");
        let mut failure = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    let tx = tx.clone();
                    let sent = tokio::task::spawn_blocking(move || tx.send(b.to_vec())).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(stream);
        drop(tx);
        let names = tokio::task::spawn_blocking(move || lister.join().unwrap_or_default())
            .await
            .unwrap_or_default();
        let _ = engine.remove(&helper).await;
        if let Some(e) = failure {
            return Err(e.into());
        }
        Ok(names)
    }
}

/// Whether a container's bind mounts reach `root` (it, inside it, or around it).
pub fn binds(mounts: &[(String, String)], root: &Path) -> bool {
    mounts
        .iter()
        .any(|(src, _)| root.starts_with(src) || Path::new(src).starts_with(root))
}

/// Writes an undo record, durably, before the mutation it undoes.
impl Backups {
    /// Stops these containers, each after its undo (start it again) is journaled.
    fn stop_journaled(
        &self,
        journal: &mut Journal,
        engine: &crate::engine::Engine,
        region: &str,
        ids: &[String],
    ) -> Result<(), OpError> {
        for id in ids {
            record_undo(
                journal,
                Undo::StartContainer {
                    region: region.to_owned(),
                    id: id.clone(),
                },
            )?;
            self.runtime.block_on(engine.stop(id))?;
        }
        Ok(())
    }
}

fn record_undo(journal: &mut Journal, undo: Undo) -> Result<(), OpError> {
    let id = journal.next_undo_id();
    journal.append(Record::Undo { id, undo })?;
    Ok(())
}

/// The names in a tar stream (`./a/b` as `a/b`), directories included.
fn tar_names(r: impl std::io::Read) -> Vec<String> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(r);
    if let Ok(entries) = archive.entries() {
        for e in entries.flatten() {
            if let Ok(p) = e.path() {
                let p = p.display().to_string();
                let p = p.trim_start_matches("./").trim_end_matches('/').to_owned();
                if !p.is_empty() && p != "." {
                    out.push(p);
                }
            }
        }
    }
    // Read to the very end (the padding after the end-of-archive blocks), so that the
    // writer never finds the reader gone.
    let _ = std::io::copy(&mut archive.into_inner(), &mut std::io::sink());
    out
}

/// Sends what is written to an async channel, blocking (from a pipeline thread).
/// Decrypts and decompresses a backup on a thread of its own into an async channel (for
/// an upload or a command's stdin). A failure is sent down the channel too, so that the
/// receiving side stops with it: a half-read backup must never look complete. The thread
/// loads the identity again from its file (an identity is not shared across threads).
fn open_into(
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

/// The relative paths under a directory (directories included), as tar names them.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

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
    fn open(&self) -> Result<Box<dyn std::io::Read + Send>, String> {
        let store = LocalStore::open(&self.store).map_err(|e| e.to_string())?;
        store.open(&self.name, &self.id).map_err(|e| e.to_string())
    }
}

/// Debugging aid for the kill tests: with `BERTH_FAULT_RESTORE_KILL=emptied`, a restore
/// aborts right after emptying the volume or directory (before the backup is unpacked into
/// it), as a `kill -9` at that moment would.
pub const ENV_FAULT_RESTORE_KILL: &str = "BERTH_FAULT_RESTORE_KILL";

/// Debugging aid for the kill tests: with `BERTH_FAULT_BACKUP_KILL=sealed`, a backup (or a
/// restore's safety copy) aborts once its data is written and before its manifest is, as
/// a `kill -9` at that moment would.
pub const ENV_FAULT_BACKUP_KILL: &str = "BERTH_FAULT_BACKUP_KILL";

fn fault_point(env: &str, at: &str) {
    if std::env::var(env).as_deref() == Ok(at) {
        eprintln!("{env}: aborting at `{at}`");
        std::process::abort();
    }
}

/// The labels of a helper container: the project's, and what it is.
fn helper_labels(project: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::PROJECT.to_owned(), project.to_owned()),
        (labels::HELPER.to_owned(), "backup".to_owned()),
    ])
}

/// A helper container (never started) that mounts `volume`, labelled as berth's.
async fn create_helper(
    engine: &Engine,
    project: &str,
    image: &str,
    volume: &str,
) -> Result<String, crate::engine::EngineError> {
    let name = format!("{project}-berth-backup-{}", &new_id(0)[21..]);
    engine
        .create_helper(&name, image, volume, helper_labels(project))
        .await
}

/// Removes the helper containers of the project a killed backup or restore left behind;
/// says how many. Only called under the project's lock (no helper is in use then).
pub async fn sweep_helpers(
    engine: &Engine,
    project: &str,
) -> Result<usize, crate::engine::EngineError> {
    let mut removed = 0;
    for c in engine.containers(project).await? {
        if c.labels.contains_key(labels::HELPER) {
            engine.remove(&c.id).await?;
            removed += 1;
        }
    }
    Ok(removed)
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
) -> Result<(), String> {
    let data = from.open()?;
    let text = |e: crate::engine::EngineError| e.to_string();
    // Checked before anything is removed: a container berth does not manage keeps the
    // volume in use, and the engine would refuse to remove it after the pods had gone.
    let foreign = engine
        .foreign_on_volume(volume, project)
        .await
        .map_err(text)?;
    if !foreign.is_empty() {
        return Err(foreign_users(volume, &foreign));
    }
    for c in engine.containers(project).await.map_err(text)? {
        if c.volumes.iter().any(|v| v == volume) {
            engine.remove(&c.id).await.map_err(text)?;
        }
    }
    engine.remove_volume(volume).await.map_err(text)?;
    let l: HashMap<String, String> = volume_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    engine.create_volume(volume, l).await.map_err(text)?;
    fault_point(ENV_FAULT_RESTORE_KILL, "emptied");
    let helper = create_helper(engine, project, image, volume)
        .await
        .map_err(text)?;
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
        .map_err(|_| "the restore thread was lost".to_owned())?;
    let removed = engine.remove(&helper).await;
    uploaded.map_err(text)?;
    match opened {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("the backup could not be read: {e}")),
        Err(_) => return Err("the restore thread panicked".into()),
    }
    removed.map_err(text)
}

/// Why a volume that containers berth does not manage use cannot be made again.
fn foreign_users(volume: &str, names: &[String]) -> String {
    format!(
        "volume {volume} is in use by container(s) berth does not manage ({}); berth never removes them: stop and remove them (`docker rm -f NAME`), or detach them from the volume, first",
        names.join(", ")
    )
}

/// Makes the directory `root` hold exactly what the backup holds: emptied, then the backup
/// unpacked into it. Idempotent, like [`refill_volume`]. The containers that bind-mount it
/// are the caller's to stop.
pub fn refill_path(root: &Path, from: &BackupRef) -> Result<(), String> {
    let data = from.open()?;
    let identity = Identity::load(&from.identity).map_err(|e| e.to_string())?;
    for e in std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .flatten()
    {
        let p = e.path();
        let r = if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|x| format!("{}: {x}", p.display()))?;
    }
    fault_point(ENV_FAULT_RESTORE_KILL, "emptied");
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let target = root.to_path_buf();
    std::thread::scope(|s| {
        let unpacker = s.spawn(move || {
            let mut a = tar::Archive::new(pipeline::ChannelReader::new(rx));
            a.set_preserve_permissions(true);
            a.set_preserve_ownerships(true);
            a.set_overwrite(true);
            a.unpack(&target)?;
            std::io::copy(&mut a.into_inner(), &mut std::io::sink()).map(|_| ())
        });
        let opened = pipeline::open(data, &identity, super::ChannelSink::new(tx));
        let unpacked = unpacker
            .join()
            .map_err(|_| "the unpacking thread panicked".to_owned())?;
        opened.map_err(|e| e.to_string())?;
        unpacked.map_err(|e| format!("unpacking into {}: {e}", root.display()))
    })
}
