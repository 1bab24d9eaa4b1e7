//! Observation of one region's engine: its labelled containers, networks and volumes, found
//! with one filtered list call each, turned into [`ObservedResource`]s.

use super::{Drift, ObservedResource};
use crate::engine::docker::{ContainerInfo, ObjectInfo};
use crate::engine::{Engine, EngineError, labels, names};
use crate::graph::{Address, Kind};
use crate::resources::attr;

/// The project's objects on one engine, as its lists show them.
pub struct Lists {
    pub containers: Vec<ContainerInfo>,
    pub networks: Vec<ObjectInfo>,
    pub volumes: Vec<ObjectInfo>,
}

/// The project's resources on `engine`, from its lists (the containers tidied by [`tidy`]
/// when the caller may), with addresses qualified by `region` when the spec qualifies them
/// (`None` for a single-region spec).
///
/// Two containers claiming one address are an error naming both
/// ([`EngineError::Duplicate`]), unless `during_apply` (a read-only plan while another
/// command applies: its candidate and set-aside containers are expected), where the pod's
/// own name wins.
pub async fn observe_listed(
    engine: &Engine,
    region: Option<&str>,
    during_apply: bool,
    lists: Lists,
) -> Result<Vec<ObservedResource>, EngineError> {
    let Lists {
        mut containers,
        networks,
        volumes,
    } = lists;
    if during_apply {
        let transient: Vec<String> = duplicates(&containers)
            .into_iter()
            .flat_map(|(_, claimants)| claimants)
            .filter(|c| names::is_transient(&c.name))
            .map(|c| c.id.clone())
            .collect();
        containers.retain(|c| !transient.contains(&c.id));
    }
    if let Some((address, claimants)) = duplicates(&containers).into_iter().next() {
        return Err(EngineError::Duplicate {
            region: engine.region.clone(),
            address: in_region(address, region).to_string(),
            containers: claimants
                .iter()
                .map(|c| format!("{} ({})", c.id, c.name))
                .collect(),
        });
    }
    let mut found = from_lists(region, &containers, &networks, &volumes);
    super::proxy::read_configs(engine, &mut found).await?;
    secrets_held(&containers, &volumes, &mut found);
    Ok(found)
}

/// Addresses that more than one container claims, with the claimants (an interrupted
/// apply leaves a candidate or a set-aside container beside the pod's own). Observation
/// never picks one of them.
pub fn duplicates(containers: &[ContainerInfo]) -> Vec<(Address, Vec<&ContainerInfo>)> {
    let mut by_address: Vec<(Address, Vec<&ContainerInfo>)> = Vec::new();
    for c in containers {
        let Some(d) = labels::decode(&c.labels) else {
            continue;
        };
        match by_address.iter_mut().find(|(a, _)| *a == d.address) {
            Some((_, list)) => list.push(c),
            None => by_address.push((d.address, vec![c])),
        }
    }
    by_address.retain(|(_, list)| list.len() > 1);
    by_address
}

/// Removes, from one list of the project's containers, what interrupted commands left:
/// containers made only to hold a name, helper containers of a killed backup or restore
/// (they mount the project's volumes, which a destroy could not remove while they exist),
/// keepers of secrets volumes no pod container mounts, and containers left beside a pod's
/// own ([`remove_strays_in`]). Only for a caller that
/// holds the project's lock with no apply to recover (nothing else is creating
/// containers). Returns the list without them, and what it removed, said.
pub async fn tidy(
    engine: &Engine,
    region: &str,
    containers: Vec<ContainerInfo>,
) -> Result<(Vec<ContainerInfo>, Vec<String>), EngineError> {
    let mut kept = Vec::new();
    let mut keepers = Vec::new();
    let mut helpers = 0;
    for c in containers {
        if c.labels
            .contains_key(crate::engine::docker::NAME_HOLD_LABEL)
        {
            engine.remove(&c.id).await?;
        } else if crate::engine::secrets::is_keeper(&c) {
            // Kept while a pod container mounts its volume (below).
            keepers.push(c);
        } else if c.labels.contains_key(labels::HELPER) {
            engine.remove(&c.id).await?;
            helpers += 1;
        } else {
            kept.push(c);
        }
    }
    let (mut kept, mut said) = remove_strays_in(engine, kept).await?;
    // A keeper whose pod container is gone (a kill between them) goes too.
    kept.extend(keepers);
    let idle: Vec<String> = crate::engine::secrets::idle_keepers(&kept)
        .into_iter()
        .map(|k| k.id.clone())
        .collect();
    for id in &idle {
        engine.remove(id).await?;
        helpers += 1;
    }
    kept.retain(|c| !idle.contains(&c.id));
    said.extend(crate::archive::helpers::helpers_removed(helpers, region));
    Ok((kept, said))
}

