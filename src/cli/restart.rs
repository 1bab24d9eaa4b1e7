//! `berth restart POD`: the pod's instances started again, one at a time, each through its
//! gates, under the lock and the journal (see `ops::restart`).

use std::path::Path;
use std::time::Duration;

use super::apply::{self, Format};
use crate::ops::{Goal, OpError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pod.
    pub pod: String,
    /// Only this replica (0 is the first); default every replica, one after another.
    #[arg(long, value_name = "N")]
    pub replica: Option<u32>,
    /// Only in this region (repeatable); default every region the pod runs in, the
    /// primary first.
    #[arg(long = "region", value_name = "NAME")]
    pub region: Vec<String>,
    /// `json`: the plan, every step and the outcome as JSON lines on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Wait this long (`30s`, `5m`) for another apply of the project to finish.
    #[arg(long, value_name = "DURATION", value_parser = super::duration)]
    pub lock_wait: Option<Duration>,
    /// POST the outcome as JSON to this webhook, instead of the spec's `notify:`.
    #[arg(long, value_name = "URL")]
    pub notify: Option<String>,
}

/// A restart asks nothing: naming the pod is the confirmation, and nothing is replaced.
pub fn run(file: &Path, state_dir: Option<&Path>, args: Args) -> Result<u8, OpError> {
    let common = apply::Args {
        format: args.format,
        lock_wait: args.lock_wait,
        notify: args.notify,
        region: args.region,
        ..apply::Args::automated()
    };
    apply::run(
        file,
        state_dir,
        common,
        apply::Target {
            goal: Goal::Spec,
            command: format!("berth restart {}", args.pod),
            revision: None,
            restart: Some((args.pod, args.replica)),
        },
    )
}
