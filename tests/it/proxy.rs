//! The managed proxy against the real engine: real nginx (the test image built from the
//! Debian package) in front of real test-app containers, spoken to over HTTP on 127.0.0.1.
//! Rate limits, security headers, CORS, the `nginx -t` gate, zero-downtime replacement of a
//! routed pod, and destroy.

use crate::common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::Scene;
use common::docker;

/// A response as the tests read it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` on a connection of its own (closed after).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Answer> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str("Host: localhost\r\n");
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// GET `path` on 127.0.0.1:`port`.
pub fn get(port: u16, path: &str) -> Answer {
    request(port, "GET", path, &[]).expect("the proxy answers")
}

/// A free TCP port on 127.0.0.1 (free when asked; the engine binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The test app as pod `name` at `version`, health-checked, replaced blue-green with a
/// short drain.
pub fn app(name: &str, version: &str, replicas: u32) -> String {
    format!(
        "  {name}:\n    image: {}\n    replicas: {replicas}\n    env: {{ VERSION: {version} }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 40 }}\n    update: {{ strategy: blue-green, drain: 1s }}\n",
        docker::testapp_image()
    )
}

/// The nginx test image, or `None` (the test skips) where none can be built.
pub fn nginx() -> Option<String> {
    if !docker::available() {
        return None;
    }
    common::nginx::image()
}

/// Waits until the proxy answers `path` with `status`.
pub fn wait_for(port: u16, path: &str, status: u16) -> Answer {
    let start = Instant::now();
    loop {
        if let Ok(a) = request(port, "GET", path, &[])
            && a.status == status
        {
            return a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "127.0.0.1:{port}{path} never answered {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a [`Load`] saw: answers with 200, the others (status or error), and the versions
/// served.
pub struct Served {
    pub ok: usize,
    pub failed: Vec<String>,
    pub versions: std::collections::BTreeSet<String>,
}

/// `GET /version` on 127.0.0.1:`port` from a thread of its own, about a hundred a second (at
/// most 5,000 requests), each on a connection of its own, until [`Load::finish`].
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Served>,
}

impl Load {
    pub fn start(port: u16) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut served = Served {
                ok: 0,
                failed: Vec::new(),
                versions: Default::default(),
            };
            for _ in 0..5_000 {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match request(port, "GET", "/version", &[]) {
                    Ok(a) if a.status == 200 => {
                        served.ok += 1;
                        served.versions.insert(a.body.trim().to_owned());
                    }
                    Ok(a) => served
                        .failed
                        .push(format!("{} {}", a.status, a.body.trim())),
                    Err(e) => served.failed.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            served
        });
        Load { stop, thread }
    }

    /// A moment more of load, then what it saw.
    pub fn finish(self) -> Served {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the load thread")
    }
}

/// The upstream servers the running proxy's config names (read with `docker cp`).
fn servers_in_config(container: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["cp", &format!("{container}:/etc/berth/nginx.conf"), "-"])
        .output()
        .expect("docker cp runs");
    assert!(out.status.success(), "no config in {container}");
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    let mut text = String::new();
    for e in archive.entries().unwrap() {
        e.unwrap().read_to_string(&mut text).unwrap();
    }
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|l| l.split_once(':').map(|(h, _)| h.to_owned()))
        .filter(|h| h != "127.0.0.1")
        .collect()
}

#[test]
fn a_routed_pod_behind_the_proxy_applies_replans_clean_and_destroys() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    s.spec(&format!(
        "pods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  security_headers: basic\n  routes:\n    - {{ path: /, to: api:8080 }}\n",
        app("api", "v1", 2)
    ));
    let r = s.berth(&["apply", "--yes"]).code(0);
    assert!(r.stderr().contains("proxy"), "{}", r.stderr());
    assert_eq!(wait_for(port, "/version", 200).body.trim(), "v1");
    // Both replicas serve through the one upstream.
    let proxy = format!("{}-proxy", s.project.0);
    let mut servers = servers_in_config(&proxy);
    servers.sort();
    assert_eq!(servers, [s.name("api-0"), s.name("api-1")]);
    // The proxy's own health endpoint, never routed to the app.
    let health = get(port, "/.berth/health");
    assert_eq!(health.status, 200);
    assert!(health.body.starts_with("berth "), "{health:?}");
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    s.berth(&["destroy", "--yes"]).code(0);
    assert!(s.containers().is_empty(), "{:?}", s.containers());
}

