//! Structural checks of a parsed spec: names, duplicates, references, units, cycles and the
//! rules that keep a deployment safe (a pod owning a named volume cannot go blue-green).
//!
//! Every check runs and every problem is reported; nothing here stops at the first.

use std::collections::{BTreeSet, HashMap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::SECRETS_MOUNT_POINT as MOUNT_POINT;
use super::units::{Unit, UnitKind};
use super::{EnvValue, NamedMap, Pod, SecretUse, Sp, Spec, Strategy};
use crate::diag::{Diagnostic, Span};
use crate::sensitive::contains_age_secret_key;

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
    c.cycles();
    c.host_ports();
    c.rate_limits();
    c.proxy();
    c.backups();
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

/// `did you mean`, when one of `candidates` is close to `name`: one or two edits away
/// (a typo, a swapped pair of letters), or very similar.
pub fn suggest<'n>(name: &str, candidates: impl Iterator<Item = &'n str>) -> Option<&'n str> {
    let max_edits = (name.chars().count() / 3).clamp(1, 2);
    candidates
        .map(|c| {
            (
                strsim::damerau_levenshtein(name, c),
                -strsim::jaro_winkler(name, c),
                c,
            )
        })
        .filter(|(edits, neg_jw, _)| *edits <= max_edits || -neg_jw > 0.9)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, c)| c)
}

