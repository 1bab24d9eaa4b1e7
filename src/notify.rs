//! Notifications: a JSON POST of an apply's outcome to a webhook (`--notify URL` or the
//! spec's `notify:`). Best effort by design: a webhook that fails or hangs (5 s) is a
//! warning, never a failed apply. The payload holds the outcome, never a secret value.
//!
//! Plain `http://` only: berth carries no TLS stack yet. An https service is reached
//! through a relay on the host or the private network.

use std::time::Duration;

use hyper::body::Bytes;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Where to POST: host, port and path of an `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Why a URL is not a webhook berth can call.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("not a URL ({0})")]
    NotAUrl(#[from] hyper::http::uri::InvalidUri),
    #[error("https is not supported yet (berth has no TLS stack)")]
    Https,
    #[error("it must start with `http://`")]
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
    #[error("{0}")]
    Connect(std::io::Error),
    /// The HTTP exchange (handshake or request) failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Request(#[from] hyper::http::Error),
    #[error("it answered {status}")]
    Status { status: u16 },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let uri: hyper::Uri = url.parse()?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(TargetError::Https),
            _ => return Err(TargetError::NotHttp),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or(TargetError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Target {
            host,
            port: uri.port_u16().unwrap_or(80),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// POSTs `body` as JSON; the status, or why it failed.
pub async fn post(url: &str, body: &serde_json::Value) -> Result<u16, PostError> {
    let t = Target::parse(url)?;
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(PostError::Connect)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::post(t.path.as_str())
            .header(hyper::header::HOST, t.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("berth/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Full::new(Bytes::from(body.to_string())))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(PostError::Status { status })
        }
    };
    tokio::time::timeout(TIMEOUT, attempt)
        .await
        .map_err(|_| PostError::Timeout(TIMEOUT))?
}

/// Sends, on a runtime of its own; a failure is returned as the warning to print.
pub fn send(url: &str, body: &serde_json::Value) -> Option<PostError> {
    let runtime = match crate::engine::runtime() {
        Ok(r) => r,
        Err(e) => return Some(PostError::Runtime(e)),
    };
    runtime.block_on(post(url, body)).err()
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
        assert!(
            Target::parse("https://hooks.slack.example/x")
                .unwrap_err()
                .to_string()
                .contains("https")
        );
        assert!(Target::parse("ftp://x/y").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
