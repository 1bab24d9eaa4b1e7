//! The planner: a pure function from (desired graph, observed state) to a [`Plan`].
//!
//! It does no I/O and changes nothing: detection happens before it, execution after it.
//! The plan is plain serialisable data (JSON format documented in docs/plan-json.md), so it
//! can be rendered, saved, compared and tested from fixture files alone.

pub mod render;
pub mod saved;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::graph::{Address, Attrs, Kind, Resource, ResourceGraph};
use crate::observe::{ObservedResource, ObservedState, Origin};
use crate::resources::attr;
use crate::sensitive::SENSITIVE_MARK;

/// An attribute value as a plan may show it: concealed values (whole, or an argument in a
/// list) become `(sensitive)`.
fn public(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(at) = rest.find(SENSITIVE_MARK) {
        out.push_str(&rest[..at]);
        out.push_str("(sensitive)");
        let after = &rest[at + SENSITIVE_MARK.len()..];
        rest = after.split_once(')').map_or("", |(_, tail)| tail);
    }
    out.push_str(rest);
    out
}

/// Version of the plan's JSON shape; bumped on any incompatible change.
pub const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    Heal,
    NoOp,
}

impl Action {
    /// The Terraform-like marker of the action.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::Heal => "!",
            Action::NoOp => " ",
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update in place",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Heal => "heal",
            Action::NoOp => "no change",
        }
    }
}

/// One attribute that differs: absent `old` is an added attribute, absent `new` a removed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forces_replacement: bool,
}

/// What happens to one resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub action: Action,
    /// Why, in a few words: which fields force a replacement, why a resource is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// For a replacement: whether the new resource starts before the old one is removed
    /// (blue-green) or after (recreate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_order: Option<ReplaceOrder>,
    /// The gates apply runs after this change (health, post-deploy checks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<String>,
    /// The region of the change in a spec with several (the address's `@region`), so
    /// that the flat list can be read by region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceOrder {
    /// Blue-green: start the new, wait healthy, then remove the old (`+/-`).
    CreateBeforeDestroy,
    /// Recreate: stop the old (kept until the new is healthy), then start the new (`-/+`).
    DestroyBeforeCreate,
}

impl Change {
    /// The marker of the change: `+/-` for a blue-green replacement, else the action's.
    pub fn symbol(&self) -> &'static str {
        match self.replace_order {
            Some(ReplaceOrder::CreateBeforeDestroy) => "+/-",
            _ => self.action.symbol(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub heal: usize,
    pub no_op: usize,
}

impl Summary {
    pub fn changes(&self) -> usize {
        self.create + self.update + self.replace + self.delete + self.heal
    }
}

/// The ordered list of changes that takes the observed state to the desired one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub project: String,
    pub observed: Origin,
    /// Creations, updates and replacements in dependency order, then deletions with
    /// dependents first; unchanged resources are listed as `no-op`.
    pub changes: Vec<Change>,
    pub summary: Summary,
    /// Kinds the observation could not see: their resources are not in `changes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unobserved: Vec<Kind>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.summary.changes() > 0
    }
}

/// Whether a change to `field` of a `kind` resource needs the resource replaced (a new
/// container, a new volume) rather than updated in place.
pub fn forces_replacement(kind: Kind, field: &str) -> bool {
    match kind {
        // A container's configuration, and the labels that record it, cannot change after
        // creation: any change is a new container.
        // TODO-design: fields only berth reads (`depends_on`, `update.strategy`, checks) and
        // those the engine updates live (`restart`, `resources.*`) could change in place
        // once the applied configuration is recorded in the state directory.
        // A job's run is done: another configuration is another run.
        Kind::Pod | Kind::Job => true,
        // A volume is never replaced by a plan: that would lose its data.
        Kind::Volume => false,
        Kind::Network => true,
        // The proxy reloads new config in place; a new image, ports or TLS listeners (the
        // mount of their certificates) need a new container.
        Kind::Proxy => field == attr::IMAGE || field == attr::LISTEN || field == attr::TLS,
        Kind::Secret | Kind::RateLimit | Kind::Backup => false,
    }
}

