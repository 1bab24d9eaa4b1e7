//! A session carried out: the backups a plan asks for first (`before_apply: true`), then
//! the plan under the journal (with SIGINT/SIGTERM turned into a rollback), then the
//! revision recorded before the journal ends.

use super::images::deployed_images;
use super::{Goal, OpError, Session};
use crate::encode::sha256_hex;

impl Session {
    /// Data rollback points first: a backup of every volume a replaced pod owns, when the
    /// backup says `before_apply: true`. A failure here stops the apply before any change.
    fn backups_first(&self, progress: &mut dyn FnMut(&crate::apply::Event)) -> Result<(), OpError> {
        let before = self.backups_before_apply();
        if !before.is_empty() {
            let backups = crate::backup::ops::Backups::open(
                &self.project.spec_path,
                Some(&self.project.state.path),
                Some(&before),
            )?;
            for name in before {
                let taken = backups
                    .run(&name, false)
                    .map_err(|e| before_apply_failed(&name, e))?;
                progress(&crate::apply::Event {
                    address: Some(format!("backup.{name}")),
                    status: crate::apply::Status::Done,
                    message: format!(
                        "  backup.{name}: taken before the apply ({})",
                        taken.manifest.id
                    ),
                });
                // A copy off the host that failed does not hold the apply back: the host's
                // copy, verified, is what a rollback of the data needs. It is said.
                for c in &taken.copies {
                    if let Err(why) = &c.result {
                        progress(&crate::apply::Event {
                            address: Some(format!("backup.{name}")),
                            status: crate::apply::Status::Warning,
                            message: format!(
                                "  backup.{name}: its copy to store `{}` failed: {why}",
                                c.store
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Carries out the plan under the journal; `progress` receives a line per step. A
    /// successful apply that changed something is recorded as the next revision.
    pub fn apply(
        &self,
        options: crate::apply::Options,
        progress: &mut dyn FnMut(&crate::apply::Event),
    ) -> Result<crate::apply::Applied, OpError> {
        use crate::{apply::journal, state::revisions};
        self.backups_first(progress)?;
        let from = revisions::latest(&self.project.state)?;
        let spec_sha256 = sha256_hex(self.spec_text.as_bytes());
        let journal = journal::Journal::begin(
            &self.project.state,
            journal::Record::Begin {
                command: self.command.clone(),
                project: self.project.spec.project.value.clone(),
                spec: self.project.spec_path.display().to_string(),
                spec_sha256: spec_sha256.clone(),
                spec_text: self.journaled_text(),
                profiles: self.profiles.clone(),
                from_revision: from,
                revision: from + 1,
                at: crate::clock::now(),
                restore: None,
            },
        )?;
        let interrupted = std::sync::atomic::AtomicBool::new(false);
        let inputs = crate::apply::Inputs {
            spec: &self.project.spec,
            spec_dir: &self.project.spec_dir,
            spec_path: &self.project.spec_path,
            graph: &self.graph,
            observed: &self.observed,
            engines: &self.project.engines,
            secrets: &self.secrets,
            state_dir: &self.project.state.path,
            journal,
            interrupted: &interrupted,
            regions: &self.regions,
        };
        let mut applied = self.project.runtime.block_on(async {
            let work = crate::apply::apply(inputs, &self.plan, options, progress);
            tokio::pin!(work);
            // SIGINT/SIGTERM: no new step starts; the ones in flight finish, then
            // everything is undone.
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    _ = tokio::signal::ctrl_c() => interrupted.store(true, std::sync::atomic::Ordering::Relaxed),
                    Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {
                        interrupted.store(true, std::sync::atomic::Ordering::Relaxed)
                    }
                }
            }
        })?;
        if applied.changed > 0 && self.record_revision {
            let images = self
                .project
                .runtime
                .block_on(deployed_images(&self.project.spec, &self.project.engines))?;
            let secrets =
                crate::observe::secrets::inspect(&self.project.spec, &self.project.spec_dir)
                    .files
                    .into_iter()
                    .map(|(name, f)| (name, f.fingerprint))
                    .collect();
            revisions::record(
                &self.project.state,
                &revisions::Revision {
                    revision: from + 1,
                    at: crate::clock::now(),
                    who: crate::state::who(),
                    command: self.command.clone(),
                    spec_path: self.project.spec_path.display().to_string(),
                    spec_sha256,
                    spec_text: self.spec_text.clone(),
                    images,
                    secrets,
                    summary: self.plan.summary.clone().into(),
                    destroyed: self.goal == Goal::Nothing,
                    regions: applied.covered.clone(),
                    halted_at: applied.halted.as_ref().map(|h| h.region.clone()),
                    profiles: self.profiles.clone(),
                    jobs: self.job_outputs(applied.covered.as_deref()),
                },
            )?;
            applied.revision = Some(from + 1);
        }
        // Recorded first, then ended: killed in between, `recover` finds the revision.
        if let Some(j) = applied.journal.take() {
            j.end()?;
        }
        if let Some(h) = applied.halted.take() {
            return Err(halted(*h, applied.revision));
        }
        Ok(applied)
    }

    /// The spec's text as the journal keeps it: none for a restart, so that `recover`
    /// records no revision for it either.
    fn journaled_text(&self) -> String {
        if self.record_revision {
            self.spec_text.clone()
        } else {
            String::new()
        }
    }

    /// The output of each job this session's plan ran (its last lines, read off the
    /// container its run left), by address: kept in the revision.
    /// `covered`: the regions the apply reached, when not all (a halted rollout put the
    /// others back: a job's container there is its previous run's).
    fn job_outputs(
        &self,
        covered: Option<&[String]>,
    ) -> std::collections::BTreeMap<String, String> {
        use crate::plan::Action;
        const LINES: usize = 200;
        let project = &self.project.spec.project.value;
        let ran = self.plan.changes.iter().filter(|c| {
            c.address.kind == crate::graph::Kind::Job
                && matches!(c.action, Action::Create | Action::Replace | Action::Heal)
        });
        let mut out = std::collections::BTreeMap::new();
        for c in ran {
            let region = c
                .address
                .region
                .as_deref()
                .unwrap_or_else(|| self.project.spec.primary_region());
            let Some(engine) = self.project.engines.get(region) else {
                continue;
            };
            if covered.is_some_and(|list| !list.iter().any(|r| r == region)) {
                continue;
            }
            let name = crate::engine::names::container_name_of(project, &c.address);
            let output = self.project.runtime.block_on(engine.log_tail(&name, LINES));
            out.insert(c.address.to_string(), output);
        }
        out
    }

    /// The backups with `before_apply: true` whose data a change of this plan touches: a
    /// pod replaced (or deleted) that mounts the backup's volume, or that it runs `exec` in.
    pub fn backups_before_apply(&self) -> Vec<String> {
        use crate::plan::Action;
        let spec = &self.project.spec;
        let primary = spec.primary_region();
        // The pods replaced or deleted, with their region.
        let touched: Vec<(&str, &crate::spec::Pod, &str)> = self
            .plan
            .changes
            .iter()
            .filter(|c| c.address.kind == crate::graph::Kind::Pod)
            .filter(|c| matches!(c.action, Action::Replace | Action::Delete))
            .filter_map(|c| {
                let region = c.address.region.as_deref().unwrap_or(primary);
                spec.pods
                    .get(&c.address.name)
                    .map(|p| (&*c.address.name, p, region))
            })
            .collect();
        let mut out = Vec::new();
        for b in spec.backups.iter().filter(|b| b.item.before_apply) {
            let src = &b.item.source.value;
            // Only the backup's own region holds its data.
            let region = spec.backup_region(&b.item);
            let here = touched.iter().filter(|(_, _, r)| *r == region);
            let by_volume = src.volume.as_ref().is_some_and(|v| {
                here.clone()
                    .any(|(_, p, _)| p.named_volumes().any(|n| n == v.value))
            });
            let by_pod = src
                .pod
                .as_ref()
                .is_some_and(|pod| here.clone().any(|(name, _, _)| *name == pod.value));
            if by_volume || by_pod {
                out.push(b.name.value.clone());
            }
        }
        out
    }
}

/// A rollout halted at a failed region (`rollout.on_failure: halt`), its partial revision
/// (when one was recorded) said in the report.
fn halted(h: crate::apply::Halted, revision: Option<u64>) -> OpError {
    let mut report = h.error.report().trim_end().to_owned();
    report.push('\n');
    if let Some(n) = revision {
        let reached: Vec<String> = h.done.iter().map(|r| format!("`{r}`")).collect();
        report.push_str(&format!(
            "recorded as revision {n}, partial: it reached {}\n",
            reached.join(", ")
        ));
    }
    OpError::Apply(crate::apply::ApplyError::RolloutHalted {
        region: h.region,
        cause: Box::new(h.error),
        revision,
        report,
    })
}

/// A backup taken before an apply (`before_apply: true`) that failed: the error says so,
/// and that the apply changed nothing.
fn before_apply_failed(name: &str, e: OpError) -> OpError {
    let why = match e {
        OpError::Backup(crate::archive::BackupError::Failed { why, .. }) => why,
        other => other.to_string(),
    };
    OpError::Backup(crate::archive::BackupError::Failed {
        name: name.to_owned(),
        why: format!(
            "the backup this apply takes first (`before_apply: true`) failed, so the apply stopped before any change: {why}"
        ),
        help: format!(
            "fix the backup (`berth backup run {name}` shows the same), or set `before_apply: false` to apply without it"
        ),
    })
}
