//! The three stacks of issue 12 applied for real, from their example specs:
//! `examples/production` (TLS, http→https, 10 r/s burst 10 and 50 r/s, strict headers),
//! `examples/webapp` (100/min, CORS, HSTS and a CSP of its own) and `examples/paintbox` (a
//! blue-green API behind the proxy with JSON and header checks).
//!
//! No registry is reachable, so each test loads the example as data and derives a runnable
//! variant of it, changing only what this machine cannot have: every pod runs the test app
//! (its `command`/`entrypoint` dropped, `PORT` set to the port its routes and checks use,
//! `VERSION` to its image's tag, a `health.cmd` turned into `health.http` on that port), the
//! proxy runs the test nginx on free ports, the identity is made by `secrets init` in the
//! scene (its key added to `recipients`), and backup stores move under
//! `~/.cache/berth-tests`, with the test app's stand-ins (`testapp emit`, `testapp absorb`)
//! as their dump and restore commands. The test app answers JSON only at
//! `/.well-known/jwks.json`, so an `expect_json` of another path (the production backend's
//! `/health` reporting its database) cannot be met by it and is left out; status, latency,
//! header and JWKS expectations stay. Routes, hosts, rate limits, headers, CORS, TLS,
//! redirect, update strategies, depends_on, volumes, secrets, users and the environment
//! (`production`: lints are errors) are kept as written, and the derived spec validates
//! with no diagnostic.

use crate::common;
use crate::proxy::{Answer, free_port, nginx, request, wait_for};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Berth, Scene, docker};
use serde_json::{Value, json};

/// The JWKS the test app serves (a public key), as the value of a `format: jwks` secret.
const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"test","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

