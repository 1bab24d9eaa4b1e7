//! What each successful apply deployed: `STATE/revisions/NNNNNN.json`. A revision holds the
//! spec as it was applied, the id of the image every pod runs (the exact bits, whatever a
//! tag points at later), the fingerprints of the secret ciphertexts, who applied it and
//! when, and the plan's summary. `berth history` lists them; `berth rollback --to N` applies
//! one again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{StateDir, StateError, io_error};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: u64,
    /// Seconds since the epoch.
    pub at: u64,
    pub who: String,
    pub command: String,
    /// The spec file (absolute) and its text as applied.
    pub spec_path: String,
    pub spec_sha256: String,
    pub spec_text: String,
    /// The image id each pod instance runs, by address.
    pub images: BTreeMap<String, String>,
    /// The fingerprint of each secret's ciphertext, by name.
    pub secrets: BTreeMap<String, String>,
    pub summary: Summary,
    /// `berth destroy`: the revision in which nothing runs.
    #[serde(default)]
    pub destroyed: bool,
    /// The regions this revision reached, when not every region of the spec: an apply
    /// limited with `--region`, or a rollout halted at a failed region. The others run
    /// what they ran before (`berth plan` shows the difference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
    /// The region a rollout halted at (`rollout.on_failure: halt`): it failed and was put
    /// back, and the regions after it were not touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted_at: Option<String>,
    /// The profiles it was applied with (`--profile`): a rollback to it plans the same
    /// pods. The pods of other profiles were neither created nor removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// The output of each job this apply ran (its last lines), by address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, String>,
}

impl Revision {
    /// Whether the revision reached only some of the spec's regions.
    pub fn partial(&self) -> bool {
        self.regions.is_some()
    }
}

/// How many changes of each kind a revision's apply made: its plan's summary as the
/// revision file keeps it (apply converts the planner's), so that state reads nothing of
/// the planner and what sits below it (observation) may use state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub heal: usize,
    pub no_op: usize,
}

fn dir_of(dir: &StateDir) -> std::path::PathBuf {
    dir.file("revisions")
}

fn file_name(n: u64) -> String {
    format!("{n:06}.json")
}

/// Every revision, oldest first.
pub fn list(dir: &StateDir) -> Result<Vec<Revision>, StateError> {
    let path = dir_of(dir);
    let entries = match std::fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let mut numbers: Vec<u64> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers.into_iter().map(|n| load(dir, n)).collect()
}

/// The number of the newest revision (0: none yet).
pub fn latest(dir: &StateDir) -> Result<u64, StateError> {
    Ok(list(dir)?.last().map_or(0, |r| r.revision))
}

pub fn load(dir: &StateDir, n: u64) -> Result<Revision, StateError> {
    let path = dir_of(dir).join(file_name(n));
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| StateError::Damaged {
        path,
        reason: e.to_string(),
    })
}

/// The spec of the latest applied revision (none before the first apply, after a destroy,
/// or when the revisions cannot be read: what it serves is observed as the spec has it).
pub fn applied_spec(dir: &StateDir) -> Option<crate::spec::Spec> {
    let latest = latest(dir).ok()?;
    if latest == 0 {
        return None;
    }
    let r = load(dir, latest).ok()?;
    if r.destroyed {
        return None;
    }
    crate::spec::load::load_str(std::path::Path::new(&r.spec_path), r.spec_text).spec
}

/// Writes a revision (atomically, 0600).
pub fn record(dir: &StateDir, r: &Revision) -> Result<(), StateError> {
    let path = dir_of(dir);
    crate::fsutil::create_dir_all(&path, 0o700).map_err(io_error(&path))?;
    let mut text = serde_json::to_vec_pretty(r).unwrap_or_default();
    text.push(b'\n');
    let file = path.join(file_name(r.revision));
    crate::fsutil::write_atomic(&file, &text, 0o600).map_err(io_error(&file))
}
