//! Tests of the renderer: each feature as text or structure, snapshots of whole configs
//! (`fixtures/proxy/`), determinism, and the real `nginx -t` when nginx is installed.

use std::path::Path;

use super::*;
use crate::spec::Spec;

fn spec(yaml: &str) -> Spec {
    let loaded = crate::spec::load_str(Path::new("test.yaml"), yaml.to_owned());
    assert!(
        !loaded.report.has_errors(),
        "spec has errors: {:?}",
        loaded.report
    );
    loaded.spec.expect("parsed")
}

fn fixture(name: &str) -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/proxy")
        .join(name);
    spec(&std::fs::read_to_string(path).expect("fixture"))
}

fn rendered(s: &Spec) -> String {
    let proxy = s.proxy.as_ref().expect("proxy");
    render(s, proxy, &stable_servers(s, s.primary_region()))
}

fn config(yaml: &str) -> String {
    rendered(&spec(yaml))
}

const BASE: &str = "version: 1\nproject: shop\n";
const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

/// The blocks of a config whose head starts with `head` (`location`, `server`), as the text
/// between their braces (nested blocks included).
fn blocks<'a>(text: &'a str, head: &str) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(head) {
        let start = from + i;
        from = start + head.len();
        let line_start = text[..start].rfind('\n').map_or(0, |n| n + 1);
        if !text[line_start..start].trim().is_empty() {
            continue;
        }
        let Some(open) = text[start..].find('{').map(|o| start + o) else {
            break;
        };
        if text[start..open].contains(';') {
            continue;
        }
        let mut depth = 0;
        for (k, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((&text[start..open], &text[open + 1..open + k]));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The names of the headers a block adds itself (not those of blocks nested in it).
fn added(body: &str) -> Vec<String> {
    let mut depth = 0;
    let mut names = Vec::new();
    for line in body.lines() {
        let t = line.trim();
        if depth == 0
            && let Some(rest) = t.strip_prefix("add_header ")
        {
            let name = rest.split_whitespace().next().unwrap_or("");
            names.push(name.trim_matches('"').to_owned());
        }
        depth += t.matches('{').count();
        depth -= t.matches('}').count();
    }
    names
}

#[test]
fn the_command_runs_nginx_in_the_foreground_on_the_config() {
    assert_eq!(
        command(),
        ["nginx", "-c", "/etc/berth/nginx.conf", "-g", "daemon off;"]
    );
    assert!(CONFIG_PATH.starts_with(CONFIG_DIR));
}

#[test]
fn stable_servers_name_each_instance_of_each_routed_pod() {
    let s = fixture("shop.yaml");
    let servers = stable_servers(&s, "local");
    assert_eq!(servers["api"], ["shop-api-0", "shop-api-1", "shop-api-2"]);
    assert_eq!(servers["web"], ["shop-web"]);
    assert_eq!(servers.len(), 2);
    let s = spec(&format!(
        "{BASE}regions:\n  fra: {{ engine: unix:///a, primary: true }}\n  ord: {{ engine: unix:///b }}\n\
         pods:\n  api: {{ image: a:1 }}\n  db: {{ image: d:1, regions: [fra] }}\n\
         proxy:\n  image: nginx:1\n  routes:\n    - {{ to: api:80 }}\n"
    ));
    let servers = stable_servers(&s, "ord");
    assert_eq!(servers.keys().collect::<Vec<_>>(), ["api"]);
}

#[test]
fn the_main_context_runs_as_an_unprivileged_foreground_process_would() {
    let c = config(&format!(
        "{BASE}pods:\n  api: {{ image: a:1 }}\nproxy:\n  image: nginx:1\n  routes:\n    - {{ to: api:80 }}\n"
    ));
    for l in [
        "\nworker_processes auto;\n",
        "\npid /tmp/berth-nginx.pid;\n",
        "\nerror_log stderr warn;\n",
        "\nevents {\n",
        "    access_log /dev/stdout;\n",
        "    server_tokens off;\n",
        "    default_type application/octet-stream;\n",
        "    client_body_temp_path /tmp/",
        "    proxy_temp_path /tmp/",
        "    fastcgi_temp_path /tmp/",
        "    uwsgi_temp_path /tmp/",
        "    scgi_temp_path /tmp/",
        "    proxy_set_header Host $host;\n",
        "    proxy_set_header X-Real-IP $remote_addr;\n",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
        "    proxy_set_header X-Forwarded-Proto $scheme;\n",
        "    proxy_next_upstream error timeout http_502;\n",
    ] {
        assert!(c.contains(l), "missing {l:?} in\n{c}");
    }
    for absent in ["\nuser ", "include", "daemon"] {
        assert!(!c.contains(absent), "{absent:?} in\n{c}");
    }
    // One directive per line: every line ends a directive, opens or closes a block, or is a
    // comment.
    for l in c.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            l.starts_with('#') || l.ends_with(';') || l.ends_with('{') || l == "}",
            "{l}"
        );
    }
}

