//! Crashes, races and leftovers against the real engine: `kill -9` of `apply` and then of
//! `recover` (or `recover --forward`) at random moments, with and without secret files; a create the engine is still finishing when `recover` runs;
//! a removal still in progress when the next `recover` runs; two containers claiming one
//! pod; `destroy` beside a container of another project; what `destroy` leaves in the
//! secrets volumes and keepers; the revision label. Checked with the docker CLI.
//!
//! The randomised test runs `BERTH_CRASH_ROUNDS` rounds (30 by default) from the seed
//! `BERTH_CRASH_SEED` (random by default, printed so that a failure can be replayed).

use crate::common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::docker::{self, Cleanup, docker};
use common::{Berth, Scene};

/// The scene of these tests: one volume and pods.
trait CrashScene {
    fn pods(&self, text: &str);
    /// The project's networks and volumes, by name, sorted.
    fn objects(&self, kind: &str) -> Vec<String>;
    /// The labels of a container, as JSON.
    fn labels_of(&self, container: &str) -> serde_json::Value;
}

impl CrashScene for Scene {
    fn pods(&self, text: &str) {
        self.spec(&format!("volumes:\n  data: {{}}\npods:\n{text}"));
    }

    fn objects(&self, kind: &str) -> Vec<String> {
        crate::common::docker::project_names(docker, kind, &self.project.0)
    }

    fn labels_of(&self, container: &str) -> serde_json::Value {
        serde_json::from_str(&docker(&[
            "inspect",
            "-f",
            "{{json .Config.Labels}}",
            container,
        ]))
        .expect("labels json")
    }
}

fn pod(name: &str, image: &str, env: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    image: {image}\n    env: {{ {env} }}\n{extra}    health: {{ http: {{ port: 8080, path: /health }}, interval: 100ms, retries: 80 }}\n"
    )
}

/// The head of the randomised test's specs: an identity and one secret, `token`.
const SECRETS_HEAD: &str =
    "identity: ./me.key\nsecrets:\n  token: { file: secrets/token.age, min_length: 16 }\n";

/// A whole spec of the randomised test, revision `version`: `a` (replaced blue-green) and
/// `b` (owns the volume: recreated), both carrying `version`, `a` getting the secret file
/// `token` (a tmpfs directory of its own, mounted at /run/secrets) when `secret`. Written
/// with [`Scene::spec`].
fn secret_revision(image: &str, version: &str, secret: bool) -> String {
    let (env, extra) = if secret {
        (
            format!("VERSION: a{version}, REQUIRE_FILE: /run/secrets/token"),
            "    secrets: [token]\n",
        )
    } else {
        (format!("VERSION: a{version}"), "")
    };
    [
        SECRETS_HEAD,
        "volumes:\n  data: {}\npods:\n",
        &pod("a", image, &env, extra),
        &pod(
            "b",
            image,
            &format!("VERSION: b{version}"),
            "    volumes: [\"data:/data\"]\n",
        ),
    ]
    .concat()
}

/// One pod, `a`, replaced blue-green between versions.
fn one_pod(image: &str, version: &str) -> String {
    pod("a", image, &format!("VERSION: {version}"), "")
}

/// A scene with [`one_pod`] at version 1 applied, and the test app's image.
fn one_pod_applied() -> (Scene, &'static str) {
    let s = Scene::new();
    let image = docker::testapp_image();
    s.pods(&one_pod(image, "1"));
    s.berth(&["apply", "--yes"]).code(0);
    (s, image)
}

/// Pod `a` at `version`, a program that ignores SIGTERM: each stop of it lasts the stop's
/// whole timeout.
fn slow_pod(image: &str, version: &str) -> String {
    pod(
        "a",
        image,
        &format!("VERSION: {version}, IGNORE_SIGTERM: \"1\""),
        "",
    )
}

/// The records of the last finished journal.
fn last_journal(s: &Scene) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.state().join("last-journal.jsonl"))
        .expect("last journal")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

/// The 1-based number of the first record matching `what` (the `BERTH_FAULT_KILL_AT` that
/// aborts right after writing it).
fn record_number(records: &[serde_json::Value], what: impl Fn(&serde_json::Value) -> bool) -> u64 {
    records
        .iter()
        .position(what)
        .map(|i| i as u64 + 1)
        .expect("the record is in the journal")
}

