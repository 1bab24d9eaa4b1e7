//! `berth apply` and `berth destroy`: show the plan against the live engines, ask, carry it
//! out with gates and rollback. Progress: spinners on a terminal, plain lines otherwise,
//! JSON lines with `--format json`.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{exit, print, print_warnings, stdout_color};
use crate::apply::{Event, Status};
use crate::ops::{self, Goal, OpError};
use crate::plan::render;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A plan saved by `berth plan --out FILE`: applied as it is, or refused (exit 4) when
    /// a fact it relied on has changed since.
    #[arg(value_name = "PLAN")]
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub common: Args,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Apply without asking (for automation).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Remove volumes that are no longer in the spec, with their data.
    #[arg(long)]
    pub delete_volumes: bool,
    /// Most steps asking the engine for changes at once (a step waiting for its gates
    /// holds none).
    #[arg(long, default_value_t = crate::apply::DEFAULT_PARALLELISM, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallelism: u16,
    /// `json`: the plan, every step and the outcome as JSON lines on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Wait this long (`30s`, `5m`) for another apply of the project to finish, instead of
    /// failing at once.
    #[arg(long, value_name = "DURATION", value_parser = super::duration)]
    pub lock_wait: Option<Duration>,
    /// POST the outcome as JSON to this webhook (`https://...` or `http://...`), instead
    /// of the spec's `notify:`. A failing webhook is a warning, never a failed apply.
    #[arg(long, value_name = "URL")]
    pub notify: Option<String>,
    /// Apply only this region (repeatable): the other regions' engines are not even
    /// connected, and the revision records which regions it covered.
    #[arg(long = "region", value_name = "NAME")]
    pub region: Vec<String>,
    /// Apply the pods of this profile too (repeatable): a pod with `profiles:` is created,
    /// changed or removed only when one of them is chosen. Not for `destroy` (every pod
    /// goes) nor `rollback` (the revision's profiles come back).
    #[arg(long = "profile", value_name = "NAME")]
    pub profile: Vec<String>,
}

