//! Jobs: names (their containers share the pods' names), what they wait for and gate, and
//! their container's configuration, checked as a pod's is.

use std::collections::HashMap;

use super::{Checker, NameRule, RESERVED_POD_NAMES};
use crate::diag::{Diagnostic, Span};
use crate::spec::Sp;

impl Checker<'_> {
    pub(super) fn jobs(&mut self) {
        let spec = self.spec;
        self.map_names(&spec.jobs, NameRule::Label, "job");
        for j in spec.jobs.iter() {
            let name = &j.name;
            let job = &j.item;
            if spec.pods.contains(&name.value) || RESERVED_POD_NAMES.contains(&name.value.as_str())
            {
                self.push(
                    Diagnostic::error(
                        "duplicate-name",
                        format!("job `{}` has the name of a pod", name.value),
                    )
                    .at(name.span, "its container would have the pod's name")
                    .help("give the job a name of its own, e.g. `migrate`"),
                );
            }
            for s in job.secrets.iter().filter(|s| s.value.env().is_some()) {
                self.push(
                    Diagnostic::error(
                        "job-secret-env",
                        format!("job `{}` takes a secret as env", name.value),
                    )
                    .at(s.span, "delivered as env")
                    .help("a job's container is kept after it exits, and its env with it: give the secret as a file (`secrets: [NAME]`, read from /run/secrets/NAME)"),
                );
            }
            let pod = job.as_pod();
            self.pod_image(name, &pod);
            self.pod_secrets(name, &pod);
            self.pod_env(&pod);
            self.pod_volumes(&pod);
            self.pod_resources(&pod);
            self.region_refs(&job.regions, name);
            if let Some(t) = &job.timeout {
                self.unit(t, "timeout");
            }
            let waits: HashMap<&str, Span> = job
                .depends_on
                .iter()
                .map(|d| (d.value.as_str(), d.span))
                .collect();
            for (list, what) in [(&job.depends_on, "depends_on"), (&job.before, "before")] {
                self.no_duplicates(list, what);
                for p in list {
                    self.job_pod_ref(name, p, what, &waits);
                }
            }
        }
    }

    /// An entry of a job's `depends_on` or `before`: a pod of the spec, and not both.
    fn job_pod_ref(
        &mut self,
        job: &Sp<String>,
        pod: &Sp<String>,
        what: &str,
        waits: &HashMap<&str, Span>,
    ) {
        let spec = self.spec;
        if !spec.pods.contains(&pod.value) {
            self.unknown("pod", pod, spec.pods.names(), "pods");
            return;
        }
        if what == "before"
            && let Some(wait) = waits.get(pod.value.as_str())
        {
            self.push(
                Diagnostic::error(
                    "dependency-cycle",
                    format!(
                        "job `{}` waits for pod `{}` and gates it too",
                        job.value, pod.value
                    ),
                )
                .at(pod.span, "gated here")
                .related(*wait, "waited for here")
                .help("a job runs after what it `depends_on` and before what it is `before`: keep the pod in one of them"),
            );
        }
    }
}
