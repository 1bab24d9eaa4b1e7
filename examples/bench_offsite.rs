//! Benchmark: a backup with a copy off the host (an S3-compatible bucket on 127.0.0.1)
//! beside the same backup to the host's store alone, in the same run.
//!
//! ```sh
//! cargo build --release --bin berth --example bench_offsite   # compile first
//! target/release/examples/bench_offsite                       # /usr/lib/x86_64-linux-gnu, to 4 GiB
//! BENCH_GIB=1 target/release/examples/bench_offsite /srv/tree # another tree, another size
//! BENCH_RUNS=5 target/release/examples/bench_offsite          # rounds (default 3)
//! ```
//!
//! The tree is copied (`cp -a`) into a working directory under `~/.cache` as many times as
//! it takes to hold BENCH_GIB GiB of real files (default 4). The bucket is moto's S3
//! server (the one `.ci/run` installs in `~/.cache/berth-ci/moto`, or `$BERTH_MOTO_SERVER`),
//! started on a free port of 127.0.0.1 and given a bucket with curl. In turns it times
//! `berth backup run` of a `path` backup to the host's store alone, and the same with
//! `copies: [offsite]` (written in the same pass, then read back whole from the bucket), and
//! prints the medians, their ratio beside issue 16's bound (1.5), and berth's peak memory
//! (max RSS) beside its bound (100 MiB). Results: docs/PERFORMANCE.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth::secrets::age::Identity;

#[path = "bench_util/mod.rs"]
mod util;

use util::{maxrss_kb, median, mem_total, quote, set_mode, sh};

