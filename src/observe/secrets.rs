//! Secrets are files, seen on this machine rather than on an engine: the identity and each
//! secret file the spec declares, read, decrypted and checked ([`inspect`]), then observed
//! as configured with their drift (mode, recipients) to heal ([`observe`]). What is wrong
//! with them is the pre-flight's: `plan` reports it as warnings and `apply` refuses on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Drift, ObservedResource, ObservedState};
use crate::diag::{Diagnostic, Span};
use crate::fsutil;
use crate::graph::{Kind, Resource};
use crate::resources::attr;
use crate::secrets::age::Identity;
use crate::secrets::files::{
    ENV_IDENTITY, FILE_MODE, FileFacts, Inspection, NOT_RECORDED, PlaceError, identity_path,
    recorded_recipients, resolve_secret_path, unsafe_dirs, wanted_recipients,
};
use crate::secrets::plaintext::fingerprint;
use crate::spec::{Secret, Spec};

/// Reads the identity and every secret file of the spec, decrypts each and runs its checks.
/// With no secrets in the spec, nothing is read (not even the identity).
pub fn inspect(spec: &Spec, spec_dir: &Path) -> Inspection {
    let identity_path = identity_path(spec, spec_dir);
    let mut out = Inspection {
        identity_path: identity_path.clone(),
        identity: None,
        files: BTreeMap::new(),
        problems: Vec::new(),
        notices: Vec::new(),
    };
    if spec.secrets.iter().next().is_none() {
        return out;
    }
    let span = spec.identity.as_ref().map(|i| i.span);
    out.identity = identity(&identity_path, span, &mut out.problems);
    for s in spec.secrets.iter() {
        let found = File {
            spec,
            spec_dir,
            name: &s.name.value,
            secret: &s.item,
        }
        .facts(out.identity.as_ref(), &mut out.problems);
        if let Some(facts) = found {
            out.files.insert(s.name.value.clone(), facts);
        }
    }
    super::certificates::check(spec, &mut out, std::time::SystemTime::now());
    out
}

/// The identity at `path`, if it exists, is private to its user and loads; else why not.
fn identity(path: &Path, span: Option<Span>, problems: &mut Vec<Diagnostic>) -> Option<Identity> {
    let at = |d: Diagnostic, label: &str| match span {
        Some(s) => d.at(s, label),
        None => d,
    };
    let shown = path.display().to_string();
    let problem = match fsutil::mode_of(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => at(
            Diagnostic::error(
                "secrets::identity-missing",
                format!("the identity `{shown}` does not exist"),
            ),
            "no key here",
        )
        .help(format!(
            "create it with `berth secrets init`, or point `identity:` (or ${ENV_IDENTITY}) at your age key"
        )),
        Err(e) => at(
            Diagnostic::error(
                "secrets::identity-unreadable",
                format!("the identity `{shown}` cannot be read: {e}"),
            ),
            "unreadable",
        )
        .help("run berth as the user who owns the key"),
        Ok(mode) if mode & 0o077 != 0 => at(
            Diagnostic::error(
                "secrets::identity-mode",
                format!("the identity `{shown}` has mode {mode:04o}: other users may read it"),
            ),
            "must be 0600",
        )
        .help(format!(
            "run `chmod 600 {shown}`; if other users could read it, treat the key as leaked: create a new one and rotate"
        )),
        Ok(_) => match Identity::load(path) {
            Ok(i) => return Some(i),
            Err(e) => at(
                Diagnostic::error("secrets::identity-invalid", e.to_string()),
                "not an age identity",
            )
            .help("an identity file holds `AGE-SECRET-KEY-1...` lines (from `berth secrets init` or `age-keygen`)"),
        },
    };
    problems.push(problem);
    None
}

/// One secret of the spec, being inspected.
struct File<'a> {
    spec: &'a Spec,
    spec_dir: &'a Path,
    name: &'a str,
    secret: &'a Secret,
}

