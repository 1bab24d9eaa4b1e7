//! `berth schema`: the JSON Schema of the spec (the source of `schemas/berth.schema.json`).

use super::{exit, print};
use crate::ops::OpError;
use crate::spec::schema::schema_json;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> Result<u8, OpError> {
    print(&schema_json());
    Ok(exit::OK)
}
