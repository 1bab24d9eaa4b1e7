//! A secret's `pattern` and `forbid_pattern`: regular expressions, compiled the same way where
//! the spec is checked and where a decrypted value is.

/// Most bytes a compiled `pattern` or `forbid_pattern` may take.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A secret's `pattern` or `forbid_pattern`, compiled; the error says why it is not a
/// regular expression.
pub fn compile(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(s) => {
                let last = s.lines().last().unwrap_or_default().trim();
                last.strip_prefix("error: ").unwrap_or(last).to_owned()
            }
            regex::Error::CompiledTooBig(_) => "it is too large once compiled".to_owned(),
            _ => e.to_string(),
        })
}
