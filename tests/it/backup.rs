//! Backups against the real engine and real files, with standard tools as witnesses: a
//! volume read from a running container and a host path, opened again without berth
//! (`age -d | zstd -d | tar -x`) and compared byte for byte; damage of every kind caught by
//! verify; retention over 90 days of synthetic backups.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Berth;
use common::backup::{self, Scene, keygen, sample, tree};
use common::docker::{self, docker};

fn tools() -> bool {
    backup::tools(&["age", "zstd", "tar"])
}

#[test]
fn a_live_volume_backed_up_opens_without_berth_identical_by_hash() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.data_spec("", "{ volume: data }", "{ daily: 7 }");
    s.berth(&["apply", "--yes"]).code(0);
    // The data, put into the volume of the running pod.
    let src = s.path().join("src");
    let big_mib = std::env::var("BERTH_BACKUP_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    sample(&src, big_mib);
    let web = s.web();
    docker(&[
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
    // The pod kept running; no helper container is left.
    assert_eq!(
        common::docker::containers_of(s.project()),
        std::slice::from_ref(&web)
    );
    let data = s.data_files();
    assert_eq!(data.len(), 1);
    for f in s.files() {
        assert_eq!(
            berth::fsutil::mode_of(&f).unwrap(),
            0o600,
            "{}",
            f.display()
        );
    }
    assert_eq!(berth::fsutil::mode_of(&s.store).unwrap(), 0o700);
    let out = s.path().join("out");
    backup::open_without_berth(&s.path().join("key.txt"), &data[0], &out);
    assert_eq!(tree(&out), tree(&src));
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    assert!(list.contains(" yes"), "{list}");
    // The same as data: the manifest's facts, the store, the time in RFC 3339.
    let json: serde_json::Value = serde_json::from_str(
        &s.berth(&["backup", "list", "--format", "json"])
            .code(0)
            .stdout(),
    )
    .unwrap();
    assert_eq!(json["format_version"], 1, "{json}");
    let listed = &json["backups"][0];
    assert_eq!(listed["name"], "data", "{json}");
    assert_eq!(listed["id"], id_of(&data[0]).as_str(), "{json}");
    assert_eq!(listed["verified"], true, "{json}");
    assert_eq!(
        listed["stored_bytes"].as_u64(),
        Some(std::fs::metadata(&data[0]).unwrap().len()),
        "{json}"
    );
    assert!(
        listed["taken_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 20),
        "{json}"
    );
    assert_eq!(json["incomplete"], serde_json::json!([]));
    s.berth(&["backup", "verify", "--all"]).code(0);

    // The volume changes; the backup is restored into a fresh volume, identical by hash.
    std::fs::write(s.path().join("stray"), "not in the backup").unwrap();
    docker(&[
        "cp",
        &s.path().join("stray").display().to_string(),
        &format!("{web}:/data/stray"),
    ]);
    let dry = s
        .berth(&["backup", "restore", "data", "--dry-run"])
        .code(0)
        .stderr();
    assert!(
        dry.contains("1 removed") && dry.contains("remove stray"),
        "{dry}"
    );
    let r = s.berth(&["backup", "restore", "data"]).code(0);
    assert!(r.stderr().contains("safety copy"), "{}", r.stderr());
    let back = s.path().join("back");
    std::fs::create_dir_all(&back).unwrap();
    docker(&["cp", &format!("{web}:/data/."), &back.display().to_string()]);
    assert_eq!(tree(&back), tree(&src));
    assert_eq!(common::docker::http_get(&web, 8080, "/health"), "ok");
}

#[test]
fn a_restore_that_fails_its_health_gate_puts_the_safety_copy_back() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.data_spec("", "{ volume: data }", "{ daily: 7 }");
    // The app is unhealthy while /data/broken exists.
    let spec = std::fs::read_to_string(s.path().join("berth.yaml"))
        .unwrap()
        .replace(
            "    volumes: [\"data:/data\"]\n",
            "    volumes: [\"data:/data\"]\n    env: { FAIL_IF_FILE: /data/broken }\n",
        )
        .replace("retries: 20", "retries: 8");
    std::fs::write(s.path().join("berth.yaml"), spec).unwrap();
    s.berth(&["apply", "--yes"]).code(0);
    let web = s.web();
    let put = |name: &str| {
        let f = s.path().join(name);
        std::fs::write(&f, name).unwrap();
        docker(&[
            "cp",
            &f.display().to_string(),
            &format!("{web}:/data/{name}"),
        ]);
    };
    put("good");
    s.berth(&["backup", "run", "data"]).code(0);
    put("broken");
    s.berth(&["backup", "run", "data"]).code(0);
    let ids: Vec<String> = s
        .data_files()
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".tar.zst.age", "")
        })
        .collect();
    // Back to the good data, then forward to the broken backup: its gate fails.
    s.berth(&["backup", "restore", "data", &ids[0]]).code(0);
    assert_eq!(common::docker::http_get(&web, 8080, "/health"), "ok");
    let r = s.berth(&["backup", "restore", "data", &ids[1]]).code(1);
    let err = r.stderr_flat();
    assert!(
        err.contains("did not come back healthy on the restored data"),
        "{err}"
    );
    assert!(err.contains("was put back"), "{err}");
    // The pod runs, healthy, on the data from before: `good`, not `broken`.
    assert_eq!(common::docker::http_get(&web, 8080, "/health"), "ok");
    let has = |f: &str| {
        Command::new("docker")
            .args(["exec", &web, "/testapp", "stat", &format!("/data/{f}")])
            .output()
            .unwrap()
            .stdout
            .starts_with(b"mode=")
    };
    assert!(has("good") && !has("broken"));
    // A damaged backup is refused before anything is touched.
    let file = &s.data_files()[0];
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(file, bytes).unwrap();
    let before = docker(&["inspect", "-f", "{{.Id}}", &web]);
    let r = s.berth(&["backup", "restore", "data", &ids[0]]).code(1);
    assert!(r.stderr_flat().contains("is damaged"), "{}", r.stderr());
    assert_eq!(
        docker(&["inspect", "-f", "{{.Id}}", &web]),
        before,
        "nothing was touched"
    );
}

