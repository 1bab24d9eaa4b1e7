//! The records of the journal and the state machine they drive: what each record says, and
//! which record is legal where (a step succeeds only once started, an undo is finished only
//! once started, nothing follows the end).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::apply::Undo;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Started,
    Succeeded,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UndoState {
    /// Written before the mutation it undoes.
    Recorded,
    UndoStarted,
    UndoFinished,
    UndoFailed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    RolledBack,
    Recovered,
}

/// What a commit removes once every gate has passed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommitItem {
    Container { region: String, id: String },
    Network { region: String, name: String },
    Volume { region: String, name: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    Begin {
        command: String,
        project: String,
        /// The spec file and the SHA-256 of its text.
        spec: String,
        spec_sha256: String,
        /// The spec's text, so that `recover` can record the revision of an apply it
        /// finishes.
        #[serde(default)]
        spec_text: String,
        /// The profiles chosen (`--profile`): the pods of others were left alone.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        profiles: Vec<String>,
        from_revision: u64,
        revision: u64,
        at: u64,
        /// A restore's journal: the backup id it puts back (for `recover --forward`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restore: Option<String>,
    },
    Undo {
        id: u64,
        undo: Undo,
    },
    Drop {
        ids: Vec<u64>,
    },
    Step {
        address: String,
        state: StepState,
    },
    UndoState {
        id: u64,
        state: UndoState,
    },
    Commit {
        items: Vec<CommitItem>,
        /// The regions the revision reaches, when not every region of the spec (`--region`,
        /// or a rollout halted at a failed region), for the revision `recover` records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        regions: Option<Vec<String>>,
        /// The region a rollout halted at (`rollout.on_failure: halt`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        halted_at: Option<String>,
    },
    End {
        outcome: Outcome,
    },
}

/// Why a record is illegal where it comes (as steno's `SagaLogError` says which event a
/// node's state refuses): the transitions the [`Machine`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Illegal {
    #[error("the journal has ended")]
    Ended,
    #[error("begun twice")]
    BegunTwice,
    #[error("nothing has begun")]
    NotBegun,
    #[error("undo record {0} written twice")]
    UndoTwice(u64),
    #[error("an undo record after the commit")]
    UndoAfterCommit,
    #[error("dropping unknown undo record {0}")]
    DropUnknown(u64),
    #[error("step `{address}`: {from:?} -> {to:?}")]
    Step {
        address: String,
        from: Option<StepState>,
        to: StepState,
    },
    #[error("undo record {0} is unknown")]
    UndoUnknown(u64),
    #[error("undo record {id}: {from:?} -> {to:?}")]
    Undo {
        id: u64,
        from: UndoState,
        to: UndoState,
    },
    #[error("committed twice")]
    CommittedTwice,
    /// Not a transition: an earlier record could not be written, and a journal with a hole
    /// would lie.
    #[error("an earlier record could not be written; the journal takes no more")]
    Poisoned,
}

/// Where each step and undo record stands: the state machine the records drive.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub begin: Option<Record>,
    pub steps: HashMap<String, StepState>,
    /// Undo records in the order written, with their state; dropped ones removed.
    pub undos: Vec<(u64, Undo, UndoState)>,
    pub commit: Option<Vec<CommitItem>>,
    /// What the commit said of the regions: those the revision reaches (when not all)
    /// and the region a rollout halted at.
    pub covered: (Option<Vec<String>>, Option<String>),
    pub end: Option<Outcome>,
}

impl Machine {
    /// Applies a record, or says why it is illegal here.
    pub fn apply(&mut self, r: &Record) -> Result<(), Illegal> {
        if self.end.is_some() {
            return Err(Illegal::Ended);
        }
        match r {
            Record::Begin { .. } if self.begin.is_some() => return Err(Illegal::BegunTwice),
            Record::Begin { .. } => self.begin = Some(r.clone()),
            _ if self.begin.is_none() => return Err(Illegal::NotBegun),
            Record::Undo { id, undo } => {
                if self.undos.iter().any(|(i, ..)| i == id) {
                    return Err(Illegal::UndoTwice(*id));
                }
                if self.commit.is_some() {
                    return Err(Illegal::UndoAfterCommit);
                }
                self.undos.push((*id, undo.clone(), UndoState::Recorded));
            }
            Record::Drop { ids } => {
                for id in ids {
                    let Some(pos) = self.undos.iter().position(|(i, ..)| i == id) else {
                        return Err(Illegal::DropUnknown(*id));
                    };
                    self.undos.remove(pos);
                }
            }
            Record::Step { address, state } => {
                let from = self.steps.get(address).copied();
                let legal = matches!(
                    (from, state),
                    (None, StepState::Started)
                        | (
                            Some(StepState::Started),
                            StepState::Succeeded | StepState::Failed
                        )
                );
                if !legal {
                    return Err(Illegal::Step {
                        address: address.clone(),
                        from,
                        to: *state,
                    });
                }
                self.steps.insert(address.clone(), *state);
            }
            Record::UndoState { id, state } => {
                let Some(entry) = self.undos.iter_mut().find(|(i, ..)| i == id) else {
                    return Err(Illegal::UndoUnknown(*id));
                };
                let legal = matches!(
                    (entry.2, state),
                    // Started again: after a failure, or after a crash in the middle of
                    // it (every undo is idempotent).
                    (
                        UndoState::Recorded | UndoState::UndoFailed | UndoState::UndoStarted,
                        UndoState::UndoStarted
                    ) | (
                        UndoState::UndoStarted,
                        UndoState::UndoFinished | UndoState::UndoFailed
                    )
                );
                if !legal {
                    return Err(Illegal::Undo {
                        id: *id,
                        from: entry.2,
                        to: *state,
                    });
                }
                entry.2 = *state;
            }
            Record::Commit {
                items,
                regions,
                halted_at,
            } => {
                if self.commit.is_some() {
                    return Err(Illegal::CommittedTwice);
                }
                self.commit = Some(items.clone());
                self.covered = (regions.clone(), halted_at.clone());
            }
            Record::End { outcome } => self.end = Some(*outcome),
        }
        Ok(())
    }

