//! Operations behind the commands. Each takes paths and options, does its work through the
//! pipeline modules and returns data; printing is the command's business.

use std::path::Path;

use crate::diag::Report;
use crate::encode::sha256_hex;
use crate::engine::names::short_image;
use crate::graph::{GraphError, ResourceGraph};
use crate::observe::{ObservedState, Origin};
use crate::plan::{Plan, plan};
use crate::resources;
use crate::spec::Spec;
use crate::spec::load::ReadError;
use crate::state::StateDir;

/// Why an operation could not produce its result.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum OpError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Read(#[from] ReadError),
    /// The spec has errors; the report holds them (already rendered by the caller).
    #[error("`{}` has {} error(s)", .0.path.display(), .0.errors())]
    #[diagnostic(
        code(berth::invalid_spec),
        help("fix the errors above, then run the command again")
    )]
    Invalid(Box<Report>),
    #[error("cannot write `{path}`: {source}")]
    #[diagnostic(
        code(berth::write),
        help("check that the directory exists and is writable")
    )]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Context(#[from] crate::engine::context::ContextError),
    #[error("apply needs a confirmation, and there is no terminal to ask on")]
    #[diagnostic(
        code(berth::not_confirmed),
        help("pass --yes to apply without asking (automation), or run on a terminal")
    )]
    NotConfirmed,
    #[error("cannot start berth's async runtime: {0}")]
    #[diagnostic(
        code(berth::runtime),
        help("this is a problem of the machine (threads, file descriptors); try again")
    )]
    Runtime(std::io::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Locked(#[from] crate::state::lock::LockError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Journal(#[from] crate::apply::journal::JournalError),
    /// An apply was interrupted (killed) and its journal is unfinished.
    #[error(
        "an apply of `{project}` was interrupted ({detail}); nothing can be planned or applied until it is recovered"
    )]
    #[diagnostic(
        code(berth::interrupted_apply),
        help(
            "run `berth recover` to roll back to the last revision (or `berth recover --forward` to finish the apply)"
        )
    )]
    Interrupted { project: String, detail: String },
    /// A saved plan no longer matches what it was made from.
    #[error("the saved plan `{path}` is stale: {} fact(s) it relied on changed:\n{}", .changed.len(), .changed.join("\n"))]
    #[diagnostic(
        code(berth::stale_plan),
        help(
            "nothing was changed; make a new plan (`berth plan --out FILE`), review it, and apply that"
        )
    )]
    StalePlan {
        path: std::path::PathBuf,
        changed: Vec<String>,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Backup(#[from] crate::backup::BackupError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    MaxGateWait(#[from] crate::apply::gate::BadMaxGateWait),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Saved(#[from] crate::plan::saved::SavedError),
    /// A command cannot do what was asked (a missing file, a name the spec lacks, a
    /// snapshot of another project): what, and what to do.
    #[error("{message}")]
    #[diagnostic(code(berth::refused), help("{help}"))]
    Refused { message: String, help: String },
    /// Secrets failed the pre-flight; the report holds each problem (rendered by the caller).
    #[error("{} problem(s) with secrets; nothing was changed", .0.errors())]
    #[diagnostic(
        code(berth::preflight),
        help(
            "fix the problems above, then run the command again (`berth secrets verify` checks them alone)"
        )
    )]
    Preflight(Box<Report>),
    #[error("cannot build the resource graph: {0}")]
    #[diagnostic(
        code(berth::graph),
        help("this is a bug in berth's checks: please report it with the spec")
    )]
    Graph(#[from] GraphError),
}

pub use crate::project::{Valid, connect_engines, load_valid};

/// A project that could not be opened fails the operation the same way.
impl From<crate::project::ProjectError> for OpError {
    fn from(e: crate::project::ProjectError) -> OpError {
        use crate::project::ProjectError;
        match e {
            ProjectError::Read(e) => OpError::Read(e),
            ProjectError::Invalid(report) => OpError::Invalid(report),
            ProjectError::Engine(e) => OpError::Engine(e),
            ProjectError::Runtime(e) => OpError::Runtime(e),
        }
    }
}

/// The resource graph of a valid spec.
pub fn graph(spec: &Spec) -> Result<ResourceGraph, OpError> {
    Ok(resources::graph(spec)?)
}

/// `plan --against OLD`: what would change going from the old spec to the new one.
pub fn plan_against(new: &Spec, old: &Spec, old_name: &str) -> Result<Plan, OpError> {
    let graph = resources::graph(new)?;
    let observed = observed_from(
        resources::desired(old),
        &old.region_names(),
        &new.region_names(),
        old_name,
    );
    Ok(plan(&new.project.value, &graph, &observed))
}

