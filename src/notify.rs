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

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err("https is not supported yet (berth has no TLS stack)".into());
            }
            _ => return Err("it must start with `http://`".into()),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("it has no host")?
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
pub async fn post(url: &str, body: &serde_json::Value) -> Result<u16, String> {
    let t = Target::parse(url)?;
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::post(t.path.as_str())
            .header(hyper::header::HOST, t.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("berth/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(format!("it answered {status}"))
        }
    };
    tokio::time::timeout(TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
}

/// Sends, on a runtime of its own; a failure is returned as the warning to print.
pub fn send(url: &str, body: &serde_json::Value) -> Option<String> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return Some(e.to_string()),
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
                .contains("https")
        );
        assert!(Target::parse("ftp://x/y").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
