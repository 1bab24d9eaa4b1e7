//! Secrets end to end: `berth secrets` against the `age` CLI as an independent client, the
//! pre-flight refusing each kind of problem before any change to the engine, delivery into
//! real containers (checked from inside with `docker exec`), rotation, heals, and a canary
//! value searched for everywhere it must not be.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth::plan::Action;
use common::docker::{self, docker};
use common::{Berth, Scene, changed};

/// The `age` CLI, the witness for interop; CI installs it (`.ci/run`), so there it must be.
fn age_cli() -> bool {
    let ok = Command::new("age").arg("--version").output().is_ok();
    if !ok && std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("the `age` CLI is missing (`.ci/run` installs it with apt-get)");
    }
    ok
}

/// A fresh identity made by `age-keygen`; returns its path and public key.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen runs");
    assert!(out.status.success());
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .expect("age-keygen -y runs");
    (
        path,
        String::from_utf8_lossy(&public.stdout).trim().to_owned(),
    )
}

fn age_decrypt(identity: &Path, file: &Path) -> Option<Vec<u8>> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .expect("age runs");
    out.status.success().then_some(out.stdout)
}

/// The scene of these tests: an identity and recipients, secrets, pods.
trait SecretsScene {
    fn write(&self, head: &str, secrets: &str, pods: &str);
    fn set(&self, name: &str, value: &str) -> common::Run;
    fn ids(&self) -> String;
    fn exec(&self, pod: &str, args: &[&str]) -> String;
}

impl SecretsScene for Scene {
    /// Writes the spec: `head` (identity, recipients) then `secrets:` and `pods:`.
    fn write(&self, head: &str, secrets: &str, pods: &str) {
        self.spec(&format!("{head}\nsecrets:\n{secrets}\npods:\n{pods}"));
    }

    fn set(&self, name: &str, value: &str) -> common::Run {
        Berth::new()
            .dir(self.path())
            .args(["secrets", "set", name])
            .stdin(value.as_bytes().to_vec())
            .run()
    }

    /// Ids, names and states of the project's containers: what "no change" is checked on.
    fn ids(&self) -> String {
        docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=io.berth.project={}", self.project.0),
            "--format",
            "{{.ID}} {{.Names}} {{.State}}",
        ])
    }

    fn exec(&self, pod: &str, args: &[&str]) -> String {
        let name = self.name(pod);
        let mut all = vec!["exec", name.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// One pod of the test app that reads `/run/secrets/token` at start and gets `jwks` in env.
fn web_pod(image: &str, version: &str) -> String {
    format!(
        "  web:
    image: {image}
    user: \"1000:1000\"
    env: {{ VERSION: {version}, REQUIRE_FILE: /run/secrets/token }}
    secrets: [token, {{ name: jwks, env: JWKS }}]
    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms, retries: 10 }}
"
    )
}

const SECRETS: &str = "  token: { file: secrets/token.age, min_length: 16 }
  jwks: { file: secrets/jwks.age, format: jwks }
";

/// The pod `web` at v1 with [`SECRETS`], an identity made by `secrets init` and both
/// secrets set; returns the identity's public key (what `init` prints).
fn web_with_secrets_set(s: &Scene, image: &str) -> String {
    s.write("identity: ./me.key", SECRETS, &web_pod(image, "v1"));
    let public = s
        .berth(&["secrets", "init"])
        .code(0)
        .stdout()
        .trim()
        .to_owned();
    s.set("token", "a-token-of-enough-length").code(0);
    s.set("jwks", JWKS).code(0);
    public
}

const JWKS: &str =
    r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

