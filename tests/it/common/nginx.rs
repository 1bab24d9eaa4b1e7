//! The tests' nginx: an image built `FROM scratch` out of this machine's Debian `nginx`
//! package by `fixtures/images/nginx/build.sh` (no registry is reachable; production uses
//! the upstream `nginx:1.27-alpine`), and a container of it to speak HTTP to.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::docker::docker;

/// The binary the image is made of.
pub const BINARY: &str = "/usr/sbin/nginx";

/// Where berth puts its nginx config in the proxy container, and how it runs nginx.
pub const CONF: &str = "/etc/berth/nginx.conf";

/// The fixture script that builds the image.
pub fn script() -> PathBuf {
    super::repo().join("fixtures/images/nginx/build.sh")
}

/// The tag of the test nginx image (`berth-test-nginx:HASH12`, the hash naming its
/// content), built once per test process; concurrent test processes do not race (the
/// script builds under a tag of its own, then moves the shared tag). Call after
/// [`super::docker::available`]. Without `/usr/sbin/nginx` it returns `None` and the
/// caller skips, unless `BERTH_REQUIRE_DOCKER=1` (CI), where a missing nginx is a failure.
pub fn image() -> Option<String> {
    if !Path::new(BINARY).exists() {
        if std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!(
                "BERTH_REQUIRE_DOCKER=1 but {BINARY} is missing: the tests' nginx image is \
                 built from the Debian package; install it with `apt-get install nginx` \
                 (`.ci/run` does)"
            );
        }
        eprintln!(
            "skipped: no {BINARY} to build the test nginx image from (apt-get install nginx)"
        );
        return None;
    }
    static IMAGE: OnceLock<String> = OnceLock::new();
    Some(
        IMAGE
            .get_or_init(|| {
                let out = Command::new("bash")
                    .arg(script())
                    .output()
                    .expect("bash runs the nginx image script");
                assert!(
                    out.status.success(),
                    "{} failed: {}",
                    script().display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                let stdout = String::from_utf8_lossy(&out.stdout);
                let tag = stdout.lines().last().unwrap_or_default().trim().to_owned();
                assert!(
                    tag.starts_with("berth-test-nginx:"),
                    "the nginx image script printed no tag: {stdout:?}"
                );
                tag
            })
            .clone(),
    )
}

/// A container of the test image running `nginx -c /etc/berth/nginx.conf -g 'daemon off;'`
/// (as berth runs it) with the files of a host directory uploaded to `/etc/berth`, its
/// port 8080 published on a free port of 127.0.0.1. Removed when dropped.
pub struct Nginx {
    pub name: String,
    pub port: u16,
}

impl Nginx {
    /// Creates the container, uploads `conf_dir` (holding `nginx.conf` and what it names)
    /// as `/etc/berth`, starts it, and waits until its port accepts connections.
    pub fn start(image: &str, conf_dir: &Path) -> Nginx {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "berth-test-nginx-{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        docker(&[
            "create",
            "--name",
            &name,
            "--label",
            "io.berth.test=nginx",
            "-p",
            "127.0.0.1::8080",
            image,
            "nginx",
            "-c",
            CONF,
            "-g",
            "daemon off;",
        ]);
        // From here on the container is removed whatever happens.
        let mut nginx = Nginx { name, port: 0 };
        nginx.upload(conf_dir);
        docker(&["start", &nginx.name]);
        let published = docker(&["port", &nginx.name, "8080/tcp"]);
        let port = published
            .lines()
            .find_map(|l| l.strip_prefix("127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok());
        nginx.port = port.unwrap_or_else(|| panic!("no 127.0.0.1 port in {published:?}"));
        nginx.wait_listening();
        nginx
    }

    /// Copies the files of `dir` into the container's `/etc/berth` (created if missing).
    pub fn upload(&self, dir: &Path) {
        let mut from = dir.as_os_str().to_owned();
        from.push("/.");
        docker(&[
            "cp",
            &from.to_string_lossy(),
            &format!("{}:/etc/berth", self.name),
        ]);
    }

    /// `docker exec` of `args` in the container: (success, stdout + stderr).
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            .arg("exec")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("docker runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The container's log (nginx's error log and access log).
    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .expect("docker runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `GET path` on the published port: (status, body).
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        get(self.port, path)
    }

    /// Repeats `GET path` until its body is `body` (a reload is asynchronous: the old
    /// workers answer until the new ones take over), at most for `within`.
    pub fn wait_body(&self, path: &str, body: &str, within: Duration) -> (u16, String) {
        let start = Instant::now();
        loop {
            let last = self.get(path);
            if let Ok((status, got)) = &last
                && got == body
            {
                return (*status, got.clone());
            }
            assert!(
                start.elapsed() < within,
                "GET {path} did not answer {body:?} within {within:?}: last {last:?}\n--- logs\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_listening(&self) {
        let start = Instant::now();
        while let Err(e) = self.get("/") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not answer on 127.0.0.1:{} within 10s: {e}\n--- logs\n{}",
                self.port,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// `GET path` over HTTP/1.0 from 127.0.0.1:`port`, with timeouts: (status, body).
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no HTTP status line in {head:?}"),
            )
        })?;
    Ok((status, body.to_owned()))
}
