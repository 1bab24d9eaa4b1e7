//! What is listed when connecting: every network (connecting's one request, which also
//! fingerprints the engine), and, when an observation connects, the project's containers
//! and volumes, asked for at once with the networks: no round trip of their own after
//! connecting, which on a machine shared by several engines is most of what observing a
//! region costs. Taken once, by the observation that follows connecting; any later list
//! asks the engine again.

use bollard::Docker;
use bollard::models::{ContainerSummary, Volume};
use bollard::query_parameters::{ListContainersOptions, ListVolumesOptions};

use super::containers::ContainerInfo;
use super::networks::ObjectInfo;
use super::{Engine, EngineError};
use crate::engine::labels;

/// The longest connecting waits for the lists (an observation's own bound).
const LISTS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the engine listed when connecting: every network (the fingerprint's list), and
/// for an observation the project's containers and volumes.
#[derive(Default)]
pub(super) struct Prefetched {
    pub(super) networks: Option<Vec<ObjectInfo>>,
    pub(super) containers: Option<(String, Vec<ContainerSummary>)>,
    pub(super) volumes: Option<(String, Vec<Volume>)>,
}

/// Lists `project`'s containers (running or not) and volumes, at once: what
/// [`Engine::containers`] and [`Engine::volumes`] would ask. A list that failed is left
/// out: the observation asks for it again and reports what goes wrong then.
pub(super) async fn lists(docker: &Docker, region: &str, project: &str) -> Prefetched {
    let logged = |call| super::Request {
        region,
        call,
        began: std::time::Instant::now(),
    };
    let containers = async {
        let _request = logged("list_containers");
        docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(labels::project_filter(project)),
                ..Default::default()
            }))
            .await
    };
    let volumes = async {
        let _request = logged("volumes");
        docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(labels::project_filter(project)),
            }))
            .await
    };
    // Bounded as an observation's lists are: one that hangs is asked again, and reported,
    // by the observation.
    let both = async { tokio::join!(containers, volumes) };
    let Ok((containers, volumes)) = tokio::time::timeout(LISTS_TIMEOUT, both).await else {
        return Prefetched::default();
    };
    Prefetched {
        containers: containers.ok().map(|c| (project.to_owned(), c)),
        volumes: volumes
            .ok()
            .map(|v| (project.to_owned(), v.volumes.unwrap_or_default())),
        networks: None,
    }
}

impl Engine {
    /// One of the lists made when connecting, taken (never given twice), if it is
    /// `project`'s.
    fn take_listed<T>(
        &self,
        project: &str,
        which: impl FnOnce(&mut Prefetched) -> Option<(String, Vec<T>)>,
    ) -> Option<Vec<T>> {
        let taken = self.prefetched.lock().map(|mut p| which(&mut p)).ok()??;
        (taken.0 == project).then_some(taken.1)
    }

    /// The project's networks from the list made when connecting, the first time (the
    /// observation that follows connecting: no second call); afterwards as
    /// [`Engine::networks`].
    pub async fn networks_listed(&self, project: &str) -> Result<Vec<ObjectInfo>, EngineError> {
        let taken = self.prefetched.lock().map(|mut p| p.networks.take());
        let Some(all) = taken.ok().flatten() else {
            return self.networks(project).await;
        };
        Ok(all
            .into_iter()
            .filter(|o| o.labels.get(labels::PROJECT).is_some_and(|p| p == project))
            .filter(|o| !self.foreign(&o.labels))
            .collect())
    }

    /// The project's containers from the list made when connecting, the first time;
    /// afterwards (or for another project) as [`Engine::containers`].
    pub async fn containers_listed(
        &self,
        project: &str,
    ) -> Result<Vec<ContainerInfo>, EngineError> {
        match self.take_listed(project, |p| p.containers.take()) {
            Some(list) => Ok(self.container_infos(list)),
            None => self.containers(project).await,
        }
    }

    /// The project's volumes from the list made when connecting, the first time;
    /// afterwards (or for another project) as [`Engine::volumes`].
    pub async fn volumes_listed(&self, project: &str) -> Result<Vec<ObjectInfo>, EngineError> {
        match self.take_listed(project, |p| p.volumes.take()) {
            Some(list) => Ok(self.volume_infos(list)),
            None => self.volumes(project).await,
        }
    }
}
