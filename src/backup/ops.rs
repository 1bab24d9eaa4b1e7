//! The backups of a spec on this machine ([`Backups`]): the project they belong to (its
//! spec, engines and identity), the backup named in the spec, its store and its lock. What
//! is done with them has a file each: taking a backup ([`super::take`]), restoring one
//! ([`super::restore`]), verifying ([`super::verify`](mod@super::verify)) and pruning
//! ([`super::prune`]); the data itself (store, pipeline, helper containers, putting data
//! back in place) is [`crate::archive`]'s.

use std::path::Path;

use crate::apply::journal::Kind;
use crate::archive::store::{LocalStore, Store};
use crate::archive::{BackupError, Manifest};
use crate::engine::Engine;
use crate::error::OpError;
use crate::project::Project;
use crate::secrets::age::Identity;
use crate::spec::Backup;

/// A spec's backups on this machine: its project (spec, engines, identity) and what is
/// done with them.
pub struct Backups {
    pub project: Project,
}

/// A backup that failed: why, and what to do.
pub(super) fn failed(name: &str, why: impl Into<String>, help: impl Into<String>) -> OpError {
    OpError::Backup(BackupError::Failed {
        name: name.to_owned(),
        why: why.into(),
        help: help.into(),
    })
}

impl Backups {
    /// The project, connected to the engines of the regions the backups `names` read
    /// ([`crate::spec::Spec::backup_region`]; every backup's with `None`; none for no names:
    /// listing, verifying and pruning read only the stores), so that a region that is down
    /// stops only its own backups.
    pub fn open(
        path: &Path,
        state_dir: Option<&Path>,
        names: Option<&[String]>,
    ) -> Result<Backups, OpError> {
        let regions = |spec: &crate::spec::Spec| {
            let mut regions: Vec<String> = spec
                .backups
                .iter()
                .filter(|b| names.is_none_or(|n| n.contains(&b.name.value)))
                .map(|b| spec.backup_region(&b.item).to_owned())
                .collect();
            regions.sort();
            regions.dedup();
            Some(regions)
        };
        Ok(Backups {
            project: Project::open_regions(path, state_dir, regions)?,
        })
    }

    /// The project's lock for `command`, waiting (ten minutes at most) for an apply or a
    /// restore of the project to finish: a scheduled backup must not save a volume halfway
    /// through a restore, nor a prune delete under one.
    pub fn lock(&self, command: &str) -> Result<crate::state::lock::Lock, OpError> {
        Ok(crate::state::lock::acquire(
            &self.project.state,
            self.project.name(),
            command,
            Some(std::time::Duration::from_secs(600)),
        )?)
    }

    /// Refuses while a journal of one of these kinds is unfinished (`berth recover`
    /// first): a restore waits for no apply or restore; a backup for no restore (the
    /// volume may be empty or half-restored until then).
    pub(super) fn refuse_if_interrupted(&self, kinds: &[Kind]) -> Result<(), OpError> {
        for kind in kinds {
            if let Some(m) = crate::apply::journal::read_kind(&self.project.state, *kind)? {
                return Err(OpError::Interrupted {
                    project: self.project.name().to_owned(),
                    detail: crate::error::interrupted_detail(&m),
                });
            }
        }
        Ok(())
    }

    /// Removes the helper containers a killed backup or restore left (under the lock).
    pub fn sweep_helpers(&self) -> Result<(), OpError> {
        let project = self.project.spec.project.value.as_str();
        self.project.runtime.block_on(async {
            for engine in self.project.engines.values() {
                crate::archive::helpers::sweep_helpers(engine, project).await?;
            }
            Ok::<_, OpError>(())
        })
    }

    /// The identity that decrypts backups, or why there is none.
    pub(super) fn identity(&self, name: &str) -> Result<&Identity, OpError> {
        self.project.identity.as_ref().ok_or_else(|| {
            failed(
                name,
                "there is no identity on this machine to decrypt it with",
                "run where the identity is (`berth secrets init`), or point `identity:` (or $BERTH_IDENTITY) at it",
            )
        })
    }

    /// The backup named `name` in the spec.
    pub fn get(&self, name: &str) -> Result<&Backup, OpError> {
        self.project.spec.backups.get(name).ok_or_else(|| {
            let names: Vec<&str> = self
                .project
                .spec
                .backups
                .iter()
                .map(|b| b.name.value.as_str())
                .collect();
            failed(
                name,
                "the spec has no such backup",
                crate::diag::hint_for(
                    name,
                    &names,
                    "declare it under `backups:`",
                    "declare it under `backups:`",
                ),
            )
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.project
            .spec
            .backups
            .iter()
            .map(|b| b.name.value.clone())
            .collect()
    }

    pub fn store(&self, backup: &Backup) -> Result<LocalStore, OpError> {
        let root = self
            .project
            .spec_dir
            .join(crate::fsutil::expand_home(&backup.store.value));
        Ok(LocalStore::open(&root)?)
    }

    pub(super) fn recipients(&self, backup: &Backup) -> Vec<String> {
        crate::secrets::files::recipients_for(
            &self.project.spec,
            backup.recipients.as_deref(),
            self.project.identity.as_ref(),
        )
    }

    /// The region whose engine holds backup `name`'s pod or volume
    /// ([`crate::spec::Spec::backup_region`]).
    pub(super) fn region(&self, name: &str) -> Result<String, OpError> {
        let backup = self.get(name)?;
        Ok(self.project.spec.backup_region(backup).to_owned())
    }

    /// The engine of backup `name`'s region.
    pub(super) fn engine(&self, name: &str) -> Result<&Engine, OpError> {
        let region = self.region(name)?;
        self.project
            .engines
            .get(&region)
            .ok_or_else(|| OpError::Refused {
                message: format!("region `{region}` is not connected"),
                help: "this is a bug in berth: please report it".into(),
            })
    }

    /// This project's backups of `name`, oldest first (a store may be shared by projects).
    pub fn list(&self, name: &str) -> Result<Vec<Manifest>, OpError> {
        let store = self.store(self.get(name)?)?;
        Ok(store
            .list(name)?
            .into_iter()
            .filter(|m| m.project == self.project.spec.project.value)
            .collect())
    }

    /// The newest backup of `name` that `eligible` accepts and whose time is trusted (as
    /// for retention: [`crate::archive::retention::untrusted_time`]), and the newer eligible ones
    /// passed over for their time, each with why. A manifest's word alone (a date in 2100,
    /// or far from when its data was written) never makes a backup the default.
    pub fn newest_trusted(
        &self,
        name: &str,
        eligible: impl Fn(&Manifest) -> bool,
    ) -> Result<(Option<Manifest>, Passed), OpError> {
        let store = self.store(self.get(name)?)?;
        let now = crate::clock::now();
        let mut skipped = Vec::new();
        for m in self.list(name)?.into_iter().rev().filter(|m| eligible(m)) {
            match crate::archive::retention::untrusted_time(
                m.created_at,
                store.modified(name, &m.id),
                now,
            ) {
                Some(why) => skipped.push((m.id, why)),
                None => return Ok((Some(m), skipped)),
            }
        }
        Ok((None, skipped))
    }
}

/// Backups passed over as a default, each with why (id, reason).
pub type Passed = Vec<(String, String)>;
