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
//!    Each shape also prints the CPU seconds per run of the tool and of the engine's
//!    processes (dockerd, containerd, the shims, docker-init) while it ran;
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

/// CPU seconds used so far by this program's finished children (the tool under test).
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// CPU seconds of the engine's processes (dockerd, containerd, the shims and what they
/// reaped, docker-init), by pid: the difference of two readings is the engine's work.
fn engine_cpu() -> std::collections::HashMap<u32, f64> {
    const ENGINE: [&str; 6] = [
        "dockerd",
        "containerd",
        "containerd-shim",
        "containerd-shim-runc-v2",
        "docker-init",
        "fuse-overlayfs",
    ];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut out = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !ENGINE.contains(&&stat[open + 1..close]) {
            continue;
        }
        // Fields 14-17 (utime, stime, cutime, cstime), counted after the `)`.
        let ticks: f64 = stat[close + 2..]
            .split(' ')
            .skip(11)
            .take(4)
            .filter_map(|f| f.parse::<f64>().ok())
            .sum();
        out.insert(pid, ticks / hz);
    }
    out
}

/// Runs `f`; its wall time, and the CPU seconds of the tool (this program's children) and
/// of the engine's processes meanwhile.
fn measured(f: impl FnOnce() -> Duration) -> (Duration, f64, f64) {
    let (tool, engine) = (children_cpu(), engine_cpu());
    let wall = f();
    let after = engine_cpu();
    let used: f64 = after
        .iter()
        .map(|(pid, t)| t - engine.get(pid).copied().unwrap_or(0.0))
        .sum();
    (wall, children_cpu() - tool, used)
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
        // CPU seconds over the runs: (berth, its engine work), (compose, its engine work).
        let mut cpu = [(0.0, 0.0); 2];
        for _ in 0..runs {
            let (wall, tool, engine) = measured(|| berth(&bin, &spec, &["apply", "--yes"]));
            b.push(wall);
            cpu[0] = (cpu[0].0 + tool, cpu[0].1 + engine);
            if !health {
                noops.0.push(berth(&bin, &spec, &["apply", "--yes"]));
            }
            berth(&bin, &spec, &["destroy", "--yes"]);
            let (wall, tool, engine) = measured(|| timed(&mut dc(&["up", "-d"])));
            c.push(wall);
            cpu[1] = (cpu[1].0 + tool, cpu[1].1 + engine);
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
        let n = runs as f64;
        println!(
            "  {:<24} CPU s per run: berth {:.2} (engine {:.2})  docker-compose {:.2} (engine {:.2})",
            "",
            cpu[0].0 / n,
            cpu[0].1 / n,
            cpu[1].0 / n,
            cpu[1].1 / n
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
