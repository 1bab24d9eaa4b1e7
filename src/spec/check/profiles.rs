//! Profiles: their names, and that nothing which always runs needs a pod that runs only
//! with a profile (a pod's `depends_on`, a proxy route, a backup's pod).

use super::{Checker, NameRule};
use crate::diag::{Diagnostic, Span};
use crate::spec::Pod;

impl Checker<'_> {
    pub(super) fn profiles(&mut self) {
        let spec = self.spec;
        for p in spec.pods.iter() {
            for (i, profile) in p.item.profiles().iter().enumerate() {
                self.name(profile, NameRule::Label, "profile");
                if p.item.profiles()[..i]
                    .iter()
                    .any(|e| e.value == profile.value)
                {
                    self.push(
                        Diagnostic::error(
                            "duplicate-entry",
                            format!("profile `{}` is listed twice", profile.value),
                        )
                        .at(profile.span, "listed again here")
                        .help("remove one of the two"),
                    );
                }
            }
            for dep in &p.item.depends_on {
                let (target, _) = Pod::dependency(&dep.value);
                let Some(t) = spec.pods.get(target) else {
                    continue; // an unknown pod: `pods` says so
                };
                let mine = p.item.profiles();
                let missing: Vec<&str> = if mine.is_empty() {
                    Vec::new()
                } else {
                    mine.iter()
                        .map(|m| m.value.as_str())
                        .filter(|m| !t.active(&[(*m).to_owned()]))
                        .collect()
                };
                if !t.profiles().is_empty() && (mine.is_empty() || !missing.is_empty()) {
                    let when = if mine.is_empty() {
                        format!("pod `{}` always runs", p.name.value)
                    } else {
                        format!(
                            "pod `{}` runs with profile {}",
                            p.name.value,
                            quoted(&missing)
                        )
                    };
                    self.needs_profile_pod(dep.span, &when, target, t, "the dependency");
                }
            }
        }
        for j in spec.jobs.iter() {
            for dep in &j.item.depends_on {
                if let Some(t) = spec.pods.get(&dep.value)
                    && !t.profiles().is_empty()
                {
                    let when = format!("job `{}` always runs", j.name.value);
                    self.needs_profile_pod(dep.span, &when, &dep.value, t, "the dependency");
                }
            }
        }
        if let Some(proxy) = &spec.proxy {
            for r in &proxy.routes {
                if let Ok((pod, _)) = r.to.get()
                    && let Some(t) = spec.pods.get(pod)
                    && !t.profiles().is_empty()
                {
                    self.needs_profile_pod(r.to.span, "the proxy always runs", pod, t, "the route");
                }
            }
        }
        for b in spec.backups.iter() {
            if let Some(pod) = &b.item.source.pod
                && let Some(t) = spec.pods.get(&pod.value)
                && !t.profiles().is_empty()
            {
                let when = format!("backup `{}` always runs", b.name.value);
                self.needs_profile_pod(pod.span, &when, &pod.value, t, "the backup's `pod`");
            }
        }
    }

    fn needs_profile_pod(&mut self, at: Span, when: &str, target: &str, t: &Pod, what: &str) {
        let theirs: Vec<&str> = t.profiles().iter().map(|p| p.value.as_str()).collect();
        self.push(
            Diagnostic::error(
                "profile-dependency",
                format!(
                    "{when}, but pod `{target}` runs only with profile {}",
                    quoted(&theirs)
                ),
            )
            .at(at, format!("`{target}` may not be running"))
            .help(format!(
                "remove {what}, give pod `{target}`'s profiles to this one too, or take `profiles:` off `{target}`"
            )),
        );
    }
}

/// `` `a` `` or `` `a` or `b` ``.
fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(" or ")
}
