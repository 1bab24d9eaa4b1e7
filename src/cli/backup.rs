//! `berth backup run | list | verify | restore | prune`: arguments parsed, results
//! rendered; the work is `crate::backup`'s, and errors are rendered by `cli::report_error`.

use std::path::Path;

use super::{exit, print, report_error};
use crate::archive::auth::Authenticity;
use crate::archive::store::Store;
use crate::backup::ops::Backups;
use crate::backup::verify::Checked;
use crate::clock::format_time;
use crate::ops::OpError;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Take a backup now (read back and verified before it counts).
    Run {
        /// The backup, as named under `backups:`.
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Every backup of the spec.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// The backups in the store: id, time, size, ratio, verified.
    List {
        /// Only this backup name.
        name: Option<String>,
        /// `json`: the list as data (docs/json.md).
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
    },
    /// Read backups back whole: decrypt, decompress, walk the tar, compare the hashes.
    Verify {
        /// One backup id (default: the newest of each name whose time is trusted).
        id: Option<String>,
        /// Every backup in the store.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Put a volume back as a backup holds it: verified first, a safety copy taken, the
    /// pods brought back through their health gates, and the safety copy put back if they
    /// fail.
    Restore {
        /// The backup, as named under `backups:`.
        name: String,
        /// The backup id (default: the newest verified one whose time is trusted).
        id: Option<String>,
        /// Only list what would be overwritten, created and removed.
        #[arg(long)]
        dry_run: bool,
        /// Restore the copy kept in this store (one of the backup's `copies:`): fetched
        /// into the host's store first. Without it, a backup the host's store does not
        /// hold is looked for in the copies, in their order.
        #[arg(long, value_name = "STORE")]
        from: Option<String>,
        /// Restore into this new (or empty) directory instead of the backup's place,
        /// touching nothing live; a command's output is written there as one file.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["dry_run", "to_volume"])]
        to_path: Option<std::path::PathBuf>,
        /// Restore into this new volume (made here, left to you: berth never plans or
        /// removes it) instead of the backup's place, touching nothing live.
        #[arg(long, value_name = "VOLUME", conflicts_with = "dry_run")]
        to_volume: Option<String>,
        /// With `--to-path`, only the entries a glob matches (a path in the backup, or a
        /// directory above it; `*` stops at `/`). Repeatable.
        #[arg(long, value_name = "PATTERN", requires = "to_path")]
        files: Vec<String>,
    },
    /// Prove a volume backup by restoring it: into a scratch volume, with a scratch copy
    /// of the pod that owns it started on it and held to its gates (and `drill.check`),
    /// then all of it removed. Prints the measured restore time.
    Drill {
        /// The backup, as named under `backups:`.
        name: String,
        /// The backup id (default: the newest verified one whose time is trusted).
        id: Option<String>,
        /// Drill the copy kept in this store (one of the backup's `copies:`).
        #[arg(long, value_name = "STORE")]
        from: Option<String>,
    },
    /// Delete what the retention policy no longer keeps, after reading back whole the backups
    /// kept in their place (never the newest verified one).
    Prune {
        /// Only say what would be kept and deleted, and why (the same decision).
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(file: &Path, state_dir: Option<&Path>, args: Args) -> Result<u8, OpError> {
    crate::archive::pipeline::return_large_buffers();
    // Only the engines the command needs: a region that is down stops only its backups.
    let needs: Option<Vec<String>> = match &args.command {
        Command::Run { all: true, .. } => None,
        Command::Run { name, .. } => Some(name.iter().cloned().collect()),
        Command::Restore { name, .. } | Command::Drill { name, .. } => Some(vec![name.clone()]),
        Command::List { .. } | Command::Verify { .. } | Command::Prune { .. } => Some(Vec::new()),
    };
    let b = Backups::open(file, state_dir, needs.as_deref())?;
    match args.command {
        Command::Run { name, all } => {
            let names = if all {
                b.names()
            } else {
                name.into_iter().collect()
            };
            take(&b, names)
        }
        Command::List { name, format } => list(&b, name, format),
        Command::Verify { id, all } => verify(&b, id.as_deref(), all),
        Command::Restore {
            name,
            id,
            dry_run,
            from,
            to_path,
            to_volume,
            files,
        } => {
            let fetched = b.fetch_for_restore(&name, id.as_deref(), from.as_deref())?;
            let id = fetched.or(id);
            let elsewhere = match (to_path, to_volume) {
                (Some(dir), _) => Some(b.restore_to_path(&name, id.as_deref(), &dir, &files)?),
                (None, Some(volume)) => Some(b.restore_to_volume(&name, id.as_deref(), &volume)?),
                (None, None) => None,
            };
            if let Some(r) = elsewhere {
                let what = match r.entries {
                    Some((written, total)) if written < total => {
                        format!("{written} of its {total} entries")
                    }
                    Some((written, _)) => format!("its {written} entries"),
                    None if r.written.starts_with("volume ") => "its tree".into(),
                    None => "its output".into(),
                };
                eprintln!(
                    "Restored {what} of `{name}` {} into {} (the whole backup read and checked, {}); nothing live was touched.",
                    r.id,
                    r.written,
                    size(r.bytes)
                );
                return Ok(exit::OK);
            }
            // The pods come back (and an unwind brings them back) through a session.
            let command = format!("berth backup restore {name}");
            let again = crate::ops::UnwindCtx {
                spec_path: file,
                state_dir,
                command: &command,
            };
            let r = b.restore(&name, id.as_deref(), dry_run, file, &again)?;
            for l in &r.lines {
                eprintln!("{l}");
            }
            if !dry_run {
                eprintln!(
                    "Restored `{name}` from {}; the safety copy {} undoes it (`berth backup restore {name} {}`).",
                    r.manifest.id,
                    r.safety.as_ref().map_or("-", |m| m.id.as_str()),
                    r.safety.as_ref().map_or("-", |m| m.id.as_str()),
                );
            }
            Ok(exit::OK)
        }
        Command::Prune { dry_run } => prune(&b, dry_run),
        Command::Drill { name, id, from } => {
            let fetched = b.fetch_for_restore(&name, id.as_deref(), from.as_deref())?;
            let id = fetched.or(id);
            let command = format!("berth backup drill {name}");
            let applier = crate::ops::UnwindCtx {
                spec_path: file,
                state_dir,
                command: &command,
            };
            drill(&b, &name, id.as_deref(), &applier)
        }
    }
}

/// `backup drill`: each step as it goes, then the measured restore time.
fn drill(
    b: &Backups,
    name: &str,
    id: Option<&str>,
    applier: &crate::ops::UnwindCtx,
) -> Result<u8, OpError> {
    let started = std::time::Instant::now();
    let began_at = crate::clock::now();
    let result = b.drill(name, id, applier, &mut |line| eprintln!("{line}"));
    // A drill that failed once it had begun (its scratch project named) recorded which backup.
    let drilled_id = match &result {
        Ok(d) => Some(d.id.clone()),
        Err(_) => b
            .drills()
            .remove(name)
            .filter(|last| last.at >= began_at)
            .map(|last| last.id),
    };
    if let Some(hook) = b.project.spec.notify.as_ref().map(|n| n.value.hook()) {
        let body = serde_json::json!({
            "format_version": super::apply::EVENTS_FORMAT,
            "event": "berth.drill",
            "project": b.project.spec.project.value,
            "command": format!("berth backup drill {name}"),
            "host": crate::state::hostname(),
            "outcome": if result.is_ok() { "passed" } else { "failed" },
            "backup": name,
            "id": drilled_id,
            "restore_seconds": result.as_ref().ok().map(|d| d.total.as_secs_f64()),
            "duration_ms": started.elapsed().as_millis() as u64,
            "error": result.as_ref().err().map(ToString::to_string),
        });
        if let Some(why) = crate::notify::send(&hook, &body) {
            eprintln!("warning: the drill's notification failed ({why}); the outcome stands");
        }
    }
    let d = result?;
    let check = d.checked.map_or(String::new(), |c| {
        format!(", drill.check {:.1} s", c.as_secs_f64())
    });
    eprintln!(
        "Drill of `{name}` {} passed: restored {} in {:.1} s, pod `{}` through its gates in {:.1} s{check}; restore time (RTO) {:.1} s. The scratch project is removed.",
        d.id,
        size(d.plain_bytes),
        d.restored.as_secs_f64(),
        d.pod,
        d.started.as_secs_f64(),
        d.total.as_secs_f64(),
    );
    Ok(exit::OK)
}

/// `backup run`: each backup taken under the lock; a failure is reported and the others
/// are still taken.
fn take(b: &Backups, names: Vec<String>) -> Result<u8, OpError> {
    let _lock = b.lock_for_backup()?;
    let mut failures = 0;
    for name in names {
        match b.run(&name, false) {
            Ok(taken) => {
                let (m, v) = (&taken.manifest, &taken.verified);
                eprintln!(
                    "backup `{name}`: {} written and verified ({} files, {} -> {}), {}",
                    m.id,
                    v.files,
                    size(m.plain_bytes),
                    size(m.stored_bytes),
                    b.store(b.get(&name)?)?.locate(&name, &m.id)
                );
                for c in &taken.copies {
                    match &c.result {
                        Ok(at) => eprintln!(
                            "backup `{name}`: copied to store `{}` and verified there, {at}",
                            c.store
                        ),
                        Err(why) => {
                            // The host's copy stands; the run still fails, so that a timer's
                            // unit (and whoever watches it) sees the copy missing.
                            failures += 1;
                            report_error(OpError::Refused {
                                message: format!(
                                    "backup `{name}`: {} is on the host, but its copy to store `{}` failed: {why}",
                                    m.id, c.store
                                ),
                                help: "check the store's address and credentials, then run the backup again".into(),
                            });
                        }
                    }
                }
                // Now that a backup of the name verifies, the data files a killed backup
                // left without a manifest go (under the lock).
                for i in b.remove_incomplete(&name)? {
                    eprintln!(
                        "backup `{name}`: removed {}, cut short while it was written ({}), no manifest",
                        i.id,
                        format_time(i.modified)
                    );
                }
                // And in each copy it verified in, what killed runs had left there.
                for c in &taken.copies {
                    for i in &c.removed {
                        eprintln!(
                            "backup `{name}`: removed {} from store `{}`, cut short while it was written ({}), no manifest",
                            i.id,
                            c.store,
                            format_time(i.modified)
                        );
                    }
                }
            }
            Err(e) => {
                failures += 1;
                report_error(e);
            }
        }
    }
    Ok(if failures > 0 { exit::ERROR } else { exit::OK })
}

/// `backup list`: a table of the backups of each name (or of `name`).
/// How `backup list` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Human,
    Json,
}

/// The version of `backup list --format json` (docs/json.md).
pub const LIST_FORMAT: u32 = 1;

fn list(b: &Backups, name: Option<String>, format: ListFormat) -> Result<u8, OpError> {
    let names = match name {
        Some(n) => vec![n],
        None => b.names(),
    };
    if format == ListFormat::Json {
        return list_json(b, &names);
    }
    let mut out = format!(
        "{:<12} {:<27} {:<23} {:>10} {:>7}  {}\n",
        "backup", "id", "taken", "size", "ratio", "verified"
    );
    let drills = b.drills();
    for name in names {
        let here = b.listing(&name)?;
        let (by_id, only, unlisted) = placed(b, &name, &here)?;
        let rows = here
            .iter()
            .map(|m| (m, None))
            .chain(only.iter().map(|(s, m)| (m, Some(s))));
        for (m, only_in) in rows {
            let copies = match only_in {
                Some(store) => format!(
                    ", NOT ON THIS HOST: only in store `{store}` (a restore of it fetches it)"
                ),
                None => by_id.get(&m.id).map_or(String::new(), |c| {
                    let names: Vec<String> = c
                        .iter()
                        .map(|(s, _, v)| {
                            if *v {
                                s.clone()
                            } else {
                                format!("{s} (unverified)")
                            }
                        })
                        .collect();
                    format!(", copies: {}", names.join(", "))
                }),
            };
            let ratio = if m.stored_bytes == 0 {
                0.0
            } else {
                m.plain_bytes as f64 / m.stored_bytes as f64
            };
            out.push_str(&format!(
                "{:<12} {:<27} {:<23} {:>10} {:>6.1}x  {}{}{}{}\n",
                name,
                m.id,
                format_time(m.created_at),
                size(m.stored_bytes),
                ratio,
                if m.verified { "yes" } else { "NO" },
                if m.safety { " (safety copy)" } else { "" },
                match b.authenticity(m) {
                    Some(Authenticity::Forged) =>
                        " NOT AUTHENTIC: forged, or changed since written",
                    Some(Authenticity::Unsigned) => " NOT AUTHENTICATED: no mac",
                    _ => "",
                },
                match drills.get(&name).filter(|d| d.id == m.id) {
                    Some(d) if d.passed => format!(
                        ", drilled {} (restored in {:.1} s)",
                        format_time(d.at),
                        d.seconds
                    ),
                    Some(d) => format!(", drill FAILED {}", format_time(d.at)),
                    None => String::new(),
                }
            ));
            out.pop();
            out.push_str(&copies);
            out.push('\n');
        }
        for (store, why) in unlisted {
            out.push_str(&format!(
                "{name:<12} store `{store}` cannot be listed: {why}\n"
            ));
        }
        let store = b.store(b.get(&name)?)?;
        for i in store.incomplete(&name)? {
            out.push_str(&format!(
                "{:<12} {:<27} {:<23} {:>10} {:>7}  NO (incomplete: cut short while written, no manifest; `berth backup prune` removes it)\n",
                name,
                i.id,
                format_time(i.modified),
                size(i.bytes),
                "-",
            ));
        }
        // Manifests that do not parse: named, never in the way of the others.
        for (file, why) in store.damaged(&name) {
            out.push_str(&format!("{name:<12} DAMAGED `{file}`: {why}\n"));
        }
    }
    print(&out);
    Ok(exit::OK)
}

/// `backup list --format json`: each backup's manifest facts, the incomplete and the
/// damaged, by name.
fn list_json(b: &Backups, names: &[String]) -> Result<u8, OpError> {
    use crate::clock::rfc3339;
    let (mut backups, mut incomplete, mut damaged) = (Vec::new(), Vec::new(), Vec::new());
    let drills = b.drills();
    for name in names {
        let spec = b.get(name)?;
        let here = b.listing(name)?;
        let (by_id, only, unlisted) = placed(b, name, &here)?;
        let rows = here
            .iter()
            .map(|m| (m, true))
            .chain(only.iter().map(|(_, m)| (m, false)));
        for (m, on_host) in rows {
            let copies: Vec<_> = by_id
                .get(&m.id)
                .into_iter()
                .flatten()
                .map(|(store, at, verified)| {
                    serde_json::json!({ "store": store, "location": at, "verified": verified })
                })
                .collect();
            let authentic = b.authenticity(m).map(|a| a == Authenticity::Authentic);
            let drilled = drills.get(name).filter(|d| d.id == m.id).map(|d| {
                serde_json::json!({
                    "at": rfc3339(d.at),
                    "passed": d.passed,
                    "restore_seconds": d.passed.then_some(d.seconds),
                })
            });
            backups.push(serde_json::json!({
                "name": name,
                "id": m.id,
                "store": spec.store.value,
                "source": m.source,
                "taken_at": rfc3339(m.created_at),
                "revision": m.revision,
                "plain_bytes": m.plain_bytes,
                "stored_bytes": m.stored_bytes,
                "verified": m.verified,
                "safety_copy": m.safety,
                "authentic": authentic,
                "drilled": drilled,
                "on_host": on_host,
                "copies": copies,
            }));
        }
        for (store, why) in unlisted {
            damaged.push(serde_json::json!({ "name": name, "store": store, "reason": why }));
        }
        let store = b.store(spec)?;
        for i in store.incomplete(name)? {
            incomplete.push(serde_json::json!({
                "name": name,
                "id": i.id,
                "bytes": i.bytes,
                "modified_at": rfc3339(i.modified),
            }));
        }
        for (file, why) in store.damaged(name) {
            damaged.push(serde_json::json!({ "name": name, "file": file, "reason": why }));
        }
    }
    let doc = serde_json::json!({
        "format_version": LIST_FORMAT,
        "backups": backups,
        "incomplete": incomplete,
        "damaged": damaged,
    });
    print(&format!(
        "{}\n",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    ));
    Ok(exit::OK)
}

/// `backup verify`: each read-back told as it is done, then the count.
fn verify(b: &Backups, id: Option<&str>, all: bool) -> Result<u8, OpError> {
    let tally = b.verify_stored(id, all, &mut |checked| match checked {
        Checked::DamagedManifest { name, file, why } => {
            eprintln!("{name}: manifest `{file}` is damaged: {why}")
        }
        Checked::PassedOver { name, id, why } => {
            eprintln!("{name} {id}: passed over ({why}); `berth backup verify {id}` reads it back")
        }
        Checked::Sound { name, id, verified } => eprintln!(
            "{name} {id}: ok ({} files, {})",
            verified.files,
            size(verified.plain_bytes)
        ),
        Checked::Damaged(e) => report_error(e.into()),
        Checked::Unauthenticated {
            name,
            id,
            found,
            counted,
        } => {
            let then = if counted {
                "never read back nor restored by berth"
            } else {
                "passed over, never restored by berth; `--all` counts it"
            };
            eprintln!("{name} {id}: {}; {then}", found.why_not())
        }
    })?;
    eprintln!(
        "{} backup(s) checked, {} damaged or not authentic.",
        tally.checked, tally.bad
    );
    Ok(if tally.bad > 0 { exit::ERROR } else { exit::OK })
}

/// `backup prune`: what each name keeps and deletes (or would), and why.
fn prune(b: &Backups, dry_run: bool) -> Result<u8, OpError> {
    let _lock = b.lock("berth backup prune")?;
    let mut failed = false;
    for name in b.names() {
        let pruned = b.prune(&name, dry_run)?;
        if pruned.no_retention {
            eprintln!("{name}: no `retention`; no backup is pruned");
        }
        // The same lines with `--dry-run` and without, but for the verb.
        for d in pruned.decisions.iter().chain(&pruned.incomplete) {
            eprintln!("  {} {name} {} ({})", verb(d.delete, dry_run), d.id, d.why);
        }
        if !pruned.damaged.is_empty() {
            eprintln!(
                "{name}: {} backup(s) failed their read-back and count for nothing: {}",
                pruned.damaged.len(),
                pruned
                    .damaged
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if pruned.nothing_verifies {
            eprintln!(
                "{name}: no backup verifies now at a trusted time, so nothing is deleted (take one: `berth backup run {name}`)"
            );
        }
        failed |= pruned.failed();
        // Each copy off the host, by the same policy.
        for (store, pruned) in b.prune_copies(&name, dry_run) {
            let pruned = match pruned {
                Ok(p) => p,
                Err(e) => {
                    failed = true;
                    eprintln!("{name} (store `{store}`): not pruned");
                    report_error(e);
                    continue;
                }
            };
            for d in pruned.decisions.iter().chain(&pruned.incomplete) {
                let verb = verb(d.delete, dry_run);
                eprintln!("  {verb} {name} {} in store `{store}` ({})", d.id, d.why);
            }
            if pruned.nothing_verifies {
                eprintln!(
                    "{name} (store `{store}`): no backup verifies there now at a trusted time, so nothing is deleted there"
                );
            }
            failed |= pruned.failed();
        }
    }
    Ok(if failed { exit::ERROR } else { exit::OK })
}

/// What prune does (or would do) with a backup: the same words with `--dry-run` and
/// without, but for the verb.
fn verb(delete: bool, dry_run: bool) -> &'static str {
    match (delete, dry_run) {
        (false, _) => "keep  ",
        (true, true) => "would delete",
        (true, false) => "delete",
    }
}

/// Where the copies of a backup name are: by id, each copy's (store, location,
/// verified); the backups found only in a copy (store, manifest); and the copies that
/// could not be listed (store, why).
type Placed = (
    std::collections::HashMap<String, Vec<(String, String, bool)>>,
    Vec<(String, crate::archive::Manifest)>,
    Vec<(String, String)>,
);

fn placed(b: &Backups, name: &str, here: &[crate::archive::Manifest]) -> Result<Placed, OpError> {
    let mut by_id: std::collections::HashMap<String, Vec<(String, String, bool)>> =
        std::collections::HashMap::new();
    let mut only = Vec::new();
    let mut unlisted = Vec::new();
    for c in &b.get(name)?.copies {
        let listed = b
            .open_copy(&c.value)
            .and_then(|copy| b.copy_listing(name, &copy).map(|l| (copy, l)));
        let (copy, (trusted, _)) = match listed {
            Ok(l) => l,
            Err(e) => {
                unlisted.push((c.value.clone(), e.to_string()));
                continue;
            }
        };
        for m in trusted {
            let at = copy.store.locate(name, &m.id);
            by_id
                .entry(m.id.clone())
                .or_default()
                .push((c.value.clone(), at, m.verified));
            if !here.iter().any(|h| h.id == m.id)
                && !only
                    .iter()
                    .any(|(_, o): &(String, crate::archive::Manifest)| o.id == m.id)
            {
                only.push((c.value.clone(), m));
            }
        }
    }
    only.sort_by_key(|(_, m)| m.created_at);
    Ok((by_id, only, unlisted))
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
