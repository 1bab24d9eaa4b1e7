//! Reading a spec: file -> text -> typed [`Spec`] -> checks and lints.
//!
//! Parsing stops at the first YAML or structural error (serde cannot go on after one); every
//! later stage (references, names, units, cycles, lints) reports all it finds at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::{DuplicateKeyPolicy, MessageFormatter, UserMessageFormatter};

use super::Spec;
use crate::diag::{Diagnostic, Report, Span};

/// Largest spec file berth reads.
pub const MAX_SPEC_BYTES: u64 = 256 << 20;

/// A spec file after loading: its text, the spec if it parsed, and every diagnostic.
#[derive(Debug)]
pub struct Loaded {
    pub spec: Option<Spec>,
    pub report: Report,
}

impl Loaded {
    /// The spec, if it parsed and has no errors.
    pub fn valid_spec(&self) -> Option<&Spec> {
        if self.report.has_errors() {
            None
        } else {
            self.spec.as_ref()
        }
    }
}

/// Why a spec file could not be read at all.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ReadError {
    #[error("cannot read spec `{path}`: {source}")]
    #[diagnostic(
        code(berth::spec_unreadable),
        help("pass the spec with `-f FILE`, or run berth where `berth.yaml` is")
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spec `{path}` is larger than berth reads ({max} bytes)")]
    #[diagnostic(
        code(berth::spec_too_large),
        help("split the deployment into several projects")
    )]
    TooLarge { path: PathBuf, max: u64 },
    #[error("spec `{path}` is not UTF-8 text")]
    #[diagnostic(code(berth::spec_not_utf8), help("save the file as UTF-8"))]
    NotUtf8 { path: PathBuf },
}

/// Reads, parses, checks and lints the spec at `path`.
pub fn load_file(path: &Path) -> Result<Loaded, ReadError> {
    Ok(load_str(path, read_text(path)?))
}

/// Reads a spec file's text once (it may be a pipe, `<(git show ...)`), within the size
/// limit.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    // One byte more than the limit tells a file at the limit from a larger one.
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_SPEC_BYTES + 1),
        &mut bytes,
    )
    .map_err(io)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_SPEC_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// Parses, checks and lints spec text; `path` names it in diagnostics.
pub fn load_str(path: &Path, text: String) -> Loaded {
    let source = Arc::new(text);
    let (spec, mut diagnostics) = match parse(&source) {
        Ok(spec) => {
            let mut diags = super::check::check(&spec);
            diags.extend(super::lint::lint(&spec, &source));
            (Some(spec), diags)
        }
        Err(d) => (None, vec![*d]),
    };
    // In file order, as a reader goes through the file.
    diagnostics.sort_by_key(|d| d.span.map_or(usize::MAX, |s| s.offset()));
    Loaded {
        spec,
        report: Report::new(path, source, diagnostics),
    }
}

/// YAML text -> [`Spec`], within budgets that refuse alias bombs and deep nesting.
pub fn parse(text: &str) -> Result<Spec, Box<Diagnostic>> {
    if is_blank(text) {
        return Err(Box::new(
            Diagnostic::error("empty-spec", "the spec is empty")
                .at(
                    Span::new(0, text.len()),
                    "nothing but blank lines and comments",
                )
                .help("start from `examples/quickstart/berth.yaml`"),
        ));
    }
    match parse_with(text, DuplicateKeyPolicy::PassThrough) {
        Ok(spec) => Ok(spec),
        Err(e) => {
            // Duplicates in mappings of names are kept for the checks to report all of them;
            // a duplicate key of a fixed section (two `pods:`) reaches serde without a place.
            // The parser's own duplicate check knows the place: ask it.
            if UserMessageFormatter
                .format_message(&e)
                .contains("duplicate field")
                && let Err(strict) = parse_with(text, DuplicateKeyPolicy::Error)
            {
                return Err(Box::new(yaml_diagnostic(&strict, text)));
            }
            Err(Box::new(yaml_diagnostic(&e, text)))
        }
    }
}

