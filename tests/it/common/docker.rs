//! Helpers for tests against the real engine. The docker CLI is used here only as an
//! independent witness and to set up scenes; berth itself talks to the engine with bollard.

#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether the engine answers. Without it the test is skipped, unless
/// `BERTH_REQUIRE_DOCKER=1` (CI), where a missing engine fails the test.
pub fn available() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("BERTH_REQUIRE_DOCKER=1 but the Docker engine does not answer (`docker info`)");
        }
        eprintln!("skipped: no Docker engine (set BERTH_REQUIRE_DOCKER=1 to make this a failure)");
    }
    ok
}

/// Names of `project`'s objects of `kind` (`network`, `volume`), sorted, as `docker` (the
/// CLI against some engine) lists them.
pub fn project_names(docker: impl Fn(&[&str]) -> String, kind: &str, project: &str) -> Vec<String> {
    let out = docker(&[
        kind,
        "ls",
        "--filter",
        &format!("label=io.berth.project={project}"),
        "--format",
        "{{.Name}}",
    ]);
    let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// Runs the docker CLI; panics with its output when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A project name no other test uses; everything labelled with it is removed on drop.
pub struct Project(pub String);

impl Project {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        Project(format!(
            "bt{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn filter(&self) -> String {
        format!("label=io.berth.project={}", self.0)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let filter = self.filter();
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
            let Ok(out) = Command::new("docker").args(&list).output() else {
                continue;
            };
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker").args(&remove).args(&ids).output();
            }
        }
        // Images berth built for the project's pods (`berth-PROJECT-POD:DIGEST`).
        if let Ok(out) = Command::new("docker")
            .args(["images", "-q", "--filter"])
            .arg(format!("reference=berth-{}-*", self.0))
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rmi", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        // What the project made on the tests' second engine, if this process started it.
        if let Some(second) = super::dockerd::started() {
            second.remove_project(&self.0);
        }
        // The project's state directory (lock, journal, revisions).
        let _ = std::fs::remove_dir_all(super::state_home().join(&self.0));
        // Decrypted secrets delivered to the project's containers (on a tmpfs).
        if let Ok(root) = berth::secrets::delivery::root() {
            let dir = root.join(&self.0);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let _ = berth::fsutil::set_mode(&e.path(), 0o700);
                }
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs a docker command when dropped: cleans up what a test made without berth's labels
/// (so `Project` does not see it), even when the test fails.
pub struct Cleanup(Vec<String>);

impl Cleanup {
    pub fn new(args: &[&str]) -> Self {
        Cleanup(args.iter().map(|a| a.to_string()).collect())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(&self.0).output();
    }
}

/// `--label k=v` arguments for the labels.
pub fn label_args(labels: &HashMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    keys.into_iter()
        .flat_map(|k| ["--label".to_owned(), format!("{k}={}", labels[k])])
        .collect()
}

/// A `FROM scratch` image holding a statically linked program that sleeps until stopped,
/// built once per test process (no registry is reachable).
pub fn sleeper_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("sleeper.rs");
        std::fs::write(
            &src,
            "fn main() { loop { std::thread::sleep(std::time::Duration::from_secs(3600)); } }\n",
        )
        .unwrap();
        let status = Command::new("rustc")
            .args(["-O", "-C", "target-feature=+crt-static", "-o"])
            .arg(dir.path().join("sleeper"))
            .arg(&src)
            .status()
            .expect("rustc runs");
        assert!(status.success(), "rustc could not build the sleeper");
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n",
        )
        .unwrap();
        let tag = "berth-test-sleeper:1".to_owned();
        docker(&["build", "-q", "-t", &tag, &dir.path().display().to_string()]);
        tag
    })
}

/// The test app of `fixtures/images/testapp` (an HTTP server whose env switches make it
/// fail its health check, start slowly or crash), compiled once per test process as a
/// static binary into a build context directory (with its Dockerfile).
pub fn testapp_context() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("testapp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("context dir");
        let src = super::repo().join("fixtures/images/testapp");
        let status = Command::new("rustc")
            .args(["-O", "-C", "target-feature=+crt-static", "-o"])
            .arg(dir.join("testapp"))
            .arg(src.join("main.rs"))
            .status()
            .expect("rustc runs");
        assert!(status.success(), "rustc could not build the test app");
        std::fs::copy(src.join("Dockerfile"), dir.join("Dockerfile")).unwrap();
        dir
    })
}

