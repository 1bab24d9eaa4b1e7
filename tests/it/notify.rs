//! Notifications over https to a local TLS server with a certificate of a test CA: trusted
//! through `SSL_CERT_FILE`, refused without it (a warning; the apply stands); a Slack
//! webhook gets a Slack message; a 503 is tried again.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::Scene;
use crate::common::docker;
use crate::common::dockerd::{make_ca, sign};

/// A TLS webhook on 127.0.0.1 with a certificate of a new CA: its base URL, the CA's PEM,
/// the bodies it was sent (with their paths), and how many requests it answered. Each
/// path's first request is answered 503 when `flaky`, then 204.
struct Hook {
    base: String,
    ca: String,
    bodies: std::sync::mpsc::Receiver<(String, serde_json::Value)>,
    requests: Arc<AtomicUsize>,
}

fn tls_webhook(flaky: bool) -> Hook {
    let (ca, issuer) = make_ca("berth test webhook CA");
    let (cert, key) = sign(&issuer, true);
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    use rustls_pki_types::pem::PemObject;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (tx, bodies) = std::sync::mpsc::channel();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut reader = BufReader::new(rustls::StreamOwned::new(conn, stream));
            let (mut len, mut path, mut line) = (0, String::new(), String::new());
            // A client that does not trust the certificate ends the handshake here.
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if path.is_empty() {
                    path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                line.clear();
            }
            if path.is_empty() {
                continue;
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let status = if flaky && seen.insert(path.clone()) {
                "503 Service Unavailable"
            } else {
                "204 No Content"
            };
            let _ = reader.get_mut().write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            let _ = reader.get_mut().flush();
            if status.starts_with("204") {
                let _ = tx.send((path, serde_json::from_slice(&body).unwrap()));
            }
        }
    });
    Hook {
        base,
        ca,
        bodies,
        requests,
    }
}

#[test]
fn notifications_go_over_https_to_a_json_or_a_slack_webhook_and_are_tried_again() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let hook = tls_webhook(true);
    let ca = s.path().join("ca.pem");
    std::fs::write(&ca, &hook.ca).unwrap();
    let ca = ca.display().to_string();
    s.spec(&format!(
        "notify: {{ slack: \"{}/hooks/slack\" }}\n",
        hook.base
    ));
    let wait = || {
        hook.bodies
            .recv_timeout(Duration::from_secs(20))
            .expect("a notification")
    };

    // The spec's Slack webhook: a Slack message, after a 503 was tried again.
    let r = s
        .berth_cmd(&["apply", "--yes"])
        .env("SSL_CERT_FILE", &ca)
        .run()
        .code(0);
    assert!(!r.stderr().contains("notification"), "{}", r.stderr());
    let (path, body) = wait();
    assert_eq!(path, "/hooks/slack");
    let text = body["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("`berth apply` of *{}*", s.project.0)),
        "{body}"
    );
    assert!(text.contains("*applied*, revision 1"), "{body}");
    assert_eq!(
        hook.requests.load(Ordering::SeqCst),
        2,
        "the 503, then the 204"
    );

    // `--notify URL`: berth's JSON, versioned.
    let url = format!("{}/hooks/json", hook.base);
    s.berth_cmd(&["apply", "--yes", "--notify", &url])
        .env("SSL_CERT_FILE", &ca)
        .run()
        .code(0);
    let (path, body) = wait();
    assert_eq!(path, "/hooks/json");
    assert_eq!(body["format_version"], 1, "{body}");
    assert_eq!(body["outcome"], "no_changes", "{body}");

    // Without the test CA among the trusted roots: a warning naming the host only, and the
    // apply's own outcome stands.
    let r = s
        .berth_cmd(&["apply", "--yes", "--notify", &url])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .run()
        .code(0);
    let err = r.stderr();
    assert!(
        err.contains("warning: the notification to 127.0.0.1:"),
        "{err}"
    );
    assert!(
        !err.contains("/hooks/json"),
        "the path may be a token: {err}"
    );
}

/// A pod of the test nginx serving https on 8443 with a certificate of a new CA (files in
/// `./conf`), probed with `scheme` by its health check and its post-deploy check.
fn https_pod(s: &Scene, image: &str, scheme: &str) {
    let conf = s.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let (_, issuer) = make_ca("berth test probe CA");
    let (cert, key) = sign(&issuer, true);
    std::fs::write(conf.join("cert.pem"), cert).unwrap();
    std::fs::write(conf.join("key.pem"), key).unwrap();
    std::fs::write(
        conf.join("nginx.conf"),
        "worker_processes 1;\npid /tmp/nginx.pid;\nerror_log stderr warn;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path /tmp/body;\n  proxy_temp_path /tmp/proxy;\n  fastcgi_temp_path /tmp/fastcgi;\n  uwsgi_temp_path /tmp/uwsgi;\n  scgi_temp_path /tmp/scgi;\n  server {\n    listen 8443 ssl;\n    ssl_certificate /conf/cert.pem;\n    ssl_certificate_key /conf/key.pem;\n    location = /health { return 200 'ok'; }\n    location = /.well-known/jwks.json { default_type application/json; return 200 '{\"keys\":[{\"kid\":\"a\"}]}'; }\n  }\n}\n",
    )
    .unwrap();
    s.spec(&format!(
        "pods:\n  tls:\n    image: {image}\n    command: [\"/usr/sbin/nginx\", \"-c\", \"/conf/nginx.conf\", \"-g\", \"daemon off;\"]\n    volumes: [\"./conf:/conf:ro\"]\n    health: {{ http: {{ port: 8443, path: /health, scheme: {scheme} }}, interval: 200ms, timeout: 1s, retries: 5 }}\n    checks:\n      - http: {{ port: 8443, path: /.well-known/jwks.json, scheme: {scheme}, expect_json: {{ pointer: /keys, non_empty: true }} }}\n"
    ));
}

#[test]
fn a_health_probe_and_a_check_with_scheme_https_speak_tls_to_the_container() {
    if !docker::available() {
        return;
    }
    let Some(image) = crate::common::nginx::image() else {
        return;
    };
    let s = Scene::new();
    // Over TLS: the probe and the check pass (the certificate is of a CA nobody trusts,
    // as a container's often is: a probe does not verify it).
    https_pod(&s, &image, "https");
    let plan = s.berth(&["plan"]).code(0).stdout();
    assert!(
        plan.contains("health.http: \"https :8443/health\""),
        "{plan}"
    );
    s.berth(&["apply", "--yes"]).code(0);
    let r = s.berth(&["check"]).code(0).stdout();
    assert!(r.contains("2 passed, 0 failed"), "{r}");
    s.berth(&["status"]).code(0);
    s.berth(&["destroy", "--yes"]).code(0);

    // Plain http against the TLS port: the gate fails, and says what it asked.
    https_pod(&s, &image, "http");
    let r = s.berth(&["apply", "--yes"]).code(1);
    assert!(
        r.stderr_flat().contains("GET :8443/health answered 400"),
        "{}",
        r.stderr_flat()
    );
}
