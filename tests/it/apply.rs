//! `berth apply` against the real engine: converging an empty host, replacing exactly what
//! changed, rolling back a failed gate, deleting, healing; checked with the docker CLI and
//! by asking the containers themselves (HTTP) as independent witnesses.

use crate::common;

use berth::plan::Action;
use common::docker::{self, container_id, containers_of, http_get};
use common::{Berth, Scene, changed};

/// A spec of two pods of the test app: `api` (owns a volume, so recreate) and `web`
/// (blue-green), with HTTP health checks.
fn spec(project: &str, api_env: &str, with_web: bool) -> String {
    let image = docker::testapp_image();
    let mut s = format!(
        "version: 1
project: {project}
volumes:
  data: {{}}
pods:
  api:
    image: {image}
    env: {{ PORT: 8000, {api_env} }}
    volumes: [\"data:/data\"]
    health: {{ http: {{ port: 8000, path: /health }}, interval: 300ms, retries: 6 }}
"
    );
    if with_web {
        s.push_str(&format!(
            "  web:
    image: {image}
    env: {{ VERSION: w1 }}
    depends_on: [api]
    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms, retries: 6 }}
"
        ));
    }
    s
}

/// The scene of these tests: the two-pod spec above, or pods as given.
trait ApplyScene {
    fn write(&self, api_env: &str, with_web: bool);
    fn pods(&self, pods: &str);
}

impl ApplyScene for Scene {
    fn write(&self, api_env: &str, with_web: bool) {
        std::fs::write(
            self.path().join("berth.yaml"),
            spec(&self.project.0, api_env, with_web),
        )
        .unwrap();
    }

    /// Writes a spec of this scene's project with these pods (YAML under `pods:`).
    fn pods(&self, pods: &str) {
        self.spec(&format!("pods:\n{pods}"));
    }
}

/// A scene with the spec above at `VERSION: v1` (with `web` when `with_web`) applied.
fn applied_v1(with_web: bool) -> Scene {
    let s = Scene::new();
    s.write("VERSION: v1", with_web);
    s.berth(&["apply", "--yes"]).code(0);
    s
}

#[test]
fn an_empty_host_converges_and_a_second_apply_changes_nothing() {
    if !docker::available() {
        return;
    }
    let s = applied_v1(true);
    assert_eq!(containers_of(&s.project.0), [s.name("api"), s.name("web")]);
    assert_eq!(http_get(&s.name("api"), 8000, "/version"), "v1");
    assert_eq!(http_get(&s.name("web"), 8080, "/health"), "ok");
    // The exact image is recorded on the container, as the engine knows it.
    let recorded = docker::docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"io.berth.image\"}} {{.Image}}",
        &s.name("api"),
    ]);
    let image_id = docker::docker(&["image", "inspect", "-f", "{{.Id}}", docker::testapp_image()]);
    assert_eq!(recorded, format!("{image_id} {image_id}"));
    // Plan again: nothing to do; apply again: says so.
    s.plan(0);
    let again = s.berth(&["apply", "--yes"]).code(0);
    assert!(again.stderr().contains("No changes"), "{}", again.stderr());
}

#[test]
fn a_changed_pod_is_replaced_and_the_others_keep_their_containers() {
    if !docker::available() {
        return;
    }
    let s = applied_v1(true);
    let api_before = container_id(&s.name("api")).expect("api runs");
    let web_before = container_id(&s.name("web")).expect("web runs");

    s.write("VERSION: v2", true);
    let plan = s.plan(2);
    assert_eq!(changed(&plan), [("pod.api".to_owned(), Action::Replace)]);
    let api_change = plan
        .changes
        .iter()
        .find(|c| c.action == Action::Replace)
        .unwrap();
    assert_eq!(api_change.fields.len(), 1);
    assert_eq!(api_change.fields[0].field, "env.VERSION");

    s.berth(&["apply", "--yes"]).code(0);
    let api_after = container_id(&s.name("api")).expect("api runs");
    assert_ne!(api_after, api_before, "api was replaced");
    assert_eq!(
        container_id(&s.name("web")),
        Some(web_before),
        "web kept its container"
    );
    assert_eq!(http_get(&s.name("api"), 8000, "/version"), "v2");
    assert_eq!(
        containers_of(&s.project.0),
        [s.name("api"), s.name("web")],
        "no leftovers"
    );
    s.plan(0);
}

