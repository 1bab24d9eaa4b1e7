//! Networks and volumes: listing, creating and removing them, and the containers of other
//! projects that keep one alive.

use std::collections::HashMap;

use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{ListNetworksOptions, ListVolumesOptions};

use super::errors::active_endpoints;
use super::{Engine, EngineError};
use crate::engine::labels;

/// What became of a network berth asked the engine to remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkRemoval {
    /// Removed, or already gone.
    Removed,
    /// Refused: containers are attached to it.
    InUse,
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

impl Engine {
    /// Every network of the project, in one call.
    pub async fn networks(&self, project: &str) -> Result<Vec<ObjectInfo>, EngineError> {
        let _request = self.request("networks");
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
            .filter(|o| !self.foreign(&o.labels))
            .collect())
    }

    /// Every volume of the project, in one call.
    pub async fn volumes(&self, project: &str) -> Result<Vec<ObjectInfo>, EngineError> {
        let _request = self.request("volumes");
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(labels::project_filter(project)),
            }))
            .await
            .map_err(|e| self.call_error("list volumes", e))?;
        Ok(self.volume_infos(list.volumes.unwrap_or_default()))
    }

    /// Listed volumes as berth reads them, but for those of the spec's other regions.
    pub(super) fn volume_infos(&self, list: Vec<bollard::models::Volume>) -> Vec<ObjectInfo> {
        list.into_iter()
            .map(|v| ObjectInfo {
                name: v.name,
                labels: v.labels,
            })
            .filter(|o| !self.foreign(&o.labels))
            .collect()
    }

    /// Whether a network, volume or container of this name exists, and its labels if so.
    pub async fn labels_of(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, EngineError> {
        let _request = self.request("labels_of");
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

    /// A bridge network; `internal`: with no route out of the host (its containers still
    /// reach each other, and the host them).
    pub async fn create_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        internal: bool,
    ) -> Result<(), EngineError> {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(internal),
            labels: Some(self.with_region(labels)),
            ..Default::default()
        };
        self.retrying("create_network", || {
            self.docker.create_network(request.clone())
        })
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
        self.retrying("reconnect_with_alias", || {
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
        self.retrying("reconnect_with_alias", || {
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
        match self
            .retrying("remove_network", || self.docker.remove_network(name))
            .await
        {
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
            labels: Some(self.with_region(labels)),
            ..Default::default()
        };
        self.retrying("create_volume", || {
            self.docker.create_volume(request.clone())
        })
        .await
        .map_err(|e| self.call_error("create volume", e))?;
        Ok(())
    }

    /// Removes a volume; one that is already gone is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let r = self
            .retrying("remove_volume", || {
                self.docker
                    .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            })
            .await;
        self.found("remove volume", r).map(|_| ())
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
}
