//! The images and build contexts a session works from: the digest of each build context
//! (a local fact of the plan), the id each image reference names on its engine now, the
//! ids a revision pins, and the images deployed (recorded with the revision).

use std::path::Path;

use super::OpError;
use crate::observe::ObservedState;
use crate::resources;
use crate::spec::Spec;

/// The image id each pod's reference (its `image`, or the tag of its `build`) names on its
/// engine now, by address; a reference that is not there is left out.
pub(super) async fn resolve_images(
    desired: &[crate::graph::Resource],
    spec: &Spec,
    engines: &std::collections::HashMap<String, crate::engine::Engine>,
) -> std::collections::HashMap<String, String> {
    let primary = spec.primary_region();
    let mut out = std::collections::HashMap::new();
    for r in desired
        .iter()
        .filter(|r| r.address.kind == crate::graph::Kind::Pod)
    {
        let Some(reference) = crate::resources::attr::image_ref(&r.attrs) else {
            continue;
        };
        let region = r.address.region.as_deref().unwrap_or(primary);
        let Some(engine) = engines.get(region) else {
            continue;
        };
        if let Ok(true) = engine.image_present(reference).await
            && let Ok(id) = engine.image_id(reference).await
        {
            out.insert(r.address.to_string(), id);
        }
    }
    out
}

/// Pins every pod of a revision to the image id it ran, where the live container runs
/// another (or none): the same bits as then, whatever the tag points at now. Where the
/// spec's reference still names those very bits (`now`), it stays as it is, so that the
/// pod is labelled exactly as an apply of the spec labels it (no needless replace after).
pub(super) fn pin_images(
    desired: &mut [crate::graph::Resource],
    revision: &crate::state::revisions::Revision,
    observed: &ObservedState,
    now: &std::collections::HashMap<String, String>,
) {
    for r in desired
        .iter_mut()
        .filter(|r| r.address.kind == crate::graph::Kind::Pod)
    {
        let Some(id) = revision.images.get(&r.address.to_string()) else {
            continue;
        };
        let key = r.address.match_key();
        let live = observed
            .resources
            .iter()
            .find(|o| o.address.match_key() == key);
        let field = crate::resources::attr::image_field(&r.attrs);
        match live {
            // Already the same bits: as the container recorded them (a tag or the id), so
            // that nothing changes.
            Some(o) if o.image.as_ref() == Some(id) => {
                if let Some(v) = o.attrs.get(field) {
                    r.attrs.insert(field, v);
                }
            }
            // No container (a restore removed it), or another one: the spec's reference
            // still names the recorded bits.
            _ if now.get(&r.address.to_string()) == Some(id) => {}
            _ => {
                r.attrs.insert(field, id);
            }
        }
    }
}

/// The image id each pod instance runs now, by address (from the containers' labels).
pub(super) async fn deployed_images(
    spec: &Spec,
    engines: &std::collections::HashMap<String, crate::engine::Engine>,
) -> Result<std::collections::BTreeMap<String, String>, OpError> {
    let names = spec.region_names();
    let mut out = std::collections::BTreeMap::new();
    for name in &names {
        let Some(engine) = engines.get(*name) else {
            continue;
        };
        let shown = resources::shown_region(&names, name);
        for c in engine.containers(&spec.project.value).await? {
            let (Some(address), Some(image)) = (
                c.labels.get(crate::engine::labels::RESOURCE),
                c.labels.get(crate::engine::labels::IMAGE),
            ) else {
                continue;
            };
            if crate::engine::names::is_transient(&c.name) {
                continue; // set aside or a candidate, not what serves
            }
            let mut a: crate::graph::Address = match address.parse() {
                Ok(a) => a,
                Err(_) => continue,
            };
            a.region = shown.map(std::sync::Arc::from);
            out.insert(a.to_string(), image.clone());
        }
    }
    Ok(out)
}

/// The content digest of every pod's build context, by pod name (reading the files is
/// observation of the local filesystem, done before planning).
pub(super) fn build_digests(
    spec: &Spec,
    spec_dir: &Path,
) -> Result<std::collections::HashMap<String, String>, OpError> {
    let mut out = std::collections::HashMap::new();
    for p in spec.pods.iter() {
        if let Some(b) = &p.item.build {
            let dockerfile = b.value.dockerfile.as_deref().unwrap_or("Dockerfile");
            let digest =
                crate::engine::context::digest(&spec_dir.join(&b.value.context), dockerfile)?;
            out.insert(p.name.value.clone(), digest);
        }
    }
    Ok(out)
}