/// An example stack deployed in a scene of its own.
struct Stack {
    s: Scene,
    /// The example's text (a release edits it).
    text: String,
    /// The proxy's listen ports: the example's → free ports here.
    ports: BTreeMap<u64, u16>,
    nginx: String,
    /// Our identity's public key, once `secrets init` made it.
    recipient: Option<String>,
    /// The backup stores' directory.
    store: PathBuf,
    /// The certificate of the TLS listener, which curl trusts (`ca.pem` in the scene).
    ca: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
        // The backups' timers and services (berth-PROJECT-backup-NAME.*).
        let prefix = format!("berth-{}-", self.s.project.0);
        if let Ok(entries) = std::fs::read_dir(common::unit_dir()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

impl Stack {
    /// The derived spec of `examples/NAME/berth.yaml` written, the identity made, and every
    /// secret set; `None` (the test skips) without the engine or the nginx image.
    fn new(name: &str) -> Option<Stack> {
        let nginx = nginx()?;
        let text =
            std::fs::read_to_string(common::repo().join(format!("examples/{name}/berth.yaml")))
                .expect("the example");
        let example: Value = serde_saphyr::from_str(&text).expect("the example is YAML");
        let ports = example["proxy"]["listen"]
            .as_array()
            .expect("the example has a proxy")
            .iter()
            .map(|p| (p.as_u64().unwrap(), free_port()))
            .collect();
        let s = Scene::new();
        let store = common::store_root(&s.project.0);
        let ca = s.path().join("ca.pem");
        let mut st = Stack {
            s,
            text,
            ports,
            nginx,
            recipient: None,
            store,
            ca,
        };
        st.write(|_| {});
        let init = st.s.berth(&["secrets", "init"]).code(0);
        st.recipient = Some(init.stdout().trim().to_owned());
        st.write(|_| {});
        let valid = st.s.berth(&["validate"]).code(0);
        let said = format!("{}{}", valid.stdout(), valid.stderr());
        assert!(said.contains("(0 warning(s))"), "{said}");
        st.set_secrets();
        Some(st)
    }

    /// The free port standing for the example's listen port `port`.
    fn port(&self, port: u64) -> u16 {
        self.ports[&port]
    }

    /// The derived spec of the current text (then `edit`), written to the scene as JSON (a
    /// YAML document berth reads like any other); returns it.
    fn write(&self, edit: impl FnOnce(&mut Value)) -> Value {
        let mut spec: Value = serde_saphyr::from_str(&self.text).expect("YAML");
        self.derive(&mut spec);
        edit(&mut spec);
        let text = serde_json::to_string_pretty(&spec).unwrap();
        std::fs::write(self.s.path().join("berth.yaml"), text).unwrap();
        spec
    }

    fn derive(&self, spec: &mut Value) {
        spec["project"] = json!(self.s.project.0);
        spec["identity"] = json!("./me.key");
        if let Some(r) = &self.recipient {
            spec["recipients"].as_array_mut().unwrap().push(json!(r));
        }
        let routes = spec["proxy"]["routes"].clone();
        for (name, pod) in spec["pods"].as_object_mut().unwrap() {
            derive_pod(name, pod, &routes);
        }
        let proxy = &mut spec["proxy"];
        proxy["image"] = json!(self.nginx);
        proxy["listen"] = json!(self.ports.values().collect::<Vec<_>>());
        for tls in proxy["tls"].as_array_mut().into_iter().flatten() {
            tls["port"] = json!(self.port(tls["port"].as_u64().unwrap()));
        }
        if let Some(backups) = spec["backups"].as_object_mut() {
            for (name, b) in backups {
                b["store"] = json!(self.store.join(name).display().to_string());
                let source = &mut b["source"];
                if source.get("exec").is_some() {
                    source["exec"] = json!(["/testapp", "emit", "65536"]);
                }
                if source.get("restore").is_some() {
                    source["restore"] = json!(["/testapp", "absorb", "/tmp/restored"]);
                }
            }
        }
    }

    /// Sets every secret of the derived spec with a value that passes its checks: the TLS
    /// listener's certificate (made with rcgen for the routes' hosts) and key, a JWKS, URLs,
    /// and random values long enough.
    fn set_secrets(&self) {
        let spec = self.write(|_| {});
        let hosts: Vec<String> = spec["proxy"]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["host"].as_str().map(str::to_owned))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut params = rcgen::CertificateParams::new(hosts).unwrap();
        let now = std::time::SystemTime::now();
        params.not_before = (now - Duration::from_secs(86_400)).into();
        params.not_after = (now + Duration::from_secs(365 * 86_400)).into();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().pem();
        std::fs::write(&self.ca, &cert).unwrap();
        let tls = &spec["proxy"]["tls"][0];
        for (name, secret) in spec["secrets"].as_object().unwrap() {
            let value = if tls["cert"] == json!(name) {
                cert.clone()
            } else if tls["key"] == json!(name) {
                key.serialize_pem()
            } else {
                let long = random_hex(secret["min_length"].as_u64().unwrap_or(0).max(32) + 8);
                match secret["format"].as_str() {
                    Some("pem") => rcgen::KeyPair::generate().unwrap().serialize_pem(),
                    Some("jwks") => JWKS.to_owned(),
                    Some("json") => "{}".to_owned(),
                    Some("url") => format!("postgres://app:{long}@db:5432/app"),
                    Some("https-url") => format!("https://{long}@errors.example/42"),
                    _ => long,
                }
            };
            Berth::new()
                .dir(self.s.path())
                .args(["secrets", "set", name])
                .stdin(value.into_bytes())
                .run()
                .code(0);
        }
    }

    /// `apply --yes` (exit 0), then `plan --detailed-exitcode` (exit 0: nothing left to do).
    fn apply_and_replan(&self) -> common::Run {
        let applied = self.s.berth(&["apply", "--yes"]).code(0);
        let plan = self.s.berth(&["plan", "--detailed-exitcode"]);
        // Seen once in CI: a keeper not running right after the apply. Its state says why.
        assert_eq!(
            plan.0.status.code(),
            Some(0),
            "re-plan after apply\n--- stdout\n{}\n--- stderr\n{}\n--- keepers\n{}",
            plan.stdout(),
            plan.stderr(),
            docker::keepers_state(&self.s.project.0)
        );
        wait_for(self.port(80), "/.berth/health", 200);
        applied
    }

    /// `destroy --yes`, and nothing of the project is left but the database's backup,
    /// taken before its pod went (`before_apply`).
    fn destroy(&self) {
        self.s.berth(&["destroy", "--yes"]).code(0);
        assert!(self.s.containers().is_empty(), "{:?}", self.s.containers());
        let backups = std::fs::read_dir(self.store.join("db")).map_or(0, |d| d.count());
        assert!(backups > 0, "no backup of the database in its store");
    }

    /// The curl command speaking TLS to `host` at the TLS port (resolved to 127.0.0.1),
    /// trusting only the stack's certificate.
    fn curl(&self, host: &str) -> Command {
        let tls = self.port(443);
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.ca)
            .args(["--resolve", &format!("{host}:{tls}:127.0.0.1")]);
        c
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port(443))
    }

    /// One request over TLS, as curl saw it.
    fn https(&self, host: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut c = self.curl(host);
        c.args(["-i", "-X", method]);
        for (n, v) in headers {
            c.args(["-H", &format!("{n}: {v}")]);
        }
        let out = c
            .arg(self.url(host, path))
            .output()
            .expect("curl runs (.ci/run installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {method} {path}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse(&text)
    }

    /// `n` GETs of `path` at once over TLS (curl, 30 connections at a time): each answer's
    /// status and `Retry-After`.
    fn burst(&self, host: &str, path: &str, n: usize) -> Vec<(u16, String)> {
        let mut c = self.curl(host);
        c.args(["--parallel", "--parallel-max", "30", "-w"])
            .arg("%{http_code} %header{retry-after}\n");
        for _ in 0..n {
            c.args(["-o", "/dev/null", &self.url(host, path)]);
        }
        let out = c.output().expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let answers: Vec<(u16, String)> = text
            .lines()
            .map(|l| {
                let (code, retry) = l.split_once(' ').unwrap_or((l, ""));
                (code.parse().unwrap_or(0), retry.trim().to_owned())
            })
            .collect();
        assert_eq!(answers.len(), n, "{text}");
        answers
    }
}

