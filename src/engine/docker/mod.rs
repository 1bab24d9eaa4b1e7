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
mod prefetch;
pub mod transport;

use std::sync::atomic::{AtomicU64, Ordering};

use bollard::{ClientVersion, Docker};

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
    /// The IDs of the engine's built-in networks (`bridge`, `host`, `none`), read when
    /// connecting: a fingerprint that tells engines apart without `/info`.
    builtin: Vec<String>,
    /// A Podman engine (its answers say `Libpod-Api-Version`): its `/info` gives a new ID
    /// at every call, so it is told apart by host name and data root only.
    podman: bool,
    /// What was listed when connecting (every network; for an observation, the project's
    /// containers and volumes too), until the observation that follows takes it
    /// ([`Engine::networks_listed`], [`Engine::containers_listed`],
    /// [`Engine::volumes_listed`]).
    prefetched: std::sync::Mutex<prefetch::Prefetched>,
    /// What `/info` says, read when first needed ([`Engine::identity`]).
    identity: tokio::sync::OnceCell<Identity>,
    /// Reached over TLS (`tcp://` with `tls`).
    tls: bool,
    /// The spec's other regions: objects labelled for one of them are not this region's.
    other_regions: Vec<String>,
    docker: Docker,
    requests: AtomicU64,
    /// Containers created only to hold a name ([`Engine::hold_name`]), until released.
    held: std::sync::Mutex<Vec<(String, String)>>,
    /// The other regions whose objects its lists held ([`Engine::foreign`]).
    foreign_seen: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// What an engine's `/info` says of it: its ID, host name and data root (together what
/// tells two engines apart: engines of machines cloned from one image may share an ID),
/// its CPUs and its architecture.
struct Identity {
    id: String,
    host_name: String,
    root_dir: String,
    ncpu: i64,
    architecture: String,
}

