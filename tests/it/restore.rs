//! Restores against the real engine and real files: journaled like an apply, so that one
//! killed at any moment is rolled back by `berth recover` to the data from before it
//! (hash-identical), with no helper container left and a clean plan; pods brought back as an
//! apply makes them; and the backup settings that reach the plan and the timer's unit.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;

use common::Berth;
use common::backup::{self, Scene, tree};
use common::docker::{self, docker};

fn tools() -> bool {
    backup::tools(&["age-keygen"])
}

fn killed(r: &common::Run) -> bool {
    // SIGABRT: no exit code (or 134 through a shell).
    r.0.status.code().is_none() || r.0.status.code() == Some(134)
}

const VOLUME_SPEC: &str = "volumes:
  data: {}
pods:
  web:
    image: IMAGE
    volumes: [\"data:/data\"]
    health: { http: { port: 8080, path: /health }, interval: 200ms, retries: 20 }
backups:
  # berth:allow(backup-key-on-host): a test
  data:
    source: { volume: data }
    store: STORE
";

/// A scene with the volume spec applied, `files` put into the volume and a first backup of
/// it written.
fn backed_up(files: &[(&str, &str)]) -> Scene {
    let s = Scene::new();
    s.spec(true, &VOLUME_SPEC.replace("IMAGE", &s.image()));
    s.berth(&["apply", "--yes"]).code(0);
    s.put(files);
    s.berth(&["backup", "run", "data"]).code(0);
    s
}

/// After a killed restore: plan and apply refuse (exit 5) until `recover`, which puts back
/// the data from before (`before`), leaves no helper, and the next plan is clean.
fn recovered_to(
    s: &Scene,
    at: &str,
    data: &dyn Fn() -> BTreeMap<String, String>,
    before: &BTreeMap<String, String>,
) {
    let refused = s.berth(&["plan"]).code(5);
    assert!(
        refused.stderr_flat().contains("berth recover")
            && refused.stderr_flat().contains("berth backup restore data"),
        "{at}: {}",
        refused.stderr()
    );
    s.berth(&["apply", "--yes"]).code(5);
    // Putting the safety copy back by hand says to recover first (it used to fail on the
    // journal's file: `File exists (os error 17)`).
    let r = s.berth(&["backup", "restore", "data"]).code(5);
    assert!(
        r.stderr_flat().contains("berth recover") && !r.stderr().contains("os error 17"),
        "{at}: {}",
        r.stderr()
    );
    let r = s.berth(&["recover"]).code(0);
    assert!(
        r.stderr().contains("interrupted restore of `data`"),
        "{at}: {}",
        r.stderr()
    );
    assert_eq!(
        &data(),
        before,
        "{at}: not the data from before the restore"
    );
    assert_eq!(s.helpers(), Vec::<String>::new(), "{at}: helpers left");
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_volume_restore_killed_at_any_boundary_is_recovered_to_the_data_from_before() {
    if !docker::available() || !tools() {
        return;
    }
    let s = backed_up(&[("a.txt", "old a\n"), ("nested/b.txt", "old b\n")]);
    let backup = s.ids("data")[0].clone();
    // The data now (what every interrupted restore must leave): changed, and grown.
    s.put(&[
        ("a.txt", "new a, longer\n"),
        ("stray.txt", "not in the backup\n"),
    ]);
    let before = s.volume_tree();
    assert!(before.contains_key("stray.txt"));
    let data = || s.volume_tree();

    // The moment the volume is empty (before the backup goes into it).
    let r = s.berth_env(
        &["backup", "restore", "data", &backup],
        &[("BERTH_FAULT_RESTORE_KILL", "emptied")],
    );
    assert!(killed(&r), "not killed: {}", r.stderr());
    recovered_to(&s, "emptied", &data, &before);

    // After each journal record, until the restore goes through.
    let mut points = 0;
    for kill_at in 1..200 {
        let r = s.berth_env(
            &["backup", "restore", "data", &backup],
            &[("BERTH_FAULT_KILL_AT", &kill_at.to_string())],
        );
        if r.0.status.code() == Some(0) {
            break;
        }
        assert!(killed(&r), "kill point {kill_at}: {}", r.stderr());
        points += 1;
        if s.berth(&["plan"]).0.status.code() == Some(0) {
            // Killed after the restore's last record: it had gone through.
            break;
        }
        recovered_to(&s, &format!("kill point {kill_at}"), &data, &before);
    }
    eprintln!("kill points exercised: {points}");
    assert!(points >= 8, "{points} kill points");
    // The restore went through: the backup's data, and nothing left behind.
    let restored = s.volume_tree();
    assert!(!restored.contains_key("stray.txt"), "{restored:?}");
    assert_eq!(s.helpers(), Vec::<String>::new());
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    // The documented put-back: the safety copy by id gives the data from before.
    let safety = s
        .berth(&["backup", "list"])
        .code(0)
        .stdout()
        .lines()
        .rfind(|l| l.contains("(safety copy)"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap();
    s.berth(&["backup", "restore", "data", &safety]).code(0);
    assert_eq!(s.volume_tree(), before);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn recover_forward_finishes_an_interrupted_restore() {
    if !docker::available() || !tools() {
        return;
    }
    let s = backed_up(&[("a.txt", "old a\n")]);
    let backup_tree = s.volume_tree();
    let backup = s.ids("data")[0].clone();
    s.put(&[("a.txt", "new a\n"), ("stray.txt", "stray\n")]);
    let r = s.berth_env(
        &["backup", "restore", "data", &backup],
        &[("BERTH_FAULT_RESTORE_KILL", "emptied")],
    );
    assert!(killed(&r), "not killed: {}", r.stderr());
    s.berth(&["plan"]).code(5);
    // A (scheduled) backup would save the emptied volume: refused too.
    s.berth(&["backup", "run", "data"]).code(5);
    let r = s.berth(&["recover", "--forward"]).code(0);
    assert!(r.stderr().contains(&backup), "{}", r.stderr());
    assert_eq!(s.volume_tree(), backup_tree);
    assert_eq!(s.helpers(), Vec::<String>::new());
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_path_restore_killed_at_any_boundary_is_recovered_to_the_data_from_before() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let dir = s.path().join("uploads");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(dir.join("a.txt"), "old a\n").unwrap();
    std::fs::write(dir.join("nested/b.txt"), "old b\n").unwrap();
    s.spec(
        true,
        &format!(
            "pods:
  web:
    image: {}
    volumes: [\"./uploads:/data\"]
    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 20 }}
backups:
  # berth:allow(backup-key-on-host): a test
  data:
    source: {{ path: {} }}
    store: STORE
",
            &s.image(),
            dir.display()
        ),
    );
    s.berth(&["apply", "--yes"]).code(0);
    s.berth(&["backup", "run", "data"]).code(0);
    let backup = s.ids("data")[0].clone();
    std::fs::write(dir.join("a.txt"), "new a, longer\n").unwrap();
    std::fs::write(dir.join("stray.txt"), "not in the backup\n").unwrap();
    let before = tree(&dir);
    let data = || tree(&dir);

    let r = s.berth_env(
        &["backup", "restore", "data", &backup],
        &[("BERTH_FAULT_RESTORE_KILL", "emptied")],
    );
    assert!(killed(&r), "not killed: {}", r.stderr());
    // Emptied: its entries moved aside; what it holds is the backup unpacked beside them
    // and those entries, both in berth's directories (`.berth-restore-ID`, `...ID.old`).
    let left = tree(&dir);
    assert!(
        left.keys().any(|k| k.ends_with(".old/a.txt"))
            && left.keys().all(|k| k.starts_with(".berth-restore-")),
        "the directory was emptied: {left:?}"
    );
    recovered_to(&s, "emptied", &data, &before);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &s.web()]),
        "true"
    );

    let mut points = 0;
    for kill_at in 1..100 {
        let r = s.berth_env(
            &["backup", "restore", "data", &backup],
            &[("BERTH_FAULT_KILL_AT", &kill_at.to_string())],
        );
        if r.0.status.code() == Some(0) {
            break;
        }
        assert!(killed(&r), "kill point {kill_at}: {}", r.stderr());
        points += 1;
        if s.berth(&["plan"]).0.status.code() == Some(0) {
            // Killed after the restore's last record: it had gone through.
            break;
        }
        recovered_to(&s, &format!("kill point {kill_at}"), &data, &before);
        assert_eq!(
            docker(&["inspect", "-f", "{{.State.Running}}", &s.web()]),
            "true",
            "kill point {kill_at}"
        );
    }
    eprintln!("kill points exercised: {points}");
    assert!(points >= 5, "{points} kill points");
    assert!(!tree(&dir).contains_key("stray.txt"));
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

/// A build context `name` in the scene's directory: the test app, and a Dockerfile that
/// copies it into `scratch` with a label of this project's (an image id of its own), then
/// `tail`.
fn own_context(s: &Scene, name: &str, tail: &str) {
    let context = s.path().join(name);
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(
        docker::testapp_context().join("testapp"),
        context.join("testapp"),
    )
    .unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY testapp /testapp\nLABEL io.berth.test={}\n{tail}",
            s.project()
        ),
    )
    .unwrap();
}

