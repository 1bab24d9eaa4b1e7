//! `berth recover`: finishes the journals an interrupted apply or restore left (undone by
//! the one [`super::unwind`], or, once committed, finished).
//!
//! apply does not open sessions: what recovering needs from the layer above (applying a
//! revision again through its gates, connecting the engines, the images a finished apply
//! deployed) comes through a [`Host`] the caller passes in (`ops` is one).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::Undo;
use super::journal::{self, Finished, Journal, JournalError, Kind, Machine, Outcome, Record};
use crate::engine::{Engine, EngineError};
use crate::spec::Spec;
use crate::state::StateDir;

use super::unwind::unwind;

/// What `berth recover` did.
pub struct Recovered {
    pub lines: Vec<String>,
    /// The interrupted apply had passed its gates: it was finished, not undone.
    pub finished_commit: bool,
    /// An interrupted restore was rolled back: its backup name and the id it was putting
    /// back (for `--forward`).
    pub restore: Option<(String, String)>,
    /// An interrupted `consistent: stop` backup: its name (the pods it stopped run again).
    pub backup: Option<String>,
    /// No apply or restore was interrupted (`lines` may still say which leftovers went).
    pub nothing: bool,
    /// The interrupted apply's command and the profiles it applied (for `--forward`).
    pub interrupted: Option<(String, Vec<String>)>,
}

/// Applies a recorded revision again, through its gates (an undo's `Reapply`: the pods a
/// restore removed come back). Called outside any async runtime: it runs its own apply.
/// Its error is the layer above's own (an `OpError`), carried whole to the unwind's line.
pub trait Reapply {
    fn reapply(&self, revision: u64) -> Result<(), ReapplyError>;
}

/// Why a revision could not be applied again: the error of the layer that applies it.
pub type ReapplyError = Box<dyn std::error::Error + Send + Sync>;

/// What `recover` needs from the layer above apply, and the error it answers in.
pub trait Host: Reapply {
    type Error: From<JournalError>
        + From<crate::state::StateError>
        + From<crate::state::lock::LockError>
        + From<EngineError>;
    /// The engines of the spec's regions, connected (not observed).
    fn connect(
        &self,
        runtime: &tokio::runtime::Runtime,
        spec: &Spec,
        only: &[String],
    ) -> Result<HashMap<String, Engine>, Self::Error>;
    /// The images the pods of `spec` run, by address (for the revision recorded).
    fn deployed_images(
        &self,
        runtime: &tokio::runtime::Runtime,
        spec: &Spec,
        engines: &HashMap<String, Engine>,
    ) -> Result<BTreeMap<String, String>, Self::Error>;
    /// Recover could not finish everything: `detail` says what is left.
    fn unfinished(project: String, detail: String) -> Self::Error;
    /// The async runtime could not start.
    fn runtime(e: std::io::Error) -> Self::Error;
}

