//! TLS certificates and keys, for the proxy's pre-flight: the key belongs to the certificate,
//! the certificate is in its validity period and covers the route's hosts, and how many days
//! it has left (for `plan`'s warning).
//!
//! Certificates are parsed with `x509-cert` (RustCrypto), keys with `pkcs8`, `sec1` and
//! `pkcs1`; an ECDSA key's public point is derived with `p256`/`p384` and an RSA key's
//! modulus and exponent are read from it, then compared with the certificate's
//! SubjectPublicKeyInfo. Only the PEM framing (BEGIN/END lines around base64) is read here.
//!
//! The key is secret material: its decoded bytes are zeroized when dropped, and no error
//! message or `Debug` output holds any part of it (only PEM labels and what kind of problem).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64ct::{Base64, Encoding};
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use zeroize::Zeroizing;

/// rsaEncryption (PKCS #1).
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey (RFC 5480).
const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// The named curve P-256 (prime256v1, secp256r1).
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// The named curve P-384 (secp384r1).
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// Ed25519 (RFC 8410).
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// RSASSA-PSS keys (RFC 4055).
const RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// The subject's common name (CN).
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

const SECONDS_PER_DAY: i128 = 86_400;

/// What berth needs to know of a certificate, read from its PEM (the first certificate of the
/// chain is the leaf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// The last moment the leaf is valid (inclusive).
    pub not_after: SystemTime,
    /// The leaf's DNS names (and IP addresses) from its subjectAltName, lower case; its
    /// subject's common name(s) only when it has no such name.
    pub names: Vec<String>,
}

/// Which input a PEM problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Certificate,
    Key,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Certificate => "certificate",
            Part::Key => "key",
        })
    }
}

/// Why a certificate or key cannot be used. No message holds key material: at most PEM
/// labels, the kind of a problem, names and dates from the (public) certificate.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TlsError {
    #[error("the {0} is not PEM: {1}")]
    #[diagnostic(
        code(berth::tls::not_pem),
        help(
            "give the PEM text: the certificate chain as `-----BEGIN CERTIFICATE-----` blocks, \
             the server's own certificate first; the key as one `-----BEGIN PRIVATE KEY-----` \
             (or `EC PRIVATE KEY`, `RSA PRIVATE KEY`) block (`openssl x509 -inform der` and \
             `openssl pkey -inform der` convert DER files)"
        )
    )]
    NotPem(Part, String),
    #[error("the certificate cannot be read: {0}")]
    #[diagnostic(
        code(berth::tls::not_a_certificate),
        help(
            "the certificate secret must hold the chain as `-----BEGIN CERTIFICATE-----` \
             blocks, the server's own certificate first (the `fullchain.pem` of ACME clients)"
        )
    )]
    NotACertificate(String),
    #[error("the key cannot be read: {0}")]
    #[diagnostic(
        code(berth::tls::not_a_key),
        help(
            "the key secret must hold the unencrypted private key as PEM \
             (`-----BEGIN PRIVATE KEY-----`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`); \
             `openssl pkey -in KEY -out KEY.pem` removes a passphrase (the age secret protects it)"
        )
    )]
    NotAKey(String),
    #[error("the key does not belong to the certificate")]
    #[diagnostic(
        code(berth::tls::key_mismatch),
        help(
            "the key must be the one the first certificate of the chain was issued for: check \
             that the two secrets come from the same issuance (`openssl x509 -noout -pubkey` and \
             `openssl pkey -pubout` print the same public key) and that the chain starts with \
             the server's own certificate, not its CA"
        )
    )]
    KeyMismatch,
    #[error("the certificate's key type ({0}) is not supported")]
    #[diagnostic(
        code(berth::tls::unsupported_key),
        help("berth checks RSA and ECDSA (P-256, P-384) certificates: issue one of those")
    )]
    UnsupportedKey(String),
    #[error("the certificate expired on {not_after}")]
    #[diagnostic(
        code(berth::tls::expired),
        help("renew the certificate and re-encrypt the certificate (and key) secrets")
    )]
    Expired { not_after: String },
    #[error("the certificate is not valid before {not_before}")]
    #[diagnostic(
        code(berth::tls::not_yet_valid),
        help("check this machine's clock, or wait until the certificate is valid")
    )]
    NotYetValid { not_before: String },
    #[error("the certificate does not cover `{host}`: it names {}", listed(names))]
    #[diagnostic(
        code(berth::tls::not_covering),
        help(
            "issue a certificate whose subjectAltName lists the host (a `*.example.com` \
             wildcard covers exactly one label), or route the host with another certificate"
        )
    )]
    NotCovering { host: String, names: Vec<String> },
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "no host".into()
    } else {
        names.join(", ")
    }
}

