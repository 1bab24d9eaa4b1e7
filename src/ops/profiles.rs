//! `--profile NAME`: which pods a session plans. A pod with `profiles:` is planned only
//! when one of them is chosen; otherwise it is left out of the spec the session works
//! from, and what runs of it is left out of what was observed, so that it is neither
//! created nor removed (compose's habit). `destroy` takes every pod down.

use crate::graph::Kind;
use crate::observe::ObservedState;
use crate::spec::Spec;

use super::OpError;

/// Every chosen profile is one some pod of the spec has, or a refusal naming them.
pub(super) fn known(spec: &Spec, chosen: &[String]) -> Result<(), OpError> {
    let all = every(spec);
    let Some(unknown) = chosen.iter().find(|c| !all.contains(c)) else {
        return Ok(());
    };
    let help = if all.is_empty() {
        "no pod of the spec has `profiles:`; leave `--profile` out".to_owned()
    } else {
        format!(
            "name a profile a pod has: {}",
            all.iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(OpError::Refused {
        message: format!(
            "`--profile {unknown}`: no pod of the spec has profile `{unknown}`; nothing was planned or changed"
        ),
        help,
    })
}

/// Every profile a pod of the spec has, sorted.
pub(super) fn every(spec: &Spec) -> Vec<String> {
    let mut all: Vec<String> = spec
        .pods
        .iter()
        .flat_map(|p| p.item.profiles().iter().map(|s| s.value.clone()))
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Leaves out of `spec` the pods none of whose profiles is chosen; their names.
pub(super) fn leave_out(spec: &mut Spec, chosen: &[String]) -> Vec<String> {
    let out: Vec<String> = spec
        .pods
        .iter()
        .filter(|p| !p.item.active(chosen))
        .map(|p| p.name.value.clone())
        .collect();
    if !out.is_empty() {
        spec.pods.retain(|p| p.item.active(chosen));
    }
    out
}

/// What was observed, without the containers of the pods left out.
pub(super) fn unobserve(observed: &mut ObservedState, left_out: &[String]) {
    if left_out.is_empty() {
        return;
    }
    observed.resources.retain(|o| {
        o.address.kind != Kind::Pod || !left_out.iter().any(|n| **n == *o.address.name)
    });
}
