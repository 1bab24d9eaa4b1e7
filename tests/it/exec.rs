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

/// berth run by `script` on a pseudo-terminal in `dir` (keys: `input`); its output as the
/// terminal showed it, and its status.
fn on_a_terminal(dir: &std::path::Path, args: &str, input: &[u8]) -> (String, i32) {
    use std::io::Write;
    let mut child = std::process::Command::new("script")
        .args(["-qec", &format!("{} {args}", env!("CARGO_BIN_EXE_berth"))])
        .arg("/dev/null")
        .current_dir(dir)
        .env("BERTH_STATE_HOME", crate::common::state_home())
        .env_remove("BERTH_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script runs");
    let mut stdin = child.stdin.take().unwrap();
    // Typed once the command reads (a line, as a person would type it).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stdin.write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn exec_on_a_terminal_gives_the_command_one_and_passes_keys_through() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    s.spec(&format!("pods:\n  api:\n    image: {image}\n"));
    s.berth(&["apply", "--yes"]).code(0);
    let (out, status) = on_a_terminal(s.path(), "exec api -- /testapp tty", b"hello\r");
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("stdin is a tty"), "{out}");
    assert!(out.contains("got: hello"), "{out}");
    // `-T`: no terminal, even on one.
    let (out, status) = on_a_terminal(s.path(), "exec -T api -- /testapp tty", b"");
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("stdin is not a tty"), "{out}");
    // Piped (no terminal at all): none either.
    let out = s
        .berth(&["exec", "api", "--", "/testapp", "tty"])
        .code(0)
        .stdout();
    assert!(out.contains("stdin is not a tty"), "{out}");
}
