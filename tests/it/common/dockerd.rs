//! A second real Docker engine for the tests of regions on remote engines, started once per
//! test process ([`second_engine`]) and stopped when the process exits (also after failed
//! tests; a killed run's leftovers are swept by the next run).
//!
//! It is a `dockerd` of its own: its own socket, `--data-root`, `--exec-root`, `--pidfile`,
//! a `--config-file` holding only the first engine's storage driver (the machine's
//! `/etc/docker/daemon.json` sets `data-root`: never let it read that) and, on engines
//! before 23, a trust key path of its own (their engine ID is that key's: shared with the
//! first engine otherwise), its own default bridge (`ip link add`, an address of a private
//! subnet no route of this machine uses, `--bridge=NAME`; never disabling the bridge, which
//! deletes the first engine's `docker0` on this machine kind), its own pools for networks
//! made through the API,
//! and `--iptables=false`. It listens on
//! - `unix://SOCKET` (the witness the tests' docker CLI uses: [`SecondEngine::docker`]);
//! - `tcp://127.0.0.1:PORT` with TLS client authentication: a CA, a server and a client
//!   certificate made here with rcgen ([`SecondEngine::ca`], `cert`, `key`);
//! - over ssh: an `sshd` on 127.0.0.1:PORT started here (its own config, host key and
//!   authorized key, `SetEnv DOCKER_HOST=unix://SOCKET` so that `docker system dial-stdio`
//!   run on the far side reaches this engine). OpenSSH reads `~/.ssh/config` of the user's
//!   passwd entry, not of `$HOME`, so berth is pointed at the test's client config by a
//!   directory holding an `ssh` wrapper (`ssh -F CONFIG "$@"`) put first on its `PATH`
//!   ([`SecondEngine::ssh_path`]): the config has the identity, `UserKnownHostsFile` with
//!   the host key and `StrictHostKeyChecking yes`, and no `Port`, so the endpoint's port is
//!   the one berth must pass on.
//!
//! Everything is named with a fixed prefix and the test process's pid (`/var/tmp/berth-e2-PID`,
//! bridge `be2-PID`), so two `cargo test` runs coexist, and a run sweeps what a dead run left.
//! Images are moved to it with `docker save | docker -H unix://SOCKET load`
//! ([`SecondEngine::load_image`]), never through a registry.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where the second engines of test processes live: `PREFIX<pid>`.
const PREFIX: &str = "/var/tmp/berth-e2-";
/// Their bridges: `be2-<pid>` (an interface name has at most 15 bytes).
const BRIDGE_PREFIX: &str = "be2-";
/// The bridges of private engines ([`PrivateEngine`]): `be3-<pid>-<tag>`.
const PRIVATE_BRIDGE_PREFIX: &str = "be3-";

/// The second engine of this test process.
pub struct SecondEngine {
    /// Everything of it lives under this directory.
    pub base: PathBuf,
    /// `BASE/docker.sock`.
    pub socket: PathBuf,
    /// `unix://BASE/docker.sock`.
    pub host: String,
    /// Its `--data-root` (search it for what must never reach an engine's disk).
    pub data_root: PathBuf,
    /// Its engine ID (`docker info -f {{.ID}}`), not the first engine's.
    pub id: String,
    /// Its bridge interface.
    pub bridge: String,
    /// `tcp://127.0.0.1:PORT`, TLS with client authentication.
    pub tls_endpoint: String,
    /// The CA that signed the engine's server certificate and the client certificate.
    pub ca: PathBuf,
    /// A client certificate the engine accepts, and its key (mode 0600).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `ssh://USER@127.0.0.1:PORT`.
    pub ssh_endpoint: String,
    /// The sshd's host public key line (`ssh-ed25519 AAAA...`).
    pub ssh_host_key: String,
    /// The directory of the ssh client files (config, identity, known_hosts).
    pub ssh_home: PathBuf,
    /// A directory holding the `ssh` wrapper that reads the test's client config.
    pub ssh_bin: PathBuf,
    loaded: Mutex<HashSet<String>>,
}

static ENGINE: OnceLock<Option<SecondEngine>> = OnceLock::new();

fn required() -> bool {
    std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1")
}

