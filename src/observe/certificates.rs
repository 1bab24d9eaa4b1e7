//! The proxy's TLS certificates, read on this machine like every secret: each listener's
//! certificate and key decrypted, and checked (`secrets::tls`): the key belongs to the
//! certificate, it is valid now, and it covers every host the routes name. A problem is the
//! pre-flight's (`apply` refuses, `plan` warns); a certificate that expires within
//! [`WARN_DAYS`] days is a warning for both, so that it is renewed in time.

use std::time::SystemTime;

use crate::diag::Diagnostic;
use crate::secrets::files::Inspection;
use crate::secrets::tls::{self, TlsError};
use crate::spec::Spec;

/// Days before its expiry from which a certificate is warned about.
pub const WARN_DAYS: i64 = 21;

/// Checks each TLS listener's certificate and key: problems into `secrets.problems`,
/// warnings into `secrets.notices`. Nothing without an identity (the secrets' own problems
/// say why) or for a secret that could not be read.
pub fn check(spec: &Spec, secrets: &mut Inspection, now: SystemTime) {
    let Some(proxy) = &spec.proxy else { return };
    let Some(identity) = secrets.identity.as_ref() else {
        return;
    };
    let hosts: Vec<&str> = proxy
        .routes
        .iter()
        .filter_map(|r| r.value.host.as_ref())
        .map(|h| h.value.as_str())
        .filter(|h| !h.starts_with("*."))
        .collect();
    let mut problems = Vec::new();
    let mut notices = Vec::new();
    for t in &proxy.tls {
        let listener = &t.value;
        let read = |name: &str| {
            let f = secrets.files.get(name).filter(|f| f.usable)?;
            identity.decrypt(&f.ciphertext).ok()
        };
        let (Some(cert), Some(key)) = (read(&listener.cert.value), read(&listener.key.value))
        else {
            continue; // unreadable: its own problem already
        };
        let at = |d: Diagnostic, label: &str| d.at(listener.cert.span, label.to_owned());
        match tls::check(cert.expose(), key.expose(), &hosts, now) {
            Ok(facts) => {
                let days = tls::days_left(&facts, now);
                if days < WARN_DAYS {
                    notices.push(
                        at(
                            Diagnostic::warning(
                                "proxy::certificate-expires",
                                format!(
                                    "the certificate `{}` of port {} expires in {days} day(s), on {}",
                                    listener.cert.value,
                                    listener.port.value,
                                    crate::clock::format_time(
                                        facts
                                            .not_after
                                            .duration_since(std::time::UNIX_EPOCH)
                                            .map_or(0, |d| d.as_secs())
                                    )
                                ),
                            ),
                            "expires soon",
                        )
                        .help(format!(
                            "renew it and `berth secrets set {}` (then apply) before it expires: apply refuses an expired one",
                            listener.cert.value
                        )),
                    );
                }
            }
            Err(e) => problems.push(
                at(
                    Diagnostic::error(
                        "proxy::certificate",
                        format!(
                            "the certificate `{}` (key `{}`) of port {}: {e}",
                            listener.cert.value, listener.key.value, listener.port.value
                        ),
                    ),
                    label(&e),
                )
                .help(help(&e, &listener.cert.value)),
            ),
        }
    }
    secrets.problems.extend(problems);
    secrets.notices.extend(notices);
}

fn label(e: &TlsError) -> &'static str {
    match e {
        TlsError::Expired { .. } => "expired",
        TlsError::NotYetValid { .. } => "not valid yet",
        TlsError::KeyMismatch => "another key's certificate",
        TlsError::NotCovering { .. } => "does not cover the routes' hosts",
        _ => "not a usable certificate and key",
    }
}

fn help(e: &TlsError, cert: &str) -> String {
    match e {
        TlsError::NotCovering { host, .. } => format!(
            "get a certificate that names `{host}` (or a wildcard over it), and `berth secrets set {cert}`"
        ),
        TlsError::KeyMismatch => {
            "put the certificate and the key of one pair in the two secrets".to_owned()
        }
        _ => format!("renew the certificate and `berth secrets set {cert}`; nothing was changed"),
    }
}
