//! Apply: the plan's changes carried out on the regions' engines, in plan order (which is
//! dependency order), each mutation recording how to undo it before the next one starts.
//! When a gate fails, the completed steps are undone in reverse and the failed container's
//! last output goes into the report. Removals of replaced and deleted containers wait until
//! every gate has passed (the commit), so that undoing never needs what is already gone.
//!
//! Regions are rolled out one after another (the primary first): a region's steps and
//! gates are all done before the next region starts. Steps of one graph layer do not
//! depend on each other and run concurrently, at most `--parallelism` of them asking the
//! engine for changes at once (a step waiting for its container's gates holds no worker);
//! a layer starts when the one before it is done. When a step fails, the others of its layer
//! finish (nothing is left half-done) and then everything is undone (with
//! `rollout.on_failure: halt`, only the failed region's steps, once a region is done).
//!
//! Every undo (and the commit) is written to the journal ([`journal`]) before the mutation
//! it covers, so that `berth recover` ([`recover`]) can finish what a killed apply left.
//!
//! - here: the run (its context: journal, undo stack, commit, events), the commit;
//! - [`rollout`]: the regions one after another, each in batches, and what a failed region
//!   means for the others (`rollout.on_failure`);
//! - `preflight`: what is checked before the first mutation;
//! - [`steps`]: one step per kind of change, each recording its [`Undo`] first;
//! - [`undo`]: the undo records and how each is carried out; [`unwind`]: the one loop that
//!   carries them out (rollback, recover, a failed restore);
//! - [`container`]: a pod's container (names, create request); [`gate`]: its gates.

pub mod checks;
pub mod container;
pub mod gate;
pub mod journal;
mod preflight;
mod probe_tls;
pub mod recover;
mod rollout;
pub mod steps;
pub mod undo;
pub mod unwind;
mod workers;
pub use preflight::preflight_host;
pub use rollout::Halted;
pub use steps::secret::sweep_deliveries;
pub use undo::Undo;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::engine::{Engine, EngineError};
use crate::graph::{Resource, ResourceGraph};
use crate::observe::ObservedState;
use crate::plan::{Action, Change, Plan};
use crate::secrets::files::{FileFacts, Inspection};
use crate::spec::Spec;

use journal::{CommitItem, Journal, JournalError, Outcome, Record, StepState};

/// A plan's summary as a revision records it.
impl From<crate::plan::Summary> for crate::state::revisions::Summary {
    fn from(s: crate::plan::Summary) -> Self {
        crate::state::revisions::Summary {
            create: s.create,
            update: s.update,
            replace: s.replace,
            delete: s.delete,
            heal: s.heal,
            no_op: s.no_op,
        }
    }
}

