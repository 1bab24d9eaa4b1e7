//! Regions on real engines: the local engine and the tests' second engine
//! (`common::dockerd`), reached over its socket, TLS `tcp://` and `ssh://`.

use crate::common;
use crate::proxy::{free_port, wait_for};

use common::dockerd::{SecondEngine, second_engine};
use common::{Berth, Scene};

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

/// The first engine's socket, as the docker CLI reaches it.
const LOCAL: &str = "unix:///var/run/docker.sock";

/// A spec of two regions, `iad` (primary, the local engine) and `ord` (as given), with one
/// pod of the test app in each, without secrets.
fn two_regions(s: &Scene, ord: &str) {
    s.spec(&format!(
        "regions:\n  iad: {{ engine: \"{LOCAL}\", primary: true }}\n  ord: {ord}\npods:\n  web:\n    image: {}\n    env: {{ VERSION: v1 }}\n",
        common::docker::testapp_image()
    ));
}

/// Copies the second engine's TLS client files into `dir` as `ca.pem`, `cert.pem` and
/// `key.pem` (0600).
fn copy_tls_files(e: &SecondEngine, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (from, to) in [
        (&e.ca, "ca.pem"),
        (&e.cert, "cert.pem"),
        (&e.key, "key.pem"),
    ] {
        std::fs::copy(from, dir.join(to)).unwrap();
    }
    berth::fsutil::set_mode(&dir.join("key.pem"), 0o600).unwrap();
}

/// Copies the second engine's TLS client files into the scene (`tls/`, the key 0600) and
/// returns the `ord` region reaching it over TLS with paths relative to the spec.
fn tls_region(s: &Scene, e: &SecondEngine) -> String {
    let dir = s.path().join("tls");
    copy_tls_files(e, &dir);
    format!(
        "{{ engine: \"{}\", tls: {{ ca: tls/ca.pem, cert: tls/cert.pem, key: tls/key.pem }} }}",
        e.tls_endpoint
    )
}

/// berth in the scene, with `PATH` reaching the second engine's sshd.
fn berth_ssh(s: &Scene, e: &SecondEngine, args: &[&str]) -> common::Run {
    Berth::new()
        .dir(s.path())
        .env("PATH", &e.ssh_path())
        .args(args)
        .run()
}

/// Names of the project's networks on the first engine.
fn local_networks(project: &str) -> Vec<String> {
    common::docker::project_names(common::docker::docker, "network", project)
}

/// Nothing of the project on either engine.
fn nothing_created(s: &Scene, e: &SecondEngine) {
    let p = &s.project.0;
    assert!(s.containers().is_empty(), "{:?}", s.containers());
    assert!(local_networks(p).is_empty(), "{:?}", local_networks(p));
    assert!(e.containers(p).is_empty(), "{:?}", e.containers(p));
    assert!(e.networks(p).is_empty(), "{:?}", e.networks(p));
}

/// `apply` of the two regions with `ord` over ssh, `bin` first on `PATH` (an ssh wrapper
/// of the test's): it fails (exit 1); what it said, on one line.
fn apply_over_ssh_fails(s: &Scene, e: &SecondEngine, bin: &std::path::Path) -> String {
    two_regions(s, &format!("{{ engine: \"{}\" }}", e.ssh_endpoint));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Berth::new()
        .dir(s.path())
        .env("PATH", &path)
        .args(["apply", "--yes"])
        .run()
        .code(1)
        .stderr_flat()
}

