//! Benchmark: berth's backups of a real tree beside the plain pipe, in the same run.
//!
//! ```sh
//! cargo build --release --bin berth --example bench_backup   # compile first
//! target/release/examples/bench_backup                       # /usr/lib/x86_64-linux-gnu
//! target/release/examples/bench_backup /srv/some/tree        # another tree
//! BENCH_RUNS=5 target/release/examples/bench_backup          # runs of each (default 3)
//! target/release/examples/bench_backup offsite                # a copy to a bucket beside the host's store
//! ```
//!
//! `offsite` runs the off-host benchmark instead (issue 16; `bench_util/offsite.rs`).
//!
//! The tree is copied first (`cp -a`: hard links stay links) into a working directory
//! under `~/.cache` (a backup store may not be under /tmp), so that a restore has a place
//! of its own to empty and fill. The copy warms the page cache for both sides. Then, in
//! turns (plain pipe, berth; run, verify, restore; BENCH_RUNS rounds), it times:
//!
//! - run: `tar -cf - -C TREE . | zstd -3 | age -r KEY > FILE` beside `berth backup run`
//!   (which reads its backup back whole before it reports success);
//! - verify: `age -d | zstd -d | tar -t` beside `berth backup verify ID`;
//! - restore: `age -d | zstd -d | tar -x` into an empty directory beside
//!   `berth backup restore NAME ID` (which also verifies the backup, takes a safety copy of
//!   what is there, empties it and unpacks);
//!
//! and prints the medians, their ratios with the bounds of issue 14, the stored sizes, and
//! berth's peak memory (max RSS) per command. berth is the release binary beside this
//! example, run with the CLI's defaults on a spec with a `path` backup, as a user runs it.
//! Results: docs/PERFORMANCE.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use berth::secrets::age::Identity;

#[path = "bench_util/mod.rs"]
mod util;

use util::{maxrss_kb, median, quote, set_mode, sh};

