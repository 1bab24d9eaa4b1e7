//! The rollout over regions: one region after the other, in the spec's rollout order (the
//! primary first, a region after those its pods depend on), each region's steps and gates
//! done before the next region starts; and what a failed region means for the others
//! (`rollout.on_failure`: `rollback` undoes every region, `halt` only the failed one).

use std::collections::BTreeMap;

use super::{ApplyError, Run, Status, rolled_back};
use crate::graph::ResourceGraph;
use crate::plan::Change;
use crate::spec::Spec;

impl Run<'_> {
    /// Rolls the changes out region by region ([`rollout`]); a region's batches one after
    /// the other. When a step or gate fails, `rollout.on_failure` says what is undone:
    /// everything (`rollback`, and always on an interruption), or only the failed region
    /// (`halt`, once a region is done: returned as [`Halted`] with the commit to make).
    /// Returns the number of changes made and the halt, if any.
    pub(super) async fn roll_out(
        &self,
        changes: &[&Change],
    ) -> Result<(usize, Option<Box<Halted>>), ApplyError> {
        let mut changed = 0;
        let plan_regions = rollout(self.spec, self.graph, changes);
        let several = plan_regions.len() > 1;
        let mut done: Vec<String> = Vec::new();
        let mut halted = None;
        'regions: for region in &plan_regions {
            // Where this region began: what a `halt` undoes, and what it keeps.
            let undo_mark = self.undo.borrow().len();
            let commit_mark = self.commit.borrow().len();
            let changed_before = changed;
            if several {
                self.event(None, Status::Started, format!("Region `{}`:", region.name));
            }
            for batch in &region.batches {
                // Every step of the batch is polled at once; `parallelism` workers limit
                // how many ask the engine for changes at a time ([`Run::step`]).
                let results: Vec<Result<(), ApplyError>> =
                    futures_util::future::join_all(batch.iter().map(|c| self.step(c))).await;
                changed += results.iter().filter(|r| r.is_ok()).count();
                // Every step of the batch has finished or was skipped (none is left half-done);
                // undo them all, and report the failure rather than the skips it caused.
                let mut errors: Vec<ApplyError> =
                    results.into_iter().filter_map(Result::err).collect();
                let interrupted = self.interrupted.load(std::sync::atomic::Ordering::Relaxed);
                if interrupted && errors.is_empty() {
                    errors.push(ApplyError::Interrupted {
                        report: String::new(),
                    });
                }
                errors.sort_by_key(|e| matches!(e, ApplyError::Skipped));
                let Some(e) = errors.into_iter().next() else {
                    continue;
                };
                // `halt` (not on an interruption, which undoes everything): the regions done
                // keep the new revision; only this region's steps are undone.
                let halt = self.spec.on_failure() == crate::spec::OnFailure::Halt
                    && !done.is_empty()
                    && !matches!(e, ApplyError::Interrupted { .. });
                if !halt {
                    let restored = self.rollback().await?;
                    let restored = if several {
                        format!(
                            "{}{restored}",
                            rollout_note(&region.name, &done, crate::spec::OnFailure::Rollback)
                        )
                    } else {
                        restored
                    };
                    return Err(rolled_back(e, restored));
                }
                let (restored, ok) = self.rollback_from(undo_mark).await?;
                if !ok {
                    // This region could not be undone: the journal stays open, and `recover`
                    // undoes every region (one revision everywhere, the previous one).
                    return Err(rolled_back(e, restored));
                }
                changed = changed_before;
                self.commit.borrow_mut().truncate(commit_mark);
                // The revision reaches every region in scope (all, or `--region`'s) but this
                // one and those after it with changes: a region without changes runs it too.
                let scope = self.covered.borrow().0.clone().unwrap_or_else(|| {
                    self.spec
                        .region_names()
                        .iter()
                        .map(|r| r.to_string())
                        .collect()
                });
                let not_reached: Vec<&str> = plan_regions
                    .iter()
                    .skip_while(|r| r.name != region.name)
                    .map(|r| r.name.as_str())
                    .collect();
                let reached = scope
                    .into_iter()
                    .filter(|r| !not_reached.contains(&r.as_str()))
                    .collect();
                *self.covered.borrow_mut() = (
                    Some(in_spec_order(self.spec, reached)),
                    Some(region.name.clone()),
                );
                let note = rollout_note(&region.name, &done, crate::spec::OnFailure::Halt);
                halted = Some(Box::new(Halted {
                    region: region.name.clone(),
                    done: done.clone(),
                    error: rolled_back(e, format!("{note}{restored}")),
                }));
                break 'regions;
            }
            if several {
                self.event(
                    None,
                    Status::Done,
                    format!("Region `{}`: done, its gates passed", region.name),
                );
            }
            done.push(region.name.clone());
        }
        Ok((changed, halted))
    }
}

