//! Restore drills against the real engine: a volume backup restored into a scratch
//! project's volume, a scratch copy of its pod (with its secret) started on it and held to
//! its health gate and `drill.check`, and everything of the scratch project removed after,
//! whether the drill passed, failed, or was killed (then by `berth recover`); the live pod
//! and volume untouched throughout.

use crate::common;

use common::backup::{self, Scene};
use common::docker::{self, docker};

fn tools() -> bool {
    backup::tools(&["age-keygen"])
}

/// A pod `web` with a secret file and the volume `data`, backed up with a drill whose
/// check reads `CHECKED` in the scratch pod.
fn spec(s: &Scene, checked: &str, head: &str) {
    let image = s.image();
    s.spec(
        true,
        &format!(
            "{head}secrets:
  app_key: {{ file: secrets/app_key.age, min_length: 32 }}
volumes:
  data: {{}}
pods:
  web:
    image: {image}
    secrets: [app_key]
    volumes: [\"data:/data\"]
    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 20 }}
backups:
  # berth:allow(backup-key-on-host): a test
  data:
    source: {{ volume: data }}
    store: STORE
    drill: {{ check: [/testapp, cat, {checked}] }}
"
        ),
    );
}

/// Removes, on drop, whatever a drill of the scene's project left on the engine: a test
/// that fails midway leaves nothing either (the scene's own cleanup knows only its
/// project).
struct Sweep(String);

impl Sweep {
    fn of(s: &Scene) -> Sweep {
        Sweep(format!("{}-drill-", s.project()))
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        for (list, remove) in [
            (vec!["ps", "-a", "--format", "{{.Names}}"], vec!["rm", "-f"]),
            (
                vec!["network", "ls", "--format", "{{.Name}}"],
                vec!["network", "rm"],
            ),
            (
                vec!["volume", "ls", "--format", "{{.Name}}"],
                vec!["volume", "rm", "-f"],
            ),
        ] {
            for name in docker(&list).lines().filter(|l| l.starts_with(&self.0)) {
                let _ = std::process::Command::new("docker")
                    .args(&remove)
                    .arg(name)
                    .output();
            }
        }
    }
}

/// The engine's containers, volumes and networks of the project's drills (any scratch
/// project `PROJECT-drill-*`).
fn leftovers(s: &Scene) -> Vec<String> {
    let prefix = format!("{}-drill-", s.project());
    let mut found = Vec::new();
    for (what, args) in [
        ("container", vec!["ps", "-a", "--format", "{{.Names}}"]),
        ("volume", vec!["volume", "ls", "--format", "{{.Name}}"]),
        ("network", vec!["network", "ls", "--format", "{{.Name}}"]),
    ] {
        for line in docker(&args).lines() {
            if line.starts_with(&prefix) {
                found.push(format!("{what} {line}"));
            }
        }
    }
    found
}

fn backed_up(checked: &str, head: &str) -> Scene {
    let s = Scene::new();
    spec(&s, checked, head);
    s.berth(&["secrets", "set", "app_key", "--generate"])
        .code(0);
    s.berth(&["apply", "--yes"]).code(0);
    s.put(&[("hello.txt", "from the backup\n")]);
    s.berth(&["backup", "run", "data"]).code(0);
    s
}

#[test]
fn a_drill_restores_into_a_scratch_pod_passes_its_gates_prints_the_time_and_leaves_nothing() {
    if !docker::available() || !tools() {
        return;
    }
    let s = backed_up("/data/hello.txt", "");
    let _sweep = Sweep::of(&s);
    s.put(&[("hello.txt", "changed live since\n")]);
    let live = s.volume_tree();
    let live_id = docker(&["inspect", "-f", "{{.Id}}", &s.web()]);
    let r = s.berth(&["backup", "drill", "data"]).code(0);
    let err = r.stderr_flat();
    assert!(err.contains("passed"), "{}", r.stderr());
    assert!(err.contains("restore time (RTO)"), "{}", r.stderr());
    assert!(
        err.contains("drill.check `/testapp cat /data/hello.txt` exited 0"),
        "{}",
        r.stderr()
    );
    // The scratch pod went through the health gate.
    assert!(err.contains("healthy"), "{}", r.stderr());
    assert_eq!(leftovers(&s), Vec::<String>::new());
    // The live pod and its data are as they were, and the plan has nothing to do.
    assert_eq!(s.volume_tree(), live);
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &s.web()]), live_id);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    // Recorded: `backup list --format json` says when the backup was last drilled.
    let json = s
        .berth(&["backup", "list", "--format", "json"])
        .code(0)
        .stdout();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let last = &doc["backups"][0]["drilled"];
    assert_eq!(last["passed"], true, "{json}");
    assert!(last["restore_seconds"].as_f64().unwrap() > 0.0, "{json}");
}

