//! The JSON Schema of the spec, generated from the types in [`super`] and checked in as
//! `schemas/berth.schema.json` (a test fails when the checked-in copy is stale).

use super::Spec;

/// Where the checked-in schema lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "schemas/berth.schema.json";

/// The schema as pretty-printed JSON with a trailing newline.
pub fn schema_json() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Spec>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
