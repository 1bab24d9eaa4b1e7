//! Lints: values that are legal but risky. Warnings in development and staging, errors in
//! production. A lint is silenced for one entry by a comment on a line of its own just above
//! the entry's key, or at the end of the key's line:
//!
//! ```yaml
//! # berth:allow(plaintext-credential): the demo key of the public sandbox API
//! SANDBOX_API_KEY: pk_test_123
//! SANDBOX_ID: sb_123 # berth:allow(plaintext-credential): an id, not a key
//! ```
//!
//! The reason after the colon is required. Diagnostics never quote the flagged value: it may
//! be a credential (and rendered snippets mask it, see `sensitive::mask_source`).

use std::collections::BTreeMap;

use super::{Environment, Spec};
use crate::diag::{Diagnostic, Severity, Span};
use crate::sensitive::{
    contains_age_secret_key, contains_pem, is_credential_key, is_forbidden_default, is_placeholder,
    url_password,
};

/// Every lint, with what it is about.
pub const LINTS: &[(&str, &str)] = &[
    (
        "plaintext-credential",
        "a credential written in plain `env` (a `*_KEY`/`*_TOKEN`/`*_PASSWORD`/`*_SECRET` value, a URL with a password, a PEM block)",
    ),
    (
        "forbidden-default",
        "a placeholder or well-known default credential (`CHANGE_ME`, `changeme`, `postgres`, `admin`, `password`)",
    ),
    (
        "debug-in-production",
        "debug mode switched on in production",
    ),
    ("insecure-url", "a public `http://` URL in production"),
    (
        "backup-store-relative",
        "a backup store given as a relative path",
    ),
    (
        "backup-key-on-host",
        "backups encrypted to the host's identity alone (lost with the host)",
    ),
    (
        "backup-unauthenticated",
        "backups without `backup_key:` (anyone with the public recipients can forge one that verifies)",
    ),
];

pub fn lint(spec: &Spec, source: &str) -> Vec<Diagnostic> {
    let env = spec.environment();
    let mut found = Vec::new();
    for p in spec.pods.iter() {
        // Build arguments end up in the image's history: the same rules as env.
        let env_entries = p.item.env.iter().map(|e| ("env", e));
        let args = p.item.build.iter().flat_map(|b| b.value.args.iter());
        for (place, e) in env_entries.chain(args.map(|a| ("build args", a))) {
            let key = &e.name.value;
            let value = &e.item.value.0;
            if let Some(d) = env_lint(key, value, env, place) {
                found.push((e.item.span, e.name.span, d));
            }
        }
    }
    if env == Environment::Production
        && let Some(proxy) = &spec.proxy
    {
        for route in &proxy.routes {
            for origin in &route.value.cors {
                if is_public_http(&origin.value) {
                    found.push((
                        origin.span,
                        origin.span,
                        Finding::new("insecure-url", "CORS origin uses plain http in production")
                            .label("public http:// origin")
                            .help("allow the `https://` origin instead"),
                    ));
                }
            }
        }
    }
    for b in spec.backups.iter() {
        if spec.backup_key.is_none() {
            found.push((
                b.name.span,
                b.name.span,
                Finding::new(
                    "backup-unauthenticated",
                    format!("backup `{}` is not authenticated", b.name.value),
                )
                .label("a backup forged with the public recipients would verify and restore")
                .help("name a secret as top-level `backup_key:` and make it: `berth secrets set NAME --generate`"),
            ));
        }
        let store = &b.item.store;
        let path = store.value.as_str();
        // A store under a temporary directory is an error of `check` (`backup-store-place`),
        // in every environment; a URL is `check`'s too (`backup-store-url`).
        if !path.starts_with('/') && !path.contains("://") {
            found.push((
                store.span,
                store.span,
                Finding::new(
                    "backup-store-relative",
                    format!("backup `{}` store is a relative path", b.name.value),
                )
                .label("relative to wherever berth runs")
                .help("give an absolute path such as `/var/backups/PROJECT`"),
            ));
        }
    }
    if spec.recipients.is_empty() {
        for b in spec.backups.iter().filter(|b| b.item.recipients.is_none()) {
            found.push((
                b.name.span,
                b.name.span,
                Finding::new(
                    "backup-key-on-host",
                    format!(
                        "backup `{}` is encrypted to the identity alone",
                        b.name.value
                    ),
                )
                .label("the only key that opens it lives on this host")
                .help("list a recipient whose key is kept off the host (`recipients:` at the top or on the backup)"),
            ));
        }
    }
    apply_allows(found, source, env)
}

