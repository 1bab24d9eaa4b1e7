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
    #[diagnostic(code(berth::invalid_spec), help("fix the errors above, then run the command again"))]
    Invalid(Box<Report>),
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
