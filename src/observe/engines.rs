//! Every region's engine, connected and observed concurrently: the project's containers,
//! networks and volumes, as [`ObservedResource`](super::ObservedResource)s.

use std::collections::HashMap;

use super::{ObservedState, Origin};
use crate::engine::{Engine, EngineError};
use crate::graph::Kind;
use crate::resources;
use crate::spec::Spec;

/// Kinds that observation of engines does not see yet: secrets are files (checked by the
/// secrets work), rate limits live in the proxy's config (compared through the proxy's
/// attributes), backups are timers and stores (the backups work).
pub const UNOBSERVED_ON_ENGINES: [Kind; 3] = [Kind::Secret, Kind::RateLimit, Kind::Backup];

/// How observation treats two containers claiming one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observe {
    /// An error naming both.
    Strict,
    /// The caller holds the project's lock and no apply is to recover: the containers an
    /// interrupted apply left beside a pod's own are removed first
    /// ([`super::docker::remove_strays`]).
    Tidy,
    /// Another command is applying (a read-only plan): the pod's own name wins.
    DuringApply,
}

/// Connects to every region's engine and observes them, concurrently, treating two
/// containers claiming one address as `mode` says; returns what it removed too.
pub async fn observe(
    spec: &Spec,
    mode: Observe,
) -> Result<(HashMap<String, Engine>, ObservedState, Vec<String>), EngineError> {
    let names = spec.region_names();
    let all = &names;
    let project = spec.project.value.as_str();
    let observations = names.iter().map(|name| async move {
        let endpoint = spec.regions.get(name).map(|r| r.engine.value.as_str());
        let engine = Engine::connect(name, endpoint).await?;
        let removed = if mode == Observe::Tidy {
            let mut removed = super::docker::remove_strays(&engine, project).await?;
            // And the helper containers a killed backup or restore left: they mount the
            // project's volumes, which a destroy could not remove while they exist.
            let said = crate::archive::helpers::sweep_helpers_said(&engine, project, name).await?;
            removed.extend(said);
            removed
        } else {
            Vec::new()
        };
        let shown = resources::shown_region(all, name);
        let found =
            super::docker::observe(&engine, project, shown, mode == Observe::DuringApply).await?;
        Ok::<_, EngineError>((name.to_string(), engine, found, removed))
    });
    let results = futures_util::future::try_join_all(observations).await?;
    let mut engines = HashMap::new();
    let mut resources = Vec::new();
    let mut removed = Vec::new();
    for (name, engine, found, gone) in results {
        engines.insert(name, engine);
        resources.extend(found);
        removed.extend(gone);
    }
    let state = ObservedState {
        origin: Origin::Engines {
            regions: names.iter().map(|n| n.to_string()).collect(),
        },
        resources,
        unobserved: UNOBSERVED_ON_ENGINES.to_vec(),
    };
    Ok((engines, state, removed))
}
