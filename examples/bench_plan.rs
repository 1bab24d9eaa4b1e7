//! Benchmark: `berth plan -f NEW --against OLD` (load + check + lint + graph + plan of both
//! files, the same operation the CLI runs) on generated specs.
//!
//! Run: `cargo run --release --example bench_plan` for sizes 1000, 10000 and 50000 pods, or
//! give sizes as arguments. Every pod has its own secret, pods depend on each other in chains
//! of 100, and the new revision changes the image of 1% of the pods, so the plan holds real
//! replacements. Two shapes: `trivial` pods (image, secret, depends_on: the counterpart of
//! Terraform's trivial resources) and `rich` pods (plus env, an HTTP health check). Each run
//! is its own child process so that its peak memory (VmHWM) is its own.
//! Results are recorded in docs/PERFORMANCE.md.

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

fn one(pods: usize, rich: bool) {
    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (old_path, new_path) = (dir.join("old.yaml"), dir.join("new.yaml"));
    std::fs::write(&old_path, spec_text(pods, 1, rich)).expect("write spec");
    std::fs::write(&new_path, spec_text(pods, 2, rich)).expect("write spec");
    let bytes = std::fs::metadata(&new_path).map_or(0, |m| m.len());
    let base_rss = peak_rss_mib();

    let t0 = Instant::now();
    let result = berth::ops::plan_against_files(&new_path, &old_path);
    let elapsed = t0.elapsed();
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let plan = match result {
        Ok(p) => p.plan,
        Err(e) => panic!("plan failed: {e}"),
    };
    assert_eq!(
        plan.summary.replace,
        pods / 100 + usize::from(pods % 100 > 7)
    );
    println!(
        "{:<7} {pods:>6} pods + {pods:>6} secrets | {:>8} resources | spec {:>5.1} MiB each | plan --against {:>7.1} ms | {:>3} changes | peak RSS {:>6.1} MiB (harness {:>4.1} MiB)",
        if rich { "rich" } else { "trivial" },
        plan.changes.len(),
        bytes as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64() * 1e3,
        plan.summary.changes(),
        peak_rss_mib(),
        base_rss,
    );
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
    let exe = std::env::current_exe().expect("own path");
    println!(
        "machine: {} cores; berth {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION")
    );
    for shape in ["trivial", "rich"] {
        for &n in &sizes {
            let status = Command::new(&exe)
                .args(["--one", &n.to_string(), shape])
                .status()
                .expect("run child");
            assert!(status.success(), "size {n} failed");
        }
    }
}
