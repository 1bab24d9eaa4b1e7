//! Desired resources: a checked [`Spec`] expanded into [`Resource`]s with normalised
//! attributes, per region, and the [`ResourceGraph`] over them.
//!
//! Attributes are the comparable text form of a resource's configuration (`image`,
//! `env.DEBUG`, `volume[/data]`, ...). They never hold a secret value: secrets appear by
//! name and delivery, and env values that look like credentials by fingerprint only.

use std::collections::{BTreeMap, HashSet};

use crate::graph::{Address, GraphError, Kind, Resource, ResourceGraph};
use crate::secrets::plaintext::fingerprint;
use crate::spec::check::{Mount, PortMapping};
use crate::spec::lint::is_credential_key;
use crate::spec::{Pod, SecretUse, Spec, Strategy};

/// The region used when a spec names none.
pub const DEFAULT_REGION: &str = "local";

/// The regions of a spec, primary first. `None` entries stand for "not qualified": a spec
/// with fewer than two regions does not qualify its addresses.
pub fn regions(spec: &Spec) -> Vec<Option<&str>> {
    if spec.regions.len() < 2 {
        return vec![None];
    }
    let mut names: Vec<(bool, &str)> = spec
        .regions
        .iter()
        .map(|r| (!r.item.primary, r.name.value.as_str()))
        .collect();
    names.sort();
    names.into_iter().map(|(_, n)| Some(n)).collect()
}

fn runs_in(list: &Option<Vec<crate::spec::Sp<String>>>, region: Option<&str>) -> bool {
    match (list, region) {
        (None, _) | (_, None) => true,
        (Some(list), Some(r)) => list.iter().any(|x| x.value == r),
    }
}