#[test]
fn a_pod_brought_back_by_a_restore_is_labelled_as_an_apply_labels_it() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    // A context of its own (its image id is not the shared test app's, which the project's
    // cleanup would remove with it).
    own_context(&s, "app", "ENTRYPOINT [\"/testapp\"]\n");
    s.spec(
        true,
        &VOLUME_SPEC.replace("image: IMAGE", "build: { context: ./app }"),
    );
    s.berth(&["apply", "--yes"]).code(0);
    s.put(&[("a.txt", "a\n")]);
    s.berth(&["backup", "run", "data"]).code(0);
    s.berth(&["backup", "restore", "data"]).code(0);
    // No replace for the pod: its labels are those of an apply.
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    // And the history names the restore.
    let history = s.berth(&["history", "--format", "json"]).code(0).stdout();
    let list = crate::common::revisions(&history);
    assert_eq!(
        list.last().unwrap()["command"],
        "berth backup restore data",
        "{history}"
    );
}

/// The `io.berth.*` labels of a container.
fn berth_labels(name: &str) -> BTreeMap<String, String> {
    let json = docker(&["inspect", "-f", "{{json .Config.Labels}}", name]);
    let all: BTreeMap<String, String> = serde_json::from_str(&json).unwrap();
    all.into_iter()
        .filter(|(k, _)| k.starts_with("io.berth."))
        .collect()
}

