//! A secret file healed: re-encrypted to the spec's recipients, or given mode 0600, its
//! previous bytes, mode and record recorded first. And a pod's secrets delivered into its
//! container (files in a memory-backed volume on its engine, mounted at `/run/secrets`,
//! or env), or refilled.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::super::{ApplyError, Run, Undo};
use crate::engine::docker::VolumeFile;
use crate::engine::secrets;
use crate::plan::Change;
use crate::secrets::age::AgeError;
use crate::secrets::{delivery, files};

/// Why a secret file could not be healed.
#[derive(Debug, thiserror::Error)]
pub enum HealError {
    /// Re-encrypting needs the value, and there is no identity to decrypt it.
    #[error("there is no identity to decrypt it with")]
    NoIdentity,
    #[error("{0}")]
    Decrypt(AgeError),
    #[error("{0}")]
    Encrypt(AgeError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot change the mode of {}: {source}", path.display())]
    Mode {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Its undo could not be recorded (the journal), so nothing was changed.
    #[error("{0}")]
    Undo(Box<ApplyError>),
}

/// Why a pod's secrets could not be delivered into its container.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("there is no identity to decrypt its secrets with")]
    NoIdentity,
    #[error("the file of secret `{name}` could not be read")]
    Unreadable { name: String },
    #[error("secret `{name}`: {source}")]
    Decrypt { name: String, source: AgeError },
    /// The owner of the files is a user name, that berth cannot map to numbers.
    #[error(
        "its secrets must be owned by its user `{user}`, and berth needs that user as numbers: give the pod `user: UID:GID`"
    )]
    UserByName { user: String },
    /// No keeper can hold a secrets volume on the pod's engine.
    #[error("{0}")]
    Keeper(String),
}

