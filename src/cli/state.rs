//! `berth recover`, `history`, `rollback`, `unlock`: the state directory's commands.

use std::path::Path;

use super::{exit, print, print_warnings, stdout_color};
use crate::clock::format_time;
use crate::ops::{self, Goal, OpError};
use crate::plan::render;
use crate::state::{StateDir, lock, revisions};

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// After rolling back, apply the spec again (finish what the interrupted apply began);
    /// for an interrupted restore, restore the same backup again.
    #[arg(long)]
    pub forward: bool,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// `json`: every revision as recorded.
    #[arg(long, value_enum, default_value_t = HistoryFormat::Human)]
    pub format: HistoryFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum HistoryFormat {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The revision to go back to (default: the one before the latest).
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,
    /// Only report whether the live state matches the latest revision: exit 0 when it
    /// does, 2 (with the differences) when it does not.
    #[arg(long)]
    pub check_only: bool,
    #[command(flatten)]
    pub apply: super::apply::Args,
}

fn state_of(file: &Path, state_dir: Option<&Path>) -> Result<(String, StateDir), OpError> {
    let valid = ops::load_valid(file)?;
    let project = valid.spec.project.value.clone();
    let dir = StateDir::locate(&project, state_dir);
    Ok((project, dir))
}

pub fn recover(file: &Path, state_dir: Option<&Path>, args: RecoverArgs) -> Result<u8, OpError> {
    // A restore drill that was killed left a scratch project: removed first.
    let drill = crate::backup::ops::Backups::open_for_drill_sweep(file, state_dir)?;
    let swept = match &drill {
        Some(b) => b.recover_drill()?,
        None => None,
    };
    drop(drill);
    if let Some(line) = &swept {
        eprintln!("Recovered: {line}.");
    }
    let r = ops::recover(file, state_dir)?;
    for l in &r.lines {
        eprintln!("{l}");
    }
    if r.nothing && swept.is_some() {
        // Said above.
    } else if r.nothing {
        eprintln!("Nothing to recover: no apply was interrupted.");
    } else {
        if let Some((name, id)) = &r.restore {
            eprintln!(
                "Recovered: the interrupted restore of `{name}` ({id}) was rolled back; the data is as it was before it."
            );
        } else if let Some(name) = &r.backup {
            eprintln!(
                "Recovered: the pods the interrupted backup `{name}` had stopped (`consistent: stop`) run again."
            );
        } else if r.finished_commit {
            eprintln!(
                "Recovered: the interrupted apply had passed every gate; its removals are finished, and the new revision stays."
            );
        } else {
            eprintln!("Recovered: the interrupted apply was rolled back.");
        }
    }
    if args.forward
        && let Some((name, id)) = &r.restore
    {
        eprintln!("Restoring `{name}` from {id} again (--forward):");
        let b =
            crate::backup::ops::Backups::open(file, state_dir, Some(std::slice::from_ref(name)))?;
        let command = format!("berth backup restore {name}");
        let again = crate::ops::UnwindCtx {
            spec_path: file,
            state_dir,
            command: &command,
        };
        let done = b.restore(name, Some(id), false, file, &again)?;
        for l in &done.lines {
            eprintln!("{l}");
        }
        return Ok(exit::OK);
    }
    // A restart is finished by the rollback alone: applying the spec would carry out
    // changes nobody asked the restart for.
    let restart = r
        .interrupted
        .as_ref()
        .is_some_and(|(command, _)| command.starts_with("berth restart"));
    if args.forward && restart {
        eprintln!("The interrupted command was a restart: nothing is applied (--forward).");
        return Ok(exit::OK);
    }
    if args.forward {
        eprintln!("Applying the spec again (--forward):");
        // With the profiles the interrupted apply had (`apply --profile`).
        let profile = r.interrupted.map(|(_, p)| p).unwrap_or_default();
        return super::apply::run(
            file,
            state_dir,
            super::apply::Args {
                profile,
                ..super::apply::Args::automated()
            },
            super::apply::Target {
                goal: Goal::Spec,
                command: "berth recover --forward".into(),
                revision: None,
                restart: None,
            },
        );
    }
    Ok(exit::OK)
}

/// The version of `history --format json` (docs/json.md).
pub const HISTORY_FORMAT: u32 = 1;

