//! The jobs of a region: one resource each, configured as the pod its container is made
//! as (`Job::as_pod`), depending on what a pod would (its network, volumes, secrets and
//! `depends_on`), with the pods of its `before:` depending on it.

use std::sync::Arc;

use super::region::Region;
use super::{LocalFacts, attr, pod_attrs};
use crate::graph::{Address, Kind, Resource};
use crate::spec::Spec;

/// Pushes the region's jobs onto `out`, and makes the pods of their `before:` (already in
/// `out`) depend on them.
pub(super) fn job_resources(region: &Region<'_>, facts: &LocalFacts, out: &mut Vec<Resource>) {
    let spec = region.spec;
    for j in spec
        .jobs
        .iter()
        .filter(|j| Spec::runs_in(&j.item.regions, region.name))
    {
        let pod = j.item.as_pod();
        let (mut attrs, mut deps) = pod_attrs(region, &pod, None, facts);
        // A job is not updated, blue-green or otherwise: it runs again.
        attrs.remove(attr::UPDATE_STRATEGY);
        deps.push(region.network.clone());
        for m in &pod.volumes {
            if let Ok(mount) = m.get()
                && !mount.bind
            {
                deps.push(Address::new(Kind::Volume, mount.source).region(region.shown));
            }
        }
        for d in &pod.depends_on {
            deps.extend(region.instances(&d.value));
        }
        deps.sort();
        deps.dedup();
        let mut address = Address::shared(Kind::Job, Arc::from(j.name.value.as_str()));
        address.region = region.network.region.clone();
        for gated in &j.item.before {
            let here: Vec<Address> = region.instances(&gated.value);
            for r in out.iter_mut().filter(|r| here.contains(&r.address)) {
                r.depends_on.push(address.clone());
            }
        }
        out.push(Resource {
            address,
            attrs,
            depends_on: deps,
        });
    }
}
