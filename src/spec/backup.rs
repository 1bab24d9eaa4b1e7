//! Backups in the spec: what is read (a command's output, a volume, a host path), where it
//! is kept, when, for how long, and through which region's engine.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Sp, Spec};

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub source: Sp<BackupSource>,
    /// Directory of its own holding the encrypted backups (absolute; berth makes it 0700;
    /// never `/`, a system or a temporary directory).
    pub store: Sp<String>,
    /// Stores under `stores:` that each backup is also written to, and verified in, as it
    /// is taken (e.g. `[offsite]`): copies that survive the host.
    #[serde(default)]
    pub copies: Vec<Sp<String>>,
    /// systemd `OnCalendar` expression, e.g. `*-*-* 03:00:00` or `daily`.
    #[serde(default)]
    pub schedule: Option<Sp<String>>,
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Take a backup before any apply step that replaces the source pod.
    #[serde(default)]
    pub before_apply: bool,
    /// `stop` stops the pod while a volume is read (default `live`).
    #[serde(default)]
    pub consistent: Option<Consistency>,
    /// Recipients for this backup instead of the top-level `recipients`.
    #[serde(default)]
    pub recipients: Option<Vec<Sp<String>>>,
    /// How the data is compressed (default: zstd level 3, one thread per CPU).
    #[serde(default)]
    pub compression: Option<Sp<CompressionSpec>>,
    /// How `berth backup drill NAME` proves this backup (of a volume) by restoring it: the
    /// pod whose scratch copy starts on the restored data, and a command that must exit 0
    /// in it.
    #[serde(default)]
    pub drill: Option<Sp<DrillSpec>>,
}

/// An off-host store: `{ url: sftp://USER@HOST/PATH }`, or `{ url: s3://BUCKET/PREFIX,
/// endpoint: https://…, region: …, access_key_id: …, secret_access_key: SECRET }`. What it does not say comes from the
/// environment, as the AWS tools read it (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ENDPOINT`).
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    /// `s3://BUCKET/PREFIX`, a bucket of any S3-compatible object store; or
    /// `sftp://[USER@]HOST[:PORT]/PATH`, a directory reached with the system's ssh.
    pub url: Sp<String>,
    /// The object store's address, for one that is not AWS (`https://s3.example.net`).
    #[serde(default)]
    pub endpoint: Option<Sp<String>>,
    /// The bucket's region (default: `AWS_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<Sp<String>>,
    /// The access key's id (not a secret: it names the key).
    #[serde(default)]
    pub access_key_id: Option<Sp<String>>,
    /// The secret (under `secrets:`) whose value is the secret access key.
    #[serde(default)]
    pub secret_access_key: Option<Sp<String>>,
}

/// `s3://bucket/prefix` split into bucket and prefix (without slashes at its ends).
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

/// Whether `url` is `sftp://[USER@]HOST[:PORT]/PATH` with a path below `/`: its host
/// and the path, if so.
pub fn parse_sftp_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("sftp://")?;
    let (host, path) = rest.split_once('/')?;
    let path = path.trim_end_matches('/');
    let bare = host.rsplit_once('@').map_or(host, |(_, h)| h);
    (!bare.is_empty() && !bare.starts_with('-') && !path.is_empty())
        .then(|| (host.to_owned(), format!("/{path}")))
}

/// A restore drill's settings: `{ schedule: weekly, pod: db, check: [sh, -c, "test -s
/// /data/visits"] }`, or only its schedule (`drill: weekly`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Drill {
    /// systemd `OnCalendar` expression (e.g. `weekly`): a timer runs `berth backup drill`
    /// then, and `plan` warns when the last drill that passed is older than that.
    #[serde(default)]
    pub schedule: Option<Sp<String>>,
    /// The pod started on the restored data (default: the one pod that mounts the volume;
    /// a command's output is drilled in a copy of the source's own pod).
    #[serde(default)]
    pub pod: Option<Sp<String>>,
    /// A command run in the scratch pod once it has passed its gates (e.g. a row count);
    /// the drill fails unless it exits 0.
    #[serde(default)]
    pub check: Option<Vec<String>>,
}

/// `drill:` as written: only a schedule (`drill: weekly`), or the settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DrillSpec(pub Drill);

