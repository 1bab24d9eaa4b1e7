//! Backups as planned resources: the store directory, and the schedule as a systemd timer
//! and service. `plan` compares them with what is on this machine; `apply` makes them.
//!
//! Units go to `$BERTH_UNIT_DIR`, else `/etc/systemd/system` as root, else
//! `~/.config/systemd/user`. When systemd runs, apply reloads it and enables the timer;
//! otherwise the units are written and apply says how to enable them.

use std::path::{Path, PathBuf};

use crate::spec::{Backup, Spec};

pub const ENV_UNIT_DIR: &str = "BERTH_UNIT_DIR";

/// Where unit files go.
pub fn unit_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(ENV_UNIT_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        PathBuf::from("/etc/systemd/system")
    } else {
        crate::fsutil::expand_home("~/.config/systemd/user")
    }
}

/// Checks, before the first change, that berth may write a backup's units: the unit
/// directory, if it exists, is one nobody else can write into, and no unit file of the
/// backup is a symlink (berth never reads or writes a unit through one).
pub fn check_unit_dir(project: &str, backup: &str) -> Result<(), UnitDirError> {
    check_units_in(&unit_dir(), project, backup)
}

/// Why berth may not write a backup's units.
#[derive(Debug, thiserror::Error)]
pub enum UnitDirError {
    /// The unit directory cannot be read, or others may write into it.
    #[error("`{}`: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A unit file is a symlink, or not a regular file.
    #[error(
        "`{}` is a symlink or not a regular file: berth never reads or writes a unit through one; remove it",
        path.display()
    )]
    NotAFile { path: PathBuf },
}

fn check_units_in(dir: &Path, project: &str, backup: &str) -> Result<(), UnitDirError> {
    let refused = |source| UnitDirError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(refused(e)),
        Ok(_) => {}
    }
    crate::fsutil::check_private_dir(dir).map_err(refused)?;
    for unit in [unit_name(project, backup), drill_unit_name(project, backup)] {
        for file in [format!("{unit}.timer"), format!("{unit}.service")] {
            let path = dir.join(file);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
                return Err(UnitDirError::NotAFile { path });
            }
        }
    }
    Ok(())
}

/// Whether systemd manages this machine (and so can be told about new units).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The unit name (without suffix) of a backup's schedule.
pub fn unit_name(project: &str, backup: &str) -> String {
    format!("berth-{project}-backup-{backup}")
}

/// How the applying command ran, written into the service so that the timer runs the
/// backup the same way: the project's state directory (`--state-dir`) and the identity
/// (`$BERTH_IDENTITY`), both absolute.
pub struct RunAs<'a> {
    pub state_dir: &'a Path,
    pub identity: &'a Path,
}

/// The unit name (without suffix) of a backup's restore drill schedule.
pub fn drill_unit_name(project: &str, backup: &str) -> String {
    format!("berth-{project}-drill-{backup}")
}

/// The service and timer files of a backup's schedules (its own, and its drill's):
/// (file name, content); `None` when it has neither.
pub fn units(
    spec: &Spec,
    spec_path: &Path,
    name: &str,
    backup: &Backup,
    run_as: &RunAs<'_>,
) -> Option<Vec<(String, String)>> {
    let project = &spec.project.value;
    let mut out = Vec::new();
    if let Some(schedule) = &backup.schedule {
        out.extend(unit_pair(
            spec_path,
            run_as,
            project,
            &unit_name(project, name),
            &format!("backup run {name}"),
            &format!("berth backup `{name}` of {project}"),
            &schedule.value,
        ));
    }
    if let Some(schedule) = backup.drill.as_ref().and_then(|d| d.schedule.as_ref()) {
        out.extend(unit_pair(
            spec_path,
            run_as,
            project,
            &drill_unit_name(project, name),
            &format!("backup drill {name}"),
            &format!("berth restore drill of backup `{name}` of {project}"),
            &schedule.value,
        ));
    }
    (!out.is_empty()).then_some(out)
}

