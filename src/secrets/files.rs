//! A spec's secrets on this machine: where the identity and the encrypted files are, what
//! berth finds there (mode, ciphertext fingerprint, the recipients each file was encrypted
//! to), as [`Inspection`]. Reading and checking them is observation's
//! (`observe::secrets::inspect`): the pre-flight checks that `plan` reports as warnings and
//! `apply` refuses on.
//!
//! Beside each file berth writes `FILE.recipients`: the public keys it encrypted the file
//! to and the fingerprint of the ciphertext they describe. A file written by another tool
//! (or edited after) has no matching record, and counts as encrypted to unknown
//! recipients until berth re-encrypts it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;
use crate::fsutil;
use crate::spec::{Secret, Spec};

use super::age::Identity;
use super::plaintext::fingerprint;

/// Overrides the spec's `identity:` (and the default path) for every command.
pub const ENV_IDENTITY: &str = "BERTH_IDENTITY";

/// The mode berth gives secret files and the identity.
pub const FILE_MODE: u32 = 0o600;

/// The observed value of `recipients` for a file berth has no record for.
pub const NOT_RECORDED: &str = "(not recorded)";

/// Where the identity is: `$BERTH_IDENTITY`, else the spec's `identity:` (relative to the
/// spec, `~` expanded), else `$XDG_CONFIG_HOME/berth/age.key` (`~/.config/...`).
pub fn identity_path(spec: &Spec, spec_dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os(ENV_IDENTITY).filter(|p| !p.is_empty()) {
        return fsutil::expand_home(&p.to_string_lossy());
    }
    if let Some(p) = &spec.identity {
        return spec_dir.join(fsutil::expand_home(&p.value));
    }
    default_identity_path()
}

/// Where the identity is when the spec does not say: `$BERTH_IDENTITY` aside,
/// `$XDG_CONFIG_HOME/berth/age.key` (`~/.config/berth/age.key`).
pub fn default_identity_path() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map_or_else(|| fsutil::expand_home("~/.config"), PathBuf::from);
    config.join("berth").join("age.key")
}

/// Where a secret's encrypted file is.
pub fn secret_path(spec_dir: &Path, secret: &Secret) -> PathBuf {
    spec_dir.join(fsutil::expand_home(&secret.file.value))
}

/// Why a secret's file cannot be used where it is.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("it resolves to `{}`, outside the spec's directory `{}`", resolved.display(), spec_dir.display())]
    Outside {
        resolved: PathBuf,
        spec_dir: PathBuf,
    },
    #[error("its path cannot be resolved: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a secret's file really is: [`secret_path`] with every symlink resolved (for a file
/// that does not exist yet, its deepest existing directory resolved), refused when that
/// leaves the spec's directory and the secret does not say `allow_outside: true`.
pub fn resolve_secret_path(spec_dir: &Path, secret: &Secret) -> Result<PathBuf, PlaceError> {
    let resolved = resolve(&secret_path(spec_dir, secret))?;
    if secret.allow_outside {
        return Ok(resolved);
    }
    let root = std::fs::canonicalize(spec_dir)?;
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(PlaceError::Outside {
            resolved,
            spec_dir: root,
        })
    }
}

/// A path with its symlinks resolved, whether or not its last components exist yet.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let mut missing = Vec::new();
    let mut existing = path.to_path_buf();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut found) => {
                found.extend(missing.iter().rev());
                return Ok(found);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // `..` after a missing directory cannot be resolved; nor can a dangling
                // symlink be followed (it is where the file would be written: refused).
                let is_link =
                    std::fs::symlink_metadata(&existing).is_ok_and(|m| m.file_type().is_symlink());
                let (Some(name), Some(parent), false) =
                    (existing.file_name(), existing.parent(), is_link)
                else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "`{}` is a dangling symlink or climbs out of a missing directory",
                            existing.display()
                        ),
                    ));
                };
                missing.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            Err(e) => return Err(e),
        }
    }
}

/// The directories a secret's file depends on, from its own up to the spec's directory
/// (only its own when it lies outside), each with why another user could replace what is
/// in it, if they could. A sticky directory others may write is refused too: they could
/// not replace the file, but could create it before berth does.
pub fn unsafe_dirs(spec_dir: &Path, resolved: &Path) -> Vec<(PathBuf, String)> {
    let root = std::fs::canonicalize(spec_dir).unwrap_or_else(|_| spec_dir.to_path_buf());
    let mut out = Vec::new();
    let mut dir = resolved.parent();
    while let Some(d) = dir {
        if let Ok(Some(why)) = fsutil::unsafe_dir(d, fsutil::Sticky::Refused) {
            out.push((d.to_path_buf(), why));
        }
        if d == root || !d.starts_with(&root) {
            break;
        }
        dir = d.parent();
    }
    out
}

/// The record of recipients beside a secret file.
pub fn record_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".recipients");
    PathBuf::from(s)
}

/// The recipients a secret is to be encrypted to: its own list, else the spec's, else the
/// identity's own key (when the spec names an identity and no recipients).
pub fn wanted_recipients(spec: &Spec, secret: &Secret, identity: Option<&Identity>) -> Vec<String> {
    recipients_for(spec, secret.recipients.as_deref(), identity)
}

