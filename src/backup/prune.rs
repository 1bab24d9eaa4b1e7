//! `berth backup prune`: what the retention policy no longer keeps, deleted after the
//! backups kept in its place are read back whole; data files a killed backup left, deleted
//! once a backup of the name verifies.

use super::ops::Backups;
use crate::archive::store::{Incomplete, Store};
use crate::archive::verify;
use crate::error::OpError;

/// What `prune` decided for one backup, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneDecision {
    pub id: String,
    pub delete: bool,
    pub why: String,
}

/// What `prune` decided (and, unless a dry run, did) for one backup name.
#[derive(Clone, Debug, Default)]
pub struct Pruned {
    /// Oldest first.
    pub decisions: Vec<PruneDecision>,
    /// Backups that failed their read-back just now (kept, marked unverified).
    pub damaged: Vec<(String, String)>,
    /// No backup of the name verifies now: nothing was deleted.
    pub nothing_verifies: bool,
    /// Data files a killed backup or safety copy left without a manifest: deleted (unless
    /// a dry run) when a backup of the name verifies now, kept otherwise.
    pub incomplete: Vec<PruneDecision>,
    /// The backup has no `retention`: only incomplete files are pruned.
    pub no_retention: bool,
}

impl Pruned {
    /// Whether the prune failed its purpose: a backup failed its read-back, or none of
    /// the name verifies now (so nothing was deleted).
    pub fn failed(&self) -> bool {
        !self.damaged.is_empty() || self.nothing_verifies
    }
}

impl Backups {
    /// The data files a killed backup of `name` left without a manifest, removed (those
    /// removed). Called under the lock, once a backup of the name has just verified.
    pub fn remove_incomplete(&self, name: &str) -> Result<Vec<Incomplete>, OpError> {
        let store = self.store(self.get(name)?)?;
        let mut removed = Vec::new();
        for i in store.incomplete(name)? {
            if store.remove_incomplete(name, &i.id)? {
                removed.push(i);
            }
        }
        Ok(removed)
    }

    /// Decides what `prune` keeps and deletes for `name`, the same way with `dry_run` or
    /// without. Before anything is deleted, every backup the decision counts on (a period
    /// of the policy, the newest verified) is read back whole; one that fails is marked
    /// damaged, counts for nothing, and the decision is made again. A backup whose time is
    /// not trusted is kept and counts for nothing. When no backup verifies now, nothing is
    /// deleted. Without `dry_run`, damaged ones are then marked unverified in their
    /// manifests, and the others are deleted.
    pub fn prune(&self, name: &str, dry_run: bool) -> Result<Pruned, OpError> {
        let backup = self.get(name)?;
        let store = self.store(backup)?;
        let mut pruned = match &backup.retention {
            Some(policy) => self.prune_policy(name, policy, &store, self.list(name)?, dry_run)?,
            None => Pruned {
                no_retention: true,
                ..Pruned::default()
            },
        };
        let incomplete = store.incomplete(name)?;
        if incomplete.is_empty() {
            return Ok(pruned);
        }
        // A file cut short may still open by hand (the one-liner): it goes only when the
        // name has a backup that verifies now, read back whole.
        let verifies = if pruned.no_retention {
            match self.newest_trusted(name, |m| m.verified && !m.safety)? {
                (Some(m), _) => verify(&store, &m, self.identity(name)?).is_ok(),
                (None, _) => false,
            }
        } else {
            // Some backup was read back whole just now (none when there is none at all).
            !pruned.nothing_verifies && !pruned.decisions.is_empty()
        };
        for i in incomplete {
            let what = format!(
                "incomplete: cut short while it was written ({}), no manifest, never verified",
                crate::clock::format_time(i.modified)
            );
            let delete = verifies && (dry_run || store.remove_incomplete(name, &i.id)?);
            pruned.incomplete.push(PruneDecision {
                id: i.id,
                delete,
                why: if delete {
                    what
                } else {
                    format!("{what}; kept while no backup of this name verifies now")
                },
            });
        }
        Ok(pruned)
    }