fn main() {
    util::measure_child_if_asked();
    let tree = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/usr/lib/x86_64-linux-gnu".into()),
    );
    let env_num = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(d)
    };
    let runs = env_num("BENCH_RUNS", 3.0).max(1.0) as usize;
    let want = (env_num("BENCH_GIB", 4.0) * 1024.0 * 1024.0 * 1024.0) as u64;
    let berth = std::env::current_exe()
        .expect("exe")
        .parent()
        .and_then(Path::parent)
        .expect("target/release")
        .join("berth");
    assert!(
        berth.is_file(),
        "{} is missing: cargo build --release --bin berth --example bench_offsite",
        berth.display()
    );
    let home = PathBuf::from(std::env::var_os("HOME").expect("$HOME"));
    let moto = std::env::var_os("BERTH_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/berth-ci/moto/bin/moto_server"));
    assert!(
        moto.is_file(),
        "{} is missing: `.ci/run` installs moto (or set BERTH_MOTO_SERVER)",
        moto.display()
    );
    let work = home
        .join(".cache")
        .join(format!("berth-bench-offsite-{}", std::process::id()));
    std::fs::create_dir_all(work.join("tree")).expect("work dir");
    let t = Instant::now();
    let mut bytes = 0u64;
    let mut copies = 0;
    while bytes < want {
        let to = work.join("tree").join(format!("copy{copies}"));
        sh(&format!(
            "cp -a {} {}",
            quote(&tree.display().to_string()),
            quote(&to.display().to_string())
        ));
        bytes += du(&to);
        copies += 1;
    }
    println!(
        "tree: {copies} copies of {} ({:.2} GiB of files, made in {:.0} s)",
        tree.display(),
        bytes as f64 / 1073741824.0,
        t.elapsed().as_secs_f64()
    );
    println!(
        "machine: {} CPUs, {}; load before: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    // The bucket keeps every round's copy (moto holds them in memory: a few GiB).
    let mut server = Moto::start(&moto);
    println!("bucket: moto's S3 server on 127.0.0.1:{}", server.port);
    let (key_text, public) = Identity::generate();
    let key = work.join("me.key");
    std::fs::write(&key, key_text.as_bytes()).expect("key");
    set_mode(&key, 0o600);
    let store = work.join("store");
    let spec = |name: &str, copies: &str| {
        let path = work.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "version: 1\nproject: benchoff\nidentity: {}\nrecipients: [{public}]\n\
                 stores:\n  offsite: {{ url: s3://bench/berth, endpoint: 'http://127.0.0.1:{}', region: us-east-1 }}\n\
                 backups:\n  lib:\n    source: {{ path: {} }}\n    store: {}\n    copies: {copies}\n",
                key.display(),
                server.port,
                work.join("tree").display(),
                store.display()
            ),
        )
        .expect("spec");
        path
    };
    let host_only = spec("host", "[]");
    let with_copy = spec("copy", "[offsite]");
    let state = work.join("state");
    let b = |spec: &Path| -> Vec<String> {
        [
            berth.display().to_string(),
            "-f".into(),
            spec.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
            "backup".into(),
            "run".into(),
            "lib".into(),
        ]
        .to_vec()
    };

    let mut times: [Vec<f64>; 2] = Default::default();
    let mut rss = [0u64; 2];
    let mut stored = 0u64;
    // A first backup, untimed: the tree's pages are as warm for both.
    measured(&b(&host_only));
    clear(&store);
    for round in 0..runs {
        for (i, spec) in [&host_only, &with_copy].into_iter().enumerate() {
            let (s, r) = measured(&b(spec));
            times[i].push(s);
            rss[i] = rss[i].max(r);
            stored = dir_bytes(&store.join("lib"));
            clear(&store);
        }
        println!(
            "round {}: host's store alone {:.1} s, with the copy to the bucket {:.1} s",
            round + 1,
            times[0][round],
            times[1][round]
        );
    }
    let (h, c) = (median(&times[0]), median(&times[1]));
    let gib = bytes as f64 / 1073741824.0;
    println!(
        "\nmedians of {runs} alternated runs (release binary, CLI defaults, read-backs included):"
    );
    println!(
        "{:<28} {:>9} {:>11} {:>13}",
        "backup run of the tree", "seconds", "GiB/s read", "peak RSS"
    );
    println!(
        "{:<28} {:>9.1} {:>11.2} {:>9.0} MiB",
        "host's store alone",
        h,
        gib / h,
        rss[0] as f64 / 1024.0
    );
    println!(
        "{:<28} {:>9.1} {:>11.2} {:>9.0} MiB",
        "host's store + S3 copy",
        c,
        gib / c,
        rss[1] as f64 / 1024.0
    );
    println!(
        "stored: {:.2} GiB per copy; with the copy / alone: {:.2} (bound 1.5); peak RSS with the copy {:.0} MiB (bound 100)",
        stored as f64 / 1073741824.0,
        c / h,
        rss[1] as f64 / 1024.0
    );
    let mut over = Vec::new();
    if c / h > 1.5 {
        over.push("time");
    }
    if rss[1] > 100 * 1024 {
        over.push("memory");
    }
    println!(
        "load after: {}; {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
        if over.is_empty() {
            "within issue 16's bounds".to_owned()
        } else {
            format!("over issue 16's bounds: {}", over.join(", "))
        }
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&work);
}

/// moto's S3 server on a free port of 127.0.0.1, with a bucket `bench`.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    fn start(bin: &Path) -> Moto {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        sh(&format!(
            "curl -sS --fail -X PUT http://127.0.0.1:{port}/bench"
        ));
        Moto { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn du(p: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sb"])
        .arg(p)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.zst.age"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn clear(store: &Path) {
    if let Ok(d) = std::fs::read_dir(store.join("lib")) {
        for f in d.flatten() {
            let _ = std::fs::remove_file(f.path());
        }
    }
}

/// Runs a command through a child of this benchmark that reports its peak RSS; the
/// seconds it took and its peak RSS in KiB.
fn measured(cmd: &[String]) -> (f64, u64) {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(cmd)
        .env("BENCH_MEASURE", "1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .output()
        .expect("measure");
    let s = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{err}");
    (s, maxrss_kb(&err))
}
