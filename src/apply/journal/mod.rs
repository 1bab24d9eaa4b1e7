//! The intent journal of an apply, after oxidecomputer/steno's saga log: one JSON record
//! per line in `STATE/journal.jsonl`, each written and fsynced before what it announces.
//!
//! - `begin`: an apply started (the revision it goes from and to);
//! - `undo`: how to undo the mutation about to happen, written *before* it (an undo of a
//!   mutation that never happened does nothing: every undo is idempotent);
//! - `drop`: undo records no longer needed (a blue-green switch replaces two by one);
//! - `step`: a resource's step `started`, then `succeeded` or `failed`;
//! - `undo_state`: an undo record's `undo_started`, then `undo_finished` or `undo_failed`;
//! - `commit`: every gate passed; these objects are now removed;
//! - `end`: `applied`, `rolled_back` or `recovered`; the journal is then set aside as
//!   `last-journal.jsonl`.
//!
//! A restore (`berth backup restore`) keeps a journal of its own kind
//! (`STATE/restore-journal.jsonl`, the same records): its undo records put the safety copy
//! back and apply the last revision again. It stays open while the apply that brings the
//! pods back writes the apply journal; `recover` finishes that one first.
//!
//! A journal without `end` is an apply that was interrupted (killed, power lost): `plan` and
//! `apply` refuse to go on until `berth recover` has finished it. The record types are a
//! state machine: [`Journal::append`] refuses an illegal transition (a step that succeeds
//! without having started, an undo finished twice), and so does reading one back.
//!
//! Debugging aid: with `BERTH_FAULT_KILL_AT=N` the process aborts right after writing its
//! N-th record (counted across its journals), as a `kill -9` at that point would. The
//! fault-injection tests use it.
//!
//! - `record.rs`: the records and their state machine;
//! - here: the journal file (begun whole, appended durably, resumed, set aside).

use std::io::Write;
use std::path::PathBuf;

mod record;

pub use record::{CommitItem, Illegal, Machine, Outcome, Record, StepState, UndoState};

use crate::state::{StateDir, StateError, io_error};

/// Aborts the process after writing this many records.
pub const ENV_FAULT_KILL_AT: &str = "BERTH_FAULT_KILL_AT";

const FILE: &str = "journal.jsonl";
const LAST: &str = "last-journal.jsonl";

/// Which journal: an apply's, or a restore's (`berth backup restore`). A restore's journal
/// stays open while the apply that brings its pods back writes the apply journal, so the
/// two are files of their own; `recover` finishes the apply's first, then the restore's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Apply,
    Restore,
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Kind::Apply => FILE,
            Kind::Restore => "restore-journal.jsonl",
        }
    }
    fn last(self) -> &'static str {
        match self {
            Kind::Apply => LAST,
            Kind::Restore => "last-restore-journal.jsonl",
        }
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum JournalError {
    #[error("the journal refuses `{what}`: {why}")]
    #[diagnostic(
        code(berth::journal),
        help("this is a bug in berth (an illegal transition of its intent log): please report it")
    )]
    Illegal { what: String, why: Illegal },
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] StateError),
}

/// The journal of the apply in progress.
pub struct Journal {
    file: std::fs::File,
    path: PathBuf,
    kind: Kind,
    dir: StateDir,
    machine: Machine,
    kill_at: Option<u64>,
    next_id: u64,
    poisoned: bool,
}

impl Journal {
    /// Starts the journal of a new apply. There must be no unfinished one.
    ///
    /// The journal appears with its `begin` record whole (written aside, then linked into
    /// place), so that a kill at any moment leaves either no journal or one that has begun.
    /// A journal file that has ended (killed before it was set aside) is set aside now.
    pub fn begin(dir: &StateDir, begin: Record) -> Result<Journal, JournalError> {
        Journal::begin_kind(dir, Kind::Apply, begin)
    }

