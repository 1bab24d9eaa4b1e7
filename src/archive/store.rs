//! Where backups are kept. A [`Store`] holds, per backup name, data files and their
//! manifests; [`LocalStore`] is a directory on the host (created 0700, files 0600). An object
//! store can follow behind the same trait.
//!
//! berth only ever makes, and changes the mode of, a store directory that is its own. As
//! restic's repository `config`, a marker file ([`MARKER`]) written inside when berth makes
//! the directory says so. A directory without it is adopted only when it is empty and owned
//! by the user berth runs as (or holds nothing but backups, from before the marker);
//! anything else is refused, never chmod-ed. `/`, system directories and temporary
//! directories are refused whatever is there ([`fsutil::refused_place`]).
//!
//! Here: the trait and where a store may be ([`inspect`]); the directory store itself is
//! `store/local.rs`.

use std::io::Write;
use std::path::Path;

mod local;
pub mod s3;
pub mod sftp;
mod stream;

pub use local::LocalStore;
pub use s3::{S3Config, S3Store};
pub use sftp::SftpStore;

use super::{BackupError, Manifest};
use crate::fsutil;

/// A place that keeps backups.
pub trait Store {
    /// Where a new backup's data goes, as a writer; [`Store::commit`] makes it visible.
    fn create(&self, name: &str, id: &str) -> Result<Box<dyn Write + Send>, BackupError>;
    /// Publishes a backup: its manifest, written after the data, atomically.
    fn commit(&self, manifest: &Manifest) -> Result<(), BackupError>;
    /// The size and SHA-256 of a backup's data as this store read it back from where it
    /// is while this process wrote it, once [`Store::commit`] has taken it in; `None` where
    /// the store reads nothing back as it writes (the caller reads it whole:
    /// [`crate::archive::check_stored`]). Taken once.
    fn read_back_while_written(&self, _name: &str, _id: &str) -> Option<(u64, String)> {
        None
    }
    /// Removes a backup whose data could not be written or verified.
    fn discard(&self, name: &str, id: &str);
    /// The manifest files of a backup name (file names, `ID.manifest.json`), any order.
    fn manifest_files(&self, name: &str) -> Result<Vec<String>, BackupError>;
    /// One manifest file of `name`, read and parsed; or why it cannot be.
    fn read_manifest(&self, name: &str, file: &str) -> Result<Manifest, String>;
    /// Where a manifest file of `name` is, for people.
    fn manifest_place(&self, name: &str, file: &str) -> String;
    /// The manifests of a backup name, oldest first; those that cannot be read are left
    /// out (see [`Store::damaged`]). A manifest under another name than its id, or of
    /// another backup, is not this backup's (a copy, or a swap): it is left out, never
    /// restored or pruned.
    fn list(&self, name: &str) -> Result<Vec<Manifest>, BackupError> {
        let mut out: Vec<Manifest> = self
            .manifest_files(name)?
            .into_iter()
            .filter_map(|file| {
                let m = self.read_manifest(name, &file).ok()?;
                (file == format!("{}{MANIFEST}", m.id) && m.name == name).then_some(m)
            })
            .collect();
        // Ids begin with the time to the millisecond: their order is the order taken.
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }
    /// The manifest files of a backup name that cannot be read or parsed, and why: listed
    /// as damaged, never in the way of the others.
    fn damaged(&self, name: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .manifest_files(name)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|file| {
                let why = self.read_manifest(name, &file).err()?;
                Some((self.manifest_place(name, &file), why))
            })
            .collect();
        out.sort();
        out
    }
    /// The data of a backup, to read.
    fn open(&self, name: &str, id: &str) -> Result<Box<dyn std::io::Read + Send>, BackupError>;
    /// Deletes a backup: its data and its manifest (in the order that leaves the store
    /// clean if it is cut short, which each store says).
    fn delete(&self, name: &str, id: &str) -> Result<(), BackupError>;
    /// Where the data of a backup is, for people (and the disaster-recovery one-liner).
    fn locate(&self, name: &str, id: &str) -> String;
    /// When the data of a backup was last written (seconds since the epoch), if known: a
    /// witness of the manifest's time that the manifest cannot forge.
    fn modified(&self, name: &str, id: &str) -> Option<u64>;
    /// The data files of `name` that berth began and never finished: no manifest, and no
    /// process writing them any more (a backup or a safety copy killed while it wrote).
    /// Never verified, never restorable by berth.
    fn incomplete(&self, name: &str) -> Result<Vec<Incomplete>, BackupError>;
    /// Removes an incomplete data file, if it still is one (checked again while holding
    /// it); says whether it did.
    fn remove_incomplete(&self, name: &str, id: &str) -> Result<bool, BackupError>;
}

