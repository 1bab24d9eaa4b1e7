//! Benchmark: `berth plan -f NEW --against OLD` (load + check + lint + graph + plan of both
//! files and the rendering of the plan), run as a user runs it: the release `berth` binary,
//! a fresh process each time, its output the default human one.
//!
//! Run: `cargo run --release --example bench_plan` for sizes 1000, 10000 and 50000 pods, or
//! give sizes as arguments (`BENCH_RUNS` sets the runs per size, default 5). Under cargo the
//! benchmark first builds `target/release/berth` (`BERTH_BIN` names another binary). Every
//! pod has its own secret, pods depend on each other in chains of 100, and the new revision
//! changes the image of 1% of the pods, so the plan holds real replacements. Two shapes:
//! `trivial` pods (image, secret, depends_on: the counterpart of Terraform's trivial
//! resources) and `rich` pods (plus env and an HTTP health check). Each run is one child of
//! this program that writes the two revisions and runs `berth`; the time is from spawning
//! `berth` to its exit, the peak memory is `berth`'s (the child's `getrusage` of its
//! children, `ru_maxrss`). The table shows the median time and the range over the runs,
//! time per pod, and the largest peak RSS in MiB and per pod in KiB. Results:
//! docs/PERFORMANCE.md.

use std::process::Command;
use std::time::Instant;

const CHAIN: usize = 100;

fn spec_text(pods: usize, version: u32, rich: bool) -> String {
    let mut s = String::with_capacity(pods * 400);
    s.push_str("version: 1\nproject: bench\nenvironment: production\n");
    s.push_str("recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]\n");
    s.push_str("secrets:\n");
    for i in 0..pods {
        s.push_str(&format!(
            "  key-{i}: {{ file: secrets/key-{i}.age, min_length: 16 }}\n"
        ));
    }
    s.push_str("pods:\n");
    for i in 0..pods {
        // 1% of the pods get a new image in the new revision.
        let tag = if i % 100 == 7 { version } else { 1 };
        s.push_str(&format!(
            "  app-{i}:\n    image: registry.example/app-{i}:{tag}\n"
        ));
        s.push_str(&format!("    secrets: [key-{i}]\n"));
        if rich {
            s.push_str(&format!("    env: {{ INDEX: \"{i}\", MODE: worker }}\n"));
            s.push_str(
                "    health: { http: { port: 8080, path: /health }, interval: 2s, retries: 5 }\n",
            );
        }
        if i % CHAIN != 0 {
            s.push_str(&format!("    depends_on: [app-{}]\n", i - 1));
        }
    }
    s
}

/// The peak resident memory of this process's waited-for children, in KiB (the one child
/// `berth` of a `--one` run).
fn children_peak_rss_kib() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    if rc == 0 { usage.ru_maxrss as u64 } else { 0 }
}

/// The release `berth` binary beside this example (`target/release/berth`), built first when
/// the benchmark runs under cargo, so that what is measured is the code of the tree.
fn berth_binary() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("BERTH_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("own path");
    let release = exe
        .parent()
        .and_then(|examples| examples.parent())
        .expect("target/release/examples/bench_plan");
    if let Ok(cargo) = std::env::var("CARGO") {
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--bin", "berth"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --release --bin berth failed");
    }
    release.join("berth")
}

/// One run: writes both revisions, runs `berth plan -f NEW --against OLD` as a user does
/// (a fresh process, the default human output) and prints
/// `ms peak_rss_kib resources changes spec_bytes`.
fn one(berth: &str, pods: usize, rich: bool) {
    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (old_path, new_path) = (dir.join("old.yaml"), dir.join("new.yaml"));
    std::fs::write(&old_path, spec_text(pods, 1, rich)).expect("write spec");
    std::fs::write(&new_path, spec_text(pods, 2, rich)).expect("write spec");
    let bytes = std::fs::metadata(&new_path).map_or(0, |m| m.len());

    let t0 = Instant::now();
    let out = Command::new(berth)
        .arg("plan")
        .arg("-f")
        .arg(&new_path)
        .arg("--against")
        .arg(&old_path)
        .env("NO_COLOR", "1")
        .output()
        .expect("run berth");
    let elapsed = t0.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "berth plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `Plan: 0 to create, 500 to replace, 0 to delete; 99501 unchanged.`
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.starts_with("Plan: "))
        .expect("a summary line");
    let numbers: Vec<usize> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let replace = pods / 100 + usize::from(pods % 100 > 7);
    assert_eq!(
        summary,
        format!(
            "Plan: 0 to create, {replace} to replace, 0 to delete; {} unchanged.",
            2 * pods + 1 - replace
        )
    );
    println!(
        "{} {} {} {} {}",
        elapsed.as_secs_f64() * 1e3,
        children_peak_rss_kib(),
        numbers.iter().sum::<usize>(),
        replace,
        bytes
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, berth, n, shape] = args.as_slice()
        && flag == "--one"
    {
        one(berth, n.parse().expect("size"), shape == "rich");
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![1_000, 10_000, 50_000]
    } else {
        args.iter()
            .map(|a| a.parse().expect("sizes are numbers"))
            .collect()
    };
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let exe = std::env::current_exe().expect("own path");
    let berth = berth_binary();
    let berth = berth.to_string_lossy();
    println!(
        "`{berth} plan -f NEW --against OLD`, {} cores, {runs} runs each (median, [min..max]; peak RSS: the largest)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "shape   |   pods | resources | spec each |  plan ms                       | µs/pod | peak RSS MiB | KiB/pod"
    );
    for shape in ["trivial", "rich"] {
        for &n in &sizes {
            let (mut ms, mut rss) = (Vec::new(), Vec::new());
            let (mut resources, mut bytes) = (0, 0);
            for _ in 0..runs {
                let out = Command::new(&exe)
                    .args(["--one", &berth, &n.to_string(), shape])
                    .output()
                    .expect("run child");
                assert!(
                    out.status.success(),
                    "size {n} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let line = String::from_utf8_lossy(&out.stdout);
                let f: Vec<&str> = line.split_whitespace().collect();
                ms.push(f[0].parse::<f64>().expect("ms"));
                rss.push(f[1].parse::<f64>().expect("rss"));
                resources = f[2].parse().expect("resources");
                bytes = f[4].parse::<u64>().expect("bytes");
            }
            let (lo, hi) = (
                ms.iter().copied().fold(f64::MAX, f64::min),
                ms.iter().copied().fold(0.0, f64::max),
            );
            let max_rss_kib = rss.iter().copied().fold(0.0, f64::max);
            let med = median(&mut ms);
            println!(
                "{shape:<7} | {n:>6} | {resources:>9} | {:>5.1} MiB | {med:>7.1} [{lo:>7.1} ..{hi:>7.1}] | {:>6.1} | {:>12.1} | {:>7.2}",
                bytes as f64 / (1 << 20) as f64,
                med * 1e3 / n as f64,
                max_rss_kib / 1024.0,
                max_rss_kib / n as f64,
            );
        }
    }
}
