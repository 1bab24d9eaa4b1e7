//! The scene the backup and restore tests share: a project, its spec directory with an age
//! key (`key.txt`), a backup store (under `$HOME/.cache/berth-tests`, never under /tmp,
//! which berth refuses), removed on drop; and the standard tools they use as witnesses.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::docker::{self, docker};
use super::{Berth, Run};

/// Whether the CLIs in `needed` are installed; a failure when they are not and
/// `BERTH_REQUIRE_DOCKER=1`.
pub fn tools(needed: &[&str]) -> bool {
    let ok = needed
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if !ok && std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!(
            "the {} CLIs are needed (`.ci/run` installs them)",
            needed.join(", ")
        );
    }
    ok
}

/// The disaster-recovery one-liner from the README, with the standard tools.
pub fn open_without_berth(key: &Path, file: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"age -d -i "$1" "$2" | zstd -d | tar -x -C "$3""#)
        .arg("sh")
        .arg(key)
        .arg(file)
        .arg(into)
        .status()
        .unwrap();
    assert!(status.success(), "the one-liner failed");
}

/// A new age identity at `path`.
pub fn keygen(path: &Path) {
    assert!(
        Command::new("age-keygen")
            .arg("-o")
            .arg(path)
            .output()
            .unwrap()
            .status
            .success()
    );
}

/// The volume `data` and the pod `web` (the shared test app) that mounts it at /data.
pub fn web_with_data() -> String {
    let image = docker::testapp_image();
    format!(
        "volumes:
  data: {{}}
pods:
  web:
    image: {image}
    volumes: [\"data:/data\"]
    health: {{ http: {{ port: 8080, path: /health }}, interval: 200ms, retries: 20 }}
"
    )
}

pub struct Scene {
    pub inner: super::Scene,
    pub store: PathBuf,
    /// `--state-dir` for every berth run, when set.
    pub state_dir: Option<PathBuf>,
}

impl Scene {
    /// A project with `key.txt` made in its directory.
    pub fn new() -> Self {
        let inner = super::Scene::new();
        let store = super::store_root(&inner.project.0);
        keygen(&inner.path().join("key.txt"));
        Scene {
            inner,
            store,
            state_dir: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    pub fn project(&self) -> &str {
        &self.inner.project.0
    }

    pub fn web(&self) -> String {
        self.inner.name("web")
    }

    /// Not `berth-PROJECT-*`: the project's cleanup removes those images by id, and this
    /// one's id is the shared test app's.
    fn own_tag(&self) -> String {
        format!("berth-restore-test-{}:test", self.project())
    }

    /// The test app under a tag of this project's own (untagged on drop): the
    /// shared `berth-testapp:test` is built again by other test processes, and a tag that
    /// moves would be a real change to the pods.
    pub fn image(&self) -> String {
        let shared = docker::testapp_image();
        let id = docker(&["image", "inspect", "-f", "{{.Id}}", shared]);
        let own = self.own_tag();
        docker(&["tag", &id, &own]);
        own
    }

    /// `version`, `project`, `identity` (unless `identity` is false), then `rest` with
    /// `STORE` replaced by the store.
    pub fn spec(&self, identity: bool, rest: &str) {
        let head = if identity {
            "identity: ./key.txt\n"
        } else {
            ""
        };
        let rest = rest.replace("STORE", &self.store.display().to_string());
        self.inner.spec(&format!("{head}{rest}"));
    }

    /// The spec of a pod `web` (the shared test app) with a volume `data`, and one backup
    /// `data` of `source` under `retention`; `extra_head` goes after `identity`.
    pub fn data_spec(&self, extra_head: &str, source: &str, retention: &str) {
        self.spec(
            true,
            &format!(
                "{extra_head}
{}backups:
  # berth:allow(backup-key-on-host): a test
  data:
    source: {source}
    store: STORE
    retention: {retention}
",
                web_with_data()
            ),
        );
    }

    /// Sample files (a `big_mib` MiB sparse file among them) in `files/`, and the spec of
    /// the backup `data` of that host path under `retention`; returns the path.
    pub fn path_backup(&self, big_mib: u64, retention: &str) -> PathBuf {
        let src = self.path().join("files");
        sample(&src, big_mib);
        self.data_spec("", &format!("{{ path: {} }}", src.display()), retention);
        src
    }

    pub fn berth(&self, args: &[&str]) -> Run {
        let mut b = Berth::new().dir(self.path());
        if let Some(d) = &self.state_dir {
            b = b.args(["--state-dir", &d.display().to_string()]);
        }
        b.args(args).run()
    }

    pub fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut b = Berth::new().dir(self.path()).args(args);
        for (k, v) in env {
            b = b.env(k, v);
        }
        b.run()
    }

    /// The files in the store of the backup `data`, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.store.join("data"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The data files (not the manifests) of the backup `data`, sorted.
    pub fn data_files(&self) -> Vec<PathBuf> {
        self.files()
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tar.zst.age"))
            .collect()
    }

    /// The ids of the backups of `name` in the store, oldest first.
    pub fn ids(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.store.join(name))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter_map(|f| f.strip_suffix(".tar.zst.age").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The project's helper containers (any state).
    pub fn helpers(&self) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.berth.project={}", self.project()),
            "--format",
            "{{.Names}} {{.Labels}}",
        ]);
        out.lines()
            .filter(|l| l.contains("-berth-backup-") || l.contains("io.berth.helper"))
            .map(str::to_owned)
            .collect()
    }

    /// Files of the volume `data`, read through the running pod's container.
    pub fn volume_tree(&self) -> BTreeMap<String, String> {
        let out = tempfile::tempdir().unwrap();
        docker(&[
            "cp",
            &format!("{}:/data/.", self.web()),
            &out.path().display().to_string(),
        ]);
        tree(out.path())
    }

    /// Writes `files` (name, content) into the volume through the running pod.
    pub fn put(&self, files: &[(&str, &str)]) {
        let src = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let p = src.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        docker(&[
            "cp",
            &format!("{}/.", src.path().display()),
            &format!("{}:/data/", self.web()),
        ]);
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
        // The containers go first (the project does it again), then the tag alone: never
        // the image by id, which other tests share.
        let filter = format!("label=io.berth.project={}", self.project());
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["rmi", &self.own_tag()])
            .output();
    }
}

