//! A volume: created (its removal recorded first), or removed at the commit when
//! `--delete-volumes` says so (kept with its data otherwise).

use super::super::container::object_name;
use super::super::journal::CommitItem;
use super::super::{ApplyError, Run, Status, Undo};
use crate::plan::Change;

impl Run<'_> {
    pub(super) async fn create_volume(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        let name = object_name(self.project, &c.address.name);
        let labels = self.object_labels(c);
        self.record_undo(Undo::RemoveVolume {
            region: region.clone(),
            name: name.clone(),
        })?;
        self.engine(&region).create_volume(&name, labels).await?;
        self.done(c, format!("+ {}: created", c.address));
        Ok(())
    }

    /// Removed once every gate has passed (the commit) with `--delete-volumes`; kept with
    /// its data otherwise.
    pub(super) fn delete_volume(&self, c: &Change, region: String) {
        let name = object_name(self.project, &c.address.name);
        if self.options.delete_volumes {
            self.commit
                .borrow_mut()
                .push(CommitItem::Volume { region, name });
        } else {
            let address = c.address.to_string();
            self.kept_volumes.borrow_mut().push(address.clone());
            self.event(
                Some(&c.address),
                Status::Kept,
                format!("  {address}: kept with its data (--delete-volumes removes it)"),
            );
        }
    }
}