#[test]
fn a_host_path_backed_up_opens_without_berth() {
    if !tools() {
        return;
    }
    let s = Scene::new();
    let src = s.path_backup(8, "{ daily: 7 }");
    // No engine work for a path: but `backup` connects to the engines of the spec.
    if !docker::available() {
        return;
    }
    s.berth(&["backup", "run", "data"]).code(0);
    let out = s.path().join("out");
    backup::open_without_berth(&s.path().join("key.txt"), &s.data_files()[0], &out);
    assert_eq!(tree(&out), tree(&src));

    // Restored in place: what changed since is put back, what was added goes.
    let before = tree(&src);
    std::fs::write(src.join("hello.txt"), "changed\n").unwrap();
    std::fs::write(src.join("stray"), "not in the backup").unwrap();
    let dry = s
        .berth(&["backup", "restore", "data", "--dry-run"])
        .code(0)
        .stderr();
    assert!(dry.contains("remove stray"), "{dry}");
    assert!(src.join("stray").exists(), "a dry run changes nothing");
    s.berth(&["backup", "restore", "data"]).code(0);
    assert_eq!(tree(&src), before);
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    assert!(list.contains("(safety copy)"), "{list}");
}

#[test]
fn a_flipped_byte_a_truncated_file_or_a_swapped_manifest_is_caught() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let src = s.path_backup(4, "{ daily: 7 }");
    s.berth(&["backup", "run", "data"]).code(0);
    std::fs::write(src.join("more"), "more").unwrap();
    s.berth(&["backup", "run", "data"]).code(0);
    let data = s.data_files();
    let manifests: Vec<PathBuf> = s
        .files()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    let (a, b) = (&data[0], &data[1]);
    let original = std::fs::read(a).unwrap();
    let id_a = a
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".tar.zst.age", "");
    let check = |what: &str| {
        let r = s.berth(&["backup", "verify", &id_a]).code(1);
        let err = r.stderr_flat();
        assert!(err.contains("is damaged"), "{what}: {err}");
        assert!(err.contains("1 damaged"), "{what}: {err}");
    };
    // A flipped byte anywhere: the start (header), the middle, the end.
    for at in [20, original.len() / 2, original.len() - 5] {
        let mut bad = original.clone();
        bad[at] ^= 0x01;
        std::fs::write(a, &bad).unwrap();
        check(&format!("byte {at} flipped"));
    }
    // Truncated.
    std::fs::write(a, &original[..original.len() - 64]).unwrap();
    check("truncated");
    // Restored, it verifies again.
    std::fs::write(a, &original).unwrap();
    s.berth(&["backup", "verify", &id_a]).code(0);
    // The manifest of b, passed off as a's.
    let manifest_a = manifests
        .iter()
        .find(|m| m.to_string_lossy().contains(&id_a))
        .unwrap();
    let manifest_b = manifests
        .iter()
        .find(|m| !m.to_string_lossy().contains(&id_a))
        .unwrap();
    let mut swapped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest_b).unwrap()).unwrap();
    swapped["id"] = serde_json::json!(id_a);
    std::fs::write(manifest_a, serde_json::to_vec(&swapped).unwrap()).unwrap();
    check("swapped manifest");
    let _ = b;
}

#[test]
fn a_backup_that_cannot_be_read_back_is_a_failure_that_deletes_nothing() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    keygen(&s.path().join("other.txt"));
    let src = s.path_backup(1, "{ daily: 7 }");
    s.berth(&["backup", "run", "data"]).code(0);
    // Now encrypted to someone else only: this machine cannot verify what it wrote.
    let other = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(s.path().join("other.txt"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    s.data_spec(
        &format!("recipients: [{}]", other.trim()),
        &format!("{{ path: {} }}", src.display()),
        "{ daily: 7 }",
    );
    let r = s.berth(&["backup", "run", "data"]).code(1);
    assert!(r.stderr_flat().contains("is damaged"), "{}", r.stderr());
    assert_eq!(s.data_files().len(), 2, "the earlier backup is still there");
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    assert_eq!(list.matches(" yes").count(), 1, "{list}");
    assert_eq!(list.matches(" NO").count(), 1, "{list}");
}

#[test]
fn prune_keeps_exactly_the_policy_and_dry_run_lists_what_it_then_deletes() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.path_backup(1, "{ daily: 7, weekly: 4, monthly: 3 }");
    s.berth(&["backup", "run", "data"]).code(0);
    // 90 days of backups, two a day, made from the real one with synthetic times.
    let real_manifest = s
        .files()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .unwrap();
    let real: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&real_manifest).unwrap()).unwrap();
    let real_data = s.data_files()[0].clone();
    let real_bytes = std::fs::read(&real_data).unwrap();
    std::fs::remove_file(&real_manifest).unwrap();
    std::fs::remove_file(&real_data).unwrap();
    let start: u64 = 1_767_571_200; // 2026-01-05, a Monday
    for day in 0..90u64 {
        for k in 0..2u64 {
            let id = format!("synthetic-d{day:02}-{k}");
            let at = start + day * 86_400 + 3600 * (1 + k);
            write_manifest(&s, &real, &id, at);
            // The real data (prune reads back what it keeps), written when it says.
            write_backup_data(
                &s.store.join(format!("data/{id}.tar.zst.age")),
                &real_bytes,
                at,
            );
        }
    }
    let listed = |text: &str, word: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(word))
            .map(|rest| {
                rest.split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let dry = s.berth(&["backup", "prune", "--dry-run"]).code(0).stderr();
    let would = listed(&dry, "would delete");
    assert_eq!(s.data_files().len(), 180, "a dry run deletes nothing");
    let real_run = s.berth(&["backup", "prune"]).code(0).stderr();
    let deleted = listed(&real_run, "delete");
    assert_eq!(would, deleted);
    // The same decision, line for line, with the same reasons.
    assert_eq!(dry.replace("would delete", "delete"), real_run);
    assert!(
        real_run.contains("(in none of the kept periods (daily 7, weekly 4, monthly 3))"),
        "{real_run}"
    );
    let mut kept: Vec<String> = s
        .data_files()
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".tar.zst.age", "")
        })
        .collect();
    kept.sort();
    // 7 days (83..89), weeks ending on days 83, 76, 69 (and 89), months ending on days
    // 85 (March 31) and 54 (February 28) (and 89): the newest backup of each.
    let mut want: Vec<String> = [54, 69, 76, 83, 84, 85, 86, 87, 88, 89]
        .iter()
        .map(|d| format!("synthetic-d{d:02}-1"))
        .collect();
    want.sort();
    assert_eq!(kept, want);
    assert_eq!(deleted.len(), 180 - want.len());
}