/// Whether a journal record is the undo record of kind `kind` for a container named `name`.
fn undo_of(r: &serde_json::Value, kind: &str, name: &str) -> bool {
    r["t"] == "undo" && r["undo"]["kind"] == kind && r["undo"]["name"] == name
}

/// Runs `apply --yes` aborted right after writing record `kill_at`.
pub(crate) fn apply_killed_at(s: &Scene, kill_at: u64) {
    let killed = Berth::new()
        .dir(s.path())
        .args(["apply", "--yes"])
        .env("BERTH_FAULT_KILL_AT", &kill_at.to_string())
        .run();
    assert!(
        killed.0.status.code().is_none() || killed.0.status.code() == Some(134),
        "apply was not killed at record {kill_at}: {}",
        killed.stderr()
    );
}

/// Asks the engine to create a container, as a berth that is then killed would: the request
/// is on its way before this returns, the answer is read (and returned) by the thread.
fn create_in_flight(
    name: &str,
    image: &str,
    labels: &serde_json::Value,
) -> std::thread::JoinHandle<String> {
    let body = serde_json::json!({ "Image": image, "Labels": labels }).to_string();
    post_in_flight(&format!("/containers/create?name={name}"), &body)
}

/// Sends `POST path` with a JSON `body` to the engine and returns at once, the request on
/// its way: the thread reads (and returns) the answer.
fn post_in_flight(path: &str, body: &str) -> std::thread::JoinHandle<String> {
    let mut socket =
        std::os::unix::net::UnixStream::connect("/var/run/docker.sock").expect("docker socket");
    write!(
        socket,
        "POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    std::thread::spawn(move || {
        let mut answer = String::new();
        let _ = socket.read_to_string(&mut answer);
        answer
    })
}

/// No journal, the lock free, every container of the project running under its own name
/// (`names`), only the default network and the data volume, and no stray runtime
/// directory.
fn assert_clean(s: &Scene, names: &[String], context: &str) {
    assert!(
        !s.state().join("journal.jsonl").exists(),
        "{context}: a journal is left"
    );
    let dir = berth::state::StateDir { path: s.state() };
    assert!(
        berth::state::lock::holder(&dir).is_none(),
        "{context}: the lock is held"
    );
    let containers = s.containers();
    let expected: Vec<String> = names.iter().map(|n| format!("{n} running")).collect();
    assert_eq!(containers, expected, "{context}: containers");
    assert_eq!(
        s.objects("network"),
        [format!("{}-default", s.project.0)],
        "{context}: networks"
    );
    let secrets = docker::secrets_volumes_of(&s.project.0);
    let volumes: Vec<String> = s
        .objects("volume")
        .into_iter()
        .filter(|v| !secrets.contains(v))
        .collect();
    assert_eq!(
        volumes,
        [format!("{}-data", s.project.0)],
        "{context}: volumes"
    );
    assert_no_stray_secrets(s, context);
}

/// The project's secrets volumes are exactly those its containers mount at /run/secrets,
/// each held by one running keeper, and there is no other keeper: none is left of a
/// container that is gone (a candidate rolled back, an old container replaced). And no
/// pod's secrets are on this machine's secrets runtime directory.
fn assert_no_stray_secrets(s: &Scene, context: &str) {
    let volumes = docker::secrets_volumes_of(&s.project.0);
    let mut mounted: Vec<String> = docker::containers_of(&s.project.0)
        .iter()
        .filter_map(|c| docker::secrets_mount_of(c))
        .map(|(typ, name, rw)| {
            assert_eq!((typ.as_str(), rw), ("volume", false), "{context}");
            name
        })
        .collect();
    mounted.sort();
    assert_eq!(
        volumes, mounted,
        "{context}: the secrets volumes are not those the containers mount"
    );
    let mut kept: Vec<String> = docker::keepers_of(&s.project.0)
        .into_iter()
        .map(|(name, state, volume)| {
            assert_eq!(state, "running", "{context}: keeper {name}");
            volume
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept, mounted,
        "{context}: the keepers are not those of the volumes"
    );
    for v in &volumes {
        docker::assert_memory_volume(&s.project.0, v);
    }
    if let Ok(root) = berth::secrets::delivery::check_root() {
        let base = root.join(&s.project.0);
        assert!(
            !base.exists(),
            "{context}: the runtime directory {} is left",
            base.display()
        );
    }
}

/// Which of `specs` (whole specs) the engine now runs whole (the one `plan
/// --detailed-exitcode` finds nothing to change for), trying them in the order of
/// `likeliest`; the spec is left written as that one.
fn whole_revision(s: &Scene, specs: &[String], likeliest: &[usize]) -> Option<usize> {
    for &i in likeliest {
        s.spec(&specs[i]);
        let r = s.berth(&["plan", "--detailed-exitcode"]);
        if r.0.status.code() == Some(0) {
            return Some(i);
        }
    }
    None
}

/// splitmix64: small, seedable, and enough to pick kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in [0, max).
    fn below(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis().max(1) as u64;
        Duration::from_millis(self.next() % ms)
    }
}