/// The state a deployment of the old revision left, with addresses in the new revision's
/// form (a second region qualifies every address).
fn observed_from(
    old: Vec<crate::graph::Resource>,
    old_regions: &[&str],
    new_regions: &[&str],
    old_name: &str,
) -> ObservedState {
    let requalify = |a| resources::requalify(a, old_regions, new_regions);
    let resources = old.into_iter().map(|mut r| {
        r.address = requalify(r.address);
        r.depends_on = r.depends_on.into_iter().map(requalify).collect();
        r
    });
    ObservedState::from_resources(
        Origin::Spec {
            file: old_name.to_owned(),
        },
        resources,
    )
}

/// A plan between two spec files, with what it was made from: the new revision's report
/// (warnings), spec and resource graph (what an apply of the plan works from), and the
/// observed state it was compared with (what a saved plan must find unchanged).
pub struct AgainstPlan {
    pub plan: Plan,
    pub new: Report,
    pub spec: Spec,
    pub graph: ResourceGraph,
    pub observed: ObservedState,
}

/// `plan -f NEW --against OLD`: loads, checks and expands both files concurrently (they
/// are independent), then plans.
///
/// The old revision only has to parse and pass the structural checks: its lints are not
/// the pull request's business (a pull request that fixes a lint must be plannable). An
/// empty old file is "nothing deployed yet": `--against /dev/null` plans a first deployment.
pub fn plan_against_files(new: &Path, old: &Path) -> Result<AgainstPlan, OpError> {
    let (new_side, old_side) = std::thread::scope(|s| {
        let old_thread = s.spawn(|| -> Result<_, OpError> {
            let text = read_spec(old)?;
            if crate::spec::load::is_blank(&text) {
                return Ok(None);
            }
            let spec = load_structure(old, text)?;
            let regions: Vec<String> = spec.region_names().iter().map(|r| r.to_string()).collect();
            Ok(Some((regions, resources::desired(&spec))))
        });
        let new_side = (|| -> Result<_, OpError> {
            let valid = load_valid(new)?;
            let graph = ResourceGraph::new(resources::desired(&valid.spec))?;
            Ok((valid, graph))
        })();
        let old_side = old_thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (new_side, old_side)
    });
    let (new_valid, graph) = new_side?;
    let observed = match old_side? {
        None => ObservedState::from_resources(
            Origin::Spec {
                file: old.display().to_string(),
            },
            Vec::new(),
        ),
        Some((old_regions, old_resources)) => {
            let from: Vec<&str> = old_regions.iter().map(String::as_str).collect();
            observed_from(
                old_resources,
                &from,
                &new_valid.spec.region_names(),
                &old.display().to_string(),
            )
        }
    };
    Ok(AgainstPlan {
        plan: plan(&new_valid.spec.project.value, &graph, &observed),
        new: new_valid.report,
        spec: new_valid.spec,
        graph,
        observed,
    })
}

fn read_spec(path: &Path) -> Result<String, OpError> {
    Ok(crate::spec::load::read_text(path)?)
}

/// Parses a spec and runs the structural checks only (no lints).
fn load_structure(path: &Path, text: String) -> Result<Spec, OpError> {
    let source = std::sync::Arc::new(text);
    let (spec, diagnostics) = match crate::spec::load::parse(&source) {
        Ok(spec) => {
            let d = crate::spec::check::check(&spec);
            (Some(spec), d)
        }
        Err(d) => (None, vec![*d]),
    };
    let report = Report::new(path, source, diagnostics);
    match spec {
        Some(spec) if !report.has_errors() => Ok(spec),
        _ => Err(OpError::Invalid(Box::new(report))),
    }
}

/// The content digest of every pod's build context, by pod name (reading the files is
/// observation of the local filesystem, done before planning).
fn build_digests(
    spec: &Spec,
    spec_dir: &Path,
) -> Result<std::collections::HashMap<String, String>, OpError> {
    let mut out = std::collections::HashMap::new();
    for p in spec.pods.iter() {
        if let Some(b) = &p.item.build {
            let dockerfile = b.value.dockerfile.as_deref().unwrap_or("Dockerfile");
            let digest =
                crate::engine::context::digest(&spec_dir.join(&b.value.context), dockerfile)?;
            out.insert(p.name.value.clone(), digest);
        }
    }
    Ok(out)
}

