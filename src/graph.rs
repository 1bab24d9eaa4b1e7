//! Resource addresses and the resource DAG.
//!
//! Every spec item becomes one or more [`Resource`]s with an [`Address`] (`pod.api`,
//! `pod.api[1]`, `secret.db_password`, `proxy@fra`, ...). Edges run from a resource to what it
//! depends on. The graph gives a deterministic topological order (dependencies first, ties
//! broken by address) and layers (resources in one layer do not depend on each other), and
//! prints itself as DOT or Mermaid (`berth graph`). A resource's attributes are [`Attrs`].

pub mod attrs;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use attrs::Attrs;

/// What kind of thing a resource is. The order is the order kinds are listed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Network,
    Volume,
    Secret,
    RateLimit,
    Pod,
    Proxy,
    Backup,
    Job,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Network,
        Kind::Volume,
        Kind::Secret,
        Kind::RateLimit,
        Kind::Pod,
        Kind::Proxy,
        Kind::Backup,
        Kind::Job,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Volume => "volume",
            Kind::Secret => "secret",
            Kind::RateLimit => "rate_limit",
            Kind::Pod => "pod",
            Kind::Proxy => "proxy",
            Kind::Backup => "backup",
            Kind::Job => "job",
        }
    }
}

/// A resource's address: `kind.name[index]@region`. The proxy has no name (`proxy@fra`);
/// only replicated pods have an index; only multi-region specs qualify by region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub kind: Kind,
    /// Shared: a resource's address is copied into every `depends_on` that names it, and a
    /// copy of an `Arc` is not a copy of the name.
    pub name: Arc<str>,
    /// The replica's index plus one, 0 for none: 4 bytes, where `Option<u32>` takes 8 and
    /// makes the address 48 bytes instead of 40 (half a million addresses at 50,000 pods).
    /// The order is that of `Option<u32>`. See [`Address::replica`].
    replica: u32,
    pub region: Option<Arc<str>>,
}

impl Address {
    pub fn new(kind: Kind, name: impl AsRef<str>) -> Self {
        Address::shared(kind, Arc::from(name.as_ref()))
    }

    /// An address whose name is shared with others (no copy of it).
    pub fn shared(kind: Kind, name: Arc<str>) -> Self {
        Address {
            kind,
            name,
            replica: 0,
            region: None,
        }
    }

    /// The replica `index`, none for a pod of one replica (the largest index is
    /// `u32::MAX - 1`, far above the most replicas a spec may ask for).
    pub fn index(mut self, index: Option<u32>) -> Self {
        self.replica = index.map_or(0, |i| i.saturating_add(1));
        self
    }

    pub fn region(mut self, region: Option<&str>) -> Self {
        self.region = region.map(Arc::from);
        self
    }

    /// The replica's index; none for a pod of one replica.
    pub fn replica(&self) -> Option<u32> {
        self.replica.checked_sub(1)
    }