impl File<'_> {
    /// What is found of the file, `None` when it cannot be read where it is; each problem
    /// said in `problems`.
    fn facts(
        &self,
        identity: Option<&Identity>,
        problems: &mut Vec<Diagnostic>,
    ) -> Option<FileFacts> {
        let path = self.place(problems)?;
        let mode = self.mode(&path, problems)?;
        // A file the pre-flight refuses has nothing to heal: apply will not touch it.
        let mut usable = self.private(&path, mode, problems);
        let ciphertext = match std::fs::read(&path) {
            Ok(c) => c,
            Err(e) => {
                problems.push(self.unreadable(e, "check the file's owner and mode"));
                return None;
            }
        };
        if let Some(identity) = identity {
            usable &= self.decrypts(identity, &ciphertext, problems);
        }
        let fp = fingerprint(&ciphertext);
        Some(FileFacts {
            recorded: recorded_recipients(&path, &fp),
            wanted: wanted_recipients(self.spec, self.secret, identity),
            path,
            mode,
            ciphertext,
            fingerprint: fp,
            usable,
        })
    }

    fn span(&self) -> Span {
        self.secret.file.span
    }

    fn shown(&self) -> &str {
        self.secret.file.value.as_str()
    }

    fn unreadable(&self, e: std::io::Error, help: &str) -> Diagnostic {
        let (name, shown) = (self.name, self.shown());
        Diagnostic::error(
            "secrets::file-unreadable",
            format!("secret `{name}`: `{shown}` cannot be read: {e}"),
        )
        .at(self.span(), "unreadable")
        .help(help.to_owned())
    }

    /// Where the file really is, when that is inside the spec's directory (or allowed
    /// outside) and no other user may write a directory on the way.
    fn place(&self, problems: &mut Vec<Diagnostic>) -> Option<PathBuf> {
        let (name, shown) = (self.name, self.shown());
        let path = match resolve_secret_path(self.spec_dir, self.secret) {
            Ok(p) => p,
            Err(e @ PlaceError::Outside { .. }) => {
                problems.push(
                    Diagnostic::error(
                        "secrets::file-outside",
                        format!("secret `{name}`: `{shown}` {e}"),
                    )
                    .at(self.span(), "outside the spec's directory")
                    .help("keep the file beside the spec (replace the symlink by the file itself); if it must live elsewhere, add `allow_outside: true` to this secret"),
                );
                return None;
            }
            Err(PlaceError::Io(e)) => {
                problems.push(self.unreadable(e, "check the path and the directories on it"));
                return None;
            }
        };
        let unsafe_dirs = unsafe_dirs(self.spec_dir, &path);
        for (dir, why) in &unsafe_dirs {
            problems.push(
                Diagnostic::error(
                    "secrets::dir-writable",
                    format!("secret `{name}`: its directory is not private: {why}"),
                )
                .at(self.span(), "in a directory others may write")
                .help(format!(
                    "run `chmod go-w {}` (and give it to the user who runs berth); anyone who can write the directory can substitute the file, or plant a link that berth would write through",
                    dir.display()
                )),
            );
        }
        unsafe_dirs.is_empty().then_some(path)
    }

    /// The file's mode, `None` when it does not exist or cannot be read.
    fn mode(&self, path: &Path, problems: &mut Vec<Diagnostic>) -> Option<u32> {
        let (name, shown) = (self.name, self.shown());
        match fsutil::mode_of(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(
                    Diagnostic::error(
                        "secrets::file-missing",
                        format!("secret `{name}`: `{shown}` does not exist"),
                    )
                    .at(self.span(), "no file here")
                    .help(format!(
                        "create it with `berth secrets set {name}` (the value is read from stdin)"
                    )),
                );
                None
            }
            Err(e) => {
                problems.push(self.unreadable(e, "check the file's owner and mode"));
                None
            }
        }
    }

    /// Whether no other user may replace the file (its owner, its mode).
    fn private(&self, path: &Path, mode: u32, problems: &mut Vec<Diagnostic>) -> bool {
        let (name, shown) = (self.name, self.shown());
        let mut private = true;
        let owner = std::fs::metadata(path).map_or(0, |m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        if owner != 0 && owner != fsutil::effective_uid() {
            private = false;
            problems.push(
                Diagnostic::error(
                    "secrets::file-writable",
                    format!("secret `{name}`: `{shown}` is owned by user {owner}, who may replace it"),
                )
                .at(self.span(), "owned by another user")
                .help(format!(
                    "run `chown {} {shown}` (berth runs as that user); whoever owns the file can substitute a value of their own",
                    fsutil::effective_uid()
                )),
            );
        }
        if mode & 0o022 != 0 {
            private = false;
            problems.push(
                Diagnostic::error(
                    "secrets::file-writable",
                    format!("secret `{name}`: `{shown}` has mode {mode:04o}: other users may replace it"),
                )
                .at(self.span(), "writable by others")
                .help(format!(
                    "run `chmod 600 {shown}`; anyone who can write the file can substitute a value of their own"
                )),
            );
        }
        private
    }

    /// Whether the file decrypts with `identity` to a value that passes its checks.
    fn decrypts(
        &self,
        identity: &Identity,
        ciphertext: &[u8],
        problems: &mut Vec<Diagnostic>,
    ) -> bool {
        let (name, shown) = (self.name, self.shown());
        match identity.decrypt(ciphertext) {
            Ok(value) => {
                let failed = crate::secrets::value::problems(self.secret, &value);
                if failed.is_empty() {
                    return true;
                }
                problems.push(
                    Diagnostic::error(
                        "secrets::check-failed",
                        format!("secret `{name}` fails its checks: {}", failed.join("; ")),
                    )
                    .at(self.span(), "decrypted, then checked")
                    .help(format!(
                        "set a proper value with `berth secrets set {name}`"
                    )),
                );
                false
            }
            Err(e) => {
                problems.push(
                    Diagnostic::error(
                        "secrets::undecryptable",
                        format!("secret `{name}`: `{shown}` cannot be decrypted: {e}"),
                    )
                    .at(self.span(), "undecryptable")
                    .help(format!(
                        "re-encrypt it to your key (`berth secrets rotate` on a machine that can decrypt it), or set it again with `berth secrets set {name}`"
                    )),
                );
                false
            }
        }
    }
}

