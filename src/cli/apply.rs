//! `berth apply` and `berth destroy`: show the plan against the live engines, ask, carry it
//! out with gates and rollback.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use super::{exit, print, print_warnings, stdout_color};
use crate::ops::{self, Goal, OpError};
use crate::plan::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Apply without asking (for automation).
    #[arg(long)]
    pub yes: bool,
    /// Remove volumes that are no longer in the spec, with their data.
    #[arg(long)]
    pub delete_volumes: bool,
    /// Most steps in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallelism: u16,
}

pub fn run(file: &Path, args: Args, goal: Goal) -> Result<u8, OpError> {
    let session = ops::Session::open(file, goal)?;
    print_warnings(&session.report);
    if !session.plan.has_changes() {
        eprintln!("{}", render::summary_line(&session.plan));
        return Ok(exit::OK);
    }
    print(&render::human(&session.plan, stdout_color()));
    if !args.yes && !confirmed(goal)? {
        eprintln!("Apply cancelled; nothing was changed.");
        return Ok(exit::ERROR);
    }
    let applied = session.apply(
        crate::apply::Options {
            delete_volumes: args.delete_volumes,
            parallelism: usize::from(args.parallelism),
        },
        &mut |line| eprintln!("{line}"),
    )?;
    let verb = if goal == Goal::Nothing {
        "Destroy"
    } else {
        "Apply"
    };
    eprintln!("{verb} complete: {} change(s) made.", applied.changed);
    if !applied.kept_volumes.is_empty() {
        eprintln!(
            "Kept with their data: {} (pass --delete-volumes to remove them).",
            applied.kept_volumes.join(", ")
        );
    }
    Ok(exit::OK)
}

/// Asks on a terminal; refuses without one (automation passes `--yes`).
fn confirmed(goal: Goal) -> Result<bool, OpError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(OpError::NotConfirmed);
    }
    let what = if goal == Goal::Nothing {
        "destroy everything above"
    } else {
        "apply these changes"
    };
    eprint!("\nDo you want to {what}? Only `yes` is accepted: ");
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(OpError::Runtime)?;
    Ok(answer.trim() == "yes")
}