/// Removes the containers an interrupted apply left beside a pod's own: of two or more
/// claiming one address, those with a transient name (`-berth-next`, `-berth-old`, ...)
/// when exactly one has the pod's own name; and containers made only to hold a name.
/// Only for a caller that holds the project's lock with no apply to recover (nothing else
/// is creating containers). Says what it removed.
pub async fn remove_strays(engine: &Engine, project: &str) -> Result<Vec<String>, EngineError> {
    let mut containers = Vec::new();
    for c in engine.containers(project).await? {
        if c.labels
            .contains_key(crate::engine::docker::NAME_HOLD_LABEL)
        {
            engine.remove(&c.id).await?;
        } else {
            containers.push(c);
        }
    }
    Ok(remove_strays_in(engine, containers).await?.1)
}

/// [`remove_strays`] on a list already made (and without its name holds): the list
/// without what it removed, and what it said.
async fn remove_strays_in(
    engine: &Engine,
    containers: Vec<ContainerInfo>,
) -> Result<(Vec<ContainerInfo>, Vec<String>), EngineError> {
    let mut removed = Vec::new();
    let mut gone = Vec::new();
    for (address, claimants) in duplicates(&containers) {
        let own: Vec<&&ContainerInfo> = claimants
            .iter()
            .filter(|c| !names::is_transient(&c.name))
            .collect();
        if own.len() != 1 {
            continue; // nothing tells which one is the pod: observation reports them
        }
        for c in claimants.iter().filter(|c| names::is_transient(&c.name)) {
            engine.remove(&c.id).await?;
            gone.push(c.id.clone());
            removed.push(format!(
                "in `{}`: removed {} ({}), left beside {} by an interrupted apply",
                engine.region,
                c.name,
                names::short(&c.id),
                address
            ));
        }
    }
    let kept = containers
        .into_iter()
        .filter(|c| !gone.contains(&c.id))
        .collect();
    Ok((kept, removed))
}

/// Removes the containers a killed `recover` or rollback made only to hold a name
/// ([`Engine::hold_name`]): they would keep the name from the container it belongs to.
pub async fn remove_name_holds(engine: &Engine, project: &str) -> Result<(), EngineError> {
    for c in engine.containers(project).await? {
        if c.labels
            .contains_key(crate::engine::docker::NAME_HOLD_LABEL)
        {
            engine.remove(&c.id).await?;
        }
    }
    Ok(())
}

/// The version observed of the secrets of a container given them by an earlier berth,
/// through a directory on this machine's tmpfs.
pub const LEGACY_DELIVERY: &str = "(on this host's tmpfs, as berth did before secrets volumes)";

/// What a pod container's secrets volume says of it: the ciphertext fingerprints its labels
/// record are the versions of the secrets the container really holds (a difference to the
/// spec's files replaces it); a volume whose keeper does not run (the engine restarted, and
/// the memory that held the files is gone) has drifted: apply fills it again and restarts
/// the container.
pub fn secrets_held(
    containers: &[ContainerInfo],
    volumes: &[ObjectInfo],
    found: &mut [ObservedResource],
) {
    use crate::engine::secrets;
    for c in containers {
        // A container an earlier berth gave its secrets through a directory of this
        // machine's tmpfs (bind-mounted): its secrets are of no version berth delivers
        // now, so that apply replaces it once, into a secrets volume.
        if c.binds
            .iter()
            .any(|(_, dest)| dest == crate::spec::SECRETS_MOUNT_POINT)
            && let Some(o) = found
                .iter_mut()
                .find(|o| o.id.as_deref() == Some(c.id.as_str()))
        {
            o.attrs.replace_values(|k, _| {
                (k.starts_with(attr::SECRET_PREFIX) && k.ends_with(".version"))
                    .then(|| LEGACY_DELIVERY.to_owned())
            });
        }
        // A job's secrets are gone from memory once it has exited, as they should be.
        if labels::decode(&c.labels).is_some_and(|d| d.address.kind == Kind::Job) {
            continue;
        }
        let Some(volume) = secrets::volume_of(c, volumes) else {
            continue;
        };
        let Some(o) = found
            .iter_mut()
            .find(|o| o.id.as_deref() == Some(c.id.as_str()))
        else {
            continue;
        };
        for (name, fingerprint) in secrets::fingerprints(&volume.labels) {
            let key = attr::secret_version(&name);
            if o.attrs.contains_key(&key) {
                o.attrs.insert(key, fingerprint);
            }
        }
        let held = containers
            .iter()
            .any(|k| secrets::kept_by(k) == Some(volume.name.as_str()) && k.state == "running");
        if !held {
            o.drift.push(Drift {
                field: "secrets".into(),
                observed: "not held in memory (its keeper does not run: the engine restarted?)"
                    .into(),
                expected: "delivered".into(),
            });
        }
    }
}