/// The id of a backup from its data file's path.
fn id_of(data: &Path) -> String {
    data.file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".tar.zst.age", "")
}

/// Three real backups of a small host path, oldest first, under `{ daily: 1 }`.
fn three_backups(s: &Scene) -> Vec<String> {
    let src = s.path_backup(1, "{ daily: 1 }");
    for n in 0..3 {
        std::fs::write(src.join("n"), format!("{n}")).unwrap();
        s.berth(&["backup", "run", "data"]).code(0);
    }
    let ids: Vec<String> = s.data_files().iter().map(|p| id_of(p)).collect();
    assert_eq!(ids.len(), 3);
    ids
}

#[test]
fn prune_reads_back_the_newest_and_keeps_a_good_backup_when_the_newest_has_a_flipped_byte() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let ids = three_backups(&s);
    let newest = s.store.join(format!("data/{}.tar.zst.age", ids[2]));
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();

    // Damage found is a failure (exit 1), in a dry run as in a real one.
    let dry = s.berth(&["backup", "prune", "--dry-run"]).code(1).stderr();
    assert_eq!(s.data_files().len(), 3, "a dry run deletes nothing");
    let real = s.berth(&["backup", "prune"]).code(1).stderr();
    assert_eq!(dry.replace("would delete", "delete"), real);
    // The damaged newest counts for nothing: the one before it is the newest verified,
    // read back just now; only the oldest goes.
    let kept = pruned(&real, "keep");
    assert_eq!(kept.len(), 2, "{real}");
    assert_eq!(kept[0].0, ids[1]);
    assert_eq!(kept[0].1, "(daily 1, newest verified)");
    assert_eq!(kept[1].0, ids[2]);
    assert!(kept[1].1.contains("damaged"), "{real}");
    let deleted = pruned(&real, "delete");
    assert_eq!(deleted.len(), 1, "{real}");
    assert_eq!(deleted[0].0, ids[0]);
    assert!(real.contains("failed their read-back"), "{real}");
    let left: Vec<String> = s.data_files().iter().map(|p| id_of(p)).collect();
    assert_eq!(left, [ids[1].clone(), ids[2].clone()]);
    // What is left verifies; the damaged one is marked unverified, never restored.
    s.berth(&["backup", "verify", &ids[1]]).code(0);
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    let line = list.lines().find(|l| l.contains(&ids[2])).unwrap();
    assert!(line.ends_with(" NO"), "{list}");
    // The next prune deletes the damaged one, and keeps the good one.
    let again = s.berth(&["backup", "prune"]).code(0).stderr();
    assert_eq!(pruned(&again, "delete")[0].0, ids[2], "{again}");
    let left: Vec<String> = s.data_files().iter().map(|p| id_of(p)).collect();
    assert_eq!(left, [ids[1].clone()]);
    // The last backup damaged too: nothing verifies, nothing is deleted.
    let last = s.store.join(format!("data/{}.tar.zst.age", ids[1]));
    let mut bytes = std::fs::read(&last).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&last, &bytes).unwrap();
    let r = s.berth(&["backup", "prune"]).code(1).stderr();
    assert!(r.contains("nothing is deleted"), "{r}");
    assert_eq!(s.data_files().len(), 1);
    let r = s.berth(&["backup", "prune"]).code(1).stderr();
    assert!(pruned(&r, "delete").is_empty(), "{r}");
    assert_eq!(
        s.data_files().len(),
        1,
        "an unverified last backup is not deleted either"
    );
}

#[test]
fn prune_keeps_the_real_newest_when_manifests_claim_2100_or_1970() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let ids = three_backups(&s);
    // Copies of the newest backup (they verify), their manifests dated in 2100 and in
    // 1970, written just now.
    let newest = |ext: &str| s.store.join(format!("data/{}.{ext}", ids[2]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newest("manifest.json")).unwrap()).unwrap();
    for (id, at) in [("forged-future", 4_102_444_800u64), ("forged-epoch", 0)] {
        write_manifest(&s, &manifest, id, at);
        std::fs::copy(
            newest("tar.zst.age"),
            s.store.join(format!("data/{id}.tar.zst.age")),
        )
        .unwrap();
    }
    let dry = s.berth(&["backup", "prune", "--dry-run"]).code(0).stderr();
    let real = s.berth(&["backup", "prune"]).code(0).stderr();
    assert_eq!(dry.replace("would delete", "delete"), real);
    let kept = pruned(&real, "keep");
    let why = |id: &str| {
        kept.iter()
            .find(|(k, _)| k == id)
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| panic!("{id} is not kept: {real}"))
    };
    assert_eq!(why(&ids[2]), "(daily 1, newest verified)");
    assert!(why("forged-future").contains("untrusted time"), "{real}");
    assert!(why("forged-future").contains("in the future"), "{real}");
    assert!(why("forged-epoch").contains("untrusted time"), "{real}");
    let deleted: Vec<String> = pruned(&real, "delete")
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(deleted, [ids[0].clone(), ids[1].clone()]);
    assert_eq!(s.data_files().len(), 3);
}

