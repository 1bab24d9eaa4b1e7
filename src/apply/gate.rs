//! Gates run after a container starts: it is running, and healthy within its budget (the
//! spec's `health.cmd` as the engine's healthcheck, or `health.http` checked by berth over
//! the project network).

use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;

use super::container::object_name;
use super::{ApplyError, indent};
use crate::engine::Engine;
use crate::plan::Change;
use crate::spec::{Pod, Scheme};

/// A gate that did not pass, and why.
#[derive(Debug)]
pub struct GateFailure {
    pub gate: String,
    pub detail: String,
}

pub(super) fn fail(gate: &str, detail: impl Into<String>) -> GateFailure {
    GateFailure {
        gate: gate.to_owned(),
        detail: detail.into(),
    }
}

/// berth's defaults where the spec leaves a value out (written into the engine's
/// healthcheck too, so that both agree).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RETRIES: u32 = 10;

/// A pod's health timing, with the defaults filled in.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

impl Timing {
    pub fn of(pod: &Pod) -> Timing {
        let health = pod.health.as_ref().map(|h| &h.value);
        Timing {
            interval: health
                .and_then(|h| h.interval.as_ref()?.get())
                .unwrap_or(DEFAULT_INTERVAL),
            timeout: health
                .and_then(|h| h.timeout.as_ref()?.get())
                .unwrap_or(DEFAULT_TIMEOUT),
            retries: health.and_then(|h| h.retries).unwrap_or(DEFAULT_RETRIES),
            start_period: health
                .and_then(|h| h.start_period.as_ref()?.get())
                .unwrap_or_default(),
        }
    }

    /// The longest the health gate waits: `start_period + (retries + 1) × (interval +
    /// timeout)` and 2 s of slack, at most [`max_gate_wait`]. Also whether the cap cut it.
    pub fn budget(&self, max: Duration) -> (Duration, bool) {
        let per_try = self.interval.saturating_add(self.timeout);
        let tries = self.retries.saturating_add(1);
        let wanted = per_try
            .checked_mul(tries)
            .and_then(|d| d.checked_add(self.start_period))
            .and_then(|d| d.checked_add(Duration::from_secs(2)))
            .unwrap_or(Duration::MAX);
        if wanted > max {
            (max, true)
        } else {
            (wanted, false)
        }
    }
}

/// The longest apply waits for one pod's health gate, whatever its `health` allows: an
/// hour, or `$BERTH_MAX_GATE_WAIT` (a duration such as `10m`).
pub const ENV_MAX_GATE_WAIT: &str = "BERTH_MAX_GATE_WAIT";
const DEFAULT_MAX_GATE_WAIT: Duration = Duration::from_secs(3600);

/// A `$BERTH_MAX_GATE_WAIT` that is not a positive duration.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error(
    "${ENV_MAX_GATE_WAIT} is `{value}`, which is not a positive duration ({reason}); nothing was changed"
)]
#[diagnostic(
    code(berth::bad_max_gate_wait),
    help(
        "set ${ENV_MAX_GATE_WAIT} to a duration such as `10m` or `1h30m`, or unset it for an hour"
    )
)]
pub struct BadMaxGateWait {
    pub value: String,
    pub reason: String,
}

/// [`ENV_MAX_GATE_WAIT`], or an hour when it is unset or empty. A value that is not a
/// positive duration is an error, never a silent hour: commands that may wait on a gate
/// check it before they change anything.
pub fn max_gate_wait() -> Result<Duration, BadMaxGateWait> {
    use crate::spec::units::{DurationKind, UnitKind};
    let value = match std::env::var(ENV_MAX_GATE_WAIT) {
        Ok(v) if v.is_empty() => return Ok(DEFAULT_MAX_GATE_WAIT),
        Ok(v) => v,
        Err(std::env::VarError::NotPresent) => return Ok(DEFAULT_MAX_GATE_WAIT),
        Err(std::env::VarError::NotUnicode(v)) => {
            return Err(BadMaxGateWait {
                value: v.to_string_lossy().into_owned(),
                reason: "not UTF-8".into(),
            });
        }
    };
    match DurationKind::parse(&value).map_err(|e| e.to_string()) {
        Ok(d) if d.is_zero() => Err(BadMaxGateWait {
            value,
            reason: "a gate cannot be given no time at all".into(),
        }),
        Ok(d) => Ok(d),
        Err(reason) => Err(BadMaxGateWait { value, reason }),
    }
}

