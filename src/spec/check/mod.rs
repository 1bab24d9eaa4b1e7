//! Structural checks of a parsed spec: names, duplicates, references, units, cycles and the
//! rules that keep a deployment safe (a pod owning a named volume cannot go blue-green).
//!
//! Every check runs and every problem is reported; nothing here stops at the first. One file
//! per subject: `pods` (with their mounts and ports), `ports` (host ports across pods),
//! `secrets`, `regions`, `cycles` (of `depends_on`), `proxy` and `backups`; the checker,
//! names and the helpers they share are here.

mod backups;
mod cycles;
mod jobs;
mod pods;
mod ports;
mod profiles;
mod proxy;
mod regions;
mod secrets;
mod stores;

use std::collections::HashMap;

use super::units::{Unit, UnitKind};
use super::{NamedMap, Sp, Spec};
use crate::diag::{Diagnostic, Span, hint_for};

pub use backups::{CalendarError, check_on_calendar};
pub use secrets::is_age_recipient;

/// Runs every structural check.
pub fn check(spec: &Spec) -> Vec<Diagnostic> {
    let mut c = Checker {
        spec,
        diags: Vec::new(),
    };
    c.header();
    c.names();
    c.regions();
    c.recipients_of("the spec", &spec.recipients);
    c.secrets();
    c.pods();
    c.jobs();
    c.profiles();
    c.cycles();
    c.host_ports();
    c.rate_limits();
    c.proxy();
    c.backups();
    c.stores();
    c.notify();
    c.diags
}

/// Most replicas of one pod in one region.
pub const MAX_REPLICAS: u32 = 100;

/// Pod names berth reserves for its own containers.
const RESERVED_POD_NAMES: &[&str] = &["proxy", "berth"];

/// The smallest CPU limit the engine accepts.
pub const MIN_CPUS: f64 = 0.01;

/// The shortest health `interval`: a probe more often than this is a busy loop.
pub const MIN_HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The shortest health `timeout`: the engine reads 0 as its own default (30s), and no
/// probe answers in less.
pub const MIN_HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether any argument holds a NUL byte (no program can receive one).
fn has_nul(args: &[String]) -> bool {
    args.iter().any(|a| a.contains('\0'))
}

/// A NUL byte in `what`, pointed at `span`.
fn nul_in(what: &str, span: Span, label: &str) -> Diagnostic {
    Diagnostic::error("nul-byte", format!("{what} holds a NUL byte"))
        .at(span, label.to_owned())
        .help("remove it: a NUL byte cannot reach a program (its arguments and environment end at the first one); binary data belongs in a file or a secret, or base64-encoded")
}

/// Whether the container path `path` is `dir` or inside it, as the engine reads paths
/// (`//` and `.` collapsed, `..` resolved, a trailing `/` ignored).
fn is_under(path: &str, dir: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let clean = format!("/{}", parts.join("/"));
    clean == dir || clean.starts_with(&format!("{dir}/"))
}

struct Checker<'a> {
    spec: &'a Spec,
    diags: Vec<Diagnostic>,
}

#[derive(Clone, Copy)]
enum NameRule {
    /// DNS label: pods, regions, backups, the project.
    Label,
    /// Secrets and rate limits: also `_`.
    Ident,
    /// Docker volume names.
    Volume,
}

impl NameRule {
    fn describe(self) -> &'static str {
        match self {
            NameRule::Label => {
                "lower-case letters, digits and `-`, starting with a letter, at most 40 characters"
            }
            NameRule::Ident => {
                "lower-case letters, digits, `_` and `-`, starting with a letter, at most 64 characters"
            }
            NameRule::Volume => {
                "lower-case letters, digits, `_`, `.` and `-`, starting with a letter or digit, at most 64 characters"
            }
        }
    }

    fn accepts(self, name: &str) -> bool {
        type ByteRule = fn(u8) -> bool;
        let (max, first_ok, rest_ok): (usize, ByteRule, ByteRule) = match self {
            NameRule::Label => (
                40,
                |b| b.is_ascii_lowercase(),
                |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
            ),
            NameRule::Ident => (
                64,
                |b| b.is_ascii_lowercase(),
                |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_',
            ),
            NameRule::Volume => (
                64,
                |b| b.is_ascii_lowercase() || b.is_ascii_digit(),
                |b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'),
            ),
        };
        let b = name.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && first_ok(b[0])
            && b[1..].iter().all(|&c| rest_ok(c))
            && !name.ends_with('-')
    }
}