#[test]
fn restore_and_verify_never_default_to_a_backup_whose_time_is_not_trusted() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let ids = three_backups(&s);
    // Copies of the oldest backup (they verify): one whose manifest says 2100, one whose
    // manifest says a second after the real newest while its file was written days ago.
    let oldest = |ext: &str| s.store.join(format!("data/{}.{ext}", ids[0]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oldest("manifest.json")).unwrap()).unwrap();
    let newest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.store.join(format!("data/{}.manifest.json", ids[2]))).unwrap(),
    )
    .unwrap();
    let newest_at = newest["created_at"].as_u64().unwrap();
    let bytes = std::fs::read(oldest("tar.zst.age")).unwrap();
    for (id, at, written) in [
        ("forged-future", 4_102_444_800u64, newest_at),
        ("forged-recent", newest_at + 1, newest_at - 3 * 86_400),
    ] {
        write_manifest(&s, &manifest, id, at);
        write_backup_data(
            &s.store.join(format!("data/{id}.tar.zst.age")),
            &bytes,
            written,
        );
    }
    // The default restore is the real newest, and the two passed over are named.
    let r = s
        .berth(&["backup", "restore", "data", "--dry-run"])
        .code(0)
        .stderr();
    assert!(r.contains(&format!("from backup {}", ids[2])), "{r}");
    for id in ["forged-future", "forged-recent"] {
        assert!(
            r.lines()
                .any(|l| l.contains(&format!("passing over {id}")) && l.contains("untrusted time")),
            "{r}"
        );
    }
    // The same for `verify` with no id.
    let v = s.berth(&["backup", "verify"]).code(0).stderr();
    assert!(v.contains(&format!("data {}: ok", ids[2])), "{v}");
    assert!(
        !v.contains("forged-future: ok") && !v.contains("forged-recent: ok"),
        "{v}"
    );
    assert!(
        v.contains("forged-future: passed over (untrusted time"),
        "{v}"
    );
    // Named by its id, it is still restored (a person decided).
    let r = s
        .berth(&["backup", "restore", "data", "forged-future", "--dry-run"])
        .code(0)
        .stderr();
    assert!(r.contains("from backup forged-future"), "{r}");
}

#[test]
fn a_backup_killed_before_its_manifest_is_listed_as_incomplete_and_removed_by_prune_or_the_next_run()
 {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.path_backup(1, "{ daily: 1 }");
    let killed = |s: &Scene| {
        let r = Berth::new()
            .dir(s.path())
            .args(["backup", "run", "data"])
            .env("BERTH_FAULT_BACKUP_KILL", "sealed")
            .run();
        assert!(
            r.0.status.code().is_none() || r.0.status.code() == Some(134),
            "not killed: {}",
            r.stderr()
        );
        let manifests = s
            .files()
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
            .count();
        let cut = s
            .data_files()
            .into_iter()
            .map(|p| id_of(&p))
            .find(|id| !s.store.join(format!("data/{id}.manifest.json")).exists())
            .expect("a data file without a manifest");
        (cut, manifests)
    };
    // Killed with nothing else in the store: listed, and kept by prune (it may be the only
    // copy there is, and it opens by hand).
    let (first, manifests) = killed(&s);
    assert_eq!(manifests, 0);
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    let line = list
        .lines()
        .find(|l| l.contains(&first))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("incomplete"), "{list}");
    let json: serde_json::Value = serde_json::from_str(
        &s.berth(&["backup", "list", "--format", "json"])
            .code(0)
            .stdout(),
    )
    .unwrap();
    assert_eq!(json["incomplete"][0]["id"], first.as_str(), "{json}");
    let r = s.berth(&["backup", "prune"]).code(0).stderr();
    assert!(
        pruned(&r, "keep")
            .iter()
            .any(|(id, why)| id == &first && why.contains("kept while no backup")),
        "{r}"
    );
    assert_eq!(s.data_files().len(), 1);
    // The next run of the name, once its own backup verifies, removes it.
    let r = s.berth(&["backup", "run", "data"]).code(0).stderr();
    assert!(r.contains(&format!("removed {first}")), "{r}");
    assert_eq!(s.data_files().len(), 1);
    let good = id_of(&s.data_files()[0]);
    // Killed again: with a good backup there, prune (dry run first) deletes it.
    let (second, manifests) = killed(&s);
    assert_eq!(manifests, 1);
    let dry = s.berth(&["backup", "prune", "--dry-run"]).code(0).stderr();
    assert!(
        pruned(&dry, "would delete")
            .iter()
            .any(|(id, why)| id == &second && why.contains("incomplete")),
        "{dry}"
    );
    assert_eq!(s.data_files().len(), 2, "a dry run deletes nothing");
    let real = s.berth(&["backup", "prune"]).code(0).stderr();
    assert_eq!(dry.replace("would delete", "delete"), real);
    let left: Vec<String> = s.data_files().iter().map(|p| id_of(p)).collect();
    assert_eq!(left, [good]);
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    assert!(!list.contains("incomplete"), "{list}");
}

/// Writes the manifest of the backup `id` of `data`: `manifest` with its id and creation
/// time (`at`) replaced.
fn write_manifest(s: &Scene, manifest: &serde_json::Value, id: &str, at: u64) {
    let mut m = manifest.clone();
    m["id"] = serde_json::json!(id);
    m["created_at"] = serde_json::json!(at);
    std::fs::write(
        s.store.join(format!("data/{id}.manifest.json")),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
}

/// Writes a backup's data file, with `at` as its modification time (as if written then).
fn write_backup_data(path: &Path, bytes: &[u8], at: u64) {
    std::fs::write(path, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at))
        .unwrap();
}