    /// Starts a journal of this kind. There must be no unfinished one of that kind.
    pub fn begin_kind(dir: &StateDir, kind: Kind, begin: Record) -> Result<Journal, JournalError> {
        dir.create()?;
        let path = dir.file(kind.file());
        // A journal that ended but was not yet set aside (the process died between its
        // `end` and the rename) is set aside now: it blocks nothing.
        set_aside_finished(dir, kind)?;
        let mut machine = Machine::default();
        let line = advance(&mut machine, &begin)?;
        let aside = dir.file(&format!("{}.new", kind.file()));
        let _ = std::fs::remove_file(&aside); // left by a kill: never linked, never begun
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .and_then(|mut f| f.write_all(&line).and_then(|()| f.sync_data()))
            .map_err(io_error(&aside))?;
        // Linking fails if a journal is there: an unfinished apply is never overwritten.
        let linked = std::fs::hard_link(&aside, &path).map_err(io_error(&path));
        let _ = std::fs::remove_file(&aside);
        linked?;
        crate::fsutil::sync_dir(&dir.path).map_err(io_error(&dir.path))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let j = Journal {
            file,
            path,
            kind,
            dir: dir.clone(),
            machine,
            kill_at: kill_at(),
            next_id: 1,
            poisoned: false,
        };
        Journal::check_kill(j.kill_at);
        Ok(j)
    }

    /// Continues an unfinished journal (for `recover`).
    pub fn resume(dir: &StateDir) -> Result<Option<Journal>, JournalError> {
        Journal::resume_kind(dir, Kind::Apply)
    }

    /// Continues an unfinished journal of this kind.
    pub fn resume_kind(dir: &StateDir, kind: Kind) -> Result<Option<Journal>, JournalError> {
        let Some(machine) = read_kind(dir, kind)? else {
            return Ok(None);
        };
        let path = dir.file(kind.file());
        // A torn last line goes, so that the next record starts a line of its own.
        let text = std::fs::read(&path).map_err(io_error(&path))?;
        let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        if whole < text.len() {
            file.set_len(whole as u64)
                .and_then(|()| file.sync_data())
                .map_err(io_error(&path))?;
        }
        let next_id = machine.undos.iter().map(|(i, ..)| *i).max().unwrap_or(0) + 1;
        Ok(Some(Journal {
            file,
            path,
            kind,
            dir: dir.clone(),
            machine,
            kill_at: kill_at(),
            next_id,
            poisoned: false,
        }))
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// A fresh id for an undo record.
    pub fn next_undo_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Writes a record durably, after checking that it is legal here.
    pub fn append(&mut self, r: Record) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Illegal {
                what: serde_json::to_string(&r).unwrap_or_default(),
                why: Illegal::Poisoned,
            });
        }
        let mut next = self.machine.clone();
        let line = advance(&mut next, &r)?;
        let offset = self.file.metadata().map(|m| m.len()).ok();
        if let Err(e) = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
        {
            // A partial line (disk full) goes, so that the journal stays readable for
            // `recover`; nothing more is written to it.
            if let Some(o) = offset {
                let _ = self.file.set_len(o);
            }
            self.poisoned = true;
            return Err(io_error(&self.path)(e).into());
        }
        self.machine = next;
        Journal::check_kill(self.kill_at);
        Ok(())
    }

    /// The fault hook: aborts when the record just written is the one to die after.
    /// Records are counted across the journals of the process (a restore's, then the apply
    /// that brings its pods back), so that every record is a kill point of its own.
    fn check_kill(kill_at: Option<u64>) {
        let written = WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if kill_at == Some(written) {
            eprintln!("{ENV_FAULT_KILL_AT}: aborting after record {written}");
            std::process::abort();
        }
    }

    /// Ends the journal and sets it aside as the last one.
    pub fn end(mut self, outcome: Outcome) -> Result<(), JournalError> {
        self.append(Record::End { outcome })?;
        let last = self.dir.file(self.kind.last());
        std::fs::rename(&self.path, &last).map_err(io_error(&self.path))?;
        crate::fsutil::sync_dir(&self.dir.path).map_err(io_error(&self.dir.path))?;
        Ok(())
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// The records this process has written, in all its journals.
static WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn kill_at() -> Option<u64> {
    std::env::var(ENV_FAULT_KILL_AT).ok()?.parse().ok()
}

/// What a journal file left in place holds, when it is not an unfinished one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// It has its `end`: the process died between writing it and setting the file aside.
    Ended,
    /// It never began (killed while its first record was written): no apply at all.
    NeverBegun,
}

