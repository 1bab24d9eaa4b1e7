//! No input panics the loader: arbitrary bytes, and arbitrary mutations of the examples.
//!
//! For every input, loading, checking, linting and rendering the diagnostics must return
//! normally; when a mutated spec is still valid, its graph must build and its plan against
//! itself must be empty. The number of cases is printed (run with `--nocapture` to see it)
//! and can be raised with `BERTH_FUZZ_CASES` (default 1500 per property).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const EXAMPLES: &[&str] = &[
    include_str!("../../examples/quickstart/berth.yaml"),
    include_str!("../../examples/ai-agents/berth.yaml"),
    include_str!("../../examples/multi-region/berth.yaml"),
    include_str!("../../examples/multi-region/berth.v2.yaml"),
    include_str!("../../examples/production/berth.yaml"),
];

fn cases() -> u32 {
    std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

/// Loads and renders; for valid specs, graphs and plans too. Panics are the failures.
fn exercise(text: String) -> bool {
    let loaded = berth::spec::load_str(Path::new("fuzz.yaml"), text);
    let _ = loaded.report.render(false);
    let _ = loaded.report.to_json();
    if let Some(spec) = loaded.valid_spec() {
        let graph = berth::resources::graph(spec).expect("a valid spec always has a graph");
        let _ = graph.to_dot();
        let plan = berth::ops::plan_against(spec, spec, "same").expect("plan");
        assert!(
            !plan.has_changes(),
            "a spec planned against itself has no changes"
        );
        let _ = berth::plan::render::human(&plan, true);
        return true;
    }
    false
}

/// Runs `f` on `cases()` inputs; returns how many were valid specs.
fn run<S: Strategy>(name: &str, strategy: S, f: impl Fn(S::Value) -> bool) -> usize
where
    S::Value: std::fmt::Debug,
{
    let ran = AtomicUsize::new(0);
    let valid = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |input| {
        ran.fetch_add(1, Ordering::Relaxed);
        if f(input) {
            valid.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    eprintln!(
        "{name}: {} cases ran, {} of them still valid specs",
        ran.load(Ordering::Relaxed),
        valid.load(Ordering::Relaxed)
    );
    assert!(ran.load(Ordering::Relaxed) >= cases() as usize);
    valid.load(Ordering::Relaxed)
}

#[test]
fn arbitrary_bytes_never_panic() {
    let _ = run(
        "arbitrary bytes",
        proptest::collection::vec(any::<u8>(), 0..2048),
        |bytes| exercise(String::from_utf8_lossy(&bytes).into_owned()),
    );
}

/// One edit of a spec's text.
#[derive(Clone, Debug)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Indent { line: usize, by: usize },
    ReplaceScalar { line: usize, with: String },
}

fn edit() -> impl Strategy<Value = Edit> {
    let yamlish = proptest::string::string_regex(
        r"([a-z_]{1,8}|[:\-\[\]{}&*!|>#,'\x22 ]|\n|[0-9]{1,4}|[0-9]{9,22}|-[0-9]{1,3}|age1|0400|5s|2GiB|100/min|@|~|\t|é|日本|🚀|\u{200b})",
    )
    .expect("regex");
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), proptest::collection::vec(yamlish, 1..6)).prop_map(|(at, parts)| {
            Edit::Insert {
                at,
                text: parts.concat(),
            }
        }),
        any::<usize>().prop_map(|line| Edit::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines { a, b }),
        (any::<usize>(), 1usize..5).prop_map(|(line, by)| Edit::Indent { line, by }),
        (any::<usize>(), "[a-z0-9:/._-]{0,12}")
            .prop_map(|(line, with)| Edit::ReplaceScalar { line, with }),
    ]
}

fn apply(text: &str, e: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let n = lines.len().max(1);
    match e {
        Edit::Delete { at, len } => {
            let at = at % text.len().max(1);
            let mut s: Vec<char> = text.chars().collect();
            let at = at.min(s.len());
            let end = (at + len).min(s.len());
            s.drain(at..end);
            return s.into_iter().collect();
        }
        Edit::Insert { at, text: ins } => {
            let chars: Vec<char> = text.chars().collect();
            let at = at % (chars.len() + 1);
            let mut s: String = chars[..at].iter().collect();
            s.push_str(ins);
            s.extend(&chars[at..]);
            return s;
        }
        Edit::DuplicateLine { line } => {
            if let Some(l) = lines.get(line % n).cloned() {
                lines.insert(line % n, l);
            }
        }
        Edit::SwapLines { a, b } => {
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
        }
        Edit::Indent { line, by } => {
            if let Some(l) = lines.get_mut(line % n) {
                *l = format!("{}{l}", " ".repeat(*by));
            }
        }
        Edit::ReplaceScalar { line, with } => {
            if let Some(l) = lines.get_mut(line % n)
                && let Some(colon) = l.find(": ")
            {
                l.truncate(colon + 2);
                l.push_str(with);
            }
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn mutated_examples_never_panic() {
    let valid = run(
        "mutated examples",
        (0..EXAMPLES.len(), proptest::collection::vec(edit(), 1..4)),
        |(i, edits)| {
            let mut text = EXAMPLES[i].to_owned();
            for e in &edits {
                text = apply(&text, e);
            }
            exercise(text)
        },
    );
    // The mutations must leave enough specs valid to exercise the graph and the planner.
    assert!(
        valid * 20 > cases() as usize,
        "only {valid} mutated specs were valid"
    );
}
