//! Recognising credentials written in plain text: the one definition of "sensitive" used by
//! the lints (to flag), the resource attributes (to hide values from plans) and diagnostic
//! rendering (to mask snippets); and the one list of well-known default credentials, refused
//! by the lints and by the checks of a decrypted secret.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Names that end in `_KEY` without naming a credential (data-structure keys).
const NON_SECRET_KEY_PREFIXES: &[&str] = &[
    "CACHE",
    "SORT",
    "IDEMPOTENCY",
    "PARTITION",
    "ROUTING",
    "PRIMARY",
    "FOREIGN",
    "LOOKUP",
    "SHARD",
    "HASH",
    "RANGE",
    "GROUP",
    "DEDUP",
    "DEDUPLICATION",
    "INDEX",
    "QUEUE",
];

/// Whether an env key names a credential: `*_KEY`, `*_TOKEN`, `*_PASSWORD`, `*_PASS`,
/// `*_PASSWD`, anything with `SECRET`, and the bare names. Public and publishable keys
/// (Stripe's `pk_live_...`) and data-structure keys (`CACHE_KEY`) are not credentials.
pub fn is_credential_key(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    if k.ends_with("_FILE") || k.contains("PUBLIC") || k.contains("PUBLISHABLE") {
        return false;
    }
    // `SECRET` as a word of the name (`CLIENT_SECRET`, `SECRET_KEY_BASE`), not `SECRETS_DIR`.
    if k.split('_').any(|w| w == "SECRET") {
        return true;
    }
    const EXACT: &[&str] = &["PASSWORD", "PASSWD", "TOKEN", "API_KEY", "APIKEY"];
    const SUFFIX: &[&str] = &["_TOKEN", "_PASSWORD", "_PASSWD", "_PASS", "_APIKEY"];
    if EXACT.contains(&k.as_str()) || SUFFIX.iter().any(|s| k.ends_with(s)) {
        return true;
    }
    match k.strip_suffix("_KEY") {
        Some(prefix) => {
            let last = prefix.rsplit('_').next().unwrap_or(prefix);
            !NON_SECRET_KEY_PREFIXES.contains(&last)
        }
        None => false,
    }
}

/// The password of `scheme://user:password@host...`, if there is one.
pub fn url_password(value: &str) -> Option<&str> {
    let (_, rest) = value.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

pub fn contains_pem(value: &str) -> bool {
    value.contains("-----BEGIN ")
}

/// An age secret key (`AGE-SECRET-KEY-1...`; bech32 is case-insensitive).
pub fn contains_age_secret_key(value: &str) -> bool {
    value.to_ascii_uppercase().contains("AGE-SECRET-KEY-1")
}

/// Well-known default credentials: refused as the whole value, in any case, by the lints and
/// by the checks of a decrypted secret. As parts of a value they are common and harmless
/// (`postgres://...`, a random string that happens to hold `admin`).
pub const FORBIDDEN_DEFAULTS: [&str; 3] = ["postgres", "admin", "password"];

/// Whether `value` is, whole and in any case, one of the [`FORBIDDEN_DEFAULTS`].
pub fn is_forbidden_default(value: &str) -> bool {
    FORBIDDEN_DEFAULTS
        .iter()
        .any(|d| d.eq_ignore_ascii_case(value))
}

/// A placeholder such as `CHANGE_ME` as a whole word of the value.
pub fn is_placeholder(value: &str) -> bool {
    value
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w.eq_ignore_ascii_case("change_me") || w.eq_ignore_ascii_case("changeme"))
}

/// Whether `value`, under `key`, must not be shown.
pub fn is_sensitive(key: &str, value: &str) -> bool {
    (is_credential_key(key) && !value.trim().is_empty()) || is_sensitive_value(value)
}

/// Whether a value alone (a command argument, say) holds a credential.
pub fn is_sensitive_value(value: &str) -> bool {
    url_password(value).is_some() || contains_pem(value) || contains_age_secret_key(value)
}

/// What a sensitive value becomes in resource attributes (and so in the labels berth puts
/// on containers): equal values give equal text, in every run, so a changed credential is
/// seen as a change; plans and diagnostics show only `(sensitive)`.
///
/// TODO-design: this is a plain domain-separated SHA-256, stable without any key, so a weak
/// value could be guessed from it by whoever reads the labels (who can read the container's
/// env anyway). Once the state directory exists, key it (HMAC) with a per-project key kept
/// there, before attributes reach state snapshots or saved plans.
pub fn conceal(value: &str) -> String {
    let digest = Sha256::digest([b"berth/v1/sensitive\0".as_slice(), value.as_bytes()].concat());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{SENSITIVE_MARK}{hex})")
}

