//! `berth secrets init | set NAME | show NAME | rotate | verify`: the age identity and the
//! encrypted files of a spec. Values come from stdin or an editor, never from arguments;
//! they are printed only by `show`.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

use super::{exit, print_warnings};
use crate::diag::{Diagnostic, Report};
use crate::ops::{self, OpError};
use crate::secrets::age::{self as agefile, Identity};
use crate::secrets::files::{self, Inspection};
use crate::secrets::{Plaintext, value};
use crate::spec::Spec;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the age identity (if absent) and print its public key for `recipients:`.
    Init,
    /// Encrypt a value read from stdin (or typed in $EDITOR) into the secret's file.
    Set(SetArgs),
    /// Print a secret's decrypted value to stdout.
    Show {
        /// The secret, as named under `secrets:`.
        name: String,
    },
    /// Re-encrypt every secret whose recipients differ from the spec's.
    Rotate {
        /// Re-encrypt every secret, also those already encrypted to the spec's recipients.
        #[arg(long)]
        all: bool,
    },
    /// Run the pre-flight checks of secrets alone: identity, files, decryption, value checks.
    Verify,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The secret, as named under `secrets:`.
    pub name: String,
    /// Use a random value (64 hex digits, 256 bits) instead of reading one.
    #[arg(long)]
    pub generate: bool,
    /// Leave the secret alone if its file exists already and decrypts.
    #[arg(long)]
    pub if_missing: bool,
    /// Keep a trailing newline of the value read (removed by default, as `echo` adds one).
    #[arg(long)]
    pub keep_newline: bool,
    /// Write an ASCII-armored file (text, friendlier to some review tools) instead of binary.
    #[arg(long)]
    pub armor: bool,
}

pub fn run(file: &Path, args: Args) -> Result<u8, OpError> {
    match args.command {
        Command::Init => init(file),
        Command::Set(a) => set(file, a),
        Command::Show { name } => show(file, &name),
        Command::Rotate { all } => rotate(file, all),
        Command::Verify => verify(file),
    }
}