#[test]
fn a_failed_health_gate_rolls_back_to_the_serving_container() {
    if !docker::available() {
        return;
    }
    let s = applied_v1(true);
    let api_before = container_id(&s.name("api")).expect("api runs");

    s.write("VERSION: v2, FAIL_HEALTH: 1", true);
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("`pod.api` failed its `healthy` gate"), "{err}");
    assert!(err.contains("answered 503"), "{err}");
    assert!(err.contains("restored"), "{err}");
    assert!(
        err.contains("testapp v2 starting"),
        "the failed container's log tail: {err}"
    );
    // The previous container is the one serving, and nothing of v2 is left.
    assert_eq!(container_id(&s.name("api")), Some(api_before));
    assert_eq!(http_get(&s.name("api"), 8000, "/version"), "v1");
    assert_eq!(containers_of(&s.project.0), [s.name("api"), s.name("web")]);
    // The spec still asks for v2: the plan still shows it.
    assert_eq!(
        changed(&s.plan(2)),
        [("pod.api".to_owned(), Action::Replace)]
    );
}

#[test]
fn a_stopped_container_is_healed_and_a_removed_pod_is_deleted_keeping_its_volume() {
    if !docker::available() {
        return;
    }
    let s = applied_v1(true);

    docker::docker(&["stop", "-t", "1", &s.name("web")]);
    assert_eq!(changed(&s.plan(2)), [("pod.web".to_owned(), Action::Heal)]);
    s.berth(&["apply", "--yes"]).code(0);
    assert!(container_id(&s.name("web")).is_some(), "web runs again");

    // Without web and without the api's volume in the spec.
    s.pods(&format!("  api:\n    image: {}\n    env: {{ PORT: 8000, VERSION: v1 }}\n    health: {{ http: {{ port: 8000, path: /health }}, interval: 300ms }}\n", docker::testapp_image()));
    let r = s.berth(&["apply", "--yes"]).code(0);
    assert!(r.stderr().contains("kept with its data"), "{}", r.stderr());
    assert_eq!(containers_of(&s.project.0), [s.name("api")]);
    let volume = format!("{}-data", s.project.0);
    assert_eq!(
        docker::docker(&["volume", "ls", "-q", "--filter", &format!("name={volume}")]),
        volume
    );
    // Keeping it again is not a change: no new revision.
    let history = |s: &Scene| s.berth(&["history", "--format", "json"]).code(0).stdout();
    let before = history(&s);
    let again = s.berth(&["apply", "--yes"]).code(0);
    assert!(
        again.stderr().contains("0 change(s) made"),
        "{}",
        again.stderr()
    );
    assert_eq!(history(&s), before);

    // A destroy's plan says it in a destroy's words (the spec did not change), and that
    // the volume stays; without a terminal it asks and changes nothing.
    let destroy = s.berth(&["destroy"]).code(1).stdout();
    assert!(
        destroy.contains("- pod.api  (delete: destroyed with the project)"),
        "{destroy}"
    );
    assert!(
        destroy.contains("a destroy keeps it, and its data, without --delete-volumes"),
        "{destroy}"
    );
    assert!(!destroy.contains("no longer in the spec"), "{destroy}");
    assert_eq!(containers_of(&s.project.0), [s.name("api")]);
}

#[test]
fn apply_asks_before_changing_anything() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    s.write("VERSION: v1", false);
    let r = s.berth(&["apply"]).code(1);
    assert!(
        r.stderr().contains("needs a confirmation"),
        "{}",
        r.stderr()
    );
    assert!(
        containers_of(&s.project.0).is_empty(),
        "nothing was created"
    );
}

