//! The pre-flight of an apply: everything it needs, checked before the first mutation (what
//! apply cannot do, names taken on the engines, images pulled or built, what the engine or
//! this host would refuse halfway).

use std::collections::HashMap;

use futures_util::StreamExt;

use super::container::{container_name_of, object_name};
use super::{ApplyError, Run, Status};
use crate::engine::Engine;
use crate::engine::docker::KeeperError;
use crate::graph::Kind;
use crate::plan::{Action, Change};
use crate::resources::attr;
use crate::spec::Spec;

/// Name checks in flight at once in the pre-flight.
const NAME_CHECKS_AT_ONCE: usize = 16;

impl Run<'_> {
    /// Pre-flight: everything apply needs, checked before the first mutation; the cheap
    /// refusals first, then names on the engines, then images (pulls and builds).
    pub(super) async fn preflight_all(&self, changes: &[&Change]) -> Result<(), ApplyError> {
        for c in changes {
            self.refusals(c)?;
        }
        // Also run by `Session::preflight` before any `before_apply` backup; again here,
        // next to the first mutation, since a backup can take minutes (one `/info` call).
        preflight_host(self.spec, changes, self.engines).await?;
        // Every name asked at once (a few requests per pod, each a quick answer), bounded;
        // the first taken name in plan order is the one reported.
        let free: Vec<Result<(), ApplyError>> = futures_util::stream::iter(changes)
            .map(|c| self.names_free(c))
            .buffered(NAME_CHECKS_AT_ONCE)
            .collect()
            .await;
        free.into_iter().collect::<Result<(), ApplyError>>()?;
        // Images one change after the other (a build or a pull at a time), each image
        // looked for once per engine.
        let mut present = std::collections::HashSet::new();
        for c in changes {
            self.preflight(c, &mut present).await?;
        }
        Ok(())
    }

    /// What apply cannot do, refused before anything else.
    fn refusals(&self, c: &Change) -> Result<(), ApplyError> {
        let unsupported = |what: &str, help: &str| ApplyError::Unsupported {
            address: c.address.to_string(),
            what: what.to_owned(),
            help: help.to_owned(),
        };
        match (c.address.kind, c.action) {
            (Kind::Network | Kind::Volume, Action::Update | Action::Replace) => Err(unsupported(
                &format!("change a {} in place", c.address.kind.as_str()),
                "remove and re-create it by hand if you must; berth never replaces a volume",
            )),
            (Kind::Volume, Action::Create)
                if self
                    .spec
                    .volumes
                    .get(&c.address.name)
                    .is_some_and(|v| v.external) =>
            {
                Err(unsupported(
                    "use an external volume",
                    "create the volume by hand and drop `external: true` to let berth manage it",
                ))
            }
            (Kind::Pod | Kind::Job, Action::Create | Action::Replace | Action::Heal)
                if self.gets_secrets(c) && self.engine(&self.region_of(c)).in_clear() =>
            {
                Err(unsupported(
                    "send secrets to an engine without TLS",
                    "they would cross the network in clear: give the region `tls: { ca, cert, key }` or use an ssh:// engine",
                ))
            }
            (Kind::Pod, Action::Create | Action::Replace | Action::Heal)
                if self.spec.pods.get(&c.address.name).is_some_and(|p| {
                    super::gate::max_gate_wait().is_ok_and(|max| super::gate::min_uptime(p) > max)
                }) =>
            {
                Err(unsupported(
                    "wait its `health.min_uptime`, longer than the most berth waits for a gate",
                    &format!(
                        "shorten `min_uptime`, or raise ${} (a duration such as `2h`)",
                        super::gate::ENV_MAX_GATE_WAIT
                    ),
                ))
            }
            (Kind::Proxy, Action::Create | Action::Replace | Action::Update | Action::Heal)
                if self.spec.proxy.as_ref().is_some_and(|p| !p.tls.is_empty())
                    && self.engine(&self.region_of(c)).in_clear() =>
            {
                Err(unsupported(
                    "send the proxy's certificate keys to an engine without TLS",
                    "they would cross the network in clear: give the region `tls: { ca, cert, key }` or use an ssh:// engine",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether the container of a pod's or a job's change gets secrets.
    fn gets_secrets(&self, c: &Change) -> bool {
        let name = &*c.address.name;
        match c.address.kind {
            Kind::Job => self
                .spec
                .jobs
                .get(name)
                .is_some_and(|j| !j.secrets.is_empty()),
            _ => self
                .spec
                .pods
                .get(name)
                .is_some_and(|p| !p.secrets.is_empty()),
        }
    }

    /// The names apply will give must be free: another project's network, a volume made by
    /// hand, a container left by an interrupted apply would otherwise be taken over.
    async fn names_free(&self, c: &Change) -> Result<(), ApplyError> {
        use crate::engine::docker::ObjectKind;
        let region = self.region_of(c);
        let engine = self.engine(&region);
        let mut wanted: Vec<(ObjectKind, String)> = Vec::new();
        match (c.address.kind, c.action) {
            (Kind::Network, Action::Create) => {
                wanted.push((
                    ObjectKind::Network,
                    object_name(self.project, &c.address.name),
                ));
            }
            (Kind::Volume, Action::Create) => {
                wanted.push((
                    ObjectKind::Volume,
                    object_name(self.project, &c.address.name),
                ));
            }
            (Kind::Pod | Kind::Job, Action::Create | Action::Replace) => {
                let name = container_name_of(self.project, &c.address);
                if c.action == Action::Create {
                    wanted.push((ObjectKind::Container, name.clone()));
                }
                wanted.push((ObjectKind::Container, format!("{name}-berth-old")));
                wanted.push((ObjectKind::Container, format!("{name}-berth-next")));
            }
            (Kind::Proxy, Action::Create | Action::Replace) => {
                let name = super::steps::proxy::proxy_name(self.project);
                if c.action == Action::Create {
                    wanted.push((ObjectKind::Container, name.clone()));
                }
                wanted.push((ObjectKind::Container, format!("{name}-berth-old")));
            }
            _ => {}
        }
        for (kind, name) in wanted {
            if engine.labels_of(kind, &name).await?.is_some() {
                return Err(ApplyError::NameTaken {
                    kind: kind.as_str(),
                    name,
                    region,
                });
            }
        }
        Ok(())
    }

    /// Images: pulled when absent, built from their context when `build:` says so.
    async fn preflight(
        &self,
        c: &Change,
        present: &mut std::collections::HashSet<(String, String)>,
    ) -> Result<(), ApplyError> {
        match (c.address.kind, c.action) {
            (Kind::Pod, Action::Create | Action::Replace | Action::Heal) => {
                let Some(pod) = self.spec.pods.get(&c.address.name) else {
                    return Ok(());
                };
                let region = self.region_of(c);
                if let Some(b) = &pod.build
                    && let Some(tag) = self.desired(c).and_then(|r| r.attrs.get(attr::BUILD_IMAGE))
                {
                    let engine = self.engine(&region);
                    if !engine.image_present(tag).await? {
                        self.event(
                            Some(&c.address),
                            Status::Started,
                            format!("  {}: building {tag}", c.address),
                        );
                        let context = self.spec_dir.join(&b.value.context);
                        let dockerfile = b.value.dockerfile.as_deref().unwrap_or("Dockerfile");
                        let archive =
                            crate::engine::context::tar(&context, dockerfile).map_err(|e| {
                                ApplyError::Unsupported {
                                    address: c.address.to_string(),
                                    what: "read the build context".into(),
                                    help: e.to_string(),
                                }
                            })?;
                        let args = b
                            .value
                            .args
                            .iter()
                            .map(|a| (a.name.value.clone(), a.item.value.0.clone()))
                            .collect();
                        engine.build_image(tag, archive, dockerfile, args).await?;
                        self.event(
                            Some(&c.address),
                            Status::Done,
                            format!("  {}: built {tag}", c.address),
                        );
                    }
                }
                // The image as planned (a rollback pins it to an id).
                let planned = self
                    .desired(c)
                    .and_then(|r| r.attrs.get(attr::IMAGE))
                    .map(str::to_owned);
                match pod
                    .image
                    .as_ref()
                    .map(|i| planned.unwrap_or_else(|| i.value.clone()))
                {
                    Some(image) => self.ensure_image(c, &region, &image, present).await,
                    None => Ok(()),
                }
            }
            (Kind::Proxy | Kind::Job, Action::Create | Action::Replace | Action::Heal) => {
                let image = self.desired(c).and_then(|r| r.attrs.get(attr::IMAGE));
                match image {
                    Some(image) => {
                        self.ensure_image(c, &self.region_of(c), image, present)
                            .await
                    }
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The image is on the region's engine, or pulled there; `present` holds the (region,
    /// image) pairs already found or pulled in this pre-flight.
    async fn ensure_image(
        &self,
        c: &Change,
        region: &str,
        image: &str,
        present: &mut std::collections::HashSet<(String, String)>,
    ) -> Result<(), ApplyError> {
        let key = (region.to_owned(), image.to_owned());
        if present.contains(&key) {
            return Ok(());
        }
        if let Some(id) = self.engine(region).image_id_if_present(image).await? {
            self.image_ids.borrow_mut().insert(key.clone(), id);
            present.insert(key);
            return Ok(());
        }
        self.event(
            Some(&c.address),
            Status::Started,
            format!("  {}: pulling {}", c.address, image),
        );
        if let Err(reason) = self.engine(region).pull(image).await {
            return Err(ApplyError::ImageMissing {
                address: c.address.to_string(),
                image: image.to_owned(),
                region: region.to_owned(),
                reason,
            });
        }
        self.event(
            Some(&c.address),
            Status::Done,
            format!("  {}: pulled {}", c.address, image),
        );
        present.insert(key);
        Ok(())
    }
}

/// The pre-flight of pod changes against their engine and this host: what the engine or
/// the secrets delivery would otherwise refuse in the middle of an apply, after the old
/// container was stopped. A CPU limit above the engine's CPU count (`NCPU` of its
/// `/info`); secret files (a pod's, the proxy's certificates) for an engine no keeper can
/// run on (its keeper image imported here, once per engine). Run before anything changes (before a `before_apply` backup too).
pub async fn preflight_host(
    spec: &Spec,
    changes: &[&Change],
    engines: &HashMap<String, Engine>,
) -> Result<(), ApplyError> {
    let mut ncpu: HashMap<&str, i64> = HashMap::new();
    let mut keepers: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let regions = spec.region_names();
    for c in changes {
        if c.address.kind == Kind::Backup
            && matches!(c.action, Action::Create | Action::Update | Action::Heal)
            && spec
                .backups
                .get(&c.address.name)
                .is_some_and(|b| b.schedule.is_some())
            && let Err(reason) =
                crate::archive::schedule::check_unit_dir(&spec.project.value, &c.address.name)
        {
            return Err(ApplyError::UnitDir {
                address: c.address.to_string(),
                reason,
            });
        }
        let region = c
            .address
            .region
            .as_deref()
            .or_else(|| regions.first().copied())
            .unwrap_or_default();
        // The proxy's certificates and keys are held by a keeper too.
        if c.address.kind == Kind::Proxy
            && matches!(c.action, Action::Create | Action::Replace)
            && spec.proxy.as_ref().is_some_and(|p| !p.tls.is_empty())
            && let Some(engine) = engines.get(region)
            && keepers.insert(region)
        {
            keeper_image(engine, c).await?;
        }
        if !matches!(c.address.kind, Kind::Pod | Kind::Job)
            || !matches!(c.action, Action::Create | Action::Replace)
        {
            continue;
        }
        let job = (c.address.kind == Kind::Job)
            .then(|| spec.jobs.get(&c.address.name).map(|j| j.as_pod()))
            .flatten();
        let Some(pod) = job.as_ref().or_else(|| spec.pods.get(&c.address.name)) else {
            continue;
        };
        let Some(engine) = engines.get(region) else {
            continue;
        };
        if let Some(cpus) = pod.resources.as_ref().and_then(|r| r.cpus.as_ref()) {
            let n = match ncpu.get(region) {
                Some(n) => *n,
                None => {
                    let n = engine.cpu_count().await?;
                    ncpu.insert(region, n);
                    n
                }
            };
            // As the engine compares: in billionths of a CPU (an engine that does not say
            // how many it has is not second-guessed).
            if n > 0 && (cpus.value * 1e9) as i64 > n.saturating_mul(1_000_000_000) {
                return Err(ApplyError::TooManyCpus {
                    pod: c.address.name.to_string(),
                    cpus: cpus.value,
                    region: region.to_owned(),
                    ncpu: n,
                });
            }
        }
        // Secret files go into a memory-backed volume held by a keeper: its image, for the
        // engine's architecture, is there before anything changes (one per engine).
        if pod.secrets.iter().any(|s| s.value.env().is_none()) && keepers.insert(region) {
            keeper_image(engine, c).await?;
        }
    }
    Ok(())
}

/// The keeper image on `engine`, imported if it is missing; refused (before any change)
/// when the engine's architecture has none.
async fn keeper_image(engine: &Engine, c: &Change) -> Result<(), ApplyError> {
    match engine.keeper_image().await {
        Ok(_) => Ok(()),
        Err(KeeperError::Engine(e)) => Err(e.into()),
        Err(e) => Err(ApplyError::NoKeeper {
            address: c.address.to_string(),
            reason: e.to_string(),
        }),
    }
}