    /// The identity used to match desired and observed resources: a single pod `pod.api` is
    /// the same container as `pod.api[0]` when replicas go from 1 to more.
    pub fn match_key(&self) -> (Kind, &str, u32, Option<&str>) {
        (
            self.kind,
            &self.name,
            self.replica().unwrap_or(0),
            self.region.as_deref(),
        )
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        if !self.name.is_empty() {
            write!(f, ".{}", self.name)?;
        }
        if let Some(i) = self.replica() {
            write!(f, "[{i}]")?;
        }
        if let Some(r) = &self.region {
            write!(f, "@{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("`{0}` is not a resource address (expected e.g. `pod.api`, `pod.api[1]@fra`, `proxy`)")]
pub struct AddressError(String);

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AddressError(s.to_owned());
        let (rest, region) = match s.split_once('@') {
            Some((r, reg)) if !reg.is_empty() => (r, Some(reg.to_owned())),
            Some(_) => return Err(err()),
            None => (s, None),
        };
        let (rest, index) = match rest.strip_suffix(']').and_then(|r| r.split_once('[')) {
            Some((r, i)) => {
                let i: u32 = i.parse().map_err(|_| err())?;
                (r, Some(i.checked_add(1).ok_or_else(err)? - 1))
            }
            None => (rest, None),
        };
        let (kind, name) = rest.split_once('.').unwrap_or((rest, ""));
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(err)?;
        if name.is_empty() != (kind == Kind::Proxy) {
            return Err(err());
        }
        Ok(Address {
            kind,
            name: Arc::from(name),
            replica: 0,
            region: region.map(Arc::from),
        }
        .index(index))
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One resource: its address, its normalised configuration as named text attributes (never
/// a secret value), and what it depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub address: Address,
    pub attrs: Attrs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Address>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("resource `{0}` is defined twice")]
    Duplicate(String),
    #[error("`{from}` depends on `{to}`, which does not exist")]
    Dangling { from: String, to: String },
    #[error("the resources {0} depend on each other in a cycle")]
    Cycle(String),
}

/// The DAG of desired resources. Edges point from a resource to its dependencies.
#[derive(Debug)]
pub struct ResourceGraph {
    graph: DiGraph<Resource, ()>,
    /// The nodes sorted by address: the index of lookups by address (no copy of them).
    by_address: Vec<NodeIndex>,
    /// Topological order, dependencies first, ties broken by address.
    order: Vec<NodeIndex>,
    /// Per node: 0 without dependencies, else one more than its deepest dependency.
    layer: Vec<usize>,
}

impl ResourceGraph {
    pub fn new(resources: Vec<Resource>) -> Result<Self, GraphError> {
        let mut graph = DiGraph::with_capacity(resources.len(), resources.len() * 2);
        for r in resources {
            graph.add_node(r);
        }
        let by_address = sorted_by_address(&graph)?;
        let find = |a: &Address| {
            by_address
                .binary_search_by(|n| graph[*n].address.cmp(a))
                .ok()
                .map(|i| by_address[i])
        };
        let mut edges = Vec::new();
        for n in graph.node_indices() {
            for dep in &graph[n].depends_on {
                let to = find(dep).ok_or_else(|| GraphError::Dangling {
                    from: graph[n].address.to_string(),
                    to: dep.to_string(),
                })?;
                edges.push((n, to));
            }
        }
        for (a, b) in edges {
            graph.update_edge(a, b, ());
        }
        let (order, layer) = topo(&graph, &by_address)?;
        Ok(ResourceGraph {
            graph,
            by_address,
            order,
            layer,
        })
    }

    /// The node of an address.
    fn node(&self, address: &Address) -> Option<NodeIndex> {
        self.by_address
            .binary_search_by(|n| self.graph[*n].address.cmp(address))
            .ok()
            .map(|i| self.by_address[i])
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    pub fn get(&self, address: &Address) -> Option<&Resource> {
        self.node(address).map(|n| &self.graph[n])
    }

    /// Resources in topological order: every resource after all it depends on.
    pub fn in_order(&self) -> impl Iterator<Item = &Resource> {
        self.order.iter().map(|n| &self.graph[*n])
    }

    /// The layer of a resource: resources of one layer can be applied concurrently.
    pub fn layer_of(&self, address: &Address) -> Option<usize> {
        self.node(address).map(|n| self.layer[n.index()])
    }

    /// Resources grouped by layer, each layer sorted by address.
    pub fn layers(&self) -> Vec<Vec<&Address>> {
        let mut layers: Vec<Vec<&Address>> = Vec::new();
        for n in &self.order {
            let l = self.layer[n.index()];
            if layers.len() <= l {
                layers.resize_with(l + 1, Vec::new);
            }
            layers[l].push(&self.graph[*n].address);
        }
        for l in &mut layers {
            l.sort();
        }
        layers
    }

    /// Resources that depend on `address` directly.
    pub fn dependents(&self, address: &Address) -> Vec<&Address> {
        let Some(n) = self.node(address) else {
            return Vec::new();
        };
        let mut out: Vec<&Address> = self
            .graph
            .neighbors_directed(n, Direction::Incoming)
            .map(|m| &self.graph[m].address)
            .collect();
        out.sort();
        out
    }

    /// Graphviz DOT; edges point from a resource to what it depends on.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph berth {\n  rankdir = \"RL\";\n  node [shape = box];\n");
        for r in self.in_order() {
            out.push_str(&format!("  \"{}\";\n", r.address));
        }
        for r in self.in_order() {
            let mut deps = r.depends_on.clone();
            deps.sort();
            for d in deps {
                out.push_str(&format!("  \"{}\" -> \"{}\";\n", r.address, d));
            }
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart; edges point from a resource to what it depends on.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart RL\n");
        let ids: HashMap<&Address, usize> = self
            .in_order()
            .enumerate()
            .map(|(i, r)| (&r.address, i))
            .collect();
        for r in self.in_order() {
            out.push_str(&format!("  n{}[\"{}\"]\n", ids[&r.address], r.address));
        }
        for r in self.in_order() {
            let mut deps: Vec<&Address> = r.depends_on.iter().collect();
            deps.sort();
            for d in deps {
                out.push_str(&format!("  n{} --> n{}\n", ids[&r.address], ids[d]));
            }
        }
        out
    }
}

/// The nodes sorted by address; an address held by two nodes is refused, the one whose
/// second holder comes first in the order the resources were given.
fn sorted_by_address(graph: &DiGraph<Resource, ()>) -> Result<Vec<NodeIndex>, GraphError> {
    let mut by_address: Vec<NodeIndex> = graph.node_indices().collect();
    // Equal addresses in the order given, so that the second of a pair follows the first.
    by_address.sort_unstable_by(|a, b| graph[*a].address.cmp(&graph[*b].address).then(a.cmp(b)));
    let second_holder = by_address
        .windows(2)
        .filter(|w| graph[w[0]].address == graph[w[1]].address)
        .map(|w| w[1])
        .min();
    match second_holder {
        Some(n) => Err(GraphError::Duplicate(graph[n].address.to_string())),
        None => Ok(by_address),
    }
}

/// Kahn's algorithm with a min-heap on the address, so the order is the same on every run.
/// The heap holds each node's rank in address order, so it compares integers, not strings.
fn topo(
    graph: &DiGraph<Resource, ()>,
    by_address: &[NodeIndex],
) -> Result<(Vec<NodeIndex>, Vec<usize>), GraphError> {
    let n = graph.node_count();
    let mut rank = vec![0u32; n];
    for (r, i) in by_address.iter().enumerate() {
        rank[i.index()] = r as u32;
    }
    let mut missing: Vec<usize> = graph
        .node_indices()
        .map(|i| graph.neighbors_directed(i, Direction::Outgoing).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<u32>> = graph
        .node_indices()
        .filter(|i| missing[i.index()] == 0)
        .map(|i| Reverse(rank[i.index()]))
        .collect();
    let mut order = Vec::with_capacity(n);
    let mut layer = vec![0usize; n];
    while let Some(Reverse(r)) = ready.pop() {
        let i = by_address[r as usize];
        order.push(i);
        for dependent in graph.neighbors_directed(i, Direction::Incoming) {
            let d = dependent.index();
            layer[d] = layer[d].max(layer[i.index()] + 1);
            missing[d] -= 1;
            if missing[d] == 0 {
                ready.push(Reverse(rank[d]));
            }
        }
    }
    if order.len() != n {
        let mut stuck: Vec<String> = graph
            .node_indices()
            .filter(|i| missing[i.index()] > 0)
            .map(|i| format!("`{}`", graph[i].address))
            .collect();
        stuck.sort();
        return Err(GraphError::Cycle(stuck.join(", ")));
    }
    Ok((order, layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(addr: &str, deps: &[&str]) -> Resource {
        Resource {
            address: addr.parse().unwrap(),
            attrs: Attrs::new(),
            depends_on: deps.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn addresses_round_trip() {
        for a in [
            "pod.api",
            "pod.api[1]",
            "pod.api[0]@ord",
            "proxy",
            "proxy@fra",
            "rate_limit.api",
            "network.default@fra",
        ] {
            assert_eq!(a.parse::<Address>().unwrap().to_string(), a);
        }
        for bad in [
            "",
            "pod",
            "pod.",
            "proxy.x",
            "thing.x",
            "pod.api[x]",
            "pod.api@",
            // The packed index holds up to u32::MAX - 1.
            "pod.api[4294967295]",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
        let top: Address = "pod.api[4294967294]".parse().unwrap();
        assert_eq!(top.replica(), Some(u32::MAX - 1));
    }

    #[test]
    fn the_packed_replica_index_orders_and_matches_as_an_option_did() {
        let at = |s: &str| s.parse::<Address>().unwrap();
        // None before Some(0) before Some(1), then the region.
        let mut v = [
            at("pod.api[1]"),
            at("pod.api[0]@b"),
            at("pod.api"),
            at("pod.api[0]"),
        ];
        v.sort();
        let shown: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            shown,
            ["pod.api", "pod.api[0]", "pod.api[0]@b", "pod.api[1]"]
        );
        assert_eq!(at("pod.api").replica(), None);
        assert_eq!(
            Address::new(Kind::Pod, "api").index(Some(0)).replica(),
            Some(0)
        );
        assert_eq!(Address::new(Kind::Pod, "api").index(None), at("pod.api"));
        // A single pod is the same container as replica 0 once it is replicated.
        assert_eq!(at("pod.api").match_key(), at("pod.api[0]").match_key());
    }

    #[test]
    fn order_is_dependencies_first_and_deterministic() {
        let g = ResourceGraph::new(vec![
            res("pod.web", &["pod.api"]),
            res("pod.api", &["pod.db", "secret.jwt"]),
            res("secret.jwt", &[]),
            res("pod.db", &[]),
        ])
        .unwrap();
        let order: Vec<String> = g.in_order().map(|r| r.address.to_string()).collect();
        assert_eq!(order, ["secret.jwt", "pod.db", "pod.api", "pod.web"]);
        let layers: Vec<Vec<String>> = g
            .layers()
            .into_iter()
            .map(|l| l.into_iter().map(|a| a.to_string()).collect())
            .collect();
        assert_eq!(
            layers,
            vec![
                vec!["secret.jwt", "pod.db"],
                vec!["pod.api"],
                vec!["pod.web"]
            ]
        );
        assert_eq!(g.dependents(&"pod.api".parse().unwrap()).len(), 1);
    }

    #[test]
    fn cycles_and_dangling_edges_are_refused() {
        let e = ResourceGraph::new(vec![res("pod.a", &["pod.b"]), res("pod.b", &["pod.a"])])
            .unwrap_err();
        assert!(matches!(e, GraphError::Cycle(_)));
        let e = ResourceGraph::new(vec![res("pod.a", &["pod.zz"])]).unwrap_err();
        assert!(matches!(e, GraphError::Dangling { .. }));
    }
}
