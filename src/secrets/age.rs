//! The one place berth speaks age: identities, recipients, encryption and decryption.
//! Secrets and backups both go through it, so a file berth writes is a standard age file
//! (`age -d -i KEY FILE` reads it) and a file the `age` CLI wrote is one berth reads.
//!
//! Recipients are `age1...` (X25519) or `ssh-ed25519 ...` / `ssh-rsa ...` public keys;
//! identities are age identity files (`AGE-SECRET-KEY-1...` lines, as `age-keygen`
//! writes) or unencrypted OpenSSH private keys. Armored (PEM-like) files are read
//! wherever binary ones are; berth writes binary unless asked for armor.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::Plaintext;

/// Why an age operation failed. Messages name files and public keys, never key material
/// or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum AgeError {
    #[error("cannot read the identity `{path}`: {source}")]
    ReadIdentity {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not an age identity: {detail}")]
    BadIdentity { path: PathBuf, detail: String },
    #[error(
        "`{0}` is not an age recipient (expected `age1...`, `ssh-ed25519 ...` or `ssh-rsa ...`)"
    )]
    BadRecipient(String),
    #[error("there are no recipients to encrypt to")]
    NoRecipients,
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    #[error("{0}")]
    Decrypt(String),
}

/// A private key (or several, from one identity file) and the public recipients they
/// answer to.
pub struct Identity {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    recipients: Vec<String>,
    pub path: PathBuf,
}

impl Identity {
    /// Reads and parses an identity file. Its mode is the caller's business (checked by
    /// the pre-flight, which can say where in the spec the path comes from).
    pub fn load(path: &Path) -> Result<Identity, AgeError> {
        let text =
            Zeroizing::new(
                std::fs::read(path).map_err(|source| AgeError::ReadIdentity {
                    path: path.to_owned(),
                    source,
                })?,
            );
        Identity::parse(path, &text)
    }

    fn parse(path: &Path, text: &[u8]) -> Result<Identity, AgeError> {
        let bad = |detail: String| AgeError::BadIdentity {
            path: path.to_owned(),
            detail,
        };
        if text.starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----") {
            let key = age::ssh::Identity::from_buffer(text, Some(path.display().to_string()))
                .map_err(|e| bad(e.to_string()))?;
            if !matches!(key, age::ssh::Identity::Unencrypted(_)) {
                return Err(bad(
                    "only unencrypted OpenSSH ed25519 and RSA keys can be used (a passphrase cannot be asked for during apply)".into(),
                ));
            }
            let recipient = age::ssh::Recipient::try_from(key.clone())
                .map_err(|_| bad("its public key cannot be derived".into()))?;
            return Ok(Identity {
                keys: vec![Box::new(key)],
                recipients: vec![recipient.to_string()],
                path: path.to_owned(),
            });
        }
        let text = std::str::from_utf8(text).map_err(|_| bad("it is not text".into()))?;
        let mut keys: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
        let mut recipients = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The line number only: the line itself may be key material.
            let key: age::x25519::Identity = line.parse().map_err(|_| {
                bad(format!(
                    "line {} is not an `AGE-SECRET-KEY-1...` key",
                    n + 1
                ))
            })?;
            recipients.push(key.to_public().to_string());
            keys.push(Box::new(key));
        }
        if keys.is_empty() {
            return Err(bad("it holds no key".into()));
        }
        Ok(Identity {
            keys,
            recipients,
            path: path.to_owned(),
        })
    }

    /// A new X25519 identity, as the text of an identity file (what `age-keygen` writes),
    /// and its public recipient.
    pub fn generate() -> (Zeroizing<String>, String) {
        let key = age::x25519::Identity::generate();
        let public = key.to_public().to_string();
        let text = Zeroizing::new(format!(
            "# created by berth: the private key that decrypts this project's secrets\n# public key: {public}\n{}\n",
            key.to_string().expose_secret()
        ));
        (text, public)
    }

    /// The public recipients of this identity's keys (the first is "the" recipient).
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }

    /// Decrypts a whole age file (binary or armored) held in memory.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Plaintext, AgeError> {
        let mut reader = self.decrypting_reader(ciphertext)?;
        // Sized up front, so that growing the buffer leaves no copies of the plaintext
        // in freed memory.
        let mut out = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
        reader
            .read_to_end(&mut out)
            .map_err(|e| AgeError::Decrypt(format!("the file is damaged or truncated ({e})")))?;
        Ok(Plaintext::new(std::mem::take(&mut *out)))
    }

    /// A reader that decrypts an age file (binary or armored) as it is read: for large
    /// files (backups), with bounded memory. A damaged or truncated file fails the read.
    pub fn decrypting_reader<'a, R: Read + 'a>(
        &'a self,
        input: R,
    ) -> Result<impl Read + 'a, AgeError> {
        let decryptor =
            age::Decryptor::new_buffered(age::armor::ArmoredReader::new(BufReader::new(input)))
                .map_err(|e| decrypt_error(&e, self))?;
        if decryptor.is_scrypt() {
            return Err(AgeError::Decrypt(
                "it is encrypted with a passphrase; berth needs files encrypted to recipients"
                    .into(),
            ));
        }
        decryptor
            .decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
            .map_err(|e| decrypt_error(&e, self))
    }
}

