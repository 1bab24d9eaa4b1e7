//! Where a restore puts a backup back, checked before anything is touched, and what it
//! would overwrite, create and remove there (all a dry run does).

use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::Place;
use crate::archive::helpers::create_helper;
use crate::archive::refill::foreign_users;
use crate::archive::{Manifest, pipeline, verify_seeing};
use crate::backup::ops::{Backups, failed};
use crate::engine::Engine;
use crate::error::OpError;
use crate::spec::Backup;

impl Backups {
    /// Where backup `name` goes back, refused when berth must not empty it: a volume berth
    /// does not manage or that other containers use; a directory that is too close to the
    /// root or that holds what a restore needs.
    pub(super) fn place(&self, name: &str, backup: &Backup) -> Result<Place, OpError> {
        let source = &backup.source.value;
        if let Some(path) = &source.path {
            let root = self
                .project
                .spec_dir
                .join(crate::fsutil::expand_home(&path.value));
            return Ok(Place::Path {
                root: self.path_place(name, &root)?,
            });
        }
        let Some(volume) = source.volume.as_ref().map(|v| v.value.clone()) else {
            return Err(failed(
                name,
                "its source names no volume, path, or pod with `exec`",
                "give `source: { volume: NAME }`, `{ path: /abs }` or `{ pod: NAME, exec: [...] }`",
            ));
        };
        // Restoring makes the volume again: never one berth does not manage.
        if self
            .project
            .spec
            .volumes
            .get(&volume)
            .is_some_and(|v| v.external)
        {
            return Err(failed(
                name,
                format!("volume `{volume}` is external: berth never removes or makes it"),
                "restore it by hand with the one-liner in the README, into a container that mounts it",
            ));
        }
        let engine = self.engine(name)?;
        let project = self.project.name();
        let object = crate::apply::container::object_name(project, &volume);
        // Restoring removes the volume: a container berth does not manage that uses it
        // would make that fail after the pods had gone. Refused before anything is touched.
        let foreign = self
            .project
            .runtime
            .block_on(engine.foreign_on_volume(&object, project))?;
        if !foreign.is_empty() {
            return Err(failed(
                name,
                foreign_users(&object, &foreign),
                "nothing was changed; run the restore again once they are gone",
            ));
        }
        Ok(Place::Volume { volume, object })
    }

    /// A directory to restore, as its real path (no `..`, no symlink): never a top-level
    /// one, and never one that holds anything berth needs to undo the restore.
    pub(super) fn path_place(&self, name: &str, root: &Path) -> Result<PathBuf, OpError> {
        let root = std::fs::canonicalize(root).map_err(|e| {
            failed(
                name,
                format!("`{}`: {e}", root.display()),
                "the path must exist",
            )
        })?;
        let store_root = self.store(self.get(name)?)?.root;
        let precious = [
            (
                "the backup store",
                std::fs::canonicalize(&store_root).unwrap_or(store_root),
            ),
            ("the spec", self.project.spec_dir.clone()),
            ("the state directory", self.project.state.path.clone()),
        ];
        let identity_path = self.project.identity.as_ref().map(|i| i.path.clone());
        for (what, p) in precious
            .into_iter()
            .chain(identity_path.map(|p| ("the identity", p)))
        {
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            if p.starts_with(&root) {
                return Err(failed(
                    name,
                    format!(
                        "{what} is inside `{}`, which a restore empties",
                        root.display()
                    ),
                    "keep the store, the spec, the state and the key outside the backed-up path",
                ));
            }
        }
        if root.components().count() < 3 {
            return Err(failed(
                name,
                format!(
                    "`{}` is too close to the root to be emptied and restored",
                    root.display()
                ),
                "back up (and restore) a directory of its own, such as /srv/APP/uploads",
            ));
        }
        Ok(root)
    }

    /// What is in the place now (a volume's entries through a helper container, a
    /// directory's by walking it), read before anything is changed.
    pub(super) fn current_entries(
        &self,
        name: &str,
        place: &Place,
    ) -> Result<Vec<String>, OpError> {
        match place {
            Place::Volume { object, .. } => {
                let engine = self.engine(name)?;
                self.project
                    .runtime
                    .block_on(self.volume_entries(engine, object))
            }
            Place::Path { root } => Ok(walk(root)),
        }
    }