#[test]
fn a_drill_whose_check_fails_or_whose_backup_is_damaged_fails_and_leaves_nothing() {
    if !docker::available() || !tools() {
        return;
    }
    // The check reads a file the backup does not hold; the webhook hears of it.
    let (url, bodies) = crate::state::webhook();
    let s = backed_up("/data/not-in-the-backup", &format!("notify: {url}\n"));
    let _sweep = Sweep::of(&s);
    let r = s.berth(&["backup", "drill", "data"]).code(1);
    assert!(r.stderr_flat().contains("drill.check"), "{}", r.stderr());
    assert!(r.stderr_flat().contains("exited with 1"), "{}", r.stderr());
    assert_eq!(leftovers(&s), Vec::<String>::new());
    // The first is the apply's.
    let body = std::iter::from_fn(|| bodies.recv_timeout(std::time::Duration::from_secs(10)).ok())
        .find(|b| b["event"] == "berth.drill")
        .expect("the drill's notification");
    assert_eq!(body["outcome"], "failed", "{body}");
    // It names the backup it drilled.
    assert_eq!(
        body["id"].as_str(),
        s.ids("data").last().map(String::as_str),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("drill.check"),
        "{body}"
    );
    let json = s
        .berth(&["backup", "list", "--format", "json"])
        .code(0)
        .stdout();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["backups"][0]["drilled"]["passed"], false, "{json}");

    // A byte of the backup's data flipped.
    spec(&s, "/data/hello.txt", "");
    let data = s.data_files()[0].clone();
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let r = s.berth(&["backup", "drill", "data"]).code(1);
    assert!(r.stderr_flat().contains("data"), "{}", r.stderr());
    assert_eq!(leftovers(&s), Vec::<String>::new());
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_drill_killed_midway_leaves_its_scratch_project_until_recover_removes_it() {
    if !docker::available() || !tools() {
        return;
    }
    let s = backed_up("/data/hello.txt", "");
    let _sweep = Sweep::of(&s);
    let live = s.volume_tree();
    for at in ["restored", "started"] {
        let r = s.berth_env(
            &["backup", "drill", "data"],
            &[("BERTH_FAULT_DRILL_KILL", at)],
        );
        assert!(
            r.0.status.code().is_none() || r.0.status.code() == Some(134),
            "killed at {at}: {}",
            r.stderr()
        );
        let left = leftovers(&s);
        assert!(
            left.iter().any(|l| l.starts_with("volume")),
            "killed at {at}, the scratch volume is there: {left:?}"
        );
        if at == "started" {
            assert!(left.iter().any(|l| l.starts_with("container")), "{left:?}");
            // The scratch copy runs on a network with no way out of the host.
            let networks: Vec<&str> = left
                .iter()
                .filter_map(|l| l.strip_prefix("network "))
                .collect();
            assert!(!networks.is_empty(), "{left:?}");
            for n in networks {
                assert_eq!(
                    docker(&["network", "inspect", "-f", "{{.Internal}}", n]).trim(),
                    "true",
                    "{n}"
                );
            }
        }
        let r = s.berth(&["recover"]).code(0);
        assert!(
            r.stderr_flat().contains("scratch project"),
            "{}",
            r.stderr()
        );
        assert_eq!(leftovers(&s), Vec::<String>::new(), "after recover ({at})");
        assert_eq!(s.volume_tree(), live);
    }
    // And a drill runs through afterwards.
    s.berth(&["backup", "drill", "data"]).code(0);
    assert_eq!(leftovers(&s), Vec::<String>::new());
}

