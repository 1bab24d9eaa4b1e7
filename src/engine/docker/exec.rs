//! Running a command in a container, copying files in and out of it (archives), its logs,
//! and its events.

use std::collections::HashMap;

use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;

use super::{Engine, EngineError};

/// The streams of a command run with [`Engine::exec`].
pub struct ExecIo {
    pub output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// The events' `since` and `until` (the engine's `seconds.nanoseconds`) for a window of
/// `uptime` from `started` on the engine's clock; without a start, every event it holds
/// and those to come, with no end.
fn events_window(
    started: Option<(u64, u32)>,
    uptime: std::time::Duration,
) -> (String, Option<String>) {
    let stamp = |d: std::time::Duration| format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
    let since = started.map(|(s, n)| std::time::Duration::new(s, n));
    (
        since.map_or("0".to_owned(), stamp),
        since.and_then(|s| s.checked_add(uptime)).map(stamp),
    )
}

impl Engine {
    /// The tar stream of `path` in a container (running or not).
    pub fn download(
        &self,
        id: &str,
        path: &str,
    ) -> impl futures_util::Stream<Item = Result<hyper::body::Bytes, EngineError>> + use<'_> {
        use futures_util::StreamExt;
        let _request = self.request("download");
        self.docker
            .download_from_container(
                id,
                Some(bollard::query_parameters::DownloadFromContainerOptions {
                    path: path.to_owned(),
                }),
            )
            .map(|r| r.map_err(|e| self.call_error("download from container", e)))
    }

    /// Unpacks a tar stream at `path` in a container (running or not).
    pub async fn upload(
        &self,
        id: &str,
        path: &str,
        tar: impl futures_util::Stream<Item = Result<hyper::body::Bytes, std::io::Error>>
        + Send
        + 'static,
    ) -> Result<(), EngineError> {
        let _request = self.request("upload");
        self.docker
            .upload_to_container(
                id,
                Some(bollard::query_parameters::UploadToContainerOptions {
                    path: path.to_owned(),
                    ..Default::default()
                }),
                bollard::body_try_stream(tar),
            )
            .await
            .map_err(|e| self.call_error("upload to container", e))
    }

