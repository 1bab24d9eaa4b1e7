//! Observed state: what exists, as plain data the planner compares the desired graph with.
//!
//! The planner does not care where this came from: another revision of the spec
//! (`berth plan --against OLD.yaml`, [`ObservedState::from_resources`]) or the regions'
//! engines ([`docker`]).

pub mod docker;

use serde::{Deserialize, Serialize};

use crate::graph::{Address, Resource};

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
    pub attrs: std::collections::BTreeMap<String, String>,
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

/// Everything observed for one project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedState {
    pub origin: Origin,
    pub resources: Vec<ObservedResource>,
    /// Kinds this observation cannot see (yet): the plan leaves them out rather than
    /// guessing that they are missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unobserved: Vec<crate::graph::Kind>,
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
