//! A region's container engine, through bollard: connecting (the region's `engine`, or
//! DOCKER_HOST, or the local socket), checking that it answers and is recent enough, and the
//! calls observation makes. Every call is counted, so benchmarks can report requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    LogsOptions, RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;

use super::labels;

/// Oldest engine API berth works with (Docker 19.03).
pub const MIN_API: (u32, u32) = (1, 40);

/// Seconds berth waits for one engine request.
const TIMEOUT_SECS: u64 = 120;

/// How long berth keeps retrying a call the engine refuses because another operation on
/// the same object is still in progress (a removal, a create holding a name): long enough
/// for the engine to finish what a killed berth had asked of it, bounded so that a stuck
/// engine is reported, not waited on forever.
const IN_PROGRESS_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// The first pause between two tries; it doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// The label of a container berth creates only to hold a name (see [`Engine::hold_name`]).
pub const NAME_HOLD_LABEL: &str = "io.berth.name-hold";

/// Whether an engine refusal only means "not now": another operation on the object is in
/// progress (`removal of container ... is already in progress`, a container that is
/// restarting). Such a call is tried again after a pause.
pub fn in_progress(e: &bollard::errors::Error) -> bool {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        } => {
            let m = message.to_ascii_lowercase();
            m.contains("in progress") || m.contains("is restarting")
        }
        _ => false,
    }
}

/// Whether an engine refusal to remove a network is containers still attached to it (403
/// `network ... has active endpoints`).
pub fn active_endpoints(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 403, message }
            if message.contains("active endpoints")
    )
}

/// What became of a network berth asked the engine to remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkRemoval {
    /// Removed, or already gone.
    Removed,
    /// Refused: containers are attached to it.
    InUse,
}

/// Whether an engine refusal is a name held by another container (409 `Conflict. The
/// container name ... is already in use`), maybe one the engine is still creating.
pub fn name_conflict(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
            if message.to_ascii_lowercase().contains("already in use")
    )
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EngineError {
    #[error("cannot reach the engine of region `{region}` at `{endpoint}`: {reason}")]
    #[diagnostic(
        code(berth::engine_unreachable),
        help(
            "start the engine (`systemctl start docker`), or fix the region's `engine:` (or DOCKER_HOST); nothing was changed"
        )
    )]
    Unreachable {
        region: String,
        endpoint: String,
        reason: String,
    },
    #[error("the engine of region `{region}` speaks API {found}; berth needs {}.{} or newer", MIN_API.0, MIN_API.1)]
    #[diagnostic(
        code(berth::engine_too_old),
        help("upgrade Docker to 19.03 or newer, or Podman to 4 or newer")
    )]
    TooOld { region: String, found: String },
    #[error("region `{region}`: `{endpoint}` engines are not supported yet")]
    #[diagnostic(
        code(berth::engine_unsupported),
        help(
            "reach the host through a unix socket or `tcp://`; ssh:// and TLS engines come with the regions work"
        )
    )]
    Unsupported { region: String, endpoint: String },
    #[error("building image `{image}` on the engine of region `{region}` failed: {reason}")]
    #[diagnostic(
        code(berth::build_failed),
        help("fix the build context or its Dockerfile; nothing was changed")
    )]
    Build {
        region: String,
        image: String,
        reason: String,
    },
    #[error("the engine of region `{region}` refused `{call}`: {reason}")]
    #[diagnostic(
        code(berth::engine_call),
        help("check the engine's logs; nothing was changed by this call")
    )]
    Call {
        region: String,
        call: &'static str,
        reason: String,
    },
    #[error("in region `{region}`, {} containers claim `{address}`: {}", containers.len(), containers.join(", "))]
    #[diagnostic(
        code(berth::duplicate_container),
        help(
            "an interrupted apply can leave one behind: `berth apply` or `berth recover` removes the one with a `-berth-` name and keeps the pod's own; otherwise remove the wrong one by hand (`docker rm -f ID`); nothing was changed"
        )
    )]
    Duplicate {
        region: String,
        address: String,
        /// Each as `ID (NAME)`.
        containers: Vec<String>,
    },
}

