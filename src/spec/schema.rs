//! The JSON Schema of the spec, generated from the types in [`super`], checked in as
//! `schemas/berth.schema.json`, and the spec reference `docs/spec.md` generated from it.
//! Tests fail when either checked-in copy is stale (`berth schema --write` renews both).

use serde_json::Value;

use super::Spec;

/// Where the checked-in schema lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "schemas/berth.schema.json";
/// Where the generated reference lives, relative to the repository root.
pub const REFERENCE_PATH: &str = "docs/spec.md";

fn schema_value() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Spec>();
    schema.to_value()
}

/// The schema as pretty-printed JSON with a trailing newline.
pub fn schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&schema_value()).unwrap_or_default();
    text.push('\n');
    text
}

/// The spec reference in Markdown: one table per section of the schema.
pub fn reference_markdown() -> String {
    let schema = schema_value();
    let mut out = String::from(
        "# berth spec reference (version 1)\n\n\
         Generated from the Rust types by `berth schema --write`; do not edit by hand.\n\
         The same types produce `schemas/berth.schema.json`, which editors use through the\n\
         first line of a spec:\n\n\
         ```yaml\n# yaml-language-server: $schema=schemas/berth.schema.json\n```\n\n\
         Durations, sizes, rates and file modes are strings with units (see their sections).\n\
         Unknown keys are errors everywhere.\n\n",
    );
    section(&mut out, "Spec (top level)", &schema);
    if let Some(Value::Object(defs)) = schema.get("$defs") {
        for (name, def) in defs {
            section(&mut out, name, def);
        }
    }
    out
}

fn section(out: &mut String, name: &str, def: &Value) {
    out.push_str(&format!("## {name}\n\n"));
    if let Some(d) = def.get("description").and_then(Value::as_str) {
        out.push_str(&format!("{d}\n\n"));
    }
    if let Some(Value::Object(props)) = def.get("properties") {
        let required: Vec<&str> = def
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str("| key | type | required | description |\n|---|---|---|---|\n");
        for (key, p) in props {
            let desc = p
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .replace('\n', " ")
                .replace('|', "\\|");
            let req = if required.contains(&key.as_str()) {
                "yes"
            } else {
                ""
            };
            out.push_str(&format!("| `{key}` | {} | {req} | {desc} |\n", type_of(p)));
        }
        out.push('\n');
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(variants)) = def.get(key) {
            out.push_str("One of:\n\n");
            for v in variants {
                let desc = v.get("description").and_then(Value::as_str).unwrap_or("");
                out.push_str(&format!("- {} {desc}\n", type_of(v)));
            }
            out.push('\n');
        }
    }
    if let Some(Value::Array(values)) = def.get("enum") {
        let vals: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect();
        out.push_str(&format!("Values: {}\n\n", vals.join(", ")));
    }
    if let Some(p) = def.get("pattern").and_then(Value::as_str) {
        out.push_str(&format!("Pattern: `{p}`\n\n"));
    }
}

/// A short type description of a schema node: `string`, `[Pod]`, `map of Secret`, ...
fn type_of(p: &Value) -> String {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_ascii_lowercase());
    }
    if let Some(Value::Array(any)) = p.get("anyOf").or_else(|| p.get("oneOf")) {
        let parts: Vec<String> = any
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .map(type_of)
            .collect();
        return parts.join(" or ");
    }
    if let Some(c) = p.get("const") {
        return format!("`{c}`");
    }
    if let Some(Value::Array(values)) = p.get("enum") {
        let vals: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect();
        return vals.join(" \\| ");
    }
    match p.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!("list of {}", p.get("items").map_or("any".into(), type_of))
        }
        Some(Value::String(t)) if t == "object" => match p.get("additionalProperties") {
            Some(v @ Value::Object(_)) => format!("map of {}", type_of(v)),
            _ => "mapping".into(),
        },
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .map(|t| match t {
                "array" => format!("list of {}", p.get("items").map_or("any".into(), type_of)),
                other => other.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}