#[test]
fn berth_and_the_age_cli_read_each_others_files() {
    if !age_cli() {
        return;
    }
    let s = Scene::new();
    s.write(
        "identity: ./keys/me.key",
        "  token: { file: secrets/token.age, min_length: 16 }\n",
        "  web: { image: x:1, secrets: [token] }\n",
    );
    // init: a new identity, 0600 in a 0700 directory, its public key on stdout.
    let init = s.berth(&["secrets", "init"]).code(0);
    let public = init.stdout().trim().to_owned();
    assert!(public.starts_with("age1"), "{public}");
    let key = s.path().join("keys/me.key");
    assert_eq!(berth::fsutil::mode_of(&key).unwrap(), 0o600);
    assert_eq!(
        berth::fsutil::mode_of(&s.path().join("keys")).unwrap(),
        0o700
    );
    // A second init keeps it.
    assert_eq!(
        s.berth(&["secrets", "init"]).code(0).stdout().trim(),
        public
    );

    // berth encrypts, the age CLI decrypts.
    s.set("token", "a-token-of-enough-length\n").code(0);
    let file = s.path().join("secrets/token.age");
    assert_eq!(berth::fsutil::mode_of(&file).unwrap(), 0o600);
    assert_eq!(
        age_decrypt(&key, &file).unwrap(),
        b"a-token-of-enough-length"
    );
    let record = std::fs::read_to_string(s.path().join("secrets/token.age.recipients")).unwrap();
    assert!(record.contains(&public), "{record}");

    // The age CLI encrypts (binary and armored), berth decrypts.
    for armor in [false, true] {
        let mut cmd = Command::new("age");
        cmd.arg("-r").arg(&public).arg("-o").arg(&file);
        if armor {
            cmd.arg("-a");
        }
        let mut child = cmd.stdin(std::process::Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"written-by-the-age-cli")
            .unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        let shown = s.berth(&["secrets", "show", "token"]).code(0);
        assert_eq!(shown.stdout(), "written-by-the-age-cli");
    }
    // verify: it decrypts and passes, but berth has no record of its recipients.
    let v = s.berth(&["secrets", "verify"]).code(0);
    assert!(
        v.stderr_flat().contains("recipients is (not recorded)"),
        "{}",
        v.stderr()
    );

    // A value that fails its checks is refused and nothing is written.
    let before = std::fs::read(&file).unwrap();
    let r = s.set("token", "short").code(1);
    assert!(
        r.stderr_flat().contains("shorter than `min_length: 16`"),
        "{}",
        r.stderr()
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // A value is never taken from the arguments.
    s.berth(&["secrets", "set", "token", "the-value-itself"])
        .code(1);
    // An unknown name is refused with a suggestion.
    let r = s.set("tokn", "whatever-long-enough").code(1);
    assert!(
        r.stderr_flat().contains("did you mean `token`?"),
        "{}",
        r.stderr()
    );
}

#[test]
fn each_preflight_failure_has_its_own_diagnostic_and_changes_nothing() {
    if !docker::available() || !age_cli() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let write = |version: &str| s.write("identity: ./me.key", SECRETS, &web_pod(image, version));
    web_with_secrets_set(&s, image);
    s.berth(&["apply", "--yes"]).code(0);
    // Every attempt below would replace the pod (new env) if it got that far.
    write("v2");
    let before = s.ids();
    let key = s.path().join("me.key");
    let token = s.path().join("secrets/token.age");
    let jwks = s.path().join("secrets/jwks.age");
    let saved = |p: &Path| std::fs::read(p).unwrap();
    let (key_bytes, token_bytes, jwks_bytes) = (saved(&key), saved(&token), saved(&jwks));
    let restore = || {
        std::fs::write(&key, &key_bytes).unwrap();
        chmod(&key, 0o600);
        std::fs::write(&token, &token_bytes).unwrap();
        std::fs::write(&jwks, &jwks_bytes).unwrap();
    };
    let (_, stranger) = keygen(s.path(), "stranger.key");
    let encrypt_to = |recipient: &str, value: &str, file: &Path| {
        let mut child = Command::new("age")
            .arg("-r")
            .arg(recipient)
            .arg("-o")
            .arg(file)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), value.as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    };
    let me = s
        .berth(&["secrets", "init"])
        .code(0)
        .stdout()
        .trim()
        .to_owned();
    type Break<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, &str, Break)> = vec![
        (
            "missing identity",
            "secrets::identity-missing",
            Box::new(|| std::fs::remove_file(&key).unwrap()),
        ),
        (
            "identity 0644",
            "secrets::identity-mode",
            Box::new(|| chmod(&key, 0o644)),
        ),
        (
            "missing secret file",
            "secrets::file-missing",
            Box::new(|| std::fs::remove_file(&token).unwrap()),
        ),
        (
            "undecryptable file",
            "secrets::undecryptable",
            Box::new(|| encrypt_to(&stranger, "a-token-for-someone-else", &token)),
        ),
        (
            "too short",
            "secrets::check-failed",
            Box::new(|| encrypt_to(&me, "short", &token)),
        ),
        (
            "forbidden value",
            "secrets::check-failed",
            Box::new(|| encrypt_to(&me, "CHANGE_ME", &token)),
        ),
        (
            "bad JWKS",
            "secrets::check-failed",
            Box::new(|| encrypt_to(&me, r#"{"keys":[]}"#, &jwks)),
        ),
    ];
    for (what, code, break_it) in &cases {
        restore();
        break_it();
        // plan: the problem as a warning, and a plan all the same.
        let plan = s.berth(&["plan"]).code(0);
        assert!(
            plan.stderr().contains(code),
            "{what}: plan warns: {}",
            plan.stderr()
        );
        // apply: the problem as an error, before anything changes.
        let r = s.berth(&["apply", "--yes"]).code(1);
        let err = r.stderr_flat();
        assert!(err.contains(code), "{what}: {err}");
        assert!(err.contains("nothing was changed"), "{what}: {err}");
        assert_eq!(
            r.stderr().matches("  × ").count(),
            2,
            "{what}: one problem and the verdict: {err}"
        );
        assert_eq!(s.ids(), before, "{what}: the engine's containers changed");
    }
    restore();
    // Two problems at once are listed together.
    chmod(&key, 0o600);
    encrypt_to(&me, "short", &token);
    encrypt_to(&me, r#"{"keys":[]}"#, &jwks);
    let r = s.berth(&["secrets", "verify"]).code(1);
    assert_eq!(
        r.stderr().matches("secrets::check-failed").count(),
        2,
        "{}",
        r.stderr()
    );
    assert_eq!(s.ids(), before);
}

#[test]
fn secrets_arrive_as_0400_files_of_the_pods_user_and_in_env_only_when_asked() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    web_with_secrets_set(&s, image);
    // The app exits at start without its token: healthy means the file was there first.
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(
        s.exec("web", &["/testapp", "stat", "/run/secrets/token"]),
        "mode=0400 uid=1000 gid=1000 size=24"
    );
    assert_eq!(
        s.exec("web", &["/testapp", "cat", "/run/secrets/token"]),
        "a-token-of-enough-length"
    );
    // Not a file when delivered through env.
    assert!(
        Command::new("docker")
            .args([
                "exec",
                &s.name("web"),
                "/testapp",
                "stat",
                "/run/secrets/jwks"
            ])
            .output()
            .unwrap()
            .stdout
            .starts_with(b"/run/secrets/jwks: ")
    );
    let inspect = docker(&["inspect", &s.name("web")]);
    assert!(
        !inspect.contains("a-token-of-enough-length"),
        "file-delivered value in inspect"
    );
    assert!(
        inspect.contains("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
        "env-delivered value"
    );
    // A memory-backed volume on the pod's engine, read-only inside, held by its keeper.
    let (typ, volume, rw) = docker::secrets_mount_of(&s.name("web")).expect("a secrets mount");
    assert_eq!((typ.as_str(), rw), ("volume", false));
    docker::assert_memory_volume(&s.project.0, &volume);
    assert_eq!(
        docker::secrets_volumes_of(&s.project.0),
        std::slice::from_ref(&volume)
    );
    // Its labels: berth's, with the ciphertext's fingerprint, never the value.
    let labels = docker(&["volume", "inspect", "-f", "{{json .Labels}}", &volume]);
    assert!(
        labels.contains("\"io.berth.secrets.pod\":\"pod.web\""),
        "{labels}"
    );
    assert!(
        labels.contains("\"io.berth.secret.token\":\"sha256:"),
        "{labels}"
    );
    assert!(!labels.contains("a-token-of-enough-length"), "{labels}");
    s.plan(0);

    // An engine restart empties the volume and leaves its keeper stopped (the pod's
    // container started again by its restart policy, with nothing at /run/secrets): plan
    // heals the pod, apply fills the volume again.
    let (keeper, _, _) = docker::keepers_of(&s.project.0).remove(0);
    docker(&["stop", "-t", "1", &s.name("web")]);
    docker(&["kill", &keeper]);
    let _ = Command::new("docker")
        .args(["start", &s.name("web")])
        .output();
    let plan = s.plan(2);
    assert_eq!(changed(&plan), [("pod.web".to_owned(), Action::Heal)]);
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(
        s.exec("web", &["/testapp", "cat", "/run/secrets/token"]),
        "a-token-of-enough-length"
    );
    assert_eq!(
        s.exec("web", &["/testapp", "stat", "/run/secrets/token"]),
        "mode=0400 uid=1000 gid=1000 size=24"
    );
    docker::assert_memory_volume(&s.project.0, &volume);
    s.plan(0);

    // Its keeper removed by hand: plan heals the pod, apply makes a keeper again.
    let (keeper, _, _) = docker::keepers_of(&s.project.0).remove(0);
    docker(&["rm", "-f", &keeper]);
    let plan = s.plan(2);
    assert_eq!(changed(&plan), [("pod.web".to_owned(), Action::Heal)]);
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(
        s.exec("web", &["/testapp", "cat", "/run/secrets/token"]),
        "a-token-of-enough-length"
    );
    docker::assert_memory_volume(&s.project.0, &volume);
    s.plan(0);

    // A new value: the pod is replaced "because secret.token changed"; the old
    // container's directory is swept away with it.
    s.set("token", "another-token-of-enough-length").code(0);
    let human = s.berth(&["plan"]).code(0).stdout();
    assert!(human.contains("secret.token changed"), "{human}");
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(
        s.exec("web", &["/testapp", "cat", "/run/secrets/token"]),
        "another-token-of-enough-length"
    );
    let (_, now, _) = docker::secrets_mount_of(&s.name("web")).expect("a secrets mount");
    assert_ne!(now, volume);
    assert_eq!(
        docker::secrets_volumes_of(&s.project.0),
        std::slice::from_ref(&now),
        "one container, one secrets volume"
    );
    assert_eq!(docker::keepers_of(&s.project.0).len(), 1, "and one keeper");
    docker::assert_memory_volume(&s.project.0, &now);
    // Nothing of a pod's secrets on this machine's runtime directory any more.
    if let Ok(root) = berth::secrets::delivery::check_root() {
        assert!(!root.join(&s.project.0).exists());
    }
    // Destroy: containers and their decrypted secrets go; the encrypted files stay.
    s.berth(&["destroy", "--yes"]).code(0);
    assert!(docker::secrets_volumes_of(&s.project.0).is_empty());
    assert!(docker::keepers_of(&s.project.0).is_empty());
    assert!(s.path().join("secrets/token.age").exists());
}

#[test]
fn removing_a_recipient_re_encrypts_every_secret_and_restarts_its_consumers() {
    if !docker::available() || !age_cli() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let (me, me_public) = keygen(s.path(), "me.key");
    let (_, ops_public) = keygen(s.path(), "ops.key");
    let ops = s.path().join("ops.key");
    let head = |recipients: &str| format!("identity: ./me.key\nrecipients: [{recipients}]");
    s.write(
        &head(&format!("{me_public}, {ops_public}")),
        SECRETS,
        &web_pod(image, "v1"),
    );
    s.set("token", "a-token-of-enough-length").code(0);
    s.set("jwks", JWKS).code(0);
    let token = s.path().join("secrets/token.age");
    assert!(
        age_decrypt(&ops, &token).is_some(),
        "ops can read it before"
    );
    s.berth(&["apply", "--yes"]).code(0);
    let old_id = docker(&["inspect", "-f", "{{.Id}}", &s.name("web")]);

    // ops leaves the team.
    s.write(&head(&me_public), SECRETS, &web_pod(image, "v1"));
    let plan = s.plan(2);
    assert_eq!(
        changed(&plan),
        [
            ("secret.jwks".to_owned(), Action::Heal),
            ("secret.token".to_owned(), Action::Heal),
            ("pod.web".to_owned(), Action::Replace),
        ]
    );
    let human = s.berth(&["plan"]).code(0).stdout();
    assert!(
        human.contains("secret.jwks and secret.token changed"),
        "{human}"
    );
    s.berth(&["apply", "--yes"]).code(0);
    for f in ["secrets/token.age", "secrets/jwks.age"] {
        let f = s.path().join(f);
        assert!(
            age_decrypt(&ops, &f).is_none(),
            "ops can still read {}",
            f.display()
        );
        assert!(age_decrypt(&me, &f).is_some());
    }
    assert_ne!(
        docker(&["inspect", "-f", "{{.Id}}", &s.name("web")]),
        old_id
    );
    s.plan(0);

    // A secret file left readable by others: a heal of its mode, nothing else.
    chmod(&token, 0o644);
    let plan = s.plan(2);
    assert_eq!(changed(&plan), [("secret.token".to_owned(), Action::Heal)]);
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(berth::fsutil::mode_of(&token).unwrap(), 0o600);
    s.plan(0);

    // `berth secrets rotate` does the re-encryption alone, and reports the removed key.
    s.write(
        &head(&format!("{me_public}, {ops_public}")),
        SECRETS,
        &web_pod(image, "v1"),
    );
    let r = s.berth(&["secrets", "rotate"]).code(0);
    assert!(r.stderr().contains("Rotated 2 secret(s)"), "{}", r.stderr());
    assert!(age_decrypt(&ops, &token).is_some());
    s.write(&head(&me_public), SECRETS, &web_pod(image, "v1"));
    let r = s.berth(&["secrets", "rotate"]).code(0);
    assert!(
        r.stderr().contains("no longer readable by"),
        "{}",
        r.stderr()
    );
    assert!(age_decrypt(&ops, &token).is_none());
}

/// Every process's command line, read while an apply runs.
fn sample_cmdlines(stop: &std::sync::atomic::AtomicBool) -> Vec<u8> {
    let mut seen = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                    seen.extend_from_slice(&c);
                    seen.push(b'\n');
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    seen
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn a_canary_value_is_found_only_where_it_is_meant_to_be() {
    if !docker::available() || !age_cli() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let value = common::canary();
    let (_, me_public) = keygen(s.path(), "me.key");
    let (_, ops_public) = keygen(s.path(), "ops.key");
    let head = |recipients: &str| format!("identity: ./me.key\nrecipients: [{recipients}]");
    let pods = format!(
        "{}  env-user:
    image: {image}
    env: {{ PORT: 8081 }}
    secrets: [{{ name: token, env: TOKEN }}]
    health: {{ http: {{ port: 8081, path: /health }}, interval: 300ms, retries: 10 }}
",
        web_pod(image, "v1")
    );
    s.write(&head(&format!("{me_public}, {ops_public}")), SECRETS, &pods);
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let record = |outputs: &mut Vec<(String, Vec<u8>)>, what: &str, r: common::Run| {
        outputs.push((format!("{what} stdout"), r.0.stdout.clone()));
        outputs.push((format!("{what} stderr"), r.0.stderr.clone()));
    };
    record(&mut outputs, "set", s.set("token", &value).code(0));
    record(&mut outputs, "set jwks", s.set("jwks", JWKS).code(0));
    for args in [
        &["validate"][..],
        &["plan"],
        &["plan", "--format", "json"],
        &["plan", "--format", "markdown"],
        &["secrets", "verify"],
    ] {
        record(&mut outputs, &args.join(" "), s.berth(args));
    }
    // apply, with every process's command line sampled meanwhile.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (applied, cmdlines) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_cmdlines(&stop));
        let r = s.berth(&["apply", "--yes", "--format", "json"]).code(0);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, sampler.join().unwrap())
    });
    record(&mut outputs, "apply", applied);
    outputs.push(("/proc/*/cmdline during apply".into(), cmdlines));
    // Rotation (a recipient removed), then apply again.
    s.write(&head(&me_public), SECRETS, &pods);
    record(
        &mut outputs,
        "plan after rotation",
        s.berth(&["plan", "--format", "json"]),
    );
    record(&mut outputs, "rotate", s.berth(&["secrets", "rotate"]));
    record(
        &mut outputs,
        "apply after rotation",
        s.berth(&["apply", "--yes"]).code(0),
    );
    // A saved plan, then a rollback to the first revision.
    record(
        &mut outputs,
        "plan --out",
        s.berth(&["plan", "--out", "saved-plan.json"]).code(0),
    );
    record(
        &mut outputs,
        "history",
        s.berth(&["history", "--format", "json"]).code(0),
    );
    record(
        &mut outputs,
        "rollback",
        s.berth(&["rollback", "--to", "1", "--yes"]).code(0),
    );

    for (what, bytes) in &outputs {
        assert!(!contains(bytes, &value), "the canary appeared in {what}");
    }
    // The files beside the spec (ciphertext, records, the saved plan) and every file of
    // the state directory (lock, journals, revisions).
    let state = s.state();
    let mut files = 0;
    let mut dirs = vec![s.path().to_path_buf(), state.clone()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                files += 1;
                let bytes = std::fs::read(e.path()).unwrap();
                assert!(
                    !contains(&bytes, &value),
                    "the canary is in {}",
                    e.path().display()
                );
            }
        }
    }
    assert!(
        state.join("revisions").is_dir() && files > 8,
        "{files} files searched"
    );
    // docker inspect: only in the env of the pod that asked for env delivery.
    assert!(!contains(
        docker(&["inspect", &s.name("web")]).as_bytes(),
        &value
    ));
    assert!(contains(
        docker(&["inspect", &s.name("env-user")]).as_bytes(),
        &value
    ));
    // And inside the file-delivered container, at /run/secrets, mode 0400.
    assert_eq!(
        s.exec("web", &["/testapp", "cat", "/run/secrets/token"]),
        value
    );
    assert!(
        s.exec("web", &["/testapp", "stat", "/run/secrets/token"])
            .starts_with("mode=0400 ")
    );
    // Asked for explicitly, it is shown.
    assert_eq!(
        s.berth(&["secrets", "show", "token"]).code(0).stdout(),
        value
    );
}

