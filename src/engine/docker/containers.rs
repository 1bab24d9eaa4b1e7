//! Containers: listing them, creating, starting, stopping, renaming and removing one, its
//! state, and holding a name that a killed berth's create may still take.

use std::collections::HashMap;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, RenameContainerOptions,
    StopContainerOptions,
};

use super::errors::{IN_PROGRESS_RETRY, RETRY_PAUSE, RETRY_PAUSE_MAX, in_progress, name_conflict};
use super::{Engine, EngineError};
use crate::engine::labels;

/// The label of a container berth creates only to hold a name (see [`Engine::hold_name`]).
pub const NAME_HOLD_LABEL: &str = "io.berth.name-hold";

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
    /// When it last started, on the engine's clock (seconds, nanoseconds since the epoch).
    pub started: Option<(u64, u32)>,
}

impl Engine {
    /// Every container of the project, running or not, in one call.
    pub async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>, EngineError> {
        self.list_containers(labels::project_filter(project)).await
    }

    /// The containers, running or not, that pass these list filters, in one call.
    pub(super) async fn list_containers(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<ContainerInfo>, EngineError> {
        let _request = self.request("list_containers");
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.call_error("list containers", e))?;
        Ok(self.container_infos(list))
    }

    /// Listed containers as berth reads them, but for those of the spec's other regions.
    pub(super) fn container_infos(
        &self,
        list: Vec<bollard::models::ContainerSummary>,
    ) -> Vec<ContainerInfo> {
        list.into_iter()
            .map(info)
            .filter(|c| !self.foreign(&c.labels))
            .collect()
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
            let _request = self.request("hold_name");
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
                labels: Some(self.with_region(HashMap::from([
                    (labels::PROJECT.to_owned(), project.to_owned()),
                    (NAME_HOLD_LABEL.to_owned(), "1".to_owned()),
                ]))),
                network_disabled: Some(true),
                ..Default::default()
            };
            let _request = self.request("hold_name");
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

    /// A container's current name, or `None` when it does not exist.
    pub async fn name_of(&self, id: &str) -> Result<Option<String>, EngineError> {
        let _request = self.request("name_of");
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
        let mut body = body;
        body.labels = Some(self.with_region(body.labels.unwrap_or_default()));
        let created = self
            .retrying("create_container", || {
                self.docker
                    .create_container(Some(options.clone()), body.clone())
            })
            .await
            .map_err(|e| self.call_error("create container", e))?;
        Ok(created.id)
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        let mut tries = 0;
        loop {
            let started = self
                .retrying("start", || {
                    self.docker.start_container(
                        id,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                })
                .await;
            match started {
                Err(e) if super::errors::stopped_process_race(&e) && tries < 2 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                r => return r.map_err(|e| self.call_error("start container", e)),
            }
        }
    }

    pub async fn stop(&self, id: &str) -> Result<(), EngineError> {
        let options = StopContainerOptions {
            t: Some(10),
            ..Default::default()
        };
        match self
            .retrying("stop", || {
                self.docker.stop_container(id, Some(options.clone()))
            })
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
            .retrying("remove", || {
                self.docker.remove_container(id, Some(options.clone()))
            })
            .await;
        self.found("remove container", r).map(|_| ())
    }

    pub async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        self.retrying("rename", || {
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
        let _request = self.request("state");
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
            started: st.started_at.as_deref().and_then(crate::clock::parse_utc),
        })
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
