//! A pod's secrets volumes on its region's engine, as objects: their names, their labels,
//! which keeper holds which volume, and the sweep that removes those no pod container
//! mounts any more (after a replacement, a deletion, a rollback, a kill).
//!
//! One volume per pod container generation, named from the container
//! (`<container>-berth-secrets-<token>`), held mounted by its keeper
//! (`<volume>-keeper`); see [`super::docker`]'s `keeper` for the engine side.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::docker::ContainerInfo;
use super::{Engine, EngineError, labels};

/// The secrets volume for a new generation of `container`.
pub fn volume_name(container: &str) -> String {
    format!(
        "{}-berth-secrets-{}",
        container.trim_end_matches("-berth-next"),
        token()
    )
}

/// 16 random hex digits (the system's random source; the clock and pid without it).
pub(crate) fn token() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    crate::encode::hex(&bytes)
}

/// The keeper of a secrets volume.
pub fn keeper_name(volume: &str) -> String {
    format!("{volume}-keeper")
}

/// The labels of a pod's secrets volume: berth's, and the ciphertext fingerprint of each
/// secret it holds (by name).
pub fn volume_labels(
    project: &str,
    region: &str,
    pod: &str,
    fingerprints: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut out = HashMap::from([
        (labels::PROJECT.to_owned(), project.to_owned()),
        (labels::SECRETS_POD.to_owned(), pod.to_owned()),
        (labels::SECRETS_REGION.to_owned(), region.to_owned()),
    ]);
    for (name, fp) in fingerprints {
        out.insert(format!("{}{name}", labels::SECRET_FINGERPRINT), fp.clone());
    }
    out
}

/// The ciphertext fingerprints a secrets volume's labels record, by secret name.
pub fn fingerprints(volume_labels: &HashMap<String, String>) -> BTreeMap<String, String> {
    volume_labels
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(labels::SECRET_FINGERPRINT)
                .map(|name| (name.to_owned(), v.clone()))
        })
        .collect()
}

/// Whether an object's labels are those of a secrets volume.
pub fn is_secrets_volume(object_labels: &HashMap<String, String>) -> bool {
    object_labels.contains_key(labels::SECRETS_POD)
}

/// The labels of the keeper of `volume`.
pub fn keeper_labels(project: &str, region: &str, volume: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::PROJECT.to_owned(), project.to_owned()),
        (labels::HELPER.to_owned(), labels::KEEPER.to_owned()),
        (labels::KEEPS.to_owned(), volume.to_owned()),
        (labels::SECRETS_REGION.to_owned(), region.to_owned()),
    ])
}

/// The volume a container keeps, when it is a keeper.
pub fn kept_by(c: &ContainerInfo) -> Option<&str> {
    (c.labels.get(labels::HELPER).map(String::as_str) == Some(labels::KEEPER))
        .then(|| c.labels.get(labels::KEEPS).map(String::as_str))
        .flatten()
}

/// Whether a container is a keeper.
pub fn is_keeper(c: &ContainerInfo) -> bool {
    c.labels.get(labels::HELPER).map(String::as_str) == Some(labels::KEEPER)
}

/// The volumes the project's containers other than keepers mount.
fn in_use(containers: &[ContainerInfo]) -> HashSet<&str> {
    containers
        .iter()
        .filter(|c| !is_keeper(c))
        .flat_map(|c| c.volumes.iter().map(String::as_str))
        .collect()
}

/// The keepers in a list of the project's containers that hold a volume no other
/// container mounts (their pod container is gone).
pub fn idle_keepers(containers: &[ContainerInfo]) -> Vec<&ContainerInfo> {
    let used = in_use(containers);
    containers
        .iter()
        .filter(|c| kept_by(c).is_some_and(|v| !used.contains(v)))
        .collect()
}

/// Removes (killing) a secrets volume's keeper, then the volume; either already gone is
/// fine. What an undo of its creation does.
pub async fn remove_volume_and_keeper(
    engine: &Engine,
    project: &str,
    volume: &str,
) -> Result<(), EngineError> {
    engine.remove_named(&keeper_name(volume), project).await?;
    engine.remove_volume(volume).await
}

/// Removes the project's secrets volumes that no pod container mounts any more, with their
/// keepers, and any keeper whose volume no pod container mounts. Only under the project's
/// lock, with no delivery in progress. Returns how many volumes went.
pub async fn sweep(engine: &Engine, project: &str) -> Result<usize, EngineError> {
    let (containers, volumes) =
        tokio::try_join!(engine.containers(project), engine.volumes(project))?;
    let used = in_use(&containers);
    for keeper in idle_keepers(&containers) {
        engine.remove(&keeper.id).await?;
    }
    let mut removed = 0;
    for v in volumes.iter().filter(|v| is_secrets_volume(&v.labels)) {
        if used.contains(v.name.as_str()) {
            continue;
        }
        engine.remove_volume(&v.name).await?;
        removed += 1;
    }
    Ok(removed)
}

/// A pod container's secrets volume (one of berth's, mounted at `/run/secrets`), if any.
pub fn volume_of<'a>(
    c: &ContainerInfo,
    volumes: &'a [super::docker::ObjectInfo],
) -> Option<&'a super::docker::ObjectInfo> {
    volumes
        .iter()
        .find(|v| is_secrets_volume(&v.labels) && c.volumes.contains(&v.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, labels: &[(&str, &str)], volumes: &[&str]) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            state: "running".into(),
            status: String::new(),
            binds: Vec::new(),
            volumes: volumes.iter().map(|v| (*v).to_owned()).collect(),
            image_id: String::new(),
        }
    }

    #[test]
    fn a_keeper_is_idle_once_no_pod_container_mounts_its_volume() {
        let keeper = |id, v| {
            container(
                id,
                &[(labels::HELPER, labels::KEEPER), (labels::KEEPS, v)],
                &[v],
            )
        };
        let list = vec![
            container("pod", &[], &["v1", "data"]),
            keeper("k1", "v1"),
            keeper("k2", "v2"),
        ];
        let idle: Vec<&str> = idle_keepers(&list).iter().map(|c| c.id.as_str()).collect();
        assert_eq!(idle, ["k2"]);
    }

    #[test]
    fn labels_hold_fingerprints_only() {
        let fps = BTreeMap::from([("db".to_owned(), "sha256:abc".to_owned())]);
        let l = volume_labels("shop", "iad", "pod.api", &fps);
        assert!(is_secrets_volume(&l));
        assert_eq!(fingerprints(&l), fps);
        assert!(volume_name("shop-api-berth-next").starts_with("shop-api-berth-secrets-"));
        assert_eq!(keeper_name("v"), "v-keeper");
    }
}