/// Nothing but blank lines, comments and document markers.
pub fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

fn parse_with(text: &str, duplicate_keys: DuplicateKeyPolicy) -> Result<Spec, serde_saphyr::Error> {
    // Without aliases a node needs at least one byte, so budgets proportional to the input
    // let large honest specs through while alias expansion stays capped.
    let bytes = text.len();
    let budget = serde_saphyr::budget! {
        max_nodes: bytes.saturating_mul(2).max(250_000),
        max_events: bytes.saturating_mul(4).max(1_000_000),
        max_depth: MAX_DEPTH,
        max_aliases: MAX_ALIASES,
        max_anchors: MAX_ALIASES,
    };
    let options = serde_saphyr::options! {
        budget: budget,
        duplicate_keys: duplicate_keys,
    };
    serde_saphyr::from_str_with_options::<Spec>(text, options)
}

/// Deepest nesting of mappings and sequences berth reads.
pub const MAX_DEPTH: usize = 64;
/// Most aliases (and anchors) berth reads in one spec.
pub const MAX_ALIASES: usize = 1_000;

fn yaml_diagnostic(err: &serde_saphyr::Error, text: &str) -> Diagnostic {
    use serde_saphyr::Error as E;
    let budget_help = "a spec never needs this much: write the values out plainly, without \
                       deep nesting or aliases of aliases";
    let mut inner = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let (code, message, help) = match inner {
        E::Budget { breach, .. } => (
            "yaml-budget",
            format!(
                "the spec exceeds berth's reading limits: {}",
                describe_breach(breach)
            ),
            budget_help.to_owned(),
        ),
        E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => (
            "yaml-budget",
            "the spec's aliases expand beyond berth's reading limits".to_owned(),
            budget_help.to_owned(),
        ),
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = crate::diag::hint_for(field, expected, "this section takes:", "remove it");
            ("unknown-key", format!("unknown key `{field}`"), hint)
        }
        E::SerdeMissingField { field, .. } => (
            "missing-key",
            format!("missing key `{field}`"),
            format!(
                "add `{field}:` to the mapping that ends here (docs/spec.md lists what each section needs)"
            ),
        ),
        E::DuplicateMappingKey { key, .. } => (
            "duplicate-key",
            match key {
                Some(k) => format!("key `{k}` appears twice in one mapping"),
                None => "a key appears twice in one mapping".to_owned(),
            },
            "remove or merge the repeated key".to_owned(),
        ),
        E::InvalidScalar { ty, .. } => {
            let found = err
                .location()
                .and_then(|l| {
                    let s = l.span();
                    let from = s.byte_offset()? as usize;
                    text.get(from..from + s.byte_len()? as usize)
                })
                .filter(|v| !v.is_empty() && v.len() <= 80)
                .map_or_else(String::new, |v| format!(", found `{v}`"));
            (
                "yaml",
                format!("expected {}{found}", plain_type(ty)),
                "fix the value at the marked place; docs/spec.md describes each field".to_owned(),
            )
        }
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => (
            "yaml",
            format!("expected {}, found {unexpected}", plain_type(expected)),
            "fix the value at the marked place; docs/spec.md describes each field".to_owned(),
        ),
        _ if UserMessageFormatter
            .format_message(err)
            .contains("untagged enum Notify") =>
        {
            (
                "yaml",
                "`notify` is a URL or a Slack webhook".to_owned(),
                "write `notify: https://host/path` (berth's JSON) or `notify: { slack: URL }`"
                    .to_owned(),
            )
        }
        _ => (
            "yaml",
            first_lower(&UserMessageFormatter.format_message(err)),
            "fix the YAML at the marked place; docs/spec.md describes each field".to_owned(),
        ),
    };
    let mut d = Diagnostic::error(code, message).help(help);
    if let Some(loc) = err.location()
        && loc.line() > 0
    {
        let s = loc.span();
        let offset = match s.byte_offset() {
            Some(off) => off as usize,
            None => offset_of(text, loc.line() as usize, loc.column() as usize),
        };
        let len = s.byte_len().unwrap_or(0).max(1) as usize;
        d = d.at(Span::new(offset, len), "here");
    }
    d
}

