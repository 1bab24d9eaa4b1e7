//! The spec a restore drill applies: a scratch project of its own (`PROJECT-drill-XXXXXX`,
//! so every container, network and volume it makes is named and labelled apart from the
//! live ones) holding only the pod that owns the backed-up volume, on its image as it runs
//! now, with nothing published on the host and nothing it depends on. A session opened with
//! [`Scratch`] in its options plans and applies that spec instead of the file's; the drill
//! itself (choosing, refilling, gating, tearing down) is `backup::drill`'s.

use crate::spec::{Named, Spec};

use super::{Goal, OpError, Opts, Session, UnwindCtx};

pub use crate::backup::drill::Scratch;

/// Makes `spec` the drill's: `scratch.project`, the volumes `scratch.pod` mounts (made
/// empty in the scratch project, the drilled one to be filled from the backup), and with
/// `with_pod` that pod alone: one replica, in `scratch.region` only, on `scratch.image`,
/// with no published port, no dependency, no profile, no update strategy, and of its host
/// paths only the read-only ones (a scratch copy never writes where the live pod does).
/// Nothing else of the spec: no jobs, proxy, rate limits, backups, webhook or rollout.
pub fn derive(spec: &mut Spec, scratch: &Scratch) {
    spec.project.value = scratch.project.clone();
    let Some(pod) = spec.pods.get(&scratch.pod).cloned() else {
        return;
    };
    let mut pod = pod;
    pod.volumes
        .retain(|m| m.get().is_ok_and(|m| !m.bind || m.read_only));
    let volumes: Vec<String> = pod.named_volumes().map(str::to_owned).collect();
    spec.volumes = spec
        .volumes
        .entries()
        .iter()
        .filter(|v| volumes.contains(&v.name.value))
        .cloned()
        .collect();
    pod.ports.clear();
    pod.depends_on.clear();
    pod.replicas = None;
    pod.profiles = None;
    pod.update = None;
    pod.build = None;
    pod.image = Some(crate::spec::Sp::new(
        scratch.image.clone(),
        crate::diag::Span::default(),
    ));
    pod.regions = (!spec.regions.is_empty()).then(|| {
        vec![crate::spec::Sp::new(
            scratch.region.clone(),
            crate::diag::Span::default(),
        )]
    });
    let entry = spec
        .pods
        .entries()
        .iter()
        .find(|p| p.name.value == scratch.pod)
        .map(|p| Named {
            name: p.name.clone(),
            item: pod,
        });
    spec.pods = if scratch.with_pod {
        entry.into_iter().collect()
    } else {
        Default::default()
    };
    spec.regions = spec
        .regions
        .entries()
        .iter()
        .filter(|r| r.name.value == scratch.region)
        .cloned()
        .map(|mut r| {
            r.item.primary = true;
            r
        })
        .collect();
    spec.jobs = Default::default();
    spec.proxy = None;
    spec.rate_limits = Default::default();
    spec.backups = Default::default();
    spec.backup_key = None;
    spec.notify = None;
    spec.rollout = None;
}

impl crate::backup::drill::ApplyScratch for UnwindCtx<'_> {
    fn apply_scratch(
        &self,
        scratch: &Scratch,
        state_dir: &std::path::Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), OpError> {
        let opts = Opts {
            state_dir: Some(state_dir.to_path_buf()),
            lock: Some(self.command.to_owned()),
            drill: Some(scratch.clone()),
            ..Default::default()
        };
        let session = Session::open(self.spec_path, Goal::Spec, &opts)?;
        session.preflight()?;
        let options = crate::apply::Options {
            internal_networks: true,
            ..Default::default()
        };
        session.apply(options, &mut |e| {
            progress(&format!("  {}", e.message.trim_start()))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "version: 1
project: shop
identity: ./key.txt
regions:
  iad: { engine: unix:///var/run/docker.sock, primary: true }
  ord: { engine: unix:///run/other.sock }
volumes:
  data: {}
  cache: {}
  other: {}
pods:
  db:
    image: postgres:16
  web:
    build: { context: app }
    depends_on: [db]
    ports: [\"127.0.0.1:8080:8080\"]
    volumes: [\"data:/data\", \"cache:/cache\", \"./conf:/conf:ro\", \"/srv/uploads:/uploads\"]
    profiles: [web]
jobs:
  migrate:
    image: postgres:16
    command: [true]
backups:
  # berth:allow(backup-key-on-host): a test
  data:
    source: { volume: data }
    store: /var/backups/shop
";

    fn loaded() -> Spec {
        let l = crate::spec::load::load_str(std::path::Path::new("berth.yaml"), SPEC.into());
        assert!(!l.report.has_errors(), "{:?}", l.report.diagnostics);
        l.spec.unwrap()
    }

    #[test]
    fn the_drill_spec_holds_the_owner_alone_on_scratch_volumes_with_nothing_published() {
        let mut spec = loaded();
        let scratch = Scratch {
            project: "shop-drill-abc123".into(),
            pod: "web".into(),
            volume: "data".into(),
            image: "sha256:1234".into(),
            region: "ord".into(),
            with_pod: true,
        };
        derive(&mut spec, &scratch);
        assert_eq!(spec.project.value, "shop-drill-abc123");
        let names: Vec<&str> = spec.pods.names().collect();
        assert_eq!(names, ["web"]);
        let web = spec.pods.get("web").unwrap();
        assert!(web.ports.is_empty() && web.depends_on.is_empty());
        assert_eq!(web.replicas(), 1);
        assert!(web.profiles().is_empty() && web.build.is_none());
        assert_eq!(web.image.as_ref().unwrap().value, "sha256:1234");
        let mounts: Vec<String> = web
            .volumes
            .iter()
            .map(|m| m.get().unwrap().source.to_owned())
            .collect();
        assert_eq!(
            mounts,
            ["data", "cache", "./conf"],
            "the rw host path is left out"
        );
        let volumes: Vec<&str> = spec.volumes.names().collect();
        assert_eq!(volumes, ["data", "cache"]);
        let regions: Vec<&str> = spec.regions.names().collect();
        assert_eq!(regions, ["ord"]);
        assert_eq!(web.regions.as_ref().unwrap()[0].value, "ord");
        assert!(spec.jobs.is_empty() && spec.backups.is_empty() && spec.proxy.is_none());

        // First the volumes alone.
        let mut spec = loaded();
        derive(
            &mut spec,
            &Scratch {
                with_pod: false,
                ..scratch
            },
        );
        assert!(spec.pods.is_empty());
        assert_eq!(spec.volumes.len(), 2);
    }
}
