//! [`Plaintext`]: decrypted secret bytes that cannot be printed, logged or serialised.
//!
//! The type deliberately implements neither `Display`, `Debug` nor `Serialize`, so no format
//! string, log line, error or JSON document can carry a secret by accident. The bytes are
//! zeroed when the value is dropped. What may be shown is [`Plaintext::fingerprint`].
//!
//! ```compile_fail
//! let s = berth::secrets::Plaintext::new(b"hunter2".to_vec());
//! println!("{}", s); // no Display
//! ```
//!
//! ```compile_fail
//! let s = berth::secrets::Plaintext::new(b"hunter2".to_vec());
//! println!("{:?}", s); // no Debug
//! ```
//!
//! ```compile_fail
//! let s = berth::secrets::Plaintext::new(b"hunter2".to_vec());
//! serde_json::to_string(&s).unwrap(); // no Serialize
//! ```

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Decrypted secret bytes; zeroed on drop, never printable.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    pub fn new(bytes: Vec<u8>) -> Self {
        Plaintext(Zeroizing::new(bytes))
    }

    /// The bytes, for the few places that must hand them on (encryption, delivery).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `sha256:` and the first 12 hex digits of the value's SHA-256. A short or guessable
    /// value can be recovered from its hash by trying candidates, so output shows the
    /// fingerprint of the ciphertext file, not this; this is for comparisons in memory.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }
}

/// A short, stable fingerprint of bytes, for showing that something changed.
pub fn fingerprint(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("sha256:{}", crate::encode::hex(&digest[..6]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_short() {
        let p = Plaintext::new(b"correct horse battery staple".to_vec());
        assert_eq!(p.fingerprint(), p.fingerprint());
        assert_eq!(p.fingerprint().len(), "sha256:".len() + 12);
        assert!(!p.fingerprint().contains("horse"));
    }
}