#[test]
fn an_upstream_per_pod_and_port_holds_its_servers_or_a_placeholder() {
    let s = spec(&format!(
        "{BASE}pods:\n  api: {{ image: a:1, replicas: 2 }}\n  web: {{ image: w:1 }}\n\
         proxy:\n  image: nginx:1\n  routes:\n    - {{ host: a.example, to: api:8000 }}\n\
         \x20   - {{ host: b.example, to: api:9000 }}\n    - {{ to: web:80 }}\n"
    ));
    let c = rendered(&s);
    let up = blocks(&c, "upstream api_8000");
    assert_eq!(up.len(), 1);
    assert!(up[0].1.contains("server shop-api-0:8000;\n"));
    assert!(up[0].1.contains("server shop-api-1:8000;\n"));
    assert!(c.contains("server shop-api-1:9000;\n"));
    assert!(c.contains("proxy_pass http://api_9000;\n"));
    // No container yet: a placeholder that keeps the config valid.
    let mut servers = stable_servers(&s, "local");
    servers.remove("web");
    servers.insert("api".into(), Vec::new());
    let c = render(&s, s.proxy.as_ref().unwrap(), &servers);
    let up = blocks(&c, "upstream web_80");
    assert!(up[0].1.contains("server 127.0.0.1:1 down;\n"));
    assert!(!c.contains("shop-api"));
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let c = config(&format!(
        "{BASE}rate_limits:\n  api: {{ rate: 10/s, burst: 10 }}\n  slow: {{ rate: 100/min }}\n\
         \x20 keyed: {{ rate: 30/min, burst: 2, key: {{ header: X-Api-Key }} }}\n\
         pods:\n  api: {{ image: a:1 }}\nproxy:\n  image: nginx:1\n  routes:\n\
         \x20   - {{ path: /a, to: api:80, rate_limit: api }}\n\
         \x20   - {{ path: /b, to: api:80, rate_limit: slow }}\n\
         \x20   - {{ path: /c, to: api:80, rate_limit: keyed }}\n"
    ));
    assert!(c.contains("limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;\n"));
    assert!(c.contains("limit_req_zone $binary_remote_addr zone=slow:10m rate=100r/m;\n"));
    assert!(c.contains("limit_req_zone $berth_limit_key_2 zone=keyed:10m rate=30r/m;\n"));
    let map = blocks(&c, "map $http_x_api_key $berth_limit_key_2");
    assert_eq!(map.len(), 1, "{c}");
    assert!(map[0].1.contains("\"\" $binary_remote_addr;"));
    assert!(map[0].1.contains("default $http_x_api_key;"));
    let loc = |p: &str| blocks(&c, &format!("location \"{p}\""))[0].1;
    assert!(loc("/a").contains("limit_req zone=api burst=10 nodelay;\n"));
    assert!(loc("/b").contains("limit_req zone=slow;\n"));
    assert!(c.contains("    limit_req_status 429;\n"));
    assert!(c.contains("error_page 429 = @berth_429;\n"));
    let named = blocks(&c, "location @berth_429");
    assert!(!named.is_empty());
    assert!(named[0].1.contains("add_header Retry-After 1 always;"));
    assert!(named[0].1.contains("return 429;"));
}