    /// The undo records still to carry out, newest first.
    pub fn pending_undos(&self) -> Vec<(u64, Undo)> {
        self.undos
            .iter()
            .rev()
            .filter(|(_, _, s)| *s != UndoState::UndoFinished)
            .map(|(i, u, _)| (*i, u.clone()))
            .collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A journal's first record, for tests.
    pub(in crate::apply::journal) fn begin() -> Record {
        Record::Begin {
            command: "apply".into(),
            project: "p".into(),
            spec: "berth.yaml".into(),
            spec_sha256: "x".into(),
            spec_text: String::new(),
            profiles: Vec::new(),
            from_revision: 0,
            revision: 1,
            at: 0,
            restore: None,
        }
    }

    /// An undo record's content, for tests.
    pub(in crate::apply::journal) fn undo(name: &str) -> Undo {
        Undo::RemoveNetwork {
            region: "local".into(),
            name: name.into(),
        }
    }

    #[test]
    fn illegal_transitions_are_refused() {
        let mut m = Machine::default();
        let step = |s| Record::Step {
            address: "pod.a".into(),
            state: s,
        };
        assert_eq!(
            m.apply(&step(StepState::Started)),
            Err(Illegal::NotBegun),
            "before begin"
        );
        m.apply(&begin()).unwrap();
        assert!(m.apply(&step(StepState::Succeeded)).is_err(), "not started");
        m.apply(&step(StepState::Started)).unwrap();
        m.apply(&step(StepState::Succeeded)).unwrap();
        assert!(
            m.apply(&step(StepState::Failed)).is_err(),
            "already succeeded"
        );
        m.apply(&Record::Undo {
            id: 1,
            undo: undo("n"),
        })
        .unwrap();
        assert!(
            m.apply(&Record::Undo {
                id: 1,
                undo: undo("n")
            })
            .is_err()
        );
        let us = |s| Record::UndoState { id: 1, state: s };
        assert!(
            m.apply(&us(UndoState::UndoFinished)).is_err(),
            "not started"
        );
        m.apply(&us(UndoState::UndoStarted)).unwrap();
        m.apply(&us(UndoState::UndoFailed)).unwrap();
        m.apply(&us(UndoState::UndoStarted)).unwrap();
        m.apply(&us(UndoState::UndoFinished)).unwrap();
        assert!(m.pending_undos().is_empty());
        m.apply(&Record::End {
            outcome: Outcome::RolledBack,
        })
        .unwrap();
        assert_eq!(
            m.apply(&step(StepState::Started)),
            Err(Illegal::Ended),
            "after the end"
        );
    }

    #[test]
    fn a_halted_rollout_commits_the_regions_done_and_says_so() {
        let mut m = Machine::default();
        m.apply(&begin()).unwrap();
        // iad done (its undo kept), ord undone: the commit keeps iad's revision.
        for (id, name) in [(0, "iad"), (1, "ord")] {
            m.apply(&Record::Undo {
                id,
                undo: undo(name),
            })
            .unwrap();
        }
        for state in [UndoState::UndoStarted, UndoState::UndoFinished] {
            m.apply(&Record::UndoState { id: 1, state }).unwrap();
        }
        let line = serde_json::to_string(&Record::Commit {
            items: Vec::new(),
            regions: Some(vec!["iad".into()]),
            halted_at: Some("ord".into()),
        })
        .unwrap();
        let read: Record = serde_json::from_str(&line).unwrap();
        m.apply(&read).unwrap();
        assert_eq!(
            m.covered,
            (Some(vec!["iad".to_owned()]), Some("ord".to_owned()))
        );
        // A commit of an older berth (no regions) reads as one reaching every region.
        let old: Record = serde_json::from_str(r#"{"t":"commit","items":[]}"#).unwrap();
        let mut m = Machine::default();
        m.apply(&begin()).unwrap();
        m.apply(&old).unwrap();
        assert_eq!(m.covered, (None, None));
        assert!(!serde_json::to_string(&old).unwrap().contains("regions"));
    }
}