/// A secret file's differences to heal: a mode other than 0600, a recipient set other than
/// the spec's. A file that does not decrypt, holds a bad value or that others may replace
/// has none: apply refuses it, and what it needs (a new value, or the owner's `chmod`) the
/// pre-flight says.
pub fn drift(file: &FileFacts) -> Vec<Drift> {
    let mut out = Vec::new();
    if !file.usable {
        return out;
    }
    if file.mode != FILE_MODE {
        out.push(Drift {
            field: attr::MODE.into(),
            observed: format!("{:04o}", file.mode),
            expected: format!("{FILE_MODE:04o}"),
        });
    }
    if file.stale_recipients() {
        out.push(Drift {
            field: attr::RECIPIENTS.into(),
            observed: file
                .recorded
                .as_ref()
                .map_or_else(|| NOT_RECORDED.to_owned(), |r| r.join(", ")),
            expected: file.wanted.join(", "),
        });
    }
    out
}

/// Each secret `desired` declares, observed as configured, with its file's drift.
pub fn observe(desired: &[Resource], secrets: &Inspection, observed: &mut ObservedState) {
    observed.unobserved.retain(|k| *k != Kind::Secret);
    for r in desired.iter().filter(|r| r.address.kind == Kind::Secret) {
        let drift = secrets
            .files
            .get(&*r.address.name)
            .map(drift)
            .unwrap_or_default();
        observed.resources.push(ObservedResource {
            address: r.address.clone(),
            attrs: r.attrs.clone(),
            depends_on: r.depends_on.clone(),
            drift,
            id: None,
            image: None,
        });
    }
}

/// A secret the pre-flight refuses has no version to give its consumers: each pod that
/// runs keeps the version it has, so that the plan replaces no pod for a file that apply
/// will not deliver (the pre-flight warning says what is wrong with it).
pub fn hold_unusable(desired: &mut [Resource], observed: &ObservedState, unusable: &[&str]) {
    if unusable.is_empty() {
        return;
    }
    for want in desired.iter_mut() {
        if want.address.kind != Kind::Pod {
            continue;
        }
        let Some(have) = observed
            .resources
            .iter()
            .find(|o| o.address.match_key() == want.address.match_key())
        else {
            continue;
        };
        for name in unusable {
            let field = attr::secret_version(name);
            if let Some(v) = have.attrs.get(&field)
                && want.attrs.contains_key(&attr::secret(name))
            {
                want.attrs.insert(&field, v);
            }
        }
    }
}
