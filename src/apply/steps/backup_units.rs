//! A backup's units: its store directory made (0700) and its schedule's timer and service
//! written and enabled, or, once it left the spec, removed (its store and backups stay:
//! they are data). Each file it replaces or removes is recorded first.

use std::path::{Path, PathBuf};

use super::super::{ApplyError, Run, Undo};
use crate::plan::Change;

/// Why a backup's store or units could not be set up or removed.
#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    /// The store directory could not be made (or is not berth's own).
    #[error("{0}")]
    Store(Box<crate::archive::BackupError>),
    /// A unit file (or the unit directory) could not be read, written or removed.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("systemctl could not enable {timer}")]
    Enable { timer: String },
    /// Its undo could not be recorded (the journal), so the file was not touched.
    #[error("{0}")]
    Undo(Box<ApplyError>),
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> UnitsError + '_ {
    move |source| UnitsError::File {
        path: path.to_owned(),
        source,
    }
}

impl Run<'_> {
    pub(super) fn remove_backup(&self, c: &Change) -> Result<(), ApplyError> {
        let what =
            self.remove_backup_units(&c.address.name)
                .map_err(|e| ApplyError::Unsupported {
                    address: c.address.to_string(),
                    what: "remove the backup's timer".into(),
                    help: e.to_string(),
                })?;
        self.done(c, format!("- {}: {what}", c.address));
        Ok(())
    }

    pub(super) fn set_up_backup(&self, c: &Change) -> Result<(), ApplyError> {
        let what = self
            .set_up_backup_units(&c.address.name)
            .map_err(|reason| ApplyError::BackupSetUp {
                address: c.address.to_string(),
                reason,
            })?;
        self.done(c, format!("+ {}: {what}", c.address));
        Ok(())
    }

    /// Disables and removes the timers and services of a backup that left the spec (its
    /// own and its drill's; each file on the undo stack first). Its store and its backups
    /// stay: they are data.
    fn remove_backup_units(&self, name: &str) -> Result<String, UnitsError> {
        use crate::archive::schedule;
        let unit = schedule::unit_name(self.project, name);
        self.remove_units(&unit)?;
        self.remove_units(&schedule::drill_unit_name(self.project, name))?;
        Ok(format!(
            "{unit}.timer removed; its store and backups are kept"
        ))
    }

    /// Disables a unit's timer and removes its timer and service files, if there.
    fn remove_units(&self, unit: &str) -> Result<bool, UnitsError> {
        use crate::archive::schedule;
        let dir = schedule::unit_dir();
        let files = [format!("{unit}.timer"), format!("{unit}.service")];
        if !files.iter().any(|f| dir.join(f).exists()) {
            return Ok(false);
        }
        if schedule::systemd_running() {
            let mut c = std::process::Command::new("systemctl");
            if !dir.starts_with("/etc") {
                c.arg("--user");
            }
            let _ = c
                .args(["disable", "--now", &format!("{unit}.timer")])
                .status();
        }
        for file in files {
            let path = dir.join(&file);
            // Never through a symlink: one is left alone (it is not berth's unit).
            let Ok(old) = crate::fsutil::read_nofollow(&path) else {
                continue;
            };
            self.record_undo(Undo::RestoreFile {
                path: path.clone(),
                bytes: crate::encode::hex(&old),
                mode: 0o644,
                record: None,
            })
            .map_err(|e| UnitsError::Undo(Box::new(e)))?;
            std::fs::remove_file(&path).map_err(file_error(&path))?;
        }
        Ok(true)
    }

    /// Makes a backup's store directory (0700) and writes its schedule's units (each
    /// previous file on the undo stack first); tells systemd when it runs here.
    fn set_up_backup_units(&self, name: &str) -> Result<String, UnitsError> {
        use crate::archive::schedule;
        let Some(backup) = self.spec.backups.get(name) else {
            return Ok("nothing to do".into());
        };
        let store = self
            .spec_dir
            .join(crate::fsutil::expand_home(&backup.store.value));
        // Made, or its mode healed, only when it is berth's own (the pre-flight refused any
        // other before the first change).
        let (_, done) = crate::archive::store::LocalStore::set_up(&store)
            .map_err(|e| UnitsError::Store(Box::new(e)))?;
        let mut what = format!("store {} {done}", store.display());
        let run_as = schedule::RunAs {
            state_dir: self.state_dir,
            identity: &self.secrets.identity_path,
        };
        // A drill schedule taken out of the spec: its timer goes.
        let drill_unit = schedule::drill_unit_name(self.project, name);
        let drill_wanted = backup.drill.as_ref().is_some_and(|d| d.schedule.is_some());
        if !drill_wanted && self.remove_units(&drill_unit)? {
            what.push_str(&format!(", {drill_unit}.timer removed"));
        }
        let Some(units) = schedule::units(self.spec, self.spec_path, name, backup, &run_as) else {
            return Ok(what);
        };
        let dir = schedule::unit_dir();
        crate::fsutil::create_dir_all(&dir, 0o755).map_err(file_error(&dir))?;
        for (file, content) in &units {
            let path = dir.join(file);
            // Never through a symlink: the undo would otherwise keep the target's bytes.
            let old = match crate::fsutil::read_nofollow(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(file_error(&path)(e)),
                Ok(old) => Some(old),
            };
            match old {
                Some(old) if old == content.as_bytes() => continue,
                Some(old) => self.record_undo(Undo::RestoreFile {
                    path: path.clone(),
                    bytes: crate::encode::hex(&old),
                    mode: 0o644,
                    record: None,
                }),
                None => self.record_undo(Undo::RemoveFile { path: path.clone() }),
            }
            .map_err(|e| UnitsError::Undo(Box::new(e)))?;
            crate::fsutil::write_atomic(&path, content.as_bytes(), 0o644)
                .map_err(file_error(&path))?;
        }
        let timers: Vec<&str> = units
            .iter()
            .map(|(f, _)| f.as_str())
            .filter(|f| f.ends_with(".timer"))
            .collect();
        let shown = timers.join(" and ");
        if schedule::systemd_running() {
            let user = !dir.starts_with("/etc");
            let systemctl = |args: &[&str]| {
                let mut c = std::process::Command::new("systemctl");
                if user {
                    c.arg("--user");
                }
                c.args(args).status().map(|s| s.success()).unwrap_or(false)
            };
            if !systemctl(&["daemon-reload"]) {
                return Err(UnitsError::Enable { timer: shown });
            }
            for timer in &timers {
                if !systemctl(&["enable", "--now", timer]) {
                    return Err(UnitsError::Enable {
                        timer: (*timer).to_owned(),
                    });
                }
            }
            what.push_str(&format!(", {shown} enabled"));
        } else {
            what.push_str(&format!(
                ", units in {} (systemd is not running here: enable {shown} where it does)",
                dir.display()
            ));
        }
        Ok(what)
    }
}
