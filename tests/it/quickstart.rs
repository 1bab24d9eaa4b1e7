//! The README's first command, for real: `examples/quickstart/up.sh` brings the quickstart
//! up on the engine (demo binary, age key, secret, apply), a second run changes nothing,
//! and `berth destroy` takes it down again. Run on a copy, under a project name and host
//! port of its own, so that it can run beside other tests and a quickstart of your own.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::docker::{self, Project, containers_of};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let path = e.path();
        let name = e.file_name();
        // What up.sh makes on this machine is not part of the example.
        if name == "secrets" || name == "demo" {
            continue;
        }
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_quickstart_comes_up_with_one_command_and_goes_down_with_destroy() {
    if !docker::available() {
        return;
    }
    let p = Project::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("quickstart");
    copy_dir(&common::repo().join("examples/quickstart"), &root);
    let port = free_port();
    let spec = std::fs::read_to_string(root.join("berth.yaml")).unwrap();
    // The store may not be under /tmp: in the tests' store place, removed at the end.
    let store = common::store_root(&format!("qs-store-{}", p.0));
    let spec = spec
        .replace("project: quickstart", &format!("project: {}", p.0))
        .replace("127.0.0.1:8080:8080", &format!("127.0.0.1:{port}:8080"))
        .replace(
            "/var/lib/berth-quickstart/backups",
            &store.display().to_string(),
        );
    std::fs::write(root.join("berth.yaml"), spec).unwrap();
    let identity = dir.path().join("age.key");
    let units = dir.path().join("units");
    let up = || {
        let out = Command::new(root.join("up.sh"))
            .env("BERTH", env!("CARGO_BIN_EXE_berth"))
            .env("BERTH_IDENTITY", &identity)
            .env("BERTH_STATE_HOME", common::state_home())
            .env("BERTH_UNIT_DIR", &units)
            .env_remove("BERTH_STATE_DIR")
            .output()
            .expect("up.sh runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "up.sh failed:\n{text}");
        text
    };
    let first = up();
    assert!(first.contains("Apply complete"), "{first}");
    assert_eq!(containers_of(&p.0), [format!("{}-web", p.0)]);
    let page = get(port, "/");
    assert!(page.contains("visit #1"), "{page}");
    assert!(page.contains("app key: read at start, 64 bytes"), "{page}");
    // The secret on disk is ciphertext; the app got it as a file.
    let secret = std::fs::read(root.join("secrets/app_key.age")).unwrap();
    assert!(secret.starts_with(b"age-encryption.org/v1"));

    // The nightly backup is set up: its store, and a systemd timer and service.
    assert_eq!(berth::fsutil::mode_of(&store).unwrap(), 0o700);
    let timer = std::fs::read_to_string(units.join(format!("berth-{}-backup-app-data.timer", p.0)))
        .unwrap();
    assert!(timer.contains("OnCalendar=daily"), "{timer}");
    let service =
        std::fs::read_to_string(units.join(format!("berth-{}-backup-app-data.service", p.0)))
            .unwrap();
    assert!(service.contains("backup run app-data"), "{service}");
    // And a backup of the visit counter can be taken right away.
    let backup = common::Berth::new()
        .dir(&root)
        .env("BERTH_IDENTITY", &identity.display().to_string())
        .args(["backup", "run", "app-data"])
        .run()
        .code(0);
    assert!(
        backup.stderr().contains("written and verified"),
        "{}",
        backup.stderr()
    );
    // And proven by a drill: restored into a scratch copy of `web`, its health gate
    // passed, the time printed, and nothing of the scratch project left.
    let drill = common::Berth::new()
        .dir(&root)
        .env("BERTH_IDENTITY", &identity.display().to_string())
        .args(["backup", "drill", "app-data"])
        .run()
        .code(0);
    assert!(
        drill.stderr_flat().contains("restore time (RTO)"),
        "{}",
        drill.stderr()
    );
    let scratch = format!("{}-drill-", p.0);
    for args in [
        ["ps", "-a", "--format", "{{.Names}}"],
        ["volume", "ls", "--format", "{{.Name}}"],
        ["network", "ls", "--format", "{{.Name}}"],
    ] {
        let listed = docker::docker(&args);
        assert!(!listed.contains(&scratch), "{listed}");
    }
    assert_eq!(containers_of(&p.0), [format!("{}-web", p.0)]);

    // Again: the key and the secret are kept, and nothing changes.
    let second = up();
    assert!(second.contains("exists and decrypts; kept"), "{second}");
    assert!(second.contains("No changes"), "{second}");
    assert!(get(port, "/").contains("visit #2"));

    // Down, volume included.
    let down = common::Berth::new()
        .dir(&root)
        .env("BERTH_IDENTITY", &identity.display().to_string())
        .args(["destroy", "--yes", "--delete-volumes"])
        .run()
        .code(0);
    assert!(
        down.stderr().contains("Destroy complete"),
        "{}",
        down.stderr()
    );
    assert!(containers_of(&p.0).is_empty());
    let volumes = docker::docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.berth.project={}", p.0),
    ]);
    assert!(volumes.is_empty(), "{volumes}");
    let _ = std::fs::remove_dir_all(&store);
}
