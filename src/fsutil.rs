//! Files berth writes: atomically, with their mode from the start, and durably; and the
//! places that may never hold berth's data ([`refused_place`]: the root, system, temporary
//! and virtual directories).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so that a reader (or a crash) sees either the old file or the
/// new one, never a mix: a temporary file beside it, created with `mode` (never wider for
/// a moment), flushed to disk, renamed over the old one, and the directory flushed so
/// that the rename survives a power loss.
///
/// The directory must be one nobody else can write into ([`check_private_dir`]), and the
/// temporary file has a random name and is created with `O_CREAT|O_EXCL|O_NOFOLLOW`: a
/// file or symlink planted under that name makes the write fail, never redirects it. A
/// symlink at `path` itself is replaced by the file, not written through.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = parent_of(path);
    check_private_dir(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut f) = create_temporary(&dir, &name, mode)?;
    let result = (|| {
        // `mode` passes through the umask on creation; set it exactly (on the open file,
        // never by path).
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file `.NAME.berth-tmp-RANDOM` in `dir`, created exclusively and without following
/// a symlink, with `mode`.
fn create_temporary(
    dir: &Path,
    name: &str,
    mode: u32,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut last = None;
    for _ in 0..8 {
        let tmp = dir.join(format!(".{name}.berth-tmp-{}", random_suffix()?));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temporary name was free")))
}

/// 16 hex digits from the system's random source.
fn random_suffix() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(crate::encode::hex(&bytes))
}

/// Whether a directory that others may write into is acceptable when it has the sticky
/// bit (as `/tmp`): others may then add entries, never rename or remove ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sticky {
    Allowed,
    Refused,
}

/// Why a directory is not safe to write a file into, if it is not: another user (not
/// root) owns it, or a group or other users may write into it (without the sticky bit,
/// when `sticky` allows it), so they could rename, replace or plant entries in it.
pub fn unsafe_dir(dir: &Path, sticky: Sticky) -> std::io::Result<Option<String>> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("`{}` is not a directory", dir.display()),
        ));
    }
    let me = effective_uid();
    let mode = meta.mode() & 0o7777;
    if meta.uid() != me && meta.uid() != 0 {
        return Ok(Some(format!(
            "`{}` is owned by user {}, not by user {me} who runs berth, nor by root",
            dir.display(),
            meta.uid()
        )));
    }
    if mode & 0o022 != 0 && (sticky == Sticky::Refused || mode & 0o1000 == 0) {
        return Ok(Some(format!(
            "`{}` has mode {mode:04o}: other users may write into it",
            dir.display()
        )));
    }
    Ok(None)
}

/// The user berth runs as.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// [`unsafe_dir`] as an error.
pub fn check_private_dir(dir: &Path) -> std::io::Result<()> {
    match unsafe_dir(dir, Sticky::Allowed)? {
        None => Ok(()),
        Some(why) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refusing to write there: {why}"),
        )),
    }
}

/// Opens `path` to read and write, creating it with `mode` when it is missing, never
/// through a symlink (`O_NOFOLLOW`): a symlink planted at that name makes the open fail
/// instead of reaching (and truncating, or changing the mode of) its target.
pub fn open_nofollow(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(mode)
        .open(path)
}

