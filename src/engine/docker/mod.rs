//! A region's container engine, through bollard: connecting (the region's `engine`, or
//! DOCKER_HOST, or the local socket; TLS and ssh engines through `transport`), checking that it answers and is recent enough, and the
//! calls berth makes, by subject: `containers`, `networks` (and volumes), `images`
//! (and builds), `exec` (exec, archives, logs and events); `errors` holds the engine's
//! errors and the one retry every mutating call goes through. Every call is counted, so
//! benchmarks can report requests.

mod containers;
mod errors;
mod exec;
mod files;
mod images;
mod keeper;
mod networks;
mod transport;

use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;

pub use containers::{ContainerInfo, ContainerState, NAME_HOLD_LABEL};
pub use errors::{EngineError, active_endpoints, in_progress, name_conflict, unreachable_help};
pub use exec::ExecIo;
pub use images::PullError;
pub use keeper::{KeeperError, VolumeFile, keeper_image_tag, keeper_program, secrets_mount};
pub use networks::{NetworkRemoval, ObjectInfo, ObjectKind};
pub use transport::TlsMaterial;

/// A connection [`Engine::dial`] made.
pub trait Dialed: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Dialed for T {}

/// Oldest engine API berth works with (Docker 19.03).
pub const MIN_API: (u32, u32) = (1, 40);

/// Seconds berth waits for one engine request.
const TIMEOUT_SECS: u64 = 120;

/// A connected engine of one region.
pub struct Engine {
    pub region: String,
    pub endpoint: String,
    /// The engine's identity (`ID` of `/info`): two regions on one engine are refused.
    pub id: String,
    /// The engine's host name and data root (`Name`, `DockerRootDir` of `/info`): with the
    /// ID, what tells two engines apart (engines of machines cloned from one image may
    /// share an ID).
    host_name: String,
    root_dir: String,
    /// `NCPU` of `/info`.
    ncpu: i64,
    /// Reached over TLS (`tcp://` with `tls`).
    tls: bool,
    /// The spec's other regions: objects labelled for one of them are not this region's.
    other_regions: Vec<String>,
    docker: Docker,
    requests: AtomicU64,
    /// Containers created only to hold a name ([`Engine::hold_name`]), until released.
    held: std::sync::Mutex<Vec<(String, String)>>,
}

/// How to reach a region's engine: its address as the spec writes it (none: DOCKER_HOST or
/// the local socket) and, for a `tcp://` engine with `tls`, its files, read.
#[derive(Default)]
pub struct Target {
    pub endpoint: Option<String>,
    pub tls: Option<TlsMaterial>,
}

