//! Every example validates without a single diagnostic, tells editors where the schema is,
//! and the checked-in schema and reference are what the types generate.

use std::path::{Path, PathBuf};

use berth::spec::load_file;
use berth::spec::schema::{REFERENCE_PATH, SCHEMA_PATH, reference_markdown, schema_json};

fn example_specs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir("examples").expect("examples/") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("example dir") {
            let f = f.expect("entry").path();
            if f.extension().is_some_and(|e| e == "yaml") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_example_validates_clean() {
    let specs = example_specs();
    for required in [
        "examples/quickstart/berth.yaml",
        "examples/ai-agents/berth.yaml",
        "examples/multi-region/berth.yaml",
        "examples/multi-region/berth.v2.yaml",
        "examples/production/berth.yaml",
        "examples/webapp/berth.yaml",
        "examples/paintbox/berth.yaml",
    ] {
        assert!(
            specs.contains(&PathBuf::from(required)),
            "missing {required}"
        );
    }
    for path in specs {
        let loaded = load_file(&path).expect("readable");
        assert!(
            loaded.report.diagnostics.is_empty(),
            "{} is not clean:\n{}",
            path.display(),
            loaded.report.render(false)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "# yaml-language-server: $schema=../../schemas/berth.schema.json",
            "{}",
            path.display()
        );
    }
}

#[test]
fn checked_in_schema_is_current() {
    let checked_in = std::fs::read_to_string(SCHEMA_PATH).expect("schema file");
    assert!(
        checked_in == schema_json(),
        "{SCHEMA_PATH} is stale: run `cargo run -- schema --write`"
    );
    let v: serde_json::Value = serde_json::from_str(&checked_in).expect("schema is JSON");
    assert_eq!(v["title"], "berth spec");
    assert_eq!(
        v["additionalProperties"], false,
        "unknown top-level keys are refused"
    );
}

#[test]
fn checked_in_reference_is_current() {
    let checked_in = std::fs::read_to_string(REFERENCE_PATH).expect("reference file");
    assert!(
        checked_in == reference_markdown(),
        "{REFERENCE_PATH} is stale: run `cargo run -- schema --write`"
    );
    for section in [
        "## Pod",
        "## Secret",
        "## Backup",
        "## Proxy",
        "## Region",
        "## Duration",
    ] {
        assert!(checked_in.contains(section), "{section}");
    }
}

#[test]
fn the_multi_region_example_expands_per_region() {
    let loaded = load_file(Path::new("examples/multi-region/berth.yaml")).unwrap();
    let spec = loaded.spec.expect("parsed");
    let g = berth::resources::graph(&spec).expect("graph");
    let has = |a: &str| g.get(&a.parse().unwrap()).is_some();
    // Two replicas of the api in each region, the database only in the primary, secrets once.
    for a in [
        "pod.api[0]@fra",
        "pod.api[1]@fra",
        "pod.api[0]@ord",
        "pod.api[1]@ord",
        "pod.db@fra",
        "network.default@fra",
        "network.default@ord",
        "proxy@fra",
        "proxy@ord",
        "backup.db@fra",
    ] {
        assert!(has(a), "{a} missing");
    }
    assert!(!has("pod.db@ord"), "the database runs in fra only");
    assert!(!has("backup.db@ord"), "its backup too");
    // The api waits for its region's redis, and (`db@fra`) for the primary's database.
    let api = g.get(&"pod.api[0]@ord".parse().unwrap()).unwrap();
    let deps: Vec<String> = api.depends_on.iter().map(|d| d.to_string()).collect();
    assert!(
        deps.contains(&"pod.db@fra".to_owned()) && deps.contains(&"pod.redis@ord".to_owned()),
        "{deps:?}"
    );
    assert!(
        !deps.contains(&"pod.redis@fra".to_owned()),
        "a plain name is its own region's: {deps:?}"
    );
    // Dependencies come first in the order.
    let order: Vec<String> = g.in_order().map(|r| r.address.to_string()).collect();
    let pos = |a: &str| order.iter().position(|x| x == a).unwrap();
    for d in &api.depends_on {
        assert!(pos(&d.to_string()) < pos("pod.api[0]@ord"), "{d}");
    }
}