impl Args {
    /// `--yes`, everything else by default: for commands that apply on the user's behalf.
    pub fn automated() -> Args {
        Args {
            yes: true,
            delete_volumes: false,
            parallelism: crate::apply::DEFAULT_PARALLELISM,
            format: Format::Human,
            lock_wait: None,
            notify: None,
            region: Vec::new(),
            profile: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// What a run of `apply` converges to: the spec, nothing (`destroy`), or a recorded
/// revision (`rollback`).
pub struct Target {
    pub goal: Goal,
    pub command: String,
    pub revision: Option<u64>,
    /// `berth restart`: the pod (and the one replica) started again, instead of the plan.
    pub restart: Option<(String, Option<u32>)>,
}

pub fn run(
    file: &Path,
    state_dir: Option<&Path>,
    args: Args,
    target: Target,
) -> Result<u8, OpError> {
    run_saved(file, state_dir, args, target, None)
}

/// [`run`], or with a saved plan: apply exactly it, or refuse when it is stale.
pub fn run_saved(
    file: &Path,
    state_dir: Option<&Path>,
    args: Args,
    target: Target,
    saved: Option<&Path>,
) -> Result<u8, OpError> {
    let goal = target.goal;
    if saved.is_some() && !args.region.is_empty() {
        return Err(OpError::Refused {
            message: "`--region` does not go with a saved plan; nothing was changed".into(),
            help: "a saved plan is applied as it was made: make it with the regions you want (`berth plan --out FILE`), or apply without the saved plan".into(),
        });
    }
    if saved.is_some() && !args.profile.is_empty() {
        return Err(OpError::Refused {
            message: "`--profile` does not go with a saved plan; nothing was changed".into(),
            help: "a saved plan is applied with the profiles it was made with: make it with `berth plan --profile NAME --out FILE`".into(),
        });
    }
    if !args.profile.is_empty()
        && (goal == Goal::Nothing || target.revision.is_some() || target.restart.is_some())
    {
        return Err(OpError::Refused {
            message: "`--profile` goes only with `apply`; nothing was changed".into(),
            help: "`destroy` takes every pod down, whatever its profiles, and `rollback` brings back the pods of the profiles its revision was applied with: leave `--profile` out".into(),
        });
    }
    let saved = match saved {
        Some(p) => Some((p, ops::read_saved_plan(p)?)),
        None => None,
    };
    let opts = ops::Opts {
        state_dir: state_dir.map(Path::to_path_buf),
        lock: Some(target.command),
        lock_wait: args.lock_wait,
        revision: target.revision,
        regions: args.region.clone(),
        profiles: match &saved {
            Some((_, s)) => s.profiles.clone(),
            None => args.profile.clone(),
        },
        every_profile: target.restart.is_some(),
        drill: None,
    };
    // A saved plan names its spec; -f (or the default) is used only without one.
    let file = match &saved {
        Some((_, s)) => Path::new(&s.spec),
        None => file,
    };
    let command = opts.lock.clone().unwrap_or_default();
    let mut session = ops::Session::open(file, goal, &opts)?;
    if let Some((pod, replica)) = &target.restart {
        session.restart(pod, *replica)?;
    }
    print_warnings(&session.project.report);
    let started = std::time::Instant::now();
    let notify = session.notify_hook(args.notify.as_deref());
    let verb = match (&target.restart, goal) {
        (Some(_), _) => "Restart",
        (None, Goal::Nothing) => "Destroy",
        (None, Goal::Spec) => "Apply",
    };
    let result = carry_out(&session, args, verb, saved.as_ref());
    if let Some(hook) = notify {
        let outcome = match &result {
            Ok(Outcome::Applied(_)) => "applied",
            Ok(Outcome::NothingToDo) => "no_changes",
            Ok(Outcome::Cancelled) => "cancelled",
            Err(OpError::Apply(crate::apply::ApplyError::Interrupted { .. })) => "interrupted",
            Err(OpError::Apply(crate::apply::ApplyError::RolloutHalted { .. })) => "halted",
            Err(OpError::Apply(
                crate::apply::ApplyError::GateFailed { .. }
                | crate::apply::ApplyError::Failed { .. },
            )) => "rolled_back",
            Err(_) => "failed",
        };
        let revision = match &result {
            Ok(Outcome::Applied(a)) => a.revision,
            // The partial revision the regions done keep.
            Err(OpError::Apply(crate::apply::ApplyError::RolloutHalted { revision, .. })) => {
                *revision
            }
            _ => None,
        };
        let error = result.as_ref().err().map(ToString::to_string);
        let body = serde_json::json!({
            "format_version": EVENTS_FORMAT,
            "event": "berth.apply",
            "project": session.project.spec.project.value,
            "command": command,
            "host": crate::state::hostname(),
            "outcome": outcome,
            "revision": revision,
            "changes": session.plan.summary,
            "duration_ms": started.elapsed().as_millis() as u64,
            "error": error,
        });
        if let Some(why) = crate::notify::send(&hook, &body) {
            // The host only: a webhook's path is often its token.
            let host = crate::notify::Target::parse(&hook.url).map_or_else(
                |_| "the webhook".to_owned(),
                |t| format!("{}:{}", t.host, t.port),
            );
            eprintln!(
                "warning: the notification to {host} failed ({why}); the outcome above stands"
            );
        }
    }
    match result? {
        Outcome::Applied(_) | Outcome::NothingToDo => Ok(exit::OK),
        Outcome::Cancelled => Ok(exit::ERROR),
    }
}

/// How a run ended, for the exit code and the notification.
enum Outcome {
    Applied(crate::apply::Applied),
    NothingToDo,
    Cancelled,
}

fn carry_out(
    session: &ops::Session,
    args: Args,
    verb: &str,
    saved: Option<&(&Path, ops::SavedPlan)>,
) -> Result<Outcome, OpError> {
    if let Some((path, plan)) = saved {
        let changed = session.stale_facts(plan)?;
        if !changed.is_empty() {
            return Err(OpError::StalePlan {
                path: path.to_path_buf(),
                changed,
            });
        }
    }
    // A reviewed, saved plan is its own confirmation.
    let args = Args {
        yes: args.yes || saved.is_some(),
        ..args
    };
    // Secrets must decrypt and pass their checks before anything is changed.
    session.preflight()?;
    let json = args.format == Format::Json;
    if json {
        json_line(&serde_json::json!({ "event": "plan", "plan": session.plan }));
    }
    if !session.plan.has_changes() {
        if json {
            json_line(&serde_json::json!({ "event": "applied", "changed": 0 }));
        } else {
            eprintln!("{}", render::summary_line(&session.plan));
        }
        return Ok(Outcome::NothingToDo);
    }
    if !json {
        print(&render::human(&session.plan, stdout_color()));
    }
    if !args.yes && !confirmed(verb == "Destroy")? {
        eprintln!("Apply cancelled; nothing was changed.");
        return Ok(Outcome::Cancelled);
    }
    let options = crate::apply::Options {
        delete_volumes: args.delete_volumes,
        parallelism: usize::from(args.parallelism),
        ..Default::default()
    };
    let result = if json {
        session.apply(options, &mut |e| {
            json_line(&serde_json::json!({ "event": "step", "step": e }))
        })
    } else if std::io::stderr().is_terminal() {
        let mut bars = Bars::default();
        let r = session.apply(options, &mut |e| bars.show(e));
        bars.multi.clear().ok();
        r
    } else {
        session.apply(options, &mut |e| eprintln!("{}", e.message))
    };
    let applied = match result {
        Ok(a) => a,
        Err(e) => {
            if json {
                json_line(&serde_json::json!({ "event": "failed", "error": e.to_string() }));
            }
            return Err(e);
        }
    };
    if json {
        json_line(&serde_json::json!({
            "event": "applied",
            "changed": applied.changed,
            "kept_volumes": applied.kept_volumes,
            "kept": applied.kept,
            "revision": applied.revision,
        }));
        return Ok(Outcome::Applied(applied));
    }
    match applied.revision {
        Some(r) => eprintln!(
            "{verb} complete: {} change(s) made; recorded as revision {r}.",
            applied.changed
        ),
        None => eprintln!("{verb} complete: {} change(s) made.", applied.changed),
    }
    for why in &applied.kept {
        eprintln!("Warning: {why}.");
    }
    if !applied.kept_volumes.is_empty() {
        eprintln!(
            "Kept with their data: {} (pass --delete-volumes to remove them).",
            applied.kept_volumes.join(", ")
        );
    }
    Ok(Outcome::Applied(applied))
}

/// The version of the JSON lines of `apply`, `destroy`, `rollback` and `restart` with
/// `--format json` (docs/json.md), on every line.
pub const EVENTS_FORMAT: u32 = 1;

fn json_line(value: &serde_json::Value) {
    let mut line = serde_json::json!({ "format_version": EVENTS_FORMAT });
    if let (Some(out), Some(fields)) = (line.as_object_mut(), value.as_object()) {
        out.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    print(&format!("{line}\n"));
}

/// One spinner per resource in flight, with its elapsed time; other events print above.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    in_flight: HashMap<String, ProgressBar>,
}

impl Bars {
    fn show(&mut self, e: &Event) {
        match (e.status, &e.address) {
            (Status::Started, Some(address)) => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                    bar.set_style(style);
                }
                bar.set_message(e.message.trim().to_owned());
                bar.enable_steady_tick(Duration::from_millis(100));
                self.in_flight.insert(address.clone(), bar);
            }
            (_, Some(address)) if self.in_flight.contains_key(address) => {
                if let Some(bar) = self.in_flight.remove(address) {
                    bar.finish_and_clear();
                }
                let _ = self.multi.println(&e.message);
            }
            _ => {
                let _ = self.multi.println(&e.message);
            }
        }
    }
}

/// Asks on a terminal; refuses without one (automation passes `--yes`).
fn confirmed(destroy: bool) -> Result<bool, OpError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(OpError::NotConfirmed);
    }
    let what = if destroy {
        "destroy everything above"
    } else {
        "apply these changes"
    };
    eprint!("\nDo you want to {what}? Only `yes` is accepted: ");
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(OpError::Runtime)?;
    Ok(answer.trim() == "yes")
}