fn main() {
    util::measure_child_if_asked();
    if std::env::args().nth(1).as_deref() == Some(util::OFFSITE) {
        // Issue 16's figure: a backup with a copy to a bucket beside the host's alone.
        util::offsite::run();
        return;
    }
    let tree = util::tree_arg();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let berth = util::release_berth("bench_backup");
    for tool in ["tar", "zstd", "age", "cp", "bash"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "`{tool}` is needed (apt-get install -y age zstd)"
        );
    }
    let home = PathBuf::from(std::env::var_os("HOME").expect("$HOME"));
    let work = home
        .join(".cache")
        .join(format!("berth-bench-backup-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    let copy = work.join("tree");
    let t = Instant::now();
    sh(&format!(
        "cp -a {} {}",
        quote(&tree.display().to_string()),
        quote(&copy.display().to_string())
    ));
    let (files, bytes, links) = census(&copy);
    println!(
        "tree: {} (copied in {:.1} s): {files} files, {:.0} MiB, {links} hard links beyond the first",
        tree.display(),
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1048576.0
    );
    println!("{}", util::machine());

    let (key_text, public) = Identity::generate();
    let key = work.join("me.key");
    std::fs::write(&key, key_text.as_bytes()).expect("key");
    set_mode(&key, 0o600);
    let store = work.join("store");
    let spec = work.join("berth.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nproject: benchbk\nidentity: {}\nrecipients: [{public}]\nbackups:\n  lib:\n    source: {{ path: {} }}\n    store: {}\n",
            key.display(),
            copy.display(),
            store.display()
        ),
    )
    .expect("spec");
    let state = work.join("state");
    let b = |args: &[&str]| -> Vec<String> {
        let mut v = vec![
            berth.display().to_string(),
            "-f".into(),
            spec.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let peer_file = work.join("peer.tar.zst.age");
    let out = work.join("peer-out");
    let (c, k, p, o) = (
        quote(&copy.display().to_string()),
        quote(&key.display().to_string()),
        quote(&peer_file.display().to_string()),
        quote(&out.display().to_string()),
    );
    let peer_run = format!("tar -cf - -C {c} . | zstd -3 -q | age -r {public} > {p}");
    let peer_verify = format!("age -d -i {k} {p} | zstd -d -q | tar -tf - > /dev/null");
    let peer_restore = format!("age -d -i {k} {p} | zstd -d -q | tar -xf - -C {o}");

    let mut times: [[Vec<f64>; 2]; 3] = Default::default();
    let mut rss = [0u64; 3];
    let mut stored = 0u64;
    // A first backup, untimed: the tree's pages are warm for both sides.
    sh(&peer_run);
    for round in 0..runs {
        // run
        times[0][0].push(timed(|| sh(&peer_run)));
        let (s, r) = measured(&b(&["backup", "run", "lib"]));
        times[0][1].push(s);
        rss[0] = rss[0].max(r);
        let id = newest(&store.join("lib"));
        stored = std::fs::metadata(store.join("lib").join(format!("{id}.tar.zst.age")))
            .map_or(0, |m| m.len());
        // verify
        times[1][0].push(timed(|| sh(&peer_verify)));
        let (s, r) = measured(&b(&["backup", "verify", &id]));
        times[1][1].push(s);
        rss[1] = rss[1].max(r);
        // restore: the plain pipe into an empty directory; berth in place, over the tree
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).expect("out");
        sh("sync");
        times[2][0].push(timed(|| sh(&peer_restore)));
        sh("sync");
        let (s, r) = measured(&b(&["backup", "restore", "lib", &id]));
        times[2][1].push(s);
        rss[2] = rss[2].max(r);
        // The backups of this round go (the store would grow by two each round).
        for f in std::fs::read_dir(store.join("lib"))
            .expect("store")
            .flatten()
        {
            let _ = std::fs::remove_file(f.path());
        }
        println!(
            "round {}: run {:.2} / {:.2} s, verify {:.2} / {:.2} s, restore {:.2} / {:.2} s (plain pipe / berth)",
            round + 1,
            times[0][0][round],
            times[0][1][round],
            times[1][0][round],
            times[1][1][round],
            times[2][0][round],
            times[2][1][round]
        );
    }
    let peer_size = std::fs::metadata(&peer_file).map_or(0, |m| m.len());
    let (_, after, _) = census(&copy);
    assert_eq!(after, bytes, "the restored tree holds as many bytes");

    println!(
        "\nmedians of {runs} alternated runs (berth: release binary, CLI defaults, read-back included):"
    );
    println!(
        "{:<9} {:>12} {:>12} {:>11} {:>7}  peak RSS of berth",
        "", "plain pipe", "berth", "berth/pipe", "bound"
    );
    let mut over = Vec::new();
    for (i, (what, bound)) in [("run", 1.2), ("verify", 1.5), ("restore", 2.5)]
        .into_iter()
        .enumerate()
    {
        let (p, m) = (median(&times[i][0]), median(&times[i][1]));
        let ratio = m / p;
        if ratio > bound {
            over.push(what);
        }
        println!(
            "{what:<9} {:>10.2} s {:>10.2} s {ratio:>11.2} {bound:>7.2}  {:.0} MiB",
            p,
            m,
            rss[i] as f64 / 1024.0
        );
    }
    let ratio = stored as f64 / peer_size as f64;
    if ratio > 1.05 {
        over.push("stored size");
    }
    println!(
        "{:<9} {:>9.1} MB {:>9.1} MB {ratio:>11.3} {:>7.2}",
        "stored",
        peer_size as f64 / 1e6,
        stored as f64 / 1e6,
        1.05
    );
    println!(
        "load after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if over.is_empty() {
        println!("all within issue 14's bounds");
    } else {
        println!("over issue 14's bounds: {}", over.join(", "));
    }
    let _ = std::fs::remove_dir_all(&work);
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Runs a command through a child of this benchmark that reports its peak RSS; the
/// seconds it took and its peak RSS in KiB.
fn measured(cmd: &[String]) -> (f64, u64) {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(cmd)
        .env("BENCH_MEASURE", "1")
        .output()
        .expect("measure");
    let s = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{cmd:?} failed:\n{err}");
    for l in said
        .lines()
        .chain(err.lines())
        .filter(|l| l.contains(" s, "))
    {
        println!("  berth: {l}");
    }
    (s, maxrss_kb(&err))
}

/// The newest backup id in a store's folder.
fn newest(dir: &Path) -> String {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .expect("store folder")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".manifest.json")
                .map(str::to_owned)
        })
        .collect();
    ids.sort();
    ids.pop().expect("a backup")
}

/// Regular files, their bytes (each inode once) and the links beyond each file's first.
fn census(root: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let (mut files, mut bytes, mut links) = (0, 0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                files += 1;
                if seen.insert((m.dev(), m.ino())) {
                    bytes += m.len();
                } else {
                    links += 1;
                }
            }
        }
    }
    (files, bytes, links)
}