/// Puts away a journal file of this kind that is there but finished: an ended one becomes
/// the last journal (as [`Journal::end`] would have made it), one that never began is
/// removed (it must not replace the last journal). An unfinished journal stays. Call it
/// with the project's lock held. Returns what was put away, if anything.
pub fn set_aside_finished(dir: &StateDir, kind: Kind) -> Result<Option<Finished>, JournalError> {
    let path = dir.file(kind.file());
    let Some(machine) = replay(dir, kind)? else {
        return Ok(None);
    };
    let finished = if machine.end.is_some() {
        std::fs::rename(&path, dir.file(kind.last())).map_err(io_error(&path))?;
        Finished::Ended
    } else if machine.begin.is_none() {
        std::fs::remove_file(&path).map_err(io_error(&path))?;
        Finished::NeverBegun
    } else {
        return Ok(None);
    };
    crate::fsutil::sync_dir(&dir.path).map_err(io_error(&dir.path))?;
    Ok(Some(finished))
}

/// The unfinished journal of the state directory, replayed, if there is one. A torn last
/// line (the process died while writing it) is ignored: its record was never complete, so
/// what it announced never started.
pub fn read(dir: &StateDir) -> Result<Option<Machine>, JournalError> {
    read_kind(dir, Kind::Apply)
}

/// The unfinished journal of this kind, replayed, if there is one.
pub fn read_kind(dir: &StateDir, kind: Kind) -> Result<Option<Machine>, JournalError> {
    // Ended, or never begun (an older berth killed before its first record): nothing to
    // recover.
    Ok(replay(dir, kind)?.filter(|m| m.end.is_none() && m.begin.is_some()))
}

/// The journal file of this kind replayed, finished or not, if there is one.
fn replay(dir: &StateDir, kind: Kind) -> Result<Option<Machine>, JournalError> {
    let path = dir.file(kind.file());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e).into()),
    };
    let mut machine = Machine::default();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        let record: Record = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(_) if n + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => {
                return Err(StateError::Damaged {
                    path,
                    reason: format!("line {}: {e}", n + 1),
                }
                .into());
            }
        };
        machine.apply(&record).map_err(|why| StateError::Damaged {
            path: path.clone(),
            reason: format!("line {}: {why}", n + 1),
        })?;
    }
    Ok(Some(machine))
}