#[test]
fn a_pod_brought_back_by_a_restore_carries_the_revision_label_an_apply_gives() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.spec(true, &VOLUME_SPEC.replace("IMAGE", &s.image()));
    s.berth(&["apply", "--yes"]).code(0);
    let applied = berth_labels(&s.web());
    s.put(&[("a.txt", "a\n")]);
    s.berth(&["backup", "run", "data"]).code(0);
    // The labels of an apply, with the revision the last command recorded.
    let expected = |s: &Scene, command: &str| {
        let history = s.berth(&["history", "--format", "json"]).code(0).stdout();
        let list = crate::common::revisions(&history);
        let last = list.last().unwrap();
        assert_eq!(last["command"], command, "{history}");
        let mut want = applied.clone();
        want.insert(
            "io.berth.revision".into(),
            last["revision"].as_u64().unwrap().to_string(),
        );
        want
    };
    // A restore that goes through: its pods come back by its re-apply.
    s.berth(&["backup", "restore", "data"]).code(0);
    let want = expected(&s, "berth backup restore data");
    assert_eq!(want["io.berth.revision"], "2");
    assert_eq!(berth_labels(&s.web()), want);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    // A restore killed after emptying the volume: `recover` brings the pods back through
    // the restore's undo (its Reapply), labelled the same way.
    let r = s.berth_env(
        &["backup", "restore", "data"],
        &[("BERTH_FAULT_RESTORE_KILL", "emptied")],
    );
    assert!(killed(&r), "{}", r.stderr());
    s.berth(&["recover"]).code(0);
    let want = expected(&s, "berth recover");
    assert_eq!(want["io.berth.revision"], "3");
    assert_eq!(berth_labels(&s.web()), want);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_safety_copy_cut_short_by_a_kill_is_listed_as_incomplete_and_removed_by_the_next_run() {
    if !docker::available() || !tools() {
        return;
    }
    let s = backed_up(&[("a.txt", "a\n")]);
    let good = s.ids("data");
    // Killed once the safety copy's data is written, before its manifest.
    let r = s.berth_env(
        &["backup", "restore", "data"],
        &[("BERTH_FAULT_BACKUP_KILL", "sealed")],
    );
    assert!(killed(&r), "{}", r.stderr());
    s.berth(&["recover"]).code(0);
    let cut: Vec<String> = s
        .ids("data")
        .into_iter()
        .filter(|id| !good.contains(id))
        .collect();
    assert_eq!(cut.len(), 1, "{:?}", s.ids("data"));
    assert!(
        !s.store
            .join(format!("data/{}.manifest.json", cut[0]))
            .exists()
    );
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    assert!(
        list.lines()
            .any(|l| l.contains(&cut[0]) && l.contains("incomplete")),
        "{list}"
    );
    // The next backup of the name removes it, once its own verifies.
    let r = s.berth(&["backup", "run", "data"]).code(0).stderr();
    assert!(r.contains(&format!("removed {}", cut[0])), "{r}");
    assert!(!s.ids("data").contains(&cut[0]));
    assert_eq!(s.ids("data").len(), 2);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_volume_backup_works_with_an_image_that_has_no_default_command() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    // The test app with no ENTRYPOINT and no CMD: the pod says what to run.
    own_context(&s, "bare", "");
    let spec = VOLUME_SPEC
        .replace(
            "image: IMAGE",
            "build: { context: ./bare }\n    command: [/testapp]",
        )
        .replace(
            "    source: { volume: data }\n",
            "    source: { volume: data }\n    before_apply: true\n",
        );
    s.spec(true, &spec);
    s.berth(&["apply", "--yes"]).code(0);
    s.put(&[("a.txt", "a\n")]);
    let r = s.berth(&["backup", "run", "data"]).code(0);
    assert!(
        r.stderr().contains("written and verified"),
        "{}",
        r.stderr()
    );
    // An apply that replaces the pod takes its backup first, and goes through.
    s.spec(
        true,
        &spec.replace(
            "command: [/testapp]",
            "command: [/testapp]\n    env: { V: \"2\" }",
        ),
    );
    let r = s.berth(&["apply", "--yes"]).code(0);
    assert!(
        r.stderr().contains("taken before the apply"),
        "{}",
        r.stderr()
    );
    assert_eq!(s.ids("data").len(), 2);
    s.berth(&["backup", "restore", "data"]).code(0);
    assert_eq!(s.helpers(), Vec::<String>::new());
}