/// Parses the certificate chain PEM (leaf first).
pub fn read_cert(pem: &[u8]) -> Result<CertFacts, TlsError> {
    facts(&leaf(pem)?)
}

/// The key (PEM: PKCS#8, or SEC1 EC, or PKCS#1 RSA) belongs to the certificate's leaf.
pub fn key_matches(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
    key_matches_leaf(&leaf(cert_pem)?, key_pem)
}

/// The certificate covers `host` (exact SAN, or a `*.example.com` wildcard covering ONE
/// label). Case and a trailing dot do not matter.
pub fn covers(facts: &CertFacts, host: &str) -> bool {
    let host = normalise(host);
    !host.is_empty()
        && facts
            .names
            .iter()
            .any(|name| name_covers(&normalise(name), &host))
}

/// All checks at once for the pre-flight: key matches, not expired at `now`, covers every host.
pub fn check(
    cert_pem: &[u8],
    key_pem: &[u8],
    hosts: &[&str],
    now: SystemTime,
) -> Result<CertFacts, TlsError> {
    let leaf = leaf(cert_pem)?;
    let facts = facts(&leaf)?;
    key_matches_leaf(&leaf, key_pem)?;
    let not_before = leaf.tbs_certificate.validity.not_before.to_system_time();
    if now < not_before {
        return Err(TlsError::NotYetValid {
            not_before: format_time(not_before),
        });
    }
    if now > facts.not_after {
        return Err(TlsError::Expired {
            not_after: format_time(facts.not_after),
        });
    }
    if let Some(host) = hosts.iter().find(|h| !covers(&facts, h)) {
        return Err(TlsError::NotCovering {
            host: (*host).to_string(),
            names: facts.names.clone(),
        });
    }
    Ok(facts)
}

/// Days left before `not_after` (negative when expired), for plan's 21-day warning: whole
/// days rounded down, so 0 on the last day and -1 from the moment it has expired.
pub fn days_left(facts: &CertFacts, now: SystemTime) -> i64 {
    let left = nanos(facts.not_after) - nanos(now);
    let days = left.div_euclid(SECONDS_PER_DAY * 1_000_000_000);
    i64::try_from(days).unwrap_or(if days < 0 { i64::MIN } else { i64::MAX })
}

/// Nanoseconds since the epoch, negative before it.
fn nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn format_time(t: SystemTime) -> String {
    crate::clock::format_time(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// One `-----BEGIN LABEL-----` ... `-----END LABEL-----` block, decoded (zeroized on drop:
/// it may be a key).
struct Block {
    label: String,
    der: Zeroizing<Vec<u8>>,
}

/// The PEM blocks of `pem`, in order. Text between blocks is skipped (OpenSSL writes
/// `subject=` and `Bag Attributes` lines there); a block must be well formed.
fn blocks(pem: &[u8], part: Part) -> Result<Vec<Block>, TlsError> {
    let not_pem = |why: String| TlsError::NotPem(part, why);
    let text = std::str::from_utf8(pem)
        .map_err(|_| not_pem("it is not text (a DER file? convert it to PEM)".into()))?;
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = boundary(line, "BEGIN") else {
            continue;
        };
        let mut body = Zeroizing::new(String::new());
        let mut ended = false;
        for line in lines.by_ref() {
            if let Some(end) = boundary(line, "END") {
                if end != label {
                    return Err(not_pem(format!(
                        "the `{label}` block ends with `END {end}`"
                    )));
                }
                ended = true;
                break;
            }
            let line = line.trim();
            if line.starts_with("Proc-Type:") && line.contains("ENCRYPTED") {
                return Err(TlsError::NotAKey(
                    "it is encrypted with a passphrase".into(),
                ));
            }
            if line.contains(':') {
                return Err(not_pem(format!("the `{label}` block has a header line")));
            }
            body.push_str(line);
        }
        if !ended {
            return Err(not_pem(format!(
                "the `{label}` block has no `-----END {label}-----` line"
            )));
        }
        let der = Base64::decode_vec(&body)
            .map_err(|_| not_pem(format!("the `{label}` block's body is not base64")))?;
        out.push(Block {
            label: label.to_string(),
            der: Zeroizing::new(der),
        });
    }
    if out.is_empty() {
        return Err(not_pem("it holds no `-----BEGIN ...-----` block".into()));
    }
    Ok(out)
}

/// `LABEL` of a `-----BEGIN LABEL-----` (or `END`) line.
fn boundary<'a>(line: &'a str, which: &str) -> Option<&'a str> {
    line.trim()
        .strip_prefix("-----")?
        .strip_prefix(which)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

