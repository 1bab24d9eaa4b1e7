//! The sequencer behind the commands: [`Session::open`] runs the pipeline in order (load
//! the spec, take the lock, choose what to converge to, work out the desired resources,
//! observe, plan), and a session then carries its plan out (`converge`) or saves it with
//! the facts it relies on (`facts`). Plans against another revision or a snapshot are
//! in `against`; the images a session pins and records in `images`. Each operation
//! takes paths and options and returns data: printing is the command's business.

use std::path::Path;

use crate::diag::Report;
use crate::graph::ResourceGraph;
use crate::observe::ObservedState;
use crate::plan::{Plan, plan};
use crate::project::Project;
use crate::resources;
use crate::spec::Spec;
use crate::state::StateDir;

pub use crate::error::OpError;
use crate::error::interrupted_detail;

mod against;
mod converge;
pub mod drill;
mod exec;
mod facts;
mod images;
mod logs;
mod profiles;
mod restart;
mod status;
mod terminal;
pub use exec::{ExecRequest, exec};
pub use logs::{LogsRequest, logs};
pub use status::{CheckResult, Instance, STATUS_FORMAT, Status, check, status};

use crate::project::Valid;
pub use crate::project::load_valid;
pub use against::{
    AgainstPlan, graph, plan_against, plan_against_files, plan_against_snapshot, read_saved_plan,
    snapshot,
};
use images::{build_digests, deployed_images, pin_images, resolve_images};

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
    let requests = session.project.engines.values().map(|e| e.requests()).sum();
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
    /// The spec (the file, or the revision converged to), where it lives, its state
    /// directory, its engines (connected as they were observed) and the identity.
    pub project: crate::project::Project,
    graph: ResourceGraph,
    observed: ObservedState,
    pub plan: Plan,
    secrets: crate::secrets::files::Inspection,
    /// Backup stores berth may not use: refused by the pre-flight.
    store_problems: Vec<crate::diag::Diagnostic>,
    /// The project's lock, when the command took it: held while the session lives, released
    /// when it drops.
    _lock: Option<crate::state::lock::Lock>,
    /// The text that was planned.
    spec_text: String,
    command: String,
    goal: Goal,
    /// `--region`: the regions planned and applied (all when empty).
    regions: Vec<String>,
    /// The profiles chosen: `--profile`, or those of the revision rolled back to.
    profiles: Vec<String>,
    /// Whether a successful apply of this session is recorded as a revision (not a
    /// restart's).
    record_revision: bool,
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
    /// `--region`: plan and apply only these regions (all when empty).
    pub regions: Vec<String>,
    /// `--profile`: the profiles whose pods are planned (besides the pods without one).
    pub profiles: Vec<String>,
    /// Every profile of the spec (`berth restart`, which may restart any pod that runs).
    pub every_profile: bool,
    /// Plan the scratch spec of a restore drill instead of the file's ([`drill`]).
    pub drill: Option<drill::Scratch>,
}

use crate::apply::journal::Kind;

