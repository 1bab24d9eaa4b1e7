//! Desired resources: a checked [`Spec`] expanded into [`Resource`]s with normalised
//! attributes, per region, and the [`ResourceGraph`] over them. [`desired_with`] reads as
//! the list of kinds: the secrets once, then in each region its network, volumes, pods,
//! proxy and backups, each kind in a function of its own.
//!
//! Attributes are the comparable text form of a resource's configuration (`image`,
//! `env.DEBUG`, `mount[/data]`, ...). They never hold a secret value: secrets appear by
//! name, source file and delivery, and values that look like credentials (see
//! `sensitive`) only in concealed form. The keys that several stages read are named in
//! [`attr`].

pub mod attr;
mod jobs;
mod proxy;
mod region;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::graph::{Address, Attrs, GraphError, Kind, Resource, ResourceGraph};
use crate::sensitive::{conceal, is_sensitive, is_sensitive_value};
use crate::spec::{
    Build, DEFAULT_REGION, Health, Pod, SECRETS_MOUNT_POINT, SecretUse, Spec, Strategy,
};
use region::{Names, Region};

/// How a region appears in addresses: only specs with several regions qualify them.
pub fn shown_region<'a>(all: &[&str], region: &'a str) -> Option<&'a str> {
    (all.len() > 1).then_some(region)
}

/// Rewrites an address of a spec whose regions are `from` into the form of a spec whose
/// regions are `to`, so the two can be compared: `pod.db` of a single-region spec `fra` is
/// `pod.db@fra` once a second region exists, and the other way round.
pub fn requalify(mut address: Address, from: &[&str], to: &[&str]) -> Address {
    if address.kind == Kind::Secret {
        return address; // secrets are not per region
    }
    let given = address.region.take();
    let mut region: &str = match (given.as_deref(), from.first()) {
        (Some(r), _) => r,
        (None, Some(only)) => only,
        (None, None) => return address,
    };
    // A spec without `regions:` runs on the local engine, which a spec that names regions
    // calls its primary region (the one listed first); and the other way round.
    if from == [DEFAULT_REGION] && !to.contains(&DEFAULT_REGION) {
        if let Some(primary) = to.first() {
            region = primary;
        }
    } else if to == [DEFAULT_REGION] && from.first() == Some(&region) {
        region = DEFAULT_REGION;
    }
    address.region = if to.len() > 1 || !to.contains(&region) {
        // The address's own name of the region when it is kept: no copy.
        Some(match given {
            Some(g) if *g == *region => g,
            _ => std::sync::Arc::from(region),
        })
    } else {
        None
    };
    address
}

/// Builds the desired resources of a spec that passed its checks.
pub fn desired(spec: &Spec) -> Vec<Resource> {
    desired_with(spec, &LocalFacts::default())
}

/// Facts read from this machine's files before planning, that the desired configuration
/// depends on: a change to them is a change to the pods that use them.
#[derive(Clone, Debug, Default)]
pub struct LocalFacts {
    /// The content digest of each pod's build context, by pod name.
    pub build_digests: HashMap<String, String>,
    /// What a consuming pod records for each secret, by secret name: the fingerprint of the
    /// ciphertext it gets (public: the file is in git), or "(known after apply)" when
    /// apply re-encrypts the file first.
    pub secret_versions: HashMap<String, String>,
}

/// The image a pod with `build:` runs: named after the project and pod, tagged with the
/// digest of its build context, so that the same files are the same image.
pub fn built_image(project: &str, pod: &str, digest: &str) -> String {
    format!(
        "berth-{project}-{pod}:{}",
        digest.get(..16).unwrap_or(digest)
    )
}

/// [`desired`], with the facts read from the filesystem beforehand.
pub fn desired_with(spec: &Spec, facts: &LocalFacts) -> Vec<Resource> {
    let names = Names::new(spec);
    let mut out = secret_resources(spec, &names);
    // Room for every region's network, volumes and pods (one replica each) at once: a large
    // spec's list is not grown by doubling.
    let per_region = 1 + spec.volumes.len() + spec.pods.len();
    out.reserve(spec.region_names().len() * per_region);
    let mounted_anywhere: HashSet<&str> = spec
        .pods
        .iter()
        .flat_map(|p| p.item.named_volumes())
        .collect();
    let all_regions = spec.region_names();
    for &name in &all_regions {
        let shown = shown_region(&all_regions, name);
        let region = Region::new(spec, &names, name, shown);
        out.push(Resource {
            address: region.network.clone(),
            attrs: Attrs::from([(attr::DRIVER, "bridge")]),
            depends_on: Vec::new(),
        });
        let volumes_here = volume_resources(&region, &mounted_anywhere, &mut out);
        pod_resources(&region, facts, &mut out);
        jobs::job_resources(&region, facts, &mut out);
        if let Some(proxy) = &spec.proxy {
            proxy::proxy_resources(&region, proxy, facts, &mut out);
        }
        backup_resources(&region, &volumes_here, &mut out);
    }
    out
}

