//! Benchmark: `berth plan` of a spec with three regions on three engines against the plan
//! of the same pods in one region (issue 13: at most 1.5x, observation being concurrent).
//!
//! Run: `cargo run --release --example bench_regions` (as root, with a Docker engine).
//! Arguments: `[PODS_PER_REGION] [RUNS]`, default 20 and 10.
//!
//! It starts two extra real engines of its own (`dockerd`, unix socket only, own data root,
//! bridge and subnet: the same recipe as the tests' second engine), builds a `FROM scratch`
//! image around a static sleeper and loads it into each, applies N pods on one region (the
//! machine's engine) and on three regions (the machine's engine and the two extra ones;
//! the same pods in each), then times `berth plan` (the release binary beside this example,
//! CLI defaults) alternately for both, RUNS times each, and prints the medians and their
//! ratio. Everything is removed at the end, also after Ctrl-C (checked between steps).
//! With `BENCH_REGIONS_HOLD=1` it waits for Enter after applying, so that the engines and
//! both projects can be profiled (it prints the specs' directories).
//! Results: docs/PERFORMANCE.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// An extra engine of this benchmark.
struct Engine {
    base: PathBuf,
    bridge: String,
    host: String,
    subnet: u8,
}

fn used_subnet(n: u8) -> bool {
    let routes =
        run(Command::new("ip").args(["-4", "route", "show", "table", "all"])).unwrap_or_default();
    routes.lines().any(|l| {
        l.split_whitespace()
            .any(|w| w.starts_with(&format!("10.{n}.")) || w == "10.0.0.0/8")
    })
}