/// What a lint found, before its severity and opt-outs are applied.
struct Finding {
    lint: &'static str,
    message: String,
    label: String,
    help: String,
}

impl Finding {
    fn new(lint: &'static str, message: impl Into<String>) -> Self {
        Finding {
            lint,
            message: message.into(),
            label: String::new(),
            help: String::new(),
        }
    }
    fn label(mut self, l: impl Into<String>) -> Self {
        self.label = l.into();
        self
    }
    fn help(mut self, h: impl Into<String>) -> Self {
        self.help = h.into();
        self
    }
}

/// A lint of one `KEY: value` entry of `place` (`env` or `build args`).
fn env_lint(key: &str, value: &str, env: Environment, place: &str) -> Option<Finding> {
    let lower = value.trim().to_ascii_lowercase();
    let use_secret = "move it to an age-encrypted secret (`berth secrets set NAME`) and list it under the pod's `secrets:`";
    if is_placeholder(value) {
        return Some(
            Finding::new(
                "forbidden-default",
                format!("`{key}` holds a placeholder value"),
            )
            .label("placeholder, not a real value")
            .help("set the real value in a secret; placeholders must never reach a host"),
        );
    }
    if let Some(password) = url_password(value) {
        let default = is_forbidden_default(password);
        return Some(if default {
            Finding::new(
                "forbidden-default",
                format!("`{key}` is a URL with a well-known default password"),
            )
            .label("default password in URL")
            .help(format!("choose a strong password and {use_secret}"))
        } else {
            Finding::new(
                "plaintext-credential",
                format!("`{key}` is a URL with a password in plain {place}"),
            )
            .label("password in URL")
            .help(use_secret)
        });
    }
    if contains_pem(value) || contains_age_secret_key(value) {
        return Some(
            Finding::new(
                "plaintext-credential",
                format!("`{key}` holds a private key in plain {place}"),
            )
            .label("PEM block")
            .help(use_secret),
        );
    }
    if is_credential_key(key) && !value.trim().is_empty() {
        if is_forbidden_default(value.trim()) {
            return Some(
                Finding::new(
                    "forbidden-default",
                    format!("`{key}` is a well-known default credential"),
                )
                .label("default credential")
                .help(format!("choose a strong value and {use_secret}")),
            );
        }
        return Some(
            Finding::new(
                "plaintext-credential",
                format!("`{key}` looks like a credential in plain {place}"),
            )
            .label("literal credential")
            .help(use_secret),
        );
    }
    if env == Environment::Production {
        let upper = key.to_ascii_uppercase();
        if (upper == "DEBUG" || upper.ends_with("_DEBUG"))
            && matches!(lower.as_str(), "true" | "1" | "yes" | "on")
        {
            return Some(
                Finding::new(
                    "debug-in-production",
                    format!("`{key}` switches debug mode on in production"),
                )
                .label("debug on")
                .help("set it to `false` for production"),
            );
        }
        if is_public_http(value) {
            return Some(
                Finding::new(
                    "insecure-url",
                    format!("`{key}` is a public http:// URL in production"),
                )
                .label("unencrypted")
                .help("use `https://`"),
            );
        }
    }
    None
}

/// `http://` to a host that is not loopback, a bare name (a pod on the network) or private.
fn is_public_http(value: &str) -> bool {
    let Some(rest) = value.trim().strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() || !host.contains('.') && !host.contains(':') {
        return false; // a service name on the project network
    }
    if host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".internal")
        || host.ends_with(".local")
    {
        return false;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            !(ip.is_loopback() || ip.is_private() || ip.is_link_local())
        }
        Ok(std::net::IpAddr::V6(ip)) => !(ip.is_loopback() || ip.is_unique_local()),
        Err(_) => true,
    }
}

/// `# berth:allow(LINT): reason` on a line.
struct Allow {
    lint: String,
    reason: String,
    span: Span,
    /// On a line of its own (applies to the next line) rather than after a value.
    own_line: bool,
    used: bool,
}

