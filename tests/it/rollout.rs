//! The ordered rollout over two real engines: region `iad` (primary) on the machine's
//! engine, region `ord` on the tests' second engine (`common::dockerd`) over its unix
//! socket. Each region runs its own pod on its own published port on 127.0.0.1 (the two
//! engines share the host's ports), so what serves is read over HTTP.
//!
//! - with the default `rollout.on_failure: rollback`, a new version failing its health gate
//!   in `ord` (after `iad` was done) puts both regions back on the previous revision;
//! - with `halt`, `iad` keeps the new version, `ord` is back on the old one, the revision is
//!   partial, and `plan` shows what is left (`ord` only);
//! - `--region ord` applies only `ord`, and an unknown region is refused with the names.

use berth::plan::Action;

use crate::common::{self, Scene, changed, docker};
use crate::proxy::{free_port, wait_for};

/// Two regions, a pod in each on its own port; `ord_env` is added to `ord`'s pod.
struct TwoRegions {
    scene: Scene,
    iad_port: u16,
    ord_port: u16,
    ord_host: String,
}

impl TwoRegions {
    /// `None` without Docker or the second engine (a failure with `BERTH_REQUIRE_DOCKER=1`).
    fn new() -> Option<TwoRegions> {
        if !docker::available() {
            return None;
        }
        let e = common::dockerd::second_engine()?;
        e.load_image(docker::testapp_image());
        Some(TwoRegions {
            scene: Scene::new(),
            iad_port: free_port(),
            ord_port: free_port(),
            ord_host: e.host.clone(),
        })
    }

    /// Writes the spec: `iad` runs `version`, `ord` runs `version` with `ord_env` added.
    fn write(&self, rollout: &str, version: &str, ord_env: &str) {
        self.write_with(rollout, version, ord_env, "");
    }

    /// [`Self::write`], with `iad_extra` added to `iad`'s pod (a `depends_on:` line).
    fn write_with(&self, rollout: &str, version: &str, ord_env: &str, iad_extra: &str) {
        let pod = |name: &str, region: &str, port: u16, extra: &str, more: &str| {
            format!(
                "  {name}:\n    image: {}\n    regions: [{region}]\n    env: {{ VERSION: {version}{extra} }}\n    ports: [\"127.0.0.1:{port}:8080\"]\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 10 }}\n    update: {{ strategy: recreate }}\n{more}",
                docker::testapp_image()
            )
        };
        self.scene.spec(&format!(
            "regions:\n  iad: {{ engine: \"unix:///var/run/docker.sock\", primary: true }}\n  ord: {{ engine: \"{}\" }}\n{rollout}pods:\n{}{}",
            self.ord_host,
            pod("web-iad", "iad", self.iad_port, "", iad_extra),
            pod("web-ord", "ord", self.ord_port, ord_env, ""),
        ));
    }

    /// The version each region serves: (`iad`, `ord`).
    fn serving(&self) -> (String, String) {
        (
            wait_for(self.iad_port, "/version", 200)
                .body
                .trim()
                .to_owned(),
            wait_for(self.ord_port, "/version", 200)
                .body
                .trim()
                .to_owned(),
        )
    }

    /// Both regions on v1.
    fn applied_v1(rollout: &str) -> Option<TwoRegions> {
        let t = TwoRegions::new()?;
        t.write(rollout, "v1", "");
        let r = t.scene.berth(&["apply", "--yes"]).code(0);
        // One region after the other, the primary first.
        let (err, [iad, ord]) = announced(&r);
        assert!(iad < ord, "{err}");
        assert_eq!(t.serving(), ("v1".to_owned(), "v1".to_owned()));
        t.scene.plan(0);
        Some(t)
    }
}

/// An apply's output, and where in it each region's rollout (`iad`, `ord`) is announced.
fn announced(r: &common::Run) -> (String, [usize; 2]) {
    let err = r.stderr();
    let at = |region: &str| {
        err.find(&format!("Region `{region}`:"))
            .unwrap_or_else(|| panic!("{region}'s rollout is not announced:\n{err}"))
    };
    let found = [at("iad"), at("ord")];
    (err, found)
}

