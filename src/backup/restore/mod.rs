//! `berth backup restore`: a backup put back in place. [`Backups::restore`] reads top to
//! bottom: the project's lock; the place checked (a volume or a host directory); the
//! backup chosen, verified, and what it would change; then, journaled (each mutation after
//! its undo, for a failure here or `berth recover` after a crash), the pods that use the
//! place stopped, a safety copy taken, the backup streamed in, the pods brought back
//! through their gates. If a step fails, the journal is unwound: the safety copy goes back
//! and the pods run on the data from before. A command's output goes back through the
//! source's `restore` command instead (`exec.rs`). The checks and the dry run's
//! account are in `place.rs`; the journal's start, steps and end in `journaled.rs`.

mod exec;
mod journaled;
mod place;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(in crate::backup) use journaled::record_undo;

use super::ops::{Backups, failed};
use crate::apply::Undo;
use crate::apply::journal::Journal;
use crate::apply::recover::Reapply;
use crate::archive::refill::{binds, refill_path, refill_volume};
use crate::archive::{BackupError, Manifest};
use crate::engine::{Engine, labels};
use crate::error::OpError;

/// What a restore would do or did.
pub struct Restored {
    pub manifest: Manifest,
    /// The safety copy taken first (none for a dry run).
    pub safety: Option<Manifest>,
    /// Lines for the person: what was (or would be) overwritten, created, removed.
    pub lines: Vec<String>,
}

/// Where a restore puts a backup back, checked before anything is read or touched.
enum Place {
    /// A volume berth manages: its name in the spec, and on the engine.
    Volume { volume: String, object: String },
    /// A host directory: its real path.
    Path { root: PathBuf },
}

/// A place ready to be put back: for a volume, the helper's image and the volume's labels,
/// read while the pods still run (a failed gate removes them).
enum Target<'p> {
    Volume {
        volume: &'p str,
        object: &'p str,
        image: String,
        labels: BTreeMap<String, String>,
    },
    Path {
        root: &'p Path,
    },
}

/// The revision a restore's pods come back with, and how to apply it again.
struct Again<'a> {
    reapply: &'a dyn Reapply,
    latest: u64,
}

impl Backups {
    /// Restores backup `id` of `name` (default: the newest verified one whose time is
    /// trusted) in place. Verified first; a safety copy of what is there taken; the pods
    /// that use it stopped; the backup put in; the pods brought back through their health
    /// gates. If a gate fails, the safety copy goes back the same way, and the pods run on
    /// the old data. `reapply` applies a revision again (through a session of the layer
    /// above, recorded as this restore): the pods of a volume come back with it, and an
    /// unwind brings them back on the safety copy the same way.
    pub fn restore(
        &self,
        name: &str,
        id: Option<&str>,
        dry_run: bool,
        spec_path: &Path,
        reapply: &dyn Reapply,
    ) -> Result<Restored, OpError> {
        let backup = self.get(name)?;
        // The lock first (waiting for an apply to finish), before the engine is observed
        // or anything read (listing a volume mounts it in a helper): an unfinished apply or
        // restore is recovered first.
        let _lock = self.lock_for_restore()?;
        if backup.source.value.exec.is_some() {
            return self.restore_exec(name, id, dry_run);
        }
        // Where it goes back: refused before anything is touched.
        let place = self.place(name, backup)?;
        // Which backup (verified on the way), and what it would overwrite, create, remove.
        let manifest = self.choose(name, id)?;
        let mut lines = self.changes(name, &manifest, &place, dry_run)?;
        if dry_run {
            return Ok(Restored {
                manifest,
                safety: None,
                lines,
            });
        }
        let latest = crate::state::revisions::latest(&self.project.state)?;
        let target = self.target(name, &place, latest)?;
        // Journaled from here: stop, safety copy, stream, bring back through the gates.
        let mut journal = self.begin_restore(name, &manifest, spec_path, latest)?;
        let again = Again { reapply, latest };
        let forward = self.put_back(&mut journal, name, &manifest, &target, &again);
        // Ended when it went through; otherwise unwound, and the error says what happened.
        let safety = self.finish_restore(journal, name, forward, reapply)?;
        lines.extend(target.done(&safety, &manifest));
        Ok(Restored {
            manifest,
            safety: Some(safety),
            lines,
        })
    }

    /// The journaled part of a restore, in order; each mutation after its undo.
    fn put_back(
        &self,
        journal: &mut Journal,
        name: &str,
        manifest: &Manifest,
        target: &Target,
        again: &Again,
    ) -> Result<Manifest, OpError> {
        let engine = self.engine(name)?;
        let region = self.region(name)?;
        // Stop: the pods that use the place stop first, so that the safety copy holds
        // everything; each stop journaled with its undo (start it again).
        let users = self.users_of(engine, target)?;
        let ids: Vec<String> = users.iter().map(|(id, _)| id.clone()).collect();
        self.stop_journaled(journal, engine, &region, &ids)?;
        // The safety copy of what is there now.
        let safety = self.safety_copy(journal, name)?;
        // The place is emptied next: the safety copy is what undoes it.
        self.record_refill_undo(journal, name, target, &safety, &region, again.latest)?;
        // Stream: the place made to hold exactly what the backup holds.
        self.step(journal, target.address(), || {
            self.refill(name, manifest, target)
        })?;
        // Bring back: the pods run again and pass their gates on the restored data.
        self.step(journal, "restore.pods", || {
            self.bring_back(name, target, &users, again)
        })?;
        Ok(safety)
    }