impl Session {
    /// The pipeline, in order: load the spec, take the lock (when asked; refused while an
    /// apply or restore waits for `berth recover`), choose what to converge to (the file,
    /// or a recorded revision), work out the desired resources (with this machine's build
    /// contexts and secret files), observe, and plan.
    pub fn open(path: &Path, goal: Goal, opts: &Opts) -> Result<Session, OpError> {
        let mut current = load_valid(path)?;
        if let Some(scratch) = &opts.drill {
            drill::derive(&mut current.spec, scratch);
        }
        known_regions(&current.spec, &opts.regions)?;
        let state = StateDir::locate(&current.spec.project.value, opts.state_dir.as_deref());
        let held = Held::take(&current.spec, &state, opts)?;
        profiles::known(&current.spec, &opts.profiles)?;
        let mut target = Target::choose(current, path, &state, opts.revision)?;
        // A rollback brings back the pods of the profiles its revision was applied with.
        let chosen = match &target.revision {
            Some(r) => r.profiles.clone(),
            None if opts.every_profile => profiles::every(&target.valid.spec),
            None => opts.profiles.clone(),
        };
        let left_out = match goal {
            Goal::Spec => profiles::leave_out(&mut target.valid.spec, &chosen),
            Goal::Nothing => Vec::new(),
        };
        let runtime = crate::engine::runtime().map_err(OpError::Runtime)?;
        // A destroy desires nothing and leaves the secret files alone (the repository's).
        let (secrets, desired) = match goal {
            Goal::Spec => desire(&target.valid.spec, &target.spec_dir)?,
            Goal::Nothing => Default::default(),
        };
        // What only the spec says of a backup (`before_apply`) is observed as applied.
        let applied = match goal {
            Goal::Spec => crate::state::revisions::applied_spec(&state),
            Goal::Nothing => None,
        };
        let observing = std::time::Instant::now();
        let seen = runtime.block_on(crate::observe::observe(&crate::observe::Scope {
            spec: &target.valid.spec,
            spec_path: &target.spec_path,
            spec_dir: &target.spec_dir,
            state_dir: &state.path,
            applied: applied.as_ref(),
            desired: &desired,
            secrets: &secrets,
            local: goal == Goal::Spec,
            mode: held.mode,
            regions: &opts.regions,
        }))?;
        let mut seen = seen;
        tracing::debug!(
            resources = seen.state.resources.len(),
            ms = observing.elapsed().as_millis() as u64,
            "observed"
        );
        profiles::unobserve(&mut seen.state, &left_out);
        let mut desired = settle(desired, &target, &secrets, &seen, &runtime);
        if !opts.regions.is_empty() {
            only_regions(&mut desired, &mut seen.state, &opts.regions);
        }
        let graph = ResourceGraph::new(desired)?;
        let mut plan = plan(&target.valid.spec.project.value, &graph, &seen.state);
        if goal == Goal::Nothing {
            crate::plan::as_destroy(&mut plan);
        }
        let notes = held.notes.into_iter().chain(seen.notes);
        let mut report = target.valid.report;
        report
            .diagnostics
            .extend(notes.map(|n| crate::diag::Diagnostic::warning("berth::state", n)));
        // Warnings of the secrets (a certificate that expires soon), for plan and apply.
        report.diagnostics.extend(secrets.notices.iter().cloned());
        let valid = Valid {
            spec: target.valid.spec,
            report,
        };
        Ok(Session {
            project: Project::assemble(valid, target.spec_path, state, runtime, seen.engines, None),
            graph,
            observed: seen.state,
            plan,
            secrets,
            store_problems: seen.store_problems,
            _lock: held.lock,
            spec_text: target.spec_text,
            command: opts.lock.clone().unwrap_or_else(|| "berth plan".into()),
            goal,
            regions: opts.regions.clone(),
            profiles: chosen,
            record_revision: true,
        })
    }

    /// The pre-flight: `Err` with every secrets and store problem when apply must not go on, then
    /// the pod changes against their engine and this host (`apply::preflight_host`).
    pub fn preflight(&self) -> Result<(), OpError> {
        if self.secrets.problems.is_empty() && self.store_problems.is_empty() {
            let changes: Vec<&crate::plan::Change> = self.plan.changes.iter().collect();
            self.project.runtime.block_on(crate::apply::preflight_host(
                &self.project.spec,
                &changes,
                &self.project.engines,
            ))?;
            return Ok(());
        }
        let mut problems = self.secrets.problems.clone();
        problems.extend(self.store_problems.iter().cloned());
        Err(OpError::Preflight(Box::new(Report::new(
            &self.project.report.path,
            self.project.report.source.clone(),
            problems,
        ))))
    }

    /// The spec's warnings, with the secrets pre-flight problems as warnings (what `plan`
    /// shows: a plan can be read where the secrets cannot be decrypted).
    pub fn warnings(&self) -> Report {
        let mut diagnostics = self.project.report.diagnostics.clone();
        let problems = self.secrets.problems.iter().chain(&self.store_problems);
        diagnostics.extend(problems.cloned().map(|mut d| {
            d.severity = crate::diag::Severity::Warning;
            d
        }));

        Report::new(
            &self.project.report.path,
            self.project.report.source.clone(),
            diagnostics,
        )
    }

    /// The webhook to tell the outcome: `--notify` (berth's JSON), else the spec's
    /// `notify:`.
    pub fn notify_hook(&self, flag: Option<&str>) -> Option<crate::notify::Hook> {
        let flag = flag.map(|url| crate::notify::Hook {
            url: url.to_owned(),
            format: crate::notify::Format::Json,
        });
        flag.or_else(|| self.project.spec.notify.as_ref().map(|n| n.value.hook()))
    }

    /// The command this session's apply is recorded as (in the journal and the revision),
    /// when it is not the one that took the lock: a restore bringing its pods back.
    pub fn set_command(&mut self, command: String) {
        self.command = command;
    }
}