impl std::ops::Deref for DrillSpec {
    type Target = Drill;
    fn deref(&self) -> &Drill {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DrillSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DrillSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a schedule (`weekly`) or `{ schedule, pod, check }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DrillSpec, E> {
                // Where it was written is the `drill:` value's span (the caller's `Sp`).
                Ok(DrillSpec(Drill {
                    schedule: Some(Sp::new(v.to_owned(), crate::diag::Span::default())),
                    ..Drill::default()
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<DrillSpec, A::Error> {
                Drill::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(DrillSpec)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for DrillSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Drill".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let full = g.subschema_for::<Drill>();
        schemars::json_schema!({
            "description": "How `berth backup drill NAME` proves this backup: a schedule alone (`weekly`), or `{ schedule, pod, check }`.",
            "anyOf": [
                { "type": "string", "description": "systemd `OnCalendar` expression of the drill's timer, e.g. `weekly`." },
                full
            ]
        })
    }
}

/// zstd's settings for a backup: `{ level: 3, threads: 2 }`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompressionSpec {
    /// zstd level, 1 (fastest) to 19 (smallest); default 3, as the `zstd` command.
    #[serde(default)]
    #[schemars(range(min = 1, max = 19))]
    pub level: Option<Sp<i64>>,
    /// Threads that compress, 1 to 16; default: one per CPU of the machine that runs the
    /// backup, at most 4.
    #[serde(default)]
    #[schemars(range(min = 1, max = 16))]
    pub threads: Option<Sp<i64>>,
}

impl Backup {
    /// The compression a backup runs with: its settings, the defaults for the rest.
    /// (Out-of-range values are refused by validation; here they are clamped.)
    pub fn compression(&self) -> Compression {
        let mut c = Compression::default();
        if let Some(spec) = &self.compression {
            if let Some(l) = &spec.value.level {
                c.level = l.value.clamp(
                    i64::from(*Compression::LEVELS.start()),
                    i64::from(*Compression::LEVELS.end()),
                ) as i32;
            }
            if let Some(t) = &spec.value.threads {
                c.threads = t.value.clamp(1, i64::from(Compression::MAX_THREADS)) as u32;
            }
        }
        c
    }
}

/// What is backed up: one of `exec` (with `pod`), `volume`, or `path`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSource {
    /// The pod to run `exec` in, or whose volume is read.
    #[serde(default)]
    pub pod: Option<Sp<String>>,
    /// Command whose standard output is the backup, e.g. `[pg_dump, -Fc, shop]`.
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    /// Command that reads a backup on standard input on restore, e.g. `[pg_restore, ...]`.
    #[serde(default)]
    pub restore: Option<Vec<String>>,
    /// A named volume.
    #[serde(default)]
    pub volume: Option<Sp<String>>,
    /// A host path.
    #[serde(default)]
    pub path: Option<Sp<String>>,
    /// The region whose engine holds the pod or volume (read from this machine through
    /// that engine's API); default: the first region the source pod runs in, else the
    /// primary. Not with `path` (a path is read on this machine).
    #[serde(default)]
    pub region: Option<Sp<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default)]
    pub daily: Option<u32>,
    #[serde(default)]
    pub weekly: Option<u32>,
    #[serde(default)]
    pub monthly: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Live,
    Stop,
}

impl Spec {
    /// The region whose engine a backup reads and restores: its `source.region`, else the
    /// first region (primary first) its source pod runs in, else the primary.
    pub fn backup_region<'s>(&'s self, backup: &'s Backup) -> &'s str {
        self.backup_region_of(&backup.source.value)
    }

    /// [`Spec::backup_region`] of a backup's source.
    pub fn backup_region_of<'s>(&'s self, src: &'s BackupSource) -> &'s str {
        if let Some(r) = &src.region {
            return &r.value;
        }
        let pod = src.pod.as_ref().and_then(|p| self.pods.get(&p.value));
        match pod {
            Some(p) => self
                .region_names()
                .into_iter()
                .find(|r| Self::runs_in(&p.regions, r))
                .unwrap_or_else(|| self.primary_region()),
            None => self.primary_region(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::load;

    #[test]
    fn a_backup_reads_its_region_the_pods_first_or_the_primary() {
        let spec = load::parse(
            "version: 1\nproject: shop\nregions:\n  iad: { engine: 'unix:///a.sock' }\n  ord: { engine: 'unix:///b.sock', primary: true }\nvolumes: { data: {} }\npods:\n  db: { image: pg, regions: [iad], volumes: ['data:/d'] }\n  web: { image: web }\nbackups:\n  a: { source: { volume: data, pod: db }, store: /srv/b }\n  b: { source: { volume: data }, store: /srv/b }\n  c: { source: { volume: data, region: iad }, store: /srv/b }\n  d: { source: { pod: web, exec: [dump] }, store: /srv/b }\n",
        )
        .expect("parses");
        let region = |name: &str| spec.backup_region(spec.backups.get(name).expect("backup"));
        assert_eq!(region("a"), "iad", "the pod's only region");
        assert_eq!(region("b"), "ord", "no pod: the primary");
        assert_eq!(region("c"), "iad", "named");
        assert_eq!(
            region("d"),
            "ord",
            "a pod of every region: the primary first"
        );
    }
}

/// How a backup is compressed: the zstd level, and how many threads compress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    /// zstd's level, 1 to 19 (3, as `zstd` by default).
    pub level: i32,
    /// Worker threads that compress (1: compressed on the pipeline's own thread).
    pub threads: u32,
}

impl Compression {
    /// The default level.
    pub const LEVEL: i32 = 3;
    /// The levels a spec may give.
    pub const LEVELS: std::ops::RangeInclusive<i32> = 1..=19;
    /// At most this many compression threads: each holds zstd's window and buffers (tens
    /// of MiB at level 3, more at high levels), and backups run beside production.
    pub const MAX_THREADS: u32 = 16;
    /// The default's most: a big host does not give a backup a thread per CPU.
    pub const DEFAULT_MAX_THREADS: u32 = 4;

    /// The default: one compression thread per CPU, at most [`Self::DEFAULT_MAX_THREADS`].
    pub fn default_threads() -> u32 {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get() as u32)
            .clamp(1, Self::DEFAULT_MAX_THREADS)
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: Self::LEVEL,
            threads: Self::default_threads(),
        }
    }
}
