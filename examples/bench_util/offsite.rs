//! The off-host part of the backup benchmarks (issue 16): a backup with a copy off the
//! host (an S3-compatible bucket on 127.0.0.1) beside the same backup to the host's store
//! alone, in the same run.
//!
//! ```sh
//! cargo build --release --bin berth --example bench_backup   # compile first
//! target/release/examples/bench_backup offsite                # /usr/lib/x86_64-linux-gnu, to 4 GiB
//! BENCH_GIB=1 target/release/examples/bench_backup offsite /srv/tree # another tree, another size
//! BENCH_RUNS=5 target/release/examples/bench_backup offsite   # rounds (default 3)
//! ```
//!
//! (`bench_offsite` runs the same: `target/release/examples/bench_offsite [TREE]`.)
//!
//! The tree is copied (`cp -a`) into a working directory under `~/.cache` as many times as
//! it takes to hold BENCH_GIB GiB of real files (default 4). The buckets are real
//! S3-compatible servers on free ports of 127.0.0.1, each of those installed:
//!
//! - s3s-fs (Rust, from crates.io, objects in files: `cargo install s3s-fs --version 0.14.1
//!   --features binary --locked --root ~/.cache/berth-ci/s3s-fs`, or `$BERTH_S3S_FS`);
//! - with `BENCH_MOTO=1`, moto's too (Python, from PyPI: the one `.ci/run` installs in
//!   `~/.cache/berth-ci/moto`, or `$BERTH_MOTO_SERVER`). Not by default: it is far slower
//!   than the servers berth is for, and it shares the two CPUs.
//!
//! In turns it times `berth backup run` of a `path` backup to the host's store alone, and
//! the same with `copies: [offsite]` to each server's bucket (written in the same pass, each
//! 8 MiB segment read back from the bucket as soon as its PUT is done), and prints the
//! medians, their ratios beside issue 16's bound (1.5), berth's peak memory (max RSS) beside
//! its bound (100 MiB), and the CPU seconds of each run: berth's, and the server's (read
//! from /proc: the server shares the machine's CPUs with berth). Results:
//! docs/PERFORMANCE.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth::secrets::age::Identity;

use super as util;
use util::{cpu_s, maxrss_kb, median, quote, set_mode, sh};