/// Moves `machine` on by record `r` (refused if the transition is illegal) and returns the
/// record's line, to be written only once the move is known to be legal.
fn advance(machine: &mut Machine, r: &Record) -> Result<Vec<u8>, JournalError> {
    machine.apply(r).map_err(|why| JournalError::Illegal {
        what: serde_json::to_string(r).unwrap_or_default(),
        why,
    })?;
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::record::tests::{begin, undo};
    use super::*;

    /// A state directory in a fresh temporary directory (kept while the guard lives).
    fn state_dir() -> (tempfile::TempDir, StateDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir {
            path: tmp.path().to_path_buf(),
        };
        (tmp, dir)
    }

    #[test]
    fn a_journal_killed_before_it_began_or_after_it_ended_does_not_block_the_next_apply() {
        let (_tmp, dir) = state_dir();
        // Killed while creating it: an empty or torn first line is no apply at all.
        for text in ["", "{\"t\":\"beg"] {
            std::fs::write(dir.file(FILE), text).unwrap();
            assert!(read(&dir).unwrap().is_none(), "{text:?}");
            let j = Journal::begin(&dir, begin()).unwrap();
            assert!(read(&dir).unwrap().is_some());
            j.end(Outcome::Applied).unwrap();
        }
        // Killed after `end`, before it was set aside.
        let mut j = Journal::begin(&dir, begin()).unwrap();
        j.append(Record::End {
            outcome: Outcome::Applied,
        })
        .unwrap();
        drop(j);
        assert!(read(&dir).unwrap().is_none());
        Journal::begin(&dir, begin()).unwrap();
        assert!(read(&dir).unwrap().is_some());
        assert!(!dir.file("journal.jsonl.new").exists());
    }

    #[test]
    fn an_unfinished_journal_is_read_back_and_a_torn_line_ignored() {
        let (_tmp, dir) = state_dir();
        let mut j = Journal::begin(&dir, begin()).unwrap();
        let a = j.next_undo_id();
        j.append(Record::Undo {
            id: a,
            undo: undo("a"),
        })
        .unwrap();
        let b = j.next_undo_id();
        j.append(Record::Undo {
            id: b,
            undo: undo("b"),
        })
        .unwrap();
        j.append(Record::Drop { ids: vec![a] }).unwrap();
        drop(j);
        // A second apply cannot begin over it.
        assert!(Journal::begin(&dir, begin()).is_err());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.file(FILE))
            .unwrap();
        f.write_all(b"{\"t\":\"undo_st").unwrap();
        let m = read(&dir).unwrap().expect("unfinished");
        assert_eq!(m.pending_undos().len(), 1);
        assert_eq!(m.pending_undos()[0].0, b);
        // Resumed (the torn line cut off) and ended, it is set aside.
        let j = Journal::resume(&dir).unwrap().unwrap();
        j.end(Outcome::Recovered).unwrap();
        assert!(read(&dir).unwrap().is_none());
        assert!(dir.file(LAST).exists());
    }

    #[test]
    fn a_journal_ended_but_not_set_aside_blocks_no_new_one_and_kinds_are_apart() {
        let (_tmp, dir) = state_dir();
        // Killed between `end` and the rename: the file is there, and ended.
        let mut j = Journal::begin(&dir, begin()).unwrap();
        j.append(Record::End {
            outcome: Outcome::Applied,
        })
        .unwrap();
        drop(j);
        assert!(dir.file(FILE).exists());
        assert!(read(&dir).unwrap().is_none());
        let j = Journal::begin(&dir, begin()).expect("an ended journal blocks nothing");
        // A restore's journal is a file of its own, read apart.
        let r = Journal::begin_kind(&dir, Kind::Restore, begin()).unwrap();
        assert!(read_kind(&dir, Kind::Restore).unwrap().is_some());
        r.end(Outcome::RolledBack).unwrap();
        assert!(read_kind(&dir, Kind::Restore).unwrap().is_none());
        assert!(read(&dir).unwrap().is_some());
        j.end(Outcome::Applied).unwrap();
        assert!(dir.file(Kind::Restore.last()).exists());
    }

    #[test]
    fn a_finished_journal_left_in_place_is_put_away_and_a_never_begun_one_replaces_nothing() {
        let (_tmp, dir) = state_dir();
        assert_eq!(set_aside_finished(&dir, Kind::Apply).unwrap(), None);
        let mut j = Journal::begin(&dir, begin()).unwrap();
        j.append(Record::End {
            outcome: Outcome::Applied,
        })
        .unwrap();
        drop(j);
        assert_eq!(
            set_aside_finished(&dir, Kind::Apply).unwrap(),
            Some(Finished::Ended)
        );
        assert!(!dir.file(FILE).exists());
        let ended = std::fs::read_to_string(dir.file(LAST)).unwrap();
        assert!(ended.contains("\"end\""), "{ended}");
        // Never begun: removed, and the last journal stays the ended one.
        std::fs::write(dir.file(FILE), "{\"t\":\"beg").unwrap();
        assert_eq!(
            set_aside_finished(&dir, Kind::Apply).unwrap(),
            Some(Finished::NeverBegun)
        );
        assert!(!dir.file(FILE).exists());
        assert_eq!(std::fs::read_to_string(dir.file(LAST)).unwrap(), ended);
        // An unfinished one stays for recover.
        let j = Journal::begin(&dir, begin()).unwrap();
        assert_eq!(set_aside_finished(&dir, Kind::Apply).unwrap(), None);
        assert!(read(&dir).unwrap().is_some());
        drop(j);
    }
}
