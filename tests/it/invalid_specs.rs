//! Every spec under `fixtures/invalid/` holds one mistake (one file holds five) and must be
//! refused with the diagnostic its header names, rendered as a snapshot a person has read.
//!
//! Header of a fixture (leading `#` lines):
//!
//! ```yaml
//! # expect: CODE [CODE ...]        first line, required: codes that must all be reported
//! # expect-text: SUBSTRING         optional, repeatable: text the rendered report must contain
//! # note: ...                      anything else is a comment for the reader
//! ```
//!
//! Beyond the header, every diagnostic must say what is wrong (a message), where (a span inside
//! the file) and what to do (a help), as DESIGN.md asks of every failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use berth::diag::Report;

/// What a fixture's header promises.
struct Expect {
    codes: Vec<String>,
    texts: Vec<String>,
}

fn header(name: &str, text: &str) -> Result<Expect, String> {
    let mut lines = text.lines();
    let codes: Vec<String> = lines
        .next()
        .and_then(|l| l.strip_prefix("# expect:"))
        .ok_or_else(|| format!("{name}: the first line must be `# expect: CODE [CODE ...]`"))?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if codes.is_empty() {
        return Err(format!("{name}: `# expect:` names no code"));
    }
    let texts = lines
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect-text:"))
        .map(|t| t.trim().to_owned())
        .collect();
    Ok(Expect { codes, texts })
}

fn load(name: &str, text: &str) -> Report {
    let display = Path::new("fixtures/invalid").join(name);
    berth::spec::load_str(&display, text.to_owned()).report
}

/// Every promise of the header and of DESIGN.md ("what, where, what to do"), as a list of
/// broken ones (empty when the fixture is handled right).
fn problems(name: &str, text: &str, report: &Report, rendered: &str) -> Vec<String> {
    let mut out = Vec::new();
    let expect = match header(name, text) {
        Ok(e) => e,
        Err(e) => return vec![e],
    };
    let codes: Vec<&str> = report.diagnostics.iter().map(|d| d.code.as_str()).collect();
    if !report.has_errors() {
        out.push(format!(
            "{name}: accepted without an error (diagnostics: {codes:?})"
        ));
    }
    for want in &expect.codes {
        if !codes.contains(&want.as_str()) {
            out.push(format!("{name}: expected code `{want}`, got {codes:?}"));
        }
    }
    for want in &expect.texts {
        if !rendered.contains(want.as_str()) {
            out.push(format!("{name}: the report does not contain `{want}`"));
        }
    }
    let source = report.source.as_str();
    let in_file = |offset: usize, len: usize| {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= source.len())
            && source.is_char_boundary(offset)
            && source.is_char_boundary(offset + len)
    };
    for d in &report.diagnostics {
        let what = format!("{name}: [{}] {:?}", d.code, d.message);
        if d.message.trim().is_empty() {
            out.push(format!("{what}: empty message"));
        }
        if d.help.as_deref().is_none_or(|h| h.trim().is_empty()) {
            out.push(format!("{what}: no help saying what to do"));
        }
        match d.span {
            None => out.push(format!("{what}: no location in the file")),
            Some(s) if !in_file(s.offset(), s.len()) => {
                out.push(format!("{what}: span {s:?} is outside the file"))
            }
            Some(_) => {}
        }
        for (s, label) in &d.related {
            if !in_file(s.offset(), s.len()) {
                out.push(format!(
                    "{what}: related span {s:?} ({label}) is outside the file"
                ));
            }
        }
    }
    out
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn invalid_specs() {
    insta::with_settings!({
        snapshot_path => "../../fixtures/invalid/snapshots",
        prepend_module_to_snapshot => false,
    }, {
        insta::glob!("../../fixtures/invalid", "*.yaml", |path| {
            let name = file_name(path);
            let text = std::fs::read_to_string(path).unwrap();
            let report = load(&name, &text);
            let rendered = report.render(false);
            let broken = problems(&name, &text, &report, &rendered);
            assert!(broken.is_empty(), "{}\n\n{rendered}", broken.join("\n"));
            insta::assert_snapshot!(rendered);
        });
    });
}

/// Fixtures the coverage of this suite relies on; removing one fails here.
const REQUIRED: &[&str] = &[
    "unknown-key",
    "missing-required-key",
    "wrong-type",
    "unknown-depends-on",
    "unknown-pod-secret",
    "unknown-volume-in-mount",
    "unknown-rate-limit",
    "unknown-route-pod",
    "unknown-backup-pod",
    "unknown-backup-volume",
    "unknown-pod-region",
    "unknown-region-without-regions",
    "duplicate-pod",
    "duplicate-depends-on-entry",
    "invalid-project-name",
    "invalid-pod-name",
    "dependency-cycle",
    "self-dependency",
    "blue-green-with-volume",
    "two-primary-regions",
    "bad-duration",
    "bad-size",
    "bad-rate",
    "bad-file-mode",
    "bad-port-mapping",
    "bad-mount",
    "image-and-build",
    "no-image",
    "health-cmd-and-http",
    "bad-schedule",
    "relative-backup-path",
    "backup-two-sources",
    "private-key-as-recipient",
    "lint-plaintext-credential",
    "lint-url-with-password",
    "lint-pem-block",
    "lint-forbidden-default-change-me",
    "lint-forbidden-default-postgres-password",
    "lint-debug-in-production",
    "lint-insecure-url",
    "backup-store-tmp",
    "backup-store-root",
    "backup-store-system-dir",
    "lint-backup-store-relative",
    "allow-without-reason",
    "unknown-lint-in-allow",
    "version-2",
    "five-mistakes",
    "rollout-on-failure-unknown",
    "unknown-depends-on-region",
    "depends-on-pod-not-in-region",
    "region-cycle",
];

fn fixtures(dir: &str) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (file_name(&p), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

#[test]
fn fixture_set_is_complete_and_without_copies() {
    let all = fixtures("fixtures/invalid");
    assert!(all.len() >= 30, "only {} fixtures", all.len());
    for stem in REQUIRED {
        assert!(
            all.contains_key(&format!("{stem}.yaml")),
            "fixture `{stem}.yaml` is missing"
        );
    }
    // One mistake per file: two files with the same spec (header aside) test the same thing.
    let mut bodies: BTreeMap<String, &str> = BTreeMap::new();
    let mut codes = BTreeSet::new();
    for (name, text) in &all {
        let body: String = text
            .lines()
            .skip_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        if let Some(other) = bodies.insert(body, name) {
            panic!("`{name}` and `{other}` are the same spec");
        }
        codes.extend(header(name, text).unwrap().codes);
    }
    assert!(
        codes.len() >= 25,
        "only {} distinct codes are expected: {codes:?}",
        codes.len()
    );
    // Several mistakes in one file are all reported together.
    let five = header("five-mistakes.yaml", &all["five-mistakes.yaml"])
        .unwrap()
        .codes;
    assert_eq!(five.iter().collect::<BTreeSet<_>>().len(), 5, "{five:?}");
}

#[test]
fn an_empty_spec_is_refused() {
    for text in ["", "  \n\n\t\n"] {
        let report = load("empty.yaml", text);
        let codes: Vec<&str> = report.diagnostics.iter().map(|d| d.code.as_str()).collect();
        assert_eq!(codes, ["empty-spec"], "{text:?}");
        let d = &report.diagnostics[0];
        assert!(d.is_error() && d.message.contains("empty"), "{}", d.message);
        assert!(d.help.is_some());
    }
}
