//! `berth backup verify`: which backups are read back whole (one id, all of them, or the
//! newest of each name whose time is trusted), and what each read-back found, told as it
//! is found. Reading one back is [`super::verify`].

use super::ops::Backups;
use crate::archive::auth::Authenticity;
use crate::archive::store::Store;
use crate::archive::{BackupError, Verified};
use crate::error::OpError;

/// What one read-back (or a look at the store) found.
pub enum Checked {
    /// A manifest that does not parse (looked for with `--all`): counted as damaged.
    DamagedManifest {
        name: String,
        file: String,
        why: String,
    },
    /// A newer backup passed over as the default, for its time.
    PassedOver {
        name: String,
        id: String,
        why: String,
    },
    /// Read back whole: it matches its manifest.
    Sound {
        name: String,
        id: String,
        verified: Verified,
    },
    /// Read back, it does not match its manifest (or could not be read).
    Damaged(BackupError),
    /// Its manifest does not authenticate under the spec's `backup_key`: never read back,
    /// never restored. `counted`: a failure of this verify (a forged `mac` always; one
    /// with none when named, or with `--all`); otherwise told and passed over.
    Unauthenticated {
        name: String,
        id: String,
        found: Authenticity,
        counted: bool,
    },
}

/// How many backups were read back, and how many of them are damaged.
pub struct Tally {
    pub checked: usize,
    pub bad: usize,
}

impl Backups {
    /// Reads back backup `id`, every backup (`all`), or by default the newest of each name
    /// whose time is trusted (as `restore` and `prune` trust times), telling `seen` what
    /// each read-back found as it goes. Refused without an identity to decrypt with, and
    /// when there was nothing to read back.
    pub fn verify_stored(
        &self,
        id: Option<&str>,
        all: bool,
        seen: &mut dyn FnMut(Checked),
    ) -> Result<Tally, OpError> {
        let Some(identity) = &self.project.identity else {
            return Err(OpError::Refused {
                message: "there is no identity on this machine to decrypt backups with".into(),
                help: "run where the identity is, or point `identity:` (or $BERTH_IDENTITY) at it"
                    .into(),
            });
        };
        let mut tally = Tally { checked: 0, bad: 0 };
        for name in self.names() {
            let store = self.store(self.get(&name)?)?;
            if id.is_none() && all {
                for (file, why) in store.damaged(&name) {
                    tally.checked += 1;
                    tally.bad += 1;
                    seen(Checked::DamagedManifest {
                        name: name.clone(),
                        file,
                        why,
                    });
                }
            }
            tell_unauthenticated(
                &name,
                self.unauthenticated(&name)?,
                id,
                all,
                &mut tally,
                seen,
            );
            let chosen: Vec<_> = match (id, all) {
                (Some(id), _) => self
                    .list(&name)?
                    .into_iter()
                    .filter(|m| m.id == id)
                    .collect(),
                (None, true) => self.list(&name)?,
                (None, false) => {
                    let (found, skipped) = self.newest_trusted(&name, |_| true)?;
                    for (id, why) in skipped {
                        seen(Checked::PassedOver {
                            name: name.clone(),
                            id,
                            why,
                        });
                    }
                    found.into_iter().collect()
                }
            };
            read_back(&name, &store, chosen, identity, &mut tally, seen);
            // Each copy off the host, read back where it is.
            self.verify_copies(&name, id, all, identity, &mut tally, seen)?;
        }
        if tally.checked == 0 {
            return Err(OpError::Refused {
                message: match id {
                    Some(id) => format!("no backup has the id `{id}`"),
                    None => "there are no backups yet".into(),
                },
                help: "`berth backup list` shows them".into(),
            });
        }
        Ok(tally)
    }
}

/// Tells `seen` of the backups whose manifest does not authenticate (only `id`'s, with
/// one): a failure of this verify when forged, or named (`id`, `--all`); otherwise told
/// and passed over.
pub(super) fn tell_unauthenticated(
    label: &str,
    found: Vec<(crate::archive::Manifest, Authenticity)>,
    id: Option<&str>,
    all: bool,
    tally: &mut Tally,
    seen: &mut dyn FnMut(Checked),
) {
    for (m, found) in found {
        if id.is_some_and(|id| id != m.id) {
            continue;
        }
        let counted = found == Authenticity::Forged || id.is_some() || all;
        if counted {
            tally.checked += 1;
            tally.bad += 1;
        }
        seen(Checked::Unauthenticated {
            name: label.to_owned(),
            id: m.id,
            found,
            counted,
        });
    }
}

/// Reads back each of `chosen` whole from `store`, telling `seen` what it found.
pub(super) fn read_back(
    label: &str,
    store: &dyn Store,
    chosen: Vec<crate::archive::Manifest>,
    identity: &crate::secrets::age::Identity,
    tally: &mut Tally,
    seen: &mut dyn FnMut(Checked),
) {
    for m in chosen {
        tally.checked += 1;
        match crate::archive::verify(store, &m, identity) {
            Ok(verified) => seen(Checked::Sound {
                name: label.to_owned(),
                id: m.id,
                verified,
            }),
            Err(e) => {
                tally.bad += 1;
                seen(Checked::Damaged(e));
            }
        }
    }
}
