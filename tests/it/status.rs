//! `berth status` / `berth ps` against the real engine: a two-replica pod checked by
//! berth's HTTP probe and a pod without a health check, before and after apply, made
//! unhealthy, and stopped. The docker CLI is the witness.

use crate::common::docker::{self, docker};
use crate::common::{Berth, Scene};

/// `api`: two replicas behind berth's HTTP probe, unhealthy while `flag/unhealthy` exists
/// on the host; `worker`: no health check, publishing `port` on 127.0.0.1.
fn spec(s: &Scene, image: &str, port: u16) {
    let flag = s.path().join("flag");
    std::fs::create_dir_all(&flag).unwrap();
    s.spec(&format!(
        "pods:\n  api:\n    image: {image}\n    replicas: 2\n    env: {{ FAIL_IF_FILE: /flag/unhealthy }}\n    volumes: [\"./flag:/flag:ro\"]\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 40 }}\n  worker:\n    image: {image}\n    ports: [\"127.0.0.1:{port}:8080\"]\n"
    ));
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn status(s: &Scene, code: i32) -> serde_json::Value {
    let r = s.berth(&["status", "--format", "json"]).code(code);
    serde_json::from_str(&r.stdout()).unwrap_or_else(|e| panic!("{e}: {}", r.stderr()))
}

fn instance<'a>(v: &'a serde_json::Value, address: &str) -> &'a serde_json::Value {
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"] == address)
        .unwrap_or_else(|| panic!("{address} in {v}"))
}

#[test]
fn status_shows_each_replica_as_its_engine_has_it_and_fails_when_one_is_not_well() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let port = free_port();
    spec(&s, image, port);

    // Nothing applied: every instance is missing, and that is not well.
    let v = status(&s, 1);
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["revision"], 0);
    assert_eq!(v["ok"], false);
    assert_eq!(v["instances"].as_array().unwrap().len(), 3);
    assert_eq!(instance(&v, "pod.api[0]")["state"], "missing");
    let human = s.berth(&["status"]).code(1).stdout();
    assert!(human.contains("no revision applied yet"), "{human}");
    assert!(human.contains("run `berth apply`"), "{human}");

    s.berth(&["apply", "--yes"]).code(0);
    let v = status(&s, 0);
    assert_eq!(v["revision"], 1);
    assert_eq!(v["ok"], true);
    for (address, container, health) in [
        ("pod.api[0]", s.name("api-0"), "healthy"),
        ("pod.api[1]", s.name("api-1"), "healthy"),
        ("pod.worker", s.name("worker"), "none"),
    ] {
        let i = instance(&v, address);
        assert_eq!(i["container"], container.as_str(), "{i}");
        assert_eq!(i["state"], "running", "{i}");
        assert_eq!(i["health"], health, "{i}");
        assert_eq!(i["restarts"], 0, "{i}");
        assert_eq!(i["image"], image, "{i}");
        assert!(i["uptime_seconds"].as_u64().is_some(), "{i}");
        // The witness: the engine's own id and image id of that container.
        let id = docker(&["inspect", "-f", "{{.Id}}", &container]);
        assert_eq!(i["id"], id.as_str(), "{i}");
        let image_id = docker(&["inspect", "-f", "{{.Image}}", &container]);
        assert_eq!(i["image_id"], image_id.as_str(), "{i}");
    }
    assert_eq!(
        instance(&v, "pod.worker")["ports"][0],
        format!("127.0.0.1:{port}->8080/tcp").as_str()
    );
    assert_eq!(
        instance(&v, "pod.api[1]")["ports"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let human = Berth::new()
        .dir(s.path())
        .args(["ps"])
        .run()
        .code(0)
        .stdout();
    assert!(human.contains("revision 1"), "{human}");
    assert!(human.contains("All 3 instance(s) running"), "{human}");
    let id = docker(&["inspect", "-f", "{{.Id}}", &s.name("worker")]);
    assert!(human.contains(&id[..12]), "{human}");

    // The app says it is unhealthy: berth's probe, made now, sees it.
    std::fs::write(s.path().join("flag/unhealthy"), "").unwrap();
    let v = status(&s, 1);
    let api = instance(&v, "pod.api[0]");
    assert_eq!(api["state"], "running", "{api}");
    assert_eq!(api["health"], "unhealthy", "{api}");
    assert!(
        api["detail"].as_str().unwrap().contains("answered 503"),
        "{api}"
    );
    assert_eq!(instance(&v, "pod.worker")["ok"], true);
    std::fs::remove_file(s.path().join("flag/unhealthy")).unwrap();
    status(&s, 0);

    // Stopped by hand: exited, and named in the human summary.
    docker(&["stop", "-t", "1", &s.name("worker")]);
    let v = status(&s, 1);
    let worker = instance(&v, "pod.worker");
    assert_eq!(worker["state"], "exited", "{worker}");
    assert_eq!(worker["ok"], false, "{worker}");
    let human = s.berth(&["status"]).code(1).stdout();
    assert!(human.contains("1 instance(s) not well"), "{human}");
    assert!(human.contains("pod.worker: exited with code"), "{human}");
}

#[test]
fn check_runs_every_post_deploy_check_against_what_runs_now_and_fails_when_one_fails() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    std::fs::create_dir_all(s.path().join("flag")).unwrap();
    // No health check: the checks alone judge (`/health` answers 503 while the flag is
    // there; the JWKS has keys).
    s.spec(&format!(
        "pods:\n  auth:\n    image: {image}\n    replicas: 2\n    env: {{ FAIL_IF_FILE: /flag/down }}\n    volumes: [\"./flag:/flag:ro\"]\n    checks:\n      - http: {{ port: 8080, path: /health, expect_status: 200 }}\n      - http: {{ port: 8080, path: /.well-known/jwks.json, expect_json: {{ pointer: /keys, non_empty: true }} }}\n"
    ));
    // Nothing deployed: nothing passes, and the checks say why they did not run.
    let v: serde_json::Value =
        serde_json::from_str(&s.berth(&["check", "--format", "json"]).code(1).stdout()).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["instances"][0]["checks"][0]["detail"],
        "not run: the instance is not running on the project network"
    );

    s.berth(&["apply", "--yes"]).code(0);
    let out = s.berth(&["check"]).code(0).stdout();
    assert!(
        out.contains("6 passed, 0 failed, on 2 instance(s)"),
        "{out}"
    );
    assert!(
        out.contains("ok      pod.auth[1]  check GET :8080/.well-known/jwks.json"),
        "{out}"
    );

    // The app breaks: `check` fails, naming the check and the answer, on each replica;
    // the JWKS check still passes. `status` (no checks) still says running.
    std::fs::write(s.path().join("flag/down"), "").unwrap();
    let r = s.berth(&["check"]).code(1);
    let out = r.stdout();
    assert!(
        out.contains("4 passed, 2 failed, on 2 instance(s)"),
        "{out}"
    );
    for replica in ["pod.auth[0]", "pod.auth[1]"] {
        assert!(
            out.contains(&format!(
                "FAILED  {replica}  check GET :8080/health: answered 503 (expected 200)"
            )),
            "{out}"
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(&s.berth(&["check", "--format", "json"]).code(1).stdout()).unwrap();
    let first = &v["instances"][0];
    assert_eq!(first["checks"][0]["ok"], false, "{first}");
    assert_eq!(first["checks"][1]["ok"], true, "{first}");
    s.berth(&["status"]).code(0);

    // Mended: passes again.
    std::fs::remove_file(s.path().join("flag/down")).unwrap();
    s.berth(&["check"]).code(0);
}