#[test]
fn a_failed_post_deploy_check_rolls_back_too() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let write = |env: &str| {
        s.pods(&format!(
            "  auth:
    image: {}
    env: {{ {env} }}
    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms }}
    checks:
      - http: {{ port: 8080, path: /.well-known/jwks.json, expect_status: 200,
                expect_json: {{ pointer: /keys, non_empty: true }}, max_latency: 2s }}
",
            docker::testapp_image()
        ))
    };
    write("VERSION: v1");
    s.berth(&["apply", "--yes"]).code(0);
    let before = container_id(&s.name("auth")).expect("auth runs");

    write("VERSION: v2, JWKS_EMPTY: 1");
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("check GET :8080/.well-known/jwks.json"),
        "{err}"
    );
    assert!(err.contains("`/keys` is empty"), "{err}");
    assert_eq!(container_id(&s.name("auth")), Some(before));
    assert_eq!(http_get(&s.name("auth"), 8080, "/version"), "v1");
    assert_eq!(containers_of(&s.project.0), [s.name("auth")]);
}

#[test]
fn independent_pods_start_together_and_one_failure_undoes_them_all() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let pod = |name: &str, env: &str| {
        format!(
            "  {name}:\n    image: {image}\n    env: {{ {env} }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms, retries: 4 }}\n"
        )
    };
    let write = |bad: &str| {
        s.pods(
            &[
                pod("a", "VERSION: a"),
                pod("b", bad),
                pod("c", "VERSION: c"),
            ]
            .concat(),
        );
    };
    write("VERSION: b, FAIL_HEALTH: 1");
    let r = s.berth(&["apply", "--yes", "--parallelism", "3"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("`pod.b` failed its `healthy` gate"), "{err}");
    // a and c were created in the same layer and are undone with b: nothing is left.
    assert!(
        containers_of(&s.project.0).is_empty(),
        "{:?}",
        containers_of(&s.project.0)
    );

    write("VERSION: b");
    s.berth(&["apply", "--yes", "--parallelism", "3"]).code(0);
    assert_eq!(
        containers_of(&s.project.0),
        [s.name("a"), s.name("b"), s.name("c")]
    );
    s.plan(0);
}

/// A pod waiting for its gates holds none of `--parallelism`'s workers: with one worker,
/// two independent pods whose health checks cannot pass yet are both started and wait
/// together (before, the first held the worker until its gate passed, and the second was
/// not even created).
#[test]
fn a_pod_waiting_for_its_gates_holds_no_worker() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let gate = s.path().join("gate");
    std::fs::create_dir_all(&gate).unwrap();
    std::fs::write(gate.join("closed"), "").unwrap();
    let image = docker::testapp_image();
    // Unhealthy while /gate/closed exists; a gate that allows two minutes.
    let pod = |name: &str| {
        format!(
            "  {name}:\n    image: {image}\n    volumes: [\"./gate:/gate:ro\"]\n    env: {{ VERSION: {name}, FAIL_IF_FILE: /gate/closed }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 600 }}\n"
        )
    };
    s.pods(&[pod("a"), pod("b")].concat());
    let mut apply = s
        .berth_cmd(&["apply", "--yes", "--parallelism", "1"])
        .spawn();
    let running = || {
        docker::docker(&[
            "ps",
            "--filter",
            &format!("label=io.berth.project={}", s.project.0),
            "--format",
            "{{.Names}}",
        ])
        .lines()
        .filter(|n| *n == s.name("a") || *n == s.name("b"))
        .count()
    };
    // Bounded: 30 s at most, then the gates are opened whatever was seen.
    let both = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        running() == 2
    });
    std::fs::remove_file(gate.join("closed")).unwrap();
    let status = apply.wait().unwrap();
    assert!(
        both,
        "with one worker, the second pod was not started while the first waited for its gate"
    );
    assert!(status.success(), "apply failed once the gates were opened");
    assert_eq!(containers_of(&s.project.0), [s.name("a"), s.name("b")]);
}

#[test]
fn json_events_tell_a_machine_what_happened() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    s.write("VERSION: v1", false);
    let r = s.berth(&["apply", "--yes", "--format", "json"]).code(0);
    let events: Vec<serde_json::Value> = r
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "plan");
    assert_eq!(events.first().unwrap()["plan"]["summary"]["create"], 3);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "applied");
    assert_eq!(last["changed"], 3);
    let done: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step" && e["step"]["status"] == "done")
        .filter_map(|e| e["step"]["address"].as_str())
        .collect();
    // The network and the volume do not depend on each other (one layer, concurrent); the
    // pod comes after both.
    let mut first_layer = done[..2].to_vec();
    first_layer.sort();
    assert_eq!(first_layer, ["network.default", "volume.data"]);
    assert_eq!(done[2..], ["pod.api"]);
    assert!(events.iter().any(|e| e["step"]["status"] == "started"));
}