/// The failure of a gate that ran out of time.
fn timed_out(budget: Duration, capped: bool, timing: &Timing) -> GateFailure {
    use crate::spec::units::format_duration;
    if capped {
        let (wanted, _) = timing.budget(Duration::MAX);
        let wanted = if wanted == Duration::MAX {
            "for ever".to_owned()
        } else {
            format_duration(wanted)
        };
        fail(
            "healthy",
            format!(
                "not healthy within {}, the most berth waits for a gate (its `health` would allow {wanted}; ${ENV_MAX_GATE_WAIT} sets the most); shorten `retries`, `interval` or `start_period`",
                format_duration(budget)
            ),
        )
    } else {
        fail(
            "healthy",
            format!("not healthy within {}", format_duration(budget)),
        )
    }
}

const POLL: Duration = Duration::from_millis(250);

/// Why the "running" gate failed on one look at a container.
#[derive(Debug, PartialEq, Eq)]
enum NotRunning {
    /// Restarted by its restart policy this many times since it was created.
    Restarted(i64),
    /// Stopped (or about to be restarted), with the status it exited with.
    Stopped(i64),
}

/// The "running" gate on one look at a container: up, and not restarted by its restart
/// policy since it was created (a crash between two looks is a crash all the same).
fn running(state: &crate::engine::docker::ContainerState) -> Result<(), NotRunning> {
    if state.restart_count > 0 {
        Err(NotRunning::Restarted(state.restart_count))
    } else if state.running && !state.restarting {
        Ok(())
    } else {
        Err(NotRunning::Stopped(state.exit_code))
    }
}

/// The "running" gate, with the exit status that matters in its message: after a
/// restart the container's state shows the new run (0 while it runs), so the status of
/// the exit that caused the restart comes from the engine's events.
async fn running_gate(
    engine: &Engine,
    id: &str,
    state: &crate::engine::docker::ContainerState,
) -> Result<(), GateFailure> {
    match running(state) {
        Ok(()) => Ok(()),
        Err(NotRunning::Stopped(code)) => Err(fail(
            "running",
            format!("the container stopped (exit status {code})"),
        )),
        Err(NotRunning::Restarted(count)) => {
            let status = match engine.last_exit_status(id).await {
                Ok(Some(code)) => format!("last exit status {code}"),
                // Between an exit and the restart, the state still holds the status.
                _ if state.restarting => format!("last exit status {}", state.exit_code),
                _ => "its exit status is no longer known".to_owned(),
            };
            Err(fail(
                "running",
                format!("the container exited and was restarted {count} time(s) ({status})"),
            ))
        }
    }
}

/// How long a pod's container must stay up after it starts: its `health.min_uptime`, or,
/// without a probe, [`crate::spec::DEFAULT_MIN_UPTIME`] (with one, the probe is the gate).
pub fn min_uptime(pod: &Pod) -> Duration {
    let health = pod.health.as_ref().map(|h| &h.value);
    match health.and_then(|h| h.min_uptime.as_ref()?.get()) {
        Some(d) => d,
        None if health.is_some_and(|h| h.cmd.is_some() || h.http.is_some()) => Duration::ZERO,
        None => crate::spec::DEFAULT_MIN_UPTIME,
    }
}

