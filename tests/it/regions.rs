//! Regions on real engines: the local engine and the tests' second engine
//! (`common::dockerd`), reached over its socket, TLS `tcp://` and `ssh://`.

use crate::common;
use crate::proxy::{free_port, wait_for};

use common::dockerd::second_engine;

/// The harness itself: the second engine is not the first (its own ID), runs the test app
/// moved to it with save/load, makes a bridge network through its API, publishes a port on
/// 127.0.0.1, answers over TLS and ssh, and leaves the first engine's `docker0` alone.
#[test]
fn the_second_engine_is_a_real_engine_of_its_own() {
    let Some(e) = second_engine() else { return };
    let first = common::docker::docker(&["info", "-f", "{{.ID}}"]);
    assert_ne!(e.id, first);
    assert_eq!(
        e.docker(&["info", "-f", "{{.DockerRootDir}}"]),
        e.data_root.display().to_string()
    );

    let image = common::docker::testapp_image();
    e.load_image(image);
    let project = common::docker::Project::new();
    let name = format!("{}-probe", project.0);
    let label = format!("io.berth.project={}", project.0);
    e.docker(&["network", "create", "--label", &label, &name]);
    let port = free_port();
    e.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &label,
        "--network",
        &name,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        image,
    ]);
    wait_for(port, "/health", 200);
    assert_eq!(e.containers(&project.0), vec![format!("{name} running")]);
    assert_eq!(e.networks(&project.0), vec![name.clone()]);
    // Not on the first engine.
    assert!(common::docker::containers_of(&project.0).is_empty());

    // The same engine over TLS and over ssh.
    for mut cli in [e.cli_tls(), e.cli_ssh()] {
        let out = cli
            .args([
                "ps",
                "--filter",
                &format!("label={label}"),
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    }

    // The first engine's bridge is untouched.
    let docker0 = std::process::Command::new("ip")
        .args(["-4", "addr", "show", "docker0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&docker0.stdout).contains("inet "),
        "docker0 lost its address"
    );

    let name = project.0.clone();
    drop(project);
    assert!(e.containers(&name).is_empty());
    assert!(e.networks(&name).is_empty());
}
