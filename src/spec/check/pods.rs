//! Pods: image or build, replicas, dependencies, env, mounts, ports, resources, health and
//! checks.

use std::collections::HashMap;

use super::{
    Checker, MAX_REPLICAS, MIN_CPUS, MIN_HEALTH_INTERVAL, MIN_HEALTH_TIMEOUT, has_nul, is_under,
    nul_in, valid_env_name,
};
use crate::diag::{Diagnostic, Span};
use crate::spec::MountEntry;
use crate::spec::{
    EnvValue, NamedMap, Pod, SECRETS_MOUNT_POINT as MOUNT_POINT, Sp, Spec, Strategy,
};

impl Checker<'_> {
    pub(super) fn pods(&mut self) {
        let spec = self.spec;
        for p in spec.pods.iter() {
            let name = &p.name;
            let pod = &p.item;
            self.pod_image(name, pod);
            self.pod_replicas(name, pod);
            self.pod_depends_on(name, pod);
            self.no_duplicates(&pod.depends_on, "dependency");
            self.pod_secrets(name, pod);
            self.pod_env(pod);
            if pod.user.as_deref().is_some_and(|u| u.contains('\0')) {
                // The engine takes it, and the container then fails to start mid-apply.
                self.push(nul_in("`user` of this pod", name.span, "this pod's `user`"));
            }
            let named_volumes = self.pod_volumes(pod);
            self.pod_ports(name, pod);
            self.pod_resources(pod);
            self.pod_health(name, pod);
            let entrypoint = pod.entrypoint.as_deref();
            for (list, field) in [
                (pod.command.as_ref(), "command"),
                (entrypoint, "entrypoint"),
            ] {
                if list.is_some_and(|c| has_nul(c)) {
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
            self.pod_checks(pod);
            self.region_refs(&pod.regions, name);
        }
    }

    /// `image` or `build`, exactly one, and an image reference that can be one.
    pub(super) fn pod_image(&mut self, name: &Sp<String>, pod: &Pod) {
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
    }

    /// At least one replica, and no more than berth runs.
    fn pod_replicas(&mut self, name: &Sp<String>, pod: &Pod) {
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
    }

    /// `depends_on`: not itself, a pod that exists and runs in every region this one does
    /// (a plain name), or, with a region (`db@iad`), a region of the spec where that pod
    /// runs. Regions that wait for each other in a cycle are refused in [`Self::cycles`].
    fn pod_depends_on(&mut self, name: &Sp<String>, pod: &Pod) {
        let spec = self.spec;
        for dep in &pod.depends_on {
            let (target_name, region) = Pod::dependency(&dep.value);
            let here = spec.regions_of(&pod.regions);
            let same_region = region.is_none_or(|r| here.contains(&r));
            if target_name == name.value && same_region {
                self.push(
                    Diagnostic::error(
                        "dependency-cycle",
                        format!("pod `{}` depends on itself", name.value),
                    )
                    .at(dep.span, "itself")
                    .help("remove this entry from `depends_on`"),
                );
                continue;
            }
            let Some(target) = spec.pods.get(target_name) else {
                let pod_part = Sp::new(target_name.to_owned(), part_span(dep, 0, target_name));
                self.unknown("pod", &pod_part, spec.pods.names(), "pods");
                continue;
            };
            if let Some(region) = region {
                let defined = spec.region_names();
                let at = target_name.len() + 1;
                let region_part = Sp::new(region.to_owned(), part_span(dep, at, region));
                if !defined.contains(&region) {
                    self.push(
                        Diagnostic::error(
                            "unknown-reference",
                            format!("unknown region `{region}` in `{}`", dep.value),
                        )
                        .at(region_part.span, format!("no region is named `{region}`"))
                        .help(format!(
                            "write `POD@REGION` with a region `{target_name}` runs in: {}",
                            spec.regions_of(&target.regions)
                                .iter()
                                .map(|r| format!("`{target_name}@{r}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    );
                } else if !Spec::runs_in(&target.regions, region) {
                    self.push(
                        Diagnostic::error(
                            "cross-region-dependency",
                            format!("pod `{target_name}` does not run in region `{region}`"),
                        )
                        .at(dep.span, format!("no `{target_name}` to wait for in `{region}`"))
                        .help(format!(
                            "name a region `{target_name}` runs in ({}), or add `{region}` to its `regions:`",
                            spec.regions_of(&target.regions).join(", ")
                        )),
                    );
                }
                continue;
            }
            // Without `regions:` lists both run everywhere.
            let narrowed = pod.regions.is_some() || target.regions.is_some();
            if !narrowed {
                continue;
            }
            let there = spec.regions_of(&target.regions);
            if let Some(missing) = here.iter().find(|r| !there.contains(r)) {
                let elsewhere = there
                    .first()
                    .map(|r| {
                        format!(", or wait for the one of another region (`{target_name}@{r}`)")
                    })
                    .unwrap_or_default();
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
                        "run `{}` in `{missing}` too, or narrow `{}` with `regions:`{elsewhere}",
                        dep.value, name.value
                    )),
                );
            }
        }
    }

    /// `resources`: a CPU limit the engine takes, a memory limit a container starts with.
    pub(super) fn pod_resources(&mut self, pod: &Pod) {
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
    }

    /// `health`: one probe, durations the engine and the gate read alike, a real port.
    fn pod_health(&mut self, name: &Sp<String>, pod: &Pod) {
        if let Some(h) = &pod.health {
            match (&h.value.cmd, &h.value.http) {
                (Some(_), Some(_)) => self.push(
                    Diagnostic::error(
                        "health-cmd-and-http",
                        format!("pod `{}` health has both `cmd` and `http`", name.value),
                    )
                    .at(h.span, "one probe per pod")
                    .help("keep one of `cmd` and `http`"),
                ),
                // `min_uptime` alone needs no probe; the probe's timing does.
                (None, None)
                    if h.value.min_uptime.is_none()
                        || h.value.interval.is_some()
                        || h.value.timeout.is_some()
                        || h.value.retries.is_some()
                        || h.value.start_period.is_some() =>
                {
                    self.push(
                        Diagnostic::error(
                            "health-without-probe",
                            format!("pod `{}` health has no probe", name.value),
                        )
                        .at(h.span, "nothing to check")
                        .help("add `cmd: [...]` or `http: { port: N, path: /health }`; without a probe only `min_uptime` may be given"),
                    )
                }
                (Some(cmd), None) if cmd.is_empty() => self.push(
                    Diagnostic::error("empty-command", "health `cmd` is empty")
                        .at(h.span, "empty")
                        .help(
                            "give the command and its arguments, e.g. `[pg_isready, -U, postgres]`",
                        ),
                ),
                _ => {}
            }
            for (unit, field) in [
                (&h.value.interval, "health.interval"),
                (&h.value.timeout, "health.timeout"),
                (&h.value.start_period, "health.start_period"),
                (&h.value.min_uptime, "health.min_uptime"),
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
    }

    /// `checks`: ports, JSON pointers, latencies and statuses that can be.
    fn pod_checks(&mut self, pod: &Pod) {
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
                    Diagnostic::error("invalid-status", "`expect_status` is not an HTTP status")
                        .at(check.span, "in this check")
                        .help("give a status from 100 to 599, e.g. 200"),
                );
            }
        }
    }

    pub(super) fn pod_env(&mut self, pod: &Pod) {
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
    pub(super) fn pod_volumes<'p>(&mut self, pod: &'p Pod) -> Vec<&'p MountEntry> {
        let spec = self.spec;
        let mut named = Vec::new();
        let mut targets: HashMap<&str, Span> = HashMap::new();
        // berth mounts the pod's secret files there; the engine refuses a second mount at
        // that place (or one inside a read-only mount) in the middle of an apply.
        let secret_file = pod.secrets.iter().find(|s| s.value.env().is_none());
        for m in &pod.volumes {
            match m.get() {
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
            match p.get() {
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
}

/// The span of `part`, found at byte `at` of a `depends_on` entry: inside the entry when
/// the file holds it as written (unquoted), else the whole entry.
fn part_span(entry: &Sp<String>, at: usize, part: &str) -> Span {
    if entry.span.len() == entry.value.len() {
        Span::new(entry.span.offset() + at, part.len())
    } else {
        entry.span
    }
}
