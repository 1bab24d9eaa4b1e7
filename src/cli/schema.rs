//! `berth schema`: the JSON Schema of the spec; `--write` renews the checked-in schema and
//! the generated spec reference.

use std::path::PathBuf;

use super::{exit, print};
use crate::ops::OpError;
use crate::spec::schema::{REFERENCE_PATH, SCHEMA_PATH, reference_markdown, schema_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write `schemas/berth.schema.json` and `docs/spec.md` under this repository root
    /// instead of printing the schema.
    #[arg(long, value_name = "REPO_ROOT", num_args = 0..=1, default_missing_value = ".")]
    pub write: Option<PathBuf>,
    /// Print the Markdown spec reference instead of the schema.
    #[arg(long, conflicts_with = "write")]
    pub markdown: bool,
}

pub fn run(args: Args) -> Result<u8, OpError> {
    match args.write {
        Some(root) => {
            for (path, text) in [
                (SCHEMA_PATH, schema_json()),
                (REFERENCE_PATH, reference_markdown()),
            ] {
                let path = root.join(path);
                std::fs::write(&path, text).map_err(|source| OpError::Write { path, source })?;
            }
        }
        None if args.markdown => print(&reference_markdown()),
        None => print(&schema_json()),
    }
    Ok(exit::OK)
}
