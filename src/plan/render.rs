//! Renderers of a [`Plan`]: human (Terraform-like), JSON (versioned, documented in
//! docs/plan-json.md) and Markdown (for a pull-request comment).

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};

use super::{Action, Change, Plan, ReplaceOrder};
use crate::observe::Origin;

fn style(action: Action) -> Style {
    let color = match action {
        Action::Create => AnsiColor::Green,
        Action::Update => AnsiColor::Yellow,
        Action::Replace => AnsiColor::Magenta,
        Action::Delete => AnsiColor::Red,
        Action::Heal => AnsiColor::Cyan,
        Action::NoOp => AnsiColor::White,
    };
    Style::new().fg_color(Some(color.into()))
}

/// `"text"` with control characters escaped, so a value cannot break the layout; a list
/// (already JSON, e.g. a command) is shown as it is.
fn quote(v: &str) -> String {
    let list = v.starts_with('[') && v.ends_with(']');
    let mut out = String::with_capacity(v.len() + 2);
    if !list {
        out.push('"');
    }
    for c in v.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if !list {
        out.push('"');
    }
    out
}

fn origin(plan: &Plan) -> String {
    let mut s = match &plan.observed {
        Origin::Spec { file } => format!("against `{file}`"),
        Origin::Engines { regions } => {
            let r: Vec<String> = regions.iter().map(|r| format!("`{r}`")).collect();
            format!(
                "against the engine of {} {}",
                if r.len() == 1 { "region" } else { "regions" },
                r.join(", ")
            )
        }
    };
    // Rate limits are compared through the proxy's rendered config, which holds them all.
    let kinds: Vec<&str> = plan
        .unobserved
        .iter()
        .filter(|k| **k != crate::graph::Kind::RateLimit)
        .map(|k| k.as_str())
        .collect();
    if !kinds.is_empty() {
        s.push_str(&format!(" (not compared yet: {})", kinds.join(", ")));
    }
    s
}

/// The summary sentence, e.g. `1 to create, 2 to replace, 0 to delete`.
pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    if !plan.has_changes() {
        return format!("No changes: {} resources are up to date.", s.no_op);
    }
    let mut parts = vec![format!("{} to create", s.create)];
    if s.update > 0 {
        parts.push(format!("{} to update", s.update));
    }
    parts.push(format!("{} to replace", s.replace));
    parts.push(format!("{} to delete", s.delete));
    if s.heal > 0 {
        parts.push(format!("{} to heal", s.heal));
    }
    format!("Plan: {}; {} unchanged.", parts.join(", "), s.no_op)
}

/// What happens to a resource and why: `replace, blue-green: image forces replacement`.
fn describe(c: &Change) -> String {
    let verb = match (c.replace_order, c.address.kind, c.action) {
        (Some(ReplaceOrder::CreateBeforeDestroy), ..) => "replace, blue-green",
        (Some(ReplaceOrder::DestroyBeforeCreate), ..) => "replace, recreate",
        // A job is not created or replaced: it runs.
        (None, crate::graph::Kind::Job, Action::Create) => "run",
        (None, crate::graph::Kind::Job, Action::Replace | Action::Heal) => "run again",
        (None, ..) => c.action.verb(),
    };
    match &c.reason {
        Some(r) => format!("{verb}: {r}"),
        None => verb.to_owned(),
    }
}

/// One line of a change's fields: a field, or a line of a multi-line field's diff.
enum Line {
    /// `+`, `-` or `~` and the field's line after it.
    Field(char, String),
    /// `+`, `-` or ` ` and the line.
    Diff(char, String),
}

/// Where the lines of a multi-line field's diff start.
const DIFF_INDENT: &str = "          ";

/// The lines of the changed fields, without colour: one per field, and a multi-line value
/// (the proxy's config) as a unified diff of its lines (3 lines of context).
fn field_lines(c: &Change) -> Vec<Line> {
    if c.action == Action::Delete {
        return Vec::new();
    }
    let mut out = Vec::new();
    for f in &c.fields {
        let multiline = |v: &Option<String>| v.as_ref().is_some_and(|v| v.contains('\n'));
        let sign = match (&f.old, &f.new) {
            (None, None) => continue,
            (None, Some(_)) => '+',
            (Some(_), None) => '-',
            (Some(_), Some(_)) => '~',
        };
        let is_multiline = multiline(&f.old) || multiline(&f.new);
        let line = match (&f.old, &f.new) {
            _ if is_multiline => format!("{}:", f.field),
            (None, Some(n)) => format!("{}: {}", f.field, quote(n)),
            (Some(o), None) => format!("{}: {}", f.field, quote(o)),
            (Some(o), Some(n)) => format!("{}: {} -> {}", f.field, quote(o), quote(n)),
            (None, None) => continue,
        };
        out.push(Line::Field(
            sign,
            if f.forces_replacement {
                format!("{line}  # forces replacement")
            } else {
                line
            },
        ));
        if is_multiline {
            diff_lines(
                f.old.as_deref().unwrap_or(""),
                f.new.as_deref().unwrap_or(""),
                &mut out,
            );
        }
    }
    out
}

