//! Benchmark: replacing a pod under a steady load, side by side. Real parts only: the real
//! engine, a real nginx, real HTTP.
//!
//! Run: `cargo run --release --example bench_proxy` (needs the Docker engine, rustc, the
//! Debian `nginx` package for the test nginx image, and docker compose or docker-compose).
//! Options: `--replacements N` (default 5), `--only proxy,proxy2,port,compose` (default
//! all four); `BENCH_VERBOSE=1` prints every command's output with its times. The berth
//! binary is built by cargo beside this example (same profile), or named by `BERTH_BIN`.
//!
//! The scenarios, on the same machine, with the same load generator, in the same run:
//!
//! 1. `proxy`: **berth, routed through the managed proxy**: pod `api` (the test app)
//!    replaced blue-green behind nginx (`proxy:`, a route `/` -> `api:8080`);
//!    `proxy2`: the same with `replicas: 2`;
//! 2. `port`: **berth, published port** (the anchor): the same pod publishing
//!    `127.0.0.1:PORT:8080` itself, which forces `update: { strategy: recreate }`;
//! 3. `compose`: **docker compose** (the peer): the same image and published port, `up -d`
//!    with a changed environment.
//!
//! Each applies version `v0`, then, under a load of 200 requests/s that lasts the whole
//! run, replaces the pod N times (`VERSION=v1..vN`, 2 s of load between two). The load is
//! open-loop: requests leave on a fixed schedule, taken by 8 workers, each with its own
//! keep-alive connection (a new one after an error or a close); when all are busy
//! (requests hang in an outage) another worker starts, so that a stalled server cannot
//! slow the load down and hide its failures. Every request's outcome and time is recorded.
//! A failure is a connection error, a timeout (1 s), or a status other than 2xx and 429.
//! Before reusing an idle connection a worker checks that the server has not closed it (as
//! connection pools do); a request whose reused connection closes before any byte of an
//! answer is sent again once on a new connection (as HTTP clients do for an idempotent
//! GET, RFC 9112 9.3.1): those are counted and listed (`resent`), and the second
//! attempt's outcome is the request's. For each replacement: the time from the command's
//! start to the first answer from the new version.
//!
//! Exits non-zero when a routed scenario had a failed request or a failed apply (issue
//! 12's bound: zero); a failed apply prints its output and the proxy's log. Everything the
//! run creates is removed at the end, on a panic and on Ctrl-C (the running apply is
//! interrupted first; then `berth destroy`, then `docker rm -f` by the project's label).
//! Results: docs/PERFORMANCE.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests per second, over all workers.
const RATE: u64 = 200;
/// Workers started with the load, each with its own keep-alive connection.
const WORKERS: usize = 8;
/// Workers at most: more start only while none is idle at a request's time (1 s of
/// requests at RATE: the timeout bounds each request, so the schedule never slips).
const MAX_WORKERS: usize = 256;
/// A request without a complete answer in this time has failed.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Load before the first replacement, between two, and after the last.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the old container drains after the switch (`update.drain` in the spec).
const DRAIN_MS: u64 = 1000;

// ---------------------------------------------------------------------------------------
// Cleanup: what the run created, removed at the end, on a panic (drop) and on Ctrl-C.

enum Created {
    Berth {
        project: String,
        spec: PathBuf,
        state: PathBuf,
    },
    Compose {
        project: String,
        file: PathBuf,
    },
    Dir(PathBuf),
}

static CREATED: Mutex<Vec<Created>> = Mutex::new(Vec::new());
static BERTH: Mutex<Option<PathBuf>> = Mutex::new(None);
static COMPOSE: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The replacement command running (its pid), for Ctrl-C to stop it first.
static CHILD: Mutex<Option<u32>> = Mutex::new(None);
/// Set on Ctrl-C: no command starts any more.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn created(c: Created) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).push(c);
}