/// The secrets, which are not per region.
fn secret_resources(spec: &Spec, names: &Names) -> Vec<Resource> {
    let mut attrs_of_secret: BTreeMap<&str, (Arc<str>, Attrs)> = BTreeMap::new();
    for (s, shared) in spec.secrets.iter().zip(&names.secrets) {
        let mut a = Attrs::new();
        a.insert(attr::FILE, &s.item.file.value);
        let recipients = s.item.recipients.as_ref().unwrap_or(&spec.recipients);
        a.insert(
            attr::RECIPIENTS,
            if recipients.is_empty() {
                "(the identity's key)".to_owned()
            } else {
                sorted_list(recipients.iter().map(|r| r.value.trim()))
            },
        );
        a.insert(attr::MODE, "0600");
        if let Some(f) = s.item.format {
            a.insert("format", f.as_str());
        }
        if let Some(n) = s.item.min_length {
            a.insert("min_length", n.to_string());
        }
        if !s.item.forbid.is_empty() {
            a.insert("forbid", format!("{} value(s)", s.item.forbid.len()));
        }
        attrs_of_secret.insert(&s.name.value, (shared.clone(), a));
    }
    attrs_of_secret
        .into_values()
        .map(|(name, attrs)| Resource {
            address: Address::shared(Kind::Secret, name),
            attrs,
            depends_on: Vec::new(),
        })
        .collect()
}

/// The volumes of a region: those its pods mount, and those no pod mounts (kept in every
/// region). Returns their names.
fn volume_resources<'s>(
    region: &Region<'s>,
    mounted_anywhere: &HashSet<&str>,
    out: &mut Vec<Resource>,
) -> HashSet<&'s str> {
    let spec = region.spec;
    let mounted_here: HashSet<&str> = spec
        .pods
        .iter()
        .filter(|p| Spec::runs_in(&p.item.regions, region.name))
        .flat_map(|p| p.item.named_volumes())
        .collect();
    let mut volumes_here = HashSet::new();
    for v in spec.volumes.iter() {
        let name = v.name.value.as_str();
        if mounted_here.contains(name) || !mounted_anywhere.contains(name) {
            volumes_here.insert(name);
            out.push(Resource {
                address: Address::new(Kind::Volume, &v.name.value).region(region.shown),
                attrs: Attrs::from([(attr::EXTERNAL, v.item.external.to_string())]),
                depends_on: Vec::new(),
            });
        }
    }
    volumes_here
}

/// The pods of a region, one resource per replica.
fn pod_resources(region: &Region<'_>, facts: &LocalFacts, out: &mut Vec<Resource>) {
    let spec = region.spec;
    let pods_here = spec
        .pods
        .iter()
        .filter(|p| Spec::runs_in(&p.item.regions, region.name));
    for p in pods_here {
        let name = &p.name.value;
        let built = facts
            .build_digests
            .get(name.as_str())
            .map(|d| built_image(&spec.project.value, name, d));
        let (attrs, mut deps) = pod_attrs(region, &p.item, built.as_deref(), facts);
        deps.push(region.network.clone());
        for m in &p.item.volumes {
            if let Ok(mount) = m.get()
                && !mount.bind
            {
                deps.push(Address::new(Kind::Volume, mount.source).region(region.shown));
            }
        }
        for d in &p.item.depends_on {
            match crate::spec::Pod::dependency(&d.value) {
                // The pod of another region (`db@iad`): its replicas there.
                (pod, Some(other)) if other != region.name => {
                    let all = spec.region_names();
                    if let Some(other) = all.iter().copied().find(|r| *r == other) {
                        let there =
                            Region::new(spec, region.names, other, shown_region(&all, other));
                        deps.extend(there.instances(pod));
                    }
                }
                (pod, _) => deps.extend(region.instances(pod)),
            }
        }
        deps.sort();
        deps.dedup();
        deps.shrink_to_fit();
        let mut addresses = region
            .pod_addresses(region.names.pod(spec, name), p.item.replicas())
            .into_iter()
            .peekable();
        let mut attrs = attrs;
        while let Some(address) = addresses.next() {
            // Replicas share the configuration; the last one takes it.
            let (attrs, depends_on) = if addresses.peek().is_some() {
                (attrs.clone(), deps.clone())
            } else {
                (std::mem::take(&mut attrs), std::mem::take(&mut deps))
            };
            out.push(Resource {
                address,
                attrs,
                depends_on,
            });
        }
    }
}

