//! The rate limits and the proxy of a region, as desired resources.

use super::{LocalFacts, Region, attr, list};
use crate::graph::{Address, Attrs, Kind, Resource};
use crate::spec::Proxy;

/// The rate limits and the proxy of a region. The proxy's configuration is its rendered
/// nginx config ([`attr::CONFIG`], with the stable container names of the routed pods):
/// every route, limit, header, TLS listener and CORS policy shows there, so a change to any
/// of them is a change to the text (a reload). Only the image and the listen ports, which
/// need a new container, are attributes of their own.
pub(super) fn proxy_resources(
    region: &Region<'_>,
    proxy: &Proxy,
    facts: &LocalFacts,
    out: &mut Vec<Resource>,
) {
    let spec = region.spec;
    for r in spec.rate_limits.iter() {
        let mut a = Attrs::new();
        a.insert("rate", r.item.rate.canonical());
        a.insert("burst", r.item.burst.to_string());
        if let Some(h) = r.item.key_header() {
            a.insert("key", format!("header {h}"));
        }
        out.push(Resource {
            address: Address::new(Kind::RateLimit, &r.name.value).region(region.shown),
            attrs: a,
            depends_on: Vec::new(),
        });
    }
    let mut a = Attrs::new();
    let mut deps = vec![region.network.clone()];
    a.insert(attr::IMAGE, &proxy.image.value);
    a.insert(
        attr::LISTEN,
        list(proxy.listen.iter().map(|p| p.to_string())),
    );
    if !proxy.tls.is_empty() {
        let mut listeners: Vec<String> = proxy
            .tls
            .iter()
            .map(|t| {
                let t = &t.value;
                format!("{} cert {} key {}", t.port.value, t.cert.value, t.key.value)
            })
            .collect();
        listeners.sort();
        a.insert(attr::TLS, listeners.join(", "));
    }
    let servers = crate::proxy::stable_servers(spec, region.name);
    a.insert(
        attr::CONFIG,
        with_versions(&crate::proxy::render(spec, proxy, &servers), proxy, facts),
    );
    for route in &proxy.routes {
        let r = &route.value;
        if let Some(l) = &r.rate_limit {
            deps.push(Address::new(Kind::RateLimit, &l.value).region(region.shown));
        }
        if let Some((pod, _)) = r.target() {
            deps.extend(region.instances(pod));
        }
    }
    for t in &proxy.tls {
        for secret in [&t.value.cert, &t.value.key] {
            deps.push(Address::new(Kind::Secret, &secret.value));
        }
    }
    deps.sort();
    deps.dedup();
    out.push(Resource {
        address: Address::new(Kind::Proxy, "").region(region.shown),
        attrs: a,
        depends_on: deps,
    });
}

/// The rendered config with a comment line per TLS secret naming the version (ciphertext
/// fingerprint) it holds, sealed again: a new certificate is a new config (delivered and
/// reloaded in place), and the running proxy's own file says which one it has.
fn with_versions(config: &str, proxy: &Proxy, facts: &LocalFacts) -> String {
    let lines: String = proxy
        .tls_secrets()
        .iter()
        .filter_map(|n| {
            let v = facts.secret_versions.get(*n)?;
            Some(format!(
                "{}{n}: {v}\n",
                crate::proxy::SECRET_VERSION_COMMENT
            ))
        })
        .collect();
    if lines.is_empty() {
        return config.to_owned();
    }
    crate::proxy::seal(&format!("{lines}{config}"))
}
