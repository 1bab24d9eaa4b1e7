//! Apply: the plan's changes carried out on the regions' engines, in plan order (which is
//! dependency order), each mutation recording how to undo it before the next one starts.
//! When a gate fails, the completed steps are undone in reverse and the failed container's
//! last output goes into the report. Removals of replaced and deleted containers wait until
//! every gate has passed (the commit), so that undoing never needs what is already gone.
//!
//! Steps of one graph layer do not depend on each other and run concurrently, at most
//! `--parallelism` at once; a layer starts when the one before it is done. When a step
//! fails, the others of its layer finish (nothing is left half-done) and then everything is
//! undone.
//!
//! Every undo (and the commit) is written to the journal ([`journal`]) before the mutation
//! it covers, so that `berth recover` ([`recover`]) can finish what a killed apply left.

pub mod container;
pub mod gate;
pub mod journal;
pub mod recover;
pub mod undo;
pub mod unwind;
pub use undo::Undo;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use futures_util::StreamExt;

use crate::engine::{Engine, EngineError, labels};
use crate::graph::{Kind, Resource, ResourceGraph};
use crate::observe::ObservedState;
use crate::plan::{Action, Change, Plan, ReplaceOrder};
use crate::secrets::delivery;
use crate::secrets::files::{self, FileFacts, Inspection};
use crate::spec::Spec;

use container::{container_name, container_name_of, object_name};
use journal::{CommitItem, Journal, JournalError, Outcome, Record, StepState};

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Remove volumes the spec no longer has (their data with them).
    pub delete_volumes: bool,
    /// Most steps in flight at once (steps of one graph layer do not depend on each other).
    pub parallelism: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delete_volumes: false,
            parallelism: 4,
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
        reason: String,
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
    BackupSetUp { address: String, reason: String },
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
    #[error(
        "`{address}` gets secret files, and this host has nowhere safe to put them: {reason}; nothing was changed"
    )]
    #[diagnostic(
        code(berth::runtime_dir),
        help(
            "point $BERTH_RUNTIME_DIR at a directory of yours on a tmpfs (e.g. under /dev/shm or $XDG_RUNTIME_DIR), or unset it; or deliver the pod's secrets as env"
        )
    )]
    RuntimeDir { address: String, reason: String },
    #[error("`{address}`: cannot write its schedule's units: {reason}")]
    #[diagnostic(
        code(berth::unit_dir),
        help(
            "nothing was changed; fix the unit directory (or point $BERTH_UNIT_DIR at one of yours), then apply again"
        )
    )]
    UnitDir { address: String, reason: String },
    #[error("`{address}`: {reason}")]
    #[diagnostic(
        code(berth::secret),
        help(
            "the steps before this one were rolled back; `berth secrets verify` checks the secrets alone"
        )
    )]
    Secret { address: String, reason: String },
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

/// How a secret reaches a container.
enum Delivery {
    /// A file under `/run/secrets` with this mode.
    File(u32),
    /// An environment variable of this name (the spec opted in).
    Env(String),
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
        commit: RefCell::new(Vec::new()),
        journal: RefCell::new(Some(journal)),
        interrupted,
        kept_volumes: RefCell::new(Vec::new()),
        kept: RefCell::new(Vec::new()),
        progress: RefCell::new(progress),
        secrets,
        secret_files: RefCell::new(secrets.files.clone()),
        state_dir,
    };
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
    // Batches: region by region (primary first), then by graph layer; a batch starts when
    // the one before it is done. Pods leaving the spec are set aside first, so that what
    // replaces them can take their ports and names.
    let regions = spec.region_names();
    let mut batches: BTreeMap<(usize, usize), Vec<&Change>> = BTreeMap::new();
    for c in &changes {
        let region = c
            .address
            .region
            .as_deref()
            .and_then(|r| regions.iter().position(|x| *x == r))
            .unwrap_or(0);
        let layer = match graph.layer_of(&c.address) {
            Some(l) => l + 1,
            None => 0,
        };
        batches.entry((region, layer)).or_default().push(c);
    }
    let mut changed = 0;
    for batch in batches.into_values() {
        let results: Vec<Result<(), ApplyError>> = futures_util::stream::iter(batch)
            .map(|c| run.step(c))
            .buffer_unordered(options.parallelism.max(1))
            .collect()
            .await;
        changed += results.iter().filter(|r| r.is_ok()).count();
        // Every step of the batch has finished or was skipped (none is left half-done);
        // undo them all, and report the failure rather than the skips it caused.
        let mut errors: Vec<ApplyError> = results.into_iter().filter_map(Result::err).collect();
        if run.interrupted.load(std::sync::atomic::Ordering::Relaxed) && errors.is_empty() {
            errors.push(ApplyError::Interrupted {
                report: String::new(),
            });
        }
        errors.sort_by_key(|e| matches!(e, ApplyError::Skipped));
        if let Some(e) = errors.into_iter().next() {
            let restored = run.rollback().await?;
            return Err(match e {
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
            });
        }
    }
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
        revision: None,
        changed: changed.saturating_sub(kept_volumes.len()),
        kept_volumes,
        kept: run.kept.take(),
    })
}

