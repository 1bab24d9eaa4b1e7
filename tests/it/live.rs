//! `berth plan` against the real engine: what it sees, what it ignores, what it says when the
//! engine is not there. The scenes are set with the docker CLI (an independent witness),
//! labelled the way berth labels what it creates.

use crate::common;

use std::path::Path;

use berth::plan::{Action, Plan};
use common::Berth;
use common::docker::{self, Project, label_args};

fn spec_text(project: &str, api_env: &str) -> String {
    format!(
        "version: 1
project: {project}
volumes:
  data: {{}}
pods:
  api:
    image: {image}
    env: {{ MODE: {api_env} }}
    volumes: [\"data:/data\"]
  web:
    image: {image}
    depends_on: [api]
",
        image = docker::sleeper_image()
    )
}

fn plan_json(dir: &Path, code: i32) -> Plan {
    let r = Berth::new()
        .dir(dir)
        .args(["plan", "--format", "json", "--detailed-exitcode"])
        .run()
        .code(code);
    serde_json::from_str(&r.stdout()).expect("plan json")
}

fn actions(plan: &Plan) -> Vec<(String, Action)> {
    plan.changes
        .iter()
        .map(|c| (c.address.to_string(), c.action))
        .collect()
}

#[test]
fn an_unreachable_engine_is_one_clear_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("berth.yaml"),
        "version: 1\nproject: nowhere\nregions:\n  here: { engine: \"unix:///nonexistent/docker.sock\" }\npods:\n  api:\n    image: api:1\n",
    )
    .unwrap();
    let r = Berth::new().dir(dir.path()).args(["plan"]).run().code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("cannot reach the engine of region `here`"),
        "{err}"
    );
    assert!(err.contains("unix:///nonexistent/docker.sock"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(
        r.stderr().matches("  × ").count(),
        1,
        "one diagnostic: {err}"
    );
}

#[test]
fn an_empty_host_plans_every_engine_resource_to_create() {
    if !docker::available() {
        return;
    }
    let p = Project::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("berth.yaml"), spec_text(&p.0, "a")).unwrap();
    let plan = plan_json(dir.path(), 2);
    assert_eq!(
        actions(&plan),
        [
            ("network.default".to_owned(), Action::Create),
            ("volume.data".to_owned(), Action::Create),
            ("pod.api".to_owned(), Action::Create),
            ("pod.web".to_owned(), Action::Create),
        ]
    );
    // Secret files are observed on this machine; rate limits are not observed yet.
    assert!(!plan.unobserved.contains(&berth::graph::Kind::Secret));
    assert!(plan.unobserved.contains(&berth::graph::Kind::RateLimit));
}

#[test]
fn plan_sees_labelled_objects_and_only_them() {
    if !docker::available() {
        return;
    }
    let p = Project::new();
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("berth.yaml");
    std::fs::write(&spec_path, spec_text(&p.0, "a")).unwrap();
    let loaded = berth::spec::load_file(&spec_path).unwrap();
    let spec = loaded.valid_spec().expect("valid spec");
    let image = docker::sleeper_image();

    // The scene: what an apply of this spec leaves, with `web` stopped, plus a leftover pod
    // the spec no longer has, and a container that is not berth's.
    for r in berth::resources::desired(spec) {
        let labels = berth::engine::labels::encode(&p.0, &r, Some(1));
        let args = label_args(&labels);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let name = format!("{}-{}", p.0, r.address.name);
        match r.address.kind {
            berth::graph::Kind::Network => {
                docker::docker(&[&["network", "create"], &args[..], &[&name]].concat());
            }
            berth::graph::Kind::Volume => {
                docker::docker(&[&["volume", "create"], &args[..], &[&name]].concat());
            }
            berth::graph::Kind::Pod => {
                let run = if &*r.address.name == "web" {
                    "create"
                } else {
                    "run"
                };
                let mut cmd = vec![run];
                if run == "run" {
                    cmd.push("-d");
                }
                docker::docker(&[&cmd[..], &["--name", &name], &args[..], &[image]].concat());
            }
            _ => {}
        }
    }
    let leftover = berth::graph::Resource {
        address: "pod.old".parse().unwrap(),
        attrs: Default::default(),
        depends_on: vec![],
    };
    let args = label_args(&berth::engine::labels::encode(&p.0, &leftover, Some(1)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let old_name = format!("{}-old", p.0);
    docker::docker(&[&["run", "-d", "--name", &old_name], &args[..], &[image]].concat());
    let stray = format!("{}-stray", p.0);
    let _stray_guard = docker::Cleanup::new(&["rm", "-f", &stray]);
    docker::docker(&["run", "-d", "--name", &stray, image]);

    let plan = plan_json(dir.path(), 2);
    assert_eq!(
        actions(&plan),
        [
            ("network.default".to_owned(), Action::NoOp),
            ("volume.data".to_owned(), Action::NoOp),
            ("pod.api".to_owned(), Action::NoOp),
            ("pod.web".to_owned(), Action::Heal),
            ("pod.old".to_owned(), Action::Delete),
        ]
    );
    let web = &plan.changes[3];
    assert_eq!(web.fields[0].field, "state");
    assert_eq!(web.fields[0].old.as_deref(), Some("created"));

    // A changed env in the spec replaces exactly that pod, naming the field.
    std::fs::write(&spec_path, spec_text(&p.0, "b")).unwrap();
    let plan = plan_json(dir.path(), 2);
    let api = plan
        .changes
        .iter()
        .find(|c| c.address.to_string() == "pod.api")
        .unwrap();
    assert_eq!(api.action, Action::Replace);
    assert_eq!(api.fields.len(), 1);
    assert_eq!(api.fields[0].field, "env.MODE");

    // Observing changed nothing: the stray container is still there, untouched.
    let state = docker::docker(&["inspect", "-f", "{{.State.Status}}", &stray]);
    assert_eq!(state, "running");
}

/// An observation's containers and volumes are listed while connecting, at once with the
/// networks: taking them asks the engine nothing more. They are taken once: the next lists
/// ask the engine again, and see what changed since.
#[test]
fn an_observation_lists_its_project_while_connecting_and_takes_that_list_once() {
    if !docker::available() {
        return;
    }
    let p = Project::new();
    let label = format!("io.berth.project={}", p.0);
    let first = format!("{}-first", p.0);
    docker::docker(&["volume", "create", "--label", &label, &first]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let target = berth::engine::Target::default();
        let engine = berth::engine::Engine::connect_for("local", &target, Some(&p.0))
            .await
            .expect("connects");
        assert_eq!(
            engine.requests(),
            3,
            "networks, containers and volumes, at once"
        );
        let volumes = engine.volumes_listed(&p.0).await.unwrap();
        let containers = engine.containers_listed(&p.0).await.unwrap();
        assert_eq!(engine.requests(), 3, "taken, not asked for again");
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, [first.as_str()]);
        assert!(containers.is_empty());

        let second = format!("{}-second", p.0);
        docker::docker(&["volume", "create", "--label", &label, &second]);
        let mut names: Vec<String> = engine
            .volumes_listed(&p.0)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        names.sort();
        assert_eq!(engine.requests(), 4, "asked again");
        assert_eq!(names, [first.clone(), second]);
    });
}
