//! Operations behind the commands. Each takes paths and options, does its work through the
//! pipeline modules and returns data; printing is the command's business.

use std::path::Path;

use crate::diag::Report;
use crate::graph::{GraphError, ResourceGraph};
use crate::observe::{ObservedState, Origin};
use crate::plan::{Plan, plan};
use crate::resources;
use crate::spec::load::ReadError;
use crate::spec::{Loaded, Spec, load_file};

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
    #[error("cannot build the resource graph: {0}")]
    #[diagnostic(
        code(berth::graph),
        help("this is a bug in berth's checks: please report it with the spec")
    )]
    Graph(#[from] GraphError),
}

/// A spec that loaded without errors, with the report of its warnings.
pub struct Valid {
    pub spec: Spec,
    pub report: Report,
}

/// Loads a spec and refuses it if it has errors.
pub fn load_valid(path: &Path) -> Result<Valid, OpError> {
    let Loaded { spec, report } = load_file(path)?;
    match spec {
        Some(spec) if !report.has_errors() => Ok(Valid { spec, report }),
        _ => Err(OpError::Invalid(Box::new(report))),
    }
}

/// The resource graph of a valid spec.
pub fn graph(spec: &Spec) -> Result<ResourceGraph, OpError> {
    Ok(resources::graph(spec)?)
}

/// `plan --against OLD`: what would change going from the old spec to the new one.
pub fn plan_against(new: &Spec, old: &Spec, old_name: &str) -> Result<Plan, OpError> {
    let desired = resources::graph(new)?;
    let observed = ObservedState::from_resources(
        Origin::Spec {
            file: old_name.to_owned(),
        },
        resources::desired(old),
    );
    Ok(plan(&new.project.value, &desired, &observed))
}

/// A plan between two spec files, with the reports (warnings) of both.
pub struct AgainstPlan {
    pub plan: Plan,
    pub new: Report,
    /// `None` when the old file was empty (nothing deployed yet).
    pub old: Option<Report>,
}

fn is_empty_file(path: &Path) -> Result<bool, OpError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > 64 * 1024 {
        return Ok(false);
    }
    let text = std::fs::read(path).map_err(io)?;
    Ok(crate::spec::load::is_blank(&String::from_utf8_lossy(&text)))
}

/// `plan -f NEW --against OLD`: loads, checks and expands both files concurrently (they
/// are independent), then plans.
pub fn plan_against_files(new: &Path, old: &Path) -> Result<AgainstPlan, OpError> {
    let (new_side, old_side) = std::thread::scope(|s| {
        let old_thread = s.spawn(|| -> Result<_, OpError> {
            // An empty file is "nothing deployed yet": `--against /dev/null` plans a first
            // deployment, as CI does in the pull request that adds berth.yaml.
            if is_empty_file(old)? {
                return Ok((None, Vec::new()));
            }
            let valid = load_valid(old)?;
            let resources = resources::desired(&valid.spec);
            Ok((Some(valid.report), resources))
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
    let (old_report, observed) = old_side?;
    let observed = ObservedState::from_resources(
        Origin::Spec {
            file: old.display().to_string(),
        },
        observed,
    );
    Ok(AgainstPlan {
        plan: plan(&new_valid.spec.project.value, &graph, &observed),
        new: new_valid.report,
        old: old_report,
    })
}