/// The files under the engine's data root (`docker info`'s `DockerRootDir`) that hold
/// `value`, each with the filesystem it is on.
fn on_the_engines_disk(value: &str) -> Vec<(String, Option<String>)> {
    let root = docker(&["info", "-f", "{{.DockerRootDir}}"]);
    let out = Command::new("grep")
        .args(["-rlF", "--binary-files=text", "-e", value, &root])
        .output()
        .expect("grep runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|p| (p.to_owned(), berth::fsutil::filesystem_of(Path::new(p))))
        .collect()
}

#[test]
fn a_secret_file_never_reaches_the_engines_disk() {
    if !docker::available() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let value = common::canary();
    let pod = |version: &str| {
        format!(
            "  web:
    image: {image}
    user: \"1000:1000\"
    env: {{ VERSION: {version}, REQUIRE_FILE: /run/secrets/token }}
    secrets: [token]
    update: {{ strategy: blue-green }}
    health: {{ http: {{ port: 8080, path: /health }}, interval: 300ms, retries: 10 }}
"
        )
    };
    s.write(
        "identity: ./me.key",
        "  token: { file: secrets/token.age, min_length: 16 }\n",
        &pod("v1"),
    );
    s.berth(&["secrets", "init"]).code(0);
    s.set("token", &value).code(0);
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(
        s.exec("web", &["/testapp", "cat", "/run/secrets/token"]),
        value
    );
    // Under the data root, only where the engine mounts the volume's tmpfs (memory).
    let found = on_the_engines_disk(&value);
    assert!(
        found.iter().all(|(_, fs)| fs.as_deref() == Some("tmpfs")),
        "the canary is on the engine's disk: {found:?}"
    );
    assert!(!found.is_empty(), "the witness finds the mounted volume");
    // Replaced blue-green, then destroyed: nowhere under the data root at all.
    s.write(
        "identity: ./me.key",
        "  token: { file: secrets/token.age, min_length: 16 }\n",
        &pod("v2"),
    );
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(docker::secrets_volumes_of(&s.project.0).len(), 1);
    assert_eq!(docker::keepers_of(&s.project.0).len(), 1);
    let found = on_the_engines_disk(&value);
    assert!(
        found.iter().all(|(_, fs)| fs.as_deref() == Some("tmpfs")),
        "the canary is on the engine's disk: {found:?}"
    );
    s.berth(&["destroy", "--yes"]).code(0);
    assert_eq!(on_the_engines_disk(&value), []);
    assert!(docker::secrets_volumes_of(&s.project.0).is_empty());
    assert!(docker::keepers_of(&s.project.0).is_empty());
}

#[test]
fn an_ssh_ed25519_key_works_as_identity_and_recipient() {
    if !age_cli() {
        return;
    }
    let s = Scene::new();
    let key = s.path().join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "deploy@host", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(s.path().join("id_ed25519.pub")).unwrap();
    s.write(
        &format!(
            "identity: ./id_ed25519\nrecipients: [\"{}\"]",
            public.trim()
        ),
        "  token: { file: secrets/token.age, min_length: 16 }\n",
        "  web: { image: x:1, secrets: [token] }\n",
    );
    s.set("token", "a-token-of-enough-length").code(0);
    assert_eq!(
        s.berth(&["secrets", "show", "token"]).code(0).stdout(),
        "a-token-of-enough-length"
    );
    // The age CLI opens it with the same ssh key.
    let file = s.path().join("secrets/token.age");
    assert_eq!(
        age_decrypt(&key, &file).unwrap(),
        b"a-token-of-enough-length"
    );
    // init on an ssh identity keeps it and prints its public key as a recipient.
    let init = s.berth(&["secrets", "init"]).code(0).stdout();
    assert!(init.starts_with("ssh-ed25519 "), "{init}");
    s.berth(&["secrets", "verify"]).code(0);
}

/// A spec of one secret `token` (inside the scene) and no pod: enough for `secrets set`
/// and `secrets verify`, which need no engine.
fn token_only(s: &Scene, file: &str, extra: &str) {
    s.spec(&format!(
        "identity: ./me.key\nsecrets:\n  token: {{ file: {file}, min_length: 16{extra} }}\n"
    ));
}

#[test]
fn a_secrets_directory_others_may_write_into_is_refused_by_the_preflight_and_set() {
    let s = Scene::new();
    token_only(&s, "secrets/token.age", "");
    s.berth(&["secrets", "init"]).code(0);
    s.set("token", "a-token-of-enough-length").code(0);
    s.berth(&["secrets", "verify"]).code(0);
    let dir = s.path().join("secrets");
    let token = dir.join("token.age");
    let before = std::fs::read(&token).unwrap();
    for mode in [0o777, 0o775, 0o1777] {
        chmod(&dir, mode);
        let r = s.berth(&["secrets", "verify"]).code(1);
        let err = r.stderr_flat();
        assert!(err.contains("secrets::dir-writable"), "{mode:o}: {err}");
        assert!(err.contains("other users may write"), "{mode:o}: {err}");
        assert!(err.contains("chmod go-w"), "{mode:o}: {err}");
        let r = s.set("token", "another-token-of-enough-length").code(1);
        assert!(r.stderr_flat().contains("not private"), "{}", r.stderr());
        assert_eq!(std::fs::read(&token).unwrap(), before, "{mode:o}");
        // Nothing was created beside it (no temporary file).
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "{mode:o}");
    }
    // A file another user owns could hold their value (giving it away needs root).
    chmod(&dir, 0o700);
    if berth::fsutil::effective_uid() == 0 {
        std::os::unix::fs::chown(&token, Some(65534), None).unwrap();
        let r = s.berth(&["secrets", "verify"]).code(1);
        assert!(
            r.stderr_flat().contains("is owned by user 65534"),
            "{}",
            r.stderr()
        );
        std::os::unix::fs::chown(&token, Some(0), None).unwrap();
    }
    // The spec's directory counts too: it holds `secrets/`.
    chmod(&dir, 0o700);
    chmod(s.path(), 0o777);
    let r = s.berth(&["secrets", "verify"]).code(1);
    assert!(
        r.stderr_flat().contains("secrets::dir-writable"),
        "{}",
        r.stderr()
    );
    chmod(s.path(), 0o700);
    s.berth(&["secrets", "verify"]).code(0);
}