#[test]
fn a_region_failing_its_gate_puts_every_region_back_by_default() {
    let Some(t) = TwoRegions::applied_v1("") else {
        return;
    };
    t.write("", "v2", ", FAIL_HEALTH: 1");
    let r = t.scene.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("`pod.web-ord@ord` failed its `healthy` gate"),
        "{err}"
    );
    assert!(err.contains("region `ord` failed"), "{err}");
    assert!(err.contains("(`iad`) were undone too"), "{err}");
    // One revision everywhere: the previous one, serving.
    assert_eq!(t.serving(), ("v1".to_owned(), "v1".to_owned()));
    let mut left = changed(&t.scene.plan(2));
    left.sort();
    assert_eq!(
        left,
        [
            ("pod.web-iad@iad".to_owned(), Action::Replace),
            ("pod.web-ord@ord".to_owned(), Action::Replace),
        ]
    );
    // No revision was recorded for the failed apply.
    let history = t.scene.berth(&["history", "--format", "json"]).code(0);
    let revisions = crate::common::revisions(&history.stdout());
    assert_eq!(revisions.len(), 1);
}

#[test]
fn with_halt_the_regions_done_keep_the_new_revision_and_plan_shows_the_rest() {
    let halt = "rollout: { on_failure: halt }\n";
    let Some(t) = TwoRegions::applied_v1(halt) else {
        return;
    };
    t.write(halt, "v2", ", FAIL_HEALTH: 1");
    let (url, bodies) = crate::state::webhook();
    let r = t.scene.berth(&["apply", "--yes", "--notify", &url]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("the rollout halted at region `ord`"), "{err}");
    let posted = bodies
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a POST");
    assert_eq!(posted["outcome"], "halted");
    assert_eq!(posted["revision"], 2);
    assert!(err.contains("(`iad`) keep the new revision"), "{err}");
    assert!(err.contains("recorded as revision 2, partial"), "{err}");
    assert_eq!(t.serving(), ("v2".to_owned(), "v1".to_owned()));
    // What is left is `ord`'s change only.
    assert_eq!(
        changed(&t.scene.plan(2)),
        [("pod.web-ord@ord".to_owned(), Action::Replace)]
    );
    let history = t.scene.berth(&["history", "--format", "json"]).code(0);
    let revisions = crate::common::revisions(&history.stdout());
    let last = revisions.last().unwrap();
    assert_eq!(last["revision"], 2);
    assert_eq!(last["regions"], serde_json::json!(["iad"]));
    assert_eq!(last["halted_at"], "ord");
    let human = t.scene.berth(&["history"]).code(0).stdout();
    assert!(human.contains("(partial: iad; halted at ord)"), "{human}");

    // Fixed, the next apply changes `ord` only.
    t.write(halt, "v2", "");
    t.scene.berth(&["apply", "--yes"]).code(0);
    assert_eq!(t.serving(), ("v2".to_owned(), "v2".to_owned()));
    t.scene.plan(0);
}

#[test]
fn region_limits_plan_and_apply_to_the_regions_named() {
    let Some(t) = TwoRegions::applied_v1("") else {
        return;
    };
    t.write("", "v2", "");
    let plan = t
        .scene
        .berth(&["plan", "--region", "ord", "--format", "json"])
        .code(0);
    let plan: berth::plan::Plan = serde_json::from_str(&plan.stdout()).unwrap();
    assert_eq!(
        changed(&plan),
        [("pod.web-ord@ord".to_owned(), Action::Replace)]
    );
    t.scene
        .berth(&["apply", "--region", "ord", "--yes"])
        .code(0);
    assert_eq!(t.serving(), ("v1".to_owned(), "v2".to_owned()));
    // `iad` was not touched: the whole plan shows its change, `--region ord` none.
    assert_eq!(
        changed(&t.scene.plan(2)),
        [("pod.web-iad@iad".to_owned(), Action::Replace)]
    );
    t.scene
        .berth(&["plan", "--region", "ord", "--detailed-exitcode"])
        .code(0);
    let history = t.scene.berth(&["history", "--format", "json"]).code(0);
    let revisions = crate::common::revisions(&history.stdout());
    assert_eq!(
        revisions.last().unwrap()["regions"],
        serde_json::json!(["ord"])
    );

    // An unknown region is refused with the spec's names, before anything.
    let r = t
        .scene
        .berth(&["apply", "--region", "nowhere", "--yes"])
        .code(1);
    let err = r.stderr_flat();
    assert!(err.contains("the spec has no region `nowhere`"), "{err}");
    assert!(err.contains("`iad`, `ord`"), "{err}");
    assert_eq!(t.serving(), ("v1".to_owned(), "v2".to_owned()));

    // `destroy --region ord` removes `ord`'s pod only.
    t.scene
        .berth(&["destroy", "--region", "ord", "--yes"])
        .code(0);
    let e = common::dockerd::second_engine().expect("started above");
    assert!(e.containers(&t.scene.project.0).is_empty());
    assert_eq!(
        docker::containers_of(&t.scene.project.0),
        [t.scene.name("web-iad")]
    );
    assert_eq!(wait_for(t.iad_port, "/version", 200).body.trim(), "v1");

    // A revision that destroyed only `ord` is no revision to roll back to: going back to it
    // would remove `iad` too.
    let history = t.scene.berth(&["history"]).code(0).stdout();
    let latest: String = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .rfind(|w| w.chars().all(|c| c.is_ascii_digit()))
        .expect("a revision in the history (oldest first)")
        .to_owned();
    let r = t
        .scene
        .berth(&["rollback", "--to", &latest, "--yes"])
        .code(1);
    assert!(
        r.stderr_flat().contains("destroyed only `ord`"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        docker::containers_of(&t.scene.project.0),
        [t.scene.name("web-iad")]
    );
}

#[test]
fn a_primary_pod_depending_on_a_pod_of_another_region_rolls_that_region_out_first() {
    let Some(t) = TwoRegions::new() else {
        return;
    };
    let dep = "    depends_on: [web-ord@ord]\n";
    t.write_with("", "v1", "", dep);
    let r = t.scene.berth(&["apply", "--yes"]).code(0);
    let (err, [iad, ord]) = announced(&r);
    assert!(ord < iad, "ord first, though iad is primary:\n{err}");
    assert_eq!(t.serving(), ("v1".to_owned(), "v1".to_owned()));
    t.scene.plan(0);

    // `ord` failing its gate: `iad` (after it) is never touched.
    t.write_with("", "v2", ", FAIL_HEALTH: 1", dep);
    let r = t.scene.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("region `ord` failed, the first of the rollout"),
        "{err}"
    );
    assert!(!err.contains("Region `iad`:"), "{err}");
    assert_eq!(t.serving(), ("v1".to_owned(), "v1".to_owned()));
}