/// A data file without a manifest, which no process is writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete {
    pub id: String,
    pub bytes: u64,
    /// When it was last written (seconds since the epoch).
    pub modified: u64,
}

const DATA: &str = ".tar.zst.age";
const MANIFEST: &str = ".manifest.json";

/// The file berth writes inside a store directory it makes (or adopts): the proof that the
/// directory is berth's to chmod.
pub const MARKER: &str = ".berth-store";

/// What is at a store's path, as far as berth may touch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing yet: berth makes it.
    Missing,
    /// berth's own (its marker is inside), with this mode.
    Ours { mode: u32 },
    /// Not yet berth's, but berth may make it its own: empty and owned by the user berth
    /// runs as, or holding nothing but backups (a store made before the marker) and 0700.
    Adoptable,
    /// Never a store: why, and what to do.
    Refused(String),
}

/// Whether a directory holds nothing but backup folders of data files and manifests.
fn only_backups(root: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else {
        return false;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else {
            return false;
        };
        if !kind.is_dir() {
            return false;
        }
        let Ok(files) = std::fs::read_dir(e.path()) else {
            return false;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let berths = name.ends_with(DATA)
                || name.ends_with(MANIFEST)
                || (name.starts_with('.') && name.contains(".berth-tmp"));
            if !berths || !f.file_type().is_ok_and(|t| t.is_file()) {
                return false;
            }
        }
    }
    true
}