/// The second engine, started on first use. `None` (the caller skips) when there is no
/// first engine or it cannot start, unless `BERTH_REQUIRE_DOCKER=1`, where that fails.
pub fn second_engine() -> Option<&'static SecondEngine> {
    ENGINE
        .get_or_init(|| {
            if !super::docker::available() {
                return None;
            }
            sweep_stale();
            match SecondEngine::start() {
                Ok(e) => {
                    // SAFETY: registering a plain `extern "C"` function.
                    unsafe { libc::atexit(stop_at_exit) };
                    Some(e)
                }
                Err(why) => {
                    let base = base_of(std::process::id());
                    stop(&base, &bridge_of(std::process::id()));
                    if required() {
                        panic!(
                            "BERTH_REQUIRE_DOCKER=1 but the tests' second Docker engine \
                             did not start: {why}"
                        );
                    }
                    eprintln!("skipped: the second Docker engine did not start: {why}");
                    None
                }
            }
        })
        .as_ref()
}

/// The second engine if this process started one (for cleaning up after a test).
pub fn started() -> Option<&'static SecondEngine> {
    ENGINE.get().and_then(Option::as_ref)
}

extern "C" fn stop_at_exit() {
    if let Some(e) = started() {
        stop(&e.base, &e.bridge);
    }
}

fn base_of(pid: u32) -> PathBuf {
    PathBuf::from(format!("{PREFIX}{pid}"))
}

fn bridge_of(pid: u32) -> String {
    format!("{BRIDGE_PREFIX}{pid}")
}

type Res<T> = Result<T, String>;

fn run(cmd: &mut Command) -> Res<String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn write(path: &Path, text: &str, mode: u32) -> Res<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn free_port() -> Res<u16> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// `10.N.0.0/16` that no route of this machine overlaps, N from 200 to 250, starting at a
/// place of the pid's so that concurrent runs rarely look at the same one first.
fn free_subnet() -> Res<u8> {
    let routes = run(Command::new("ip").args(["-4", "route", "show", "table", "all"]))?;
    let used = |n: u8| {
        routes.lines().any(|l| {
            let dest = l
                .split_whitespace()
                .find(|w| w.starts_with("10."))
                .unwrap_or("");
            dest.starts_with(&format!("10.{n}.")) || dest.starts_with("10.0.0.0/8")
        })
    };
    let start = (std::process::id() % 51) as u8;
    (0..51u8)
        .map(|i| 200 + (start + i) % 51)
        .find(|&n| !used(n))
        .ok_or_else(|| "no free 10.N.0.0/16 (N in 200..=250) for the bridge".to_owned())
}