/// Removes everything recorded, last first; quiet, and never panics.
fn clean_up() {
    let all: Vec<Created> = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
    let berth = BERTH.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let compose = COMPOSE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for c in all.into_iter().rev() {
        match c {
            Created::Berth {
                project,
                spec,
                state,
            } => {
                if let Some(berth) = &berth {
                    let _ = Command::new(berth)
                        .arg("-f")
                        .arg(&spec)
                        .args(["destroy", "--yes"])
                        .env("BERTH_STATE_DIR", &state)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                remove_labelled(&format!("io.berth.project={project}"));
            }
            Created::Compose { project, file } => {
                if let Some((cmd, args)) = compose.split_first() {
                    let _ = Command::new(cmd)
                        .args(args)
                        .arg("-f")
                        .arg(&file)
                        .args(["-p", &project, "down", "-t", "1"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                remove_labelled(&format!("com.docker.compose.project={project}"));
            }
            Created::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// `docker rm -f` of the containers, then `docker network rm` of the networks, with a label.
fn remove_labelled(label: &str) {
    let list = |what: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(what)
            .args(["-q", "--filter", &format!("label={label}")])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    for (ls, rm) in [
        (&["ps", "-a"][..], &["rm", "-f"][..]),
        (&["network", "ls"][..], &["network", "rm"][..]),
    ] {
        let ids = list(ls);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(rm)
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

struct CleanUpOnDrop;

impl Drop for CleanUpOnDrop {
    fn drop(&mut self) {
        clean_up();
    }
}

/// Ctrl-C (or SIGTERM): clean up, then exit 130.
fn clean_up_on_signal() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
            }
        });
        eprintln!("\ninterrupted: removing what the benchmark created");
        // No command starts from now on; the one running (a berth apply rolls back on
        // SIGINT) is asked to stop and given time to.
        INTERRUPTED.store(true, Ordering::SeqCst);
        let pid = *CHILD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a pid of our own child and a valid signal number.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while CHILD.lock().unwrap_or_else(|e| e.into_inner()).is_some()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        clean_up();
        std::process::exit(130);
    });
}

// ---------------------------------------------------------------------------------------
// Commands, images, the berth binary, the machine.

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `cmd` (output piped) as the command Ctrl-C stops first; never starts one after
/// Ctrl-C (then waits for the exit).
fn spawn_tracked(cmd: &mut Command) -> std::process::Child {
    let mut running = CHILD.lock().unwrap_or_else(|e| e.into_inner());
    if INTERRUPTED.load(Ordering::SeqCst) {
        drop(running);
        loop {
            std::thread::park();
        }
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    *running = Some(child.id());
    child
}

/// The tracked command has ended.
fn untrack() {
    *CHILD.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// [`sh`] for a command that changes the scenario (Ctrl-C stops it first).
fn sh_tracked(cmd: &mut Command) {
    let out = spawn_tracked(cmd)
        .wait_with_output()
        .expect("wait for the command");
    untrack();
    if !out.status.success() && !INTERRUPTED.load(Ordering::SeqCst) {
        panic!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The test app as a `FROM scratch` image, its tag naming its source (as the tests do).
fn testapp_image(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let src = repo().join("fixtures/images/testapp");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for file in ["main.rs", "Dockerfile"] {
        std::fs::read(src.join(file))
            .expect("test app source")
            .hash(&mut h);
    }
    let tag = format!("berth-testapp:{:016x}", h.finish());
    let context = dir.join("testapp");
    std::fs::create_dir_all(&context).expect("context dir");
    sh(Command::new("rustc")
        .args(["-O", "-C", "target-feature=+crt-static", "-o"])
        .arg(context.join("testapp"))
        .arg(src.join("main.rs")));
    std::fs::copy(src.join("Dockerfile"), context.join("Dockerfile")).expect("Dockerfile");
    sh(Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(&context));
    tag
}

/// The tests' nginx image (`fixtures/images/nginx/build.sh` prints its tag).
fn nginx_image() -> String {
    let out = sh(Command::new("bash").arg(repo().join("fixtures/images/nginx/build.sh")));
    let tag = out.lines().last().unwrap_or_default().trim().to_owned();
    assert!(!tag.is_empty(), "build.sh printed no tag");
    tag
}

/// `BERTH_BIN`, or the berth binary cargo builds beside this example (same profile, same
/// target directory).
fn berth_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("own path");
    // target/<profile>/examples/bench_proxy
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the example runs from target/<profile>/examples");
    let target_dir = profile_dir.parent().expect("target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(repo())
        .args(["build", "--quiet", "--bin", "berth", "--target-dir"])
        .arg(target_dir);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    eprintln!("building the berth binary ({build:?})");
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo could not build berth");
    profile_dir.join("berth")
}

/// `docker compose` or `docker-compose`, whichever answers.
fn compose_command() -> Option<Vec<String>> {
    for cmd in [&["docker", "compose"][..], &["docker-compose"][..]] {
        let ok = Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(cmd.iter().map(|s| (*s).to_owned()).collect());
        }
    }
    None
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_else(|e| format!("({e})"))
}

fn machine_facts(compose: Option<&[String]>, nginx: &str) {
    let lscpu = Command::new("lscpu")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    println!("machine:");
    for key in [
        "Model name:",
        "CPU(s):",
        "Thread(s) per core:",
        "Hypervisor vendor:",
    ] {
        if let Some(l) = lscpu.lines().find(|l| l.starts_with(key)) {
            println!("  lscpu     {l}");
        }
    }
    let free = Command::new("free")
        .arg("-g")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for l in free.lines().take(2) {
        println!("  free -g   {l}");
    }
    println!(
        "  kernel    {}",
        first_line(Command::new("uname").arg("-sr"))
    );
    println!(
        "  docker    {}",
        first_line(Command::new("docker").args([
            "version",
            "--format",
            "client {{.Client.Version}}, server {{.Server.Version}} ({{.Server.Os}}/{{.Server.Arch}})"
        ]))
    );
    println!(
        "  storage   {}",
        first_line(Command::new("docker").args(["info", "--format", "{{.Driver}}"]))
    );
    if let Some((cmd, args)) = compose.and_then(|c| c.split_first()) {
        println!(
            "  compose   {}",
            first_line(Command::new(cmd).args(args).arg("version"))
        );
    }
    println!(
        "  nginx     {nginx} ({})",
        first_line(Command::new("docker").args([
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"io.berth.test.nginx-version\"}}",
            nginx
        ]))
    );
    println!(
        "  date      {}",
        first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
    );
    println!(
        "  berth     {} ({} build)",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

/// A time as RFC 3339 in UTC, to the millisecond (`docker logs --since` reads it).
fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (days, s) = ((d.as_secs() / 86_400) as i64, d.as_secs() % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// A port free on every address of this host (the proxy publishes on all of them).
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

// ---------------------------------------------------------------------------------------
// The load generator: WORKERS threads, a shared schedule of RATE slots per second.

/// One request: when it was sent and answered (seconds since the load started), and how.
#[derive(Clone, Debug)]
struct Sample {
    /// When the schedule said to send it.
    scheduled: f64,
    sent: f64,
    done: f64,
    outcome: Outcome,
    /// Sent again on a new connection after its reused one closed before answering.
    resent: bool,
    /// Its worker's idle connection was found closed by the server, and a new one opened.
    reopened: bool,
}

#[derive(Clone, Debug)]
enum Outcome {
    /// An answer: its status and the version that served it (the test app's header).
    Answer { status: u16, version: String },
    /// No answer: a connection error or a timeout.
    Error(String),
}

impl Sample {
    fn failed(&self) -> bool {
        match &self.outcome {
            Outcome::Answer { status, .. } => !(200..300).contains(status) && *status != 429,
            Outcome::Error(_) => true,
        }
    }
    fn served(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Answer { status, version } if (200..300).contains(status) => Some(version),
            _ => None,
        }
    }
    fn what(&self) -> String {
        match &self.outcome {
            Outcome::Answer { status, version } if (200..300).contains(status) => {
                format!("HTTP {status} (version {version})")
            }
            Outcome::Answer { status, version } => {
                // Not the test app's answer: the start of the body says whose.
                let body: String = version.split_whitespace().collect::<Vec<_>>().join(" ");
                format!(
                    "HTTP {status} ({})",
                    body.chars().take(60).collect::<String>()
                )
            }
            Outcome::Error(e) => e.clone(),
        }
    }
}

/// Why an attempt failed, and whether any byte of an answer had arrived.
struct Fail {
    what: String,
    nothing_read: bool,
    timeout: bool,
}

impl Fail {
    fn io(stage: &str, e: &std::io::Error, nothing_read: bool) -> Fail {
        let timeout = matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        );
        Fail {
            what: if timeout {
                format!("timeout ({stage})")
            } else {
                format!("{stage}: {e}")
            },
            nothing_read,
            timeout,
        }
    }
    fn other(what: String, nothing_read: bool) -> Fail {
        Fail {
            what,
            nothing_read,
            timeout: false,
        }
    }
}

type Conn = BufReader<TcpStream>;

fn left(deadline: Instant) -> Result<Duration, Fail> {
    let now = Instant::now();
    if now >= deadline {
        return Err(Fail {
            what: "timeout".into(),
            nothing_read: false,
            timeout: true,
        });
    }
    Ok(deadline - now)
}

fn read_line(conn: &mut Conn, deadline: Instant, stage: &str) -> Result<String, Fail> {
    conn.get_ref()
        .set_read_timeout(Some(left(deadline)?))
        .map_err(|e| Fail::io(stage, &e, false))?;
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) => Err(Fail::other(
            format!("{stage}: connection closed"),
            stage == "status",
        )),
        Ok(_) => Ok(line),
        Err(e) => Err(Fail::io(stage, &e, stage == "status")),
    }
}

fn read_body(conn: &mut Conn, deadline: Instant, len: usize) -> Result<Vec<u8>, Fail> {
    let mut body = vec![0; len];
    let mut at = 0;
    while at < len {
        conn.get_ref()
            .set_read_timeout(Some(left(deadline)?))
            .map_err(|e| Fail::io("body", &e, false))?;
        match conn.read(&mut body[at..]) {
            Ok(0) => return Err(Fail::other("body: connection closed".into(), false)),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Fail::io("body", &e, false)),
        }
    }
    Ok(body)
}

const REQUEST: &[u8] = b"GET /version HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench_proxy\r\n\r\n";

/// One request on `conn` (opened first if needed); the connection is dropped on an error
/// or when the server closes it.
fn attempt(conn: &mut Option<Conn>, addr: SocketAddr, deadline: Instant) -> Result<Outcome, Fail> {
    if conn.is_none() {
        let stream = TcpStream::connect_timeout(&addr, left(deadline)?)
            .map_err(|e| Fail::io("connect", &e, false))?;
        let _ = stream.set_nodelay(true);
        *conn = Some(BufReader::new(stream));
    }
    let Some(c) = conn.as_mut() else {
        return Err(Fail::other("no connection".into(), false));
    };
    c.get_ref()
        .set_write_timeout(Some(left(deadline)?))
        .map_err(|e| Fail::io("write", &e, true))?;
    c.get_mut()
        .write_all(REQUEST)
        .map_err(|e| Fail::io("write", &e, true))?;
    let status_line = read_line(c, deadline, "status")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Fail::other(format!("bad status line {status_line:?}"), false))?;
    let (mut len, mut close, mut chunked, mut version) = (None, false, false, None);
    loop {
        let line = read_line(c, deadline, "headers")?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = value.parse::<usize>().ok(),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "x-testapp-version" => version = Some(value.to_owned()),
            _ => {}
        }
    }
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let size = read_line(c, deadline, "chunk")?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| Fail::other(format!("bad chunk size {size:?}"), false))?;
            body.extend(read_body(c, deadline, size)?);
            read_line(c, deadline, "chunk")?;
            if size == 0 {
                break;
            }
        }
        body
    } else if let Some(len) = len {
        read_body(c, deadline, len)?
    } else {
        close = true;
        let mut body = Vec::new();
        c.get_ref()
            .set_read_timeout(Some(left(deadline)?))
            .map_err(|e| Fail::io("body", &e, false))?;
        c.read_to_end(&mut body)
            .map_err(|e| Fail::io("body", &e, false))?;
        body
    };
    if close {
        *conn = None;
    }
    let version = version.unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
    Ok(Outcome::Answer { status, version })
}

