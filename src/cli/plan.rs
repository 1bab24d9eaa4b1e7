//! `berth plan`: the changes that take the regions' engines to the spec, or, with
//! `--against OLD.yaml`, the changes between two revisions of the spec; and `berth show`,
//! a saved plan rendered as `plan` renders it.

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
    /// Plan the pods of this profile too (repeatable): a pod with `profiles:` is planned
    /// only when one of them is chosen. `--against` compares every pod.
    #[arg(long = "profile", value_name = "NAME", conflicts_with = "against")]
    pub profile: Vec<String>,
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
            // `/dev/null` says "a first deployment" on purpose; any other empty file is
            // more likely a base spec that was not there to read (a shallow checkout).
            if p.first_deployment && old != Path::new("/dev/null") {
                eprintln!(
                    "warning: `{}` is empty, so this plans a first deployment (everything to create); if it should hold the base branch's spec, fetch that branch first",
                    old.display()
                );
            }
            (p.plan, p.new)
        }
        (None, Some(snapshot)) => ops::plan_against_snapshot(file, snapshot, &args.profile)?,
        (None, None) => {
            let opts = ops::Opts {
                state_dir: state_dir.map(Path::to_path_buf),
                regions: args.region.clone(),
                profiles: args.profile.clone(),
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
    Ok(output(&plan, args.format, args.detailed_exitcode))
}

/// Prints a plan in `format`; the exit code, with `--detailed-exitcode` 2 for changes.
fn output(plan: &crate::plan::Plan, format: Format, detailed_exitcode: bool) -> u8 {
    print(&match format {
        Format::Human => render::human(plan, stdout_color()),
        Format::Json => render::json(plan),
        Format::Markdown => render::markdown(plan),
    });
    if detailed_exitcode && plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    }
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// A plan saved by `berth plan --out FILE`.
    #[arg(value_name = "PLAN.json")]
    pub plan: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 0 when the plan has no changes, 2 when it has, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// `berth show PLAN.json`: the saved plan as `plan` printed it, without the spec or an
/// engine (a reviewer's machine, a CI step after the one that planned). Where it came from
/// goes to stderr, so that stdout is what `plan` printed.
pub fn show(args: ShowArgs) -> Result<u8, OpError> {
    let saved = ops::read_saved_plan(&args.plan)?;
    eprintln!(
        "Saved plan of project {} from {}, relying on {} fact(s); `berth apply {}` carries it out, unless one of them changed.",
        saved.project,
        saved.spec,
        saved.facts.len(),
        args.plan.display()
    );
    Ok(output(&saved.plan, args.format, args.detailed_exitcode))
}
