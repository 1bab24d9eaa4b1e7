//! The test harness for the `berth` binary: run it from the repository root with arguments
//! and environment, then assert on the exit code and output.
//!
//! ```ignore
//! Berth::new().args(["validate", "examples/quickstart/berth.yaml"]).run().code(0);
//! ```

#![allow(dead_code)]

pub mod docker;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
            pipe.write_all(&bytes).expect("write stdin");
        }
        Run(child.wait_with_output().expect("berth finishes"))
    }
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