/// Builds the desired resources of a spec that passed its checks.
pub fn desired(spec: &Spec) -> Vec<Resource> {
    let mut out = Vec::new();
    let mut attrs_of_secret: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for s in spec.secrets.iter() {
        let mut a = BTreeMap::new();
        a.insert("file".into(), s.item.file.value.clone());
        let recipients = s.item.recipients.as_ref().unwrap_or(&spec.recipients);
        a.insert(
            "recipients".into(),
            sorted_list(recipients.iter().map(|r| r.value.as_str())),
        );
        if let Some(f) = s.item.format {
            a.insert("format".into(), f.as_str().into());
        }
        if let Some(n) = s.item.min_length {
            a.insert("min_length".into(), n.to_string());
        }
        if !s.item.forbid.is_empty() {
            a.insert("forbid".into(), format!("{} value(s)", s.item.forbid.len()));
        }
        attrs_of_secret.insert(&s.name.value, a);
    }
    for (name, attrs) in attrs_of_secret {
        out.push(Resource {
            address: Address::new(Kind::Secret, name),
            attrs,
            depends_on: Vec::new(),
        });
    }

    let mounted_anywhere: HashSet<&str> = spec
        .pods
        .iter()
        .flat_map(|p| named_mounts(&p.item))
        .collect();
    for region in regions(spec) {
        let network = Address::new(Kind::Network, "default").region(region);
        out.push(Resource {
            address: network.clone(),
            attrs: BTreeMap::from([("driver".into(), "bridge".into())]),
            depends_on: Vec::new(),
        });

        let pods_here: Vec<_> = spec
            .pods
            .iter()
            .filter(|p| runs_in(&p.item.regions, region))
            .collect();
        let instances = |name: &str| -> Vec<Address> {
            let Some(p) = spec.pods.get(name) else {
                return Vec::new();
            };
            if !runs_in(&p.regions, region) {
                return Vec::new();
            }
            pod_addresses(name, p.replicas(), region)
        };

        let mounted_here: HashSet<&str> = pods_here
            .iter()
            .flat_map(|p| named_mounts(&p.item))
            .collect();
        let mut volumes_here = HashSet::new();
        for v in spec.volumes.iter() {
            let name = v.name.value.as_str();
            if mounted_here.contains(name) || !mounted_anywhere.contains(name) {
                volumes_here.insert(name);
                out.push(Resource {
                    address: Address::new(Kind::Volume, &v.name.value).region(region),
                    attrs: BTreeMap::from([("external".into(), v.item.external.to_string())]),
                    depends_on: Vec::new(),
                });
            }
        }

        for p in &pods_here {
            let name = &p.name.value;
            let (attrs, mut deps) = pod_attrs(spec, &p.item);
            deps.push(network.clone());
            for m in &p.item.volumes {
                if let Ok(mount) = Mount::parse(&m.value)
                    && !mount.bind
                {
                    deps.push(Address::new(Kind::Volume, mount.source).region(region));
                }
            }
            for d in &p.item.depends_on {
                deps.extend(instances(&d.value));
            }
            deps.sort();
            deps.dedup();
            for address in pod_addresses(name, p.item.replicas(), region) {
                out.push(Resource {
                    address,
                    attrs: attrs.clone(),
                    depends_on: deps.clone(),
                });
            }
        }

        if let Some(proxy) = &spec.proxy {
            for r in spec.rate_limits.iter() {
                let mut a = BTreeMap::new();
                a.insert("rate".into(), r.item.rate.canonical());
                a.insert("burst".into(), r.item.burst.to_string());
                out.push(Resource {
                    address: Address::new(Kind::RateLimit, &r.name.value).region(region),
                    attrs: a,
                    depends_on: Vec::new(),
                });
            }
            let mut a = BTreeMap::new();
            let mut deps = vec![network.clone()];
            a.insert("image".into(), proxy.image.value.clone());
            a.insert(
                "listen".into(),
                list(proxy.listen.iter().map(|p| p.to_string())),
            );
            a.insert(
                "security_headers".into(),
                proxy.security_headers.map_or("off", |s| s.as_str()).into(),
            );
            // The rendered nginx config holds every limit: a changed limit reloads the proxy.
            for r in spec.rate_limits.iter() {
                a.insert(
                    format!("limit[{}]", r.name.value),
                    format!("{} burst {}", r.item.rate.canonical(), r.item.burst),
                );
            }
            for route in &proxy.routes {
                let r = &route.value;
                let mut v = format!("to {}", r.to.value);
                if let Some(l) = &r.rate_limit {
                    v.push_str(&format!(", rate_limit {}", l.value));
                    deps.push(Address::new(Kind::RateLimit, &l.value).region(region));
                }
                if !r.cors.is_empty() {
                    v.push_str(&format!(
                        ", cors {}",
                        sorted_list(r.cors.iter().map(|c| c.value.as_str()))
                    ));
                }
                a.insert(format!("route[{}]", r.key()), v);
                if let Some((pod, _)) = r.target() {
                    deps.extend(instances(pod));
                }
            }
            deps.sort();
            deps.dedup();
            out.push(Resource {
                address: Address::new(Kind::Proxy, "").region(region),
                attrs: a,
                depends_on: deps,
            });
        }

        for b in spec.backups.iter() {
            let src = &b.item.source.value;
            let here = match (&src.pod, &src.volume) {
                (Some(pod), _) => !instances(&pod.value).is_empty(),
                (None, Some(vol)) => volumes_here.contains(vol.value.as_str()),
                (None, None) => true,
            };
            if !here {
                continue;
            }
            let mut a = BTreeMap::new();
            let mut deps = Vec::new();
            if let Some(pod) = &src.pod {
                a.insert("source.pod".into(), pod.value.clone());
                deps.extend(instances(&pod.value));
            }
            if let Some(exec) = &src.exec {
                a.insert("source.exec".into(), json_list(exec));
            }
            if let Some(restore) = &src.restore {
                a.insert("source.restore".into(), json_list(restore));
            }
            if let Some(vol) = &src.volume {
                a.insert("source.volume".into(), vol.value.clone());
                deps.push(Address::new(Kind::Volume, &vol.value).region(region));
            }
            if let Some(path) = &src.path {
                a.insert("source.path".into(), path.value.clone());
            }
            a.insert("store".into(), b.item.store.value.clone());
            if let Some(s) = &b.item.schedule {
                a.insert("schedule".into(), s.value.clone());
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
            a.insert("before_apply".into(), b.item.before_apply.to_string());
            if let Some(c) = b.item.consistent {
                a.insert("consistent".into(), format!("{c:?}").to_lowercase());
            }
            let recipients = b.item.recipients.as_ref().unwrap_or(&spec.recipients);
            a.insert(
                "recipients".into(),
                sorted_list(recipients.iter().map(|r| r.value.as_str())),
            );
            deps.sort();
            deps.dedup();
            out.push(Resource {
                address: Address::new(Kind::Backup, &b.name.value).region(region),
                attrs: a,
                depends_on: deps,
            });
        }
    }
    out
}

/// Builds the resource graph of a spec that passed its checks.
pub fn graph(spec: &Spec) -> Result<ResourceGraph, GraphError> {
    ResourceGraph::new(desired(spec))
}

/// `pod.api` for one replica, `pod.api[0]`.. for several.
fn pod_addresses(name: &str, replicas: u32, region: Option<&str>) -> Vec<Address> {
    if replicas == 1 {
        return vec![Address::new(Kind::Pod, name).region(region)];
    }
    (0..replicas)
        .map(|i| Address::new(Kind::Pod, name).index(Some(i)).region(region))
        .collect()
}

/// The named volumes a pod mounts.
fn named_mounts(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.volumes
        .iter()
        .filter_map(|m| Mount::parse(&m.value).ok())
        .filter(|m| !m.bind)
        .map(|m| m.source)
}

/// The effective update strategy: blue-green unless the pod owns a named volume.
pub fn strategy(pod: &Pod) -> Strategy {
    match &pod.update {
        Some(u) => u.strategy.value,
        None if pod
            .volumes
            .iter()
            .any(|m| Mount::parse(&m.value).is_ok_and(|m| !m.bind)) =>
        {
            Strategy::Recreate
        }
        None => Strategy::BlueGreen,
    }
}

fn pod_attrs(spec: &Spec, pod: &Pod) -> (BTreeMap<String, String>, Vec<Address>) {
    let mut a = BTreeMap::new();
    let mut deps = Vec::new();
    if let Some(image) = &pod.image {
        a.insert("image".into(), image.value.clone());
    }
    if let Some(b) = &pod.build {
        a.insert("build.context".into(), b.value.context.clone());
        a.insert(
            "build.dockerfile".into(),
            b.value
                .dockerfile
                .clone()
                .unwrap_or_else(|| "Dockerfile".into()),
        );
        for (k, v) in &b.value.args {
            a.insert(format!("build.args.{k}"), v.clone());
        }
    }
    if let Some(c) = &pod.command {
        a.insert("command".into(), json_list(c));
    }
    if let Some(e) = &pod.entrypoint {
        a.insert("entrypoint".into(), json_list(e));
    }
    for e in pod.env.iter() {
        let value = &e.item.value.0;
        let shown = if is_credential_key(&e.name.value) && !value.is_empty() {
            format!("(sensitive) {}", fingerprint(value.as_bytes()))
        } else {
            value.clone()
        };
        a.insert(format!("env.{}", e.name.value), shown);
    }
    for s in &pod.secrets {
        let name = s.value.name();
        let delivery = match &s.value {
            SecretUse::Detailed(d) if d.env.is_some() => {
                format!("env {} (env-exposed)", d.env.as_deref().unwrap_or_default())
            }
            _ => {
                let mode = s.value.mode().map_or("0400".into(), |m| m.canonical());
                format!("file /run/secrets/{name} mode {mode}")
            }
        };
        a.insert(format!("secret.{name}"), delivery);
        if spec.secrets.contains(name) {
            deps.push(Address::new(Kind::Secret, name));
        }
    }
    for m in &pod.volumes {
        if let Ok(mount) = Mount::parse(&m.value) {
            let mode = if mount.read_only { "ro" } else { "rw" };
            a.insert(
                format!("mount[{}]", mount.target),
                format!("{} ({mode})", mount.source),
            );
        }
    }
    for p in &pod.ports {
        if let Ok(pm) = PortMapping::parse(&p.value) {
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
    if let Some(r) = &pod.resources {
        if let Some(c) = &r.cpus {
            a.insert("resources.cpus".into(), c.value.to_string());
        }
        if let Some(m) = &r.memory {
            a.insert("resources.memory".into(), m.canonical());
        }
    }
    if let Some(u) = &pod.user {
        a.insert("user".into(), u.clone());
    }
    a.insert("read_only".into(), pod.read_only.to_string());
    a.insert(
        "restart".into(),
        pod.restart.map_or("unless-stopped", |r| r.as_str()).into(),
    );
    if let Some(h) = &pod.health {
        let h = &h.value;
        if let Some(cmd) = &h.cmd {
            a.insert("health.cmd".into(), json_list(cmd));
        }
        if let Some(http) = &h.http {
            a.insert("health.http".into(), format!(":{}{}", http.port, http.path));
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
            a.insert("health.retries".into(), r.to_string());
        }
    }
    a.insert("update.strategy".into(), strategy(pod).as_str().into());
    for (i, c) in pod.checks.iter().enumerate() {
        let h = &c.value.http;
        let mut v = format!("http :{}{}", h.port, h.path);
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
        a.insert(format!("check[{i}]"), v);
    }
    if !pod.depends_on.is_empty() {
        a.insert(
            "depends_on".into(),
            sorted_list(pod.depends_on.iter().map(|d| d.value.as_str())),
        );
    }
    (a, deps)
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn sorted_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = items.collect();
    v.sort_unstable();
    v.join(", ")
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}
