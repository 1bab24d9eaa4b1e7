//! The one unwind: undo records carried out newest first, each journaled (`undo_started`,
//! then `undo_finished` or `undo_failed`). It serves the rollback of an apply (its undo stack,
//! in its runtime), `berth recover` and a restore that failed (a journal's pending undos).
//!
//! A `Reapply` undo applies a revision again through a session of its own, which cannot
//! run inside the runtime the other undos run in: [`Unwind::run`] stops at it and hands it
//! to its caller, who carries it out and says how it went ([`Unwind::finish`]).

use std::collections::HashMap;

use super::journal::Outcome;
use super::journal::{Journal, JournalError, Record, UndoState};
use super::recover::Reapply;
use super::{ApplyError, Undo, undo};
use crate::engine::Engine;

/// Journals an undo record's state (`undo_started`, then finished or failed).
pub type Mark<'m> = dyn FnMut(u64, UndoState) -> Result<(), JournalError> + 'm;

/// Undo records being carried out, and what came of those done.
pub struct Unwind {
    /// Newest last: the next one to carry out is popped.
    undos: Vec<(u64, Undo)>,
    /// `  rolled back …` or `  could NOT roll back …: why`, one per undo record.
    pub lines: Vec<String>,
    /// Every undo done so far went through.
    pub ok: bool,
}

/// A `Reapply` the caller carries out: its undo record id and the revision.
pub struct ToReapply {
    pub id: u64,
    pub revision: u64,
}

impl Unwind {
    /// `undos` oldest first, as recorded (they are carried out newest first).
    pub fn new(undos: Vec<(u64, Undo)>) -> Unwind {
        Unwind {
            undos,
            lines: Vec::new(),
            ok: true,
        }
    }

    /// Carries out the undo records until a `Reapply` (returned, journaled as started:
    /// the caller carries it out and calls [`Unwind::finish`]) or the last.
    pub async fn run(
        &mut self,
        engines: &HashMap<String, Engine>,
        project: &str,
        mark: &mut Mark<'_>,
    ) -> Result<Option<ToReapply>, JournalError> {
        while let Some((id, u)) = self.undos.pop() {
            if let Undo::Reapply { revision } = u {
                // A `Reapply` brings the pods back on the data the undos recorded after it
                // put back: when one of those failed, the data is not back, and the pods
                // stay down. It stays pending (never marked done), so that the next
                // `recover`, which carries out those undos again (removing the pods that
                // mount the volume), applies it then.
                if !self.ok {
                    self.lines.push(format!(
                        "  did NOT apply revision {revision} again: the data is not back yet (see above); the pods stay down until `berth recover` puts it back"
                    ));
                    continue;
                }
                mark(id, UndoState::UndoStarted)?;
                return Ok(Some(ToReapply { id, revision }));
            }
            mark(id, UndoState::UndoStarted)?;
            let (what, r) = super::undo::perform(engines, project, &u).await;
            self.finish(id, what, r, mark)?;
        }
        Ok(None)
    }

    /// An undo record carried out (`what` it undid): journaled as finished or failed.
    pub fn finish(
        &mut self,
        id: u64,
        what: String,
        r: Result<(), super::undo::UndoError>,
        mark: &mut Mark<'_>,
    ) -> Result<(), JournalError> {
        mark(
            id,
            if r.is_ok() {
                UndoState::UndoFinished
            } else {
                UndoState::UndoFailed
            },
        )?;
        match r {
            Ok(()) => self.lines.push(format!("  rolled back {what}")),
            Err(e) => {
                self.ok = false;
                self.lines
                    .push(format!("  could NOT roll back {what}: {e}"));
            }
        }
        Ok(())
    }
}

