//! `berth backup restore` of a command's output: piped back into the source's `restore`
//! command in the running pod, after a safety copy (the command's output now); if the
//! command or the pod's gates fail, the safety copy is piped back the same way.

use futures_util::StreamExt;

use super::Restored;
use crate::archive::pipeline::Stats;
use crate::archive::refill::open_into;
use crate::archive::store::Store;
use crate::archive::{Manifest, verify};
use crate::backup::ops::{Backups, failed};
use crate::error::OpError;

impl Backups {
    /// Restores a command's output through the source's `restore` command, in the running
    /// pod: verified first, a safety copy (the command's output now) taken, the backup piped
    /// into the command, then the pod's health gate. If the command or the gate fails, the
    /// safety copy is piped back the same way.
    pub(super) fn restore_exec(
        &self,
        name: &str,
        id: Option<&str>,
        dry_run: bool,
    ) -> Result<Restored, OpError> {
        let source = &self.get(name)?.source.value;
        let (Some(pod), Some(cmd)) = (source.pod.as_ref(), source.restore.as_ref()) else {
            return Err(failed(
                name,
                "a command's output is restored through a command, and the source has no `restore`",
                "add `restore: [...]` to the source (e.g. `[pg_restore, -d, shop]`), or pipe the one-liner's output into it by hand",
            ));
        };
        let pod = pod.value.clone();
        let manifest = self.choose(name, id)?;
        let identity = self.identity(name)?;
        let store = self.store(self.get(name)?)?;
        verify(&store, &manifest, identity)?;
        let mut lines = vec![format!(
            "{} backup {} ({}, {} bytes) into `{}` in pod `{pod}`",
            if dry_run { "would pipe" } else { "piping" },
            manifest.id,
            crate::clock::format_time(manifest.created_at),
            manifest.plain_bytes,
            cmd.join(" ")
        )];
        if dry_run {
            return Ok(Restored {
                manifest,
                safety: None,
                lines,
            });
        }
        let safety = self.run(name, true)?.manifest;
        lines.push(format!("safety copy taken: {}", safety.id));
        let attempt = self
            .pipe_into(name, &pod, cmd, &manifest)
            .and_then(|()| self.pod_gate(name, &pod));
        match attempt {
            Ok(()) => {
                lines.push(format!(
                    "pod `{pod}` is healthy on the data of {}",
                    manifest.id
                ));
                Ok(Restored {
                    manifest,
                    safety: Some(safety),
                    lines,
                })
            }
            Err(e) => {
                self.pipe_into(name, &pod, cmd, &safety)?;
                self.pod_gate(name, &pod)?;
                Err(failed(
                    name,
                    format!("restoring {} failed ({e})", manifest.id),
                    format!(
                        "the safety copy {} was piped back and pod `{pod}` is healthy on the data from before",
                        safety.id
                    ),
                ))
            }
        }
    }

    /// Decrypts a backup and pipes it into `cmd` in the pod; fails when the command does.
    fn pipe_into(
        &self,
        name: &str,
        pod: &str,
        cmd: &[String],
        m: &Manifest,
    ) -> Result<(), OpError> {
        let container = self
            .project
            .runtime
            .block_on(self.pod_container(name, pod))?;
        let stats = self.pipe_into_container(name, &container, cmd, m)?;
        // What went in is what the backup holds (it was verified before, but read again).
        self.held_to_manifest(name, &m.id, &stats)
    }

    /// Decrypts a backup and pipes it into `cmd` in `container` (a pod's, or a drill's
    /// scratch copy's); fails when the command does. What was read, for a caller that
    /// holds it to the manifest.
    pub(in crate::backup) fn pipe_into_container(
        &self,
        name: &str,
        container: &str,
        cmd: &[String],
        m: &Manifest,
    ) -> Result<Stats, OpError> {
        use tokio::io::AsyncWriteExt;
        let engine = self.engine(name)?;
        let identity = self.identity(name)?;
        let store = self.store(self.get(name)?)?;
        let data = store.open(name, &m.id)?;
        self.project.runtime.block_on(async {
            let (exec_id, io) = engine.exec(container, cmd, true, false).await?;
            let crate::engine::docker::ExecIo {
                mut output,
                mut input,
            } = io;
            let (tx, mut rx) =
                tokio::sync::mpsc::channel::<Result<hyper::body::Bytes, std::io::Error>>(4);
            let opener = open_into(data, &identity.path, tx);
            // Moves the receiver in: when the command stops reading, the channel closes and
            // the pipeline thread stops too (no thread is left blocked on a full channel).
            let writer = async move {
                let mut result = Ok(());
                while let Some(item) = rx.recv().await {
                    let written = match item {
                        Ok(bytes) => input.write_all(&bytes).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = written {
                        result = Err(e);
                        break;
                    }
                }
                // Always the end of input, so that the command finishes (and its output
                // with it), failed or not.
                let _ = input.shutdown().await;
                result
            };
            let reader = async {
                let mut tail = Vec::new();
                while let Some(frame) = output.next().await {
                    // Its stderr only: what it prints on stdout may be the data itself.
                    if let Ok(bollard::container::LogOutput::StdErr { message }) = frame {
                        tail.extend_from_slice(&message);
                        let excess = tail.len().saturating_sub(4096);
                        tail.drain(..excess);
                    }
                }
                tail
            };
            // The writer owns the receiver: when it is done, a blocked send ends.
            let (written, tail) = tokio::join!(writer, reader);
            let opened = tokio::task::spawn_blocking(move || opener.join())
                .await
                .map_err(|_| {
                    failed(name, "the restore thread was lost", "run the restore again")
                })?;
            let code = engine.exec_exit_code(&exec_id).await?;
            let said = String::from_utf8_lossy(&tail).trim().to_owned();
            let Ok(Ok(stats)) = opened else {
                return Err(failed(
                    name,
                    "the backup could not be read while restoring",
                    "verify it: `berth backup verify`",
                ));
            };
            if let Err(e) = written {
                return Err(failed(
                    name,
                    format!("`{}` stopped reading: {e} ({said})", cmd.join(" ")),
                    "run the command by hand in the pod to see why",
                ));
            }
            if code != Some(0) {
                return Err(failed(
                    name,
                    format!(
                        "`{}` exited with {}: {said}",
                        cmd.join(" "),
                        code.map_or("no status".into(), |c| c.to_string())
                    ),
                    "run the command by hand in the pod to see why",
                ));
            }
            Ok(stats)
        })
    }
}