fn labels(blocks: &[Block]) -> String {
    let labels: Vec<String> = blocks.iter().map(|b| format!("`{}`", b.label)).collect();
    labels.join(", ")
}

/// The leaf: the first certificate of the chain. Every certificate of the chain must parse
/// (nginx loads them all).
fn leaf(pem: &[u8]) -> Result<Certificate, TlsError> {
    let blocks = blocks(pem, Part::Certificate)?;
    let mut certs = blocks.iter().filter(|b| b.label == "CERTIFICATE");
    let Some(first) = certs.next() else {
        return Err(TlsError::NotACertificate(format!(
            "it holds no `CERTIFICATE` block (only {})",
            labels(&blocks)
        )));
    };
    let leaf = Certificate::from_der(&first.der)
        .map_err(|e| TlsError::NotACertificate(format!("the first certificate: {e}")))?;
    for (n, cert) in certs.enumerate() {
        Certificate::from_der(&cert.der).map_err(|e| {
            TlsError::NotACertificate(format!("certificate {} of the chain: {e}", n + 2))
        })?;
    }
    Ok(leaf)
}

fn facts(leaf: &Certificate) -> Result<CertFacts, TlsError> {
    let tbs = &leaf.tbs_certificate;
    let san = tbs
        .get::<SubjectAltName>()
        .map_err(|e| TlsError::NotACertificate(format!("its subjectAltName: {e}")))?;
    let mut names: Vec<String> = san
        .map(|(_, san)| san.0)
        .unwrap_or_default()
        .iter()
        .filter_map(|name| match name {
            GeneralName::DnsName(dns) => Some(dns.to_string().to_ascii_lowercase()),
            GeneralName::IpAddress(ip) => ip_address(ip.as_bytes()).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        names = common_names(leaf);
    }
    Ok(CertFacts {
        not_after: tbs.validity.not_after.to_system_time(),
        names,
    })
}

fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The subject's common names that are text, lower case.
fn common_names(leaf: &Certificate) -> Vec<String> {
    let text_tags = [
        Tag::Utf8String,
        Tag::PrintableString,
        Tag::Ia5String,
        Tag::TeletexString,
    ];
    leaf.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == COMMON_NAME && text_tags.contains(&atv.value.tag()))
        .filter_map(|atv| std::str::from_utf8(atv.value.value()).ok())
        .map(str::to_ascii_lowercase)
        .collect()
}

