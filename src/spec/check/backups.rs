//! Backups: one source, its pod and volume, the store's place, the schedule, retention and
//! recipients.

use super::Checker;
use crate::diag::Diagnostic;
use crate::spec::{BackupSource, Sp};

impl Checker<'_> {
    pub(super) fn backups(&mut self) {
        let spec = self.spec;
        for b in spec.backups.iter() {
            self.backup_source(&b.name, &b.item.source);
            self.backup_store(&b.name.value, &b.item.store);
            if let Some(sched) = &b.item.schedule {
                self.schedule(
                    &sched.value,
                    sched.span,
                    "invalid schedule",
                    "write e.g. `daily`, `hourly`, `*-*-* 03:00:00` or `Mon *-*-* 04:30:00`",
                );
            }
            if let Some(r) = &b.item.retention
                && [r.daily, r.weekly, r.monthly]
                    .iter()
                    .all(|n| n.unwrap_or(0) == 0)
            {
                self.push(
                    Diagnostic::error(
                        "empty-retention",
                        format!("backup `{}` retention keeps nothing", b.name.value),
                    )
                    .at(b.name.span, "every backup would be pruned")
                    .help("keep at least one bucket, e.g. `{ daily: 7, weekly: 4 }`"),
                );
            }
            if let Some(c) = &b.item.compression {
                self.backup_compression(&b.name.value, &c.value);
            }
            if let Some(d) = &b.item.drill {
                self.backup_drill(&b.name.value, &b.item.source.value, d);
            }
            match &b.item.recipients {
                Some(list) => self.recipients_of(&format!("backup `{}`", b.name.value), list),
                // With an explicit `identity:`, its key (the `backup-key-on-host` lint
                // says why that alone is risky).
                None if spec.recipients.is_empty() && spec.identity.is_none() => self.push(
                    Diagnostic::error(
                        "no-recipients",
                        format!("backup `{}` has no recipients", b.name.value),
                    )
                    .at(b.name.span, "backups are always encrypted")
                    .help("list the team's public keys under top-level `recipients:`, or name the one `identity:` whose key may decrypt"),
                ),
                None => {}
            }
        }
    }

    /// A schedule (a backup's, or its drill's): a systemd `OnCalendar` expression.
    fn schedule(&mut self, sched: &str, at: crate::diag::Span, label: &str, help: &str) {
        if let Err(why) = check_on_calendar(sched) {
            self.push(
                Diagnostic::error(
                    "invalid-schedule",
                    format!("`{sched}` is not a systemd calendar expression: {why}"),
                )
                .at(at, label)
                .help(help),
            );
        }
    }

    /// A backup's `drill`: of a volume backup (its pod one that mounts the volume) or of a
    /// command's output with a `restore` command (its pod the source's), its check a
    /// command.
    fn backup_drill(&mut self, name: &str, src: &BackupSource, d: &Sp<crate::spec::DrillSpec>) {
        if src.volume.is_none() && (src.restore.is_none() || src.pod.is_none()) {
            let (said, help) = if src.path.is_some() {
                (
                    "a host path's backup",
                    "restore it beside the data to look at it (`berth backup restore NAME --to-path DIR`); remove `drill` here",
                )
            } else {
                (
                    "a command's output without `restore`",
                    "add the source's `restore: [...]` command (the drill pipes the backup into it in a scratch copy of the pod), or remove `drill`",
                )
            };
            self.push(
                Diagnostic::error(
                    "backup-drill",
                    format!("backup `{name}` has `drill`, and only a volume backup or a command's output with `restore` can be drilled"),
                )
                .at(d.span, said)
                .help(help),
            );
        }
        self.drill_pod(name, src, d);
        self.drill_settings(d, name);
    }

    /// `drill.pod`: for a volume, a pod that mounts it; for a command's output, the
    /// source's own pod (the backup is piped into its `restore` command there).
    fn drill_pod(&mut self, name: &str, src: &BackupSource, d: &Sp<crate::spec::DrillSpec>) {
        let Some(pod) = &d.value.pod else {
            return;
        };
        let Some(volume) = &src.volume else {
            if let Some(own) = src.pod.as_ref().filter(|p| p.value != pod.value) {
                self.push(
                    Diagnostic::error(
                        "backup-drill",
                        format!(
                            "backup `{name}` is piped back through pod `{}`, and its drill names pod `{}`",
                            own.value, pod.value
                        ),
                    )
                    .at(pod.span, "not the source's pod")
                    .help("remove `drill.pod`: a command's output is drilled in a copy of the source's pod"),
                );
            }
            return;
        };
        {
            match self.spec.pods.get(&pod.value) {
                None => self.unknown("pod", pod, self.spec.pods.names(), "pods"),
                Some(p) if !p.named_volumes().any(|v| v == volume.value) => self.push(
                    Diagnostic::error(
                        "backup-drill",
                        format!(
                            "pod `{}` does not mount volume `{}`, which backup `{name}` holds",
                            pod.value, volume.value
                        ),
                    )
                    .at(pod.span, "its copy would start without the restored data")
                    .help("name a pod that mounts the volume"),
                ),
                Some(_) => {}
            }
        }
    }

    /// `drill`'s schedule and check.
    fn drill_settings(&mut self, d: &Sp<crate::spec::DrillSpec>, name: &str) {
        if let Some(sched) = &d.value.schedule {
            // `drill: weekly` has the span of the `drill:` value.
            let at = if sched.span == crate::diag::Span::default() {
                d.span
            } else {
                sched.span
            };
            self.schedule(
                &sched.value,
                at,
                "invalid drill schedule",
                "write e.g. `weekly`, `monthly` or `Sun *-*-* 04:00:00`",
            );
        }
        if d.value.check.as_ref().is_some_and(|c| c.is_empty()) {
            self.push(
                Diagnostic::error("backup-drill", format!("backup `{name}` has an empty `drill.check`"))
                    .at(d.span, "no command")
                    .help("give a command that exits 0 when the restored data is good, e.g. `[sh, -c, \"test -s /data/visits\"]`"),
            );
        }
    }

    /// A backup's `source`: exactly one of `exec`, `volume` and `path`, and the pod, volume
    /// or path it names.
    fn backup_source(&mut self, name: &Sp<String>, src: &Sp<BackupSource>) {
        let spec = self.spec;
        let s = &src.value;
        let kinds = [s.exec.is_some(), s.volume.is_some(), s.path.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if kinds != 1 {
            self.push(
                Diagnostic::error("backup-source", format!("backup `{}` needs exactly one of `exec`, `volume` and `path`", name.value))
                    .at(src.span, if kinds == 0 { "nothing to back up" } else { "more than one source" })
                    .help("e.g. `{ pod: db, exec: [pg_dump, -Fc, shop] }`, `{ volume: db-data }` or `{ path: /srv/uploads }`"),
            );
        }
        if s.exec.is_some() && s.pod.is_none() {
            self.push(
                Diagnostic::error("backup-source", "`exec` needs the `pod` to run in")
                    .at(src.span, "no pod")
                    .help("add `pod: NAME`"),
            );
        }
        if s.exec.as_ref().is_some_and(|e| e.is_empty()) {
            self.push(
                Diagnostic::error("empty-command", "backup `exec` is empty")
                    .at(src.span, "empty")
                    .help("give the command and its arguments, e.g. `[pg_dump, -Fc, shop]`"),
            );
        }
        if s.restore.is_some() && s.exec.is_none() {
            self.push(
                Diagnostic::error(
                    "backup-source",
                    "`restore` applies only to an `exec` source",
                )
                .at(src.span, "no exec")
                .help("remove `restore`: volumes and paths are restored as files"),
            );
        }
        if let Some(pod) = &s.pod {
            match spec.pods.get(&pod.value) {
                None => self.unknown("pod", pod, spec.pods.names(), "pods"),
                Some(p) => {
                    if let Some(vol) = &s.volume {
                        let mounts = p
                            .volumes
                            .iter()
                            .filter_map(|m| m.get().ok())
                            .any(|m| !m.bind && m.source == vol.value);
                        if !mounts {
                            self.push(
                                Diagnostic::error(
                                    "backup-source",
                                    format!(
                                        "pod `{}` does not mount volume `{}`",
                                        pod.value, vol.value
                                    ),
                                )
                                .at(vol.span, "not mounted by that pod")
                                .help("name the pod that mounts the volume, or drop `pod`"),
                            );
                        }
                    }
                }
            }
        }
        if let Some(region) = &s.region {
            self.backup_region(s, region);
        }
        // With several regions, a volume is one per region: the backup's region must have it.
        if spec.regions.len() > 1
            && let Some(vol) = &s.volume
            && spec.volumes.contains(&vol.value)
        {
            let region = match &s.region {
                Some(r) => r.value.as_str(),
                None => spec.backup_region_of(s),
            };
            let mounted = spec.pods.iter().any(|p| {
                crate::spec::Spec::runs_in(&p.item.regions, region)
                    && p.item.named_volumes().any(|n| n == vol.value)
            });
            // A pod that does not run there is reported once, by `backup_region`.
            let pod_elsewhere = s
                .pod
                .as_ref()
                .and_then(|p| spec.pods.get(&p.value))
                .is_some_and(|p| !crate::spec::Spec::runs_in(&p.regions, region));
            if !mounted && !pod_elsewhere && spec.region_names().contains(&region) {
                self.push(
                    Diagnostic::error(
                        "backup-source",
                        format!("no pod of region `{region}` mounts volume `{}`", vol.value),
                    )
                    .at(vol.span, format!("read in region `{region}`"))
                    .help("add `region:` naming the region whose volume to back up, or `pod:` naming the pod that mounts it"),
                );
            }
        }
        if let Some(vol) = &s.volume
            && !spec.volumes.contains(&vol.value)
        {
            self.unknown("volume", vol, spec.volumes.names(), "volumes");
        }
        if let Some(path) = &s.path
            && !path.value.starts_with('/')
        {
            self.push(
                Diagnostic::error(
                    "relative-path",
                    format!("backup path `{}` is not absolute", path.value),
                )
                .at(path.span, "relative")
                .help("give the absolute host path, e.g. `/srv/uploads`"),
            );
        }
    }

    /// A backup's `source.region`: a region of the spec, where its pod runs; not with a
    /// `path` (read on this machine, whatever the regions).
    fn backup_region(&mut self, s: &BackupSource, region: &Sp<String>) {
        let spec = self.spec;
        let defined = spec.region_names();
        if !defined.contains(&region.value.as_str()) {
            self.unknown("region", region, defined.iter().copied(), "regions");
            return;
        }
        if s.path.is_some() {
            self.push(
                Diagnostic::error(
                    "backup-source",
                    "`region` does not apply to a `path` source",
                )
                .at(region.span, "a path is read on the machine berth runs on")
                .help("remove `region`, or back up a volume of that region (`volume:`)"),
            );
        }
        if let Some(pod) = &s.pod
            && let Some(p) = spec.pods.get(&pod.value)
            && !crate::spec::Spec::runs_in(&p.regions, &region.value)
        {
            self.push(
                Diagnostic::error(
                    "backup-source",
                    format!("pod `{}` does not run in region `{}`", pod.value, region.value),
                )
                .at(region.span, "not one of the pod's regions")
                .help("name a region in the pod's `regions:`, or drop `region` (the pod's first region is the default)"),
            );
        }
    }

    /// A backup's `compression`: a zstd level and a number of threads that exist.
    fn backup_compression(&mut self, backup: &str, c: &crate::spec::CompressionSpec) {
        use crate::spec::Compression;
        if let Some(level) = &c.level
            && !(i64::from(*Compression::LEVELS.start())..=i64::from(*Compression::LEVELS.end()))
                .contains(&level.value)
        {
            self.push(
                Diagnostic::error(
                    "invalid-compression",
                    format!(
                        "backup `{backup}`: zstd level {} does not exist",
                        level.value
                    ),
                )
                .at(level.span, "not a zstd level")
                .help("give a level from 1 (fastest) to 19 (smallest); 3, the default, is what `zstd` uses"),
            );
        }
        if let Some(threads) = &c.threads
            && !(1..=i64::from(Compression::MAX_THREADS)).contains(&threads.value)
        {
            self.push(
                Diagnostic::error(
                    "invalid-compression",
                    format!("backup `{backup}`: {} compression threads", threads.value),
                )
                .at(threads.span, "not a number of threads")
                .help(format!(
                    "give 1 to {} threads (each holds zstd's window and buffers: tens of MiB at level 3, more at high levels), or leave `threads` out for one per CPU up to {}",
                    Compression::MAX_THREADS,
                    Compression::DEFAULT_MAX_THREADS
                )),
            );
        }
    }

    /// A backup store is a directory of its own: never `/`, a system directory (or a child
    /// of one the OS owns) or a temporary directory, in any environment. berth makes the
    /// store and may change its mode: such a directory is shared.
    fn backup_store(&mut self, backup: &str, store: &Sp<String>) {
        let path = crate::fsutil::expand_home(&store.value);
        if !path.is_absolute() {
            return; // the `backup-store-relative` lint
        }
        if let Some(why) = crate::fsutil::refused_place(&path) {
            self.push(
                Diagnostic::error(
                    "backup-store-place",
                    format!("backup `{backup}` cannot be stored there: {why}"),
                )
                .at(store.span, "not a directory of its own")
                .help("give a directory that berth makes and keeps 0700, e.g. `/var/backups/PROJECT` or `/srv/backups/PROJECT`"),
            );
        }
    }
}

