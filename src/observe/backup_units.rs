//! The drift of a backup resource on this machine: its store's mode and its timer's unit
//! files against what the spec wants (the unit text is [`crate::archive::schedule`]'s).

use super::Drift;
use crate::archive::schedule;
use crate::archive::store::Found;

/// What is on this machine for a backup resource, against what the spec wants: `None`
/// when nothing exists yet (the plan creates it), else the drift to heal.
pub fn observe(
    store: &Found,
    units: Option<&[(String, String)]>,
    stale: &[String],
) -> Option<Vec<Drift>> {
    let dir = schedule::unit_dir();
    // Only a store of berth's own has a mode to heal: one it may still make (or adopt) is
    // to create, and one it may not touch is refused by the pre-flight, never chmod-ed.
    let store_mode = match store {
        Found::Ours { mode } => Some(*mode),
        _ => None,
    };
    let unit_state: Vec<(String, Option<bool>)> = units
        .unwrap_or_default()
        .iter()
        .map(|(file, want)| {
            let have = std::fs::read_to_string(dir.join(file)).ok();
            (file.clone(), have.map(|h| h == *want))
        })
        .collect();
    // Unit files of a schedule the spec no longer has (a drill's, taken out).
    let stale: Vec<&String> = stale.iter().filter(|f| dir.join(f).exists()).collect();
    if store_mode.is_none() && unit_state.iter().all(|(_, s)| s.is_none()) && stale.is_empty() {
        return None;
    }
    let mut drift = Vec::new();
    match store_mode {
        None => drift.push(Drift {
            field: "store".into(),
            observed: "missing".into(),
            expected: "a 0700 directory".into(),
        }),
        Some(m) if m & 0o077 != 0 => drift.push(Drift {
            field: "store".into(),
            observed: format!("mode {m:04o}"),
            expected: "mode 0700".into(),
        }),
        Some(_) => {}
    }
    for (file, state) in unit_state {
        match state {
            Some(true) => {}
            Some(false) => drift.push(Drift {
                field: file,
                observed: "differs from the spec".into(),
                expected: "as the spec says".into(),
            }),
            None => drift.push(Drift {
                field: file,
                observed: "missing".into(),
                expected: "written".into(),
            }),
        }
    }
    for file in stale {
        drift.push(Drift {
            field: file.clone(),
            observed: "present".into(),
            expected: "removed (the spec has no such schedule)".into(),
        });
    }
    Some(drift)
}