/// The lines of a prune's output that begin with `verb`, as (id, reason).
fn pruned(text: &str, verb: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(verb))
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix("data ")?;
            let (id, why) = rest.split_once(' ')?;
            Some((id.to_owned(), why.to_owned()))
        })
        .collect()
}

/// The bytes `testapp emit N` prints.
fn emitted(n: usize) -> Vec<u8> {
    (0..=255u8)
        .cycle()
        .take(64 * 1024)
        .cycle()
        .take(n)
        .collect()
}

#[test]
fn a_commands_output_is_backed_up_and_restored_through_a_command() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let size = 3_000_000;
    s.spec(
        true,
        &format!(
            "{}backups:
  # berth:allow(backup-key-on-host): a test
  dump:
    source: {{ pod: web, exec: [/testapp, emit, \"{size}\"], restore: [/testapp, absorb, /data/restored] }}
    store: STORE
  # berth:allow(backup-key-on-host): a test
  broken:
    source: {{ pod: web, exec: [/testapp, absorb, /no/such/dir/file] }}
    store: STORE
",
            backup::web_with_data()
        ),
    );
    s.berth(&["apply", "--yes"]).code(0);
    let r = s.berth(&["backup", "run", "dump"]).code(0);
    assert!(
        r.stderr().contains("written and verified"),
        "{}",
        r.stderr()
    );
    let file = std::fs::read_dir(s.store.join("dump"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst.age"))
        .unwrap();
    // Without berth: age and zstd give the command's output back, byte for byte.
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"age -d -i "$1" "$2" | zstd -d"#)
        .arg("sh")
        .arg(s.path().join("key.txt"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, emitted(size));
    // Restored through the restore command, in the running pod.
    s.berth(&["backup", "restore", "dump", "--dry-run"]).code(0);
    let r = s.berth(&["backup", "restore", "dump"]).code(0);
    assert!(
        r.stderr().contains("healthy on the data of"),
        "{}",
        r.stderr()
    );
    let web = s.web();
    let back = s.path().join("restored");
    docker(&[
        "cp",
        &format!("{web}:/data/restored"),
        &back.display().to_string(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), emitted(size));
    // A command that fails fails the backup, saying why, and leaves nothing in the store.
    let r = s.berth(&["backup", "run", "broken"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("exited with 1"), "{err}");
    assert!(err.contains("absorbed 0 bytes"), "its stderr: {err}");
    let left = std::fs::read_dir(s.store.join("broken")).map_or(0, |d| d.count());
    assert_eq!(left, 0);
}

#[test]
fn the_store_and_the_schedule_are_planned_resources_and_a_stale_backup_is_an_rpo_warning() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.data_spec("", "{ volume: data }", "{ daily: 7 }");
    let with_schedule = |schedule: &str| {
        let text = std::fs::read_to_string(s.path().join("berth.yaml")).unwrap();
        let text = match text.find("    schedule:") {
            Some(i) => {
                let end = i + text[i..].find('\n').unwrap() + 1;
                format!("{}    schedule: {schedule}\n{}", &text[..i], &text[end..])
            }
            None => text.replace(
                "    retention:",
                &format!("    schedule: {schedule}\n    retention:"),
            ),
        };
        std::fs::write(s.path().join("berth.yaml"), text).unwrap();
    };
    with_schedule("daily");
    let plan = s.berth(&["plan"]).code(0).stdout();
    assert!(plan.contains("+ backup.data"), "{plan}");
    s.berth(&["apply", "--yes"]).code(0);
    let timer = common::unit_dir().join(format!("berth-{}-backup-data.timer", s.project()));
    assert!(
        std::fs::read_to_string(&timer)
            .unwrap()
            .contains("OnCalendar=daily")
    );
    assert_eq!(berth::fsutil::mode_of(&s.store).unwrap(), 0o700);
    s.berth(&["plan", "--detailed-exitcode"]).code(0);

    // Drift: a store others can read, and a new schedule in the spec.
    std::fs::set_permissions(&s.store, std::fs::Permissions::from_mode(0o755)).unwrap();
    with_schedule("\"*-*-* 03:00:00\"");
    let plan = s.berth(&["plan"]).code(0).stdout();
    assert!(plan.contains("! backup.data"), "{plan}");
    assert!(plan.contains("mode 0755"), "{plan}");
    assert!(plan.contains(".timer"), "{plan}");
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(berth::fsutil::mode_of(&s.store).unwrap(), 0o700);
    assert!(
        std::fs::read_to_string(&timer)
            .unwrap()
            .contains("OnCalendar=*-*-* 03:00:00")
    );
    s.berth(&["plan", "--detailed-exitcode"]).code(0);

    // The newest verified backup is three days old for a daily schedule: the RPO is at risk.
    s.berth(&["backup", "run", "data"]).code(0);
    let quiet = s.berth(&["plan"]).code(0).stderr();
    assert!(!quiet.contains("RPO"), "{quiet}");
    let manifest = s
        .files()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let three_days_ago = m["created_at"].as_u64().unwrap() - 3 * 86_400;
    m["created_at"] = serde_json::json!(three_days_ago);
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let warned = s.berth(&["plan"]).code(0).stderr_flat();
    assert!(warned.contains("the RPO is at risk"), "{warned}");
    // A manifest dated in 2100 on a file written three days ago hides nothing.
    m["created_at"] = serde_json::json!(4_102_444_800u64);
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let data = &s.data_files()[0];
    let bytes = std::fs::read(data).unwrap();
    write_backup_data(data, &bytes, three_days_ago);
    let warned = s.berth(&["plan"]).code(0).stderr_flat();
    assert!(warned.contains("the RPO is at risk"), "{warned}");

    // Destroy removes the timer and the service; the store and its backups stay.
    let r = s.berth(&["destroy", "--yes"]).code(0);
    assert!(
        r.stderr().contains("store and backups are kept"),
        "{}",
        r.stderr()
    );
    assert!(!timer.exists() && !timer.with_extension("service").exists());
    assert_eq!(s.data_files().len(), 1);
    s.berth(&["plan", "--detailed-exitcode"]).code(2);
}

#[test]
fn before_apply_takes_a_backup_before_a_pod_that_owns_the_volume_is_replaced() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.data_spec("", "{ volume: data }", "{ daily: 7 }");
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(s.path().join("berth.yaml")).unwrap();
        std::fs::write(s.path().join("berth.yaml"), text.replace(from, to)).unwrap();
    };
    edit("    retention:", "    before_apply: true\n    retention:");
    // The first apply creates the pod: nothing to protect yet.
    s.berth(&["apply", "--yes"]).code(0);
    assert!(s.data_files().is_empty());
    // A change that replaces the pod: a backup of its volume first.
    edit(
        "    volumes: [\"data:/data\"]\n",
        "    volumes: [\"data:/data\"]\n    env: { VERSION: v2 }\n",
    );
    let r = s.berth(&["apply", "--yes"]).code(0);
    assert!(
        r.stderr().contains("taken before the apply"),
        "{}",
        r.stderr()
    );
    assert_eq!(s.data_files().len(), 1);
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    assert!(list.contains(" yes"), "{list}");
}

#[test]
fn validate_refuses_the_root_system_and_temporary_stores_in_every_environment() {
    let dir = tempfile::tempdir().unwrap();
    let tmp_mode = berth::fsutil::mode_of(Path::new("/tmp")).unwrap();
    for env in ["development", "staging", "production"] {
        for store in [
            "/",
            "/usr",
            "/usr/local",
            "/etc",
            "/var",
            "/var/lib",
            "/var/backups",
            "/home",
            "/root",
            "/run",
            "/tmp",
            "/tmp/backups",
            "/var/tmp/b",
            "/dev/shm/b",
            "/srv/../tmp",
        ] {
            let text = format!(
                "version: 1
project: store-place
environment: {env}
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
backups:
  uploads:
    source: {{ path: /srv/uploads }}
    store: {store}
"
            );
            std::fs::write(dir.path().join("berth.yaml"), text).unwrap();
            let r = Berth::new()
                .dir(dir.path())
                .args(["validate", "berth.yaml"])
                .run()
                .code(1);
            let err = r.stderr_flat();
            assert!(err.contains("backup-store-place"), "{env} {store}: {err}");
            assert!(
                err.contains("cannot be stored there"),
                "{env} {store}: {err}"
            );
            // At the span: the `store:` line is shown.
            assert!(
                err.contains(&format!("store: {store}")),
                "{env} {store}: {err}"
            );
        }
        // An apply of a store in /tmp is refused before anything: /tmp keeps its mode.
        Berth::new()
            .dir(dir.path())
            .args(["apply", "--yes"])
            .run()
            .code(1);
        assert_eq!(berth::fsutil::mode_of(Path::new("/tmp")).unwrap(), tmp_mode);
    }
}

#[test]
fn a_store_berth_did_not_make_is_refused_by_the_pre_flight_and_never_chmod_ed() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.data_spec("", "{ volume: data }", "{ daily: 7 }");
    // Someone else's directory: not empty, readable by others, no marker of berth's.
    std::fs::create_dir_all(&s.store).unwrap();
    std::fs::set_permissions(&s.store, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(s.store.join("notes.txt"), "not berth's").unwrap();

    let plan = s.berth(&["plan"]).code(0);
    assert!(
        plan.stderr_flat().contains("was not made by berth"),
        "{}",
        plan.stderr()
    );
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("cannot use its store"), "{err}");
    assert!(err.contains("was not made by berth"), "{err}");
    // Refused before the first change: no container, volume or network; the directory as
    // it was.
    assert!(docker::containers_of(s.project()).is_empty());
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.berth.project={}", s.project()),
    ]);
    assert_eq!(volumes.trim(), "");
    let networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.berth.project={}", s.project()),
    ]);
    assert_eq!(networks.trim(), "");
    assert_eq!(berth::fsutil::mode_of(&s.store).unwrap(), 0o755);
    assert!(s.store.join("notes.txt").exists());
    assert!(!s.store.join(".berth-store").exists());

    // Empty and the user's: berth makes it its own.
    std::fs::remove_file(s.store.join("notes.txt")).unwrap();
    let plan = s.berth(&["plan"]).code(0).stdout();
    assert!(plan.contains("+ backup.data"), "{plan}");
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(berth::fsutil::mode_of(&s.store).unwrap(), 0o700);
    assert!(s.store.join(".berth-store").is_file());
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    // Its own, with the wrong mode: a heal in the plan.
    std::fs::set_permissions(&s.store, std::fs::Permissions::from_mode(0o750)).unwrap();
    let plan = s.berth(&["plan"]).code(0).stdout();
    assert!(plan.contains("! backup.data"), "{plan}");
    assert!(plan.contains("mode 0750"), "{plan}");
    s.berth(&["apply", "--yes"]).code(0);
    assert_eq!(berth::fsutil::mode_of(&s.store).unwrap(), 0o700);
}

