//! Notifications: the outcome of an apply POSTed to a webhook (`--notify URL` or the spec's
//! `notify:`), as JSON, or as a Slack message (`notify: { slack: URL }`). Best effort by
//! design: a webhook that fails or hangs is a warning, never a failed apply. The payload
//! holds the outcome, never a secret value.
//!
//! `http://` and `https://`, through hyper-util's client with rustls, trusting the
//! system's roots (and `SSL_CERT_FILE` / `SSL_CERT_DIR`, as OpenSSL does). Each attempt
//! has 5 s; a failure that may pass without posting twice (no connection, a 5xx or 429
//! answer) is tried again, 3 attempts in all, so a notification never holds berth more
//! than 20 s.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;

const TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 3;
const PAUSE: Duration = Duration::from_millis(500);

/// Where to POST: host, port and path of an `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// What a webhook is sent: berth's JSON, or a Slack message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Slack,
}

/// A webhook and what it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub url: String,
    pub format: Format,
}

/// Why a URL is not a webhook berth can call.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("not a URL ({0})")]
    NotAUrl(#[from] hyper::http::uri::InvalidUri),
    #[error("it must start with `http://` or `https://`")]
    NotHttp,
    #[error("it has no host")]
    NoHost,
}

/// Why a notification was not delivered (a warning: the apply's outcome stands).
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error(transparent)]
    Target(#[from] TargetError),
    /// No runtime to send it on.
    #[error("{0}")]
    Runtime(std::io::Error),
    /// No TLS configuration (no usable root certificate on this machine).
    #[error("{0}")]
    Tls(String),
    /// The connection or the HTTP exchange failed.
    #[error("{0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("{0}")]
    Request(#[from] hyper::http::Error),
    #[error("it answered {status}")]
    Status { status: u16 },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl PostError {
    /// Whether another attempt may go through, and cannot post the message twice: the
    /// connection was not made, or the webhook said it could not take it now. (A request
    /// sent and not answered in time may have been taken: it is not sent again.)
    fn passing(&self) -> bool {
        match self {
            PostError::Send(e) => e.is_connect(),
            PostError::Status { status } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let uri: hyper::Uri = url.parse()?;
        let port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => return Err(TargetError::NotHttp),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or(TargetError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Target {
            host,
            port: uri.port_u16().unwrap_or(port),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// A client for `http://` and `https://`, trusting the system's roots (needed for
/// `https` only: a plain `http` webhook works on a host without any).
fn client(https: bool) -> Result<Client, PostError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if https && roots.is_empty() {
        return Err(PostError::Tls(
            "no root certificate on this machine (install ca-certificates, or set SSL_CERT_FILE)"
                .into(),
        ));
    }
    // ring, as for the engines' TLS (see engine::docker::transport).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PostError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// POSTs `body` as JSON, tried again while a failure may pass; the status, or why the
/// last attempt failed.
pub async fn post(url: &str, body: &serde_json::Value) -> Result<u16, PostError> {
    Target::parse(url)?;
    let client = client(url.starts_with("https://"))?;
    let mut attempt = 1;
    loop {
        let result = tokio::time::timeout(TIMEOUT, once(&client, url, body))
            .await
            .unwrap_or(Err(PostError::Timeout(TIMEOUT)));
        match result {
            Err(e) if e.passing() && attempt < ATTEMPTS => {
                tokio::time::sleep(PAUSE * attempt).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

async fn once(client: &Client, url: &str, body: &serde_json::Value) -> Result<u16, PostError> {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("berth/", env!("CARGO_PKG_VERSION")),
        )
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(PostError::Status { status })
    }
}

/// A Slack message (`text`, in Slack's markup) saying what berth's JSON `body` says.
pub fn slack_message(body: &serde_json::Value) -> serde_json::Value {
    let text = |k: &str| body[k].as_str().unwrap_or("?").to_owned();
    let outcome = text("outcome");
    let mark = match outcome.as_str() {
        "applied" | "no_changes" | "passed" => ":white_check_mark:",
        "cancelled" => ":grey_question:",
        _ => ":x:",
    };
    let mut line = format!(
        "{mark} `{}` of *{}* on `{}`: *{}*",
        text("command"),
        text("project"),
        text("host"),
        outcome.replace('_', " ")
    );
    if let Some(r) = body["revision"].as_u64() {
        line.push_str(&format!(", revision {r}"));
    }
    if body["event"] == "berth.drill" {
        // A restore drill: the backup, and the measured restore time.
        if let Some(id) = body["id"].as_str() {
            line.push_str(&format!(" (backup {id}"));
            if let Some(s) = body["restore_seconds"].as_f64() {
                line.push_str(&format!(", restored in {s:.1} s"));
            }
            line.push(')');
        }
        if let Some(e) = body["error"].as_str() {
            line.push_str(&format!("\n>{}", e.replace('\n', "\n>")));
        }
        return serde_json::json!({ "text": line });
    }
    let c = &body["changes"];
    let count = |k: &str| c[k].as_u64().unwrap_or(0);
    line.push_str(&format!(
        " ({} to create, {} to update, {} to replace, {} to delete, {} to heal)",
        count("create"),
        count("update"),
        count("replace"),
        count("delete"),
        count("heal")
    ));
    if let Some(ms) = body["duration_ms"].as_u64() {
        line.push_str(&format!(" in {:.1} s", ms as f64 / 1000.0));
    }
    if let Some(e) = body["error"].as_str() {
        line.push_str(&format!("\n>{}", e.replace('\n', "\n>")));
    }
    serde_json::json!({ "text": line })
}

/// Sends, on a runtime of its own; a failure is returned as the warning to print.
pub fn send(hook: &Hook, body: &serde_json::Value) -> Option<PostError> {
    let runtime = match crate::engine::runtime() {
        Ok(r) => r,
        Err(e) => return Some(PostError::Runtime(e)),
    };
    let payload = match hook.format {
        Format::Json => body.clone(),
        Format::Slack => slack_message(body),
    };
    runtime.block_on(post(&hook.url, &payload)).err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Target::parse("http://hooks.internal:9000/berth?x=1").unwrap(),
            Target {
                host: "hooks.internal".into(),
                port: 9000,
                path: "/berth?x=1".into()
            }
        );
        assert_eq!(Target::parse("http://127.0.0.1").unwrap().path, "/");
        assert_eq!(Target::parse("https://hooks.internal/x").unwrap().port, 443);
        assert!(Target::parse("ftp://x/y").is_err());
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn a_slack_message_says_the_outcome_in_one_line() {
        let body = serde_json::json!({
            "event": "berth.apply", "project": "shop", "command": "berth apply",
            "host": "web1", "outcome": "rolled_back", "revision": null,
            "changes": { "create": 1, "update": 0, "replace": 2, "delete": 0, "heal": 0 },
            "duration_ms": 12345, "error": "`pod.api` failed its `healthy` gate",
        });
        assert_eq!(
            slack_message(&body)["text"],
            ":x: `berth apply` of *shop* on `web1`: *rolled back* (1 to create, 0 to update, 2 to replace, 0 to delete, 0 to heal) in 12.3 s\n>`pod.api` failed its `healthy` gate"
        );
    }

    #[test]
    fn a_drill_reads_as_one_slack_line_with_its_backup_and_restore_time() {
        let body = serde_json::json!({
            "event": "berth.drill", "command": "berth backup drill db", "project": "shop",
            "host": "db1", "outcome": "passed", "id": "20261207T040000.000Z-abcdef",
            "restore_seconds": 41.73,
        });
        let text = slack_message(&body)["text"].as_str().unwrap().to_owned();
        assert_eq!(
            text,
            ":white_check_mark: `berth backup drill db` of *shop* on `db1`: *passed* (backup 20261207T040000.000Z-abcdef, restored in 41.7 s)"
        );
        let failed = serde_json::json!({
            "event": "berth.drill", "command": "berth backup drill db", "project": "shop",
            "host": "db1", "outcome": "failed", "error": "the check\nfailed",
        });
        let text = slack_message(&failed)["text"].as_str().unwrap().to_owned();
        assert!(text.starts_with(":x: `berth backup drill db`"), "{text}");
        assert!(text.ends_with(">the check\n>failed"), "{text}");
        assert!(!text.contains("to create"), "{text}");
    }
}
