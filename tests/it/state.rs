//! Apply you can trust, against the real engine: the kernel lock, the intent journal with
//! `berth recover` after a kill at every step boundary, revisions and `rollback`, and
//! SIGTERM in the middle of an apply. Checked with the docker CLI.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::{self, containers_of, docker};
use common::{Berth, Scene};

/// The scene of these tests: one volume, pods as given.
trait StateScene {
    fn pods(&self, text: &str);
}

impl StateScene for Scene {
    fn pods(&self, text: &str) {
        self.spec(&format!("volumes:\n  data: {{}}\npods:\n{text}"));
    }
}

fn pod(name: &str, image: &str, env: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    image: {image}\n    env: {{ {env} }}\n{extra}    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 40 }}\n"
    )
}

/// Pods `a` and `b` of the test app at the versions given (their `VERSION`).
fn a_and_b(image: &str, a: &str, b: &str) -> String {
    [
        pod("a", image, &format!("VERSION: {a}"), ""),
        pod("b", image, &format!("VERSION: {b}"), ""),
    ]
    .concat()
}

/// Revision 1: `a` (blue-green), `b` (owns a volume: recreate), `d`.
fn rev1(image: &str) -> String {
    [
        pod("a", image, "VERSION: a1", ""),
        pod("b", image, "VERSION: b1", "    volumes: [\"data:/data\"]\n"),
        pod("d", image, "VERSION: d1", ""),
    ]
    .concat()
}

/// Revision 2: `a` and `b` changed, `c` new, `d` gone.
fn rev2(image: &str) -> String {
    [
        pod("a", image, "VERSION: a2", ""),
        pod("b", image, "VERSION: b2", "    volumes: [\"data:/data\"]\n"),
        pod("c", image, "VERSION: c2", "    depends_on: [a]\n"),
    ]
    .concat()
}

