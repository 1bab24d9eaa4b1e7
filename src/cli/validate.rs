//! `berth validate [FILE]`: every diagnostic of a spec, for people or as JSON for CI.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::{exit, print, stderr_color};
use crate::ops::OpError;
use crate::spec::load_file;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec file (overrides `-f`).
    pub spec: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

pub fn run(file: &Path, args: Args) -> Result<u8, OpError> {
    let path = args.spec.as_deref().unwrap_or(file);
    let loaded = load_file(path)?;
    let report = &loaded.report;
    match args.format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
            text.push('\n');
            print(&text);
        }
        Format::Human => {
            eprint!("{}", report.render(stderr_color()));
            let verdict = if report.has_errors() {
                format!(
                    "`{}`: {} error(s), {} warning(s)\n",
                    path.display(),
                    report.errors(),
                    report.warnings()
                )
            } else {
                format!(
                    "`{}` is valid ({} warning(s))\n",
                    path.display(),
                    report.warnings()
                )
            };
            eprint!("{verdict}");
        }
    }
    Ok(if report.has_errors() {
        exit::ERROR
    } else {
        exit::OK
    })
}
