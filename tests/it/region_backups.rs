//! Backups of a remote region's volume: read from the machine berth runs on through the
//! region's engine API (the tests' second engine, `common::dockerd`), into the store on
//! this machine, and restored back through it.

use crate::common;

use common::backup::{self, Scene, sample, tree};
use common::dockerd::second_engine;

#[test]
fn a_volume_of_the_secondary_region_is_backed_up_here_and_restored_there() {
    if !common::docker::available() || !backup::tools(&["age", "zstd", "tar"]) {
        return;
    }
    let Some(e) = second_engine() else { return };
    let s = Scene::new();
    let image = s.image();
    e.load_image(&image);
    // The pod and its volume live only in `ord`, the second engine: the backup's region is
    // the pod's.
    s.spec(
        true,
        &format!(
            "regions:
  local: {{ engine: \"unix:///var/run/docker.sock\", primary: true }}
  ord: {{ engine: \"{host}\" }}
volumes:
  data: {{}}
pods:
  web:
    image: {image}
    regions: [ord]
    volumes: [\"data:/data\"]
    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 20 }}
backups:
  # berth:allow(backup-key-on-host): a test
  data:
    source: {{ pod: web, volume: data }}
    store: STORE
",
            host = e.host
        ),
    );
    s.berth(&["apply", "--yes"]).code(0);
    let web = s.web();
    let volume = format!("{}-data", s.project());
    assert_eq!(
        e.docker(&["volume", "ls", "-q", "--filter", &format!("name={volume}")]),
        volume,
        "the volume is on the second engine"
    );
    assert!(
        common::docker::docker(&["volume", "ls", "-q", "--filter", &format!("name={volume}")])
            .is_empty(),
        "and not on the first"
    );
    let src = s.path().join("src");
    sample(&src, 8);
    e.docker(&[
        "cp",
        &format!("{}/.", src.display()),
        &format!("{web}:/data/"),
    ]);

    let r = s.berth(&["backup", "run", "data"]).code(0);
    assert!(
        r.stderr().contains("written and verified"),
        "{}",
        r.stderr()
    );
    // The store is on this machine; the backup opens without berth, identical by hash.
    let data = s.data_files();
    assert_eq!(data.len(), 1);
    let out = s.path().join("out");
    backup::open_without_berth(&s.path().join("key.txt"), &data[0], &out);
    assert_eq!(tree(&out), tree(&src));
    // No helper container left on either engine.
    assert_eq!(e.containers(s.project()), vec![format!("{web} running")]);
    assert!(common::docker::containers_of(s.project()).is_empty());

    // The volume changes there; the restore puts the backup back there.
    std::fs::write(s.path().join("stray"), "not in the backup").unwrap();
    e.docker(&[
        "cp",
        &s.path().join("stray").display().to_string(),
        &format!("{web}:/data/stray"),
    ]);
    let r = s.berth(&["backup", "restore", "data"]).code(0);
    assert!(r.stderr().contains("safety copy"), "{}", r.stderr());
    let back = s.path().join("back");
    std::fs::create_dir_all(&back).unwrap();
    e.docker(&["cp", &format!("{web}:/data/."), &back.display().to_string()]);
    assert_eq!(tree(&back), tree(&src));
    assert_eq!(e.containers(s.project()), vec![format!("{web} running")]);
    s.berth(&["destroy", "--yes"]).code(0);
}

/// A region that is down stops only its own backups: with `ord`'s engine unreachable, the
/// primary's volume is backed up, listed, verified and restored.
#[test]
fn a_region_that_is_down_stops_only_its_own_backups() {
    if !common::docker::available() || !backup::tools(&["age", "zstd", "tar"]) {
        return;
    }
    let Some(e) = second_engine() else { return };
    let s = Scene::new();
    let image = s.image();
    e.load_image(&image);
    let spec = |ord: &str| {
        s.spec(
            true,
            &format!(
                "regions:
  iad: {{ engine: \"unix:///var/run/docker.sock\", primary: true }}
  ord: {{ engine: \"{ord}\" }}
volumes:
  data: {{}}
pods:
  web:
    image: {image}
    volumes: [\"data:/data\"]
backups:
  # berth:allow(backup-key-on-host): a test
  data:
    source: {{ pod: web, volume: data, region: iad }}
    store: STORE
"
            ),
        )
    };
    spec(&e.host);
    s.berth(&["apply", "--yes"]).code(0);
    // ord's host goes away.
    spec(&format!("unix://{}/gone.sock", s.path().display()));
    let r = s.berth(&["backup", "run", "data"]).code(0);
    assert!(
        r.stderr().contains("written and verified"),
        "{}",
        r.stderr()
    );
    s.berth(&["backup", "list"]).code(0);
    s.berth(&["backup", "verify", "--all"]).code(0);
    s.berth(&["backup", "restore", "data", "--dry-run"]).code(0);
    // What needs ord says so.
    let r = s.berth(&["plan"]);
    assert_ne!(r.0.status.code(), Some(0));
    assert!(r.stderr_flat().contains("`ord`"), "{}", r.stderr());
    spec(&e.host);
    s.berth(&["destroy", "--yes"]).code(0);
}