/// Whether the server has closed (or reset) an idle connection, or sent something
/// unasked: what a client's connection pool checks before it reuses one.
fn closed_by_server(conn: &Conn) -> bool {
    if !conn.buffer().is_empty() {
        return true;
    }
    let stream = conn.get_ref();
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = match stream.peek(&mut [0u8; 1]) {
        // 0: end of stream; more: bytes nobody asked for.
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}

/// A request within TIMEOUT, on the worker's connection unless the server closed it while
/// idle (then on a new one, as a pool does); sent again once on a new connection when a
/// reused one was closed before any byte of the answer (not after a timeout). Returns the
/// outcome, whether it was sent again, and whether an idle connection was found closed.
fn request(conn: &mut Option<Conn>, addr: SocketAddr) -> (Outcome, bool, bool) {
    let reopened = conn.as_ref().is_some_and(closed_by_server);
    if reopened {
        *conn = None;
    }
    let (outcome, resent) = send(conn, addr);
    (outcome, resent, reopened)
}

fn send(conn: &mut Option<Conn>, addr: SocketAddr) -> (Outcome, bool) {
    let deadline = Instant::now() + TIMEOUT;
    let reused = conn.is_some();
    match attempt(conn, addr, deadline) {
        Ok(o) => (o, false),
        Err(f) => {
            *conn = None;
            if reused && f.nothing_read && !f.timeout {
                match attempt(conn, addr, deadline) {
                    Ok(o) => (o, true),
                    Err(f) => {
                        *conn = None;
                        (Outcome::Error(f.what), true)
                    }
                }
            } else {
                (Outcome::Error(f.what), false)
            }
        }
    }
}

/// Open-loop load: a dispatcher hands slot `i` out at `i / RATE` seconds to an idle worker;
/// when none is idle (requests hang during an outage), it starts another, up to
/// MAX_WORKERS, so that the schedule holds whatever the answers take (no coordinated
/// omission: a stalled server does not slow the load down and hide its failures).
struct Load {
    t0: Instant,
    /// The wall clock at `t0`.
    wall: std::time::SystemTime,
    stop: Arc<AtomicBool>,
    dispatcher: std::thread::JoinHandle<(Vec<Sample>, usize)>,
}

/// One worker: its own connection, kept alive, for the slots it takes.
fn worker(
    t0: Instant,
    addr: SocketAddr,
    slots: Arc<Mutex<std::sync::mpsc::Receiver<u64>>>,
    idle: Arc<AtomicUsize>,
) -> Vec<Sample> {
    let mut conn = None;
    let mut out = Vec::new();
    loop {
        let next = slots.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(slot) = next else {
            break;
        };
        idle.fetch_sub(1, Ordering::SeqCst);
        let sent = t0.elapsed().as_secs_f64();
        let (outcome, resent, reopened) = request(&mut conn, addr);
        out.push(Sample {
            scheduled: slot as f64 / RATE as f64,
            sent,
            done: t0.elapsed().as_secs_f64(),
            outcome,
            resent,
            reopened,
        });
        idle.fetch_add(1, Ordering::SeqCst);
    }
    out
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let dispatcher = std::thread::spawn(move || {
            let (tx, rx) = std::sync::mpsc::channel::<u64>();
            let rx = Arc::new(Mutex::new(rx));
            let idle = Arc::new(AtomicUsize::new(0));
            let mut workers = Vec::new();
            let spawn = |workers: &mut Vec<std::thread::JoinHandle<Vec<Sample>>>| {
                idle.fetch_add(1, Ordering::SeqCst);
                let (rx, idle) = (rx.clone(), idle.clone());
                workers.push(std::thread::spawn(move || worker(t0, addr, rx, idle)));
            };
            for _ in 0..WORKERS {
                spawn(&mut workers);
            }
            for slot in 0.. {
                let at = t0 + Duration::from_nanos(slot * 1_000_000_000 / RATE);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if idle.load(Ordering::SeqCst) == 0 && workers.len() < MAX_WORKERS {
                    spawn(&mut workers);
                }
                if tx.send(slot).is_err() {
                    break;
                }
            }
            drop(tx);
            let peak = workers.len();
            let samples = workers
                .into_iter()
                .flat_map(|w| w.join().expect("a load worker panicked"))
                .collect();
            (samples, peak)
        });
        Load {
            t0,
            wall: std::time::SystemTime::now(),
            stop,
            dispatcher,
        }
    }

    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Stops the load; every request, in the order sent, how long the load lasted, and the
    /// most workers it needed.
    fn finish(self) -> (Vec<Sample>, f64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let end = self.t0.elapsed().as_secs_f64();
        let (mut all, peak) = self
            .dispatcher
            .join()
            .expect("the load dispatcher panicked");
        all.sort_by(|a, b| a.sent.total_cmp(&b.sent));
        (all, end, peak)
    }
}

