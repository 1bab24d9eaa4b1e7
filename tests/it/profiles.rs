//! Profiles against the real engine: a pod with `profiles: [monitoring]` is created only
//! with `--profile monitoring`, and left alone (neither created nor removed) without it;
//! a rollback brings back the profiles of its revision, and `destroy` takes it down too.
//! The docker CLI is the witness.

use crate::common::docker::{self};
use crate::common::{Scene, changed};

fn spec(s: &Scene, image: &str, web_env: &str) {
    s.spec(&format!(
        "pods:\n  web:\n    image: {image}\n    env: {{ ROLE: \"{web_env}\" }}\n  metrics:\n    image: {image}\n    profiles: [monitoring]\n    depends_on: [web]\n"
    ));
}

#[test]
fn a_pod_of_a_profile_runs_only_when_its_profile_is_chosen_and_is_otherwise_left_alone() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    spec(&s, image, "one");
    let web = s.name("web");
    let metrics = s.name("metrics");

    // Without the profile: `metrics` is not planned at all.
    let plan = s.plan(2);
    let addresses: Vec<String> = changed(&plan).into_iter().map(|(a, _)| a).collect();
    assert!(addresses.contains(&"pod.web".to_owned()), "{addresses:?}");
    assert!(
        !addresses.iter().any(|a| a.contains("metrics")),
        "{addresses:?}"
    );
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(s.containers(), vec![format!("{web} running")]);
    // `status` does not count the pod of a profile that was not applied as missing.
    s.berth(&["status"]).code(0);

    // With it: created, after `web` (which it depends on) is unchanged.
    let r = s
        .berth(&[
            "plan",
            "--profile",
            "monitoring",
            "--format",
            "json",
            "--detailed-exitcode",
        ])
        .code(2);
    let plan: berth::plan::Plan = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(
        changed(&plan),
        vec![("pod.metrics".to_owned(), berth::plan::Action::Create)]
    );
    s.berth(&["apply", "--yes", "--profile", "monitoring"])
        .code(0);
    let mut both = vec![format!("{metrics} running"), format!("{web} running")];
    both.sort();
    assert_eq!(s.containers(), both);
    let metrics_id = docker::docker(&["inspect", "-f", "{{.Id}}", &metrics]);

    // Without the profile again: `metrics` is not removed, and a change to `web` is
    // applied without touching it.
    s.plan(0);
    spec(&s, image, "two");
    let plan = s.plan(2);
    assert_eq!(
        changed(&plan)
            .into_iter()
            .map(|(a, _)| a)
            .collect::<Vec<_>>(),
        vec!["pod.web".to_owned()]
    );
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(s.containers(), both);
    assert_eq!(
        docker::docker(&["inspect", "-f", "{{.Id}}", &metrics]),
        metrics_id,
        "the pod of the profile was left alone"
    );
    let status = s.berth(&["status", "--format", "json"]).code(0).stdout();
    assert!(
        status.contains("pod.metrics"),
        "a pod that runs is shown: {status}"
    );

    // The revisions record the profiles they were applied with.
    let history =
        crate::common::revisions(&s.berth(&["history", "--format", "json"]).code(0).stdout());
    let profiles: Vec<&serde_json::Value> = history.iter().map(|r| &r["profiles"]).collect();
    assert_eq!(
        profiles,
        vec![
            &serde_json::Value::Null,
            &serde_json::json!(["monitoring"]),
            &serde_json::Value::Null
        ]
    );
    let human = s.berth(&["history"]).code(0).stdout();
    assert!(human.contains("(profiles: monitoring)"), "{human}");

    // Rolled back to revision 1 (no profile): `web` as it was, `metrics` left alone.
    s.berth(&["rollback", "--yes", "--to", "1"]).code(0);
    assert_eq!(s.containers(), both);
    assert_eq!(
        docker::docker(&["inspect", "-f", "{{.Id}}", &metrics]),
        metrics_id
    );

    // A profile no pod has is refused before anything is planned.
    let r = s
        .berth(&["apply", "--yes", "--profile", "monitorin"])
        .code(1);
    assert!(
        r.stderr()
            .contains("no pod of the spec has profile `monitorin`"),
        "{}",
        r.stderr()
    );
    assert!(r.stderr().contains("`monitoring`"), "{}", r.stderr());
    let r = s
        .berth(&["destroy", "--yes", "--profile", "monitoring"])
        .code(1);
    assert!(
        r.stderr().contains("goes only with `apply`"),
        "{}",
        r.stderr()
    );

    // destroy takes every pod down, whatever its profiles.
    s.berth(&["destroy", "--yes"]).code(0);
    assert!(s.containers().is_empty(), "{:?}", s.containers());
}

#[test]
fn a_pod_that_always_runs_cannot_need_a_pod_of_a_profile() {
    let s = Scene::new();
    s.spec(
        "pods:\n  web:\n    image: x:1\n    depends_on: [metrics]\n  metrics:\n    image: x:1\n    profiles: [monitoring, Debug]\n",
    );
    let r = s.berth(&["validate"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("profile-dependency"), "{err}");
    assert!(
        err.contains("pod `web` always runs, but pod `metrics` runs only with profile `monitoring` or `Debug`"),
        "{err}"
    );
    assert!(err.contains("profile name"), "{err}");
}
