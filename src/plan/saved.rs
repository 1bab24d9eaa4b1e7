//! Plans and observations written to files: a saved plan (`berth plan --out FILE`, applied
//! later by `berth apply FILE`) with the facts it was made from, and a state snapshot
//! (`berth state snapshot`, planned against anywhere by `berth plan --state FILE`). Plain
//! data and their format checks; the session that makes and checks them is in `ops`.

use std::collections::BTreeMap;
use std::path::Path;

use miette::Diagnostic;
use thiserror::Error;

use super::Plan;
use crate::observe::ObservedState;

/// A saved plan or snapshot that cannot be used: what, and what to do.
#[derive(Debug, Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(berth::refused), help("{help}"))]
pub struct SavedError {
    pub message: String,
    pub help: String,
}

/// The bytes of a JSON file berth wrote (`path`, for the messages) parsed as `what`, with
/// `help` for when it is not. The caller reads the file: this module does no I/O.
fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    what: &str,
    help: &str,
) -> Result<T, SavedError> {
    serde_json::from_slice(bytes).map_err(|e| SavedError {
        message: format!("`{}` is not {what}: {e}", path.display()),
        help: help.to_owned(),
    })
}

/// What to do when a saved plan cannot be used.
pub const SAVED_PLAN_HELP: &str = "give the file written by `berth plan --out FILE`";
/// What to do when a snapshot cannot be used.
pub const SNAPSHOT_HELP: &str = "write one on the host with `berth state snapshot > live.json`";

/// A file that could not be read, as a [`SavedError`] (for the callers that read one).
pub fn unreadable(path: &Path, e: &std::io::Error, help: &str) -> SavedError {
    SavedError {
        message: format!("cannot read `{}`: {e}", path.display()),
        help: help.to_owned(),
    }
}

/// A plan written by `berth plan --out FILE`, applied later by `berth apply FILE`: the plan,
/// and every fact it was made from, so that apply can refuse it when the world moved on.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedPlan {
    pub format_version: u32,
    pub project: String,
    /// The spec file it was made from (absolute).
    pub spec: String,
    pub facts: BTreeMap<String, String>,
    pub plan: Plan,
    /// The profiles it was made with (`plan --profile`): applied with the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
}

pub const SAVED_PLAN_FORMAT: u32 = 1;

impl SavedPlan {
    /// A saved plan from the bytes of `path`, refused if it is of another format.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<SavedPlan, SavedError> {
        let plan: SavedPlan = parse_json(path, bytes, "a saved plan", SAVED_PLAN_HELP)?;
        if plan.format_version != SAVED_PLAN_FORMAT {
            return Err(SavedError {
                message: format!(
                    "`{}` is a saved plan of format {}; this berth reads format {SAVED_PLAN_FORMAT}",
                    path.display(),
                    plan.format_version
                ),
                help: "make the plan again with this berth".into(),
            });
        }
        Ok(plan)
    }

    /// What differs between the facts this plan was made from and those of now (one line
    /// per fact), and whether the plan itself comes out differently (`plan`, for `project`).
    pub fn stale_facts(
        &self,
        now: &BTreeMap<String, String>,
        project: &str,
        plan: &Plan,
    ) -> Vec<String> {
        let mut changed = Vec::new();
        for (k, was) in &self.facts {
            match now.get(k) {
                Some(is) if is == was => {}
                Some(is) => changed.push(format!("  {k}: was {was}; now {is}")),
                None => changed.push(format!("  {k}: was {was}; now gone")),
            }
        }
        for (k, is) in now {
            if !self.facts.contains_key(k) {
                changed.push(format!("  {k}: new: {is}"));
            }
        }
        if self.project != project {
            changed.push(format!(
                "  project: the plan is for `{}`, the spec is `{project}`",
                self.project
            ));
        }
        if changed.is_empty() && self.plan != *plan {
            changed.push("  the plan: it comes out differently now".into());
        }
        changed
    }
}

/// The observed state of a project, as data: what `berth state snapshot` writes on a host
/// and `berth plan --state FILE` plans against anywhere (CI without access to the hosts).
/// It holds what the labels and the files say (attributes, drift, ids, fingerprints), never
/// a secret value.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub format_version: u32,
    pub project: String,
    pub host: String,
    /// Seconds since the epoch.
    pub taken_at: u64,
    pub observed: ObservedState,
}

pub const SNAPSHOT_FORMAT: u32 = 1;

impl Snapshot {
    /// A snapshot from the bytes of `path`, refused if it is of another format or of a
    /// project other than `project`.
    pub fn parse(path: &Path, bytes: &[u8], project: &str) -> Result<Snapshot, SavedError> {
        let snap: Snapshot = parse_json(path, bytes, "a state snapshot", SNAPSHOT_HELP)?;
        if snap.format_version != SNAPSHOT_FORMAT || snap.project != project {
            return Err(SavedError {
                message: format!(
                    "`{}` is a snapshot of project `{}` (format {}), not of `{project}`",
                    path.display(),
                    snap.project,
                    snap.format_version,
                ),
                help: "take the snapshot of this project with this berth".into(),
            });
        }
        Ok(snap)
    }
}
