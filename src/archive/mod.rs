//! Backup data, below the orchestration: what a backup is (its [`Manifest`], its
//! [`BackupError`]), the streaming pipeline ([`pipeline`]), the store behind a small trait
//! ([`store`]), retention ([`retention`]), timers' unit text and paths ([`schedule`]), the
//! helper containers ([`helpers`]) and putting data back in place ([`refill`], for a
//! restore and its undo). Apply and observe use it without reaching the orchestration
//! (`backup`: taking, restoring, verifying and pruning under the project's lock).
//!
//! A backup is a file `ID.tar.zst.age` (a tar stream, compressed with zstd, encrypted with
//! age to the backup's recipients) and a manifest `ID.manifest.json` written atomically
//! after it: the SHA-256 of the file, the size of the tar stream and its SHA-256, the
//! source, project, spec revision, berth version, time and the recipients. Every backup is
//! read back and checked before `backup run` reports success. Without berth:
//!
//! ```sh
//! age -d -i KEY ID.tar.zst.age | zstd -d | tar -x
//! ```

pub mod auth;
pub mod helpers;
pub mod pipeline;
pub mod refill;
pub mod retention;
pub mod schedule;
pub mod store;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BackupError {
    #[error("backup store: {0}")]
    #[diagnostic(
        code(berth::backup_store),
        help("the store is a directory of its own, absolute, not under /tmp, mode 0700")
    )]
    Store(String),
    #[error("`{what}` is damaged: {why}")]
    #[diagnostic(
        code(berth::backup_damaged),
        help(
            "this backup cannot be trusted; use another (`berth backup list`), and find out what changed the file"
        )
    )]
    Damaged { what: String, why: String },
    #[error("backup `{name}`: {why}")]
    #[diagnostic(code(berth::backup), help("{help}"))]
    Failed {
        name: String,
        why: String,
        help: String,
    },
}

/// What a backup holds and how to check it, written after its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub id: String,
    /// The backup's name in the spec.
    pub name: String,
    pub project: String,
    /// `volume NAME`, `path /srv/x`, `exec in pod NAME: CMD`.
    pub source: String,
    /// How to read the data: `tar+zstd+age`, or `stream+zstd+age` for a command's output.
    pub format: String,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// The latest revision applied when it was taken (0: none).
    pub revision: u64,
    pub berth_version: String,
    /// The public keys it is encrypted to.
    pub recipients: Vec<String>,
    /// The tar stream: bytes and SHA-256.
    pub plain_bytes: u64,
    pub plain_sha256: String,
    /// The stored file: bytes and SHA-256.
    pub stored_bytes: u64,
    pub stored_sha256: String,
    /// Read back and checked after it was written.
    pub verified: bool,
    /// Taken by a restore, to undo it.
    #[serde(default)]
    pub safety: bool,
    /// HMAC-SHA-256 of the rest under the spec's `backup_key` ([`auth`]); absent when the
    /// spec has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

pub const MANIFEST_FORMAT: u32 = 1;

/// A new backup id: the UTC time to the millisecond (so that ids sort as they were taken),
/// and a few random digits.
pub fn new_id(at_millis: u128) -> String {
    let at = (at_millis / 1000) as u64;
    let (y, m, d) = crate::clock::civil(at);
    let rem = at % 86_400;
    let mut r = [0u8; 3];
    let _ = getrandom::fill(&mut r);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z-{:02x}{:02x}{:02x}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        at_millis % 1000,
        r[0],
        r[1],
        r[2]
    )
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// What a full read-back found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub files: u64,
    pub plain_bytes: u64,
}

/// Reads a backup back whole: decrypts, decompresses, walks the tar (every entry read to
/// its end), and compares both hashes and the size with the manifest.
pub fn verify(
    store: &dyn store::Store,
    manifest: &Manifest,
    identity: &crate::secrets::age::Identity,
) -> Result<Verified, BackupError> {
    verify_seeing(store, manifest, identity, |_| {})
}