fn spec_dir(file: &Path) -> std::path::PathBuf {
    std::path::absolute(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

pub(super) fn failure(message: impl Into<String>, help: impl Into<String>) -> OpError {
    OpError::Refused {
        message: message.into(),
        help: help.into(),
    }
}

fn init(file: &Path) -> Result<u8, OpError> {
    let valid = ops::load_valid(file)?;
    print_warnings(&valid.report);
    let path = files::identity_path(&valid.spec, &spec_dir(file));
    let recipient = ensure_identity(&path)?;
    let spec = &valid.spec;
    if spec.recipients.iter().any(|r| r.value.trim() == recipient) {
        eprintln!("The spec lists this key under `recipients:`.");
    } else if spec.recipients.is_empty() && spec.identity.is_some() {
        eprintln!("The spec has no `recipients:`: secrets are encrypted to this key alone.");
    } else {
        eprintln!(
            "Add this public key under `recipients:` in {} so that this identity can decrypt the secrets:",
            file.display()
        );
    }
    super::print(&format!("{recipient}\n"));
    Ok(exit::OK)
}

use std::os::unix::fs::OpenOptionsExt;

/// The identity at `path`, kept when it exists or made (mode 0600, its directory 0700);
/// says which on stderr. Its public key.
pub(super) fn ensure_identity(path: &Path) -> Result<String, OpError> {
    let shown = path.display();
    if path.exists() {
        let identity = Identity::load(path).map_err(|e| {
            failure(
                e.to_string(),
                "move the file aside, or point `identity:` elsewhere",
            )
        })?;
        eprintln!("The identity `{shown}` exists; it was kept.");
        return Ok(identity.recipients()[0].clone());
    }
    let (text, public) = Identity::generate();
    let parent = crate::fsutil::parent_of(path);
    crate::fsutil::create_dir_all(&parent, 0o700).map_err(|e| {
        failure(
            format!("cannot create `{}`: {e}", parent.display()),
            "check the directory's permissions",
        )
    })?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(files::FILE_MODE)
        .open(path)
        .map_err(|e| {
            failure(
                format!("cannot create `{shown}`: {e}"),
                "check the directory's permissions",
            )
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| failure(format!("cannot write `{shown}`: {e}"), "check the disk"))?;
    eprintln!(
        "Created the identity `{shown}` (mode 0600). Back it up: without it, the secrets cannot be decrypted."
    );
    Ok(public)
}

fn set(file: &Path, args: SetArgs) -> Result<u8, OpError> {
    let valid = ops::load_valid(file)?;
    print_warnings(&valid.report);
    let spec = &valid.spec;
    let dir = spec_dir(file);
    let secret = find(spec, &args.name)?;
    let path = writable_secret_path(&dir, &args.name, secret)?;
    let identity_path = files::identity_path(spec, &dir);
    let identity = Identity::load(&identity_path).ok();
    // --if-missing never writes over a file: one that cannot be decrypted here may be the
    // value a database was set up with.
    if args.if_missing && path.exists() {
        let readable = std::fs::read(&path)
            .ok()
            .zip(identity.as_ref())
            .is_some_and(|(c, i)| i.decrypt(&c).is_ok());
        if readable {
            eprintln!("Secret `{}` exists and decrypts; kept.", args.name);
            return Ok(exit::OK);
        }
        return Err(failure(
            format!(
                "secret `{}` exists, and it cannot be decrypted here",
                args.name
            ),
            "nothing was written; `berth secrets verify` says why (set it without --if-missing to replace it)",
        ));
    }
    let recipients = files::wanted_recipients(spec, secret, identity.as_ref());
    if recipients.is_empty() {
        return Err(failure(
            format!("secret `{}` has no recipients to encrypt to", args.name),
            format!(
                "the spec lists none and there is no identity at `{}`: run `berth secrets init`",
                identity_path.display()
            ),
        ));
    }
    // The value as it is, when it decrypts here: the editor starts from it (as `sops edit`
    // does), and a value left as it was is not written again.
    let current = identity.as_ref().and_then(|i| {
        let ciphertext = std::fs::read(&path).ok()?;
        i.decrypt(&ciphertext).ok()
    });
    let value = if args.generate {
        random_value()?
    } else {
        read_value(args.keep_newline, current.as_ref())?
    };
    // Unchanged, and already written as it would be now: nothing to do.
    let as_wanted = !args.armor
        && std::fs::read(&path).is_ok_and(|c| {
            let fingerprint = crate::secrets::plaintext::fingerprint(&c);
            files::recorded_recipients(&path, &fingerprint).is_some_and(|mut r| {
                let mut want = recipients.clone();
                r.sort();
                want.sort();
                r == want
            })
        });
    if as_wanted
        && current
            .as_ref()
            .is_some_and(|c| c.expose() == value.expose())
    {
        eprintln!("Secret `{}` unchanged; nothing was written.", args.name);
        return Ok(exit::OK);
    }
    let problems = value::problems(secret, &value);
    if !problems.is_empty() {
        return Err(failure(
            format!(
                "the value for `{}` fails its checks: {}",
                args.name,
                problems.join("; ")
            ),
            "nothing was written; give a value that passes `min_length`, `forbid` and `format`",
        ));
    }
    let armor = args.armor || std::fs::read(&path).is_ok_and(|old| agefile::is_armored(&old));
    let ciphertext = agefile::encrypt(&recipients, &value, armor)
        .map_err(|e| failure(e.to_string(), "check the recipients in the spec"))?;
    files::write_secret(&path, &ciphertext, &recipients).map_err(|e| {
        failure(
            format!("cannot write `{}`: {e}", path.display()),
            "check the directory's permissions",
        )
    })?;
    eprintln!(
        "Secret `{}` written to {} ({}, encrypted to {} recipient(s)). Commit it with its `.recipients` record.",
        args.name,
        secret.file.value,
        crate::secrets::plaintext::fingerprint(&ciphertext),
        recipients.len()
    );
    Ok(exit::OK)
}

/// Where `secrets set` may write a secret's file: inside the spec's directory once
/// symlinks are resolved (unless `allow_outside: true`), in a directory nobody else may
/// write into, and never through a symlink (at the file or at its record).
fn writable_secret_path(
    dir: &Path,
    name: &str,
    secret: &crate::spec::Secret,
) -> Result<std::path::PathBuf, OpError> {
    let shown = &secret.file.value;
    let path = files::resolve_secret_path(dir, secret).map_err(|e| match e {
        files::PlaceError::Outside { .. } => failure(
            format!("secret `{name}`: `{shown}` {e}"),
            "nothing was written; keep the file beside the spec (replace a symlink by the file itself), or add `allow_outside: true` to this secret",
        ),
        files::PlaceError::Io(_) => failure(
            format!("secret `{name}`: `{shown}`: {e}"),
            "nothing was written; berth does not write through a symlink: remove it, or point `file` at the real file",
        ),
    })?;
    let written = files::secret_path(dir, secret);
    for p in [
        written.clone(),
        files::record_path(&written),
        files::record_path(&path),
    ] {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(failure(
                format!("secret `{name}`: `{}` is a symlink", p.display()),
                "nothing was written; berth does not write through a symlink: remove it",
            ));
        }
    }
    if let Some((d, why)) = files::unsafe_dirs(dir, &path).into_iter().next() {
        return Err(failure(
            format!("secret `{name}`: its directory is not private: {why}"),
            format!(
                "nothing was written; run `chmod go-w {}` (and give it to the user who runs berth)",
                d.display()
            ),
        ));
    }
    Ok(path)
}

fn find<'s>(spec: &'s Spec, name: &str) -> Result<&'s crate::spec::Secret, OpError> {
    spec.secrets.get(name).ok_or_else(|| {
        let names: Vec<&str> = spec.secrets.iter().map(|s| s.name.value.as_str()).collect();
        failure(
            format!("the spec has no secret `{name}`"),
            crate::diag::hint_for(
                name,
                &names,
                "declare it under `secrets:` first",
                "declare it under `secrets:` first, with the `file` to write",
            ),
        )
    })
}

