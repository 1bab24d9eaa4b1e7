//! A pod's container configuration, for the engine, from the spec.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount as EngineMount,
    MountType, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};

use crate::graph::Resource;
use crate::spec::{Pod, RestartPolicy as Restart};

/// The engine's name of a project's network, volume or container part.
pub fn object_name(project: &str, name: &str) -> String {
    format!("{project}-{name}")
}

/// The container name of a pod instance: `<project>-<pod>`, `<project>-<pod>-<n>` for
/// replicas.
pub fn container_name(project: &str, resource: &Resource) -> String {
    container_name_of(project, &resource.address)
}

/// [`container_name`] from an address alone (a pod no longer in the spec); one copy, in
/// `engine::names`, which the proxy's config names its upstream servers by.
pub use crate::engine::names::container_name_of;

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The create request for a pod instance on the project's network, labelled as `labels`.
/// `alias` is the name peers reach it by (none for a blue-green candidate under test).
pub fn body(
    project: &str,
    alias: Option<&str>,
    pod: &Pod,
    labels: HashMap<String, String>,
    spec_dir: &Path,
) -> ContainerCreateBody {
    let network = object_name(project, "default");
    let env: Vec<String> = pod
        .env
        .iter()
        .map(|e| format!("{}={}", e.name.value, e.item.value.0))
        .collect();
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &pod.ports {
        if let Ok(pm) = p.get() {
            let key = format!("{}/{}", pm.container, pm.protocol);
            exposed.push(key.clone());
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: (!pm.ip.is_empty()).then(|| pm.ip.clone()),
                    host_port: Some(pm.host.to_string()),
                });
        }
    }
    let mounts = mounts(project, pod, spec_dir);
    let healthcheck = healthcheck(pod);
    let restart = match pod.restart.unwrap_or(Restart::UnlessStopped) {
        Restart::No => RestartPolicyNameEnum::NO,
        Restart::Always => RestartPolicyNameEnum::ALWAYS,
        Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
    };
    let resources = pod.resources.as_ref();
    ContainerCreateBody {
        image: pod.image.as_ref().map(|i| i.value.clone()),
        cmd: pod.command.clone(),
        entrypoint: pod.entrypoint.as_deref().cloned(),
        env: Some(env),
        user: pod.user.clone(),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            readonly_rootfs: Some(pod.read_only),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            memory: resources
                .and_then(|r| r.memory.as_ref())
                .and_then(|m| m.get())
                .and_then(|b| i64::try_from(b).ok()),
            nano_cpus: resources
                .and_then(|r| r.cpus.as_ref())
                .map(|c| (c.value * 1e9) as i64),
            network_mode: Some(network.clone()),
            // The engine's init as PID 1 forwards SIGTERM to the program and reaps zombies,
            // so a stop takes as long as the program's shutdown, not the 10 s kill timeout.
            init: Some(true),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network,
                EndpointSettings {
                    aliases: alias.map(|a| vec![a.to_owned()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// The engine mounts of a pod's `volumes:` (bind mounts relative to the spec's directory).
fn mounts(project: &str, pod: &Pod, spec_dir: &Path) -> Vec<EngineMount> {
    pod.volumes
        .iter()
        .filter_map(|m| m.get().ok())
        .map(|m| EngineMount {
            target: Some(m.target.to_owned()),
            source: Some(if m.bind {
                let home = std::env::var("HOME").unwrap_or_default();
                match m.source.strip_prefix("~/") {
                    Some(rest) => Path::new(&home).join(rest).display().to_string(),
                    None if Path::new(m.source).is_absolute() => m.source.to_owned(),
                    None => spec_dir.join(m.source).display().to_string(),
                }
            } else {
                object_name(project, m.source)
            }),
            typ: Some(if m.bind {
                MountType::BIND
            } else {
                MountType::VOLUME
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect()
}

/// The engine runs `health.cmd` with the same timing the gate waits for. With
/// `health.http` berth probes itself, and the image's own HEALTHCHECK is switched off so
/// that it cannot mark the pod unhealthy behind berth's back. Without a probe (a `health`
/// with `min_uptime` alone) the image's own HEALTHCHECK stays, as without `health`.
fn healthcheck(pod: &Pod) -> Option<HealthConfig> {
    let h = &pod.health.as_ref()?.value;
    let timing = super::gate::Timing::of(pod);
    match (&h.cmd, &h.http) {
        (Some(cmd), _) => Some(HealthConfig {
            test: Some([vec!["CMD".to_owned()], cmd.clone()].concat()),
            interval: Some(nanos(timing.interval)),
            timeout: Some(nanos(timing.timeout)),
            retries: Some(i64::from(timing.retries)),
            start_period: Some(nanos(timing.start_period)),
            ..Default::default()
        }),
        (None, Some(_)) => Some(HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..Default::default()
        }),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_images_own_healthcheck_is_off_only_where_berth_probes_itself() {
        let spec = crate::spec::load::parse(
            "version: 1\nproject: p\npods:\n  bare: { image: a }\n  uptime: { image: a, health: { min_uptime: 3s } }\n  http: { image: a, health: { http: { port: 80 } } }\n  cmd: { image: a, health: { cmd: [check] } }\n",
        )
        .expect("spec");
        let test = |name: &str| {
            healthcheck(spec.pods.get(name).expect("pod")).map(|h| h.test.unwrap_or_default())
        };
        assert_eq!(test("bare"), None);
        assert_eq!(test("uptime"), None, "no probe: the image's own stays");
        assert_eq!(test("http"), Some(vec!["NONE".to_owned()]));
        assert_eq!(
            test("cmd"),
            Some(vec!["CMD".to_owned(), "check".to_owned()])
        );
    }
}
