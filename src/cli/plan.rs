//! `berth plan`: the changes that take the regions' engines to the spec, or, with
//! `--against OLD.yaml`, the changes between two revisions of the spec.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::{exit, print, print_warnings, stdout_color};
use crate::ops::{self, OpError};
use crate::plan::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Plan against another revision of the spec instead of the live engines (pull-request
    /// CI). An empty file (`/dev/null`) stands for nothing deployed yet.
    #[arg(long, value_name = "OLD.yaml")]
    pub against: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also write the plan, with every fact it relied on, for `berth apply FILE`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["against", "state"])]
    pub out: Option<PathBuf>,
    /// Plan against a snapshot of a host's state (`berth state snapshot > live.json` on the
    /// host) instead of the engines: CI that cannot reach the hosts.
    #[arg(long, value_name = "FILE", conflicts_with = "against")]
    pub state: Option<PathBuf>,
    /// Plan only this region (repeatable): the other regions' engines are not even
    /// connected.
    #[arg(long = "region", value_name = "NAME", conflicts_with_all = ["against", "state", "out"])]
    pub region: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Markdown,
}

pub fn run(file: &Path, state_dir: Option<&Path>, args: Args) -> Result<u8, OpError> {
    let (plan, report) = match (&args.against, &args.state) {
        (Some(old), _) => {
            let p = ops::plan_against_files(file, old)?;
            (p.plan, p.new)
        }
        (None, Some(snapshot)) => ops::plan_against_snapshot(file, snapshot)?,
        (None, None) => {
            let opts = ops::Opts {
                state_dir: state_dir.map(Path::to_path_buf),
                regions: args.region.clone(),
                ..Default::default()
            };
            let p = ops::plan_live(file, &opts, args.out.is_some())?;
            if let (Some(out), Some(saved)) = (&args.out, &p.saved) {
                let mut text = serde_json::to_vec_pretty(saved).unwrap_or_default();
                text.push(b'\n');
                crate::fsutil::write_atomic(out, &text, 0o600).map_err(|source| {
                    OpError::Write {
                        path: out.clone(),
                        source,
                    }
                })?;
                eprintln!(
                    "Saved the plan and the {} facts it relies on to {}; `berth apply {}` carries it out, unless one of them changed.",
                    saved.facts.len(),
                    out.display(),
                    out.display()
                );
            }
            (p.plan, p.report)
        }
    };
    print_warnings(&report);
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