#[test]
fn a_damaged_manifest_is_listed_as_damaged_and_does_not_block_the_other_backups() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let ids = three_backups(&s);
    // The first byte of the oldest manifest flipped, and junk under a manifest's name.
    let flipped = s
        .store
        .join("data")
        .join(format!("{}.manifest.json", ids[0]));
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&flipped, bytes).unwrap();
    std::fs::write(s.store.join("data/junk.manifest.json"), "junk").unwrap();
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    assert!(list.contains(&ids[1]) && list.contains(&ids[2]), "{list}");
    assert_eq!(list.matches("DAMAGED").count(), 2, "{list}");
    assert!(
        list.contains(&format!("{}.manifest.json", ids[0])),
        "{list}"
    );
    assert!(list.contains("junk.manifest.json"), "{list}");
    s.berth(&["backup", "verify", &ids[1]]).code(0);
    let r = s.berth(&["backup", "verify", "--all"]).code(1);
    assert!(
        r.stderr_flat().contains("junk.manifest.json"),
        "{}",
        r.stderr()
    );
    s.berth(&["backup", "restore", "data", &ids[2], "--dry-run"])
        .code(0);
    s.berth(&["backup", "prune", "--dry-run"]).code(0);
}

#[test]
fn a_symlinked_unit_file_is_refused_by_the_pre_flight_and_never_read_or_written_through() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.data_spec("", "{ volume: data }", "{ daily: 7 }");
    let text = std::fs::read_to_string(s.path().join("berth.yaml")).unwrap();
    let text = text.replace("    retention:", "    schedule: daily\n    retention:");
    std::fs::write(s.path().join("berth.yaml"), text).unwrap();
    // The service's unit file is a symlink to someone's file.
    let units = common::unit_dir();
    std::fs::create_dir_all(&units).unwrap();
    let victim = s.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let service = units.join(format!("berth-{}-backup-data.service", s.project()));
    let _ = std::fs::remove_file(&service);
    std::os::unix::fs::symlink(&victim, &service).unwrap();
    let r = s.berth(&["apply", "--yes"]).code(1);
    let err = r.stderr_flat();
    assert!(err.contains("cannot write its schedule's units"), "{err}");
    assert!(err.contains("symlink"), "{err}");
    // Refused before the first change: no container, the victim and the link as they were.
    assert!(docker::containers_of(s.project()).is_empty());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(
        std::fs::symlink_metadata(&service)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    std::fs::remove_file(&service).unwrap();
    s.berth(&["apply", "--yes"]).code(0);
    let _ = std::fs::remove_file(&service);
    let _ = std::fs::remove_file(units.join(format!("berth-{}-backup-data.timer", s.project())));
}