/// The engine's networks, every one (one cheap call): the IDs of its built-in ones
/// (`bridge`, `host`, `none`; on Windows `nat`), sorted, and all of them as listed.
async fn list_networks(
    docker: &Docker,
) -> Result<(Vec<String>, Vec<networks::ObjectInfo>), bollard::errors::Error> {
    let list = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await?;
    // The engine's own networks (`nat` is Windows'; on Linux a user may name a network
    // so, which only adds an ID to the fingerprint: engines then match more, not less).
    let builtin = |name: &str| matches!(name, "bridge" | "host" | "none" | "nat");
    let mut ids: Vec<String> = list
        .iter()
        .filter(|n| n.name.as_deref().is_some_and(builtin))
        .filter_map(|n| n.id.clone())
        .collect();
    ids.sort();
    let all = list
        .into_iter()
        .map(|n| networks::ObjectInfo {
            name: n.name.unwrap_or_default(),
            labels: n.labels.unwrap_or_default(),
        })
        .collect();
    Ok((ids, all))
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
        Engine::connect_for(region, target, None).await
    }

    /// [`Engine::connect`] for an observation of `project`: its containers and volumes
    /// are listed together with the networks, for the observation to take.
    pub async fn connect_for(
        region: &str,
        target: &Target,
        project: Option<&str>,
    ) -> Result<Engine, EngineError> {
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
        let endpoint = target.endpoint.as_deref().unwrap_or(&shown);
        let clients = match &target.tls {
            Some(tls) if endpoint.starts_with("tcp://") => {
                transport::tls(endpoint, tls, TIMEOUT_SECS)
            }
            _ if endpoint.starts_with("ssh://") => transport::ssh(endpoint, TIMEOUT_SECS),
            _ if endpoint.starts_with("unix://") => transport::unix(endpoint, TIMEOUT_SECS),
            _ if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") => {
                transport::http(endpoint, TIMEOUT_SECS)
            }
            _ => {
                return Err(EngineError::Unsupported {
                    region: region.to_owned(),
                    endpoint: endpoint.to_owned(),
                });
            }
        }
        .map_err(unreachable)?;
        let too_old = |api: String| match api_at_least(&api, MIN_API) {
            true => Ok(()),
            false => Err(EngineError::TooOld {
                region: region.to_owned(),
                found: api,
            }),
        };
        let shown_version = |v: &ClientVersion| format!("{}.{}", v.major_version, v.minor_version);
        // One cheap request first: the engine's networks (the IDs of its built-in ones are
        // its fingerprint, below; the list serves the first observation). Neither
        // `/version` nor `/info` is asked: the engine runs two programs for each (`runc`
        // and `docker-init`, for their versions), which made most of what connecting cost.
        // Every answer says the engine's API version. (bollard sends requests without a
        // version in the path, which the engine answers in its own; should it send berth's,
        // an older engine refuses it saying the newest it speaks, and is asked again in
        // that.)
        let mut requests = 1;
        let mut docker = clients
            .client(bollard::API_DEFAULT_VERSION)
            .map_err(unreachable)?;
        let prefetching = async {
            match project {
                Some(p) => Some(prefetch::lists(&docker, region, p).await),
                None => None,
            }
        };
        let (listed, mut prefetched) = tokio::join!(list_networks(&docker), prefetching);
        if prefetched.is_some() {
            requests += 2;
        }
        let listed = match listed {
            Err(e) => match errors::newest_api(&e) {
                None => Err(e),
                Some(newest) => {
                    too_old(shown_version(&newest))?;
                    // Asked in a version the engine refused: the lists failed as well.
                    prefetched = None;
                    docker = clients.client(&newest).map_err(unreachable)?;
                    requests += 1;
                    list_networks(&docker).await
                }
            },
            found => found,
        };
        let (builtin, networks) = match listed {
            Ok((ids, all)) => (ids, Some(all)),
            // A proxy in front of the engine that does not allow this: no fingerprint, so
            // its `/info` is read whenever one-engine-one-region is checked.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 403, ..
            }) => (Vec::new(), None),
            Err(e) => return Err(unreachable(e.to_string())),
        };
        let mut pinged = String::new();
        if clients.engine_api().is_none() {
            // A refusal by a proxy says no version; the engine's cheapest answer does.
            requests += 1;
            if let Err(e) = docker.ping().await {
                pinged = format!(" (`_ping`: {e})");
            }
        }
        let Some(api) = clients.engine_api() else {
            return Err(unreachable(format!(
                "its answers do not say an API version (`Api-Version`): it is not a Docker engine, or a proxy in front of it hides it{pinged}"
            )));
        };
        too_old(api)?;
        Ok(Engine {
            region: region.to_owned(),
            endpoint: shown.clone(),
            builtin,
            podman: clients.is_podman(),
            prefetched: std::sync::Mutex::new(prefetch::Prefetched {
                networks,
                ..prefetched.unwrap_or_default()
            }),
            identity: tokio::sync::OnceCell::new(),
            tls: target.tls.is_some(),
            other_regions: Vec::new(),
            docker,
            requests: AtomicU64::new(requests),
            held: std::sync::Mutex::new(Vec::new()),
            foreign_seen: std::sync::Mutex::default(),
        })
    }

    /// The engine's identity (`/info`), read once, when first asked for.
    async fn identity(&self) -> Result<&Identity, EngineError> {
        self.identity
            .get_or_try_init(|| async {
                let _request = self.request("identity");
                let info = self
                    .docker
                    .info()
                    .await
                    .map_err(|e| self.call_error("read the engine's identity", e))?;
                Ok(Identity {
                    id: info.id.unwrap_or_default(),
                    host_name: info.name.unwrap_or_default(),
                    root_dir: info.docker_root_dir.unwrap_or_default(),
                    ncpu: info.ncpu.unwrap_or(0),
                    architecture: info.architecture.unwrap_or_default(),
                })
            })
            .await
    }

    /// The engine's ID (`ID` of `/info`).
    pub async fn id(&self) -> Result<String, EngineError> {
        Ok(self.identity().await?.id.clone())
    }

    /// Whether `other` may be this very engine, by the fingerprints read when connecting:
    /// they share a built-in network, or one has none. Engines whose fingerprints share
    /// nothing are two engines (each network's ID is random, made once in the engine's
    /// data root); for the others, [`Engine::same_engine`] decides.
    pub fn may_be_same(&self, other: &Engine) -> bool {
        fingerprints_may_match(&self.builtin, &other.builtin)
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

    /// Whether `other` is this very engine: the same ID, host name and data root of
    /// `/info` (an engine always reports the same three; engines that only share an ID,
    /// cloned machines, are not taken for one; Podman's by host name and data root). Asks
    /// `/info` only of engines that [may be](Engine::may_be_same) one.
    pub async fn same_engine(&self, other: &Engine) -> Result<bool, EngineError> {
        if !self.may_be_same(other) {
            return Ok(false);
        }
        let (a, b) = tokio::try_join!(self.identity(), other.identity())?;
        Ok(same_identity(a, b, self.podman || other.podman))
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

    /// Whether an object with these labels belongs to another region of the spec (noted:
    /// [`Engine::other_regions_seen`]).
    fn foreign(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        let Some(r) = labels
            .get(crate::engine::labels::REGION)
            .filter(|r| **r != self.region && self.other_regions.contains(r))
        else {
            return false;
        };
        if let Ok(mut seen) = self.foreign_seen.lock() {
            seen.insert(r.clone());
        }
        true
    }

    /// The other regions of the spec whose objects this engine's lists have held (and left
    /// out).
    pub fn other_regions_seen(&self) -> Vec<String> {
        self.foreign_seen
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
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

    /// Requests made to the engine so far (connecting counts one, or two or three for an
    /// engine older than berth's API; `/info`, when read, one more).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Counts a request to the engine, named `call` (the function making it); logged with
    /// its region and how long it took when the guard drops, at debug level
    /// (`BERTH_LOG=debug`). Names and timings only: never a request's body.
    fn request(&self, call: &'static str) -> Request<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Request {
            region: &self.region,
            call,
            began: std::time::Instant::now(),
        }
    }

    /// How many CPUs the engine has (`NCPU` of `/info`): the most a container may ask
    /// for.
    pub async fn cpu_count(&self) -> Result<i64, EngineError> {
        Ok(self.identity().await?.ncpu)
    }
}

/// Whether two `/info`s are of one engine: the same ID, host name and data root; for a
/// Podman engine (whose ID is new at every call) the same host name and data root.
fn same_identity(a: &Identity, b: &Identity, podman: bool) -> bool {
    let place = !a.host_name.is_empty()
        && !a.root_dir.is_empty()
        && a.host_name == b.host_name
        && a.root_dir == b.root_dir;
    match podman {
        true => place,
        false => !a.id.is_empty() && a.id == b.id && place,
    }
}

/// Whether two engines' built-in network IDs leave it open that they are one engine: they
/// share one, or either has none.
fn fingerprints_may_match(a: &[String], b: &[String]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|id| b.contains(id))
}