#[test]
fn a_failed_before_apply_backup_names_itself_and_changes_nothing() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let spec = VOLUME_SPEC.replace("IMAGE", &s.image()).replace(
        "    source: { volume: data }\n",
        "    source: { volume: data }\n    before_apply: true\n",
    );
    s.spec(true, &spec);
    s.berth(&["apply", "--yes"]).code(0);
    let id = docker(&["inspect", "-f", "{{.Id}}", &s.web()]);
    // The backup cannot be written: a file where its directory in the store goes.
    std::fs::write(s.store.join("data"), "in the way").unwrap();
    s.spec(
        true,
        &spec.replace(
            "volumes: [\"data:/data\"]",
            "volumes: [\"data:/data\"]\n    env: { V: \"2\" }",
        ),
    );
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("before_apply: true"), "{err}");
    assert!(err.contains("before any change"), "{err}");
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &s.web()]), id);
}

#[test]
fn turning_before_apply_on_or_off_is_a_planned_update_of_the_backup() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let off = VOLUME_SPEC.replace("IMAGE", &s.image());
    let on = off.replace(
        "    source: { volume: data }\n",
        "    source: { volume: data }\n    before_apply: true\n",
    );
    s.spec(true, &off);
    s.berth(&["apply", "--yes"]).code(0);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    for (text, want) in [(&on, "true"), (&off, "false")] {
        s.spec(true, text);
        let plan = s.inner.plan(2);
        let changed = common::changed(&plan);
        assert_eq!(
            changed,
            vec![("backup.data".to_owned(), berth::plan::Action::Update)],
            "{want}"
        );
        let human = s.berth(&["plan"]).code(0).stdout();
        assert!(human.contains("before_apply"), "{human}");
        s.berth(&["apply", "--yes"]).code(0);
        s.berth(&["plan", "--detailed-exitcode"]).code(0);
    }
}

