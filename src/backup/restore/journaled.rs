//! The journal of a restore: the lock and the refusals it starts with, its steps and
//! undo records, and its end (ended when it went through, unwound when it did not).

use std::path::Path;

use crate::apply::Undo;
use crate::apply::journal::{Journal, Kind, Outcome, Record, StepState};
use crate::apply::recover::Reapply;
use crate::archive::BackupError;
use crate::archive::Manifest;
use crate::archive::refill::BackupRef;
use crate::backup::ops::{Backups, failed};
use crate::error::OpError;

impl Backups {
    /// A restore's start: the project's lock; no interrupted apply or restore may be
    /// pending (`berth recover` first); the helper containers a killed backup or restore
    /// left are removed.
    pub(super) fn lock_for_restore(&self) -> Result<crate::state::lock::Lock, OpError> {
        // Waits for an apply (or another restore) to finish, as `backup run` does.
        let lock = self.lock("berth backup restore")?;
        self.refuse_if_interrupted(&[Kind::Apply, Kind::Restore])?;
        self.sweep_helpers()?;
        Ok(lock)
    }

    /// The journal of a restore, begun: its undo records say how to put back what was
    /// there, for a failure here or for `berth recover` after a crash.
    pub(super) fn begin_restore(
        &self,
        name: &str,
        manifest: &Manifest,
        spec_path: &Path,
        latest: u64,
    ) -> Result<Journal, OpError> {
        let spec = std::path::absolute(spec_path).unwrap_or_else(|_| spec_path.to_path_buf());
        Ok(Journal::begin_kind(
            &self.project.state,
            Kind::Restore,
            Record::Begin {
                command: format!("berth backup restore {name}"),
                project: self.project.spec.project.value.clone(),
                spec: spec.display().to_string(),
                spec_sha256: String::new(),
                spec_text: String::new(),
                profiles: Vec::new(),
                from_revision: latest,
                revision: latest + 1,
                at: crate::clock::now(),
                restore: Some(manifest.id.clone()),
            },
        )?)
    }

    /// A journaled step: started, then succeeded or failed.
    pub(super) fn step<T>(
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

    /// The safety copy of what is there now (a journaled step); a path's leaving out `skip`
    /// (the backup being unpacked beside the data).
    pub(super) fn safety_copy(
        &self,
        journal: &mut Journal,
        name: &str,
        skip: Option<&Path>,
    ) -> Result<Manifest, OpError> {
        self.step(journal, "restore.safety", || {
            self.run_leaving_out(name, true, skip).map(|t| t.manifest)
        })
    }

    /// Where backup `id` of `name` is, and what opens it.
    pub(in crate::backup) fn backup_ref(&self, name: &str, id: &str) -> Result<BackupRef, OpError> {
        Ok(BackupRef {
            store: self.store(self.get(name)?)?.root,
            name: name.to_owned(),
            id: id.to_owned(),
            identity: self.identity(name)?.path.clone(),
        })
    }

    /// A restore's end: the journal ends when it went through; otherwise it is unwound
    /// (the safety copy back, the pods as they were), and the error says what happened.
    pub(super) fn finish_restore(
        &self,
        mut journal: Journal,
        name: &str,
        forward: Result<Manifest, OpError>,
        reapply: &dyn Reapply,
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
        let (lines, ok) = crate::apply::unwind::unwind(
            &self.project.runtime,
            &mut journal,
            &self.project.engines,
            &self.project.spec.project.value,
            reapply,
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

    /// Stops these containers, each after its undo (start it again) is journaled.
    pub(super) fn stop_journaled(
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
            self.project.runtime.block_on(engine.stop(id))?;
        }
        Ok(())
    }

    /// The pod's gates (health, then checks) on its running container.
    pub(super) fn pod_gate(&self, name: &str, pod: &str) -> Result<(), OpError> {
        let container = self
            .project
            .runtime
            .block_on(self.pod_container(name, pod))?;
        self.gate_on(name, pod, &self.project.spec.project.value, &container)
    }

    /// Pod `pod`'s health gate and `checks:` held on `container` of `project` (the live
    /// project, or a drill's scratch one).
    pub(in crate::backup) fn gate_on(
        &self,
        name: &str,
        pod: &str,
        project: &str,
        container: &str,
    ) -> Result<(), OpError> {
        let engine = self.engine(name)?;
        let Some(spec_pod) = self.project.spec.pods.get(pod) else {
            return Ok(());
        };
        let network = crate::apply::container::object_name(project, "default");
        self.project.runtime.block_on(async {
            // Started before this call, so `asked` is not the start's lower bound here; now
            // is later than the start, which only makes the gate wait longer.
            let asked = std::time::Instant::now();
            let verdict =
                match crate::apply::gate::healthy(engine, container, &network, spec_pod, asked)
                    .await
                {
                    Ok(()) => {
                        crate::apply::gate::checks(engine, container, &network, spec_pod).await
                    }
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
}

/// Writes an undo record, durably, before the mutation it undoes.
pub(in crate::backup) fn record_undo(journal: &mut Journal, undo: Undo) -> Result<(), OpError> {
    let id = journal.next_undo_id();
    journal.append(Record::Undo { id, undo })?;
    Ok(())
}
