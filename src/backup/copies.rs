//! Off-host copies (`copies: [offsite]`, each naming a store under `stores:`). A backup is
//! written to the host's store and to every copy in the same pass (one compression, one
//! encryption: [`Tee`]); each copy gets the same manifest (and `mac`) once its data is
//! complete, and is read back from where it is, its bytes' hash and size compared with the
//! manifest's (the host's copy of the same bytes was decrypted whole): a copy is reported
//! only once it verifies there. A copy that fails leaves the others, and the
//! host's copy, as they are.
//!
//! A restore reads the host's store. When the backup to restore is not there (the host's
//! disk was lost, or `--from` names a copy), it is fetched from a copy into the host's
//! store first, checked byte for byte against its authenticated manifest ([`Backups::fetch`]).

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::ops::{Backups, failed};
use crate::archive::Manifest;
use crate::archive::auth::Authenticity;
use crate::archive::store::{S3Config, S3Store, SftpStore, Store};
use crate::error::OpError;
use crate::spec::Backup;

/// An off-host store a backup is copied to, opened.
pub struct Copy {
    /// Its name under `stores:`.
    pub name: String,
    pub store: Box<dyn Store + Send + Sync>,
}

/// A copy's backups of a name: those berth may trust, oldest first; and the others, each
/// with what its manifest's `mac` says.
pub type CopyListing = (Vec<Manifest>, Vec<(Manifest, Authenticity)>);

/// What became of one copy of a new backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyOutcome {
    /// The store's name under `stores:`.
    pub store: String,
    /// Where the copy is, once it verified there; or why there is none.
    pub result: Result<String, String>,
    /// Once it verified: what killed backups had left in that store without a manifest,
    /// removed (see each store's `incomplete`).
    pub removed: Vec<crate::archive::store::Incomplete>,
}

/// A copy being written beside the host's: its writer until it fails, and why it did.
pub(super) struct Branch {
    out: Option<Box<dyn Write + Send>>,
    failed: Arc<Mutex<Option<String>>>,
}

/// The host store's writer and the copies' writers, fed the same bytes. A copy's failure
/// is kept (its writer dropped) and never fails the host's backup.
pub(super) struct Tee {
    primary: Box<dyn Write + Send>,
    others: Vec<Branch>,
}