/// A unified diff of two texts' lines, control characters escaped. Patience diff: fast on
/// a sweeping change to a large config, and with no deadline the same texts always give the
/// same diff (a plan does not depend on the clock).
fn diff_lines(old: &str, new: &str, out: &mut Vec<Line>) {
    let diff = similar::TextDiff::configure()
        .algorithm(similar::Algorithm::Patience)
        .diff_lines(old, new);
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        out.push(Line::Diff(' ', hunk.header().to_string()));
        for change in hunk.iter_changes() {
            let sign = match change.tag() {
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
                similar::ChangeTag::Equal => ' ',
            };
            let mut text = String::new();
            for ch in change.value().trim_end_matches('\n').chars() {
                if ch.is_control() && ch != '\t' {
                    text.extend(ch.escape_default());
                } else {
                    text.push(ch);
                }
            }
            out.push(Line::Diff(sign, text));
        }
    }
}

/// The changes (not the unchanged) grouped by region: first those of no region (the
/// spec's secret files, on this machine), then each region's, in the order the plan was
/// observed in (the primary first), then any other region in the order of its first
/// change. Each group keeps the plan's order. A plan of a single-region spec (whose
/// addresses name no region) is one group, `None`.
pub fn by_region(plan: &Plan) -> Vec<(Option<&str>, Vec<&Change>)> {
    let mut groups: Vec<(Option<&str>, Vec<&Change>)> = vec![(None, Vec::new())];
    if let Origin::Engines { regions } = &plan.observed {
        groups.extend(regions.iter().map(|r| (Some(r.as_str()), Vec::new())));
    }
    for c in plan.changes.iter().filter(|c| c.action != Action::NoOp) {
        let region = c.address.region.as_deref();
        match groups.iter_mut().find(|(r, _)| *r == region) {
            Some((_, list)) => list.push(c),
            None => groups.push((region, vec![c])),
        }
    }
    groups.retain(|(_, list)| !list.is_empty());
    groups
}

/// The heading of a group of [`by_region`], when the plan names regions.
fn group_heading(region: Option<&str>) -> String {
    match region {
        Some(r) => format!("Region `{r}`:"),
        None => "Not per region (on this machine):".to_owned(),
    }
}

/// Whether a plan's changes name regions (a spec with several): they are then shown by
/// region.
fn has_regions(groups: &[(Option<&str>, Vec<&Change>)]) -> bool {
    groups.iter().any(|(r, _)| r.is_some())
}

/// The human rendering; `color` adds ANSI styles (the caller decides, honouring NO_COLOR
/// and whether output is a terminal).
pub fn human(plan: &Plan, color: bool) -> String {
    let mut out = String::new();
    let bold = Style::new().bold();
    let paint = |s: Style, text: &str| {
        if color {
            format!("{}{text}{}", s.render(), s.render_reset())
        } else {
            text.to_owned()
        }
    };
    let _ = writeln!(
        out,
        "berth plan for project `{}`, {}\n",
        plan.project,
        origin(plan)
    );
    let mut gates = Vec::new();
    let groups = by_region(plan);
    let headed = has_regions(&groups);
    for (region, list) in &groups {
        if headed {
            let _ = writeln!(out, "{}\n", paint(bold, &group_heading(*region)));
        }
        for c in list {
            change_human(&mut out, c, &paint);
            for g in &c.gates {
                gates.push(format!("  {}: {g}", c.address));
            }
        }
    }
    let _ = writeln!(out, "{}", paint(bold, &summary_line(plan)));
    if !gates.is_empty() {
        let _ = writeln!(out, "\nGates apply will run after these changes:");
        for g in gates {
            let _ = writeln!(out, "{g}");
        }
    }
    out
}

/// One change in the human rendering: its head line, its fields, a blank line.
fn change_human(out: &mut String, c: &Change, paint: &dyn Fn(Style, &str) -> String) {
    let head = format!("{:>3} {}  ({})", c.symbol(), c.address, describe(c));
    let _ = writeln!(out, "{}", paint(style(c.action).bold(), &head));
    for l in field_lines(c) {
        let line = match l {
            Line::Field(sign, text) => paint(style(c.action), &format!("      {sign} {text}")),
            // `+` and `-` lines of a diff in the colours of a creation and a deletion.
            Line::Diff(sign, text) => {
                let s = match sign {
                    '+' => style(Action::Create),
                    '-' => style(Action::Delete),
                    _ => Style::new(),
                };
                paint(s, format!("{DIFF_INDENT}{sign}{text}").trim_end())
            }
        };
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
}

/// The JSON rendering (pretty, stable key and change order).
pub fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).unwrap_or_default();
    s.push('\n');
    s
}