fn random_value() -> Result<Plaintext, OpError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *bytes).map_err(|e| {
        failure(
            format!("cannot read the system's random source: {e}"),
            "this machine has no random source",
        )
    })?;
    let mut hex = Zeroizing::new(String::with_capacity(64));
    for b in bytes.iter() {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
    }
    Ok(Plaintext::new(hex.as_bytes().to_vec()))
}

/// The value from stdin; on a terminal, from `$VISUAL`/`$EDITOR` editing a file on a tmpfs
/// (holding the `current` value, if any) that is overwritten and removed afterwards.
fn read_value(keep_newline: bool, current: Option<&Plaintext>) -> Result<Plaintext, OpError> {
    let mut buf = Zeroizing::new(Vec::new());
    if std::io::stdin().is_terminal() {
        edit(&mut buf, current, keep_newline)?;
    } else {
        std::io::stdin().read_to_end(&mut buf).map_err(|e| {
            failure(
                format!("cannot read the value from stdin: {e}"),
                "pipe the value in",
            )
        })?;
    }
    if !keep_newline {
        let n = buf.len();
        if buf.ends_with(b"\r\n") {
            buf.truncate(n - 2);
        } else if buf.ends_with(b"\n") {
            buf.truncate(n - 1);
        }
    }
    if buf.is_empty() {
        return Err(failure(
            "the value is empty",
            "nothing was written; pipe the value in, e.g. `berth secrets set NAME < file`",
        ));
    }
    Ok(Plaintext::new(std::mem::take(&mut *buf)))
}

fn edit(buf: &mut Vec<u8>, current: Option<&Plaintext>, keep_newline: bool) -> Result<(), OpError> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .map_err(|_| {
            failure(
                "no value on stdin and no $EDITOR to type it in",
                "pipe the value in, or set $EDITOR",
            )
        })?;
    let root = crate::secrets::delivery::root()
        .map_err(|e| failure(e.to_string(), "pipe the value in instead"))?;
    let path = root.join(format!("edit-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            failure(
                format!("cannot create `{}`: {e}", path.display()),
                "pipe the value in instead",
            )
        })?;
    if let Some(c) = current {
        // With a newline, as an editor saves a line; it is taken off again unless
        // `--keep-newline`.
        let newline: &[u8] = if keep_newline { b"" } else { b"\n" };
        let written = f
            .write_all(c.expose())
            .and_then(|()| f.write_all(newline))
            .and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(failure(
                format!("cannot write `{}`: {e}", path.display()),
                "pipe the value in instead",
            ));
        }
    }
    drop(f);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("editor")
        .arg(&path)
        .status();
    let read = std::fs::read(&path);
    // Overwrite, then remove: a tmpfs keeps nothing, but a copy in freed pages is no use
    // to anyone either.
    if let Ok(len) = std::fs::metadata(&path).map(|m| m.len()) {
        let _ = std::fs::write(&path, vec![0u8; usize::try_from(len).unwrap_or(0)]);
    }
    let _ = std::fs::remove_file(&path);
    match (status, read) {
        (Ok(s), Ok(bytes)) if s.success() => {
            *buf = bytes;
            Ok(())
        }
        _ => Err(failure(
            "the editor failed; nothing was written",
            "check $EDITOR",
        )),
    }
}

fn show(file: &Path, name: &str) -> Result<u8, OpError> {
    let valid = ops::load_valid(file)?;
    let dir = spec_dir(file);
    let secret = find(&valid.spec, name)?;
    let identity = load_identity(&valid.spec, &dir)?;
    let path = files::resolve_secret_path(&dir, secret).map_err(|e| {
        failure(
            format!("secret `{name}`: `{}` {e}", secret.file.value),
            "keep the file beside the spec, or add `allow_outside: true` to this secret",
        )
    })?;
    let ciphertext = std::fs::read(&path).map_err(|e| {
        failure(
            format!("cannot read `{}`: {e}", path.display()),
            format!("create it with `berth secrets set {name}`"),
        )
    })?;
    let value = identity.decrypt(&ciphertext).map_err(|e| {
        failure(
            format!("secret `{name}` cannot be decrypted: {e}"),
            "ask someone who can decrypt it to run `berth secrets rotate`",
        )
    })?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(value.expose()).and_then(|_| out.flush());
    Ok(exit::OK)
}