    /// The place made ready to put back, before the journal begins. A volume's pods come
    /// back by applying the latest revision again: there must be one; its helper's image
    /// is chosen, and its labels read, while the pods still run.
    fn target<'p>(&self, name: &str, place: &'p Place, latest: u64) -> Result<Target<'p>, OpError> {
        let (volume, object) = match place {
            Place::Path { root } => return Ok(Target::Path { root }),
            Place::Volume { volume, object } => (volume, object),
        };
        if latest == 0 {
            return Err(failed(
                name,
                "the project has no applied revision to bring its pods back with",
                "apply the spec first",
            ));
        }
        let engine = self.engine(name)?;
        let project = self.project.name();
        let image = self.project.runtime.block_on(async {
            let containers = engine.containers(project).await?;
            containers
                .iter()
                .filter(|c| !c.labels.contains_key(labels::HELPER))
                .find(|c| c.volumes.contains(object))
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
        let labels: BTreeMap<String, String> = self
            .project
            .runtime
            .block_on(engine.labels_of(crate::engine::docker::ObjectKind::Volume, object))?
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Target::Volume {
            volume,
            object,
            image,
            labels,
        })
    }

    /// The running containers that use the place (mount the volume, or bind-mount the
    /// directory), each with its pod when berth's labels name one.
    fn users_of(
        &self,
        engine: &Engine,
        target: &Target,
    ) -> Result<Vec<(String, Option<String>)>, OpError> {
        let project = self.project.name();
        self.project.runtime.block_on(async {
            Ok::<_, OpError>(
                engine
                    .containers(project)
                    .await?
                    .into_iter()
                    .filter(|c| {
                        c.state == "running"
                            && match target {
                                Target::Volume { object, .. } => {
                                    c.volumes.iter().any(|v| v == object)
                                }
                                Target::Path { root } => binds(&c.binds, root),
                            }
                    })
                    .map(|c| {
                        let pod = labels::decode(&c.labels).map(|d| d.address.name);
                        (c.id, pod)
                    })
                    .collect(),
            )
        })
    }

    /// Journals how to undo emptying the place: refilled from the safety copy; for a
    /// volume, first, applying the revision again (its pods go with it, and come back after
    /// the data: undo records run newest first).
    fn record_refill_undo(
        &self,
        journal: &mut Journal,
        name: &str,
        target: &Target,
        safety: &Manifest,
        region: &str,
        latest: u64,
    ) -> Result<(), OpError> {
        let from = self.backup_ref(name, &safety.id)?;
        let undo = match target {
            Target::Volume {
                object,
                image,
                labels,
                ..
            } => {
                record_undo(journal, Undo::Reapply { revision: latest })?;
                Undo::RefillVolume {
                    region: region.to_owned(),
                    volume: (*object).to_owned(),
                    labels: labels.clone(),
                    image: image.clone(),
                    store: from.store,
                    backup: from.name,
                    id: from.id,
                    identity: from.identity,
                }
            }
            Target::Path { root } => Undo::RefillPath {
                region: region.to_owned(),
                path: root.to_path_buf(),
                store: from.store,
                backup: from.name,
                id: from.id,
                identity: from.identity,
            },
        };
        record_undo(journal, undo)
    }

    /// The place emptied and made to hold exactly what backup `manifest` holds.
    fn refill(&self, name: &str, manifest: &Manifest, target: &Target) -> Result<(), OpError> {
        let from = self.backup_ref(name, &manifest.id)?;
        match target {
            Target::Volume {
                volume,
                object,
                image,
                labels,
            } => {
                let engine = self.engine(name)?;
                self.project
                    .runtime
                    .block_on(refill_volume(
                        engine,
                        self.project.name(),
                        object,
                        labels,
                        image,
                        &from,
                    ))
                    .map_err(|e| {
                        failed(
                            name,
                            format!("restoring volume `{volume}` failed: {e}"),
                            "verify the backup: `berth backup verify`",
                        )
                    })
            }
            Target::Path { root } => refill_path(root, &from).map_err(|why| {
                failed(
                    name,
                    format!("restoring {} failed: {why}", root.display()),
                    "verify the backup: `berth backup verify`",
                )
            }),
        }
    }

    /// The pods back on the restored data, through their gates: a volume's by applying
    /// the revision again (they went with the volume); a directory's started again.
    fn bring_back(
        &self,
        name: &str,
        target: &Target,
        users: &[(String, Option<String>)],
        again: &Again,
    ) -> Result<(), OpError> {
        if let Target::Volume { .. } = target {
            return again.reapply.reapply(again.latest).map_err(|e| {
                failed(
                    name,
                    format!("the pods did not come back healthy on the restored data ({e})"),
                    "see the pods' logs",
                )
            });
        }
        let engine = self.engine(name)?;
        self.project.runtime.block_on(async {
            for (id, _) in users {
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
            })
    }
}

impl Target<'_> {
    /// The journal's address of the step that refills the place.
    fn address(&self) -> &'static str {
        match self {
            Target::Volume { .. } => "restore.volume",
            Target::Path { .. } => "restore.path",
        }
    }

    /// What a restore that went through says at its end.
    fn done(&self, safety: &Manifest, manifest: &Manifest) -> [String; 2] {
        match self {
            Target::Volume { .. } => [
                format!("safety copy of the volume taken: {}", safety.id),
                format!("the pods are back on the data of {}, healthy", manifest.id),
            ],
            Target::Path { root } => [
                format!("safety copy taken: {}", safety.id),
                format!("{} holds the data of {}", root.display(), manifest.id),
            ],
        }
    }
}