/// Starts berth with `args` in the scene and kills it (-9) after `after`, unless it ended
/// before; says whether it was killed.
fn run_and_kill(s: &Scene, args: &[&str], after: Duration) -> bool {
    let mut child = Berth::new().dir(s.path()).args(args).spawn();
    let deadline = Instant::now() + after;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        if Instant::now() >= deadline {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Each round applies another of three revisions (with no secret, and two with a secret
/// file in pod `a`, so that every round adds, replaces or removes a secrets volume),
/// kills the apply, then perhaps the `recover` after it, and recovers: every third round
/// with `recover --forward` (the killed recover too), which must end in the new revision
/// whole; the others in the old or the new one.
#[test]
fn kill_9_of_apply_then_of_recover_at_random_moments_ends_in_one_whole_revision() {
    if !docker::available() {
        return;
    }
    let rounds: usize = std::env::var("BERTH_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("BERTH_CRASH_SEED")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("crash test: {rounds} rounds, BERTH_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let s = Scene::new();
    let image = docker::testapp_image();
    let specs = [
        secret_revision(image, "1", false),
        secret_revision(image, "2", true),
        secret_revision(image, "3", true),
    ];
    let names = [s.name("a"), s.name("b")];
    s.spec(&specs[0]);
    s.berth(&["secrets", "init"]).code(0);
    Berth::new()
        .dir(s.path())
        .args(["secrets", "set", "token"])
        .stdin(b"a-token-of-enough-length".to_vec())
        .run()
        .code(0);
    s.berth(&["apply", "--yes"]).code(0);
    // How long a whole apply takes: the kills fall anywhere in it, and a little after.
    s.spec(&specs[1]);
    let started = Instant::now();
    s.berth(&["apply", "--yes"]).code(0);
    let apply_takes = started.elapsed();
    assert_no_stray_secrets(&s, "after the first apply with a secret");
    let mut now = 1;
    let (mut old, mut new, mut recovered_after_kill, mut forward_rounds) = (0, 0, 0, 0);
    for round in 0..rounds {
        let context = format!("round {round} (BERTH_CRASH_SEED={seed})");
        let forward = round % 3 == 2;
        let target = (now + 1 + (rng.next() % 2) as usize) % specs.len();
        let other = 3 - now - target;
        s.spec(&specs[target]);
        let apply_after = rng.below(apply_takes + apply_takes / 5);
        run_and_kill(&s, &["apply", "--yes"], apply_after);
        let recover: &[&str] = if forward {
            &["recover", "--forward"]
        } else {
            &["recover"]
        };
        if s.state().join("journal.jsonl").exists() {
            let recover_after = rng.below(Duration::from_millis(1500));
            if run_and_kill(&s, recover, recover_after) {
                recovered_after_kill += 1;
            }
        }
        let r = s.berth(recover);
        assert_eq!(
            r.0.status.code(),
            Some(0),
            "{context}: {recover:?} after apply killed at {apply_after:?}: {}",
            r.stderr()
        );
        assert_clean(&s, &names, &context);
        let whole = whole_revision(&s, &specs, &[target, now, other])
            .unwrap_or_else(|| panic!("{context}: no revision runs whole: {:?}", s.containers()));
        assert_ne!(
            whole, other,
            "{context}: a revision neither old nor new runs"
        );
        if forward {
            forward_rounds += 1;
            assert_eq!(
                whole,
                target,
                "{context}: `recover --forward` did not end in the new revision: {}",
                r.stderr()
            );
        }
        if whole == target {
            new += 1;
        } else {
            old += 1;
        }
        now = whole;
        // The history agrees: the latest revision is what runs.
        s.berth(&["rollback", "--check-only"]).code(0);
    }
    eprintln!(
        "crash test: {rounds} rounds (seed {seed}): {old} back to the old revision, {new} on to the new ({forward_rounds} with --forward); recover itself killed in {recovered_after_kill}"
    );
}

#[test]
fn recover_waits_for_a_create_the_engine_is_still_finishing_and_leaves_no_orphan() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let next = format!("{}-berth-next", s.name("a"));
    // Version 2's labels, and the record that announces its candidate.
    s.pods(&one_pod(image, "1"));
    s.berth(&["apply", "--yes"]).code(0);
    s.pods(&one_pod(image, "2"));
    s.berth(&["apply", "--yes"]).code(0);
    let labels = s.labels_of(&s.name("a"));
    s.pods(&one_pod(image, "1"));
    s.berth(&["apply", "--yes"]).code(0);
    let kill_at = record_number(&last_journal(&s), |r| undo_of(r, "remove_container", &next));
    let real = docker(&["inspect", "-f", "{{.Id}}", &s.name("a")]);
    // The engine finishes the create a killed apply asked for, while recover runs: the
    // later recover starts, the likelier the create is done before it looks.
    for (round, wait_ms) in [0u64, 0, 0, 2, 5, 10, 20, 40].into_iter().enumerate() {
        s.pods(&one_pod(image, "2"));
        apply_killed_at(&s, kill_at);
        let answer = create_in_flight(&next, image, &labels);
        std::thread::sleep(Duration::from_millis(wait_ms));
        let r = s.berth(&["recover"]);
        let answer = answer.join().expect("the create's answer");
        assert_eq!(
            r.0.status.code(),
            Some(0),
            "round {round}: {}\n(the create: {})",
            r.stderr(),
            answer.lines().next().unwrap_or_default()
        );
        // Whatever the engine answered the create, nothing of it is left, and the pod is
        // the real container.
        assert_eq!(
            s.containers(),
            [format!("{} running", s.name("a"))],
            "round {round}: the create answered {}",
            answer.lines().next().unwrap_or_default()
        );
        assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &s.name("a")]), real);
        s.pods(&one_pod(image, "1"));
        s.berth(&["plan", "--detailed-exitcode"]).code(0);
    }
}