/// Steps asking the engine for changes at once unless `--parallelism` says otherwise.
pub const DEFAULT_PARALLELISM: u16 = 4;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Remove volumes the spec no longer has (their data with them).
    pub delete_volumes: bool,
    /// Most steps doing engine work at once (steps of one graph layer do not depend on each
    /// other). A step waiting for its gates holds no worker: another step starts meanwhile.
    pub parallelism: usize,
    /// Networks made `internal` (no way out of the host): a restore drill's scratch copy
    /// must not reach the outside world (send mail, call a payment API) on restored data.
    pub internal_networks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delete_volumes: false,
            parallelism: usize::from(DEFAULT_PARALLELISM),
            internal_networks: false,
        }
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    #[error("apply cannot {what} yet (`{address}`); nothing was changed")]
    #[diagnostic(code(berth::apply_unsupported), help("{help}"))]
    Unsupported {
        address: String,
        what: String,
        help: String,
    },
    #[error(
        "image `{image}` of `{address}` is not on the engine of region `{region}` and could not be pulled ({reason}); nothing was changed"
    )]
    #[diagnostic(
        code(berth::image_missing),
        help(
            "make a registry reachable from that host, or build or load the image there (`docker build -t {image} DIR`, `docker load`), or use `build:`; then apply again"
        )
    )]
    ImageMissing {
        address: String,
        image: String,
        region: String,
        reason: crate::engine::docker::PullError,
    },
    #[error(
        "a {kind} named `{name}` already exists on the engine of region `{region}` and is not berth's for this project; nothing was changed"
    )]
    #[diagnostic(
        code(berth::name_taken),
        help(
            "remove or rename it (if an interrupted apply left it, `docker rm`/`docker rename` it back), or choose another project name"
        )
    )]
    NameTaken {
        kind: &'static str,
        name: String,
        region: String,
    },
    /// A backup's store or timer could not be set up.
    #[error("`{address}`: its store or timer could not be set up: {reason}")]
    #[diagnostic(
        code(berth::backup_setup),
        help(
            "give `store:` a directory of berth's own (berth makes it), not `/`, a system or a temporary directory"
        )
    )]
    BackupSetUp {
        address: String,
        reason: steps::UnitsError,
    },
    /// A step failed on the engine (not at a gate); what was undone is in the report.
    #[error("{cause}")]
    #[diagnostic(code(berth::apply_failed), help("{report}"))]
    Failed {
        cause: Box<ApplyError>,
        report: String,
    },
    /// A step not started because another step of its batch had failed.
    #[error("skipped after another step failed")]
    #[diagnostic(code(berth::skipped))]
    Skipped,
    #[error(transparent)]
    #[diagnostic(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Journal(#[from] JournalError),
    /// Stopped by SIGINT or SIGTERM before this step.
    #[error("interrupted (SIGINT or SIGTERM); the steps done so far were undone")]
    #[diagnostic(code(berth::interrupted), help("{report}"))]
    Interrupted { report: String },
    #[error(
        "pod `{pod}` asks for {cpus} CPUs, but the engine of region `{region}` has {ncpu}; nothing was changed"
    )]
    #[diagnostic(
        code(berth::too_many_cpus),
        help(
            "lower `resources.cpus` of pod `{pod}` to at most {ncpu}, or run it on an engine with more CPUs"
        )
    )]
    TooManyCpus {
        pod: String,
        cpus: f64,
        region: String,
        ncpu: i64,
    },
    #[error("`{address}` gets secret files, and {reason}; nothing was changed")]
    #[diagnostic(
        code(berth::secrets_keeper),
        help(
            "secret files are held in memory on the engine by a tiny keeper container: run this pod on an engine of a supported architecture, or deliver its secrets as env"
        )
    )]
    NoKeeper { address: String, reason: String },
    #[error("`{address}`: cannot write its schedule's units: {reason}")]
    #[diagnostic(
        code(berth::unit_dir),
        help(
            "nothing was changed; fix the unit directory (or point $BERTH_UNIT_DIR at one of yours), then apply again"
        )
    )]
    UnitDir {
        address: String,
        reason: crate::archive::schedule::UnitDirError,
    },
    #[error("`{address}`: {reason}")]
    #[diagnostic(
        code(berth::secret),
        help(
            "the steps before this one were rolled back; `berth secrets verify` checks the secrets alone"
        )
    )]
    Secret {
        address: String,
        reason: steps::DeliverError,
    },
    /// A secret file could not be re-encrypted or its mode healed.
    #[error("`{address}`: {reason}")]
    #[diagnostic(
        code(berth::secret),
        help(
            "the steps before this one were rolled back; `berth secrets verify` checks the secrets alone"
        )
    )]
    SecretFile {
        address: String,
        reason: steps::HealError,
    },
    /// A rendered proxy config that `nginx -t` refused: it never reached the running proxy.
    #[error("`{address}`: {reason}")]
    #[diagnostic(
        code(berth::proxy_config),
        help(
            "the running proxy keeps its config; fix the spec entry the line comes from (a `headers:` value, a route) and apply again"
        )
    )]
    ProxyRefused {
        address: String,
        reason: steps::proxy::Refused,
    },
    /// A rollout stopped at a failed region (`rollout.on_failure: halt`): the regions done
    /// before it keep the new revision, recorded as partial.
    #[error("the rollout halted at region `{region}`: {cause}")]
    #[diagnostic(code(berth::rollout_halted), help("{report}"))]
    RolloutHalted {
        region: String,
        cause: Box<ApplyError>,
        /// The partial revision recorded (none when the regions done changed nothing).
        revision: Option<u64>,
        /// What was undone, and what the partial revision holds.
        report: String,
    },
    #[error("`{address}` failed its `{gate}` gate: {detail}")]
    #[diagnostic(code(berth::gate_failed), help("{report}"))]
    GateFailed {
        address: String,
        gate: String,
        detail: String,
        /// What was rolled back, and the failed container's last output.
        report: String,
    },
}