/// A pod of the example made runnable here (see the module's comment).
fn derive_pod(name: &str, pod: &mut Value, routes: &Value) {
    let image = pod["image"].as_str().unwrap_or_default().to_owned();
    let tag = image
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or("latest", |(_, t)| t)
        .to_owned();
    let port = port_of(name, pod, routes, &image);
    let pod = pod.as_object_mut().unwrap();
    pod.insert("image".into(), json!(docker::testapp_image()));
    pod.remove("command");
    pod.remove("entrypoint");
    let env = pod.entry("env").or_insert_with(|| json!({}));
    env["PORT"] = json!(port.to_string());
    env["VERSION"] = json!(tag);
    if let Some(health) = pod.get_mut("health")
        && health.as_object_mut().unwrap().remove("cmd").is_some()
    {
        health["http"] = json!({ "port": port, "path": "/health" });
    }
    for check in pod
        .get_mut("checks")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let http = check["http"].as_object_mut().unwrap();
        if http.get("path") != Some(&json!("/.well-known/jwks.json")) {
            http.remove("expect_json");
        }
    }
    for mapping in pod
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let container = mapping
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
        *mapping = json!(format!("127.0.0.1:{}:{container}", free_port()));
    }
}

/// The port a pod serves on: the one its routes or checks name, else its HTTP probe's, its
/// `PORT`, or its image's usual port.
fn port_of(name: &str, pod: &Value, routes: &Value, image: &str) -> u64 {
    let routed = routes.as_array().into_iter().flatten().find_map(|r| {
        let (pod, port) = r["to"].as_str()?.split_once(':')?;
        (pod == name).then(|| port.parse().ok()).flatten()
    });
    let checked = pod["checks"][0]["http"]["port"].as_u64();
    let probed = pod["health"]["http"]["port"].as_u64();
    let env = pod["env"]["PORT"]
        .as_u64()
        .or_else(|| pod["env"]["PORT"].as_str()?.parse().ok());
    let usual = if image.starts_with("postgres") {
        5432
    } else if image.starts_with("redis") {
        6379
    } else {
        8080
    };
    routed.or(checked).or(probed).or(env).unwrap_or(usual)
}

/// `n` random hex digits.
fn random_hex(n: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while (out.len() as u64) < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n as usize);
    out
}

