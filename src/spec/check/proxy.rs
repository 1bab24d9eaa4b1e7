//! The proxy: listen ports, routes (targets, hosts, paths, CORS origins) and rate limits.

use std::collections::{BTreeSet, HashMap};

use super::Checker;
use crate::diag::{Diagnostic, Span};
use crate::spec::{Route, Sp};

impl Checker<'_> {
    pub(super) fn rate_limits(&mut self) {
        for r in self.spec.rate_limits.iter() {
            self.unit(&r.item.rate, "rate");
        }
    }

    pub(super) fn proxy(&mut self) {
        let spec = self.spec;
        let Some(proxy) = &spec.proxy else {
            for r in spec.rate_limits.iter() {
                self.push(
                    Diagnostic::warning(
                        "unused-rate-limit",
                        format!("rate limit `{}` is not enforced", r.name.value),
                    )
                    .at(r.name.span, "no proxy routes through it")
                    .help("add a `proxy:` with a route that names it, or remove it"),
                );
            }
            return;
        };
        let mut listen_seen = BTreeSet::new();
        for port in &proxy.listen {
            if *port == 0 || !listen_seen.insert(*port) {
                self.push(
                    Diagnostic::error(
                        "invalid-port",
                        format!("proxy `listen` port {port} is zero or repeated"),
                    )
                    .at(proxy.image.span, "in this proxy")
                    .help("list each port once, e.g. `listen: [80, 443]`"),
                );
            }
        }
        let mut keys: HashMap<String, Span> = HashMap::new();
        let mut used_limits = BTreeSet::new();
        for route in &proxy.routes {
            let r = &route.value;
            self.route_target(r);
            if let Some(limit) = &r.rate_limit {
                used_limits.insert(limit.value.as_str());
                if !spec.rate_limits.contains(&limit.value) {
                    self.unknown("rate limit", limit, spec.rate_limits.names(), "rate_limits");
                }
            }
            if let Some(p) = &r.path
                && !p.value.starts_with('/')
            {
                self.push(
                    Diagnostic::error(
                        "invalid-route-path",
                        format!("route path `{}` does not start with `/`", p.value),
                    )
                    .at(p.span, "not a path")
                    .help("write a path prefix such as `/` or `/api/`"),
                );
            }
            if let Some(h) = &r.host
                && !valid_host(&h.value)
            {
                self.push(
                    Diagnostic::error("invalid-host", format!("`{}` is not a host name", h.value))
                        .at(h.span, "invalid host")
                        .help(
                            "write a DNS name such as `api.shop.example`, without scheme or port",
                        ),
                );
            }
            for origin in &r.cors {
                if !valid_origin(&origin.value) {
                    self.push(
                        Diagnostic::error(
                            "invalid-cors-origin",
                            format!("`{}` is not a CORS origin", origin.value),
                        )
                        .at(origin.span, "expected `scheme://host[:port]`")
                        .help("write an origin such as `https://shop.example`, without a path"),
                    );
                }
            }
            let key = r.key();
            if let Some(first) = keys.insert(key.clone(), route.span) {
                self.push(
                    Diagnostic::error("duplicate-route", format!("two routes match `{key}`"))
                        .at(route.span, "matches the same requests")
                        .related(first, "as this route")
                        .help("merge the two routes or give them different `host` or `path`"),
                );
            }
        }
        for r in spec.rate_limits.iter() {
            if !used_limits.contains(r.name.value.as_str()) {
                self.push(
                    Diagnostic::warning(
                        "unused-rate-limit",
                        format!("rate limit `{}` is not enforced", r.name.value),
                    )
                    .at(r.name.span, "no route names it")
                    .help("add `rate_limit: NAME` to a route, or remove it"),
                );
            }
        }
    }

    /// A route's `to`: `pod:port`, a pod that exists and runs in every region (as the proxy
    /// does).
    fn route_target(&mut self, r: &Route) {
        let spec = self.spec;
        let all_regions: Vec<&str> = spec.regions.names().collect();
        match r.to.get() {
            Err(why) => self.push(
                Diagnostic::error(
                    "invalid-route-target",
                    format!("route target `{}` is not `pod:port`: {why}", r.to.value),
                )
                .at(r.to.span, "expected `pod:port`")
                .help("name a pod and the port it listens on, e.g. `api:8000`"),
            ),
            Ok((pod, _)) => match spec.pods.get(pod) {
                None => {
                    let sp = Sp::new(pod.to_owned(), r.to.span);
                    self.unknown("pod", &sp, spec.pods.names(), "pods");
                }
                Some(p) => {
                    if let Some(list) = &p.regions {
                        let missing: Vec<&str> = all_regions
                            .iter()
                            .copied()
                            .filter(|reg| !list.iter().any(|l| l.value == *reg))
                            .collect();
                        if !missing.is_empty() {
                            self.push(
                                Diagnostic::error(
                                    "route-target-missing-in-region",
                                    format!("pod `{pod}` does not run in region `{}`", missing[0]),
                                )
                                .at(r.to.span, "the proxy runs in every region")
                                .help(format!("run `{pod}` in every region, or drop this route")),
                            );
                        }
                    }
                }
            },
        }
    }
}

fn valid_host(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_origin(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => rest,
    };
    matches!(scheme, "http" | "https") && !rest.contains('/') && valid_host(host)
}