/// `1.41` >= (1, 40)?
fn api_at_least(api: &str, min: (u32, u32)) -> bool {
    let mut parts = api.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

/// One request to an engine, logged when it is done (see [`Engine::request`]).
struct Request<'a> {
    region: &'a str,
    call: &'static str,
    began: std::time::Instant,
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        tracing::debug!(
            region = self.region,
            call = self.call,
            ms = format!("{:.1}", self.began.elapsed().as_secs_f64() * 1000.0),
            "engine request"
        );
    }
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

    #[test]
    fn two_infos_are_one_engine_by_id_host_and_data_root_and_podman_s_by_host_and_root() {
        let info = |id: &str, host: &str, root: &str| Identity {
            id: id.to_owned(),
            host_name: host.to_owned(),
            root_dir: root.to_owned(),
            ncpu: 2,
            architecture: "x86_64".to_owned(),
        };
        let docker = "/var/lib/docker";
        let podman = "/var/lib/containers/storage";
        let rootless = "/home/u/.local/share/containers/storage";
        // (first, second, Podman, one engine)
        let cases = [
            (
                ("ID1", "web-1", docker),
                ("ID1", "web-1", docker),
                false,
                true,
            ),
            // A machine cloned from the same image: the same ID, another host name.
            (
                ("ID1", "web-1", docker),
                ("ID1", "web-2", docker),
                false,
                false,
            ),
            (
                ("ID1", "web-1", docker),
                ("ID2", "web-1", docker),
                false,
                false,
            ),
            // Podman gives a new ID at every `/info`.
            (("u1", "web-1", podman), ("u2", "web-1", podman), true, true),
            (
                ("u1", "web-1", podman),
                ("u2", "web-1", rootless),
                true,
                false,
            ),
            (("", "", ""), ("", "", ""), true, false),
        ];
        for ((i1, h1, r1), (i2, h2, r2), is_podman, one) in cases {
            let (a, b) = (info(i1, h1, r1), info(i2, h2, r2));
            assert_eq!(
                same_identity(&a, &b, is_podman),
                one,
                "{i1} {h1} {r1} / {i2} {h2} {r2}"
            );
        }
    }

    #[test]
    fn engines_are_told_apart_by_their_builtin_networks_only_when_they_share_none() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = ids(&["a1", "a2", "a3"]);
        assert!(!fingerprints_may_match(&a, &ids(&["b1", "b2", "b3"])));
        // The same engine, its `bridge` made anew by a restart between the two lists.
        assert!(fingerprints_may_match(&a, &ids(&["a1", "a2", "c3"])));
        assert!(fingerprints_may_match(&a, &a));
        // An engine that gave no fingerprint is asked its `/info`.
        assert!(fingerprints_may_match(&a, &[]));
        assert!(fingerprints_may_match(&[], &a));
    }

    /// An engine on a unix socket that gives its connections `answers`, one each, in turn.
    fn fake_engine(dir: &std::path::Path, answers: Vec<&'static str>) -> String {
        let path = dir.join("engine.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for (conn, answer) in listener.incoming().zip(answers) {
                let Ok(mut conn) = conn else { return };
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        format!("unix://{}", path.display())
    }

    fn connect(endpoint: String) -> Result<Engine, EngineError> {
        let target = Target {
            endpoint: Some(endpoint),
            tls: None,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(Engine::connect("east", &target))
    }

    #[test]
    fn an_engine_older_than_berth_needs_is_refused_by_the_version_its_answer_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = "HTTP/1.1 200 OK\r\nApi-Version: 1.39\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]";
        match connect(fake_engine(dir.path(), vec![old])) {
            Err(EngineError::TooOld { region, found }) => {
                assert_eq!((region.as_str(), found.as_str()), ("east", "1.39"));
            }
            Err(e) => panic!("expected TooOld, got {e}"),
            Ok(_) => panic!("expected TooOld, got a connected engine"),
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let new = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]";
        let engine = connect(fake_engine(dir.path(), vec![new])).expect("a 1.41 engine connects");
        assert_eq!(engine.requests(), 1, "connecting asks one thing");
    }

    #[test]
    fn a_proxy_refusing_the_network_list_leaves_no_fingerprint_and_a_non_engine_is_unreachable() {
        let forbidden = "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 23\r\nConnection: close\r\n\r\n{\"message\":\"forbidden\"}";
        let dir = tempfile::tempdir().expect("tempdir");
        let ping = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK";
        let engine = connect(fake_engine(dir.path(), vec![forbidden, ping])).expect("connects");
        assert!(engine.builtin.is_empty(), "no fingerprint: /info decides");
        assert_eq!(
            engine.requests(),
            2,
            "the list, then `_ping` for the version"
        );
        // No answer says a version: not taken for an engine (nor for a new enough one).
        let dir = tempfile::tempdir().expect("tempdir");
        match connect(fake_engine(dir.path(), vec![forbidden, forbidden])) {
            Err(EngineError::Unreachable { reason, .. }) => {
                assert!(reason.contains("Api-Version"), "{reason}")
            }
            Err(e) => panic!("expected Unreachable, got {e}"),
            Ok(_) => panic!("expected Unreachable, got a connected engine"),
        }
        // Another web server on the port.
        let not_found = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found";
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            connect(fake_engine(dir.path(), vec![not_found])),
            Err(EngineError::Unreachable { .. })
        ));
        // What a TLS port says to plain HTTP.
        let https = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 48\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
        let dir = tempfile::tempdir().expect("tempdir");
        match connect(fake_engine(dir.path(), vec![https])) {
            Err(EngineError::Unreachable { reason, .. }) => {
                assert!(reason.contains("HTTPS server"), "{reason}")
            }
            Err(e) => panic!("expected Unreachable, got {e}"),
            Ok(_) => panic!("expected Unreachable, got a connected engine"),
        }
    }

    #[test]
    fn an_engine_refusing_berths_version_is_asked_again_in_the_newest_it_speaks() {
        // As an engine answers a request in a version it does not speak.
        let refusal = |newest: &str| -> &'static str {
            let body = format!(
                "{{\"message\":\"client version 1.53 is too new. Maximum supported API version is {newest}\"}}"
            );
            String::leak(format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ))
        };
        let ok = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]";
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = connect(fake_engine(dir.path(), vec![refusal("1.41"), ok]))
            .expect("asked again in 1.41, the engine answers");
        assert_eq!(engine.requests(), 2);
        assert_eq!(engine.docker.client_version().minor_version, 41);
        // Too old to be asked again.
        let dir = tempfile::tempdir().expect("tempdir");
        match connect(fake_engine(dir.path(), vec![refusal("1.39"), ok])) {
            Err(EngineError::TooOld { found, .. }) => assert_eq!(found, "1.39"),
            Err(e) => panic!("expected TooOld, got {e}"),
            Ok(_) => panic!("expected TooOld, got a connected engine"),
        }
    }
}