/// What an apply reports as it goes: one event per step started or finished, and per
/// rollback or removal. Rendered as plain lines, progress bars, or JSON lines.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    /// The resource, when the event is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub status: Status,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A step began (a container is starting, a gate is being waited for).
    Started,
    /// A step finished and its gates passed.
    Done,
    /// A volume the spec no longer has was kept with its data.
    Kept,
    /// Completed steps were undone after a failure.
    RolledBack,
    /// A replaced or deleted object was removed after every gate passed.
    Removed,
    Warning,
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Applied {
    pub changed: usize,
    pub kept_volumes: Vec<String>,
    /// Objects the commit let go but kept, each with why (a network that containers of
    /// other projects still use).
    pub kept: Vec<String>,
    /// The revision recorded for it (set by the session; none when nothing changed).
    pub revision: Option<u64>,
    /// The regions the revision reaches, when not every region of the spec (`--region`,
    /// or a rollout halted at a failed region), in the spec's order.
    pub covered: Option<Vec<String>>,
    /// The rollout stopped at a failed region (`rollout.on_failure: halt`): the revision
    /// is recorded as partial, then the error returned.
    pub halted: Option<Box<Halted>>,
    /// The journal of a finished apply, still open: the caller records the revision, then
    /// ends it, so that a kill in between leaves a journal `recover` finishes (and records
    /// the revision from), never a new state without its revision.
    pub journal: Option<FinishedJournal>,
}

/// See [`Applied::journal`].
pub struct FinishedJournal(Box<Journal>);

impl FinishedJournal {
    /// Ends the journal: the apply is done.
    pub fn end(self) -> Result<(), crate::apply::journal::JournalError> {
        self.0.end(Outcome::Applied)
    }
}

impl std::fmt::Debug for FinishedJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FinishedJournal")
    }
}

/// One apply in progress. Steps of one layer run concurrently on one task, so the shared
/// lists are `RefCell`s, borrowed only between awaits.
struct Run<'a> {
    spec: &'a Spec,
    spec_dir: &'a Path,
    spec_path: &'a Path,
    graph: &'a ResourceGraph,
    observed: &'a ObservedState,
    engines: &'a HashMap<String, Engine>,
    project: &'a str,
    /// The revision this apply makes (its journal's `begin`), put on what it creates as
    /// `io.berth.revision`.
    revision: Option<u64>,
    options: Options,
    /// Undo records (with their journal ids), oldest first.
    undo: RefCell<Vec<(u64, Undo)>>,
    /// Set when a step fails: the steps not yet started in its batch are skipped.
    failed: Cell<bool>,
    /// `parallelism` workers: a step holds one while it asks the engine for changes, not
    /// while it waits for a container's gates ([`Run::step`], [`Run::gate`]).
    workers: std::sync::Arc<tokio::sync::Semaphore>,
    commit: RefCell<Vec<CommitItem>>,
    journal: RefCell<Option<Journal>>,
    /// Set by SIGINT/SIGTERM: no new step starts.
    interrupted: &'a std::sync::atomic::AtomicBool,
    kept_volumes: RefCell<Vec<String>>,
    kept: RefCell<Vec<String>>,
    progress: RefCell<&'a mut dyn FnMut(&Event)>,
    /// The identity and the secret files as found, updated as apply re-encrypts them.
    secrets: &'a Inspection,
    secret_files: RefCell<BTreeMap<String, FileFacts>>,
    state_dir: &'a Path,
    /// Each region's proxy as it runs during this apply (config, candidates in it).
    proxies: RefCell<HashMap<String, steps::proxy::Live>>,
    /// One reload of a proxy at a time (the replicas of a pod switch concurrently).
    proxy_turn: futures_util::lock::Mutex<()>,
    /// The regions the revision reaches when not all (`--region`, or the regions done
    /// before a rollout halted), and the region it halted at: said by the commit.
    covered: RefCell<(Option<Vec<String>>, Option<String>)>,
    /// The id of each image the pre-flight found on a region's engine, by (region, name):
    /// a pod's container is labelled with it without asking the engine again.
    image_ids: RefCell<HashMap<(String, String), String>>,
}

/// What a plan was made from, and where it is carried out.
pub struct Inputs<'a> {
    pub spec: &'a Spec,
    /// Relative host paths in mounts are relative to the spec's directory.
    pub spec_dir: &'a Path,
    /// The spec file (absolute), for the units of scheduled backups.
    pub spec_path: &'a Path,
    pub graph: &'a ResourceGraph,
    pub observed: &'a ObservedState,
    /// Connected engines, by region name.
    pub engines: &'a HashMap<String, Engine>,
    /// The identity and secret files, as read before planning.
    pub secrets: &'a Inspection,
    /// The project's state directory (written into the units of scheduled backups).
    pub state_dir: &'a Path,
    /// The journal of this apply, begun by the caller.
    pub journal: Journal,
    /// Set when the process is asked to stop.
    pub interrupted: &'a std::sync::atomic::AtomicBool,
    /// `--region`: the regions planned (all when empty).
    pub regions: &'a [String],
}