fn decrypt_error(e: &age::DecryptError, identity: &Identity) -> AgeError {
    AgeError::Decrypt(match e {
        age::DecryptError::NoMatchingKeys => format!(
            "it is not encrypted to the identity `{}` (public key {})",
            identity.path.display(),
            identity.recipients.first().map_or("?", String::as_str)
        ),
        age::DecryptError::InvalidHeader
        | age::DecryptError::UnknownFormat
        | age::DecryptError::Io(_) => "it is not an age file (or it is damaged)".into(),
        other => format!("it cannot be decrypted ({other})"),
    })
}

/// A parsed recipient.
pub fn parse_recipient(text: &str) -> Result<Box<dyn age::Recipient + Send>, AgeError> {
    let text = text.trim();
    if let Ok(r) = text.parse::<age::x25519::Recipient>() {
        return Ok(Box::new(r));
    }
    if let Ok(r) = text.parse::<age::ssh::Recipient>() {
        return Ok(Box::new(r));
    }
    Err(AgeError::BadRecipient(text.to_owned()))
}

/// Encrypts `plaintext` to every recipient, as a binary age file or an armored one.
pub fn encrypt(
    recipients: &[String],
    plaintext: &Plaintext,
    armor: bool,
) -> Result<Vec<u8>, AgeError> {
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    let mut writer = encrypting_writer(recipients, &mut out, armor)?;
    writer
        .write_all(plaintext.expose())
        .map_err(|e| AgeError::Encrypt(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| AgeError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// A writer that encrypts what is written to it into `output`; [`AgeWriter::finish`] must
/// be called to complete the file. Streams: memory stays bounded whatever the size.
pub fn encrypting_writer<W: Write>(
    recipients: &[String],
    output: W,
    armor: bool,
) -> Result<AgeWriter<W>, AgeError> {
    if recipients.is_empty() {
        return Err(AgeError::NoRecipients);
    }
    let parsed = recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<Vec<_>, _>>()?;
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r.as_ref() as &dyn age::Recipient))
            .map_err(|e| AgeError::Encrypt(e.to_string()))?;
    let format = if armor {
        age::armor::Format::AsciiArmor
    } else {
        age::armor::Format::Binary
    };
    let armored = age::armor::ArmoredWriter::wrap_output(output, format)
        .map_err(|e| AgeError::Encrypt(e.to_string()))?;
    let inner = encryptor
        .wrap_output(armored)
        .map_err(|e| AgeError::Encrypt(e.to_string()))?;
    Ok(AgeWriter { inner })
}

/// See [`encrypting_writer`].
pub struct AgeWriter<W: Write> {
    inner: age::stream::StreamWriter<age::armor::ArmoredWriter<W>>,
}

impl<W: Write> Write for AgeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> AgeWriter<W> {
    /// Writes the last chunk (and the armor's end line); returns the output.
    pub fn finish(self) -> std::io::Result<W> {
        self.inner.finish()?.finish()
    }
}

/// Whether an age file is armored (`-----BEGIN AGE ENCRYPTED FILE-----`).
pub fn is_armored(ciphertext: &[u8]) -> bool {
    ciphertext
        .trim_ascii_start()
        .starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> (Identity, String) {
        let (text, public) = Identity::generate();
        (
            Identity::parse(Path::new("key"), text.as_bytes()).unwrap(),
            public,
        )
    }

    #[test]
    fn round_trip_binary_and_armored() {
        let (id, public) = identity();
        assert_eq!(id.recipients(), std::slice::from_ref(&public));
        for armor in [false, true] {
            let c = encrypt(
                std::slice::from_ref(&public),
                &Plaintext::new(b"s3cret".to_vec()),
                armor,
            )
            .unwrap();
            assert_eq!(is_armored(&c), armor);
            assert!(!c.windows(6).any(|w| w == b"s3cret"));
            assert_eq!(id.decrypt(&c).unwrap().expose(), b"s3cret");
        }
    }

    #[test]
    fn a_stranger_cannot_decrypt_and_is_told_whose_key_is_missing() {
        let (_, public) = identity();
        let (other, other_public) = identity();
        let c = encrypt(&[public], &Plaintext::new(b"x".to_vec()), false).unwrap();
        let e = other.decrypt(&c).err().unwrap().to_string();
        assert!(e.contains("not encrypted to the identity"), "{e}");
        assert!(e.contains(&other_public), "{e}");
    }

    #[test]
    fn bad_identity_lines_are_named_by_number_not_content() {
        let e = Identity::parse(Path::new("k"), b"# c\nAGE-SECRET-KEY-1NOPE\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains("NOPE"), "{e}");
        assert!(matches!(
            parse_recipient("age1nope"),
            Err(AgeError::BadRecipient(_))
        ));
        assert!(matches!(
            encrypt(&[], &Plaintext::new(vec![]), false),
            Err(AgeError::NoRecipients)
        ));
    }

    #[test]
    fn garbage_is_not_an_age_file() {
        let (id, _) = identity();
        let e = id.decrypt(b"hello").err().unwrap().to_string();
        assert!(e.contains("not an age file"), "{e}");
    }
}