/// The hint for a name that is not one of `candidates`: "did you mean `x`?" when one is
/// close, else `otherwise` followed by the candidates in backticks (or `empty` when there
/// are none).
pub fn hint_for(name: &str, candidates: &[&str], otherwise: &str, empty: &str) -> String {
    match suggest(name, candidates.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if candidates.is_empty() => empty.to_owned(),
        None => {
            let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
            format!("{otherwise} {}", list.join(", "))
        }
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

    fn regions(&mut self) {
        let regions = &self.spec.regions;
        let primaries: Vec<&Sp<String>> = regions
            .iter()
            .filter(|r| r.item.primary)
            .map(|r| &r.name)
            .collect();
        if regions.len() > 1 && primaries.is_empty() {
            let first = &regions.entries()[0].name;
            self.push(
                Diagnostic::error("no-primary-region", "no region is primary")
                    .at(first.span, "one of these regions must be rolled out first")
                    .help(format!(
                        "add `primary: true` to one region, e.g. `{}`",
                        first.value
                    )),
            );
        }
        if primaries.len() > 1 {
            let mut d = Diagnostic::error(
                "several-primary-regions",
                format!("{} regions are primary", primaries.len()),
            )
            .at(primaries[1].span, "also primary")
            .help("keep `primary: true` on exactly one region");
            d = d.related(primaries[0].span, "primary");
            self.push(d);
        }
        for r in regions.iter() {
            let engine = &r.item.engine;
            let scheme = engine.value.split_once("://");
            match scheme {
                Some(("unix", rest)) if rest.starts_with('/') => {}
                Some(("tcp", rest)) if !rest.is_empty() => {}
                Some(("ssh", rest)) if !rest.is_empty() => {}
                _ => self.push(
                    Diagnostic::error("invalid-engine", format!("engine `{}` is not an engine address", engine.value))
                        .at(engine.span, "not unix://, tcp:// or ssh://")
                        .help("write `unix:///var/run/docker.sock`, `tcp://host:2376` (with `tls`) or `ssh://user@host`"),
                ),
            }
            if r.item.tls.is_some() && !engine.value.starts_with("tcp://") {
                self.push(
                    Diagnostic::error("tls-without-tcp", "`tls` applies only to a tcp:// engine")
                        .at(engine.span, "not a tcp:// engine")
                        .help("remove `tls`, or use `tcp://host:2376`"),
                );
            }
        }
    }

    /// Every region name in `list` exists, and the list is not empty.
    fn region_refs(&mut self, list: &Option<Vec<Sp<String>>>, owner: &Sp<String>) {
        let Some(list) = list else { return };
        let defined = self.spec.region_names();
        if list.is_empty() {
            self.push(
                Diagnostic::error(
                    "empty-regions",
                    format!("`{}` runs in no region", owner.value),
                )
                .at(owner.span, "`regions: []`")
                .help("remove `regions:` to run it in every region, or name the regions"),
            );
        }
        for r in list {
            if !defined.contains(&r.value.as_str()) {
                self.unknown("region", r, defined.iter().copied(), "regions");
            }
        }
        self.no_duplicates(list, "region");
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
        let Some(url) = &self.spec.notify else { return };
        if let Err(why) = crate::notify::Target::parse(&url.value) {
            self.push(
                Diagnostic::error("invalid-notify", format!("`notify` is not a webhook berth can call: {why}"))
                    .at(url.span, "here")
                    .help("give `http://host[:port]/path`; for an https service, point it at a relay on the host or the private network"),
            );
        }
    }

    fn recipients_of(&mut self, owner: &str, list: &[Sp<String>]) {
        for r in list {
            let v = r.value.trim();
            if contains_age_secret_key(v) {
                // Never quote it: the snippet masks it, and so must the message.
                self.push(
                    Diagnostic::error("private-key-as-recipient", format!("{owner} lists an age private key as a recipient"))
                        .at(r.span, "this is a secret key, not a public recipient")
                        .help("remove it from the spec at once, rotate it, and list its public key (`age1...`, from `age-keygen -y`)"),
                );
            } else if !(is_age_recipient(v)
                || v.starts_with("ssh-ed25519 ")
                || v.starts_with("ssh-rsa "))
            {
                self.push(
                    Diagnostic::error("invalid-recipient", format!("{owner} lists something that is not an age recipient"))
                        .at(r.span, "not `age1...` or an ssh public key")
                        .help("use the public key printed by `berth secrets init` or `age-keygen -y KEYFILE`"),
                );
            }
        }
        self.no_duplicates(list, "recipient");
    }

    fn secrets(&mut self) {
        for s in self.spec.secrets.iter() {
            if s.item.file.value.trim().is_empty() {
                self.push(
                    Diagnostic::error(
                        "empty-path",
                        format!("secret `{}` has an empty `file`", s.name.value),
                    )
                    .at(s.item.file.span, "empty")
                    .help("give the path of the encrypted file, e.g. `secrets/db_password.age`"),
                );
            }
            match &s.item.recipients {
                Some(list) => self.recipients_of(&format!("secret `{}`", s.name.value), list),
                // With an explicit `identity:` and no list, secrets are encrypted to that
                // identity's key alone (a one-person, one-host setup).
                None if self.spec.recipients.is_empty() && self.spec.identity.is_none() => self.push(
                    Diagnostic::error(
                        "no-recipients",
                        format!("secret `{}` has no recipients", s.name.value),
                    )
                    .at(s.name.span, "nobody could decrypt it after a rotation")
                    .help("list the team's public keys under top-level `recipients:`, or name the one `identity:` whose key may decrypt"),
                ),
                None => {}
            }
            self.secret_file_inside(s);
            for (key, p) in [
                ("pattern", &s.item.pattern),
                ("forbid_pattern", &s.item.forbid_pattern),
            ] {
                let Some(p) = p else { continue };
                if let Err(why) = super::pattern::compile(&p.value) {
                    self.push(
                        Diagnostic::error(
                            "invalid-pattern",
                            format!(
                                "secret `{}` has a `{key}` that is not a regular expression: {why}",
                                s.name.value
                            ),
                        )
                        .at(p.span, "not a regular expression")
                        .help("write it in the syntax of Rust's `regex` crate (like RE2: no look-around or back-references), e.g. `^sk_live_[0-9A-Za-z]{24,}$`"),
                    );
                }
            }
            if s.item.min_length == Some(0) {
                self.push(
                    Diagnostic::warning(
                        "useless-check",
                        format!("secret `{}` has `min_length: 0`", s.name.value),
                    )
                    .at(s.name.span, "checks nothing")
                    .help("remove it or set a real minimum, e.g. 16"),
                );
            }
        }
    }

    /// A secret's `file` written so that it leaves the spec's directory (absolute, `~`, or
    /// climbing out with `..`), without `allow_outside: true`. Symlinks are resolved by the
    /// pre-flight and by `berth secrets set`, which see the files.
    fn secret_file_inside(&mut self, s: &super::Named<super::Secret>) {
        let file = &s.item.file;
        if s.item.allow_outside || file.value.trim().is_empty() {
            return;
        }
        let v = file.value.as_str();
        let mut depth: i64 = 0;
        let mut climbs = false;
        for part in v.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    depth -= 1;
                    climbs |= depth < 0;
                }
                _ => depth += 1,
            }
        }
        if v.starts_with('/') || v.starts_with('~') || climbs {
            self.push(
                Diagnostic::error(
                    "secret-file-outside",
                    format!(
                        "secret `{}` has a `file` outside the spec's directory",
                        s.name.value
                    ),
                )
                .at(file.span, "outside the spec's directory")
                .help("keep secret files beside the spec, e.g. `secrets/NAME.age`; if the file must live elsewhere, add `allow_outside: true` to this secret"),
            );
        }
    }

    fn pods(&mut self) {
        let spec = self.spec;
        for p in spec.pods.iter() {
            let name = &p.name;
            let pod = &p.item;
            match (&pod.image, &pod.build) {
                (Some(_), Some(b)) => self.push(
                    Diagnostic::error(
                        "image-and-build",
                        format!("pod `{}` has both `image` and `build`", name.value),
                    )
                    .at(b.span, "one or the other")
                    .help("keep `image` to run a published image, or `build` to build it here"),
                ),
                (None, None) => self.push(
                    Diagnostic::error(
                        "no-image",
                        format!("pod `{}` has neither `image` nor `build`", name.value),
                    )
                    .at(name.span, "nothing to run")
                    .help("add `image: NAME:TAG` or `build: { context: ./dir }`"),
                ),
                (Some(img), None)
                    if img.value.trim().is_empty()
                        || img.value.contains(char::is_whitespace)
                        || img.value.contains(char::is_control) =>
                {
                    self.push(
                        Diagnostic::error(
                            "invalid-image",
                            format!("`{}` is not an image reference", img.value.escape_debug()),
                        )
                        .at(
                            img.span,
                            if img.value.contains('\0') {
                                "holds a NUL byte"
                            } else {
                                "invalid image"
                            },
                        )
                        .help("write `name:tag` or `registry/name:tag`, e.g. `postgres:17.2`"),
                    )
                }
                _ => {}
            }
            if let Some(r) = &pod.replicas
                && r.value == 0
            {
                self.push(
                    Diagnostic::error(
                        "zero-replicas",
                        format!("pod `{}` has no replicas", name.value),
                    )
                    .at(r.span, "0 replicas")
                    .help("remove the pod from the spec to stop it, or set `replicas: 1`"),
                );
            }
            if let Some(r) = &pod.replicas
                && r.value > MAX_REPLICAS
            {
                self.push(
                    Diagnostic::error(
                        "too-many-replicas",
                        format!(
                            "pod `{}` asks for {} replicas, more than berth runs ({MAX_REPLICAS})",
                            name.value, r.value
                        ),
                    )
                    .at(r.span, "too many")
                    .help(format!(
                        "run at most {MAX_REPLICAS} replicas of one pod per region"
                    )),
                );
            }
            for dep in &pod.depends_on {
                if dep.value == name.value {
                    self.push(
                        Diagnostic::error(
                            "dependency-cycle",
                            format!("pod `{}` depends on itself", name.value),
                        )
                        .at(dep.span, "itself")
                        .help("remove this entry from `depends_on`"),
                    );
                } else if let Some(target) = spec.pods.get(&dep.value) {
                    // Without `regions:` lists both run everywhere.
                    let narrowed = pod.regions.is_some() || target.regions.is_some();
                    let here = if narrowed {
                        spec.regions_of(&pod.regions)
                    } else {
                        Vec::new()
                    };
                    let there = if narrowed {
                        spec.regions_of(&target.regions)
                    } else {
                        Vec::new()
                    };
                    if let Some(missing) = here.iter().find(|r| !there.contains(r)) {
                        self.push(
                            Diagnostic::error(
                                "cross-region-dependency",
                                format!(
                                    "pod `{}` runs in region `{missing}`, but `{}` does not",
                                    name.value, dep.value
                                ),
                            )
                            .at(
                                dep.span,
                                format!("`{}` cannot wait for it there", name.value),
                            )
                            .help(format!(
                                "run `{}` in `{missing}` too, or narrow `{}` with `regions:`",
                                dep.value, name.value
                            )),
                        );
                    }
                } else {
                    self.unknown("pod", dep, spec.pods.names(), "pods");
                }
            }
            self.no_duplicates(&pod.depends_on, "dependency");
            self.pod_secrets(name, pod);
            self.pod_env(pod);
            if pod.user.as_deref().is_some_and(|u| u.contains('\0')) {
                // The engine takes it, and the container then fails to start mid-apply.
                self.push(nul_in("`user` of this pod", name.span, "this pod's `user`"));
            }
            let named_volumes = self.pod_volumes(pod);
            self.pod_ports(name, pod);
            if let Some(res) = &pod.resources {
                if let Some(c) = &res.cpus
                    && !(c.value >= MIN_CPUS && c.value <= 1024.0)
                {
                    self.push(
                        Diagnostic::error(
                            "invalid-cpus",
                            format!("`cpus: {}` is not a CPU limit", c.value),
                        )
                        .at(c.span, format!("must be from {MIN_CPUS} to 1024"))
                        .help("give cores as a number, e.g. `0.5` or `2` (the engine's own CPU count is checked by apply)"),
                    );
                }
                if let Some(m) = &res.memory {
                    self.unit(m, "resources.memory");
                    if m.get().is_some_and(|b| b < 6 << 20) {
                        self.push(
                            Diagnostic::error(
                                "memory-too-small",
                                "a memory limit under 6MiB cannot start a container",
                            )
                            .at(m.raw.span, "too small")
                            .help("give at least `6MiB`; most services want `128MiB` or more"),
                        );
                    }
                }
            }
            if let Some(h) = &pod.health {
                match (&h.value.cmd, &h.value.http) {
                    (Some(_), Some(_)) => self.push(
                        Diagnostic::error("health-cmd-and-http", format!("pod `{}` health has both `cmd` and `http`", name.value))
                            .at(h.span, "one probe per pod")
                            .help("keep one of `cmd` and `http`"),
                    ),
                    (None, None) => self.push(
                        Diagnostic::error("health-without-probe", format!("pod `{}` health has no probe", name.value))
                            .at(h.span, "nothing to check")
                            .help("add `cmd: [...]` or `http: { port: N, path: /health }`"),
                    ),
                    (Some(cmd), None) if cmd.is_empty() => self.push(
                        Diagnostic::error("empty-command", "health `cmd` is empty")
                            .at(h.span, "empty")
                            .help("give the command and its arguments, e.g. `[pg_isready, -U, postgres]`"),
                    ),
                    _ => {}
                }
                for (unit, field) in [
                    (&h.value.interval, "health.interval"),
                    (&h.value.timeout, "health.timeout"),
                    (&h.value.start_period, "health.start_period"),
                ] {
                    if let Some(u) = unit {
                        self.unit(u, field);
                    }
                }
                if let Some(iv) = &h.value.interval
                    && let Some(d) = iv.get()
                    && d < MIN_HEALTH_INTERVAL
                {
                    self.push(
                        Diagnostic::error(
                            "health-interval-too-short",
                            format!(
                                "health `interval: {}` is shorter than {}ms",
                                iv.raw.value,
                                MIN_HEALTH_INTERVAL.as_millis()
                            ),
                        )
                        .at(iv.raw.span, "too short")
                        .help(format!(
                            "probe at most every {}ms, e.g. `interval: 500ms` or `2s`",
                            MIN_HEALTH_INTERVAL.as_millis()
                        )),
                    );
                }
                // The engine reads a zero timeout as its default (30s) while the gate
                // would read it as none: no probe can answer that fast anyway.
                if let Some(t) = &h.value.timeout
                    && let Some(d) = t.get()
                    && d < MIN_HEALTH_TIMEOUT
                {
                    self.push(
                        Diagnostic::error(
                            "health-timeout-too-short",
                            format!(
                                "health `timeout: {}` is shorter than {}ms",
                                t.raw.value,
                                MIN_HEALTH_TIMEOUT.as_millis()
                            ),
                        )
                        .at(t.raw.span, "too short")
                        .help(format!(
                            "give each probe at least {}ms to answer, e.g. `timeout: 1s` (the default)",
                            MIN_HEALTH_TIMEOUT.as_millis()
                        )),
                    );
                }
                if h.value.retries == Some(0) {
                    self.push(
                        Diagnostic::error("zero-retries", "health `retries: 0` never passes")
                            .at(h.span, "in this health check")
                            .help("give at least 1 retry"),
                    );
                }
                if let Some(http) = &h.value.http {
                    self.probe_port(&http.port, "health `http.port`");
                }
                if h.value.cmd.as_ref().is_some_and(|c| has_nul(c)) {
                    self.push(nul_in("health `cmd`", h.span, "in this health check"));
                }
            }
            for (list, field) in [(&pod.command, "command"), (&pod.entrypoint, "entrypoint")] {
                if list.as_ref().is_some_and(|c| has_nul(c)) {
                    self.push(nul_in(
                        &format!("pod `{}`'s `{field}`", name.value),
                        name.span,
                        &format!("its `{field}`"),
                    ));
                }
            }
            if let Some(u) = &pod.update
                && u.strategy.value == Strategy::BlueGreen
                && let Some(vol) = named_volumes.first()
            {
                self.push(
                    Diagnostic::error(
                        "blue-green-with-volume",
                        format!("pod `{}` cannot be replaced blue-green", name.value),
                    )
                    .at(u.strategy.span, "blue-green runs two containers at once")
                    .related(vol.span, "this named volume would be written by both")
                    .help("use `update: { strategy: recreate }` for pods that own named volumes"),
                );
            }
            for check in &pod.checks {
                let http = &check.value.http;
                self.probe_port(&http.port, "check `http.port`");
                if let Some(j) = &http.expect_json
                    && !(j.pointer.value.is_empty() || j.pointer.value.starts_with('/'))
                {
                    self.push(
                        Diagnostic::error(
                            "invalid-json-pointer",
                            format!("`{}` is not a JSON pointer", j.pointer.value),
                        )
                        .at(j.pointer.span, "must start with `/`")
                        .help("write an RFC 6901 pointer, e.g. `/keys` or `/status/ok`"),
                    );
                }
                if let Some(l) = &http.max_latency {
                    self.unit(l, "checks.http.max_latency");
                }
                if http
                    .expect_status
                    .is_some_and(|s| !(100..=599).contains(&s))
                {
                    self.push(
                        Diagnostic::error(
                            "invalid-status",
                            "`expect_status` is not an HTTP status",
                        )
                        .at(check.span, "in this check")
                        .help("give a status from 100 to 599, e.g. 200"),
                    );
                }
            }
            self.region_refs(&pod.regions, name);
        }
    }

    fn pod_secrets(&mut self, pod_name: &Sp<String>, pod: &Pod) {
        let spec = self.spec;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for use_ in &pod.secrets {
            let secret = use_.value.name();
            let as_sp = Sp::new(secret.to_owned(), use_.span);
            if !spec.secrets.contains(secret) {
                self.unknown("secret", &as_sp, spec.secrets.names(), "secrets");
            }
            if let Some(first) = seen.insert(secret, use_.span) {
                self.push(
                    Diagnostic::error(
                        "duplicate-entry",
                        format!(
                            "secret `{secret}` is given to pod `{}` twice",
                            pod_name.value
                        ),
                    )
                    .at(use_.span, "again here")
                    .related(first, "first here")
                    .help("list each secret once"),
                );
            }
            if let Some(var) = use_.value.env() {
                if !valid_env_name(var) {
                    self.push(
                        Diagnostic::error(
                            "invalid-env-name",
                            format!("`{var}` is not an environment variable name"),
                        )
                        .at(use_.span, "in this secret")
                        .help("use letters, digits and `_`, not starting with a digit"),
                    );
                }
                if pod.env.contains(var) {
                    self.push(
                        Diagnostic::error(
                            "env-conflict",
                            format!("`{var}` is set by both `env` and secret `{secret}`"),
                        )
                        .at(use_.span, "secret delivered as env")
                        .help("remove the plain `env` entry"),
                    );
                }
            }
            if let SecretUse::Detailed(d) = &use_.value
                && let Some(mode) = &d.mode
                && let Err(why) = &mode.parsed
            {
                // Spans inside a short/long-form secret entry are not kept; point at the entry.
                self.push(
                    Diagnostic::error("invalid-unit", format!("`mode`: {why}"))
                        .at(use_.span, "in this secret")
                        .help(format!("write {}", super::units::ModeKind::HINT)),
                );
            }
        }
    }

    fn pod_env(&mut self, pod: &Pod) {
        self.map_env_names(&pod.env);
        self.env_values(&pod.env, "env");
        if let Some(b) = &pod.build {
            self.map_env_names(&b.value.args);
            self.env_values(&b.value.args, "build arg");
        }
    }

    /// No value holds a NUL byte: a process cannot receive one in its environment (or a
    /// build in an argument), so the engine would refuse it in the middle of an apply.
    fn env_values(&mut self, env: &NamedMap<Sp<EnvValue>>, what: &str) {
        for e in env.iter() {
            if e.item.value.0.contains('\0') {
                // Never quote the value: it may be a credential.
                self.push(nul_in(
                    &format!("{what} `{}`", e.name.value),
                    e.item.span,
                    "a NUL byte in this value",
                ));
            }
        }
    }

    /// A probe's container port: 1-65535.
    fn probe_port(&mut self, port: &Sp<u16>, what: &str) {
        if port.value == 0 {
            self.push(
                Diagnostic::error("invalid-port", format!("{what} is 0"))
                    .at(port.span, "not a port")
                    .help("give the port the container listens on, 1-65535, e.g. `8080`"),
            );
        }
    }

    fn map_env_names<T>(&mut self, env: &NamedMap<T>) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for e in env.iter() {
            if !valid_env_name(&e.name.value) {
                self.push(
                    Diagnostic::error(
                        "invalid-env-name",
                        format!("`{}` is not an environment variable name", e.name.value),
                    )
                    .at(e.name.span, "invalid name")
                    .help("use letters, digits and `_`, not starting with a digit"),
                );
            }
            if let Some(first) = seen.insert(&e.name.value, e.name.span) {
                self.push(
                    Diagnostic::error("duplicate-name", format!("`{}` is set twice", e.name.value))
                        .at(e.name.span, "set again here")
                        .related(first, "first set here")
                        .help("keep one of the two entries"),
                );
            }
        }
    }

    /// Checks mounts; returns the named (not bind) volume mounts.
    fn pod_volumes<'p>(&mut self, pod: &'p Pod) -> Vec<&'p Sp<String>> {
        let spec = self.spec;
        let mut named = Vec::new();
        let mut targets: HashMap<&str, Span> = HashMap::new();
        // berth mounts the pod's secret files there; the engine refuses a second mount at
        // that place (or one inside a read-only mount) in the middle of an apply.
        let secret_file = pod.secrets.iter().find(|s| s.value.env().is_none());
        for m in &pod.volumes {
            match Mount::parse(&m.value) {
                Err(why) => self.push(
                    Diagnostic::error("invalid-mount", format!("`{}` is not a mount: {why}", m.value))
                        .at(m.span, "invalid mount")
                        .help("write `volume-name:/path`, `./dir:/path` or `/host/dir:/path`, optionally ending in `:ro`"),
                ),
                Ok(mount) => {
                    if !mount.bind {
                        named.push(m);
                        if !spec.volumes.contains(mount.source) {
                            let sp = Sp::new(mount.source.to_owned(), m.span);
                            self.unknown("volume", &sp, spec.volumes.names(), "volumes");
                        }
                    }
                    if let Some(secret) = secret_file
                        && is_under(mount.target, MOUNT_POINT)
                    {
                        self.push(
                            Diagnostic::error(
                                "reserved-mount",
                                format!("`{}` is where berth puts the pod's secrets", mount.target),
                            )
                            .at(m.span, format!("a mount at or inside `{MOUNT_POINT}`"))
                            .related(secret.span, format!("delivered as a file under `{MOUNT_POINT}`"))
                            .help(format!(
                                "mount it elsewhere (e.g. `/run/app`), or deliver the secret as env (`{{ name: NAME, env: VAR }}`); `{MOUNT_POINT}` is berth's in a pod with secret files"
                            )),
                        );
                    }
                    if let Some(first) = targets.insert(mount.target, m.span) {
                        self.push(
                            Diagnostic::error("duplicate-mount", format!("two mounts at `{}`", mount.target))
                                .at(m.span, "mounted again here")
                                .related(first, "first mounted here")
                                .help("mount each container path once"),
                        );
                    }
                }
            }
        }
        named
    }

    fn pod_ports(&mut self, name: &Sp<String>, pod: &Pod) {
        for p in &pod.ports {
            match PortMapping::parse(&p.value) {
                Err(why) => self.push(
                    Diagnostic::error(
                        "invalid-port",
                        format!("`{}` is not a port mapping: {why}", p.value),
                    )
                    .at(p.span, "invalid port mapping")
                    .help("write `HOST:CONTAINER`, e.g. `8080:80`, or `127.0.0.1:8080:80/tcp`"),
                ),
                Ok(pm) if pod.replicas() > 1 => self.push(
                    Diagnostic::error(
                        "replicas-share-port",
                        format!(
                            "the {} replicas of `{}` cannot all publish host port {}",
                            pod.replicas(),
                            name.value,
                            pm.host
                        ),
                    )
                    .at(p.span, "one host port, one container")
                    .help("route to the pod through the `proxy`, or run one replica"),
                ),
                Ok(_) => {}
            }
        }
        if let Some(u) = &pod.update
            && u.strategy.value == Strategy::BlueGreen
            && let Some(p) = pod.ports.first()
        {
            self.push(
                Diagnostic::error("blue-green-with-port", format!("pod `{}` cannot be replaced blue-green", name.value))
                    .at(u.strategy.span, "blue-green runs two containers at once")
                    .related(p.span, "only one of them can hold this host port")
                    .help("use `update: { strategy: recreate }`, or route to the pod through the `proxy` instead of publishing a port"),
            );
        }
    }

    /// No two pods (or a pod and the proxy) of one region publish the same host port.
    fn host_ports(&mut self) {
        /// Who publishes a host port, where.
        struct Publisher {
            ip: String,
            span: Span,
            what: String,
        }
        let spec = self.spec;
        let mut clashes: Vec<(u16, Publisher, Span, String)> = Vec::new();
        for region in spec.region_names() {
            let mut seen: HashMap<(u16, String), Vec<Publisher>> = HashMap::new();
            let mut publish = |port: u16, proto: &str, ip: &str, span: Span, what: String| {
                let ip = if ip == "0.0.0.0" || ip == "::" {
                    ""
                } else {
                    ip
                };
                let list = seen.entry((port, proto.to_owned())).or_default();
                if let Some(first) = list
                    .iter()
                    .find(|p| p.ip.is_empty() || ip.is_empty() || p.ip == ip)
                {
                    clashes.push((
                        port,
                        Publisher {
                            ip: ip.to_owned(),
                            span,
                            what: what.clone(),
                        },
                        first.span,
                        first.what.clone(),
                    ));
                }
                list.push(Publisher {
                    ip: ip.to_owned(),
                    span,
                    what,
                });
            };
            for p in spec.pods.iter() {
                if !Spec::runs_in(&p.item.regions, region) {
                    continue;
                }
                for m in &p.item.ports {
                    if let Ok(pm) = PortMapping::parse(&m.value) {
                        publish(
                            pm.host,
                            &pm.protocol,
                            &pm.ip,
                            m.span,
                            format!("pod `{}`", p.name.value),
                        );
                    }
                }
            }
            if let Some(proxy) = &spec.proxy {
                for port in &proxy.listen {
                    publish(*port, "tcp", "", proxy.image.span, "the proxy".to_owned());
                }
            }
        }
        let mut reported = std::collections::HashSet::new();
        for (port, again, first, first_what) in clashes {
            // The same clash shows in every region both run in: report it once.
            if !reported.insert(again.span) {
                continue;
            }
            let what = again.what;
            let message = if what == first_what {
                format!("host port {port} is published twice by {what}")
            } else {
                format!("host port {port} is published by {first_what} and {what}")
            };
            self.push(
                Diagnostic::error("port-conflict", message)
                    .at(again.span, format!("{what} publishes it again"))
                    .related(first, format!("{first_what} publishes it here"))
                    .help("give each a different host port, or route both through the proxy"),
            );
        }
    }

    fn cycles(&mut self) {
        let pods = &self.spec.pods;
        let mut g: DiGraph<&str, Span> = DiGraph::with_capacity(pods.len(), pods.len());
        let mut idx: HashMap<&str, NodeIndex> = HashMap::with_capacity(pods.len());
        for p in pods.iter() {
            idx.entry(p.name.value.as_str())
                .or_insert_with(|| g.add_node(&p.name.value));
        }
        for p in pods.iter() {
            let from = idx[p.name.value.as_str()];
            for d in &p.item.depends_on {
                if d.value == p.name.value {
                    continue; // reported as a self-dependency
                }
                if let Some(&to) = idx.get(d.value.as_str()) {
                    g.add_edge(from, to, d.span);
                }
            }
        }
        let mut sccs = tarjan_scc(&g);
        sccs.retain(|c| c.len() > 1);
        sccs.sort_by_key(|c| c.iter().map(|n| g[*n]).min());
        for scc in sccs {
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc.iter().min_by_key(|n| g[**n]).unwrap_or(&scc[0]);
            let path = cycle_through(&g, start, &members);
            let names: Vec<&str> = path.iter().map(|(n, _)| g[*n]).collect();
            let mut shown = names.clone();
            shown.push(names[0]);
            let chain = shown.join(" -> ");
            let mut d = Diagnostic::error("dependency-cycle", format!("dependency cycle: {chain}"))
                .help("remove one of these `depends_on` entries: a pod cannot wait for itself");
            for (i, (_, edge_span)) in path.iter().enumerate() {
                let label = format!("`{}` depends on `{}`", shown[i], shown[i + 1]);
                d = if i == 0 {
                    d.at(*edge_span, label)
                } else {
                    d.related(*edge_span, label)
                };
            }
            self.push(d);
        }
    }

    fn rate_limits(&mut self) {
        for r in self.spec.rate_limits.iter() {
            self.unit(&r.item.rate, "rate");
        }
    }

    fn proxy(&mut self) {
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
        let all_regions: Vec<&str> = spec.regions.names().collect();
        for route in &proxy.routes {
            let r = &route.value;
            match r.target() {
                None => self.push(
                    Diagnostic::error(
                        "invalid-route-target",
                        format!("route target `{}` is not `pod:port`", r.to.value),
                    )
                    .at(r.to.span, "expected `pod:port`")
                    .help("name a pod and the port it listens on, e.g. `api:8000`"),
                ),
                Some((pod, _)) => match spec.pods.get(pod) {
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
                                        format!(
                                            "pod `{pod}` does not run in region `{}`",
                                            missing[0]
                                        ),
                                    )
                                    .at(r.to.span, "the proxy runs in every region")
                                    .help(format!(
                                        "run `{pod}` in every region, or drop this route"
                                    )),
                                );
                            }
                        }
                    }
                },
            }
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

    fn backups(&mut self) {
        let spec = self.spec;
        for b in spec.backups.iter() {
            let src = &b.item.source;
            let s = &src.value;
            let kinds = [s.exec.is_some(), s.volume.is_some(), s.path.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
            if kinds != 1 {
                self.push(
                    Diagnostic::error("backup-source", format!("backup `{}` needs exactly one of `exec`, `volume` and `path`", b.name.value))
                        .at(src.span, if kinds == 0 { "nothing to back up" } else { "more than one source" })
                        .help("e.g. `{ pod: db, exec: [pg_dump, -Fc, shop] }`, `{ volume: db-data }` or `{ path: /srv/uploads }`"),
                );
            }
            if s.exec.is_some() && s.pod.is_none() {
                self.push(
                    Diagnostic::error("backup-source", "`exec` needs the `pod` to run in")
                        .at(src.span, "no pod")
                        .help("add `pod: NAME`"),
                );
            }
            if s.exec.as_ref().is_some_and(|e| e.is_empty()) {
                self.push(
                    Diagnostic::error("empty-command", "backup `exec` is empty")
                        .at(src.span, "empty")
                        .help("give the command and its arguments, e.g. `[pg_dump, -Fc, shop]`"),
                );
            }
            if s.restore.is_some() && s.exec.is_none() {
                self.push(
                    Diagnostic::error(
                        "backup-source",
                        "`restore` applies only to an `exec` source",
                    )
                    .at(src.span, "no exec")
                    .help("remove `restore`: volumes and paths are restored as files"),
                );
            }
            if let Some(pod) = &s.pod {
                match spec.pods.get(&pod.value) {
                    None => self.unknown("pod", pod, spec.pods.names(), "pods"),
                    Some(p) => {
                        if let Some(vol) = &s.volume {
                            let mounts = p
                                .volumes
                                .iter()
                                .filter_map(|m| Mount::parse(&m.value).ok())
                                .any(|m| !m.bind && m.source == vol.value);
                            if !mounts {
                                self.push(
                                    Diagnostic::error(
                                        "backup-source",
                                        format!(
                                            "pod `{}` does not mount volume `{}`",
                                            pod.value, vol.value
                                        ),
                                    )
                                    .at(vol.span, "not mounted by that pod")
                                    .help("name the pod that mounts the volume, or drop `pod`"),
                                );
                            }
                        }
                    }
                }
            }
            if let Some(vol) = &s.volume
                && !spec.volumes.contains(&vol.value)
            {
                self.unknown("volume", vol, spec.volumes.names(), "volumes");
            }
            if let Some(path) = &s.path
                && !path.value.starts_with('/')
            {
                self.push(
                    Diagnostic::error(
                        "relative-path",
                        format!("backup path `{}` is not absolute", path.value),
                    )
                    .at(path.span, "relative")
                    .help("give the absolute host path, e.g. `/srv/uploads`"),
                );
            }
            self.backup_store(&b.name.value, &b.item.store);
            if let Some(sched) = &b.item.schedule
                && let Err(why) = check_on_calendar(&sched.value)
            {
                self.push(
                    Diagnostic::error(
                        "invalid-schedule",
                        format!(
                            "`{}` is not a systemd calendar expression: {why}",
                            sched.value
                        ),
                    )
                    .at(sched.span, "invalid schedule")
                    .help("write e.g. `daily`, `hourly`, `*-*-* 03:00:00` or `Mon *-*-* 04:30:00`"),
                );
            }
            if let Some(r) = &b.item.retention
                && [r.daily, r.weekly, r.monthly]
                    .iter()
                    .all(|n| n.unwrap_or(0) == 0)
            {
                self.push(
                    Diagnostic::error(
                        "empty-retention",
                        format!("backup `{}` retention keeps nothing", b.name.value),
                    )
                    .at(b.name.span, "every backup would be pruned")
                    .help("keep at least one bucket, e.g. `{ daily: 7, weekly: 4 }`"),
                );
            }
            match &b.item.recipients {
                Some(list) => self.recipients_of(&format!("backup `{}`", b.name.value), list),
                // With an explicit `identity:`, its key (the `backup-key-on-host` lint
                // says why that alone is risky).
                None if spec.recipients.is_empty() && spec.identity.is_none() => self.push(
                    Diagnostic::error(
                        "no-recipients",
                        format!("backup `{}` has no recipients", b.name.value),
                    )
                    .at(b.name.span, "backups are always encrypted")
                    .help("list the team's public keys under top-level `recipients:`, or name the one `identity:` whose key may decrypt"),
                ),
                None => {}
            }
        }
    }
}