/// A container as a list call shows it.
#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// `running`, `exited`, `created`, ...
    pub state: String,
    /// The engine's summary, e.g. `Up 5 minutes (unhealthy)`.
    pub status: String,
    /// Host paths bind-mounted into it, as (source, destination).
    pub binds: Vec<(String, String)>,
    /// Named volumes mounted into it.
    pub volumes: Vec<String>,
    /// The id of its image.
    pub image_id: String,
}

/// The streams of a command run with [`Engine::exec`].
pub struct ExecIo {
    pub output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// The kinds of engine object berth names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Network,
    Volume,
    Container,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Network => "network",
            ObjectKind::Volume => "volume",
            ObjectKind::Container => "container",
        }
    }
}

/// A network or volume as a list call shows it.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    pub name: String,
    pub labels: HashMap<String, String>,
}

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

    /// The id (`sha256:...`) of the image a name or tag stands for now.
    pub async fn image_id(&self, image: &str) -> Result<String, EngineError> {
        self.count();
        let i = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| self.call_error("inspect image", e))?;
        Ok(i.id.unwrap_or_default())
    }

    /// The user an image runs as (`USER` in its Dockerfile), empty for root.
    pub async fn image_user(&self, image: &str) -> Result<String, EngineError> {
        self.count();
        let i = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| self.call_error("inspect image", e))?;
        Ok(i.config.and_then(|c| c.user).unwrap_or_default())
    }

    /// Requests made to the engine so far (connecting counts two).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes a call, and makes it again (with a growing pause, for a bounded time) while
    /// the engine answers that another operation on the object is in progress: the one
    /// place every mutating call goes through, in apply, undo and recover alike.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, bollard::errors::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, bollard::errors::Error>>,
    {
        let deadline = tokio::time::Instant::now() + IN_PROGRESS_RETRY;
        let mut pause = RETRY_PAUSE;
        loop {
            self.count();
            match call().await {
                Err(e) if in_progress(&e) && tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
                r => return r,
            }
        }
    }

    /// A call's result with "not found" (404) as `None`: gone is an answer, not an error.
    fn found<T>(
        &self,
        call: &'static str,
        r: Result<T, bollard::errors::Error>,
    ) -> Result<Option<T>, EngineError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.call_error(call, e)),
        }
    }

    fn call_error(&self, call: &'static str, e: bollard::errors::Error) -> EngineError {
        EngineError::Call {
            region: self.region.clone(),
            call,
            reason: e.to_string(),
        }
    }

    /// Every container of the project, running or not, in one call.
    pub async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>, EngineError> {
        self.list_containers(labels::project_filter(project)).await
    }

    /// The containers, running or not, that pass these list filters, in one call.
    async fn list_containers(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<ContainerInfo>, EngineError> {
        self.count();
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.call_error("list containers", e))?;
        Ok(list.into_iter().map(info).collect())
    }

    /// Every network of the project, in one call.
    pub async fn networks(&self, project: &str) -> Result<Vec<ObjectInfo>, EngineError> {
        self.count();
        let list = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(labels::project_filter(project)),
            }))
            .await
            .map_err(|e| self.call_error("list networks", e))?;
        Ok(list
            .into_iter()
            .map(|n| ObjectInfo {
                name: n.name.unwrap_or_default(),
                labels: n.labels.unwrap_or_default(),
            })
            .collect())
    }

    /// Every volume of the project, in one call.
    pub async fn volumes(&self, project: &str) -> Result<Vec<ObjectInfo>, EngineError> {
        self.count();
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(labels::project_filter(project)),
            }))
            .await
            .map_err(|e| self.call_error("list volumes", e))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| ObjectInfo {
                name: v.name,
                labels: v.labels,
            })
            .collect())
    }
}

