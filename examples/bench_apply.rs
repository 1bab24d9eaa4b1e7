//! Benchmark: berth against the real engine, and against docker-compose on the same engine.
//!
//! Run: `cargo build --release --bin berth --example bench_apply`, then
//! `target/release/examples/bench_apply [RUNS [PODS]]` (default 5 runs of 20 pods; needs the
//! Docker engine, rustc and docker-compose; builds the test app image from
//! fixtures/images/testapp).
//!
//! 1. apply of PODS independent pods from nothing with the release `berth` CLI and its
//!    defaults (`berth apply --yes`), against `docker-compose up -d` of the equivalent
//!    compose file, runs alternated; once with pods without a health check (each must stay
//!    up for berth's settle window) and once with an HTTP health check (its gate ends when
//!    it passes); `up -d` waits for nothing. Then the no-op re-apply of each;
//! 2. a no-op plan with 50 running pods: wall time and engine requests (through the
//!    library, which counts them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// `pods` independent pods of `image`; with `health`, each with an HTTP health check (its
/// gate ends when the check passes), without, each must stay up for the settle window.
fn berth_spec(project: &str, image: &str, pods: usize, health: bool) -> String {
    let mut s = format!("version: 1\nproject: {project}\npods:\n");
    for i in 0..pods {
        s.push_str(&format!(
            "  app{i}:\n    image: {image}\n    env: {{ VERSION: v{i} }}\n"
        ));
        if health {
            s.push_str(
                "    health: { http: { port: 8080, path: /health }, interval: 100ms, retries: 50 }\n",
            );
        }
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

/// The library's options for the benchmark's own state directory, beside its spec.
fn opts(spec: &Path) -> berth::ops::Opts {
    berth::ops::Opts {
        state_dir: spec.parent().map(|d| d.join("state")),
        lock: Some("bench_apply".into()),
        ..Default::default()
    }
}

/// The release `berth` binary beside this example (`target/release/berth`).
fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("berth"))
        .expect("the example runs from target/<profile>/examples");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build --release --bin berth --example bench_apply` first",
        bin.display()
    );
    bin
}

/// `berth ARGS` as a user runs it (the CLI's defaults), with the benchmark's state
/// directory; its wall time.
fn berth(bin: &Path, spec: &Path, args: &[&str]) -> Duration {
    let mut cmd = Command::new(bin);
    cmd.arg("--file")
        .arg(spec)
        .arg("--state-dir")
        .arg(spec.parent().expect("dir").join("state"))
        .args(args);
    timed(&mut cmd)
}

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    sh(cmd);
    t.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn range(v: &[Duration]) -> String {
    let lo = v.iter().min().copied().unwrap_or_default();
    let hi = v.iter().max().copied().unwrap_or_default();
    format!("{:.0}-{:.0}", ms(lo), ms(hi))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = args.first().map_or(5, |a| a.parse().expect("RUNS"));
    let pods: usize = args.get(1).map_or(20, |a| a.parse().expect("PODS"));
    let bin = berth_bin();
    let dir = tempfile_dir();
    let image = build_image(&dir);

    let compose = dir.join("docker-compose.yml");
    std::fs::write(&compose, compose_file(&image, pods)).expect("compose file");
    let dc = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.arg("-f").arg(&compose).args(["-p", "benchc"]).args(args);
        c
    };

    println!(
        "apply of {pods} independent pods from nothing on one engine, the CLI's defaults \
         (`berth apply --yes`, `docker-compose up -d`), {runs} runs each, alternated; \
         medians (ranges) in ms"
    );
    let mut noops = (Vec::new(), Vec::new());
    for (shape, health) in [("without a health check", false), ("health-checked", true)] {
        let spec = dir.join("berth.yaml");
        std::fs::write(&spec, berth_spec("benchb", &image, pods, health)).expect("spec");
        let (mut b, mut c) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            b.push(berth(&bin, &spec, &["apply", "--yes"]));
            if !health {
                noops.0.push(berth(&bin, &spec, &["apply", "--yes"]));
            }
            berth(&bin, &spec, &["destroy", "--yes"]);
            c.push(timed(&mut dc(&["up", "-d"])));
            if !health {
                noops.1.push(timed(&mut dc(&["up", "-d"])));
            }
            sh(&mut dc(&["down"]));
        }
        println!(
            "  {shape:<24} berth {:>6.0} ({})  docker-compose {:>6.0} ({})  berth/compose {:.2}",
            ms(median(b.clone())),
            range(&b),
            ms(median(c.clone())),
            range(&c),
            ms(median(b)) / ms(median(c))
        );
    }
    println!(
        "  no-op apply again        berth {:>6.0} ({})  docker-compose {:>6.0} ({})  berth/compose {:.3}",
        ms(median(noops.0.clone())),
        range(&noops.0),
        ms(median(noops.1.clone())),
        range(&noops.1),
        ms(median(noops.0.clone())) / ms(median(noops.1.clone()))
    );

    // A no-op plan with 50 running pods: its time and engine requests.
    let pods = 50;
    let spec = dir.join("berth.yaml");
    std::fs::write(&spec, berth_spec("benchp", &image, pods, false)).expect("spec");
    berth(&bin, &spec, &["apply", "--yes"]);
    let t = Instant::now();
    let live = berth::ops::plan_live(&spec, &opts(&spec), false).expect("plan");
    let plan_time = t.elapsed();
    assert!(!live.plan.has_changes());
    println!(
        "no-op plan with {pods} running pods: {:.0} ms, {} engine requests (connecting lists the networks, then one list of containers and one of volumes)",
        ms(plan_time),
        live.requests
    );
    berth(&bin, &spec, &["destroy", "--yes"]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-bench-apply-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