/// The words of a systemd command line as `units` writes them (double-quoted, `%%`).
fn unquote(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {}
            '"' => {
                let mut w = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => w.extend(chars.next()),
                        '"' => break,
                        c => w.push(c),
                    }
                }
                words.push(w.replace("%%", "%"));
            }
            c => {
                let mut w = c.to_string();
                while let Some(c) = chars.peek().copied().filter(|c| *c != ' ') {
                    chars.next();
                    w.push(c);
                }
                words.push(w);
            }
        }
    }
    words
}

#[test]
fn the_backup_timer_unit_runs_by_hand_with_the_state_dir_and_identity_of_the_apply() {
    if !docker::available() || !tools() {
        return;
    }
    let mut s = Scene::new();
    // The identity only through $BERTH_IDENTITY, the state in a directory of its own.
    let key = s.path().join("elsewhere.key");
    std::fs::rename(s.path().join("key.txt"), &key).unwrap();
    let state = s.path().join("state");
    s.state_dir = Some(state.clone());
    let spec = VOLUME_SPEC
        .replace("IMAGE", &s.image())
        .replace(
            "    source: { volume: data }\n",
            "    source: { volume: data }\n    schedule: daily\n",
        )
        .replace("backups:\n", "recipients: [RECIPIENT]\nbackups:\n");
    let public = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_owned))
        .unwrap();
    s.spec(false, &spec.replace("RECIPIENT", &public));
    let apply = Berth::new()
        .dir(s.path())
        .args([
            "--state-dir",
            &state.display().to_string(),
            "apply",
            "--yes",
        ])
        .env("BERTH_IDENTITY", &key.display().to_string())
        .run()
        .code(0);
    let unit = common::unit_dir().join(format!("berth-{}-backup-data.service", s.project()));
    let text = std::fs::read_to_string(&unit)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", unit.display(), apply.stderr()));
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let words = unquote(exec);
    assert!(words.contains(&state.display().to_string()), "{text}");
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(unquote)
        .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    // Run by hand as systemd would: its environment only, from another directory.
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..])
        .current_dir("/")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", std::env::var("HOME").unwrap())
        .env("BERTH_UNIT_DIR", common::unit_dir());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.ids("data").len(), 1);
    // The plan stays clean (the unit is as the spec says).
    let plan = Berth::new()
        .dir(s.path())
        .args([
            "--state-dir",
            &state.display().to_string(),
            "plan",
            "--detailed-exitcode",
        ])
        .env("BERTH_IDENTITY", &key.display().to_string())
        .run();
    plan.code(0);
    let _ = std::fs::remove_file(&unit);
    let _ = std::fs::remove_file(unit.with_extension("timer"));
}

#[test]
fn a_helper_container_left_behind_is_removed_by_the_next_backup_run() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let image = s.image();
    s.spec(true, &VOLUME_SPEC.replace("IMAGE", &image));
    s.berth(&["apply", "--yes"]).code(0);
    // What a backup killed while reading the volume leaves: a helper that mounts it.
    let volume = format!("{}-data", s.project());
    docker(&[
        "create",
        "--name",
        &format!("{}-berth-backup-0a0b0c", s.project()),
        "--label",
        &format!("io.berth.project={}", s.project()),
        "--label",
        "io.berth.helper=backup",
        "--mount",
        &format!("type=volume,source={volume},target=/volume"),
        &image,
    ]);
    assert_eq!(s.helpers().len(), 1);
    s.berth(&["backup", "run", "data"]).code(0);
    assert_eq!(s.helpers(), Vec::<String>::new());
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

/// A container of no project, mounting the project's volume `data`: removed on drop.
struct Foreign(String);

