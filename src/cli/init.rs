//! `berth init`: a starter spec, the identity its secrets are encrypted to, and the
//! `.gitignore` lines a berth repository wants, so that `secrets set` and `plan` work from
//! the first minute. Nothing is overwritten: a spec that exists is refused.

use std::path::{Path, PathBuf};

use super::exit;
use super::secrets::{ensure_identity, failure};
use crate::ops::OpError;
use crate::secrets::files;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project's name (default: the directory's, made a valid name).
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// Keep the identity here (written into the spec as `identity:`) instead of
    /// `~/.config/berth/age.key`; inside the repository, it is added to `.gitignore`.
    #[arg(long, value_name = "PATH")]
    pub identity: Option<PathBuf>,
}

/// The schema written beside the spec, which its first line points editors at.
const SCHEMA_FILE: &str = "berth.schema.json";

pub fn run(file: &Path, args: Args) -> Result<u8, OpError> {
    if file.exists() {
        return Err(failure(
            format!("`{}` exists; nothing was written", file.display()),
            "`berth init` starts a new spec: run it where there is none, or name another with `-f`",
        ));
    }
    let dir = std::path::absolute(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let project = match args.project {
        Some(p) => p,
        None => project_name(&dir),
    };
    // `--identity` is written into the spec as given (relative to the spec's directory).
    let identity = match &args.identity {
        Some(p) => dir.join(p),
        None => std::env::var_os(files::ENV_IDENTITY)
            .filter(|p| !p.is_empty())
            .map_or_else(files::default_identity_path, |p| {
                crate::fsutil::expand_home(&p.to_string_lossy())
            }),
    };
    let identity = std::path::absolute(&identity).unwrap_or(identity);
    let recipient = ensure_identity(&identity)?;
    let text = starter(&project, args.identity.as_deref(), &recipient);
    write_new(file, &text)?;
    // Kept when it is there (`berth schema > berth.schema.json` renews it).
    let schema = dir.join(SCHEMA_FILE);
    if !schema.exists() {
        write_new(&schema, &crate::spec::schema::schema_json())?;
    }
    let mut ignored = vec!["/plan.json".to_owned()];
    if let Ok(inside) = identity.strip_prefix(&dir) {
        ignored.push(format!("/{}", inside.display()));
    }
    let added = gitignore(&dir, &ignored)?;
    eprintln!(
        "Created {} (project `{project}`, its secrets encrypted to {recipient}) and {SCHEMA_FILE}.",
        file.display()
    );
    if !added.is_empty() {
        eprintln!("Added to .gitignore: {}.", added.join(", "));
    }
    eprintln!(
        "Next: add a pod, `berth secrets set NAME` for each secret, then `berth plan` and `berth apply`."
    );
    Ok(exit::OK)
}

/// The directory's name as a project name: lower-case letters, digits and `-`, starting
/// with a letter, at most 40 characters (`app` when nothing of it is left).
fn project_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (name.is_empty() || name.ends_with('-'))) {
            name.push(c);
        }
    }
    let name = name.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-');
    let name: String = name.chars().take(40).collect();
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "app".to_owned()
    } else {
        name.to_owned()
    }
}

/// The starter spec: valid as it is, with commented examples of what comes next.
fn starter(project: &str, identity: Option<&Path>, recipient: &str) -> String {
    let identity = match identity {
        Some(p) => format!("identity: {}\n", p.display()),
        None => String::new(),
    };
    format!(
        "# yaml-language-server: $schema={SCHEMA_FILE}
#
# The berth spec of `{project}`. `berth validate` checks it, `berth plan` shows what
# `berth apply` would change. `berth schema --markdown` is the reference of every field.

version: 1
project: {project}
environment: development
{identity}
# Who can decrypt the secrets: your key (`berth init` made or kept it). Add the public keys
# of your teammates and of the hosts that apply, then `berth secrets rotate`.
recipients:
  - {recipient}

secrets: {{}}
#  db_password: {{ file: secrets/db_password.age, min_length: 16 }}   # berth secrets set db_password

volumes: {{}}
#  db-data: {{}}

pods: {{}}
#  web:
#    image: nginx:1.27-alpine
#    ports: [\"127.0.0.1:8080:80\"]
#    health: {{ http: {{ port: 80, path: / }} }}
"
    )
}

/// Writes a file that must not exist yet (mode 0644).
fn write_new(path: &Path, text: &str) -> Result<(), OpError> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| OpError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| OpError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Appends to `DIR/.gitignore` the lines it lacks (made when absent); those it added.
fn gitignore(dir: &Path, lines: &[String]) -> Result<Vec<String>, OpError> {
    let path = dir.join(".gitignore");
    let current = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(OpError::Write { path, source }),
    };
    let missing: Vec<String> = lines
        .iter()
        .filter(|l| !current.lines().any(|c| c.trim() == l.as_str()))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(
        "# berth: saved plans record facts of a host; the age identity is a private key\n",
    );
    for l in &missing {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&path, text).map_err(|source| OpError::Write { path, source })?;
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_name_becomes_a_valid_project_name() {
        for (dir, want) in [
            ("/srv/My Shop", "my-shop"),
            ("/srv/2024_api--v2", "api-v2"),
            ("/srv/___", "app"),
            ("/srv/estimator", "estimator"),
        ] {
            assert_eq!(project_name(Path::new(dir)), want, "{dir}");
        }
    }
}