    /// The retention policy applied to `list`, the backups of `name` that berth trusts in
    /// `store` (the host's, or a copy's).
    pub(super) fn prune_policy(
        &self,
        name: &str,
        policy: &crate::spec::Retention,
        store: &dyn Store,
        list: Vec<crate::archive::Manifest>,
        dry_run: bool,
    ) -> Result<Pruned, OpError> {
        use crate::archive::retention::{self, Entry};
        if list.is_empty() {
            return Ok(Pruned::default());
        }
        // Nothing is deleted on the word of a manifest: the backups kept in its place are
        // read back first, and that needs the identity.
        let identity = self.identity(name)?;
        let now = crate::clock::now();
        let mut entries: Vec<Entry> = list
            .iter()
            .map(|m| Entry {
                id: m.id.clone(),
                at: m.created_at,
                verified: m.verified,
                safety: m.safety,
                untrusted: retention::untrusted_time(
                    m.created_at,
                    store.modified(name, &m.id),
                    now,
                ),
            })
            .collect();
        let mut read_back = std::collections::HashSet::new();
        let mut damaged: Vec<(String, String)> = Vec::new();
        let kept = loop {
            let kept = retention::keep(&entries, policy, now);
            let unread: Vec<String> = retention::counted(&kept, &entries)
                .into_iter()
                .filter(|id| !read_back.contains(*id))
                .map(str::to_owned)
                .collect();
            if unread.is_empty() {
                break kept;
            }
            for id in unread {
                read_back.insert(id.clone());
                let Some(m) = list.iter().find(|m| m.id == id) else {
                    continue;
                };
                if let Err(e) = verify(store, m, identity) {
                    damaged.push((id.clone(), e.to_string()));
                    if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
                        e.verified = false;
                    }
                }
            }
        };
        let nothing_verifies = retention::counted(&kept, &entries).is_empty();
        let describe = describe_policy(policy);
        let decisions: Vec<PruneDecision> = entries
            .iter()
            .map(|e| {
                let keep = |why: String| PruneDecision {
                    id: e.id.clone(),
                    delete: false,
                    why,
                };
                if let Some((_, why)) = kept.iter().find(|(id, _)| *id == e.id) {
                    return keep(why.clone());
                }
                if let Some((_, why)) = damaged.iter().find(|(id, _)| *id == e.id) {
                    return keep(format!(
                        "damaged, counts for nothing: {why}; marked unverified (the next prune deletes it)"
                    ));
                }
                if nothing_verifies {
                    return keep(
                        "no backup of this name verifies now at a trusted time: nothing is deleted"
                            .into(),
                    );
                }
                let why = if e.safety {
                    "a restore's safety copy older than 7 days".to_owned()
                } else if !e.verified {
                    "unverified (its read-back failed when it was taken)".to_owned()
                } else {
                    format!("in none of the kept periods ({describe})")
                };
                PruneDecision {
                    id: e.id.clone(),
                    delete: true,
                    why,
                }
            })
            .collect();
        if !dry_run {
            for (id, _) in &damaged {
                if let Some(m) = list.iter().find(|m| &m.id == id) {
                    let mut m = m.clone();
                    m.verified = false;
                    store.commit(&m)?;
                }
            }
            for d in decisions.iter().filter(|d| d.delete) {
                store.delete(name, &d.id)?;
            }
        }
        Ok(Pruned {
            decisions,
            damaged,
            nothing_verifies,
            ..Pruned::default()
        })
    }
}

/// A retention policy as the spec writes it: `daily 7, weekly 4`.
fn describe_policy(policy: &crate::spec::Retention) -> String {
    [
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
    ]
    .iter()
    .filter_map(|(k, n)| n.map(|n| format!("{k} {n}")))
    .collect::<Vec<_>>()
    .join(", ")
}