impl<'a> Run<'a> {
    fn region_of(&self, c: &Change) -> String {
        c.address
            .region
            .clone()
            .unwrap_or_else(|| self.spec.region_names()[0].to_owned())
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

    /// Pre-flight: everything apply needs, checked before the first mutation; the cheap
    /// refusals first, then names on the engines, then images (pulls and builds).
    async fn preflight_all(&self, changes: &[&Change]) -> Result<(), ApplyError> {
        for c in changes {
            self.refusals(c)?;
        }
        // Also run by `Session::preflight` before any `before_apply` backup; again here,
        // next to the first mutation, since a backup can take minutes (one `/info` call).
        preflight_host(self.spec, changes, self.engines).await?;
        for c in changes {
            self.names_free(c).await?;
        }
        for c in changes {
            self.preflight(c).await?;
        }
        Ok(())
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

    /// What apply cannot do, refused before anything else.
    fn refusals(&self, c: &Change) -> Result<(), ApplyError> {
        let unsupported = |what: &str, help: &str| ApplyError::Unsupported {
            address: c.address.to_string(),
            what: what.to_owned(),
            help: help.to_owned(),
        };
        match (c.address.kind, c.action) {
            (Kind::Proxy, _) => Err(unsupported(
                "run the proxy",
                "the managed nginx proxy comes with the proxy work; remove `proxy:` to apply the rest",
            )),
            (Kind::Network | Kind::Volume, Action::Update | Action::Replace) => Err(unsupported(
                &format!("change a {} in place", c.address.kind.as_str()),
                "remove and re-create it by hand if you must; berth never replaces a volume",
            )),
            (Kind::Volume, Action::Create)
                if self
                    .spec
                    .volumes
                    .get(&c.address.name)
                    .is_some_and(|v| v.external) =>
            {
                Err(unsupported(
                    "use an external volume",
                    "create the volume by hand and drop `external: true` to let berth manage it",
                ))
            }
            (Kind::Pod, Action::Create | Action::Replace | Action::Heal)
                if self
                    .spec
                    .pods
                    .get(&c.address.name)
                    .is_some_and(|p| !p.secrets.is_empty())
                    && !self.engine(&self.region_of(c)).is_local() =>
            {
                Err(unsupported(
                    "deliver secrets to an engine on another machine",
                    "secrets reach a container through a tmpfs on the engine's host: run berth on that host (engine `unix://...`)",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The names apply will give must be free: another project's network, a volume made by
    /// hand, a container left by an interrupted apply would otherwise be taken over.
    async fn names_free(&self, c: &Change) -> Result<(), ApplyError> {
        use crate::engine::docker::ObjectKind;
        let region = self.region_of(c);
        let engine = self.engine(&region);
        let mut wanted: Vec<(ObjectKind, String)> = Vec::new();
        match (c.address.kind, c.action) {
            (Kind::Network, Action::Create) => {
                wanted.push((
                    ObjectKind::Network,
                    object_name(self.project, &c.address.name),
                ));
            }
            (Kind::Volume, Action::Create) => {
                wanted.push((
                    ObjectKind::Volume,
                    object_name(self.project, &c.address.name),
                ));
            }
            (Kind::Pod, Action::Create | Action::Replace) => {
                let name = container_name_of(self.project, &c.address);
                if c.action == Action::Create {
                    wanted.push((ObjectKind::Container, name.clone()));
                }
                wanted.push((ObjectKind::Container, format!("{name}-berth-old")));
                wanted.push((ObjectKind::Container, format!("{name}-berth-next")));
            }
            _ => {}
        }
        for (kind, name) in wanted {
            if engine.labels_of(kind, &name).await?.is_some() {
                return Err(ApplyError::NameTaken {
                    kind: kind.as_str(),
                    name,
                    region,
                });
            }
        }
        Ok(())
    }

    /// Images: pulled when absent, built from their context when `build:` says so.
    async fn preflight(&self, c: &Change) -> Result<(), ApplyError> {
        match (c.address.kind, c.action) {
            (Kind::Pod, Action::Create | Action::Replace | Action::Heal) => {
                let Some(pod) = self.spec.pods.get(&c.address.name) else {
                    return Ok(());
                };
                let region = self.region_of(c);
                if let Some(b) = &pod.build
                    && let Some(tag) = self.desired(c).and_then(|r| r.attrs.get("build.image"))
                {
                    let engine = self.engine(&region);
                    if !engine.image_present(tag).await? {
                        self.event(
                            Some(&c.address),
                            Status::Started,
                            format!("  {}: building {tag}", c.address),
                        );
                        let context = self.spec_dir.join(&b.value.context);
                        let dockerfile = b.value.dockerfile.as_deref().unwrap_or("Dockerfile");
                        let archive =
                            crate::engine::context::tar(&context, dockerfile).map_err(|e| {
                                ApplyError::Unsupported {
                                    address: c.address.to_string(),
                                    what: "read the build context".into(),
                                    help: e.to_string(),
                                }
                            })?;
                        let args = b
                            .value
                            .args
                            .iter()
                            .map(|a| (a.name.value.clone(), a.item.value.0.clone()))
                            .collect();
                        engine.build_image(tag, archive, dockerfile, args).await?;
                        self.event(
                            Some(&c.address),
                            Status::Done,
                            format!("  {}: built {tag}", c.address),
                        );
                    }
                }
                // The image as planned (a rollback pins it to an id).
                let planned = self.desired(c).and_then(|r| r.attrs.get("image")).cloned();
                if let Some(image) = pod
                    .image
                    .as_ref()
                    .map(|i| planned.unwrap_or_else(|| i.value.clone()))
                    && !self.engine(&region).image_present(&image).await?
                {
                    self.event(
                        Some(&c.address),
                        Status::Started,
                        format!("  {}: pulling {}", c.address, image),
                    );
                    if let Err(reason) = self.engine(&region).pull(&image).await {
                        return Err(ApplyError::ImageMissing {
                            address: c.address.to_string(),
                            image: image.clone(),
                            region,
                            reason,
                        });
                    }
                    self.event(
                        Some(&c.address),
                        Status::Done,
                        format!("  {}: pulled {}", c.address, image),
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn step(&self, c: &Change) -> Result<(), ApplyError> {
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
        let result = self.step_inner(c).await;
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

    async fn step_inner(&self, c: &Change) -> Result<(), ApplyError> {
        let region = self.region_of(c);
        let engine = self.engine(&region);
        let address = c.address.to_string();
        match (c.address.kind, c.action) {
            (Kind::Network, Action::Create) | (Kind::Volume, Action::Create) => {
                let resource = self.desired(c).cloned().unwrap_or_else(|| Resource {
                    address: c.address.clone(),
                    attrs: Default::default(),
                    depends_on: Vec::new(),
                });
                let name = object_name(self.project, &c.address.name);
                let labels = labels::encode(self.project, &resource, self.revision);
                if c.address.kind == Kind::Network {
                    self.record_undo(Undo::RemoveNetwork {
                        region,
                        name: name.clone(),
                    })?;
                    engine.create_network(&name, labels).await?;
                } else {
                    self.record_undo(Undo::RemoveVolume {
                        region,
                        name: name.clone(),
                    })?;
                    engine.create_volume(&name, labels).await?;
                }
                self.done(c, format!("+ {address}: created"));
            }
            (Kind::Pod, Action::Create) => {
                let id = self.start_pod(c, &region, None).await?;
                self.done(
                    c,
                    format!("+ {address}: created and healthy ({})", short(&id)),
                );
            }
            (Kind::Pod, Action::Replace) => {
                let Some(old) = self.observed_id(c) else {
                    let id = self.start_pod(c, &region, None).await?;
                    self.done(
                        c,
                        format!("+ {address}: created and healthy ({})", short(&id)),
                    );
                    return Ok(());
                };
                let resource = self
                    .desired(c)
                    .cloned()
                    .ok_or_else(|| ApplyError::Unsupported {
                        address: address.clone(),
                        what: "find the pod in the spec".into(),
                        help: "this is a bug in berth: please report it".into(),
                    })?;
                let name = container_name(self.project, &resource);
                let aside = format!("{name}-berth-old");
                if c.replace_order == Some(ReplaceOrder::CreateBeforeDestroy) {
                    let next = format!("{name}-berth-next");
                    let new_id = self.start_pod(c, &region, Some(&next)).await?;
                    // Healthy: peers may reach it now, beside the old one; then the old goes.
                    engine
                        .reconnect_with_alias(
                            &new_id,
                            &object_name(self.project, "default"),
                            &c.address.name,
                        )
                        .await?;
                    self.set_aside(&region, &old, &name, &aside).await?;
                    // Switching: undoing is now "remove the new one, restore the old one",
                    // whatever name the new one has.
                    let superseded: Vec<u64> = self
                        .undo
                        .borrow()
                        .iter()
                        .filter(|(_, u)| match u {
                            Undo::RemoveContainer { name: n, .. } => *n == next,
                            Undo::Restore { id, .. } => *id == old,
                            _ => false,
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    self.record_undo(Undo::Unswitch {
                        region: region.clone(),
                        new_id: new_id.clone(),
                        old_id: old.clone(),
                        name: name.clone(),
                    })?;
                    self.drop_undos(superseded)?;
                    engine.rename(&new_id, &name).await?;
                    self.commit
                        .borrow_mut()
                        .push(CommitItem::Container { region, id: old });
                    self.done(
                        c,
                        format!("+/- {address}: replaced blue-green ({})", short(&new_id)),
                    );
                } else {
                    self.set_aside(&region, &old, &name, &aside).await?;
                    let new_id = self.start_pod(c, &region, None).await?;
                    self.commit
                        .borrow_mut()
                        .push(CommitItem::Container { region, id: old });
                    self.done(c, format!("-/+ {address}: recreated ({})", short(&new_id)));
                }
            }
            (Kind::Pod, Action::Heal) => {
                let id = self.observed_id(c).unwrap_or_default();
                // Stopped: start it. Running but unhealthy: restart it.
                engine.stop(&id).await?;
                // Its secrets again, in case a reboot emptied the tmpfs that held them (only
                // into berth's own delivery directory, never into a mount of the spec's).
                if let Some(pod) = self.spec.pods.get(&c.address.name)
                    && pod.secrets.iter().any(|s| s.value.env().is_none())
                    && let Some((dir, _)) = engine
                        .state(&id)
                        .await?
                        .binds
                        .into_iter()
                        .find(|(_, dest)| dest == delivery::MOUNT_POINT)
                {
                    let image = self
                        .desired(c)
                        .and_then(|r| r.attrs.get("build.image").or_else(|| r.attrs.get("image")))
                        .cloned()
                        .unwrap_or_default();
                    let owner = self.owner(c, &region, pod, &image).await?;
                    self.refill(c, pod, Path::new(&dir), owner)?;
                }
                engine.start(&id).await?;
                self.gate(c, &region, &id, false).await?;
                self.done(c, format!("! {address}: started again and healthy"));
            }
            (Kind::Pod, Action::Delete) => {
                if let Some(id) = self.observed_id(c) {
                    let name = container_name_of(self.project, &c.address);
                    let aside = format!("{name}-berth-deleted-{}", short(&id));
                    self.set_aside(&region, &id, &name, &aside).await?;
                    self.commit
                        .borrow_mut()
                        .push(CommitItem::Container { region, id });
                }
                self.done(
                    c,
                    format!("- {address}: stopped (removed once every gate passed)"),
                );
            }
            (Kind::Network, Action::Delete) => {
                let name = object_name(self.project, &c.address.name);
                self.commit
                    .borrow_mut()
                    .push(CommitItem::Network { region, name });
            }
            (Kind::Volume, Action::Delete) => {
                let name = object_name(self.project, &c.address.name);
                if self.options.delete_volumes {
                    self.commit
                        .borrow_mut()
                        .push(CommitItem::Volume { region, name });
                } else {
                    self.kept_volumes.borrow_mut().push(address.clone());
                    self.event(
                        Some(&c.address),
                        Status::Kept,
                        format!("  {address}: kept with its data (--delete-volumes removes it)"),
                    );
                }
            }
            (Kind::Backup, Action::Delete) => {
                let what = self
                    .remove_backup_units(&c.address.name)
                    .map_err(|reason| ApplyError::Unsupported {
                        address: address.clone(),
                        what: "remove the backup's timer".into(),
                        help: reason,
                    })?;
                self.done(c, format!("- {address}: {what}"));
            }
            (Kind::Backup, Action::Create | Action::Heal | Action::Update) => {
                let what = self.set_up_backup(&c.address.name).map_err(|reason| {
                    ApplyError::BackupSetUp {
                        address: address.clone(),
                        reason,
                    }
                })?;
                self.done(c, format!("+ {address}: {what}"));
            }
            (Kind::Secret, Action::Heal) => {
                let what =
                    self.heal_secret(&c.address.name)
                        .map_err(|reason| ApplyError::Secret {
                            address: address.clone(),
                            reason,
                        })?;
                self.done(c, format!("! {address}: {what}"));
            }
            // Not observed (rate limits, backups) or refused by the pre-flight: nothing to
            // do here.
            _ => {}
        }
        Ok(())
    }

    /// Stops a container and renames it aside, having recorded how to undo both: give it
    /// its name back and start it.
    async fn set_aside(
        &self,
        region: &str,
        id: &str,
        name: &str,
        aside: &str,
    ) -> Result<(), ApplyError> {
        let engine = self.engine(region);
        // A container observed stopped (drift in `state`) stays stopped when restored.
        let was_running = !self
            .observed
            .resources
            .iter()
            .any(|o| o.id.as_deref() == Some(id) && o.drift.iter().any(|d| d.field == "state"));
        self.record_undo(Undo::Restore {
            region: region.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
            was_running,
        })?;
        engine.stop(id).await?;
        engine.rename(id, aside).await?;
        Ok(())
    }

    /// Disables and removes the timer and service of a backup that left the spec (each file
    /// on the undo stack first). Its store and its backups stay: they are data.
    fn remove_backup_units(&self, name: &str) -> Result<String, String> {
        use crate::backup::schedule;
        let dir = schedule::unit_dir();
        let unit = schedule::unit_name(self.project, name);
        if schedule::systemd_running() {
            let mut c = std::process::Command::new("systemctl");
            if !dir.starts_with("/etc") {
                c.arg("--user");
            }
            let _ = c
                .args(["disable", "--now", &format!("{unit}.timer")])
                .status();
        }
        for file in [format!("{unit}.timer"), format!("{unit}.service")] {
            let path = dir.join(&file);
            // Never through a symlink: one is left alone (it is not berth's unit).
            let Ok(old) = crate::fsutil::read_nofollow(&path) else {
                continue;
            };
            self.record_undo(Undo::RestoreFile {
                path: path.clone(),
                bytes: undo::hex(&old),
                mode: 0o644,
                record: None,
            })
            .map_err(|e| e.to_string())?;
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(format!(
            "{unit}.timer removed; its store and backups are kept"
        ))
    }

    /// Makes a backup's store directory (0700) and writes its schedule's units (each
    /// previous file on the undo stack first); tells systemd when it runs here.
    fn set_up_backup(&self, name: &str) -> Result<String, String> {
        use crate::backup::schedule;
        let Some(backup) = self.spec.backups.get(name) else {
            return Ok("nothing to do".into());
        };
        let store = self
            .spec_dir
            .join(crate::fsutil::expand_home(&backup.store.value));
        // Made, or its mode healed, only when it is berth's own (the pre-flight refused any
        // other before the first change).
        let (_, done) =
            crate::backup::store::LocalStore::set_up(&store).map_err(|e| e.to_string())?;
        let mut what = format!("store {} {done}", store.display());
        let run_as = schedule::RunAs {
            state_dir: self.state_dir,
            identity: &self.secrets.identity_path,
        };
        let Some(units) = schedule::units(self.spec, self.spec_path, name, backup, &run_as) else {
            return Ok(what);
        };
        let dir = schedule::unit_dir();
        crate::fsutil::create_dir_all(&dir, 0o755)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        for (file, content) in &units {
            let path = dir.join(file);
            // Never through a symlink: the undo would otherwise keep the target's bytes.
            let old = match crate::fsutil::read_nofollow(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(format!("{}: {e}", path.display())),
                Ok(old) => Some(old),
            };
            match old {
                Some(old) if old == content.as_bytes() => continue,
                Some(old) => self.record_undo(Undo::RestoreFile {
                    path: path.clone(),
                    bytes: undo::hex(&old),
                    mode: 0o644,
                    record: None,
                }),
                None => self.record_undo(Undo::RemoveFile { path: path.clone() }),
            }
            .map_err(|e| e.to_string())?;
            crate::fsutil::write_atomic(&path, content.as_bytes(), 0o644)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let timer = format!("{}.timer", schedule::unit_name(self.project, name));
        if schedule::systemd_running() {
            let user = !dir.starts_with("/etc");
            let systemctl = |args: &[&str]| {
                let mut c = std::process::Command::new("systemctl");
                if user {
                    c.arg("--user");
                }
                c.args(args).status().map(|s| s.success()).unwrap_or(false)
            };
            if !(systemctl(&["daemon-reload"]) && systemctl(&["enable", "--now", &timer])) {
                return Err(format!("systemctl could not enable {timer}"));
            }
            what.push_str(&format!(", {timer} enabled"));
        } else {
            what.push_str(&format!(
                ", units in {} (systemd is not running here: enable {timer} where it does)",
                dir.display()
            ));
        }
        Ok(what)
    }

    /// Re-encrypts a secret file to the spec's recipients, or gives it mode 0600; the
    /// previous bytes, mode and record go on the undo stack first. Says what it did.
    fn heal_secret(&self, name: &str) -> Result<String, String> {
        let Some(facts) = self.secret_files.borrow().get(name).cloned() else {
            return Ok("nothing to do".into());
        };
        if facts.stale_recipients() {
            let identity = self
                .secrets
                .identity
                .as_ref()
                .ok_or_else(|| "there is no identity to decrypt it with".to_owned())?;
            let value = identity
                .decrypt(&facts.ciphertext)
                .map_err(|e| e.to_string())?;
            let armor = crate::secrets::age::is_armored(&facts.ciphertext);
            let ciphertext = crate::secrets::age::encrypt(&facts.wanted, &value, armor)
                .map_err(|e| e.to_string())?;
            self.record_undo(Undo::RestoreFile {
                path: facts.path.clone(),
                bytes: undo::hex(&facts.ciphertext),
                mode: facts.mode,
                record: std::fs::read(files::record_path(&facts.path))
                    .ok()
                    .map(|r| undo::hex(&r)),
            })
            .map_err(|e| e.to_string())?;
            files::write_secret(&facts.path, &ciphertext, &facts.wanted)
                .map_err(|e| format!("cannot write {}: {e}", facts.path.display()))?;
            let fingerprint = crate::secrets::plaintext::fingerprint(&ciphertext);
            if let Some(f) = self.secret_files.borrow_mut().get_mut(name) {
                f.ciphertext = ciphertext;
                f.fingerprint = fingerprint.clone();
                f.recorded = Some(f.wanted.clone());
                f.mode = files::FILE_MODE;
            }
            return Ok(format!(
                "re-encrypted to {} recipient(s) ({fingerprint})",
                facts.wanted.len()
            ));
        }
        if facts.mode != files::FILE_MODE {
            self.record_undo(Undo::RestoreMode {
                path: facts.path.clone(),
                mode: facts.mode,
            })
            .map_err(|e| e.to_string())?;
            crate::fsutil::set_mode(&facts.path, files::FILE_MODE)
                .map_err(|e| format!("cannot change the mode of {}: {e}", facts.path.display()))?;
            if let Some(f) = self.secret_files.borrow_mut().get_mut(name) {
                f.mode = files::FILE_MODE;
            }
            return Ok(format!("mode {:04o} -> 0600", facts.mode));
        }
        Ok("nothing to do".into())
    }

    /// The values of the secrets a pod consumes, decrypted from the files as they are now
    /// (after any re-encryption in this apply), with how each is delivered.
    fn secret_values(
        &self,
        c: &Change,
        pod: &crate::spec::Pod,
    ) -> Result<Vec<(String, crate::secrets::Plaintext, Delivery)>, ApplyError> {
        let fail = |reason: String| ApplyError::Secret {
            address: c.address.to_string(),
            reason,
        };
        let mut out = Vec::new();
        if pod.secrets.is_empty() {
            return Ok(out);
        }
        let identity = self
            .secrets
            .identity
            .as_ref()
            .ok_or_else(|| fail("there is no identity to decrypt its secrets with".into()))?;
        let files = self.secret_files.borrow();
        for s in &pod.secrets {
            let name = s.value.name();
            let f = files
                .get(name)
                .ok_or_else(|| fail(format!("the file of secret `{name}` could not be read")))?;
            let value = identity
                .decrypt(&f.ciphertext)
                .map_err(|e| fail(format!("secret `{name}`: {e}")))?;
            let how = match s.value.env() {
                Some(var) => Delivery::Env(var.to_owned()),
                None => Delivery::File(s.value.mode().and_then(|m| m.get()).unwrap_or(0o400)),
            };
            out.push((name.to_owned(), value, how));
        }
        Ok(out)
    }

    /// Puts a pod's secrets into its create request: files in a fresh tmpfs directory
    /// bind-mounted at `/run/secrets`, env variables where the spec asks for them.
    async fn deliver(
        &self,
        c: &Change,
        region: &str,
        pod: &crate::spec::Pod,
        body: &mut bollard::models::ContainerCreateBody,
    ) -> Result<(), ApplyError> {
        let values = self.secret_values(c, pod)?;
        if values.is_empty() {
            return Ok(());
        }
        let fail = |reason: String| ApplyError::Secret {
            address: c.address.to_string(),
            reason,
        };
        let mut file_values = Vec::new();
        for (name, value, how) in &values {
            match how {
                Delivery::Env(var) => {
                    let text = String::from_utf8_lossy(value.expose()).into_owned();
                    body.env
                        .get_or_insert_with(Vec::new)
                        .push(format!("{var}={text}"));
                }
                Delivery::File(mode) => file_values.push(delivery::SecretFile {
                    name,
                    value,
                    mode: *mode,
                }),
            }
        }
        if file_values.is_empty() {
            return Ok(());
        }
        let image = body.image.clone().unwrap_or_default();
        let (uid, gid) = self.owner(c, region, pod, &image).await?;
        let dir = delivery::prepare(self.project, &file_values, uid, gid)
            .map_err(|e| fail(e.to_string()))?;
        let host = body.host_config.get_or_insert_with(Default::default);
        host.mounts
            .get_or_insert_with(Vec::new)
            .push(bollard::models::Mount {
                target: Some(delivery::MOUNT_POINT.to_owned()),
                source: Some(dir.display().to_string()),
                typ: Some(bollard::models::MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        Ok(())
    }

    /// Who a pod's secret files belong to: its `user:`, else its image's `USER`, as numbers.
    async fn owner(
        &self,
        c: &Change,
        region: &str,
        pod: &crate::spec::Pod,
        image: &str,
    ) -> Result<(u32, u32), ApplyError> {
        let user = match &pod.user {
            Some(u) => u.clone(),
            None => self.engine(region).image_user(image).await?,
        };
        delivery::numeric_user(&user).ok_or_else(|| ApplyError::Secret {
            address: c.address.to_string(),
            reason: format!(
                "its secrets must be owned by its user `{user}`, and berth needs that user as numbers: give the pod `user: UID:GID`"
            ),
        })
    }

    /// Writes a pod's secret files again into the directory its container mounts (after
    /// a reboot emptied the tmpfs).
    fn refill(
        &self,
        c: &Change,
        pod: &crate::spec::Pod,
        dir: &Path,
        (uid, gid): (u32, u32),
    ) -> Result<(), ApplyError> {
        let values = self.secret_values(c, pod)?;
        let file_values: Vec<delivery::SecretFile> = values
            .iter()
            .filter_map(|(name, value, how)| match how {
                Delivery::File(mode) => Some(delivery::SecretFile {
                    name,
                    value,
                    mode: *mode,
                }),
                Delivery::Env(_) => None,
            })
            .collect();
        delivery::refill(self.project, dir, &file_values, uid, gid).map_err(|e| {
            ApplyError::Secret {
                address: c.address.to_string(),
                reason: e.to_string(),
            }
        })
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

    /// Creates and starts the container of a pod change, then runs its gates. Its removal
    /// is on the undo stack before it starts.
    async fn start_pod(
        &self,
        c: &Change,
        region: &str,
        name: Option<&str>,
    ) -> Result<String, ApplyError> {
        let engine = self.engine(region);
        let mut resource = self
            .desired(c)
            .cloned()
            .ok_or_else(|| ApplyError::Unsupported {
                address: c.address.to_string(),
                what: "find the pod in the spec".into(),
                help: "this is a bug in berth: please report it".into(),
            })?;
        // The fingerprints of files re-encrypted earlier in this apply are known now.
        for (field, value) in resource.attrs.iter_mut() {
            if value == files::KNOWN_AFTER_APPLY
                && let Some(name) = field
                    .strip_prefix("secret.")
                    .and_then(|f| f.strip_suffix(".version"))
                && let Some(f) = self.secret_files.borrow().get(name)
            {
                *value = f.fingerprint.clone();
            }
        }
        let Some(pod) = self.spec.pods.get(&c.address.name) else {
            return Err(ApplyError::Unsupported {
                address: c.address.to_string(),
                what: "find the pod in the spec".into(),
                help: "this is a bug in berth: please report it".into(),
            });
        };
        let candidate = name.is_some();
        let name = name.map_or_else(|| container_name(self.project, &resource), str::to_owned);
        // A blue-green candidate gets the pod's network alias only once it has passed its
        // gates, so that no peer reaches it before.
        let alias = (!candidate).then_some(c.address.name.as_str());
        let mut body = container::body(
            self.project,
            alias,
            pod,
            labels::encode(self.project, &resource, self.revision),
            self.spec_dir,
        );
        // The image as planned: a built tag, or the spec's image (pinned to an id by a
        // rollback).
        if let Some(image) = resource
            .attrs
            .get("build.image")
            .or_else(|| resource.attrs.get("image"))
        {
            body.image = Some(image.clone());
        }
        // The exact image, recorded on the container: a tag can move, its id cannot.
        let image_id = engine
            .image_id(body.image.as_deref().unwrap_or_default())
            .await?;
        body.labels
            .get_or_insert_with(Default::default)
            .insert(labels::IMAGE.to_owned(), image_id);
        self.deliver(c, region, pod, &mut body).await?;
        self.event(
            Some(&c.address),
            Status::Started,
            format!("  {}: starting {name}, waiting for its gates", c.address),
        );
        self.record_undo(Undo::RemoveContainer {
            region: region.to_owned(),
            name: name.clone(),
        })?;
        let id = engine.create_container(&name, body).await?;
        engine.start(&id).await?;
        self.gate(c, region, &id, true).await?;
        Ok(id)
    }

    async fn gate(
        &self,
        c: &Change,
        region: &str,
        id: &str,
        remove_on_failure: bool,
    ) -> Result<(), ApplyError> {
        let Some(pod) = self.spec.pods.get(&c.address.name) else {
            return Ok(());
        };
        let engine = self.engine(region);
        let network = object_name(self.project, "default");
        let gates = async {
            match gate::healthy(engine, id, &network, pod).await {
                Ok(()) => gate::checks(engine, id, &network, pod).await,
                failed => failed,
            }
        };
        // SIGINT/SIGTERM cut a wait for health short.
        let interrupted = async {
            while !self.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        let verdict = tokio::select! {
            v = gates => v,
            () = interrupted => return Err(ApplyError::Interrupted { report: String::new() }),
        };
        match verdict {
            Ok(()) => Ok(()),
            Err(failure) => {
                let logs = engine.log_tail(id, 20).await;
                if remove_on_failure {
                    // The failed container goes first; the undo stack no longer needs it.
                    let _ = engine.remove(id).await;
                }
                Err(ApplyError::GateFailed {
                    address: c.address.to_string(),
                    gate: failure.gate,
                    detail: failure.detail,
                    report: format!(
                        "last output of the failed container:\n{}",
                        indent(logs.trim_end())
                    ),
                })
            }
        }
    }

    /// Undoes every completed step, newest first, each journaled (by the one
    /// [`unwind::Unwind`]); says what was restored.
    async fn rollback(&self) -> Result<String, ApplyError> {
        // A journal that cannot be written does not stop the undoing: it goes on in
        // memory, and the journal stays open for `recover` (every undo is idempotent).
        let mut journaled = true;
        let mark = &mut |id, state| {
            journaled &= self.journal(Record::UndoState { id, state }).is_ok();
            Ok(())
        };
        let mut u = unwind::Unwind::new(self.undo.take());
        // An apply records no `Reapply`; were one there, `perform` refuses it.
        while let Some(r) = u.run(self.engines, self.project, mark).await? {
            let refused = Undo::Reapply {
                revision: r.revision,
            };
            let (what, result) = undo::perform(self.engines, self.project, &refused).await;
            u.finish(r.id, what, result, mark)?;
        }
        let mut lines = u.lines;
        // The names held while undoing container creates are free again.
        for e in self.engines.values() {
            if let Err(x) = e.release_names().await {
                lines.push(format!(
                    "  could NOT free the names held while undoing: {x}"
                ));
            }
        }
        let failed = lines.iter().any(|l| l.starts_with("  could NOT")) || !journaled;
        // The secrets of the containers undone go before the journal ends: once it has,
        // nothing would say they are left.
        self.sweep_deliveries().await;
        if !failed {
            self.end_journal(Outcome::RolledBack)?;
        }
        if !journaled {
            lines.push(
                "  the journal could not be written: run `berth recover` to make sure".into(),
            );
        }
        // With an undo that failed, the journal stays open: `berth recover` retries.
        Ok(if lines.is_empty() {
            "nothing had been changed\n".to_owned()
        } else if failed {
            format!(
                "the completed steps were undone, except where it says NOT (run `berth recover` to retry):\n{}\n",
                lines.join("\n")
            )
        } else {
            format!("the completed steps were undone:\n{}\n", lines.join("\n"))
        })
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
        self.journal(Record::Commit {
            items: commit.clone(),
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

use undo::short;

/// The pre-flight of pod changes against their engine and this host: what the engine or
/// the secrets delivery would otherwise refuse in the middle of an apply, after the old
/// container was stopped. A CPU limit above the engine's CPU count (`NCPU` of its
/// `/info`), and secret files with no memory filesystem here to hold them. Run before
/// anything changes (before a `before_apply` backup too).
pub async fn preflight_host(
    spec: &Spec,
    changes: &[&Change],
    engines: &HashMap<String, Engine>,
) -> Result<(), ApplyError> {
    let mut ncpu: HashMap<&str, i64> = HashMap::new();
    let regions = spec.region_names();
    for c in changes {
        if c.address.kind == Kind::Backup
            && matches!(c.action, Action::Create | Action::Update | Action::Heal)
            && spec
                .backups
                .get(&c.address.name)
                .is_some_and(|b| b.schedule.is_some())
            && let Err(reason) =
                crate::backup::schedule::check_unit_dir(&spec.project.value, &c.address.name)
        {
            return Err(ApplyError::UnitDir {
                address: c.address.to_string(),
                reason,
            });
        }
        if c.address.kind != Kind::Pod || !matches!(c.action, Action::Create | Action::Replace) {
            continue;
        }
        let Some(pod) = spec.pods.get(&c.address.name) else {
            continue;
        };
        let region = c
            .address
            .region
            .as_deref()
            .or_else(|| regions.first().copied())
            .unwrap_or_default();
        let Some(engine) = engines.get(region) else {
            continue;
        };
        if let Some(cpus) = pod.resources.as_ref().and_then(|r| r.cpus.as_ref()) {
            let n = match ncpu.get(region) {
                Some(n) => *n,
                None => {
                    let n = engine.cpu_count().await?;
                    ncpu.insert(region, n);
                    n
                }
            };
            // As the engine compares: in billionths of a CPU (an engine that does not say
            // how many it has is not second-guessed).
            if n > 0 && (cpus.value * 1e9) as i64 > n.saturating_mul(1_000_000_000) {
                return Err(ApplyError::TooManyCpus {
                    pod: c.address.name.clone(),
                    cpus: cpus.value,
                    region: region.to_owned(),
                    ncpu: n,
                });
            }
        }
        if engine.is_local()
            && pod.secrets.iter().any(|s| s.value.env().is_none())
            && let Err(e) = delivery::check_project(&spec.project.value)
        {
            return Err(ApplyError::RuntimeDir {
                address: c.address.to_string(),
                reason: e.to_string(),
            });
        }
    }
    Ok(())
}

/// Removes the decrypted secrets of containers that no longer exist (replaced, deleted,
/// rolled back): they live only as long as a container mounts them.
pub async fn sweep_deliveries(engines: &HashMap<String, Engine>, project: &str) {
    let Ok(root) = delivery::check_root() else {
        return;
    };
    if !root.join(project).is_dir() {
        return;
    }
    let mut keep = std::collections::HashSet::new();
    for engine in engines.values().filter(|e| e.is_local()) {
        match engine.containers(project).await {
            Ok(list) => keep.extend(
                list.into_iter()
                    .flat_map(|c| c.binds)
                    .map(|(source, _)| std::path::PathBuf::from(source)),
            ),
            // Without the list, nothing can be told unused: keep everything.
            Err(_) => return,
        }
    }
    delivery::sweep(project, &keep);
    // A project with no container holding secrets leaves no directory behind (a destroy,
    // say): removing a directory fails unless it is empty, and the next delivery makes it.
    let _ = std::fs::remove_dir(root.join(project));
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