/// Waits until the container `id` of `pod` passes its gates, or fails one. `asked`: when
/// berth asked the engine to start it (it started after that, so it cannot have been up
/// for `min_uptime` before `asked + min_uptime`).
pub async fn healthy(
    engine: &Engine,
    id: &str,
    network: &str,
    pod: &Pod,
    asked: Instant,
) -> Result<(), GateFailure> {
    use crate::spec::units::format_duration;
    let health = pod.health.as_ref().map(|h| &h.value);
    let timing = Timing::of(pod);
    let max = max_gate_wait().map_err(|e| fail("healthy", e.to_string()))?;
    let uptime = min_uptime(pod);
    if uptime > max {
        return Err(fail(
            "running",
            format!(
                "`min_uptime: {}` is longer than the most berth waits for a gate ({}; ${ENV_MAX_GATE_WAIT} sets the most)",
                format_duration(uptime),
                format_duration(max)
            ),
        ));
    }
    let started = Instant::now();
    let state = match health.map(|h| (&h.cmd, &h.http)) {
        Some((Some(_), _)) => engine_verdict(engine, id, &timing, max).await?,
        Some((None, Some(p))) => {
            let probe = (p.port.value, p.path.as_str(), p.scheme);
            http_verdict(engine, id, network, probe, &timing, max).await?
        }
        _ => {
            let state = state_of(engine, id).await?;
            running_gate(engine, id, &state).await?;
            state
        }
    };
    // The container must stay up for `min_uptime` from its start, on the engine's clock:
    // the engine's events tell of an exit during it as it happens (one request, not a look
    // every moment), and the engine ends them when its clock has passed it. Should it end
    // them sooner than it could (before `asked + min_uptime` here), or fail, the rest is
    // waited out on this machine's clock, from when the gate began. A look after it judges:
    // up, not restarted by its policy, and still the run that started then.
    if uptime.is_zero() {
        return Ok(());
    }
    let own = started + uptime;
    let wait = own.saturating_duration_since(Instant::now());
    match state.started {
        // The engine did not say when it started: no events to tell this run's exits from
        // an earlier run's (a stop before a heal); the look after the window judges.
        None => tokio::time::sleep_until(own.into()).await,
        Some(since) => match engine.exits_within(id, Some(since), uptime, wait).await {
            // Exited: the look below says how.
            Ok(Some(_)) => {}
            // The engine ended the events at `until`, no sooner than it could have. (A
            // stream ended cleanly for another reason after `asked + min_uptime` would be
            // taken for it too, which could shorten the window by the start call's length.)
            Ok(None) if Instant::now() >= asked + uptime => {}
            Ok(None) | Err(_) => tokio::time::sleep_until(own.into()).await,
        },
    }
    let last = state_of(engine, id).await?;
    running_gate(engine, id, &last).await?;
    if last.started != state.started {
        return Err(fail(
            "running",
            "the container stopped and was started again while berth watched it",
        ));
    }
    Ok(())
}

/// One look at the container's state, as the engine has it.
async fn state_of(
    engine: &Engine,
    id: &str,
) -> Result<crate::engine::docker::ContainerState, GateFailure> {
    engine
        .state(id)
        .await
        .map_err(|e| fail("running", e.to_string()))
}

