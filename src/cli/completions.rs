//! `berth completions SHELL` and `berth man`: shell completions and the manual page, made
//! from the same clap definitions the commands parse with.

use clap::CommandFactory;

use super::{Cli, exit, print};
use crate::ops::OpError;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// Writes the completion script for the shell to stdout: `berth completions bash >
/// /etc/bash_completion.d/berth`.
pub fn completions(args: CompletionsArgs) -> Result<u8, OpError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "berth", &mut out);
    print(&String::from_utf8_lossy(&out));
    Ok(exit::OK)
}

/// Writes the manual page (roff) to stdout: `berth man > /usr/local/share/man/man1/berth.1`.
pub fn man() -> Result<u8, OpError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|source| OpError::Write {
            path: "stdout".into(),
            source,
        })?;
    print(&String::from_utf8_lossy(&out));
    Ok(exit::OK)
}