#[test]
fn a_recover_killed_while_the_engine_removes_is_finished_by_the_next_recover() {
    if !docker::available() {
        return;
    }
    let (s, image) = one_pod_applied();
    let next = format!("{}-berth-next", s.name("a"));
    s.pods(&one_pod(image, "2"));
    s.berth(&["apply", "--yes"]).code(0);
    s.pods(&one_pod(image, "1"));
    s.berth(&["apply", "--yes"]).code(0);
    let records = last_journal(&s);
    // Killed once the candidate runs beside the old container: recover removes it.
    let kill_at = record_number(&records, |r| undo_of(r, "restore", &s.name("a")));
    let remove_id = records
        [record_number(&records, |r| undo_of(r, "remove_container", &next)) as usize - 1]["id"]
        .as_u64()
        .expect("undo id");
    let journal = s.state().join("journal.jsonl");
    for (round, after_ms) in [0u64, 5, 10, 15, 20, 30, 45, 60].into_iter().enumerate() {
        s.pods(&one_pod(image, "2"));
        apply_killed_at(&s, kill_at);
        assert!(
            s.containers().iter().any(|c| c.starts_with(&next)),
            "round {round}: the candidate runs"
        );
        // kill -9 of recover just after it starts removing the candidate.
        let mut child = Berth::new().dir(s.path()).args(["recover"]).spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        let marker =
            format!("{{\"t\":\"undo_state\",\"id\":{remove_id},\"state\":\"undo_started\"}}");
        loop {
            let text = std::fs::read_to_string(&journal).unwrap_or_default();
            if text.contains(&marker) || child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: recover hangs");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(after_ms));
        let _ = child.kill();
        child.wait().unwrap();
        // The next recover finishes, whatever the engine is still doing.
        let r = s.berth(&["recover"]);
        assert_eq!(r.0.status.code(), Some(0), "round {round}: {}", r.stderr());
        assert_eq!(
            s.containers(),
            [format!("{} running", s.name("a"))],
            "round {round}"
        );
        s.pods(&one_pod(image, "1"));
        s.berth(&["plan", "--detailed-exitcode"]).code(0);
    }
}

/// A berth killed while the engine stops the old container of a replacement leaves that
/// stop in flight (the test app ignores SIGTERM: it ends only at the stop's timeout). The
/// recover that rolls back must leave the old container running once that stop is over,
/// not answer "already started" and let it die.
#[test]
fn a_stop_still_in_flight_when_recover_restores_the_old_container_does_not_leave_it_stopped() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let a = s.name("a");
    s.pods(&slow_pod(image, "1"));
    s.berth(&["apply", "--yes"]).code(0);
    s.pods(&slow_pod(image, "2"));
    s.berth(&["apply", "--yes"]).code(0);
    let records = last_journal(&s);
    // Killed right after recording how to restore the old container, before stopping it.
    let kill_at = record_number(&records, |r| undo_of(r, "restore", &a));
    s.pods(&slow_pod(image, "1"));
    apply_killed_at(&s, kill_at);
    let old = docker(&["inspect", "-f", "{{.Id}}", &a]);
    // The stop the killed apply was about to send, on its way as recover runs.
    let stop = post_in_flight(&format!("/containers/{old}/stop?t=10"), "");
    std::thread::sleep(Duration::from_millis(200));
    let r = s.berth(&["recover"]);
    assert_eq!(r.0.status.code(), Some(0), "{}", r.stderr());
    let answer = stop.join().expect("the stop's answer");
    assert!(
        answer.starts_with("HTTP/1.1 204") || answer.starts_with("HTTP/1.1 304"),
        "{answer}"
    );
    assert_eq!(s.containers(), [format!("{a} running")]);
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &a]), old);
    s.pods(&slow_pod(image, "2"));
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn two_containers_claiming_one_pod_are_refused_by_plan_and_the_stray_removed_by_apply_or_recover() {
    if !docker::available() {
        return;
    }
    let (s, image) = one_pod_applied();
    let real = docker(&["inspect", "-f", "{{.Id}}", &s.name("a")]);
    let labels: std::collections::HashMap<String, String> =
        serde_json::from_value(s.labels_of(&s.name("a"))).unwrap();
    let stray_name = format!("{}-berth-next", s.name("a"));
    let make_stray = || {
        let mut args = vec!["create".to_owned(), "--name".to_owned(), stray_name.clone()];
        args.extend(docker::label_args(&labels));
        args.push(image.to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args)
    };
    for fixer in ["apply", "recover"] {
        let stray = make_stray();
        // Never one picked silently: both named, exit 1.
        let r = s.berth(&["plan"]).code(1);
        let err = r.stderr_flat();
        assert!(
            err.contains(&real) && err.contains(&stray) && err.contains("pod.a"),
            "{err}"
        );
        let r = s.berth(&[fixer, "--yes"][..if fixer == "apply" { 2 } else { 1 }]);
        assert_eq!(r.0.status.code(), Some(0), "{fixer}: {}", r.stderr());
        assert!(r.stderr().contains(&stray_name), "{fixer}: {}", r.stderr());
        if fixer == "recover" {
            assert!(
                r.stderr().contains("no apply was interrupted"),
                "{}",
                r.stderr()
            );
        }
        assert_eq!(s.containers(), [format!("{} running", s.name("a"))]);
        assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &s.name("a")]), real);
        s.berth(&["plan", "--detailed-exitcode"]).code(0);
    }
}

