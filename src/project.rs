//! The project context: a spec loaded without errors, where it lives, its state directory,
//! its engines (connected, not observed) and the identity on this machine, if any. Built
//! once by [`Project::open`] and shared by whatever works on the project (backups today;
//! the ops `Session` next), instead of each reaching back into `ops` for the pieces.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::diag::Report;
use crate::engine::{Engine, EngineError};
use crate::secrets::age::Identity;
use crate::spec::load::ReadError;
use crate::spec::{Loaded, Spec, load_file};
use crate::state::StateDir;

/// Why a project could not be opened. `ops::OpError` takes each case as its own variant.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ProjectError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Read(#[from] ReadError),
    /// The spec has errors; the report holds them (rendered by the caller).
    #[error("`{}` has {} error(s)", .0.path.display(), .0.errors())]
    #[diagnostic(
        code(berth::invalid_spec),
        help("fix the errors above, then run the command again")
    )]
    Invalid(Box<Report>),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot start berth's async runtime: {0}")]
    #[diagnostic(
        code(berth::runtime),
        help("this is a problem of the machine (threads, file descriptors); try again")
    )]
    Runtime(std::io::Error),
}

/// A spec that loaded without errors, with the report of its warnings.
pub struct Valid {
    pub spec: Spec,
    pub report: Report,
}

/// Loads a spec and refuses it if it has errors.
pub fn load_valid(path: &Path) -> Result<Valid, ProjectError> {
    let Loaded { spec, report } = load_file(path)?;
    match spec {
        Some(spec) if !report.has_errors() => Ok(Valid { spec, report }),
        _ => Err(ProjectError::Invalid(Box::new(report))),
    }
}

/// Connects to every region's engine, concurrently, without observing; two regions on one
/// engine are refused.
pub async fn connect_engines(
    spec: &Spec,
    spec_dir: &Path,
) -> Result<HashMap<String, Engine>, EngineError> {
    crate::observe::targets::connect_all(spec, spec_dir, &[]).await
}

/// The directory of a spec file: relative paths in the spec are relative to it.
pub fn spec_dir_of(spec_path: &Path) -> PathBuf {
    spec_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A project on this machine: its spec, its directories, its engines and the identity.
pub struct Project {
    pub spec: Spec,
    /// The spec's warnings.
    pub report: Report,
    /// The spec file, absolute.
    pub spec_path: PathBuf,
    /// The directory of the spec: relative paths in it (stores, mounts, secret files, the
    /// identity) are relative to it, wherever berth runs.
    pub spec_dir: PathBuf,
    pub state: StateDir,
    /// The async runtime the engines are driven on.
    pub runtime: tokio::runtime::Runtime,
    /// Every region's engine, by region name: connected, not observed.
    pub engines: HashMap<String, Engine>,
    /// The identity that decrypts backups, when this machine has one (loaded by
    /// [`Project::open`]; a session reads it with the secret files instead, see
    /// `secrets::files::Inspection::identity`).
    pub identity: Option<Identity>,
}

impl Project {
    /// Loads the spec at `path` (refused if it has errors), locates its state directory
    /// (`state_dir`, `--state-dir`, first), connects to its engines and loads the identity.
    /// Only connects: observing is the caller's, under the project's lock when it changes
    /// anything (an apply in progress has two containers claiming a pod for a moment,
    /// which observing would refuse).
    pub fn open(path: &Path, state_dir: Option<&Path>) -> Result<Project, ProjectError> {
        Project::open_regions(path, state_dir, |_| None)
    }

    /// [`Project::open`] connecting only the regions `regions` names for the spec (`None`:
    /// every region; an empty list: none), so that an engine that is down stops only what
    /// needs it.
    pub fn open_regions(
        path: &Path,
        state_dir: Option<&Path>,
        regions: impl FnOnce(&Spec) -> Option<Vec<String>>,
    ) -> Result<Project, ProjectError> {
        let Valid { spec, report } = load_valid(path)?;
        let spec_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let state = StateDir::locate(&spec.project.value, state_dir);
        let runtime = crate::engine::runtime().map_err(ProjectError::Runtime)?;
        let engines = match regions(&spec) {
            None => runtime.block_on(connect_engines(&spec, &spec_dir_of(&spec_path)))?,
            Some(only) if only.is_empty() => HashMap::new(),
            Some(only) => runtime.block_on(crate::observe::targets::connect_all(
                &spec,
                &spec_dir_of(&spec_path),
                &only,
            ))?,
        };
        let identity_path = crate::secrets::files::identity_path(&spec, &spec_dir_of(&spec_path));
        let identity = Identity::load(&identity_path).ok();
        Ok(Project::assemble(
            Valid { spec, report },
            spec_path,
            state,
            runtime,
            engines,
            identity,
        ))
    }

    /// A project from its parts, when the caller connected its engines itself (a session
    /// connects them as it observes) and has read the identity, or has no use for it (a
    /// session reads it with the secret files, only when the spec has secrets).
    pub fn assemble(
        valid: Valid,
        spec_path: PathBuf,
        state: StateDir,
        runtime: tokio::runtime::Runtime,
        engines: HashMap<String, Engine>,
        identity: Option<Identity>,
    ) -> Project {
        let spec_dir = spec_dir_of(&spec_path);
        Project {
            spec: valid.spec,
            report: valid.report,
            spec_path,
            spec_dir,
            state,
            runtime,
            engines,
            identity,
        }
    }

    /// The project's name.
    pub fn name(&self) -> &str {
        &self.spec.project.value
    }
}