impl Run<'_> {
    pub(super) fn heal_secret(&self, c: &Change) -> Result<(), ApplyError> {
        let what =
            self.heal_secret_file(&c.address.name)
                .map_err(|reason| ApplyError::SecretFile {
                    address: c.address.to_string(),
                    reason,
                })?;
        self.done(c, format!("! {}: {what}", c.address));
        Ok(())
    }

    /// Re-encrypts a secret file to the spec's recipients, or gives it mode 0600; the
    /// previous bytes, mode and record go on the undo stack first. Says what it did.
    fn heal_secret_file(&self, name: &str) -> Result<String, HealError> {
        let Some(facts) = self.secret_files.borrow().get(name).cloned() else {
            return Ok("nothing to do".into());
        };
        if facts.stale_recipients() {
            let identity = self
                .secrets
                .identity
                .as_ref()
                .ok_or(HealError::NoIdentity)?;
            let value = identity
                .decrypt(&facts.ciphertext)
                .map_err(HealError::Decrypt)?;
            let armor = crate::secrets::age::is_armored(&facts.ciphertext);
            let ciphertext = crate::secrets::age::encrypt(&facts.wanted, &value, armor)
                .map_err(HealError::Encrypt)?;
            self.record_undo(Undo::RestoreFile {
                path: facts.path.clone(),
                bytes: crate::encode::hex(&facts.ciphertext),
                mode: facts.mode,
                record: std::fs::read(files::record_path(&facts.path))
                    .ok()
                    .map(|r| crate::encode::hex(&r)),
            })
            .map_err(|e| HealError::Undo(Box::new(e)))?;
            files::write_secret(&facts.path, &ciphertext, &facts.wanted).map_err(|source| {
                HealError::Write {
                    path: facts.path.clone(),
                    source,
                }
            })?;
            let fingerprint = crate::secrets::plaintext::fingerprint(&ciphertext);
            if let Some(f) = self.secret_files.borrow_mut().get_mut(name) {
                f.ciphertext = ciphertext;
                f.fingerprint = fingerprint.clone();
                f.recorded = Some(f.wanted.clone());
                f.mode = files::FILE_MODE;
            }
            return Ok(format!(
                "re-encrypted to {} recipient(s) ({fingerprint})",
                facts.wanted.len()
            ));
        }
        if facts.mode != files::FILE_MODE {
            self.record_undo(Undo::RestoreMode {
                path: facts.path.clone(),
                mode: facts.mode,
            })
            .map_err(|e| HealError::Undo(Box::new(e)))?;
            crate::fsutil::set_mode(&facts.path, files::FILE_MODE).map_err(|source| {
                HealError::Mode {
                    path: facts.path.clone(),
                    source,
                }
            })?;
            if let Some(f) = self.secret_files.borrow_mut().get_mut(name) {
                f.mode = files::FILE_MODE;
            }
            return Ok(format!("mode {:04o} -> 0600", facts.mode));
        }
        Ok("nothing to do".into())
    }

    /// The values of the secrets a pod consumes, decrypted from the files as they are now
    /// (after any re-encryption in this apply), with how each is delivered.
    fn secret_values(
        &self,
        c: &Change,
        pod: &crate::spec::Pod,
    ) -> Result<Vec<(String, crate::secrets::Plaintext, Delivery)>, ApplyError> {
        let mut out = Vec::new();
        if pod.secrets.is_empty() {
            return Ok(out);
        }
        let names: Vec<&str> = pod.secrets.iter().map(|s| s.value.name()).collect();
        let values = self.decrypt_named(c, &names)?;
        for (s, (name, value)) in pod.secrets.iter().zip(values) {
            let how = match s.value.env() {
                Some(var) => Delivery::Env(var.to_owned()),
                None => Delivery::File(s.value.mode().and_then(|m| m.get()).unwrap_or(0o400)),
            };
            out.push((name, value, how));
        }
        Ok(out)
    }

    /// The secrets named, decrypted from their files as they are now (after any
    /// re-encryption in this apply), in the order given.
    pub(super) fn decrypt_named(
        &self,
        c: &Change,
        names: &[&str],
    ) -> Result<Vec<(String, crate::secrets::Plaintext)>, ApplyError> {
        let fail = |reason: DeliverError| ApplyError::Secret {
            address: c.address.to_string(),
            reason,
        };
        let mut out = Vec::new();
        if names.is_empty() {
            return Ok(out);
        }
        let identity = self
            .secrets
            .identity
            .as_ref()
            .ok_or_else(|| fail(DeliverError::NoIdentity))?;
        let files = self.secret_files.borrow();
        for name in names {
            let f = files.get(*name).ok_or_else(|| {
                fail(DeliverError::Unreadable {
                    name: (*name).to_owned(),
                })
            })?;
            let value = identity.decrypt(&f.ciphertext).map_err(|source| {
                fail(DeliverError::Decrypt {
                    name: (*name).to_owned(),
                    source,
                })
            })?;
            out.push(((*name).to_owned(), value));
        }
        Ok(out)
    }

    /// Puts a pod's secrets into its create request for the container `container`: env
    /// variables where the spec asks for them, files in a fresh memory-backed volume on the
    /// pod's engine (held by its keeper, filled through the archive API) mounted read-only
    /// at `/run/secrets`. The volume's and keeper's removal is on the undo stack before
    /// either is created (and before the container's).
    pub(super) async fn deliver(
        &self,
        c: &Change,
        region: &str,
        pod: &crate::spec::Pod,
        container: &str,
        body: &mut bollard::models::ContainerCreateBody,
    ) -> Result<(), ApplyError> {
        let values = self.secret_values(c, pod)?;
        if values.is_empty() {
            return Ok(());
        }
        let mut files = Vec::new();
        for (name, value, how) in &values {
            match how {
                Delivery::Env(var) => {
                    let text = String::from_utf8_lossy(value.expose()).into_owned();
                    body.env
                        .get_or_insert_with(Vec::new)
                        .push(format!("{var}={text}"));
                }
                Delivery::File(mode) => files.push(VolumeFile {
                    name,
                    bytes: value.expose(),
                    mode: *mode,
                }),
            }
        }
        if files.is_empty() {
            return Ok(());
        }
        let image = body.image.clone().unwrap_or_default();
        let owner = self.owner(c, region, pod, &image).await?;
        let fingerprints: BTreeMap<String, String> = {
            let known = self.secret_files.borrow();
            files
                .iter()
                .filter_map(|f| {
                    known
                        .get(f.name)
                        .map(|k| (f.name.to_owned(), k.fingerprint.clone()))
                })
                .collect()
        };
        let volume = self
            .secrets_volume(c, region, container, &files, owner, &fingerprints)
            .await?;
        let host = body.host_config.get_or_insert_with(Default::default);
        host.mounts
            .get_or_insert_with(Vec::new)
            .push(crate::engine::docker::secrets_mount(
                &volume,
                crate::spec::SECRETS_MOUNT_POINT,
                true,
            ));
        Ok(())
    }

    /// A fresh memory-backed volume for the container `container` of `c`, held by its
    /// started keeper and holding `files` owned by `owner`; labelled with `fingerprints`
    /// (of the ciphertexts). Its and its keeper's removal is on the undo stack before
    /// either is made. Returns its name.
    pub(in crate::apply) async fn secrets_volume(
        &self,
        c: &Change,
        region: &str,
        container: &str,
        files: &[VolumeFile<'_>],
        owner: (u32, u32),
        fingerprints: &BTreeMap<String, String>,
    ) -> Result<String, ApplyError> {
        let engine = self.engine(region);
        let keeper_image = engine
            .keeper_image()
            .await
            .map_err(|e| self.keeper_error(c, e))?;
        let volume = secrets::volume_name(container);
        let mut address = c.address.clone();
        address.region = None;
        self.record_undo(Undo::RemoveSecretsVolume {
            region: region.to_owned(),
            volume: volume.clone(),
        })?;
        engine
            .create_secrets_volume(
                &volume,
                secrets::volume_labels(self.project, region, &address.to_string(), fingerprints),
                owner,
                volume_size(files),
            )
            .await?;
        self.hold_and_fill(region, &keeper_image, &volume, files, owner, None)
            .await?;
        Ok(volume)
    }

    /// The secrets volume the container `id` mounts, if any.
    pub(in crate::apply) async fn secrets_volume_of(
        &self,
        region: &str,
        id: &str,
    ) -> Result<Option<String>, ApplyError> {
        let engine = self.engine(region);
        let (containers, volumes) = tokio::try_join!(
            engine.containers(self.project),
            engine.volumes(self.project)
        )?;
        Ok(containers
            .iter()
            .find(|x| x.id == id)
            .and_then(|x| secrets::volume_of(x, &volumes))
            .map(|v| v.name.clone()))
    }

    /// Puts `files` again into the secrets volume the container `id` mounts, through its
    /// keeper: started again if it stopped (an engine restart emptied the volume), made
    /// again when it is gone. A container without one is left alone. The container itself
    /// is stopped, or holds the volume mounted while its keeper runs.
    pub(in crate::apply) async fn refill_volume(
        &self,
        c: &Change,
        region: &str,
        id: &str,
        files: &[VolumeFile<'_>],
        owner: (u32, u32),
    ) -> Result<(), ApplyError> {
        let engine = self.engine(region);
        let (containers, volumes) = tokio::try_join!(
            engine.containers(self.project),
            engine.volumes(self.project)
        )?;
        let Some(volume) = containers
            .iter()
            .find(|x| x.id == id)
            .and_then(|x| secrets::volume_of(x, &volumes))
        else {
            return Ok(()); // nothing was delivered as files
        };
        let keeper = containers
            .iter()
            .find(|x| secrets::kept_by(x) == Some(volume.name.as_str()));
        // A keeper gone (removed by hand) is made again: the container needs one for as
        // long as it lives, so it is no change to undo; the sweep removes it with it.
        let image = match keeper {
            Some(_) => String::new(),
            None => engine
                .keeper_image()
                .await
                .map_err(|e| self.keeper_error(c, e))?,
        };
        self.hold_and_fill(
            region,
            &image,
            &volume.name,
            files,
            owner,
            keeper.map(|k| k.id.as_str()),
        )
        .await
    }

    /// Starts the keeper of `volume` (made from `image` first when `existing` is none) and
    /// puts `files` into the volume through it.
    async fn hold_and_fill(
        &self,
        region: &str,
        image: &str,
        volume: &str,
        files: &[VolumeFile<'_>],
        owner: (u32, u32),
        existing: Option<&str>,
    ) -> Result<(), ApplyError> {
        let engine = self.engine(region);
        let keeper = match existing {
            Some(id) => id.to_owned(),
            None => {
                engine
                    .create_keeper(
                        &secrets::keeper_name(volume),
                        image,
                        volume,
                        secrets::keeper_labels(self.project, region, volume),
                    )
                    .await?
            }
        };
        engine.start(&keeper).await?;
        engine.fill_secrets_volume(&keeper, files, owner).await?;
        Ok(())
    }

    fn keeper_error(&self, c: &Change, e: crate::engine::docker::KeeperError) -> ApplyError {
        match e {
            crate::engine::docker::KeeperError::Engine(e) => ApplyError::Engine(e),
            other => ApplyError::Secret {
                address: c.address.to_string(),
                reason: DeliverError::Keeper(other.to_string()),
            },
        }
    }

    /// Who a pod's secret files belong to: its `user:`, else its image's `USER`, as numbers.
    pub(super) async fn owner(
        &self,
        c: &Change,
        region: &str,
        pod: &crate::spec::Pod,
        image: &str,
    ) -> Result<(u32, u32), ApplyError> {
        let user = match &pod.user {
            Some(u) => u.clone(),
            None => self.engine(region).image_user(image).await?,
        };
        delivery::numeric_user(&user).ok_or_else(|| ApplyError::Secret {
            address: c.address.to_string(),
            reason: DeliverError::UserByName { user: user.clone() },
        })
    }

    /// Puts a pod's secret files again into the secrets volume its container `id` mounts
    /// (after an engine restart emptied it: its keeper no longer runs), the container
    /// stopped. The keeper is started again, or made again when it is gone; a volume that
    /// is not one of berth's is never written to.
    pub(super) async fn refill(
        &self,
        c: &Change,
        region: &str,
        pod: &crate::spec::Pod,
        id: &str,
        owner: (u32, u32),
    ) -> Result<(), ApplyError> {
        let values = self.secret_values(c, pod)?;
        let files: Vec<VolumeFile> = values
            .iter()
            .filter_map(|(name, value, how)| match how {
                Delivery::File(mode) => Some(VolumeFile {
                    name,
                    bytes: value.expose(),
                    mode: *mode,
                }),
                Delivery::Env(_) => None,
            })
            .collect();
        self.refill_volume(c, region, id, &files, owner).await
    }
}

/// A secrets volume's size: a page or more per file, and room to spare.
fn volume_size(files: &[VolumeFile<'_>]) -> u64 {
    let pages: u64 = files
        .iter()
        .map(|f| (f.bytes.len() as u64).div_ceil(4096).max(1))
        .sum();
    (pages + 16) * 4096
}

/// How a secret reaches a container.
enum Delivery {
    /// A file under `/run/secrets` with this mode.
    File(u32),
    /// An environment variable of this name (the spec opted in).
    Env(String),
}

/// Removes the decrypted secrets of containers that no longer exist (replaced, deleted,
/// rolled back): they live only as long as a container mounts them. On every engine, the
/// secrets volumes (of pods, of the proxy) no container mounts, with their keepers; on
/// this machine, the tmpfs directories an earlier berth made that no container of a local
/// engine bind-mounts any more.
pub async fn sweep_deliveries(
    engines: &std::collections::HashMap<String, crate::engine::Engine>,
    project: &str,
) {
    for engine in engines.values() {
        // Best effort: what is left is swept by the next apply, rollback or recover.
        let _ = crate::engine::secrets::sweep(engine, project).await;
    }
    // The directories an earlier berth made on this machine are mounted by containers of
    // local engines: unless every region is connected (`--region` leaves some out), one
    // still in use may not be seen, so none is removed.
    let every_region = engines
        .values()
        .all(|e| e.other_regions().iter().all(|r| engines.contains_key(r)));
    if !every_region {
        return;
    }
    let Ok(root) = crate::secrets::delivery::check_root() else {
        return;
    };
    if !root.join(project).is_dir() {
        return;
    }
    let mut keep = std::collections::HashSet::new();
    for engine in engines.values().filter(|e| e.is_local()) {
        match engine.containers(project).await {
            Ok(list) => keep.extend(
                list.into_iter()
                    .flat_map(|c| c.binds)
                    .map(|(source, _)| std::path::PathBuf::from(source)),
            ),
            // Without the list, nothing can be told unused: keep everything.
            Err(_) => return,
        }
    }
    crate::secrets::delivery::sweep(project, &keep);
    // A project with no container holding secrets leaves no directory behind (a destroy,
    // say): removing a directory fails unless it is empty, and the next delivery makes it.
    let _ = std::fs::remove_dir(root.join(project));
}
