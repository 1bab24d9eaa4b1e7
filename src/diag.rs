//! Diagnostics: the one place where problems found in a spec become what the user reads.
//!
//! Every layer that inspects a spec (YAML parsing, structural checks, lints) produces plain
//! [`Diagnostic`] values that carry a byte [`Span`] into the source. This module turns a
//! [`Report`] (a file, its text and its diagnostics) into miette's graphical output for people
//! and into a stable JSON shape for CI (`berth validate --format json`). It also holds the
//! "did you mean" hints ([`suggest`], [`hint_for`]) every layer gives for an unknown name.
//! Snippets of the source are shown with credential-looking values masked
//! ([`crate::sensitive`]), whatever a diagnostic is about.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

use crate::sensitive::mask_source;

/// A byte range in the spec's source text. 32-bit: a spec is at most
/// [`MAX_SPEC_BYTES`](crate::spec::load::MAX_SPEC_BYTES) (256 MiB) long, and every value of
/// a parsed spec carries one (at 50,000 pods, about 5 MB less than two `usize`s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    offset: u32,
    len: u32,
}

impl Span {
    /// Offsets past 4 GiB (never in a spec, which is refused past 256 MiB) are clamped.
    pub fn new(offset: usize, len: usize) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Span {
            offset: clamp(offset),
            len: clamp(len),
        }
    }

    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// 1-based line and column (in characters) of the span's start within `source`.
    pub fn line_col(&self, source: &str) -> (usize, usize) {
        let upto = &source[..self.offset().min(source.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

impl From<Span> for SourceSpan {
    fn from(s: Span) -> Self {
        SourceSpan::new(s.offset().into(), s.len())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One problem in a spec: what, where, and what to do.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable identifier, e.g. `unknown-reference` or `lint::plaintext-credential`.
    pub code: String,
    pub message: String,
    pub span: Option<Span>,
    pub label: Option<String>,
    pub help: Option<String>,
    /// Further places that explain the problem (the first definition of a duplicate, ...).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code: code.into(),
            message: message.into(),
            span: None,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(code: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Self {
        self.span = Some(span);
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The diagnostics of one file, with the text they point into.
#[derive(Clone, Debug)]
pub struct Report {
    pub path: PathBuf,
    pub source: Arc<String>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn new(path: &Path, source: Arc<String>, diagnostics: Vec<Diagnostic>) -> Self {
        Report {
            path: path.to_path_buf(),
            source,
            diagnostics,
        }
    }

    /// Lets go of the source text when no diagnostic will show it: only diagnostics read
    /// it (for their snippets and lines). At 50,000 pods a spec's text is about 8 MB.
    pub fn release_unused_source(&mut self) {
        if self.diagnostics.is_empty() {
            self.source = Arc::new(String::new());
        }
    }

    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    pub fn has_errors(&self) -> bool {
        self.errors() > 0
    }

    /// Each diagnostic as a miette diagnostic bound to the file's source.
    pub fn miette(&self) -> impl Iterator<Item = SpecDiagnostic> + '_ {
        // Snippets show the file with credentials masked, whatever the diagnostic is about.
        let shown = match mask_source(&self.source) {
            Cow::Borrowed(_) => self.source.clone(),
            Cow::Owned(masked) => Arc::new(masked),
        };
        let named = NamedSource::new(self.path.display().to_string(), shown);
        let end = self.source.len();
        self.diagnostics.iter().map(move |d| {
            let mut diag = d.clone();
            let clamp = |s: Span| {
                let offset = s.offset().min(end);
                Span::new(offset, s.len().min(end - offset))
            };
            diag.span = diag.span.map(clamp);
            for (s, _) in &mut diag.related {
                *s = clamp(*s);
            }
            SpecDiagnostic {
                diag,
                source: named.clone(),
            }
        })
    }

    /// Renders every diagnostic with miette's graphical handler.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        for d in self.miette() {
            // Writing into a String cannot fail.
            let _ = handler.render_report(&mut out, &d);
            out.push('\n');
        }
        out
    }

    /// The JSON shape of `berth validate --format json` (see docs/json.md).
    pub fn to_json(&self) -> serde_json::Value {
        let file = self.path.display().to_string();
        let diags: Vec<JsonDiagnostic> = self
            .diagnostics
            .iter()
            .map(|d| {
                let (line, column) = d
                    .span
                    .map(|s| s.line_col(&self.source))
                    .map_or((None, None), |(l, c)| (Some(l), Some(c)));
                JsonDiagnostic {
                    severity: d.severity,
                    code: &d.code,
                    message: &d.message,
                    file: &file,
                    line,
                    column,
                    offset: d.span.map(|s| s.offset()),
                    length: d.span.map(|s| s.len()),
                    label: d.label.as_deref(),
                    help: d.help.as_deref(),
                }
            })
            .collect();
        serde_json::json!({
            "format_version": 1,
            "file": file,
            "valid": !self.has_errors(),
            "errors": self.errors(),
            "warnings": self.warnings(),
            "diagnostics": diags,
        })
    }
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    severity: Severity,
    code: &'a str,
    message: &'a str,
    file: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    offset: Option<usize>,
    length: Option<usize>,
    label: Option<&'a str>,
    help: Option<&'a str>,
}

/// A [`Diagnostic`] bound to its source, as miette wants it.
#[derive(Debug)]
pub struct SpecDiagnostic {
    diag: Diagnostic,
    source: NamedSource<Arc<String>>,
}

impl fmt::Display for SpecDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for SpecDiagnostic {}

impl miette::Diagnostic for SpecDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(format!("berth::{}", self.diag.code)))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.diag
            .span
            .map(|_| &self.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.diag.span?;
        let primary = LabeledSpan::new_primary_with_span(self.diag.label.clone(), span);
        let related = self
            .diag
            .related
            .iter()
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), *s));
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

/// `did you mean`, when one of `candidates` is close to `name`: one or two edits away
/// (a typo, a swapped pair of letters), or very similar.
pub fn suggest<'n>(name: &str, candidates: impl Iterator<Item = &'n str>) -> Option<&'n str> {
    let max_edits = (name.chars().count() / 3).clamp(1, 2);
    candidates
        .map(|c| {
            (
                strsim::damerau_levenshtein(name, c),
                -strsim::jaro_winkler(name, c),
                c,
            )
        })
        .filter(|(edits, neg_jw, _)| *edits <= max_edits || -neg_jw > 0.9)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, c)| c)
}

/// The hint for a name that is not one of `candidates`: "did you mean `x`?" when one is
/// close, else `otherwise` followed by the candidates in backticks (or `empty` when there
/// are none).
pub fn hint_for(name: &str, candidates: &[&str], otherwise: &str, empty: &str) -> String {
    match suggest(name, candidates.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if candidates.is_empty() => empty.to_owned(),
        None => {
            let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
            format!("{otherwise} {}", list.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a: 1\nbb: 2\n";
        assert_eq!(Span::new(0, 1).line_col(src), (1, 1));
        assert_eq!(Span::new(5, 2).line_col(src), (2, 1));
        assert_eq!(Span::new(9, 1).line_col(src), (2, 5));
    }
}
