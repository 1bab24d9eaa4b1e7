//! The proxy: listen ports, TLS, headers, real-IP trust, routes (targets, hosts, paths,
//! CORS) and rate limits; and the drain time of the pods it routes to.

use std::collections::{BTreeSet, HashMap};

use super::Checker;
use crate::diag::{Diagnostic, Span};
use crate::spec::{Cors, Proxy, Route, Sp};

impl Checker<'_> {
    pub(super) fn rate_limits(&mut self) {
        for r in self.spec.rate_limits.iter() {
            self.unit(&r.item.rate, "rate");
            if let Some(k) = &r.item.key {
                self.header_name(&k.header, "rate limit key");
            }
        }
    }

    pub(super) fn proxy(&mut self) {
        let spec = self.spec;
        for p in spec.pods.iter() {
            if let Some(d) = p.item.update.as_ref().and_then(|u| u.drain.as_ref()) {
                self.unit(d, "drain");
            }
        }
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
        self.proxy_headers(proxy);
        self.proxy_tls(proxy);
        self.real_ip(proxy);
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
            if let Some(p) = &r.path {
                self.control_characters(p, "route path");
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
            self.cors(&r.cors);
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

impl Checker<'_> {
    /// A newline, carriage return or NUL in a value that becomes a header or a config line:
    /// nginx cannot send it, and it would split the rendered config. Other odd values are
    /// left to nginx's own test of the config.
    fn control_characters(&mut self, v: &Sp<String>, what: &str) {
        if let Some(c) = v.value.chars().find(|c| matches!(c, '\n' | '\r' | '\0')) {
            let name = match c {
                '\n' => "a newline",
                '\r' => "a carriage return",
                _ => "a NUL byte",
            };
            self.push(
                Diagnostic::error(
                    "header-control-character",
                    format!("{what} `{}` holds {name}", v.value.escape_default()),
                )
                .at(v.span, format!("{name} here"))
                .help("write it on one line: an HTTP header (and an nginx directive) cannot hold a line break or a NUL byte"),
            );
        }
    }

    /// A header name nginx reads as part of a variable (`$http_x_api_key`): letters, digits
    /// and `-`.
    fn header_name(&mut self, h: &Sp<String>, what: &str) {
        let ok = !h.value.is_empty()
            && h.value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            self.push(
                Diagnostic::error(
                    "invalid-header-name",
                    format!("{what} `{}` is not a header name", h.value.escape_default()),
                )
                .at(h.span, "letters, digits and `-` only")
                .help("write a request header name such as `X-Api-Key` or `X-Forwarded-For`"),
            );
        }
    }

    /// `headers:`: no control characters, each name once (names are case-insensitive).
    fn proxy_headers(&mut self, proxy: &Proxy) {
        let mut seen: HashMap<String, Span> = HashMap::new();
        for h in proxy.headers.iter() {
            self.control_characters(&h.name, "header name");
            let value = Sp::new(h.item.value.0.clone(), h.item.span);
            self.control_characters(&value, "header value");
            if let Some(first) = seen.insert(h.name.value.to_ascii_lowercase(), h.name.span) {
                self.push(
                    Diagnostic::error(
                        "duplicate-header",
                        format!("header `{}` is set twice", h.name.value),
                    )
                    .at(h.name.span, "set again here")
                    .related(first, "first set here")
                    .help("header names are case-insensitive: keep one of the two"),
                );
            }
        }
    }

    /// `tls:` listeners: on a listen port, once each, with secrets the spec defines; and
    /// `redirect_http` only with one.
    fn proxy_tls(&mut self, proxy: &Proxy) {
        let spec = self.spec;
        let mut ports: HashMap<u16, Span> = HashMap::new();
        for t in &proxy.tls {
            let port = &t.value.port;
            if !proxy.listen.contains(&port.value) {
                self.push(
                    Diagnostic::error(
                        "tls-port-not-listened",
                        format!("TLS port {} is not a `listen` port", port.value),
                    )
                    .at(port.span, "the proxy does not listen here")
                    .help(format!(
                        "add {} to the proxy's `listen` (e.g. `listen: [80, {}]`)",
                        port.value, port.value
                    )),
                );
            }
            if let Some(first) = ports.insert(port.value, port.span) {
                self.push(
                    Diagnostic::error(
                        "duplicate-tls-port",
                        format!("port {} has two TLS settings", port.value),
                    )
                    .at(port.span, "again here")
                    .related(first, "first here")
                    .help("give each listen port one `tls` entry"),
                );
            }
            for secret in [&t.value.cert, &t.value.key] {
                if !spec.secrets.contains(&secret.value) {
                    self.unknown("secret", secret, spec.secrets.names(), "secrets");
                }
            }
        }
        if let Some(r) = &proxy.redirect_http
            && r.value
            && proxy.tls.is_empty()
        {
            self.push(
                Diagnostic::error(
                    "redirect-without-tls",
                    "`redirect_http` sends clients to https, but no listener has TLS",
                )
                .at(r.span, "redirects to a port that does not exist")
                .help("add `tls: [{ port: 443, cert: CERT_SECRET, key: KEY_SECRET }]` and 443 to `listen`, or remove `redirect_http`"),
            );
        }
    }

    /// `real_ip`: a header name and at least one trusted address or range.
    fn real_ip(&mut self, proxy: &Proxy) {
        let Some(r) = &proxy.real_ip else { return };
        if let Some(h) = &r.value.header {
            self.header_name(h, "`real_ip` header");
        }
        if r.value.trust.is_empty() {
            self.push(
                Diagnostic::error(
                    "real-ip-without-trust",
                    "`real_ip` trusts no load balancer",
                )
                .at(r.span, "`trust` is empty")
                .help("list the addresses or ranges of the load balancers in front of the proxy, e.g. `trust: [10.0.0.0/8]`: a client address header from anyone else can be forged"),
            );
        }
        for t in &r.value.trust {
            if !valid_cidr(&t.value) {
                self.push(
                    Diagnostic::error(
                        "invalid-trusted-address",
                        format!(
                            "`{}` is not an address or CIDR range",
                            t.value.escape_default()
                        ),
                    )
                    .at(t.span, "expected an IP address or `ADDRESS/BITS`")
                    .help("write e.g. `10.0.0.0/8`, `192.168.1.10` or `fd00::/8`"),
                );
            }
        }
    }

    /// A route's CORS: valid origins, no control characters, no `*` with credentials.
    fn cors(&mut self, cors: &Cors) {
        for origin in cors.origins() {
            self.control_characters(origin, "CORS origin");
            if !valid_origin(&origin.value) {
                self.push(
                    Diagnostic::error(
                        "invalid-cors-origin",
                        format!("`{}` is not a CORS origin", origin.value.escape_default()),
                    )
                    .at(origin.span, "expected `scheme://host[:port]`")
                    .help("write an origin such as `https://shop.example`, without a path"),
                );
            }
        }
        let Some(p) = cors.policy() else { return };
        for m in &p.methods {
            self.control_characters(m, "CORS method");
        }
        for h in &p.headers {
            self.control_characters(h, "CORS header");
        }
        if let Some(m) = &p.max_age {
            self.unit(m, "max_age");
        }
        if let Some(c) = &p.credentials
            && c.value
            && let Some(star) = p.origins.iter().find(|o| o.value == "*")
        {
            self.push(
                Diagnostic::error(
                    "cors-wildcard-with-credentials",
                    "CORS allows any origin (`*`) with credentials",
                )
                .at(star.span, "any origin")
                .related(c.span, "with credentials")
                .help("list the origins that may send credentials (e.g. `origins: [https://shop.example]`), or drop `credentials: true`; browsers refuse `*` with credentials"),
            );
        }
    }
}

/// An IPv4 or IPv6 address, or one with `/BITS` (at most 32 or 128).
fn valid_cidr(s: &str) -> bool {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.is_none_or(|b| {
        !b.is_empty()
            && b.bytes().all(|c| c.is_ascii_digit())
            && b.parse::<u8>().is_ok_and(|n| n <= max)
    })
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