/// The inode of each path under `root` that has more than one link, by relative path.
fn linked(root: &Path) -> BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() && meta.nlink() > 1 {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, meta.ino());
            }
        }
    }
    out
}

/// Whether `a` and `b` are the same file (one inode) in `linked`'s map.
fn same_file(links: &BTreeMap<String, u64>, a: &str, b: &str) -> bool {
    links.get(a).is_some_and(|i| links.get(b) == Some(i))
}

/// Three paths of one 4 MiB file of noise, in `dir`.
fn three_links(dir: &Path) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32;
    let noise: Vec<u8> = (0..4 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("lib.so"), &noise).unwrap();
    std::fs::hard_link(dir.join("lib.so"), dir.join("lib.so.1")).unwrap();
    std::fs::hard_link(dir.join("lib.so"), dir.join("nested/lib.so.1.2")).unwrap();
    noise
}

#[test]
fn hard_links_are_stored_once_and_restored_as_links_from_a_path_and_a_volume() {
    if !docker::available() || !tools() {
        return;
    }
    // A host path.
    let s = Scene::new();
    let src = s.path_backup(1, "{ daily: 7 }");
    let noise = three_links(&src);
    s.berth(&["backup", "run", "data"]).code(0);
    let stored = std::fs::metadata(&s.data_files()[0]).unwrap().len();
    assert!(
        stored < 2 * noise.len() as u64,
        "the linked file is stored once: {stored} bytes for 3 paths of {} bytes of noise",
        noise.len()
    );
    let out = s.path().join("out");
    backup::open_without_berth(&s.path().join("key.txt"), &s.data_files()[0], &out);
    let links = linked(&out);
    assert!(same_file(&links, "lib.so", "lib.so.1"), "{links:?}");
    assert!(
        same_file(&links, "lib.so", "nested/lib.so.1.2"),
        "{links:?}"
    );
    assert_eq!(tree(&out), tree(&src));
    // Restored in place: links again.
    let before = tree(&src);
    std::fs::remove_file(src.join("lib.so.1")).unwrap();
    std::fs::write(src.join("lib.so.1"), "a copy now").unwrap();
    s.berth(&["backup", "restore", "data"]).code(0);
    assert_eq!(tree(&src), before);
    let links = linked(&src);
    assert!(same_file(&links, "lib.so", "lib.so.1"), "{links:?}");
    assert!(
        same_file(&links, "lib.so", "nested/lib.so.1.2"),
        "{links:?}"
    );
    drop(s);

    // A volume: the engine's archive carries hard links both ways.
    let s = Scene::new();
    s.data_spec("", "{ volume: data }", "{ daily: 7 }");
    s.berth(&["apply", "--yes"]).code(0);
    let src = s.path().join("src");
    sample(&src, 1);
    three_links(&src);
    let web = s.web();
    docker(&[
        "cp",
        &format!("{}/.", src.display()),
        &format!("{web}:/data/"),
    ]);
    s.berth(&["backup", "run", "data"]).code(0);
    let stored = std::fs::metadata(&s.data_files()[0]).unwrap().len();
    assert!(
        stored < 2 * noise.len() as u64,
        "stored once: {stored} bytes"
    );
    let out = s.path().join("out");
    backup::open_without_berth(&s.path().join("key.txt"), &s.data_files()[0], &out);
    let links = linked(&out);
    assert!(same_file(&links, "lib.so", "lib.so.1"), "{links:?}");
    assert!(
        same_file(&links, "lib.so", "nested/lib.so.1.2"),
        "{links:?}"
    );
    s.berth(&["backup", "restore", "data"]).code(0);
    let back = s.path().join("back");
    std::fs::create_dir_all(&back).unwrap();
    docker(&["cp", &format!("{web}:/data/."), &back.display().to_string()]);
    assert_eq!(tree(&back), tree(&src));
    let links = linked(&back);
    assert!(same_file(&links, "lib.so", "lib.so.1"), "{links:?}");
    assert!(
        same_file(&links, "lib.so", "nested/lib.so.1.2"),
        "{links:?}"
    );
}

