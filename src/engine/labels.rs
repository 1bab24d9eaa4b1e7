//! The labels berth puts on every container, network and volume it manages, and reads back to
//! observe them. Observation lists objects by `io.berth.project` only: anything without the
//! label is not berth's and is never touched.
//!
//! - `io.berth.project`: the project name;
//! - `io.berth.resource`: the resource's address without region (the engine is the region);
//! - `io.berth.region`: the region whose engine it was made on (added by the engine layer
//!   to everything it creates): an object labelled for another region of the spec is never
//!   taken for this region's (one labelled for a region the spec no longer has is, so that
//!   renaming a region deletes what the old name made);
//! - `io.berth.hash`: SHA-256 of the normalised attributes, to compare without decoding;
//! - `io.berth.attrs`: the attributes as JSON, for field-level plans (credential-looking
//!   values only in concealed form, see `sensitive::conceal`);
//! - `io.berth.depends_on`: addresses it depends on, so deletions run dependents first;
//! - `io.berth.revision`: the applied revision that created it;
//! - `io.berth.image`: on containers, the id (`sha256:...`) of the image it was created
//!   from, the exact bits, whatever tag the spec names;
//! - `io.berth.helper`: on the never-started containers that backups and restores read and
//!   fill volumes through (with `io.berth.project`): what they are for. One left behind by
//!   a killed command is removed by `recover` and by the next backup or restore.
//!   `secrets-keeper` marks the container that holds a pod's secrets volume mounted
//!   ([`KEEPS`] names the volume): it lives as long as a pod container mounts that volume.
//! - on a pod's memory-backed secrets volume: `io.berth.secrets.pod` (the pod's address
//!   without region), `io.berth.secrets.region`, and `io.berth.secret.NAME` for each file it
//!   holds: the fingerprint of the secret's *ciphertext* (never anything decrypted).

use std::collections::HashMap;

use crate::graph::{Address, Attrs, Resource};

pub const PROJECT: &str = "io.berth.project";
pub const RESOURCE: &str = "io.berth.resource";
pub const REGION: &str = "io.berth.region";
pub const HASH: &str = "io.berth.hash";
pub const ATTRS: &str = "io.berth.attrs";
pub const DEPENDS_ON: &str = "io.berth.depends_on";
pub const REVISION: &str = "io.berth.revision";
pub const IMAGE: &str = "io.berth.image";
pub const HELPER: &str = "io.berth.helper";

/// [`HELPER`]'s value on the keeper of a secrets volume.
pub const KEEPER: &str = "secrets-keeper";
/// On a keeper: the secrets volume it holds mounted.
pub const KEEPS: &str = "io.berth.keeps";
/// On a secrets volume: the pod (address without region) whose secrets it holds.
pub const SECRETS_POD: &str = "io.berth.secrets.pod";
/// On a secrets volume and its keeper: the region.
pub const SECRETS_REGION: &str = "io.berth.secrets.region";
/// On a secrets volume, before a secret's name: the fingerprint of its ciphertext.
pub const SECRET_FINGERPRINT: &str = "io.berth.secret.";

/// The label filter that finds a project's objects in one list call.
pub fn project_filter(project: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{PROJECT}={project}")])])
}

/// SHA-256 of the attributes' canonical JSON (sorted keys), hex.
pub fn hash(attrs: &Attrs) -> String {
    let json = serde_json::to_string(attrs).unwrap_or_default();
    crate::encode::sha256_hex(json.as_bytes())
}

/// Attributes too long for a label (the proxy's rendered config): the labels keep their
/// digest (`sha256:<hex>`); observation reads the text itself back from the object.
pub const DIGESTED: [&str; 1] = ["config"];

/// The digest a label keeps of a [`DIGESTED`] attribute.
pub fn digest(text: &str) -> String {
    format!("sha256:{}", crate::encode::sha256_hex(text.as_bytes()))
}

/// The labels for a resource of `project`.
pub fn encode(
    project: &str,
    resource: &Resource,
    revision: Option<u64>,
) -> HashMap<String, String> {
    let mut attrs = resource.attrs.clone();
    attrs.replace_values(|k, v| DIGESTED.contains(&k).then(|| digest(v)));
    let mut unqualified = resource.address.clone();
    unqualified.region = None;
    let mut deps: Vec<String> = resource
        .depends_on
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d.region = None;
            d.to_string()
        })
        .collect();
    deps.sort();
    let mut labels = HashMap::from([
        (PROJECT.to_owned(), project.to_owned()),
        (RESOURCE.to_owned(), unqualified.to_string()),
        (HASH.to_owned(), hash(&attrs)),
        (
            ATTRS.to_owned(),
            serde_json::to_string(&attrs).unwrap_or_default(),
        ),
        (DEPENDS_ON.to_owned(), deps.join(",")),
    ]);
    if let Some(r) = revision {
        labels.insert(REVISION.to_owned(), r.to_string());
    }
    labels
}

/// What the labels of an object say about it.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub address: Address,
    pub attrs: Attrs,
    pub depends_on: Vec<Address>,
    /// The labels were damaged: the attributes do not match their hash.
    pub tampered: bool,
}

/// Reads berth's labels; `None` when the object does not name a resource berth knows.
pub fn decode(labels: &HashMap<String, String>) -> Option<Decoded> {
    let address: Address = labels.get(RESOURCE)?.parse().ok()?;
    let attrs: Attrs = labels
        .get(ATTRS)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    let tampered = labels.get(HASH).is_none_or(|h| *h != hash(&attrs));
    let depends_on = labels
        .get(DEPENDS_ON)
        .map(|d| d.split(',').filter_map(|a| a.parse().ok()).collect())
        .unwrap_or_default();
    Some(Decoded {
        address,
        attrs,
        depends_on,
        tampered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_without_the_region() {
        let r = Resource {
            address: "pod.api[1]@fra".parse().unwrap(),
            attrs: Attrs::from([("image", "api:1")]),
            depends_on: vec!["network.default@fra".parse().unwrap()],
        };
        let labels = encode("shop", &r, Some(3));
        assert_eq!(labels[PROJECT], "shop");
        assert_eq!(labels[RESOURCE], "pod.api[1]");
        let d = decode(&labels).unwrap();
        assert_eq!(d.address.to_string(), "pod.api[1]");
        assert_eq!(d.attrs, r.attrs);
        assert_eq!(d.depends_on[0].to_string(), "network.default");
        assert!(!d.tampered);

        let mut changed = labels.clone();
        changed.insert(ATTRS.into(), r#"{"image":"api:2"}"#.into());
        assert!(decode(&changed).unwrap().tampered);
        assert!(decode(&HashMap::new()).is_none());
    }
}
