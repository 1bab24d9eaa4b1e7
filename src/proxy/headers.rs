//! The response headers the proxy adds: the `security_headers` preset with the spec's
//! `headers:` merged over it, rendered once as `add_header ... always;` lines (nginx drops a
//! level's `add_header`s in a block that has its own, so every block repeats them).

use std::collections::BTreeMap;

use crate::spec::{Proxy, SecurityHeaders};

/// The header only TLS listeners send.
pub const HSTS: &str = "Strict-Transport-Security";

/// The preset of a `security_headers` level: (name, value), HSTS included.
pub fn preset(level: SecurityHeaders) -> &'static [(&'static str, &'static str)] {
    match level {
        SecurityHeaders::Strict => &[
            (HSTS, "max-age=31536000; includeSubDomains"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "strict-origin-when-cross-origin"),
            (
                "Content-Security-Policy",
                "default-src 'self'; frame-ancestors 'none'; base-uri 'self'",
            ),
            (
                "Permissions-Policy",
                "camera=(), microphone=(), geolocation=()",
            ),
        ],
        SecurityHeaders::Basic => &[
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "strict-origin-when-cross-origin"),
        ],
        SecurityHeaders::Off => &[],
    }
}

/// The headers the proxy adds on every response, merged: sorted by (case-insensitive) name.
pub fn merged(proxy: &Proxy) -> Vec<(String, String)> {
    let level = proxy.security_headers.unwrap_or(SecurityHeaders::Off);
    let mut set: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, value) in preset(level) {
        set.insert(
            name.to_ascii_lowercase(),
            ((*name).to_owned(), (*value).to_owned()),
        );
    }
    for h in proxy.headers.iter() {
        let key = h.name.value.to_ascii_lowercase();
        let value = &h.item.value.0;
        if value.is_empty() {
            set.remove(&key);
        } else {
            set.insert(key, (h.name.value.clone(), value.clone()));
        }
    }
    set.into_values().collect()
}

/// The rendered header lines of the two kinds of listener.
pub struct Lines {
    /// `add_header` lines of a plain listener (no HSTS).
    pub plain: Vec<String>,
    /// `add_header` lines of a TLS listener.
    pub tls: Vec<String>,
    /// `proxy_hide_header` lines: an upstream's own copy of a header the proxy sets is
    /// dropped, so that exactly the spec's value arrives.
    pub hide: Vec<String>,
}

impl Lines {
    pub fn new(proxy: &Proxy) -> Lines {
        let merged = merged(proxy);
        let add =
            |(n, v): &(String, String)| format!("add_header {} {} always;", quote(n), quote(v));
        Lines {
            plain: merged
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case(HSTS))
                .map(add)
                .collect(),
            tls: merged.iter().map(add).collect(),
            hide: merged
                .iter()
                .map(|(n, _)| format!("proxy_hide_header {};", quote(n)))
                .collect(),
        }
    }

    pub fn of(&self, tls: bool) -> &[String] {
        if tls { &self.tls } else { &self.plain }
    }
}

/// `"text"` as an nginx string: `\` and `"` escaped, nothing else changed (a `$` stays a
/// variable reference, which nginx checks when it reads the config).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
