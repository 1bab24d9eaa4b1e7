//! Why an operation could not produce its result ([`OpError`]): one error for the
//! commands, wrapping the errors of the layers below (spec, engine, apply and its journal,
//! state, backup data) with what to do. It sits above apply and below backup and ops, which
//! both answer in it.

use crate::diag::Report;
use crate::graph::GraphError;
use crate::spec::load::ReadError;

/// Why an operation could not produce its result.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum OpError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Read(#[from] ReadError),
    /// The spec has errors; the report holds them (already rendered by the caller).
    #[error("`{}` has {} error(s)", .0.path.display(), .0.errors())]
    #[diagnostic(
        code(berth::invalid_spec),
        help("fix the errors above, then run the command again")
    )]
    Invalid(Box<Report>),
    #[error("cannot write `{path}`: {source}")]
    #[diagnostic(
        code(berth::write),
        help("check that the directory exists and is writable")
    )]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Context(#[from] crate::engine::context::ContextError),
    #[error("apply needs a confirmation, and there is no terminal to ask on")]
    #[diagnostic(
        code(berth::not_confirmed),
        help("pass --yes to apply without asking (automation), or run on a terminal")
    )]
    NotConfirmed,
    #[error("cannot start berth's async runtime: {0}")]
    #[diagnostic(
        code(berth::runtime),
        help("this is a problem of the machine (threads, file descriptors); try again")
    )]
    Runtime(std::io::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Locked(#[from] crate::state::lock::LockError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Journal(#[from] crate::apply::journal::JournalError),
    /// An apply was interrupted (killed) and its journal is unfinished.
    #[error(
        "an apply of `{project}` was interrupted ({detail}); nothing can be planned or applied until it is recovered"
    )]
    #[diagnostic(
        code(berth::interrupted_apply),
        help(
            "run `berth recover` to roll back to the last revision (or `berth recover --forward` to finish the apply)"
        )
    )]
    Interrupted { project: String, detail: String },
    /// A saved plan no longer matches what it was made from.
    #[error("the saved plan `{path}` is stale: {} fact(s) it relied on changed:\n{}", .changed.len(), .changed.join("\n"))]
    #[diagnostic(
        code(berth::stale_plan),
        help(
            "nothing was changed; make a new plan (`berth plan --out FILE`), review it, and apply that"
        )
    )]
    StalePlan {
        path: std::path::PathBuf,
        changed: Vec<String>,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Backup(#[from] crate::archive::BackupError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    MaxGateWait(#[from] crate::apply::gate::BadMaxGateWait),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Saved(#[from] crate::plan::saved::SavedError),
    /// A command cannot do what was asked (a missing file, a name the spec lacks, a
    /// snapshot of another project): what, and what to do.
    #[error("{message}")]
    #[diagnostic(code(berth::refused), help("{help}"))]
    Refused { message: String, help: String },
    /// Secrets failed the pre-flight; the report holds each problem (rendered by the caller).
    #[error("{} problem(s) with secrets; nothing was changed", .0.errors())]
    #[diagnostic(
        code(berth::preflight),
        help(
            "fix the problems above, then run the command again (`berth secrets verify` checks them alone)"
        )
    )]
    Preflight(Box<Report>),
    #[error("cannot build the resource graph: {0}")]
    #[diagnostic(
        code(berth::graph),
        help("this is a bug in berth's checks: please report it with the spec")
    )]
    Graph(#[from] GraphError),
}

/// A project that could not be opened fails the operation the same way.
impl From<crate::project::ProjectError> for OpError {
    fn from(e: crate::project::ProjectError) -> OpError {
        use crate::project::ProjectError;
        match e {
            ProjectError::Read(e) => OpError::Read(e),
            ProjectError::Invalid(report) => OpError::Invalid(report),
            ProjectError::Engine(e) => OpError::Engine(e),
            ProjectError::Runtime(e) => OpError::Runtime(e),
        }
    }
}

/// What an unfinished journal says, for the diagnostic.
pub fn interrupted_detail(m: &crate::apply::journal::Machine) -> String {
    let what = match &m.begin {
        Some(crate::apply::journal::Record::Begin {
            command,
            revision,
            at,
            ..
        }) => format!(
            "`{command}` towards revision {revision}, started {}",
            crate::clock::format_time(*at)
        ),
        _ => "an apply".into(),
    };
    let phase = if m.commit.is_some() {
        "after its gates had passed"
    } else {
        "before it finished"
    };
    format!("{what}, stopped {phase}")
}