impl Foreign {
    fn create(s: &Scene, image: &str) -> Foreign {
        let name = format!("{}-foreign", s.project());
        docker(&[
            "create",
            "--name",
            &name,
            "-v",
            &format!("{}-data:/x", s.project()),
            image,
        ]);
        Foreign(name)
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn container_id(name: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}}", name])
        .trim()
        .to_owned()
}

fn running(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

#[test]
fn a_restore_of_a_volume_a_foreign_container_uses_is_refused_before_anything_is_touched() {
    if !docker::available() || !tools() {
        return;
    }
    let s = backed_up(&[("a.txt", "old\n")]);
    let image = s.image();
    s.put(&[("a.txt", "current\n")]);
    let before = s.volume_tree();
    let pod = container_id(&s.web());
    let foreign = Foreign::create(&s, &image);
    let r = s.berth(&["backup", "restore", "data"]).code(1);
    assert!(
        r.stderr_flat().contains(&foreign.0) && r.stderr_flat().contains("does not manage"),
        "{}",
        r.stderr()
    );
    // Nothing touched: the same container, running, on the same data; no safety copy; no
    // journal.
    assert_eq!(container_id(&s.web()), pod);
    assert!(running(&s.web()));
    assert_eq!(s.volume_tree(), before);
    assert_eq!(s.ids("data").len(), 1);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn recover_brings_the_pods_back_when_the_safety_copy_goes_back_only_on_a_later_run() {
    if !docker::available() || !tools() {
        return;
    }
    let s = backed_up(&[("a.txt", "old\n")]);
    let image = s.image();
    s.put(&[("a.txt", "current\n"), ("stray.txt", "not in the backup\n")]);
    let before = s.volume_tree();
    let r = s.berth_env(
        &["backup", "restore", "data"],
        &[("BERTH_FAULT_RESTORE_KILL", "emptied")],
    );
    assert!(killed(&r), "not killed: {}", r.stderr());
    // A container berth does not manage starts using the (empty) volume: the safety copy
    // cannot go back yet, and the pods must not come back on the empty volume.
    let foreign = Foreign::create(&s, &image);
    let r = s.berth(&["recover"]).code(5);
    assert!(r.stderr_flat().contains(&foreign.0), "{}", r.stderr());
    assert!(!running(&s.web()), "the pod came back on an empty volume");
    s.berth(&["plan"]).code(5);
    drop(foreign);
    let r = s.berth(&["recover"]).code(0);
    assert!(
        r.stderr().contains("interrupted restore of `data`"),
        "{}",
        r.stderr()
    );
    assert!(running(&s.web()), "no pod after recover: {}", r.stderr());
    assert_eq!(s.volume_tree(), before);
    assert_eq!(s.helpers(), Vec::<String>::new());
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

/// What a backup or restore killed before its journal began leaves: a helper that mounts
/// the volume `data`.
fn plant_helper(s: &Scene, image: &str, suffix: &str) {
    docker(&[
        "create",
        "--name",
        &format!("{}-berth-backup-{suffix}", s.project()),
        "--label",
        &format!("io.berth.project={}", s.project()),
        "--label",
        "io.berth.helper=backup",
        "--mount",
        &format!("type=volume,source={}-data,target=/volume", s.project()),
        image,
    ]);
}

#[test]
fn recover_and_destroy_remove_the_helper_containers_a_killed_backup_left() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let image = s.image();
    s.spec(true, &VOLUME_SPEC.replace("IMAGE", &image));
    s.berth(&["apply", "--yes"]).code(0);
    plant_helper(&s, &image, "0a0b0c");
    assert_eq!(s.helpers().len(), 1);
    let r = s.berth(&["recover"]).code(0);
    assert!(r.stderr().contains("helper container"), "{}", r.stderr());
    assert_eq!(s.helpers(), Vec::<String>::new());
    // Destroy removes one before the volume it mounts.
    plant_helper(&s, &image, "0d0e0f");
    let r = s.berth(&["destroy", "--yes", "--delete-volumes"]).code(0);
    assert!(
        r.stderr().contains("Destroy complete") && !r.stderr().contains("are left"),
        "{}",
        r.stderr()
    );
    assert_eq!(s.helpers(), Vec::<String>::new());
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name={}-data", s.project()),
    ]);
    assert_eq!(volumes.trim(), "", "the volume stayed");
    s.berth(&["plan", "--detailed-exitcode"]).code(2);
}