#[test]
fn a_routed_pod_is_replaced_under_load_without_a_failed_request() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    let write = |version: &str| {
        s.spec(&format!(
            "pods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  routes:\n    - {{ path: /, to: api:8080 }}\n",
            app("api", version, 1)
        ))
    };
    // One replica: no other server of the upstream can hide a gap.
    write("v1");
    s.berth(&["apply", "--yes"]).code(0);
    wait_for(port, "/version", 200);
    let load = Load::start(port);
    for version in ["v2", "v3"] {
        write(version);
        s.berth(&["apply", "--yes"]).code(0);
    }
    let Served {
        ok,
        failed,
        versions,
    } = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 100, "only {ok} requests");
    assert!(
        versions.contains("v1") && versions.contains("v3"),
        "{versions:?}"
    );
    assert_eq!(get(port, "/version").body.trim(), "v3");
    // The config names the pod's own containers again, and nothing else is left.
    let mut servers = servers_in_config(&format!("{}-proxy", s.project.0));
    servers.sort();
    assert_eq!(servers, [s.name("api")]);
    assert!(
        s.containers().iter().all(|c| !c.contains("-berth-")),
        "{:?}",
        s.containers()
    );
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn rate_limits_answer_429_with_retry_after_per_second_and_per_minute() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    s.spec(&format!(
        "rate_limits:\n  api: {{ rate: 10/s, burst: 10 }}\n  slow: {{ rate: 30/min }}\npods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  security_headers: strict\n  routes:\n    - {{ path: /, to: api:8080, rate_limit: api }}\n    - {{ path: /slow/, to: api:8080, rate_limit: slow }}\n",
        app("api", "v1", 1)
    ));
    s.berth(&["apply", "--yes"]).code(0);
    wait_for(port, "/.berth/health", 200);
    std::thread::sleep(Duration::from_secs(2)); // the bucket refills after the gate's requests
    // 100 requests within one second from one client, 10 at a time.
    let start = Instant::now();
    let workers: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| request(port, "GET", "/version", &[]).expect("answered"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<Answer> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let took = start.elapsed();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    let others: Vec<u16> = answers
        .iter()
        .map(|a| a.status)
        .filter(|s| *s != 200 && *s != 429)
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert!(took < Duration::from_secs(1), "100 requests took {took:?}");
    assert!(
        (80..=90).contains(&refused.len()),
        "{} of 100 refused in {took:?}",
        refused.len()
    );
    for a in &refused {
        assert!(a.header("retry-after").is_some(), "{a:?}");
        // The security headers are sent on the refusal too.
        assert!(a.header("x-content-type-options").is_some(), "{a:?}");
    }
    // 30/min: one request every 2 s. Asked every 250 ms for 12 s, about 6 get through.
    let mut passed = 0;
    for _ in 0..48 {
        if get(port, "/slow/x").status == 200 {
            passed += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        (5..=8).contains(&passed),
        "{passed} of 48 passed a 30/min limit in 12 s"
    );
}

const STRICT: [&str; 5] = [
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "content-security-policy",
    "permissions-policy",
];

#[test]
fn security_headers_and_cors_arrive_on_every_answer() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    s.spec(&format!(
        "rate_limits:\n  api: {{ rate: 1/s }}\npods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  security_headers: strict\n  headers: {{ X-Served-By: berth }}\n  routes:\n    - {{ path: /api/, to: api:8080, rate_limit: api, cors: {{ origins: [\"https://shop.example\"], methods: [GET, POST], headers: [Content-Type], credentials: true, max_age: 10m }} }}\n",
        app("api", "v1", 1)
    ));
    s.berth(&["apply", "--yes"]).code(0);
    wait_for(port, "/.berth/health", 200);
    std::thread::sleep(Duration::from_millis(1100));
    let ok = get(port, "/api/version");
    assert_eq!(ok.status, 200, "{ok:?}");
    let not_found = get(port, "/elsewhere");
    assert_eq!(not_found.status, 404, "{not_found:?}");
    let mut limited = None;
    for _ in 0..10 {
        let a = get(port, "/api/version");
        if a.status == 429 {
            limited = Some(a);
            break;
        }
    }
    let limited = limited.expect("a 429 from a 1/s limit");
    for a in [&ok, &not_found, &limited] {
        for h in STRICT {
            assert!(a.header(h).is_some(), "{h} missing on {} {a:?}", a.status);
        }
        assert_eq!(a.header("x-served-by"), Some("berth"), "{a:?}");
        // HSTS only over TLS.
        assert!(a.header("strict-transport-security").is_none(), "{a:?}");
    }
    std::thread::sleep(Duration::from_millis(1100));
    // A preflight from an allowed origin is answered by the proxy.
    let allowed = request(
        port,
        "OPTIONS",
        "/api/version",
        &[
            ("Origin", "https://shop.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
    )
    .unwrap();
    assert!(
        allowed.status == 204 || allowed.status == 200,
        "{allowed:?}"
    );
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://shop.example"),
        "{allowed:?}"
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(
        allowed
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST")),
        "{allowed:?}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    // From another origin: no permission.
    let other = request(
        port,
        "OPTIONS",
        "/api/version",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
    )
    .unwrap();
    assert!(
        other.header("access-control-allow-origin").is_none(),
        "{other:?}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    // A simple request from the allowed origin gets the header on the app's answer.
    let simple = request(
        port,
        "GET",
        "/api/version",
        &[("Origin", "https://shop.example")],
    )
    .unwrap();
    assert_eq!(simple.status, 200, "{simple:?}");
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
}

#[test]
fn a_config_nginx_refuses_never_reaches_the_running_proxy() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    let write = |headers: &str| {
        s.spec(&format!(
            "pods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  headers: {{ {headers} }}\n  routes:\n    - {{ path: /, to: api:8080 }}\n",
            app("api", "v1", 1)
        ))
    };
    write("X-Good: yes");
    s.berth(&["apply", "--yes"]).code(0);
    let before = wait_for(port, "/.berth/health", 200);
    // Values may name nginx variables; one nginx does not know fails `nginx -t`.
    write("X-Bad: $no_such_variable");
    let r = s.berth(&["apply", "--yes"]);
    assert_ne!(r.0.status.code(), Some(0), "{}", r.stderr());
    let err = r.stderr_flat();
    assert!(err.contains("nginx"), "{err}");
    // nginx's own words, and the rendered line they point at.
    assert!(
        err.contains("unknown \"no_such_variable\" variable"),
        "{err}"
    );
    assert!(
        err.contains("no_such_variable") && err.contains("line "),
        "{err}"
    );
    // The running proxy keeps its config and serves.
    let after = get(port, "/.berth/health");
    assert_eq!(after.body, before.body);
    assert_eq!(get(port, "/version").body.trim(), "v1");
    assert_eq!(after.header("x-good"), before.header("x-good"));
    // No throwaway container is left.
    assert!(
        s.containers().iter().all(|c| !c.contains("check")),
        "{:?}",
        s.containers()
    );
    // The change is still to make.
    s.berth(&["plan", "--detailed-exitcode"]).code(2);
}

#[test]
fn a_kill_at_every_journal_boundary_of_a_proxy_change_recovers_to_one_generation() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    let write = |version: &str, limit: &str| {
        s.spec(&format!(
            "rate_limits:\n  api: {{ rate: {limit}, burst: 50 }}\npods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  routes:\n    - {{ path: /, to: api:8080, rate_limit: api }}\n",
            app("api", version, 1)
        ))
    };
    write("v1", "100/s");
    s.berth(&["apply", "--yes"]).code(0);
    write("v2", "200/s");
    s.berth(&["apply", "--yes"]).code(0);
    let records = std::fs::read_to_string(s.state().join("last-journal.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(records > 6, "{records} records");
    let proxy = format!("{}-proxy", s.project.0);
    let mut seen = std::collections::BTreeSet::new();
    for kill_at in 1..records {
        write("v1", "100/s");
        s.berth(&["apply", "--yes"]).code(0);
        write("v2", "200/s");
        let killed = common::Berth::new()
            .dir(s.path())
            .args(["apply", "--yes"])
            .env("BERTH_FAULT_KILL_AT", &kill_at.to_string())
            .run();
        assert!(
            killed.0.status.code().is_none() || killed.0.status.code() == Some(134),
            "kill point {kill_at}: not killed: {}",
            killed.stderr()
        );
        s.berth(&["recover"]).code(0);
        // One generation: the proxy routes only to containers that exist and run, and
        // answers with one version.
        let running: Vec<String> = s.containers();
        assert!(
            running
                .iter()
                .all(|c| !c.contains("-berth-") && c.ends_with(" running")),
            "kill point {kill_at}: {running:?}"
        );
        for server in servers_in_config(&proxy) {
            assert!(
                running.iter().any(|c| c.starts_with(&format!("{server} "))),
                "kill point {kill_at}: the proxy routes to {server}, which is not running: {running:?}"
            );
        }
        let version = wait_for(port, "/version", 200).body.trim().to_owned();
        seen.insert(version.clone());
        write(&version, if version == "v1" { "100/s" } else { "200/s" });
        let plan = s.berth(&["plan", "--detailed-exitcode"]);
        // The config and the pod recovered together, or the plan says what is left.
        assert!(
            plan.0.status.code() == Some(0),
            "kill point {kill_at}: after recover to {version}: {}",
            plan.stdout()
        );
    }
    assert!(seen.contains("v1"), "{seen:?}");
}

/// The proxy's config a spec with rate limit `rate` renders, as the tests read it back.
fn config_text(container: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["cp", &format!("{container}:/etc/berth/nginx.conf"), "-"])
        .output()
        .expect("docker cp runs");
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    let mut text = String::new();
    for e in archive.entries().unwrap() {
        e.unwrap().read_to_string(&mut text).unwrap();
    }
    text
}

#[test]
fn the_proxy_takes_part_in_graph_json_plans_snapshots_saved_plans_and_rollback() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    let write = |rate: &str| {
        s.spec(&format!(
            "rate_limits:\n  api: {{ rate: {rate}, burst: 5 }}\npods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  routes:\n    - {{ path: /, to: api:8080, rate_limit: api }}\n",
            app("api", "v1", 1)
        ))
    };
    write("10/s");
    let graph = s.berth(&["graph"]).code(0).stdout();
    assert!(graph.contains("proxy"), "{graph}");
    assert!(graph.contains("rate_limit.api"), "{graph}");
    s.berth(&["apply", "--yes"]).code(0);
    let proxy = format!("{}-proxy", s.project.0);
    let id = docker::container_id(&proxy).expect("the proxy runs");
    assert!(config_text(&proxy).contains("rate=10r/s"));

    // A limit changed: an update in place, shown as a diff of the config, in JSON too.
    write("20/s");
    let plan = s.plan(2);
    let change = plan
        .changes
        .iter()
        .find(|c| c.address.to_string() == "proxy")
        .expect("the proxy changes");
    assert_eq!(change.action, berth::plan::Action::Update);
    let human = s.berth(&["plan"]).code(0).stdout();
    assert!(
        human.contains("-    limit_req_zone") || human.contains("- "),
        "{human}"
    );
    assert!(human.contains("rate=20r/s"), "{human}");
    let md = s.berth(&["plan", "--format", "markdown"]).code(0).stdout();
    assert!(md.contains("rate=20r/s"), "{md}");

    // Planned offline from a snapshot of the host: the same change.
    let snap = s.berth(&["state", "snapshot"]).code(0).stdout();
    std::fs::write(s.path().join("live.json"), snap).unwrap();
    let offline = s
        .berth(&["plan", "--state", "live.json", "--format", "json"])
        .code(0)
        .stdout();
    assert!(offline.contains("rate=20r/s"), "{offline}");

    // Saved, reviewed, applied as saved.
    s.berth(&["plan", "--out", "plan.json"]).code(0);
    s.berth(&["apply", "plan.json"]).code(0);
    assert!(config_text(&proxy).contains("rate=20r/s"));
    assert_eq!(docker::container_id(&proxy).as_deref(), Some(id.as_str()));
    s.berth(&["plan", "--detailed-exitcode"]).code(0);

    // Rolled back: the previous config is what runs again, in the same container.
    s.berth(&["rollback", "--yes"]).code(0);
    assert!(config_text(&proxy).contains("rate=10r/s"));
    assert_eq!(docker::container_id(&proxy).as_deref(), Some(id.as_str()));
    wait_for(port, "/version", 200);
}

/// A container of no project on a network, removed when dropped.
struct Stranger(String);

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

fn ip_of(container: &str) -> String {
    docker::docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        container,
    ])
}