/// Applies `plan`, made from `inputs.graph` and `inputs.observed`, on `inputs.engines`.
pub async fn apply(
    inputs: Inputs<'_>,
    plan: &Plan,
    options: Options,
    progress: &mut dyn FnMut(&Event),
) -> Result<Applied, ApplyError> {
    let Inputs {
        spec,
        spec_dir,
        spec_path,
        graph,
        observed,
        engines,
        secrets,
        state_dir,
        journal,
        interrupted,
        regions,
    } = inputs;
    let revision = match &journal.machine().begin {
        Some(Record::Begin { revision, .. }) => Some(*revision),
        _ => None,
    };
    let run = Run {
        revision,
        spec,
        spec_dir,
        spec_path,
        graph,
        observed,
        engines,
        project: &spec.project.value,
        options,
        undo: RefCell::new(Vec::new()),
        failed: Cell::new(false),
        workers: std::sync::Arc::new(tokio::sync::Semaphore::new(options.parallelism.max(1))),
        commit: RefCell::new(Vec::new()),
        journal: RefCell::new(Some(journal)),
        interrupted,
        kept_volumes: RefCell::new(Vec::new()),
        kept: RefCell::new(Vec::new()),
        progress: RefCell::new(progress),
        secrets,
        secret_files: RefCell::new(secrets.files.clone()),
        state_dir,
        proxies: RefCell::new(HashMap::new()),
        proxy_turn: futures_util::lock::Mutex::new(()),
        covered: RefCell::new((None, None)),
        image_ids: RefCell::new(HashMap::new()),
    };
    if !regions.is_empty() {
        run.covered.borrow_mut().0 = Some(rollout::in_spec_order(spec, regions.to_vec()));
    }
    let changes: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    // Pre-flight: everything apply needs, checked before the first mutation; the cheap
    // refusals first, then names on the engines, then images (pulls and builds).
    if let Err(e) = run.preflight_all(&changes).await {
        // Nothing was changed: the journal ends here.
        run.end_journal(Outcome::RolledBack)?;
        return Err(e);
    }
    let (changed, halted) = run.roll_out(&changes).await?;
    let all_removed = run.finish().await?;
    // Every removal done: the caller ends the journal once the revision is recorded. With
    // removals left, it stays open for `recover` (dropped, not ended).
    let journal = run.journal.borrow_mut().take();
    let journal = journal
        .filter(|_| all_removed)
        .map(|j| FinishedJournal(Box::new(j)));
    // A volume kept with its data is not a change: nothing was done to it.
    let kept_volumes = run.kept_volumes.take();
    Ok(Applied {
        journal,
        halted,
        covered: run.covered.take().0,
        revision: None,
        changed: changed.saturating_sub(kept_volumes.len()),
        kept_volumes,
        kept: run.kept.take(),
    })
}

impl ApplyError {
    /// The report a failed apply carries in its help (what was undone), if any.
    pub fn report(&self) -> &str {
        match self {
            ApplyError::Failed { report, .. }
            | ApplyError::Interrupted { report }
            | ApplyError::GateFailed { report, .. }
            | ApplyError::RolloutHalted { report, .. } => report,
            _ => "",
        }
    }
}

/// The error of a failed batch, with what its rollback `restored` in its report.
fn rolled_back(e: ApplyError, restored: String) -> ApplyError {
    match e {
        ApplyError::Interrupted { .. } => ApplyError::Interrupted { report: restored },
        ApplyError::GateFailed {
            address,
            gate,
            detail,
            report,
        } => ApplyError::GateFailed {
            address,
            gate,
            detail,
            report: format!("{restored}{report}"),
        },
        other => ApplyError::Failed {
            cause: Box::new(other),
            report: restored,
        },
    }
}

impl<'a> Run<'a> {
    fn region_of(&self, c: &Change) -> String {
        c.address
            .region
            .as_deref()
            .unwrap_or_else(|| self.spec.primary_region())
            .to_owned()
    }