#[test]
fn a_secret_file_outside_the_spec_directory_is_refused_and_never_written() {
    let s = Scene::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("passwd-like");
    std::fs::write(&victim, b"root:x:0:0\n").unwrap();
    chmod(&victim, 0o644);
    let untouched = || {
        assert_eq!(std::fs::read(&victim).unwrap(), b"root:x:0:0\n");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o644
        );
    };
    // Written as a path that climbs out: validate refuses it at the span.
    token_only(&s, &victim.display().to_string(), "");
    let r = s.berth(&["validate"]).code(1);
    assert!(r.stderr().contains("secret-file-outside"), "{}", r.stderr());
    s.berth(&["secrets", "init"]).code(1);
    s.set("token", "a-token-of-enough-length").code(1);
    untouched();
    // A path inside that is a symlink out of the directory: the pre-flight and `set`
    // resolve it and refuse.
    token_only(&s, "secrets/token.age", "");
    s.berth(&["secrets", "init"]).code(0);
    std::fs::create_dir_all(s.path().join("secrets")).unwrap();
    let link = s.path().join("secrets/token.age");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let r = s.berth(&["secrets", "verify"]).code(1);
    assert!(
        r.stderr_flat().contains("secrets::file-outside"),
        "{}",
        r.stderr()
    );
    s.berth(&["secrets", "show", "token"]).code(1);
    let r = s.set("token", "a-token-of-enough-length").code(1);
    assert!(
        r.stderr_flat().contains("outside the spec's directory"),
        "{}",
        r.stderr()
    );
    untouched();
    // So is a symlinked directory on the way.
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_dir(s.path().join("secrets")).unwrap();
    std::os::unix::fs::symlink(outside.path(), s.path().join("secrets")).unwrap();
    token_only(&s, "secrets/passwd-like", "");
    s.set("token", "a-token-of-enough-length").code(1);
    untouched();
    // A symlink to a file inside the directory is not written through either.
    std::fs::remove_file(s.path().join("secrets")).unwrap();
    std::fs::create_dir(s.path().join("secrets")).unwrap();
    chmod(&s.path().join("secrets"), 0o700);
    token_only(&s, "secrets/token.age", "");
    s.set("token", "a-token-of-enough-length").code(0);
    token_only(&s, "secrets/alias.age", "");
    std::os::unix::fs::symlink("token.age", s.path().join("secrets/alias.age")).unwrap();
    let before = std::fs::read(s.path().join("secrets/token.age")).unwrap();
    let r = s.set("token", "another-token-of-enough-length").code(1);
    assert!(r.stderr_flat().contains("is a symlink"), "{}", r.stderr());
    assert_eq!(
        std::fs::read(s.path().join("secrets/token.age")).unwrap(),
        before
    );
    // `allow_outside: true` says the file lives elsewhere on purpose.
    let elsewhere = outside.path().join("token.age");
    token_only(
        &s,
        &elsewhere.display().to_string(),
        ", allow_outside: true",
    );
    s.berth(&["validate"]).code(0);
    s.set("token", "a-token-of-enough-length").code(0);
    s.berth(&["secrets", "verify"]).code(0);
    untouched();
}