impl Engine {
    /// Connects to the target's engine (`unix:///path`, `tcp://host:port` with or without
    /// TLS, `ssh://[user@]host[:port]`), or, without an address, to DOCKER_HOST or the local
    /// socket; then checks that the engine answers, its API version, and reads its identity.
    pub async fn connect(region: &str, target: &Target) -> Result<Engine, EngineError> {
        let shown = target
            .endpoint
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let unreachable = |reason: String| EngineError::Unreachable {
            region: region.to_owned(),
            endpoint: shown.clone(),
            reason,
            help: errors::unreachable_help(&shown),
        };
        let docker = match (target.endpoint.as_deref(), &target.tls) {
            (Some(e), Some(tls)) if e.starts_with("tcp://") => {
                transport::tls(e, tls, TIMEOUT_SECS).map_err(unreachable)?
            }
            (Some(e), None) if e.starts_with("unix://") => {
                Docker::connect_with_unix(e, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| unreachable(e.to_string()))?
            }
            (Some(e), None) if e.starts_with("tcp://") || e.starts_with("http://") => {
                Docker::connect_with_http(e, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| unreachable(e.to_string()))?
            }
            (Some(e), None) if e.starts_with("ssh://") => {
                transport::ssh(e, TIMEOUT_SECS).map_err(unreachable)?
            }
            (None, _) if shown.starts_with("ssh://") => {
                transport::ssh(&shown, TIMEOUT_SECS).map_err(unreachable)?
            }
            (None, _) => Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?,
            (Some(e), _) => {
                return Err(EngineError::Unsupported {
                    region: region.to_owned(),
                    endpoint: e.to_owned(),
                });
            }
        };
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // Negotiation settles on the engine's API version when it is older than berth's.
        let api = docker.client_version();
        let api = format!("{}.{}", api.major_version, api.minor_version);
        if !api_at_least(&api, MIN_API) {
            return Err(EngineError::TooOld {
                region: region.to_owned(),
                found: api,
            });
        }
        let info = docker
            .info()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine {
            region: region.to_owned(),
            endpoint: shown.clone(),
            id: info.id.unwrap_or_default(),
            host_name: info.name.unwrap_or_default(),
            root_dir: info.docker_root_dir.unwrap_or_default(),
            ncpu: info.ncpu.unwrap_or(0),
            tls: target.tls.is_some(),
            other_regions: Vec::new(),
            docker,
            requests: AtomicU64::new(2),
            held: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A TCP connection to a container's `ip:port` as the engine's host reaches it: over
    /// the engine's own ssh (`ssh -W`) for an `ssh://` engine, directly otherwise (the
    /// engine is on this machine, or its containers' networks are routed to it). Health
    /// gates and checks go through it.
    pub async fn dial(&self, ip: &str, port: u16) -> std::io::Result<Box<dyn Dialed>> {
        if self.endpoint.starts_with("ssh://") {
            let io = transport::ssh_forward(&self.endpoint, ip, port)?;
            return Ok(Box::new(io));
        }
        // A `tcp://` engine of another machine gives its containers addresses that a bridge
        // of this machine may hold too (engines hand out the same subnets in the same
        // order): a probe there would ask a container here, and pass for the wrong one.
        if self.endpoint.starts_with("tcp://")
            && !transport::is_loopback_host(&self.endpoint)
            && let Ok(v4) = ip.parse::<std::net::Ipv4Addr>()
        {
            let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
            let is_bridge = |i: &str| {
                std::path::Path::new("/sys/class/net")
                    .join(i)
                    .join("bridge")
                    .exists()
            };
            if let Some(bridge) = transport::local_bridge_of(v4, &routes, is_bridge) {
                return Err(std::io::Error::other(format!(
                    "{ip} of region `{}` is in the subnet of this machine's bridge `{bridge}`, so a probe would reach a container here, not there; use an ssh:// engine (probes go through its ssh) or a `health.cmd`",
                    self.region
                )));
            }
        }
        let stream = tokio::net::TcpStream::connect((ip, port)).await?;
        Ok(Box::new(stream))
    }

    /// Whether `other` is this very engine: the same ID, host name and data root (an
    /// engine always reports the same three; engines that only share an ID, cloned
    /// machines, are not taken for one).
    pub fn same_engine(&self, other: &Engine) -> bool {
        !self.id.is_empty()
            && self.id == other.id
            && self.host_name == other.host_name
            && self.root_dir == other.root_dir
    }

    /// Tells the engine the spec's regions: what is labelled for another of them is left
    /// out of every list it makes.
    pub fn set_regions(&mut self, all: &[&str]) {
        self.other_regions = all
            .iter()
            .filter(|r| **r != self.region)
            .map(|r| r.to_string())
            .collect();
    }

    /// The spec's other regions (as [`Engine::set_regions`] was told).
    pub fn other_regions(&self) -> &[String] {
        &self.other_regions
    }

    /// Whether an object with these labels belongs to another region of the spec.
    fn foreign(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        labels
            .get(crate::engine::labels::REGION)
            .is_some_and(|r| *r != self.region && self.other_regions.contains(r))
    }

    /// `labels` with this engine's region.
    fn with_region(
        &self,
        mut labels: std::collections::HashMap<String, String>,
    ) -> std::collections::HashMap<String, String> {
        labels.insert(
            crate::engine::labels::REGION.to_owned(),
            self.region.clone(),
        );
        labels
    }

    /// Whether the engine runs on this machine (a `unix://` socket), so that a path here
    /// is a path there.
    pub fn is_local(&self) -> bool {
        self.endpoint.starts_with("unix://")
    }

    /// Whether what is sent to the engine crosses a network in clear: a `tcp://` (or
    /// `http://`) engine without TLS, on another machine.
    pub fn in_clear(&self) -> bool {
        (self.endpoint.starts_with("tcp://") || self.endpoint.starts_with("http://"))
            && !self.tls
            && !transport::is_loopback_host(self.endpoint.trim_start_matches("http://"))
    }

    /// Requests made to the engine so far (connecting counts two).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// How many CPUs the engine has (`NCPU` of `/info`, read when connecting): the most a
    /// container may ask for.
    pub async fn cpu_count(&self) -> Result<i64, EngineError> {
        Ok(self.ncpu)
    }
}

/// `1.41` >= (1, 40)?
fn api_at_least(api: &str, min: (u32, u32)) -> bool {
    let mut parts = api.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_compare_numerically() {
        assert!(api_at_least("1.41", (1, 40)));
        assert!(api_at_least("1.100", (1, 40)));
        assert!(!api_at_least("1.39", (1, 40)));
        assert!(!api_at_least("", (1, 40)));
    }
}