#[test]
fn a_drill_schedule_installs_a_timer_and_the_plan_says_when_a_drill_is_overdue() {
    if !docker::available() || !tools() {
        return;
    }
    let s = backed_up("/data/hello.txt", "");
    let _sweep = Sweep::of(&s);
    let project = s.project().to_owned();
    let timer = common::unit_dir().join(format!("berth-{project}-drill-data.timer"));
    let service = common::unit_dir().join(format!("berth-{project}-drill-data.service"));
    // `drill: weekly` beside the settings: the long form with a schedule.
    let text = std::fs::read_to_string(s.path().join("berth.yaml")).unwrap();
    let scheduled = text.replace("drill: {", "drill: { schedule: weekly,");
    std::fs::write(s.path().join("berth.yaml"), &scheduled).unwrap();
    let plan = s.berth(&["plan"]).code(0).stdout();
    assert!(plan.contains("drill-data.timer"), "{plan}");
    s.berth(&["apply", "--yes"]).code(0);
    assert!(
        std::fs::read_to_string(&timer)
            .unwrap()
            .contains("OnCalendar=weekly")
    );
    assert!(
        std::fs::read_to_string(&service)
            .unwrap()
            .contains("backup drill data")
    );
    s.berth(&["plan", "--detailed-exitcode"]).code(0);

    // A drill passes: nothing to say. Nine days later (as the record says), the plan warns.
    s.berth(&["backup", "drill", "data"]).code(0);
    let quiet = s.berth(&["plan"]).code(0).stderr();
    assert!(!quiet.contains("RTO"), "{quiet}");
    let record = s.inner.state().join("drills.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let nine_days_ago = doc["data"]["at"].as_u64().unwrap() - 9 * 86_400;
    doc["data"]["at"] = nine_days_ago.into();
    doc["data"]["last_passed"] = nine_days_ago.into();
    std::fs::write(&record, serde_json::to_vec(&doc).unwrap()).unwrap();
    let warned = s.berth(&["plan"]).code(0).stderr();
    assert!(warned.contains("the RTO is unproven"), "{warned}");

    // The schedule taken out: the plan says the timer goes, and apply removes it.
    std::fs::write(s.path().join("berth.yaml"), &text).unwrap();
    let plan = s.berth(&["plan"]).code(0).stdout();
    assert!(plan.contains("drill-data.timer"), "{plan}");
    s.berth(&["apply", "--yes"]).code(0);
    assert!(!timer.exists() && !service.exists());
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

/// A command's output (a stand-in for `pg_dump`) drilled: a scratch copy of its pod
/// started on empty volumes through its gates, the backup piped into the source's
/// `restore` command there, `drill.check` run in it; the live pod never sees the data,
/// and nothing is left, whether the drill passed, failed its check, or was killed.
#[test]
fn a_commands_output_is_drilled_through_its_restore_command_in_a_scratch_pod() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let _sweep = Sweep::of(&s);
    let spec = |check: &str| {
        s.spec(
            true,
            &format!(
                "{}backups:
  # berth:allow(backup-key-on-host): a test
  dump:
    source: {{ pod: web, exec: [/testapp, emit, \"300000\"], restore: [/testapp, absorb, /data/restored] }}
    store: STORE
    drill: {{ check: [/testapp, cat, {check}] }}
",
                backup::web_with_data()
            ),
        )
    };
    spec("/data/restored");
    s.berth(&["apply", "--yes"]).code(0);
    s.berth(&["backup", "run", "dump"]).code(0);
    let live_id = docker(&["inspect", "-f", "{{.Id}}", &s.web()]);
    let r = s.berth(&["backup", "drill", "dump"]).code(0);
    let err = r.stderr_flat();
    assert!(
        err.contains("piped 300000 bytes into `/testapp absorb /data/restored` in the scratch pod"),
        "{}",
        r.stderr()
    );
    assert!(err.contains("healthy"), "{}", r.stderr());
    assert!(
        err.contains("pod `web` passed its gates again on the restored data"),
        "{}",
        r.stderr()
    );
    assert!(
        err.contains("drill.check `/testapp cat /data/restored` exited 0"),
        "{}",
        r.stderr()
    );
    assert!(err.contains("restore time (RTO)"), "{}", r.stderr());
    assert_eq!(leftovers(&s), Vec::<String>::new());
    // The live pod is the same container, and the restore never reached it.
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &s.web()]), live_id);
    let seen = std::process::Command::new("docker")
        .args(["exec", &s.web(), "/testapp", "stat", "/data/restored"])
        .output()
        .unwrap();
    assert_eq!(
        seen.status.code(),
        Some(1),
        "the live pod has /data/restored"
    );
    s.berth(&["plan", "--detailed-exitcode"]).code(0);

    // A check that fails fails the drill, and leaves nothing either.
    spec("/data/not-restored");
    let r = s.berth(&["backup", "drill", "dump"]).code(1);
    assert!(r.stderr_flat().contains("exited with 1"), "{}", r.stderr());
    assert_eq!(leftovers(&s), Vec::<String>::new());

    // Killed once the scratch pod runs: `recover` removes it.
    spec("/data/restored");
    let r = s.berth_env(
        &["backup", "drill", "dump"],
        &[("BERTH_FAULT_DRILL_KILL", "started")],
    );
    assert!(
        r.0.status.code().is_none() || r.0.status.code() == Some(134),
        "{}",
        r.stderr()
    );
    assert!(
        leftovers(&s).iter().any(|l| l.starts_with("container")),
        "{:?}",
        leftovers(&s)
    );
    s.berth(&["recover"]).code(0);
    assert_eq!(leftovers(&s), Vec::<String>::new());
}