fn load_identity(spec: &Spec, dir: &Path) -> Result<Identity, OpError> {
    let path = files::identity_path(spec, dir);
    Identity::load(&path).map_err(|e| {
        failure(
            e.to_string(),
            "create one with `berth secrets init`, or point `identity:` (or $BERTH_IDENTITY) at your key",
        )
    })
}

fn rotate(file: &Path, all: bool) -> Result<u8, OpError> {
    let valid = ops::load_valid(file)?;
    print_warnings(&valid.report);
    let dir = spec_dir(file);
    let inspection = crate::observe::secrets::inspect(&valid.spec, &dir);
    // Everything must decrypt before anything is rewritten: one step, all or nothing.
    let blocking: Vec<Diagnostic> = inspection
        .problems
        .iter()
        .filter(|d| !d.code.ends_with("check-failed"))
        .cloned()
        .collect();
    if !blocking.is_empty() {
        return Err(OpError::Preflight(Box::new(Report::new(
            &valid.report.path,
            valid.report.source.clone(),
            blocking,
        ))));
    }
    let Some(identity) = &inspection.identity else {
        eprintln!("The spec has no secrets; nothing to rotate.");
        return Ok(exit::OK);
    };
    let mut rewritten = Vec::new();
    for (name, f) in &inspection.files {
        if !all && !f.stale_recipients() {
            continue;
        }
        let value = identity
            .decrypt(&f.ciphertext)
            .map_err(|e| failure(format!("secret `{name}`: {e}"), "nothing was rewritten"))?;
        let armor = agefile::is_armored(&f.ciphertext);
        let ciphertext = agefile::encrypt(&f.wanted, &value, armor)
            .map_err(|e| failure(format!("secret `{name}`: {e}"), "nothing was rewritten"))?;
        rewritten.push((name, f, ciphertext));
    }
    for (name, f, ciphertext) in &rewritten {
        files::write_secret(&f.path, ciphertext, &f.wanted).map_err(|e| {
            failure(
                format!("cannot write `{}`: {e}", f.path.display()),
                "the secrets before this one were rewritten; fix the directory and run rotate again",
            )
        })?;
        let was = f
            .recorded
            .as_ref()
            .map_or_else(|| files::NOT_RECORDED.to_owned(), |r| r.join(", "));
        eprintln!(
            "~ secret.{name}: re-encrypted to {} (was: {was})",
            f.wanted.join(", ")
        );
    }
    report_removed(
        &inspection,
        &rewritten
            .iter()
            .map(|(n, _, _)| n.as_str())
            .collect::<Vec<_>>(),
    );
    eprintln!(
        "Rotated {} secret(s); {} already encrypted to the spec's recipients. Commit the files and their records; pods that consume them are replaced by the next apply.",
        rewritten.len(),
        inspection.files.len() - rewritten.len()
    );
    Ok(exit::OK)
}

/// Recipients that files were encrypted to and the spec no longer lists, and which files
/// (not rewritten now) a removed recipient can still read.
fn report_removed(inspection: &Inspection, rewritten: &[&str]) {
    for (name, f) in &inspection.files {
        let Some(recorded) = &f.recorded else {
            continue;
        };
        let removed: Vec<&String> = recorded.iter().filter(|r| !f.wanted.contains(r)).collect();
        if removed.is_empty() {
            continue;
        }
        let who = removed
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if rewritten.contains(&name.as_str()) {
            eprintln!(
                "  secret.{name}: no longer readable by {who} (older copies in git history still are: change the value if that key may be compromised)"
            );
        } else {
            eprintln!("warning: secret.{name} is still readable by removed recipient(s) {who}");
        }
    }
}

fn verify(file: &Path) -> Result<u8, OpError> {
    let valid = ops::load_valid(file)?;
    print_warnings(&valid.report);
    let inspection = crate::observe::secrets::inspect(&valid.spec, &spec_dir(file));
    let mut drift = Vec::new();
    for (name, f) in &inspection.files {
        for d in crate::observe::secrets::drift(f) {
            drift.push(
                Diagnostic::warning(
                    "secrets::drift",
                    format!(
                        "secret `{name}`: {} is {}, the spec wants {}",
                        d.field, d.observed, d.expected
                    ),
                )
                .help("`berth apply` heals it (or `berth secrets rotate` for recipients)"),
            );
        }
    }
    let source = valid.report.source.clone();
    print_warnings(&Report::new(&valid.report.path, source.clone(), drift));
    if !inspection.problems.is_empty() {
        return Err(OpError::Preflight(Box::new(Report::new(
            &valid.report.path,
            source,
            inspection.problems,
        ))));
    }
    eprintln!(
        "{} secret(s) verified: the identity is sound, every file decrypts and passes its checks.",
        inspection.files.len()
    );
    Ok(exit::OK)
}
