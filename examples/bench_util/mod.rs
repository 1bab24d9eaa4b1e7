//! What the backup benchmarks share (`#[path]`-included by `bench_backup` and
//! `bench_offsite`): the child that measures a command's peak RSS, medians, the machine's
//! memory, and shell helpers; and the off-host benchmark itself (`bench_backup offsite`).

use std::path::Path;
use std::process::Command;

pub mod offsite;

/// When this process is the measuring child (`BENCH_MEASURE` set): runs its arguments as
/// one command, says its peak RSS (getrusage of its only child) and exits with its status.
pub fn measure_child_if_asked() {
    if std::env::var_os("BENCH_MEASURE").is_none() {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = Command::new(&args[0])
        .args(&args[1..])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    // SAFETY: getrusage writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    eprintln!("BENCH_MAXRSS_KB={}", ru.ru_maxrss);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    eprintln!("BENCH_CPU_S={:.3}", secs(ru.ru_utime) + secs(ru.ru_stime));
    std::process::exit(if ok { 0 } else { 1 });
}

/// A value the measuring child said in its stderr (`KEY=VALUE`), or the default.
fn said<T: std::str::FromStr + Default>(stderr: &str, key: &str) -> T {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_default()
}

/// The peak RSS (KiB) the measuring child said, in its stderr.
pub fn maxrss_kb(stderr: &str) -> u64 {
    said(stderr, "BENCH_MAXRSS_KB")
}

/// The CPU seconds (user and system) the measuring child said, in its stderr.
#[allow(dead_code)] // not every benchmark that includes this module prints it
pub fn cpu_s(stderr: &str) -> f64 {
    said(stderr, "BENCH_CPU_S")
}

/// The tree a backup benchmark reads: its first argument (after `offsite`, which names the
/// off-host benchmark), else the machine's `/usr/lib/x86_64-linux-gnu`.
pub fn tree_arg() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::args()
            .skip(1)
            .find(|a| a != OFFSITE)
            .unwrap_or_else(|| "/usr/lib/x86_64-linux-gnu".into()),
    )
}

/// The first argument that runs the off-host benchmark.
pub const OFFSITE: &str = "offsite";

/// The release `berth` beside this benchmark (`target/release/berth`), which must be built.
pub fn release_berth(bench: &str) -> std::path::PathBuf {
    let berth = std::env::current_exe()
        .expect("exe")
        .parent()
        .and_then(Path::parent)
        .expect("target/release")
        .join("berth");
    assert!(
        berth.is_file(),
        "{} is missing: cargo build --release --bin berth --example {bench}",
        berth.display()
    );
    berth
}

/// The machine a benchmark runs on, for its output: CPUs, memory, and the load before.
pub fn machine() -> String {
    format!(
        "machine: {} CPUs, {}; load before: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    )
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or("? GiB".into(), |kb| format!("{:.0} GiB", kb / 1048576.0))
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn sh(cmd: &str) {
    let st = Command::new("bash")
        .args(["-c", &format!("set -o pipefail; {cmd}")])
        .status()
        .expect("sh");
    assert!(st.success(), "`{cmd}` failed");
}