    /// What restoring `manifest` (whose entries are `incoming`) into `place` (holding
    /// `current`) would overwrite, create and remove, as lines for the person.
    pub(super) fn change_lines(
        &self,
        manifest: &Manifest,
        place: &Place,
        incoming: &[String],
        current: &[String],
        dry_run: bool,
    ) -> Vec<String> {
        let when = crate::clock::format_time(manifest.created_at);
        // Looked up in sets: a tree of many thousand entries stays quick.
        let now: std::collections::HashSet<&String> = current.iter().collect();
        let coming: std::collections::HashSet<&String> = incoming.iter().collect();
        match place {
            Place::Volume { .. } => {
                let overwritten: Vec<&String> =
                    incoming.iter().filter(|e| now.contains(e)).collect();
                let created: Vec<&String> = incoming.iter().filter(|e| !now.contains(e)).collect();
                let removed: Vec<&String> =
                    current.iter().filter(|e| !coming.contains(e)).collect();
                let mut lines = vec![format!(
                    "{} from backup {} ({when}): {} entries overwritten, {} created, {} removed (not in the backup)",
                    if dry_run {
                        "would restore volume"
                    } else {
                        "restoring volume"
                    },
                    manifest.id,
                    overwritten.len(),
                    created.len(),
                    removed.len()
                )];
                for (what, list) in [
                    ("overwrite", &overwritten),
                    ("create", &created),
                    ("remove", &removed),
                ] {
                    for e in list.iter().take(20) {
                        lines.push(format!("  {what} {e}"));
                    }
                    if list.len() > 20 {
                        lines.push(format!("  ... and {} more to {what}", list.len() - 20));
                    }
                }
                lines
            }
            Place::Path { root } => {
                let overwritten = incoming.iter().filter(|e| now.contains(e)).count();
                let created = incoming.len() - overwritten;
                let removed: Vec<&String> =
                    current.iter().filter(|e| !coming.contains(e)).collect();
                let mut lines = vec![format!(
                    "{} {} from backup {} ({when}): {overwritten} entries overwritten, {created} created, {} removed (not in the backup)",
                    if dry_run {
                        "would restore"
                    } else {
                        "restoring"
                    },
                    root.display(),
                    manifest.id,
                    removed.len()
                )];
                for e in removed.iter().take(20) {
                    lines.push(format!("  remove {e}"));
                }
                lines
            }
        }
    }

    /// The backup to restore: `id`, or the newest verified one that is not a safety copy
    /// and whose time is trusted (those passed over are named on stderr).
    pub fn choose(&self, name: &str, id: Option<&str>) -> Result<Manifest, OpError> {
        let found = match id {
            Some(id) => self.list(name)?.into_iter().find(|m| m.id == id),
            None => {
                let (found, skipped) = self.newest_trusted(name, |m| m.verified && !m.safety)?;
                for (id, why) in skipped {
                    eprintln!(
                        "backup `{name}`: passing over {id} ({why}); name its id to restore it anyway"
                    );
                }
                found
            }
        };
        if let Some(found) = found {
            return Ok(found);
        }
        if let Some(id) = id
            && let Some((_, found)) = self
                .unauthenticated(name)?
                .into_iter()
                .find(|(m, _)| m.id == id)
        {
            return Err(failed(
                name,
                format!("backup `{id}` {}", found.why_not()),
                "berth restores only backups it can authenticate; if you know this one is yours (taken before `backup_key:` was set), restore it by hand with the one-liner of the README's \"Backups\" section",
            ));
        }
        Err(failed(
            name,
            match id {
                Some(id) => format!("there is no backup `{id}`"),
                None => "there is no verified backup at a trusted time to restore".into(),
            },
            "`berth backup list` shows them",
        ))
    }

    /// The entries of a backup's tar stream, read in the same pass that verifies it.
    pub(super) fn entries_of(&self, name: &str, m: &Manifest) -> Result<Vec<String>, OpError> {
        let identity = self.identity(name)?;
        let store = self.store(self.get(name)?)?;
        let mut names = Vec::new();
        verify_seeing(&store, m, identity, |p| {
            if let Some(n) = tar_name(p) {
                names.push(n);
            }
        })?;
        Ok(names)
    }

    /// The entries now in a volume (through a helper container).
    pub(super) async fn volume_entries(
        &self,
        engine: &Engine,
        object: &str,
    ) -> Result<Vec<String>, OpError> {
        let project = self.project.spec.project.value.as_str();
        let containers = engine.containers(project).await?;
        let Some(image) = containers.first().map(|c| c.image_id.clone()) else {
            return Ok(Vec::new());
        };
        let helper = create_helper(engine, project, &image, object).await?;
        // Streamed to a thread that reads the names: memory stays bounded whatever the
        // volume holds.
        let (tx, rx) = tokio::sync::mpsc::channel::<hyper::body::Bytes>(64);
        let lister = std::thread::spawn(move || tar_names(pipeline::BytesReader::new(rx)));
        let mut stream = engine.download(&helper, "/volume/.");
        let mut failure = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(stream);
        drop(tx);
        let names = tokio::task::spawn_blocking(move || lister.join().unwrap_or_default())
            .await
            .unwrap_or_default();
        let _ = engine.remove(&helper).await;
        if let Some(e) = failure {
            return Err(e.into());
        }
        Ok(names)
    }
}

/// An entry's name as a restore lists it (`./a/b` as `a/b`; none for the root).
pub(super) fn tar_name(p: &Path) -> Option<String> {
    let p = p.display().to_string();
    let p = p.trim_start_matches("./").trim_end_matches('/').to_owned();
    (!p.is_empty() && p != ".").then_some(p)
}

/// The names in a tar stream (`./a/b` as `a/b`), directories included.
fn tar_names(r: impl std::io::Read) -> Vec<String> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(r);
    if let Ok(entries) = archive.entries() {
        for e in entries.flatten() {
            if let Ok(p) = e.path()
                && let Some(p) = tar_name(&p)
            {
                out.push(p);
            }
        }
    }
    // Read to the very end (the padding after the end-of-archive blocks), so that the
    // writer never finds the reader gone.
    let _ = std::io::copy(&mut archive.into_inner(), &mut std::io::sink());
    out
}

/// The relative paths under a directory (directories included), as tar names them.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}