impl Checker<'_> {
    /// A backup store is a directory of its own: never `/`, a system directory (or a child
    /// of one the OS owns) or a temporary directory, in any environment. berth makes the
    /// store and may change its mode: such a directory is shared.
    fn backup_store(&mut self, backup: &str, store: &crate::spec::Sp<String>) {
        let path = crate::fsutil::expand_home(&store.value);
        if !path.is_absolute() {
            return; // the `backup-store-relative` lint
        }
        if let Some(why) = crate::fsutil::refused_place(&path) {
            self.push(
                Diagnostic::error(
                    "backup-store-place",
                    format!("backup `{backup}` cannot be stored there: {why}"),
                )
                .at(store.span, "not a directory of its own")
                .help("give a directory that berth makes and keeps 0700, e.g. `/var/backups/PROJECT` or `/srv/backups/PROJECT`"),
            );
        }
    }
}

/// Depth-first search for a cycle from `start` back to itself inside one SCC; returns the
/// nodes in order with the span of the edge leaving each.
fn cycle_through(
    g: &DiGraph<&str, Span>,
    start: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> Vec<(NodeIndex, Span)> {
    fn dfs(
        g: &DiGraph<&str, Span>,
        at: NodeIndex,
        start: NodeIndex,
        members: &BTreeSet<NodeIndex>,
        seen: &mut BTreeSet<NodeIndex>,
        path: &mut Vec<(NodeIndex, Span)>,
    ) -> bool {
        let mut edges: Vec<_> = g.edges(at).collect();
        edges.sort_by_key(|e| g[petgraph::visit::EdgeRef::target(e)]);
        for e in edges {
            let to = petgraph::visit::EdgeRef::target(&e);
            if !members.contains(&to) {
                continue;
            }
            path.push((at, *e.weight()));
            if to == start {
                return true;
            }
            if seen.insert(to) && dfs(g, to, start, members, seen, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    let mut seen = BTreeSet::from([start]);
    dfs(g, start, start, members, &mut seen, &mut path);
    path
}

/// A parsed `source:target[:ro|rw]` mount.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount<'a> {
    pub source: &'a str,
    pub target: &'a str,
    pub read_only: bool,
    /// A host path (`/..`, `./..`, `../..`, `~/..`) rather than a named volume.
    pub bind: bool,
}

impl<'a> Mount<'a> {
    pub fn parse(s: &'a str) -> Result<Mount<'a>, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            [_, _, opt] => return Err(format!("unknown option `{opt}` (use `ro` or `rw`)")),
            [_] => return Err("no container path".into()),
            _ => return Err("too many `:`".into()),
        };
        if source.is_empty() {
            return Err("empty source".into());
        }
        if !target.starts_with('/') {
            return Err(format!("container path `{target}` is not absolute"));
        }
        if target.split('/').all(|c| c.is_empty() || c == ".") {
            return Err(format!(
                "container path `{target}` is the container's root, which the engine never mounts over (mount at a directory such as `/data`)"
            ));
        }
        let bind = source.starts_with('/')
            || source.starts_with("./")
            || source.starts_with("../")
            || source.starts_with('~');
        Ok(Mount {
            source,
            target,
            read_only,
            bind,
        })
    }
}

/// A parsed `[ip:]host:container[/proto]` port mapping.
#[derive(Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub ip: String,
    pub host: u16,
    pub container: u16,
    pub protocol: String,
}

impl PortMapping {
    pub fn parse(s: &str) -> Result<PortMapping, String> {
        let (rest, protocol) = match s.rsplit_once('/') {
            Some((r, p @ ("tcp" | "udp"))) => (r, p),
            Some((_, p)) => return Err(format!("unknown protocol `{p}`")),
            None => (s, "tcp"),
        };
        let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c, h] => ("", *h, *c),
            [c, h, ip] => (*ip, *h, *c),
            [_] => return Err("publish as `HOST:CONTAINER`".into()),
            _ => return Err("too many `:`".into()),
        };
        let port = |p: &str, what: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("{what} port `{p}` is not 1-65535")),
                Ok(n) => Ok(n),
            }
        };
        // `[v6]` in brackets (exactly one pair), or a bare address as the engine reads it.
        let ip = match (ip.strip_prefix('['), ip.ends_with(']')) {
            (Some(inner), true) => {
                let inner = &inner[..inner.len() - 1];
                if inner.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(format!("`{ip}` is not an IPv6 address in brackets"));
                }
                inner
            }
            (None, false) => ip,
            _ => {
                return Err(format!(
                    "`{ip}` has an unpaired bracket (write `[::1]:8080:80`)"
                ));
            }
        };
        if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("`{ip}` is not an IP address"));
        }
        Ok(PortMapping {
            ip: ip.to_owned(),
            host: port(host, "host")?,
            container: port(container, "container")?,
            protocol: protocol.to_owned(),
        })
    }
}

