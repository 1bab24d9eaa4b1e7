//! The spec: `berth.yaml` read into typed data that remembers where every value was written.
//!
//! [`load`] parses the YAML (serde-saphyr, with budgets against bombs), [`check`] finds
//! structural mistakes (by subject: pods, ports, secrets, regions, cycles, proxy, backups),
//! [`lint`] finds risky values. All three produce [`crate::diag::Diagnostic`]s.
//!
//! Values with a syntax of their own are parsed once, at load, and keep their text and span:
//! [`units`] (durations, sizes, rates, file modes) and [`mapping`] (a pod's mounts and
//! ports, a route's `pod:port`). A bad one never fails the load: [`check`] reports it, with
//! its typed error, and the rest of berth reads the parsed value. [`spanned`] holds the
//! spanned wrappers ([`Sp`], [`Named`]); [`pattern`] compiles a secret's regular
//! expressions the same way here and where a value is checked. [`proxy`] holds the types of
//! the managed proxy (rate limits, listeners, TLS, headers, routes and their CORS). The same
//! types generate the JSON Schema in `schemas/berth.schema.json` ([`schema`]).

pub mod backup;
pub mod check;
pub mod job;
pub mod lint;
pub mod load;
pub mod mapping;
pub mod notify;
pub mod pattern;
pub mod proxy;
pub mod rollout;
pub mod schema;
pub mod spanned;
pub mod units;

use schemars::JsonSchema;
use serde::Deserialize;

pub use backup::{
    Backup, BackupSource, Compression, CompressionSpec, Consistency, Drill, DrillSpec, Retention,
    StoreSpec, parse_s3_url, parse_sftp_url,
};
pub use job::Job;
pub use load::{Loaded, load_file, load_str};
pub use mapping::{Mount, MountEntry, PortEntry, PortMapping, RouteTargetEntry};
pub use notify::{Notify, SlackHook};
pub use proxy::{
    Cors, CorsPolicy, Proxy, ProxyTls, RateKey, RateLimit, RealIp, Route, SecurityHeaders,
};
pub use rollout::{OnFailure, Rollout};
pub use spanned::{Named, NamedMap, Sp};
pub use units::{Duration, Mode, RateUnit, Size};

/// A berth spec, version 1.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "berth spec")]
pub struct Spec {
    /// Spec format version; only `1` exists.
    pub version: Sp<u32>,
    /// Project name, `[a-z][a-z0-9-]*`; prefixes every container, network and volume.
    pub project: Sp<String>,
    /// `production` turns the lints into errors.
    #[serde(default)]
    pub environment: Option<Sp<Environment>>,
    /// Path of the age identity used to decrypt secrets (`~` is the user's home).
    #[serde(default)]
    pub identity: Option<Sp<String>>,
    /// Default age recipients (`age1...` or `ssh-ed25519 ...`) for secrets and backups.
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub recipients: Vec<Sp<String>>,
    /// Container engines to deploy to; default: one region `local` on the local engine.
    #[serde(default)]
    pub regions: NamedMap<Region>,
    /// age-encrypted secret files, delivered to the pods that name them.
    #[serde(default)]
    pub secrets: NamedMap<Secret>,
    /// Named volumes, managed by berth (never removed without an explicit flag).
    #[serde(default)]
    pub volumes: NamedMap<Volume>,
    /// The containers to run.
    #[serde(default)]
    pub pods: NamedMap<Pod>,
    /// One-off jobs: containers that run to completion before the pods they gate change.
    #[serde(default)]
    pub jobs: NamedMap<Job>,
    /// Request rate limits, enforced by the proxy.
    #[serde(default)]
    pub rate_limits: NamedMap<RateLimit>,
    /// The managed nginx proxy (one per region).
    #[serde(default)]
    pub proxy: Option<Proxy>,
    /// Encrypted, verified, scheduled backups.
    #[serde(default)]
    pub backups: NamedMap<Backup>,
    /// Off-host stores that backups are copied to (`copies: [NAME]`): S3-compatible buckets.
    #[serde(default)]
    pub stores: NamedMap<StoreSpec>,
    /// The secret (under `secrets:`) that authenticates backups: each manifest carries an
    /// HMAC under a key derived from its value, and `verify`, `restore` and `prune` take
    /// only backups whose HMAC matches, so that a backup forged with the public
    /// recipients is refused. Make it with `berth secrets set NAME --generate`.
    #[serde(default)]
    pub backup_key: Option<Sp<String>>,
    /// A webhook that receives the outcome of every apply, destroy, rollback and restart:
    /// `https://host/path` gets berth's JSON, `{ slack: URL }` a Slack message. A failing
    /// webhook never fails the apply.
    #[serde(default)]
    pub notify: Option<Sp<Notify>>,
    /// How an apply goes over several regions: one region after the other (the primary
    /// first), and what happens to the regions already done when one fails.
    #[serde(default)]
    pub rollout: Option<Rollout>,
}