/// What berth needs to know of a container after starting it.
#[derive(Clone, Debug, Default)]
pub struct ContainerState {
    pub running: bool,
    pub restarting: bool,
    /// How often the engine restarted it (its restart policy) since it was created.
    pub restart_count: i64,
    pub exit_code: i64,
    /// `starting`, `healthy`, `unhealthy`, or empty without a healthcheck.
    pub health: String,
    /// The last healthcheck output, if any.
    pub health_output: String,
    /// The container's address on each network, by network name.
    pub addresses: HashMap<String, String>,
    /// Host paths bind-mounted into it, as (source, destination).
    pub binds: Vec<(String, String)>,
}

impl Engine {
    pub async fn image_present(&self, image: &str) -> Result<bool, EngineError> {
        self.count();
        let r = self.docker.inspect_image(image).await;
        Ok(self.found("inspect image", r)?.is_some())
    }

    /// Whether a network, volume or container of this name exists, and its labels if so.
    pub async fn labels_of(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, EngineError> {
        self.count();
        let result = match kind {
            ObjectKind::Network => self
                .docker
                .inspect_network(
                    name,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .map(|n| n.labels.unwrap_or_default()),
            ObjectKind::Volume => self.docker.inspect_volume(name).await.map(|v| v.labels),
            ObjectKind::Container => self
                .docker
                .inspect_container(
                    name,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .map(|c| c.config.and_then(|c| c.labels).unwrap_or_default()),
        };
        self.found("inspect", result)
    }

    /// Pulls `image` (`name[:tag]`, `name@digest`); the registry's refusal as text.
    pub async fn pull(&self, image: &str) -> Result<(), String> {
        self.count();
        // Without a tag the engine would pull every tag of the repository.
        let last = image.rsplit('/').next().unwrap_or(image);
        let reference = if last.contains(':') || image.contains('@') {
            image.to_owned()
        } else {
            format!("{image}:latest")
        };
        let options = bollard::query_parameters::CreateImageOptions {
            from_image: Some(reference),
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        return Err(detail.message.unwrap_or_else(|| "the pull failed".into()));
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Builds `tag` from a tar of the build context.
    pub async fn build_image(
        &self,
        tag: &str,
        context_tar: Vec<u8>,
        dockerfile: &str,
        args: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        self.count();
        let options = bollard::query_parameters::BuildImageOptions {
            dockerfile: dockerfile.to_owned(),
            t: Some(tag.to_owned()),
            rm: true,
            forcerm: true,
            buildargs: (!args.is_empty()).then_some(args),
            ..Default::default()
        };
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context_tar.into())));
        let mut output: Vec<String> = Vec::new();
        while let Some(item) = stream.next().await {
            let failure = |reason: String| EngineError::Build {
                region: self.region.clone(),
                image: tag.to_owned(),
                reason,
            };
            match item {
                Ok(info) => {
                    if let Some(line) = info.stream {
                        output.push(line.trim_end().to_owned());
                    }
                    if let Some(detail) = info.error_detail {
                        let last: Vec<String> =
                            output.iter().rev().take(5).rev().cloned().collect();
                        return Err(failure(format!(
                            "{}\n{}",
                            detail.message.unwrap_or_default(),
                            last.join("\n")
                        )));
                    }
                }
                Err(e) => return Err(failure(e.to_string())),
            }
        }
        Ok(())
    }

    pub async fn create_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..Default::default()
        };
        self.retrying(|| self.docker.create_network(request.clone()))
            .await
            .map_err(|e| self.call_error("create network", e))?;
        Ok(())
    }

    /// Reconnects a container to `network` answering to `alias` (an endpoint's aliases are
    /// fixed when it connects).
    pub async fn reconnect_with_alias(
        &self,
        id: &str,
        network: &str,
        alias: &str,
    ) -> Result<(), EngineError> {
        self.retrying(|| {
            self.docker.disconnect_network(
                network,
                bollard::models::NetworkDisconnectRequest {
                    container: id.to_owned(),
                    force: Some(true),
                },
            )
        })
        .await
        .map_err(|e| self.call_error("disconnect network", e))?;
        self.retrying(|| {
            self.docker.connect_network(
                network,
                bollard::models::NetworkConnectRequest {
                    container: id.to_owned(),
                    endpoint_config: Some(bollard::models::EndpointSettings {
                        aliases: Some(vec![alias.to_owned()]),
                        ..Default::default()
                    }),
                },
            )
        })
        .await
        .map_err(|e| self.call_error("connect network", e))
    }