#[test]
fn validate_places_secret_files_by_their_written_path() {
    let diags = |file: &str, extra: &str| {
        let text = format!(
            "version: 1\nproject: p\nidentity: ./me.key\nsecrets:\n  s: {{ file: \"{file}\"{extra} }}\n"
        );
        berth::spec::load_str(Path::new("berth.yaml"), text)
            .report
            .diagnostics
            .iter()
            .map(|d| d.code.clone())
            .collect::<Vec<_>>()
    };
    for outside in [
        "../x.age",
        "/etc/x.age",
        "~/x.age",
        "./a/../../x.age",
        "a/../../x",
    ] {
        assert!(
            diags(outside, "").contains(&"secret-file-outside".to_owned()),
            "{outside}"
        );
        assert!(
            diags(outside, ", allow_outside: true").is_empty(),
            "{outside}"
        );
    }
    for inside in [
        "x.age",
        "secrets/x.age",
        "./secrets/../x.age",
        "a/b/../../x.age",
    ] {
        assert!(
            diags(inside, "").is_empty(),
            "{inside}: {:?}",
            diags(inside, "")
        );
    }
    let bad = diags("x.age", ", pattern: \"[\", forbid_pattern: \"(?<=x)\"");
    assert_eq!(bad, ["invalid-pattern", "invalid-pattern"]);
}

