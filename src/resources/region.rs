//! The context of one region's expansion: the region, how its addresses show it, and the
//! spec's names shared by every address that names a pod or a secret.

use std::sync::Arc;

use crate::graph::{Address, Kind};
use crate::spec::Spec;

/// The spec's pod and secret names as shared strings, made once per expansion (in the
/// order of the spec's entries): a pod's or secret's own address and every `depends_on`
/// entry naming it share one copy. At 50,000 pods that is 150,000 fewer small strings a revision.
pub(super) struct Names {
    pub(super) pods: Vec<Arc<str>>,
    pub(super) secrets: Vec<Arc<str>>,
}

impl Names {
    pub(super) fn new(spec: &Spec) -> Self {
        Names {
            pods: spec.pods.names().map(Arc::from).collect(),
            secrets: spec.secrets.names().map(Arc::from).collect(),
        }
    }

    pub(super) fn pod(&self, spec: &Spec, name: &str) -> Arc<str> {
        shared(&self.pods, spec.pods.position(name), name)
    }

    pub(super) fn secret(&self, spec: &Spec, name: &str) -> Arc<str> {
        shared(&self.secrets, spec.secrets.position(name), name)
    }
}

fn shared(names: &[Arc<str>], at: Option<usize>, name: &str) -> Arc<str> {
    at.and_then(|i| names.get(i))
        .cloned()
        .unwrap_or_else(|| Arc::from(name))
}

/// One region of the spec being expanded: its name, how addresses show it and its network.
pub(super) struct Region<'s> {
    pub(super) spec: &'s Spec,
    pub(super) names: &'s Names,
    pub(super) name: &'s str,
    pub(super) shown: Option<&'s str>,
    /// `shown`, shared by the addresses of the region's pods.
    shown_shared: Option<Arc<str>>,
    pub(super) network: Address,
}

impl<'s> Region<'s> {
    pub(super) fn new(
        spec: &'s Spec,
        names: &'s Names,
        name: &'s str,
        shown: Option<&'s str>,
    ) -> Self {
        let shown_shared: Option<Arc<str>> = shown.map(Arc::from);
        let mut network = Address::new(Kind::Network, "default");
        network.region = shown_shared.clone();
        Region {
            spec,
            names,
            name,
            shown,
            shown_shared,
            network,
        }
    }

    /// The addresses of the replicas of pod `name` here (none when it does not run here).
    pub(super) fn instances(&self, name: &str) -> Vec<Address> {
        // One lookup for the pod and its shared name (this runs for every dependency).
        let Some(at) = self.spec.pods.position(name) else {
            return Vec::new();
        };
        let p = &self.spec.pods.entries()[at].item;
        if !Spec::runs_in(&p.regions, self.name) {
            return Vec::new();
        }
        self.pod_addresses(shared(&self.names.pods, Some(at), name), p.replicas())
    }

    /// The addresses of a pod's replicas here: `pod.NAME`, or `pod.NAME[i]` for each of
    /// several.
    pub(super) fn pod_addresses(&self, name: Arc<str>, replicas: u32) -> Vec<Address> {
        let at = |index| {
            let mut a = Address::shared(Kind::Pod, name.clone()).index(index);
            a.region = self.shown_shared.clone();
            a
        };
        if replicas == 1 {
            return vec![at(None)];
        }
        (0..replicas).map(|i| at(Some(i))).collect()
    }
}
