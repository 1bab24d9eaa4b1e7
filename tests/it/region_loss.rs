//! An engine lost mid-apply: region `iad` (primary) on the machine's engine, region `ord`
//! on a private engine of this test (`common::dockerd::PrivateEngine`; never the shared
//! second engine, which other tests use in parallel). Revision 2 changes a pod in both
//! regions; `ord`'s new pod takes seconds to get healthy, and the test kills `ord`'s
//! `dockerd` (SIGKILL by pid) once `iad`'s gates passed and `ord`'s pod was being replaced.
//!
//! apply undoes what it can (`iad` is back on revision 1), exits non-zero naming `ord`, and
//! leaves its journal; `recover` says which region it cannot reach and exits non-zero while
//! the engine is down; once the engine is back, `recover` finishes: both engines hold
//! revision 1, with no `-berth-` orphan, keeper or secrets volume left over.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::dockerd::PrivateEngine;
use crate::common::{Scene, docker};
use crate::proxy::{free_port, wait_for};

/// `iad`'s pod and `ord`'s pod at `version`; `ord_env` is added to `ord`'s env.
fn spec(s: &Scene, e: &PrivateEngine, iad_port: u16, version: &str, ord_env: &str) {
    let pod = |name: &str, region: &str, port: u16, extra: &str| {
        // `ord`'s pod publishes no port: an engine killed while a container published one
        // keeps that port allocated after its restart (Docker 20.10 restores the dead
        // endpoint's port mapping), which no client can undo. Its version is read from the
        // engine instead.
        let ports = if port == 0 {
            String::new()
        } else {
            format!("    ports: [\"127.0.0.1:{port}:8080\"]\n")
        };
        format!(
            "  {name}:\n    image: {}\n    regions: [{region}]\n    env: {{ VERSION: {version}{extra} }}\n{ports}    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 100 }}\n    update: {{ strategy: recreate }}\n",
            docker::testapp_image()
        )
    };
    s.spec(&format!(
        "regions:\n  iad: {{ engine: \"unix:///var/run/docker.sock\", primary: true }}\n  ord: {{ engine: \"{}\" }}\npods:\n{}{}",
        e.host,
        pod("web-iad", "iad", iad_port, ""),
        pod("web-ord", "ord", 0, ord_env),
    ));
}

/// The `VERSION` of `ord`'s running pod (empty when it does not run).
fn ord_version(s: &Scene, e: &PrivateEngine) -> String {
    let out = e
        .cli()
        .args([
            "inspect",
            "-f",
            "{{.State.Running}}\n{{range .Config.Env}}{{println .}}{{end}}",
        ])
        .arg(s.name("web-ord"))
        .output()
        .expect("docker runs");
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.starts_with("true") {
        return String::new();
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("VERSION="))
        .unwrap_or_default()
        .to_owned()
}

/// Whether the journal (`journal.jsonl` of the state dir) has a record of region `ord`.
fn journal_reached_ord(state: &Path) -> bool {
    std::fs::read_to_string(state.join("journal.jsonl"))
        .is_ok_and(|j| j.contains("@ord") || j.contains("\"region\":\"ord\""))
}

#[test]
fn an_engine_killed_mid_apply_is_rolled_back_where_possible_and_recovered_when_back() {
    if !docker::available() {
        return;
    }
    let Some(e) = PrivateEngine::start("rl") else {
        return;
    };
    let image = docker::testapp_image();
    e.load_image(image);
    let s = Scene::new();
    let iad_port = free_port();
    let project = s.project.0.clone();

    // Revision 1 in both regions.
    spec(&s, &e, iad_port, "v1", "");
    s.berth(&["apply", "--yes"]).code(0);
    let serving = |port: u16| wait_for(port, "/version", 200).body.trim().to_owned();
    assert_eq!(
        (serving(iad_port), ord_version(&s, &e)),
        ("v1".into(), "v1".into())
    );
    let v1_local = s.containers();
    let v1_ord = e.containers(&project);

    // Revision 2 changes both; `ord`'s new pod listens only after 6 s.
    spec(&s, &e, iad_port, "v2", ", START_DELAY: 6");
    let mut apply = s.berth_cmd(&["apply", "--yes"]).spawn();
    // `iad` is done (the rollout goes region by region, the primary first) once the
    // journal reaches `ord`; `ord`'s pod is being replaced once its new container exists
    // beside the kept old one.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(journal_reached_ord(&s.state()) && e.containers(&project).len() >= 2) {
        assert!(
            Instant::now() < deadline,
            "the apply never reached ord's pod; ord holds {:?}",
            e.containers(&project)
        );
        assert!(
            apply.try_wait().expect("wait").is_none(),
            "apply ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        serving(iad_port),
        "v2",
        "iad's gates passed before ord started"
    );
    e.kill();

    let out = apply.wait_with_output().expect("apply finishes");
    let err = crate::common::Run(out).code(1).stderr_flat();
    assert!(err.contains("`ord`"), "the error names the region: {err}");
    assert!(
        err.contains("berth recover"),
        "it says to run recover: {err}"
    );
    // What could be undone was: the primary is back on revision 1.
    assert_eq!(serving(iad_port), "v1");
    assert!(
        s.state().join("journal.jsonl").exists(),
        "the journal is left open"
    );
    let plan = s.berth(&["plan"]).code(5).stderr_flat();
    assert!(plan.contains("berth recover"), "{plan}");

    // While the engine is down, recover says which region it cannot reach.
    let r = s.berth(&["recover"]).code(1).stderr_flat();
    assert!(r.contains("`ord`"), "{r}");
    assert!(
        s.state().join("journal.jsonl").exists(),
        "the journal stays open"
    );

    // Back: recover finishes, both engines hold revision 1 and nothing else.
    e.restart();
    s.berth(&["recover"]).code(0);
    assert!(!s.state().join("journal.jsonl").exists());
    assert_eq!(
        (serving(iad_port), ord_version(&s, &e)),
        ("v1".into(), "v1".into())
    );
    let (local, ord) = (s.containers(), e.containers(&project));
    for c in local.iter().chain(&ord) {
        assert!(!c.contains("-berth-"), "an orphan is left: {c}");
    }
    assert_eq!(local.len(), v1_local.len(), "{local:?} vs {v1_local:?}");
    assert_eq!(ord.len(), v1_ord.len(), "{ord:?} vs {v1_ord:?}");
    assert!(ord.iter().all(|c| c.contains(" running")), "{ord:?}");
    assert!(docker::keepers_of(&project).is_empty());
    assert!(docker::secrets_volumes_of(&project).is_empty());
    // Revision 1's spec plans clean on both engines.
    spec(&s, &e, iad_port, "v1", "");
    s.plan(0);
}