    /// Removes a network; one that is already gone is fine. One the engine refuses to
    /// remove because containers are attached to it (403 `has active endpoints`) is
    /// [`NetworkRemoval::InUse`], not an error: the caller finds out whose they are.
    pub async fn remove_network(&self, name: &str) -> Result<NetworkRemoval, EngineError> {
        match self.retrying(|| self.docker.remove_network(name)).await {
            Err(e) if active_endpoints(&e) => Ok(NetworkRemoval::InUse),
            r => self
                .found("remove network", r)
                .map(|_| NetworkRemoval::Removed),
        }
    }

    pub async fn create_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        self.retrying(|| self.docker.create_volume(request.clone()))
            .await
            .map_err(|e| self.call_error("create volume", e))?;
        Ok(())
    }

    /// Removes a volume; one that is already gone is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let r = self
            .retrying(|| {
                self.docker
                    .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            })
            .await;
        self.found("remove volume", r).map(|_| ())
    }

    /// A container that is never started, only there to reach `volume` (mounted at
    /// `/volume`) through the archive API; `image` is any image present on the engine.
    /// Its command is explicit (the engine refuses to create a container from an image
    /// with no default command otherwise) and is never run.
    pub async fn create_helper(
        &self,
        name: &str,
        image: &str,
        volume: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, EngineError> {
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(vec!["/berth-helper-is-never-started".into()]),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(bollard::models::HostConfig {
                mounts: Some(vec![bollard::models::Mount {
                    target: Some("/volume".into()),
                    source: Some(volume.to_owned()),
                    typ: Some(bollard::models::MountType::VOLUME),
                    read_only: Some(false),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_container(name, body).await
    }

    /// The container named `name` once no engine operation holds the name, or else the name
    /// held by berth until [`Engine::release_names`].
    ///
    /// A killed berth may have asked the engine to create a container that the engine is
    /// still creating: it holds the name but cannot be inspected or listed yet. Creating a
    /// container of that name tells: the engine refuses (the name is in use) until the
    /// other one exists, and then inspecting finds it; or the create succeeds, and the name
    /// is berth's, so that a create still in flight fails instead of leaving an orphan. The
    /// holding container is never started; it carries `project`'s label and
    /// [`NAME_HOLD_LABEL`]. Tries for a bounded time.
    pub async fn hold_name(
        &self,
        name: &str,
        project: &str,
    ) -> Result<Option<ContainerInfo>, EngineError> {
        let deadline = tokio::time::Instant::now() + IN_PROGRESS_RETRY;
        let mut pause = RETRY_PAUSE;
        loop {
            if let Some(c) = self.container_named(name).await? {
                return Ok(Some(c));
            }
            // Any image will do: the container is never started.
            self.count();
            let images = self
                .docker
                .list_images(None::<bollard::query_parameters::ListImagesOptions>)
                .await
                .map_err(|e| self.call_error("list images", e))?;
            let Some(image) = images.into_iter().next().map(|i| i.id) else {
                // Without an image no container can be created: the name is free.
                return Ok(None);
            };
            let body = ContainerCreateBody {
                image: Some(image),
                cmd: Some(vec!["berth-holds-this-name".into()]),
                labels: Some(HashMap::from([
                    (labels::PROJECT.to_owned(), project.to_owned()),
                    (NAME_HOLD_LABEL.to_owned(), "1".to_owned()),
                ])),
                network_disabled: Some(true),
                ..Default::default()
            };
            self.count();
            let r = self
                .docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.to_owned()),
                        ..Default::default()
                    }),
                    body,
                )
                .await;
            match r {
                Ok(created) => {
                    if let Ok(mut held) = self.held.lock() {
                        held.push((name.to_owned(), created.id));
                    }
                    return Ok(None);
                }
                Err(e)
                    if (name_conflict(&e) || in_progress(&e))
                        && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
                Err(e) => return Err(self.call_error("create container (to hold its name)", e)),
            }
        }
    }

    /// Removes the container of this name if it is `project`'s (one the engine may still be
    /// creating included), and holds the name (see [`Engine::hold_name`]). A container of
    /// another project (or none) under the name is left alone.
    pub async fn remove_named(&self, name: &str, project: &str) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::now() + IN_PROGRESS_RETRY;
        let mut pause = RETRY_PAUSE;
        loop {
            match self.hold_name(name, project).await? {
                Some(c) if c.labels.get(labels::PROJECT).map(String::as_str) == Some(project) => {
                    // Listed, it may still be finishing its create: removed, it can show
                    // once more until the engine is done with it.
                    self.remove(&c.id).await?;
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(EngineError::Call {
                            region: self.region.clone(),
                            call: "remove container",
                            reason: format!("container {name} is still there after its removal"),
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
                // Never created (the name is held now), or not ours.
                _ => return Ok(()),
            }
        }
    }

    /// Removes the containers [`Engine::hold_name`] created: the names are free again.
    pub async fn release_names(&self) -> Result<(), EngineError> {
        let held = match self.held.lock() {
            Ok(mut h) => std::mem::take(&mut *h),
            Err(_) => Vec::new(),
        };
        for (_, id) in held {
            self.remove(&id).await?;
        }
        Ok(())
    }

    /// Releases one name [`Engine::hold_name`] holds (before a container is given it).
    pub async fn release_name(&self, name: &str) -> Result<(), EngineError> {
        let ids: Vec<String> = match self.held.lock() {
            Ok(mut h) => {
                let (these, others) = std::mem::take(&mut *h)
                    .into_iter()
                    .partition(|(n, _)| n == name);
                *h = others;
                these.into_iter().map(|(_, id)| id).collect()
            }
            Err(_) => Vec::new(),
        };
        for id in ids {
            self.remove(&id).await?;
        }
        Ok(())
    }

    /// The container of this name (not an id prefix), as a list call shows it.
    pub async fn container_named(&self, name: &str) -> Result<Option<ContainerInfo>, EngineError> {
        let filter = HashMap::from([("name".to_owned(), vec![format!("^/{name}$")])]);
        let list = self.list_containers(filter).await?;
        Ok(list.into_iter().find(|c| c.name == name))
    }

    /// Containers of other projects (or none) attached to a network, by name: they keep it
    /// alive, and berth never removes them.
    pub async fn foreign_on_network(
        &self,
        network: &str,
        project: &str,
    ) -> Result<Vec<String>, EngineError> {
        self.foreign_on("network", network, project).await
    }

    /// Containers of other projects (or none) that mount a volume, by name: the engine
    /// cannot remove a volume they use, and berth never removes them.
    pub async fn foreign_on_volume(
        &self,
        volume: &str,
        project: &str,
    ) -> Result<Vec<String>, EngineError> {
        self.foreign_on("volume", volume, project).await
    }

    /// The names, sorted, of the containers that pass one list filter and are not the
    /// project's.
    async fn foreign_on(
        &self,
        filter: &str,
        value: &str,
        project: &str,
    ) -> Result<Vec<String>, EngineError> {
        let filter = HashMap::from([(filter.to_owned(), vec![value.to_owned()])]);
        let list = self.list_containers(filter).await?;
        let mut names: Vec<String> = list
            .into_iter()
            .filter(|c| c.labels.get(labels::PROJECT).map(String::as_str) != Some(project))
            .map(|c| c.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The tar stream of `path` in a container (running or not).
    pub fn download(
        &self,
        id: &str,
        path: &str,
    ) -> impl futures_util::Stream<Item = Result<hyper::body::Bytes, EngineError>> + use<'_> {
        use futures_util::StreamExt;
        self.count();
        self.docker
            .download_from_container(
                id,
                Some(bollard::query_parameters::DownloadFromContainerOptions {
                    path: path.to_owned(),
                }),
            )
            .map(|r| r.map_err(|e| self.call_error("download from container", e)))
    }

    /// Unpacks a tar stream at `path` in a container (running or not).
    pub async fn upload(
        &self,
        id: &str,
        path: &str,
        tar: impl futures_util::Stream<Item = Result<hyper::body::Bytes, std::io::Error>>
        + Send
        + 'static,
    ) -> Result<(), EngineError> {
        self.count();
        self.docker
            .upload_to_container(
                id,
                Some(bollard::query_parameters::UploadToContainerOptions {
                    path: path.to_owned(),
                    ..Default::default()
                }),
                bollard::body_try_stream(tar),
            )
            .await
            .map_err(|e| self.call_error("upload to container", e))
    }

    /// Starts `cmd` in a running container, attached: its output (stdout and stderr
    /// frames) and, with `stdin`, a writer to its standard input. Returns the exec's id
    /// for [`Engine::exec_exit_code`].
    pub async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        stdin: bool,
    ) -> Result<(String, ExecIo), EngineError> {
        self.count();
        let created = self
            .docker
            .create_exec(
                id,
                bollard::exec::CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    attach_stdin: Some(stdin),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.call_error("create exec", e))?;
        self.count();
        match self
            .docker
            .start_exec(
                &created.id,
                Some(bollard::exec::StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(256 * 1024),
                }),
            )
            .await
            .map_err(|e| self.call_error("start exec", e))?
        {
            bollard::exec::StartExecResults::Attached { output, input } => {
                Ok((created.id, ExecIo { output, input }))
            }
            bollard::exec::StartExecResults::Detached => Err(EngineError::Call {
                region: self.region.clone(),
                call: "start exec",
                reason: "the engine did not attach to the command".into(),
            }),
        }
    }

    /// The exit code of a finished exec.
    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, EngineError> {
        self.count();
        let r = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| self.call_error("inspect exec", e))?;
        Ok(r.exit_code)
    }

    /// A container's current name, or `None` when it does not exist.
    pub async fn name_of(&self, id: &str) -> Result<Option<String>, EngineError> {
        self.count();
        let r = self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await;
        Ok(self.found("inspect container", r)?.map(|c| {
            c.name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned()
        }))
    }

    /// Creates a container (not started); returns its id.
    pub async fn create_container(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, EngineError> {
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let created = self
            .retrying(|| {
                self.docker
                    .create_container(Some(options.clone()), body.clone())
            })
            .await
            .map_err(|e| self.call_error("create container", e))?;
        Ok(created.id)
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.retrying(|| {
            self.docker
                .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        })
        .await
        .map_err(|e| self.call_error("start container", e))
    }

    pub async fn stop(&self, id: &str) -> Result<(), EngineError> {
        let options = StopContainerOptions {
            t: Some(10),
            ..Default::default()
        };
        match self
            .retrying(|| self.docker.stop_container(id, Some(options.clone())))
            .await
        {
            // Already stopped is stopped.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.call_error("stop container", e)),
        }
    }

    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        // "Removal already in progress" (a killed berth asked for it): retried until the
        // engine has finished it, when the container is gone (404), which is success.
        let r = self
            .retrying(|| self.docker.remove_container(id, Some(options.clone())))
            .await;
        self.found("remove container", r).map(|_| ())
    }

    pub async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        self.retrying(|| {
            self.docker.rename_container(
                id,
                RenameContainerOptions {
                    name: name.to_owned(),
                },
            )
        })
        .await
        .map_err(|e| self.call_error("rename container", e))
    }

    pub async fn state(&self, id: &str) -> Result<ContainerState, EngineError> {
        self.count();
        let c = self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| self.call_error("inspect container", e))?;
        let st = c.state.unwrap_or_default();
        let health = st.health.unwrap_or_default();
        let binds = c
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| Some((m.source?, m.destination?)))
            .collect();
        let addresses = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(net, e)| e.ip_address.filter(|ip| !ip.is_empty()).map(|ip| (net, ip)))
            .collect();
        Ok(ContainerState {
            running: st.running.unwrap_or(false),
            restarting: st.restarting.unwrap_or(false),
            restart_count: c.restart_count.unwrap_or(0),
            exit_code: st.exit_code.unwrap_or(0),
            health: health.status.map(|s| s.to_string()).unwrap_or_default(),
            health_output: health
                .log
                .and_then(|l| l.last().and_then(|r| r.output.clone()))
                .unwrap_or_default(),
            addresses,
            binds,
        })
    }

    /// The last `lines` lines of a container's output (stdout and stderr).
    pub async fn log_tail(&self, id: &str, lines: usize) -> String {
        self.count();
        let mut stream = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&chunk.to_string());
        }
        out
    }
}