#[test]
fn a_pod_is_built_from_its_context_and_rebuilt_when_the_files_change() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let context = s.path().join("app");
    std::fs::create_dir_all(&context).unwrap();
    for f in ["testapp", "Dockerfile"] {
        std::fs::copy(docker::testapp_context().join(f), context.join(f)).unwrap();
    }
    s.pods("  web:\n    build: { context: app }\n    env: { VERSION: built }\n    health: { http: { port: 8080, path: /health }, interval: 300ms }\n");
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(http_get(&s.name("web"), 8080, "/version"), "built");
    // Created from the built image's id, which carries the tags berth gave it.
    let tags = |name: &str| -> Vec<String> {
        let id = docker::docker(&["inspect", "-f", "{{.Config.Image}} {{.Image}}", name]);
        let (config, image) = id.split_once(' ').unwrap();
        assert_eq!(config, image, "created from the image's id");
        let tags = docker::docker(&["image", "inspect", "-f", "{{join .RepoTags \" \"}}", image]);
        tags.split(' ')
            .filter(|t| t.starts_with(&format!("berth-{}-web:", s.project.0)))
            .map(str::to_owned)
            .collect()
    };
    let first = tags(&s.name("web"));
    assert_eq!(first.len(), 1, "{first:?}");
    let first = first[0].clone();
    s.plan(0);

    // Another file in the context is another image: the pod is replaced.
    std::fs::write(context.join("notes.txt"), "changed").unwrap();
    let plan = s.plan(2);
    let web = plan
        .changes
        .iter()
        .find(|c| c.address.to_string() == "pod.web")
        .unwrap();
    assert_eq!(web.action, Action::Replace);
    assert_eq!(web.fields[0].field, "build.image");
    let second = web.fields[0].new.clone().expect("the new tag");
    assert_ne!(first, second);
    let before = docker::docker(&["inspect", "-f", "{{.Id}}", &s.name("web")]);
    s.berth(&["apply", "--yes"]).code(0);
    // Replaced, by a container of the image that carries the new tag (the same bits, as
    // the Dockerfile leaves the new file out).
    assert_ne!(
        before,
        docker::docker(&["inspect", "-f", "{{.Id}}", &s.name("web")])
    );
    assert!(tags(&s.name("web")).contains(&second));
    for tag in [first, second] {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &tag])
            .output();
    }
}

#[test]
fn a_health_command_is_the_engines_healthcheck_and_gates_the_change() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let write = |env: &str| {
        s.pods(&format!("  worker:\n    image: {}\n    env: {{ {env} }}\n    health: {{ cmd: [/testapp, health], interval: 300ms, timeout: 1s, retries: 3 }}\n", docker::testapp_image()));
    };
    write("VERSION: v1");
    s.berth(&["apply", "--yes"]).code(0);
    let status = docker::docker(&[
        "inspect",
        "-f",
        "{{.State.Health.Status}}",
        &s.name("worker"),
    ]);
    assert_eq!(status, "healthy");
    let before = container_id(&s.name("worker")).unwrap();

    write("VERSION: v2, FAIL_HEALTH: 1");
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("the health command failed"), "{err}");
    assert!(err.contains("503"), "the command's output: {err}");
    assert_eq!(container_id(&s.name("worker")), Some(before));
}

#[test]
fn an_image_that_cannot_be_pulled_stops_apply_before_any_change() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    s.pods(&format!(
        "  api:\n    image: berth-test-absent/never:{}\n",
        s.project.0
    ));
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("could not be pulled"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    // Not even the network was created.
    assert!(
        docker::docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.berth.project={}", s.project.0)
        ])
        .is_empty()
    );
}