/// What the docker CLI `cli` (reaching the engine at `host`) prints for `args`, which must
/// succeed.
fn docker_on(mut cli: Command, host: &str, args: &[&str]) -> String {
    let out = cli.args(args).output().expect("docker runs");
    assert!(
        out.status.success(),
        "docker -H {host} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Copies image `tag` of the first engine into the engine the docker CLI `cli` reaches
/// (`docker save | docker load`, never a registry).
fn copy_image(mut cli: Command, tag: &str) {
    let mut save = Command::new("docker")
        .args(["save", tag])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save runs");
    let stdout = save.stdout.take().expect("save's stdout");
    let out = cli
        .arg("load")
        .stdin(stdout)
        .output()
        .expect("docker load runs");
    assert!(
        save.wait().expect("docker save ends").success(),
        "docker save {tag} failed"
    );
    assert!(
        out.status.success(),
        "docker load of {tag} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An engine's config file in `base` (the first engine's storage driver and, before 23, a
/// key of its own: its engine ID) and its bridge `bridge` with an address of a free subnet
/// (recorded in `base/subnet`, so that stopping finds the bridges of its networks);
/// returns the config file and the subnet's `N` (`10.N.0.0/16`).
fn config_and_bridge(base: &Path, bridge: &str) -> Res<(PathBuf, u8)> {
    let driver = run(Command::new("docker").args(["info", "-f", "{{.Driver}}"]))?;
    let version = run(Command::new("dockerd").arg("--version"))?;
    let major: u32 = version
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut config = serde_json::json!({ "storage-driver": driver });
    if major < 23 {
        config["deprecated-key-path"] = base.join("key.json").display().to_string().into();
    }
    let config_file = base.join("daemon.json");
    write(&config_file, &config.to_string(), 0o600)?;
    let n = free_subnet()?;
    write(&base.join("subnet"), &n.to_string(), 0o644)?;
    run(Command::new("ip").args(["link", "add", bridge, "type", "bridge"]))?;
    run(Command::new("ip").args(["addr", "add", &format!("10.{n}.0.1/24"), "dev", bridge]))?;
    run(Command::new("ip").args(["link", "set", bridge, "up"]))?;
    Ok((config_file, n))
}

/// (CA certificate PEM, server certificate PEM, server key PEM, client certificate PEM,
/// client key PEM): a CA and what it signed for 127.0.0.1.
pub fn certificates() -> (String, String, String, String, String) {
    let (ca_pem, ca) = make_ca("berth test CA");
    let (server_cert, server_key) = sign(&ca, true);
    let (client_cert, client_key) = sign(&ca, false);
    (ca_pem, server_cert, server_key, client_cert, client_key)
}

/// A client certificate and key (PEM) of a CA the engine does not trust.
pub fn stranger_client() -> (String, String) {
    let (_, ca) = make_ca("a stranger's CA");
    sign(&ca, false)
}

/// A CA: its certificate (PEM) and what signs with it.
pub fn make_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

pub fn sign(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, server: bool) -> (String, String) {
    let names = if server {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        Vec::new()
    };
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        if server {
            "127.0.0.1"
        } else {
            "berth test client"
        },
    );
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes an ssh client setup into `dir`: `config` (identity `identity`, known hosts
/// `known_hosts`, strict host key checking, batch mode) and `bin/ssh` (the wrapper reading
/// it, and writing each call's arguments to `bin/ssh.log`); returns the `bin` directory to put first on berth's `PATH`.
pub fn ssh_client(dir: &Path, identity: &Path, known_hosts: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let hosts = dir.join("known_hosts");
    write(&hosts, known_hosts, 0o600).unwrap();
    let config = dir.join("config");
    write(
        &config,
        &format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  \
             GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  \
             ConnectTimeout 20\n",
            identity.display(),
            hosts.display()
        ),
        0o600,
    )
    .unwrap();
    write(
        &bin.join("ssh"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec /usr/bin/ssh -F {} \"$@\"\n",
            bin.join("ssh.log").display(),
            config.display()
        ),
        0o755,
    )
    .unwrap();
    bin
}

impl SecondEngine {
    fn start() -> Res<SecondEngine> {
        let pid = std::process::id();
        let base = base_of(pid);
        let bridge = bridge_of(pid);
        let _ = std::fs::remove_dir_all(&base);
        for d in ["data", "exec", "tls", "ssh", "client/.ssh"] {
            std::fs::create_dir_all(base.join(d))
                .map_err(|e| format!("mkdir {}: {e}", base.display()))?;
        }
        let socket = base.join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let data_root = base.join("data");

        let (config_file, n) = config_and_bridge(&base, &bridge)?;

        // TLS files.
        let tls = base.join("tls");
        let (ca_pem, server_cert, server_key, client_cert, client_key) = certificates();
        let ca = tls.join("ca.pem");
        let cert = tls.join("cert.pem");
        let key = tls.join("key.pem");
        write(&ca, &ca_pem, 0o644)?;
        write(&tls.join("server-cert.pem"), &server_cert, 0o644)?;
        write(&tls.join("server-key.pem"), &server_key, 0o600)?;
        write(&cert, &client_cert, 0o644)?;
        write(&key, &client_key, 0o600)?;
        let tls_port = free_port()?;
        let tls_endpoint = format!("tcp://127.0.0.1:{tls_port}");

        let log = std::fs::File::create(base.join("dockerd.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        Command::new("dockerd")
            .arg("--config-file")
            .arg(&config_file)
            .arg("--data-root")
            .arg(&data_root)
            .arg("--exec-root")
            .arg(base.join("exec"))
            .arg("--pidfile")
            .arg(base.join("docker.pid"))
            .args(["-H", &host, "-H", &tls_endpoint, "--tlsverify"])
            .arg("--tlscacert")
            .arg(&ca)
            .arg("--tlscert")
            .arg(tls.join("server-cert.pem"))
            .arg("--tlskey")
            .arg(tls.join("server-key.pem"))
            .arg(format!("--bridge={bridge}"))
            .arg("--iptables=false")
            .arg("--default-address-pool")
            .arg(format!("base=10.{n}.128.0/17,size=24"))
            .args(["--containerd-namespace", &format!("berth-e2-{pid}")])
            .args([
                "--containerd-plugins-namespace",
                &format!("berth-e2-{pid}-plugins"),
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("dockerd does not start: {e}"))?;

        let deadline = Instant::now() + Duration::from_secs(60);
        let id = loop {
            let out = Command::new("docker")
                .args(["-H", &host, "info", "-f", "{{.ID}}"])
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(base.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                return Err(format!(
                    "dockerd did not answer on {host} within 60 s; its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let first = run(Command::new("docker").args(["info", "-f", "{{.ID}}"]))?;
        if id == first {
            return Err(format!("the second engine has the first engine's ID {id}"));
        }

        // sshd, reaching this engine through `docker system dial-stdio`.
        let ssh = base.join("ssh");
        let client = base.join("client");
        run(Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "berth-test-host",
                "-f",
            ])
            .arg(ssh.join("host_key")))?;
        let identity = client.join("id_ed25519");
        run(Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "berth-test-client",
                "-f",
            ])
            .arg(&identity))?;
        let user_key =
            std::fs::read_to_string(client.join("id_ed25519.pub")).map_err(|e| e.to_string())?;
        write(&ssh.join("authorized_keys"), &user_key, 0o600)?;
        let ssh_port = free_port()?;
        let user = run(Command::new("id").arg("-un"))?;
        write(
            &ssh.join("sshd_config"),
            &format!(
                "ListenAddress 127.0.0.1\nPort {ssh_port}\nHostKey {hk}\nPidFile {pidfile}\n\
                 AuthorizedKeysFile {ak}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 AllowUsers {user}\nSetEnv DOCKER_HOST={host}\nAllowTcpForwarding local\n\
                 X11Forwarding no\nPrintMotd no\n",
                hk = ssh.join("host_key").display(),
                pidfile = ssh.join("sshd.pid").display(),
                ak = ssh.join("authorized_keys").display(),
            ),
            0o600,
        )?;
        // sshd's privilege separation directory (made by its service otherwise).
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("mkdir /run/sshd: {e}"))?;
        let sshd = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(ssh.join("sshd_config"))
            .arg("-E")
            .arg(ssh.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("/usr/sbin/sshd does not start: {e}"))?;
        write(&ssh.join("sshd.pid"), &sshd.id().to_string(), 0o644)?;
        let host_key_pub =
            std::fs::read_to_string(ssh.join("host_key.pub")).map_err(|e| e.to_string())?;
        let ssh_host_key = host_key_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let ssh_bin = ssh_client(
            &client,
            &identity,
            &format!("[127.0.0.1]:{ssh_port} {ssh_host_key}\n"),
        );
        let ssh_endpoint = format!("ssh://{user}@127.0.0.1:{ssh_port}");

        let engine = SecondEngine {
            base,
            socket,
            host,
            data_root,
            id,
            bridge,
            tls_endpoint,
            ca,
            cert,
            key,
            ssh_endpoint,
            ssh_host_key,
            ssh_home: client,
            ssh_bin,
            loaded: Mutex::new(HashSet::new()),
        };

        // Both remote ways answer, with the same engine.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tls = engine.cli_tls().args(["info", "-f", "{{.ID}}"]).output();
            let ssh = engine.cli_ssh().args(["info", "-f", "{{.ID}}"]).output();
            let ok = |o: &std::io::Result<std::process::Output>| {
                o.as_ref().is_ok_and(|o| {
                    o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == engine.id
                })
            };
            if ok(&tls) && ok(&ssh) {
                break;
            }
            if Instant::now() > deadline {
                let err = |o: std::io::Result<std::process::Output>| match o {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(format!(
                    "the second engine does not answer over TLS ({}) and ssh ({}) within 30 s: \
                     TLS: {} ssh: {} sshd log: {}",
                    engine.tls_endpoint,
                    engine.ssh_endpoint,
                    err(tls),
                    err(ssh),
                    std::fs::read_to_string(engine.base.join("ssh/sshd.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(engine)
    }

    /// The docker CLI against this engine's socket.
    pub fn cli(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.host]);
        c
    }

    /// The docker CLI against this engine's TLS listener.
    pub fn cli_tls(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.tls_endpoint, "--tlsverify"])
            .arg("--tlscacert")
            .arg(&self.ca)
            .arg("--tlscert")
            .arg(&self.cert)
            .arg("--tlskey")
            .arg(&self.key);
        c
    }

    /// The docker CLI against this engine over ssh, with the test's ssh client config.
    pub fn cli_ssh(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.ssh_endpoint])
            .env("PATH", self.ssh_path());
        c
    }

    /// `PATH` for a berth that reaches this engine over ssh: the wrapper's directory first.
    pub fn ssh_path(&self) -> String {
        format!(
            "{}:{}",
            self.ssh_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Runs the docker CLI against this engine; panics with its output when it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        docker_on(self.cli(), &self.host, args)
    }

    /// Copies image `tag` of the first engine into this one (`docker save | docker load`),
    /// once per tag and process.
    pub fn load_image(&self, tag: &str) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.contains(tag) {
            return;
        }
        copy_image(self.cli(), tag);
        loaded.insert(tag.to_owned());
    }

    /// Names and states of a project's containers on this engine, sorted.
    pub fn containers(&self, project: &str) -> Vec<String> {
        let out = self.docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.berth.project={project}"),
            "--format",
            "{{.Names}} {{.State}}",
        ]);
        let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
        v.sort();
        v
    }

    /// Names of a project's networks on this engine, sorted.
    pub fn networks(&self, project: &str) -> Vec<String> {
        super::docker::project_names(|args| self.docker(args), "network", project)
    }

    /// Removes everything labelled for `project` on this engine (containers, networks,
    /// volumes); [`super::docker::Project`] calls it when it drops.
    pub fn remove_project(&self, project: &str) {
        let filter = format!("label=io.berth.project={project}");
        for (list, remove) in [
            (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
            (
                vec!["network", "ls", "-q", "--filter", &filter],
                vec!["network", "rm"],
            ),
            (
                vec!["volume", "ls", "-q", "--filter", &filter],
                vec!["volume", "rm", "-f"],
            ),
        ] {
            let Ok(out) = self.cli().args(&list).output() else {
                continue;
            };
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.cli().args(&remove).args(&ids).output();
            }
        }
    }
}

/// Whether process `pid` is alive (a zombie is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Sends `signal` to `pid` and waits up to `wait` for it to end.
fn end(pid: i32, signal: i32, wait: Duration) -> bool {
    // SAFETY: kill(2) with a pid read from our own pid files.
    unsafe { libc::kill(pid, signal) };
    let deadline = Instant::now() + wait;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Processes whose command line names `base` (dockerd, its containerd and shims, sshd).
fn processes_of(base: &Path) -> Vec<i32> {
    processes_matching(&[&base.display().to_string()])
}

/// Live processes whose command line (arguments joined by spaces) holds every one of `words`.
fn processes_matching(words: &[&str]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let line = String::from_utf8_lossy(&c).replace('\0', " ");
                words.iter().all(|w| line.contains(w))
            })
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// Stops the engine and sshd living under `base` (dockerd with SIGTERM, so that it stops
/// its containers and containerd; what remains with SIGKILL), unmounts what is mounted
/// under it, removes it and the bridge.
fn stop(base: &Path, bridge: &str) {
    if let Some(pid) = read_pid(&base.join("ssh/sshd.pid"))
        && processes_of(base).contains(&pid)
    {
        end(pid, libc::SIGTERM, Duration::from_secs(5));
    }
    if let Some(pid) = read_pid(&base.join("docker.pid"))
        && processes_of(base).contains(&pid)
        && !end(pid, libc::SIGTERM, Duration::from_secs(40))
    {
        end(pid, libc::SIGKILL, Duration::from_secs(5));
    }
    let mut left = processes_of(base);
    // `docker-proxy`s a killed dockerd left (they name an address of its subnet).
    if let Some(n) = std::fs::read_to_string(base.join("subnet"))
        .ok()
        .and_then(|n| n.trim().parse::<u8>().ok())
    {
        left.extend(processes_matching(&["docker-proxy", &format!(" 10.{n}.")]));
    }
    for pid in left {
        end(pid, libc::SIGKILL, Duration::from_secs(5));
    }
    unmount_under(base);
    // The bridges of networks made on it (`br-ID`, an address of its subnet) outlive it.
    remove_rest(base, bridge);
}

/// Unmounts (lazily) every mount point under `base`, deepest first.
fn unmount_under(base: &Path) {
    let needle = base.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&needle))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: umount2 with a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Removes `base` and the bridges of the engine that lived there.
fn remove_rest(base: &Path, bridge: &str) {
    let mut bridges: Vec<String> = Some(bridge.to_owned())
        .filter(|b| !b.is_empty())
        .into_iter()
        .collect();
    if let Some(n) = std::fs::read_to_string(base.join("subnet"))
        .ok()
        .and_then(|n| n.trim().parse::<u8>().ok())
    {
        let addrs = run(Command::new("ip").args(["-o", "-4", "addr", "show"])).unwrap_or_default();
        for l in addrs.lines() {
            let mut words = l.split_whitespace();
            let (Some(name), Some(_), Some(addr)) = (words.nth(1), words.next(), words.next())
            else {
                continue;
            };
            if name.starts_with("br-") && addr.starts_with(&format!("10.{n}.")) {
                bridges.push(name.to_owned());
            }
        }
    }
    let _ = std::fs::remove_dir_all(base);
    for b in bridges {
        let _ = Command::new("ip")
            .args(["link", "del", &b])
            .stderr(Stdio::null())
            .status();
    }
}

/// Stops and removes what test processes that are no longer alive left behind.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/var/tmp") else {
        return;
    };
    let prefix = Path::new(PREFIX)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let mut stale = Vec::new();
    let mut private_stale = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !alive(pid as i32)
        {
            if rest.contains('-') {
                // A private engine ([`PrivateEngine`]): its bridge is named in its directory.
                private_stale.push(e.path());
            } else {
                stale.push(pid);
            }
        }
    }
    // Bridges without a directory (a run killed while starting).
    if let Ok(links) = run(Command::new("ip").args(["-o", "link", "show", "type", "bridge"])) {
        for l in links.lines() {
            let name = l.split(':').nth(1).unwrap_or("").trim();
            if let Some(pid) = name
                .strip_prefix(PRIVATE_BRIDGE_PREFIX)
                .and_then(|p| p.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
                && pid != std::process::id()
                && !alive(pid as i32)
            {
                let _ = Command::new("ip").args(["link", "del", name]).status();
                continue;
            }
            if let Some(pid) = name
                .strip_prefix(BRIDGE_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
                && pid != std::process::id()
                && !alive(pid as i32)
                && !stale.contains(&pid)
            {
                stale.push(pid);
            }
        }
    }
    for pid in stale {
        eprintln!("sweeping the second engine a dead test run ({pid}) left");
        stop(&base_of(pid), &bridge_of(pid));
    }
    for base in private_stale {
        eprintln!(
            "sweeping the private engine {} a dead test run left",
            base.display()
        );
        let bridge = std::fs::read_to_string(base.join("bridge")).unwrap_or_default();
        stop(&base, bridge.trim());
    }
}

/// Writes `text` to a new file `name` of `dir` with mode `mode`.
pub fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    write(&path, text, mode).unwrap();
    path
}

/// The private engines this process started and has not stopped yet (stopped at exit).
static PRIVATE: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

extern "C" fn stop_private_at_exit() {
    let left = std::mem::take(&mut *PRIVATE.lock().unwrap_or_else(|p| p.into_inner()));
    for (base, bridge) in left {
        stop(&base, &bridge);
    }
}

/// An engine of one test's own (unix socket only), which the test may kill and restart:
/// everything under `/var/tmp/berth-e2-<pid>-<tag>`, bridge `be3-<pid>-<tag>`, its own
/// subnet, its own key (so its own engine ID). Stopped and removed when dropped (and at
/// exit; a killed run's are swept by the next run, like the shared engine's).
///
/// [`PrivateEngine::kill`] SIGKILLs its `dockerd` only: the engine stops answering (its
/// socket refuses), while its containerd and the containers' shims live on, as after a
/// daemon crash. [`PrivateEngine::restart`] starts `dockerd` again with the same data root
/// and socket; it finds its containerd again, and containers come back per their restart
/// policy.
pub struct PrivateEngine {
    pub base: PathBuf,
    pub socket: PathBuf,
    /// `unix://BASE/docker.sock`.
    pub host: String,
    pub data_root: PathBuf,
    pub id: String,
    pub bridge: String,
    /// `dockerd`'s arguments, for [`Self::restart`].
    args: Vec<std::ffi::OsString>,
    /// The running `dockerd` (reaped when killed: a zombie would hold its pid file).
    child: Mutex<Option<std::process::Child>>,
}

impl PrivateEngine {
    /// A private engine tagged `tag` (at most 3 bytes of `[a-z0-9]`). `None` (the caller
    /// skips) without a first engine or when it cannot start, unless
    /// `BERTH_REQUIRE_DOCKER=1`, where that fails.
    pub fn start(tag: &str) -> Option<PrivateEngine> {
        assert!(
            !tag.is_empty()
                && tag.len() <= 3
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "a private engine's tag is 1 to 3 bytes of [a-z0-9]: {tag:?}"
        );
        if !super::docker::available() {
            return None;
        }
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(sweep_stale);
        let pid = std::process::id();
        let base = PathBuf::from(format!("{PREFIX}{pid}-{tag}"));
        let bridge = format!("{PRIVATE_BRIDGE_PREFIX}{pid}-{tag}");
        match Self::start_at(&base, &bridge) {
            Ok(e) => Some(e),
            Err(why) => {
                stop(&base, &bridge);
                if required() {
                    panic!(
                        "BERTH_REQUIRE_DOCKER=1 but a private Docker engine did not start: {why}"
                    );
                }
                eprintln!("skipped: a private Docker engine did not start: {why}");
                None
            }
        }
    }

    fn start_at(base: &Path, bridge: &str) -> Res<PrivateEngine> {
        let _ = std::fs::remove_dir_all(base);
        for d in ["data", "exec"] {
            std::fs::create_dir_all(base.join(d))
                .map_err(|e| format!("mkdir {}: {e}", base.display()))?;
        }
        {
            let mut list = PRIVATE.lock().unwrap_or_else(|p| p.into_inner());
            if list.is_empty() {
                // SAFETY: registering a plain `extern "C"` function.
                unsafe { libc::atexit(stop_private_at_exit) };
            }
            list.push((base.to_owned(), bridge.to_owned()));
        }
        write(&base.join("bridge"), bridge, 0o644)?;
        let socket = base.join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let data_root = base.join("data");
        let (config_file, n) = config_and_bridge(base, bridge)?;
        let ns = base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let args: Vec<std::ffi::OsString> = vec![
            "--config-file".into(),
            config_file.into(),
            "--data-root".into(),
            data_root.clone().into(),
            "--exec-root".into(),
            base.join("exec").into(),
            "--pidfile".into(),
            base.join("docker.pid").into(),
            "-H".into(),
            host.clone().into(),
            format!("--bridge={bridge}").into(),
            "--iptables=false".into(),
            "--default-address-pool".into(),
            format!("base=10.{n}.128.0/17,size=24").into(),
            "--containerd-namespace".into(),
            ns.clone().into(),
            "--containerd-plugins-namespace".into(),
            format!("{ns}-plugins").into(),
        ];
        let mut engine = PrivateEngine {
            base: base.to_owned(),
            socket,
            host,
            data_root,
            id: String::new(),
            bridge: bridge.to_owned(),
            args,
            child: Mutex::new(None),
        };
        engine.id = engine.spawn()?;
        let first = run(Command::new("docker").args(["info", "-f", "{{.ID}}"]))?;
        if engine.id == first {
            return Err(format!(
                "the private engine has the first engine's ID {first}"
            ));
        }
        Ok(engine)
    }

    /// Starts `dockerd` and waits up to 60 s for it to answer; its engine ID.
    fn spawn(&self) -> Res<String> {
        self.spawn_with(&[])
    }

    /// [`PrivateEngine::spawn`] with `extra` arguments.
    fn spawn_with(&self, extra: &[&str]) -> Res<String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("dockerd.log"))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("dockerd")
            .args(&self.args)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("dockerd does not start: {e}"))?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .cli()
                .args(["info", "-f", "{{.ID}}"])
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.base.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .filter(|l| !l.contains("module=grpc"))
                    .take(20)
                    .collect();
                return Err(format!(
                    "dockerd did not answer on {} within 60 s; its log ends:\n{}",
                    self.host,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILLs its `dockerd` (by the pid of its pid file) and waits for it to be gone: the
    /// engine no longer answers.
    pub fn kill(&self) {
        let pid = read_pid(&self.base.join("docker.pid")).expect("the private dockerd's pid");
        assert!(
            processes_of(&self.base).contains(&pid),
            "pid {pid} is not this private engine's dockerd"
        );
        // SAFETY: kill(2) with the pid of our own child, checked above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.wait();
        }
        assert!(
            end(pid, libc::SIGKILL, Duration::from_secs(10)),
            "the private dockerd ({pid}) survived SIGKILL"
        );
        // Its containerd goes with it (dockerd starts it with a parent-death signal);
        // make sure it is gone, so that the restart starts one of its own. The containers'
        // shims live on.
        let containerd = read_pid(&self.base.join("exec/containerd/containerd.pid"));
        if let Some(c) = containerd.filter(|c| processes_of(&self.base).contains(c))
            && !end(c, 0, Duration::from_secs(10))
        {
            end(c, libc::SIGKILL, Duration::from_secs(10));
        }
        assert!(
            !self
                .cli()
                .args(["info"])
                .output()
                .expect("docker runs")
                .status
                .success(),
            "the killed private engine still answers"
        );
    }

    /// Starts its `dockerd` again (same data root, exec root and socket), as after a
    /// reboot of its host: what the killed engine left running (containers' shims, the
    /// storage driver's fuse daemons, which cannot be taken over) is ended and its mounts
    /// undone first; containers come back per their restart policy.
    pub fn restart(&self) {
        let mut left = processes_of(&self.base);
        // Its `docker-proxy`s (holding published ports) name a container address of its
        // subnet, not its directory.
        if let Some(n) = std::fs::read_to_string(self.base.join("subnet"))
            .ok()
            .and_then(|n| n.trim().parse::<u8>().ok())
        {
            left.extend(processes_matching(&["docker-proxy", &format!(" 10.{n}.")]));
        }
        for pid in left {
            end(pid, libc::SIGKILL, Duration::from_secs(10));
        }
        unmount_under(&self.base);
        // Their pid files: a dead process not yet reaped by init (a zombie) still counts as
        // running for dockerd.
        for f in ["docker.pid", "exec/containerd/containerd.pid"] {
            let _ = std::fs::remove_file(self.base.join(f));
        }
        // `--live-restore` when it starts again: dockerd 20.10, finding the default bridge
        // network of its last run with `--default-address-pool` set and live restore off,
        // deletes the interface `docker0`: the first engine's, whatever `--bridge` says.
        let id = self
            .spawn_with(&["--live-restore"])
            .unwrap_or_else(|e| panic!("the private engine does not restart: {e}"));
        assert_eq!(id, self.id, "the restarted engine has another ID");
    }

    /// The docker CLI against this engine's socket.
    pub fn cli(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.host]);
        c
    }

    /// Runs the docker CLI against this engine; panics with its output when it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        docker_on(self.cli(), &self.host, args)
    }

    /// Copies image `tag` of the first engine into this one (`docker save | docker load`).
    pub fn load_image(&self, tag: &str) {
        copy_image(self.cli(), tag);
    }

    /// Names, states and helper labels of everything of `project` on this engine (every
    /// container, keepers included), sorted.
    pub fn containers(&self, project: &str) -> Vec<String> {
        let out = self.docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.berth.project={project}"),
            "--format",
            "{{.Names}} {{.State}} {{.Label \"io.berth.helper\"}}",
        ]);
        let mut v: Vec<String> = out.lines().map(|l| l.trim_end().to_owned()).collect();
        v.sort();
        v
    }

    /// Names of `project`'s volumes on this engine, sorted.
    pub fn volumes(&self, project: &str) -> Vec<String> {
        super::docker::project_names(|args| self.docker(args), "volume", project)
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        stop(&self.base, &self.bridge);
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.wait();
        }
        PRIVATE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(b, _)| b != &self.base);
    }
}
