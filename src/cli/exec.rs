//! `berth exec POD -- CMD…`: a command in a pod's running container.

use std::io::IsTerminal;
use std::path::Path;

use crate::ops::{self, ExecRequest, OpError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pod.
    pub pod: String,
    /// Which replica (default the first).
    #[arg(long, value_name = "N")]
    pub replica: Option<u32>,
    /// Which region (default the primary).
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// No terminal for the command, even when berth runs on one (as compose's `-T`).
    #[arg(short = 'T', long)]
    pub no_tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// Exits with the command's status (1 when the engine does not say).
pub fn run(file: &Path, state_dir: Option<&Path>, args: Args) -> Result<u8, OpError> {
    let on_terminal = std::io::stdin().is_terminal();
    let request = ExecRequest {
        pod: args.pod,
        replica: args.replica,
        region: args.region,
        cmd: args.cmd,
        // Input is passed on when it comes from a pipe or a file, not a terminal.
        stdin: !on_terminal,
        // On a terminal, the command gets one (its keys through it).
        tty: on_terminal && std::io::stdout().is_terminal() && !args.no_tty,
    };
    let status = ops::exec(file, state_dir, &request)?;
    Ok(status.map_or(1, |s| u8::try_from(s).unwrap_or(1)))
}
