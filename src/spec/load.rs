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
    #[error("spec `{path}` is {size} bytes, more than berth reads ({max} bytes)")]
    #[diagnostic(code(berth::spec_too_large), help("split the deployment into several projects"))]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("spec `{path}` is not UTF-8 text")]
    #[diagnostic(code(berth::spec_not_utf8), help("save the file as UTF-8"))]
    NotUtf8 { path: PathBuf },
}

/// Reads, parses, checks and lints the spec at `path`.
pub fn load_file(path: &Path) -> Result<Loaded, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_SPEC_BYTES {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size,
            max: MAX_SPEC_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    Ok(load_str(path, text))
}

/// Parses, checks and lints spec text; `path` names it in diagnostics.
pub fn load_str(path: &Path, text: String) -> Loaded {
    let source = Arc::new(text);
    let (spec, diagnostics) = match parse(&source) {
        Ok(spec) => {
            let mut diags = super::check::check(&spec);
            diags.extend(super::lint::lint(&spec, &source));
            (Some(spec), diags)
        }
        Err(d) => (None, vec![d]),
    };
    Loaded {
        spec,
        report: Report::new(path, source, diagnostics),
    }
}

/// YAML text -> [`Spec`], within budgets that refuse alias bombs and deep nesting.
pub fn parse(text: &str) -> Result<Spec, Diagnostic> {
    if text.trim().is_empty() {
        return Err(Diagnostic::error("yaml", "the spec is empty")
            .help("start from `examples/quickstart/berth.yaml`"));
    }
    // Without aliases a node needs at least one byte, so budgets proportional to the input
    // let large honest specs through while alias expansion stays capped.
    let bytes = text.len();
    let budget = serde_saphyr::budget! {
        max_nodes: bytes.saturating_mul(2).max(250_000),
        max_events: bytes.saturating_mul(4).max(1_000_000),
        max_depth: 64,
        max_aliases: 1_000,
        max_anchors: 1_000,
    };
    let options = serde_saphyr::options! {
        budget: budget,
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
    };
    serde_saphyr::from_str_with_options::<Spec>(text, options).map_err(|e| yaml_diagnostic(&e))
}

fn yaml_diagnostic(err: &serde_saphyr::Error) -> Diagnostic {
    let message = UserMessageFormatter.format_message(err).into_owned();
    let (code, help) = if message.contains("budget") {
        (
            "yaml-budget",
            "the file expands beyond what a spec needs (deep nesting or alias expansion); \
             write the values out plainly",
        )
    } else if message.contains("unknown field") {
        (
            "unknown-key",
            "check the spelling against the spec reference (docs/spec.md) or the JSON schema",
        )
    } else if message.contains("missing field") {
        ("missing-key", "add the field; docs/spec.md lists what each section needs")
    } else {
        (
            "yaml",
            "fix the YAML at the marked place; docs/spec.md describes each field",
        )
    };
    let mut d = Diagnostic::error(code, first_upper_lower(&message)).help(help);
    if let Some(loc) = err.location() {
        let s = loc.span();
        if let Some(off) = s.byte_offset() {
            d = d.at(
                Span::new(off as usize, s.byte_len().unwrap_or(0).max(1) as usize),
                "here",
            );
        }
    }
    d
}

/// Messages start lower-case (STYLE.md).
fn first_upper_lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if !s.starts_with("YAML") => f.to_lowercase().chain(c).collect(),
        _ => s.to_owned(),
    }
}
