//! One-off jobs: a container that runs to completion (a database migration, a release
//! command) before the pods it gates (`before:`) change. A job is a node of the graph like
//! a pod: it runs when its image or configuration changes, its exit status 0 is its gate,
//! and a job that fails stops the apply (and rolls back) before those pods are touched.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Duration, EnvValue, MountEntry, NamedMap, Pod, Resources, RestartPolicy, Sp, spanned};

/// How long a job may run when it says nothing (`timeout:`).
pub const DEFAULT_JOB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// A container that runs to completion, e.g. `{ image: shop/api:1.4, command: [alembic,
/// upgrade, head], before: [api] }`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Image reference, e.g. `ghcr.io/shop/api:1.4.2` (often the image of the pod it gates).
    pub image: Sp<String>,
    /// Overrides the image's command: what the job runs.
    #[serde(default, deserialize_with = "spanned::shrunk_some")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's entrypoint.
    #[serde(default, deserialize_with = "spanned::shrunk_some")]
    pub entrypoint: Option<Vec<String>>,
    /// Pods that must be healthy before the job runs (its database, say).
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub depends_on: Vec<Sp<String>>,
    /// Pods that change only after the job has run and exited 0: a failed job stops the
    /// apply before them.
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub before: Vec<Sp<String>>,
    /// Secrets delivered as files under `/run/secrets/`, as to a pod; gone from memory once
    /// the job has exited.
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub secrets: Vec<Sp<super::SecretUse>>,
    /// Plain environment variables. Never put credentials here: use `secrets`.
    #[serde(default)]
    pub env: NamedMap<Sp<EnvValue>>,
    /// Mounts, as a pod's: `volume-name:/path[:ro]`, `./dir:/path[:ro]`.
    #[serde(default, deserialize_with = "spanned::shrunk")]
    pub volumes: Vec<MountEntry>,
    #[serde(default)]
    pub resources: Option<Box<Resources>>,
    /// `uid[:gid]` or a user name.
    #[serde(default)]
    pub user: Option<String>,
    /// How long it may run before it is stopped and counted as failed (default `10m`).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Regions it runs in (default: all), once in each.
    #[serde(default, deserialize_with = "spanned::shrunk_some")]
    pub regions: Option<Vec<Sp<String>>>,
}

impl Job {
    /// `timeout`, or [`DEFAULT_JOB_TIMEOUT`].
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
            .as_ref()
            .and_then(|t| t.get())
            .unwrap_or(DEFAULT_JOB_TIMEOUT)
    }

    /// The job's container as a pod's: what berth creates for it is made, checked and
    /// planned by the same code. It never restarts, has no health check and publishes
    /// nothing; its gate is its exit status.
    pub fn as_pod(&self) -> Pod {
        Pod {
            image: Some(self.image.clone()),
            command: self.command.clone(),
            entrypoint: self.entrypoint.clone().map(Box::new),
            depends_on: self.depends_on.clone(),
            secrets: self.secrets.clone(),
            env: self.env.clone(),
            volumes: self.volumes.clone(),
            resources: self.resources.clone(),
            user: self.user.clone(),
            restart: Some(RestartPolicy::No),
            regions: self.regions.clone(),
            ..Pod::default()
        }
    }
}
