//! The rollout over regions (`rollout:`): what happens to the regions already done when one
//! fails, and the order regions go in (the primary first, a region after the regions its
//! pods depend on with `depends_on: [POD@REGION]`).

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Pod, Sp, Spec};

/// How an apply goes over several regions.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// When a region fails (a step or a gate): `rollback` (default) undoes every region
    /// already done too, so one revision runs everywhere; `halt` keeps the regions already
    /// done on the new revision, undoes the failed region and leaves the later ones alone
    /// (the revision is recorded as partial).
    #[serde(default)]
    pub on_failure: Option<Sp<OnFailure>>,
}

/// What an apply does to the regions already done when a later region fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Every region back to the previous revision.
    #[default]
    Rollback,
    /// The regions already done keep the new revision; the failed one is undone.
    Halt,
}

impl Spec {
    /// `rollout.on_failure`, `rollback` unless the spec says otherwise.
    pub fn on_failure(&self) -> OnFailure {
        self.rollout
            .as_ref()
            .and_then(|r| r.on_failure.as_ref())
            .map_or(OnFailure::Rollback, |o| o.value)
    }

    /// The order an apply goes through the regions: the primary first, then the others in
    /// file order, except that a region whose pods depend on pods of another region
    /// (`depends_on: [db@iad]`) comes after that region. `Err` with the regions that wait
    /// for each other in a cycle (the spec check refuses such a spec).
    pub fn rollout_order(&self) -> Result<Vec<&str>, Vec<&str>> {
        let names = self.region_names();
        let edges = self.region_dependencies();
        let mut placed: Vec<&str> = Vec::with_capacity(names.len());
        while placed.len() < names.len() {
            // The first region in spec order whose dependencies are all placed.
            let next = names.iter().copied().find(|r| {
                !placed.contains(r)
                    && edges
                        .iter()
                        .filter(|(after, _)| after == r)
                        .all(|(_, before)| placed.contains(before))
            });
            match next {
                Some(r) => placed.push(r),
                None => {
                    let stuck = names
                        .iter()
                        .copied()
                        .filter(|r| !placed.contains(r))
                        .collect();
                    return Err(stuck);
                }
            }
        }
        Ok(placed)
    }

    /// The pairs `(after, before)` of regions where a pod running in `after` depends on a
    /// pod of `before` (`depends_on: [POD@before]`), each pair once, in spec order. Entries
    /// naming an unknown pod or region are left to the check.
    pub fn region_dependencies(&self) -> Vec<(&str, &str)> {
        let names = self.region_names();
        let mut out: Vec<(&str, &str)> = Vec::new();
        for p in self.pods.iter() {
            for d in &p.item.depends_on {
                let (_, Some(before)) = Pod::dependency(&d.value) else {
                    continue;
                };
                let Some(before) = names.iter().copied().find(|n| *n == before) else {
                    continue;
                };
                for after in self.regions_of(&p.item.regions) {
                    if after != before && !out.contains(&(after, before)) {
                        out.push((after, before));
                    }
                }
            }
        }
        out
    }
}