/// [`verify`], giving `seen` the name of each entry of the tar stream on the way (one
/// pass: what a restore says it would change comes from the read-back itself).
pub fn verify_seeing(
    store: &dyn store::Store,
    manifest: &Manifest,
    identity: &crate::secrets::age::Identity,
    seen: impl FnMut(&std::path::Path),
) -> Result<Verified, BackupError> {
    let what = store.locate(&manifest.name, &manifest.id);
    let damaged = |why: String| BackupError::Damaged {
        what: what.clone(),
        why,
    };
    let data = store.open(&manifest.name, &manifest.id)?;
    let (stats, files) =
        verify_stream(data, manifest, identity, seen).map_err(|e| damaged(e.to_string()))?;
    read_back_matches(what, manifest, &stats)?;
    Ok(Verified {
        files,
        plain_bytes: stats.plain_bytes,
    })
}

/// What reading a backup back found (`stats`) compared with its manifest: the stored
/// file's hash and size, then its content's. `what` names the backup.
pub fn read_back_matches(
    what: String,
    manifest: &Manifest,
    stats: &pipeline::Stats,
) -> Result<(), BackupError> {
    let damaged = |why: String| BackupError::Damaged {
        what: what.clone(),
        why,
    };
    if stats.stored_sha256 != manifest.stored_sha256 || stats.stored_bytes != manifest.stored_bytes
    {
        return Err(damaged(format!(
            "the file's SHA-256 is {}, the manifest says {} (another file, or a swapped manifest)",
            &stats.stored_sha256[..16],
            &manifest.stored_sha256.get(..16).unwrap_or("?")
        )));
    }
    if stats.plain_sha256 != manifest.plain_sha256 || stats.plain_bytes != manifest.plain_bytes {
        return Err(damaged(
            "its content does not match the manifest's hash and size".into(),
        ));
    }
    Ok(())
}

/// The stored file of a backup compared with its manifest (its size and SHA-256), without
/// decrypting it: one read, at the speed of the disk. A restore does this before it stops
/// anything, so that a damaged file is refused with the pods still up (the full read-back
/// follows, beside the safety copy).
pub fn check_stored(store: &dyn store::Store, manifest: &Manifest) -> Result<(), BackupError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let what = store.locate(&manifest.name, &manifest.id);
    let mut data = store.open(&manifest.name, &manifest.id)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = data.read(&mut buf).map_err(|e| BackupError::Damaged {
            what: what.clone(),
            why: format!("reading it: {e}"),
        })?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    let sha = crate::encode::hex(&hasher.finalize());
    stored_matches(what, manifest, bytes, &sha)
}

/// A copy of a backup's data, just written to `store` and committed, compared with its
/// manifest: what the store read back while it wrote it, or else the data read whole
/// ([`check_stored`]).
pub fn check_written(store: &dyn store::Store, manifest: &Manifest) -> Result<(), BackupError> {
    match store.read_back_while_written(&manifest.name, &manifest.id) {
        Some((bytes, sha)) => {
            let what = store.locate(&manifest.name, &manifest.id);
            stored_matches(what, manifest, bytes, &sha)
        }
        None => check_stored(store, manifest),
    }
}

/// The size and SHA-256 of a backup's stored data, as read from `what`, against its
/// manifest's.
fn stored_matches(
    what: String,
    manifest: &Manifest,
    bytes: u64,
    sha: &str,
) -> Result<(), BackupError> {
    if bytes != manifest.stored_bytes || sha != manifest.stored_sha256 {
        return Err(BackupError::Damaged {
            what,
            why: format!(
                "the file has {bytes} bytes and SHA-256 {}, the manifest says {} bytes and {} (damaged, another file, or a swapped manifest)",
                sha.get(..16).unwrap_or("?"),
                manifest.stored_bytes,
                manifest.stored_sha256.get(..16).unwrap_or("?")
            ),
        });
    }
    Ok(())
}