/// Plans the changes from `observed` to `desired`. Pure and deterministic.
pub fn plan(project: &str, desired: &ResourceGraph, observed: &ObservedState) -> Plan {
    let mut by_key: HashMap<_, &ObservedResource> =
        HashMap::with_capacity(observed.resources.len());
    for o in &observed.resources {
        by_key.insert(o.address.match_key(), o);
    }
    let mut changes = Vec::with_capacity(desired.len() + 8);
    let mut summary = Summary::default();
    for want in desired.in_order() {
        if observed.unobserved.contains(&want.address.kind) {
            continue;
        }
        let change = match by_key.remove(&want.address.match_key()) {
            None => Change {
                address: want.address.clone(),
                action: Action::Create,
                reason: None,
                fields: want
                    .attrs
                    .iter()
                    .map(|(k, v)| FieldChange {
                        field: k.to_owned(),
                        old: None,
                        new: Some(public(v)),
                        forces_replacement: false,
                    })
                    .collect(),
                replace_order: None,
                gates: gates(want),
                region: want.address.region.as_deref().map(str::to_owned),
            },
            Some(have) => compare(want, have),
        };
        count(&mut summary, change.action);
        changes.push(change);
    }
    let mut gone: Vec<&ObservedResource> = by_key.into_values().collect();
    for o in order_for_deletion(&mut gone) {
        let reason = if o.address.kind == Kind::Volume {
            "no longer in the spec; its data is kept unless apply is told to delete volumes"
        } else {
            "no longer in the spec"
        };
        count(&mut summary, Action::Delete);
        changes.push(Change {
            address: o.address.clone(),
            action: Action::Delete,
            reason: Some(reason.into()),
            fields: Vec::new(),
            replace_order: None,
            gates: Vec::new(),
            region: o.address.region.as_deref().map(str::to_owned),
        });
    }
    Plan {
        format_version: PLAN_FORMAT_VERSION,
        project: project.to_owned(),
        observed: observed.origin.clone(),
        changes,
        summary,
        unobserved: observed.unobserved.clone(),
    }
}

/// A restart's plan (`berth restart`): each of `instances` (pods, running as the spec
/// says) started again through its gates, in the order given; nothing else changes.
pub fn as_restart(plan: &mut Plan, instances: &[&Resource]) {
    plan.changes = instances
        .iter()
        .map(|r| Change {
            address: r.address.clone(),
            action: Action::Heal,
            reason: Some("restart".into()),
            fields: Vec::new(),
            replace_order: None,
            gates: gates(r),
            region: r.address.region.as_deref().map(str::to_owned),
        })
        .collect();
    let mut summary = Summary::default();
    for c in &plan.changes {
        count(&mut summary, c.action);
    }
    plan.summary = summary;
}

/// A destroy's plan says why each resource goes (or, a volume, why it stays) in a
/// destroy's words, not "no longer in the spec": the spec did not change.
pub fn as_destroy(plan: &mut Plan) {
    for c in plan
        .changes
        .iter_mut()
        .filter(|c| c.action == Action::Delete)
    {
        c.reason = Some(
            if c.address.kind == Kind::Volume {
                "a destroy keeps it, and its data, without --delete-volumes"
            } else {
                "destroyed with the project"
            }
            .into(),
        );
    }
}

fn count(s: &mut Summary, a: Action) {
    match a {
        Action::Create => s.create += 1,
        Action::Update => s.update += 1,
        Action::Replace => s.replace += 1,
        Action::Delete => s.delete += 1,
        Action::Heal => s.heal += 1,
        Action::NoOp => s.no_op += 1,
    }
}

fn compare(want: &Resource, have: &ObservedResource) -> Change {
    let kind = want.address.kind;
    let field = |name: &str, old: Option<&str>, new: Option<&str>| FieldChange {
        field: name.to_owned(),
        old: old.map(public),
        new: new.map(public),
        forces_replacement: forces_replacement(kind, name),
    };
    let mut fields: Vec<FieldChange> = have
        .attrs
        .iter()
        .filter(|(k, o)| want.attrs.get(k) != Some(*o))
        .map(|(k, o)| field(k, Some(o), want.attrs.get(k)))
        .chain(
            want.attrs
                .iter()
                .filter(|(k, _)| !have.attrs.contains_key(k))
                .map(|(k, n)| field(k, None, Some(n))),
        )
        .collect();
    fields.sort_by(|a, b| a.field.cmp(&b.field));
    let forcing: Vec<&str> = fields
        .iter()
        .filter(|f| f.forces_replacement)
        .map(|f| f.field.as_str())
        .collect();
    let (action, reason) = if !forcing.is_empty() {
        // A secret's new ciphertext is named as the secret that changed.
        let mut secrets = Vec::new();
        let mut fields = Vec::new();
        for f in &forcing {
            match f
                .strip_suffix(".version")
                .filter(|s| s.starts_with(attr::SECRET_PREFIX))
            {
                Some(secret) => secrets.push(secret),
                None => fields.push(*f),
            }
        }
        let mut parts = Vec::new();
        if !fields.is_empty() && kind == Kind::Job {
            parts.push(listed(&fields, "changed", "changed"));
        } else if !fields.is_empty() {
            parts.push(format!(
                "{} replacement",
                listed(&fields, "forces", "force")
            ));
        }
        if !secrets.is_empty() {
            parts.push(format!("{} changed", listed(&secrets, "", "").trim_end()));
        }
        (Action::Replace, Some(parts.join("; ")))
    } else if !fields.is_empty() {
        (Action::Update, None)
    } else if !have.drift.is_empty() {
        fields = have
            .drift
            .iter()
            .map(|d| FieldChange {
                field: d.field.clone(),
                old: Some(d.observed.clone()),
                new: Some(d.expected.clone()),
                forces_replacement: false,
            })
            .collect();
        let what: Vec<&str> = have.drift.iter().map(|d| d.field.as_str()).collect();
        (Action::Heal, Some(format!("drift in {}", what.join(", "))))
    } else {
        (Action::NoOp, None)
    };
    let gates = if matches!(action, Action::Replace | Action::Update | Action::Heal) {
        gates(want)
    } else {
        Vec::new()
    };
    let replace_order = (action == Action::Replace && kind != Kind::Job).then(|| {
        match want.attrs.get(attr::UPDATE_STRATEGY) {
            Some("blue-green") => ReplaceOrder::CreateBeforeDestroy,
            _ => ReplaceOrder::DestroyBeforeCreate,
        }
    });
    Change {
        address: want.address.clone(),
        action,
        reason,
        fields,
        replace_order,
        gates,
        region: want.address.region.as_deref().map(str::to_owned),
    }
}