/// `berth recover`: finishes the journals an interrupted apply or restore left. An apply's
/// first: before its commit, the recorded undos are carried out (newest first) and the last
/// revision is back; after its commit (every gate had passed), the removals it announced
/// are finished and the new revision stays. Then a restore's: its undos put the safety
/// copy back and apply the last revision again (the data from before the restore).
pub fn recover<H: Host>(
    spec: &Spec,
    state_dir: Option<&Path>,
    host: &H,
) -> Result<Recovered, H::Error> {
    let project = spec.project.value.clone();
    let state = StateDir::locate(&project, state_dir);
    let _lock = crate::state::lock::acquire(&state, &project, "berth recover", None)?;
    let put_away = set_aside_finished(&state)?;
    let applying = Journal::resume(&state)?;
    let restoring = Journal::resume_kind(&state, Kind::Restore)?;
    let runtime = crate::engine::runtime().map_err(H::runtime)?;
    // Only connected: an interrupted apply leaves two containers claiming a pod (its
    // candidate or set-aside one beside it), which observing would refuse.
    let machines: Vec<&crate::apply::journal::Machine> = [&applying, &restoring]
        .into_iter()
        .flatten()
        .map(|j| j.machine())
        .collect();
    let engines = host.connect(&runtime, spec, &regions_needed(&machines))?;
    let r = Recovering {
        runtime: &runtime,
        engines: &engines,
        project: &project,
        state: &state,
    };
    if applying.is_none() && restoring.is_none() {
        return Ok(Recovered {
            lines: r.leftovers(put_away)?,
            finished_commit: false,
            restore: None,
            backup: None,
            nothing: true,
            interrupted: None,
        });
    }
    // A recover killed while it held names leaves their holders: they go first, or they
    // would keep the set-aside containers from getting their names back.
    for e in engines.values() {
        runtime.block_on(crate::observe::docker::remove_name_holds(e, &project))?;
    }
    let mut out = Recovered {
        lines: put_away,
        finished_commit: false,
        restore: None,
        backup: None,
        nothing: false,
        interrupted: None,
    };
    if let Some(journal) = applying {
        if let Some(Record::Begin {
            command, profiles, ..
        }) = &journal.machine().begin
        {
            out.interrupted = Some((command.clone(), profiles.clone()));
        }
        let committed = journal.machine().commit.is_some();
        out.finished_commit = committed && restoring.is_none();
        r.finish_apply(journal, host, &mut out.lines)?;
    }
    if let Some(journal) = restoring {
        r.finish_restore(journal, host, &mut out)?;
    }
    Ok(out)
}

/// The regions whose engines finishing these journals needs (empty: every region): those
/// their pending undos and commit name, and for a commit the regions its revision reaches.
/// A region that is down then stops only the recovery that needs it.
fn regions_needed(machines: &[&crate::apply::journal::Machine]) -> Vec<String> {
    let mut needed: Vec<String> = Vec::new();
    for m in machines {
        for (_, undo) in m.pending_undos() {
            match undo.engine_region() {
                Some(Some(r)) => needed.push(r.to_owned()),
                Some(None) => return Vec::new(),
                None => {}
            }
        }
        if let Some(items) = &m.commit {
            // The revision it records reads the images of every region it reaches.
            match &m.covered.0 {
                Some(regions) => needed.extend(regions.iter().cloned()),
                None => return Vec::new(),
            }
            for item in items {
                use crate::apply::CommitItem;
                let (CommitItem::Container { region, .. }
                | CommitItem::Network { region, .. }
                | CommitItem::Volume { region, .. }) = item;
                needed.push(region.clone());
            }
        }
    }
    needed.sort();
    needed.dedup();
    needed
}

/// A journal that ended (or never began) but was left in place, by a kill between its
/// `end` and setting it aside, is put away: nothing is left to recover from it.
fn set_aside_finished(state: &StateDir) -> Result<Vec<String>, JournalError> {
    let mut put_away = Vec::new();
    for (kind, what) in [(Kind::Apply, "apply"), (Kind::Restore, "restore")] {
        match journal::set_aside_finished(state, kind)? {
            Some(Finished::Ended) => put_away.push(format!(
                "  set aside the journal of an {what} that had ended (it was stopped before putting it away)"
            )),
            Some(Finished::NeverBegun) => put_away.push(format!(
                "  removed the journal of an {what} that never began"
            )),
            None => {}
        }
    }
    Ok(put_away)
}

/// What a recover works on, once the lock is held and the engines connected.
struct Recovering<'a> {
    runtime: &'a tokio::runtime::Runtime,
    engines: &'a HashMap<String, Engine>,
    project: &'a str,
    state: &'a StateDir,
}

