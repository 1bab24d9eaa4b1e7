//! `berth logs POD`: every instance's output, interleaved, each line prefixed.

use std::path::Path;

use super::exit;
use crate::ops::{self, LogsRequest, OpError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pod (all its replicas, in every region).
    pub pod: String,
    /// Keep printing what the containers write, until they stop (or Ctrl-C). Long form
    /// only: `-f` names the spec file in every berth command.
    #[arg(long)]
    pub follow: bool,
    /// Only output since this long ago: `30s`, `10m`, `2h`.
    #[arg(long, value_name = "DURATION", value_parser = super::duration)]
    pub since: Option<std::time::Duration>,
    /// Only the last N lines of each instance.
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,
}

pub fn run(file: &Path, state_dir: Option<&Path>, args: Args) -> Result<u8, OpError> {
    let request = LogsRequest {
        pod: args.pod,
        follow: args.follow,
        since: args.since,
        tail: args.tail,
    };
    ops::logs(
        file,
        state_dir,
        &request,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )?;
    Ok(exit::OK)
}
