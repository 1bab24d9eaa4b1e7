//! `nginx -t` on a config before the running proxy sees it (a throwaway container made like
//! the proxy's), what nginx says when it refuses one, and the proxy's own gate.

use std::collections::HashMap;

use bollard::models::ContainerCreateBody;

use super::super::super::container::object_name;
use super::super::super::{ApplyError, Run};
use super::proxy_name;
use crate::engine::labels;
use crate::plan::Change;
use crate::spec::Proxy;

/// nginx's complaints in its output (`[emerg]`, `[alert]` lines), without their timestamp and
/// process prefix.
fn nginx_says(output: &str) -> String {
    output
        .lines()
        .filter(|l| l.contains("[emerg]") || l.contains("[alert]"))
        .map(|l| {
            let after = l.split_once("] ").map_or(l, |(_, rest)| rest);
            // `1#1: ` (pid#tid) before the message.
            match after.split_once(": ") {
                Some((pid, rest)) if pid.contains('#') => rest.trim(),
                _ => after.trim(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// The first line of `config` holding a word nginx quotes in `message` (`unknown "x"
/// variable`, `unknown directive "x"`): for messages that name no line.
fn quoted_line(config: &str, message: &str) -> Option<(usize, String)> {
    let words: Vec<&str> = message
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty())
        .collect();
    config.lines().enumerate().find_map(|(i, line)| {
        words
            .iter()
            .any(|w| line.contains(w))
            .then(|| (i + 1, line.trim().to_owned()))
    })
}

/// Why a config never reached the running proxy: `nginx -t` refused it.
#[derive(Debug, thiserror::Error)]
#[error("nginx refuses the rendered config: {message}{}", line.as_ref().map(|(n, l)| format!("\n  line {n} of the rendered config: {}", l.trim())).unwrap_or_default())]
pub struct Refused {
    /// nginx's own words.
    pub message: String,
    /// The rendered line nginx points at.
    pub line: Option<(usize, String)>,
}

/// The response headers the proxy sends on every answer of a plain listener (HSTS only on
/// TLS listeners), lower-cased.
fn expected_headers(proxy: &Proxy) -> Vec<String> {
    crate::proxy::headers::merged(proxy)
        .into_iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|name| !name.eq_ignore_ascii_case(crate::proxy::headers::HSTS))
        .collect()
}

/// How long the proxy's gate waits for its health endpoint to answer with the new config.
const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long `nginx -t` may take.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Run<'_> {
    /// `nginx -t` on `text` in a throwaway container made like the proxy's (same image,
    /// network and mounts, no ports), removed afterwards.
    pub(in crate::apply) async fn check_config(
        &self,
        c: &Change,
        region: &str,
        body: &ContainerCreateBody,
        text: &str,
    ) -> Result<(), ApplyError> {
        let engine = self.engine(region);
        let mut check = body.clone();
        check.cmd = Some(
            ["nginx", "-t", "-c", crate::proxy::CONFIG_PATH]
                .map(str::to_owned)
                .to_vec(),
        );
        check.exposed_ports = None;
        if let Some(h) = check.host_config.as_mut() {
            h.port_bindings = None;
            h.restart_policy = None;
        }
        check.labels = Some(HashMap::from([
            (labels::PROJECT.to_owned(), self.project.to_owned()),
            (labels::HELPER.to_owned(), "proxy-check".to_owned()),
        ]));
        if let Some(n) = check.networking_config.as_mut()
            && let Some(e) = n.endpoints_config.as_mut()
        {
            for settings in e.values_mut() {
                settings.aliases = None;
            }
        }
        // A name of its own each time (one left by a killed apply is swept by its label).
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!(
            "{}-check-{}",
            proxy_name(self.project),
            &crate::encode::sha256_hex(format!("{nonce}{text}").as_bytes())[..12]
        );
        let id = engine.create_container(&name, check).await?;
        let verdict = async {
            engine
                .put_file(&id, crate::proxy::CONFIG_PATH, text.as_bytes(), 0o644)
                .await?;
            engine.start(&id).await?;
            let code = engine.wait_exit(&id, CHECK_WAIT).await?;
            let output = engine.log_tail(&id, 40).await;
            Ok::<_, ApplyError>((code, output))
        }
        .await;
        let _ = engine.remove(&id).await;
        let (code, output) = verdict?;
        if code == Some(0) {
            return Ok(());
        }
        let message = nginx_says(&output);
        let message = if message.is_empty() {
            match code {
                None => format!("`nginx -t` did not finish within {CHECK_WAIT:?}"),
                Some(code) => format!("`nginx -t` exited with {code}: {}", output.trim()),
            }
        } else {
            message
        };
        let line = crate::proxy::line_of(text, &message).or_else(|| quoted_line(text, &message));
        Err(ApplyError::ProxyRefused {
            address: c.address.to_string(),
            reason: Refused { message, line },
        })
    }

    /// Waits until the proxy answers its health endpoint with `text`'s token, and checks the
    /// security headers on that answer.
    pub(in crate::apply) async fn proxy_gate(
        &self,
        c: &Change,
        region: &str,
        id: &str,
        text: &str,
        check_headers: bool,
        same: bool,
    ) -> Result<(), ApplyError> {
        let proxy = self.proxy_spec(c)?;
        let engine = self.engine(region);
        let network = object_name(self.project, "default");
        // A plain listener answers the health endpoint (with `redirect_http` too); only a
        // proxy with no plain listener is asked over TLS's port, where berth (no TLS
        // client) sees the running container and its config only.
        let plain = proxy
            .listen
            .iter()
            .copied()
            .find(|p| proxy.tls_of(*p).is_none());
        let want = crate::proxy::token(text).unwrap_or_default().to_owned();
        let deadline = tokio::time::Instant::now() + GATE_WAIT;
        let fail = |detail: String| ApplyError::GateFailed {
            address: c.address.to_string(),
            gate: "proxy health".into(),
            detail,
            report: String::new(),
        };
        let mut last = String::from("no answer yet");
        // What nginx says from now on (to the second): a reload it refuses is logged.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let refused = || async {
            let log = engine.log_since(id, since, 500).await;
            let emerg: String = log
                .lines()
                .filter(|l| l.contains("[emerg]"))
                .map(|l| format!("{l}\n"))
                .collect();
            let said = nginx_says(&emerg);
            (!said.is_empty())
                .then(|| fail(format!("the running proxy refused the new config: {said}")))
        };
        let mut tries = 0u32;
        loop {
            tries += 1;
            if tries.is_multiple_of(10)
                && let Some(e) = refused().await
            {
                return Err(e);
            }
            if self.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ApplyError::Interrupted {
                    report: String::new(),
                });
            }
            let state = engine.state(id).await?;
            if !state.running {
                let logs = engine.log_tail(id, 20).await;
                return Err(fail(format!(
                    "the proxy is not running (exit code {}): {}",
                    state.exit_code,
                    logs.trim()
                )));
            }
            let Some(port) = plain.filter(|_| !same) else {
                // No plain listener to ask, or the same config (and token) as before: what
                // nginx said after the reload tells.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                return match refused().await {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            };
            if let Some(ip) = state.addresses.get(&network) {
                let timeout = std::time::Duration::from_secs(2);
                match crate::apply::gate::get(
                    engine,
                    ip,
                    (port, crate::proxy::HEALTH_PATH, crate::spec::Scheme::Http),
                    timeout,
                )
                .await
                {
                    Ok(r)
                        if r.status == 200 && String::from_utf8_lossy(&r.body).contains(&want) =>
                    {
                        let missing: Vec<String> = expected_headers(proxy)
                            .into_iter()
                            .filter(|h| check_headers && !r.headers.contains_key(h.as_str()))
                            .collect();
                        if missing.is_empty() {
                            return Ok(());
                        }
                        return Err(fail(format!(
                            "the proxy's answer lacks the security header(s) {}",
                            missing.join(", ")
                        )));
                    }
                    Ok(r) => {
                        last = format!("{} {}", r.status, String::from_utf8_lossy(&r.body).trim())
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(format!(
                    "{} did not answer with the new config (token {want}) within {GATE_WAIT:?}; last answer: {last}",
                    crate::proxy::HEALTH_PATH
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_is_quoted_without_its_prefix_and_pointed_at_the_rendered_line() {
        let out = "2026/11/30 20:40:44 [emerg] 1#1: unknown \"no_such_variable\" variable\nnginx: configuration file /etc/berth/nginx.conf test failed\n";
        let said = nginx_says(out);
        assert_eq!(said, "unknown \"no_such_variable\" variable");
        let config = "http {\n    add_header X-Bad \"$no_such_variable\" always;\n}\n";
        assert_eq!(
            quoted_line(config, &said),
            Some((
                2,
                "add_header X-Bad \"$no_such_variable\" always;".to_owned()
            ))
        );
    }
}
