//! A job's run: the container of its previous run set aside (removed at the commit, given
//! back on rollback, never started again), a new one created, started and waited for. Its
//! exit status 0 is its gate; any other, or no exit within its `timeout`, fails the step
//! with the job's output, and the apply rolls back before the pods it gates change. Its
//! secrets leave memory as soon as it has exited (its keeper goes), and its container stays,
//! exited, as the record of the run that observation and the revision read.

use std::time::Duration;

use super::super::container::{self, container_name};
use super::super::journal::CommitItem;
use super::super::{ApplyError, Run, Status, Undo};
use crate::engine::labels;
use crate::engine::names::short;
use crate::plan::Change;

/// How much of a job's output a failure shows.
const OUTPUT_LINES: usize = 40;

impl Run<'_> {
    /// Runs a job (created, run again after a change, or after a failed or missing run).
    pub(super) async fn run_job(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        let engine = self.engine(&region);
        let unsupported = |what: &str| ApplyError::Unsupported {
            address: c.address.to_string(),
            what: what.into(),
            help: "this is a bug in berth: please report it".into(),
        };
        let mut resource = self
            .desired(c)
            .cloned()
            .ok_or_else(|| unsupported("find the job in the spec"))?;
        self.known_versions(&mut resource);
        let job = self
            .spec
            .jobs
            .get(&c.address.name)
            .ok_or_else(|| unsupported("find the job in the spec"))?;
        let pod = job.as_pod();
        let name = container_name(self.project, &resource);
        if let Some(old) = self.observed_id(c) {
            // Given back its name on rollback; a job's container is never started again.
            self.set_aside(&region, &old, &name, &format!("{name}-berth-old"))
                .await?;
            self.commit.borrow_mut().push(CommitItem::Container {
                region: region.clone(),
                id: old,
            });
        }
        let mut body = container::body(
            self.project,
            None,
            &pod,
            labels::encode(self.project, &resource, self.revision),
            self.spec_dir,
        );
        self.label_image(&region, &mut body).await?;
        self.deliver(c, &region, &pod, &name, &mut body).await?;
        let secrets_volume = body
            .host_config
            .as_ref()
            .and_then(|h| h.mounts.as_ref())
            .and_then(|m| {
                m.iter()
                    .find(|m| m.target.as_deref() == Some(crate::spec::SECRETS_MOUNT_POINT))
            })
            .and_then(|m| m.source.clone());
        let timeout = job.timeout();
        self.event(
            Some(&c.address),
            Status::Started,
            format!("  {}: running {name} (at most {timeout:?})", c.address),
        );
        self.record_undo(Undo::RemoveContainer {
            region: region.clone(),
            name: name.clone(),
        })?;
        let id = engine.create_container(&name, body).await?;
        let began = std::time::Instant::now();
        engine.start(&id).await?;
        let status = self
            .without_worker(self.exit_of(&region, &id, timeout))
            .await;
        if let Some(volume) = &secrets_volume {
            // Its secrets leave memory with it (the keeper held the memory).
            let keeper = crate::engine::secrets::keeper_name(volume);
            if let Some(k) = engine.container_named(&keeper).await? {
                engine.remove(&k.id).await?;
            }
        }
        let status = status?;
        if status == Some(0) {
            self.done(
                c,
                format!(
                    "+ {}: ran and exited 0 in {:.1} s ({})",
                    c.address,
                    began.elapsed().as_secs_f64(),
                    short(&id)
                ),
            );
            return Ok(());
        }
        if status.is_none() {
            engine.stop(&id).await?;
        }
        let output = engine.log_tail(&id, OUTPUT_LINES).await;
        Err(ApplyError::GateFailed {
            address: c.address.to_string(),
            gate: "exits 0".into(),
            detail: match status {
                Some(code) => format!("the job exited with status {code}"),
                None => format!("the job did not exit within {timeout:?} (stopped)"),
            },
            report: format!(
                "the job's last output:\n{}",
                output
                    .trim_end()
                    .lines()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        })
    }

    /// The exit status of the job's container `id`, or `None` when it did not exit within
    /// `timeout`; SIGINT/SIGTERM end the wait as an interruption.
    async fn exit_of(
        &self,
        region: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<i64>, ApplyError> {
        let engine = self.engine(region);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let window = (deadline - now).min(Duration::from_secs(1));
            if let Some(code) = engine.exits_within(id, None, window, window).await? {
                return Ok(Some(code));
            }
            // An exit whose event the engine no longer holds is still in its state.
            let state = engine.state(id).await?;
            if !state.running && !state.restarting {
                return Ok(Some(state.exit_code));
            }
            if self.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ApplyError::Interrupted {
                    report: String::new(),
                });
            }
        }
    }
}
