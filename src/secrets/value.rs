//! The checks a decrypted value must pass (`min_length`, the built-in placeholders and
//! defaults, `forbid`, `pattern`, `forbid_pattern`, `format`). Problems are described
//! without the value: a message may say that a value is too short, never what it is.

use crate::sensitive::{FORBIDDEN_DEFAULTS, is_forbidden_default};
use crate::spec::pattern::compile;
use crate::spec::{Secret, SecretFormat};

use super::Plaintext;

/// Placeholders refused anywhere in a value, in any case: no real credential contains
/// them, and template values are built around them (`your-secret-key-CHANGE_ME-min-32`).
const PLACEHOLDERS: [&str; 6] = [
    "change_me",
    "change-me",
    "changeme",
    "replace_me",
    "replace-me",
    "replaceme",
];

/// Template values such as `your-api-key-here`, `your_token_here` or `<your key>`: one
/// word joined by `-`, `_` or `.` from `your` to `here`, or `<your ...>`.
static TEMPLATE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?i)(\byour(?:[-_.][a-z0-9]+)*[-_.]here\b)|(<your[^<>]*>)").ok()
});

/// What the placeholder rule refuses, as messages say it.
pub const PLACEHOLDERS_DESCRIBED: &str =
    "CHANGE_ME, changeme, change-me, replace-me, your-...-here, <your ...>";

/// Whether a value holds one of the placeholders (`CHANGE_ME` and its kin, in any case) or
/// is a template value such as `your-api-key-here`: see [`PLACEHOLDERS_DESCRIBED`].
pub fn has_placeholder(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    PLACEHOLDERS.iter().any(|p| lower.contains(p))
        || TEMPLATE.as_ref().is_some_and(|t| t.is_match(text))
}

/// What is wrong with a decrypted value, one line per problem (empty: it passes).
pub fn problems(secret: &Secret, value: &Plaintext) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = value.expose();
    let Ok(text) = std::str::from_utf8(bytes) else {
        if secret.format.is_some()
            || secret.min_length.is_some()
            || secret.pattern.is_some()
            || secret.forbid_pattern.is_some()
        {
            out.push("it is not UTF-8 text".into());
        }
        return out;
    };
    let trimmed = text.trim();
    if let Some(min) = secret.min_length {
        let len = text.chars().count();
        if len < min as usize {
            out.push(format!(
                "it is {len} character(s) long, shorter than `min_length: {min}`"
            ));
        }
    }
    if trimmed.is_empty() {
        out.push("it is empty".into());
    }
    if has_placeholder(trimmed) {
        out.push(format!("it holds a placeholder ({PLACEHOLDERS_DESCRIBED})"));
    } else if is_forbidden_default(trimmed) {
        out.push(format!(
            "it is a well-known default value (one of {})",
            FORBIDDEN_DEFAULTS.join(", ")
        ));
    }
    if let Some(n) = secret.forbid.iter().position(|f| f == trimmed) {
        out.push(format!("it equals entry {} of its `forbid` list", n + 1));
    }
    if let Some(p) = &secret.pattern {
        match compile(&p.value) {
            Ok(re) if !re.is_match(trimmed) => {
                out.push("it does not match its `pattern`".into());
            }
            Ok(_) => {}
            Err(_) => out.push("its `pattern` is not a valid regular expression".into()),
        }
    }
    if let Some(p) = &secret.forbid_pattern {
        match compile(&p.value) {
            Ok(re) if re.is_match(trimmed) => {
                out.push("it matches its `forbid_pattern`".into());
            }
            Ok(_) => {}
            Err(_) => out.push("its `forbid_pattern` is not a valid regular expression".into()),
        }
    }
    if let Some(format) = secret.format
        && let Err(why) = check_format(format, trimmed)
    {
        out.push(format!(
            "it is not valid `format: {}`: {why}",
            format.as_str()
        ));
    }
    out
}