/// Carries out a journal's pending undos, newest first, each journaled (started, then
/// finished or failed): the unwind of an interrupted apply (in `recover`) and of a restore
/// (failed, or interrupted). A `Reapply` applies its revision again (outside the runtime);
/// the helper containers a backup or restore left are removed. Says what it did, and
/// whether everything was undone (the journal is the caller's to end).
pub fn unwind<R: Reapply + ?Sized>(
    runtime: &tokio::runtime::Runtime,
    journal: &mut Journal,
    engines: &HashMap<String, Engine>,
    project: &str,
    reapply: &R,
) -> Result<(Vec<String>, bool), JournalError> {
    let mut pending = journal.machine().pending_undos();
    pending.reverse();
    let mut u = Unwind::new(pending);
    let mark = &mut |id, state| journal.append(Record::UndoState { id, state });
    while let Some(ToReapply { id, revision }) = runtime.block_on(u.run(engines, project, mark))? {
        let r = reapply
            .reapply(revision)
            .map_err(super::undo::UndoError::Reapply);
        u.finish(id, format!("applied revision {revision} again"), r, mark)?;
    }
    let Unwind {
        mut lines, mut ok, ..
    } = u;
    runtime.block_on(async {
        for (region, engine) in engines {
            match crate::archive::helpers::sweep_helpers_said(engine, project, region).await {
                Ok(said) => lines.extend(said.map(|l| format!("  {l}"))),
                Err(e) => {
                    ok = false;
                    lines.push(format!(
                        "  could NOT remove the helper containers in `{region}`: {e}"
                    ));
                }
            }
        }
        super::sweep_deliveries(engines, project).await;
    });
    Ok((lines, ok))
}

impl super::Run<'_> {
    /// Undoes every completed step, newest first, each journaled (by the one
    /// [`Unwind`]); says what was restored.
    pub(super) async fn rollback(&self) -> Result<String, ApplyError> {
        Ok(self.rollback_from(0).await?.0)
    }

    /// Undoes the steps completed since the undo stack held `since` records, newest first;
    /// the journal ends (rolled back) only when that is every step (`since` 0) and all went
    /// through. Says what was restored, and whether every undo went through.
    pub(super) async fn rollback_from(&self, since: usize) -> Result<(String, bool), ApplyError> {
        // A journal that cannot be written does not stop the undoing: it goes on in
        // memory, and the journal stays open for `recover` (every undo is idempotent).
        let mut journaled = true;
        let mark = &mut |id, state| {
            journaled &= self.journal(Record::UndoState { id, state }).is_ok();
            Ok(())
        };
        let undos = {
            let mut all = self.undo.borrow_mut();
            let at = since.min(all.len());
            all.split_off(at)
        };
        let mut u = Unwind::new(undos);
        // An apply records no `Reapply`; were one there, `perform` refuses it.
        while let Some(r) = u.run(self.engines, self.project, mark).await? {
            let refused = Undo::Reapply {
                revision: r.revision,
            };
            let (what, result) = undo::perform(self.engines, self.project, &refused).await;
            u.finish(r.id, what, result, mark)?;
        }
        let mut lines = u.lines;
        // The names held while undoing container creates are free again.
        for e in self.engines.values() {
            if let Err(x) = e.release_names().await {
                lines.push(format!(
                    "  could NOT free the names held while undoing: {x}"
                ));
            }
        }
        let failed = lines.iter().any(|l| l.starts_with("  could NOT")) || !journaled;
        // The secrets of the containers undone go before the journal ends: once it has,
        // nothing would say they are left.
        self.sweep_deliveries().await;
        if !failed && since == 0 {
            self.end_journal(Outcome::RolledBack)?;
        }
        if !journaled {
            lines.push(
                "  the journal could not be written: run `berth recover` to make sure".into(),
            );
        }
        // With an undo that failed, the journal stays open: `berth recover` retries.
        let report = if lines.is_empty() {
            "nothing had been changed\n".to_owned()
        } else if failed {
            format!(
                "the completed steps were undone, except where it says NOT (run `berth recover` to retry):\n{}\n",
                lines.join("\n")
            )
        } else {
            format!("the completed steps were undone:\n{}\n", lines.join("\n"))
        };
        Ok((report, !failed))
    }
}