#[test]
fn a_backups_compression_level_and_threads_are_those_of_its_spec() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let src = s.path_backup(1, "{ daily: 7 }\n    compression: { level: 1, threads: 1 }");
    // 8 MiB of text-like data: what a higher level packs better.
    let words = [
        "alpha ", "beta ", "gamma ", "delta\n", "epsilon ", "zeta ", "eta ",
    ];
    let mut text = String::new();
    let mut x = 0x2545_f491_u32;
    while text.len() < 8 * 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        text.push_str(words[(x % 7) as usize]);
    }
    std::fs::write(src.join("words.txt"), &text).unwrap();
    s.berth(&["backup", "run", "data"]).code(0);
    s.data_spec(
        "",
        &format!("{{ path: {} }}", src.display()),
        "{ daily: 7 }\n    compression: { level: 19, threads: 2 }",
    );
    s.berth(&["backup", "run", "data"]).code(0);
    let sizes: Vec<u64> = s
        .data_files()
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .collect();
    assert_eq!(sizes.len(), 2);
    assert!(
        sizes[1] * 10 < sizes[0] * 9,
        "level 19 packs at least 10% smaller than level 1: {sizes:?}"
    );
    // Both open without berth, to the same files.
    for (i, f) in s.data_files().iter().enumerate() {
        let out = s.path().join(format!("out{i}"));
        backup::open_without_berth(&s.path().join("key.txt"), f, &out);
        assert_eq!(tree(&out), tree(&src));
    }
    // A restore's safety copy of the same files is taken at the fastest level, whatever
    // the backup's: larger than the level-19 backup.
    let before: Vec<PathBuf> = s.data_files();
    s.berth(&["backup", "restore", "data"]).code(0);
    let safety = s
        .data_files()
        .into_iter()
        .find(|f| !before.contains(f))
        .expect("a safety copy");
    let safety_size = std::fs::metadata(&safety).unwrap().len();
    assert!(
        safety_size * 9 > sizes[1] * 10,
        "the safety copy ({safety_size} bytes) is packed at level 1, not 19 ({} bytes)",
        sizes[1]
    );
    let out = s.path().join("out-safety");
    backup::open_without_berth(&s.path().join("key.txt"), &safety, &out);
    assert_eq!(tree(&out), tree(&src));
}

#[test]
fn a_restore_says_how_long_each_phase_took() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    s.path_backup(1, "{ daily: 7 }");
    s.berth(&["backup", "run", "data"]).code(0);
    let r = s.berth(&["backup", "restore", "data"]).code(0);
    let said = format!("{}{}", r.stdout(), r.stderr());
    let phases = said
        .lines()
        .find(|l| l.contains("verified ") && l.contains("safety copy "))
        .unwrap_or_else(|| panic!("no line of phases: {said}"));
    for phase in ["verified ", "safety copy ", "restored ", "gates "] {
        let after = phases.split(phase).nth(1).unwrap_or_default();
        let secs = after.split(' ').next().unwrap_or_default();
        assert!(
            secs.parse::<f64>().is_ok(),
            "`{phase}` has a time in seconds: {phases}"
        );
    }
}

/// A backup file damaged on disk is refused by restore before anything stops: its size and
/// SHA-256 are compared with the manifest first, so the pods stay up and no safety copy is
/// taken for nothing.
#[test]
fn a_damaged_backup_file_is_refused_by_restore_before_anything_stops() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let src = s.path_backup(1, "{ daily: 7 }");
    s.berth(&["backup", "run", "data"]).code(0);
    let id = s.ids("data")[0].clone();
    let now = tree(&src);
    let data = s.data_files()[0].clone();
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let r = s.berth(&["backup", "restore", "data", &id]).code(1);
    assert!(r.stderr_flat().contains("is damaged"), "{}", r.stderr());
    assert!(
        r.stderr_flat().contains("the manifest says"),
        "{}",
        r.stderr()
    );
    assert_eq!(tree(&src), now);
    // No safety copy was taken, and nothing is left to recover.
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    assert!(!list.contains("(safety copy)"), "{list}");
    s.berth(&["backup", "run", "data"]).code(0);
}

#[test]
fn a_damaged_backup_is_refused_by_restore_while_the_safety_copy_is_taken_and_nothing_is_emptied() {
    if !docker::available() || !tools() {
        return;
    }
    let s = Scene::new();
    let src = s.path_backup(1, "{ daily: 7 }");
    s.berth(&["backup", "run", "data"]).code(0);
    let id = s.ids("data")[0].clone();
    std::fs::write(src.join("hello.txt"), "changed since\n").unwrap();
    let now = tree(&src);
    // A byte flipped in the middle of the backup's data, and its manifest rewritten to
    // match the damaged file (so that the quick check of the stored file, before anything
    // stops, passes: only reading it back finds the damage).
    let data = s.data_files()[0].clone();
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let manifest_path = data.with_file_name(format!("{id}.manifest.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    manifest["stored_sha256"] = serde_json::Value::String(sha);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let r = s.berth(&["backup", "restore", "data", &id]).code(1);
    assert!(r.stderr_flat().contains("is damaged"), "{}", r.stderr());
    assert!(
        r.stderr_flat().contains("nothing had been emptied"),
        "{}",
        r.stderr()
    );
    // The data is as it was; the safety copy, taken while the backup was read back, is
    // kept, and nothing is left to recover (a backup runs: no unfinished restore).
    assert_eq!(tree(&src), now);
    let list = s.berth(&["backup", "list"]).code(0).stdout();
    assert!(list.contains("(safety copy)"), "{list}");
    s.berth(&["backup", "run", "data"]).code(0);
}