/// A Rust type name as a person reads it: `u32` is "a whole number from 0 to 4294967295".
fn plain_type(ty: &str) -> String {
    let unsigned = |max: u64| format!("a whole number from 0 to {max}");
    match ty {
        "u8" => unsigned(u8::MAX.into()),
        "u16" => unsigned(u16::MAX.into()),
        "u32" => unsigned(u32::MAX.into()),
        "u64" | "usize" => unsigned(u64::MAX),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" | "floating point" => "a number".to_owned(),
        "boolean" | "bool" | "a boolean" => "`true` or `false`".to_owned(),
        "char" | "a character" => "a single character".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        t if t.starts_with("struct ") => "a mapping of keys".to_owned(),
        t => t.to_owned(),
    }
}

fn describe_breach(b: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match b {
        B::Depth { .. } => format!("nesting deeper than {MAX_DEPTH} levels"),
        B::Aliases { .. } => format!("more than {MAX_ALIASES} aliases"),
        B::Anchors { .. } => format!("more than {MAX_ALIASES} anchors"),
        B::Nodes { .. } | B::Events { .. } => {
            "too many values for the size of the file (alias expansion)".into()
        }
        B::AliasAnchorRatio { .. } => {
            "aliases repeat anchors far more often than a spec needs (an alias bomb)".into()
        }
        B::Documents { .. } => "too many YAML documents".into(),
        B::ScalarBytes { .. } => "too much text in values".into(),
        _ => "a size limit".into(),
    }
}

/// The byte offset of a 1-based line and character column.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let col: usize = l
                .char_indices()
                .nth(column.saturating_sub(1))
                .map_or(l.trim_end_matches('\n').len(), |(b, _)| b);
            return offset + col;
        }
        offset += l.len();
    }
    text.len()
}

/// Messages start lower-case (STYLE.md).
fn first_lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if !s.starts_with("YAML") => f.to_lowercase().chain(c).collect(),
        _ => s.to_owned(),
    }
}

/// A spec that passed its checks, for unit tests elsewhere (panics with the report).
#[cfg(test)]
pub fn checked_for_tests(text: &str) -> Spec {
    let loaded = load_str(Path::new("berth.yaml"), text.to_owned());
    assert!(
        !loaded.report.has_errors(),
        "{}",
        loaded.report.render(false)
    );
    loaded.spec.expect("a spec without errors")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SecretUse;

    fn spec(text: &str) -> Spec {
        match parse(text) {
            Ok(s) => s,
            Err(d) => panic!("{}", d.message),
        }
    }

    #[test]
    fn scalars_are_kept_as_written() {
        let s = spec(
            "version: 1\nproject: p\npods:\n  a:\n    image: x\n    env: { V: 1.10, ZIP: 01234, HEX: 0x1F, FLAG: yes, BIG: 12345678901234567890123 }\n",
        );
        let env: Vec<(&str, &str)> = s.pods.entries()[0]
            .item
            .env
            .iter()
            .map(|e| (e.name.value.as_str(), e.item.value.0.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("V", "1.10"),
                ("ZIP", "01234"),
                ("HEX", "0x1F"),
                ("FLAG", "yes"),
                ("BIG", "12345678901234567890123")
            ]
        );
    }

    #[test]
    fn file_modes_read_as_octal_however_written() {
        for mode in ["\"0400\"", "0400", "0o400", "400"] {
            let s = spec(&format!(
                "version: 1\nproject: p\nsecrets:\n  k: {{ file: k.age }}\npods:\n  a:\n    image: x\n    secrets: [{{ name: k, mode: {mode} }}]\n"
            ));
            let SecretUse::Detailed(d) = &s.pods.entries()[0].item.secrets[0].value else {
                panic!("detailed form");
            };
            assert_eq!(d.mode.as_ref().and_then(|m| m.get()), Some(0o400), "{mode}");
        }
    }
}