#[test]
fn a_volume_made_by_hand_is_never_taken_over_or_removed() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    // A volume with the name berth would give, not berth's, holding data.
    let volume = format!("{}-data", s.project.0);
    let _guard = docker::Cleanup::new(&["volume", "rm", "-f", &volume]);
    docker::docker(&["volume", "create", &volume]);
    s.write("VERSION: v1, FAIL_HEALTH: 1", false);
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains(&format!("a volume named `{volume}` already exists")),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(
        docker::docker(&["volume", "ls", "-q", "--filter", &format!("name={volume}")]),
        volume
    );
    assert!(containers_of(&s.project.0).is_empty());
}

#[test]
fn a_pod_renamed_in_the_spec_hands_its_port_to_its_successor() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let write = |pod: &str| {
        s.pods(&format!("  {pod}:\n    image: {}\n    ports: [\"127.0.0.1:{port}:8080\"]\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms }}\n", docker::testapp_image()));
    };
    write("api");
    s.berth(&["apply", "--yes"]).code(0);
    write("backend");
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(containers_of(&s.project.0), [s.name("backend")]);
}

#[test]
fn a_container_left_aside_by_an_interrupted_apply_stops_the_next_one_early() {
    if !docker::available() {
        return;
    }
    let s = applied_v1(false);
    // What a killed recreate leaves: the old container renamed aside.
    let leftover = format!("{}-berth-old", s.name("api"));
    docker::docker(&[
        "create",
        "--name",
        &leftover,
        "--label",
        &format!("io.berth.project={}", s.project.0),
        docker::testapp_image(),
    ]);
    let before = container_id(&s.name("api")).unwrap();
    s.write("VERSION: v2", false);
    let r = s.berth(&["apply", "--yes"]).code(1);
    assert!(
        r.stderr_flat()
            .contains(&format!("a container named `{leftover}` already exists")),
        "{}",
        r.stderr_flat()
    );
    assert_eq!(
        container_id(&s.name("api")),
        Some(before),
        "the serving container was not touched"
    );
}

#[test]
fn blue_green_gives_the_network_name_to_the_new_container_only_once_healthy() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let write = |version: &str| {
        s.pods(&format!("  web:\n    image: {}\n    env: {{ VERSION: {version}, START_DELAY: 2 }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms, retries: 20 }}\n", docker::testapp_image()));
    };
    write("w1");
    s.berth(&["apply", "--yes"]).code(0);
    write("w2");
    // While the candidate waits for its gates (it starts listening after 2 s), it is on the
    // network without the pod's name.
    let candidate = format!("{}-berth-next", s.name("web"));
    let network = format!("{}-default", s.project.0);
    let aliases_of = |container: &str| {
        std::process::Command::new("docker")
            .args([
                "inspect",
                "-f",
                &format!("{{{{json (index .NetworkSettings.Networks \"{network}\").Aliases}}}}"),
                container,
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let dir = s.path().to_path_buf();
    let apply = std::thread::spawn(move || Berth::new().dir(&dir).args(["apply", "--yes"]).run());
    let mut seen = None;
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Some(a) = aliases_of(&candidate) {
            seen = Some(a);
            break;
        }
    }
    apply.join().unwrap().code(0);
    let seen = seen.expect("the candidate was seen while its gates ran");
    assert!(!seen.contains("\"web\""), "candidate had the alias: {seen}");
    let after = aliases_of(&s.name("web")).unwrap();
    assert!(
        after.contains("\"web\""),
        "the new container answers to `web`: {after}"
    );
    assert_eq!(http_get(&s.name("web"), 8080, "/version"), "w2");
}

#[test]
fn an_engine_error_midway_is_rolled_back_and_says_so() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    // A host port held by something that is not berth's: the engine refuses to start.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    s.pods(&format!(
        "  web:\n    image: {}\n    ports: [\"127.0.0.1:{port}:8080\"]\n",
        docker::testapp_image()
    ));
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("refused `start container`"), "{err}");
    assert!(err.contains("the completed steps were undone"), "{err}");
    assert!(err.contains("removed network"), "{err}");
    assert!(containers_of(&s.project.0).is_empty());
    drop(holder);
}