impl Engine {
    fn start(i: usize, subnet: u8) -> Result<Engine, String> {
        let pid = std::process::id();
        let base = PathBuf::from(format!("/var/tmp/berth-bench-{pid}-{i}"));
        let bridge = format!("bb-{pid}-{i}");
        let host = format!("unix://{}/docker.sock", base.display());
        let e = Engine {
            base: base.clone(),
            bridge: bridge.clone(),
            host: host.clone(),
            subnet,
        };
        for d in ["data", "exec"] {
            std::fs::create_dir_all(base.join(d)).map_err(|e| e.to_string())?;
        }
        let driver = run(Command::new("docker").args(["info", "-f", "{{.Driver}}"]))?;
        let config = format!(
            "{{\"storage-driver\":\"{driver}\",\"deprecated-key-path\":\"{}\"}}",
            base.join("key.json").display()
        );
        std::fs::write(base.join("daemon.json"), config).map_err(|e| e.to_string())?;
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]))?;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("10.{subnet}.0.1/24"),
            "dev",
            &bridge,
        ]))?;
        run(Command::new("ip").args(["link", "set", &bridge, "up"]))?;
        let log = std::fs::File::create(base.join("dockerd.log")).map_err(|e| e.to_string())?;
        let ns = format!("berth-bench-{pid}-{i}");
        Command::new("dockerd")
            .arg("--config-file")
            .arg(base.join("daemon.json"))
            .arg("--data-root")
            .arg(base.join("data"))
            .arg("--exec-root")
            .arg(base.join("exec"))
            .arg("--pidfile")
            .arg(base.join("docker.pid"))
            .args([
                "-H",
                &host,
                &format!("--bridge={bridge}"),
                "--iptables=false",
            ])
            .arg("--default-address-pool")
            .arg(format!("base=10.{subnet}.128.0/17,size=24"))
            .args(["--containerd-namespace", &ns])
            .args(["--containerd-plugins-namespace", &format!("{ns}-plugins")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("dockerd does not start: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while run(Command::new("docker").args(["-H", &host, "info", "-f", "{{.ID}}"])).is_err() {
            if Instant::now() > deadline {
                return Err(format!("dockerd at {host} did not answer within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(e)
    }

    fn stop(&self) {
        let pid: Option<i32> = std::fs::read_to_string(self.base.join("docker.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if let Some(pid) = pid {
            // SAFETY: kill(2) with the pid of the dockerd this benchmark started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(40);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let needle = self.base.display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&needle))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // Bridges of networks made through its API.
        let addrs = run(Command::new("ip").args(["-o", "-4", "addr", "show"])).unwrap_or_default();
        for l in addrs.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() > 3
                && w[1].starts_with("br-")
                && w[3].starts_with(&format!("10.{}.", self.subnet))
            {
                let _ = Command::new("ip").args(["link", "del", w[1]]).status();
            }
        }
    }
}

fn sleeper_image(dir: &Path) -> Result<String, String> {
    let src = dir.join("sleeper.rs");
    std::fs::write(
        &src,
        "fn main() { loop { std::thread::sleep(std::time::Duration::from_secs(3600)); } }\n",
    )
    .map_err(|e| e.to_string())?;
    run(Command::new("rustc")
        .args(["-O", "-C", "target-feature=+crt-static", "-o"])
        .arg(dir.join("sleeper"))
        .arg(&src))?;
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n",
    )
    .map_err(|e| e.to_string())?;
    let tag = "berth-bench-sleeper:1".to_owned();
    run(Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir))?;
    Ok(tag)
}

fn load(tag: &str, host: &str) -> Result<(), String> {
    let mut save = Command::new("docker")
        .args(["save", tag])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let out = save.stdout.take().ok_or("no stdout")?;
    run(Command::new("docker").args(["-H", host, "load"]).stdin(out))?;
    save.wait().map_err(|e| e.to_string())?;
    Ok(())
}

fn spec(project: &str, regions: &[(&str, String)], image: &str, pods: usize) -> String {
    let mut s = format!("version: 1\nproject: {project}\nregions:\n");
    for (i, (name, host)) in regions.iter().enumerate() {
        let primary = if i == 0 { ", primary: true" } else { "" };
        s.push_str(&format!("  {name}: {{ engine: \"{host}\"{primary} }}\n"));
    }
    s.push_str("pods:\n");
    for p in 0..pods {
        s.push_str(&format!(
            "  p{p}:\n    image: {image}\n    env: {{ INDEX: \"{p}\" }}\n"
        ));
    }
    s
}

fn berth_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("berth"))
        .ok_or("no berth beside the example")?;
    if !bin.exists() {
        return Err(format!(
            "{} is missing: `cargo build --release --bin berth` first",
            bin.display()
        ));
    }
    Ok(bin)
}

fn berth(bin: &Path, dir: &Path, args: &[&str]) -> Result<String, String> {
    run(Command::new(bin)
        .current_dir(dir)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn remove_project(host: &str, project: &str) {
    let filter = format!("label=io.berth.project={project}");
    for (list, rm) in [
        (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
        (
            vec!["network", "ls", "-q", "--filter", &filter],
            vec!["network", "rm"],
        ),
        (
            vec!["volume", "ls", "-q", "--filter", &filter],
            vec!["volume", "rm", "-f"],
        ),
    ] {
        let ids = run(Command::new("docker").args(["-H", host]).args(&list)).unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["-H", host])
                .args(&rm)
                .args(&ids)
                .output();
        }
    }
}

fn bench(
    engines: &mut Vec<Engine>,
    dirs: &[PathBuf; 2],
    projects: &[String; 2],
) -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pods: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let bin = berth_bin()?;
    let local =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let mut subnets = (200u8..=250).filter(|&n| !used_subnet(n));
    for i in 1..=2 {
        let n = subnets.next().ok_or("no free 10.N.0.0/16")?;
        eprintln!("starting engine {i} (10.{n}.0.0/16)");
        engines.push(Engine::start(i, n)?);
        if STOP.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
    }
    let image = sleeper_image(&dirs[0])?;
    for e in engines.iter() {
        load(&image, &e.host)?;
    }
    let one = [("r0", local.clone())];
    let three = [
        ("r0", local.clone()),
        ("r1", engines[0].host.clone()),
        ("r2", engines[1].host.clone()),
    ];
    std::fs::write(
        dirs[0].join("berth.yaml"),
        spec(&projects[0], &one, &image, pods),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dirs[1].join("berth.yaml"),
        spec(&projects[1], &three, &image, pods),
    )
    .map_err(|e| e.to_string())?;
    for d in dirs {
        eprintln!("applying {}", d.display());
        berth(&bin, d, &["apply", "--yes"])?;
        if STOP.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
    }
    if std::env::var_os("BENCH_REGIONS_HOLD").is_some() {
        eprintln!(
            "holding (BENCH_REGIONS_HOLD): specs in {} and {}; press Enter to go on",
            dirs[0].display(),
            dirs[1].display()
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    // One warm-up each, then alternated runs: 1 region, 3 regions, and the three-region
    // spec limited to its first region (`--region r0`: what the spec's size alone costs).
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let cases: [(&PathBuf, &[&str]); 3] = [
        (&dirs[0], &["plan", "--detailed-exitcode"]),
        (&dirs[1], &["plan", "--detailed-exitcode"]),
        (&dirs[1], &["plan", "--detailed-exitcode", "--region", "r0"]),
    ];
    for round in 0..=runs {
        for (k, (d, args)) in cases.iter().enumerate() {
            let t = Instant::now();
            berth(&bin, d, args)?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if round > 0 {
                times[k].push(ms);
            }
            if STOP.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
        }
    }
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}-{hi:.0}")
    };
    let (r1, r3, r0) = (range(&times[0]), range(&times[1]), range(&times[2]));
    let m1 = median(&mut times[0]);
    let m3 = median(&mut times[1]);
    let m0 = median(&mut times[2]);
    println!("berth plan, {pods} pods per region, {runs} runs each (alternated), medians:");
    println!("  1 region  (1 engine):  {m1:8.1} ms  (range {r1} ms)");
    println!("  3 regions (3 engines): {m3:8.1} ms  (range {r3} ms)");
    println!("  3 regions, --region r0:  {m0:8.1} ms  (range {r0} ms)");
    println!("  ratio 3/1: {:.2} (bound 1.5)", m3 / m1);
    println!("  engine requests: not counted (berth exposes no request counter)");
    Ok(())
}

fn main() {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )
    };
    let pid = std::process::id();
    let dirs = [
        std::env::temp_dir().join(format!("berth-bench-regions-{pid}-1")),
        std::env::temp_dir().join(format!("berth-bench-regions-{pid}-3")),
    ];
    for d in &dirs {
        let _ = std::fs::create_dir_all(d);
    }
    let projects = [format!("bbr{pid}a"), format!("bbr{pid}b")];
    let mut engines = Vec::new();
    let result = bench(&mut engines, &dirs, &projects);
    eprintln!("cleaning up");
    let local =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    for p in &projects {
        remove_project(&local, p);
    }
    for e in &engines {
        e.stop();
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    if let Err(e) = result {
        eprintln!("bench_regions: {e}");
        std::process::exit(1);
    }
}