/// The most a pull-request comment holds (GitHub's limit, in characters); the Markdown
/// plan is cut to fit in as many bytes, which is never more characters.
pub const COMMENT_LIMIT: usize = 65_536;

/// The Markdown rendering for a pull-request comment, at most [`COMMENT_LIMIT`] bytes: a
/// plan too long for that is cut at a line, with a note saying what was left out.
pub fn markdown(plan: &Plan) -> String {
    let mut head = String::new();
    let _ = writeln!(head, "### berth plan: `{}`\n", plan.project);
    let _ = writeln!(head, "Compared {}.\n", origin(plan));
    let _ = writeln!(head, "**{}**\n", summary_line(plan));
    let groups = by_region(plan);
    if groups.is_empty() {
        return head;
    }
    let headed = has_regions(&groups);
    let mut table = Vec::new();
    for (i, (region, list)) in groups.iter().enumerate() {
        if headed {
            if i > 0 {
                table.push(String::new());
            }
            let heading = group_heading(*region);
            table.push(format!("#### {}", heading.trim_end_matches(':')));
            table.push(String::new());
        }
        table.push("| | resource | change |".to_owned());
        table.push("|---|---|---|".to_owned());
        for c in list {
            let why = describe(c).replace('|', "\\|");
            table.push(format!("| `{}` | `{}` | {why} |", c.symbol(), c.address));
        }
    }
    let changed: Vec<&Change> = groups.iter().flat_map(|(_, l)| l.iter().copied()).collect();
    let details = details_lines(&changed);
    fit(head, &table, &details)
}

/// The lines of the field changes' `diff` block. Its first column is the sign a diff
/// block colours (`+` green, `-` red), and no sign is written twice: a created resource's
/// lines start with one `+`, a field added to a changed resource with its own `+`.
fn details_lines(changed: &[&Change]) -> Vec<String> {
    let mut out = Vec::new();
    for c in changed {
        let marker = match c.action {
            Action::Create => '+',
            Action::Delete => '-',
            _ => ' ',
        };
        // A created or deleted resource's sign is the first column's alone.
        let symbol = if marker == ' ' {
            format!("{} ", c.symbol())
        } else {
            String::new()
        };
        out.push(format!("{marker} {symbol}{}  ({})", c.address, describe(c)));
        for l in field_lines(c) {
            out.push(match l {
                Line::Field(sign, text) => {
                    let (first, inner) = match sign {
                        '+' | '-' => (sign, ' '),
                        _ => (marker, sign),
                    };
                    format!("{first}      {inner} {text}")
                }
                // The diff's own sign in the first column, where a diff block colours it.
                Line::Diff(sign, text) => {
                    let first = if sign == ' ' { marker } else { sign };
                    format!("{first}{DIFF_INDENT} {text}").trim_end().to_owned()
                }
            });
        }
    }
    out
}

/// Room kept for the note that says what was cut.
const NOTE_ROOM: usize = 512;

/// The whole comment when it fits; else the head, as much of the table as fits and, only
/// when all of the table does, as many lines of the field changes, each cut at a line and
/// followed by a note.
fn fit(head: String, table: &[String], details: &[String]) -> String {
    const OPEN: &str = "\n<details><summary>Field changes</summary>\n\n```diff\n";
    const CLOSE: &str = "```\n\n</details>\n";
    let size = |lines: &[String]| lines.iter().map(|l| l.len() + 1).sum::<usize>();
    let mut out = head;
    let whole = out.len() + size(table) + OPEN.len() + size(details) + CLOSE.len();
    let budget = if whole <= COMMENT_LIMIT {
        usize::MAX
    } else {
        COMMENT_LIMIT - NOTE_ROOM
    };
    let rows = push_lines(&mut out, table, budget);
    if rows < table.len() {
        let _ = write!(
            out,
            "\n> **Cut to fit a pull-request comment** ({COMMENT_LIMIT} characters at most): \
             the table shows its first {rows} of {} lines, and the field changes are left \
             out. `berth plan` prints the whole plan (`--format json` for a file).\n",
            table.len()
        );
        return out;
    }
    out.push_str(OPEN);
    let lines = push_lines(&mut out, details, budget.saturating_sub(CLOSE.len()));
    out.push_str(CLOSE);
    if lines < details.len() {
        let _ = write!(
            out,
            "\n> **Cut to fit a pull-request comment** ({COMMENT_LIMIT} characters at most): \
             the field changes show their first {lines} of {} lines. `berth plan` prints the \
             whole plan (`--format json` for a file).\n",
            details.len()
        );
    }
    out
}

/// Appends whole lines while `out` stays within `budget` bytes; how many it appended.
fn push_lines(out: &mut String, lines: &[String], budget: usize) -> usize {
    for (i, l) in lines.iter().enumerate() {
        if out.len().saturating_add(l.len() + 1) > budget {
            return i;
        }
        out.push_str(l);
        out.push('\n');
    }
    lines.len()
}
