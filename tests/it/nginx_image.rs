//! The tests' nginx image (`fixtures/images/nginx/build.sh`, FROM scratch out of the
//! machine's Debian package) runs nginx as berth runs it: `nginx -c /etc/berth/nginx.conf
//! -g 'daemon off;'` with a self-contained config, serves, checks (`nginx -t`), reloads by
//! command and by SIGHUP, keeps serving through a rejected reload, and has the modules and
//! the TLS support berth's proxy config uses.

use std::path::Path;
use std::time::Duration;

use crate::common::docker;
use crate::common::nginx::{self, CONF, Nginx};

/// What berth's config keeps out of the image's compiled-in paths: the pid file and every
/// temp path under /tmp, errors to stderr, the access log to stdout; no `include`, no `user`.
const PREAMBLE: &str = "\
worker_processes 1;
pid /tmp/berth-nginx.pid;
error_log stderr notice;
events { worker_connections 256; }
";

const HTTP_PATHS: &str = "\
    access_log /dev/stdout;
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
";

/// A config whose one location, `= /x`, answers `body`.
fn config(body: &str) -> String {
    format!(
        "{PREAMBLE}http {{\n{HTTP_PATHS}    server {{\n        listen 8080;\n        \
         location = /x {{ return 200 \"{body}\"; }}\n    }}\n}}\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("config written");
}

fn image_size(image: &str) -> String {
    docker::docker(&["image", "inspect", "-f", "{{.Size}}", image])
}

#[test]
fn the_scratch_nginx_serves_and_reloads_by_command_and_by_sighup() {
    if !docker::available() {
        return;
    }
    let Some(image) = nginx::image() else {
        return;
    };
    eprintln!("test nginx image {image}: {} bytes", image_size(&image));
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "nginx.conf", &config("hi"));
    let n = Nginx::start(&image, dir.path());

    assert_eq!(n.get("/x").expect("GET /x"), (200, "hi".to_owned()));
    assert_eq!(n.get("/nothing").expect("GET /nothing").0, 404);
    // Workers run as nobody (no `user` directive): the image's passwd and group have it.
    let top = docker::docker(&["top", &n.name, "-o", "pid,user,args"]);
    assert!(
        top.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("nobody") && l.contains("worker process")),
        "{top}"
    );

    let (ok, out) = n.exec(&["nginx", "-t", "-c", CONF]);
    assert!(ok && out.contains("test is successful"), "{out}");

    // `-s reload` finds the master through the pid file the config names.
    write(dir.path(), "nginx.conf", &config("by command"));
    n.upload(dir.path());
    let (ok, out) = n.exec(&["nginx", "-c", CONF, "-s", "reload"]);
    assert!(ok, "nginx -s reload: {out}");
    n.wait_body("/x", "by command", Duration::from_secs(10));

    write(dir.path(), "nginx.conf", &config("by sighup"));
    n.upload(dir.path());
    docker::docker(&["kill", "-s", "HUP", &n.name]);
    n.wait_body("/x", "by sighup", Duration::from_secs(10));

    // A config nginx rejects: `-t` fails quoting nginx, and a SIGHUP with it in place
    // leaves the running config serving.
    write(
        dir.path(),
        "nginx.conf",
        &config("broken").replace(
            "listen 8080;",
            "listen 8080;\n        no_such_directive on;",
        ),
    );
    n.upload(dir.path());
    let (ok, out) = n.exec(&["nginx", "-t", "-c", CONF]);
    assert!(!ok, "nginx -t accepted a broken config: {out}");
    assert!(
        out.contains("unknown directive \"no_such_directive\""),
        "{out}"
    );
    docker::docker(&["kill", "-s", "HUP", &n.name]);
    let start = std::time::Instant::now();
    while !n.logs().contains("no_such_directive") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx logged nothing about the rejected reload:\n{}",
            n.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(n.get("/x").expect("GET /x"), (200, "by sighup".to_owned()));
    assert_eq!(
        docker::docker(&["inspect", "-f", "{{.State.Running}}", &n.name]),
        "true"
    );
}

/// The modules berth's proxy config uses are built into the Debian binary (there are no
/// dynamic ones in the image): ssl, realip, limit_req, headers, map, proxy, upstream.
const MODULES: &str = "\
    map $http_origin $cors_origin {
        default \"\";
        \"~^https://app\\.example$\" $http_origin;
    }
    limit_req_zone $binary_remote_addr zone=perip:1m rate=10r/s;
    limit_req_status 429;
    set_real_ip_from 10.0.0.0/8;
    real_ip_header X-Forwarded-For;
    upstream api { server 127.0.0.1:9; keepalive 4; }
    server {
        listen 8080;
        location / {
            limit_req zone=perip burst=10 nodelay;
            add_header Access-Control-Allow-Origin $cors_origin always;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_pass http://api;
        }
    }
    server {
        listen 8443 ssl;
        server_name localhost;
        ssl_certificate /etc/berth/tls/cert.pem;
        ssl_certificate_key /etc/berth/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        add_header Strict-Transport-Security \"max-age=31536000\" always;
        location = /x { return 200 \"tls\"; }
    }
";

#[test]
fn the_scratch_nginx_has_the_modules_berth_uses_and_loads_a_certificate() {
    if !docker::available() {
        return;
    }
    let Some(image) = nginx::image() else {
        return;
    };
    let has_openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_openssl {
        eprintln!("skipped: no `openssl` CLI to make a self-signed certificate");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "nginx.conf", &config("hi"));
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).expect("tls dir");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(tls.join("key.pem"))
        .arg("-out")
        .arg(tls.join("cert.pem"))
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(
        dir.path(),
        "modules.conf",
        &format!("{PREAMBLE}http {{\n{HTTP_PATHS}{MODULES}}}\n"),
    );
    let n = Nginx::start(&image, dir.path());

    let (ok, out) = n.exec(&["nginx", "-t", "-c", "/etc/berth/modules.conf"]);
    assert!(ok && out.contains("test is successful"), "{out}");

    // And a certificate that is not there is refused, quoting the path.
    std::fs::remove_dir_all(&tls).expect("tls removed");
    write(
        dir.path(),
        "missing.conf",
        &format!("{PREAMBLE}http {{\n{HTTP_PATHS}{MODULES}}}\n")
            .replace("/etc/berth/tls/", "/etc/berth/absent/"),
    );
    n.upload(dir.path());
    let (ok, out) = n.exec(&["nginx", "-t", "-c", "/etc/berth/missing.conf"]);
    assert!(!ok, "nginx -t accepted a missing certificate: {out}");
    assert!(out.contains("/etc/berth/absent/cert.pem"), "{out}");
}
