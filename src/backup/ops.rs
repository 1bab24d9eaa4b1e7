//! The backups of a spec on this machine ([`Backups`]): the project they belong to (its
//! spec, engines and identity), the backup named in the spec, its store and its lock. What
//! is done with them has a file each: taking a backup ([`super::take`]), restoring one
//! ([`super::restore`]), verifying ([`super::verify`](mod@super::verify)) and pruning
//! ([`super::prune`]); the data itself (store, pipeline, helper containers, putting data
//! back in place) is [`crate::archive`]'s.

use std::path::Path;

use crate::apply::journal::Kind;
use crate::archive::auth::{Authenticity, ManifestKey};
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
    /// The key of `backup_key:`, decrypted the first time it is needed (or why it could
    /// not be: why, and what to do).
    key: std::sync::OnceLock<Result<ManifestKey, (String, String)>>,
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
            key: std::sync::OnceLock::new(),
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

    /// This project's backups of `name` that berth may trust, oldest first (a store may be
    /// shared by projects): with a `backup_key:`, only those whose manifest authenticates
    /// ([`crate::archive::auth`]); the others are [`Backups::unauthenticated`].
    pub fn list(&self, name: &str) -> Result<Vec<Manifest>, OpError> {
        let key = self.manifest_key()?;
        Ok(self
            .listing(name)?
            .into_iter()
            .filter(|m| key.is_none_or(|k| k.check(m) == Authenticity::Authentic))
            .collect())
    }

    /// Every manifest of this project's backups of `name`, authenticated or not.
    pub fn listing(&self, name: &str) -> Result<Vec<Manifest>, OpError> {
        let store = self.store(self.get(name)?)?;
        Ok(store
            .list(name)?
            .into_iter()
            .filter(|m| m.project == self.project.spec.project.value)
            .collect())
    }

    /// The backups of `name` whose manifest does not authenticate under the spec's
    /// `backup_key:` (none without one), each with what was found.
    pub fn unauthenticated(&self, name: &str) -> Result<Vec<(Manifest, Authenticity)>, OpError> {
        let Some(key) = self.manifest_key()? else {
            return Ok(Vec::new());
        };
        Ok(self
            .listing(name)?
            .into_iter()
            .filter_map(|m| match key.check(&m) {
                Authenticity::Authentic => None,
                other => Some((m, other)),
            })
            .collect())
    }

    /// What a manifest's `mac` says under the spec's `backup_key:`; `None` when the spec
    /// has none, or its key cannot be read here (no identity): not checked.
    pub fn authenticity(&self, m: &Manifest) -> Option<Authenticity> {
        self.manifest_key().ok().flatten().map(|k| k.check(m))
    }

    /// The key that authenticates this spec's backups, `None` when the spec names no
    /// `backup_key:`; refused when it cannot be read (no identity, the secret's file
    /// missing or not decrypting, a value shorter than 32 bytes).
    pub(super) fn manifest_key(&self) -> Result<Option<&ManifestKey>, OpError> {
        let Some(secret) = &self.project.spec.backup_key else {
            return Ok(None);
        };
        let what = format!("backup_key `{}`", secret.value);
        match self.key.get_or_init(|| self.read_key(&secret.value)) {
            Ok(key) => Ok(Some(key)),
            Err((why, help)) => Err(OpError::Refused {
                message: format!("{what}: {why}"),
                help: help.clone(),
            }),
        }
    }

    fn read_key(&self, secret: &str) -> Result<ManifestKey, (String, String)> {
        let value = self.secret_value(secret, true)?;
        if value.len() < 32 {
            return Err((
                format!(
                    "its value has {} bytes; a key that authenticates backups needs at least 32",
                    value.len()
                ),
                format!("replace it with a random one: `berth secrets set {secret} --generate`"),
            ));
        }
        Ok(ManifestKey::from_secret(value.expose()))
    }

    /// The value of secret `secret` of the spec, decrypted with this machine's identity;
    /// or why not, and what to do (`generated`: a random value is what it should hold).
    pub(super) fn secret_value(
        &self,
        secret: &str,
        generated: bool,
    ) -> Result<crate::secrets::Plaintext, (String, String)> {
        let make = format!(
            "make it: `berth secrets set {secret}{}`",
            if generated { " --generate" } else { "" }
        );
        let Some(s) = self.project.spec.secrets.get(secret) else {
            return Err((
                "no secret of that name is declared".into(),
                format!("declare it under `secrets:` and {make}"),
            ));
        };
        let Some(identity) = &self.project.identity else {
            return Err((
                "there is no identity on this machine to decrypt it with".into(),
                "run where the identity is (`berth secrets init`), or point `identity:` (or $BERTH_IDENTITY) at it".into(),
            ));
        };
        let path = crate::secrets::files::resolve_secret_path(&self.project.spec_dir, s)
            .map_err(|e| (format!("its file: {e}"), make.clone()))?;
        let ciphertext = std::fs::read(&path)
            .map_err(|e| (format!("reading `{}`: {e}", path.display()), make.clone()))?;
        identity
            .decrypt(&ciphertext)
            .map_err(|e| (e.to_string(), "run `berth secrets check`".to_owned()))
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
