//! `berth exec POD -- CMD…` against the real engine: the chosen replica, the command's
//! output and exit status, standard input passed on, and refusals.

use crate::common::Scene;
use crate::common::docker::{self, docker};

#[test]
fn exec_runs_in_the_chosen_replica_with_its_output_status_and_input() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    s.spec(&format!(
        "pods:\n  api:\n    image: {image}\n    replicas: 2\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 40 }}\n"
    ));
    s.berth(&["apply", "--yes"]).code(0);

    // Standard input, written by the command into replica 1 only (the witness: docker).
    s.berth_cmd(&[
        "exec",
        "api",
        "--replica",
        "1",
        "--",
        "/testapp",
        "absorb",
        "/in",
    ])
    .stdin(b"hello from berth\n".to_vec())
    .run()
    .code(0);
    assert_eq!(
        docker(&["exec", &s.name("api-1"), "/testapp", "cat", "/in"]),
        "hello from berth"
    );
    // Output on stdout; replica 0 (the default) does not have the file: the command's
    // exit status is berth's.
    let out = s
        .berth(&[
            "exec",
            "api",
            "--replica",
            "1",
            "--",
            "/testapp",
            "cat",
            "/in",
        ])
        .code(0)
        .stdout();
    assert_eq!(out, "hello from berth\n");
    s.berth(&["exec", "api", "--", "/testapp", "stat", "/in"])
        .code(1);

    // Refused, with the reason: a replica the pod does not have, a pod the spec does not
    // have, a container that is not running.
    let err = s
        .berth(&[
            "exec",
            "api",
            "--replica",
            "2",
            "--",
            "/testapp",
            "stat",
            "/",
        ])
        .code(1)
        .stderr_flat();
    assert!(err.contains("has 2 replica(s): no replica 2"), "{err}");
    let err = s
        .berth(&["exec", "nope", "--", "true"])
        .code(1)
        .stderr_flat();
    assert!(err.contains("has no pod `nope`"), "{err}");
    docker(&["stop", "-t", "1", &s.name("api-0")]);
    let err = s
        .berth(&["exec", "api", "--", "/testapp", "stat", "/"])
        .code(1)
        .stderr_flat();
    assert!(err.contains("pod.api[0] has no running container"), "{err}");
}