/// A oneshot service running `berth ... COMMAND` and the timer that starts it on
/// `schedule`.
fn unit_pair(
    spec_path: &Path,
    run_as: &RunAs<'_>,
    project: &str,
    unit: &str,
    command: &str,
    what: &str,
    schedule: &str,
) -> [(String, String); 2] {
    let berth = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "berth".into());
    let service = format!(
        "# Written by berth for `{project}`; `berth apply` keeps it as the spec says.
[Unit]
Description={what}
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=oneshot
Environment={identity}
ExecStart={berth} -f {spec} --state-dir {state} {command}
",
        berth = systemd_quote(&berth),
        spec = systemd_quote(&absolute(spec_path)),
        state = systemd_quote(&absolute(run_as.state_dir)),
        identity = systemd_quote(&format!(
            "{}={}",
            crate::secrets::files::ENV_IDENTITY,
            absolute(run_as.identity)
        )),
    );
    let timer = format!(
        "# Written by berth for `{project}`; `berth apply` keeps it as the spec says.
[Unit]
Description=Schedule of the {what}

[Timer]
OnCalendar={schedule}
Persistent=true
RandomizedDelaySec=60

[Install]
WantedBy=timers.target
",
    );
    [
        (format!("{unit}.service"), service),
        (format!("{unit}.timer"), timer),
    ]
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// A word of a unit's command line: double-quoted (spaces), `%` doubled (specifiers).
fn systemd_quote(word: &str) -> String {
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{escaped}\"")
}

/// The period of a schedule, for the RPO check: the systemd shortcuts, and
/// `*-*-* HH:MM[:SS]` (daily) or `*-*-* *:MM[:SS]` (hourly). `None` when it cannot tell.
pub fn period(schedule: &str) -> Option<u64> {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    match schedule.trim() {
        "minutely" => return Some(60),
        "hourly" => return Some(HOUR),
        "daily" => return Some(DAY),
        "weekly" => return Some(7 * DAY),
        "monthly" => return Some(31 * DAY),
        "quarterly" => return Some(92 * DAY),
        "semiannually" => return Some(183 * DAY),
        "yearly" | "annually" => return Some(366 * DAY),
        _ => {}
    }
    let time = schedule.trim().strip_prefix("*-*-* ")?;
    let hour = time.split(':').next()?;
    if hour == "*" {
        Some(HOUR)
    } else if hour.parse::<u32>().is_ok() {
        Some(DAY)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_dir_others_write_into_or_a_symlinked_unit_is_refused_by_the_check() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("units");
        assert!(
            check_units_in(&dir, "p", "data").is_ok(),
            "missing: made later"
        );
        std::fs::create_dir(&dir).unwrap();
        crate::fsutil::set_mode(&dir, 0o755).unwrap();
        assert!(check_units_in(&dir, "p", "data").is_ok());
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let unit = dir.join(format!("{}.service", unit_name("p", "data")));
        std::os::unix::fs::symlink(&victim, &unit).unwrap();
        let e = check_units_in(&dir, "p", "data").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert_eq!(
            crate::fsutil::read_nofollow(&unit)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ELOOP)
        );
        std::fs::remove_file(&unit).unwrap();
        crate::fsutil::set_mode(&dir, 0o777).unwrap();
        let e = check_units_in(&dir, "p", "data").unwrap_err().to_string();
        assert!(e.contains("other users may write"), "{e}");
    }

    #[test]
    fn command_words_are_quoted_for_systemd() {
        assert_eq!(
            systemd_quote("/srv/my app/berth.yaml"),
            "\"/srv/my app/berth.yaml\""
        );
        assert_eq!(systemd_quote("/x/100%"), "\"/x/100%%\"");
    }

    #[test]
    fn periods() {
        assert_eq!(period("daily"), Some(86_400));
        assert_eq!(period("*-*-* 03:00:00"), Some(86_400));
        assert_eq!(period("*-*-* *:15"), Some(3600));
        assert_eq!(period("Mon *-*-* 03:00"), None);
    }
}
