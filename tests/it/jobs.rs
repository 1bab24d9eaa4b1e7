//! One-off jobs against the real engine: a migration job with a secret runs before the
//! pod it gates, once per configuration; a job that fails stops the apply, with its output,
//! before that pod changes, and everything is as it was; `destroy` removes what its run
//! left. The docker CLI is the witness.

use crate::common::docker::{self, docker};
use crate::common::{Berth, Scene, changed};
use berth::plan::Action;

/// `api` (gated by the job, `version` in its env) and the job `migrate` running
/// `command` (a JSON list) with the secret `db_password` and the volume `data`.
fn spec(s: &Scene, image: &str, command: &str, version: &str) {
    s.spec(&format!(
        "identity: ./me.key\nsecrets:\n  db_password: {{ file: secrets/db_password.age, min_length: 16 }}\nvolumes:\n  data: {{}}\npods:\n  api:\n    image: {image}\n    env: {{ VERSION: {version} }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 20 }}\njobs:\n  migrate:\n    image: {image}\n    command: {command}\n    secrets: [db_password]\n    volumes: [\"data:/data\"]\n    before: [api]\n    timeout: 30s\n"
    ));
}

fn id_of(name: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}}", name])
}

#[test]
fn a_job_runs_before_the_pods_it_gates_and_a_failed_job_stops_the_apply_before_them() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    // The "migration": proves it got its secret file (mode, owner, size), then exits 0.
    let good = r#"["stat", "/run/secrets/db_password"]"#;
    spec(&s, image, good, "one");
    s.berth(&["secrets", "init"]).code(0);
    Berth::new()
        .dir(s.path())
        .args(["secrets", "set", "db_password"])
        .stdin(b"a-password-of-enough-length".to_vec())
        .run()
        .code(0);

    let plan = s.plan(2);
    let order: Vec<String> = changed(&plan).into_iter().map(|(a, _)| a).collect();
    let job_at = order.iter().position(|a| a == "job.migrate").unwrap();
    let api_at = order.iter().position(|a| a == "pod.api").unwrap();
    assert!(job_at < api_at, "{order:?}");
    let human = s.berth(&["plan"]).code(0).stdout();
    assert!(human.contains("job.migrate  (run)"), "{human}");
    assert!(human.contains("job.migrate: exits 0"), "{human}");

    let r = s.berth(&["apply", "--yes"]).code(0);
    assert!(
        r.stderr().contains("job.migrate: ran and exited 0"),
        "{}",
        r.stderr()
    );
    let job = s.name("migrate");
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            &job
        ]),
        "exited 0"
    );
    // It had its secret in a memory-backed volume, which left memory with it: no keeper
    // holds it any more (and `api` has no secrets).
    assert!(docker::secrets_mount_of(&job).is_some());
    assert_eq!(docker::keepers_of(&s.project.0), Vec::new());
    // The revision keeps the job's output (the secret file's mode, not its value).
    let history =
        crate::common::revisions(&s.berth(&["history", "--format", "json"]).code(0).stdout());
    let output = history[0]["jobs"]["job.migrate"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(output.contains("400"), "{output}");
    assert!(!output.contains("a-password-of-enough-length"));

    // Nothing changed: the job does not run again.
    s.plan(0);
    let job_id = id_of(&job);

    // A failing migration with a new api: the job fails, the apply stops before the api
    // changes, and the job's previous run is as it was.
    let api_id = id_of(&s.name("api"));
    let bad = r#"["cat", "/data/no-such-schema"]"#;
    spec(&s, image, bad, "two");
    let plan = s.plan(2);
    assert!(
        changed(&plan).contains(&("job.migrate".to_owned(), Action::Replace)),
        "{:?}",
        changed(&plan)
    );
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("`job.migrate` failed its `exits 0` gate"),
        "{err}"
    );
    assert!(err.contains("the job exited with status 1"), "{err}");
    assert!(
        err.contains("/data/no-such-schema"),
        "the job's output: {err}"
    );
    assert_eq!(
        id_of(&s.name("api")),
        api_id,
        "the gated pod did not change"
    );
    assert!(docker(&["inspect", "-f", "{{.Config.Env}}", &s.name("api")]).contains("VERSION=one"));
    assert_eq!(
        id_of(&job),
        job_id,
        "the previous run is back under its name"
    );
    let containers = docker::containers_of(&s.project.0);
    assert!(
        !containers.iter().any(|c| c.contains("berth-old")),
        "{containers:?}"
    );
    assert!(!s.state().join("journal.jsonl").exists());

    // Fixed: the job runs again, then the api changes.
    let fixed = r#"["stat", "/data"]"#;
    spec(&s, image, fixed, "two");
    s.berth(&["apply", "--yes"]).code(0);
    assert_ne!(id_of(&job), job_id);
    assert!(docker(&["inspect", "-f", "{{.Config.Env}}", &s.name("api")]).contains("VERSION=two"));
    s.plan(0);

    // Gone with the project.
    s.berth(&["destroy", "--yes"]).code(0);
    assert!(s.containers().is_empty(), "{:?}", s.containers());
}

#[test]
fn a_job_that_gates_what_it_waits_for_is_refused() {
    let s = Scene::new();
    s.spec(
        "pods:\n  db:\n    image: x:1\njobs:\n  migrate:\n    image: x:1\n    depends_on: [db]\n    before: [db, nope]\n  db:\n    image: x:1\n",
    );
    let r = s.berth(&["validate"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("job `migrate` waits for pod `db` and gates it too"),
        "{err}"
    );
    assert!(err.contains("unknown pod `nope`"), "{err}");
    assert!(err.contains("job `db` has the name of a pod"), "{err}");
}

#[test]
fn a_job_that_does_not_exit_within_its_timeout_is_stopped_and_fails_the_apply() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    // Without a command the test app serves forever: a job that hangs.
    s.spec(&format!(
        "pods:\n  api:\n    image: {image}\njobs:\n  hang:\n    image: {image}\n    before: [api]\n    timeout: 2s\n"
    ));
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("the job did not exit within 2s (stopped)"),
        "{err}"
    );
    assert!(err.contains("testapp dev starting"), "its output: {err}");
    assert!(s.containers().is_empty(), "{:?}", s.containers());
}
