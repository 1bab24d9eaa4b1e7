//! `berth exec POD -- CMD…`: a command run in a pod's running container (one replica, in
//! one region), its output on berth's stdout and stderr, its exit status berth's. Standard
//! input is passed on when it is not a terminal (`berth exec db -- psql < dump.sql`); on a
//! terminal, the command gets one of its own (`ops::terminal`).

use std::io::Write;
use std::path::Path;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::OpError;
use crate::engine::names::container_name_of;
use crate::graph::{Address, Kind};

/// What `berth exec` was asked for.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub pod: String,
    /// The replica (default the first).
    pub replica: Option<u32>,
    /// The region (default the primary).
    pub region: Option<String>,
    pub cmd: Vec<String>,
    /// Pass berth's standard input to the command.
    pub stdin: bool,
    /// Give the command a terminal (berth's own is then in raw mode while it runs).
    pub tty: bool,
}

/// Runs the command; its exit status (`None` when the engine did not say).
pub fn exec(
    path: &Path,
    state_dir: Option<&Path>,
    request: &ExecRequest,
) -> Result<Option<i64>, OpError> {
    let project = crate::project::Project::open(path, state_dir)?;
    let spec = &project.spec;
    let name = spec.project.value.as_str();
    let refused = |message: String, help: String| OpError::Refused { message, help };
    let Some(pod) = spec.pods.get(&request.pod) else {
        return Err(super::logs::no_such_pod(path, spec, &request.pod));
    };
    let region = request
        .region
        .clone()
        .unwrap_or_else(|| spec.primary_region().to_owned());
    let Some(engine) = project.engines.get(&region) else {
        return Err(refused(
            format!("the spec has no region `{region}`"),
            format!("name one of: {}", spec.region_names().join(", ")),
        ));
    };
    let replicas = pod.replicas();
    let index = match request.replica {
        Some(n) if n >= replicas => {
            return Err(refused(
                format!(
                    "pod `{}` has {replicas} replica(s): no replica {n}",
                    request.pod
                ),
                format!("give --replica 0 to {}", replicas - 1),
            ));
        }
        Some(n) => Some(n),
        None => (replicas > 1).then_some(0),
    };
    let mut address = Address::new(Kind::Pod, &request.pod).index(index);
    if spec.region_names().len() > 1 {
        address = address.region(Some(&region));
    }
    let container = container_name_of(name, &address);
    project.runtime.block_on(async {
        let running = engine
            .container_named(&container)
            .await?
            .filter(|c| c.state == "running");
        let Some(c) = running else {
            return Err(refused(
                format!("{address} has no running container (`{container}`)"),
                "see `berth status`; `berth apply` starts what the spec asks for".into(),
            ));
        };
        if request.tty {
            return super::terminal::exec(engine, &c.id, &request.cmd).await;
        }
        let (exec_id, io) = engine
            .exec(&c.id, &request.cmd, request.stdin, false)
            .await?;
        let mut input = io.input;
        let feed = async {
            if request.stdin {
                let mut stdin = tokio::io::stdin();
                let _ = tokio::io::copy(&mut stdin, &mut input).await;
            }
            // The end of input, as the command sees it.
            let _ = input.shutdown().await;
        };
        let relay = async {
            let mut output = io.output;
            while let Some(frame) = output.next().await {
                use bollard::container::LogOutput;
                let written = match frame {
                    Ok(LogOutput::StdErr { message }) => {
                        let mut err = std::io::stderr().lock();
                        err.write_all(&message).and_then(|_| err.flush())
                    }
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&message).and_then(|_| out.flush())
                    }
                    Ok(LogOutput::StdIn { .. }) => Ok(()),
                    Err(_) => break,
                };
                if written.is_err() {
                    break; // the reader of berth's output is gone
                }
            }
        };
        // The command's end ends the feeding too (a command that does not read its input).
        tokio::pin!(feed, relay);
        tokio::select! {
            _ = &mut feed => (&mut relay).await,
            _ = &mut relay => {}
        }
        Ok(engine.exec_exit_code(&exec_id).await?)
    })
}
