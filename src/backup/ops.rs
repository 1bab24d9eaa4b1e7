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
        let (engines, _) = runtime.block_on(crate::ops::observe_engines(&valid.spec))?;
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
        self.engines.get(name).ok_or_else(|| OpError::Secrets {
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
        let Some(identity) = &self.identity else {
            return Err(failed(
                name,
                "there is no identity on this machine to read the backup back with",
                "every backup is verified after it is written: run where the identity is (`berth secrets init`)",
            ));
        };
        let at = crate::state::now();
        let id = new_id(at);
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
        } else {
            store.discard(name, &id);
            return Err(failed(
                name,
                "backups of a command's output (`exec`) are not implemented yet",
                "back up the volume or the host path the data lives in",
            ));
        };
        let stats = match sealed {
            Ok(s) => s,
            Err(e) => {
                store.discard(name, &id);
                return Err(e);
            }
        };
        let mut manifest = Manifest {
            format_version: MANIFEST_FORMAT,
            id: id.clone(),
            name: name.to_owned(),
            project: self.spec.project.value.clone(),
            source: described,
            format: "tar+zstd+age".into(),
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
            for id in &stopped {
                engine.stop(id).await?;
            }
            let helper = format!("{project}-berth-backup-{}", &new_id(0)[17..]);
            let mut helper_labels = HashMap::new();
            helper_labels.insert(labels::PROJECT.to_owned(), project.to_owned());
            let made = engine
                .create_helper(&helper, &image, &object, helper_labels)
                .await;
            let result = match made {
                Ok(id) => {
                    let r = stream_into_seal(engine.download(&id, "/volume/."), recipients, out).await;
                    let _ = engine.remove(&id).await;
                    r.map_err(|e| failed(name, e, "check the engine and the store's disk"))
                }
                Err(e) => Err(e.into()),
            };
            for id in &stopped {
                engine.start(id).await?;
            }
            result
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