/// The engine runs `health.cmd`; waits for its verdict within the budget. The last state
/// seen, once healthy.
async fn engine_verdict(
    engine: &Engine,
    id: &str,
    timing: &Timing,
    max: Duration,
) -> Result<crate::engine::docker::ContainerState, GateFailure> {
    let (budget, capped) = timing.budget(max);
    let started = Instant::now();
    loop {
        let state = state_of(engine, id).await?;
        running_gate(engine, id, &state).await?;
        match state.health.as_str() {
            "healthy" => return Ok(state),
            "unhealthy" => {
                return Err(fail(
                    "healthy",
                    format!("the health command failed: {}", state.health_output.trim()),
                ));
            }
            _ if started.elapsed() > budget => {
                return Err(timed_out(budget, capped, timing));
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// berth probes `health.http` over the project network until it answers 2xx, `retries`
/// failures in a row, or the budget runs out. The last state seen, once healthy.
async fn http_verdict(
    engine: &Engine,
    id: &str,
    network: &str,
    probe: (u16, &str, Scheme),
    timing: &Timing,
    max: Duration,
) -> Result<crate::engine::docker::ContainerState, GateFailure> {
    let (budget, capped) = timing.budget(max);
    let started = Instant::now();
    let shown = probe.2.target(probe.0, probe.1);
    let mut failures = 0;
    loop {
        let state = state_of(engine, id).await?;
        running_gate(engine, id, &state).await?;
        let Some(ip) = state.addresses.get(network) else {
            return Err(fail(
                "healthy",
                format!("the container has no address on `{network}`"),
            ));
        };
        let attempt = Instant::now();
        let why = match http_get(engine, ip, probe, timing.timeout).await {
            Ok(status) if (200..300).contains(&status) => return Ok(state),
            Ok(status) => format!("GET {shown} answered {status}"),
            Err(e) => format!("GET {shown}: {e}"),
        };
        if started.elapsed() >= timing.start_period {
            failures += 1;
            // As the engine counts: `retries` failures in a row are unhealthy.
            if failures >= timing.retries {
                return Err(fail("healthy", format!("{why} ({} attempts)", failures)));
            }
        }
        if started.elapsed() > budget {
            let mut f = timed_out(budget, capped, timing);
            f.detail.push_str(&format!("; last probe: {why}"));
            return Err(f);
        }
        tokio::time::sleep(timing.interval.saturating_sub(attempt.elapsed())).await;
    }
}

/// What a GET returned.
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub latency: Duration,
}

/// Why a GET got no response: the port refused the connection, the answer was not HTTP, or
/// none came in time.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(hyper::Error),
    #[error("{0}")]
    Request(hyper::http::Error),
    #[error("reading the body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
}

/// GET `path` on `ip:port` (as the engine's host reaches it: [`Engine::dial`]); the
/// response status.
pub async fn http_get(
    engine: &Engine,
    ip: &str,
    (port, path, scheme): (u16, &str, Scheme),
    timeout: Duration,
) -> Result<u16, ProbeError> {
    get(engine, ip, (port, path, scheme), timeout)
        .await
        .map(|r| r.status)
}

/// GET `path` on `ip:port` (as the engine's host reaches it: [`Engine::dial`]) with its
/// headers and body (at most `MAX_BODY` bytes).
pub async fn get(
    engine: &Engine,
    ip: &str,
    (port, path, scheme): (u16, &str, Scheme),
    timeout: Duration,
) -> Result<Response, ProbeError> {
    use http_body_util::BodyExt;
    const MAX_BODY: usize = 1 << 20;
    let start = Instant::now();
    let attempt = async {
        let stream = engine.dial(ip, port).await.map_err(ProbeError::Connect)?;
        let stream: Box<dyn crate::engine::docker::Dialed> = if scheme.is_https() {
            Box::new(
                super::probe_tls::connect(stream, ip)
                    .await
                    .map_err(ProbeError::Tls)?,
            )
        } else {
            stream
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(ProbeError::Http)?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, ip)
            .body(Empty::<Bytes>::new())
            .map_err(ProbeError::Request)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(ProbeError::Http)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_BODY);
        let body = limited
            .collect()
            .await
            .map_err(ProbeError::Body)?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
            latency: start.elapsed(),
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

pub use super::checks::{CheckFailed, check_name, checks, run_check, verify};

impl super::Run<'_> {
    pub(super) async fn gate(
        &self,
        c: &Change,
        region: &str,
        id: &str,
        asked: Instant,
        remove_on_failure: bool,
    ) -> Result<(), ApplyError> {
        let Some(pod) = self.spec.pods.get(&c.address.name) else {
            return Ok(());
        };
        let engine = self.engine(region);
        let network = object_name(self.project, "default");
        let gates = async {
            match healthy(engine, id, &network, pod, asked).await {
                Ok(()) => checks(engine, id, &network, pod).await,
                failed => failed,
            }
        };
        // SIGINT/SIGTERM cut a wait for health short.
        let interrupted = async {
            while !self.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        // Waiting holds no worker: other steps ask the engine for their changes meanwhile.
        let gates = self.without_worker(gates);
        let verdict = tokio::select! {
            v = gates => v,
            () = interrupted => return Err(ApplyError::Interrupted { report: String::new() }),
        };
        match verdict {
            Ok(()) => Ok(()),
            Err(failure) => {
                let logs = engine.log_tail(id, 20).await;
                if remove_on_failure {
                    // The failed container goes first; the undo stack no longer needs it.
                    let _ = engine.remove(id).await;
                }
                Err(ApplyError::GateFailed {
                    address: c.address.to_string(),
                    gate: failure.gate,
                    detail: failure.detail,
                    report: format!(
                        "last output of the failed container:\n{}",
                        indent(logs.trim_end())
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::docker::ContainerState;

    #[test]
    fn a_container_restarted_by_its_policy_is_not_running_for_the_gate() {
        let up = ContainerState {
            running: true,
            ..Default::default()
        };
        assert!(running(&up).is_ok());
        let restarted = ContainerState {
            restart_count: 2,
            exit_code: 3,
            ..up.clone()
        };
        assert_eq!(running(&restarted), Err(NotRunning::Restarted(2)));
        assert_eq!(
            running(&ContainerState::default()),
            Err(NotRunning::Stopped(0))
        );
    }

    #[test]
    fn a_pod_stays_up_its_min_uptime_and_half_a_second_without_a_probe() {
        let pods = crate::spec::load::parse(
            "version: 1\nproject: p\npods:\n  bare: { image: a }\n  long: { image: a, health: { min_uptime: 3s } }\n  probed: { image: a, health: { cmd: [true] } }\n  both: { image: a, health: { cmd: [true], min_uptime: 2s } }\n",
        )
        .expect("spec")
        .pods;
        let of = |name: &str| min_uptime(pods.get(name).expect("pod"));
        assert_eq!(of("bare"), Duration::from_millis(500));
        assert_eq!(of("long"), Duration::from_secs(3));
        // With a probe, the probe is the gate, unless `min_uptime` asks for more.
        assert_eq!(of("probed"), Duration::ZERO);
        assert_eq!(of("both"), Duration::from_secs(2));
    }

    #[test]
    fn a_gates_wait_is_bounded_whatever_its_health_allows() {
        let max = Duration::from_secs(3600);
        let t = |interval_ms: u64, retries: u32| Timing {
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_secs(5),
        };
        // start_period + (retries + 1) × (interval + timeout) + 2 s.
        assert_eq!(
            t(2000, 9).budget(max),
            (Duration::from_secs(5 + 10 * 3 + 2), false)
        );
        // Four billion retries: capped, not for ever.
        assert_eq!(t(100, u32::MAX).budget(max), (max, true));
        // Values that overflow a Duration are capped, not a panic.
        let huge = Timing {
            interval: Duration::from_secs(u64::MAX / 2),
            ..t(0, u32::MAX)
        };
        assert_eq!(huge.budget(max), (max, true));
        let f = timed_out(max, true, &huge);
        assert!(f.detail.contains("not healthy within 1h"), "{}", f.detail);
        assert!(f.detail.contains("would allow for ever"), "{}", f.detail);
    }

    fn check(yaml: &str) -> crate::spec::HttpCheck {
        serde_saphyr::from_str(yaml).expect("check")
    }

    fn response(status: u16, body: &str, latency_ms: u64) -> Response {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-testapp-version", "v1".parse().unwrap());
        Response {
            status,
            headers,
            body: Bytes::from(body.to_owned()),
            latency: Duration::from_millis(latency_ms),
        }
    }

    /// A check's verdict as the user reads it.
    fn why(r: Result<(), CheckFailed>) -> Result<(), String> {
        r.map_err(|e| e.to_string())
    }

    #[test]
    fn checks_judge_status_json_headers_and_latency() {
        let jwks = check(
            "port: 8000\npath: /jwks\nexpect_status: 200\nexpect_json: { pointer: /keys, non_empty: true }\nmax_latency: 200ms\nexpect_headers: [x-testapp-version]\n",
        );
        assert_eq!(
            why(verify(
                &jwks,
                &response(200, r#"{"keys":[{"kid":"a"}]}"#, 5)
            )),
            Ok(())
        );
        assert_eq!(
            why(verify(&jwks, &response(200, r#"{"keys":[]}"#, 5))),
            Err("`/keys` is empty".into())
        );
        assert!(
            why(verify(&jwks, &response(503, "", 5)))
                .unwrap_err()
                .contains("503")
        );
        assert!(
            why(verify(&jwks, &response(200, r#"{"keys":[1]}"#, 900)))
                .unwrap_err()
                .contains("took")
        );
        assert!(
            why(verify(&jwks, &response(200, "not json", 5)))
                .unwrap_err()
                .contains("JSON")
        );
        let equals = check("port: 1\nexpect_json: { pointer: /ok, equals: true }\n");
        assert_eq!(
            why(verify(&equals, &response(200, r#"{"ok":true}"#, 1))),
            Ok(())
        );
        assert!(why(verify(&equals, &response(200, r#"{"ok":false}"#, 1))).is_err());
        let header = check("port: 1\nexpect_headers: [x-missing]\n");
        assert!(
            why(verify(&header, &response(204, "", 1)))
                .unwrap_err()
                .contains("x-missing")
        );
    }
}