#[test]
fn a_killed_stop_consistent_backup_leaves_plan_refusing_until_recover_starts_its_pods() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.spec(
        true,
        &format!("{VOLUME_SPEC}    consistent: stop\n").replace("IMAGE", &s.image()),
    );
    s.berth(&["apply", "--yes"]).code(0);
    // Killed after the stops are journaled and done (begin, one undo, the read's step).
    let r = s.berth_env(&["backup", "run", "data"], &[("BERTH_FAULT_KILL_AT", "3")]);
    assert!(killed(&r), "not killed: {}", r.stderr());
    assert!(!running(&s.web()));
    let r = s.berth(&["plan"]).code(5);
    assert!(
        r.stderr_flat().contains("berth backup run data"),
        "{}",
        r.stderr()
    );
    s.berth(&["apply", "--yes"]).code(5);
    s.berth(&["backup", "run", "data"]).code(5);
    let r = s.berth(&["recover"]).code(0);
    assert!(r.stderr().contains("run again"), "{}", r.stderr());
    assert!(running(&s.web()));
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    // A backup that goes through starts them again and leaves no journal.
    s.berth(&["backup", "run", "data"]).code(0);
    assert!(running(&s.web()));
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_backup_run_during_an_apply_waits_for_it() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let image = s.image();
    let spec = |version: &str| {
        VOLUME_SPEC.replace("IMAGE", &image).replace(
            "    volumes: [\"data:/data\"]\n",
            &format!("    volumes: [\"data:/data\"]\n    env: {{ START_DELAY: \"3\", V: \"{version}\" }}\n"),
        )
    };
    s.spec(true, &spec("1"));
    s.berth(&["apply", "--yes"]).code(0);
    s.spec(true, &spec("2"));
    let apply = Berth::new().dir(s.path()).args(["apply", "--yes"]).spawn();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = s.berth(&["backup", "run", "data"]);
    let applied = apply.wait_with_output().unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert_eq!(r.0.status.code(), Some(0), "{}", r.stderr());
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

/// A directory comes back as `tar -x` puts it back: its directories' modes and modification
/// times too, the tree's own included; and nothing of berth's is left in it (the backup is
/// unpacked beside the data, in a directory of berth's, then moved in).
#[test]
fn a_path_restore_puts_back_directory_modes_and_times_and_leaves_nothing_of_its_own() {
    if !docker::available() || !tools() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let s = Scene::new();
    let src = s.path_backup(1, "{ daily: 7 }");
    std::fs::create_dir_all(src.join("deep/er")).unwrap();
    std::fs::write(src.join("deep/er/f.txt"), "f\n").unwrap();
    let past = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let stamp = |p: &std::path::Path, mode: u32, at: u64| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::File::open(p)
            .unwrap()
            .set_modified(past(at))
            .unwrap();
    };
    // Innermost first: a directory's time moves when something is made in it.
    stamp(&src.join("deep/er"), 0o700, 1_000_000_000);
    stamp(&src.join("deep"), 0o750, 1_100_000_000);
    stamp(&src, 0o710, 1_200_000_000);
    let stamps = |root: &std::path::Path| -> BTreeMap<String, (u32, u64)> {
        ["", "deep", "deep/er"]
            .iter()
            .map(|rel| {
                let m = std::fs::metadata(root.join(rel)).unwrap();
                let at = m.modified().unwrap().duration_since(past(0)).unwrap();
                (
                    rel.to_string(),
                    (m.permissions().mode() & 0o7777, at.as_secs()),
                )
            })
            .collect()
    };
    let before = stamps(&src);
    let files = tree(&src);
    s.berth(&["backup", "run", "data"]).code(0);
    // Changed since: a directory gone, another made, the tree's mode changed.
    std::fs::remove_dir_all(src.join("deep")).unwrap();
    std::fs::create_dir(src.join("new")).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.berth(&["backup", "restore", "data"]).code(0);
    assert_eq!(tree(&src), files);
    assert_eq!(stamps(&src), before);
}