/// The region of a spec that names none.
pub const DEFAULT_REGION: &str = "local";

impl Spec {
    pub fn environment(&self) -> Environment {
        self.environment
            .as_ref()
            .map_or(Environment::Development, |e| e.value)
    }

    /// The primary region: the one a pod without a region list runs in, and the one a
    /// single-region spec has (`local`).
    pub fn primary_region(&self) -> &str {
        self.region_names()
            .first()
            .copied()
            .unwrap_or(DEFAULT_REGION)
    }

    /// The names of the regions, primary first (then in file order); `local` when the spec
    /// names none.
    pub fn region_names(&self) -> Vec<&str> {
        if self.regions.is_empty() {
            return vec![DEFAULT_REGION];
        }
        let mut names: Vec<&str> = Vec::with_capacity(self.regions.len());
        for r in self.regions.iter().filter(|r| r.item.primary) {
            names.push(&r.name.value);
        }
        for r in self.regions.iter().filter(|r| !r.item.primary) {
            if !names.contains(&r.name.value.as_str()) {
                names.push(&r.name.value);
            }
        }
        names
    }

    /// Whether something with this `regions:` list runs in `region` (one of the spec's).
    pub fn runs_in(list: &Option<Vec<Sp<String>>>, region: &str) -> bool {
        list.as_ref()
            .is_none_or(|l| l.iter().any(|x| x.value == region))
    }

    /// The regions something with a `regions:` list runs in: those listed, or all.
    pub fn regions_of<'s>(&'s self, list: &'s Option<Vec<Sp<String>>>) -> Vec<&'s str> {
        match list {
            Some(l) => l.iter().map(|r| r.value.as_str()).collect(),
            None => self.region_names(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Staging,
    Production,
}

/// A container engine endpoint.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// `unix:///var/run/docker.sock`, `tcp://host:2376` (with `tls`) or `ssh://user@host`.
    pub engine: Sp<String>,
    /// The region rolled out first; exactly one region is primary when there are several.
    #[serde(default)]
    pub primary: bool,
    /// Client certificates for a `tcp://` engine.
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// TLS client authentication to a `tcp://` engine (as `docker --tlsverify`): paths
/// relative to the spec. Only `ca` is trusted for the engine's certificate.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The CA certificate (PEM) that signed the engine's certificate.
    pub ca: String,
    /// The client certificate (PEM) the engine accepts.
    pub cert: String,
    /// The client's private key: a PEM file of mode 0600 (checked like the identity), or
    /// `{ secret: NAME }`, a secret of the spec (age-encrypted, decrypted in memory).
    pub key: TlsKey,
}

/// Where a TLS client key is.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(untagged)]
pub enum TlsKey {
    /// A PEM file, relative to the spec, private to its user (mode 0600).
    File(String),
    /// A secret of the spec.
    Secret(TlsKeySecret),
}

#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsKeySecret {
    /// The name of a secret under `secrets:` holding the key (PEM).
    pub secret: Sp<String>,
}

// By hand rather than `untagged`, so that a mistake inside the mapping is reported as that
// mistake (an unknown key, with its place) rather than "matched no variant".
impl<'de> Deserialize<'de> for TlsKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TlsKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key file's path, or `{ secret: NAME }`")
            }
            fn visit_str<E>(self, v: &str) -> Result<TlsKey, E> {
                Ok(TlsKey::File(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<TlsKey, A::Error> {
                TlsKeySecret::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(TlsKey::Secret)
            }
        }
        d.deserialize_any(V)
    }
}