impl Checker<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn header(&mut self) {
        let v = &self.spec.version;
        if v.value != 1 {
            self.push(
                Diagnostic::error(
                    "unsupported-version",
                    format!("spec version {} is not supported", v.value),
                )
                .at(v.span, "this berth reads version 1")
                .help("set `version: 1`"),
            );
        }
        let p = &self.spec.project;
        self.name(p, NameRule::Label, "project");
    }

    fn name(&mut self, name: &Sp<String>, rule: NameRule, what: &str) {
        if !rule.accepts(&name.value) {
            self.push(
                Diagnostic::error(
                    "invalid-name",
                    format!("{what} name `{}` is not valid", name.value),
                )
                .at(name.span, "invalid name")
                .help(format!("use {}", rule.describe())),
            );
        }
    }

    fn map_names<T>(&mut self, map: &NamedMap<T>, rule: NameRule, what: &str) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for n in map.iter() {
            self.name(&n.name, rule, what);
            if let Some(first) = seen.get(n.name.value.as_str()) {
                self.push(
                    Diagnostic::error(
                        "duplicate-name",
                        format!("{what} `{}` is defined twice", n.name.value),
                    )
                    .at(n.name.span, "defined again here")
                    .related(*first, "first defined here")
                    .help(format!("rename or remove one of the two {what}s")),
                );
            } else {
                seen.insert(&n.name.value, n.name.span);
            }
        }
    }

    fn names(&mut self) {
        let s = self.spec;
        self.map_names(&s.regions, NameRule::Label, "region");
        self.map_names(&s.secrets, NameRule::Ident, "secret");
        self.map_names(&s.volumes, NameRule::Volume, "volume");
        self.map_names(&s.pods, NameRule::Label, "pod");
        self.map_names(&s.rate_limits, NameRule::Ident, "rate limit");
        self.map_names(&s.backups, NameRule::Label, "backup");
        for n in s.pods.iter() {
            if RESERVED_POD_NAMES.contains(&n.name.value.as_str()) {
                self.push(
                    Diagnostic::error(
                        "reserved-name",
                        format!("pod name `{}` is reserved", n.name.value),
                    )
                    .at(n.name.span, "berth names its own containers this")
                    .help("choose another name, e.g. `web` or `gateway`"),
                );
            }
        }
    }

    /// An unknown reference, with a suggestion when a defined name is close.
    fn unknown<'n>(
        &mut self,
        what: &str,
        reference: &Sp<String>,
        defined: impl Iterator<Item = &'n str>,
        section: &str,
    ) {
        let names: Vec<&str> = defined.collect();
        let help = hint_for(
            &reference.value,
            &names,
            &format!("define it under `{section}:` or use one of:"),
            &format!("define it under `{section}:`"),
        );
        self.push(
            Diagnostic::error(
                "unknown-reference",
                format!("unknown {what} `{}`", reference.value),
            )
            .at(
                reference.span,
                format!("no {what} is named `{}`", reference.value),
            )
            .help(help),
        );
    }

    fn unit<K: UnitKind>(&mut self, unit: &Unit<K>, field: &str) {
        if let Err(why) = &unit.parsed {
            self.push(
                Diagnostic::error("invalid-unit", format!("`{field}`: {why}"))
                    .at(unit.raw.span, format!("not a {}", K::NAME))
                    .help(format!("write {}", K::HINT)),
            );
        }
    }

    fn no_duplicates(&mut self, list: &[Sp<String>], what: &str) {
        if list.len() < 2 {
            return;
        }
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for item in list {
            if let Some(first) = seen.insert(&item.value, item.span) {
                self.push(
                    Diagnostic::error(
                        "duplicate-entry",
                        format!("{what} `{}` is listed twice", item.value),
                    )
                    .at(item.span, "listed again here")
                    .related(first, "first listed here")
                    .help("remove the repeated entry"),
                );
            }
        }
    }

    fn notify(&mut self) {
        let Some(notify) = &self.spec.notify else {
            return;
        };
        if let Err(why) = crate::notify::Target::parse(&notify.value.hook().url) {
            self.push(
                Diagnostic::error("invalid-notify", format!("`notify` is not a webhook berth can call: {why}"))
                    .at(notify.span, "here")
                    .help("give `https://host[:port]/path` (berth's JSON) or `{ slack: URL }` (a Slack message)"),
            );
        }
    }
}

pub fn valid_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_under_a_directory() {
        for yes in [
            "/run/secrets",
            "/run/secrets/",
            "/run//secrets",
            "/run/./secrets/x",
            "/run/x/../secrets",
        ] {
            assert!(is_under(yes, "/run/secrets"), "{yes}");
        }
        for no in [
            "/run",
            "/run/secrets-x",
            "/run/secrets/..",
            "/srv/run/secrets",
        ] {
            assert!(!is_under(no, "/run/secrets"), "{no}");
        }
    }

    #[test]
    fn names() {
        assert!(NameRule::Label.accepts("api-2"));
        assert!(!NameRule::Label.accepts("Api"));
        assert!(!NameRule::Label.accepts("api-"));
        assert!(!NameRule::Label.accepts("2api"));
        assert!(NameRule::Ident.accepts("db_password"));
        assert!(NameRule::Volume.accepts("db-data.v2"));
    }
}
