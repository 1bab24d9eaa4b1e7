//! Planner cases: `(old.yaml, new.yaml) -> plan` in all three renderings, as snapshots a
//! person has read (fixtures/plan/snapshots). Each case directory under `fixtures/plan/`
//! holds the two revisions; the multi-region example's two revisions are a case too.
//!
//! Live cases: `(spec.yaml, live.json) -> plan`, where `live.json` is an observed state as
//! the observers would report it (drift, leftovers, heal), a `README` beside them says what
//! the case is; the planner, being pure, needs no engine for them. A case with a
//! `refused.txt` holds a state that must be refused (with that text) before planning.

use std::path::Path;

use berth::ops::plan_against_files;
use berth::plan::{Action, Plan, render};

fn plan(new: &str, old: &str) -> Plan {
    match plan_against_files(Path::new(new), Path::new(old)) {
        Ok(p) => p.plan,
        Err(e) => panic!("{new} against {old}: {e}"),
    }
}

fn snapshot_all(name: &str, plan: &Plan) {
    insta::with_settings!({
        snapshot_path => "../../fixtures/plan/snapshots",
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!(format!("{name}.human"), render::human(plan, false));
        insta::assert_snapshot!(format!("{name}.md"), render::markdown(plan));
        insta::assert_snapshot!(format!("{name}.json"), render::json(plan));
    });
    // The JSON is the plan: it parses back into the same value.
    let back: Plan = serde_json::from_str(&render::json(plan)).expect("plan json parses");
    assert_eq!(&back, plan);
}

#[test]
fn fixture_cases() {
    let mut cases: Vec<_> = std::fs::read_dir("fixtures/plan")
        .expect("fixtures/plan")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("new.yaml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "{cases:?}");
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let d = dir.display();
        let p = plan(&format!("{d}/new.yaml"), &format!("{d}/old.yaml"));
        snapshot_all(&name, &p);
    }
}

#[test]
fn multi_region_revision() {
    let p = plan(
        "examples/multi-region/berth.v2.yaml",
        "examples/multi-region/berth.yaml",
    );
    snapshot_all("multi-region", &p);
    // Exactly the changes of the pull request, whatever the wording.
    let mut changed: Vec<(String, Action)> = p
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| (c.address.to_string(), c.action))
        .collect();
    changed.sort();
    let expected = [
        ("backup.db@fra", Action::Update),
        ("job.migrate@fra", Action::Create),
        ("pod.api[0]@fra", Action::Replace),
        ("pod.api[0]@ord", Action::Replace),
        ("pod.api[1]@fra", Action::Replace),
        ("pod.api[1]@ord", Action::Replace),
        ("pod.scheduler@fra", Action::Delete),
        ("pod.worker@fra", Action::Create),
        ("proxy@fra", Action::Update),
        ("proxy@ord", Action::Update),
        ("rate_limit.api@fra", Action::Update),
        ("rate_limit.api@ord", Action::Update),
    ];
    let expected: Vec<(String, Action)> =
        expected.iter().map(|(a, x)| (a.to_string(), *x)).collect();
    assert_eq!(changed, expected);
}

#[test]
fn every_example_plans_no_changes_against_itself() {
    for f in [
        "examples/quickstart/berth.yaml",
        "examples/ai-agents/berth.yaml",
        "examples/multi-region/berth.yaml",
        "examples/multi-region/berth.v2.yaml",
        "examples/production/berth.yaml",
    ] {
        let p = plan(f, f);
        assert!(!p.has_changes(), "{f}: {}", render::human(&p, false));
        assert!(p.summary.no_op > 0);
    }
}

#[test]
fn credential_values_never_reach_a_plan() {
    let d = "fixtures/plan/sensitive-env";
    let p = plan(&format!("{d}/new.yaml"), &format!("{d}/old.yaml"));
    let outputs = [
        render::human(&p, true),
        render::markdown(&p),
        render::json(&p),
    ];
    for out in &outputs {
        for secret in [
            "oldpassword",
            "newpassword",
            "pk_test",
            "sk_test",
            "51HqLyjWDarjtT1zdp7dc",
        ] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        // The changes themselves are still visible.
        assert!(
            out.contains("env.SANDBOX_API_KEY") && out.contains("(sensitive)"),
            "{out}"
        );
    }
}

/// The changes of a plan that do something, as `(address, action)`.
fn acting(p: &Plan) -> Vec<(String, Action)> {
    p.changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| (c.address.to_string(), c.action))
        .collect()
}

#[test]
fn live_cases() {
    let expected: &[(&str, &[(&str, Action)])] = &[
        (
            "drift-hand-edited",
            &[
                ("secret.db_password", Action::Heal),
                ("pod.api", Action::Replace),
            ],
        ),
        (
            "heal-exited",
            &[("pod.db", Action::Heal), ("pod.api", Action::Heal)],
        ),
        (
            "orphan-left-behind",
            &[
                ("pod.worker", Action::Delete),
                ("volume.old-cache", Action::Delete),
            ],
        ),
        ("two-claimants", &[]),
    ];
    let mut cases: Vec<_> = std::fs::read_dir("fixtures/plan")
        .expect("fixtures/plan")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("live.json").is_file())
        .collect();
    cases.sort();
    let names: Vec<String> = cases
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        expected
            .iter()
            .map(|(n, _)| n.to_string())
            .collect::<Vec<_>>(),
        "every live case has its expected actions here"
    );
    for ((dir, name), (_, actions)) in cases.iter().zip(&names).zip(expected) {
        let valid = berth::ops::load_valid(&dir.join("spec.yaml"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let graph = berth::resources::graph(&valid.spec).expect("graph");
        let text = std::fs::read_to_string(dir.join("live.json")).expect("live.json");
        if let Ok(refused) = std::fs::read_to_string(dir.join("refused.txt")) {
            let e = serde_json::from_str::<berth::observe::ObservedState>(&text)
                .expect_err(&format!("{name}: the state is refused"));
            assert!(e.to_string().contains(refused.trim()), "{name}: {e}");
            continue;
        }
        let live: berth::observe::ObservedState =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}/live.json: {e}"));
        let p = berth::plan::plan(&valid.spec.project.value, &graph, &live);
        let want: Vec<(String, Action)> =
            actions.iter().map(|(a, x)| (a.to_string(), *x)).collect();
        assert_eq!(acting(&p), want, "{name}");
        snapshot_all(&format!("live-{name}"), &p);
    }
}