    fn engine(&self, region: &str) -> &'a Engine {
        // Every region of the spec was connected before planning.
        let engines: &'a HashMap<String, Engine> = self.engines;
        &engines[region]
    }

    fn desired(&self, c: &Change) -> Option<&Resource> {
        self.graph.get(&c.address)
    }

    fn observed_id(&self, c: &Change) -> Option<String> {
        let key = c.address.match_key();
        self.observed
            .resources
            .iter()
            .find(|o| o.address.match_key() == key)
            .and_then(|o| o.id.clone())
    }

    /// Writes a record to the journal.
    fn journal(&self, r: Record) -> Result<(), ApplyError> {
        match self.journal.borrow_mut().as_mut() {
            Some(j) => Ok(j.append(r)?),
            None => Ok(()),
        }
    }

    /// Ends the journal (once).
    fn end_journal(&self, outcome: Outcome) -> Result<(), ApplyError> {
        match self.journal.borrow_mut().take() {
            Some(j) => Ok(j.end(outcome)?),
            None => Ok(()),
        }
    }

    /// Records how to undo the mutation about to happen: in the journal (durably), then
    /// on the undo stack. Returns its id.
    fn record_undo(&self, u: Undo) -> Result<u64, ApplyError> {
        let id = match self.journal.borrow_mut().as_mut() {
            Some(j) => {
                let id = j.next_undo_id();
                j.append(Record::Undo {
                    id,
                    undo: u.clone(),
                })?;
                id
            }
            None => 0,
        };
        self.undo.borrow_mut().push((id, u));
        Ok(id)
    }

    /// Undo records no longer needed (superseded by another).
    fn drop_undos(&self, ids: Vec<u64>) -> Result<(), ApplyError> {
        // Journaled first: memory follows what is durable.
        self.journal(Record::Drop { ids: ids.clone() })?;
        self.undo.borrow_mut().retain(|(id, _)| !ids.contains(id));
        Ok(())
    }

    async fn step(&self, c: &Change) -> Result<(), ApplyError> {
        // A worker first; the step gives it back while it waits for gates ([`Worker`]).
        let worker = self.worker().await;
        if self.failed.get() {
            return Err(ApplyError::Skipped);
        }
        if self.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            self.failed.set(true);
            return Err(ApplyError::Interrupted {
                report: String::new(),
            });
        }
        let address = c.address.to_string();
        self.journal(Record::Step {
            address: address.clone(),
            state: StepState::Started,
        })?;
        let result = workers::WORKER
            .scope(RefCell::new(worker), self.step_inner(c))
            .await;
        self.journal(Record::Step {
            address,
            state: if result.is_ok() {
                StepState::Succeeded
            } else {
                StepState::Failed
            },
        })?;
        if result.is_err() {
            self.failed.set(true);
        }
        result
    }

    fn event(&self, address: Option<&crate::graph::Address>, status: Status, message: String) {
        let e = Event {
            address: address.map(|a| a.to_string()),
            status,
            message,
        };
        (self.progress.borrow_mut())(&e);
    }

    fn done(&self, c: &Change, message: String) {
        self.event(Some(&c.address), Status::Done, message);
    }

    /// Every gate passed: remove what was replaced or deleted (journaled as the commit).
    async fn finish(&self) -> Result<bool, ApplyError> {
        let mut commit = self.commit.take();
        // Containers first, then networks and volumes they used.
        commit.sort_by_key(|c| match c {
            CommitItem::Container { .. } => 0,
            CommitItem::Network { .. } => 1,
            CommitItem::Volume { .. } => 2,
        });
        let (regions, halted_at) = self.covered.borrow().clone();
        self.journal(Record::Commit {
            items: commit.clone(),
            regions,
            halted_at,
        })?;
        let mut left = 0;
        for c in &commit {
            let (what, result) = undo::commit_one(self.engines, self.project, c).await;
            match result {
                Ok(undo::Committed::Removed) => {
                    self.event(None, Status::Removed, format!("  removed {what}"))
                }
                Ok(undo::Committed::Kept(why)) => {
                    self.event(None, Status::Warning, format!("  warning: {why}"));
                    self.kept.borrow_mut().push(why);
                }
                Err(e) => {
                    left += 1;
                    self.event(
                        None,
                        Status::Warning,
                        format!("  warning: could not remove {what} ({e})"),
                    );
                }
            }
        }
        if left > 0 {
            // The journal stays open: `berth recover` finishes the removals, and until then
            // plan and apply say so.
            self.event(
                None,
                Status::Warning,
                format!(
                    "  warning: {left} removal(s) are left; run `berth recover` to finish them"
                ),
            );
        }
        self.sweep_deliveries().await;
        Ok(left == 0)
    }

    async fn sweep_deliveries(&self) {
        sweep_deliveries(self.engines, self.project).await;
    }
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (no output)".to_owned();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