/// The test app as a `FROM scratch` image, built once per test process. Its tag names its
/// source, so that test runs of different versions of it on one engine (two checkouts)
/// never run each other's.
pub fn testapp_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for file in ["main.rs", "Dockerfile"] {
            std::fs::read(super::repo().join("fixtures/images/testapp").join(file))
                .expect("test app source")
                .hash(&mut h);
        }
        let tag = format!("berth-testapp:{:016x}", h.finish());
        docker(&[
            "build",
            "-q",
            "-t",
            &tag,
            &testapp_context().display().to_string(),
        ]);
        tag
    })
}

/// Id of the running container named `name`, if any.
pub fn container_id(name: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Id}} {{.State.Running}}", name])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (id, running) = text.trim().split_once(' ')?;
    (out.status.success() && running == "true").then(|| id.to_owned())
}

/// Names of all containers (running or not) of a project, but the keepers of its secrets
/// volumes ([`keepers_of`]).
pub fn containers_of(project: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.berth.project={project}"),
        "--format",
        "{{.Names}} {{.Label \"io.berth.helper\"}}",
    ]);
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let (name, helper) = l.split_once(' ').unwrap_or((l, ""));
            (helper.trim() != "secrets-keeper").then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names
}

/// The keepers of a project's secrets volumes: (name, state, the volume it holds), sorted.
/// Each keeper of `project` with its engine state (`docker inspect`'s `State`, which says
/// how and when it stopped), for a failure's message.
pub fn keepers_state(project: &str) -> String {
    keepers_of(project)
        .into_iter()
        .map(|(name, _, keeps)| {
            let state = Command::new("docker")
                .args(["inspect", "-f", "{{json .State}}", &name])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            format!("{name} (keeps {keeps}): {state}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn keepers_of(project: &str) -> Vec<(String, String, String)> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.berth.project={project}"),
        "--filter",
        "label=io.berth.helper=secrets-keeper",
        "--format",
        "{{.Names}} {{.State}} {{.Label \"io.berth.keeps\"}}",
    ]);
    let mut out: Vec<(String, String, String)> = out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace().map(str::to_owned);
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .collect();
    out.sort();
    out
}

/// The names of a project's secrets volumes, sorted.
pub fn secrets_volumes_of(project: &str) -> Vec<String> {
    let out = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.berth.project={project}"),
        "--filter",
        "label=io.berth.secrets.pod",
    ]);
    let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
    names.sort();
    names
}

/// What a container mounts at `/run/secrets`: (type, volume name, read-write).
pub fn secrets_mount_of(container: &str) -> Option<(String, String, bool)> {
    let out = docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.RW}} {{.Destination}}\n{{end}}",
        container,
    ]);
    out.lines().find_map(|l| {
        let parts: Vec<&str> = l.split_whitespace().collect();
        match parts.as_slice() {
            [typ, name, rw, "/run/secrets"] => {
                Some(((*typ).to_owned(), (*name).to_owned(), *rw == "true"))
            }
            _ => None,
        }
    })
}

/// Checks that `volume` is one of the memory-backed (tmpfs) volumes berth makes, held by
/// its one running keeper, and (while mounted on this machine's engine) on a tmpfs.
pub fn assert_memory_volume(project: &str, volume: &str) {
    assert_eq!(
        docker(&[
            "volume",
            "inspect",
            "-f",
            "{{.Driver}} {{index .Options \"type\"}} {{index .Options \"device\"}}",
            volume
        ]),
        "local tmpfs tmpfs"
    );
    let held: Vec<_> = keepers_of(project)
        .into_iter()
        .filter(|(_, state, v)| v == volume && state == "running")
        .collect();
    assert_eq!(held.len(), 1, "{volume}: one running keeper, got {held:?}");
    let mountpoint = docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", volume]);
    assert_eq!(
        berth::fsutil::filesystem_of(std::path::Path::new(&mountpoint)).as_deref(),
        Some("tmpfs"),
        "{volume} at {mountpoint}"
    );
}

/// GET `path` from a container's port over its project network address, as a client would.
pub fn http_get(container: &str, port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        container,
    ]);
    let mut stream = std::net::TcpStream::connect((ip.as_str(), port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned()
}
