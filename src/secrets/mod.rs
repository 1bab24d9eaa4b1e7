//! Secrets: age-encrypted files in the repository, decrypted only in memory.
//!
//! - [`plaintext`]: the one type that holds a decrypted value (zeroized, never printed);
//! - [`age`]: identities, recipients, encryption (shared with backups);
//! - [`files`]: the identity and the secret files on this machine, and the pre-flight;
//! - [`value`]: the checks a decrypted value must pass;
//! - [`delivery`]: how values reach containers, in memory only.

pub mod age;
pub mod delivery;
pub mod files;
pub mod plaintext;
pub mod value;

pub use plaintext::Plaintext;