/// The pure part of observation: list results -> observed resources.
pub fn from_lists(
    region: Option<&str>,
    containers: &[ContainerInfo],
    networks: &[ObjectInfo],
    volumes: &[ObjectInfo],
) -> Vec<ObservedResource> {
    let mut out: Vec<ObservedResource> = Vec::new();
    let objects = networks
        .iter()
        .chain(volumes)
        .map(|o| (&o.labels, None::<(&str, &str)>, &o.name))
        .chain(containers.iter().map(|c| {
            (
                &c.labels,
                Some((c.state.as_str(), c.status.as_str())),
                &c.id,
            )
        }));
    for (labels, state, id) in objects {
        let Some(d) = labels::decode(labels) else {
            continue; // labelled for the project, but not a resource (a helper, say)
        };
        let address = in_region(d.address, region);
        // Two containers claiming one resource are refused by `observe` before this; two
        // networks or volumes cannot share a name.
        if out.iter().any(|o| o.address == address) {
            continue;
        }
        let mut drift = Vec::new();
        match state {
            // A job's container is done once it exited 0: kept, as the record of its run.
            Some((state, status))
                if address.kind == Kind::Job
                    && (state != "exited" || !status.starts_with("Exited (0)")) =>
            {
                drift.push(Drift {
                    field: attr::STATE.into(),
                    observed: format!("{state} ({status})"),
                    expected: "exited with status 0".into(),
                })
            }
            Some(_) if address.kind == Kind::Job => {}
            Some((state, _)) if state != "running" => drift.push(Drift {
                field: attr::STATE.into(),
                observed: state.to_owned(),
                expected: "running".into(),
            }),
            Some((_, status)) if status.contains("(unhealthy)") => drift.push(Drift {
                field: "health".into(),
                observed: "unhealthy".into(),
                expected: "healthy".into(),
            }),
            _ => {}
        }
        out.push(ObservedResource {
            address,
            // Labels changed by hand cannot be trusted: every field then differs, and the
            // plan replaces the object.
            attrs: if d.tampered {
                Default::default()
            } else {
                d.attrs
            },
            depends_on: d
                .depends_on
                .into_iter()
                .map(|a| in_region(a, region))
                .collect(),
            drift,
            id: Some(id.clone()),
            image: labels.get(crate::engine::labels::IMAGE).cloned(),
        });
    }
    out
}