/// The recipients of a secret or backup with its `own` list (if any): that list, else the
/// spec's, else the identity's own key. Sorted, without repeats.
pub fn recipients_for(
    spec: &Spec,
    own: Option<&[crate::spec::spanned::Sp<String>]>,
    identity: Option<&Identity>,
) -> Vec<String> {
    let listed = own.unwrap_or(&spec.recipients);
    let mut out: Vec<String> = if listed.is_empty() {
        identity
            .and_then(|i| i.recipients().first().cloned())
            .into_iter()
            .collect()
    } else {
        listed.iter().map(|r| r.value.trim().to_owned()).collect()
    };
    out.sort();
    out.dedup();
    out
}

/// What a file's record says, if it describes this very ciphertext.
pub fn recorded_recipients(path: &Path, ciphertext_fingerprint: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(record_path(path)).ok()?;
    let mut described = None;
    let mut recipients = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(f) = line.strip_prefix("# file: ") {
            described = Some(f.trim());
        } else if !line.is_empty() && !line.starts_with('#') {
            recipients.push(line.to_owned());
        }
    }
    (described == Some(ciphertext_fingerprint)).then(|| {
        recipients.sort();
        recipients
    })
}

/// Writes an encrypted secret and its record, each atomically, mode 0600.
pub fn write_secret(path: &Path, ciphertext: &[u8], recipients: &[String]) -> std::io::Result<()> {
    fsutil::create_dir_all(&fsutil::parent_of(path), 0o700)?;
    fsutil::write_atomic(path, ciphertext, FILE_MODE)?;
    let mut record = format!(
        "# berth: the public keys {} was encrypted to (by `berth secrets`).\n# file: {}\n",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        fingerprint(ciphertext)
    );
    for r in recipients {
        record.push_str(r);
        record.push('\n');
    }
    fsutil::write_atomic(&record_path(path), record.as_bytes(), FILE_MODE)
}

/// One secret file as found.
#[derive(Clone, Debug)]
pub struct FileFacts {
    pub path: PathBuf,
    pub mode: u32,
    pub ciphertext: Vec<u8>,
    /// Of the ciphertext (public: the file is in git).
    pub fingerprint: String,
    /// The recipients berth recorded for this ciphertext (sorted), if any.
    pub recorded: Option<Vec<String>>,
    /// The recipients the spec wants (sorted).
    pub wanted: Vec<String>,
    /// The file decrypts and its value passes its checks (or there is no identity to tell),
    /// and no other user may replace it: false when the pre-flight refuses it, and then
    /// nothing is planned for it.
    pub usable: bool,
}

impl FileFacts {
    /// Whether the file must be re-encrypted to the spec's recipients. When they cannot
    /// be known here (no `recipients:` and no identity, as in CI), nothing is stale.
    pub fn stale_recipients(&self) -> bool {
        !self.wanted.is_empty() && self.recorded.as_ref() != Some(&self.wanted)
    }
}

/// Everything berth found about a spec's secrets, and what is wrong with them.
#[derive(Default)]
pub struct Inspection {
    pub identity_path: PathBuf,
    pub identity: Option<Identity>,
    /// By secret name: the files that could be read.
    pub files: BTreeMap<String, FileFacts>,
    /// Problems that stop an apply (plan shows them as warnings).
    pub problems: Vec<Diagnostic>,
    /// Warnings for plan and apply alike (a certificate that expires soon).
    pub notices: Vec<Diagnostic>,
}

impl Inspection {
    /// What a pod's configuration records for a secret it consumes: the fingerprint of the
    /// ciphertext it gets, or [`KNOWN_AFTER_APPLY`] when apply re-encrypts the file first.
    /// Secrets the pre-flight refuses are left out ([`Inspection::unusable`]): no pod is
    /// planned to change for a file that cannot be delivered.
    pub fn versions(&self) -> std::collections::HashMap<String, String> {
        self.files
            .iter()
            .filter(|(_, f)| f.usable)
            .map(|(name, f)| {
                let v = if f.stale_recipients() {
                    KNOWN_AFTER_APPLY.to_owned()
                } else {
                    f.fingerprint.clone()
                };
                (name.clone(), v)
            })
            .collect()
    }

    /// The secrets whose files the pre-flight refuses (missing, unreadable, outside the
    /// spec's directory, writable by others, undecryptable, or failing their checks).
    pub fn unusable<'s>(&'s self, spec: &'s Spec) -> impl Iterator<Item = &'s str> + 's {
        spec.secrets
            .iter()
            .map(|s| s.name.value.as_str())
            .filter(|name| self.files.get(*name).is_none_or(|f| !f.usable))
    }
}

/// A value only apply can tell (the fingerprint of a file it is about to re-encrypt).
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_describe_one_ciphertext() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s/x.age");
        write_secret(&p, b"cipher", &["age1b".into(), "age1a".into()]).unwrap();
        assert_eq!(fsutil::mode_of(&p).unwrap(), 0o600);
        assert_eq!(
            recorded_recipients(&p, &fingerprint(b"cipher")),
            Some(vec!["age1a".into(), "age1b".into()])
        );
        // Another ciphertext (edited by another tool): the record says nothing about it.
        assert_eq!(recorded_recipients(&p, &fingerprint(b"other")), None);
    }
}