/// A plan against the live engines, with the number of engine requests it took.
pub struct LivePlan {
    pub plan: Plan,
    pub report: Report,
    pub requests: u64,
    /// With the facts it relied on, to be written by `plan --out FILE`.
    pub saved: Option<SavedPlan>,
}

/// `plan` without `--against`: observes every region's engine, then plans; with `save`,
/// gathers the facts for a saved plan too.
pub fn plan_live(path: &Path, opts: &Opts, save: bool) -> Result<LivePlan, OpError> {
    let session = Session::open(path, Goal::Spec, opts)?;
    let saved = if save {
        Some(session.saved_plan()?)
    } else {
        None
    };
    let requests = session.engines.values().map(|e| e.requests()).sum();
    Ok(LivePlan {
        report: session.warnings(),
        plan: session.plan,
        requests,
        saved,
    })
}

/// What a session converges to: the spec, or nothing (`destroy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    Spec,
    Nothing,
}

/// A spec, its engines (connected), what they hold, and the plan between them: what
/// `apply` shows, asks about, and then carries out.
pub struct Session {
    runtime: tokio::runtime::Runtime,
    engines: std::collections::HashMap<String, crate::engine::Engine>,
    pub spec: Spec,
    pub report: Report,
    spec_dir: std::path::PathBuf,
    graph: ResourceGraph,
    observed: ObservedState,
    pub plan: Plan,
    secrets: crate::secrets::files::Inspection,
    /// Backup stores berth may not use: refused by the pre-flight.
    store_problems: Vec<crate::diag::Diagnostic>,
    pub state: crate::state::StateDir,
    lock: Option<crate::state::lock::Lock>,
    /// The spec file (absolute) and the text that was planned.
    spec_path: std::path::PathBuf,
    spec_text: String,
    command: String,
    goal: Goal,
}

/// How a session is opened: which state directory, whether it takes the project's lock,
/// and which spec it converges to.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// `--state-dir`: the project's state directory itself.
    pub state_dir: Option<std::path::PathBuf>,
    /// Take the lock for this command (`berth apply`, ...); `None` for a read-only plan.
    pub lock: Option<String>,
    /// `--lock-wait`: how long to wait for another holder.
    pub lock_wait: Option<std::time::Duration>,
    /// Converge to this revision's spec, its images pinned by id (`berth rollback`).
    pub revision: Option<u64>,
}

use crate::apply::journal::Kind;