/// Waits until `addr` serves `version` (before the load starts).
fn wait_for_version(addr: SocketAddr, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut conn = None;
        match send(&mut conn, addr).0 {
            Outcome::Answer {
                status: 200,
                version: v,
            } if v == version => return,
            o => last = format!("{o:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{addr} did not serve {version} within 60 s; last: {last}");
}

// ---------------------------------------------------------------------------------------
// Scenarios.

/// One replacement: the command's start and end (seconds of the load), its output lines
/// with their time, and whether it succeeded.
struct Replacement {
    version: String,
    start: f64,
    end: f64,
    ok: bool,
    lines: Vec<(f64, String)>,
}

/// Runs `cmd`, its output lines timestamped on the load's clock as they come.
fn run_timed(cmd: &mut Command, load: &Load, version: &str) -> Replacement {
    let start = load.now();
    let mut child = spawn_tracked(cmd);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let t0 = load.t0;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|pipe| {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let at = t0.elapsed().as_secs_f64();
                lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((at, line));
            }
        })
    })
    .collect();
    let status = child.wait().expect("wait for the command");
    untrack();
    let end = load.now();
    for r in readers {
        let _ = r.join();
    }
    let mut lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|e| e.into_inner()));
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    Replacement {
        version: version.to_owned(),
        start,
        end,
        ok: status.success(),
        lines,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Routed through the proxy, with this many replicas.
    Proxy(u32),
    Port,
    Compose,
}