/// An age-encrypted file in the repository.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Path of the encrypted file, relative to the spec.
    pub file: Sp<String>,
    /// Recipients for this secret instead of the top-level `recipients`.
    #[serde(default, deserialize_with = "spanned::shrunk_some")]
    pub recipients: Option<Vec<Sp<String>>>,
    /// Minimum length of the decrypted value.
    #[serde(default)]
    pub min_length: Option<u32>,
    /// Checked after decryption.
    #[serde(default)]
    pub format: Option<SecretFormat>,
    /// Values refused after decryption, in addition to the built-in placeholders (any value
    /// containing `CHANGE_ME`, `changeme`, `change-me`, `replace-me` or `your-...-here`,
    /// in any case) and defaults (exactly `postgres`, `admin` or `password`).
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub forbid: Vec<String>,
    /// A regular expression the decrypted value (without surrounding whitespace) must
    /// match, e.g. `^sk_live_` for a live payment key.
    #[serde(default)]
    pub pattern: Option<Box<Sp<String>>>,
    /// A regular expression the decrypted value (without surrounding whitespace) must not
    /// match, e.g. `^sk_test_` in production.
    #[serde(default)]
    pub forbid_pattern: Option<Box<Sp<String>>>,
    /// The file may lie outside the spec's directory (after resolving symlinks); without
    /// it, such a `file` is refused.
    #[serde(default)]
    pub allow_outside: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SecretFormat {
    /// Any text.
    Text,
    /// A URL.
    Url,
    /// An `https://` URL.
    HttpsUrl,
    /// One or more PEM blocks.
    Pem,
    /// A JSON Web Key Set with a non-empty `keys` array.
    Jwks,
    /// Any JSON document.
    Json,
}

impl SecretFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretFormat::Text => "text",
            SecretFormat::Url => "url",
            SecretFormat::HttpsUrl => "https-url",
            SecretFormat::Pem => "pem",
            SecretFormat::Jwks => "jwks",
            SecretFormat::Json => "json",
        }
    }
}

/// A named volume.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Created outside berth: berth mounts it but never creates or removes it.
    #[serde(default)]
    pub external: bool,
}

/// A container (or several replicas of one).
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    /// Image reference, e.g. `postgres:17.2`. Exactly one of `image` and `build`.
    #[serde(default)]
    pub image: Option<Sp<String>>,
    /// Build the image from a local context through the engine.
    #[serde(default)]
    pub build: Option<Box<Sp<Build>>>,
    /// Overrides the image's command.
    #[serde(default, deserialize_with = "spanned::shrunk_some")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's entrypoint.
    #[serde(default, deserialize_with = "spanned::shrunk_some_boxed")]
    #[allow(clippy::box_collection)] // 8 bytes in every pod that has none (most)
    pub entrypoint: Option<Box<Vec<String>>>,
    /// Number of identical containers (default 1).
    #[serde(default)]
    pub replicas: Option<Sp<u32>>,
    /// Pods that must be healthy before this one starts: `db` (the pod of the same
    /// region), or `db@iad` (the pod of region `iad`: that region is rolled out first; no
    /// network between the regions is implied).
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub depends_on: Vec<Sp<String>>,
    /// Secrets delivered as files under `/run/secrets/` (or, by explicit opt-in, as env).
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub secrets: Vec<Sp<SecretUse>>,
    /// Plain environment variables. Never put credentials here: use `secrets`.
    #[serde(default)]
    pub env: NamedMap<Sp<EnvValue>>,
    /// Mounts: `volume-name:/path[:ro]` for named volumes, `./dir:/path[:ro]` or
    /// `/abs:/path[:ro]` for host paths.
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub volumes: Vec<MountEntry>,
    /// Published ports: `HOST:CONTAINER[/tcp|udp]` or `IP:HOST:CONTAINER[/tcp|udp]`.
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub ports: Vec<PortEntry>,
    #[serde(default)]
    pub resources: Option<Box<Resources>>,
    /// `uid[:gid]` or a user name.
    #[serde(default)]
    pub user: Option<String>,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    #[serde(default)]
    pub health: Option<Box<Sp<Health>>>,
    #[serde(default)]
    pub update: Option<Box<Update>>,
    /// Gates run after the pod is healthy; a failing check rolls the change back.
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub checks: Vec<Sp<Check>>,
    /// Regions this pod runs in (default: all).
    #[serde(default, deserialize_with = "spanned::shrunk_some")]
    pub regions: Option<Vec<Sp<String>>>,
    /// Profiles this pod belongs to: such a pod is planned and applied only when one of
    /// them is chosen (`--profile NAME`), and otherwise neither created nor removed.
    /// Without `profiles`, a pod always runs.
    #[serde(default, deserialize_with = "spanned::shrunk_some_boxed")]
    #[allow(clippy::box_collection)] // 8 bytes in every pod that has none (most)
    pub profiles: Option<Box<Vec<Sp<String>>>>,
}