#[test]
fn pattern_forbid_pattern_and_placeholders_are_checked_on_set_without_showing_the_value() {
    let s = Scene::new();
    s.spec(
        "identity: ./me.key\nsecrets:\n  stripe: { file: secrets/stripe.age, pattern: \"^sk_live_\", forbid_pattern: \"(?i)test\" }\n  app_key: { file: secrets/app_key.age, min_length: 32 }\n",
    );
    s.berth(&["secrets", "init"]).code(0);
    let value = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";
    let r = s.set("stripe", value).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("does not match its `pattern`"), "{err}");
    assert!(err.contains("matches its `forbid_pattern`"), "{err}");
    assert!(!r.stderr().contains(value) && !r.stdout().contains(value));
    s.set("stripe", "sk_live_4eC39HqLyjWDarjtT1zdp7dc").code(0);
    let template = "your-secret-key-CHANGE_ME-min-32-characters-long";
    let r = s.set("app_key", template).code(1);
    assert!(r.stderr_flat().contains("placeholder"), "{}", r.stderr());
    assert!(!r.stderr().contains(template));
    // Short defaults only as the whole value: a random key holding "admin" is fine.
    s.set("app_key", "Qm9admin7Lp2xV8rT4wZ0yK6nB3cD5fGh")
        .code(0);
    s.berth(&["secrets", "verify"]).code(0);
}

