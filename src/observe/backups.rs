//! Backups are a store directory and schedule units on this machine, not objects of an
//! engine: each one the spec declares observed as configured when something of it exists,
//! with its drift and its store's problems; the timers of backups no longer desired.

use super::{ObservedResource, ObservedState, Scope};
use crate::archive::schedule;
use crate::graph::{Kind, Resource};
use crate::resources::attr;

/// Backups are a store directory and schedule units on this machine: each one the spec
/// declares is observed as configured when something of it exists, with its drift. A
/// scheduled backup whose newest verified copy is older than twice its period is an RPO at
/// risk, said as a warning. A store berth may not use (a directory it did not make, that is
/// not empty or not the user's; one that leads to a refused place) is a pre-flight problem,
/// at the store's span: apply refuses it before the first change, and never chmods it.
/// What is only in the spec (`before_apply`) is observed as the last applied revision had
/// it, so that turning it on or off is a planned update.
pub fn observe(
    scope: &Scope,
    observed: &mut ObservedState,
    notes: &mut Vec<String>,
) -> Vec<crate::diag::Diagnostic> {
    let Scope {
        spec,
        spec_path,
        spec_dir,
        state_dir,
        applied,
        desired,
        ..
    } = *scope;
    let mut problems = Vec::new();
    let drills = crate::state::drills::read(state_dir);
    observed.unobserved.retain(|k| *k != Kind::Backup);
    for r in desired.iter().filter(|r| r.address.kind == Kind::Backup) {
        let Some(backup) = spec.backups.get(&r.address.name) else {
            continue;
        };
        let store = spec_dir.join(crate::fsutil::expand_home(&backup.store.value));
        let found = crate::archive::store::inspect(&store);
        if let crate::archive::store::Found::Refused(why) = &found {
            problems.push(
                crate::diag::Diagnostic::error(
                    "backup-store",
                    format!("backup `{}` cannot use its store: {why}", r.address.name),
                )
                .at(backup.store.span, "not berth's to use")
                .help("give `store:` a directory of berth's own: one that does not exist yet (berth makes it), or an empty one of yours"),
            );
        }
        let units = schedule::units(
            spec,
            spec_path,
            &r.address.name,
            backup,
            &schedule::RunAs {
                state_dir,
                identity: &crate::secrets::files::identity_path(spec, spec_dir),
            },
        );
        let stale: Vec<String> = if backup.drill.as_ref().is_some_and(|d| d.schedule.is_some()) {
            Vec::new()
        } else {
            let unit = schedule::drill_unit_name(&spec.project.value, &r.address.name);
            vec![format!("{unit}.timer"), format!("{unit}.service")]
        };
        if let Some(drift) = super::backup_units::observe(&found, units.as_deref(), &stale) {
            let mut attrs = r.attrs.clone();
            if let Some(was) = applied.and_then(|a| a.backups.get(&r.address.name)) {
                attrs.insert(attr::BEFORE_APPLY, was.before_apply.to_string());
            }
            observed.resources.push(ObservedResource {
                address: r.address.clone(),
                attrs,
                depends_on: r.depends_on.clone(),
                drift,
                id: None,
                image: None,
            });
        }
        let period = backup
            .schedule
            .as_ref()
            .and_then(|s| schedule::period(&s.value));
        // A backup's time is the earlier of its manifest's and its data file's: a manifest
        // dated in the future never hides an RPO at risk. A store berth may not use is not
        // listed.
        let listed = match found {
            crate::archive::store::Found::Refused(_) => None,
            _ => crate::archive::store::LocalStore::open_existing(&store),
        };
        let times: Vec<u64> = listed
            .and_then(|st| {
                use crate::archive::store::Store;
                let list = st.list(&r.address.name).ok()?;
                Some(
                    list.iter()
                        .filter(|m| m.verified && !m.safety)
                        .filter_map(|m| Some(m.created_at.min(st.modified(&m.name, &m.id)?)))
                        .collect(),
                )
            })
            .unwrap_or_default();
        let newest = times.iter().copied().max();
        notes.extend(drill_overdue(
            &r.address.name,
            backup,
            drills.get(&*r.address.name),
            times.iter().copied().min(),
            crate::clock::now(),
        ));
        if let (Some(period), Some(taken)) = (period, newest) {
            let age = crate::clock::now().saturating_sub(taken);
            if age > 2 * period {
                notes.push(format!(
                    "backup `{}`: the newest verified backup is {} h old, more than twice its schedule: the RPO is at risk (run `berth backup run {}`, and check its timer)",
                    r.address.name,
                    age / 3600,
                    r.address.name
                ));
            }
        }
    }
    problems
}

/// How long past its period a drill may be before `plan` says it is overdue: the timer's
/// random delay and the drill's own time.
const DRILL_GRACE: u64 = 3600;