#[test]
fn destroy_keeps_and_names_a_network_a_foreign_container_uses_and_plan_apply_recover_still_work() {
    if !docker::available() {
        return;
    }
    let (s, image) = one_pod_applied();
    let network = format!("{}-default", s.project.0);
    let foreign = format!("{}-foreign", s.project.0);
    let _cleanup = Cleanup::new(&["rm", "-f", &foreign]);
    docker(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "--network",
        &network,
        image,
    ]);
    let r = s.berth(&["destroy", "--yes"]).code(0);
    let err = r.stderr_flat();
    assert!(
        err.contains(&format!("kept network {network}")) && err.contains(&foreign),
        "{err}"
    );
    // No journal left open: plan, apply and recover work.
    assert!(!s.state().join("journal.jsonl").exists());
    assert!(s.containers().is_empty(), "{:?}", s.containers());
    assert_eq!(s.objects("network"), std::slice::from_ref(&network));
    s.berth(&["recover"]).code(0);
    s.berth(&["plan", "--detailed-exitcode"]).code(2);
    s.berth(&["apply", "--yes"]).code(0);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    // Once the foreign container is gone, destroy removes the network.
    docker(&["rm", "-f", &foreign]);
    s.berth(&["destroy", "--yes"]).code(0);
    assert!(s.objects("network").is_empty());
    s.berth(&["plan", "--detailed-exitcode"]).code(2);
}

