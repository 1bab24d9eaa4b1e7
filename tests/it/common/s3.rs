//! A real S3-compatible server for the tests: moto's, from PyPI, in the virtualenv
//! `.ci/run` makes (`$HOME/.cache/berth-ci/moto`, or `$BERTH_MOTO_SERVER`), on a port of
//! its own on 127.0.0.1, stopped (by its pid) on drop. Buckets are made, and objects read
//! as a witness, with curl: never through berth.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `.ci/run` puts moto's server.
pub fn moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let p = home.join(".cache/berth-ci/moto/bin/moto_server");
    p.exists().then_some(p)
}

pub struct S3Server {
    child: Child,
    pub port: u16,
}

impl S3Server {
    /// Started and answering; `None` (a failure under `BERTH_REQUIRE_DOCKER=1`) when moto
    /// is not installed.
    pub fn start() -> Option<S3Server> {
        let Some(bin) = moto_server() else {
            if std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!(
                    "moto's S3 server is needed (`.ci/run` installs it in $HOME/.cache/berth-ci/moto)"
                );
            }
            return None;
        };
        for _ in 0..5 {
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken in between: another one
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(S3Server { child, port });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server did not start");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn curl(&self, args: &[&str]) -> std::process::Output {
        Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "60"])
            // Signed (moto takes any key): moto refuses an anonymous GET of an object
            // written with a single PUT.
            .args([
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                "witness:witness",
            ])
            .args(args)
            .output()
            .expect("curl runs")
    }

    /// Makes a bucket.
    pub fn bucket(&self, name: &str) {
        let out = self.curl(&["-X", "PUT", &format!("{}/{name}", self.endpoint())]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The keys in a bucket under `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.curl(&[&format!(
            "{}/{bucket}?list-type=2&prefix={prefix}",
            self.endpoint()
        )]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let xml = String::from_utf8_lossy(&out.stdout).into_owned();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    /// An object's bytes.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self.curl(&[&format!("{}/{bucket}/{key}", self.endpoint())]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Writes an object (one PUT).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(file.path(), bytes).expect("the object's bytes written");
        let body = format!("@{}", file.path().display());
        let url = format!("{}/{bucket}/{key}", self.endpoint());
        // Not curl's default type for a body (a form's, which moto parses as one).
        let kind = "Content-Type: application/octet-stream";
        let out = self.curl(&["-X", "PUT", "-H", kind, "--data-binary", &body, &url]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Deletes an object.
    pub fn delete(&self, bucket: &str, key: &str) {
        let out = self.curl(&[
            "-X",
            "DELETE",
            &format!("{}/{bucket}/{key}", self.endpoint()),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server now (as an outage would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