/// Applies `pods` (entries of the spec's `pods:`) and expects `pod.NAME` to fail its
/// "running" gate, the error saying each of `said`, and the apply to leave no container.
fn fails_its_running_gate(pods: &str, name: &str, said: &[&str]) {
    let s = Scene::new();
    s.pods(pods);
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains(&format!("`pod.{name}` failed its `running` gate")),
        "{err}"
    );
    for what in said {
        assert!(err.contains(what), "{what}: {err}");
    }
    assert!(containers_of(&s.project.0).is_empty());
}

#[test]
fn a_pod_that_crashes_and_is_restarted_by_its_policy_fails_its_gate() {
    if !docker::available() {
        return;
    }
    let image = docker::testapp_image();
    // No health check: only "running" gates it. The engine restarts it within 100 ms of
    // each crash, so a look now and then may well find it running; its restart count
    // does not lie.
    fails_its_running_gate(
        &format!(
            "  flaky:\n    image: {image}\n    restart: always\n    env: {{ CRASH_AFTER: 0 }}\n"
        ),
        "flaky",
        &["crashing as asked"],
    );
}

/// A pod without a health check that exits a moment after it started (after the first
/// look, inside the default half second it must stay up, which the engine's events watch)
/// fails its gate with the status it exited with.
#[test]
fn a_pod_that_exits_during_the_settle_window_fails_its_gate() {
    if !docker::available() {
        return;
    }
    let image = docker::testapp_image();
    fails_its_running_gate(
        &format!(
            "  brief:\n    image: {image}\n    env: {{ CRASH_AFTER: 0.3, CRASH_STATUS: 7 }}\n"
        ),
        "brief",
        &["exit status 7"],
    );
}

/// A container started again (healed) must stay up for the `min_uptime` of this run: the
/// engine's exit of the stop before it is not this run's (it used to end the window at once,
/// so a heal passed on a container that crashed a second later).
#[test]
fn a_healed_pod_that_exits_during_the_settle_window_fails_its_gate() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let flags = s.path().join("flags");
    std::fs::create_dir(&flags).unwrap();
    s.spec(&format!(
        "pods:\n  brief:\n    image: {}\n    restart: \"no\"\n    health: {{ min_uptime: 3s }}\n    volumes: [\"./flags:/flags\"]\n    env: {{ CRASH_AFTER: 1, CRASH_STATUS: 7, CRASH_IF_FILE: /flags/crash }}\n",
        docker::testapp_image()
    ));
    s.berth(&["apply", "--yes"]).code(0);
    // Stopped by hand (an exit the engine records), and from its next start on it crashes
    // a second after starting.
    docker::docker(&["stop", "-t", "1", &s.name("brief")]);
    std::fs::write(flags.join("crash"), "").unwrap();
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("`pod.brief` failed its `running` gate") && err.contains("exit status 7"),
        "{err}"
    );
}

/// `min_uptime` beside a probe: the probe passes at once, and the container exits a second
/// later, inside the three seconds it must stay up: the gate fails, and the pod is undone.
#[test]
fn a_pod_that_exits_within_its_min_uptime_after_its_probe_passed_fails_its_gate() {
    if !docker::available() {
        return;
    }
    let image = docker::testapp_image();
    fails_its_running_gate(
        &format!(
            "  brief:\n    image: {image}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 100ms, min_uptime: 3s }}\n    env: {{ CRASH_AFTER: 1, CRASH_STATUS: 9 }}\n"
        ),
        "brief",
        &["exit status 9"],
    );
}

#[test]
fn a_container_that_was_stopped_stays_stopped_when_a_failed_replace_is_undone() {
    if !docker::available() {
        return;
    }
    let s = applied_v1(false);
    docker::docker(&["stop", "-t", "1", &s.name("api")]);
    s.write("VERSION: v2, FAIL_HEALTH: 1", false);
    s.berth(&["apply", "--yes"]).code(1);
    // Back under its name, and as it was: stopped (someone stopped it on purpose).
    let state = docker::docker(&[
        "inspect",
        "-f",
        "{{.Name}} {{.State.Running}}",
        &s.name("api"),
    ]);
    assert_eq!(state, format!("/{} false", s.name("api")));
}