fn in_region(mut a: Address, region: Option<&str>) -> Address {
    if a.kind != Kind::Secret {
        a.region = region.map(std::sync::Arc::from);
    }
    a
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::graph::Resource;

    fn labelled(addr: &str, attrs: &[(&str, &str)]) -> HashMap<String, String> {
        let r = Resource {
            address: addr.parse().unwrap(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            depends_on: vec!["network.default".parse().unwrap()],
        };
        labels::encode("shop", &r, None)
    }

    #[test]
    fn lists_become_observed_resources() {
        let containers = vec![
            ContainerInfo {
                id: "a".into(),
                name: "shop-api".into(),
                labels: labelled("pod.api", &[("image", "api:1")]),
                state: "running".into(),
                status: "Up 2 minutes (healthy)".into(),
                binds: Vec::new(),
                volumes: Vec::new(),
                image_id: String::new(),
            },
            ContainerInfo {
                id: "b".into(),
                name: "shop-web".into(),
                labels: labelled("pod.web", &[("image", "web:1")]),
                state: "exited".into(),
                status: "Exited (1) 3 seconds ago".into(),
                binds: Vec::new(),
                volumes: Vec::new(),
                image_id: String::new(),
            },
            ContainerInfo {
                id: "c".into(),
                name: "shop-helper".into(),
                labels: HashMap::from([(labels::PROJECT.to_owned(), "shop".to_owned())]),
                state: "running".into(),
                status: "Up 1 second (unhealthy)".into(),
                binds: Vec::new(),
                volumes: Vec::new(),
                image_id: String::new(),
            },
        ];
        let networks = vec![ObjectInfo {
            name: "shop-default".into(),
            labels: labelled("network.default", &[("driver", "bridge")]),
        }];
        let got = from_lists(Some("fra"), &containers, &networks, &[]);
        let addrs: Vec<String> = got.iter().map(|o| o.address.to_string()).collect();
        assert_eq!(addrs, ["network.default@fra", "pod.api@fra", "pod.web@fra"]);
        assert!(got[1].drift.is_empty());
        assert_eq!(got[2].drift[0].observed, "exited");
        assert_eq!(got[1].depends_on[0].to_string(), "network.default@fra");
        assert_eq!(
            got[1].attrs,
            crate::graph::Attrs::from([("image", "api:1")])
        );
    }

    #[test]
    fn an_unhealthy_running_container_has_drifted() {
        let containers = vec![ContainerInfo {
            id: "a".into(),
            name: "shop-api".into(),
            labels: labelled("pod.api", &[("image", "api:1")]),
            state: "running".into(),
            status: "Up 5 minutes (unhealthy)".into(),
            binds: Vec::new(),
            volumes: Vec::new(),
            image_id: String::new(),
        }];
        let got = from_lists(None, &containers, &[], &[]);
        assert_eq!(got[0].drift[0].field, "health");
        assert_eq!(got[0].drift[0].observed, "unhealthy");
    }

    #[test]
    fn a_secrets_volume_without_a_running_keeper_has_drifted_and_its_labels_give_the_versions() {
        let pod = ContainerInfo {
            id: "a".into(),
            name: "shop-api".into(),
            labels: labelled("pod.api", &[("secret.db.version", "sha256:new")]),
            state: "running".into(),
            status: "Up 2 minutes".into(),
            binds: Vec::new(),
            volumes: vec!["shop-api-berth-secrets-1".into()],
            image_id: String::new(),
        };
        let keeper = ContainerInfo {
            id: "k".into(),
            name: "shop-api-berth-secrets-1-keeper".into(),
            labels: crate::engine::secrets::keeper_labels(
                "shop",
                "iad",
                "shop-api-berth-secrets-1",
            ),
            state: "exited".into(),
            status: String::new(),
            binds: Vec::new(),
            volumes: vec!["shop-api-berth-secrets-1".into()],
            image_id: String::new(),
        };
        let volumes = vec![ObjectInfo {
            name: "shop-api-berth-secrets-1".into(),
            labels: crate::engine::secrets::volume_labels(
                "shop",
                "iad",
                "pod.api",
                &BTreeMap::from([("db".to_owned(), "sha256:old".to_owned())]),
            ),
        }];
        let mut containers = vec![pod, keeper];
        let mut found = from_lists(None, &containers, &[], &volumes);
        secrets_held(&containers, &volumes, &mut found);
        assert_eq!(found.len(), 1, "the keeper is no resource");
        assert_eq!(&found[0].attrs["secret.db.version"], "sha256:old");
        assert_eq!(found[0].drift[0].field, "secrets");
        containers[1].state = "running".into();
        let mut found = from_lists(None, &containers, &[], &volumes);
        secrets_held(&containers, &volumes, &mut found);
        assert!(found[0].drift.is_empty());
        // Given its secrets by an earlier berth, through this host's tmpfs.
        containers[0].volumes.clear();
        containers[0].binds = vec![("/run/berth/shop/x".into(), "/run/secrets".into())];
        let mut found = from_lists(None, &containers, &[], &volumes);
        secrets_held(&containers, &volumes, &mut found);
        assert_eq!(&found[0].attrs["secret.db.version"], LEGACY_DELIVERY);
    }
}
