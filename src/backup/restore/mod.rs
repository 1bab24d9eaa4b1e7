//! `berth backup restore`: a backup put back in place. [`Backups::restore`] reads top to
//! bottom: the project's lock; the place checked (a volume or a host directory); the
//! backup chosen, verified, and what it would change; then, journaled (each mutation after
//! its undo, for a failure here or `berth recover` after a crash), the pods that use the
//! place stopped, a safety copy taken, the backup streamed in, the pods brought back
//! through their gates. If a step fails, the journal is unwound: the safety copy goes back
//! and the pods run on the data from before. A command's output goes back through the
//! source's `restore` command instead (`exec.rs`). The checks and the dry run's
//! account are in `place.rs`; the journal's start, steps and end in `journaled.rs`.

pub mod elsewhere;
mod exec;
mod journaled;
mod place;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(in crate::backup) use journaled::record_undo;

use super::ops::{Backups, failed};
use crate::apply::Undo;
use crate::apply::journal::Journal;
use crate::apply::recover::Reapply;
use crate::apply::undo::STAGING_PREFIX;
use crate::archive::refill::{BackupRef, RefillError, binds, refill_volume, stage_path, swap_in};
use crate::archive::store::{LocalStore, Store};
use crate::archive::{BackupError, Manifest, verify_seeing};
use crate::engine::{Engine, labels};
use crate::error::OpError;
use crate::secrets::age::Identity;

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

/// How long each phase of a restore took (those it reached).
#[derive(Default)]
struct Phases {
    verified: Option<Duration>,
    safety: Option<Duration>,
    restored: Option<Duration>,
    gates: Option<Duration>,
    /// A directory's backup was unpacked beside the data while it was verified.
    staged: bool,
}