/// The backups of a region: those whose region ([`Spec::backup_region`]) it is, when their
/// pod runs there or their volume is there. One backup is one timer on this machine, reading
/// through one region's engine.
fn backup_resources(region: &Region<'_>, volumes_here: &HashSet<&str>, out: &mut Vec<Resource>) {
    let spec = region.spec;
    for b in spec.backups.iter() {
        let src = &b.item.source.value;
        let here = spec.backup_region(&b.item) == region.name
            && match (&src.pod, &src.volume) {
                (Some(pod), _) => !region.instances(&pod.value).is_empty(),
                (None, Some(vol)) => volumes_here.contains(vol.value.as_str()),
                (None, None) => true,
            };
        if !here {
            continue;
        }
        let mut a = Attrs::new();
        let mut deps = Vec::new();
        if let Some(pod) = &src.pod {
            a.insert("source.pod", &pod.value);
            deps.extend(region.instances(&pod.value));
        }
        if let Some(exec) = &src.exec {
            a.insert("source.exec", json_list(exec));
        }
        if let Some(restore) = &src.restore {
            a.insert("source.restore", json_list(restore));
        }
        if let Some(vol) = &src.volume {
            a.insert("source.volume", &vol.value);
            deps.push(Address::new(Kind::Volume, &vol.value).region(region.shown));
        }
        if let Some(path) = &src.path {
            a.insert("source.path", &path.value);
        }
        a.insert(attr::STORE, &b.item.store.value);
        if let Some(s) = &b.item.schedule {
            a.insert("schedule", &s.value);
        }
        if let Some(r) = &b.item.retention {
            for (k, v) in [
                ("daily", r.daily),
                ("weekly", r.weekly),
                ("monthly", r.monthly),
            ] {
                if let Some(v) = v {
                    a.insert(format!("retention.{k}"), v.to_string());
                }
            }
        }
        a.insert(attr::BEFORE_APPLY, b.item.before_apply.to_string());
        if let Some(c) = b.item.consistent {
            a.insert("consistent", format!("{c:?}").to_lowercase());
        }
        let recipients = b.item.recipients.as_ref().unwrap_or(&spec.recipients);
        a.insert(
            attr::RECIPIENTS,
            sorted_list(recipients.iter().map(|r| r.value.as_str())),
        );
        deps.sort();
        deps.dedup();
        out.push(Resource {
            address: Address::new(Kind::Backup, &b.name.value).region(region.shown),
            attrs: a,
            depends_on: deps,
        });
    }
}

/// Builds the resource graph of a spec that passed its checks.
pub fn graph(spec: &Spec) -> Result<ResourceGraph, GraphError> {
    ResourceGraph::new(desired(spec))
}

/// The effective update strategy: blue-green unless the pod owns a named volume or
/// publishes host ports (two containers cannot hold either at once).
pub fn strategy(pod: &Pod) -> Strategy {
    match &pod.update {
        Some(u) => u.strategy.value,
        None if pod.named_volumes().next().is_some() || !pod.ports.is_empty() => Strategy::Recreate,
        None => Strategy::BlueGreen,
    }
}