/// Why a `schedule` is not a systemd `OnCalendar` expression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("it is empty")]
    Empty,
    #[error("`{piece}` is not a weekday (Mon..Sun)")]
    NotAWeekday { piece: String },
    #[error("this looks like a cron expression; systemd writes `0 3 * * *` as `*-*-* 03:00:00`")]
    Cron,
    #[error("expected `[weekday] [year-month-day] hour:minute[:second]`")]
    Malformed,
}

/// A structural check of systemd `OnCalendar` syntax: the named shortcuts, or
/// `[weekdays] [date] time` with the characters systemd accepts in each part.
pub fn check_on_calendar(s: &str) -> Result<(), CalendarError> {
    const SHORTCUTS: &[&str] = &[
        "minutely",
        "hourly",
        "daily",
        "weekly",
        "monthly",
        "yearly",
        "annually",
        "quarterly",
        "semiannually",
    ];
    let s = s.trim();
    if s.is_empty() {
        return Err(CalendarError::Empty);
    }
    if SHORTCUTS.contains(&s) {
        return Ok(());
    }
    let mut parts: Vec<&str> = s.split_whitespace().collect();
    const DAYS: &[&str] = &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    if let Some(first) = parts.first()
        && first
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
    {
        for piece in first.split([',', '.']).filter(|p| !p.is_empty()) {
            if !DAYS.contains(&piece) {
                return Err(CalendarError::NotAWeekday {
                    piece: piece.to_owned(),
                });
            }
        }
        parts.remove(0);
    }
    let ok_chars = |p: &str| {
        p.chars()
            .all(|c| c.is_ascii_digit() || "*,./~-:".contains(c))
    };
    match parts.as_slice() {
        [time] if time.contains(':') && ok_chars(time) => Ok(()),
        [date, time]
            if date.contains('-') && time.contains(':') && ok_chars(date) && ok_chars(time) =>
        {
            Ok(())
        }
        [date] if date.contains('-') && ok_chars(date) => Ok(()),
        _ if parts.len() == 5 => Err(CalendarError::Cron),
        _ => Err(CalendarError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendars() {
        for ok in [
            "daily",
            "*-*-* 03:00:00",
            "Mon *-*-* 04:30",
            "Mon,Fri 02:00",
            "*:0/15",
            "2026-01-01",
        ] {
            assert!(check_on_calendar(ok).is_ok(), "{ok}");
        }
        for bad in ["", "every day", "Funday 03:00", "*-*-* 3am", "0 3 * * *"] {
            assert!(check_on_calendar(bad).is_err(), "{bad}");
        }
    }
}
