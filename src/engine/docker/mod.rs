//! A region's container engine, through bollard: connecting (the region's `engine`, or
//! DOCKER_HOST, or the local socket), checking that it answers and is recent enough, and the
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

use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;

pub use containers::{ContainerInfo, ContainerState, NAME_HOLD_LABEL};
pub use errors::{EngineError, active_endpoints, in_progress, name_conflict};
pub use exec::ExecIo;
pub use images::PullError;
pub use keeper::{KeeperError, VolumeFile, keeper_image_tag, keeper_program, secrets_mount};
pub use networks::{NetworkRemoval, ObjectInfo, ObjectKind};

/// Oldest engine API berth works with (Docker 19.03).
pub const MIN_API: (u32, u32) = (1, 40);

/// Seconds berth waits for one engine request.
const TIMEOUT_SECS: u64 = 120;

/// A connected engine of one region.
pub struct Engine {
    pub region: String,
    pub endpoint: String,
    docker: Docker,
    requests: AtomicU64,
    /// Containers created only to hold a name ([`Engine::hold_name`]), until released.
    held: std::sync::Mutex<Vec<(String, String)>>,
}

impl Engine {
    /// Connects to `endpoint` (`unix:///path` or `tcp://host:port`), or, without one, to
    /// DOCKER_HOST or the local socket; then checks that the engine answers and its version.
    pub async fn connect(region: &str, endpoint: Option<&str>) -> Result<Engine, EngineError> {
        let shown = endpoint
            .map(str::to_owned)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let unreachable = |reason: String| EngineError::Unreachable {
            region: region.to_owned(),
            endpoint: shown.clone(),
            reason,
        };
        let docker = match endpoint {
            None => Docker::connect_with_defaults(),
            Some(e) if e.starts_with("unix://") => {
                Docker::connect_with_unix(e, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            Some(e) if e.starts_with("tcp://") || e.starts_with("http://") => {
                Docker::connect_with_http(e, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            Some(e) => {
                return Err(EngineError::Unsupported {
                    region: region.to_owned(),
                    endpoint: e.to_owned(),
                });
            }
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let engine = Engine {
            region: region.to_owned(),
            endpoint: shown.clone(),
            docker,
            requests: AtomicU64::new(2),
            held: std::sync::Mutex::new(Vec::new()),
        };
        let version = engine
            .docker
            .version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let api = version.api_version.unwrap_or_default();
        if !api_at_least(&api, MIN_API) {
            return Err(EngineError::TooOld {
                region: region.to_owned(),
                found: api,
            });
        }
        Ok(engine)
    }

    /// Whether the engine runs on this machine (a `unix://` socket), so that a path here
    /// is a path there.
    pub fn is_local(&self) -> bool {
        self.endpoint.starts_with("unix://")
    }

    /// Requests made to the engine so far (connecting counts two).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// How many CPUs the engine has (`NCPU` of `/info`): the most a container may ask for.
    pub async fn cpu_count(&self) -> Result<i64, EngineError> {
        self.count();
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.call_error("info", e))?;
        Ok(info.ncpu.unwrap_or(0))
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
