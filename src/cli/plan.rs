//! `berth plan --against OLD.yaml`: the changes between two revisions of a spec.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::{exit, print, print_warnings, stdout_color};
use crate::ops::{self, OpError};
use crate::plan::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Plan against another revision of the spec instead of live state (pull-request CI).
    /// An empty file (`/dev/null`) stands for nothing deployed yet.
    #[arg(long, value_name = "OLD.yaml")]
    pub against: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Markdown,
}

pub fn run(file: &Path, args: Args) -> Result<u8, OpError> {
    let ops::AgainstPlan { plan, new, .. } = ops::plan_against_files(file, &args.against)?;
    print_warnings(&new);
    print(&match args.format {
        Format::Human => render::human(&plan, stdout_color()),
        Format::Json => render::json(&plan),
        Format::Markdown => render::markdown(&plan),
    });
    Ok(if args.detailed_exitcode && plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}