/// curl's `-i` output as an answer.
fn parse(text: &str) -> Answer {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// HSTS as the strict set sends it: a year, subdomains included.
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// A CORS preflight for `POST` from `origin`.
fn preflight(origin: &str) -> [(&str, &str); 2] {
    [
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
    ]
}

#[test]
fn the_production_stack_serves_tls_redirects_http_and_limits_the_api_to_10_per_second() {
    let Some(st) = Stack::new("production") else {
        return;
    };
    st.apply_and_replan();
    let (plain, tls) = (st.port(80), st.port(443));
    // Plain HTTP: everything but the proxy's health goes to https.
    let moved = request(
        plain,
        "GET",
        "/v1/items?page=2",
        &[("Host", "api.advisor.example")],
    )
    .unwrap();
    assert_eq!(moved.status, 301, "{moved:?}");
    assert_eq!(
        moved.header("location"),
        Some(format!("https://api.advisor.example:{tls}/v1/items?page=2").as_str())
    );
    assert!(
        moved.header("strict-transport-security").is_none(),
        "{moved:?}"
    );
    // Over TLS: the site, with the strict set and HSTS for a year.
    let site = st.https("advisor.example", "GET", "/version", &[]);
    assert_eq!(site.status, 200, "{site:?}");
    assert_eq!(site.body.trim(), "2.3.0", "the frontend answers");
    assert_eq!(site.header("strict-transport-security"), Some(HSTS));
    assert_eq!(site.header("x-frame-options"), Some("DENY"));
    assert_eq!(site.header("x-content-type-options"), Some("nosniff"));
    assert!(site.header("content-security-policy").is_some(), "{site:?}");
    // The API's JWKS through the proxy (its check gated the backend), and its CORS.
    let jwks = st.https("api.advisor.example", "GET", "/.well-known/jwks.json", &[]);
    assert!(jwks.body.contains("\"kty\""), "{jwks:?}");
    let allowed = st.https(
        "api.advisor.example",
        "OPTIONS",
        "/v1/items",
        &preflight("https://advisor.example"),
    );
    assert_eq!(allowed.status, 204, "{allowed:?}");
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://advisor.example")
    );
    let other = st.https(
        "api.advisor.example",
        "OPTIONS",
        "/v1/items",
        &preflight("https://evil.example"),
    );
    assert!(
        other.header("access-control-allow-origin").is_none(),
        "{other:?}"
    );
    // 10 r/s burst 10 on the API: of 60 requests at once, at most the burst and what
    // refilled while they ran get through; the rest are 429 with Retry-After. The site's
    // 50 r/s (burst 50) lets 40 at once through.
    std::thread::sleep(Duration::from_millis(1500));
    let api = st.burst("api.advisor.example", "/version", 60);
    let passed = api.iter().filter(|(c, _)| *c == 200).count();
    let refused: Vec<&(u16, String)> = api.iter().filter(|(c, _)| *c == 429).collect();
    assert_eq!(passed + refused.len(), 60, "{api:?}");
    assert!(
        (11..=30).contains(&passed),
        "{passed} of 60 passed: {api:?}"
    );
    assert!(
        refused.iter().all(|(_, retry)| !retry.is_empty()),
        "{api:?}"
    );
    let site = st.burst("advisor.example", "/version", 40);
    assert!(site.iter().all(|(c, _)| *c == 200), "{site:?}");
    st.destroy();
}

#[test]
fn the_webapp_stack_answers_cors_preflights_sends_hsts_and_its_csp_and_limits_100_per_minute() {
    let Some(st) = Stack::new("webapp") else {
        return;
    };
    let spec = st.write(|_| {});
    let csp = spec["proxy"]["headers"]["Content-Security-Policy"]
        .as_str()
        .unwrap()
        .to_owned();
    st.apply_and_replan();
    let host = "estimates.example";
    let moved = request(st.port(80), "GET", "/api/jobs", &[("Host", host)]).unwrap();
    assert_eq!(moved.status, 301, "{moved:?}");
    // A preflight from an allowed origin: answered by the proxy with the whole policy.
    let origin = "https://field.estimates.example";
    let pre = st.https(host, "OPTIONS", "/api/jobs", &preflight(origin));
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(pre.header("access-control-allow-origin"), Some(origin));
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE")
    );
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("Authorization, Content-Type")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    let other = st.https(
        host,
        "OPTIONS",
        "/api/jobs",
        &preflight("https://evil.example"),
    );
    assert!(
        other.header("access-control-allow-origin").is_none(),
        "{other:?}"
    );
    // The API's answer to that origin, and a page: HSTS and the spec's CSP on both.
    let api = st.https(host, "GET", "/api/version", &[("Origin", origin)]);
    assert_eq!(api.status, 200, "{api:?}");
    // The app got the path as asked (`/api/version`, no route of its own: its catch-all).
    assert_eq!(api.header("x-testapp-version"), Some("3.2.0"), "{api:?}");
    assert_eq!(api.header("access-control-allow-origin"), Some(origin));
    let page = st.https(host, "GET", "/", &[]);
    assert_eq!(page.status, 200, "{page:?}");
    for a in [&api, &page] {
        assert_eq!(a.header("strict-transport-security"), Some(HSTS), "{a:?}");
        assert_eq!(
            a.header("content-security-policy"),
            Some(csp.as_str()),
            "{a:?}"
        );
    }
    // 100/min, burst 20: of 40 API requests at once, about the burst gets through.
    let answers = st.burst(host, "/api/version", 40);
    let passed = answers.iter().filter(|(c, _)| *c == 200).count();
    let refused = answers
        .iter()
        .filter(|(c, r)| *c == 429 && !r.is_empty())
        .count();
    assert_eq!(passed + refused, 40, "{answers:?}");
    assert!(
        (15..=25).contains(&passed),
        "{passed} of 40 passed: {answers:?}"
    );
    // Pages have their own limit (20/s, burst 40).
    assert_eq!(st.https(host, "GET", "/", &[]).status, 200);
    st.destroy();
}

