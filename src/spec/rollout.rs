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
    /// (`depends_on: [db@iad]`) comes right after that region (which is pulled forward, with
    /// what it depends on in turn). `Err` with the regions that wait for each other in a
    /// cycle (the spec check refuses such a spec).
    pub fn rollout_order(&self) -> Result<Vec<&str>, Vec<&str>> {
        fn place<'s>(r: &'s str, edges: &[(&'s str, &'s str)], placed: &mut Vec<&'s str>) {
            if placed.contains(&r) {
                return;
            }
            for (_, before) in edges.iter().filter(|(after, _)| *after == r) {
                place(before, edges, placed);
            }
            placed.push(r);
        }
        let names = self.region_names();
        let edges = self.region_dependencies();
        region_cycle(&names, &edges)?;
        let mut placed: Vec<&str> = Vec::with_capacity(names.len());
        for r in &names {
            place(r, &edges, &mut placed);
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

/// `Err` with the regions that wait for each other in a cycle (in each edge, `after` waits
/// for `before`), if any.
fn region_cycle<'s>(names: &[&'s str], edges: &[(&'s str, &'s str)]) -> Result<(), Vec<&'s str>> {
    let mut placed: Vec<&str> = Vec::with_capacity(names.len());
    while placed.len() < names.len() {
        // Any region whose dependencies are all placed.
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
                let mut stuck: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|r| !placed.contains(r))
                    .collect();
                // Only waiting behind the cycle is not being in it: a region no other stuck
                // region waits for is left out, until none is.
                while let Some(i) = stuck.iter().position(|r| {
                    !edges
                        .iter()
                        .any(|(after, before)| before == r && stuck.contains(after))
                }) {
                    stuck.remove(i);
                }
                return Err(stuck);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec of three regions (`fra` listed first, `iad` primary) and these pods.
    fn spec(pods: &str) -> Spec {
        let text = format!(
            "version: 1\nproject: p\nregions:\n  fra: {{ engine: \"unix:///run/fra.sock\" }}\n  iad: {{ engine: \"unix:///run/iad.sock\", primary: true }}\n  ord: {{ engine: \"unix:///run/ord.sock\" }}\npods:\n{pods}"
        );
        match crate::spec::load::parse(&text) {
            Ok(s) => s,
            Err(d) => panic!("{}", d.message),
        }
    }

    fn pod(name: &str, region: &str, deps: &str) -> String {
        format!("  {name}:\n    image: x\n    regions: [{region}]\n    depends_on: [{deps}]\n")
    }

    #[test]
    fn the_primary_first_then_file_order_unless_a_region_waits_for_another() {
        let s = spec(&pod("a", "fra", ""));
        assert_eq!(s.rollout_order(), Ok(vec!["iad", "fra", "ord"]));
        assert_eq!(s.on_failure(), OnFailure::Rollback);
        // iad's pod waits for ord's: ord first, then iad, then fra.
        let s = spec(&[pod("db", "ord", ""), pod("api", "iad", "db@ord")].concat());
        assert_eq!(s.region_dependencies(), [("iad", "ord")]);
        assert_eq!(s.rollout_order(), Ok(vec!["ord", "iad", "fra"]));
    }

    #[test]
    fn a_cycle_names_only_the_regions_in_it() {
        let s = spec(
            &[
                pod("db", "ord", "q@iad"),
                pod("q", "iad", "db@ord"),
                pod("web", "fra", "q@iad"),
            ]
            .concat(),
        );
        assert_eq!(s.rollout_order(), Err(vec!["iad", "ord"]));
    }
}
