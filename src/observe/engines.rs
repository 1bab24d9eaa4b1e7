//! Every region's engine, connected and observed concurrently: the project's containers,
//! networks and volumes, as [`ObservedResource`](super::ObservedResource)s.

use std::collections::HashMap;
use std::path::Path;

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
    /// ([`super::docker::tidy`]).
    Tidy,
    /// Another command is applying (a read-only plan): the pod's own name wins.
    DuringApply,
}

/// Connects to every region's engine (or only those of `only`, when it names any: the
/// others are not even connected; two regions on one engine refused before any change)
/// and observes them, concurrently, treating two containers claiming one address as `mode`
/// says; returns what it removed too.
pub async fn observe(
    spec: &Spec,
    spec_dir: &Path,
    mode: Observe,
    only: &[String],
) -> Result<(HashMap<String, Engine>, ObservedState, Vec<String>), EngineError> {
    let all_names = spec.region_names();
    let all = &all_names;
    let names: Vec<&str> = all_names
        .iter()
        .copied()
        .filter(|n| only.is_empty() || only.iter().any(|o| o == n))
        .collect();
    let project = spec.project.value.as_str();
    let left_out: Vec<&str> = all_names
        .iter()
        .copied()
        .filter(|n| !names.contains(n))
        .collect();
    let left_out = &left_out;
    // Each region is connected and listed as soon as it can be, without waiting for the
    // others; then, before anything is tidied, the engines are checked to be distinct.
    let listings = names.iter().map(|name| async move {
        let engine =
            crate::observe::targets::connect_one(spec, spec_dir, name, all, Some(project)).await?;
        let endpoint = engine.endpoint.clone();
        let listing = tokio::time::timeout(OBSERVE_TIMEOUT, list_one(&engine, project))
            .await
            .unwrap_or_else(|_| Err(too_long(name.to_string(), endpoint)))?;
        Ok::<_, EngineError>((engine, listing))
    });
    let listed = futures_util::future::try_join_all(listings).await?;
    let (engines, lists): (Vec<Engine>, Vec<super::docker::Lists>) = listed.into_iter().unzip();
    crate::observe::targets::one_engine_per_region(&engines).await?;
    for engine in &engines {
        held_for_left_out(engine, project, left_out)?;
    }
    let observations = engines
        .into_iter()
        .zip(lists)
        .map(|(engine, lists)| async move {
            let (region, endpoint) = (engine.region.clone(), engine.endpoint.clone());
            let observing = observe_one(engine, lists, all, mode);
            tokio::time::timeout(OBSERVE_TIMEOUT, observing)
                .await
                .unwrap_or_else(|_| Err(too_long(region, endpoint)))
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

/// The longest the observation of one region may take (its engine's every list).
const OBSERVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

type Observed = (String, Engine, Vec<super::ObservedResource>, Vec<String>);

/// The project's objects on one region's engine, listed at once.
async fn list_one(engine: &Engine, project: &str) -> Result<super::docker::Lists, EngineError> {
    let (containers, networks, volumes) = tokio::try_join!(
        engine.containers_listed(project),
        engine.networks_listed(project),
        engine.volumes_listed(project)
    )?;
    Ok(super::docker::Lists {
        containers,
        networks,
        volumes,
    })
}

/// A region's observation that took too long.
fn too_long(region: String, endpoint: String) -> EngineError {
    EngineError::Unreachable {
        help: crate::engine::docker::unreachable_help(&endpoint),
        region,
        endpoint,
        reason: format!("observing it took more than {OBSERVE_TIMEOUT:?}"),
    }
}

/// A region left out by `--region` (`left_out`) was not connected, so its engine being
/// this one goes unnoticed by the check of identities; objects labelled for it on this
/// engine tell it (or that it left them here when it moved to another engine). Refused
/// before anything is tidied in any region.
fn held_for_left_out(engine: &Engine, project: &str, left_out: &[&str]) -> Result<(), EngineError> {
    match engine
        .other_regions_seen()
        .into_iter()
        .find(|r| left_out.contains(&r.as_str()))
    {
        Some(other) => Err(EngineError::HoldsOtherRegion {
            region: engine.region.clone(),
            endpoint: engine.endpoint.clone(),
            other,
            project: project.to_owned(),
        }),
        None => Ok(()),
    }
}

/// One region's engine observed from its lists (one list of the containers serves the
/// tidying and the observation): its objects, and what tidying removed.
async fn observe_one(
    engine: Engine,
    lists: super::docker::Lists,
    all: &[&str],
    mode: Observe,
) -> Result<Observed, EngineError> {
    let name = engine.region.clone();
    let shown = resources::shown_region(all, &name);
    let super::docker::Lists {
        containers,
        networks,
        volumes,
    } = lists;
    let (containers, removed) = match mode {
        Observe::Tidy => super::docker::tidy(&engine, &name, containers).await?,
        _ => (containers, Vec::new()),
    };
    let lists = super::docker::Lists {
        containers,
        networks,
        volumes,
    };
    let during_apply = mode == Observe::DuringApply;
    let found = super::docker::observe_listed(&engine, shown, during_apply, lists).await?;
    Ok((name, engine, found, removed))
}