/// Why a value is not of its secret's `format`. Like every message here, it never shows
/// the value: a place in it at most.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the scheme is not `https`")]
    NotHttps,
    #[error("it has no `scheme://`")]
    NoScheme,
    #[error("the scheme is not a URL scheme")]
    BadScheme,
    #[error("it contains whitespace")]
    Whitespace,
    #[error("it has no host")]
    NoHost,
    #[error("text outside a `-----BEGIN ...-----` block")]
    OutsideBlock,
    #[error("a block has no END line")]
    NoEnd,
    #[error("a block's END label differs from its BEGIN label")]
    EndLabel,
    #[error("a block's body is not base64")]
    NotBase64,
    #[error("a block is empty")]
    EmptyBlock,
    #[error("it holds no PEM block")]
    NoPemBlock,
    #[error("JSON does not parse at line {line} column {column}")]
    Json { line: usize, column: usize },
    #[error("it has no `keys` array")]
    NoKeys,
    #[error("its `keys` array is empty")]
    EmptyKeys,
    /// `key` counts from 1.
    #[error("key {key} has no `kty`")]
    NoKty { key: usize },
}

impl From<serde_json::Error> for FormatError {
    fn from(e: serde_json::Error) -> Self {
        FormatError::Json {
            line: e.line(),
            column: e.column(),
        }
    }
}

fn check_format(format: SecretFormat, text: &str) -> Result<(), FormatError> {
    match format {
        SecretFormat::Text => Ok(()),
        SecretFormat::Url => url(text).map(|_| ()),
        SecretFormat::HttpsUrl => match url(text)? {
            "https" => Ok(()),
            _ => Err(FormatError::NotHttps),
        },
        SecretFormat::Pem => pem(text),
        SecretFormat::Json => serde_json::from_str::<serde_json::Value>(text)
            .map(|_| ())
            .map_err(FormatError::from),
        SecretFormat::Jwks => jwks(text),
    }
}

/// `scheme://authority[...]`: returns the scheme.
fn url(text: &str) -> Result<&str, FormatError> {
    let (scheme, rest) = text.split_once("://").ok_or(FormatError::NoScheme)?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(FormatError::BadScheme);
    }
    if text.chars().any(char::is_whitespace) {
        return Err(FormatError::Whitespace);
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(FormatError::NoHost);
    }
    Ok(scheme)
}

/// One or more `-----BEGIN X-----` ... `-----END X-----` blocks with base64 bodies.
fn pem(text: &str) -> Result<(), FormatError> {
    let mut blocks = 0;
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let label = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
            .ok_or(FormatError::OutsideBlock)?;
        let mut body = 0;
        loop {
            let Some(l) = lines.next() else {
                return Err(FormatError::NoEnd);
            };
            if let Some(end) = l
                .strip_prefix("-----END ")
                .and_then(|l| l.strip_suffix("-----"))
            {
                if end != label {
                    return Err(FormatError::EndLabel);
                }
                break;
            }
            // Headers (`Proc-Type: ...`) in old-style keys are allowed; base64 otherwise.
            if !l.contains(':')
                && !l
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
            {
                return Err(FormatError::NotBase64);
            }
            body += l.len();
        }
        if body == 0 {
            return Err(FormatError::EmptyBlock);
        }
        blocks += 1;
    }
    if blocks == 0 {
        return Err(FormatError::NoPemBlock);
    }
    Ok(())
}

