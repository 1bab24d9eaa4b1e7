//! The helper containers that read and write volumes for a backup or a restore (created
//! never started, labelled as berth's, swept after a kill), and the fault points of the
//! kill tests.

use std::collections::HashMap;

use super::new_id;
use crate::engine::{Engine, labels};

/// Debugging aid for the kill tests: with `BERTH_FAULT_RESTORE_KILL=emptied`, a restore
/// aborts right after emptying the volume or directory (before the backup is unpacked into
/// it), as a `kill -9` at that moment would.
pub const ENV_FAULT_RESTORE_KILL: &str = "BERTH_FAULT_RESTORE_KILL";

/// Debugging aid for the kill tests: with `BERTH_FAULT_BACKUP_KILL=sealed`, a backup (or a
/// restore's safety copy) aborts once its data is written and before its manifest is, as
/// a `kill -9` at that moment would.
pub const ENV_FAULT_BACKUP_KILL: &str = "BERTH_FAULT_BACKUP_KILL";

pub fn fault_point(env: &str, at: &str) {
    if std::env::var(env).as_deref() == Ok(at) {
        eprintln!("{env}: aborting at `{at}`");
        std::process::abort();
    }
}

/// The labels of a helper container: the project's, and what it is.
fn helper_labels(project: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::PROJECT.to_owned(), project.to_owned()),
        (labels::HELPER.to_owned(), "backup".to_owned()),
    ])
}

/// A helper container (never started) that mounts `volume`, labelled as berth's.
pub async fn create_helper(
    engine: &Engine,
    project: &str,
    image: &str,
    volume: &str,
) -> Result<String, crate::engine::EngineError> {
    let name = format!("{project}-berth-backup-{}", &new_id(0)[21..]);
    engine
        .create_helper(&name, image, volume, helper_labels(project))
        .await
}

/// [`sweep_helpers`] in `region`, said as a line when it removed any (what recover,
/// rollback and a tidying observation print).
pub async fn sweep_helpers_said(
    engine: &Engine,
    project: &str,
    region: &str,
) -> Result<Option<String>, crate::engine::EngineError> {
    let n = sweep_helpers(engine, project).await?;
    Ok(helpers_removed(n, region))
}

/// What removing `n` left helper containers in `region` is said as (nothing for none).
pub fn helpers_removed(n: usize, region: &str) -> Option<String> {
    (n > 0).then(|| {
        format!("removed {n} helper container(s) in `{region}` a killed backup or restore left")
    })
}

/// Removes the helper containers of the project a killed backup or restore left behind;
/// says how many. Only called under the project's lock (no helper is in use then).
pub async fn sweep_helpers(
    engine: &Engine,
    project: &str,
) -> Result<usize, crate::engine::EngineError> {
    let mut removed = 0;
    let containers = engine.containers(project).await?;
    // A secrets keeper stays as long as a pod container mounts the volume it holds.
    let idle = crate::engine::secrets::idle_keepers(&containers);
    for c in &containers {
        let keeper = crate::engine::secrets::is_keeper(c);
        if (keeper && idle.iter().any(|k| k.id == c.id))
            || (!keeper && c.labels.contains_key(labels::HELPER))
        {
            engine.remove(&c.id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
