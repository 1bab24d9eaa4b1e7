//! Benchmark: a backup with a copy off the host beside the host's store alone; the same
//! as `bench_backup offsite` (see `bench_util/offsite.rs`).
//!
//! ```sh
//! cargo build --release --bin berth --example bench_offsite   # compile first
//! target/release/examples/bench_offsite                       # /usr/lib/x86_64-linux-gnu, to 4 GiB
//! BENCH_GIB=1 target/release/examples/bench_offsite /srv/tree # another tree, another size
//! ```

#[path = "bench_util/mod.rs"]
mod util;

fn main() {
    util::measure_child_if_asked();
    util::offsite::run();
}
