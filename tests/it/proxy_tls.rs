//! The proxy's TLS, against the real engine and real nginx: certificates made with rcgen,
//! kept as age secrets, delivered to the proxy like every secret, spoken to over TLS with the
//! `curl` CLI as the witness (berth has no TLS client). And the certificate pre-flight:
//! expired, expiring, and not covering the routes' hosts.

use crate::common;
use crate::proxy::{app, free_port, nginx, request, wait_for};

use std::process::Command;
use std::time::Duration;

use common::{Berth, Scene};

/// A self-signed certificate for `names`, valid from yesterday for `days` days (negative:
/// expired that many days ago); (certificate PEM, key PEM).
fn certificate(names: &[&str], days: i64) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    params.not_before = (now - 30 * day).into();
    params.not_after = if days >= 0 {
        now + day * days as u32
    } else {
        now - day * (-days) as u32
    }
    .into();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The scene: an identity made by `secrets init`, secrets `tls_cert` and `tls_key`, the test
/// app as `api`, and a proxy with a plain and a TLS listener.
struct Tls {
    s: Scene,
    plain: u16,
    tls: u16,
    image: String,
}

impl Tls {
    fn new() -> Option<Tls> {
        let image = nginx()?;
        let t = Tls {
            s: Scene::new(),
            plain: free_port(),
            tls: free_port(),
            image,
        };
        t.write("shop.example", true);
        t.s.berth(&["secrets", "init"]).code(0);
        Some(t)
    }

    fn write(&self, host: &str, redirect: bool) {
        self.s.spec(&format!(
            "identity: ./me.key\nsecrets:\n  tls_cert: {{ file: secrets/tls_cert.age }}\n  tls_key: {{ file: secrets/tls_key.age }}\npods:\n{}proxy:\n  image: {}\n  listen: [{}, {}]\n  tls: [ {{ port: {}, cert: tls_cert, key: tls_key }} ]\n  redirect_http: {redirect}\n  security_headers: strict\n  routes:\n    - {{ host: {host}, to: api:8080 }}\n",
            app("api", "v1", 1),
            self.image,
            self.plain,
            self.tls,
            self.tls
        ));
    }

    fn set(&self, (cert, key): &(String, String)) {
        for (name, value) in [("tls_cert", cert), ("tls_key", key)] {
            Berth::new()
                .dir(self.s.path())
                .args(["secrets", "set", name])
                .stdin(value.as_bytes().to_vec())
                .run()
                .code(0);
        }
    }

    /// `curl` over TLS to `shop.example` at the TLS port (resolved to 127.0.0.1), trusting
    /// only `cert`: (status, headers and body as curl prints them).
    fn curl(&self, cert: &str, path: &str) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert).unwrap();
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "5", "--cacert"])
            .arg(&ca)
            .args([
                "--resolve",
                &format!("shop.example:{}:127.0.0.1", self.tls),
                &format!("https://shop.example:{}{path}", self.tls),
            ])
            .output()
            .expect("curl runs (.ci/run installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn proxy_id(&self) -> String {
        common::docker::container_id(&format!("{}-proxy", self.s.project.0))
            .expect("the proxy runs")
    }
}

#[test]
fn tls_terminates_with_the_secret_certificate_redirects_http_and_renews_in_place() {
    let Some(t) = Tls::new() else { return };
    let first = certificate(&["shop.example"], 365);
    t.set(&first);
    t.s.berth(&["apply", "--yes"]).code(0);
    wait_for(t.plain, "/.berth/health", 200);
    let (ok, answer) = t.curl(&first.0, "/version");
    assert!(ok, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.trim_end().ends_with("v1"), "{answer}");
    // HSTS over TLS, with the rest of the strict set.
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age="),
        "{answer}"
    );
    assert!(lower.contains("content-security-policy:"), "{answer}");
    // Plain HTTP is redirected to https (no HSTS there); health is answered as is.
    let plain = request(t.plain, "GET", "/version", &[("Host", "shop.example")]).unwrap();
    assert_eq!(plain.status, 301, "{plain:?}");
    assert_eq!(
        plain.header("location"),
        Some(format!("https://shop.example:{}/version", t.tls).as_str())
    );
    assert!(
        plain.header("strict-transport-security").is_none(),
        "{plain:?}"
    );
    // The key is delivered like every secret: a file of root's, 0400, on a tmpfs.
    let proxy = format!("{}-proxy", t.s.project.0);
    let source = common::docker::docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/run/secrets\"}}{{.Source}}{{end}}{{end}}",
        &proxy,
    ]);
    assert!(!source.is_empty(), "no /run/secrets mount");
    let key = std::path::Path::new(&source).join("tls_key");
    let meta = std::fs::metadata(&key).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o777, 0o400);
    assert_eq!(meta.uid(), 0);
    t.s.berth(&["plan", "--detailed-exitcode"]).code(0);

    // A new certificate: an update in place (the same container), served at once.
    let id = t.proxy_id();
    let second = certificate(&["shop.example"], 365);
    t.set(&second);
    let plan = t.s.berth(&["plan", "--detailed-exitcode"]).code(2);
    assert!(plan.stdout().contains("~ proxy"), "{}", plan.stdout());
    t.s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(t.proxy_id(), id, "the proxy was restarted");
    let (ok, answer) = t.curl(&second.0, "/version");
    assert!(ok, "the new certificate is not served: {answer}");
    let (old_ok, _) = t.curl(&first.0, "/version");
    assert!(!old_ok, "the old certificate is still served");
    t.s.berth(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn certificates_are_checked_before_anything_changes() {
    let Some(t) = Tls::new() else { return };
    // Expired: plan warns, apply refuses with nothing changed.
    t.set(&certificate(&["shop.example"], -2));
    let plan = t.s.berth(&["plan"]).code(0);
    assert!(plan.stderr_flat().contains("expired"), "{}", plan.stderr());
    let refused = t.s.berth(&["apply", "--yes"]);
    assert_ne!(refused.0.status.code(), Some(0));
    assert!(
        refused.stderr_flat().contains("tls_cert"),
        "{}",
        refused.stderr()
    );
    assert!(t.s.containers().is_empty(), "{:?}", t.s.containers());
    // Not covering the route's host.
    t.set(&certificate(&["other.example"], 365));
    let refused = t.s.berth(&["apply", "--yes"]);
    assert_ne!(refused.0.status.code(), Some(0));
    assert!(
        refused.stderr_flat().contains("shop.example"),
        "{}",
        refused.stderr()
    );
    assert!(t.s.containers().is_empty(), "{:?}", t.s.containers());
    // A key of another certificate.
    let (cert, _) = certificate(&["shop.example"], 365);
    let (_, key) = certificate(&["shop.example"], 365);
    t.set(&(cert, key));
    let refused = t.s.berth(&["apply", "--yes"]);
    assert_ne!(refused.0.status.code(), Some(0));
    assert!(t.s.containers().is_empty(), "{:?}", t.s.containers());
    // Expiring within 21 days: a warning, and the apply goes on.
    t.set(&certificate(&["shop.example"], 10));
    let plan = t.s.berth(&["plan"]).code(0);
    assert!(
        plan.stderr_flat().contains("expires in"),
        "{}",
        plan.stderr()
    );
    let applied = t.s.berth(&["apply", "--yes"]).code(0);
    assert!(
        applied.stderr_flat().contains("expires in"),
        "{}",
        applied.stderr()
    );
}
