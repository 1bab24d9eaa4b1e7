//! A real SFTP server for the tests: an `sshd` of the test's own on 127.0.0.1 (its own
//! config, host key and a test client key, `internal-sftp`), and the ssh client setup
//! that berth's `ssh` reads (put first on its `PATH`); stopped by its pid and its files
//! removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SftpServer {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    pub user: String,
    /// The `bin` directory with berth's `ssh` (the client setup of this server).
    pub bin: PathBuf,
}

fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SftpServer {
    /// Started and answering; `None` (a failure under `BERTH_REQUIRE_DOCKER=1`) without
    /// `/usr/sbin/sshd`.
    pub fn start() -> Option<SftpServer> {
        if !Path::new("/usr/sbin/sshd").exists() {
            if std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("sshd is needed (`.ci/run` installs openssh-server)");
            }
            return None;
        }
        // Not under /tmp: sshd refuses nothing there, but the keys are better kept where
        // the tests keep their stores.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"), "berth-test-sftp-host");
        keygen(&d.join("id_ed25519"), "berth-test-sftp-client");
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        std::fs::create_dir_all("/run/sshd").unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            std::fs::write(
                d.join("sshd_config"),
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nPidFile {pid}\n\
                     AuthorizedKeysFile {ak}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                     AllowUsers {user}\nSubsystem sftp internal-sftp\nAllowTcpForwarding no\n\
                     X11Forwarding no\nPrintMotd no\n",
                    hk = d.join("host_key").display(),
                    pid = d.join("sshd.pid").display(),
                    ak = d.join("authorized_keys").display(),
                ),
            )
            .unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sshd starts");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let host_key = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
                    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
                    let bin = super::dockerd::ssh_client(
                        &d.join("client"),
                        &d.join("id_ed25519"),
                        &format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
                    );
                    return Some(SftpServer {
                        child,
                        dir,
                        port,
                        user,
                        bin,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start");
    }

    /// `sftp://USER@127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    /// `PATH` for berth: this server's `ssh` first.
    pub fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// What sshd logged (for a failure's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SftpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