#[test]
fn a_routed_pod_restarted_at_a_new_address_is_looked_up_again_by_the_proxy() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    s.spec(&format!(
        "pods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  routes:\n    - {{ path: /, to: api:8080 }}\n",
        app("api", "v1", 1)
    ));
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(wait_for(port, "/version", 200).body.trim(), "v1");
    // Stopped by hand, and its address taken by another container while it is down (the
    // engine gives the lowest free one): the
    // heal starts it at a new address, which the proxy must look up (nginx resolves names
    // when it loads its config).
    let api = s.name("api");
    let old_ip = ip_of(&api);
    docker::docker(&["stop", &api]);
    let stranger = Stranger(format!("{}-stranger", s.project.0));
    docker::docker(&[
        "run",
        "-d",
        "--name",
        &stranger.0,
        "--network",
        &format!("{}-default", s.project.0),
        docker::sleeper_image(),
    ]);
    s.berth(&["apply", "--yes"]).code(0);
    let new_ip = ip_of(&api);
    assert_ne!(new_ip, old_ip);
    assert_eq!(
        wait_for(port, "/version", 200).body.trim(),
        "v1",
        "{old_ip} -> {new_ip}"
    );
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    drop(stranger);
}

#[test]
fn a_switch_undone_by_a_later_failed_gate_fails_no_request() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    let write = |version: &str, late: &str| {
        s.spec(&format!(
            "pods:\n{}{late}proxy:\n  image: {image}\n  listen: [{port}]\n  routes:\n    - {{ path: /, to: api:8080 }}\n",
            app("api", version, 1)
        ))
    };
    write("v1", "");
    s.berth(&["apply", "--yes"]).code(0);
    wait_for(port, "/version", 200);
    // v2 of `api` is switched in through the proxy, then `late` (after it) fails its gate:
    // everything is undone, the switch included, under load.
    let late = format!(
        "  late:\n    image: {}\n    depends_on: [api]\n    env: {{ FAIL_HEALTH: 1 }}\n    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 3 }}\n",
        docker::testapp_image()
    );
    write("v2", &late);
    let load = Load::start(port);
    let r = s.berth(&["apply", "--yes"]);
    assert_ne!(r.0.status.code(), Some(0), "{}", r.stderr());
    assert!(r.stderr_flat().contains("late"), "{}", r.stderr());
    let Served {
        ok,
        failed,
        versions,
    } = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(
        versions.contains("v2"),
        "the switch never happened: {versions:?}"
    );
    assert_eq!(get(port, "/version").body.trim(), "v1");
    assert_eq!(
        servers_in_config(&format!("{}-proxy", s.project.0)),
        [s.name("api")]
    );
    assert!(
        s.containers().iter().all(|c| !c.contains("-berth-")),
        "{:?}",
        s.containers()
    );
    write("v1", "");
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_rate_limit_keyed_by_a_header_counts_each_key_apart() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    s.spec(&format!(
        "rate_limits:\n  partner: {{ rate: 1/min, burst: 2, key: {{ header: X-Api-Key }} }}\npods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  routes:\n    - {{ path: /, to: api:8080, rate_limit: partner }}\n",
        app("api", "v1", 1)
    ));
    s.berth(&["apply", "--yes"]).code(0);
    wait_for(port, "/.berth/health", 200);
    let with_key = |key: &str| {
        (0..5)
            .map(|_| {
                request(port, "GET", "/version", &[("X-Api-Key", key)])
                    .expect("answered")
                    .status
            })
            .collect::<Vec<u16>>()
    };
    // 1 a minute with a burst of 2: three get through per key, then 429s.
    assert_eq!(with_key("alpha"), [200, 200, 200, 429, 429]);
    assert_eq!(with_key("beta"), [200, 200, 200, 429, 429]);
    assert_eq!(with_key("alpha"), [429, 429, 429, 429, 429]);
}

