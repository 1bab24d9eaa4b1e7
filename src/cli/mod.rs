//! The command line: clap definitions and the mapping of outcomes to exit codes. Each command
//! is a thin layer over [`crate::ops`].

mod apply;
mod backup;
mod completions;
mod exec;
mod graph;
mod init;
mod logs;
mod plan;
mod restart;
mod schema;
mod secrets;
mod state;
mod status;
mod validate;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::ops::OpError;

/// Exit codes (README, "Exit codes").
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    /// `plan --detailed-exitcode` found changes.
    pub const CHANGES: u8 = 2;
    /// Another apply (or recover, rollback) holds the project's lock.
    pub const LOCKED: u8 = 3;
    /// A saved plan is stale: what it was made from has changed.
    pub const STALE_PLAN: u8 = 4;
    /// An interrupted apply's journal must be recovered first.
    pub const NEEDS_RECOVER: u8 = 5;
}

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BERTH_COMMIT"), ")"),
    about = "Declarative plan/apply deployments of containerised applications",
    long_about = "berth reads a spec (berth.yaml), checks it, builds the resource graph and plans \
                  the changes that take what exists to what the spec describes."
)]
pub struct Cli {
    /// The spec file.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        default_value = "berth.yaml",
        env = "BERTH_FILE"
    )]
    pub file: PathBuf,

    /// The project's state directory (lock, journal, revisions); default
    /// `/var/lib/berth/PROJECT` as root, else `~/.local/state/berth/PROJECT`.
    #[arg(long, global = true, env = "BERTH_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a project: a starter `berth.yaml`, the age identity its secrets are
    /// encrypted to (made or kept), and the `.gitignore` lines berth wants.
    Init(init::Args),
    /// Check a spec: schema, references, names, units, cycles and lints.
    Validate(validate::Args),
    /// Print the resource graph as DOT or Mermaid.
    Graph(graph::Args),
    /// Show the changes that would take the current state to the spec.
    Plan(plan::Args),
    /// Show a plan saved by `plan --out FILE`, as `plan` showed it.
    Show(plan::ShowArgs),
    /// Every pod instance as its engine has it now: state, health, image, uptime, restarts,
    /// ports. Exit 1 when one is not running or not healthy.
    #[command(visible_alias = "ps")]
    Status(status::Args),
    /// A pod's output: every replica (and region), interleaved, each line prefixed.
    Logs(logs::Args),
    /// Run every health probe and post-deploy check against what is running now, as apply
    /// runs them after a deploy. Exit 1 when one fails.
    Check(status::Args),
    /// Run a command in a pod's running container: `berth exec db -- psql -c 'select 1'`.
    Exec(exec::Args),
    /// Print the shell completion script: `berth completions bash > /etc/bash_completion.d/berth`.
    Completions(completions::CompletionsArgs),
    /// Print the manual page (roff): `berth man > /usr/local/share/man/man1/berth.1`.
    Man,
    /// Carry out the plan against the live engines, with gates and rollback.
    Apply(apply::ApplyArgs),
    /// Start a pod's containers again, one at a time, each through its gates (health,
    /// checks) before the next; journaled like an apply.
    Restart(restart::Args),
    /// Remove everything berth manages for the project (volumes only with --delete-volumes).
    Destroy(apply::Args),
    /// Print the JSON Schema of the spec.
    Schema(schema::Args),
    /// Manage the age identity and the encrypted secret files.
    Secrets(secrets::Args),
    /// Finish an apply that was interrupted: roll back to the last revision (or, with
    /// --forward, roll back and apply the spec again).
    Recover(state::RecoverArgs),
    /// List the revisions applied so far.
    History(state::HistoryArgs),
    /// Apply an earlier revision again (its spec, its images by id), through the same gates.
    Rollback(state::RollbackArgs),
    /// Remove the project's lock when no berth holds it.
    Unlock,
    /// The observed state as data: `berth state snapshot > live.json`.
    State(state::StateArgs),
    /// Encrypted, verified backups: run, list, verify, prune.
    Backup(backup::Args),
}

impl Command {
    /// Whether the command may start a pod and wait on its health gates.
    fn may_wait_on_gates(&self) -> bool {
        match self {
            Command::Apply(_)
            | Command::Destroy(_)
            | Command::Recover(_)
            | Command::Rollback(_)
            | Command::Restart(_) => true,
            Command::Backup(args) => matches!(
                args.command,
                backup::Command::Run { .. } | backup::Command::Restore { dry_run: false, .. }
            ),
            _ => false,
        }
    }
}

