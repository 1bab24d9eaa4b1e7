//! Plans against something other than the live engines: another revision of the spec
//! (`berth plan --against OLD`), or a state snapshot taken on the host (`berth plan --state
//! FILE`, and `berth state snapshot` that writes one).

use std::path::Path;

use super::{Goal, OpError, Opts, Session, load_valid};
use super::{desire, hold_unusable};
use crate::diag::Report;
use crate::graph::ResourceGraph;
use crate::observe::{ObservedState, Origin};
use crate::plan::saved::{SNAPSHOT_FORMAT, Snapshot};
use crate::plan::{Plan, plan};
use crate::project::spec_dir_of;
use crate::resources;
use crate::spec::Spec;

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
/// (warnings) and resource graph, and the observed state it was compared with. Neither
/// revision's parsed spec is kept: each is dropped once its resources are built (at 50,000
/// pods a parsed spec is about 40 MB).
pub struct AgainstPlan {
    pub plan: Plan,
    pub new: Report,
    pub graph: ResourceGraph,
    pub observed: ObservedState,
    /// The old file was empty: everything is planned as a first deployment.
    pub first_deployment: bool,
}

/// `plan -f NEW --against OLD`: loads and checks both files concurrently (they are
/// independent), then expands both and plans.
///
/// The old revision only has to parse and pass the structural checks: its lints are not
/// the pull request's business (a pull request that fixes a lint must be plannable). An
/// empty old file is "nothing deployed yet": `--against /dev/null` plans a first deployment.
///
/// Memory: the two parsed specs and the two sets of resources are never all held at once
/// (the new revision is expanded once the old one's parsed spec is gone), and the memory
/// each parse gives back is used again. glibc's allocator keeps what a thread frees in
/// that thread's arena, for the threads that use the arena after it. So the old revision
/// is read and expanded on a thread of its own while the new one is read and linted here;
/// the new one is then expanded on a new thread, which takes over the finished thread's
/// arena and fills what the old spec left there; and the graph and the plan are made
/// here, in what the new spec leaves. (With the new revision read on the other thread
/// instead, nothing used that arena again: about 10 MB more peak RSS at 50,000 pods.)
/// Under another allocator only the memory differs.
pub fn plan_against_files(new: &Path, old: &Path) -> Result<AgainstPlan, OpError> {
    let (valid, old_side) = std::thread::scope(|s| {
        let old_thread = s.spawn(|| expand_old(old));
        let valid = load_valid(new).map(|mut valid| {
            // The text is only kept for the warnings' snippets: without warnings it goes
            // before the resources are built.
            valid.report.release_unused_source();
            valid
        });
        (valid, join(old_thread))
    });
    // The new revision's errors come first.
    let valid = valid?;
    let old_side = old_side?;
    let desired = std::thread::scope(|s| join(s.spawn(|| resources::desired(&valid.spec))));
    let project = valid.spec.project.value.clone();
    let new_regions = owned_region_names(&valid.spec);
    // The spec's resources are all the plan needs of it: it goes before the graph is built.
    drop(valid.spec);
    let graph = ResourceGraph::new(desired)?;
    let new_regions: Vec<&str> = new_regions.iter().map(String::as_str).collect();
    let first_deployment = old_side.is_none();
    let observed = match old_side {
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
                &new_regions,
                &old.display().to_string(),
            )
        }
    };
    Ok(AgainstPlan {
        plan: plan(&project, &graph, &observed),
        new: valid.report,
        graph,
        observed,
        first_deployment,
    })
}

/// A revision's region names and resources.
type Expanded = (Vec<String>, Vec<crate::graph::Resource>);

/// The old revision's regions and resources; none for an empty file. Its parsed spec is
/// dropped before this returns.
fn expand_old(old: &Path) -> Result<Option<Expanded>, OpError> {
    let text = read_spec(old)?;
    if crate::spec::load::is_blank(&text) {
        return Ok(None);
    }
    let spec = load_structure(old, text)?;
    Ok(Some((owned_region_names(&spec), resources::desired(&spec))))
}

fn join<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn owned_region_names(spec: &Spec) -> Vec<String> {
    spec.region_names().iter().map(|r| r.to_string()).collect()
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

/// `berth state snapshot`.
pub fn snapshot(path: &Path, opts: &Opts) -> Result<Snapshot, OpError> {
    let session = Session::open(path, Goal::Spec, opts)?;
    Ok(Snapshot {
        format_version: SNAPSHOT_FORMAT,
        project: session.project.spec.project.value.clone(),
        host: crate::state::hostname(),
        taken_at: crate::clock::now(),
        observed: session.observed,
    })
}

/// `berth plan --state FILE`: the spec (with this machine's build contexts and secret
/// files) planned against a snapshot, without any engine.
/// `profiles` are chosen as `plan --profile` chooses them.
pub fn plan_against_snapshot(
    path: &Path,
    snapshot: &Path,
    profiles: &[String],
) -> Result<(Plan, Report), OpError> {
    use crate::plan::saved::{SNAPSHOT_HELP, unreadable};
    let bytes = std::fs::read(snapshot).map_err(|e| unreadable(snapshot, &e, SNAPSHOT_HELP))?;
    let mut valid = load_valid(path)?;
    super::profiles::known(&valid.spec, profiles)?;
    let left_out = super::profiles::leave_out(&mut valid.spec, profiles);
    let mut snap = Snapshot::parse(snapshot, &bytes, &valid.spec.project.value)?;
    super::profiles::unobserve(&mut snap.observed, &left_out);
    let spec_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (secrets, mut desired) = desire(&valid.spec, &spec_dir_of(&spec_path))?;
    hold_unusable(&mut desired, &valid.spec, &secrets, &snap.observed);
    let graph = ResourceGraph::new(desired)?;
    let plan = plan(&valid.spec.project.value, &graph, &snap.observed);
    Ok((plan, valid.report))
}

/// `berth apply FILE`: the saved plan in FILE, refused if it cannot be read or is of another
/// format.
pub fn read_saved_plan(path: &Path) -> Result<crate::plan::saved::SavedPlan, OpError> {
    use crate::plan::saved::{SAVED_PLAN_HELP, SavedPlan, unreadable};
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, &e, SAVED_PLAN_HELP))?;
    Ok(SavedPlan::parse(path, &bytes)?)
}