/// Every file under `root` by relative path: content hash (or link target), and mode.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let v = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                let mut h = Sha256::new();
                std::io::copy(&mut std::fs::File::open(&p).unwrap(), &mut h).unwrap();
                format!("{:x} {:o}", h.finalize(), meta.permissions().mode() & 0o777)
            };
            out.insert(rel, v);
        }
    }
    out
}

/// Files of every kind: empty, nested, odd names, a symlink, and a large sparse-ish file.
pub fn sample(root: &Path, big_mib: u64) {
    std::fs::create_dir_all(root.join("nested/deeper")).unwrap();
    std::fs::write(root.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(root.join("empty"), "").unwrap();
    std::fs::write(root.join("nested/deeper/odd name — ü ✓.txt"), "odd\n").unwrap();
    std::fs::write(root.join("nested/-starts-with-dash"), "dash\n").unwrap();
    std::os::unix::fs::symlink("hello.txt", root.join("link-to-hello")).unwrap();
    std::fs::set_permissions(
        root.join("hello.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    // Mostly a hole, with data at a few places.
    let big = std::fs::File::create(root.join("big.bin")).unwrap();
    big.set_len(big_mib * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    for (i, at) in [0u64, big_mib * 1024 * 512, big_mib * 1024 * 1024 - 4096]
        .iter()
        .enumerate()
    {
        big.write_at(format!("block {i} at {at}").as_bytes(), *at)
            .unwrap();
    }
}