impl Kind {
    fn title(self) -> &'static str {
        match self {
            Kind::Proxy(1) => "berth, routed through the proxy (blue-green)",
            Kind::Proxy(_) => "berth, routed through the proxy (blue-green), 2 replicas",
            Kind::Port => "berth, published port (recreate)",
            Kind::Compose => "docker compose, published port",
        }
    }
}

struct Setup {
    image: String,
    nginx: String,
    berth: PathBuf,
    compose: Option<Vec<String>>,
    dir: PathBuf,
    replacements: usize,
}

fn pod_text(image: &str, version: &str) -> String {
    format!(
        "  api:\n    image: {image}\n    env: {{ VERSION: {version} }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 250ms, retries: 40 }}\n"
    )
}

fn berth_spec(kind: Kind, s: &Setup, project: &str, port: u16, version: &str) -> String {
    let mut text = format!("version: 1\nproject: {project}\npods:\n");
    text.push_str(&pod_text(&s.image, version));
    match kind {
        Kind::Proxy(replicas) => {
            if replicas > 1 {
                text.push_str(&format!("    replicas: {replicas}\n"));
            }
            text.push_str(&format!(
                "    update: {{ strategy: blue-green, drain: {DRAIN_MS}ms }}\n"
            ));
            text.push_str(&format!(
                "proxy:\n  image: {}\n  listen: [{port}]\n  routes:\n    - {{ path: /, to: api:8080 }}\n",
                s.nginx
            ));
        }
        Kind::Port | Kind::Compose => {
            text.push_str(&format!(
                "    ports: [\"127.0.0.1:{port}:8080\"]\n    update: {{ strategy: recreate }}\n"
            ));
        }
    }
    text
}

fn compose_text(image: &str, port: u16, version: &str) -> String {
    format!(
        "version: \"3.8\"\nservices:\n  api:\n    image: {image}\n    init: true\n    environment:\n      VERSION: {version}\n    ports: [\"127.0.0.1:{port}:8080\"]\n"
    )
}

