//! `berth status` (`berth ps`): the spec's pod instances as their engines have them now;
//! `berth check`: their health and post-deploy checks, run now.

use std::path::Path;

use clap::ValueEnum;

use super::{exit, print};
use crate::ops::{self, Instance, OpError, Status};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Exit 0 when every instance is running (and healthy, where it has a health check), 1
/// otherwise: monitoring can run it.
pub fn run(file: &Path, state_dir: Option<&Path>, args: Args) -> Result<u8, OpError> {
    Ok(output(&ops::status(file, state_dir)?, args.format, human))
}

/// `berth check`: exit 0 when every instance is running, healthy where it has a health
/// check, and passes each of its pod's post-deploy checks; 1 otherwise (`berth check ||
/// berth rollback`).
pub fn check(file: &Path, state_dir: Option<&Path>, args: Args) -> Result<u8, OpError> {
    Ok(output(
        &ops::check(file, state_dir)?,
        args.format,
        check_human,
    ))
}

/// Prints `status` as `human` renders it, or as JSON; 0 when it is `ok`, else 1.
fn output(status: &Status, format: Format, human: fn(&Status) -> String) -> u8 {
    print(&match format {
        Format::Human => human(status),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(status).unwrap_or_default();
            text.push('\n');
            text
        }
    });
    if status.ok { exit::OK } else { exit::ERROR }
}

fn check_human(s: &Status) -> String {
    let mut out = String::new();
    let (mut passed, mut failed) = (0, 0);
    for i in &s.instances {
        let verdict = |ok: bool| if ok { "ok" } else { "FAILED" };
        let running = i.state == "running";
        let health_ok = running && matches!(i.health.as_str(), "healthy" | "none");
        let what = match i.health.as_str() {
            "none" => format!("state: {} (no health check)", i.state),
            h => format!("health: {h}"),
        };
        out.push_str(&format!("{:<7} {}  {what}", verdict(health_ok), i.address));
        if let Some(d) = i.detail.as_deref().filter(|_| !health_ok) {
            out.push_str(&format!(" ({d})"));
        }
        out.push('\n');
        for c in &i.checks {
            out.push_str(&format!("{:<7} {}  {}", verdict(c.ok), i.address, c.check));
            if let Some(d) = &c.detail {
                out.push_str(&format!(": {d}"));
            }
            out.push('\n');
        }
        let n = 1 + i.checks.len();
        let bad = usize::from(!health_ok) + i.checks.iter().filter(|c| !c.ok).count();
        failed += bad;
        passed += n - bad;
    }
    out.push_str(&format!(
        "\n{passed} passed, {failed} failed, on {} instance(s).\n",
        s.instances.len()
    ));
    out
}

fn human(s: &Status) -> String {
    let regions = s.instances.iter().any(|i| i.address.contains('@'));
    let mut rows = vec![
        [
            "POD", "REGION", "STATE", "HEALTH", "IMAGE", "ID", "UP", "RESTARTS", "PORTS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for i in &s.instances {
        rows.push(vec![
            i.address.split('@').next().unwrap_or_default().to_owned(),
            i.region.clone(),
            i.state.clone(),
            i.health.clone(),
            image(i),
            i.id.as_deref()
                .map_or("-", crate::engine::names::short)
                .to_owned(),
            i.uptime_seconds.map_or("-".into(), uptime),
            i.restarts.map_or("-".into(), |r| r.to_string()),
            if i.ports.is_empty() {
                "-".into()
            } else {
                i.ports.join(", ")
            },
        ]);
    }
    if !regions {
        for r in &mut rows {
            r.remove(1);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let revision = match s.revision {
        0 => "no revision applied yet".to_owned(),
        n => format!("revision {n}"),
    };
    let mut out = format!("Project {}, {revision}\n\n", s.project);
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let problems: Vec<String> = s
        .instances
        .iter()
        .filter(|i| !i.ok)
        .map(|i| {
            format!(
                "  {}: {} ({})",
                i.address,
                i.detail.as_deref().unwrap_or("not running"),
                i.container
            )
        })
        .collect();
    if problems.is_empty() {
        out.push_str(&format!(
            "\nAll {} instance(s) running{}.\n",
            s.instances.len(),
            if s.instances.iter().any(|i| i.health == "healthy") {
                ", healthy where checked"
            } else {
                ""
            }
        ));
    } else {
        out.push_str(&format!("\n{} instance(s) not well:\n", problems.len()));
        for p in problems {
            out.push_str(&p);
            out.push('\n');
        }
    }
    out
}

fn image(i: &Instance) -> String {
    match (&i.image, &i.image_id) {
        (Some(r), Some(id)) => format!("{r} ({})", crate::engine::names::short_image(id)),
        (Some(r), None) => r.clone(),
        (None, Some(id)) => crate::engine::names::short_image(id).to_owned(),
        (None, None) => "-".into(),
    }
}

/// `3d4h`, `2h5m`, `5m3s`, `42s`.
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uptime_is_short_and_in_two_units() {
        assert_eq!(super::uptime(42), "42s");
        assert_eq!(super::uptime(303), "5m3s");
        assert_eq!(super::uptime(7500), "2h5m");
        assert_eq!(super::uptime(273_600), "3d4h");
    }
}