/// The plan's warning about backup `name`'s restore drills, when it has a drill schedule:
/// the last drill failed; the last one that passed is older than the schedule's period
/// (and a grace); or none has passed while its oldest verified backup (taken at `oldest`)
/// is older than that.
fn drill_overdue(
    name: &str,
    backup: &crate::spec::Backup,
    last: Option<&crate::state::drills::LastDrill>,
    oldest: Option<u64>,
    now: u64,
) -> Vec<String> {
    let Some(schedule) = backup.drill.as_ref().and_then(|d| d.schedule.as_ref()) else {
        return Vec::new();
    };
    let Some(period) = schedule::period(&schedule.value) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let run = format!("run `berth backup drill {name}`, and check its timer");
    if let Some(d) = last.filter(|d| !d.passed) {
        out.push(format!(
            "backup `{name}`: its last restore drill, {}, FAILED: the backup is not proven to restore ({run})",
            crate::clock::format_time(d.at)
        ));
    }
    match last.and_then(|d| d.last_passed) {
        Some(at) if now.saturating_sub(at) > period + DRILL_GRACE => out.push(format!(
            "backup `{name}`: the last restore drill that passed was {} h ago, longer than its schedule (`{}`): the RTO is unproven ({run})",
            now.saturating_sub(at) / 3600,
            schedule.value
        )),
        None if oldest.is_some_and(|o| now.saturating_sub(o) > period + DRILL_GRACE) => {
            out.push(format!(
                "backup `{name}`: no restore drill has passed yet, though it has been scheduled (`{}`) and backups are older than that ({run})",
                schedule.value
            ))
        }
        _ => {}
    }
    out
}

/// The project's backup timers in the unit directory that no desired backup has.
pub fn orphan_timers(project: &str, desired: &[Resource], observed: &mut ObservedState) {
    let prefix = format!("berth-{project}-backup-");
    let Ok(entries) = std::fs::read_dir(crate::archive::schedule::unit_dir()) else {
        return;
    };
    let wanted: std::collections::HashSet<&str> = desired
        .iter()
        .filter(|r| r.address.kind == Kind::Backup)
        .map(|r| &*r.address.name)
        .collect();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(name) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".timer"))
        else {
            continue;
        };
        if wanted.contains(name)
            || observed
                .resources
                .iter()
                .any(|o| o.address.kind == Kind::Backup && *o.address.name == *name)
        {
            continue;
        }
        observed.unobserved.retain(|k| *k != Kind::Backup);
        observed.resources.push(ObservedResource {
            address: crate::graph::Address::new(Kind::Backup, name),
            attrs: crate::graph::Attrs::from([("units", file)]),
            depends_on: Vec::new(),
            drift: Vec::new(),
            id: None,
            image: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::drills::LastDrill;

    fn backup(drill: &str) -> crate::spec::Backup {
        let text = format!(
            "version: 1\nproject: p\nvolumes: {{ data: {{}} }}\nbackups:\n  data:\n    source: {{ volume: data }}\n    store: /srv/b\n    drill: {drill}\n"
        );
        let loaded = crate::spec::load_str(std::path::Path::new("t.yaml"), text);
        let spec = loaded.spec.expect("parses");
        spec.backups.get("data").expect("the backup").clone()
    }

    fn drilled(at: u64, passed: bool, last_passed: Option<u64>) -> LastDrill {
        LastDrill {
            id: "x".into(),
            at,
            passed,
            seconds: 1.0,
            last_passed,
        }
    }

    #[test]
    fn a_drill_older_than_its_schedule_or_failed_or_never_passed_is_said() {
        const DAY: u64 = 86_400;
        let now = 100 * DAY;
        let weekly = backup("weekly");
        // Passed two days ago: nothing to say.
        let fresh = drilled(now - 2 * DAY, true, Some(now - 2 * DAY));
        assert!(drill_overdue("data", &weekly, Some(&fresh), Some(0), now).is_empty());
        // Passed nine days ago: overdue.
        let old = drilled(now - 9 * DAY, true, Some(now - 9 * DAY));
        let said = drill_overdue("data", &weekly, Some(&old), Some(0), now);
        assert!(said[0].contains("216 h ago"), "{said:?}");
        // Failed yesterday, passed nine days ago: both said.
        let failed = drilled(now - DAY, false, Some(now - 9 * DAY));
        let said = drill_overdue("data", &weekly, Some(&failed), Some(0), now);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("FAILED"), "{said:?}");
        // Never drilled: said once the backups are older than the schedule's period.
        let said = drill_overdue("data", &weekly, None, Some(now - 8 * DAY), now);
        assert!(
            said[0].contains("no restore drill has passed yet"),
            "{said:?}"
        );
        assert!(drill_overdue("data", &weekly, None, Some(now - DAY), now).is_empty());
        // The long form, and no schedule.
        let long = backup("{ schedule: weekly, check: [true] }");
        assert_eq!(
            drill_overdue("data", &long, Some(&old), Some(0), now).len(),
            1
        );
        let none = backup("{ check: [true] }");
        assert!(drill_overdue("data", &none, Some(&old), Some(0), now).is_empty());
    }
}