struct Run {
    kind: Kind,
    samples: Vec<Sample>,
    end: f64,
    replacements: Vec<Replacement>,
    /// The most workers the load needed at once.
    peak_workers: usize,
}

/// One scenario: v0 applied, the load started, N replacements under it, the load stopped,
/// everything removed.
fn scenario(kind: Kind, s: &Setup) -> Run {
    let project = format!(
        "bp{}{}",
        match kind {
            Kind::Proxy(1) => "px",
            Kind::Proxy(_) => "p2",
            Kind::Port => "pt",
            Kind::Compose => "dc",
        },
        std::process::id()
    );
    let dir = s.dir.join(&project);
    std::fs::create_dir_all(&dir).expect("scenario dir");
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let spec = dir.join(if kind == Kind::Compose {
        "docker-compose.yml"
    } else {
        "berth.yaml"
    });
    let state = dir.join("state");
    created(match kind {
        Kind::Compose => Created::Compose {
            project: project.clone(),
            file: spec.clone(),
        },
        _ => Created::Berth {
            project: project.clone(),
            spec: spec.clone(),
            state: state.clone(),
        },
    });
    let write = |version: &str| {
        let text = match kind {
            Kind::Compose => compose_text(&s.image, port, version),
            _ => berth_spec(kind, s, &project, port, version),
        };
        std::fs::write(&spec, text).expect("write spec");
    };
    let command = || -> Command {
        match kind {
            Kind::Compose => {
                let c = s.compose.as_deref().expect("compose");
                let mut cmd = Command::new(&c[0]);
                cmd.args(&c[1..])
                    .arg("-f")
                    .arg(&spec)
                    .args(["-p", &project, "up", "-d"]);
                cmd
            }
            _ => {
                let mut cmd = Command::new(&s.berth);
                cmd.arg("-f")
                    .arg(&spec)
                    .args(["apply", "--yes"])
                    .env("BERTH_STATE_DIR", &state)
                    .env("NO_COLOR", "1");
                cmd
            }
        }
    };
    println!("\n== {} (port {port}) ==", kind.title());
    write("v0");
    let t = Instant::now();
    sh_tracked(&mut command());
    wait_for_version(addr, "v0");
    println!(
        "  v0 applied and serving in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let load = Load::start(addr);
    std::thread::sleep(SETTLE);
    let mut replacements = Vec::new();
    for k in 1..=s.replacements {
        let version = format!("v{k}");
        write(&version);
        let r = run_timed(&mut command(), &load, &version);
        println!(
            "  {version}: command {} in {:.2} s",
            if r.ok { "succeeded" } else { "FAILED" },
            r.end - r.start
        );
        if !r.ok || std::env::var_os("BENCH_VERBOSE").is_some() {
            for (t, l) in &r.lines {
                println!("      | +{:6.3} s {l}", t - r.start);
            }
        }
        if !r.ok && matches!(kind, Kind::Proxy(_)) {
            // What nginx said (a reload it refused, an upstream it could not reach).
            let logs = Command::new("docker")
                .args(["logs", "--timestamps", "--since"])
                .arg(rfc3339(load.wall + Duration::from_secs_f64(r.start)))
                .arg(format!("{project}-proxy"))
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr)
                })
                .unwrap_or_default();
            println!(
                "    the proxy's log since the command started ({}):",
                rfc3339(load.wall + Duration::from_secs_f64(r.start))
            );
            // Each request's error once per kind and second is enough.
            let mut seen = std::collections::BTreeMap::new();
            for l in logs.lines() {
                let key = l.find(" while ").map(|i| {
                    let second = l.get(..19).unwrap_or_default();
                    let what = l[..i].rsplit(": ").next().unwrap_or_default();
                    // `*2469 connect() failed ...`: the connection's number aside.
                    let what = match what.strip_prefix('*') {
                        Some(rest) => rest.split_once(' ').map_or(rest, |(_, w)| w),
                        None => what,
                    };
                    format!("{second} {what}")
                });
                match key {
                    Some(k) => {
                        let n = seen.entry(k).or_insert(0);
                        *n += 1;
                        if *n == 1 {
                            println!("      > {l}");
                        }
                    }
                    None => println!("      > {l}"),
                }
            }
            for (k, n) in seen.iter().filter(|(_, n)| **n > 1) {
                println!("      > ({n} lines: {k})");
            }
        }
        replacements.push(r);
        std::thread::sleep(SETTLE);
    }
    let (samples, end, peak_workers) = load.finish();
    Run {
        kind,
        samples,
        end,
        replacements,
        peak_workers,
    }
}

// ---------------------------------------------------------------------------------------
// Figures.

struct Figures {
    sent: usize,
    failed: usize,
    resent: usize,
    longest_gap: f64,
    /// Per replacement: command start -> first answer by the new version.
    to_new: Vec<Option<f64>>,
}