/// A proxy of the engine's socket that runs `before`, once, when it sees the first request
/// to remove a network, and only then passes the request on: a container joining the
/// network between berth's look at it and the removal, every time rather than by luck.
/// Returns the `DOCKER_HOST` to give berth.
fn network_removal_proxy(
    dir: &std::path::Path,
    before: impl Fn() + Send + Sync + 'static,
) -> String {
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let upstream = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let path = dir.join("engine.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let before = Arc::new(before);
    let fired = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let Ok(mut server) = UnixStream::connect(&upstream) else {
                break;
            };
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(std::net::Shutdown::Write);
            });
            let (before, fired) = (before.clone(), fired.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    let text = String::from_utf8_lossy(chunk);
                    if text.contains("DELETE /")
                        && text.contains("/networks/")
                        && !fired.swap(true, Ordering::SeqCst)
                    {
                        before();
                    }
                    if server.write_all(chunk).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    format!("unix://{}", path.display())
}

#[test]
fn a_foreign_container_joining_the_network_during_destroy_keeps_it_named_and_leaves_no_journal() {
    if !docker::available() {
        return;
    }
    let (s, image) = one_pod_applied();
    let network = format!("{}-default", s.project.0);
    let foreign = format!("{}-foreign", s.project.0);
    let _cleanup = Cleanup::new(&["rm", "-f", &foreign]);
    // Running, but not on the project's network: destroy's look finds nobody else on it.
    docker(&["run", "-d", "--name", &foreign, image]);
    let host = {
        let (network, foreign) = (network.clone(), foreign.clone());
        network_removal_proxy(s.path(), move || {
            docker(&["network", "connect", &network, &foreign]);
        })
    };
    let r = Berth::new()
        .dir(s.path())
        .env("DOCKER_HOST", &host)
        .args(["destroy", "--yes"])
        .run()
        .code(0);
    let err = r.stderr_flat();
    assert!(
        err.contains(&format!("kept network {network}")) && err.contains(&foreign),
        "{err}"
    );
    assert!(!err.contains("berth recover"), "{err}");
    assert!(!err.contains("left"), "{err}");
    // It did join during the destroy, and the network is kept, the journal ended.
    assert!(
        docker(&[
            "inspect",
            "-f",
            "{{json .NetworkSettings.Networks}}",
            &foreign
        ])
        .contains(&network)
    );
    assert_eq!(s.objects("network"), std::slice::from_ref(&network));
    assert!(!s.state().join("journal.jsonl").exists());
    assert!(s.containers().is_empty(), "{:?}", s.containers());
    // The project stays workable: plan and apply, no recover needed.
    s.berth(&["plan", "--detailed-exitcode"]).code(2);
    let r = s.berth(&["recover"]).code(0);
    assert!(r.stderr().contains("Nothing to recover"), "{}", r.stderr());
    s.berth(&["apply", "--yes"]).code(0);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    docker(&["rm", "-f", &foreign]);
    s.berth(&["destroy", "--yes"]).code(0);
    assert!(s.objects("network").is_empty());
}

