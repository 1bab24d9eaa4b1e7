//! Benchmark: berth against the real engine, and against docker-compose on the same engine.
//!
//! Run: `cargo run --release --example bench_apply` (needs the Docker engine, rustc and
//! docker-compose; builds the test app image from fixtures/images/testapp).
//!
//! 1. apply of 20 independent pods from nothing, then a no-op re-apply, against
//!    `docker-compose up -d` of the equivalent compose file, then its no-op `up -d`;
//! 2. a no-op plan with 50 running pods: wall time and engine requests.
//!
//! berth runs in this process through the library (the CLI does the same work; Rust starts
//! in about a millisecond); docker-compose runs as its CLI. berth waits for every pod's
//! HTTP health check to pass; `up -d` waits for nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth::apply::Options;
use berth::ops::{Goal, Session};

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_image(dir: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/testapp");
    sh(Command::new("rustc")
        .args(["-O", "-C", "target-feature=+crt-static", "-o"])
        .arg(dir.join("testapp"))
        .arg(src.join("main.rs")));
    std::fs::copy(src.join("Dockerfile"), dir.join("Dockerfile")).expect("Dockerfile");
    let tag = "berth-testapp:bench".to_owned();
    sh(Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir));
    tag
}

fn berth_spec(project: &str, image: &str, pods: usize) -> String {
    let mut s = format!("version: 1\nproject: {project}\npods:\n");
    for i in 0..pods {
        s.push_str(&format!(
            "  app{i}:\n    image: {image}\n    env: {{ VERSION: v{i} }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 100ms, retries: 50 }}\n"
        ));
    }
    s
}

fn compose_file(image: &str, pods: usize) -> String {
    let mut s = String::from("version: \"3.8\"\nservices:\n");
    for i in 0..pods {
        s.push_str(&format!(
            "  app{i}:\n    image: {image}\n    init: true\n    environment:\n      VERSION: v{i}\n"
        ));
    }
    s
}

/// The benchmark's own state directory, beside its spec, and berth's lock like `apply`.
fn opts(spec: &Path) -> berth::ops::Opts {
    berth::ops::Opts {
        state_dir: spec.parent().map(|d| d.join("state")),
        lock: Some("bench_apply".into()),
        ..Default::default()
    }
}

fn apply(path: &Path, goal: Goal) -> (Duration, usize) {
    let t = Instant::now();
    let session = Session::open(path, goal, &opts(path)).expect("plan");
    let applied = session
        .apply(
            // The CLI's defaults (`berth apply` without `--parallelism`).
            Options {
                delete_volumes: true,
                ..Options::default()
            },
            &mut |_| {},
        )
        .expect("apply");
    (t.elapsed(), applied.changed)
}

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    sh(cmd);
    t.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let dir = tempfile_dir();
    let image = build_image(&dir);
    let pods = 20;

    // berth: 20 pods from nothing, then again.
    let spec = dir.join("berth.yaml");
    std::fs::write(&spec, berth_spec("benchb", &image, pods)).expect("spec");
    let (berth_up, changed) = apply(&spec, Goal::Spec);
    assert_eq!(changed, pods + 1, "network and pods");
    let (berth_noop, nothing) = apply(&spec, Goal::Spec);
    assert_eq!(nothing, 0);
    apply(&spec, Goal::Nothing);

    // docker-compose: the same 20 containers, then again.
    let compose = dir.join("docker-compose.yml");
    std::fs::write(&compose, compose_file(&image, pods)).expect("compose file");
    let dc = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.arg("-f").arg(&compose).args(["-p", "benchc"]).args(args);
        c
    };
    let compose_up = timed(&mut dc(&["up", "-d"]));
    let compose_noop = timed(&mut dc(&["up", "-d"]));
    sh(&mut dc(&["down"]));

    println!("apply of {pods} independent pods on one engine (same image, same engine, same run):");
    println!(
        "  from nothing: berth {:>7.0} ms (health-checked)  docker-compose up -d {:>7.0} ms  ratio {:.2}x",
        ms(berth_up),
        ms(compose_up),
        ms(compose_up) / ms(berth_up)
    );
    println!(
        "  no-op again:  berth {:>7.0} ms                   docker-compose up -d {:>7.0} ms  ratio {:.1}x",
        ms(berth_noop),
        ms(compose_noop),
        ms(compose_noop) / ms(berth_noop)
    );

    // A no-op plan with 50 running pods.
    let pods = 50;
    std::fs::write(&spec, berth_spec("benchp", &image, pods)).expect("spec");
    apply(&spec, Goal::Spec);
    let t = Instant::now();
    let live = berth::ops::plan_live(&spec, &opts(&spec), false).expect("plan");
    let plan_time = t.elapsed();
    assert!(!live.plan.has_changes());
    println!(
        "no-op plan with {pods} running pods: {:.0} ms, {} engine requests (connecting lists the networks, then one list of containers and one of volumes)",
        ms(plan_time),
        live.requests
    );
    apply(&spec, Goal::Nothing);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-bench-apply-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