/// The project's lock (when the command takes it), what taking it said, and how
/// observation treats two containers claiming one pod as a result.
struct Held {
    lock: Option<crate::state::lock::Lock>,
    notes: Vec<String>,
    mode: crate::observe::Observe,
}

impl Held {
    /// Takes the lock `opts` asks for. An unfinished journal refuses the command, unless
    /// another command holds the lock and is applying right now (a read-only plan may
    /// then be out of date, and says so).
    fn take(spec: &Spec, state: &StateDir, opts: &Opts) -> Result<Held, OpError> {
        use crate::observe::Observe;
        let project = &spec.project.value;
        let lock = match &opts.lock {
            Some(command) => Some(crate::state::lock::acquire(
                state,
                project,
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
        // With the lock (apply, destroy, rollback) and no apply to recover, what an
        // interrupted apply left beside a pod's own is removed before observing.
        let mut mode = if lock.is_some() {
            Observe::Tidy
        } else {
            Observe::Strict
        };
        for kind in [Kind::Apply, Kind::Restore] {
            let Some(m) = crate::apply::journal::read_kind(state, kind)? else {
                continue;
            };
            match crate::state::lock::holder(state).filter(|_| lock.is_none()) {
                // Someone is applying (or restoring) right now: this read-only plan may be
                // out of date. A restore's own apply (bringing its pods back) is one too.
                Some(h) => {
                    notes.push(format!("an apply is in progress: {h}"));
                    mode = Observe::DuringApply;
                }
                None => {
                    return Err(OpError::Interrupted {
                        project: project.clone(),
                        detail: interrupted_detail(&m),
                    });
                }
            }
        }
        Ok(Held { lock, notes, mode })
    }
}

/// What a session converges to: the spec file as loaded, or a recorded revision of it
/// (`berth rollback`), with where it lives and its text.
struct Target {
    valid: Valid,
    /// The spec file (absolute), and its directory: relative mounts, build contexts and
    /// secret files are relative to it, wherever berth runs.
    spec_path: std::path::PathBuf,
    spec_dir: std::path::PathBuf,
    /// The text that is planned (and recorded with the revision).
    spec_text: String,
    revision: Option<crate::state::revisions::Revision>,
}

impl Target {
    fn choose(
        current: Valid,
        path: &Path,
        state: &StateDir,
        revision: Option<u64>,
    ) -> Result<Target, OpError> {
        let (valid, spec_path, spec_text, revision) = match revision {
            None => {
                // The text as loaded (the report holds it): the file is read once.
                let text = current.report.source.to_string();
                let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                (current, abs, text, None)
            }
            Some(n) => {
                let r = crate::state::revisions::load(state, n)?;
                let abs = std::path::PathBuf::from(&r.spec_path);
                let loaded = crate::spec::load::load_str(&abs, r.spec_text.clone());
                let report = loaded.report;
                let valid = match loaded.spec {
                    Some(spec) if !report.has_errors() => Valid { spec, report },
                    _ => return Err(OpError::Invalid(Box::new(report))),
                };
                (valid, abs, r.spec_text.clone(), Some(r))
            }
        };
        let spec_dir = crate::project::spec_dir_of(&spec_path);
        Ok(Target {
            valid,
            spec_path,
            spec_dir,
            spec_text,
            revision,
        })
    }
}

/// `--region NAME`: each name one of the spec's regions, or a refusal naming them.
fn known_regions(spec: &Spec, chosen: &[String]) -> Result<(), OpError> {
    let known = spec.region_names();
    match chosen.iter().find(|c| !known.contains(&c.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(OpError::Refused {
            message: format!(
                "`--region {unknown}`: the spec has no region `{unknown}`; nothing was planned or changed"
            ),
            help: format!(
                "name one of the spec's regions: {}",
                known
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// `--region`: the desired and observed resources of the chosen regions only (and those
/// of no region: the spec's secret files on this machine). A dependency on a pod of a
/// region left out (`depends_on: [db@iad]` with `--region ord`) is taken as met: that
/// region is not touched.
fn only_regions(
    desired: &mut Vec<crate::graph::Resource>,
    observed: &mut ObservedState,
    chosen: &[String],
) {
    let keep = |a: &crate::graph::Address| {
        a.region
            .as_deref()
            .is_none_or(|r| chosen.iter().any(|c| c == r))
    };
    desired.retain(|r| keep(&r.address));
    for r in desired.iter_mut() {
        r.depends_on.retain(|d| keep(d));
    }
    observed.resources.retain(|o| keep(&o.address));
}

/// The secret files as read, and the desired resources with this machine's facts (build
/// context digests, secret versions).
fn desire(
    spec: &Spec,
    spec_dir: &Path,
) -> Result<
    (
        crate::secrets::files::Inspection,
        Vec<crate::graph::Resource>,
    ),
    OpError,
> {
    let secrets = crate::observe::secrets::inspect(spec, spec_dir);
    let facts = resources::LocalFacts {
        build_digests: build_digests(spec, spec_dir)?,
        secret_versions: secrets.versions(),
    };
    let desired = resources::desired_with(spec, &facts);
    Ok((secrets, desired))
}

/// A pod whose secret cannot be decrypted here held as it runs (not planned to change).
fn hold_unusable(
    desired: &mut [crate::graph::Resource],
    spec: &Spec,
    secrets: &crate::secrets::files::Inspection,
    observed: &ObservedState,
) {
    let unusable: Vec<&str> = secrets.unusable(spec).collect();
    crate::observe::secrets::hold_unusable(desired, observed, &unusable);
}

/// The desired resources once observed: a revision's images pinned by id, and a pod
/// whose secret cannot be decrypted here held as it runs (not planned to change).
fn settle(
    mut desired: Vec<crate::graph::Resource>,
    target: &Target,
    secrets: &crate::secrets::files::Inspection,
    seen: &crate::observe::Observation,
    runtime: &tokio::runtime::Runtime,
) -> Vec<crate::graph::Resource> {
    let spec = &target.valid.spec;
    if let Some(r) = &target.revision {
        let now = runtime.block_on(resolve_images(&desired, spec, &seen.engines));
        pin_images(&mut desired, r, &seen.state, &now);
    }
    hold_unusable(&mut desired, spec, secrets, &seen.state);
    desired
}

// `berth recover` and the one unwind live in apply (`apply::recover`); what they need
// from sessions (applying a revision again, connecting, the images deployed) is below.
pub use crate::apply::recover::Recovered;

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
        ..Default::default()
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
    fn reapply(&self, revision: u64) -> Result<(), crate::apply::recover::ReapplyError> {
        Ok(reapply(
            self.spec_path,
            self.state_dir,
            revision,
            self.command,
        )?)
    }
}

impl crate::apply::recover::Host for UnwindCtx<'_> {
    type Error = OpError;
    fn connect(
        &self,
        runtime: &tokio::runtime::Runtime,
        spec: &Spec,
        only: &[String],
    ) -> Result<std::collections::HashMap<String, crate::engine::Engine>, OpError> {
        let spec_dir = crate::project::spec_dir_of(self.spec_path);
        Ok(runtime.block_on(crate::observe::targets::connect_all(spec, &spec_dir, only))?)
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

pub use crate::plan::saved::SavedPlan;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Spec {
        crate::spec::load::checked_for_tests(text)
    }

    const TWO: &str = "version: 1
project: shop
regions:
  iad: { engine: \"unix:///run/iad.sock\", primary: true }
  ord: { engine: \"unix:///run/ord.sock\" }
secrets:
  key: { file: key.age, recipients: [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"] }
pods:
  db:
    image: db:1
    regions: [iad]
  api:
    image: api:1
    regions: [ord]
    depends_on: [db@iad]
";

    #[test]
    fn a_region_left_out_is_neither_planned_nor_waited_for() {
        let s = spec(TWO);
        let mut desired = resources::desired(&s);
        let mut observed = ObservedState {
            origin: crate::observe::Origin::Engines {
                regions: vec!["ord".into()],
            },
            resources: Vec::new(),
            unobserved: Vec::new(),
        };
        only_regions(&mut desired, &mut observed, &["ord".to_owned()]);
        let mut kept: Vec<String> = desired.iter().map(|r| r.address.to_string()).collect();
        kept.sort();
        // `ord`'s, and the secret (not per region); `db@iad` is not waited for.
        assert_eq!(kept, ["network.default@ord", "pod.api@ord", "secret.key"]);
        let graph = ResourceGraph::new(desired).expect("no edge to a region left out");
        assert_eq!(graph.len(), 3);
    }

    #[test]
    fn an_unknown_region_is_refused_with_the_spec_s_names() {
        let s = spec(TWO);
        assert!(known_regions(&s, &["ord".to_owned()]).is_ok());
        let Err(OpError::Refused { message, help }) = known_regions(&s, &["fra".to_owned()]) else {
            panic!("refused");
        };
        assert!(message.contains("no region `fra`"), "{message}");
        assert_eq!(help, "name one of the spec's regions: `iad`, `ord`");
    }
}