pub fn history(file: &Path, state_dir: Option<&Path>, args: HistoryArgs) -> Result<u8, OpError> {
    let (project, dir) = state_of(file, state_dir)?;
    let list = revisions::list(&dir)?;
    match args.format {
        HistoryFormat::Json => {
            let doc = serde_json::json!({
                "format_version": HISTORY_FORMAT,
                "project": project,
                "revisions": list,
            });
            let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            text.push('\n');
            print(&text);
        }
        HistoryFormat::Human => {
            if list.is_empty() {
                eprintln!(
                    "No revisions of `{project}` yet (in {}).",
                    dir.path.display()
                );
                return Ok(exit::OK);
            }
            let mut out = format!(
                "{:>4}  {:<23}  {:<22}  {:<26}  {:<30}  images\n",
                "rev", "applied", "by", "command", "changes"
            );
            for r in &list {
                let s = &r.summary;
                let changes = format!(
                    "+{} ~{} -/+{} -{} !{}",
                    s.create, s.update, s.replace, s.delete, s.heal
                );
                // A revision that reached only some regions says which.
                let partial = match (&r.regions, &r.halted_at) {
                    (Some(regions), Some(at)) => {
                        format!("  (partial: {}; halted at {at})", regions.join(", "))
                    }
                    (Some(regions), None) => format!("  (partial: {})", regions.join(", ")),
                    _ => String::new(),
                };
                let partial = if r.profiles.is_empty() {
                    partial
                } else {
                    format!("{partial}  (profiles: {})", r.profiles.join(", "))
                };
                out.push_str(&format!(
                    "{:>4}  {:<23}  {:<22}  {:<26}  {:<30}  {}{partial}\n",
                    r.revision,
                    format_time(r.at),
                    r.who,
                    r.command,
                    changes,
                    r.images.len()
                ));
            }
            print(&out);
        }
    }
    Ok(exit::OK)
}

pub fn rollback(file: &Path, state_dir: Option<&Path>, args: RollbackArgs) -> Result<u8, OpError> {
    let (project, dir) = state_of(file, state_dir)?;
    let latest = revisions::latest(&dir)?;
    if args.check_only {
        if latest == 0 {
            return Err(OpError::Refused {
                message: format!("`{project}` has no revision to compare with"),
                help: "apply first; each successful apply records a revision".into(),
            });
        }
        let opts = ops::Opts {
            state_dir: state_dir.map(Path::to_path_buf),
            revision: Some(latest),
            ..Default::default()
        };
        let session = ops::Session::open(file, Goal::Spec, &opts)?;
        print_warnings(&session.project.report);
        if session.plan.has_changes() {
            print(&render::human(&session.plan, stdout_color()));
            eprintln!("The live state differs from revision {latest}.");
            return Ok(exit::CHANGES);
        }
        eprintln!("The live state matches revision {latest}.");
        return Ok(exit::OK);
    }
    let to = match args.to {
        Some(n) => n,
        None if latest >= 2 => latest - 1,
        None => {
            return Err(OpError::Refused {
                message: format!("`{project}` has no earlier revision to roll back to"),
                help: "`berth history` lists the revisions; give one with --to N".into(),
            });
        }
    };
    let target = revisions::load(&dir, to)?;
    // A destroy of some regions says nothing of what ran in the others: going "back" to it
    // would remove every region.
    if target.destroyed
        && let Some(regions) = &target.regions
    {
        return Err(OpError::Refused {
            message: format!(
                "revision {to} of `{project}` destroyed only {}: it cannot be rolled back to",
                regions
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            help: format!(
                "give another revision with --to N (`berth history` lists them), or run `berth destroy --region {}` again",
                regions.join(" --region ")
            ),
        });
    }
    let goal = if target.destroyed {
        eprintln!("Rolling back `{project}` to revision {to}, a destroy: nothing runs.");
        Goal::Nothing
    } else {
        eprintln!("Rolling back `{project}` to revision {to} (its spec, its images by id):");
        Goal::Spec
    };
    super::apply::run(
        file,
        state_dir,
        args.apply,
        super::apply::Target {
            goal,
            command: format!("berth rollback --to {to}"),
            revision: Some(to),
            restart: None,
        },
    )
}

pub fn unlock(file: &Path, state_dir: Option<&Path>) -> Result<u8, OpError> {
    let (project, dir) = state_of(file, state_dir)?;
    match lock::clear(&dir, &project)? {
        Some(h) => eprintln!(
            "Removed the lock record of `{project}` left by {h}, which is no longer running."
        ),
        None => eprintln!("`{project}` is not locked."),
    }
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Write the observed state (engines and secret files, no secret values) as JSON to
    /// stdout, for `berth plan --state FILE` where the hosts cannot be reached.
    Snapshot,
}

pub fn state(file: &Path, state_dir: Option<&Path>, args: StateArgs) -> Result<u8, OpError> {
    match args.command {
        StateCommand::Snapshot => {
            let opts = ops::Opts {
                state_dir: state_dir.map(Path::to_path_buf),
                ..Default::default()
            };
            let snap = ops::snapshot(file, &opts)?;
            let mut text = serde_json::to_string_pretty(&snap).unwrap_or_default();
            text.push('\n');
            print(&text);
            Ok(exit::OK)
        }
    }
}