impl Phases {
    /// `verified 1.1 s, safety copy 2.0 s (at the same time), restored 1.4 s, gates 0.8 s`.
    fn said(&self) -> String {
        let secs =
            |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        format!(
            "verified {}{}, safety copy {} (at the same time), restored {}, gates {}",
            secs(self.verified),
            if self.staged {
                " while unpacked beside the data"
            } else {
                ""
            },
            secs(self.safety),
            secs(self.restored),
            secs(self.gates)
        )
    }
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
        // Which backup, and what is there now.
        let manifest = self.choose(name, id)?;
        let current = self.current_entries(name, &place)?;
        if dry_run {
            // Verified on the way, and what it would overwrite, create, remove.
            let incoming = self.entries_of(name, &manifest)?;
            return Ok(Restored {
                lines: self.change_lines(&manifest, &place, &incoming, &current, dry_run),
                manifest,
                safety: None,
            });
        }
        // The stored file against its manifest, before any pod stops: a damaged file is
        // refused with everything still up (the whole read-back runs beside the safety
        // copy, below).
        crate::archive::check_stored(&self.store(backup)?, &manifest)?;
        let latest = crate::state::revisions::latest(&self.project.state)?;
        let target = self.target(name, &place, latest)?;
        // Journaled from here: stop, safety copy (while the backup is verified), stream,
        // bring back through the gates.
        let mut journal = self.begin_restore(name, &manifest, spec_path, latest)?;
        let again = Again { reapply, latest };
        let mut phases = Phases::default();
        let forward = self.put_back(&mut journal, name, &manifest, &target, &again, &mut phases);
        let (forward, incoming) = match forward {
            Ok((safety, incoming)) => (Ok(safety), incoming),
            Err(e) => (Err(e), Vec::new()),
        };
        // Ended when it went through; otherwise unwound, and the error says what happened.
        let safety = self.finish_restore(journal, name, forward, reapply)?;
        let mut lines = self.change_lines(&manifest, &place, &incoming, &current, dry_run);
        lines.extend(target.done(&safety, &manifest));
        lines.push(phases.said());
        Ok(Restored {
            manifest,
            safety: Some(safety),
            lines,
        })
    }

    /// The journaled part of a restore, in order; each mutation after its undo. Returns
    /// the safety copy and the entries of the backup (read while it was verified).
    fn put_back(
        &self,
        journal: &mut Journal,
        name: &str,
        manifest: &Manifest,
        target: &Target,
        again: &Again,
        phases: &mut Phases,
    ) -> Result<(Manifest, Vec<String>), OpError> {
        let engine = self.engine(name)?;
        let region = self.region(name)?;
        // Stop: the pods that use the place stop first, so that the safety copy holds
        // everything; each stop journaled with its undo (start it again).
        let users = self.users_of(engine, target)?;
        let ids: Vec<String> = users.iter().map(|(id, _)| id.clone()).collect();
        self.stop_journaled(journal, engine, &region, &ids)?;
        // The safety copy of what is there now, while the backup to restore is read back
        // whole (they read different things): a directory's unpacked beside the data (the
        // one pass that reads it), a volume's verified. A damaged backup stops the restore
        // here, before anything is emptied.
        let staging = match target {
            Target::Path { root } => Some(staging_of(root, manifest)),
            Target::Volume { .. } => None,
        };
        if let Some(path) = &staging {
            record_undo(journal, Undo::RemoveStaging { path: path.clone() })?;
        }
        let (safety, incoming) =
            self.safety_copy_reading(journal, name, manifest, staging.as_deref(), phases)?;
        // The place is emptied next: the safety copy is what undoes it.
        self.record_refill_undo(journal, name, target, &safety, &region, again.latest)?;
        // The place made to hold exactly what the backup holds: the unpacked backup moved
        // in, or the backup streamed into the volume.
        let t = Instant::now();
        self.step(journal, target.address(), || {
            self.refill(name, manifest, target)
        })?;
        phases.restored = Some(t.elapsed());
        // Bring back: the pods run again and pass their gates on the restored data.
        let t = Instant::now();
        self.step(journal, "restore.pods", || {
            self.bring_back(name, target, &users, again)
        })?;
        phases.gates = Some(t.elapsed());
        Ok((safety, incoming))
    }

    /// The safety copy (a journaled step), taken while the backup to restore is read back
    /// whole on a thread of its own: unpacked into `staging` (a directory's), or verified (a
    /// volume's); both must succeed. The backup's entries come from that read-back.
    fn safety_copy_reading(
        &self,
        journal: &mut Journal,
        name: &str,
        manifest: &Manifest,
        staging: Option<&Path>,
        phases: &mut Phases,
    ) -> Result<(Manifest, Vec<String>), OpError> {
        let from = self.backup_ref(name, &manifest.id)?;
        let (safety, checked) = std::thread::scope(|s| {
            let checker = s.spawn(|| {
                let t = Instant::now();
                let names = match staging {
                    Some(staging) => stage(name, manifest, &from, staging),
                    None => verify_names(name, manifest, &from),
                }?;
                Ok::<_, BackupError>((names, t.elapsed()))
            });
            let t = Instant::now();
            let safety = self.safety_copy(journal, name, staging);
            phases.safety = Some(t.elapsed());
            let checked = checker.join().unwrap_or_else(|_| {
                Err(BackupError::Failed {
                    name: name.to_owned(),
                    why: "the thread that read the backup back panicked".into(),
                    help: "run the restore again".into(),
                })
            });
            (safety, checked)
        });
        // A damaged backup is the first thing to say (the safety copy is kept either way).
        let (incoming, took) = checked?;
        phases.verified = Some(took);
        phases.staged = staging.is_some();
        Ok((safety?, incoming))
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
                        let pod = labels::decode(&c.labels).map(|d| d.address.name.to_string());
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

    /// The place made to hold exactly what backup `manifest` holds: a directory's backup,
    /// unpacked beside it, moved in; a volume emptied (made again) and the backup streamed
    /// in through the engine. What was streamed in must be what was verified: a file
    /// changed since fails the step (and the safety copy goes back).
    fn refill(&self, name: &str, manifest: &Manifest, target: &Target) -> Result<(), OpError> {
        let (volume, object, image, labels) = match target {
            Target::Path { root } => return move_in(name, root, &staging_of(root, manifest)),
            Target::Volume {
                volume,
                object,
                image,
                labels,
            } => (volume, object, image, labels),
        };
        let from = self.backup_ref(name, &manifest.id)?;
        let engine = self.engine(name)?;
        let stats = self
            .project
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
            })?;
        let what = LocalStore::open(&from.store)?.locate(&manifest.name, &manifest.id);
        Ok(crate::archive::read_back_matches(what, manifest, &stats)?)
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