impl Pod {
    /// The pod's profiles (none: it always runs).
    pub fn profiles(&self) -> &[Sp<String>] {
        self.profiles.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Whether the pod runs with these profiles chosen: it has no profile, or one of them.
    pub fn active(&self, chosen: &[String]) -> bool {
        let own = self.profiles();
        own.is_empty() || own.iter().any(|p| chosen.contains(&p.value))
    }

    /// A `depends_on` entry: the pod, and the region when it names one (`db@iad`); a plain
    /// name means the pod of the same region.
    pub fn dependency(entry: &str) -> (&str, Option<&str>) {
        match entry.split_once('@') {
            Some((pod, region)) => (pod, Some(region)),
            None => (entry, None),
        }
    }

    pub fn replicas(&self) -> u32 {
        self.replicas.as_ref().map_or(1, |r| r.value)
    }

    /// How long requests in flight to an old container get before it is stopped
    /// (`update.drain`, default [`DEFAULT_DRAIN`]).
    pub fn drain(&self) -> std::time::Duration {
        self.update
            .as_ref()
            .and_then(|u| u.drain.as_ref())
            .and_then(|d| d.get())
            .unwrap_or(DEFAULT_DRAIN)
    }

    /// The named volumes the pod mounts (not host paths).
    pub fn named_volumes(&self) -> impl Iterator<Item = &str> {
        self.volumes
            .iter()
            .filter_map(|m| m.get().ok())
            .filter(|m| !m.bind)
            .map(|m| m.source)
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// Directory sent to the engine as the build context, relative to the spec.
    pub context: String,
    /// Dockerfile path inside the context (default `Dockerfile`).
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Build arguments (`ARG` values), kept as written.
    #[serde(default)]
    pub args: NamedMap<Sp<EnvValue>>,
}

/// Where a pod's secret files appear inside its containers (a spec's mounts may not reach in).
pub const SECRETS_MOUNT_POINT: &str = "/run/secrets";

/// A secret given to a pod: its name, or a mapping for env delivery or another file mode.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(untagged)]
pub enum SecretUse {
    Name(String),
    Detailed(Box<SecretUseDetailed>),
}

// By hand rather than `untagged`, so that a mistake inside the mapping form is reported as
// that mistake (an unknown key, with its place) rather than "matched no variant".
impl<'de> Deserialize<'de> for SecretUse {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretUse;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a secret name, or a mapping with `name` and `env` or `mode`")
            }
            fn visit_str<E>(self, v: &str) -> Result<SecretUse, E> {
                Ok(SecretUse::Name(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<SecretUse, A::Error> {
                SecretUseDetailed::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|d| SecretUse::Detailed(Box::new(d)))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretUseDetailed {
    pub name: String,
    /// Deliver as this environment variable instead of a file (visible to `docker inspect`).
    #[serde(default)]
    pub env: Option<String>,
    /// File mode under `/run/secrets/` (default `"0400"`).
    #[serde(default)]
    pub mode: Option<Mode>,
}

impl SecretUse {
    pub fn name(&self) -> &str {
        match self {
            SecretUse::Name(n) => n,
            SecretUse::Detailed(d) => &d.name,
        }
    }
    pub fn env(&self) -> Option<&str> {
        match self {
            SecretUse::Name(_) => None,
            SecretUse::Detailed(d) => d.env.as_deref(),
        }
    }
    pub fn mode(&self) -> Option<&Mode> {
        match self {
            SecretUse::Name(_) => None,
            SecretUse::Detailed(d) => d.mode.as_ref(),
        }
    }
}

/// An environment value: a string, number or boolean, kept exactly as written (`1.10`
/// stays `1.10`, `01234` stays `01234`, `yes` stays `yes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Asking for a string makes serde-saphyr hand over the scalar's text as written.
        String::deserialize(d).map(EnvValue)
    }
}

impl JsonSchema for EnvValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvValue".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in cores, e.g. `0.5` or `2`: from 0.01 to the engine's CPU count.
    #[serde(default)]
    pub cpus: Option<Sp<f64>>,
    /// Memory limit, e.g. `512MiB`.
    #[serde(default)]
    pub memory: Option<Size>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    OnFailure,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
        }
    }
}

