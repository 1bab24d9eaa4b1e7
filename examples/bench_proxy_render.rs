//! Benchmark: rendering the proxy's nginx config for a spec with 1,000 routes (200 hosts,
//! distinct paths, over 50 pods of 1 to 3 replicas; every tenth route rate-limited, every
//! seventh with CORS, strict security headers, TLS on 443 with a redirect from 80).
//!
//! Run: `cargo run --release --example bench_proxy_render` (or give the number of routes).
//! Prints the median of 20 runs of `berth::proxy::render` (the spec is parsed once, as
//! `plan` does) and exits non-zero above the bound of 20 ms (issue 12).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_millis(20);
const RUNS: usize = 20;

fn spec_text(routes: usize) -> String {
    let mut y = String::from(
        "version: 1\nproject: bench\n\
         recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]\n\
         secrets:\n  cert: { file: cert.age }\n  key: { file: key.age }\nrate_limits:\n",
    );
    for i in 0..5 {
        let per = if i % 2 == 0 { "s" } else { "min" };
        let _ = writeln!(y, "  rl{i}: {{ rate: {}/{per}, burst: {i} }}", 10 * (i + 1));
    }
    y.push_str("  keyed: { rate: 5/s, burst: 5, key: { header: X-Api-Key } }\npods:\n");
    for p in 0..50 {
        let _ = writeln!(
            y,
            "  p{p}: {{ image: bench/p{p}:1, replicas: {} }}",
            1 + p % 3
        );
    }
    y.push_str(
        "proxy:\n  image: nginx:1.27-alpine\n  listen: [80, 443]\n  security_headers: strict\n\
         \x20 tls: [{ port: 443, cert: cert, key: key }]\n  redirect_http: true\n  routes:\n",
    );
    for i in 0..routes {
        let _ = write!(
            y,
            "    - {{ host: h{}.bench.example, path: /r{i}/, to: p{}:8000",
            i % 200,
            i % 50
        );
        if i % 10 == 0 {
            let limit = if i % 20 == 0 {
                "keyed".to_owned()
            } else {
                format!("rl{}", (i / 10) % 5)
            };
            let _ = write!(y, ", rate_limit: {limit}");
        }
        if i % 7 == 0 {
            let _ = write!(
                y,
                ", cors: {{ origins: [https://app{}.bench.example], credentials: true, max_age: 10m }}",
                i % 3
            );
        }
        y.push_str(" }\n");
    }
    y
}

fn main() {
    let routes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let loaded = berth::spec::load_str(Path::new("bench.yaml"), spec_text(routes));
    let Some(spec) = loaded.valid_spec() else {
        eprintln!("the generated spec is invalid: {:?}", loaded.report);
        std::process::exit(2);
    };
    let Some(proxy) = spec.proxy.as_ref() else {
        std::process::exit(2);
    };
    let servers = berth::proxy::stable_servers(spec, spec.primary_region());
    let mut times = Vec::with_capacity(RUNS);
    let mut size = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let text = berth::proxy::render(spec, proxy, &servers);
        times.push(start.elapsed());
        size = text.len();
        std::hint::black_box(text);
    }
    times.sort();
    let median = times[RUNS / 2];
    println!(
        "render of {routes} routes: {:.2} ms (bound {} ms); {} KiB of config, min {:.2} ms, max {:.2} ms",
        median.as_secs_f64() * 1e3,
        BOUND.as_millis(),
        size / 1024,
        times[0].as_secs_f64() * 1e3,
        times[RUNS - 1].as_secs_f64() * 1e3,
    );
    if median > BOUND {
        eprintln!("over the bound");
        std::process::exit(1);
    }
}
