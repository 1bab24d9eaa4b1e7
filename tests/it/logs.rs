//! `berth logs POD` against the real engine: a two-replica pod's output, each line
//! prefixed with its instance, `--tail`, `--follow` until the containers stop, and an
//! unknown pod refused.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use crate::common::Scene;
use crate::common::docker::{self, docker};

#[test]
fn logs_interleave_every_replica_with_a_prefix_and_follow_until_they_stop() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    s.spec(&format!(
        "pods:\n  api:\n    image: {image}\n    replicas: 2\n    env: {{ VERSION: v7 }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 40 }}\n  other:\n    image: {image}\n    env: {{ VERSION: other }}\n"
    ));
    // Before an apply: no containers, said on stderr, nothing on stdout.
    let r = s.berth(&["logs", "api"]).code(0);
    assert!(r.stdout().is_empty(), "{}", r.stdout());
    assert!(
        r.stderr()
            .contains(&format!("api[0]: no container `{}-api-0`", s.project.0)),
        "{}",
        r.stderr()
    );

    s.berth(&["apply", "--yes"]).code(0);
    let out = s.berth(&["logs", "api"]).code(0).stdout();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "api[0] | testapp v7 starting on port 8080",
            "api[1] | testapp v7 starting on port 8080",
        ],
        "{out}"
    );
    // Another pod's output is not in it; `--tail 0` prints nothing.
    assert!(
        s.berth(&["logs", "api", "--tail", "0"])
            .code(0)
            .stdout()
            .is_empty()
    );
    assert!(
        s.berth(&["logs", "other", "--since", "1h"])
            .code(0)
            .stdout()
            .contains("other | testapp other starting")
    );

    // Following: the start lines, then it waits; stopping the containers ends it. (`-f`
    // is the spec file, in `logs` as everywhere.)
    let mut child = s.berth_cmd(&["logs", "api", "--follow"]).spawn_piped();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        seen.push(line);
    }
    assert!(
        seen.iter().all(|l| l.contains("testapp v7 starting")),
        "{seen:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "-f keeps following");
    docker(&["stop", "-t", "1", &s.name("api-0"), &s.name("api-1")]);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "logs -f did not end when its containers stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());

    // A pod the spec does not have.
    let err = s.berth(&["logs", "apii"]).code(1).stderr_flat();
    assert!(err.contains("has no pod `apii`"), "{err}");
    assert!(err.contains("api, other"), "{err}");
}