fn normalise(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// `name` (from the certificate) covers `host`, both normalised: equal, or a `*.suffix`
/// wildcard (whole leftmost label, a suffix of at least two labels) and `host` is one
/// label more than `suffix`. A wildcard never covers an IP address.
fn name_covers(name: &str, host: &str) -> bool {
    if name == host {
        return true;
    }
    let Some(suffix) = name.strip_prefix("*.") else {
        return false;
    };
    if !suffix.contains('.') || suffix.contains('*') || host.parse::<IpAddr>().is_ok() {
        return false;
    }
    match host.split_once('.') {
        Some((label, rest)) => !label.is_empty() && label != "*" && rest == suffix,
        None => false,
    }
}

/// A private key as read from its PEM: borrowed from the decoded block.
enum Key<'a> {
    Rsa(pkcs1::RsaPrivateKey<'a>),
    /// The curve, when the key names it; the secret scalar.
    Ec(Option<ObjectIdentifier>, &'a [u8]),
    /// Another algorithm, from a PKCS#8 key.
    Other,
}

/// The one private-key block of `key_pem` (an `EC PARAMETERS` block may precede it).
fn key_block(key_pem: &[u8]) -> Result<Block, TlsError> {
    let blocks = blocks(key_pem, Part::Key)?;
    if blocks.iter().any(|b| b.label == "ENCRYPTED PRIVATE KEY") {
        return Err(TlsError::NotAKey(
            "it is encrypted with a passphrase".into(),
        ));
    }
    let found = labels(&blocks);
    blocks
        .into_iter()
        .find(|b| ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"].contains(&b.label.as_str()))
        .ok_or_else(|| {
            TlsError::NotAKey(format!(
                "it holds no `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` block (only {found})"
            ))
        })
}

fn read_key(block: &Block) -> Result<Key<'_>, TlsError> {
    let bad = |what: &str| TlsError::NotAKey(format!("its `{}` block is not {what}", block.label));
    match block.label.as_str() {
        "RSA PRIVATE KEY" => pkcs1::RsaPrivateKey::from_der(&block.der)
            .map(Key::Rsa)
            .map_err(|_| bad("a PKCS#1 RSA key")),
        "EC PRIVATE KEY" => {
            let key = sec1::EcPrivateKey::from_der(&block.der).map_err(|_| bad("a SEC1 EC key"))?;
            Ok(Key::Ec(
                key.parameters.and_then(|p| p.named_curve()),
                key.private_key,
            ))
        }
        _ => {
            let info =
                pkcs8::PrivateKeyInfo::from_der(&block.der).map_err(|_| bad("a PKCS#8 key"))?;
            match info.algorithm.oid {
                RSA => pkcs1::RsaPrivateKey::from_der(info.private_key)
                    .map(Key::Rsa)
                    .map_err(|_| bad("a PKCS#8 RSA key")),
                EC => {
                    let key = sec1::EcPrivateKey::from_der(info.private_key)
                        .map_err(|_| bad("a PKCS#8 EC key"))?;
                    let curve = info
                        .algorithm
                        .parameters_oid()
                        .ok()
                        .or_else(|| key.parameters.and_then(|p| p.named_curve()));
                    Ok(Key::Ec(curve, key.private_key))
                }
                _ => Ok(Key::Other),
            }
        }
    }
}

fn key_matches_leaf(leaf: &Certificate, key_pem: &[u8]) -> Result<(), TlsError> {
    let spki = &leaf.tbs_certificate.subject_public_key_info;
    let public = spki.subject_public_key.raw_bytes();
    let block = key_block(key_pem)?;
    let key = read_key(&block)?;
    let matches = match spki.algorithm.oid {
        RSA => {
            let cert_key = pkcs1::RsaPublicKey::from_der(public)
                .map_err(|e| TlsError::NotACertificate(format!("its RSA public key: {e}")))?;
            match key {
                Key::Rsa(key) => {
                    key.modulus.as_bytes() == cert_key.modulus.as_bytes()
                        && key.public_exponent.as_bytes() == cert_key.public_exponent.as_bytes()
                }
                _ => false,
            }
        }
        EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match (key, curve) {
                (Key::Ec(key_curve, secret), Some(curve)) => {
                    key_curve.is_none_or(|k| k == curve) && ec_matches(curve, secret, public)?
                }
                (_, None) => {
                    return Err(TlsError::UnsupportedKey(
                        "ECDSA without a named curve".into(),
                    ));
                }
                _ => false,
            }
        }
        ED25519 => return Err(TlsError::UnsupportedKey("Ed25519".into())),
        RSA_PSS => return Err(TlsError::UnsupportedKey("RSASSA-PSS".into())),
        other => return Err(TlsError::UnsupportedKey(format!("OID {other}"))),
    };
    if matches {
        Ok(())
    } else {
        Err(TlsError::KeyMismatch)
    }
}

/// Whether the EC secret scalar's public point is `point` (the certificate's, SEC1-encoded).
fn ec_matches(curve: ObjectIdentifier, secret: &[u8], point: &[u8]) -> Result<bool, TlsError> {
    let not_scalar = |name: &str| TlsError::NotAKey(format!("it is not a valid {name} key"));
    let not_point =
        |name: &str| TlsError::NotACertificate(format!("its {name} public key is not valid"));
    match curve {
        P256 => {
            let secret = p256::SecretKey::from_slice(secret).map_err(|_| not_scalar("P-256"))?;
            let point = p256::PublicKey::from_sec1_bytes(point).map_err(|_| not_point("P-256"))?;
            Ok(secret.public_key() == point)
        }
        P384 => {
            let secret = p384::SecretKey::from_slice(secret).map_err(|_| not_scalar("P-384"))?;
            let point = p384::PublicKey::from_sec1_bytes(point).map_err(|_| not_point("P-384"))?;
            Ok(secret.public_key() == point)
        }
        other => Err(TlsError::UnsupportedKey(format!(
            "ECDSA on the curve with OID {other}"
        ))),
    }
}

#[cfg(test)]
mod tests;