#[test]
fn strict_headers_are_on_every_response_and_hsts_only_over_tls() {
    let s = fixture("shop.yaml");
    let c = rendered(&s);
    let strict = [
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Referrer-Policy",
        "Content-Security-Policy",
        "Permissions-Policy",
    ];
    let servers = blocks(&c, "server {");
    assert!(servers.len() >= 4, "{c}");
    for (_, body) in &servers {
        let tls = body.contains(" ssl");
        let mut answering = 0;
        for head in ["location", "if ("] {
            for (h, b) in blocks(body, head) {
                if !b.contains("return") && !b.contains("proxy_pass") {
                    continue;
                }
                answering += 1;
                let names = added(b);
                for want in strict {
                    assert!(names.iter().any(|n| n == want), "{want} missing in {h}{b}");
                }
                let hsts = names.iter().any(|n| n == "Strict-Transport-Security");
                assert_eq!(hsts, tls, "HSTS in {h} of a server with tls={tls}");
            }
        }
        assert!(answering >= 2);
    }
    assert!(c.contains(
        "add_header \"Strict-Transport-Security\" \"max-age=31536000; includeSubDomains\" always;"
    ));
    assert!(c.contains("add_header \"X-Frame-Options\" \"DENY\" always;"));
    assert!(c.contains(
        "add_header \"Content-Security-Policy\" \"default-src 'self'; frame-ancestors 'none'; base-uri 'self'\" always;"
    ));
    assert!(c.contains(
        "add_header \"Permissions-Policy\" \"camera=(), microphone=(), geolocation=()\" always;"
    ));
}