impl Session {
    /// Loads the spec, takes the lock (when asked), checks for an interrupted apply, reads
    /// the local facts (build contexts, secret files), connects to every region's engine,
    /// observes and plans.
    pub fn open(path: &Path, goal: Goal, opts: &Opts) -> Result<Session, OpError> {
        let current = load_valid(path)?;
        let state = StateDir::locate(&current.spec.project.value, opts.state_dir.as_deref());
        let lock = match &opts.lock {
            Some(command) => Some(crate::state::lock::acquire(
                &state,
                &current.spec.project.value,
                command,
                opts.lock_wait,
            )?),
            None => None,
        };
        let mut notes = Vec::new();
        if let Some(l) = lock.as_ref().and_then(|l| l.stale.as_ref()) {
            notes.push(format!(
                "took over a stale lock left by {l}, which is no longer running"
            ));
        }
        let mut mode = if lock.is_some() {
            crate::observe::Observe::Tidy
        } else {
            crate::observe::Observe::Strict
        };
        for kind in [Kind::Apply, Kind::Restore] {
            let Some(m) = crate::apply::journal::read_kind(&state, kind)? else {
                continue;
            };
            let held = crate::state::lock::holder(&state).filter(|_| lock.is_none());
            match held {
                // Someone is applying (or restoring) right now: this read-only plan may be
                // out of date. A restore's own apply (bringing its pods back) is one too.
                Some(h) => {
                    notes.push(format!("an apply is in progress: {h}"));
                    mode = crate::observe::Observe::DuringApply;
                }
                None => {
                    return Err(OpError::Interrupted {
                        project: current.spec.project.value.clone(),
                        detail: interrupted_detail(&m),
                    });
                }
            }
        }
        // The spec to converge to: the file, or a recorded revision of it.
        let revision = match opts.revision {
            Some(n) => Some(crate::state::revisions::load(&state, n)?),
            None => None,
        };
        let (valid, spec_path, spec_text) = match &revision {
            None => {
                // The text as loaded (the report holds it): the file is read once.
                let text = current.report.source.to_string();
                let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                (current, abs, text)
            }
            Some(r) => {
                let abs = std::path::PathBuf::from(&r.spec_path);
                let loaded = crate::spec::load::load_str(&abs, r.spec_text.clone());
                let report = loaded.report;
                match loaded.spec {
                    Some(spec) if !report.has_errors() => {
                        (Valid { spec, report }, abs, r.spec_text.clone())
                    }
                    _ => return Err(OpError::Invalid(Box::new(report))),
                }
            }
        };
        // Relative mounts, build contexts and secret files are relative to the spec,
        // wherever berth runs.
        let spec_dir = spec_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let secrets = match goal {
            Goal::Spec => crate::observe::secrets::inspect(&valid.spec, &spec_dir),
            // Destroy leaves the secret files alone: they are the repository's.
            Goal::Nothing => crate::secrets::files::Inspection::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(OpError::Runtime)?;
        let mut desired = match goal {
            Goal::Spec => {
                let facts = resources::LocalFacts {
                    build_digests: build_digests(&valid.spec, &spec_dir)?,
                    secret_versions: secrets.versions(),
                };
                resources::desired_with(&valid.spec, &facts)
            }
            Goal::Nothing => Vec::new(),
        };
        // With the lock (apply, destroy, rollback) and no apply to recover, what an
        // interrupted apply left beside a pod's own is removed before observing.
        let seen = runtime.block_on(crate::observe::observe(&crate::observe::Scope {
            spec: &valid.spec,
            spec_path: &spec_path,
            spec_dir: &spec_dir,
            state_dir: &state.path,
            applied: crate::state::revisions::applied_spec(&state).as_ref(),
            desired: &desired,
            secrets: &secrets,
            local: goal == Goal::Spec,
            mode,
        }))?;
        let (engines, observed, store_problems) = (seen.engines, seen.state, seen.store_problems);
        notes.extend(seen.notes);
        if let Some(r) = &revision {
            let now = runtime.block_on(resolve_images(&desired, &valid.spec, &engines));
            pin_images(&mut desired, r, &observed, &now);
        }
        let unusable: Vec<&str> = secrets.unusable(&valid.spec).collect();
        crate::observe::secrets::hold_unusable(&mut desired, &observed, &unusable);
        let graph = ResourceGraph::new(desired)?;
        let plan = plan(&valid.spec.project.value, &graph, &observed);
        let mut report = valid.report;
        for n in notes {
            report
                .diagnostics
                .push(crate::diag::Diagnostic::warning("berth::state", n));
        }
        Ok(Session {
            runtime,
            engines,
            spec: valid.spec,
            report,
            spec_dir,
            graph,
            observed,
            plan,
            secrets,
            store_problems,
            state,
            lock,
            spec_path,
            spec_text,
            command: opts.lock.clone().unwrap_or_else(|| "berth plan".into()),
            goal,
        })
    }

    /// The pre-flight: `Err` with every secrets and store problem when apply must not go on, then
    /// the pod changes against their engine and this host (`apply::preflight_host`).
    pub fn preflight(&self) -> Result<(), OpError> {
        if self.secrets.problems.is_empty() && self.store_problems.is_empty() {
            let changes: Vec<&crate::plan::Change> = self.plan.changes.iter().collect();
            self.runtime.block_on(crate::apply::preflight_host(
                &self.spec,
                &changes,
                &self.engines,
            ))?;
            return Ok(());
        }
        let mut problems = self.secrets.problems.clone();
        problems.extend(self.store_problems.iter().cloned());
        Err(OpError::Preflight(Box::new(Report::new(
            &self.report.path,
            self.report.source.clone(),
            problems,
        ))))
    }

    /// The spec's warnings, with the secrets pre-flight problems as warnings (what `plan`
    /// shows: a plan can be read where the secrets cannot be decrypted).
    pub fn warnings(&self) -> Report {
        let mut diagnostics = self.report.diagnostics.clone();
        let problems = self.secrets.problems.iter().chain(&self.store_problems);
        diagnostics.extend(problems.cloned().map(|mut d| {
            d.severity = crate::diag::Severity::Warning;
            d
        }));
        Report::new(&self.report.path, self.report.source.clone(), diagnostics)
    }

    /// Carries out the plan under the journal; `progress` receives a line per step. A
    /// successful apply that changed something is recorded as the next revision.
    pub fn apply(
        &self,
        options: crate::apply::Options,
        progress: &mut dyn FnMut(&crate::apply::Event),
    ) -> Result<crate::apply::Applied, OpError> {
        use crate::{apply::journal, state::revisions};
        // Data rollback points first: a backup of every volume a replaced pod owns, when
        // the backup says `before_apply: true`. A failure here stops the apply before any
        // change.
        let before = self.backups_before_apply();
        if !before.is_empty() {
            let backups =
                crate::backup::ops::Backups::open(&self.spec_path, Some(&self.state.path))?;
            for name in before {
                let (m, _) = backups
                    .run(&name, false)
                    .map_err(|e| before_apply_failed(&name, e))?;
                progress(&crate::apply::Event {
                    address: Some(format!("backup.{name}")),
                    status: crate::apply::Status::Done,
                    message: format!("  backup.{name}: taken before the apply ({})", m.id),
                });
            }
        }
        let from = revisions::latest(&self.state)?;
        let spec_sha256 = sha256_hex(self.spec_text.as_bytes());
        let journal = journal::Journal::begin(
            &self.state,
            journal::Record::Begin {
                command: self.command.clone(),
                project: self.spec.project.value.clone(),
                spec: self.spec_path.display().to_string(),
                spec_sha256: spec_sha256.clone(),
                spec_text: self.spec_text.clone(),
                from_revision: from,
                revision: from + 1,
                at: crate::state::now(),
                restore: None,
            },
        )?;
        let interrupted = std::sync::atomic::AtomicBool::new(false);
        let inputs = crate::apply::Inputs {
            spec: &self.spec,
            spec_dir: &self.spec_dir,
            spec_path: &self.spec_path,
            graph: &self.graph,
            observed: &self.observed,
            engines: &self.engines,
            secrets: &self.secrets,
            state_dir: &self.state.path,
            journal,
            interrupted: &interrupted,
        };
        let mut applied = self.runtime.block_on(async {
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
        if applied.changed > 0 {
            let images = self
                .runtime
                .block_on(deployed_images(&self.spec, &self.engines))?;
            let secrets = crate::observe::secrets::inspect(&self.spec, &self.spec_dir)
                .files
                .into_iter()
                .map(|(name, f)| (name, f.fingerprint))
                .collect();
            revisions::record(
                &self.state,
                &revisions::Revision {
                    revision: from + 1,
                    at: crate::state::now(),
                    who: crate::state::who(),
                    command: self.command.clone(),
                    spec_path: self.spec_path.display().to_string(),
                    spec_sha256,
                    spec_text: self.spec_text.clone(),
                    images,
                    secrets,
                    summary: self.plan.summary.clone().into(),
                    destroyed: self.goal == Goal::Nothing,
                },
            )?;
            applied.revision = Some(from + 1);
        }
        // Recorded first, then ended: killed in between, `recover` finds the revision.
        if let Some(j) = applied.journal.take() {
            j.end()?;
        }
        Ok(applied)
    }

    /// This session's plan, saved with the facts it was made from (`berth plan --out`).
    pub fn saved_plan(&self) -> Result<SavedPlan, OpError> {
        Ok(SavedPlan {
            format_version: SAVED_PLAN_FORMAT,
            project: self.spec.project.value.clone(),
            spec: self.spec_path.display().to_string(),
            facts: self.facts()?,
            plan: self.plan.clone(),
        })
    }

    /// What moved on since `saved` was made (one line each); empty when it still holds.
    pub fn stale_facts(&self, saved: &SavedPlan) -> Result<Vec<String>, OpError> {
        Ok(saved.stale_facts(&self.facts()?, &self.spec.project.value, &self.plan))
    }

    /// Every observed fact the plan relies on, by name, each as a short text: the spec's
    /// hash; each container's id, configuration hash, state and image; each secret file's
    /// fingerprint, mode and recorded recipients; the identity's mode and key; each build
    /// context's digest; the id each image reference resolves to. Never a secret value.
    pub fn facts(&self) -> Result<std::collections::BTreeMap<String, String>, OpError> {
        let mut f = std::collections::BTreeMap::new();
        f.insert(
            "spec".to_owned(),
            format!("sha256:{}", &sha256_hex(self.spec_text.as_bytes())[..16]),
        );
        for o in &self.observed.resources {
            if o.address.kind == crate::graph::Kind::Secret {
                continue;
            }
            let config = sha256_hex(
                serde_json::to_string(&o.attrs)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            let state = if o.drift.is_empty() {
                "as configured".to_owned()
            } else {
                o.drift
                    .iter()
                    .map(|d| format!("{} {}", d.field, d.observed))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut v = format!(
                "id {}, config sha256:{}, {state}",
                crate::apply::undo::short(o.id.as_deref().unwrap_or("-")),
                &config[..12]
            );
            if let Some(image) = &o.image {
                v.push_str(&format!(", image {}", short_image(image)));
            }
            f.insert(o.address.to_string(), v);
        }
        for (name, file) in &self.secrets.files {
            f.insert(
                format!("secret.{name} file"),
                format!(
                    "{}, mode {:04o}, recipients {}",
                    file.fingerprint,
                    file.mode,
                    file.recorded.as_ref().map_or_else(
                        || crate::secrets::files::NOT_RECORDED.to_owned(),
                        |r| r.join(" ")
                    )
                ),
            );
        }
        if self.spec.secrets.iter().next().is_some() {
            let path = &self.secrets.identity_path;
            let mode = crate::fsutil::mode_of(path)
                .map_or_else(|_| "missing".to_owned(), |m| format!("mode {m:04o}"));
            let key = self
                .secrets
                .identity
                .as_ref()
                .and_then(|i| i.recipients().first().cloned())
                .unwrap_or_else(|| "unreadable".into());
            f.insert(
                "identity".to_owned(),
                format!("{}, {mode}, key {key}", path.display()),
            );
        }
        let mut images = std::collections::BTreeSet::new();
        for r in self.graph.in_order() {
            if let Some(b) = r.attrs.get("build.image") {
                f.insert(format!("{} build", r.address), b.clone());
            } else if let Some(i) = r.attrs.get("image") {
                let region = r
                    .address
                    .region
                    .clone()
                    .unwrap_or_else(|| self.spec.region_names()[0].to_owned());
                images.insert((i.clone(), region));
            }
        }
        let resolved = self.runtime.block_on(async {
            let mut out = Vec::new();
            for (image, region) in &images {
                let Some(engine) = self.engines.get(region) else {
                    continue;
                };
                let id = match engine.image_present(image).await? {
                    true => short_image(&engine.image_id(image).await?).to_owned(),
                    false => "absent (to be pulled)".to_owned(),
                };
                out.push((format!("image {image}@{region}"), id));
            }
            Ok::<_, OpError>(out)
        })?;
        f.extend(resolved);
        Ok(f)
    }

    /// The backups with `before_apply: true` whose data a change of this plan touches: a
    /// pod replaced (or deleted) that mounts the backup's volume, or that it runs `exec` in.
    pub fn backups_before_apply(&self) -> Vec<String> {
        use crate::plan::Action;
        let touched: Vec<&crate::spec::Pod> = self
            .plan
            .changes
            .iter()
            .filter(|c| c.address.kind == crate::graph::Kind::Pod)
            .filter(|c| matches!(c.action, Action::Replace | Action::Delete))
            .filter_map(|c| self.spec.pods.get(&c.address.name))
            .collect();
        let mut out = Vec::new();
        for b in self.spec.backups.iter().filter(|b| b.item.before_apply) {
            let src = &b.item.source.value;
            let by_volume = src.volume.as_ref().is_some_and(|v| {
                touched
                    .iter()
                    .any(|p| p.named_volumes().any(|n| n == v.value))
            });
            let by_pod = src.pod.as_ref().is_some_and(|pod| {
                self.plan.changes.iter().any(|c| {
                    c.address.kind == crate::graph::Kind::Pod
                        && c.address.name == pod.value
                        && matches!(c.action, Action::Replace | Action::Delete)
                })
            });
            if by_volume || by_pod {
                out.push(b.name.value.clone());
            }
        }
        out
    }

    /// The webhook to tell the outcome: `--notify`, else the spec's `notify:`.
    pub fn notify_url(&self, flag: Option<&str>) -> Option<String> {
        flag.map(str::to_owned)
            .or_else(|| self.spec.notify.as_ref().map(|n| n.value.clone()))
    }

    /// The command this session's apply is recorded as (in the journal and the revision),
    /// when it is not the one that took the lock: a restore bringing its pods back.
    pub fn set_command(&mut self, command: String) {
        self.command = command;
    }

    /// The lock this session holds, if any (released when the session is dropped).
    pub fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }
}

/// A backup taken before an apply (`before_apply: true`) that failed: the error says so,
/// and that the apply changed nothing.
fn before_apply_failed(name: &str, e: OpError) -> OpError {
    let why = match e {
        OpError::Backup(crate::backup::BackupError::Failed { why, .. }) => why,
        other => other.to_string(),
    };
    OpError::Backup(crate::backup::BackupError::Failed {
        name: name.to_owned(),
        why: format!(
            "the backup this apply takes first (`before_apply: true`) failed, so the apply stopped before any change: {why}"
        ),
        help: format!(
            "fix the backup (`berth backup run {name}` shows the same), or set `before_apply: false` to apply without it"
        ),
    })
}

/// What an unfinished journal says, for the diagnostic.
pub(crate) fn interrupted_detail(m: &crate::apply::journal::Machine) -> String {
    let what = match &m.begin {
        Some(crate::apply::journal::Record::Begin {
            command,
            revision,
            at,
            ..
        }) => format!(
            "`{command}` towards revision {revision}, started {}",
            crate::state::format_time(*at)
        ),
        _ => "an apply".into(),
    };
    let phase = if m.commit.is_some() {
        "after its gates had passed"
    } else {
        "before it finished"
    };
    format!("{what}, stopped {phase}")
}

/// The image id each pod's reference (its `image`, or the tag of its `build`) names on its
/// engine now, by address; a reference that is not there is left out.
async fn resolve_images(
    desired: &[crate::graph::Resource],
    spec: &Spec,
    engines: &std::collections::HashMap<String, crate::engine::Engine>,
) -> std::collections::HashMap<String, String> {
    let primary = spec.region_names()[0].to_owned();
    let mut out = std::collections::HashMap::new();
    for r in desired
        .iter()
        .filter(|r| r.address.kind == crate::graph::Kind::Pod)
    {
        let Some(reference) = r.attrs.get("build.image").or_else(|| r.attrs.get("image")) else {
            continue;
        };
        let region = r.address.region.clone().unwrap_or_else(|| primary.clone());
        let Some(engine) = engines.get(&region) else {
            continue;
        };
        if let Ok(true) = engine.image_present(reference).await
            && let Ok(id) = engine.image_id(reference).await
        {
            out.insert(r.address.to_string(), id);
        }
    }
    out
}

/// Pins every pod of a revision to the image id it ran, where the live container runs
/// another (or none): the same bits as then, whatever the tag points at now. Where the
/// spec's reference still names those very bits (`now`), it stays as it is, so that the
/// pod is labelled exactly as an apply of the spec labels it (no needless replace after).
fn pin_images(
    desired: &mut [crate::graph::Resource],
    revision: &crate::state::revisions::Revision,
    observed: &ObservedState,
    now: &std::collections::HashMap<String, String>,
) {
    for r in desired
        .iter_mut()
        .filter(|r| r.address.kind == crate::graph::Kind::Pod)
    {
        let Some(id) = revision.images.get(&r.address.to_string()) else {
            continue;
        };
        let key = r.address.match_key();
        let live = observed
            .resources
            .iter()
            .find(|o| o.address.match_key() == key);
        let field = if r.attrs.contains_key("build.image") {
            "build.image"
        } else {
            "image"
        };
        match live {
            // Already the same bits: as the container recorded them (a tag or the id), so
            // that nothing changes.
            Some(o) if o.image.as_ref() == Some(id) => {
                if let Some(v) = o.attrs.get(field) {
                    r.attrs.insert(field.to_owned(), v.clone());
                }
            }
            // No container (a restore removed it), or another one: the spec's reference
            // still names the recorded bits.
            _ if now.get(&r.address.to_string()) == Some(id) => {}
            _ => {
                r.attrs.insert(field.to_owned(), id.clone());
            }
        }
    }
}

/// The image id each pod instance runs now, by address (from the containers' labels).
async fn deployed_images(
    spec: &Spec,
    engines: &std::collections::HashMap<String, crate::engine::Engine>,
) -> Result<std::collections::BTreeMap<String, String>, OpError> {
    let names = spec.region_names();
    let mut out = std::collections::BTreeMap::new();
    for name in &names {
        let Some(engine) = engines.get(*name) else {
            continue;
        };
        let shown = resources::shown_region(&names, name);
        for c in engine.containers(&spec.project.value).await? {
            let (Some(address), Some(image)) = (
                c.labels.get(crate::engine::labels::RESOURCE),
                c.labels.get(crate::engine::labels::IMAGE),
            ) else {
                continue;
            };
            if crate::apply::container::is_transient(&c.name) {
                continue; // set aside or a candidate, not what serves
            }
            let mut a: crate::graph::Address = match address.parse() {
                Ok(a) => a,
                Err(_) => continue,
            };
            a.region = shown.map(str::to_owned);
            out.insert(a.to_string(), image.clone());
        }
    }
    Ok(out)
}

// `berth recover` and the one unwind live in apply (`apply::recover`); what they need
// from sessions (applying a revision again, connecting, the images deployed) is below.
pub use crate::apply::{recover::Recovered, unwind::unwind};

/// Applies a recorded revision again, through its gates, recorded as `command`: the pods a
/// restore removed come back. The caller holds the project's lock.
pub fn reapply(
    spec_path: &Path,
    state_dir: Option<&Path>,
    revision: u64,
    command: &str,
) -> Result<(), OpError> {
    let opts = Opts {
        state_dir: state_dir.map(Path::to_path_buf),
        lock: None,
        lock_wait: None,
        revision: Some(revision),
    };
    let mut session = Session::open(spec_path, Goal::Spec, &opts)?;
    session.set_command(command.to_owned());
    session.preflight()?;
    session.apply(crate::apply::Options::default(), &mut |e| {
        eprintln!("{}", e.message)
    })?;
    Ok(())
}

/// Where an unwind applies a revision again (a restore's `Reapply`): through a session.
pub struct UnwindCtx<'a> {
    pub spec_path: &'a Path,
    pub state_dir: Option<&'a Path>,
    /// What the revision applied again is recorded as.
    pub command: &'a str,
}

impl crate::apply::recover::Reapply for UnwindCtx<'_> {
    fn reapply(&self, revision: u64) -> Result<(), String> {
        reapply(self.spec_path, self.state_dir, revision, self.command).map_err(|e| e.to_string())
    }
}

impl crate::apply::recover::Host for UnwindCtx<'_> {
    type Error = OpError;
    fn connect(
        &self,
        runtime: &tokio::runtime::Runtime,
        spec: &Spec,
    ) -> Result<std::collections::HashMap<String, crate::engine::Engine>, OpError> {
        Ok(runtime.block_on(connect_engines(spec))?)
    }
    fn deployed_images(
        &self,
        runtime: &tokio::runtime::Runtime,
        spec: &Spec,
        engines: &std::collections::HashMap<String, crate::engine::Engine>,
    ) -> Result<std::collections::BTreeMap<String, String>, OpError> {
        runtime.block_on(deployed_images(spec, engines))
    }
    fn unfinished(project: String, detail: String) -> OpError {
        OpError::Interrupted { project, detail }
    }
    fn runtime(e: std::io::Error) -> OpError {
        OpError::Runtime(e)
    }
}

/// `berth recover` (see [`crate::apply::recover::recover`]), with sessions for its
/// `Reapply` undos.
pub fn recover(path: &Path, state_dir: Option<&Path>) -> Result<Recovered, OpError> {
    let valid = load_valid(path)?;
    let spec_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let host = UnwindCtx {
        spec_path: &spec_path,
        state_dir,
        command: "berth recover",
    };
    crate::apply::recover::recover(&valid.spec, state_dir, &host)
}

pub use crate::plan::saved::{SAVED_PLAN_FORMAT, SNAPSHOT_FORMAT, SavedPlan, Snapshot};

/// `berth state snapshot`.
pub fn snapshot(path: &Path, opts: &Opts) -> Result<Snapshot, OpError> {
    let session = Session::open(path, Goal::Spec, opts)?;
    Ok(Snapshot {
        format_version: SNAPSHOT_FORMAT,
        project: session.spec.project.value.clone(),
        host: crate::state::hostname(),
        taken_at: crate::state::now(),
        observed: session.observed,
    })
}

/// `berth plan --state FILE`: the spec (with this machine's build contexts and secret
/// files) planned against a snapshot, without any engine.
pub fn plan_against_snapshot(path: &Path, snapshot: &Path) -> Result<(Plan, Report), OpError> {
    let valid = load_valid(path)?;
    let snap = Snapshot::read(snapshot, &valid.spec.project.value)?;
    let spec_dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let secrets = crate::observe::secrets::inspect(&valid.spec, &spec_dir);
    let facts = resources::LocalFacts {
        build_digests: build_digests(&valid.spec, &spec_dir)?,
        secret_versions: secrets.versions(),
    };
    let mut desired = resources::desired_with(&valid.spec, &facts);
    let unusable: Vec<&str> = secrets.unusable(&valid.spec).collect();
    crate::observe::secrets::hold_unusable(&mut desired, &snap.observed, &unusable);
    let graph = ResourceGraph::new(desired)?;
    let plan = plan(&valid.spec.project.value, &graph, &snap.observed);
    Ok((plan, valid.report))
}