#[test]
fn a_pod_restarted_by_its_policy_reports_the_status_of_the_exit_that_caused_it() {
    if !docker::available() {
        return;
    }
    let image = docker::testapp_image();
    // It exits with status 1 after a second, never having served; the engine restarts it
    // within 100 ms, and its state then shows the new run (exit status 0) for a second.
    fails_its_running_gate(
        &format!(
            "  flaky:\n    image: {image}\n    restart: always\n    env: {{ CRASH_AFTER: 1, CRASH_STATUS: 1, START_DELAY: 60 }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms, retries: 50 }}\n"
        ),
        "flaky",
        &["(last exit status 1)"],
    );
}

#[test]
fn a_health_gate_that_would_wait_for_ever_gives_up_at_the_most_berth_waits() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    // Four billion retries of a probe that never passes: the gate stops at the cap (set to
    // 3 s here instead of an hour) and rolls back.
    s.pods(&format!(
        "  stuck:\n    image: {}\n    env: {{ FAIL_HEALTH: 1 }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 100ms, retries: 4000000000 }}\n",
        docker::testapp_image()
    ));
    let mut child = Berth::new()
        .dir(s.path())
        .env("BERTH_MAX_GATE_WAIT", "3s")
        .args(["apply", "--yes"])
        .spawn();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the gate was still waiting after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        err.contains("not healthy within 3s, the most berth waits"),
        "{err}"
    );
    assert!(err.contains("answered 503"), "{err}");
    assert!(containers_of(&s.project.0).is_empty());
}

/// A pod asked to stay up longer than berth waits for a gate is refused before anything
/// is created, not failed once it runs.
#[test]
fn a_min_uptime_longer_than_the_most_berth_waits_is_refused_before_anything_changes() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    s.pods(&format!(
        "  api:\n    image: {image}\n    health: {{ min_uptime: 5s }}\n"
    ));
    let r = Berth::new()
        .dir(s.path())
        .env("BERTH_MAX_GATE_WAIT", "2s")
        .args(["apply", "--yes"])
        .run()
        .code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("longer than the most berth waits for a gate") && err.contains("pod.api"),
        "{err}"
    );
    assert!(containers_of(&s.project.0).is_empty());
    assert!(
        docker::docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.berth.project={}", s.project.0)
        ])
        .is_empty()
    );
}

#[test]
fn a_bad_max_gate_wait_is_refused_before_anything_changes() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let pod = |version: &str| {
        format!(
            "  api:\n    image: {image}\n    env: {{ VERSION: {version} }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 100ms, retries: 50 }}\n"
        )
    };
    s.pods(&pod("v1"));
    s.berth(&["apply", "--yes"]).code(0);
    let before = started(&s.name("api"));
    s.pods(&pod("v2"));
    for bad in ["abc", "-1s", "0s"] {
        let r = Berth::new()
            .dir(s.path())
            .env("BERTH_MAX_GATE_WAIT", bad)
            .args(["apply", "--yes"])
            .run()
            .code(1);
        let err = r.stderr_flat();
        assert!(
            err.contains(&format!(
                "$BERTH_MAX_GATE_WAIT is `{bad}`, which is not a positive duration"
            )),
            "{bad}: {err}"
        );
        assert!(err.contains("nothing was changed"), "{bad}: {err}");
        assert_eq!(
            started(&s.name("api")),
            before,
            "{bad}: the container was touched"
        );
        assert_eq!(http_get(&s.name("api"), 8080, "/version"), "v1");
    }
    // Unset, the same apply goes through.
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(http_get(&s.name("api"), 8080, "/version"), "v2");
}

/// Id, start time and state of a container: a refused apply must leave all three alone
/// (a stopped and restarted container keeps its id, not its start time).
fn started(name: &str) -> String {
    docker::docker(&[
        "inspect",
        "-f",
        "{{.Id}} {{.State.StartedAt}} {{.State.Running}}",
        name,
    ])
}