#[test]
fn a_kill_at_every_step_boundary_is_recovered_to_one_revision_without_orphans() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    // A clean run of rev1 -> rev2 counts the journal's records: the kill points.
    s.pods(&rev1(image));
    s.berth(&["apply", "--yes"]).code(0);
    s.pods(&rev2(image));
    s.berth(&["apply", "--yes"]).code(0);
    let records = std::fs::read_to_string(s.state().join("last-journal.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(records > 10, "{records} records");
    let rev2_containers = s.containers();
    s.pods(&rev1(image));
    s.berth(&["apply", "--yes"]).code(0);
    let rev1_containers = s.containers();

    let mut exercised = 0;
    let (mut ended_old, mut ended_new) = (0, 0);
    // The last record is `end`: killed after it, the apply is simply done.
    for kill_at in 1..records {
        s.pods(&rev2(image));
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
        exercised += 1;
        // Nothing goes on until it is recovered.
        let refused = s.berth(&["plan"]).code(5);
        assert!(
            refused.stderr_flat().contains("berth recover"),
            "kill point {kill_at}: {}",
            refused.stderr()
        );
        s.berth(&["apply", "--yes"]).code(5);
        if kill_at == records / 2 {
            // --forward: back to the old revision, then on to the new one.
            let r = s.berth(&["recover", "--forward"]).code(0);
            assert!(r.stderr().contains("Apply complete"), "{}", r.stderr());
            assert_eq!(s.containers(), rev2_containers);
        } else {
            s.berth(&["recover"]).code(0);
        }
        // No orphans: no set-aside or candidate containers, every container running.
        let now = s.containers();
        assert!(
            now.iter()
                .all(|c| !c.contains("-berth-") && c.ends_with(" running")),
            "kill point {kill_at}: {now:?}"
        );
        // Fully one revision or the other, and the next plan says so.
        if now == rev1_containers {
            s.pods(&rev1(image));
            ended_old += 1;
        } else if now == rev2_containers {
            s.pods(&rev2(image));
            ended_new += 1;
        } else {
            panic!("kill point {kill_at}: neither revision: {now:?}");
        }
        s.berth(&["plan", "--detailed-exitcode"]).code(0);
        // And the history agrees: the latest revision is what runs.
        s.berth(&["rollback", "--check-only"]).code(0);
        // Back to revision 1 for the next kill point.
        s.pods(&rev1(image));
        s.berth(&["apply", "--yes"]).code(0);
        assert_eq!(s.containers(), rev1_containers);
    }
    eprintln!(
        "kill points exercised: {exercised} (recovered to the old revision {ended_old} times, to the new {ended_new})"
    );
    assert_eq!(exercised, records - 1);
    assert!(ended_old > 0 && ended_new > 0);
}

#[test]
fn a_kill_right_after_the_end_record_blocks_nothing_and_recover_sets_the_journal_aside() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let version = |v: &str| pod("a", image, &format!("VERSION: {v}"), "");
    s.pods(&version("v1"));
    s.berth(&["apply", "--yes"]).code(0);
    // A clean apply of one changed pod counts its records; the last is `end`.
    s.pods(&version("v2"));
    s.berth(&["apply", "--yes"]).code(0);
    let last = s.state().join("last-journal.jsonl");
    let records = std::fs::read_to_string(&last).unwrap().lines().count();
    let open = s.state().join("journal.jsonl");
    let killed_after_end = |v: &str| {
        s.pods(&version(v));
        let killed = Berth::new()
            .dir(s.path())
            .args(["apply", "--yes"])
            .env("BERTH_FAULT_KILL_AT", &records.to_string())
            .run();
        assert!(
            killed.0.status.code().is_none() || killed.0.status.code() == Some(134),
            "{v}: apply was not killed: {}",
            killed.stderr()
        );
        let text = std::fs::read_to_string(&open).expect("the ended journal is left in place");
        assert!(
            text.lines().last().unwrap().contains("\"end\""),
            "{v}: {text}"
        );
    };
    // Plan is not blocked by it: the apply was done, and nothing is left to change.
    killed_after_end("v3");
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    // Recover puts it away (and says so), as the apply would have.
    let r = s.berth(&["recover"]).code(0);
    let err = r.stderr_flat();
    assert!(
        err.contains("set aside the journal of an apply that had ended"),
        "{err}"
    );
    assert!(err.contains("Nothing to recover"), "{err}");
    assert!(!open.exists(), "the ended journal is still in place");
    let text = std::fs::read_to_string(&last).unwrap();
    assert!(text.lines().last().unwrap().contains("\"end\""), "{text}");
    assert!(text.contains("v3"), "{text}");
    s.berth(&["recover"]).code(0);
    // Nor is the next apply: it puts the ended journal away and goes on.
    killed_after_end("v4");
    s.pods(&version("v5"));
    s.berth(&["apply", "--yes"]).code(0);
    assert!(!open.exists());
    assert!(std::fs::read_to_string(&last).unwrap().contains("v5"));
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn two_applies_at_once_one_proceeds_and_the_other_exits_3_naming_the_holder() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    // A pod that takes two seconds to become healthy keeps the first apply busy.
    s.pods(&pod("slow", image, "START_DELAY: 2", ""));
    let first = Berth::new().dir(s.path()).args(["apply", "--yes"]).spawn();
    let lock = s.state().join("lock");
    let t = Instant::now();
    while std::fs::read(&lock).map_or(true, |b| b.is_empty()) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the first apply never locked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = s.berth(&["apply", "--yes"]).code(3);
    let err = second.stderr_flat();
    assert!(err.contains("is locked by `berth apply`"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Once it is done, the next one goes through (and has nothing to do).
    s.berth(&["apply", "--yes"]).code(0);
}

#[test]
fn rollback_to_an_earlier_revision_runs_its_exact_images_again() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let base = docker::testapp_image();
    // One tag, moved to a new image for each revision (as a registry tag would be).
    let tag = format!("berth-rb-{}:live", s.project.0);
    let mut ids = Vec::new();
    for n in 1..=3 {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM {base}\nLABEL build={n}\n"),
        )
        .unwrap();
        docker(&["build", "-q", "-t", &tag, &ctx.path().display().to_string()]);
        ids.push(docker(&["image", "inspect", "-f", "{{.Id}}", &tag]));
        s.pods(&pod("web", &tag, &format!("VERSION: r{n}"), ""));
        s.berth(&["apply", "--yes"]).code(0);
    }
    let running = |s: &Scene| {
        docker(&[
            "inspect",
            "-f",
            "{{.Image}}",
            &format!("{}-web", s.project.0),
        ])
    };
    assert_eq!(running(&s), ids[2]);
    let history = s.berth(&["history"]).code(0).stdout();
    for n in 1..=3 {
        assert!(
            history
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{n} "))),
            "{history}"
        );
    }
    // The live state matches the latest revision.
    s.berth(&["rollback", "--check-only"]).code(0);

    s.berth(&["rollback", "--to", "1", "--yes"]).code(0);
    assert_eq!(
        running(&s),
        ids[0],
        "revision 1's image, though the tag moved on"
    );
    assert_eq!(
        common::docker::http_get(&format!("{}-web", s.project.0), 8080, "/version"),
        "r1"
    );
    // The rollback is revision 4, and the spec file (revision 3) now differs from it.
    let json = s.berth(&["history", "--format", "json"]).code(0).stdout();
    let revisions = crate::common::revisions(&json);
    assert_eq!(revisions.len(), 4);
    assert_eq!(revisions[3]["command"], "berth rollback --to 1");
    assert_eq!(revisions[3]["images"]["pod.web"], serde_json::json!(ids[0]));
    s.berth(&["rollback", "--check-only"]).code(0);
    s.berth(&["plan", "--detailed-exitcode"]).code(2);
    // Someone changes the container by hand: check-only says so.
    docker(&["stop", &format!("{}-web", s.project.0)]);
    s.berth(&["rollback", "--check-only"]).code(2);
    for id in ids {
        let _ = Command::new("docker").args(["rmi", "-f", &id]).output();
    }
}