/// `kill -9` at every journal boundary of a rollout that halts at `ord`, then `recover`:
/// before the commit every region is back on v1 and nothing is recorded; from the commit
/// on, `iad` keeps v2, `ord` runs v1, and the revision is recorded as partial. Either way
/// each engine holds exactly its pod's one container.
#[test]
fn a_halted_rollout_killed_at_every_journal_boundary_recovers_to_a_consistent_state() {
    let halt = "rollout: { on_failure: halt }\n";
    let Some(t) = TwoRegions::applied_v1(halt) else {
        return;
    };
    let e = common::dockerd::second_engine().expect("started above");
    let project = t.scene.project.0.clone();
    // One halted apply whole, for its records; then v1 again.
    t.write(halt, "v2", ", FAIL_HEALTH: 1");
    t.scene.berth(&["apply", "--yes"]).code(1);
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(t.scene.state().join("last-journal.jsonl"))
            .expect("last journal")
            .lines()
            .map(|l| serde_json::from_str(l).expect("record"))
            .collect();
    let commit_at = records
        .iter()
        .position(|r| r["t"] == "commit")
        .expect("a commit")
        + 1;
    assert_eq!(records[commit_at - 1]["halted_at"], "ord");
    let revisions = |t: &TwoRegions| -> Vec<serde_json::Value> {
        let h = t.scene.berth(&["history", "--format", "json"]).code(0);
        crate::common::revisions(&h.stdout())
    };
    for kill_at in 1..=records.len() {
        t.write(halt, "v1", "");
        t.scene.berth(&["apply", "--yes"]).code(0);
        assert_eq!(t.serving(), ("v1".to_owned(), "v1".to_owned()));
        let before = revisions(&t).len();

        t.write(halt, "v2", ", FAIL_HEALTH: 1");
        crate::crash::apply_killed_at(&t.scene, kill_at as u64);
        t.scene.berth(&["recover"]).code(0);
        let context = format!("killed at record {kill_at} (commit at {commit_at})");
        let after = revisions(&t);
        if kill_at < commit_at {
            assert_eq!(t.serving(), ("v1".to_owned(), "v1".to_owned()), "{context}");
            assert_eq!(after.len(), before, "{context}");
        } else {
            assert_eq!(t.serving(), ("v2".to_owned(), "v1".to_owned()), "{context}");
            assert_eq!(after.len(), before + 1, "{context}");
            let last = after.last().unwrap();
            assert_eq!(last["regions"], serde_json::json!(["iad"]), "{context}");
            assert_eq!(last["halted_at"], "ord", "{context}");
        }
        assert_eq!(
            docker::containers_of(&project),
            [t.scene.name("web-iad")],
            "{context}"
        );
        assert_eq!(
            e.containers(&project),
            [format!("{} running", t.scene.name("web-ord"))],
            "{context}"
        );
    }
}
