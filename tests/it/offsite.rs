//! Off-host copies against real servers on 127.0.0.1: an S3-compatible one (moto's) and an
//! sshd of the test's serving SFTP. A volume backup is written to the host's store, the
//! sftp store and the bucket in one run, each verified where it is; the bucket's objects
//! (read with curl) and the sftp store's files are byte for byte the host's; the host's
//! copy is deleted by hand and the volume restored from the bucket's, files identical. A
//! bucket that is down fails the run without harming the host's copy.

use crate::common;

use common::backup::{self, Scene};
use common::docker;
use common::s3::S3Server;
use common::sftp::SftpServer;

/// The spec: the backup `data` copied to `copies` (of `offsite`, the bucket, and `vault`,
/// the sftp store at `vault`).
fn spec(s: &Scene, endpoint: &str, vault: &str, copies: &str) {
    let image = s.image();
    s.spec(
        true,
        &format!(
            "secrets:
  backup_key: {{ file: secrets/backup_key.age, min_length: 32 }}
  s3_secret: {{ file: secrets/s3_secret.age }}
backup_key: backup_key
volumes:
  data: {{}}
pods:
  web:
    image: {image}
    volumes: [\"data:/data\"]
    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 20 }}
stores:
  offsite:
    url: s3://berth-test/shop
    endpoint: {endpoint}
    region: us-east-1
    access_key_id: berth-test
    secret_access_key: s3_secret
  vault:
    url: {vault}
backups:
  # berth:allow(backup-key-on-host): a test
  data:
    source: {{ volume: data }}
    store: STORE
    copies: {copies}
    retention: {{ daily: 7 }}
"
        ),
    );
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Text that takes two segments of 8 MiB in a bucket once compressed: 24 MiB of hex (zstd
/// halves it), a chain of hashes from `seed`.
fn two_segments(seed: &[u8]) -> String {
    let mut block = sha256(seed);
    (0..(24 << 20) / 64)
        .map(|_| {
            block = sha256(block.as_bytes());
            block.clone()
        })
        .collect()
}

/// A scene whose backup `data` is copied to the bucket only (the sftp store is not
/// reached), applied, with its secrets made.
fn bucket_scene(server: &S3Server) -> Scene {
    server.bucket("berth-test");
    let s = Scene::new();
    spec(
        &s,
        &server.endpoint(),
        "sftp://nobody@127.0.0.1:1/unused",
        "[offsite]",
    );
    s.berth(&["secrets", "set", "backup_key", "--generate"])
        .code(0);
    s.berth(&["secrets", "set", "s3_secret", "--generate"])
        .code(0);
    s.berth(&["apply", "--yes"]).code(0);
    s
}

#[test]
fn a_backup_goes_to_the_host_an_sftp_store_and_a_bucket_verifies_in_each_and_restores_from_the_bucket()
 {
    if !docker::available() || !backup::tools(&["age-keygen", "curl", "ssh-keygen"]) {
        return;
    }
    let Some(server) = S3Server::start() else {
        return;
    };
    let Some(sshd) = SftpServer::start() else {
        return;
    };
    server.bucket("berth-test");
    let s = Scene::new();
    let vault_dir = common::store_root(&format!("{}-vault", s.project()));
    let _gone = common::RemoveOnDrop(vault_dir.clone());
    spec(
        &s,
        &server.endpoint(),
        &sshd.url(&vault_dir),
        "[vault, offsite]",
    );
    let path = sshd.path_env();
    let env = [("PATH", path.as_str())];
    let berth = |args: &[&str]| s.berth_env(args, &env);
    berth(&["secrets", "set", "backup_key", "--generate"]).code(0);
    berth(&["secrets", "set", "s3_secret", "--generate"]).code(0);
    berth(&["apply", "--yes"]).code(0);
    let big = two_segments(b"seed");
    s.put(&[("hello.txt", "from the backup\n"), ("big.txt", &big)]);
    let before = s.volume_tree();

    let r = berth(&["backup", "run", "data"]);
    assert_eq!(
        r.0.status.code(),
        Some(0),
        "{}\nsshd: {}",
        r.stderr(),
        sshd.log()
    );
    let err = r.stderr_flat();
    assert!(
        err.contains("copied to store `offsite` and verified there, s3://berth-test/shop/data/"),
        "{}",
        r.stderr()
    );
    assert!(
        err.contains(&format!(
            "copied to store `vault` and verified there, {}/data/",
            sshd.url(&vault_dir)
        )),
        "{}",
        r.stderr()
    );
    let id = s.ids("data").pop().expect("a backup on the host");
    // The witnesses: the bucket and the sftp store hold the data and its manifest, the
    // data byte for byte the host's.
    let host = std::fs::read(&s.data_files()[0]).unwrap();
    assert!(host.len() > 8 << 20, "the data spans two segments");
    // The bucket holds the data in segments of 8 MiB, in order, that are the host's file
    // once concatenated (as `aws s3 cp --recursive` and `cat` would put them together).
    let keys = server.keys("berth-test", "shop/data/");
    let data_dir = format!("shop/data/{id}.tar.zst.age.d/");
    let mut segments: Vec<&String> = keys.iter().filter(|k| k.starts_with(&data_dir)).collect();
    segments.sort();
    assert_eq!(
        segments,
        [format!("{data_dir}00000000"), format!("{data_dir}00000001")]
            .iter()
            .collect::<Vec<_>>(),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("shop/data/{id}.manifest.json")),
        "{keys:?}"
    );
    assert_eq!(keys.len(), 3, "nothing else in the bucket: {keys:?}");
    let joined: Vec<u8> = segments
        .iter()
        .flat_map(|k| server.get("berth-test", k))
        .collect();
    assert_eq!(server.get("berth-test", segments[0]).len(), 8 << 20);
    assert_eq!(sha256(&joined), sha256(&host));
    let in_vault = vault_dir.join("data").join(format!("{id}.tar.zst.age"));
    assert_eq!(sha256(&std::fs::read(&in_vault).unwrap()), sha256(&host));
    // The owner's only there too, whatever the server's umask.
    for file in [
        in_vault.clone(),
        vault_dir.join("data").join(format!("{id}.manifest.json")),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    assert!(
        vault_dir
            .join("data")
            .join(format!("{id}.manifest.json"))
            .is_file()
    );

    // Each copy verifies where it is.
    let r = berth(&["backup", "verify"]).code(0);
    for store in ["offsite", "vault"] {
        assert!(
            r.stderr_flat()
                .contains(&format!("data (store `{store}`) {id}: ok")),
            "{}",
            r.stderr()
        );
    }
    assert!(
        r.stderr_flat().contains("3 backup(s) checked, 0 damaged"),
        "{}",
        r.stderr()
    );
    // Retention applies in each copy, after the same read-back there.
    let r = berth(&["backup", "prune", "--dry-run"]).code(0);
    for store in ["offsite", "vault"] {
        assert!(
            r.stderr_flat()
                .contains(&format!("keep   data {id} in store `{store}`")),
            "{}",
            r.stderr()
        );
    }
    let json = berth(&["backup", "list", "--format", "json"])
        .code(0)
        .stdout();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let copies = doc["backups"][0]["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{json}");
    assert!(copies.iter().all(|c| c["verified"] == true), "{json}");
    assert!(
        copies
            .iter()
            .any(|c| c["location"] == format!("s3://berth-test/{data_dir}")),
        "{json}"
    );

    // The host's copy is lost; the data changes; the restore fetches the bucket's.
    std::fs::remove_dir_all(s.store.join("data")).unwrap();
    let r = berth(&["backup", "list"]).code(0);
    assert!(
        r.stdout()
            .contains("NOT ON THIS HOST: only in store `vault`"),
        "{}",
        r.stdout()
    );
    s.put(&[("hello.txt", "changed since\n"), ("new.txt", "new\n")]);
    assert_ne!(s.volume_tree(), before);
    let r = berth(&["backup", "restore", "data", "--from", "offsite"]).code(0);
    assert!(
        r.stderr_flat()
            .contains(&format!("{id} fetched from store `offsite`")),
        "{}",
        r.stderr()
    );
    assert_eq!(s.volume_tree(), before);
    // The fetched copy is the host's again, byte for byte the bucket's.
    assert!(s.ids("data").contains(&id));
    let fetched = std::fs::read(s.store.join("data").join(format!("{id}.tar.zst.age"))).unwrap();
    assert_eq!(sha256(&fetched), sha256(&host));

    // Without `--from`, a backup the host lacks comes from the first copy holding it.
    std::fs::remove_dir_all(s.store.join("data")).unwrap();
    s.put(&[("hello.txt", "changed again\n")]);
    let r = berth(&["backup", "restore", "data"]).code(0);
    assert!(
        r.stderr_flat()
            .contains(&format!("{id} fetched from store `vault`")),
        "{}",
        r.stderr()
    );
    assert_eq!(s.volume_tree(), before);
}

#[test]
fn segments_without_a_manifest_are_left_alone_while_fresh_pruned_ones_go_whole_and_a_missing_segment_fails_verify()
 {
    if !docker::available() || !backup::tools(&["age-keygen", "curl"]) {
        return;
    }
    let Some(server) = S3Server::start() else {
        return;
    };
    let s = bucket_scene(&server);
    s.put(&[("big.txt", &two_segments(b"other seed"))]);

    // A whole backup in the bucket.
    s.berth(&["backup", "run", "data"]).code(0);
    let id = s.ids("data").pop().unwrap();
    s.berth(&["backup", "verify", &id]).code(0);

    // Killed once the next backup's segments are all in the bucket, before its manifest.
    let r = s.berth_env(
        &["backup", "run", "data"],
        &[("BERTH_FAULT_BACKUP_KILL", "copy-segments")],
    );
    assert!(r.0.status.code().is_none(), "not killed: {}", r.stderr());
    let cut = s.ids("data").pop().expect("the host's backup");
    assert_ne!(id, cut);
    let keys = server.keys("berth-test", "shop/data/");
    let segments = format!("shop/data/{cut}.tar.zst.age.d/");
    assert_eq!(
        keys.iter().filter(|k| k.starts_with(&segments)).count(),
        2,
        "{keys:?}"
    );
    assert!(
        !keys.contains(&format!("shop/data/{cut}.manifest.json")),
        "{keys:?}"
    );
    // Not a backup of the copy, and (just made: another run may still be writing it) not
    // removed by prune.
    let json = s
        .berth(&["backup", "list", "--format", "json"])
        .code(0)
        .stdout();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let copies_of = |wanted: &str| {
        doc["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == wanted)
            .unwrap_or_else(|| panic!("{json}"))["copies"]
            .as_array()
            .map(Vec::len)
    };
    assert_eq!(copies_of(&cut), Some(0), "{json}");
    assert_eq!(copies_of(&id), Some(1), "{json}");
    s.berth(&["backup", "prune"]).code(0);
    assert_eq!(server.keys("berth-test", "shop/data/"), keys);

    // A newer backup: `daily: 7` keeps only the newest of the day, so prune deletes the
    // older one in the bucket, its manifest and every segment.
    s.berth(&["backup", "run", "data"]).code(0);
    let older = id;
    let id = s.ids("data").pop().unwrap();
    let r = s.berth(&["backup", "prune"]).code(0);
    assert!(
        r.stderr_flat()
            .contains(&format!("delete data {older} in store `offsite`")),
        "{}",
        r.stderr()
    );
    let keys = server.keys("berth-test", "shop/data/");
    assert!(!keys.iter().any(|k| k.contains(&older)), "{keys:?}");
    assert!(
        keys.contains(&format!("shop/data/{id}.manifest.json")),
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| k.starts_with(&segments)).count(),
        2,
        "the killed run's segments are still too fresh to remove: {keys:?}"
    );

    // One segment of the whole backup deleted by hand: its copy no longer verifies, and
    // the missing segment is named.
    let [first, second] = [0, 1].map(|n| format!("shop/data/{id}.tar.zst.age.d/0000000{n}"));
    let joined = [
        server.get("berth-test", &first),
        server.get("berth-test", &second),
    ]
    .concat();
    server.delete("berth-test", &first);
    let r = s.berth(&["backup", "verify", &id]).code(1);
    assert!(
        r.stderr_flat().contains("its segment 00000000 is missing"),
        "{}",
        r.stderr()
    );
    // Data written as one object (as berth did before segments) still verifies.
    server.delete("berth-test", &second);
    server.put(
        "berth-test",
        &format!("shop/data/{id}.tar.zst.age"),
        &joined,
    );
    let r = s.berth(&["backup", "verify", &id]).code(0);
    assert!(
        r.stderr_flat()
            .contains(&format!("data (store `offsite`) {id}: ok")),
        "{}",
        r.stderr()
    );
    // And is deleted as any other once a newer backup is kept in its place.
    s.berth(&["backup", "run", "data"]).code(0);
    s.berth(&["backup", "prune"]).code(0);
    let keys = server.keys("berth-test", "shop/data/");
    assert!(!keys.iter().any(|k| k.contains(&id)), "{keys:?}");
}

#[test]
fn a_bucket_that_is_down_fails_the_run_and_leaves_the_hosts_backup_whole() {
    if !docker::available() || !backup::tools(&["age-keygen", "curl"]) {
        return;
    }
    let Some(mut server) = S3Server::start() else {
        return;
    };
    let s = bucket_scene(&server);
    s.put(&[("hello.txt", "hello\n")]);
    server.stop();
    let r = s.berth(&["backup", "run", "data"]).code(1);
    assert!(
        r.stderr_flat()
            .contains("its copy to store `offsite` failed"),
        "{}",
        r.stderr()
    );
    // The host's backup is there, verified, and restorable.
    let r = s.berth(&["backup", "list"]).code(0);
    assert!(r.stdout().contains(" yes"), "{}", r.stdout());
    assert!(
        r.stdout().contains("store `offsite` cannot be listed"),
        "{}",
        r.stdout()
    );
    assert_eq!(s.ids("data").len(), 1);
}