/// `a`, `a and b`, `a, b and c`, `a, b, c and N more`, followed by the verb in its
/// singular or plural form.
fn listed(items: &[&str], one: &str, many: &str) -> String {
    match items {
        [a] => format!("{a} {one}"),
        [a, b] => format!("{a} and {b} {many}"),
        [a, b, c] => format!("{a}, {b} and {c} {many}"),
        [a, b, c, rest @ ..] => format!("{a}, {b}, {c} and {} more {many}", rest.len()),
        [] => String::new(),
    }
}

/// The gates apply runs after changing a resource, described from its attributes.
fn gates(r: &Resource) -> Vec<String> {
    if r.address.kind == Kind::Job {
        return vec!["exits 0".to_owned()];
    }
    if r.address.kind != Kind::Pod {
        return Vec::new();
    }
    let probed =
        r.attrs.get(attr::HEALTH_CMD).is_some() || r.attrs.get(attr::HEALTH_HTTP).is_some();
    let mut g = vec![match r.attrs.get(attr::HEALTH_MIN_UPTIME) {
        Some(uptime) => format!("running for {uptime}"),
        None if !probed => format!(
            "running for {}",
            crate::spec::units::format_duration(crate::spec::DEFAULT_MIN_UPTIME)
        ),
        None => "running".to_owned(),
    }];
    if let Some(cmd) = r.attrs.get(attr::HEALTH_CMD) {
        g.push(format!("healthy: {cmd}"));
    }
    if let Some(http) = r.attrs.get(attr::HEALTH_HTTP) {
        g.push(format!("healthy: GET {http}"));
    }
    g.extend(
        r.attrs
            .iter()
            .filter(|(k, _)| k.starts_with(attr::CHECK_PREFIX))
            .map(|(k, v)| format!("{k}: {v}")),
    );
    g
}