#[test]
fn basic_headers_and_the_spec_s_headers_merge_over_the_preset() {
    let c = rendered(&fixture("plain.yaml"));
    assert!(c.contains("add_header \"X-Content-Type-Options\" \"nosniff\" always;"));
    assert!(
        c.contains("add_header \"Referrer-Policy\" \"strict-origin-when-cross-origin\" always;")
    );
    assert!(!c.contains("Content-Security-Policy"));
    let c = rendered(&fixture("cors.yaml"));
    assert!(c.contains(
        "add_header \"Content-Security-Policy\" \"default-src 'none'; img-src 'self' data:\" always;"
    ));
    assert!(
        !c.contains("Permissions-Policy"),
        "an empty value removes it"
    );
    assert!(c.contains("add_header \"X-Served-By\" \"berth\" always;"));
    assert!(
        !c.contains("add_header \"Strict-Transport-Security\""),
        "no TLS listener"
    );
    // The upstream's own copy of a header the proxy sets is dropped.
    assert!(c.contains("proxy_hide_header \"X-Served-By\";"));
    // Quoted as nginx reads strings; a `$` stays a variable.
    let c = config(&format!(
        "{BASE}pods:\n  api: {{ image: a:1 }}\nproxy:\n  image: nginx:1\n  headers:\n\
         \x20   X-Odd: 'a \"quoted\" ; value \\ here'\n    X-Id: $request_id\n\
         \x20 routes:\n    - {{ to: api:80 }}\n"
    ));
    assert!(
        c.contains(r#"add_header "X-Odd" "a \"quoted\" ; value \\ here" always;"#),
        "{c}"
    );
    assert!(c.contains(r#"add_header "X-Id" "$request_id" always;"#));
}

#[test]
fn an_unrouted_path_is_a_404_with_the_headers_and_hosts_inherit_routes_without_host() {
    let c = rendered(&fixture("plain.yaml"));
    let servers = blocks(&c, "server {");
    assert_eq!(servers.len(), 1, "two plain ports, one server");
    let body = servers[0].1;
    assert!(body.contains("listen 80 default_server;\n"));
    assert!(body.contains("listen 8080 default_server;\n"));
    assert!(body.contains("server_name _;\n"));
    let catch_all = blocks(body, "location /");
    let not_found = catch_all
        .iter()
        .find(|(h, _)| h.trim() == "location /")
        .unwrap();
    assert!(not_found.1.contains("return 404;"));
    assert!(added(not_found.1).contains(&"X-Frame-Options".to_owned()));
    let c = config(&format!(
        "{BASE}pods:\n  api: {{ image: a:1 }}\n  web: {{ image: w:1 }}\nproxy:\n  image: nginx:1\n  routes:\n\
         \x20   - {{ path: /health-of-api, to: api:80 }}\n\
         \x20   - {{ host: web.example, to: web:80 }}\n"
    ));
    let servers = blocks(&c, "server {");
    let web = servers
        .iter()
        .find(|(_, b)| b.contains("server_name web.example;"))
        .unwrap();
    assert!(web.1.contains("location \"/health-of-api\""));
    assert!(web.1.contains("location \"/\""));
    assert!(!web.1.contains("return 404;"));
    let default = servers
        .iter()
        .find(|(_, b)| b.contains("server_name _;"))
        .unwrap();
    assert!(!default.1.contains("web_80"));
    assert!(default.1.contains("return 404;"));
    assert!(c.contains("# route web.example/ -> web:80\n"));
    assert!(c.contains("# route */health-of-api -> api:80\n"));
}

#[test]
fn tls_listeners_terminate_with_the_secrets_and_plain_ones_redirect() {
    let c = rendered(&fixture("shop.yaml"));
    let servers = blocks(&c, "server {");
    // Three hosts (api, shop, any other) over TLS; one plain server redirects them all.
    assert_eq!(servers.len(), 4);
    let plain: Vec<_> = servers
        .iter()
        .filter(|(_, b)| !b.contains(" ssl"))
        .collect();
    assert_eq!(plain.len(), 1);
    assert!(plain[0].1.contains("listen 80 default_server;\n"));
    for (_, body) in &servers {
        let tls = body.contains("listen 443 ssl");
        assert!(body.contains(&format!("location = {HEALTH_PATH}")));
        if tls {
            assert!(body.contains("ssl_certificate /run/secrets/shop_cert;\n"));
            assert!(body.contains("ssl_certificate_key /run/secrets/shop_key;\n"));
            assert!(body.contains("ssl_protocols TLSv1.2 TLSv1.3;\n"));
            assert!(body.contains("proxy_pass") || body.contains("return 404;"));
        } else {
            assert!(body.contains("listen 80"));
            assert!(body.contains("return 301 https://$host$request_uri;\n"));
            assert!(!body.contains("proxy_pass"));
        }
    }
    assert!(c.contains("listen 443 ssl default_server;\n"));
    // A TLS port other than 443 is named in the redirect.
    let c = config(&format!(
        "{BASE}recipients: [{RECIPIENT}]\nsecrets:\n  c: {{ file: c.age }}\n  k: {{ file: k.age }}\npods:\n  api: {{ image: a:1 }}\n\
         proxy:\n  image: nginx:1\n  listen: [80, 8443]\n  tls: [{{ port: 8443, cert: c, key: k }}]\n\
         \x20 redirect_http: true\n  routes:\n    - {{ to: api:80 }}\n"
    ));
    assert!(c.contains("return 301 https://$host:8443$request_uri;\n"));
}

#[test]
fn real_ip_trusts_only_the_listed_peers() {
    let c = rendered(&fixture("cors.yaml"));
    assert!(c.contains("    set_real_ip_from \"10.0.0.0/8\";\n"));
    assert!(c.contains("    set_real_ip_from \"fd00::/8\";\n"));
    assert!(c.contains("    real_ip_header \"X-Forwarded-For\";\n"));
    let none = rendered(&fixture("plain.yaml"));
    assert!(!none.contains("real_ip"));
}

#[test]
fn cors_answers_preflights_from_allowed_origins_only() {
    let c = rendered(&fixture("cors.yaml"));
    let origin = blocks(&c, "map $http_origin $berth_cors_0");
    assert_eq!(origin.len(), 1);
    assert!(origin[0].1.contains("default \"\";"));
    assert!(
        origin[0]
            .1
            .contains("\"https://maps.example\" $http_origin;")
    );
    assert!(
        origin[0]
            .1
            .contains("\"https://www.maps.example\" $http_origin;")
    );
    assert!(c.contains("$berth_preflight_0 {"));
    assert!(c.contains("map $berth_cors_0 $berth_cors_credentials_0 {"));
    let loc = blocks(&c, "location \"/\"");
    let body = loc[0].1;
    let own = added(body);
    assert!(own.contains(&"Access-Control-Allow-Origin".to_owned()));
    assert!(own.contains(&"Access-Control-Allow-Credentials".to_owned()));
    assert!(own.contains(&"Vary".to_owned()));
    assert!(!own.contains(&"Access-Control-Allow-Methods".to_owned()));
    let pre = blocks(body, "if ($berth_preflight_0)");
    assert_eq!(pre.len(), 1);
    let p = pre[0].1;
    for l in [
        "add_header Access-Control-Allow-Origin $berth_cors_0 always;",
        "add_header Access-Control-Allow-Methods \"GET, POST\" always;",
        "add_header Access-Control-Allow-Headers \"Content-Type, X-Api-Key\" always;",
        "add_header Access-Control-Max-Age 600 always;",
        "add_header Access-Control-Allow-Credentials $berth_cors_credentials_0 always;",
        "add_header Vary Origin always;",
        "add_header \"X-Frame-Options\" \"DENY\" always;",
        "return 204;",
    ] {
        assert!(p.contains(l), "{l} missing in\n{p}");
    }
    // A refusal of the rate limit keeps the CORS headers, so a browser can read the 429.
    assert!(body.contains("error_page 429 = @berth_429_0;"));
    let refused = blocks(&c, "location @berth_429_0");
    assert_eq!(refused.len(), 1);
    for l in [
        "add_header Access-Control-Allow-Origin $berth_cors_0 always;",
        "add_header Retry-After 1 always;",
        "add_header \"X-Frame-Options\" \"DENY\" always;",
        "return 429;",
    ] {
        assert!(refused[0].1.contains(l), "{l} missing in\n{}", refused[0].1);
    }
    // The list form and `*`: any origin, the default methods, the requested headers.
    let c = rendered(&fixture("plain.yaml"));
    let any = blocks(&c, "map $http_origin $berth_cors_0")[0].1;
    assert!(any.contains("default \"*\";"));
    assert!(any.contains("\"\" \"\";"));
    assert!(c.contains(
        "add_header Access-Control-Allow-Methods \"GET, HEAD, POST, PUT, PATCH, DELETE\" always;"
    ));
    assert!(c.contains(
        "add_header Access-Control-Allow-Headers $http_access_control_request_headers always;"
    ));
    assert!(!c.contains("Access-Control-Allow-Credentials $"));
    assert!(!c.contains("Max-Age"));
}

#[test]
fn the_health_endpoint_answers_a_token_of_the_config_on_every_server() {
    let s = fixture("shop.yaml");
    let c = rendered(&s);
    let t = token(&c).expect("a token");
    assert_eq!(t.len(), 16);
    assert_eq!(c.matches(t).count(), 1, "the token is written once");
    assert!(c.contains(&format!(
        "    map $host $berth_token {{\n        default \"{t}\";\n    }}\n"
    )));
    assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    let health = blocks(&c, &format!("location = {HEALTH_PATH}"));
    assert_eq!(health.len(), blocks(&c, "server {").len());
    for (_, b) in &health {
        assert!(b.contains("return 200 \"berth $berth_token\\n\";"));
        assert!(added(b).contains(&"X-Frame-Options".to_owned()));
    }
    // Another config, another token.
    let mut servers = stable_servers(&s, "local");
    servers.insert("web".into(), vec!["shop-web-berth-next".into()]);
    let other = render(&s, s.proxy.as_ref().unwrap(), &servers);
    assert_ne!(token(&other), Some(t));
    assert_eq!(token("http { }"), None);
}

#[test]
fn line_of_finds_the_line_nginx_names() {
    let c = "a;\nb {\n    bad directive;\n}\n";
    let msg = format!("nginx: [emerg] unknown directive \"bad\" in {CONFIG_PATH}:3");
    assert_eq!(line_of(c, &msg), Some((3, "bad directive;".to_owned())));
    assert_eq!(line_of(c, &format!("in {CONFIG_PATH}:9")), None);
    assert_eq!(line_of(c, "in /elsewhere.conf:3"), None);
    assert_eq!(line_of(c, &format!("in {CONFIG_PATH}:0")), None);
}

#[test]
fn render_is_deterministic() {
    for f in ["shop.yaml", "cors.yaml", "plain.yaml"] {
        let a = rendered(&fixture(f));
        let b = rendered(&fixture(f));
        assert_eq!(a, b, "{f}");
    }
    let s = big_spec(200);
    assert_eq!(rendered(&s), rendered(&s));
}

#[test]
fn snapshots_of_whole_configs() {
    let mut settings = insta::Settings::clone_current();
    settings
        .set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/proxy/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for f in ["shop", "cors", "plain"] {
            insta::assert_snapshot!(f, rendered(&fixture(&format!("{f}.yaml"))));
        }
    });
}

/// A spec with `routes` routes (200 hosts, distinct paths) over 50 pods, every tenth
/// rate-limited and every seventh with CORS (as `examples/bench_proxy_render.rs` builds).
fn big_spec(routes: usize) -> Spec {
    use std::fmt::Write as _;
    let mut y = String::from("version: 1\nproject: bench\nrate_limits:\n");
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
    y.push_str("proxy:\n  image: nginx:1.27-alpine\n  security_headers: strict\n  routes:\n");
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
            let _ = write!(y, ", cors: [https://app{}.bench.example]", i % 3);
        }
        y.push_str(" }\n");
    }
    spec(&y)
}