#[test]
fn sigterm_during_apply_undoes_the_steps_and_exits_non_zero() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    s.pods(
        &[
            pod("quick", image, "VERSION: q", ""),
            pod("slow", image, "START_DELAY: 3", "    depends_on: [quick]\n"),
        ]
        .concat(),
    );
    let child = Berth::new().dir(s.path()).args(["apply", "--yes"]).spawn();
    // Once `slow` is being waited for, ask berth to stop.
    let t = Instant::now();
    while !containers_of(&s.project.0).contains(&format!("{}-slow", s.project.0)) {
        assert!(t.elapsed() < Duration::from_secs(30), "slow never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        containers_of(&s.project.0).is_empty(),
        "{:?}",
        containers_of(&s.project.0)
    );
    // The journal was finished: the next plan works.
    s.berth(&["plan"]).code(0);
}

#[test]
fn a_saved_plan_is_applied_as_reviewed_or_refused_when_a_fact_changed() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    s.pods(&a_and_b(image, "a1", "b1"));
    s.berth(&["apply", "--yes"]).code(0);
    s.pods(&a_and_b(image, "a2", "b1"));
    let plan_file = s.path().join("plan.json");
    s.berth(&["plan", "--out", "plan.json"]).code(0);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan_file).unwrap()).unwrap();
    assert!(
        saved["facts"]["pod.b"]
            .as_str()
            .unwrap()
            .contains("as configured")
    );

    // Someone stops `b` by hand: the plan did not account for that.
    docker(&["stop", &format!("{}-b", s.project.0)]);
    let r = s.berth(&["apply", "plan.json"]).code(4);
    let err = r.stderr_flat();
    assert!(err.contains("is stale"), "{err}");
    assert!(err.contains("pod.b: was id"), "names the container: {err}");
    assert!(err.contains("state exited"), "names the fact: {err}");
    assert!(!err.contains("pod.a:"), "only what changed: {err}");
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}}",
            &format!("{}-b", s.project.0)
        ]),
        "false",
        "nothing was changed"
    );

    // The spec edited after the plan was made: refused too.
    docker(&["start", &format!("{}-b", s.project.0)]);
    s.pods(&a_and_b(image, "a3", "b1"));
    let err = s.berth(&["apply", "plan.json"]).code(4).stderr_flat();
    assert!(err.contains("spec: was sha256:"), "{err}");

    // A fresh plan, applied as saved, without a question.
    s.berth(&["plan", "--out", "plan.json"]).code(0);
    s.berth(&["apply", "plan.json"]).code(0);
    assert_eq!(
        common::docker::http_get(&format!("{}-a", s.project.0), 8080, "/version"),
        "a3"
    );
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_saved_plan_is_shown_as_plan_printed_it_without_the_spec_or_an_engine() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    s.pods(&a_and_b(image, "a1", "b1"));
    s.berth(&["apply", "--yes"]).code(0);
    s.pods(&a_and_b(image, "a2", "b1"));
    s.berth(&["plan", "--out", "plan.json"]).code(0);
    // Elsewhere: no spec beside it, no engine.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::copy(s.path().join("plan.json"), elsewhere.path().join("p.json")).unwrap();
    let show = |args: &[&str]| {
        Berth::new()
            .dir(elsewhere.path())
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(["show", "p.json"].iter().chain(args))
            .run()
    };
    for format in ["human", "json", "markdown"] {
        let planned = s.berth(&["plan", "--format", format]).code(0).stdout();
        let shown = show(&["--format", format]).code(0);
        assert_eq!(shown.stdout(), planned, "{format}");
        assert!(
            shown
                .stderr_flat()
                .contains("`berth apply p.json` carries it out"),
            "{}",
            shown.stderr_flat()
        );
    }
    assert!(s.berth(&["plan"]).code(0).stdout().contains("pod.a"));
    show(&["--detailed-exitcode"]).code(2);

    // Applied, the next saved plan has no changes.
    s.berth(&["apply", "plan.json"]).code(0);
    s.berth(&["plan", "--out", "plan.json"]).code(0);
    std::fs::copy(s.path().join("plan.json"), elsewhere.path().join("p.json")).unwrap();
    show(&["--detailed-exitcode"]).code(0);
}

