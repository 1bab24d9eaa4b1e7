//! Secrets: age-encrypted files in the repository, decrypted only in memory.
//!
//! This module owns the type that holds plaintext ([`Plaintext`]). Decryption, delivery and
//! rotation build on it (see DESIGN.md, "Secrets").

pub mod detect;
pub mod plaintext;

pub use plaintext::Plaintext;