/// `nginx -t` on each snapshot config and a large one, with 127.0.0.1 as every server and
/// a self-signed pair for the TLS listeners; skipped (and said so) without nginx.
#[test]
fn nginx_accepts_the_rendered_configs() {
    let nginx = Path::new("/usr/sbin/nginx");
    if !nginx.exists() {
        eprintln!("skipped: /usr/sbin/nginx is missing (apt-get install nginx)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let have_openssl = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=shop.example"])
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("cert.pem"))
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cases: Vec<(String, Spec)> = ["shop", "cors", "plain"]
        .map(|f| (f.to_owned(), fixture(&format!("{f}.yaml"))))
        .into();
    cases.push(("1000 routes".into(), big_spec(1000)));
    for (name, s) in cases {
        let proxy = s.proxy.as_ref().unwrap();
        if !proxy.tls.is_empty() && !have_openssl {
            eprintln!("skipped {name}: no openssl to make a certificate");
            continue;
        }
        let servers: Servers = stable_servers(&s, "local")
            .into_iter()
            .map(|(pod, names)| (pod, vec!["127.0.0.1".to_owned(); names.len()]))
            .collect();
        let mut text = render(&s, proxy, &servers);
        for t in &proxy.tls {
            text = text
                .replace(
                    &format!("{SECRETS_DIR}/{};", t.value.cert.value),
                    &format!("{}/cert.pem;", dir.path().display()),
                )
                .replace(
                    &format!("{SECRETS_DIR}/{};", t.value.key.value),
                    &format!("{}/key.pem;", dir.path().display()),
                );
        }
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, &text).expect("write");
        let out = std::process::Command::new(nginx)
            .arg("-t")
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir.path())
            .output()
            .expect("nginx runs");
        let err = String::from_utf8_lossy(&out.stderr);
        let at = err
            .lines()
            .find_map(|l| {
                let n: usize = l.rsplit(':').next()?.trim().parse().ok()?;
                text.lines().nth(n.checked_sub(1)?)
            })
            .unwrap_or("");
        assert!(
            out.status.success(),
            "nginx -t refused {name}: {err}\nat: {at}"
        );
    }
    // A value nginx refuses reaches it (only control characters are refused before), and
    // `line_of` finds the rendered line its message names.
    let s = spec(&format!(
        "{BASE}pods:\n  api: {{ image: a:1 }}\nproxy:\n  image: nginx:1\n  headers:\n\
         \x20   X-Broken: '${{oops'\n  routes:\n    - {{ to: api:80 }}\n"
    ));
    let servers: Servers = [("api".to_owned(), vec!["127.0.0.1".to_owned()])].into();
    let text = render(&s, s.proxy.as_ref().unwrap(), &servers);
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, &text).expect("write");
    let out = std::process::Command::new(nginx)
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .arg("-p")
        .arg(dir.path())
        .output()
        .expect("nginx runs");
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).replace(&file.display().to_string(), CONFIG_PATH);
    let (_, line) = line_of(&text, &err).unwrap_or_else(|| panic!("no line in {err}"));
    assert_eq!(line, "add_header \"X-Broken\" \"${oops\" always;", "{err}");
}
