//! Dependency cycles among pods (`depends_on`) and jobs (`depends_on`, `before`), each
//! reported once along its edges.

use std::collections::{BTreeSet, HashMap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::Checker;
use crate::diag::{Diagnostic, Span};

impl Checker<'_> {
    pub(super) fn cycles(&mut self) {
        let pods = &self.spec.pods;
        let mut g: DiGraph<&str, Span> = DiGraph::with_capacity(pods.len(), pods.len());
        let mut idx: HashMap<&str, NodeIndex> = HashMap::with_capacity(pods.len());
        for p in pods.iter() {
            idx.entry(p.name.value.as_str())
                .or_insert_with(|| g.add_node(&p.name.value));
        }
        for p in pods.iter() {
            let from = idx[p.name.value.as_str()];
            for d in &p.item.depends_on {
                // `db@iad` waits for `db` too (in one region): a cycle of pods is one
                // whatever regions its entries name.
                let (dep, _) = crate::spec::Pod::dependency(&d.value);
                if dep == p.name.value {
                    continue; // a self-dependency (reported), or the pod of another region
                }
                if let Some(&to) = idx.get(dep) {
                    g.add_edge(from, to, d.span);
                }
            }
        }
        // A job waits for its `depends_on` and is waited for by its `before`: a cycle may
        // pass through it (the direct one, a pod in both lists, is reported by `jobs`).
        for j in self.spec.jobs.iter() {
            let job = *idx
                .entry(j.name.value.as_str())
                .or_insert_with(|| g.add_node(&j.name.value));
            for d in &j.item.depends_on {
                if let Some(&to) = idx.get(d.value.as_str()) {
                    g.add_edge(job, to, d.span);
                }
            }
            for b in &j.item.before {
                let direct = j.item.depends_on.iter().any(|d| d.value == b.value);
                if let (Some(&from), false) = (idx.get(b.value.as_str()), direct) {
                    g.add_edge(from, job, b.span);
                }
            }
        }
        let mut sccs = tarjan_scc(&g);
        sccs.retain(|c| c.len() > 1);
        sccs.sort_by_key(|c| c.iter().map(|n| g[*n]).min());
        for scc in sccs {
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc.iter().min_by_key(|n| g[**n]).unwrap_or(&scc[0]);
            let path = cycle_through(&g, start, &members);
            let names: Vec<&str> = path.iter().map(|(n, _)| g[*n]).collect();
            let mut shown = names.clone();
            shown.push(names[0]);
            let chain = shown.join(" -> ");
            let mut d = Diagnostic::error("dependency-cycle", format!("dependency cycle: {chain}"))
                .help("remove one of these `depends_on` (or a job's `before`) entries: a pod cannot wait for itself");
            for (i, (_, edge_span)) in path.iter().enumerate() {
                let label = format!("`{}` depends on `{}`", shown[i], shown[i + 1]);
                d = if i == 0 {
                    d.at(*edge_span, label)
                } else {
                    d.related(*edge_span, label)
                };
            }
            self.push(d);
        }
        self.region_cycles();
    }

    /// Regions whose pods wait for each other's (`depends_on: [db@iad]` one way, and
    /// `[api@ord]` the other): no order of the rollout serves both.
    fn region_cycles(&mut self) {
        let spec = self.spec;
        let Err(stuck) = spec.rollout_order() else {
            return;
        };
        let mut d = Diagnostic::error(
            "region-cycle",
            format!(
                "the regions {} wait for each other: no rollout order puts each after the regions it depends on",
                stuck
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .help(
            "a region is rolled out after the regions its pods depend on (`POD@REGION`): remove one of these entries, or move the pods so the dependencies go one way",
        );
        let mut first = true;
        for p in spec.pods.iter() {
            let here = spec.regions_of(&p.item.regions);
            for e in &p.item.depends_on {
                let (pod, Some(before)) = crate::spec::Pod::dependency(&e.value) else {
                    continue;
                };
                let Some(after) = here.iter().find(|r| stuck.contains(r) && **r != before) else {
                    continue;
                };
                if !stuck.contains(&before) {
                    continue;
                }
                let label = format!(
                    "`{}` in `{after}` waits for `{pod}` in `{before}`",
                    p.name.value
                );
                d = if first {
                    d.at(e.span, label)
                } else {
                    d.related(e.span, label)
                };
                first = false;
            }
        }
        self.push(d);
    }
}

/// Depth-first search for a cycle from `start` back to itself inside one SCC; returns the
/// nodes in order with the span of the edge leaving each.
fn cycle_through(
    g: &DiGraph<&str, Span>,
    start: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> Vec<(NodeIndex, Span)> {
    fn dfs(
        g: &DiGraph<&str, Span>,
        at: NodeIndex,
        start: NodeIndex,
        members: &BTreeSet<NodeIndex>,
        seen: &mut BTreeSet<NodeIndex>,
        path: &mut Vec<(NodeIndex, Span)>,
    ) -> bool {
        let mut edges: Vec<_> = g.edges(at).collect();
        edges.sort_by_key(|e| g[petgraph::visit::EdgeRef::target(e)]);
        for e in edges {
            let to = petgraph::visit::EdgeRef::target(&e);
            if !members.contains(&to) {
                continue;
            }
            path.push((at, *e.weight()));
            if to == start {
                return true;
            }
            if seen.insert(to) && dfs(g, to, start, members, seen, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    let mut seen = BTreeSet::from([start]);
    dfs(g, start, start, members, &mut seen, &mut path);
    path
}