impl Engine {
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

    /// The exit status of the container's last exit, from the engine's events (those it
    /// still holds). After a restart by its policy, the container's own state shows the
    /// new run (status 0 while it runs); its `die` events keep the status of each exit.
    pub async fn last_exit_status(&self, id: &str) -> Result<Option<i64>, EngineError> {
        self.count();
        let stamp = |t: std::time::SystemTime| {
            let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
        };
        let options = bollard::query_parameters::EventsOptions {
            // Every event the engine holds for this container id (no clock to agree on).
            since: Some(stamp(std::time::UNIX_EPOCH)),
            // Up to now: the stream ends instead of waiting for new events.
            until: Some(stamp(std::time::SystemTime::now())),
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                ("container".to_owned(), vec![id.to_owned()]),
                ("event".to_owned(), vec!["die".to_owned()]),
            ])),
        };
        let mut events = self.docker.events(Some(options));
        let mut last = None;
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| self.call_error("events", e))?;
            if let Some(code) = event
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("exitCode").and_then(|c| c.parse().ok()))
            {
                last = Some(code);
            }
        }
        Ok(last)
    }
}

/// A container of a list call.
fn info(c: bollard::models::ContainerSummary) -> ContainerInfo {
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default(),
        labels: c.labels.unwrap_or_default(),
        state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        status: c.status.unwrap_or_default(),
        binds: c
            .mounts
            .iter()
            .flatten()
            .filter(|m| m.name.is_none())
            .filter_map(|m| Some((m.source.clone()?, m.destination.clone()?)))
            .collect(),
        volumes: c
            .mounts
            .iter()
            .flatten()
            .filter_map(|m| m.name.clone())
            .collect(),
        image_id: c.image_id.unwrap_or_default(),
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

    fn refusal(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn an_operation_in_progress_is_retried_and_other_refusals_are_not() {
        assert!(in_progress(&refusal(
            409,
            "removal of container 4f2a is already in progress"
        )));
        assert!(in_progress(&refusal(
            409,
            "Container 4f2a is restarting, wait until the container is running"
        )));
        assert!(!in_progress(&refusal(
            409,
            "Conflict. The container name \"/x\" is already in use by container \"4f2a\""
        )));
        assert!(!in_progress(&refusal(
            404,
            "No such container: in progress"
        )));
        assert!(!in_progress(&refusal(500, "removal is in progress")));
        assert!(name_conflict(&refusal(
            409,
            "Conflict. The container name \"/x\" is already in use by container \"4f2a\""
        )));
        assert!(!name_conflict(&refusal(409, "removal already in progress")));
    }

    #[test]
    fn api_versions_compare_numerically() {
        assert!(api_at_least("1.41", (1, 40)));
        assert!(api_at_least("1.100", (1, 40)));
        assert!(!api_at_least("1.39", (1, 40)));
        assert!(!api_at_least("", (1, 40)));
    }
}
