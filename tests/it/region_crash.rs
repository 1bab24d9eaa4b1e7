//! A two-region apply (the local engine and the tests' second engine) killed with
//! `kill -9` at every journal boundary: `berth recover` brings both engines to one
//! revision, the same on both, with no orphan on either.

use crate::common;

use common::docker;
use common::dockerd::{SecondEngine, second_engine};
use common::{Berth, Scene};

fn pod(name: &str, image: &str, version: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    image: {image}\n    env: {{ VERSION: {version} }}\n{extra}    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 40 }}\n"
    )
}

/// Both regions, then the pods (every pod runs in both).
fn spec(s: &Scene, e: &SecondEngine, pods: &str) {
    s.spec(&format!(
        "regions:
  local: {{ engine: \"unix:///var/run/docker.sock\", primary: true }}
  ord: {{ engine: \"{}\" }}
pods:
{pods}",
        e.host
    ));
}

/// Revision 1: `a` and `d`; revision 2: `a` changed (blue-green), `c` new after `a`, `d` gone.
fn rev1(image: &str) -> String {
    [pod("a", image, "a1", ""), pod("d", image, "d1", "")].concat()
}

fn rev2(image: &str) -> String {
    [
        pod("a", image, "a2", ""),
        pod("c", image, "c2", "    depends_on: [a]\n"),
    ]
    .concat()
}

/// The project's containers on both engines.
fn both(s: &Scene, e: &SecondEngine) -> (Vec<String>, Vec<String>) {
    (s.containers(), e.containers(&s.project.0))
}

#[test]
fn a_kill_at_every_journal_boundary_of_a_two_region_apply_recovers_to_one_revision_on_both() {
    if !docker::available() {
        return;
    }
    let Some(e) = second_engine() else { return };
    let image = docker::testapp_image();
    e.load_image(image);
    let s = Scene::new();
    // A clean run of rev1 -> rev2 counts the journal's records: the kill points.
    spec(&s, e, &rev1(image));
    s.berth(&["apply", "--yes"]).code(0);
    let rev1_containers = both(&s, e);
    spec(&s, e, &rev2(image));
    s.berth(&["apply", "--yes"]).code(0);
    let rev2_containers = both(&s, e);
    assert!(
        !rev2_containers.1.is_empty(),
        "pods run on the second engine"
    );
    assert_eq!(rev1_containers.0, rev1_containers.1);
    assert_eq!(rev2_containers.0, rev2_containers.1);
    let records = std::fs::read_to_string(s.state().join("last-journal.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(records > 10, "{records} records");
    spec(&s, e, &rev1(image));
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(both(&s, e), rev1_containers);

    let (mut ended_old, mut ended_new) = (0, 0);
    // The last record is `end`: killed after it, the apply is simply done.
    for kill_at in 1..records {
        spec(&s, e, &rev2(image));
        let killed = Berth::new()
            .dir(s.path())
            .args(["apply", "--yes"])
            .env("BERTH_FAULT_KILL_AT", &kill_at.to_string())
            .run();
        assert!(
            killed.0.status.code().is_none() || killed.0.status.code() == Some(134),
            "kill point {kill_at}: apply was not killed: {}",
            killed.stderr()
        );
        s.berth(&["recover"]).code(0);
        let now = both(&s, e);
        for list in [&now.0, &now.1] {
            assert!(
                list.iter()
                    .all(|c| !c.contains("-berth-") && c.ends_with(" running")),
                "kill point {kill_at}: an orphan or a stopped container: {now:?}"
            );
        }
        // One revision, the same on both engines, and the next plan says so.
        if now == rev1_containers {
            spec(&s, e, &rev1(image));
            ended_old += 1;
        } else if now == rev2_containers {
            spec(&s, e, &rev2(image));
            ended_new += 1;
        } else {
            panic!("kill point {kill_at}: not one revision on both engines: {now:?}");
        }
        s.berth(&["plan", "--detailed-exitcode"]).code(0);
        // Back to revision 1 for the next kill point.
        spec(&s, e, &rev1(image));
        s.berth(&["apply", "--yes"]).code(0);
        assert_eq!(both(&s, e), rev1_containers, "kill point {kill_at}");
    }
    eprintln!(
        "{} kill points: recovered to the old revision {ended_old} times, to the new {ended_new}",
        records - 1
    );
    assert!(ended_old > 0 && ended_new > 0);
}