/// Deleted resources with dependents before what they depend on, ties by address.
fn order_for_deletion<'a>(gone: &mut [&'a ObservedResource]) -> Vec<&'a ObservedResource> {
    gone.sort_by(|a, b| a.address.cmp(&b.address));
    let present: HashMap<&Address, usize> = gone
        .iter()
        .enumerate()
        .map(|(i, o)| (&o.address, i))
        .collect();
    let as_resources: Vec<Resource> = gone
        .iter()
        .map(|o| Resource {
            address: o.address.clone(),
            attrs: Attrs::new(),
            depends_on: o
                .depends_on
                .iter()
                .filter(|d| present.contains_key(d))
                .cloned()
                .collect(),
        })
        .collect();
    match ResourceGraph::new(as_resources) {
        Ok(g) => {
            let mut order: Vec<&ObservedResource> =
                g.in_order().map(|r| gone[present[&r.address]]).collect();
            order.reverse();
            order
        }
        // Observed dependencies that contradict each other: fall back to address order.
        Err(_) => gone.iter().rev().copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(addr: &str, attrs: &[(&str, &str)], deps: &[&str]) -> Resource {
        Resource {
            address: addr.parse().unwrap(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            depends_on: deps.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    fn observed(resources: Vec<Resource>) -> ObservedState {
        ObservedState::from_resources(
            Origin::Spec {
                file: "old.yaml".into(),
            },
            resources,
        )
    }

    #[test]
    fn actions_follow_the_fields_that_changed() {
        let desired = ResourceGraph::new(vec![
            res("secret.jwt", &[("file", "b.age")], &[]),
            res(
                "pod.api",
                &[("image", "api:2"), ("depends_on", "db")],
                &["secret.jwt"],
            ),
            res("pod.web", &[("image", "web:1"), ("restart", "always")], &[]),
            res("pod.new", &[("image", "new:1")], &[]),
        ])
        .unwrap();
        let old = observed(vec![
            res("secret.jwt", &[("file", "a.age")], &[]),
            res("pod.api", &[("image", "api:1")], &["secret.jwt"]),
            res("pod.web", &[("image", "web:1"), ("restart", "always")], &[]),
            res("pod.old", &[("image", "old:1")], &["pod.older"]),
            res("pod.older", &[("image", "older:1")], &[]),
        ]);
        let p = plan("shop", &desired, &old);
        let got: Vec<(String, Action)> = p
            .changes
            .iter()
            .map(|c| (c.address.to_string(), c.action))
            .collect();
        assert_eq!(
            got,
            vec![
                ("secret.jwt".into(), Action::Update),
                ("pod.api".into(), Action::Replace),
                ("pod.new".into(), Action::Create),
                ("pod.web".into(), Action::NoOp),
                ("pod.old".into(), Action::Delete),
                ("pod.older".into(), Action::Delete),
            ]
        );
        let api = &p.changes[1];
        // Every change to a pod is a new container (labels are immutable).
        assert_eq!(
            api.reason.as_deref(),
            Some("depends_on and image force replacement")
        );
        assert_eq!(api.fields.len(), 2);
        assert!(api.fields.iter().all(|f| f.forces_replacement));
        // A secret's fields change in place.
        assert!(p.changes[0].fields.iter().all(|f| !f.forces_replacement));
        assert_eq!(
            p.summary,
            Summary {
                create: 1,
                update: 1,
                replace: 1,
                delete: 2,
                heal: 0,
                no_op: 1
            }
        );
    }

    #[test]
    fn one_replica_is_the_same_container_as_index_zero() {
        let desired = ResourceGraph::new(vec![
            res("pod.api[0]", &[("image", "a")], &[]),
            res("pod.api[1]", &[("image", "a")], &[]),
        ])
        .unwrap();
        let p = plan(
            "x",
            &desired,
            &observed(vec![res("pod.api", &[("image", "a")], &[])]),
        );
        let got: Vec<Action> = p.changes.iter().map(|c| c.action).collect();
        assert_eq!(got, vec![Action::NoOp, Action::Create]);
    }

    #[test]
    fn concealed_values_are_never_shown() {
        use crate::sensitive::conceal;
        assert_eq!(public(&conceal("hunter2")), "(sensitive)");
        let list = format!("[\"serve\",\"{}\"]", conceal("postgres://a:b@c/d"));
        assert_eq!(public(&list), "[\"serve\",\"(sensitive)\"]");
        assert_eq!(public("plain"), "plain");
    }

    #[test]
    fn a_new_secret_ciphertext_is_named_as_the_secret_that_changed() {
        let pod = |v: &str, image: &str| {
            res(
                "pod.api",
                &[
                    ("image", image),
                    ("secret.k.version", v),
                    ("secret.j.version", "j"),
                ],
                &[],
            )
        };
        let desired = ResourceGraph::new(vec![pod("sha256:2", "a")]).unwrap();
        let p = plan("x", &desired, &observed(vec![pod("sha256:1", "a")]));
        assert_eq!(p.changes[0].action, Action::Replace);
        assert_eq!(p.changes[0].reason.as_deref(), Some("secret.k changed"));
        let desired = ResourceGraph::new(vec![pod("sha256:2", "b")]).unwrap();
        let p = plan("x", &desired, &observed(vec![pod("sha256:1", "a")]));
        assert_eq!(
            p.changes[0].reason.as_deref(),
            Some("image forces replacement; secret.k changed")
        );
    }

    #[test]
    fn drift_without_config_change_heals() {
        let desired = ResourceGraph::new(vec![res("pod.api", &[("image", "a")], &[])]).unwrap();
        let mut old = observed(vec![res("pod.api", &[("image", "a")], &[])]);
        old.resources[0].drift.push(crate::observe::Drift {
            field: attr::STATE.into(),
            observed: "exited".into(),
            expected: "running".into(),
        });
        let p = plan("x", &desired, &old);
        assert_eq!(p.changes[0].action, Action::Heal);
        assert_eq!(p.changes[0].reason.as_deref(), Some("drift in state"));
    }
}