/// Decrypts, decompresses and walks a backup's data in one pass (`seen` is given the
/// name of each entry of a tar stream, as the tar names it); the hashes and sizes found,
/// and the number of entries. Comparing them with the manifest is the caller's.
pub fn verify_stream(
    data: impl std::io::Read + Send,
    manifest: &Manifest,
    identity: &crate::secrets::age::Identity,
    mut seen: impl FnMut(&std::path::Path),
) -> std::io::Result<(pipeline::Stats, u64)> {
    let stream = manifest.format.starts_with("stream");
    pipeline::open_with(data, identity, |r| {
        if stream {
            // A command's output: no entries to walk, the hashes say it all.
            std::io::copy(r, &mut std::io::sink())?;
            return Ok(0);
        }
        walk_tar(r, &mut seen).map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
    })
}

/// Walks a tar stream, reading every entry to its end and then the stream itself to its
/// very end: the reader stops at the end-of-archive blocks, and the padding after them is
/// part of the stream (and of its hash) all the same. Returns the number of entries.
///
/// What a restore could not put back is refused here, so that a backup that verifies
/// restores: an entry named outside the tree (absolute, or through `..`), and a hard link
/// to a path that is not an earlier file of the stream. (The files' names are kept as
/// 8-byte hashes: memory stays small for millions of entries.)
fn walk_tar(
    r: impl std::io::Read,
    seen: &mut dyn FnMut(&std::path::Path),
) -> Result<u64, WalkError> {
    let mut archive = tar::Archive::new(r);
    let mut files = 0;
    let mut regular: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry.map_err(WalkError::Broken)?;
        let path = entry.path().map_err(WalkError::Broken)?.into_owned();
        let name = inside_name(&path)
            .ok_or_else(|| WalkError::Outside(format!("an entry is named `{}`", path.display())))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                regular.insert(name_hash(&name));
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(WalkError::Broken)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let known = inside_name(&target).is_some_and(|t| regular.contains(&name_hash(&t)));
                if !known {
                    return Err(WalkError::Outside(format!(
                        "`{}` is a hard link to `{}`, which is not an earlier file of the backup",
                        path.display(),
                        target.display()
                    )));
                }
            }
            _ => {}
        }
        seen(&path);
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(WalkError::CutShort)?;
        files += 1;
    }
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
    Ok(files)
}

/// A tar entry's name as a path inside the tree (`./a/b` and `a/b` alike), or `None` when
/// it is absolute or goes up with `..`.
pub(crate) fn inside_name(path: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::path::Component;
    let mut inside = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => inside.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(inside)
}

