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
    let verb = match c.replace_order {
        Some(ReplaceOrder::CreateBeforeDestroy) => "replace, blue-green",
        Some(ReplaceOrder::DestroyBeforeCreate) => "replace, recreate",
        None => c.action.verb(),
    };
    match &c.reason {
        Some(r) => format!("{verb}: {r}"),
        None => verb.to_owned(),
    }
}

/// One line of a change's fields: a field, or a line of a multi-line field's diff.
enum Line {
    Field(String),
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
        let line = match (&f.old, &f.new) {
            _ if multiline(&f.old) || multiline(&f.new) => {
                let sign = match (&f.old, &f.new) {
                    (None, _) => '+',
                    (_, None) => '-',
                    _ => '~',
                };
                format!("      {sign} {}:", f.field)
            }
            (None, Some(n)) => format!("      + {}: {}", f.field, quote(n)),
            (Some(o), None) => format!("      - {}: {}", f.field, quote(o)),
            (Some(o), Some(n)) => format!("      ~ {}: {} -> {}", f.field, quote(o), quote(n)),
            (None, None) => continue,
        };
        out.push(Line::Field(if f.forces_replacement {
            format!("{line}  # forces replacement")
        } else {
            line
        }));
        if multiline(&f.old) || multiline(&f.new) {
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
            Line::Field(text) => paint(style(c.action), &text),
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

/// The Markdown rendering for a pull-request comment.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### berth plan: `{}`\n", plan.project);
    let _ = writeln!(out, "Compared {}.\n", origin(plan));
    let _ = writeln!(out, "**{}**\n", summary_line(plan));
    let groups = by_region(plan);
    if groups.is_empty() {
        return out;
    }
    let headed = has_regions(&groups);
    for (i, (region, list)) in groups.iter().enumerate() {
        if headed {
            let gap = if i > 0 { "\n" } else { "" };
            let heading = group_heading(*region);
            let _ = writeln!(out, "{gap}#### {}\n", heading.trim_end_matches(':'));
        }
        out.push_str("| | resource | change |\n|---|---|---|\n");
        for c in list {
            let why = describe(c);
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} |",
                c.symbol(),
                c.address,
                why.replace('|', "\\|")
            );
        }
    }
    let changed: Vec<&Change> = groups.iter().flat_map(|(_, l)| l.iter().copied()).collect();
    out.push_str("\n<details><summary>Field changes</summary>\n\n```diff\n");
    for c in &changed {
        // A leading `+` or `-` colours the line in a diff block; other changes stay plain.
        let marker = match c.action {
            Action::Create => '+',
            Action::Delete => '-',
            _ => ' ',
        };
        let _ = writeln!(
            out,
            "{marker} {} {}  ({})",
            c.symbol(),
            c.address,
            describe(c)
        );
        for l in field_lines(c) {
            let _ = match l {
                Line::Field(text) => writeln!(out, "{marker}{text}"),
                // The diff's own sign in the first column, where a diff block colours it.
                Line::Diff(sign, text) => {
                    let first = if sign == ' ' { marker } else { sign };
                    let line = format!("{first}{DIFF_INDENT} {text}");
                    writeln!(out, "{}", line.trim_end())
                }
            };
        }
    }
    out.push_str("```\n\n</details>\n");
    out
}