/// The start of every concealed value.
pub const SENSITIVE_MARK: &str = "(sensitive ";

/// Spec text with credentials masked by `*` (byte for byte, whitespace kept, so every span
/// into the text still points at the same place): values under credential-like keys,
/// passwords in URLs, PEM blocks and age secret keys.
pub fn mask_source(text: &str) -> Cow<'_, str> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut offset = 0;
    let mut in_pem = false;
    let mut block_key_indent: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let indent = body.len() - body.trim_start().len();
        // Continuation of a block scalar (`KEY: |`) under a credential key.
        if let Some(key_indent) = block_key_indent {
            if body.trim().is_empty() || indent > key_indent {
                ranges.push((offset, offset + body.len()));
                offset += line.len();
                continue;
            }
            block_key_indent = None;
        }
        if in_pem || body.contains("-----BEGIN ") {
            in_pem = !body.contains("-----END ");
            ranges.push((offset, offset + body.len()));
            offset += line.len();
            continue;
        }
        for (start, end, block) in credential_values(body) {
            if block {
                block_key_indent = Some(indent);
            }
            ranges.push((offset + start, offset + end));
        }
        if let Some(p) = url_password(body)
            && let Some(at) = body.find(p)
        {
            ranges.push((offset + at, offset + at + p.len()));
        }
        let upper = body.to_ascii_uppercase();
        if let Some(at) = upper.find("AGE-SECRET-KEY-1") {
            let end = body[at..]
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .map_or(body.len(), |e| at + e);
            ranges.push((offset + at, offset + end));
        }
        offset += line.len();
    }
    if ranges.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut bytes = text.as_bytes().to_vec();
    for (start, end) in ranges {
        for b in &mut bytes[start.min(text.len())..end.min(text.len())] {
            if !b.is_ascii_whitespace() {
                *b = b'*';
            }
        }
    }
    // Masking whole bytes of a multi-byte character leaves `*`s: still valid UTF-8 only if
    // every byte was masked, so lossy conversion keeps the text valid either way.
    Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
}

/// A value that names where a credential is rather than holding it: a file path
/// (`/run/secrets/db`, `./certs/tls.key`, `secrets/app_key.age`) or a reference to a
/// variable (`${DB_PASSWORD}`). Anything else under a credential-like key is masked.
fn is_path_or_reference(value: &str) -> bool {
    let v = value.trim().trim_matches(['"', '\'']);
    if v.starts_with("${") && v.ends_with('}') && !v[2..].contains(['$', '{']) {
        return true;
    }
    let path_chars = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/~".contains(c))
    };
    if !path_chars(v) || v.contains("//") {
        return false;
    }
    let segments: Vec<&str> = v.split('/').filter(|s| !s.is_empty()).collect();
    let rooted = ["/", "./", "../", "~/"].iter().any(|p| v.starts_with(p));
    // `secrets/app_key.age`: directories and a file with an extension.
    let with_extension = segments.last().is_some_and(|last| {
        last.rsplit_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty()
                && (1..=5).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphanumeric())
        })
    });
    segments.len() >= 2 && (rooted || with_extension)
}

