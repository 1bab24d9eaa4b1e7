//! Authenticated manifests. A backup is encrypted to public recipients, so anyone who
//! knows them can make a data file, hash it, and write a manifest that matches: without
//! more, that forgery verifies and restores. With `backup_key:` in the spec (a secret,
//! age-encrypted to the team like every other), each manifest carries `mac`, an
//! HMAC-SHA-256 of what it says about its backup (the id, name, project, source, format,
//! time, revision, recipients, and both sizes and hashes of its data) under a key derived
//! from that secret: only a holder of an identity that decrypts the secret can make one.
//! `verify`, `restore` and `prune` take only backups whose `mac` matches.
//!
//! The fields are framed one by one (their length, then their bytes), so that moving
//! bytes from one field to the next changes the message. `verified` is left out: it says
//! whether the read-back was done, and the read-back itself is what is trusted.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Manifest;

/// What tells a backup's manifest that berth wrote it: derived from the `backup_key`
/// secret's value.
pub struct ManifestKey(zeroize::Zeroizing<Vec<u8>>);

/// What a manifest's `mac` says about it, under the spec's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticity {
    /// Its `mac` matches: written by a holder of the key, and not changed since.
    Authentic,
    /// It has a `mac` that does not match: changed, or forged.
    Forged,
    /// It has no `mac`: taken before the spec had a `backup_key`, or forged without one.
    Unsigned,
}

impl Authenticity {
    /// Why a backup whose manifest is not authentic is not trusted, as the rest of a
    /// sentence about it (`backup ID ...`).
    pub fn why_not(&self) -> &'static str {
        match self {
            Authenticity::Forged => {
                "is not authentic: its manifest's `mac` does not match the spec's `backup_key` (forged, or changed since it was written)"
            }
            Authenticity::Unsigned => {
                "is not authenticated: its manifest has no `mac` (taken before the spec had a `backup_key`, or forged)"
            }
            Authenticity::Authentic => "is authentic",
        }
    }
}

/// The label the key is derived under (a new one, should the message ever change).
const LABEL: &[u8] = b"berth backup manifest v1";

impl ManifestKey {
    /// The key derived from the secret's value (`HMAC(value, LABEL)`): the value itself
    /// is never the key, so that it is used for one purpose only.
    pub fn from_secret(value: &[u8]) -> ManifestKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(value)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(LABEL);
        ManifestKey(zeroize::Zeroizing::new(
            mac.finalize().into_bytes().to_vec(),
        ))
    }

    fn mac(&self, m: &Manifest) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(&message(m));
        mac
    }

    /// The `mac` for a manifest (hex).
    pub fn sign(&self, m: &Manifest) -> String {
        crate::encode::hex(&self.mac(m).finalize().into_bytes())
    }

    /// Whether a manifest's `mac` matches (compared in constant time).
    pub fn check(&self, m: &Manifest) -> Authenticity {
        let Some(given) = &m.mac else {
            return Authenticity::Unsigned;
        };
        // A `mac` that is not hex decodes short, and does not match.
        if self
            .mac(m)
            .verify_slice(&crate::encode::unhex(given))
            .is_ok()
        {
            Authenticity::Authentic
        } else {
            Authenticity::Forged
        }
    }
}

/// What the `mac` covers: every field that says what the backup is and how to check it,
/// each framed by its length.
fn message(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(LABEL);
    field(&m.format_version.to_be_bytes());
    field(m.id.as_bytes());
    field(m.name.as_bytes());
    field(m.project.as_bytes());
    field(m.source.as_bytes());
    field(m.format.as_bytes());
    field(&m.created_at.to_be_bytes());
    field(&m.revision.to_be_bytes());
    field(m.berth_version.as_bytes());
    field(&(m.recipients.len() as u64).to_be_bytes());
    for r in &m.recipients {
        field(r.as_bytes());
    }
    field(&m.plain_bytes.to_be_bytes());
    field(m.plain_sha256.as_bytes());
    field(&m.stored_bytes.to_be_bytes());
    field(m.stored_sha256.as_bytes());
    field(&[u8::from(m.safety)]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format_version: super::super::MANIFEST_FORMAT,
            id: "20260101T000000.000Z-aaaaaa".into(),
            name: "data".into(),
            project: "p".into(),
            source: "volume data".into(),
            format: "tar+zstd+age".into(),
            created_at: 1_767_225_600,
            revision: 3,
            berth_version: "0.1.0".into(),
            recipients: vec!["age1a".into(), "age1b".into()],
            plain_bytes: 10_240,
            plain_sha256: "aa".repeat(32),
            stored_bytes: 400,
            stored_sha256: "bb".repeat(32),
            verified: false,
            safety: false,
            mac: None,
        }
    }

    #[test]
    fn a_signed_manifest_is_authentic_and_any_change_breaks_it() {
        let key = ManifestKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let mut m = manifest();
        assert_eq!(key.check(&m), Authenticity::Unsigned);
        m.mac = Some(key.sign(&m));
        assert_eq!(key.check(&m), Authenticity::Authentic);
        // The read-back's flag is not covered: marking it verified keeps the mac.
        m.verified = true;
        assert_eq!(key.check(&m), Authenticity::Authentic);
        // Another key (another team's, or a guess) does not make it.
        let other = ManifestKey::from_secret(b"0123456789abcdef0123456789abcdeF");
        assert_eq!(other.check(&m), Authenticity::Forged);
        // Each covered field changed alone: forged.
        let changes: Vec<fn(&mut Manifest)> = vec![
            |m| m.id.push('0'),
            |m| m.name.push('x'),
            |m| m.project.push('x'),
            |m| m.source.push('x'),
            |m| m.format = "stream+zstd+age".into(),
            |m| m.created_at += 1,
            |m| m.revision += 1,
            |m| m.berth_version.push('x'),
            |m| m.recipients.push("age1c".into()),
            |m| m.plain_bytes += 1,
            |m| m.plain_sha256 = "cc".repeat(32),
            |m| m.stored_bytes -= 1,
            |m| m.stored_sha256 = "dd".repeat(32),
            |m| m.safety = true,
            |m| m.mac = Some("not hex".into()),
        ];
        for change in changes {
            let mut changed = m.clone();
            change(&mut changed);
            assert_eq!(key.check(&changed), Authenticity::Forged, "{changed:?}");
        }
        // Bytes moved from one field to the next are a change too.
        let mut moved = m.clone();
        moved.name = "dat".into();
        moved.project = "ap".into();
        assert_eq!(key.check(&moved), Authenticity::Forged);
    }
}