impl Recovering<'_> {
    /// Nothing to finish; containers left beside a pod's own (by a crash of an older berth,
    /// say) still go, and so do the secrets volumes and keepers no container mounts (of
    /// those, or of an apply killed once its journal had ended).
    fn leftovers(&self, put_away: Vec<String>) -> Result<Vec<String>, EngineError> {
        let (runtime, project) = (self.runtime, self.project);
        let mut lines = put_away;
        for (region, e) in self.engines {
            let removed = runtime.block_on(crate::observe::docker::remove_strays(e, project))?;
            lines.extend(removed.into_iter().map(|l| format!("  {l}")));
            // So do the helper containers a backup or restore killed before its journal
            // began (or one that keeps none) left.
            let said = crate::archive::helpers::sweep_helpers_said(e, project, region);
            lines.extend(runtime.block_on(said)?.map(|l| format!("  {l}")));
        }
        runtime.block_on(super::sweep_deliveries(self.engines, project));
        Ok(lines)
    }

    /// The interrupted apply: before its commit, its undos are carried out; after it, the
    /// removals it announced are finished and its revision recorded.
    fn finish_apply<H: Host>(
        &self,
        mut journal: Journal,
        host: &H,
        lines: &mut Vec<String>,
    ) -> Result<(), H::Error> {
        let machine = journal.machine().clone();
        let mut failed = if let Some(items) = &machine.commit {
            self.commit(items, lines)
        } else {
            let (done, ok) = unwind(self.runtime, &mut journal, self.engines, self.project, host)?;
            lines.extend(done);
            !ok
        };
        failed |= !self
            .runtime
            .block_on(tidy(self.engines, self.project, failed, lines));
        if machine.commit.is_none() {
            let left = self.runtime.block_on(journaled_containers_left(
                self.engines,
                self.project,
                &machine,
            ));
            failed |= !left.is_empty();
            lines.extend(left);
        }
        if failed {
            return Err(H::unfinished(self.project.to_owned(), unfinished(lines)));
        }
        self.record_revision(&machine, host, lines)?;
        journal.end(Outcome::Recovered)?;
        Ok(())
    }

    /// The removals of a committed apply, finished. `true` when one failed.
    fn commit(&self, items: &[journal::CommitItem], lines: &mut Vec<String>) -> bool {
        use super::undo::{Committed, commit_one};
        let mut failed = false;
        self.runtime.block_on(async {
            for item in items {
                let (what, r) = commit_one(self.engines, self.project, item).await;
                match r {
                    Ok(Committed::Removed) => lines.push(format!("  removed {what}")),
                    Ok(Committed::Kept(why)) => lines.push(format!("  warning: {why}")),
                    Err(e) => {
                        failed = true;
                        lines.push(format!("  could NOT remove {what}: {e}"));
                    }
                }
            }
        });
        failed
    }

    /// An apply that had passed its gates is a revision: record it as the apply would have.
    fn record_revision<H: Host>(
        &self,
        machine: &Machine,
        host: &H,
        lines: &mut Vec<String>,
    ) -> Result<(), H::Error> {
        use crate::state::revisions;
        if machine.commit.is_some()
            && let Some(Record::Begin {
                command,
                spec,
                spec_sha256,
                spec_text,
                revision,
                profiles,
                ..
            }) = &machine.begin
            && !spec_text.is_empty()
            && revisions::latest(self.state)? < *revision
            && let Some(mut applied) =
                crate::spec::load::load_str(Path::new(spec), spec_text.clone()).spec
        {
            // The images of the pods that apply planned (those of its profiles).
            applied.pods.retain(|p| p.item.active(profiles));
            let images = host.deployed_images(self.runtime, &applied, self.engines)?;
            revisions::record(
                self.state,
                &revisions::Revision {
                    revision: *revision,
                    at: crate::clock::now(),
                    who: crate::state::who(),
                    command: format!("{command} (finished by berth recover)"),
                    spec_path: spec.clone(),
                    spec_sha256: spec_sha256.clone(),
                    spec_text: spec_text.clone(),
                    images,
                    secrets: Default::default(),
                    summary: Default::default(),
                    destroyed: command == "berth destroy",
                    regions: machine.covered.0.clone(),
                    halted_at: machine.covered.1.clone(),
                    profiles: profiles.clone(),
                    jobs: Default::default(),
                },
            )?;
            lines.push(format!("  recorded revision {revision}"));
        }
        Ok(())
    }

    /// The interrupted restore (or `consistent: stop` backup): its undos put the safety
    /// copy back and apply the last revision again. Says which restore or backup it was.
    fn finish_restore<H: Host>(
        &self,
        mut journal: Journal,
        host: &H,
        out: &mut Recovered,
    ) -> Result<(), H::Error> {
        let (done, ok) = unwind(self.runtime, &mut journal, self.engines, self.project, host)?;
        out.lines.extend(done);
        let tidied = self
            .runtime
            .block_on(tidy(self.engines, self.project, !ok, &mut out.lines));
        if !ok || !tidied {
            return Err(H::unfinished(
                self.project.to_owned(),
                unfinished(&out.lines),
            ));
        }
        if let Some(Record::Begin {
            command,
            restore: Some(id),
            ..
        }) = &journal.machine().begin
        {
            let name = command
                .strip_prefix("berth backup restore ")
                .unwrap_or_default()
                .to_owned();
            out.restore = Some((name, id.clone()));
        } else if let Some(Record::Begin { command, .. }) = &journal.machine().begin
            && let Some(name) = command.strip_prefix("berth backup run ")
        {
            out.backup = Some(name.to_owned());
        }
        journal.end(Outcome::Recovered)?;
        Ok(())
    }
}