/// The region label of a container, on the engine `cli` reaches.
fn region_of(mut cli: std::process::Command, name: &str) -> String {
    let out = cli
        .args([
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.berth.region\"}}",
            name,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Applies the two-region spec (berth run by `run`), re-plans clean, destroys; checks
/// each engine with the docker CLI against its socket.
fn apply_replan_destroy(s: &Scene, e: &SecondEngine, run: &dyn Fn(&[&str]) -> common::Run) {
    let p = s.project.0.clone();
    let web = s.name("web");
    run(&["apply", "--yes"]).code(0);
    assert_eq!(s.containers(), vec![format!("{web} running")]);
    assert_eq!(e.containers(&p), vec![format!("{web} running")]);
    assert!(!local_networks(&p).is_empty());
    assert!(!e.networks(&p).is_empty());
    assert_eq!(region_of(std::process::Command::new("docker"), &web), "iad");
    assert_eq!(region_of(e.cli(), &web), "ord");

    let plan = run(&["plan", "--format", "json", "--detailed-exitcode"]).code(0);
    let plan: berth::plan::Plan = serde_json::from_str(&plan.stdout()).unwrap();
    assert!(
        common::changed(&plan).is_empty(),
        "{:?}",
        common::changed(&plan)
    );

    run(&["destroy", "--yes"]).code(0);
    nothing_created(s, e);
}

/// Two regions whose engines are one (its socket and a symlink to it) are refused by
/// `plan` and `apply`, naming both regions and the engine's ID, with nothing created.
#[test]
fn two_regions_on_one_engine_are_refused_before_any_change() {
    let Some(e) = second_engine() else { return };
    let s = Scene::new();
    let alias = s.path().join("alias.sock");
    std::os::unix::fs::symlink("/var/run/docker.sock", &alias).unwrap();
    two_regions(&s, &format!("{{ engine: \"unix://{}\" }}", alias.display()));
    let id = common::docker::docker(&["info", "-f", "{{.ID}}"]);
    for args in [&["plan"][..], &["apply", "--yes"][..]] {
        let r = s.berth(args).code(1);
        let err = r.stderr_flat();
        assert!(
            err.contains("regions `iad` and `ord` are one engine") && err.contains(&id),
            "{args:?}: {err}"
        );
    }
    nothing_created(&s, e);
}

/// `--region` connects only the regions it names, so their engines are not compared with
/// those left out: when `ord` reaches `iad`'s engine (a symlink of its socket), `apply
/// --region iad` cannot know, but `ord`'s commands find `iad`'s objects on their engine
/// and are refused before any change, naming both regions.
#[test]
fn a_command_limited_by_region_refuses_an_engine_holding_a_region_left_out() {
    if !common::docker::available() {
        return;
    }
    let s = Scene::new();
    let alias = s.path().join("alias.sock");
    std::os::unix::fs::symlink("/var/run/docker.sock", &alias).unwrap();
    two_regions(&s, &format!("{{ engine: \"unix://{}\" }}", alias.display()));
    s.berth(&["apply", "--yes", "--region", "iad"]).code(0);
    let iad_only = s.containers();
    assert_eq!(iad_only.len(), 1, "{iad_only:?}");
    for args in [
        &["plan", "--region", "ord"][..],
        &["apply", "--yes", "--region", "ord"][..],
        &["destroy", "--yes", "--region", "ord"][..],
    ] {
        let err = s.berth(args).code(1).stderr_flat();
        assert!(
            err.contains("the engine of region `ord`")
                && err.contains("holds objects of region `iad`")
                && err.contains("nothing was changed"),
            "{args:?}: {err}"
        );
        assert_eq!(s.containers(), iad_only, "{args:?} changed something");
    }
    s.berth(&["destroy", "--yes", "--region", "iad"]).code(0);
    assert!(s.containers().is_empty(), "{:?}", s.containers());
}

/// Primary on the local engine, secondary on the second engine over TLS: applies, plans
/// clean, destroys, each pod on its own engine.
#[test]
fn a_secondary_region_over_tls_applies_replans_clean_and_destroys() {
    let Some(e) = second_engine() else { return };
    e.load_image(common::docker::testapp_image());
    let s = Scene::new();
    let ord = tls_region(&s, e);
    two_regions(&s, &ord);
    apply_replan_destroy(&s, e, &|args| s.berth(args));
}

/// A spec without regions reaches DOCKER_HOST as the docker CLI does: `tcp://` with
/// DOCKER_TLS_VERIFY over TLS with the files of DOCKER_CERT_PATH (the key private to its
/// user, or refused before anything is asked of the engine).
#[test]
fn docker_host_with_tls_verify_and_cert_path_reaches_an_engine_over_tls() {
    let Some(e) = second_engine() else { return };
    e.load_image(common::docker::testapp_image());
    let s = Scene::new();
    let certs = s.path().join("docker-certs");
    copy_tls_files(e, &certs);
    s.spec(&format!(
        "pods:\n  web:\n    image: {}\n    env: {{ VERSION: v1 }}\n",
        common::docker::testapp_image()
    ));
    let run = |args: &[&str]| {
        Berth::new()
            .dir(s.path())
            .env("DOCKER_HOST", &e.tls_endpoint)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", certs.to_str().unwrap())
            .args(args)
            .run()
    };
    berth::fsutil::set_mode(&certs.join("key.pem"), 0o644).unwrap();
    let err = run(&["plan"]).code(1).stderr_flat();
    assert!(
        err.contains("key.pem") && err.contains("chmod 600"),
        "{err}"
    );
    berth::fsutil::set_mode(&certs.join("key.pem"), 0o600).unwrap();
    run(&["apply", "--yes"]).code(0);
    let p = s.project.0.clone();
    assert_eq!(e.containers(&p), vec![format!("{} running", s.name("web"))]);
    assert!(s.containers().is_empty(), "{:?}", s.containers());
    run(&["destroy", "--yes"]).code(0);
    assert!(e.containers(&p).is_empty(), "{:?}", e.containers(&p));
}

/// The head of a spec: the identity, `iad` on the local engine (primary), `ord` as given,
/// and a secret `token`.
fn regions_with_a_secret(ord: &str) -> String {
    format!(
        "identity: ./me.key
regions:
  iad: {{ engine: \"{LOCAL}\", primary: true }}
  ord: {ord}
secrets:
  token: {{ file: secrets/token.age, min_length: 16 }}
"
    )
}

/// A plain TCP address of this machine (its first global IPv4 address, not loopback: to
/// berth an engine on another machine) forwarding every connection to `socket`, until
/// dropped.
struct PlainTcp {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PlainTcp {
    fn to(socket: &std::path::Path) -> PlainTcp {
        use std::sync::atomic::Ordering;
        let out = std::process::Command::new("ip")
            .args(["-4", "-o", "addr", "show", "scope", "global"])
            .output()
            .unwrap();
        // `2: eth0    inet 10.0.0.5/24 brd ...`: docker0 at least has one.
        let ip = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace().skip_while(|w| *w != "inet").skip(1);
                w.next()
                    .and_then(|a| a.split('/').next())
                    .map(str::to_owned)
            })
            .expect("a global IPv4 address");
        let listener = std::net::TcpListener::bind((ip.as_str(), 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (socket, stopping) = (socket.to_owned(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = conn else { continue };
                let Ok(unix) = std::os::unix::net::UnixStream::connect(&socket) else {
                    continue;
                };
                let (mut t1, mut u1) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
                let (mut t2, mut u2) = (tcp, unix);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut t1, &mut u1);
                    let _ = u1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut t2);
                    let _ = t2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        PlainTcp { addr, stop }
    }
}

impl Drop for PlainTcp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accepting thread, which then returns.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// A plain `tcp://` engine on another machine (as berth sees it) is refused secrets before
/// any change, in every region, and the same spec without secrets applies there.
#[test]
fn secrets_are_refused_for_a_plain_tcp_engine_on_another_machine() {
    let Some(e) = second_engine() else { return };
    let image = common::docker::testapp_image();
    e.load_image(image);
    let plain = PlainTcp::to(&e.socket);
    let s = Scene::new();
    let spec = |secrets: &str| {
        s.spec(&format!(
            "{}pods:
  web:
    image: {image}
    env: {{ VERSION: v1 }}
{secrets}",
            regions_with_a_secret(&format!("{{ engine: \"tcp://{}\" }}", plain.addr))
        ))
    };
    spec("    secrets: [token]\n");
    s.berth(&["secrets", "init"]).code(0);
    Berth::new()
        .dir(s.path())
        .args(["secrets", "set", "token"])
        .stdin(common::canary().into_bytes())
        .run()
        .code(0);
    let err = s.berth(&["apply", "--yes"]).code(1).stderr_flat();
    assert!(
        err.contains("send secrets to an engine without TLS") && err.contains("in clear"),
        "{err}"
    );
    nothing_created(&s, e);
    // Without secrets the engine is usable (berth warns about it).
    spec("");
    s.berth(&["apply", "--yes"]).code(0);
    let p = s.project.0.clone();
    assert_eq!(e.containers(&p), vec![format!("{} running", s.name("web"))]);
    s.berth(&["destroy", "--yes"]).code(0);
    nothing_created(&s, e);
}

/// An object on one region's engine labelled for another region of the spec is not taken
/// for the first region's: `iad`'s plan does not see a container claiming `pod.web` for
/// `ord`, and `destroy` leaves it alone.
#[test]
fn an_object_labelled_for_another_region_is_not_this_region_s() {
    let Some(e) = second_engine() else { return };
    e.load_image(common::docker::testapp_image());
    let s = Scene::new();
    let ord = tls_region(&s, e);
    two_regions(&s, &ord);
    s.berth(&["apply", "--yes"]).code(0);
    let stray = format!("{}-stray", s.project.0);
    common::docker::docker(&[
        "create",
        "--name",
        &stray,
        "--label",
        &format!("io.berth.project={}", s.project.0),
        "--label",
        "io.berth.resource=pod.web",
        "--label",
        "io.berth.region=ord",
        common::docker::testapp_image(),
    ]);
    let plan = s.plan(0);
    assert!(
        common::changed(&plan).is_empty(),
        "{:?}",
        common::changed(&plan)
    );
    s.berth(&["destroy", "--yes"]).code(0);
    assert_eq!(s.containers(), vec![format!("{stray} created")]);
    assert!(e.containers(&s.project.0).is_empty());
}

/// The same over ssh (the system's ssh, the port of the address, dial-stdio on the far side).
#[test]
fn a_secondary_region_over_ssh_applies_replans_clean_and_destroys() {
    let Some(e) = second_engine() else { return };
    e.load_image(common::docker::testapp_image());
    let s = Scene::new();
    two_regions(&s, &format!("{{ engine: \"{}\" }}", e.ssh_endpoint));
    apply_replan_destroy(&s, e, &|args| berth_ssh(&s, e, args));
}

/// A client key the engine does not trust, a key file other users may read, and an ssh
/// host whose key is not the known one: each is one diagnostic naming the region and the
/// endpoint (and the cause), a non-zero exit, and nothing changed on either engine.
#[test]
fn a_wrong_client_key_or_host_key_is_one_diagnostic_and_changes_nothing() {
    let Some(e) = second_engine() else { return };
    let s = Scene::new();

    // TLS: a client certificate of a CA the engine does not trust.
    let ord = tls_region(&s, e);
    let (cert, key) = common::dockerd::stranger_client();
    std::fs::write(s.path().join("tls/cert.pem"), cert).unwrap();
    std::fs::write(s.path().join("tls/key.pem"), key).unwrap();
    two_regions(&s, &ord);
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("cannot reach the engine of region `ord`") && err.contains(&e.tls_endpoint),
        "{err}"
    );
    assert_eq!(err.matches("cannot reach").count(), 1, "{err}");
    nothing_created(&s, e);

    // TLS: the key readable by others.
    berth::fsutil::set_mode(&s.path().join("tls/key.pem"), 0o644).unwrap();
    let r = s.berth(&["plan"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("region `ord`") && err.contains("key.pem") && err.contains("chmod 600"),
        "{err}"
    );

    // ssh: the host's key is not the one known_hosts has.
    let other = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("k"))
        .status()
        .unwrap();
    assert!(status.success());
    let wrong = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
    let wrong: Vec<&str> = wrong.split_whitespace().take(2).collect();
    let port = e.ssh_endpoint.rsplit(':').next().unwrap();
    let bin = common::dockerd::ssh_client(
        other.path(),
        &e.ssh_home.join("id_ed25519"),
        &format!("[127.0.0.1]:{port} {}\n", wrong.join(" ")),
    );
    let err = apply_over_ssh_fails(&s, e, &bin);
    assert!(
        err.contains("cannot reach the engine of region `ord`")
            && err.contains(&e.ssh_endpoint)
            && err.contains("Host key verification failed"),
        "{err}"
    );
    nothing_created(&s, e);
}

/// The TLS client key as an age secret of the spec: decrypted with the identity, held in
/// memory; the engine answers (plan), and the key is nowhere in the clear.
#[test]
fn a_tls_client_key_can_be_an_age_secret_of_the_spec() {
    let Some(e) = second_engine() else { return };
    let s = Scene::new();
    tls_region(&s, e);
    std::fs::remove_file(s.path().join("tls/key.pem")).unwrap();
    let write = || {
        s.spec(&format!(
            "identity: ./me.key\nsecrets:\n  ord_engine_key: {{ file: secrets/ord_engine_key.age }}\nregions:\n  iad: {{ engine: \"{LOCAL}\", primary: true }}\n  ord: {{ engine: \"{}\", tls: {{ ca: tls/ca.pem, cert: tls/cert.pem, key: {{ secret: ord_engine_key }} }} }}\npods:\n  web:\n    image: {}\n",
            e.tls_endpoint,
            common::docker::testapp_image()
        ))
    };
    write();
    s.berth(&["secrets", "init"]).code(0);
    Berth::new()
        .dir(s.path())
        .args(["secrets", "set", "ord_engine_key"])
        .stdin(std::fs::read(&e.key).unwrap())
        .run()
        .code(0);
    let r = s.berth(&["plan", "--detailed-exitcode"]).code(2);
    assert!(r.stdout().contains("pod.web@ord"), "{}", r.stdout());

    // Another identity cannot decrypt it: one diagnostic, naming the region.
    std::fs::remove_file(s.path().join("me.key")).unwrap();
    s.berth(&["secrets", "init"]).code(0);
    let r = s.berth(&["plan"]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("region `ord`") && err.contains("ord_engine_key.age"),
        "{err}"
    );
}

/// A far side without `docker` on its PATH (here: the command renamed on its way, by an ssh
/// wrapper): one diagnostic with the far shell's words and the help naming `docker` on
/// the PATH, nothing changed.
#[test]
fn a_far_side_without_docker_is_one_diagnostic_saying_so() {
    let Some(e) = second_engine() else { return };
    let s = Scene::new();
    let bin = s.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = e.ssh_bin.join("ssh");
    common::dockerd::write_file(
        &bin,
        "ssh",
        &format!(
            "#!/bin/bash\nexec {} \"${{@/#docker/no-such-docker}}\"\n",
            real.display()
        ),
        0o755,
    );
    let err = apply_over_ssh_fails(&s, e, &bin);
    assert!(
        err.contains("cannot reach the engine of region `ord`")
            && err.contains("no-such-docker")
            && err.contains("status 127")
            && err.contains("`docker` is on the PATH"),
        "{err}"
    );
    nothing_created(&s, e);
}

/// The files under `root` that hold `value`, each with the filesystem it is on.
fn files_holding(root: &std::path::Path, value: &str) -> Vec<(String, Option<String>)> {
    let out = std::process::Command::new("grep")
        .args(["-rlF", "--binary-files=text", "-e", value])
        .arg(root)
        .output()
        .expect("grep runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|p| {
            let fs = berth::fsutil::filesystem_of(std::path::Path::new(p));
            (p.to_owned(), fs)
        })
        .collect()
}

/// Both engines' data roots hold `value` only on memory (a mounted secrets volume), or
/// (`none`) not at all.
fn canary_only_in_memory(e: &SecondEngine, value: &str, none: bool) {
    let first = std::path::PathBuf::from(common::docker::docker(&[
        "info",
        "-f",
        "{{.DockerRootDir}}",
    ]));
    for root in [first.as_path(), e.data_root.as_path()] {
        let found = files_holding(root, value);
        if none {
            assert_eq!(found, [], "the canary is under {}", root.display());
        } else {
            assert!(
                found.iter().all(|(_, fs)| fs.as_deref() == Some("tmpfs")),
                "the canary is on a disk under {}: {found:?}",
                root.display()
            );
        }
    }
}

/// What the docker CLI made by `cli` prints for `args` (which must succeed), trimmed.
fn out_of(cli: &dyn Fn() -> std::process::Command, args: &[&str]) -> String {
    let out = cli().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `VERSION` and the secret a pod's container reads, on the engine `cli` reaches.
fn version_and_token(cli: &dyn Fn() -> std::process::Command, name: &str) -> (String, String) {
    let env = out_of(
        cli,
        &[
            "inspect",
            "-f",
            "{{range .Config.Env}}{{println .}}{{end}}",
            name,
        ],
    );
    let version = env
        .lines()
        .find_map(|l| l.strip_prefix("VERSION="))
        .unwrap_or_default()
        .to_owned();
    let token = out_of(
        cli,
        &["exec", name, "/testapp", "cat", "/run/secrets/token"],
    );
    (version, token)
}

/// The project's secrets volumes and its keepers' states, on the engine `cli` reaches.
fn secrets_objects(cli: &dyn Fn() -> std::process::Command, project: &str) -> (usize, String) {
    let label = format!("label=io.berth.project={project}");
    let volumes = out_of(
        cli,
        &[
            "volume",
            "ls",
            "-q",
            "--filter",
            &label,
            "--filter",
            "label=io.berth.secrets.pod",
        ],
    );
    let keepers = out_of(
        cli,
        &[
            "ps",
            "-a",
            "--filter",
            &label,
            "--filter",
            "label=io.berth.helper=secrets-keeper",
            "--format",
            "{{.State}}",
        ],
    );
    (volumes.lines().count(), keepers)
}

/// Issue 13, done-when 1: a two-region spec (the primary on the local engine, `ord` as
/// given) with a secret and an HTTP health gate applies, re-plans clean, applies a second
/// revision, rolls back to the first, and destroys; the containers and their tmpfs secrets
/// volumes (each held by a running keeper) are on the right engines, and the secret's value
/// is on neither engine's disk.
fn two_regions_with_a_secret(
    s: &Scene,
    e: &SecondEngine,
    ord: &str,
    run: &dyn Fn(&[&str]) -> common::Run,
) {
    let image = common::docker::testapp_image();
    let value = common::canary();
    let spec = |version: &str| {
        s.spec(&format!(
            "{}pods:
  web:
    image: {image}
    user: \"1000:1000\"
    env: {{ VERSION: {version}, REQUIRE_FILE: /run/secrets/token }}
    secrets: [token]
    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 40 }}
",
            regions_with_a_secret(ord)
        ))
    };
    spec("v1");
    run(&["secrets", "init"]).code(0);
    Berth::new()
        .dir(s.path())
        .args(["secrets", "set", "token"])
        .stdin(value.as_bytes().to_vec())
        .run()
        .code(0);
    let p = s.project.0.clone();
    let web = s.name("web");
    let local = || std::process::Command::new("docker");
    let second = || e.cli();
    let both: [&dyn Fn() -> std::process::Command; 2] = [&local, &second];
    // On each engine: the pod at `version` reading the secret, one secrets volume held by
    // one running keeper.
    let check = |version: &str| {
        for cli in both {
            assert_eq!(
                version_and_token(cli, &web),
                (version.to_owned(), value.clone())
            );
            assert_eq!(secrets_objects(cli, &p), (1, "running".to_owned()));
        }
    };
    run(&["apply", "--yes"]).code(0);
    check("v1");
    canary_only_in_memory(e, &value, false);

    let plan = run(&["plan", "--format", "json", "--detailed-exitcode"]).code(0);
    let plan: berth::plan::Plan = serde_json::from_str(&plan.stdout()).unwrap();
    assert!(common::changed(&plan).is_empty(), "{plan:?}");

    // Revision 2 everywhere, then back to revision 1 everywhere.
    spec("v2");
    run(&["apply", "--yes"]).code(0);
    check("v2");
    run(&["rollback", "--yes"]).code(0);
    check("v1");
    canary_only_in_memory(e, &value, false);

    run(&["destroy", "--yes"]).code(0);
    nothing_created(s, e);
    for cli in both {
        assert_eq!(secrets_objects(cli, &p), (0, String::new()));
    }
    canary_only_in_memory(e, &value, true);
}

#[test]
fn two_regions_over_tls_with_a_secret_apply_replan_roll_back_and_destroy() {
    let Some(e) = second_engine() else { return };
    e.load_image(common::docker::testapp_image());
    let s = Scene::new();
    let ord = tls_region(&s, e);
    two_regions_with_a_secret(&s, e, &ord, &|args| {
        Berth::new().dir(s.path()).args(args).run()
    });
}

/// Over ssh, the health gates of `ord` reach its container through the engine's own ssh
/// (`ssh -W`), as they would on another machine.
#[test]
fn two_regions_over_ssh_with_a_secret_apply_replan_roll_back_and_destroy() {
    let Some(e) = second_engine() else { return };
    e.load_image(common::docker::testapp_image());
    let s = Scene::new();
    let log = e.ssh_bin.join("ssh.log");
    let forwards = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("-W "))
            .count()
    };
    let before = forwards();
    let ord = format!("{{ engine: \"{}\" }}", e.ssh_endpoint);
    two_regions_with_a_secret(&s, e, &ord, &|args| berth_ssh(&s, e, args));
    assert!(forwards() > before, "no health probe went through `ssh -W`");
}

/// `--region` that leaves out the local region must not take the secret directories an
/// earlier berth made on this machine for its containers as unused: a container of the
/// local region still mounts them.
#[test]
fn an_apply_of_another_region_keeps_an_earlier_berths_secret_directories_here() {
    let Some(e) = second_engine() else { return };
    let image = common::docker::testapp_image();
    e.load_image(image);
    let s = Scene::new();
    let p = s.project.0.clone();
    let runtime = std::path::PathBuf::from(format!("/dev/shm/{p}-runtime"));
    let _removed = RemovedOnDrop(runtime.clone());
    let legacy = runtime.join(&p).join("legacy1");
    std::fs::create_dir_all(&legacy).unwrap();
    berth::fsutil::set_mode(&runtime, 0o700).unwrap();
    std::fs::write(legacy.join("token"), "v").unwrap();
    // A container of the local region, as an earlier berth made it: its secrets
    // bind-mounted from that directory.
    common::docker::docker(&[
        "run",
        "-d",
        "--name",
        &s.name("old"),
        "--label",
        &format!("io.berth.project={p}"),
        "-v",
        &format!("{}:/run/secrets:ro", legacy.display()),
        common::docker::sleeper_image(),
    ]);
    s.spec(&format!(
        "regions:\n  iad: {{ engine: \"{LOCAL}\", primary: true }}\n  ord: {{ engine: \"{}\" }}\npods:\n  web:\n    image: {image}\n    regions: [ord]\n",
        e.host
    ));
    let run = |args: &[&str]| {
        Berth::new()
            .dir(s.path())
            .env("BERTH_RUNTIME_DIR", &runtime.display().to_string())
            .args(args)
            .run()
    };
    run(&["apply", "--region", "ord", "--yes"]).code(0);
    assert!(
        legacy.join("token").is_file(),
        "the directory a running container mounts is gone"
    );
    run(&["destroy", "--region", "ord", "--yes"]).code(0);
    assert!(legacy.join("token").is_file());
}

/// A directory removed when the test ends, passed or failed.
struct RemovedOnDrop(std::path::PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A region that is down stops only the recovery that needs it: an `apply --region iad`
/// killed midway is recovered while `ord`'s engine does not answer (its journal names only
/// `iad`).
#[test]
fn an_apply_of_one_region_killed_midway_is_recovered_while_another_region_is_down() {
    if !common::docker::available() {
        return;
    }
    let s = Scene::new();
    let gone = format!("unix://{}/gone.sock", s.path().display());
    s.spec(&format!(
        "regions:\n  iad: {{ engine: \"{LOCAL}\", primary: true }}\n  ord: {{ engine: \"{gone}\" }}\npods:\n  web:\n    image: {}\n    env: {{ VERSION: v1 }}\n",
        common::docker::testapp_image()
    ));
    let killed = Berth::new()
        .dir(s.path())
        .args(["apply", "--region", "iad", "--yes"])
        .env("BERTH_FAULT_KILL_AT", "3")
        .run();
    assert!(
        killed.0.status.code().is_none() || killed.0.status.code() == Some(134),
        "apply was not killed: {}",
        killed.stderr()
    );
    s.berth(&["plan", "--region", "iad"]).code(5);
    let r = s.berth(&["recover"]).code(0);
    assert!(!r.stderr_flat().contains("`ord`"), "{}", r.stderr());
    s.berth(&["plan", "--region", "iad"]).code(0);
    assert!(
        s.containers().iter().all(|c| !c.contains("-berth-")),
        "{:?}",
        s.containers()
    );
    s.berth(&["apply", "--region", "iad", "--yes"]).code(0);
    s.berth(&["destroy", "--region", "iad", "--yes"]).code(0);
}