const ALLOW_MARK: &str = "berth:allow(";

fn parse_allows(source: &str) -> BTreeMap<usize, Vec<Allow>> {
    let mut by_line: BTreeMap<usize, Vec<Allow>> = BTreeMap::new();
    let mut offset = 0;
    for (i, line) in source.split_inclusive('\n').enumerate() {
        if let Some(hash) = line.find('#')
            && let Some(pos) = line[hash..].find(ALLOW_MARK)
        {
            let start = hash + pos;
            let after = &line[start + ALLOW_MARK.len()..];
            let (lint, tail) = after.split_once(')').unwrap_or((after.trim_end(), ""));
            let reason = tail.trim().strip_prefix(':').unwrap_or("").trim();
            let text_len = line[start..].trim_end().len();
            by_line.entry(i + 1).or_default().push(Allow {
                lint: lint.trim().to_owned(),
                reason: reason.to_owned(),
                span: Span::new(offset + start, text_len),
                own_line: line[..hash].trim().is_empty(),
                used: false,
            });
        }
        offset += line.len();
    }
    by_line
}

/// `found`: (span to label, span whose line an opt-out must be on or above, finding).
fn apply_allows(
    found: Vec<(Span, Span, Finding)>,
    source: &str,
    env: Environment,
) -> Vec<Diagnostic> {
    let mut allows = parse_allows(source);
    let severity = if env == Environment::Production {
        Severity::Error
    } else {
        Severity::Warning
    };
    let mut out = Vec::new();
    for (span, anchor, f) in found {
        let (line, _) = anchor.line_col(source);
        // A trailing opt-out on the entry's own line, or one on its own line just above.
        let mut allowed = false;
        for (l, own_line) in [(line, false), (line.saturating_sub(1), true)] {
            if let Some(list) = allows.get_mut(&l)
                && let Some(a) = list
                    .iter_mut()
                    .find(|a| a.lint == f.lint && !a.reason.is_empty() && a.own_line == own_line)
            {
                a.used = true;
                allowed = true;
                break;
            }
        }
        if allowed {
            continue;
        }
        let mut d = Diagnostic::error(format!("lint::{}", f.lint), f.message)
            .at(span, f.label)
            .help(format!(
                "{}; or, if this is intended, add `# berth:allow({}): REASON` on the line above the key",
                f.help, f.lint
            ));
        d.severity = severity;
        out.push(d);
    }
    for a in allows.into_values().flatten() {
        if !LINTS.iter().any(|(name, _)| *name == a.lint) {
            out.push(
                Diagnostic::error("unknown-lint", format!("`{}` is not a berth lint", a.lint))
                    .at(a.span, "in this opt-out")
                    .help(crate::diag::hint_for(
                        &a.lint,
                        &LINTS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                        "use one of:",
                        "",
                    )),
            );
        } else if a.reason.is_empty() {
            out.push(
                Diagnostic::error(
                    "allow-without-reason",
                    format!("opt-out of `{}` gives no reason", a.lint),
                )
                .at(a.span, "no reason")
                .help(format!(
                    "write why the lint does not apply: `# berth:allow({}): REASON`",
                    a.lint
                )),
            );
        } else if !a.used {
            out.push(
                Diagnostic::warning(
                    "unused-allow",
                    format!("opt-out of `{}` silences nothing", a.lint),
                )
                .at(a.span, "nothing to silence on this line or the next")
                .help("remove the comment, or move it onto the line above the value it excuses"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_http() {
        assert!(is_public_http("http://api.shop.example/v1"));
        assert!(is_public_http("http://8.8.8.8"));
        for v in [
            "http://api:8000",
            "http://localhost:3000",
            "http://10.0.0.4",
            "https://x.example",
            "http://[::1]:80",
        ] {
            assert!(!is_public_http(v), "{v}");
        }
    }

    #[test]
    fn allows_need_reasons() {
        let src = "a: 1\n# berth:allow(plaintext-credential): demo key\nb: 2\n  # berth:allow(insecure-url)\n";
        let allows = parse_allows(src);
        assert_eq!(allows[&2][0].lint, "plaintext-credential");
        assert_eq!(allows[&2][0].reason, "demo key");
        assert_eq!(allows[&4][0].reason, "");
    }
}