/// The changes of one region, in batches: a batch starts when the one before it is done.
#[derive(Debug)]
struct RegionRun<'c> {
    name: String,
    batches: Vec<Vec<&'c Change>>,
}

/// The rollout: region by region in the spec's rollout order (the primary first, a region
/// after those its pods depend on: [`Spec::rollout_order`]), each region's changes by graph
/// layer. Pods leaving the spec are set aside first, so that what replaces them can take
/// their ports and names. A change of no region (a secret file of the spec's, healed on
/// this machine) goes with the first region, before anything that uses it; so does one of
/// a region the spec no longer names. Regions without changes are left out.
fn rollout<'c>(spec: &Spec, graph: &ResourceGraph, changes: &[&'c Change]) -> Vec<RegionRun<'c>> {
    let order = spec.rollout_order().unwrap_or_else(|_| spec.region_names());
    let mut batches: BTreeMap<(usize, usize), Vec<&Change>> = BTreeMap::new();
    for c in changes {
        let region = c
            .address
            .region
            .as_deref()
            .and_then(|r| order.iter().position(|x| *x == r))
            .unwrap_or(0);
        let layer = match graph.layer_of(&c.address) {
            Some(l) => l + 1,
            None => 0,
        };
        batches.entry((region, layer)).or_default().push(c);
    }
    let mut out: Vec<RegionRun<'c>> = Vec::new();
    for ((region, _), batch) in batches {
        let name = order.get(region).copied().unwrap_or_default();
        match out.last_mut() {
            Some(last) if last.name == name => last.batches.push(batch),
            _ => out.push(RegionRun {
                name: name.to_owned(),
                batches: vec![batch],
            }),
        }
    }
    out
}

/// Region names in the spec's order, each once.
pub(super) fn in_spec_order(spec: &Spec, mut regions: Vec<String>) -> Vec<String> {
    let order = spec.region_names();
    regions.sort_by_key(|r| order.iter().position(|o| o == r));
    regions.dedup();
    regions
}

/// A rollout stopped at a failed region (`rollout.on_failure: halt`): the regions done
/// before it keep the new revision.
#[derive(Debug)]
pub struct Halted {
    /// The region that failed (its steps were undone).
    pub region: String,
    /// The regions done before it, in rollout order.
    pub done: Vec<String>,
    /// Why the region failed, with what was undone in its report.
    pub error: ApplyError,
}