#[test]
fn a_snapshot_taken_on_the_host_plans_anywhere_without_the_engine() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    s.pods(&a_and_b(image, "a1", "b1"));
    s.berth(&["apply", "--yes"]).code(0);
    let snap = s.berth(&["state", "snapshot"]).code(0).stdout();
    std::fs::write(s.path().join("live.json"), &snap).unwrap();
    // In CI: no engine at all, a changed spec.
    s.pods(&a_and_b(image, "a2", "b1"));
    let offline = Berth::new()
        .dir(s.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args([
            "plan",
            "--state",
            "live.json",
            "--format",
            "json",
            "--detailed-exitcode",
        ])
        .run()
        .code(2);
    let live = s.berth(&["plan", "--format", "json"]).code(0);
    let plan: berth::plan::Plan = serde_json::from_str(&offline.stdout()).unwrap();
    let changed: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.action != berth::plan::Action::NoOp)
        .map(|c| format!("{} {:?}", c.address, c.action))
        .collect();
    assert_eq!(changed, ["pod.a Replace"]);
    // The same plan as against the engines themselves.
    assert_eq!(offline.stdout(), live.stdout());
    // A snapshot of another project is refused.
    let other = snap.replace(
        &format!("\"project\": \"{}\"", s.project.0),
        "\"project\": \"other\"",
    );
    std::fs::write(s.path().join("other.json"), other).unwrap();
    s.berth(&["plan", "--state", "other.json"]).code(1);
}

/// A webhook on loopback that keeps the bodies it receives.
pub fn webhook() -> (String, std::sync::mpsc::Receiver<serde_json::Value>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/berth", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut len = 0;
            let mut line = String::new();
            let mut first = true;
            while reader.read_line(&mut line).is_ok() && line != "\r\n" {
                if first {
                    assert!(line.starts_with("POST /hooks/berth "), "{line}");
                    first = false;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            let _ = tx.send(serde_json::from_slice(&body).unwrap());
        }
    });
    (url, rx)
}

#[test]
fn the_outcome_is_posted_to_the_webhook_and_a_dead_webhook_fails_nothing() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let (url, bodies) = webhook();
    let wait = || {
        bodies
            .recv_timeout(Duration::from_secs(10))
            .expect("a POST")
    };
    s.pods(&pod("web", image, "VERSION: v1", ""));
    s.berth(&["apply", "--yes", "--notify", &url]).code(0);
    let b = wait();
    assert_eq!(b["outcome"], "applied");
    assert_eq!(b["revision"], 1);
    assert_eq!(b["project"], serde_json::json!(s.project.0));
    assert_eq!(b["changes"]["create"], 3, "network, volume, pod");
    assert!(b["duration_ms"].as_u64().is_some());
    // A failing health gate: rolled back, and said so (the spec's `notify:` this time).
    let spec = std::fs::read_to_string(s.path().join("berth.yaml")).unwrap();
    let spec = spec
        .replace("VERSION: v1", "VERSION: v2, FAIL_HEALTH: 1")
        .replace("volumes:", &format!("notify: {url}\nvolumes:"));
    std::fs::write(s.path().join("berth.yaml"), spec).unwrap();
    s.berth(&["apply", "--yes"]).code(1);
    let b = wait();
    assert_eq!(b["outcome"], "rolled_back");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("failed its `healthy` gate"),
        "{b}"
    );
    // Nobody listens at this address: a warning, and the apply's own outcome stands.
    let dead = format!("http://127.0.0.1:{}/x", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    s.pods(&pod("web", image, "VERSION: v3", ""));
    let r = s.berth(&["apply", "--yes", "--notify", &dead]).code(0);
    assert!(r.stderr().contains("the notification to"), "{}", r.stderr());
    assert!(r.stderr().contains("revision 2"), "{}", r.stderr());
}
