//! `berth backup restore NAME [ID] --to-path DIR [--files PATTERN]...`: a backup put into a
//! new directory instead of its place, touching nothing live (no pod stops, no safety
//! copy, no journal: there is nothing to undo but the directory it made). The whole
//! stream is read and checked against the manifest, also what `--files` leaves out; a
//! backup that does not match leaves no directory behind.

use std::path::Path;

use super::super::ops::{Backups, failed};
use crate::archive::refill::{fill_volume, stream_to, unpack_to};
use crate::archive::store::Store;
use crate::error::OpError;

/// What a restore elsewhere wrote.
pub struct Elsewhere {
    pub id: String,
    /// The directory, file (a command's output) or volume written, for people.
    pub written: String,
    /// Entries written (of a tar backup), and entries in the backup.
    pub entries: Option<(u64, u64)>,
    pub bytes: u64,
}

impl Backups {
    /// Backup `id` of `name` (default: the newest verified one whose time is trusted, as
    /// a restore in place picks) unpacked into `dir`, which must not exist or be empty;
    /// with `files`, only the entries a pattern matches (a path, or a directory above it).
    pub fn restore_to_path(
        &self,
        name: &str,
        id: Option<&str>,
        dir: &Path,
        files: &[String],
    ) -> Result<Elsewhere, OpError> {
        let backup = self.get(name)?;
        let keep = matcher(name, files)?;
        let exec = backup.source.value.exec.is_some();
        if exec && !files.is_empty() {
            return Err(failed(
                name,
                "`--files` picks entries of a tar, and this backup is a command's output",
                "leave out `--files`: the output is written whole, as one file",
            ));
        }
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let empty = std::fs::read_dir(&dir).map(|mut d| d.next().is_none());
        let made = match empty {
            Ok(true) => false,
            Ok(false) => {
                return Err(failed(
                    name,
                    format!("`{}` is not empty", dir.display()),
                    "give a new or empty directory: a restore elsewhere never overwrites",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(failed(
                    name,
                    format!("`{}`: {e}", dir.display()),
                    "give a directory berth may write",
                ));
            }
        };
        let _lock = self.lock(&format!("berth backup restore {name} --to-path"))?;
        let manifest = self.choose(name, id)?;
        let from = self.backup_ref(name, &manifest.id)?;
        if made {
            crate::fsutil::create_dir_all(&dir, 0o700).map_err(|e| {
                failed(
                    name,
                    format!("`{}`: {e}", dir.display()),
                    "give a directory berth may write",
                )
            })?;
        }
        let written = std::cell::Cell::new(0u64);
        let total = std::cell::Cell::new(0u64);
        let result = if exec {
            let file = dir.join(format!("{name}-{}.out", manifest.id));
            stream_to(&file, &from).map(|stats| (stats, file.display().to_string()))
        } else {
            let counted = |p: &Path| {
                let kept = keep(p);
                total.set(total.get() + 1);
                written.set(written.get() + u64::from(kept));
                kept
            };
            unpack_to(&dir, &from, &counted).map(|stats| (stats, dir.display().to_string()))
        };
        let what = self.store(backup)?.locate(name, &manifest.id);
        let checked = result
            .and_then(|(stats, at)| from.check(&stats).map(|()| (stats, at)))
            .map_err(|e| OpError::from(super::unpack_failure(name, &what, "there", e)));
        match checked {
            Ok((stats, at)) => Ok(Elsewhere {
                id: manifest.id,
                written: at,
                entries: (!exec).then_some((written.get(), total.get())),
                bytes: stats.plain_bytes,
            }),
            Err(e) => {
                // What was written does not match the backup: none of it is kept (the
                // directory was new, or empty).
                if made {
                    let _ = std::fs::remove_dir_all(&dir);
                } else if let Ok(entries) = std::fs::read_dir(&dir) {
                    for p in entries.flatten().map(|e| e.path()) {
                        let _ = if p.is_dir() && !p.is_symlink() {
                            std::fs::remove_dir_all(&p)
                        } else {
                            std::fs::remove_file(&p)
                        };
                    }
                }
                Err(e)
            }
        }
    }
}

impl Backups {
    /// Backup `id` of `name` (a tar: of a volume or a host path) unpacked into `volume`, a
    /// new volume on the backup's engine, made here and left to the user (it has no project
    /// label: berth never plans, changes or removes it). Filled through a helper container
    /// of an image the project runs; the whole stream checked against the manifest, and the
    /// volume removed again when it does not match.
    pub fn restore_to_volume(
        &self,
        name: &str,
        id: Option<&str>,
        volume: &str,
    ) -> Result<Elsewhere, OpError> {
        let backup = self.get(name)?;
        if backup.source.value.exec.is_some() {
            return Err(failed(
                name,
                "this backup is a command's output, not a tree to put in a volume",
                "`--to-path DIR` writes the output as a file",
            ));
        }
        let valid = volume.len() > 1
            && volume.starts_with(|c: char| c.is_ascii_alphanumeric())
            && volume
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(failed(
                name,
                format!("`{volume}` is not a volume name"),
                "give letters, digits, `_`, `.` and `-`, beginning with a letter or digit",
            ));
        }
        let _lock = self.lock(&format!("berth backup restore {name} --to-volume"))?;
        let manifest = self.choose(name, id)?;
        let from = self.backup_ref(name, &manifest.id)?;
        let what = self.store(backup)?.locate(name, &manifest.id);
        let engine = self.engine(name)?;
        let project = self.project.spec.project.value.as_str();
        let exists = |e| failed(name, format!("volume `{volume}`: {e}"), "check the engine");
        self.project.runtime.block_on(async {
            use crate::engine::docker::ObjectKind;
            if engine.labels_of(ObjectKind::Volume, volume).await.map_err(exists)?.is_some() {
                return Err(failed(
                    name,
                    format!("volume `{volume}` exists already"),
                    "name a new volume: a restore elsewhere never overwrites",
                ));
            }
            let containers = engine.containers(project).await?;
            let Some(image) = containers.first().map(|c| c.image_id.clone()) else {
                return Err(failed(
                    name,
                    "no container of the project runs on its engine to make the helper from",
                    "apply the spec first (the helper that fills the volume uses an image the project runs)",
                ));
            };
            let labels = std::collections::HashMap::from([(
                "io.berth.restored-from".to_owned(),
                format!("{project} {name} {}", manifest.id),
            )]);
            engine.create_volume(volume, labels).await?;
            let filled = match from.open() {
                Ok(data) => fill_volume(engine, project, volume, &image, data, &from.identity).await,
                Err(e) => Err(e),
            };
            let checked = filled.and_then(|stats| from.check(&stats).map(|()| stats));
            match checked {
                Ok(stats) => Ok(Elsewhere {
                    id: manifest.id.clone(),
                    written: format!("volume {volume}"),
                    entries: None,
                    bytes: stats.plain_bytes,
                }),
                Err(e) => {
                    // What went in does not match the backup: the new volume goes.
                    let _ = engine.remove_volume(volume).await;
                    Err(super::unpack_failure(name, &what, "into the new volume", e).into())
                }
            }
        })
    }
}

/// Whether a tar entry is to be written.
type Keep = Box<dyn Fn(&Path) -> bool>;

/// Whether a tar entry is one `--files` asks for: every entry without patterns; with
/// them, one a pattern matches, or one under a directory a pattern matches.
fn matcher(name: &str, files: &[String]) -> Result<Keep, OpError> {
    if files.is_empty() {
        return Ok(Box::new(|_| true));
    }
    let mut set = globset::GlobSetBuilder::new();
    for f in files {
        let glob = globset::GlobBuilder::new(f.trim_start_matches("./").trim_end_matches('/'))
            .literal_separator(true)
            .build()
            .map_err(|e| {
                failed(
                    name,
                    format!("`--files {f}`: {e}"),
                    "write a glob such as `uploads/2026-*` or `config.json`",
                )
            })?;
        set.add(glob);
    }
    let set = set.build().map_err(|e| {
        failed(
            name,
            format!("`--files`: {e}"),
            "write globs such as `uploads/2026-*`",
        )
    })?;
    Ok(Box::new(move |p: &Path| {
        let Some(inside) = crate::archive::inside_name(p) else {
            return false;
        };
        inside
            .ancestors()
            .any(|a| !a.as_os_str().is_empty() && set.is_match(a))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_takes_what_it_matches_and_what_is_under_it() {
        let keep = matcher("d", &["uploads".into(), "*.json".into()]).unwrap();
        assert!(keep(Path::new("./uploads/a/b.png")));
        assert!(keep(Path::new("uploads")));
        assert!(keep(Path::new("./config.json")));
        assert!(
            !keep(Path::new("./nested/config.json")),
            "`*` stops at a slash"
        );
        assert!(!keep(Path::new("./other/x")));
        assert!(!keep(Path::new(".")));
        let all = matcher("d", &[]).unwrap();
        assert!(all(Path::new("./anything")));
        assert!(matcher("d", &["[".into()]).is_err());
    }
}