    /// Starts `cmd` in a running container, attached: its output (stdout and stderr
    /// frames) and, with `stdin`, a writer to its standard input. Returns the exec's id
    /// for [`Engine::exec_exit_code`].
    /// With `tty`, the command gets a terminal (its output then comes as one stream).
    pub async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        stdin: bool,
        tty: bool,
    ) -> Result<(String, ExecIo), EngineError> {
        let _request = self.request("exec");
        let created = self
            .docker
            .create_exec(
                id,
                bollard::exec::CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    attach_stdin: Some(stdin),
                    tty: Some(tty),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.call_error("create exec", e))?;
        let _request = self.request("exec");
        match self
            .docker
            .start_exec(
                &created.id,
                Some(bollard::exec::StartExecOptions {
                    detach: false,
                    tty,
                    output_capacity: Some(256 * 1024),
                }),
            )
            .await
            .map_err(|e| self.call_error("start exec", e))?
        {
            bollard::exec::StartExecResults::Attached { output, input } => {
                Ok((created.id, ExecIo { output, input }))
            }
            bollard::exec::StartExecResults::Detached => Err(EngineError::Call {
                region: self.region.clone(),
                call: "start exec",
                reason: "the engine did not attach to the command".into(),
            }),
        }
    }

    /// Tells the engine the size of an exec's terminal (rows, columns).
    pub async fn resize_exec(
        &self,
        exec_id: &str,
        rows: u16,
        columns: u16,
    ) -> Result<(), EngineError> {
        let _request = self.request("resize_exec");
        self.docker
            .resize_exec(
                exec_id,
                bollard::exec::ResizeExecOptions {
                    height: rows,
                    width: columns,
                },
            )
            .await
            .map_err(|e| self.call_error("resize exec", e))
    }

    /// The exit code of a finished exec.
    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, EngineError> {
        let _request = self.request("exec_exit_code");
        let r = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| self.call_error("inspect exec", e))?;
        Ok(r.exit_code)
    }

    /// The last `lines` lines of a container's output (stdout and stderr).
    pub async fn log_tail(&self, id: &str, lines: usize) -> String {
        self.log_since(id, 0, lines).await
    }

    /// A container's output (stdout and stderr) since `since` (seconds since the epoch; 0
    /// for all of it), at most its last `lines` lines.
    pub async fn log_since(&self, id: &str, since: i64, lines: usize) -> String {
        let _request = self.request("log_since");
        let mut stream = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                since: i32::try_from(since).unwrap_or(i32::MAX),
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&chunk.to_string());
        }
        out
    }

    /// A container's output as the engine streams it, stdout and stderr: since `since`
    /// (seconds since the epoch; 0 for all of it), its last `tail` lines only (all when
    /// `None`), and, with `follow`, what it writes next until it stops.
    pub fn log_stream(
        &self,
        id: &str,
        since: i64,
        tail: Option<usize>,
        follow: bool,
    ) -> impl futures_util::Stream<Item = Result<Vec<u8>, EngineError>> + '_ {
        let _request = self.request("log_stream");
        self.docker
            .logs(
                id,
                Some(LogsOptions {
                    follow,
                    stdout: true,
                    stderr: true,
                    since: i32::try_from(since).unwrap_or(i32::MAX),
                    tail: tail.map_or("all".to_owned(), |n| n.to_string()),
                    ..Default::default()
                }),
            )
            .map(|chunk| {
                chunk
                    .map(|c| c.into_bytes().to_vec())
                    .map_err(|e| self.call_error("logs", e))
            })
    }

    /// Watches the engine's events for an exit of the container `id` since `started` (its
    /// last start, on the engine's clock: an exit before it, a stop before a restart, is
    /// not this run's), or to come, until `uptime` after `started` on the engine's clock
    /// (the engine ends the stream then; both ends are its own times, so this machine's
    /// clock need not agree), and for at most `wait` on this machine's: the exit status of
    /// the first, or `None` when the stream ended or `wait` passed without one. One request
    /// held open, instead of a look every moment.
    pub async fn exits_within(
        &self,
        id: &str,
        started: Option<(u64, u32)>,
        uptime: std::time::Duration,
        wait: std::time::Duration,
    ) -> Result<Option<i64>, EngineError> {
        let _request = self.request("exits_within");
        let (since, until) = events_window(started, uptime);
        let options = bollard::query_parameters::EventsOptions {
            since: Some(since),
            until,
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                ("container".to_owned(), vec![id.to_owned()]),
                ("event".to_owned(), vec!["die".to_owned()]),
            ])),
        };
        let mut events = self.docker.events(Some(options));
        let first = async {
            match events.next().await {
                Some(Ok(event)) => Ok(Some(
                    event
                        .actor
                        .and_then(|a| a.attributes)
                        .and_then(|a| a.get("exitCode").and_then(|c| c.parse().ok()))
                        .unwrap_or(-1),
                )),
                Some(Err(e)) => Err(self.call_error("events", e)),
                // The engine ended the stream: no exit seen.
                None => Ok(None),
            }
        };
        match tokio::time::timeout(wait, first).await {
            Ok(seen) => seen,
            Err(_) => Ok(None),
        }
    }

    /// The exit status of the container's last exit, from the engine's events (those it
    /// still holds). After a restart by its policy, the container's own state shows the
    /// new run (status 0 while it runs); its `die` events keep the status of each exit.
    pub async fn last_exit_status(&self, id: &str) -> Result<Option<i64>, EngineError> {
        let _request = self.request("last_exit_status");
        let stamp = |t: std::time::SystemTime| {
            let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
        };
        let options = bollard::query_parameters::EventsOptions {
            // Every event the engine holds for this container id (no clock to agree on).
            since: Some(stamp(std::time::UNIX_EPOCH)),
            // Up to now: the stream ends instead of waiting for new events.
            until: Some(stamp(std::time::SystemTime::now())),
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                ("container".to_owned(), vec![id.to_owned()]),
                ("event".to_owned(), vec!["die".to_owned()]),
            ])),
        };
        let mut events = self.docker.events(Some(options));
        let mut last = None;
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| self.call_error("events", e))?;
            if let Some(code) = event
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("exitCode").and_then(|c| c.parse().ok()))
            {
                last = Some(code);
            }
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_events_window_is_the_engines_own_times() {
        assert_eq!(
            events_window(
                Some((1_796_677_146, 260_581_990)),
                Duration::from_millis(500)
            ),
            (
                "1796677146.260581990".to_owned(),
                Some("1796677146.760581990".to_owned())
            )
        );
        // Nanoseconds carried into the seconds, and kept to nine digits.
        assert_eq!(
            events_window(Some((10, 900_000_001)), Duration::from_millis(250)).1,
            Some("11.150000001".to_owned())
        );
        assert_eq!(
            events_window(None, Duration::from_secs(1)),
            ("0".to_owned(), None)
        );
    }
}