/// The attributes of a pod (shared by its replicas) and the secrets it depends on.
fn pod_attrs(
    region: &Region<'_>,
    pod: &Pod,
    built_image: Option<&str>,
    facts: &LocalFacts,
) -> (Attrs, Vec<Address>) {
    let mut a = Attrs::new();
    if let Some(image) = &pod.image {
        a.insert(attr::IMAGE, &image.value);
    }
    if let Some(b) = &pod.build {
        build_attrs(&mut a, &b.value, built_image);
    }
    if let Some(c) = &pod.command {
        a.insert("command", json_list(c));
    }
    if let Some(e) = &pod.entrypoint {
        a.insert("entrypoint", json_list(e));
    }
    for e in pod.env.iter() {
        a.insert(
            format!("env.{}", e.name.value),
            shown(&e.name.value, &e.item.value.0),
        );
    }
    let deps = secret_attrs(&mut a, region, pod, facts);
    mount_and_port_attrs(&mut a, pod);
    if let Some(r) = &pod.resources {
        if let Some(c) = &r.cpus {
            a.insert("resources.cpus", c.value.to_string());
        }
        if let Some(m) = &r.memory {
            a.insert("resources.memory", m.canonical());
        }
    }
    if let Some(u) = &pod.user {
        a.insert("user", u);
    }
    a.insert("read_only", pod.read_only.to_string());
    a.insert(
        "restart",
        pod.restart.map_or("unless-stopped", |r| r.as_str()),
    );
    if let Some(h) = &pod.health {
        health_attrs(&mut a, &h.value);
    }
    a.insert(attr::UPDATE_STRATEGY, strategy(pod).as_str());
    check_attrs(&mut a, pod);
    if !pod.depends_on.is_empty() {
        a.insert(
            "depends_on",
            sorted_list(pod.depends_on.iter().map(|d| d.value.as_str())),
        );
    }
    (a, deps)
}

/// `build.*`: the context, the image built from it, the Dockerfile and the arguments.
fn build_attrs(a: &mut Attrs, b: &Build, built_image: Option<&str>) {
    a.insert("build.context", &b.context);
    if let Some(image) = built_image {
        a.insert(attr::BUILD_IMAGE, image);
    }
    a.insert(
        "build.dockerfile",
        b.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()),
    );
    for arg in b.args.iter() {
        let (k, v) = (&arg.name.value, &arg.item.value.0);
        a.insert(format!("build.args.{k}"), shown(k, v));
    }
}

/// `secret.NAME` (how it is delivered, from which file) and `secret.NAME.version`; returns
/// the secrets the pod depends on.
fn secret_attrs(a: &mut Attrs, region: &Region<'_>, pod: &Pod, facts: &LocalFacts) -> Vec<Address> {
    let spec = region.spec;
    let mut deps = Vec::new();
    for s in &pod.secrets {
        let name = s.value.name();
        let mut delivery = match &s.value {
            SecretUse::Detailed(d) if d.env.is_some() => {
                format!("env {} (env-exposed)", d.env.as_deref().unwrap_or_default())
            }
            _ => {
                let mode = s.value.mode().map_or("0400".into(), |m| m.canonical());
                format!("file {SECRETS_MOUNT_POINT}/{name} mode {mode}")
            }
        };
        // Another source file is another value: the consumers restart to get it.
        if let Some(secret) = spec.secrets.get(name) {
            delivery.push_str(&format!(", from {}", secret.file.value));
        }
        a.insert(attr::secret(name), delivery);
        // A new ciphertext (a new value, or new recipients) is a new configuration.
        if let Some(version) = facts.secret_versions.get(name) {
            a.insert(attr::secret_version(name), version);
        }
        if spec.secrets.contains(name) {
            deps.push(Address::shared(
                Kind::Secret,
                region.names.secret(spec, name),
            ));
        }
    }
    deps
}

/// `mount[TARGET]` and `port[IP:HOST/PROTO]`.
fn mount_and_port_attrs(a: &mut Attrs, pod: &Pod) {
    for m in &pod.volumes {
        if let Ok(mount) = m.get() {
            let mode = if mount.read_only { "ro" } else { "rw" };
            a.insert(
                format!("mount[{}]", mount.target),
                format!("{} ({mode})", mount.source),
            );
        }
    }
    for p in &pod.ports {
        if let Ok(pm) = p.get() {
            let ip = if pm.ip.is_empty() {
                "0.0.0.0"
            } else {
                pm.ip.as_str()
            };
            a.insert(
                format!("port[{ip}:{}/{}]", pm.host, pm.protocol),
                pm.container.to_string(),
            );
        }
    }
}

/// `health.*`: the probe, its durations and retries.
fn health_attrs(a: &mut Attrs, h: &Health) {
    if let Some(cmd) = &h.cmd {
        a.insert(attr::HEALTH_CMD, json_list(cmd));
    }
    if let Some(http) = &h.http {
        a.insert(
            attr::HEALTH_HTTP,
            http.scheme.target(http.port.value, &http.path),
        );
    }
    for (k, v) in [
        ("interval", &h.interval),
        ("timeout", &h.timeout),
        ("start_period", &h.start_period),
    ] {
        if let Some(v) = v {
            a.insert(format!("health.{k}"), v.canonical());
        }
    }
    if let Some(r) = h.retries {
        a.insert("health.retries", r.to_string());
    }
    if let Some(u) = &h.min_uptime {
        a.insert(attr::HEALTH_MIN_UPTIME, u.canonical());
    }
}

