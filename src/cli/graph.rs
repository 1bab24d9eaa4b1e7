//! `berth graph`: the resource DAG as DOT or Mermaid.

use std::path::Path;

use clap::ValueEnum;

use super::{exit, print, print_warnings};
use crate::ops::{self, OpError};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Dot,
    Mermaid,
}

pub fn run(file: &Path, args: Args) -> Result<u8, OpError> {
    let valid = ops::load_valid(file)?;
    print_warnings(&valid.report);
    let graph = ops::graph(&valid.spec)?;
    print(&match args.format {
        Format::Dot => graph.to_dot(),
        Format::Mermaid => graph.to_mermaid(),
    });
    Ok(exit::OK)
}
