//! `berth restart POD`: the pod's running instances started again, one at a time, each
//! through its gates (running, health, post-deploy checks) before the next, under the
//! lock and the journal as an apply is. It is the apply machinery with a plan of its own:
//! every instance a `heal` (stopped, its secrets delivered again, started, gated), in
//! order. A pod that does not run as the spec says is refused: `apply` is what changes it.

use super::{OpError, Session};
use crate::graph::{Kind, Resource, ResourceGraph};
use crate::plan::Action;

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
        chosen.sort_by(|a, b| a.address.cmp(&b.address));
        // One at a time: each instance waits for the one before it in its region.
        let mut before: Option<crate::graph::Address> = None;
        for r in &mut chosen {
            r.depends_on = match &before {
                Some(b) if b.region == r.address.region => vec![b.clone()],
                _ => Vec::new(),
            };
            before = Some(r.address.clone());
        }
        self.graph = ResourceGraph::new(chosen)?;
        let instances: Vec<&Resource> = self.graph.in_order().collect();
        crate::plan::as_restart(&mut self.plan, &instances);
        // What runs is what the last revision recorded: a restart is not a new one.
        self.record_revision = false;
        Ok(())
    }
}