/// `check[:PORT/PATH]`: what each post-deploy check expects.
fn check_attrs(a: &mut Attrs, pod: &Pod) {
    for c in &pod.checks {
        let h = &c.value.http;
        let mut v = match h.scheme {
            crate::spec::Scheme::Http => format!("http :{}{}", h.port.value, h.path),
            crate::spec::Scheme::Https => format!("https :{}{}", h.port.value, h.path),
        };
        if let Some(s) = h.expect_status {
            v.push_str(&format!(" status {s}"));
        }
        if let Some(j) = &h.expect_json {
            v.push_str(&format!(" json {}", j.pointer.value));
            if j.non_empty {
                v.push_str(" non-empty");
            }
            if let Some(eq) = &j.equals {
                v.push_str(&format!(" == {eq}"));
            }
        }
        for hd in &h.expect_headers {
            v.push_str(&format!(" header {hd}"));
        }
        if let Some(l) = &h.max_latency {
            v.push_str(&format!(" within {}", l.canonical()));
        }
        // Keyed by what is checked, so inserting a check does not shift the others.
        let mut key = format!("{}:{}{}]", attr::CHECK_PREFIX, h.port.value, h.path);
        while a.contains_key(&key) {
            key.push('+');
        }
        a.insert(key, v);
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn sorted_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = items.collect();
    v.sort_unstable();
    v.join(", ")
}

/// A command or argument list as JSON, with any argument holding a credential concealed.
fn json_list(items: &[String]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|i| {
            if is_sensitive_value(i) {
                conceal(i)
            } else {
                i.clone()
            }
        })
        .collect();
    serde_json::to_string(&items).unwrap_or_default()
}

/// A value under a key, concealed when it looks like a credential.
fn shown(key: &str, value: &str) -> String {
    if is_sensitive(key, value) {
        conceal(value)
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requalified(address: &str, from: &[&str], to: &[&str]) -> String {
        requalify(address.parse().unwrap(), from, to).to_string()
    }

    #[test]
    fn addresses_follow_the_regions_of_the_new_revision() {
        // One named region becomes two: the first keeps its resources.
        assert_eq!(
            requalified("pod.db", &["fra"], &["fra", "ord"]),
            "pod.db@fra"
        );
        // Two become one: what ran there is the same, what ran elsewhere stays qualified.
        assert_eq!(
            requalified("pod.db@fra", &["fra", "ord"], &["fra"]),
            "pod.db"
        );
        assert_eq!(
            requalified("pod.db@ord", &["fra", "ord"], &["fra"]),
            "pod.db@ord"
        );
        // No `regions:` (the local engine) and a primary region are the same place.
        assert_eq!(
            requalified("pod.db", &["local"], &["fra", "ord"]),
            "pod.db@fra"
        );
        assert_eq!(requalified("pod.db", &["local"], &["fra"]), "pod.db");
        assert_eq!(requalified("pod.db", &["fra"], &["local"]), "pod.db");
        assert_eq!(
            requalified("pod.db@ord", &["fra", "ord"], &["local"]),
            "pod.db@ord"
        );
        // Secrets are not per region.
        assert_eq!(
            requalified("secret.k", &["fra"], &["fra", "ord"]),
            "secret.k"
        );
    }

    #[test]
    fn the_proxy_holds_its_config_and_depends_on_what_it_routes_limits_and_serves() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/proxy/shop.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let loaded = crate::spec::load_str(std::path::Path::new(path), text);
        let spec = loaded.valid_spec().unwrap();
        let all = desired(spec);
        let proxy = all.iter().find(|r| r.address.kind == Kind::Proxy).unwrap();
        let config = &proxy.attrs[attr::CONFIG];
        assert!(config.contains("server shop-api-2:8000;"));
        assert_eq!(&proxy.attrs[attr::LISTEN], "80, 443");
        let deps: Vec<String> = proxy.depends_on.iter().map(|a| a.to_string()).collect();
        for d in [
            "pod.api[0]",
            "pod.api[2]",
            "pod.web",
            "rate_limit.api",
            "secret.shop_key",
        ] {
            assert!(deps.contains(&d.to_owned()), "{d} not in {deps:?}");
        }
    }
}
