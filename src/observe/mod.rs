//! Observed state: what exists, as plain data the planner compares the desired graph with.
//!
//! The planner does not care where this came from: another revision of the spec
//! (`berth plan --against OLD.yaml`, [`ObservedState::from_resources`]) or what exists now,
//! observed by [`observe`]: the regions' engines ([`engines`], reached as [`targets`] says,
//! each through [`docker`]), and on this machine the secret files ([`secrets`]), the
//! backups' stores and timers ([`backups`]).

pub mod backup_units;
pub mod backups;
pub mod certificates;
pub mod docker;
pub mod engines;
pub mod proxy;
pub mod secrets;
pub mod targets;

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use engines::Observe;

use crate::diag::Diagnostic;
use crate::engine::{Engine, EngineError};
use crate::graph::{Address, Resource};
use crate::secrets::files::Inspection;
use crate::spec::Spec;

/// Where an observed state came from, for the plan's header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Another revision of the spec (`plan --against FILE`).
    Spec { file: String },
    /// The container engines of these regions.
    Engines { regions: Vec<String> },
}

/// A difference between what exists and what it was configured to be, found by observation
/// (a container that exited, a file with the wrong mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub field: String,
    pub observed: String,
    pub expected: String,
}

/// One existing resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedResource {
    pub address: Address,
    /// The attributes it was configured with (same names as the desired side).
    pub attrs: crate::graph::Attrs,
    /// What it depends on, so that deletions can run dependents first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// The engine's id or name of the object (observed from an engine only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For a container: the id of the image it runs (`io.berth.image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Everything observed for one project: at most one object per address (the observers
/// refuse two containers claiming one pod; a state read from a file is held to the same
/// rule, so that the planner never matches an address against one of two claimants).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ObservedStateData")]
pub struct ObservedState {
    pub origin: Origin,
    pub resources: Vec<ObservedResource>,
    /// Kinds this observation cannot see (yet): the plan leaves them out rather than
    /// guessing that they are missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unobserved: Vec<crate::graph::Kind>,
}

/// An observed state as written in a file, before the one-object-per-address rule.
#[derive(Deserialize)]
struct ObservedStateData {
    origin: Origin,
    resources: Vec<ObservedResource>,
    #[serde(default)]
    unobserved: Vec<crate::graph::Kind>,
}

/// Two objects of an observed state claiming one address.
#[derive(Debug, thiserror::Error)]
#[error(
    "two objects claim `{address}` ({first} and {second}): an observed state holds one object per address; observe again on the host (`berth plan` names both containers, and `berth apply` or `berth recover` removes the stray)"
)]
pub struct TwoClaimants {
    pub address: String,
    pub first: String,
    pub second: String,
}

impl TryFrom<ObservedStateData> for ObservedState {
    type Error = TwoClaimants;

    fn try_from(d: ObservedStateData) -> Result<Self, TwoClaimants> {
        let mut seen: HashMap<_, &ObservedResource> = HashMap::new();
        let name = |o: &ObservedResource| {
            o.id.as_deref().map_or_else(
                || "no id".to_owned(),
                |id| crate::engine::names::short(id).to_owned(),
            )
        };
        for o in &d.resources {
            if let Some(first) = seen.insert(o.address.match_key(), o) {
                return Err(TwoClaimants {
                    address: o.address.to_string(),
                    first: name(first),
                    second: name(o),
                });
            }
        }
        Ok(ObservedState {
            origin: d.origin,
            resources: d.resources,
            unobserved: d.unobserved,
        })
    }
}

impl ObservedState {
    /// The state a deployment of `resources` would leave behind, without drift.
    pub fn from_resources(origin: Origin, resources: impl IntoIterator<Item = Resource>) -> Self {
        ObservedState {
            origin,
            resources: resources
                .into_iter()
                .map(|r| ObservedResource {
                    address: r.address,
                    attrs: r.attrs,
                    depends_on: r.depends_on,
                    drift: Vec::new(),
                    id: None,
                    image: None,
                })
                .collect(),
            unobserved: Vec::new(),
        }
    }
}

/// What [`observe`] looks at, for one project.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub spec: &'a Spec,
    /// The spec file (absolute), and its directory: relative paths are relative to it.
    pub spec_path: &'a Path,
    pub spec_dir: &'a Path,
    /// The project's state directory, that a backup's timer hands to `berth backup run`.
    pub state_dir: &'a Path,
    /// The spec of the latest applied revision (none before the first apply, or after a
    /// destroy): what is only in the spec (a backup's `before_apply`) is observed as it had
    /// it.
    pub applied: Option<&'a Spec>,
    /// The desired resources: each secret and backup among them is observed on this
    /// machine.
    pub desired: &'a [Resource],
    /// The secret files as read (`secrets::inspect`).
    pub secrets: &'a Inspection,
    /// Whether the secret files and backups on this machine are observed: not for a
    /// destroy, which leaves them alone (the timers of backups no longer desired are
    /// observed all the same).
    pub local: bool,
    pub mode: Observe,
    /// `--region`: only these regions' engines are connected and observed (all when
    /// empty).
    pub regions: &'a [String],
}

/// What exists for a project: on its engines (connected, kept for apply) and on this
/// machine.
pub struct Observation {
    pub engines: HashMap<String, Engine>,
    pub state: ObservedState,
    /// What observation did or found worth a warning: containers an interrupted command
    /// left, removed; a backup's RPO at risk.
    pub notes: Vec<String>,
    /// Backup stores berth may not use: refused by the pre-flight.
    pub store_problems: Vec<Diagnostic>,
}

/// Observes everything of the project: its engines, then on this machine its secret files,
/// its backups' stores and timers, and the timers of backups no longer desired (planned for
/// deletion; their stores and backups stay).
pub async fn observe(scope: &Scope<'_>) -> Result<Observation, EngineError> {
    let (engines, mut state, mut notes) =
        engines::observe(scope.spec, scope.spec_dir, scope.mode, scope.regions).await?;
    let mut store_problems = Vec::new();
    if scope.local {
        secrets::observe(scope.desired, scope.secrets, &mut state);
        store_problems = backups::observe(scope, &mut state, &mut notes);
    }
    backups::orphan_timers(&scope.spec.project.value, scope.desired, &mut state);
    Ok(Observation {
        engines,
        state,
        notes,
        store_problems,
    })
}
