//! Post-deploy checks: HTTP requests against a container whose answers must meet the
//! pod's `checks` (status, headers, JSON, latency). Apply runs them after the health gate;
//! `berth check` runs them against what is running now.

use std::time::Duration;

use super::gate::{GateFailure, Response, fail, get};
use crate::engine::Engine;
use crate::spec::Pod;

/// Time allowed for one post-deploy check request.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the pod's post-deploy `checks` once each, in order; the first that fails is the
/// gate's verdict.
pub async fn checks(
    engine: &Engine,
    id: &str,
    network: &str,
    pod: &Pod,
) -> Result<(), GateFailure> {
    if pod.checks.is_empty() {
        return Ok(());
    }
    let state = engine
        .state(id)
        .await
        .map_err(|e| fail("checks", e.to_string()))?;
    let Some(ip) = state.addresses.get(network) else {
        return Err(fail(
            "checks",
            format!("the container has no address on `{network}`"),
        ));
    };
    for check in &pod.checks {
        let http = &check.value.http;
        run_check(engine, ip, http)
            .await
            .map_err(|why| fail(&check_name(http), why))?;
    }
    Ok(())
}

/// How a post-deploy check is named in messages: `check GET :8080/path`.
pub fn check_name(http: &crate::spec::HttpCheck) -> String {
    format!("check GET :{}{}", http.port.value, http.path)
}

/// One post-deploy check against the container at `ip`: why it fails, if it does.
pub async fn run_check(
    engine: &Engine,
    ip: &str,
    http: &crate::spec::HttpCheck,
) -> Result<(), String> {
    let timeout = http
        .max_latency
        .as_ref()
        .and_then(|l| l.get())
        .map_or(CHECK_TIMEOUT, |l| l.max(CHECK_TIMEOUT));
    let r = get(
        engine,
        ip,
        (http.port.value, &http.path, http.scheme),
        timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    verify(http, &r).map_err(|why| why.to_string())
}

/// Why a response fails an HTTP check (said after the check's name).
#[derive(Debug, thiserror::Error)]
pub enum CheckFailed {
    #[error("answered {got} (expected {expected})")]
    Status { got: u16, expected: u16 },
    #[error("answered {got} (expected 2xx)")]
    NotSuccess { got: u16 },
    #[error("took {took:?} (at most {max:?})")]
    Slow { took: Duration, max: Duration },
    #[error("has no `{header}` header")]
    NoHeader { header: String },
    #[error("did not answer JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    #[error("has nothing at `{pointer}`")]
    NoValue { pointer: String },
    #[error("`{pointer}` is empty")]
    Empty { pointer: String },
    #[error("`{pointer}` is {value}, not {expected}")]
    NotEqual {
        pointer: String,
        value: serde_json::Value,
        expected: serde_json::Value,
    },
}

/// Whether a response passes one check; why not.
pub fn verify(http: &crate::spec::HttpCheck, r: &Response) -> Result<(), CheckFailed> {
    match http.expect_status {
        Some(expected) if r.status != expected => {
            return Err(CheckFailed::Status {
                got: r.status,
                expected,
            });
        }
        None if !(200..300).contains(&r.status) => {
            return Err(CheckFailed::NotSuccess { got: r.status });
        }
        _ => {}
    }
    if let Some(max) = http.max_latency.as_ref().and_then(|l| l.get())
        && r.latency > max
    {
        return Err(CheckFailed::Slow {
            took: r.latency,
            max,
        });
    }
    for h in &http.expect_headers {
        if !r.headers.contains_key(h.as_str()) {
            return Err(CheckFailed::NoHeader { header: h.clone() });
        }
    }
    if let Some(j) = &http.expect_json {
        let doc: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(CheckFailed::NotJson)?;
        let pointer = || j.pointer.value.clone();
        let Some(value) = doc.pointer(&j.pointer.value) else {
            return Err(CheckFailed::NoValue { pointer: pointer() });
        };
        if j.non_empty {
            let empty = match value {
                serde_json::Value::Array(a) => a.is_empty(),
                serde_json::Value::Object(o) => o.is_empty(),
                serde_json::Value::String(s) => s.is_empty(),
                serde_json::Value::Null => true,
                _ => false,
            };
            if empty {
                return Err(CheckFailed::Empty { pointer: pointer() });
            }
        }
        if let Some(expected) = &j.equals
            && value != expected
        {
            return Err(CheckFailed::NotEqual {
                pointer: pointer(),
                value: value.clone(),
                expected: expected.clone(),
            });
        }
    }
    Ok(())
}
