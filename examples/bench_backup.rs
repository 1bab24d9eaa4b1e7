//! Benchmark: the backup pipeline (read -> zstd -> age -> file, and back with a full
//! verify) on a large generated stream, without an engine: the throughput each way, and
//! the peak memory, which must not grow with the size of the data.
//!
//! Run: `cargo run --release --example bench_backup` (1 GiB and 4 GiB), or give sizes in
//! MiB as arguments. The data is half compressible runs and half noise, so that zstd has
//! work to do and age encrypts every byte. The file goes to a temporary directory and is
//! removed. Each size runs in a fresh child process, so that its peak RSS (VmHWM) is its
//! own. Results: docs/PERFORMANCE.md.

use std::io::Read;
use std::time::Instant;

use berth::archive::pipeline;
use berth::secrets::age::Identity;

/// `mib` MiB of half runs, half noise, generated as it is read.
struct Data {
    left: u64,
    state: u64,
    pos: u64,
}

impl Read for Data {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = (out.len() as u64).min(self.left) as usize;
        for b in &mut out[..n] {
            *b = if self.pos % 8192 < 4096 {
                b'x'
            } else {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.state as u8
            };
            self.pos += 1;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn one(mib: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (text, public) = Identity::generate();
    let key = dir.path().join("key");
    std::fs::write(&key, text.as_bytes()).expect("key");
    let identity = Identity::load(&key).expect("identity");
    let path = dir.path().join("backup.tar.zst.age");
    let bytes = mib * 1024 * 1024;
    let t = Instant::now();
    let file =
        std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(&path).expect("file"));
    let sealed = pipeline::seal(
        Data {
            left: bytes,
            state: 0x9E37_79B9_7F4A_7C15,
            pos: 0,
        },
        &[public],
        file,
    )
    .expect("seal");
    let seal_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let opened = pipeline::open(
        std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(&path).expect("open")),
        &identity,
        std::io::sink(),
    )
    .expect("open");
    let open_s = t.elapsed().as_secs_f64();
    assert_eq!(opened.plain_sha256, sealed.plain_sha256);
    println!(
        "{mib:>6} MiB: seal {:>6.0} MiB/s ({:.1} s), verify {:>6.0} MiB/s ({:.1} s), stored {:.0} MiB ({:.2}x), peak RSS {:.0} MiB",
        mib as f64 / seal_s,
        seal_s,
        mib as f64 / open_s,
        open_s,
        sealed.stored_bytes as f64 / 1048576.0,
        bytes as f64 / sealed.stored_bytes as f64,
        peak_rss_mib()
    );
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if std::env::var("BENCH_CHILD").is_ok() {
        for mib in args {
            one(mib);
        }
        return;
    }
    let sizes = if args.is_empty() {
        vec![1024, 4096]
    } else {
        args
    };
    println!(
        "backup pipeline on {} cores (read, zstd level 3 and age on their own threads):",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for mib in sizes {
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .arg(mib.to_string())
            .env("BENCH_CHILD", "1")
            .status()
            .expect("child");
        assert!(status.success());
    }
}
