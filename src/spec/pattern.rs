//! A secret's `pattern` and `forbid_pattern`: regular expressions, compiled the same way where
//! the spec is checked and where a decrypted value is.

/// Most bytes a compiled `pattern` or `forbid_pattern` may take.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Why a `pattern` or `forbid_pattern` is not a regular expression berth can use.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PatternError {
    /// Not in the `regex` crate's syntax: the last line of its explanation (what is wrong
    /// and where), without its `error: ` prefix.
    #[error("{reason}")]
    Syntax { reason: String },
    #[error("it is too large once compiled")]
    TooLarge,
    #[error("{0}")]
    Other(regex::Error),
}

/// A secret's `pattern` or `forbid_pattern`, compiled; the error says why it is not a
/// regular expression.
pub fn compile(pattern: &str) -> Result<regex::Regex, PatternError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(s) => {
                let last = s.lines().last().unwrap_or_default().trim();
                PatternError::Syntax {
                    reason: last.strip_prefix("error: ").unwrap_or(last).to_owned(),
                }
            }
            regex::Error::CompiledTooBig(_) => PatternError::TooLarge,
            _ => PatternError::Other(e),
        })
}
