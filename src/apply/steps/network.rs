//! A network: created (its removal recorded first), or removed at the commit.

use super::super::container::object_name;
use super::super::journal::CommitItem;
use super::super::{ApplyError, Run, Undo};
use crate::plan::Change;

impl Run<'_> {
    pub(super) async fn create_network(
        &self,
        c: &Change,
        region: String,
    ) -> Result<(), ApplyError> {
        let name = object_name(self.project, &c.address.name);
        let labels = self.object_labels(c);
        self.record_undo(Undo::RemoveNetwork {
            region: region.clone(),
            name: name.clone(),
        })?;
        self.engine(&region)
            .create_network(&name, labels, self.options.internal_networks)
            .await?;
        self.done(c, format!("+ {}: created", c.address));
        Ok(())
    }

    /// Removed once every gate has passed (the commit), when nothing needs it any more.
    pub(super) fn delete_network(&self, c: &Change, region: String) {
        let name = object_name(self.project, &c.address.name);
        self.commit
            .borrow_mut()
            .push(CommitItem::Network { region, name });
    }
}