/// The bytes of a file, never read through a symlink: a symlink at `path` is an error
/// (`ELOOP`), as are other kinds of file than a regular one.
pub fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{}` is not a regular file", path.display()),
        ));
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut out)?;
    Ok(out)
}

/// Whether a file's owner is the user berth runs as.
pub fn is_mine(meta: &std::fs::Metadata) -> bool {
    meta.uid() == effective_uid()
}

/// Makes `dir` (and its missing parents) with mode 0700, or checks that an existing one is
/// berth's to use: a directory owned by the user berth runs as. Only then is its mode
/// narrowed to 0700; a directory of another user is refused, never chmod-ed or used.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    create_dir_all(dir, 0o700)?;
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("`{}` is not a directory", dir.display()),
        ));
    }
    if !is_mine(&meta) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "`{}` is owned by user {}, not by user {} who runs berth: refusing to use it or change its mode",
                dir.display(),
                meta.uid(),
                effective_uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        set_mode(dir, 0o700)?;
    }
    Ok(())
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents; the directories berth creates get `mode`.
pub fn create_dir_all(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
}

/// The permission bits of a file (`0o600`), without following a symlink's target's type.
pub fn mode_of(path: &Path) -> std::io::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// Whether a file of this mode is open to its group or others: the rule for the files
/// holding private keys (the age identity, a TLS client key), which must be 0600 or less.
pub fn others_may_access(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Sets the permission bits of a file.
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The directory a path is in (`.` for a bare file name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `~/rest` with the user's home; other paths as they are.
pub fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None if path == "~" => home(),
        None => PathBuf::from(path),
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// The filesystem type of the mount holding `path` (`tmpfs`, `ext4`, ...), read from
/// `/proc/self/mountinfo`: the longest mount point that is a prefix of the path.
pub fn filesystem_of(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in table.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source ...
        let mut fields = line.split(' ');
        let mount_point = fields.nth(4)?;
        let mount_point = unescape_octal(mount_point);
        let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
        if path.starts_with(&mount_point) {
            let len = mount_point.len();
            if best.as_ref().is_none_or(|(l, _)| len >= *l) {
                best = Some((len, fstype.to_owned()));
            }
        }
    }
    best.map(|(_, t)| t)
}

/// mountinfo escapes spaces and the like as `\040`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Top-level directories the system and every user share: never a store themselves.
const SYSTEM: &[&str] = &[
    "/usr", "/etc", "/var", "/home", "/root", "/boot", "/proc", "/sys", "/dev", "/run", "/bin",
    "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/srv", "/mnt", "/media", "/snap",
];

/// Trees that are temporary (cleared on reboot, shared by every user) or not files at all:
/// nothing in them is a store.
const TEMPORARY: &[&str] = &["/tmp", "/var/tmp", "/dev/shm", "/run"];
const VIRTUAL: &[&str] = &["/proc", "/sys", "/dev"];

/// The children of system directories that the OS owns (all of those of `/etc` and `/boot`).
const OS_CHILDREN: &[(&str, &[&str])] = &[
    (
        "/usr",
        &[
            "bin", "lib", "lib32", "lib64", "libx32", "libexec", "local", "sbin", "share",
            "include", "src", "games",
        ],
    ),
    (
        "/var",
        &[
            "lib", "backups", "cache", "log", "spool", "mail", "opt", "local", "lock", "run",
            "www", "snap", "crash", "db", "empty", "games", "yp", "account", "adm", "nis",
        ],
    ),
];

/// The standard places of `/usr/local` (the filesystem hierarchy standard's).
const USR_LOCAL: &[&str] = &[
    "bin", "etc", "games", "include", "lib", "lib64", "libexec", "man", "sbin", "share", "src",
];

/// `path` with `.` and `..` resolved as text (a store is given as an absolute path).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Why `path` (absolute) may never be a backup store, whatever is there: the root, a system
/// directory or one of its children the OS owns, a temporary or virtual directory (or
/// anything under them). `None` when it may be.
pub fn refused_place(path: &Path) -> Option<String> {
    let path = normalize(path);
    if path == Path::new("/") {
        return Some("`/` is the root directory: every file of the system is in it".into());
    }
    if let Some(t) = TEMPORARY.iter().find(|t| path.starts_with(t)) {
        return Some(format!(
            "`{}` is {}a temporary directory ({t}), cleared on reboot and shared by every user",
            path.display(),
            if path == Path::new(t) { "" } else { "under " }
        ));
    }
    if let Some(v) = VIRTUAL.iter().find(|v| path.starts_with(v)) {
        return Some(format!(
            "`{}` is {}{v}, a directory of the kernel's, not of files",
            path.display(),
            if path == Path::new(v) { "" } else { "under " }
        ));
    }
    let shown = path.display().to_string();
    // The OS's own trees, whole: a package update may replace or remove anything in them.
    // Under /usr only /usr/local is the administrator's, and not its standard places.
    let local = path.strip_prefix("/usr/local").ok();
    let os_tree = ["/etc", "/boot"].iter().any(|t| path.starts_with(t))
        || (path.starts_with("/usr") && local.is_none())
        || local
            .and_then(|rest| rest.components().next())
            .is_some_and(|c| USR_LOCAL.contains(&c.as_os_str().to_string_lossy().as_ref()));
    if os_tree && !SYSTEM.contains(&shown.as_str()) && shown != "/usr/local" {
        return Some(format!(
            "`{shown}` is inside a tree of the OS's own files, which a package update may replace"
        ));
    }
    if SYSTEM.contains(&shown.as_str()) {
        return Some(format!(
            "`{shown}` is a system directory, shared by the system and its users"
        ));
    }
    let parent = path.parent().map(|p| p.display().to_string());
    let child = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let os_owned = match parent.as_deref() {
        Some("/etc" | "/boot") => true,
        Some(p) => OS_CHILDREN
            .iter()
            .any(|(dir, kids)| *dir == p && kids.contains(&child.as_str())),
        None => false,
    };
    os_owned.then(|| format!("`{shown}` is a system directory the OS owns"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_the_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        assert_eq!(mode_of(&p).unwrap(), 0o600);
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode_of(&p).unwrap(), 0o640);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        // A shared directory (sticky, like /tmp): others may add entries, not replace ours.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        set_mode(&shared, 0o1777).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        set_mode(&victim, 0o644).unwrap();
        // The names the old writer used (`.NAME.berth-tmp-PID`), and a few more pids.
        let pid = std::process::id();
        for p in [pid, pid + 1, pid.saturating_sub(1)] {
            std::os::unix::fs::symlink(&victim, shared.join(format!(".f.berth-tmp-{p}"))).unwrap();
        }
        let target = shared.join("f");
        write_atomic(&target, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode_of(&victim).unwrap(), 0o644);
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A symlink at the path itself is replaced, not written through.
        std::fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomic(&target, b"newer", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(
            !std::fs::symlink_metadata(&target)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_directory_others_may_write_into_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        for mode in [0o777, 0o770, 0o757] {
            set_mode(&open, mode).unwrap();
            let e = write_atomic(&open.join("f"), b"x", 0o600).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{mode:o}");
            assert!(e.to_string().contains("other users may write"), "{e}");
            assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
        }
        set_mode(&open, 0o755).unwrap();
        write_atomic(&open.join("f"), b"x", 0o600).unwrap();
    }

    #[test]
    fn mount_table_names_filesystems() {
        assert_eq!(filesystem_of(Path::new("/proc")).as_deref(), Some("proc"));
        assert_eq!(unescape_octal(r"/a\040b"), "/a b");
    }

    #[test]
    fn the_root_system_and_temporary_directories_are_never_stores() {
        for refused in [
            "/",
            "/usr",
            "/usr/",
            "/etc",
            "/var",
            "/home",
            "/root",
            "/boot",
            "/proc",
            "/sys",
            "/dev",
            "/run",
            "/var/lib",
            "/usr/local",
            "/var/backups",
            "/etc/ssl",
            "/tmp",
            "/tmp/backups",
            "/var/tmp/x",
            "/dev/shm/x",
            "/run/user/1000/b",
            "/proc/1",
            "/srv",
            "/mnt",
            "/opt/../usr",
            "/srv/./../tmp/x",
            "/usr/local/games",
            "/usr/local/share/man",
            "/usr/share/doc/x",
            "/etc/ssl/private/x",
            "/boot/efi/x",
        ] {
            assert!(refused_place(Path::new(refused)).is_some(), "{refused}");
        }
        for allowed in [
            "/var/backups/shop",
            "/var/lib/berth-quickstart/backups",
            "/srv/backups",
            "/mnt/disk/backups",
            "/home/alice/backups",
            "/root/backups",
            "/backups",
            "/usr/local/backups",
        ] {
            assert_eq!(refused_place(Path::new(allowed)), None, "{allowed}");
        }
    }
}