/// GETs `/version` of `host` over TLS, one curl after another, until `stop`: (versions
/// answered, failures).
fn load(
    st: &Stack,
    host: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, Vec<String>)> {
    let mut curl = st.curl(host);
    curl.args(["-w", " %{http_code}"])
        .arg(st.url(host, "/version"));
    std::thread::spawn(move || {
        let (mut versions, mut failed) = (Vec::new(), Vec::new());
        // Bounded: at most 3,000 requests.
        for _ in 0..3_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let out = curl.output().expect("curl runs");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            match text.rsplit_once(' ') {
                Some((body, "200")) if out.status.success() => {
                    versions.push(body.trim().to_owned())
                }
                _ => failed.push(format!("{text} {}", String::from_utf8_lossy(&out.stderr))),
            }
        }
        (versions, failed)
    })
}

#[test]
fn the_paintbox_stack_releases_its_api_blue_green_without_a_failed_request() {
    let Some(mut st) = Stack::new("paintbox") else {
        return;
    };
    let host = "paintbox.example";
    st.apply_and_replan();
    let first = st.https(host, "GET", "/version", &[]);
    assert_eq!(first.body.trim(), "2.8.0", "{first:?}");
    assert_eq!(first.header("strict-transport-security"), Some(HSTS));
    let jwks = st.https(host, "GET", "/.well-known/jwks.json", &[]);
    let keys: Value = serde_json::from_str(&jwks.body).expect("JSON");
    assert!(!keys["keys"].as_array().unwrap().is_empty(), "{jwks:?}");
    // A release: the API's new image, applied under load through the TLS proxy.
    st.text = st
        .text
        .replace("ghcr.io/paintbox/api:2.8.0", "ghcr.io/paintbox/api:2.8.1");
    st.write(|_| {});
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(&st, host, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let plan = st.s.berth(&["plan"]).code(0).stdout();
    assert!(plan.contains("pod.api[0]"), "{plan}");
    st.s.berth(&["apply", "--yes"]).code(0);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (versions, failed) = traffic.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        versions.len() + failed.len()
    );
    assert!(versions.len() > 20, "only {} requests", versions.len());
    let seen: BTreeSet<&str> = versions.iter().map(String::as_str).collect();
    assert_eq!(seen, BTreeSet::from(["2.8.0", "2.8.1"]), "{versions:?}");
    st.s.berth(&["plan", "--detailed-exitcode"]).code(0);
    assert!(
        st.s.containers().iter().all(|c| !c.contains("-berth-")),
        "{:?}",
        st.s.containers()
    );
    // A release whose key set is empty (the seed's outage) fails its check: the candidate
    // never gets traffic and the running release keeps serving.
    st.text = st
        .text
        .replace("ghcr.io/paintbox/api:2.8.1", "ghcr.io/paintbox/api:2.8.2");
    st.write(|spec| spec["pods"]["api"]["env"]["JWKS_EMPTY"] = json!("1"));
    let refused = st.s.berth(&["apply", "--yes"]);
    assert_ne!(refused.0.status.code(), Some(0), "{}", refused.stderr());
    assert!(
        refused.stderr_flat().contains("`/keys` is empty"),
        "{}",
        refused.stderr()
    );
    assert_eq!(st.https(host, "GET", "/version", &[]).body.trim(), "2.8.1");
    st.destroy();
}