/// The benchmark (its process is already past [`util::measure_child_if_asked`]).
pub fn run() {
    let tree = util::tree_arg();
    let env_num = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(d)
    };
    let runs = env_num("BENCH_RUNS", 3.0).max(1.0) as usize;
    let want = (env_num("BENCH_GIB", 4.0) * 1024.0 * 1024.0 * 1024.0) as u64;
    let berth = util::release_berth("bench_backup");
    let home = PathBuf::from(std::env::var_os("HOME").expect("$HOME"));
    let installed = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(default))
    };
    let moto = installed("BERTH_MOTO_SERVER", ".cache/berth-ci/moto/bin/moto_server");
    let s3s = installed("BERTH_S3S_FS", ".cache/berth-ci/s3s-fs/bin/s3s-fs");
    assert!(
        s3s.is_file() || (moto.is_file() && std::env::var_os("BENCH_MOTO").is_some()),
        "no S3 server at {}: `cargo install s3s-fs --version 0.14.1 --features binary \
         --locked --root ~/.cache/berth-ci/s3s-fs` installs s3s-fs (or set BERTH_S3S_FS; \
         BENCH_MOTO=1 measures moto's server instead, see above)",
        s3s.display()
    );
    assert!(
        tree.is_dir(),
        "usage: bench_offsite [TREE] (a directory of real files; default /usr/lib/x86_64-linux-gnu)"
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
        let copied = du(&to);
        assert!(copied > 0, "{} holds no files", tree.display());
        bytes += copied;
        copies += 1;
    }
    println!(
        "tree: {copies} copies of {} ({:.2} GiB of files, made in {:.0} s)",
        tree.display(),
        bytes as f64 / 1073741824.0,
        t.elapsed().as_secs_f64()
    );
    println!("{}", util::machine());

    // The buckets keep every round's copy (moto in memory, s3s-fs in files: a few GiB).
    let mut servers = Vec::new();
    if moto.is_file() && std::env::var_os("BENCH_MOTO").is_some() {
        servers.push(Server::start(Kind::Moto, &moto, &work));
    }
    if s3s.is_file() {
        servers.push(Server::start(Kind::S3sFs, &s3s, &work));
    }
    for s in &servers {
        println!("bucket: {} on 127.0.0.1:{}", s.kind.name(), s.port);
    }
    let (key_text, public) = Identity::generate();
    let key = work.join("me.key");
    std::fs::write(&key, key_text.as_bytes()).expect("key");
    set_mode(&key, 0o600);
    let store = work.join("store");
    let spec = |name: &str, copy: Option<&Server>| {
        let path = work.join(format!("{name}.yaml"));
        let port = copy.map_or(0, |s| s.port);
        std::fs::write(
            &path,
            format!(
                "version: 1\nproject: benchoff\nidentity: {}\nrecipients: [{public}]\n\
                 stores:\n  offsite: {{ url: s3://bench/berth, endpoint: 'http://127.0.0.1:{port}', region: us-east-1 }}\n\
                 backups:\n  lib:\n    source: {{ path: {} }}\n    store: {}\n    copies: {}\n",
                key.display(),
                work.join("tree").display(),
                store.display(),
                if copy.is_some() { "[offsite]" } else { "[]" },
            ),
        )
        .expect("spec");
        path
    };
    let mut specs = vec![("host's store alone".to_owned(), spec("host", None))];
    for (i, s) in servers.iter().enumerate() {
        specs.push((
            format!("+ copy to {}", s.kind.name()),
            spec(&format!("copy{i}"), Some(s)),
        ));
    }
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

    let mut times: Vec<Vec<f64>> = vec![Vec::new(); specs.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); specs.len()];
    let mut server_cpu: Vec<Vec<f64>> = vec![Vec::new(); specs.len()];
    let mut rss = vec![0u64; specs.len()];
    let mut stored = 0u64;
    // A first backup, untimed: the tree's pages are as warm for all.
    measured(&b(&specs[0].1));
    clear(&store);
    for round in 0..runs {
        for (i, (_, spec)) in specs.iter().enumerate() {
            // The server the run copies to (none for the first spec), its CPU before.
            let server = i.checked_sub(1).map(|k| servers[k].child.id());
            let before = server.map_or(0.0, cpu_of);
            let run = measured(&b(spec));
            server_cpu[i].push(server.map_or(0.0, cpu_of) - before);
            times[i].push(run.secs);
            cpu[i].push(run.cpu);
            rss[i] = rss[i].max(run.rss_kb);
            stored = dir_bytes(&store.join("lib"));
            clear(&store);
        }
        let said: Vec<String> = specs
            .iter()
            .zip(&times)
            .map(|((what, _), t)| format!("{what} {:.1} s", t[round]))
            .collect();
        println!("round {}: {}", round + 1, said.join(", "));
    }
    let gib = bytes as f64 / 1073741824.0;
    let h = median(&times[0]);
    println!(
        "\nmedians of {runs} alternated runs (release binary, CLI defaults, read-backs included; \
         stored: {:.2} GiB per copy):",
        stored as f64 / 1073741824.0
    );
    println!(
        "{:<28} {:>9} {:>11} {:>10} {:>10} {:>12} {:>12}",
        "backup run of the tree",
        "seconds",
        "GiB/s read",
        "/ alone",
        "peak RSS",
        "berth CPU s",
        "server CPU s"
    );
    let mut over = Vec::new();
    for (i, (what, _)) in specs.iter().enumerate() {
        let m = median(&times[i]);
        println!(
            "{:<28} {:>9.1} {:>11.2} {:>10.2} {:>6.0} MiB {:>12.1} {:>12.1}",
            what,
            m,
            gib / m,
            m / h,
            rss[i] as f64 / 1024.0,
            median(&cpu[i]),
            median(&server_cpu[i])
        );
        if i > 0 && m / h > 1.5 {
            over.push(format!("time ({what})"));
        }
        if i > 0 && rss[i] > 100 * 1024 {
            over.push(format!("memory ({what})"));
        }
    }
    println!("issue 16's bounds for a copy: at most 1.5x the time alone, peak RSS under 100 MiB");
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
    for s in &mut servers {
        s.stop();
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[derive(Clone, Copy)]
enum Kind {
    Moto,
    S3sFs,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Moto => "moto",
            Kind::S3sFs => "s3s-fs",
        }
    }
}

/// An S3-compatible server on a free port of 127.0.0.1, with a bucket `bench`.
struct Server {
    kind: Kind,
    child: std::process::Child,
    port: u16,
}

impl Server {
    fn start(kind: Kind, bin: &Path, work: &Path) -> Server {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut cmd = Command::new(bin);
        match kind {
            Kind::Moto => cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            Kind::S3sFs => {
                let root = work.join("s3s-fs");
                std::fs::create_dir_all(&root).expect("s3s-fs root");
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", "bench", "--secret-key", "bench"])
                    .arg(root)
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the S3 server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not answer", kind.name());
            std::thread::sleep(Duration::from_millis(100));
        }
        // The bucket, made through the server (s3s-fs wants a signed request).
        sh(&format!(
            "curl -sS --fail --aws-sigv4 aws:amz:us-east-1:s3 --user bench:bench \
             -H x-amz-content-sha256:UNSIGNED-PAYLOAD -X PUT http://127.0.0.1:{port}/bench"
        ));
        Server { kind, child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
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

/// What one run took: seconds, berth's peak RSS (KiB), berth's CPU seconds.
struct Run {
    secs: f64,
    rss_kb: u64,
    cpu: f64,
}

/// Runs a command through a child of this benchmark that reports its peak RSS and CPU.
fn measured(cmd: &[String]) -> Run {
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
    Run {
        secs: s,
        rss_kb: maxrss_kb(&err),
        cpu: cpu_s(&err),
    }
}

/// CPU seconds (user and system) process `pid` has used so far.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields 14 and 15 (utime, stime), counted after the `)` that ends the name.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf only reads a constant of the system.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}