#[test]
fn a_secret_declaration_is_shown_unmasked_in_diagnostics() {
    let s = Scene::new();
    s.spec(
        "identity: ./me.key\nsecrets:\n  app_key: { file: secrets/app_key.age, min_length: 32 }\n",
    );
    s.berth(&["secrets", "init"]).code(0);
    let r = s.berth(&["secrets", "verify"]).code(1);
    assert!(
        r.stderr().contains("secrets::file-missing"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr()
            .contains("app_key: { file: secrets/app_key.age, min_length: 32 }"),
        "{}",
        r.stderr()
    );
}

#[test]
fn a_truncated_placeholder_or_writable_secret_is_a_preflight_warning_and_replaces_no_pod() {
    if !docker::available() || !age_cli() {
        return;
    }
    let s = Scene::new();
    let image = docker::testapp_image();
    let me = web_with_secrets_set(&s, image);
    s.berth(&["apply", "--yes"]).code(0);
    let before = s.ids();
    let token = s.path().join("secrets/token.age");
    let good = std::fs::read(&token).unwrap();
    let placeholder = || {
        let mut child = Command::new("age")
            .arg("-r")
            .arg(&me)
            .arg("-o")
            .arg(&token)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            b"your-secret-key-CHANGE_ME-min-32-characters-long",
        )
        .unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    };
    type Break<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, &str, Break)> = vec![
        (
            "truncated",
            "secrets::undecryptable",
            Box::new(|| std::fs::write(&token, &good[..good.len() / 2]).unwrap()),
        ),
        (
            "placeholder",
            "secrets::check-failed",
            Box::new(placeholder),
        ),
        // Apply refuses a file others may replace: not a mode to heal, a warning.
        (
            "writable by others",
            "secrets::file-writable",
            Box::new(|| chmod(&token, 0o666)),
        ),
    ];
    for (what, code, break_it) in &cases {
        std::fs::write(&token, &good).unwrap();
        chmod(&token, 0o600);
        break_it();
        let r = s
            .berth(&["plan", "--format", "json", "--detailed-exitcode"])
            .code(0);
        assert!(
            r.stderr().contains(code),
            "{what}: plan warns: {}",
            r.stderr()
        );
        let plan: berth::plan::Plan = serde_json::from_str(&r.stdout()).unwrap();
        assert_eq!(changed(&plan), [], "{what}: nothing is planned for it");
        let human = s.berth(&["plan"]).code(0);
        assert!(
            !human.stdout().contains("drift in recipients")
                && !human.stdout().contains("heal: mode"),
            "{what}: {}",
            human.stdout()
        );
        let r = s.berth(&["apply", "--yes"]).code(1);
        assert!(r.stderr_flat().contains(code), "{what}: {}", r.stderr());
        assert_eq!(s.ids(), before, "{what}");
    }
    // The value fixed, nothing changes either: the same ciphertext as deployed.
    std::fs::write(&token, &good).unwrap();
    chmod(&token, 0o600);
    assert_eq!(changed(&s.plan(0)), []);
}