#[test]
fn destroy_leaves_no_secrets_volume_keeper_or_runtime_directory_of_the_project() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    s.spec(&format!(
        "identity: ./me.key\nsecrets:\n  token: {{ file: secrets/token.age, min_length: 16 }}\npods:\n  web:\n    image: {image}\n    env: {{ REQUIRE_FILE: /run/secrets/token }}\n    secrets: [token]\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 100ms, retries: 50 }}\n"
    ));
    s.berth(&["secrets", "init"]).code(0);
    Berth::new()
        .dir(s.path())
        .args(["secrets", "set", "token"])
        .stdin(b"a-token-of-enough-length".to_vec())
        .run()
        .code(0);
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(
        docker::secrets_volumes_of(&s.project.0).len(),
        1,
        "delivered"
    );
    assert_eq!(docker::keepers_of(&s.project.0).len(), 1, "delivered");
    s.berth(&["destroy", "--yes"]).code(0);
    assert_eq!(
        docker::secrets_volumes_of(&s.project.0),
        Vec::<String>::new()
    );
    assert_eq!(docker::keepers_of(&s.project.0), []);
    let root = berth::secrets::delivery::root().unwrap().join(&s.project.0);
    assert!(!root.exists(), "{} is left", root.display());
}

#[test]
fn containers_carry_the_revision_that_created_them_and_plan_sees_no_drift_in_it() {
    if !docker::available() {
        return;
    }
    let (s, image) = one_pod_applied();
    let revision_of = |c: &str| s.labels_of(c)["io.berth.revision"].clone();
    assert_eq!(revision_of(&s.name("a")), "1");
    // A second pod: revision 2 creates it; `a` keeps the revision that created it.
    s.pods(&[one_pod(image, "1"), pod("c", image, "VERSION: c1", "")].concat());
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(revision_of(&s.name("c")), "2");
    assert_eq!(revision_of(&s.name("a")), "1");
    let network = docker(&[
        "network",
        "inspect",
        "-f",
        "{{index .Labels \"io.berth.revision\"}}",
        &format!("{}-default", s.project.0),
    ]);
    assert_eq!(network, "1");
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    // Replaced, `a` is revision 3's.
    s.pods(&[one_pod(image, "2"), pod("c", image, "VERSION: c1", "")].concat());
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(revision_of(&s.name("a")), "3");
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_rollback_killed_once_its_journal_ended_leaves_no_secrets_volume_after_recover() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    // `fail` makes the candidate fail its health gate: the apply rolls back.
    let spec = |version: &str, fail: bool| {
        let fail = if fail { ", FAIL_HEALTH: \"1\"" } else { "" };
        s.spec(&format!(
            "{SECRETS_HEAD}pods:\n  a:\n    image: {image}\n    env: {{ VERSION: {version}, REQUIRE_FILE: /run/secrets/token{fail} }}\n    secrets: [token]\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 100ms, retries: 3 }}\n"
        ))
    };
    spec("v1", false);
    s.berth(&["secrets", "init"]).code(0);
    Berth::new()
        .dir(s.path())
        .args(["secrets", "set", "token"])
        .stdin(b"a-token-of-enough-length".to_vec())
        .run()
        .code(0);
    s.berth(&["apply", "--yes"]).code(0);
    spec("v2", true);
    s.berth(&["apply", "--yes"]).code(1);
    assert_no_stray_secrets(&s, "rolled back");
    // The same apply, killed right after its journal's last record (the end of the
    // rollback), before the journal is set aside: recover finds nothing to roll back, and
    // still no directory of the candidate it made is left.
    let records = last_journal(&s);
    assert_eq!(records.last().unwrap()["t"], "end", "{records:?}");
    apply_killed_at(&s, records.len() as u64);
    let r = s.berth(&["recover"]);
    assert_eq!(r.0.status.code(), Some(0), "{}", r.stderr());
    assert_eq!(s.containers(), [format!("{} running", s.name("a"))]);
    assert_no_stray_secrets(&s, "recovered");
    spec("v1", false);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}
