//! `berth restart POD`: the pod's running instances started again, one at a time, each
//! through its gates (running, health, post-deploy checks) before the next, under the
//! lock and the journal as an apply is. It is the apply machinery with a plan of its own:
//! every instance a `heal` (stopped, its secrets delivered again, started, gated), in
//! order. A pod that does not run as the spec says is refused: `apply` is what changes it.

use super::{OpError, Session};
use crate::graph::{Kind, Resource, ResourceGraph};
use crate::plan::Action;

/// Orders `instances` so that each waits for the one before it in its region (by
/// replica); the regions themselves go one after another as a rollout orders them.
fn one_at_a_time(instances: &mut [Resource]) {
    instances.sort_by(|a, b| a.address.cmp(&b.address));
    let mut last: std::collections::HashMap<Option<std::sync::Arc<str>>, crate::graph::Address> =
        std::collections::HashMap::new();
    for r in instances.iter_mut() {
        let region = r.address.region.clone();
        r.depends_on = last.get(&region).cloned().into_iter().collect();
        last.insert(region, r.address.clone());
    }
}

impl Session {
    /// Makes this session's plan the restart of `pod` (of its replica `replica` only, when
    /// given): its instances one after another, the replicas of a region in order and the
    /// regions as a rollout orders them (the primary first).
    pub fn restart(&mut self, pod: &str, replica: Option<u32>) -> Result<(), OpError> {
        let spec = &self.project.spec;
        let Some(spec_pod) = spec.pods.get(pod) else {
            return Err(super::logs::no_such_pod(&self.project.spec_path, spec, pod));
        };
        let replicas = spec_pod.replicas();
        if let Some(n) = replica.filter(|n| *n >= replicas) {
            return Err(OpError::Refused {
                message: format!("pod `{pod}` has {replicas} replica(s): no replica {n}"),
                help: format!("give --replica 0 to {}", replicas - 1),
            });
        }
        let of_pod = |a: &crate::graph::Address| a.kind == Kind::Pod && &*a.name == pod;
        let pending: Vec<String> = self
            .plan
            .changes
            .iter()
            .filter(|c| of_pod(&c.address) && !matches!(c.action, Action::NoOp | Action::Heal))
            .map(|c| format!("{} ({})", c.address, c.action.verb()))
            .collect();
        if !pending.is_empty() {
            return Err(OpError::Refused {
                message: format!(
                    "pod `{pod}` does not run as the spec says: {}; nothing was restarted",
                    pending.join(", ")
                ),
                help: "`berth plan` shows the difference, and `berth apply` brings the pod in line (and starts it anew); `restart` starts again what already runs as the spec says".into(),
            });
        }
        let mut chosen: Vec<Resource> = self
            .graph
            .in_order()
            .filter(|r| of_pod(&r.address))
            .filter(|r| replica.is_none_or(|n| r.address.replica().unwrap_or(0) == n))
            .cloned()
            .collect();
        one_at_a_time(&mut chosen);
        self.graph = ResourceGraph::new(chosen)?;
        let instances: Vec<&Resource> = self.graph.in_order().collect();
        crate::plan::as_restart(&mut self.plan, &instances);
        // What runs is what the last revision recorded: a restart is not a new one.
        self.record_revision = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Address;

    #[test]
    fn each_replica_waits_for_the_one_before_it_in_its_own_region() {
        let instance = |replica: u32, region: &str| Resource {
            address: Address::new(Kind::Pod, "api")
                .index(Some(replica))
                .region(Some(region)),
            attrs: Default::default(),
            depends_on: Vec::new(),
        };
        let mut all = vec![
            instance(1, "iad"),
            instance(0, "fra"),
            instance(1, "fra"),
            instance(0, "iad"),
        ];
        one_at_a_time(&mut all);
        let deps: Vec<(String, Vec<String>)> = all
            .iter()
            .map(|r| {
                (
                    r.address.to_string(),
                    r.depends_on.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        let want = |a: &str, d: &[&str]| (a.to_owned(), d.iter().map(|s| s.to_string()).collect());
        assert!(deps.contains(&want("pod.api[0]@fra", &[])), "{deps:?}");
        assert!(
            deps.contains(&want("pod.api[1]@fra", &["pod.api[0]@fra"])),
            "{deps:?}"
        );
        assert!(deps.contains(&want("pod.api[0]@iad", &[])), "{deps:?}");
        assert!(
            deps.contains(&want("pod.api[1]@iad", &["pod.api[0]@iad"])),
            "{deps:?}"
        );
    }
}