/// How long a container without a probe must stay up after it starts before its
/// "running" gate passes, unless its `health.min_uptime` says otherwise.
pub const DEFAULT_MIN_UPTIME: std::time::Duration = std::time::Duration::from_millis(500);

/// How berth decides the pod is healthy: a command in the container or an HTTP probe.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Command run inside the container (exec form); exit 0 is healthy.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// HTTP GET against the container, made by berth; 2xx is healthy.
    #[serde(default)]
    pub http: Option<HttpProbe>,
    /// Time between probes: at least `100ms` (default `2s`).
    #[serde(default)]
    pub interval: Option<Duration>,
    /// How long one probe may take: at least `100ms` (default `1s`).
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub start_period: Option<Duration>,
    /// How long the container must stay up after it starts before its gate passes: a
    /// pod without a probe is watched this long (default `500ms`); with a probe, the
    /// gate also waits until the container has been up this long (default none). An exit
    /// or a restart within it fails the gate. Alone (`health: { min_uptime: 5s }`) it
    /// needs no probe.
    #[serde(default)]
    pub min_uptime: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// The container port to GET (1-65535).
    pub port: Sp<u16>,
    #[serde(default = "default_path")]
    pub path: String,
    /// `https`: the probe speaks TLS, without verifying the container's certificate (as
    /// Kubernetes' HTTPS probes do: it is a health check, not a trust decision).
    #[serde(default)]
    pub scheme: Scheme,
}

/// How a probe or check speaks to the container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn is_https(self) -> bool {
        self == Scheme::Https
    }

    /// How an attribute or a message names a probe: `:8080/health`, `https :8443/health`.
    pub fn target(self, port: u16, path: &str) -> String {
        match self {
            Scheme::Http => format!(":{port}{path}"),
            Scheme::Https => format!("https :{port}{path}"),
        }
    }
}

fn default_path() -> String {
    "/".into()
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub strategy: Sp<Strategy>,
    /// How long requests in flight to the old container of a routed pod get before it is
    /// stopped (default `10s`).
    #[serde(default)]
    pub drain: Option<Duration>,
}

/// How long a routed pod's old container drains when the spec does not say.
pub const DEFAULT_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How a pod is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Start the new container beside the old, wait healthy, then remove the old.
    BlueGreen,
    /// Stop the old container (kept until the new one is healthy), then start the new one.
    /// Required for pods that own named volumes.
    Recreate,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Recreate => "recreate",
        }
    }
}

/// A post-deploy gate.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub http: HttpCheck,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// The container port to GET (1-65535).
    pub port: Sp<u16>,
    #[serde(default = "default_path")]
    pub path: String,
    /// `https`: TLS, without verifying the container's certificate (see `health.http`).
    #[serde(default)]
    pub scheme: Scheme,
    /// Expected status (default: any 2xx).
    #[serde(default)]
    pub expect_status: Option<u16>,
    #[serde(default)]
    pub expect_json: Option<ExpectJson>,
    /// Response headers that must be present.
    #[serde(default)]
    pub expect_headers: Vec<String>,
    #[serde(default)]
    pub max_latency: Option<Duration>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectJson {
    /// RFC 6901 JSON pointer, e.g. `/keys`.
    pub pointer: Sp<String>,
    /// The value at the pointer is a non-empty array, object or string.
    #[serde(default)]
    pub non_empty: bool,
    /// The value at the pointer equals this value.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
}
