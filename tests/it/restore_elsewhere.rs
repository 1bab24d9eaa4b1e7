//! `backup restore --to-path DIR [--files PATTERN]` and `--to-volume NEW`: a volume backup
//! put into a new directory (whole or in part) or a new volume, with the live volume and
//! its pod untouched; a directory that is not empty, or a volume that exists, refused; a
//! damaged backup leaving no directory or volume behind.

use crate::common;

use common::backup::{self, Scene, tree};
use common::docker::{self, docker};

#[test]
fn a_backup_restores_into_a_new_directory_whole_or_in_part_and_nothing_live_moves() {
    if !docker::available() || !backup::tools(&["age-keygen"]) {
        return;
    }
    let s = Scene::new();
    s.data_spec("", "{ volume: data }", "{ daily: 7 }");
    s.berth(&["apply", "--yes"]).code(0);
    s.put(&[
        ("a.txt", "alpha\n"),
        ("sub/b.txt", "beta\n"),
        ("sub/c.json", "{}\n"),
        ("sub/deeper/d.json", "[]\n"),
    ]);
    let backed_up = s.volume_tree();
    s.berth(&["backup", "run", "data"]).code(0);
    s.put(&[("a.txt", "changed live\n")]);
    let live = s.volume_tree();
    let live_id = docker(&["inspect", "-f", "{{.Id}}", &s.web()]);
    let out = tempfile::tempdir().unwrap();
    // `berth backup restore data --to-path DIR [ARGS]`.
    let to_path = |dir: &std::path::Path, args: &[&str]| {
        let dir = dir.display().to_string();
        let mut all = vec!["backup", "restore", "data", "--to-path", dir.as_str()];
        all.extend_from_slice(args);
        s.berth(&all)
    };

    // Whole, into a directory it makes.
    let whole = out.path().join("whole");
    let r = to_path(&whole, &[]).code(0);
    assert!(
        r.stderr_flat().contains("nothing live was touched"),
        "{}",
        r.stderr()
    );
    assert_eq!(tree(&whole), backed_up);
    assert_eq!(s.volume_tree(), live);
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &s.web()]), live_id);

    // In part: a glob (`*` stops at `/`) and a directory.
    let part = out.path().join("part");
    let r = to_path(&part, &["--files", "sub/*.json", "--files", "a.txt"]).code(0);
    let got = tree(&part);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(names, ["a.txt", "sub", "sub/c.json"], "{}", r.stderr());
    assert_eq!(got["a.txt"], backed_up["a.txt"]);
    let dir = out.path().join("dir");
    to_path(&dir, &["--files", "sub/deeper"]).code(0);
    let names: Vec<String> = tree(&dir).into_keys().collect();
    assert_eq!(names, ["sub", "sub/deeper", "sub/deeper/d.json"]);

    // Into a new volume, left to the user: the files are there, read by a container of
    // the docker CLI's; a volume that exists is refused.
    let volume = format!("{}-restored", s.project());
    let _gone = RemoveVolume(volume.clone());
    let r = s
        .berth(&["backup", "restore", "data", "--to-volume", &volume])
        .code(0);
    assert!(
        r.stderr_flat().contains("nothing live was touched"),
        "{}",
        r.stderr()
    );
    let read = |file: &str| {
        docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{volume}:/v:ro"),
            docker::testapp_image(),
            "cat",
            &format!("/v/{file}"),
        ])
    };
    assert_eq!(read("a.txt"), "alpha");
    assert_eq!(read("sub/deeper/d.json"), "[]");
    let labels = docker(&["volume", "inspect", "-f", "{{json .Labels}}", &volume]);
    assert!(!labels.contains("io.berth.project"), "{labels}");
    s.berth(&["plan", "--detailed-exitcode"]).code(0);
    let r = s
        .berth(&["backup", "restore", "data", "--to-volume", &volume])
        .code(1);
    assert!(r.stderr_flat().contains("exists already"), "{}", r.stderr());
    assert_eq!(s.volume_tree(), live);

    // A directory that is not empty: refused, untouched.
    let r = to_path(&whole, &[]).code(1);
    assert!(r.stderr_flat().contains("is not empty"), "{}", r.stderr());
    assert_eq!(tree(&whole), backed_up);

    // A damaged backup: refused, and no directory is left.
    let data = s.data_files()[0].clone();
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let bad = out.path().join("bad");
    to_path(&bad, &[]).code(1);
    assert!(!bad.exists());
    let bad_volume = format!("{}-bad", s.project());
    let _gone_too = RemoveVolume(bad_volume.clone());
    s.berth(&["backup", "restore", "data", "--to-volume", &bad_volume])
        .code(1);
    let left = std::process::Command::new("docker")
        .args(["volume", "inspect", &bad_volume])
        .output()
        .unwrap();
    assert!(!left.status.success(), "the new volume is removed again");
    assert_eq!(s.volume_tree(), live);
}

/// A volume removed (with `docker volume rm`) when this goes, also when a test fails.
struct RemoveVolume(String);

impl Drop for RemoveVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}