/// Parses arguments, runs the command, prints any error as a diagnostic.
pub fn main() -> ExitCode {
    // Into a pipe or a CI log, wrap errors late rather than at 80 columns.
    if !std::io::IsTerminal::is_terminal(&io::stderr()) {
        let _ = miette::set_hook(Box::new(|_| {
            Box::new(miette::MietteHandlerOpts::new().width(120).build())
        }));
    }
    // Usage errors exit 1, not clap's 2: with `plan --detailed-exitcode`, 2 means "changes".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            });
        }
    };
    if let Err(e) = logging() {
        report_error(e);
        return ExitCode::from(exit::ERROR);
    }
    // A bad `$BERTH_MAX_GATE_WAIT` is refused before a command that may wait on a health
    // gate changes anything (not found out, or silently replaced, halfway through).
    if cli.command.may_wait_on_gates()
        && let Err(e) = crate::apply::gate::max_gate_wait()
    {
        report_error(OpError::from(e));
        return ExitCode::from(exit::ERROR);
    }
    let result = match cli.command {
        Command::Init(args) => init::run(&cli.file, args),
        Command::Validate(args) => validate::run(&cli.file, args),
        Command::Graph(args) => graph::run(&cli.file, args),
        Command::Plan(args) => plan::run(&cli.file, cli.state_dir.as_deref(), args),
        Command::Show(args) => plan::show(args),
        Command::Status(args) => status::run(&cli.file, cli.state_dir.as_deref(), args),
        Command::Logs(args) => logs::run(&cli.file, cli.state_dir.as_deref(), args),
        Command::Check(args) => status::check(&cli.file, cli.state_dir.as_deref(), args),
        Command::Exec(args) => exec::run(&cli.file, cli.state_dir.as_deref(), args),
        Command::Completions(args) => completions::completions(args),
        Command::Man => completions::man(),
        Command::Apply(args) => apply::run_saved(
            &cli.file,
            cli.state_dir.as_deref(),
            args.common,
            apply::Target {
                goal: crate::ops::Goal::Spec,
                command: "berth apply".into(),
                revision: None,
                restart: None,
            },
            args.plan.as_deref(),
        ),
        Command::Destroy(args) => apply::run(
            &cli.file,
            cli.state_dir.as_deref(),
            args,
            apply::Target {
                goal: crate::ops::Goal::Nothing,
                command: "berth destroy".into(),
                revision: None,
                restart: None,
            },
        ),
        Command::Restart(args) => restart::run(&cli.file, cli.state_dir.as_deref(), args),
        Command::Recover(args) => state::recover(&cli.file, cli.state_dir.as_deref(), args),
        Command::History(args) => state::history(&cli.file, cli.state_dir.as_deref(), args),
        Command::Rollback(args) => state::rollback(&cli.file, cli.state_dir.as_deref(), args),
        Command::Unlock => state::unlock(&cli.file, cli.state_dir.as_deref()),
        Command::State(args) => state::state(&cli.file, cli.state_dir.as_deref(), args),
        Command::Backup(args) => backup::run(&cli.file, cli.state_dir.as_deref(), args),
        Command::Schema(args) => schema::run(args),
        Command::Secrets(args) => secrets::run(&cli.file, args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match &e {
                OpError::Locked(_) => exit::LOCKED,
                OpError::Interrupted { .. } => exit::NEEDS_RECOVER,
                OpError::StalePlan { .. } => exit::STALE_PLAN,
                _ => exit::ERROR,
            };
            report_error(e);
            ExitCode::from(code)
        }
    }
}

/// `BERTH_LOG`: what berth logs to stderr, as `TF_LOG` does for Terraform. A level
/// (`debug`: each engine request with its region and time; `info`; `trace`) or a
/// tracing filter (`berth::engine=debug`). Unset or empty: nothing.
fn logging() -> Result<(), OpError> {
    let Some(value) = std::env::var("BERTH_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(());
    };
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    let word = value.trim().to_ascii_lowercase();
    let refused = |why: String| {
        OpError::Refused {
        message: format!("`BERTH_LOG={value}` is not a log level or filter: {why}"),
        help: "use a level (`debug`, `info`, `trace`) or a filter such as `berth::engine=debug`, or unset it".into(),
    }
    };
    // A bare word that is not a level would be read as a module's name, and log nothing.
    if !word.contains(['=', ':', ',', '[']) && !levels.contains(&word.as_str()) {
        return Err(refused(format!(
            "`{word}` is not one of {}",
            levels.join(", ")
        )));
    }
    let directive = if levels.contains(&word.as_str()) {
        format!("berth={word}")
    } else {
        value.clone()
    };
    let filter =
        tracing_subscriber::EnvFilter::try_new(&directive).map_err(|e| refused(e.to_string()))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(stderr_color())
        .init();
    Ok(())
}

/// Renders a runtime error, once, the same way for every command: a spec's or a
/// pre-flight's report first, then the diagnostic.
pub(crate) fn report_error(e: OpError) {
    if let OpError::Invalid(report) | OpError::Preflight(report) = &e {
        eprint!("{}", report.render(stderr_color()));
    }
    eprintln!("{:?}", miette::Report::new(e));
}

/// A duration argument (`500ms`, `30s`, `5m`, `1h30m`), as in the spec.
pub fn duration(text: &str) -> Result<std::time::Duration, crate::spec::units::DurationError> {
    use crate::spec::units::UnitKind;
    crate::spec::units::DurationKind::parse(text)
}

/// Whether stderr gets colour: a terminal, and NO_COLOR unset (anstream's rules).
pub fn stderr_color() -> bool {
    anstream::AutoStream::choice(&io::stderr()) != anstream::ColorChoice::Never
}

/// Whether stdout gets colour.
pub fn stdout_color() -> bool {
    anstream::AutoStream::choice(&io::stdout()) != anstream::ColorChoice::Never
}

/// Writes to stdout; a closed pipe (`berth plan | head`) is not an error worth a panic.
pub fn print(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// Renders the warnings of a valid spec to stderr.
pub fn print_warnings(report: &crate::diag::Report) {
    if !report.diagnostics.is_empty() {
        eprint!("{}", report.render(stderr_color()));
    }
}