pub fn valid_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
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

/// An age X25519 recipient: `age1` and 58 bech32 characters.
pub fn is_age_recipient(s: &str) -> bool {
    const BECH32: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    s.len() == 62 && s.starts_with("age1") && s[4..].chars().all(|c| BECH32.contains(c))
}

/// A structural check of systemd `OnCalendar` syntax: the named shortcuts, or
/// `[weekdays] [date] time` with the characters systemd accepts in each part.
pub fn check_on_calendar(s: &str) -> Result<(), String> {
    const SHORTCUTS: &[&str] = &[
        "minutely",
        "hourly",
        "daily",
        "weekly",
        "monthly",
        "yearly",
        "annually",
        "quarterly",
        "semiannually",
    ];
    let s = s.trim();
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if SHORTCUTS.contains(&s) {
        return Ok(());
    }
    let mut parts: Vec<&str> = s.split_whitespace().collect();
    const DAYS: &[&str] = &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    if let Some(first) = parts.first()
        && first
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
    {
        for piece in first.split([',', '.']).filter(|p| !p.is_empty()) {
            if !DAYS.contains(&piece) {
                return Err(format!("`{piece}` is not a weekday (Mon..Sun)"));
            }
        }
        parts.remove(0);
    }
    let ok_chars = |p: &str| {
        p.chars()
            .all(|c| c.is_ascii_digit() || "*,./~-:".contains(c))
    };
    match parts.as_slice() {
        [time] if time.contains(':') && ok_chars(time) => Ok(()),
        [date, time]
            if date.contains('-') && time.contains(':') && ok_chars(date) && ok_chars(time) =>
        {
            Ok(())
        }
        [date] if date.contains('-') && ok_chars(date) => Ok(()),
        _ if parts.len() == 5 => Err(
            "this looks like a cron expression; systemd writes `0 3 * * *` as `*-*-* 03:00:00`"
                .into(),
        ),
        _ => Err("expected `[weekday] [year-month-day] hour:minute[:second]`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts() {
        let m = Mount::parse("db-data:/var/lib/postgresql/data").unwrap();
        assert!(!m.bind && !m.read_only);
        assert!(Mount::parse("./conf:/etc/app:ro").unwrap().bind);
        assert!(Mount::parse("/srv:/srv:ro").unwrap().read_only);
        assert!(Mount::parse("data").is_err());
        assert!(Mount::parse("data:relative").is_err());
        assert!(Mount::parse("data:/x:rx").is_err());
        for root in ["/x:/", "data://", "data:/.", "data:/./"] {
            let e = Mount::parse(root).unwrap_err();
            assert!(e.contains("the container's root"), "{root}: {e}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(PortMapping::parse("8080:80").unwrap().host, 8080);
        let p = PortMapping::parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (p.ip.as_str(), p.container, p.protocol.as_str()),
            ("127.0.0.1", 80, "udp")
        );
        assert_eq!(PortMapping::parse("[::1]:17002:80").unwrap().ip, "::1");
        assert_eq!(PortMapping::parse("::1:17002:80").unwrap().ip, "::1");
        for bad in [
            "80",
            "0:80",
            "70000:80",
            "x:80",
            "8080:80/sctp",
            "300.1.1.1:1:2",
            "[::1:17002:80",
            "::1]:17002:80",
            "[127.0.0.1]:17002:80",
            "[[::1]]:17002:80",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }

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
    fn calendars() {
        for ok in [
            "daily",
            "*-*-* 03:00:00",
            "Mon *-*-* 04:30",
            "Mon,Fri 02:00",
            "*:0/15",
            "2026-01-01",
        ] {
            assert!(check_on_calendar(ok).is_ok(), "{ok}");
        }
        for bad in ["", "every day", "Funday 03:00", "*-*-* 3am", "0 3 * * *"] {
            assert!(check_on_calendar(bad).is_err(), "{bad}");
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

    #[test]
    fn recipients() {
        assert!(is_age_recipient(
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
        ));
        assert!(!is_age_recipient("age1short"));
    }
}