impl Tee {
    fn branch_failed(b: &mut Branch, e: std::io::Error) {
        if let Ok(mut f) = b.failed.lock() {
            f.get_or_insert_with(|| e.to_string());
        }
        b.out = None;
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.primary.write(buf)?;
        for b in &mut self.others {
            if let Some(out) = &mut b.out
                && let Err(e) = out.write_all(&buf[..n])
            {
                Self::branch_failed(b, e);
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.primary.flush()?;
        for b in &mut self.others {
            if let Some(out) = &mut b.out
                && let Err(e) = out.flush()
            {
                Self::branch_failed(b, e);
            }
        }
        Ok(())
    }
}

/// The copies being written for one backup: each store, and its branch's fate.
pub(super) struct Copying {
    copies: Vec<Copy>,
    failed: Vec<Arc<Mutex<Option<String>>>>,
    /// Copies that could not even begin, and why.
    unopened: Vec<CopyOutcome>,
}

impl Copying {
    /// Each copy whose data was written: its manifest written (unverified; completing its
    /// data), its bytes read back from where it is and their SHA-256 and size compared with
    /// the manifest's (a bucket has read each segment back while the backup was made: only
    /// the comparison is left). Those bytes are the ones the host's copy has, which is decrypted and
    /// walked whole meanwhile (on another thread): equal bytes open the same way, so the
    /// copy's read-back need not decrypt them again (`backup verify` does, when asked).
    /// Per copy, in order: why it failed, if it did.
    pub(super) fn check(&self, manifest: &Manifest) -> Vec<Option<String>> {
        self.copies
            .iter()
            .zip(&self.failed)
            .map(|(copy, failed)| {
                if let Some(why) = failed.lock().ok().and_then(|f| f.clone()) {
                    return Some(why);
                }
                let mut m = manifest.clone();
                m.verified = false;
                let store = copy.store.as_ref();
                store
                    .commit(&m)
                    .and_then(|()| crate::archive::check_written(store, &m))
                    .err()
                    .map(|e| e.to_string())
            })
            .collect()
    }

    /// How many copies are being written.
    pub(super) fn len(&self) -> usize {
        self.copies.len()
    }

    /// Removes what each copy began (the backup itself failed).
    pub(super) fn discard(&self, name: &str, id: &str) {
        for c in &self.copies {
            c.store.discard(name, id);
        }
    }
}

impl Backups {
    /// The stores backup `name` is copied to, opened (their keys decrypted); a store
    /// that cannot be opened is an outcome of its own, never a failure of the backup.
    fn open_copies(&self, backup: &Backup) -> (Vec<Copy>, Vec<CopyOutcome>) {
        let mut open = Vec::new();
        let mut unopened = Vec::new();
        for c in &backup.copies {
            match self.open_copy(&c.value) {
                Ok(copy) => open.push(copy),
                Err(e) => unopened.push(CopyOutcome {
                    store: c.value.clone(),
                    result: Err(e.to_string()),
                    removed: Vec::new(),
                }),
            }
        }
        (open, unopened)
    }

    /// Store `name` of `stores:`, opened: its secret access key decrypted here.
    pub fn open_copy(&self, name: &str) -> Result<Copy, OpError> {
        let refused = |why: String, help: String| OpError::Refused {
            message: format!("store `{name}`: {why}"),
            help,
        };
        let Some(spec) = self.project.spec.stores.get(name) else {
            return Err(refused(
                "no store of that name is declared".into(),
                "declare it under `stores:`".into(),
            ));
        };
        let url = &spec.url.value;
        if url.starts_with("sftp://") {
            let store = SftpStore::open(url).map_err(|e| {
                refused(
                    e.to_string(),
                    "check that `ssh` reaches the host without a prompt (a key in the agent or ~/.ssh, the host in known_hosts) and that its SFTP server runs".into(),
                )
            })?;
            return Ok(Copy {
                name: name.to_owned(),
                store: Box::new(store),
            });
        }
        let secret = match &spec.secret_access_key {
            Some(s) => Some(
                self.secret_value(&s.value, false)
                    .map_err(|(why, help)| refused(format!("secret `{}`: {why}", s.value), help))?,
            ),
            None => None,
        };
        let key = match &secret {
            Some(v) => Some(
                std::str::from_utf8(v.expose())
                    .map(|k| k.trim().to_owned())
                    .map_err(|_| {
                        refused(
                            "its secret access key is not text".into(),
                            "set it again: `berth secrets set NAME`".into(),
                        )
                    })?,
            ),
            None => None,
        };
        let config = S3Config {
            url: url.clone(),
            endpoint: spec.endpoint.as_ref().map(|e| e.value.clone()),
            region: spec.region.as_ref().map(|e| e.value.clone()),
            access_key_id: spec.access_key_id.as_ref().map(|e| e.value.clone()),
            secret_access_key: key,
        };
        let store = Box::new(
            S3Store::open(&config)
                .map_err(|e| refused(e.to_string(), "check `stores:` in the spec".into()))?,
        );
        Ok(Copy {
            name: name.to_owned(),
            store,
        })
    }

    /// The host store's writer for a new backup, teed to each copy's (none for a safety
    /// copy, which stays on the host).
    pub(super) fn tee(
        &self,
        backup: &Backup,
        name: &str,
        id: &str,
        primary: Box<dyn Write + Send>,
        safety: bool,
    ) -> (Box<dyn Write + Send>, Copying) {
        let (opened, mut unopened) = if safety {
            (Vec::new(), Vec::new())
        } else {
            self.open_copies(backup)
        };
        let mut copies = Vec::new();
        let mut failed = Vec::new();
        let mut others = Vec::new();
        for copy in opened {
            match copy.store.create(name, id) {
                Ok(out) => {
                    let slot = Arc::new(Mutex::new(None));
                    failed.push(slot.clone());
                    others.push(Branch {
                        out: Some(out),
                        failed: slot,
                    });
                    copies.push(copy);
                }
                Err(e) => unopened.push(CopyOutcome {
                    store: copy.name,
                    result: Err(e.to_string()),
                    removed: Vec::new(),
                }),
            }
        }
        let out: Box<dyn Write + Send> = if others.is_empty() {
            primary
        } else {
            Box::new(Tee { primary, others })
        };
        (
            out,
            Copying {
                copies,
                failed,
                unopened,
            },
        )
    }

    /// Each copy of a backup whose host copy verified, once [`Copying::check`] has checked
    /// it: marked verified there, or (failed) removed. Where each is, or why not.
    pub(super) fn finish_copies(
        &self,
        copying: Copying,
        manifest: &Manifest,
        checks: Vec<Option<String>>,
    ) -> Vec<CopyOutcome> {
        let mut out = copying.unopened;
        for (copy, why) in copying.copies.into_iter().zip(checks) {
            let store = copy.store.as_ref();
            let result = match why {
                Some(why) => Err(why),
                None => {
                    let mut m = manifest.clone();
                    m.verified = true;
                    store
                        .commit(&m)
                        .map(|()| store.locate(&m.name, &m.id))
                        .map_err(|e| e.to_string())
                }
            };
            let mut removed = Vec::new();
            if result.is_err() {
                store.discard(&manifest.name, &manifest.id);
            } else {
                // A backup verifies there now: what killed ones left goes (best effort;
                // the next run tries again).
                for i in store.incomplete(&manifest.name).unwrap_or_default() {
                    if store
                        .remove_incomplete(&manifest.name, &i.id)
                        .unwrap_or(false)
                    {
                        removed.push(i);
                    }
                }
            }
            out.push(CopyOutcome {
                store: copy.name,
                result,
                removed,
            });
        }
        out
    }

    /// This project's backups of `name` in `copy`: those berth may trust (with a
    /// `backup_key:`, those whose manifest authenticates), oldest first, and the others
    /// with what was found.
    pub fn copy_listing(&self, name: &str, copy: &Copy) -> Result<CopyListing, OpError> {
        let key = self.manifest_key()?;
        let mut trusted = Vec::new();
        let mut others = Vec::new();
        for m in copy.store.list(name)? {
            if m.project != self.project.spec.project.value {
                continue;
            }
            match key.map(|k| k.check(&m)) {
                None | Some(Authenticity::Authentic) => trusted.push(m),
                Some(found) => others.push((m, found)),
            }
        }
        Ok((trusted, others))
    }

    /// The retention policy of `name` applied in each of its copies, as in the host's
    /// store: (store, what was decided, or why it could not be).
    pub fn prune_copies(
        &self,
        name: &str,
        dry_run: bool,
    ) -> Vec<(String, Result<super::prune::Pruned, OpError>)> {
        let Ok(backup) = self.get(name) else {
            return Vec::new();
        };
        let Some(policy) = &backup.retention else {
            return Vec::new();
        };
        backup
            .copies
            .iter()
            .map(|c| {
                let pruned = self.open_copy(&c.value).and_then(|copy| {
                    let (list, _) = self.copy_listing(name, &copy)?;
                    let mut pruned =
                        self.prune_policy(name, policy, copy.store.as_ref(), list, dry_run)?;
                    // What a killed backup began there goes once a backup there verifies
                    // (one was read back whole just now).
                    if !pruned.nothing_verifies && !pruned.decisions.is_empty() {
                        for i in copy.store.incomplete(name)? {
                            let delete = dry_run || copy.store.remove_incomplete(name, &i.id)?;
                            pruned.incomplete.push(super::prune::PruneDecision {
                                id: i.id,
                                delete,
                                why: format!(
                                    "incomplete: cut short while it was written ({}), no manifest",
                                    crate::clock::format_time(i.modified)
                                ),
                            });
                        }
                    }
                    Ok(pruned)
                });
                (c.value.clone(), pruned)
            })
            .collect()
    }

    /// Reads back, in each copy of each backup, what `verify` reads back in the host's
    /// store: backup `id`, every one (`all`), or the newest at a trusted time.
    pub(super) fn verify_copies(
        &self,
        name: &str,
        id: Option<&str>,
        all: bool,
        identity: &crate::secrets::age::Identity,
        tally: &mut super::verify::Tally,
        seen: &mut dyn FnMut(super::verify::Checked),
    ) -> Result<(), OpError> {
        use super::verify::Checked;
        for c in &self.get(name)?.copies {
            let label = format!("{name} (store `{}`)", c.value);
            let listed = self
                .open_copy(&c.value)
                .and_then(|copy| self.copy_listing(name, &copy).map(|l| (copy, l)));
            let (copy, (trusted, others)) = match listed {
                Ok(l) => l,
                Err(e) => {
                    tally.checked += 1;
                    tally.bad += 1;
                    seen(Checked::Damaged(crate::archive::BackupError::Store(
                        e.to_string(),
                    )));
                    continue;
                }
            };
            super::verify::tell_unauthenticated(&label, others, id, all, tally, seen);
            let now = crate::clock::now();
            let chosen: Vec<Manifest> = match (id, all) {
                (Some(id), _) => trusted.into_iter().filter(|m| m.id == id).collect(),
                (None, true) => trusted,
                (None, false) => trusted
                    .into_iter()
                    .rev()
                    .find(|m| {
                        crate::archive::retention::untrusted_time(
                            m.created_at,
                            copy.store.modified(name, &m.id),
                            now,
                        )
                        .is_none()
                    })
                    .into_iter()
                    .collect(),
            };
            super::verify::read_back(&label, copy.store.as_ref(), chosen, identity, tally, seen);
        }
        Ok(())
    }

    /// What a restore (or a drill) of `name` reads when the host's store cannot serve it:
    /// with `from`, that copy's backup fetched; without, when the host's store holds no
    /// backup `id` (or, without an id, no verified one at a trusted time), the first copy
    /// that does. The id fetched, if any (said on stderr).
    pub fn fetch_for_restore(
        &self,
        name: &str,
        id: Option<&str>,
        from: Option<&str>,
    ) -> Result<Option<String>, OpError> {
        let backup = self.get(name)?;
        let stores: Vec<String> = match from {
            Some(from) => vec![from.to_owned()],
            None => {
                let here = match id {
                    Some(id) => self.list(name)?.iter().any(|m| m.id == id),
                    None => self
                        .newest_trusted(name, |m| m.verified && !m.safety)?
                        .0
                        .is_some(),
                };
                if here {
                    return Ok(None);
                }
                backup.copies.iter().map(|c| c.value.clone()).collect()
            }
        };
        for store in stores {
            match self.fetch(name, id, &store) {
                Ok(got) => {
                    eprintln!(
                        "backup `{name}`: {got} fetched from store `{store}` into the host's store"
                    );
                    return Ok(Some(got));
                }
                Err(e) if from.is_none() => {
                    eprintln!("backup `{name}`: not fetched from store `{store}`: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        // Nothing found elsewhere: the restore says what the host's store lacks.
        Ok(None)
    }

    /// Backup `id` of `name` (default: the newest verified one at a trusted time there)
    /// fetched from copy `from` into the host's store, unless the host's store holds it
    /// already: checked against its manifest byte for byte, and refused unless that
    /// manifest authenticates. Returns its id.
    pub fn fetch(&self, name: &str, id: Option<&str>, from: &str) -> Result<String, OpError> {
        let backup = self.get(name)?;
        if !backup.copies.iter().any(|c| c.value == from) {
            return Err(failed(
                name,
                format!("`{from}` is not one of its `copies:`"),
                "name a store the backup is copied to",
            ));
        }
        let copy = self.open_copy(from)?;
        let key = self.manifest_key()?;
        let there: Vec<Manifest> = copy
            .store
            .list(name)?
            .into_iter()
            .filter(|m| m.project == self.project.spec.project.value)
            .collect();
        let chosen = match id {
            Some(id) => there.iter().find(|m| m.id == id),
            None => there.iter().rev().find(|m| {
                m.verified
                    && !m.safety
                    && crate::archive::retention::untrusted_time(
                        m.created_at,
                        copy.store.modified(name, &m.id),
                        crate::clock::now(),
                    )
                    .is_none()
                    && key.is_none_or(|k| k.check(m) == Authenticity::Authentic)
            }),
        };
        let Some(manifest) = chosen.cloned() else {
            return Err(failed(
                name,
                match id {
                    Some(id) => format!("store `{from}` holds no backup `{id}`"),
                    None => format!("store `{from}` holds no verified backup at a trusted time"),
                },
                format!("`berth backup list {name}` shows where each backup is"),
            ));
        };
        if let Some(k) = key
            && k.check(&manifest) != Authenticity::Authentic
        {
            let found = k.check(&manifest);
            return Err(failed(
                name,
                format!(
                    "backup `{}` in store `{from}` {}",
                    manifest.id,
                    found.why_not()
                ),
                "berth fetches only backups it can authenticate",
            ));
        }
        let host = self.store(backup)?;
        let _lock = self.lock(&format!("berth backup restore {name} --from {from}"))?;
        if host.list(name)?.iter().any(|m| m.id == manifest.id) {
            // Already here: kept when it is whole, else replaced by the copy.
            if crate::archive::check_stored(&host, &manifest).is_ok() {
                return Ok(manifest.id);
            }
            host.delete(name, &manifest.id)?;
        }
        let mut data = copy.store.open(name, &manifest.id)?;
        let mut out = host.create(name, &manifest.id)?;
        let copied = std::io::copy(&mut data, &mut out).and_then(|_| out.flush());
        drop(out);
        let checked = copied
            .map_err(|e| {
                crate::archive::BackupError::Store(format!(
                    "fetching {}: {e}",
                    copy.store.locate(name, &manifest.id)
                ))
            })
            .and_then(|()| crate::archive::check_stored(&host, &manifest));
        if let Err(e) = checked {
            host.discard(name, &manifest.id);
            return Err(e.into());
        }
        host.commit(&manifest)?;
        Ok(manifest.id)
    }
}
