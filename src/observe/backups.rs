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
        if let Some(drift) = super::backup_units::observe(&found, units.as_deref()) {
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
        let newest = listed.and_then(|st| {
            use crate::archive::store::Store;
            let list = st.list(&r.address.name).ok()?;
            list.iter()
                .filter(|m| m.verified && !m.safety)
                .filter_map(|m| Some(m.created_at.min(st.modified(&m.name, &m.id)?)))
                .max()
        });
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
