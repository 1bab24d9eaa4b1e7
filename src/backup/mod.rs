//! Encrypted, verified backups, orchestrated: the backups of a spec ([`ops::Backups`], on
//! a [`crate::project::Project`]) are taken ([`take`]), restored ([`restore`]), verified
//! ([`verify`](mod@verify)) and pruned ([`prune`]) under the project's lock and journal.
//! What a backup is and how its data moves (manifest, pipeline, store, retention, timers,
//! putting data back) is the layer below, [`crate::archive`].

pub mod copies;
pub mod drill;
pub mod ops;
pub mod prune;
pub mod restore;
pub mod take;
pub mod verify;