/// Looks at a store's path (never changes anything): whether berth may use it, make it, or
/// change its mode.
pub fn inspect(root: &Path) -> Found {
    let shown = root.display().to_string();
    if !root.is_absolute() {
        return Found::Refused(format!("`{shown}` is not an absolute path"));
    }
    if let Some(why) = fsutil::refused_place(root) {
        return Found::Refused(why);
    }
    // Where it leads once symlinks are followed (of the part that exists).
    let mut existing = root.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    if let Ok(mut real) = existing.canonicalize() {
        real.extend(rest.iter().rev());
        if let Some(why) = fsutil::refused_place(&real) {
            return Found::Refused(format!("`{shown}` leads to `{}`: {why}", real.display()));
        }
    }
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        // A symlink to nothing: berth could not make the directory through it.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::fs::symlink_metadata(root).is_ok() =>
        {
            return Found::Refused(format!(
                "`{shown}` is a symlink that leads nowhere (its target does not exist): make the target directory, or point `store:` at a directory"
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Missing,
        Err(e) => return Found::Refused(format!("`{shown}`: {e}")),
    };
    if !meta.is_dir() {
        return Found::Refused(format!("`{shown}` exists and is not a directory"));
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = meta.permissions().mode() & 0o7777;
    let mine = fsutil::is_mine(&meta);
    let marker = std::fs::symlink_metadata(root.join(MARKER));
    if marker.as_ref().is_ok_and(|m| m.is_file()) {
        // A marker says "berth's" only in a directory of berth's user, written by that
        // user: one planted in (or a directory handed over by) another user is not.
        if mine && marker.as_ref().is_ok_and(fsutil::is_mine) {
            return Found::Ours { mode };
        }
        return Found::Refused(format!(
            "`{shown}` has a {MARKER}, but {} is owned by another user than the one berth runs as (uid {}): berth never uses or changes the mode of a directory that is not its own",
            if mine { "the marker" } else { "the directory" },
            fsutil::effective_uid()
        ));
    }
    let empty = std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_none());
    if mine && (empty || (mode & 0o077 == 0 && only_backups(root))) {
        return Found::Adoptable;
    }
    let head = format!("`{shown}` exists and was not made by berth (there is no {MARKER} in it)");
    Found::Refused(if !mine {
        format!(
            "{head}, and it is owned by uid {}, not by the user berth runs as: berth never uses or changes the mode of a directory that is not its own",
            meta.uid()
        )
    } else if only_backups(root) {
        // A store from before the marker, that others can read.
        format!(
            "{head}; it holds only backups, but others can read it (mode {mode:04o}): `chmod 700` it by hand and berth makes it its own"
        )
    } else {
        format!(
            "{head}, and it is not empty: berth never uses or changes the mode of a directory that is not its own"
        )
    })
}

/// The incomplete data of a store that cannot lock what it writes (one on another
/// machine): of its `entries` (file name, bytes, modified seconds), the data files (their
/// id from `data_id`) with no manifest among them, older than `grace` seconds (a backup
/// commits its manifest within moments of its data). Sorted by id.
pub(super) fn unfinished(
    entries: &[(String, u64, u64)],
    data_id: impl Fn(&str) -> Option<&str>,
    now: u64,
    grace: u64,
) -> Vec<Incomplete> {
    let manifests: std::collections::HashSet<&str> = entries
        .iter()
        .filter_map(|(f, _, _)| f.strip_suffix(MANIFEST))
        .collect();
    let mut out: Vec<Incomplete> = entries
        .iter()
        .filter_map(|(file, bytes, modified)| {
            let id = data_id(file).filter(|id| is_backup_id(id))?;
            let old = now.saturating_sub(*modified) >= grace;
            (old && !manifests.contains(id)).then(|| Incomplete {
                id: id.to_owned(),
                bytes: *bytes,
                modified: *modified,
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Whether `id` is one berth makes ([`super::new_id`]): `YYYYMMDDTHHMMSS.mmmZ-xxxxxx`.
fn is_backup_id(id: &str) -> bool {
    let b = id.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 27
        && digits(0..8)
        && b[8] == b'T'
        && digits(9..15)
        && b[15] == b'.'
        && digits(16..19)
        && b[19] == b'Z'
        && b[20] == b'-'
        && b[21..]
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// A directory for a unit test's store, where the store policy allows one wherever the
/// repository is (not under the build's directory, which may be under /tmp).
#[cfg(test)]
pub fn test_root(tag: &str) -> std::path::PathBuf {
    let home = std::env::var_os("HOME")
        .map_or_else(|| std::path::PathBuf::from("/"), std::path::PathBuf::from);
    let parent = home.join(".cache").join("berth-tests");
    std::fs::create_dir_all(&parent).unwrap();
    parent.join(format!("unit-{tag}-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_under_tmp_or_readable_by_others_are_refused() {
        assert!(LocalStore::open(Path::new("/tmp/backups")).is_err());
        assert!(LocalStore::open(Path::new("relative")).is_err());
        let here = test_root("store");
        let _ = std::fs::remove_dir_all(&here);
        LocalStore::open(&here).unwrap();
        assert_eq!(fsutil::mode_of(&here).unwrap(), 0o700);
        assert!(here.join(MARKER).is_file());
        fsutil::set_mode(&here, 0o755).unwrap();
        let e = LocalStore::open(&here).err().unwrap().to_string();
        assert!(e.contains("0755"), "{e}");
        // Its own store, apply gives back its mode.
        let (_, done) = LocalStore::set_up(&here).unwrap();
        assert_eq!(done, "mode 0755 -> 0700");
        assert_eq!(fsutil::mode_of(&here).unwrap(), 0o700);
        std::fs::remove_dir_all(&here).unwrap();
    }

    #[test]
    fn a_data_file_without_a_manifest_is_incomplete_only_once_its_writer_is_gone() {
        let here = test_root("incomplete");
        let _ = std::fs::remove_dir_all(&here);
        let writer = LocalStore::open(&here).unwrap();
        let other = LocalStore::open(&here).unwrap();
        let id = crate::archive::new_id(1_767_571_200_000);
        assert!(is_backup_id(&id), "{id}");
        let mut out = writer.create("db", &id).unwrap();
        out.write_all(b"sealed bytes").unwrap();
        drop(out);
        // Being written (locked by its writer, here or in another process): not incomplete.
        assert_eq!(writer.incomplete("db").unwrap(), []);
        assert_eq!(other.incomplete("db").unwrap(), []);
        assert!(!other.remove_incomplete("db", &id).unwrap());
        // Its writer gone (as a killed process lets go of its lock): incomplete.
        drop(writer);
        let found = other.incomplete("db").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].id.as_str(), found[0].bytes), (id.as_str(), 12));
        // A file not named as berth names its data, or one with a manifest, never is.
        std::fs::write(here.join("db/mine.tar.zst.age"), "x").unwrap();
        let done = crate::archive::new_id(1_767_571_300_000);
        std::fs::write(here.join(format!("db/{done}{DATA}")), "x").unwrap();
        std::fs::write(here.join(format!("db/{done}{MANIFEST}")), "{}").unwrap();
        assert_eq!(other.incomplete("db").unwrap().len(), 1);
        assert!(!other.remove_incomplete("db", "mine").unwrap());
        assert!(!other.remove_incomplete("db", &done).unwrap());
        assert!(other.remove_incomplete("db", &id).unwrap());
        assert_eq!(other.incomplete("db").unwrap(), []);
        assert!(here.join("db/mine.tar.zst.age").exists());
        assert!(here.join(format!("db/{done}{DATA}")).exists());
        // One this very process is writing is not incomplete either.
        let id = crate::archive::new_id(1_767_571_400_000);
        drop(other.create("db", &id).unwrap());
        assert_eq!(other.incomplete("db").unwrap(), []);
        std::fs::remove_dir_all(&here).unwrap();
    }

    #[test]
    fn a_directory_berth_did_not_make_is_refused_unless_empty_and_ours() {
        let here = test_root("adopt");
        let _ = std::fs::remove_dir_all(&here);
        fsutil::create_dir_all(&here, 0o755).unwrap();
        // Empty and ours: adopted (made 0700, marked).
        assert_eq!(inspect(&here), Found::Adoptable);
        let (_, done) = LocalStore::set_up(&here).unwrap();
        assert_eq!(done, "made berth's (0700)");
        assert_eq!(inspect(&here), Found::Ours { mode: 0o700 });
        // Not berth's and not empty: refused, its mode untouched.
        std::fs::remove_file(here.join(MARKER)).unwrap();
        std::fs::write(here.join("someone's file"), "x").unwrap();
        fsutil::set_mode(&here, 0o755).unwrap();
        assert!(matches!(inspect(&here), Found::Refused(w) if w.contains("not made by berth")));
        assert!(LocalStore::set_up(&here).is_err());
        assert_eq!(fsutil::mode_of(&here).unwrap(), 0o755);
        // A store from before the marker: only backups in it. 0700: adopted; readable by
        // others: refused, saying how to make it berth's.
        std::fs::remove_file(here.join("someone's file")).unwrap();
        std::fs::create_dir_all(here.join("db")).unwrap();
        std::fs::write(here.join("db/x.tar.zst.age"), "x").unwrap();
        std::fs::write(here.join("db/x.manifest.json"), "{}").unwrap();
        assert!(matches!(inspect(&here), Found::Refused(w) if w.contains("chmod 700")));
        fsutil::set_mode(&here, 0o700).unwrap();
        assert_eq!(inspect(&here), Found::Adoptable);
        // A symlink that leads to a temporary directory.
        let link = test_root("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        assert!(matches!(inspect(&link.join("b")), Found::Refused(w) if w.contains("leads to")));
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&here).unwrap();
    }

    #[test]
    fn a_remote_stores_data_without_a_manifest_is_incomplete_once_it_is_old() {
        let (old, new, done) = (
            crate::archive::new_id(1_767_571_200_000),
            crate::archive::new_id(1_767_571_300_000),
            crate::archive::new_id(1_767_571_400_000),
        );
        let now = 10_000;
        let entries = vec![
            (format!("{old}{DATA}"), 5, now - 700),
            (format!("{new}{DATA}"), 5, now - 10),
            (format!("{done}{DATA}"), 5, now - 700),
            (format!("{done}{MANIFEST}"), 1, now - 700),
            ("mine.tar.zst.age".to_owned(), 5, now - 700),
        ];
        let found = unfinished(&entries, |f| f.strip_suffix(DATA), now, 600);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].id.as_str(), found[0].bytes), (old.as_str(), 5));
    }

    #[test]
    fn a_dangling_symlink_store_is_refused_before_anything_is_made() {
        let here = test_root("dangling");
        let _ = std::fs::remove_dir_all(&here);
        std::fs::create_dir_all(&here).unwrap();
        let link = here.join("dang");
        std::os::unix::fs::symlink(here.join("nonexist"), &link).unwrap();
        assert!(matches!(inspect(&link), Found::Refused(w) if w.contains("leads nowhere")));
        assert!(LocalStore::set_up(&link).is_err());
        assert!(!here.join("nonexist").exists());
        std::fs::remove_dir_all(&here).unwrap();
    }

    #[test]
    fn a_marker_in_another_users_directory_does_not_make_it_berths() {
        if fsutil::effective_uid() != 0 {
            return; // only root can give a directory to another user
        }
        let nobody = Some(65534);
        let here = test_root("foreign");
        let _ = std::fs::remove_dir_all(&here);
        std::fs::create_dir_all(&here).unwrap();
        std::fs::write(here.join(MARKER), "planted").unwrap();
        std::os::unix::fs::chown(&here, nobody, nobody).unwrap();
        std::os::unix::fs::chown(here.join(MARKER), nobody, nobody).unwrap();
        fsutil::set_mode(&here, 0o777).unwrap();
        assert!(matches!(inspect(&here), Found::Refused(w) if w.contains("another user")));
        assert!(LocalStore::set_up(&here).is_err());
        assert_eq!(fsutil::mode_of(&here).unwrap(), 0o777);
        // The directory is ours, the marker someone else's (planted while it was open).
        std::os::unix::fs::chown(&here, Some(0), Some(0)).unwrap();
        assert!(matches!(inspect(&here), Found::Refused(w) if w.contains("the marker")));
        assert!(LocalStore::set_up(&here).is_err());
        assert_eq!(fsutil::mode_of(&here).unwrap(), 0o777);
        std::fs::remove_dir_all(&here).unwrap();
    }

    #[test]
    fn a_damaged_manifest_is_listed_as_damaged_and_does_not_hide_the_others() {
        let here = test_root("damaged");
        let _ = std::fs::remove_dir_all(&here);
        let store = LocalStore::open(&here).unwrap();
        fsutil::create_dir_all(&here.join("data"), 0o700).unwrap();
        let good = Manifest {
            format_version: crate::archive::MANIFEST_FORMAT,
            id: "20260101T000000.000Z-aaaa".into(),
            name: "data".into(),
            project: "p".into(),
            source: "volume data".into(),
            format: "tar+zstd+age".into(),
            created_at: 1,
            revision: 0,
            berth_version: "x".into(),
            recipients: vec![],
            plain_bytes: 0,
            plain_sha256: String::new(),
            stored_bytes: 0,
            stored_sha256: String::new(),
            verified: true,
            safety: false,
            mac: None,
        };
        store.commit(&good).unwrap();
        let mut old = good.clone();
        old.id = "20251231T000000.000Z-bbbb".into();
        store.commit(&old).unwrap();
        // The first byte of one flipped, and junk under a manifest's name.
        let flipped = here.join("data").join(format!("{}{MANIFEST}", old.id));
        let mut bytes = std::fs::read(&flipped).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&flipped, bytes).unwrap();
        std::fs::write(here.join("data/junk.manifest.json"), "junk").unwrap();
        let listed = store.list("data").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, good.id);
        let damaged = store.damaged("data");
        assert_eq!(damaged.len(), 2, "{damaged:?}");
        assert!(
            damaged[0].0.ends_with(&format!("{}{MANIFEST}", old.id)),
            "{damaged:?}"
        );
        assert!(damaged[1].0.ends_with("junk.manifest.json"), "{damaged:?}");
        assert!(
            damaged
                .iter()
                .all(|(_, why)| why.contains("does not parse"))
        );
        std::fs::remove_dir_all(&here).unwrap();
    }
}
