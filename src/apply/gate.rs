//! Gates run after a container starts: it is running, and healthy within its budget (the
//! spec's `health.cmd` as the engine's healthcheck, or `health.http` checked by berth over
//! the project network).

use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;

use crate::engine::Engine;
use crate::spec::Pod;

/// A gate that did not pass, and why.
#[derive(Debug)]
pub struct GateFailure {
    pub gate: String,
    pub detail: String,
}

fn fail(gate: &str, detail: impl Into<String>) -> GateFailure {
    GateFailure {
        gate: gate.to_owned(),
        detail: detail.into(),
    }
}

/// Docker's defaults where the spec leaves a value out.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RETRIES: u32 = 10;
/// How long a container must stay up before "running" passes, without a health check.
const SETTLE: Duration = Duration::from_millis(1500);
const POLL: Duration = Duration::from_millis(250);

/// Waits until the container `id` of `pod` passes its gates, or fails one.
pub async fn healthy(
    engine: &Engine,
    id: &str,
    network: &str,
    pod: &Pod,
) -> Result<(), GateFailure> {
    let health = pod.health.as_ref().map(|h| &h.value);
    let interval = health
        .and_then(|h| h.interval.as_ref()?.get())
        .unwrap_or(DEFAULT_INTERVAL);
    let timeout = health
        .and_then(|h| h.timeout.as_ref()?.get())
        .unwrap_or(DEFAULT_TIMEOUT);
    let retries = health.and_then(|h| h.retries).unwrap_or(DEFAULT_RETRIES);
    let start_period = health
        .and_then(|h| h.start_period.as_ref()?.get())
        .unwrap_or_default();
    let started = Instant::now();
    let running = |state: &crate::engine::docker::ContainerState| -> Result<(), GateFailure> {
        if state.running && !state.restarting {
            Ok(())
        } else {
            Err(fail(
                "running",
                format!("the container stopped (exit status {})", state.exit_code),
            ))
        }
    };
    let state_of = |id: &str| {
        let id = id.to_owned();
        async move {
            engine
                .state(&id)
                .await
                .map_err(|e| fail("running", e.to_string()))
        }
    };

    match health {
        Some(h) if h.cmd.is_some() => {
            // The engine runs the command; wait for its verdict within the budget.
            let budget =
                start_period + (interval + timeout) * (retries + 1) + Duration::from_secs(2);
            loop {
                let state = state_of(id).await?;
                running(&state)?;
                match state.health.as_str() {
                    "healthy" => return Ok(()),
                    "unhealthy" => {
                        return Err(fail(
                            "healthy",
                            format!("the health command failed: {}", state.health_output.trim()),
                        ));
                    }
                    _ if started.elapsed() > budget => {
                        return Err(fail("healthy", format!("not healthy within {budget:?}")));
                    }
                    _ => tokio::time::sleep(POLL).await,
                }
            }
        }
        Some(h) if h.http.is_some() => {
            let probe = h
                .http
                .as_ref()
                .map(|p| (p.port, p.path.clone()))
                .unwrap_or_default();
            let mut failures = 0;
            loop {
                let state = state_of(id).await?;
                running(&state)?;
                let Some(ip) = state.addresses.get(network) else {
                    return Err(fail(
                        "healthy",
                        format!("the container has no address on `{network}`"),
                    ));
                };
                let attempt = Instant::now();
                let why = match http_get(ip, probe.0, &probe.1, timeout).await {
                    Ok(status) if (200..300).contains(&status) => return Ok(()),
                    Ok(status) => format!("GET :{}{} answered {status}", probe.0, probe.1),
                    Err(e) => format!("GET :{}{}: {e}", probe.0, probe.1),
                };
                if started.elapsed() >= start_period {
                    failures += 1;
                    if failures > retries {
                        return Err(fail("healthy", format!("{why} ({} attempts)", failures)));
                    }
                }
                tokio::time::sleep(interval.saturating_sub(attempt.elapsed())).await;
            }
        }
        _ => {
            // No health check: the container must stay up for a moment.
            while started.elapsed() < SETTLE {
                running(&state_of(id).await?)?;
                tokio::time::sleep(POLL).await;
            }
            running(&state_of(id).await?)
        }
    }
}

/// GET `path` on `ip:port`; the response status.
pub async fn http_get(ip: &str, port: u16, path: &str, timeout: Duration) -> Result<u16, String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, ip)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