/// A JSON object whose `keys` is a non-empty array of keys, each with a `kty`.
fn jwks(text: &str) -> Result<(), FormatError> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let keys = v
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or(FormatError::NoKeys)?;
    if keys.is_empty() {
        return Err(FormatError::EmptyKeys);
    }
    if let Some(n) = keys.iter().position(|k| k.get("kty").is_none()) {
        return Err(FormatError::NoKty { key: n + 1 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(yaml_fields: impl FnOnce(&mut Secret)) -> Secret {
        let mut s: Secret = serde_saphyr::from_str("file: x.age").unwrap();
        yaml_fields(&mut s);
        s
    }

    fn check(s: &Secret, v: &str) -> Vec<String> {
        problems(s, &Plaintext::new(v.as_bytes().to_vec()))
    }

    #[test]
    fn lengths_defaults_and_forbidden_values() {
        let s = secret(|s| {
            s.min_length = Some(8);
            s.forbid = vec!["hunter22".into()];
        });
        assert!(check(&s, "a-long-enough-value").is_empty());
        assert!(check(&s, "short")[0].contains("5 character(s)"));
        assert!(
            check(&s, "Postgres\n")
                .iter()
                .any(|p| p.contains("well-known"))
        );
        assert!(
            check(&s, "CHANGE_ME")
                .iter()
                .any(|p| p.contains("placeholder"))
        );
        assert!(check(&s, "hunter22").iter().any(|p| p.contains("entry 1")));
        // No message repeats the value.
        for p in check(&s, "hunter22") {
            assert!(!p.contains("hunter22"), "{p}");
        }
        assert!(check(&secret(|_| {}), "   ")[0].contains("empty"));
    }

    #[test]
    fn placeholders_are_refused_inside_a_value_and_short_defaults_only_whole() {
        let s = secret(|_| {});
        for bad in [
            "your-secret-key-CHANGE_ME-min-32-characters-long",
            "prefix-changeme-suffix-0123456789",
            "Change-Me-Please-0123456789abcdef",
            "replace_me_with_a_real_key_0123456",
            "your-api-key-here",
            "YOUR_STRIPE_TOKEN_HERE",
            "<your token>",
            "Admin",
            " password\n",
        ] {
            let p = check(&s, bad);
            assert!(
                p.iter()
                    .any(|p| p.contains("placeholder") || p.contains("well-known")),
                "{bad}: {p:?}"
            );
            // (The built-in list itself is public: `admin` may be named, as one of it.)
            for p in p.iter().filter(|_| bad.trim().len() > 12) {
                assert!(!p.contains(bad.trim()), "the message shows the value: {p}");
            }
        }
        for good in [
            "postgres://app:Zq8v3mK1xP0wL7rT@db:5432/app",
            "k3admin9Q0xLmNp2RtYvBw8ZsD4fGh6Jk",
            "s3cr3t-password-manager-generated-Xy9",
            "exchange-rates-key-Qw8Er7Ty6Ui5Op4",
            "yours-truly-here-is-no-template-X9",
        ] {
            assert!(check(&s, good).is_empty(), "{good}: {:?}", check(&s, good));
        }
    }

    #[test]
    fn pattern_and_forbid_pattern_are_matched_without_showing_the_value() {
        let sp = |v: &str| crate::spec::Sp::new(v.to_owned(), crate::diag::Span::default());
        let live = secret(|s| {
            s.pattern = Some(Box::new(sp("^sk_live_[0-9A-Za-z]{8,}$")));
            s.forbid_pattern = Some(Box::new(sp("(?i)test")));
        });
        assert!(check(&live, "sk_live_Ab12Cd34Ef").is_empty());
        let p = check(&live, "sk_test_Ab12Cd34Ef\n");
        assert!(
            p.iter().any(|p| p.contains("does not match its `pattern`")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("matches its `forbid_pattern`")),
            "{p:?}"
        );
        assert!(p.iter().all(|p| !p.contains("sk_test")), "{p:?}");
        assert!(compile("^(unclosed").is_err());
        assert!(
            compile("(a)\\1").is_err(),
            "back-references are not supported"
        );
    }

    #[test]
    fn formats() {
        let f = |format| secret(|s| s.format = Some(format));
        assert!(check(&f(SecretFormat::Url), "postgres://u:p@db:5432/app").is_empty());
        assert!(!check(&f(SecretFormat::Url), "db:5432").is_empty());
        assert!(!check(&f(SecretFormat::HttpsUrl), "http://x.example").is_empty());
        assert!(check(&f(SecretFormat::HttpsUrl), "https://x.example/hook").is_empty());
        assert!(check(&f(SecretFormat::Json), r#"{"a": 1}"#).is_empty());
        assert!(!check(&f(SecretFormat::Json), "{a").is_empty());
        let jwks = f(SecretFormat::Jwks);
        assert!(check(&jwks, r#"{"keys":[{"kty":"OKP"}]}"#).is_empty());
        assert!(check(&jwks, r#"{"keys":[]}"#)[0].contains("empty"));
        assert!(check(&jwks, r#"{"k":1}"#)[0].contains("no `keys`"));
        let pem = f(SecretFormat::Pem);
        let good =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        assert!(check(&pem, good).is_empty());
        assert!(!check(&pem, "-----BEGIN X-----\nAAAA\n-----END Y-----").is_empty());
        assert!(!check(&pem, "just text").is_empty());
    }
}