#[test]
fn behind_a_trusted_load_balancer_the_client_is_the_one_it_names() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    // Requests reach the proxy from the engine's bridge: that is the trusted peer here.
    s.spec(&format!(
        "rate_limits:\n  each: {{ rate: 1/min }}\npods:\n{}proxy:\n  image: {image}\n  listen: [{port}]\n  real_ip: {{ header: X-Forwarded-For, trust: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8] }}\n  routes:\n    - {{ path: /, to: api:8080, rate_limit: each }}\n",
        app("api", "v1", 1)
    ));
    s.berth(&["apply", "--yes"]).code(0);
    wait_for(port, "/.berth/health", 200);
    let from = |client: &str| {
        request(port, "GET", "/version", &[("X-Forwarded-For", client)])
            .expect("answered")
            .status
    };
    // One request a minute per client, each client as the balancer names it.
    assert_eq!(from("203.0.113.7"), 200);
    assert_eq!(from("203.0.113.7"), 429);
    assert_eq!(from("198.51.100.9"), 200);
    assert_eq!(from("198.51.100.9"), 429);
}

#[test]
fn a_pod_moving_to_another_port_with_its_route_is_replaced_without_a_failed_request() {
    let Some(image) = nginx() else { return };
    let s = Scene::new();
    let port = free_port();
    let write = |version: &str, app_port: u16| {
        s.spec(&format!(
            "pods:\n  api:\n    image: {}\n    env: {{ VERSION: {version}, PORT: {app_port} }}\n    health: {{ http: {{ port: {app_port}, path: /health }}, interval: 200ms, retries: 40 }}\n    update: {{ strategy: blue-green, drain: 1s }}\nproxy:\n  image: {image}\n  listen: [{port}]\n  routes:\n    - {{ path: /, to: \"api:{app_port}\" }}\n",
            docker::testapp_image()
        ))
    };
    write("v1", 8080);
    s.berth(&["apply", "--yes"]).code(0);
    wait_for(port, "/version", 200);
    let load = Load::start(port);
    // The new version listens on another port, and the route follows it.
    write("v2", 9090);
    s.berth(&["apply", "--yes"]).code(0);
    let Served { ok, failed, .. } = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert_eq!(get(port, "/version").body.trim(), "v2");
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
}