fn figures(r: &Run) -> Figures {
    let mut ok: Vec<f64> = r
        .samples
        .iter()
        .filter(|s| s.served().is_some())
        .map(|s| s.done)
        .collect();
    ok.sort_by(f64::total_cmp);
    let mut longest_gap = 0.0_f64;
    let mut prev = 0.0;
    for t in ok.iter().copied().chain([r.end]) {
        longest_gap = longest_gap.max(t - prev);
        prev = t;
    }
    let to_new = r
        .replacements
        .iter()
        .map(|rep| {
            r.samples
                .iter()
                .filter(|s| s.done >= rep.start && s.served() == Some(rep.version.as_str()))
                .map(|s| s.done - rep.start)
                .min_by(f64::total_cmp)
        })
        .collect();
    Figures {
        sent: r.samples.len(),
        failed: r.samples.iter().filter(|s| s.failed()).count(),
        resent: r.samples.iter().filter(|s| s.resent).count(),
        longest_gap,
        to_new,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The replacement a request fell in (the last one started before it ended), if any.
fn replacement_of<'a>(r: &'a Run, s: &Sample) -> Option<&'a Replacement> {
    r.replacements.iter().rev().find(|rep| rep.start <= s.done)
}

/// The command's last output line before `t`: the phase of the replacement at that time.
fn phase(rep: &Replacement, t: f64) -> &str {
    rep.lines
        .iter()
        .rev()
        .find(|(at, _)| *at <= t)
        .map_or("(before its first line)", |(_, l)| l.trim())
}

/// Where the failures fell: per replacement, grouped by what failed, with the time from
/// the command's start and the command's phase; for the routed pod, each one.
fn failure_report(r: &Run) {
    let resent: Vec<&Sample> = r.samples.iter().filter(|s| s.resent).collect();
    if !resent.is_empty() {
        println!(
            "\n  requests of \"{}\" sent again (their reused connection closed before any answer):",
            r.kind.title()
        );
        for s in resent.iter().take(20) {
            let place = replacement_of(r, s).map_or(String::new(), |rep| {
                format!(
                    "{} +{:.3} s, after: {}",
                    rep.version,
                    s.sent - rep.start,
                    phase(rep, s.sent)
                )
            });
            println!("    t={:8.3} s  then {:<30} {place}", s.sent, s.what());
        }
    }
    let failures: Vec<&Sample> = r.samples.iter().filter(|s| s.failed()).collect();
    if failures.is_empty() {
        return;
    }
    println!("\n  failed requests of \"{}\":", r.kind.title());
    // (replacement, what) -> count, first, last, phase at the first.
    let mut groups: Vec<(String, String, usize, f64, f64, String)> = Vec::new();
    for f in &failures {
        let what = match &f.outcome {
            Outcome::Error(e) => e.clone(),
            Outcome::Answer { status, .. } => format!("HTTP {status}"),
        };
        let (name, offset, at) = match replacement_of(r, f) {
            Some(rep) => (
                rep.version.clone(),
                f.sent - rep.start,
                phase(rep, f.sent).to_owned(),
            ),
            None => ("before the first replacement".into(), f.sent, String::new()),
        };
        match groups.iter_mut().find(|g| g.0 == name && g.1 == what) {
            Some(g) => {
                g.2 += 1;
                g.4 = offset;
            }
            None => groups.push((name, what, 1, offset, offset, at)),
        }
    }
    for (name, what, n, first, last, at) in &groups {
        println!(
            "    {name}: {n:>4} x {what}, from +{first:.3} s to +{last:.3} s after the command started; at the first: {at}"
        );
    }
    if matches!(r.kind, Kind::Proxy(_)) {
        println!("    each one (t = seconds of the load; offset from the command's start):");
        for f in failures.iter().take(60) {
            let place = replacement_of(r, f).map_or(String::new(), |rep| {
                format!(
                    "{} +{:.3} s, after: {}",
                    rep.version,
                    f.sent - rep.start,
                    phase(rep, f.sent)
                )
            });
            println!(
                "    t={:8.3} s  {:<40} {place}{}",
                f.sent,
                f.what(),
                if f.resent { " (resent)" } else { "" }
            );
        }
        if failures.len() > 60 {
            println!("    ... and {} more", failures.len() - 60);
        }
    }
}

