//! The shape of the code, checked: no import cycle among the top-level modules of `src/`,
//! no file under `src/` over 700 lines and no function over 120 lines (tests excepted).
//! Read from the source text, so that a new cycle or a grown file fails CI where it is made.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 700;
const MAX_FN_LINES: usize = 120;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src is readable")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// The code of a file without its `#[cfg(test)]` module (the rest of the file from there).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Every top-level module that `code` names as `crate::NAME`, in a path or in a
/// `use crate::{A, B::…}` group.
fn uses(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each path of the group at brace depth 0.
            let mut depth = 0;
            let mut word = String::new();
            let mut first = true;
            for ch in group.chars() {
                if ch.is_alphanumeric() || ch == '_' {
                    word.push(ch);
                    continue;
                }
                if !word.is_empty() && depth == 0 && first && modules.contains(&word) {
                    found.insert(word.clone());
                }
                if !word.is_empty() {
                    first = false;
                }
                word.clear();
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => first = true,
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                found.insert(name);
            }
        }
    }
    found
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(m) = module_of(f) else { continue };
        let text = std::fs::read_to_string(f).expect("source is readable");
        let mut deps = uses(without_tests(&text), &modules);
        deps.remove(&m);
        graph.entry(m).or_default().extend(deps);
    }
    graph
}

/// The cycles of `graph`, each as its strongly connected set of modules (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_the_use_reader_reads_groups() {
    let modules: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    assert_eq!(
        uses("use crate::{a::X, b};\nfn f() { crate::c::g() }", &modules),
        modules
    );
    assert!(uses("use crate::{x::{a, b}};", &modules).is_empty());
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_owned()].into());
    g.insert("b".into(), ["c".to_owned()].into());
    g.insert("c".into(), ["a".to_owned()].into());
    assert_eq!(cycles(&g), [vec!["a", "b", "c"]]);
    g.insert("c".into(), BTreeSet::new());
    assert!(cycles(&g).is_empty());
}

#[test]
fn no_import_cycle_among_the_top_level_modules() {
    let graph = module_graph();
    let found = cycles(&graph);
    let explain: Vec<String> = found
        .iter()
        .map(|scc| {
            let edges: Vec<String> = scc
                .iter()
                .flat_map(|m| {
                    graph[m]
                        .iter()
                        .filter(|d| scc.contains(d))
                        .map(move |d| format!("{m} -> {d}"))
                })
                .collect();
            format!("{{{}}}: {}", scc.join(", "), edges.join(", "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles among src's top-level modules:\n{}",
        explain.join("\n")
    );
}

/// `(file, line, name, length)` of every function longer than [`MAX_FN_LINES`], outside
/// test modules; braces counted outside strings, chars and comments.
fn long_functions() -> Vec<(PathBuf, usize, String, usize)> {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut long = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("source is readable");
        let lines: Vec<&str> = without_tests(&text).lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let t = lines[i].trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p))
                || t.starts_with("pub(crate) async fn ")
                || t.starts_with("const fn ")
                || t.starts_with("pub const fn ");
            if !is_fn {
                i += 1;
                continue;
            }
            let name: String = t
                .split("fn ")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let (mut depth, mut opened, start) = (0i64, false, i);
            let mut j = i;
            while j < lines.len() {
                let code = strip_literals(lines[j]);
                if !opened && code.trim_end().ends_with(';') && !code.contains('{') {
                    break; // a declaration without a body
                }
                for ch in code.chars() {
                    match ch {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if opened && depth <= 0 {
                    break;
                }
                j += 1;
            }
            let len = j + 1 - start;
            if opened && len > MAX_FN_LINES {
                long.push((f.clone(), start + 1, name, len));
            }
            i = if opened { j + 1 } else { i + 1 };
        }
    }
    long
}

/// A line without its string and char literals and its `//` comment (close enough for
/// counting braces in rustfmt-formatted code).
fn strip_literals(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '/' if chars.peek() == Some(&'/') => break,
            '\'' => {
                // A char literal ('{', '\'' …) or a lifetime ('a): skip a literal only.
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    let skip = rest.find('\'').map_or(0, |k| k + 1).max(3);
                    for _ in 0..skip {
                        chars.next();
                    }
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[test]
fn no_function_under_src_is_over_120_lines() {
    let long = long_functions();
    let explain: Vec<String> = long
        .iter()
        .map(|(f, line, name, len)| format!("{}:{line}: fn {name}: {len} lines", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        explain.join("\n")
    );
}

#[test]
fn no_file_under_src_is_over_700_lines() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        long.join("\n")
    );
}
