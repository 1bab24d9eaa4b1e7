//! Authenticated backup manifests, against real files, with the standard tools as the
//! forger's: a backup made with `tar | zstd | age -r PUBLIC` and a manifest rewritten to
//! match verifies without `backup_key:` (the forgery is sound), and with it is refused by
//! `verify`, `restore` and `list`, as is one whose `mac` was left out; the real backups
//! are still restored.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::backup::{self, Scene, tree};
use common::docker;

fn tools() -> bool {
    backup::tools(&["age", "age-keygen", "zstd", "tar"])
}

/// The key's secret and `backup_key:`, for `Scene::data_spec`'s head.
const KEYED: &str = "secrets:
  backup_key: { file: secrets/backup_key.age, min_length: 32 }
backup_key: backup_key
";

/// Replaces backup `id`'s data with `evil` made by the standard tools (tarred, compressed,
/// encrypted to the scene's public key) and rewrites its manifest's sizes and hashes to
/// match, as anyone who knows the public recipients can.
fn forge(s: &Scene, id: &str, evil: &Path) {
    let work = tempfile::tempdir().unwrap();
    let plain = work.path().join("plain.tar");
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(s.path().join("key.txt"))
        .output()
        .unwrap();
    let public = String::from_utf8(public.stdout).unwrap().trim().to_owned();
    let data = s.store.join(format!("data/{id}.tar.zst.age"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"tar -c -f "$1" -C "$2" . && zstd -q -c "$1" | age -r "$3" > "$4""#)
        .args(["sh", &plain.display().to_string()])
        .arg(evil)
        .arg(&public)
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success(), "the forger's pipe failed");
    let sha = |p: &Path| {
        use sha2::Digest;
        let bytes = std::fs::read(p).unwrap();
        let hex: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (bytes.len() as u64, hex)
    };
    let (plain_bytes, plain_sha) = sha(&plain);
    let (stored_bytes, stored_sha) = sha(&data);
    let path = s.store.join(format!("data/{id}.manifest.json"));
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["plain_bytes"] = plain_bytes.into();
    m["plain_sha256"] = plain_sha.into();
    m["stored_bytes"] = stored_bytes.into();
    m["stored_sha256"] = stored_sha.into();
    std::fs::write(&path, m.to_string()).unwrap();
}

#[test]
fn a_forged_backup_fails_verify_and_restore_and_the_real_one_is_restored() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let src = s.path().join("files");
    backup::sample(&src, 1);
    let source = format!("{{ path: {} }}", src.display());
    let keyed = || s.data_spec(KEYED, &source, "{ daily: 7 }");
    keyed();
    s.berth(&["secrets", "set", "backup_key", "--generate"])
        .code(0);
    s.berth(&["backup", "run", "data"]).code(0);
    std::fs::write(src.join("hello.txt"), "the second backup\n").unwrap();
    s.berth(&["backup", "run", "data"]).code(0);
    let second = tree(&src);
    let ids = s.ids("data");
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let m = std::fs::read_to_string(s.store.join(format!("data/{id}.manifest.json"))).unwrap();
        assert!(m.contains("\"mac\""), "{m}");
    }
    s.berth(&["backup", "verify", "--all"]).code(0);

    // The older one forged: other data, its manifest rewritten to match.
    let evil = s.path().join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::write(evil.join("hello.txt"), "planted\n").unwrap();
    forge(&s, &ids[0], &evil);
    // Without `backup_key:` the forgery reads back as sound: the threat is real.
    s.data_spec("", &source, "{ daily: 7 }");
    s.berth(&["backup", "verify", &ids[0]]).code(0);
    keyed();

    let r = s.berth(&["backup", "verify", &ids[0]]).code(1);
    assert!(
        r.stderr_flat().contains("is not authentic"),
        "{}",
        r.stderr()
    );
    // A forged `mac` fails the default verify too (it checks the newest).
    let r = s.berth(&["backup", "verify"]).code(1);
    assert!(r.stderr_flat().contains(&ids[0]), "{}", r.stderr());
    std::fs::write(src.join("hello.txt"), "live data\n").unwrap();
    let live = tree(&src);
    let r = s.berth(&["backup", "restore", "data", &ids[0]]).code(1);
    assert!(
        r.stderr_flat().contains("is not authentic"),
        "{}",
        r.stderr()
    );
    assert_eq!(tree(&src), live, "a refused restore changed the data");

    // A copy of the forgery under a newer id, its `mac` left out.
    let newer = format!("{}-ffffff", &ids[1][..20]);
    assert!(newer > ids[1]);
    for ext in ["tar.zst.age", "manifest.json"] {
        std::fs::copy(
            s.store.join(format!("data/{}.{ext}", ids[0])),
            s.store.join(format!("data/{newer}.{ext}")),
        )
        .unwrap();
    }
    let path = s.store.join(format!("data/{newer}.manifest.json"));
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["id"] = newer.clone().into();
    // Newer in time as well as by id (the copy kept the older backup's time, which sorts
    // it before the real second backup whenever the two were taken in different seconds).
    let real: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.store.join(format!("data/{}.manifest.json", ids[1]))).unwrap(),
    )
    .unwrap();
    m["created_at"] = (real["created_at"].as_u64().unwrap() + 1).into();
    m.as_object_mut().unwrap().remove("mac");
    std::fs::write(&path, m.to_string()).unwrap();
    let r = s.berth(&["backup", "verify", &newer]).code(1);
    assert!(
        r.stderr_flat().contains("is not authenticated"),
        "{}",
        r.stderr()
    );
    let r = s.berth(&["backup", "restore", "data", &newer]).code(1);
    assert!(
        r.stderr_flat().contains("is not authenticated"),
        "{}",
        r.stderr()
    );
    assert_eq!(tree(&src), live);

    // Listed as what they are.
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    let line = |id: &str| {
        list.lines()
            .find(|l| l.contains(id))
            .unwrap_or("")
            .to_owned()
    };
    assert!(line(&ids[0]).contains("NOT AUTHENTIC"), "{list}");
    assert!(line(&newer).contains("NOT AUTHENTICATED"), "{list}");
    assert!(!line(&ids[1]).contains("NOT"), "{list}");
    let json = s
        .berth(&["backup", "list", "--format", "json"])
        .code(0)
        .stdout();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let authentic: Vec<(String, bool)> = doc["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["authentic"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        authentic,
        [
            (ids[0].clone(), false),
            (ids[1].clone(), true),
            (newer.clone(), false)
        ]
    );

    // The default restore passes over the newer forgery and restores the real newest.
    s.berth(&["backup", "restore", "data"]).code(0);
    assert_eq!(tree(&src), second);
}

#[test]
fn a_backup_key_that_cannot_be_read_stops_the_backup_before_anything_is_written() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let src = s.path().join("files");
    backup::sample(&src, 1);
    // No `min_length` on the secret: the backup's own check is what refuses a short key.
    s.data_spec(
        &KEYED.replace(", min_length: 32", ""),
        &format!("{{ path: {} }}", src.display()),
        "{ daily: 7 }",
    );
    // Not made yet.
    let r = s.berth(&["backup", "run", "data"]).code(1);
    assert!(
        r.stderr_flat().contains("backup_key `backup_key`"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr_flat()
            .contains("berth secrets set backup_key --generate"),
        "{}",
        r.stderr()
    );
    // Too short to be a key.
    s.inner
        .berth_cmd(&["secrets", "set", "backup_key"])
        .stdin("short")
        .run()
        .code(0);
    let r = s.berth(&["backup", "run", "data"]).code(1);
    assert!(r.stderr_flat().contains("at least 32"), "{}", r.stderr());
    assert_eq!(s.files(), Vec::<std::path::PathBuf>::new());
}