fn unfinished(lines: &[String]) -> String {
    format!("recover could not finish everything:\n{}", lines.join("\n"))
}

/// After undoing: the names held while undoing container creates are free again; then,
/// when every undo went through (none set aside is waiting for its name), what is left
/// beside a pod's own goes, and so do the secrets volumes and keepers of containers that
/// are gone. `false` when something could not be checked.
async fn tidy(
    engines: &HashMap<String, Engine>,
    project: &str,
    failed: bool,
    lines: &mut Vec<String>,
) -> bool {
    let mut ok = true;
    for e in engines.values() {
        let tidied = match e.release_names().await {
            Ok(()) if !failed => crate::observe::docker::remove_strays(e, project).await,
            Ok(()) => Ok(Vec::new()),
            Err(x) => Err(x),
        };
        match tidied {
            Ok(removed) => lines.extend(removed.into_iter().map(|l| format!("  {l}"))),
            Err(x) => {
                ok = false;
                lines.push(format!(
                    "  could NOT check for containers left behind in `{}`: {x}",
                    e.region
                ));
            }
        }
    }
    super::sweep_deliveries(engines, project).await;
    ok
}

/// After the undos of an interrupted apply: every container its journal announced creating
/// (by name, with the project's label, and not one the undos gave its name back) must be
/// gone. Says which are not.
async fn journaled_containers_left(
    engines: &HashMap<String, Engine>,
    project: &str,
    machine: &Machine,
) -> Vec<String> {
    let restored: Vec<&str> = machine
        .undos
        .iter()
        .filter_map(|(_, u, _)| match u {
            Undo::Restore { id, .. } => Some(id.as_str()),
            Undo::Unswitch { old_id, .. } => Some(old_id.as_str()),
            _ => None,
        })
        .collect();
    let mut left = Vec::new();
    for (_, u, _) in &machine.undos {
        let (region, name, new_id) = match u {
            Undo::RemoveContainer { region, name } => (region, name.as_str(), None),
            Undo::Unswitch {
                region,
                new_id,
                name,
                ..
            } => (region, name.as_str(), Some(new_id.as_str())),
            _ => continue,
        };
        let Some(e) = engines.get(region) else {
            continue;
        };
        let found = match e.container_named(name).await {
            Ok(found) => found,
            Err(x) => {
                left.push(format!("  could NOT check that {name} is gone: {x}"));
                continue;
            }
        };
        let named_left = found.filter(|c| {
            c.labels
                .get(crate::engine::labels::PROJECT)
                .map(String::as_str)
                == Some(project)
                && !restored
                    .iter()
                    .any(|r| c.id.starts_with(r) || r.starts_with(&c.id))
        });
        if let Some(c) = named_left {
            left.push(format!(
                "  container {name} ({}) that the interrupted apply created is still there",
                crate::engine::names::short(&c.id)
            ));
        }
        if let Some(id) = new_id
            && let Ok(Some(n)) = e.name_of(id).await
        {
            left.push(format!(
                "  container {n} ({}) that the interrupted apply created is still there",
                crate::engine::names::short(id)
            ));
        }
    }
    left
}
