//! `berth restart POD` against the real engine: a two-replica pod behind berth's HTTP
//! probe restarted one replica at a time, each through its gate before the next; one
//! replica alone; refused for a pod that does not run as the spec says; stopped at a
//! failing gate before the next replica; and, killed with a container stopped, put right
//! by `berth recover`. The docker CLI is the witness.

use crate::common::docker::{self, docker};
use crate::common::{Berth, Scene};

/// `api`: two replicas, unhealthy while `flag/unhealthy` exists on the host; `worker`:
/// one more pod, which a restart of `api` leaves alone. `role` goes into `api`'s env.
fn spec(s: &Scene, image: &str, role: &str) {
    let flag = s.path().join("flag");
    std::fs::create_dir_all(&flag).unwrap();
    s.spec(&format!(
        "pods:\n  api:\n    image: {image}\n    replicas: 2\n    env: {{ FAIL_IF_FILE: /flag/unhealthy, ROLE: {role} }}\n    volumes: [\"./flag:/flag:ro\"]\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, timeout: 1s, retries: 3 }}\n  worker:\n    image: {image}\n"
    ));
}

/// A container's id and when it last started (the engine's clock).
fn started(container: &str) -> (String, String) {
    let out = docker(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", container]);
    let (id, at) = out.split_once(' ').unwrap();
    (id.to_owned(), at.to_owned())
}

/// An RFC 3339 time of the engine's (`2026-12-07T04:55:01.1234Z`), comparable: the
/// fraction padded to nanoseconds.
fn nanos(t: &str) -> String {
    let t = t.trim().trim_end_matches('Z');
    let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
    format!("{whole}.{fraction:0<9}")
}

fn revisions(s: &Scene) -> usize {
    crate::common::revisions(&s.berth(&["history", "--format", "json"]).code(0).stdout()).len()
}

#[test]
fn restart_starts_each_replica_again_through_its_gate_one_at_a_time() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    spec(&s, image, "a");
    s.berth(&["apply", "--yes"]).code(0);
    let (api0, api1, worker) = (s.name("api-0"), s.name("api-1"), s.name("worker"));
    let before = [started(&api0), started(&api1), started(&worker)];

    // Both replicas, in order: the second starts only once the first passed its gate.
    let r = s.berth(&["restart", "api", "--format", "json"]).code(0);
    let events: Vec<serde_json::Value> = r
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |address: &str, status: &str| {
        events
            .iter()
            .position(|e| e["step"]["address"] == address && e["step"]["status"] == status)
            .unwrap_or_else(|| panic!("no {status} of {address} in {}", r.stdout()))
    };
    assert!(
        at("pod.api[0]", "done") < at("pod.api[1]", "started"),
        "{}",
        r.stdout()
    );
    assert!(
        events.iter().all(|e| e["format_version"] == 1),
        "every line is versioned: {}",
        r.stdout()
    );
    let plan = &events[0]["plan"];
    assert_eq!(plan["summary"]["heal"], 2, "{plan}");
    let after = [started(&api0), started(&api1), started(&worker)];
    // The engine's witness: replica 1 was stopped only after replica 0 had started again.
    let stopped1 = docker(&["inspect", "-f", "{{.State.FinishedAt}}", &api1]);
    assert!(
        nanos(&stopped1) > nanos(&after[0].1),
        "replica 1 stopped at {stopped1}, before replica 0 started again at {}",
        after[0].1
    );
    for i in 0..2 {
        assert_eq!(after[i].0, before[i].0, "the same container, started again");
        assert_ne!(after[i].1, before[i].1, "replica {i} was started again");
    }
    assert_eq!(after[2], before[2], "the other pod is left alone");
    assert_eq!(docker::http_get(&api1, 8080, "/health"), "ok");
    assert_eq!(revisions(&s), 1, "a restart is not a new revision");
    assert!(
        !s.state().join("journal.jsonl").exists(),
        "the journal ended"
    );

    // One replica alone; the human output says what it did.
    let r = s.berth(&["restart", "api", "--replica", "1"]).code(0);
    assert!(
        r.stderr().contains("Restart complete: 1 change(s) made."),
        "{}",
        r.stderr()
    );
    let again = [started(&api0), started(&api1)];
    assert_eq!(again[0], after[0]);
    assert_ne!(again[1].1, after[1].1);

    // Refusals, with nothing restarted.
    let r = s.berth(&["restart", "nope"]).code(1);
    assert!(r.stderr().contains("has no pod `nope`"), "{}", r.stderr());
    let r = s.berth(&["restart", "api", "--replica", "2"]).code(1);
    assert!(r.stderr().contains("no replica 2"), "{}", r.stderr());
    spec(&s, image, "b");
    let r = s.berth(&["restart", "api"]).code(1);
    assert!(
        r.stderr()
            .contains("pod `api` does not run as the spec says: pod.api[0] (replace)"),
        "{}",
        r.stderr()
    );
    assert_eq!([started(&api0), started(&api1)], again);
    spec(&s, image, "a");

    // A failing gate stops the restart before the next replica, and fails the command.
    std::fs::write(s.path().join("flag/unhealthy"), "").unwrap();
    let r = s.berth(&["restart", "api"]).code(1);
    assert!(r.stderr().contains("pod.api[0]"), "{}", r.stderr());
    std::fs::remove_file(s.path().join("flag/unhealthy")).unwrap();
    assert_eq!(started(&api1), again[1], "replica 1 was not touched");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &api0]),
        "true"
    );
    assert!(
        !s.state().join("journal.jsonl").exists(),
        "the journal ended"
    );
}

#[test]
fn a_restart_killed_with_its_container_stopped_is_put_right_by_recover() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    spec(&s, image, "a");
    s.berth(&["apply", "--yes"]).code(0);
    let api0 = s.name("api-0");
    // Where a restart journals how to undo its stop: read off one that ran to the end.
    s.berth(&["restart", "api", "--replica", "0"]).code(0);
    let last = std::fs::read_to_string(s.state().join("last-journal.jsonl")).unwrap();
    let kill_at = last
        .lines()
        .position(|l| l.contains("\"start_container\""))
        .unwrap_or_else(|| panic!("no undo of the stop in {last}"))
        + 1;
    // Killed right after it journaled that; the stop, as if it went through before the
    // kill, by hand.
    let killed = Berth::new()
        .dir(s.path())
        .args(["restart", "api", "--replica", "0"])
        .env("BERTH_FAULT_KILL_AT", &kill_at.to_string())
        .run();
    assert!(
        killed.0.status.code().is_none() || killed.0.status.code() == Some(134),
        "restart was not killed: {}",
        killed.stderr()
    );
    let journal = std::fs::read_to_string(s.state().join("journal.jsonl")).unwrap();
    assert!(journal.contains("\"start_container\""), "{journal}");
    docker(&["stop", "-t", "1", &api0]);
    s.berth(&["restart", "api"]).code(5);
    s.berth(&["recover"]).code(0);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &api0]),
        "true"
    );
    assert_eq!(
        revisions(&s),
        1,
        "recover records no revision for a restart"
    );
    s.berth(&["status"]).code(0);
}
