//! The do side of apply, after oxidecomputer/steno's actions: one step per kind of change,
//! each recording its [`Undo`](super::Undo) through the run (its context,
//! `Run::record_undo`, journaled) before it mutates, and returning a typed error.
//!
//! - [`network`], [`volume`]: created (their removal recorded first), or removed at the commit;
//! - [`container`]: a pod created, replaced (blue-green or recreated), healed or deleted;
//! - [`job`]: a job run (again), its exit status its gate;
//! - [`secret`]: a secret file re-encrypted or its mode healed;
//! - [`backup_units`]: a backup's store and its schedule's units set up or removed.

pub mod backup_units;
pub mod container;
pub mod job;
pub mod network;
pub mod proxy;
pub mod secret;
pub mod volume;

pub use backup_units::UnitsError;
pub use secret::{DeliverError, HealError};

use super::{ApplyError, Run};
use crate::engine::labels;
use crate::graph::{Kind, Resource};
use crate::plan::{Action, Change};

impl Run<'_> {
    /// Carries out one change: the step of its kind and action.
    pub(super) async fn step_inner(&self, c: &Change) -> Result<(), ApplyError> {
        let region = self.region_of(c);
        match (c.address.kind, c.action) {
            (Kind::Network, Action::Create) => self.create_network(c, region).await,
            (Kind::Volume, Action::Create) => self.create_volume(c, region).await,
            (Kind::Network, Action::Delete) => {
                self.delete_network(c, region);
                Ok(())
            }
            (Kind::Volume, Action::Delete) => {
                self.delete_volume(c, region);
                Ok(())
            }
            (Kind::Pod, Action::Create) => self.create_pod(c, region).await,
            (Kind::Pod, Action::Replace) => self.replace_pod(c, region).await,
            (Kind::Pod, Action::Heal) => self.heal_pod(c, region).await,
            (Kind::Pod | Kind::Job, Action::Delete) => self.delete_pod(c, region).await,
            (Kind::Job, Action::Create | Action::Replace | Action::Heal) => {
                self.run_job(c, region).await
            }
            (Kind::Proxy, Action::Create) => self.create_proxy(c, region).await,
            (Kind::Proxy, Action::Update) => self.update_proxy(c, region).await,
            (Kind::Proxy, Action::Replace) => self.replace_proxy(c, region).await,
            (Kind::Proxy, Action::Heal) => self.heal_proxy(c, region).await,
            (Kind::Proxy, Action::Delete) => self.delete_proxy(c, region).await,
            (Kind::Backup, Action::Delete) => self.remove_backup(c),
            (Kind::Backup, Action::Create | Action::Heal | Action::Update) => self.set_up_backup(c),
            (Kind::Secret, Action::Heal) => self.heal_secret(c),
            // Not observed (rate limits, backups) or refused by the pre-flight: nothing to
            // do here.
            _ => Ok(()),
        }
    }

    /// Creates the container from the exact image the pre-flight found (its id, not the
    /// tag, which can move between the two), and records it (`io.berth.image`). As the
    /// engine lists containers, one made from a tag costs it a read of that image's
    /// config for every list; one made from an id does not (`docker ps` shows the short
    /// id; `berth status` the tag).
    async fn label_image(
        &self,
        region: &str,
        body: &mut bollard::models::ContainerCreateBody,
    ) -> Result<(), ApplyError> {
        let image = body.image.as_deref().unwrap_or_default();
        let found = (self.image_ids.borrow())
            .get(&(region.to_owned(), image.to_owned()))
            .cloned();
        let image_id = match found {
            Some(id) => id,
            None => self.engine(region).image_id(image).await?,
        };
        body.labels
            .get_or_insert_with(Default::default)
            .insert(labels::IMAGE.to_owned(), image_id.clone());
        body.image = Some(image_id);
        Ok(())
    }

    /// The labels of a network or volume as planned.
    fn object_labels(&self, c: &Change) -> std::collections::HashMap<String, String> {
        let resource = self.desired(c).cloned().unwrap_or_else(|| Resource {
            address: c.address.clone(),
            attrs: Default::default(),
            depends_on: Vec::new(),
        });
        labels::encode(self.project, &resource, self.revision)
    }
}
