//! The test harness for the `berth` binary: run it from the repository root with arguments
//! and environment, then assert on the exit code and output.
//!
//! ```ignore
//! Berth::new().args(["validate", "examples/quickstart/berth.yaml"]).run().code(0);
//! ```

#![allow(dead_code)]

pub mod backup;
pub mod docker;
pub mod dockerd;
pub mod nginx;
pub mod s3;
pub mod sftp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh random value (`canary-` and 32 hex digits) that must never reach a disk, a log
/// or an output.
pub fn canary() -> String {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("canary-{hex}")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the tests' berth keeps each project's state directory (not /var/lib/berth).
pub fn state_home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("berth-state")
}

/// Where the tests' berth writes systemd units (not /etc/systemd/system).
pub fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("berth-units")
}

/// Where a test keeps a backup store: a place the store policy allows wherever the
/// repository is cloned (not under the build's directory, which may be under /tmp), unique
/// to `tag` (a test's project name). The test removes it when it is done.
pub fn store_root(tag: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .expect("$HOME is set: the tests keep backup stores under ~/.cache/berth-tests");
    let parent = home.join(".cache").join("berth-tests");
    std::fs::create_dir_all(&parent).expect("~/.cache/berth-tests");
    parent.join(tag)
}

/// The revisions of `berth history --format json` (format 1, checked).
pub fn revisions(json: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("history json: {e}: {json}"));
    assert_eq!(v["format_version"], 1, "{json}");
    v["revisions"].as_array().cloned().unwrap_or_default()
}

pub struct Berth {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl Berth {
    pub fn new() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.current_dir(repo());
        // Output is a pipe here; clear what would force colour on.
        cmd.env_remove("CLICOLOR_FORCE")
            .env_remove("NO_COLOR")
            .env_remove("BERTH_FILE")
            .env_remove("BERTH_IDENTITY")
            .env_remove("BERTH_STATE_DIR")
            .env_remove("BERTH_LOG")
            .env("BERTH_STATE_HOME", state_home())
            .env("BERTH_UNIT_DIR", unit_dir());
        Berth { cmd, stdin: None }
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn run(mut self) -> Run {
        use std::io::Write;
        use std::process::Stdio;
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("berth runs");
        if let Some(bytes) = self.stdin.take() {
            let mut pipe = child.stdin.take().expect("stdin");
            // berth may exit without reading stdin (a refused command): that is its answer.
            if let Err(e) = pipe.write_all(&bytes) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
            }
        }
        Run(child.wait_with_output().expect("berth finishes"))
    }

    /// Starts berth in the background (stdout discarded, stderr kept), for tests that act
    /// while it runs.
    pub fn spawn(self) -> std::process::Child {
        self.spawn_with(std::process::Stdio::null())
    }

    /// Starts berth with its stdout piped too, to read as it writes.
    pub fn spawn_piped(self) -> std::process::Child {
        self.spawn_with(std::process::Stdio::piped())
    }

    fn spawn_with(mut self, stdout: std::process::Stdio) -> std::process::Child {
        use std::process::Stdio;
        self.cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth starts")
    }
}

/// One test's project (removed with everything labelled for it when dropped) and the
/// directory its spec is written to.
pub struct Scene {
    pub project: docker::Project,
    pub dir: tempfile::TempDir,
}

impl Scene {
    pub fn new() -> Self {
        Scene {
            project: docker::Project::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `berth.yaml`: `version`, `project`, then `rest`.
    pub fn spec(&self, rest: &str) {
        let text = format!("version: 1\nproject: {}\n{rest}", self.project.0);
        std::fs::write(self.path().join("berth.yaml"), text).expect("spec written");
    }

    /// Runs berth in the scene's directory.
    pub fn berth(&self, args: &[&str]) -> Run {
        Berth::new().dir(self.path()).args(args).run()
    }

    /// berth in the scene's directory, not yet run (to [`Berth::spawn`] it).
    pub fn berth_cmd(&self, args: &[&str]) -> Berth {
        Berth::new().dir(self.path()).args(args)
    }

    /// The project's state directory (under [`state_home`]).
    pub fn state(&self) -> PathBuf {
        state_home().join(&self.project.0)
    }

    /// The container name of a pod.
    pub fn name(&self, pod: &str) -> String {
        format!("{}-{pod}", self.project.0)
    }

    /// `plan --format json --detailed-exitcode`, expecting `code`.
    pub fn plan(&self, code: i32) -> berth::plan::Plan {
        let r = self
            .berth(&["plan", "--format", "json", "--detailed-exitcode"])
            .code(code);
        serde_json::from_str(&r.stdout()).expect("plan json")
    }

    /// Names and states of the project's containers, running or not, sorted.
    pub fn containers(&self) -> Vec<String> {
        let out = docker::docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.berth.project={}", self.project.0),
            "--format",
            "{{.Names}} {{.State}} {{.Label \"io.berth.helper\"}}",
        ]);
        // The keepers of secrets volumes are seen with `docker::keepers_of`.
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| !l.ends_with(" secrets-keeper"))
            .map(|l| l.trim_end().to_owned())
            .collect();
        v.sort();
        v
    }
}

/// The changes of a plan that are not no-ops, as (address, action).
pub fn changed(plan: &berth::plan::Plan) -> Vec<(String, berth::plan::Action)> {
    plan.changes
        .iter()
        .filter(|c| c.action != berth::plan::Action::NoOp)
        .map(|c| (c.address.to_string(), c.action))
        .collect()
}

pub struct Run(pub Output);

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// stderr with miette's line wrapping undone (a break, its indent and any `│` gutter
    /// become one space), so assertions do not depend on where a message wraps.
    pub fn stderr_flat(&self) -> String {
        let mut out = String::new();
        for line in self.stderr().lines() {
            let body = line.trim_start().trim_start_matches('│').trim_start();
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(body);
        }
        out
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.0.status.code(),
            Some(expected),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// A directory removed (with what is in it) when this goes, also when a test fails.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