/// Byte ranges of the values of `KEY: value` pairs on one line whose key names a credential,
/// in block (`KEY: value`) or flow (`{ KEY: value, ... }`) style; `true` when the value is a
/// block scalar starting on the next lines.
fn credential_values(line: &str) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'#' && (i == 0 || bytes[i - 1] == b' ') {
            break; // a comment
        }
        let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let key = &line[start..i];
            if line[i..].starts_with(": ") && is_credential_key(key) {
                let vstart = i + 2;
                let rest = &line[vstart..];
                // A mapping or a list under a credential-like name (a secret's declaration,
                // `app_key: { file: ..., min_length: 32 }`) is spec, not a value: its own
                // keys are looked at one by one.
                if rest.trim_start().starts_with(['{', '[']) {
                    i = vstart;
                    continue;
                }
                let comment = rest.find(" #").unwrap_or(rest.len());
                // `${VAR}` ends at its own brace, not at the one that closes a flow mapping.
                let skip = if rest.starts_with("${") {
                    rest.find('}').map_or(0, |e| e + 1)
                } else {
                    0
                };
                let vlen = rest[skip..]
                    .find([',', '}'])
                    .map_or(rest.len(), |e| e + skip)
                    .min(comment.max(skip));
                let value = rest[..vlen].trim_end();
                let block = matches!(value.trim(), "|" | ">" | "|-" | ">-" | "|+" | ">+");
                if !block && !value.is_empty() && !is_path_or_reference(value) {
                    out.push((vstart, vstart + value.len(), false));
                } else if block {
                    out.push((vstart, vstart, true));
                }
                i = vstart + vlen;
            }
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_keys() {
        for k in [
            "STRIPE_API_KEY",
            "GITHUB_TOKEN",
            "DB_PASSWORD",
            "PASSWORD",
            "JWT_SECRET",
            "SECRET_KEY_BASE",
            "OPENAI_KEY",
        ] {
            assert!(is_credential_key(k), "{k}");
        }
        for k in [
            "DATABASE_HOST",
            "DB_PASSWORD_FILE",
            "JWT_PUBLIC_KEY",
            "STRIPE_PUBLISHABLE_KEY",
            "KEYBOARD",
            "TOKENS_PER_MIN",
            "CACHE_KEY",
            "SORT_KEY",
            "IDEMPOTENCY_KEY",
            "SECRETS_DIR",
            "secrets",
        ] {
            assert!(!is_credential_key(k), "{k}");
        }
    }

    #[test]
    fn url_passwords() {
        assert_eq!(
            url_password("postgres://u:hunter2@db:5432/x"),
            Some("hunter2")
        );
        assert_eq!(url_password("postgres://u@db/x"), None);
        assert_eq!(url_password("https://example.com/a:b@c"), None);
    }

    #[test]
    fn placeholders_are_whole_words() {
        assert!(is_placeholder("CHANGE_ME"));
        assert!(is_placeholder("postgres://u:changeme@db/x"));
        assert!(!is_placeholder("exchange_messages"));
    }

    #[test]
    fn concealed_values_compare_but_do_not_show() {
        assert_eq!(conceal("hunter2"), conceal("hunter2"));
        assert_ne!(conceal("hunter2"), conceal("hunter3"));
        assert!(!conceal("hunter2").contains("hunter2"));
        assert!(conceal("x").starts_with(SENSITIVE_MARK));
    }

    #[test]
    fn masking_keeps_positions_and_hides_values() {
        let src = "env:\n  DB_PASSWORD: hunter2\n  URL: postgres://u:s3cret@db/x\n  flow: { API_TOKEN: abc, MODE: x }\n  CERT_KEY: |\n    line one\n    line two\n  NEXT: shown\nkey: -----BEGIN PRIVATE KEY-----\n  zzz\n  -----END PRIVATE KEY-----\nr: [AGE-SECRET-KEY-1ABCDEF]\nage-secret-key-1qqq\n";
        let masked = mask_source(src);
        assert_eq!(masked.len(), src.len());
        for secret in [
            "hunter2", "s3cret", "abc", "line one", "zzz", "ABCDEF", "qqq",
        ] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
        for kept in ["DB_PASSWORD: ", "MODE: x", "NEXT: shown", "postgres://u:"] {
            assert!(masked.contains(kept), "{kept} missing from {masked}");
        }
        assert!(matches!(mask_source("a: 1\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn masking_keeps_declarations_paths_and_references() {
        let src = "secrets:\n  app_key: { file: secrets/app_key.age, min_length: 32 }\n  db_password:\n    file: secrets/db.age\nenv:\n  TLS_KEY: /etc/ssl/private/site.key\n  API_KEY: ${API_KEY}\n  SIGNING_KEY: ./keys/signing.pem\n  flow: { DB_PASSWORD: s3cretvalue, JWT_SECRET: { file: x/y.age } }\n  APP_SECRET: Zq8v3/mK1xP0wL7rT+q==\n  OTHER_TOKEN: abcdef0123456789\n";
        let masked = mask_source(src);
        assert_eq!(masked.len(), src.len());
        for kept in [
            "app_key: { file: secrets/app_key.age, min_length: 32 }",
            "TLS_KEY: /etc/ssl/private/site.key",
            "API_KEY: ${API_KEY}",
            "SIGNING_KEY: ./keys/signing.pem",
            "JWT_SECRET: { file: x/y.age }",
        ] {
            assert!(masked.contains(kept), "{kept} missing from {masked}");
        }
        for secret in ["s3cretvalue", "Zq8v3", "abcdef0123456789"] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
    }

    #[test]
    fn forbidden_defaults_are_whole_values_in_any_case() {
        for d in ["postgres", "ADMIN", "Password"] {
            assert!(is_forbidden_default(d), "{d}");
        }
        for v in ["postgres://db", "admin1", "my-password", ""] {
            assert!(!is_forbidden_default(v), "{v}");
        }
    }
}
