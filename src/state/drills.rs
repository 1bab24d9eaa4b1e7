//! `STATE/drills.json`: the last restore drill of each backup name (written by `berth
//! backup drill`, read by `backup list` and by `plan`'s warning about a drill overdue).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file, in the project's state directory.
pub const RECORD: &str = "drills.json";

/// The last drill of a backup name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastDrill {
    pub id: String,
    /// Seconds since the epoch.
    pub at: u64,
    pub passed: bool,
    /// The measured restore time, in seconds (of a drill that passed).
    pub seconds: f64,
    /// When a drill of the name last passed (this one, or one before a failure).
    #[serde(default)]
    pub last_passed: Option<u64>,
}

/// The last drill of each backup name, from the state directory at `dir` (none when there
/// is no record, or it does not parse).
pub fn read(dir: &Path) -> BTreeMap<String, LastDrill> {
    std::fs::read(dir.join(RECORD))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default()
}
