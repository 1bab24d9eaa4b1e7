//! Secrets: age-encrypted files in the repository, decrypted only in memory.
//!
//! - [`plaintext`]: the one type that holds a decrypted value (zeroized, never printed);
//! - [`age`]: identities, recipients, encryption (shared with backups);
//! - [`files`]: the identity and the secret files on this machine (read and checked by
//!   `observe::secrets`, the pre-flight);
//! - [`value`]: the checks a decrypted value must pass;
//! - [`delivery`]: how values reach containers, in memory only;
//! - [`tls`]: TLS certificates and keys: key matching, expiry, the hosts covered.

pub mod age;
pub mod delivery;
pub mod files;
pub mod plaintext;
pub mod tls;
pub mod value;

pub use plaintext::Plaintext;
