//! `berth status`: every pod instance the spec asks for (each replica, in each region), as
//! its engine has it now: the container's state, its health (the engine's healthcheck, or
//! berth's own HTTP probe, made once now), image, uptime, restarts and published ports.
//! `berth check`: the same, with each pod's post-deploy `checks` run against each running
//! instance, as apply runs them after a deploy. Read-only: no lock, no plan.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::OpError;
use crate::apply::container::object_name;
use crate::engine::Engine;
use crate::engine::docker::{ContainerInfo, ContainerState};
use crate::engine::names::container_name_of;
use crate::graph::{Address, Kind, Resource};
use crate::resources::attr;
use crate::spec::Pod;

/// The JSON shape's version (docs/json.md).
pub const STATUS_FORMAT: u32 = 1;

/// How long berth's own HTTP probe may take here.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct Status {
    pub format_version: u32,
    pub project: String,
    /// The newest revision applied (0: none yet).
    pub revision: u64,
    /// Every instance is running, and healthy where it has a health check.
    pub ok: bool,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Serialize)]
pub struct Instance {
    /// `pod.api`, `pod.api[1]`, `pod.api@fra`.
    pub address: String,
    pub pod: String,
    pub replica: Option<u32>,
    pub region: String,
    /// The container's name on its engine.
    pub container: String,
    /// The container's id; none when there is no container.
    pub id: Option<String>,
    /// `running`, `restarting`, `exited`, `created`, ... or `missing`.
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or `none` (no health check).
    pub health: String,
    /// Why it is not healthy, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The image reference the spec gives (or the built image's tag).
    pub image: Option<String>,
    /// The id of the image the container runs.
    pub image_id: Option<String>,
    /// When it last started (RFC 3339, the engine's clock).
    pub started_at: Option<String>,
    pub uptime_seconds: Option<u64>,
    /// How often its engine restarted it (by its restart policy).
    pub restarts: Option<i64>,
    /// Published ports, `IP:HOST->CONTAINER/PROTO`.
    pub ports: Vec<String>,
    /// The pod's post-deploy checks, run against this instance (`berth check` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Running, and healthy where it has a health check (and, with checks, each passed).
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct CheckResult {
    /// `check GET :8080/path`.
    pub check: String,
    pub ok: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The status of the spec's pods on their engines.
pub fn status(path: &Path, state_dir: Option<&Path>) -> Result<Status, OpError> {
    status_with(path, state_dir, false)
}

/// [`status`], with every pod's post-deploy checks run against each running instance.
pub fn check(path: &Path, state_dir: Option<&Path>) -> Result<Status, OpError> {
    status_with(path, state_dir, true)
}

fn status_with(
    path: &Path,
    state_dir: Option<&Path>,
    with_checks: bool,
) -> Result<Status, OpError> {
    let project = crate::project::Project::open(path, state_dir)?;
    let spec = &project.spec;
    let name = spec.project.value.clone();
    let revision = crate::state::revisions::latest(&project.state)?;
    let pods: Vec<Resource> = crate::resources::desired(spec)
        .into_iter()
        .filter(|r| r.address.kind == Kind::Pod)
        .collect();
    let network = object_name(&name, "default");
    let instances = project.runtime.block_on(async {
        let mut listed: HashMap<String, HashMap<String, ContainerInfo>> = HashMap::new();
        let mut out = Vec::with_capacity(pods.len());
        for pod in &pods {
            let region = pod
                .address
                .region
                .as_deref()
                .unwrap_or_else(|| spec.primary_region())
                .to_owned();
            let Some(engine) = project.engines.get(&region) else {
                continue;
            };
            if !listed.contains_key(&region) {
                let by_name = engine
                    .containers(&name)
                    .await?
                    .into_iter()
                    .map(|c| (c.name.clone(), c))
                    .collect();
                listed.insert(region.clone(), by_name);
            }
            let found = listed
                .get(&region)
                .and_then(|by_name| by_name.get(&container_name_of(&name, &pod.address)));
            let Some(spec_pod) = spec.pods.get(&pod.address.name) else {
                continue;
            };
            // A pod of a profile that was not applied is not missing: it is not wanted.
            if found.is_none() && !spec_pod.profiles().is_empty() {
                continue;
            }
            let here = Here {
                engine,
                project: &name,
                network: &network,
            };
            out.push(instance(&here, pod, spec_pod, region, found, with_checks).await?);
        }
        Ok::<_, OpError>(out)
    })?;
    Ok(Status {
        format_version: STATUS_FORMAT,
        project: name,
        revision,
        ok: instances.iter().all(|i| i.ok),
        instances,
    })
}

/// The engine of an instance's region, the project, and its network there.
struct Here<'a> {
    engine: &'a Engine,
    project: &'a str,
    network: &'a str,
}

async fn instance(
    here: &Here<'_>,
    pod: &Resource,
    spec_pod: &Pod,
    region: String,
    found: Option<&ContainerInfo>,
    with_checks: bool,
) -> Result<Instance, OpError> {
    let Here {
        engine,
        project,
        network,
    } = *here;
    let address: &Address = &pod.address;
    let mut i = Instance {
        address: address.to_string(),
        pod: address.name.to_string(),
        replica: address.replica(),
        region,
        container: container_name_of(project, address),
        id: None,
        state: "missing".into(),
        health: "none".into(),
        detail: None,
        image: attr::image_ref(&pod.attrs).map(str::to_owned),
        image_id: None,
        started_at: None,
        uptime_seconds: None,
        restarts: None,
        ports: spec_pod
            .ports
            .iter()
            .filter_map(|p| p.get().ok())
            .map(|m| {
                let ip = if m.ip.is_empty() { "0.0.0.0" } else { &m.ip };
                format!("{ip}:{}->{}/{}", m.host, m.container, m.protocol)
            })
            .collect(),
        checks: Vec::new(),
        ok: false,
    };
    let Some(c) = found else {
        i.detail = Some("no container: run `berth apply`".into());
        if with_checks {
            run_checks(engine, None, &mut i, spec_pod).await;
        }
        return Ok(i);
    };
    let state = engine.state(&c.id).await?;
    i.id = Some(c.id.clone());
    i.image_id = Some(c.image_id.clone());
    i.state = c.state.clone();
    if let Some((secs, _)) = state.started {
        i.started_at = Some(crate::clock::rfc3339(secs));
        i.uptime_seconds = state
            .running
            .then(|| crate::clock::now().saturating_sub(secs));
    }
    i.restarts = Some(state.restart_count);
    let probe = spec_pod
        .health
        .as_ref()
        .and_then(|h| h.http.as_ref())
        .map(|h| (h.port.value, h.path.as_str(), h.scheme));
    (i.health, i.detail) = health(engine, network, &state, probe).await;
    i.ok = state.running && !state.restarting && matches!(i.health.as_str(), "healthy" | "none");
    if !state.running && i.detail.is_none() {
        i.detail = Some(format!("exited with code {}", state.exit_code));
    }
    if with_checks {
        let ip = state.addresses.get(network).filter(|_| state.running);
        run_checks(engine, ip.map(String::as_str), &mut i, spec_pod).await;
    }
    Ok(i)
}

/// Runs the pod's post-deploy checks against the instance, each on its own (all of them,
/// not up to the first that fails), as apply runs them after a deploy.
/// `ip`: the instance's address on the project network, when it is running.
async fn run_checks(engine: &Engine, ip: Option<&str>, i: &mut Instance, pod: &Pod) {
    for check in &pod.checks {
        let http = &check.value.http;
        let verdict = match ip {
            Some(ip) => crate::apply::gate::run_check(engine, ip, http).await,
            None => Err("not run: the instance is not running on the project network".into()),
        };
        i.ok &= verdict.is_ok();
        i.checks.push(CheckResult {
            check: crate::apply::gate::check_name(http),
            ok: verdict.is_ok(),
            detail: verdict.err(),
        });
    }
}

/// The engine's verdict of its healthcheck, or berth's HTTP probe made now.
async fn health(
    engine: &Engine,
    network: &str,
    state: &ContainerState,
    probe: Option<(u16, &str, crate::spec::Scheme)>,
) -> (String, Option<String>) {
    if let Some((port, path, scheme)) = probe {
        if !state.running {
            return ("unhealthy".into(), None);
        }
        let Some(ip) = state.addresses.get(network) else {
            return (
                "unhealthy".into(),
                Some(format!("the container has no address on `{network}`")),
            );
        };
        let shown = scheme.target(port, path);
        return match crate::apply::gate::http_get(engine, ip, (port, path, scheme), PROBE_TIMEOUT)
            .await
        {
            Ok(code) if (200..300).contains(&code) => ("healthy".into(), None),
            Ok(code) => (
                "unhealthy".into(),
                Some(format!("GET {shown} answered {code}")),
            ),
            Err(e) => ("unhealthy".into(), Some(format!("GET {shown}: {e}"))),
        };
    }
    match state.health.as_str() {
        "" => ("none".into(), None),
        "unhealthy" => (
            "unhealthy".into(),
            Some(format!(
                "the health command failed: {}",
                state.health_output.trim()
            )),
        ),
        other => (other.to_owned(), None),
    }
}