/// Backup `manifest` read back whole (decrypted, decompressed, its tar walked, both hashes
/// compared), its entries' names said. The identity is loaded again on this thread (one is
/// not shared across threads), and the store opened again.
fn verify_names(
    name: &str,
    manifest: &Manifest,
    from: &BackupRef,
) -> Result<Vec<String>, BackupError> {
    let identity = Identity::load(&from.identity).map_err(|e| BackupError::Failed {
        name: name.to_owned(),
        why: e.to_string(),
        help: "check the identity file".into(),
    })?;
    let store = LocalStore::open(&from.store)?;
    let mut names = Vec::new();
    verify_seeing(&store, manifest, &identity, |p| {
        if let Some(n) = place::tar_name(p) {
            names.push(n);
        }
    })?;
    Ok(names)
}

/// Backup `manifest` unpacked into `staging`, the one pass that reads it: what it holds
/// compared with its manifest (both hashes and the size) before anything is moved in; its
/// entries' names said.
fn stage(
    name: &str,
    manifest: &Manifest,
    from: &BackupRef,
    staging: &Path,
) -> Result<Vec<String>, BackupError> {
    let what = LocalStore::open(&from.store)?.locate(&manifest.name, &manifest.id);
    let mut names = Vec::new();
    let stats = stage_path(staging, from, &mut |p| {
        if let Some(n) = place::tar_name(p) {
            names.push(n);
        }
    })
    .map_err(|e| unpack_failure(name, &what, "beside the data", e))?;
    crate::archive::read_back_matches(what, manifest, &stats)?;
    Ok(names)
}

/// Why unpacking backup `name` (at `what`) `where_to` failed: the backup damaged, or the
/// place (its space, its permissions).
pub(super) fn unpack_failure(
    name: &str,
    what: &str,
    where_to: &str,
    e: RefillError,
) -> BackupError {
    match e {
        RefillError::Store(e) => *e,
        RefillError::Open(e) => BackupError::Damaged {
            what: what.to_owned(),
            why: e.to_string(),
        },
        RefillError::Unpack { source, .. } if source.kind() == std::io::ErrorKind::InvalidData => {
            BackupError::Damaged {
                what: what.to_owned(),
                why: source.to_string(),
            }
        }
        other => BackupError::Failed {
            name: name.to_owned(),
            why: format!("unpacking it {where_to} failed: {other}"),
            help: "check the free space and the permissions where it goes".into(),
        },
    }
}

/// Where a directory's backup is unpacked beside the data: inside it, on the same file
/// system, so that it moves in by renames.
fn staging_of(root: &Path, manifest: &Manifest) -> PathBuf {
    root.join(format!("{STAGING_PREFIX}{}", manifest.id))
}

/// The backup unpacked in `staging` moved into `root` in place of what it holds (renames;
/// what was there removed after).
fn move_in(name: &str, root: &Path, staging: &Path) -> Result<(), OpError> {
    let mut trash = staging.as_os_str().to_owned();
    trash.push(".old");
    swap_in(root, staging, Path::new(&trash)).map_err(|why| {
        failed(
            name,
            format!("restoring {} failed: {why}", root.display()),
            "check the permissions in it; the safety copy was put back",
        )
    })
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
