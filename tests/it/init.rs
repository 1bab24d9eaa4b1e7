//! `berth init` from an empty directory: a spec that validates, the identity its secrets
//! are encrypted to (the `age` CLI is the witness), the `.gitignore` lines, and no file
//! overwritten.

use crate::common::Berth;

#[test]
fn init_starts_a_project_whose_secrets_can_be_set_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let init = |extra: &[&str]| {
        Berth::new()
            .dir(d)
            .args(["init", "--project", "shop", "--identity", "keys/me.key"])
            .args(extra)
            .run()
    };
    let r = init(&[]).code(0);
    assert!(
        r.stderr().contains("Created the identity"),
        "{}",
        r.stderr()
    );
    let spec = std::fs::read_to_string(d.join("berth.yaml")).unwrap();
    assert!(
        spec.starts_with("# yaml-language-server: $schema=berth.schema.json\n"),
        "{spec}"
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("berth.schema.json")).unwrap())
            .unwrap();
    assert_eq!(schema["title"], "berth spec");
    // The spec's recipient is the identity's public key, as `age-keygen -y` reads it.
    let public = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(d.join("keys/me.key"))
        .output()
        .unwrap();
    let public = String::from_utf8(public.stdout).unwrap();
    assert!(spec.contains(&format!("  - {}", public.trim())), "{spec}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("keys/me.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let ignore = std::fs::read_to_string(d.join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "/keys/me.key"), "{ignore}");
    assert!(ignore.lines().any(|l| l == "/plan.json"), "{ignore}");
    Berth::new().dir(d).args(["validate"]).run().code(0);

    // A secret added to the spec can be set right away, and decrypts with the age CLI.
    let spec = spec.replacen(
        "secrets: {}",
        "secrets:\n  token: { file: secrets/token.age, min_length: 16 }",
        1,
    );
    std::fs::write(d.join("berth.yaml"), &spec).unwrap();
    Berth::new()
        .dir(d)
        .args(["secrets", "set", "token"])
        .stdin(b"a-token-of-enough-length".to_vec())
        .run()
        .code(0);
    let plain = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(d.join("keys/me.key"))
        .arg(d.join("secrets/token.age"))
        .output()
        .unwrap();
    assert_eq!(plain.stdout, b"a-token-of-enough-length");

    // Nothing is overwritten; a second start keeps the identity and adds no line twice.
    let r = init(&[]).code(1);
    assert!(
        r.stderr().contains("exists; nothing was written"),
        "{}",
        r.stderr()
    );
    assert_eq!(std::fs::read_to_string(d.join("berth.yaml")).unwrap(), spec);
    std::fs::remove_file(d.join("berth.yaml")).unwrap();
    let r = init(&[]).code(0);
    assert!(r.stderr().contains("exists; it was kept"), "{}", r.stderr());
    assert_eq!(
        std::fs::read_to_string(d.join(".gitignore")).unwrap(),
        ignore
    );
}