/// `berth secrets set NAME` run on a terminal (a pty `script` makes), with `editor` as
/// `$EDITOR`.
fn set_on_a_terminal(dir: &Path, name: &str, editor: &Path) -> std::process::Output {
    Command::new("script")
        .args([
            "-qec",
            &format!("{} secrets set {name}", env!("CARGO_BIN_EXE_berth")),
        ])
        .arg("/dev/null")
        .current_dir(dir)
        .env("EDITOR", editor)
        .env_remove("VISUAL")
        .env_remove("BERTH_IDENTITY")
        .env_remove("BERTH_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script runs")
}

#[test]
fn secrets_set_on_a_terminal_edits_the_current_value_and_writes_only_a_change() {
    if !age_cli() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keygen(d, "me.key");
    std::fs::write(
        d.join("berth.yaml"),
        format!(
            "version: 1\nproject: edit\nidentity: ./me.key\nrecipients: [{public}]\nsecrets:\n  token: {{ file: secrets/token.age, min_length: 16 }}\n"
        ),
    )
    .unwrap();
    Berth::new()
        .dir(d)
        .args(["secrets", "set", "token"])
        .stdin(b"the-first-value-of-it".to_vec())
        .run()
        .code(0);
    // An editor that keeps what it was given (where the test can see it) and writes a new
    // value, as a person would.
    let seen = d.join("seen");
    let editor = d.join("editor.sh");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\ncat \"$1\" > {}\nprintf 'the-second-value-of-it\\n' > \"$1\"\n",
            seen.display()
        ),
    )
    .unwrap();
    chmod(&editor, 0o755);
    let out = set_on_a_terminal(d, "token", &editor);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::read(&seen).unwrap(), b"the-first-value-of-it\n");
    let file = d.join("secrets/token.age");
    assert_eq!(
        age_decrypt(&key, &file).as_deref(),
        Some(&b"the-second-value-of-it"[..])
    );
    // Left as it was: nothing is written (the file keeps its bytes).
    let before = std::fs::read(&file).unwrap();
    let out = set_on_a_terminal(d, "token", Path::new("/bin/true"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unchanged; nothing was written"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}