#[test]
fn more_cpus_than_the_engine_has_are_refused_before_the_old_container_is_stopped() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let pod = |version: &str, cpus: &str| {
        format!(
            "  api:\n    image: {image}\n    env: {{ VERSION: {version} }}\n    resources: {{ cpus: {cpus} }}\n    update: {{ strategy: recreate }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms, retries: 10 }}\n"
        )
    };
    s.pods(&pod("v1", "1"));
    s.berth(&["apply", "--yes"]).code(0);
    let before = started(&s.name("api"));
    let ncpu = docker::docker(&["info", "--format", "{{.NCPU}}"]);
    s.pods(&pod("v2", "64"));
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains(&format!(
            "pod `api` asks for 64 CPUs, but the engine of region `local` has {ncpu}; nothing was changed"
        )),
        "{err}"
    );
    assert_eq!(
        started(&s.name("api")),
        before,
        "the old container was touched"
    );
    assert_eq!(containers_of(&s.project.0), [s.name("api")]);
    assert_eq!(http_get(&s.name("api"), 8080, "/version"), "v1");
}

/// A pod with a secret file, applied at v1 and then at v2 (recreated) with
/// `$BERTH_RUNTIME_DIR` set to `runtime`: what this host's runtime directory is changes
/// nothing, since a pod's secrets never go through it (they go into a memory-backed volume
/// on the engine). Checks the pod serves v2 from a secrets volume.
fn apply_v2_with_runtime_dir(s: &Scene, runtime: &std::path::Path) {
    let image = docker::testapp_image();
    let spec = |version: &str| {
        s.spec(&format!(
            "identity: ./me.key\nsecrets:\n  token: {{ file: secrets/token.age, min_length: 16 }}\npods:\n  web:\n    image: {image}\n    user: \"1000:1000\"\n    env: {{ VERSION: {version}, REQUIRE_FILE: /run/secrets/token }}\n    secrets: [token]\n    update: {{ strategy: recreate }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms, retries: 10 }}\n"
        ))
    };
    spec("v1");
    s.berth(&["secrets", "init"]).code(0);
    Berth::new()
        .dir(s.path())
        .args(["secrets", "set", "token"])
        .stdin(b"a-token-of-enough-length".to_vec())
        .run()
        .code(0);
    s.berth(&["apply", "--yes"]).code(0);
    spec("v2");
    Berth::new()
        .dir(s.path())
        .env("BERTH_RUNTIME_DIR", &runtime.display().to_string())
        .args(["plan"])
        .run()
        .code(0);
    Berth::new()
        .dir(s.path())
        .env("BERTH_RUNTIME_DIR", &runtime.display().to_string())
        .args(["apply", "--yes"])
        .run()
        .code(0);
    assert_eq!(containers_of(&s.project.0), [s.name("web")]);
    assert_eq!(http_get(&s.name("web"), 8080, "/version"), "v2");
    let (typ, volume, rw) = docker::secrets_mount_of(&s.name("web")).expect("a secrets mount");
    assert_eq!((typ.as_str(), rw), ("volume", false));
    docker::assert_memory_volume(&s.project.0, &volume);
    assert_eq!(docker::secrets_volumes_of(&s.project.0), [volume]);
}

#[test]
fn a_runtime_directory_on_disk_is_never_made_a_pods_secrets_go_to_a_volume_on_the_engine() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    // A directory on the disk this test runs on (not a tmpfs): decrypted secrets must
    // never land there, and berth has no reason to make it.
    let on_disk = s.path().join("runtime").join("berth");
    apply_v2_with_runtime_dir(&s, &on_disk);
    assert!(
        !s.path().join("runtime").exists(),
        "the runtime directory on disk was made"
    );
}

#[test]
fn a_symlink_planted_for_the_projects_runtime_dir_is_never_written_through() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    // A runtime dir of this user's on a tmpfs, where the project's directory is a symlink
    // to a directory of another user's.
    let Ok(rt) = tempfile::tempdir_in("/dev/shm") else {
        panic!("/dev/shm is needed");
    };
    let elsewhere = rt.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::chown(&elsewhere, Some(65534), Some(65534)).unwrap();
    let root = rt.path().join("rt");
    std::fs::create_dir(&root).unwrap();
    berth::fsutil::set_mode(&root, 0o700).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join(&s.project.0)).unwrap();
    apply_v2_with_runtime_dir(&s, &root);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}