fn print_table(runs: &[Run]) {
    println!(
        "\n{} replacement(s) each under {RATE} requests/s (open-loop; {WORKERS} keep-alive workers, more while all are busy; {} s timeout); drain {} ms:",
        runs.first().map_or(0, |r| r.replacements.len()),
        TIMEOUT.as_secs(),
        DRAIN_MS
    );
    println!(
        "| scenario | requests | failed | failure rate | longest gap without a 2xx | apply start -> first answer of the new version, median / max | resent |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let f = figures(r);
        let mut got: Vec<f64> = f.to_new.iter().flatten().copied().collect();
        let never = f.to_new.iter().filter(|t| t.is_none()).count();
        let max = got.iter().copied().fold(0.0_f64, f64::max);
        let to_new = if got.is_empty() {
            "never".to_owned()
        } else {
            format!(
                "{:.2} s / {:.2} s{}",
                median(&mut got),
                max,
                if never > 0 {
                    format!(" ({never} never)")
                } else {
                    String::new()
                }
            )
        };
        println!(
            "| {} | {} | {} | {:.2} % | {:.0} ms | {to_new} | {} |",
            r.kind.title(),
            f.sent,
            f.failed,
            100.0 * f.failed as f64 / f.sent.max(1) as f64,
            f.longest_gap * 1e3,
            f.resent
        );
    }
    for r in runs {
        let f = figures(r);
        let per: Vec<String> = r
            .replacements
            .iter()
            .zip(&f.to_new)
            .map(|(rep, t)| {
                let fails = r
                    .samples
                    .iter()
                    .filter(|s| {
                        s.failed() && s.sent >= rep.start && s.sent < rep.end + SETTLE.as_secs_f64()
                    })
                    .count();
                format!(
                    "{}: cmd {:.2} s, new after {}, {fails} failed",
                    rep.version,
                    rep.end - rep.start,
                    t.map_or("never".into(), |t| format!("{t:.2} s"))
                )
            })
            .collect();
        let reopened = r.samples.iter().filter(|s| s.reopened).count();
        let lag = r
            .samples
            .iter()
            .map(|s| s.sent - s.scheduled)
            .fold(0.0_f64, f64::max);
        println!(
            "  {}: load {:.1} s, {:.0} requests/s sent, at most {:.0} ms behind schedule, {} workers at most; {reopened} idle keep-alive connection(s) found closed by the server and opened again\n    {}",
            r.kind.title(),
            r.end,
            f.sent as f64 / r.end.max(1e-9),
            lag * 1e3,
            r.peak_workers,
            per.join("\n    ")
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut replacements, mut only) = (5, String::from("proxy,proxy2,port,compose"));
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--replacements" => replacements = value().parse().expect("--replacements N"),
            "--only" => only = value(),
            other => panic!(
                "unknown argument {other:?}; use --replacements N, --only proxy,proxy2,port,compose"
            ),
        }
    }
    let kinds: Vec<Kind> = only
        .split(',')
        .map(|k| match k.trim() {
            "proxy" => Kind::Proxy(1),
            "proxy2" => Kind::Proxy(2),
            "port" => Kind::Port,
            "compose" => Kind::Compose,
            other => panic!("unknown scenario {other:?} (proxy, proxy2, port, compose)"),
        })
        .collect();

    let guard = CleanUpOnDrop;
    clean_up_on_signal();
    let dir = std::env::temp_dir().join(format!("berth-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    created(Created::Dir(dir.clone()));

    let berth = berth_binary();
    *BERTH.lock().unwrap_or_else(|e| e.into_inner()) = Some(berth.clone());
    let compose = compose_command();
    if let Some(c) = &compose {
        COMPOSE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_from(c);
    }
    let image = testapp_image(&dir);
    let nginx = nginx_image();
    machine_facts(compose.as_deref(), &nginx);
    println!(
        "command   cargo run {}--example bench_proxy -- --replacements {replacements} --only {only}",
        if cfg!(debug_assertions) {
            ""
        } else {
            "--release "
        },
    );
    let setup = Setup {
        image,
        nginx,
        berth,
        compose,
        dir,
        replacements,
    };

    let mut runs = Vec::new();
    for kind in kinds {
        if kind == Kind::Compose && setup.compose.is_none() {
            println!(
                "\n== {}: skipped, neither `docker compose` nor `docker-compose` answers ==",
                kind.title()
            );
            continue;
        }
        runs.push(scenario(kind, &setup));
        // Each scenario's containers go before the next one starts (same machine, quiet).
        clean_up_scenarios();
    }
    print_table(&runs);
    for r in &runs {
        failure_report(r);
    }
    let bound_broken = runs.iter().any(|r| {
        matches!(r.kind, Kind::Proxy(_))
            && (r.samples.iter().any(Sample::failed) || r.replacements.iter().any(|rep| !rep.ok))
    });
    drop(guard);
    if bound_broken {
        println!(
            "\nFAILED: the routed pod's replacements had failed requests or a failed apply (issue 12's bound is 0)"
        );
        std::process::exit(1);
    }
}

/// Removes the scenarios created so far (not the temporary directory).
fn clean_up_scenarios() {
    let mut all = CREATED.lock().unwrap_or_else(|e| e.into_inner());
    let (dirs, scenarios): (Vec<Created>, Vec<Created>) = std::mem::take(&mut *all)
        .into_iter()
        .partition(|c| matches!(c, Created::Dir(_)));
    *all = scenarios;
    drop(all);
    clean_up();
    CREATED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(dirs);
}