/// What a failed region means for the others, first in the report of a rollout over
/// several regions.
fn rollout_note(failed: &str, done: &[String], policy: crate::spec::OnFailure) -> String {
    let done_list = done
        .iter()
        .map(|r| format!("`{r}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match policy {
        _ if done.is_empty() => format!(
            "region `{failed}` failed, the first of the rollout; no region had been done, the later ones were not touched\n"
        ),
        crate::spec::OnFailure::Rollback => format!(
            "region `{failed}` failed; the regions done before it ({done_list}) were undone too, so every region is back on the previous revision (`rollout.on_failure: rollback`)\n"
        ),
        crate::spec::OnFailure::Halt => format!(
            "region `{failed}` failed; the regions done before it ({done_list}) keep the new revision, `{failed}` is back on the previous one and the later regions were not touched (`rollout.on_failure: halt`): `berth plan` shows what is left\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::ObservedState;

    fn spec(text: &str) -> Spec {
        crate::spec::load::checked_for_tests(text)
    }

    /// Every resource of `spec` created: the plan of a first apply.
    fn first_apply(spec: &Spec) -> (ResourceGraph, Vec<Change>) {
        let desired = crate::resources::desired(spec);
        let graph = ResourceGraph::new(desired).unwrap();
        let observed = ObservedState {
            origin: crate::observe::Origin::Engines {
                regions: spec.region_names().iter().map(|r| r.to_string()).collect(),
            },
            resources: Vec::new(),
            unobserved: Vec::new(),
        };
        let plan = crate::plan::plan(&spec.project.value, &graph, &observed);
        (graph, plan.changes)
    }

    /// Region by region, each region's batches as lists of addresses.
    fn rolled_out(text: &str) -> Vec<(String, Vec<Vec<String>>)> {
        let spec = spec(text);
        let (graph, changes) = first_apply(&spec);
        let changes: Vec<&Change> = changes.iter().collect();
        rollout(&spec, &graph, &changes)
            .into_iter()
            .map(|r| {
                let batches = r
                    .batches
                    .iter()
                    .map(|b| b.iter().map(|c| c.address.to_string()).collect())
                    .collect();
                (r.name, batches)
            })
            .collect()
    }

    const TWO_REGIONS: &str = "version: 1
project: shop
regions:
  ord: { engine: \"unix:///run/ord.sock\" }
  iad: { engine: \"unix:///run/iad.sock\", primary: true }
pods:
  db:
    image: db:1
    regions: [iad]
  api:
    image: api:1
    depends_on: [DEP]
";

    #[test]
    fn the_primary_is_rolled_out_first_then_the_others_in_file_order() {
        let text = TWO_REGIONS
            .replace("    depends_on: [DEP]\n", "")
            .replace("regions: [iad]", "regions: [iad, ord]");
        let order = rolled_out(&text);
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["iad", "ord"]);
        // Within a region, by graph layer: the network, then the pods.
        assert_eq!(
            order[0].1,
            vec![
                vec!["network.default@iad"],
                vec!["pod.api@iad", "pod.db@iad"]
            ]
        );
        assert_eq!(
            order[1].1,
            vec![
                vec!["network.default@ord"],
                vec!["pod.api@ord", "pod.db@ord"]
            ]
        );
    }

    #[test]
    fn a_region_depending_on_another_comes_after_it_even_the_primary() {
        // `api` runs in both; in `iad` it waits for `db` of `iad` (same region), in
        // `ord` for `db@iad`: `ord` after `iad`, as the primary order has it anyway.
        let text = TWO_REGIONS.replace("DEP", "db@iad");
        let names: Vec<String> = rolled_out(&text).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["iad", "ord"]);
        // The primary's pods waiting for a pod of `ord`: `ord` goes first.
        let text = TWO_REGIONS
            .replace("regions: [iad]", "regions: [ord]")
            .replace("DEP", "db@ord");
        let order = rolled_out(&text);
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ord", "iad"]);
        assert_eq!(
            order[1].1,
            vec![vec!["network.default@iad"], vec!["pod.api@iad"]]
        );
    }

    #[test]
    fn regions_without_changes_are_left_out_and_a_single_region_is_one_run() {
        let text = "version: 1\nproject: p\npods:\n  a:\n    image: a:1\n";
        let order = rolled_out(text);
        assert_eq!(order.len(), 1);
        assert_eq!(order[0].0, "local");
        let spec = spec(&TWO_REGIONS.replace("    depends_on: [DEP]\n", ""));
        let (graph, changes) = first_apply(&spec);
        let only_ord: Vec<&Change> = changes
            .iter()
            .filter(|c| c.address.region.as_deref() == Some("ord"))
            .collect();
        let runs = rollout(&spec, &graph, &only_ord);
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ord"]);
    }

    #[test]
    fn the_report_names_the_failed_region_and_what_became_of_the_others() {
        let done = vec!["iad".to_owned()];
        let rollback = rollout_note("ord", &done, crate::spec::OnFailure::Rollback);
        assert!(rollback.contains("region `ord` failed"), "{rollback}");
        assert!(rollback.contains("(`iad`) were undone too"), "{rollback}");
        let halt = rollout_note("ord", &done, crate::spec::OnFailure::Halt);
        assert!(halt.contains("(`iad`) keep the new revision"), "{halt}");
        assert!(halt.contains("`berth plan`"), "{halt}");
        let first = rollout_note("iad", &[], crate::spec::OnFailure::Halt);
        assert!(first.contains("the first of the rollout"), "{first}");
    }
}
