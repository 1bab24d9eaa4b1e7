//! Benchmark: `berth plan -f NEW --against OLD` (load + check + lint + graph + plan of both
//! files, the same operation the CLI runs) on generated specs.
//!
//! Run: `cargo run --release --example bench_plan` for sizes 1000, 10000 and 50000 pods, or
//! give sizes as arguments (`BENCH_RUNS` sets the runs per size, default 5). Every pod has
//! its own secret, pods depend on each other in chains of 100, and the new revision changes
//! the image of 1% of the pods, so the plan holds real replacements. Two shapes: `trivial`
//! pods (image, secret, depends_on: the counterpart of Terraform's trivial resources) and
//! `rich` pods (plus env and an HTTP health check). Every run is a fresh child process, as a
//! CLI run is, so that its time is a cold start and its peak memory (VmHWM) its own; the
//! table shows the median and the range over the runs. Results: docs/PERFORMANCE.md.

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

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One run in this process; prints `ms rss_mib resources changes spec_bytes`.
fn one(pods: usize, rich: bool) {
    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (old_path, new_path) = (dir.join("old.yaml"), dir.join("new.yaml"));
    std::fs::write(&old_path, spec_text(pods, 1, rich)).expect("write spec");
    std::fs::write(&new_path, spec_text(pods, 2, rich)).expect("write spec");
    let bytes = std::fs::metadata(&new_path).map_or(0, |m| m.len());

    let t0 = Instant::now();
    let result = berth::ops::plan_against_files(&new_path, &old_path);
    // The plan is ready here; what it was made from is the caller's to keep or free.
    let elapsed = t0.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let planned = match result {
        Ok(p) => p,
        Err(e) => panic!("plan failed: {e}"),
    };
    let plan = &planned.plan;
    assert_eq!(
        plan.summary.replace,
        pods / 100 + usize::from(pods % 100 > 7)
    );
    println!(
        "{} {} {} {} {}",
        elapsed.as_secs_f64() * 1e3,
        peak_rss_mib(),
        plan.changes.len(),
        plan.summary.changes(),
        bytes
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n, shape] = args.as_slice()
        && flag == "--one"
    {
        one(n.parse().expect("size"), shape == "rich");
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
    println!(
        "berth {} plan --against, {} cores, {runs} runs each (median, [min..max])",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "shape   |   pods | resources | spec each |  plan --against ms             | peak RSS MiB"
    );
    for shape in ["trivial", "rich"] {
        for &n in &sizes {
            let (mut ms, mut rss) = (Vec::new(), Vec::new());
            let (mut resources, mut bytes) = (0, 0);
            for _ in 0..runs {
                let out = Command::new(&exe)
                    .args(["--one", &n.to_string(), shape])
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
            let max_rss = rss.iter().copied().fold(0.0, f64::max);
            println!(
                "{shape:<7} | {n:>6} | {resources:>9} | {:>5.1} MiB | {:>7.1} [{lo:>7.1} ..{hi:>7.1}] | {max_rss:>6.1}",
                bytes as f64 / (1 << 20) as f64,
                median(&mut ms),
            );
        }
    }
}