fn name_hash(name: &std::path::Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// Why a read-back's walk of the plain stream stopped.
#[derive(Debug, thiserror::Error)]
enum WalkError {
    /// The stream could not be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error("the tar stream is broken: {0}")]
    Broken(#[source] std::io::Error),
    #[error("an entry is cut short: {0}")]
    CutShort(#[source] std::io::Error),
    /// An entry a restore could not put back inside the tree.
    #[error("{0}: a restore could not put it back")]
    Outside(String),
}

impl WalkError {
    fn kind(&self) -> std::io::ErrorKind {
        match self {
            WalkError::Read(e) => e.kind(),
            WalkError::Broken(_) | WalkError::CutShort(_) | WalkError::Outside(_) => {
                std::io::ErrorKind::InvalidData
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::store::{LocalStore, Store};
    use super::*;
    use crate::secrets::age::Identity;

    /// A reader that counts what is taken from it.
    struct Counting<'a>(&'a [u8], usize);

    impl std::io::Read for Counting<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(self.0.len() - self.1);
            out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn the_walk_reads_past_the_end_of_archive_blocks() {
        // As the engine pads archives: zero blocks after the end-of-archive marker.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"abc"[..]).unwrap();
        let mut tarred = b.into_inner().unwrap();
        tarred.extend_from_slice(&[0u8; 8192]);
        let mut r = Counting(&tarred, 0);
        assert_eq!(walk_tar(&mut r, &mut |_| {}).unwrap(), 1);
        assert_eq!(r.1, tarred.len(), "every byte was read");
    }

    /// A tar stream of the given entries: (name, regular file data) or (name, hard link
    /// target).
    fn tar_of(entries: &[(&str, Result<&[u8], &str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, what) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match what {
                Ok(data) => {
                    h.set_size(data.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    // Written by hand: the builder refuses `..` in names, a forger does not.
                    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    b.append(&h, *data).unwrap();
                }
                Err(target) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, name, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn the_walk_refuses_what_a_restore_could_not_put_back() {
        let walk = |t: Vec<u8>| walk_tar(t.as_slice(), &mut |_| {});
        // Files and links to earlier files, `./` or not: fine.
        let good = tar_of(&[
            ("./a", Ok(b"x")),
            ("./b", Err("./a")),
            ("sub/c", Ok(b"y")),
            ("./d", Err("sub/c")),
        ]);
        assert_eq!(walk(good).unwrap(), 4);
        // A link to a file that comes later, or is not there at all.
        let later = tar_of(&[("./b", Err("./a")), ("./a", Ok(b"x"))]);
        let e = walk(later).unwrap_err().to_string();
        assert!(e.contains("not an earlier file"), "{e}");
        let nowhere = tar_of(&[("./a", Ok(b"x")), ("./b", Err("../../etc/passwd"))]);
        assert!(walk(nowhere).is_err());
        // An entry named outside the tree.
        let up = tar_of(&[("../escape", Ok(b"x"))]);
        let e = walk(up).unwrap_err().to_string();
        assert!(e.contains("`../escape`"), "{e}");
        let absolute = tar_of(&[("/etc/cron.d/x", Ok(b"x"))]);
        assert!(walk(absolute).is_err());
    }

    /// Seal, commit and verify, for tar streams of many lengths. (Whether the padding
    /// after the end-of-archive blocks is read is timing-dependent through the channels;
    /// `the_walk_reads_past_the_end_of_archive_blocks` checks that deterministically.)
    #[test]
    fn verify_accepts_every_tar_length() {
        let root = super::store::test_root("verify");
        let store = LocalStore::open(&root).unwrap();
        let (text, public) = Identity::generate();
        std::fs::write(root.join("key"), text.as_bytes()).unwrap();
        let identity = Identity::load(&root.join("key")).unwrap();
        for blocks in 0..20u64 {
            let mut b = tar::Builder::new(Vec::new());
            let data = vec![7u8; (blocks * 512) as usize];
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "f", data.as_slice()).unwrap();
            let tarred = b.into_inner().unwrap();
            let id = format!("t{blocks:02}");
            let out = store.create("n", &id).unwrap();
            let stats = pipeline::seal(
                tarred.as_slice(),
                std::slice::from_ref(&public),
                out,
                pipeline::Compression::default(),
            )
            .unwrap();
            let m = Manifest {
                format_version: MANIFEST_FORMAT,
                id: id.clone(),
                name: "n".into(),
                project: "p".into(),
                source: "test".into(),
                format: "tar+zstd+age".into(),
                created_at: 0,
                revision: 0,
                berth_version: "test".into(),
                recipients: vec![public.clone()],
                plain_bytes: stats.plain_bytes,
                plain_sha256: stats.plain_sha256,
                stored_bytes: stats.stored_bytes,
                stored_sha256: stats.stored_sha256,
                verified: false,
                safety: false,
                mac: None,
            };
            store.commit(&m).unwrap();
            let v = verify(&store, &m, &identity)
                .unwrap_or_else(|e| panic!("{} bytes of tar: {e}", tarred.len()));
            assert_eq!(v.plain_bytes, tarred.len() as u64);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
