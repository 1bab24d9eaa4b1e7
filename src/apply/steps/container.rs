//! A pod's container: created (its removal recorded first) and brought through its gates;
//! replaced blue-green (the candidate beside the old one, then switched) or recreated (the
//! old one set aside first); healed (started again, its secrets volume refilled); deleted (set
//! aside, removed at the commit).

use super::super::container::{self, container_name, container_name_of, object_name};
use super::super::journal::CommitItem;
use super::super::{ApplyError, Run, Status, Undo};
use crate::engine::labels;
use crate::engine::names::short;
use crate::plan::{Change, ReplaceOrder};
use crate::resources::attr;
use crate::secrets::files;

impl Run<'_> {
    pub(super) async fn create_pod(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        // A routed pod made again (removed by hand): the proxy looks it up anew.
        let name = container_name_of(self.project, &c.address);
        self.proxy_reresolve(c, &region, &name, true).await?;
        self.proxy_mark(&region, &name, true);
        let id = self.start_pod(c, &region, None).await?;
        self.proxy_mark(&region, &name, false);
        self.proxy_reresolve(c, &region, &name, false).await?;
        self.done(
            c,
            format!("+ {}: created and healthy ({})", c.address, short(&id)),
        );
        Ok(())
    }

    /// Blue-green (`create_before_destroy`): the candidate starts beside the old one and
    /// takes its name once healthy; otherwise the old one is set aside first.
    pub(super) async fn replace_pod(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        let engine = self.engine(&region);
        let address = c.address.to_string();
        let Some(old) = self.observed_id(c) else {
            let id = self.start_pod(c, &region, None).await?;
            self.done(
                c,
                format!("+ {address}: created and healthy ({})", short(&id)),
            );
            return Ok(());
        };
        let resource = self
            .desired(c)
            .cloned()
            .ok_or_else(|| ApplyError::Unsupported {
                address: address.clone(),
                what: "find the pod in the spec".into(),
                help: "this is a bug in berth: please report it".into(),
            })?;
        let name = container_name(self.project, &resource);
        let aside = format!("{name}-berth-old");
        if c.replace_order == Some(ReplaceOrder::CreateBeforeDestroy) {
            let next = format!("{name}-berth-next");
            let new_id = self.start_pod(c, &region, Some(&next)).await?;
            // Healthy: peers may reach it now, beside the old one; then the old goes.
            engine
                .reconnect_with_alias(
                    &new_id,
                    &object_name(self.project, "default"),
                    &c.address.name,
                )
                .await?;
            // Routed through the proxy: the candidate takes the old one's place in its
            // upstreams, and requests in flight to the old one finish before it stops.
            let switched = self.proxy_switch(c, &region, &name, &next).await?;
            if switched {
                self.drain(c).await?;
            }
            self.set_aside(&region, &old, &name, &aside).await?;
            // Switching: undoing is now "remove the new one, restore the old one",
            // whatever name the new one has. Through the proxy, the new one is removed
            // only once the proxy's previous config is back (its `RemoveContainer`,
            // recorded before the switch, stays): no request meets a removed container.
            let superseded: Vec<u64> = self
                .undo
                .borrow()
                .iter()
                .filter(|(_, u)| match u {
                    Undo::RemoveContainer { name: n, .. } => *n == next && !switched,
                    Undo::Restore { id, .. } => *id == old,
                    _ => false,
                })
                .map(|(id, _)| *id)
                .collect();
            let probe = self
                .spec
                .pods
                .get(&c.address.name)
                .and_then(|p| p.health.as_ref())
                .and_then(|h| h.http.as_ref());
            self.record_undo(Undo::Unswitch {
                region: region.clone(),
                new_id: new_id.clone(),
                old_id: old.clone(),
                name: name.clone(),
                keep_candidate: switched,
                ready: probe.map(|h| (h.port.value, h.path.clone())),
                ready_https: probe.is_some_and(|h| h.scheme.is_https()),
            })?;
            self.drop_undos(superseded)?;
            if switched {
                self.proxy_rename_and_settle(c, &region, &new_id, &name)
                    .await?;
            } else {
                engine.rename(&new_id, &name).await?;
            }
            self.commit
                .borrow_mut()
                .push(CommitItem::Container { region, id: old });
            self.done(
                c,
                format!("+/- {address}: replaced blue-green ({})", short(&new_id)),
            );
        } else {
            // The proxy looks the new container up once it runs; undoing ends the same way.
            self.proxy_reresolve(c, &region, &name, true).await?;
            self.proxy_mark(&region, &name, true);
            self.set_aside(&region, &old, &name, &aside).await?;
            let new_id = self.start_pod(c, &region, None).await?;
            self.proxy_mark(&region, &name, false);
            self.proxy_reresolve(c, &region, &name, false).await?;
            self.commit
                .borrow_mut()
                .push(CommitItem::Container { region, id: old });
            self.done(c, format!("-/+ {address}: recreated ({})", short(&new_id)));
        }
        Ok(())
    }

    /// Stopped: started again; running but unhealthy: restarted; through its gates.
    pub(super) async fn heal_pod(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        let engine = self.engine(&region);
        let address = c.address.to_string();
        let id = self.observed_id(c).unwrap_or_default();
        let name = container_name_of(self.project, &c.address);
        self.proxy_reresolve(c, &region, &name, true).await?;
        self.proxy_mark(&region, &name, true);
        self.event(
            Some(&c.address),
            Status::Started,
            format!("  {address}: starting {name} again, waiting for its gates"),
        );
        // Stopped: start it. Running but unhealthy (or restarted on request): restart it.
        // Killed once it is stopped, `recover` starts it again.
        self.record_undo(Undo::StartContainer {
            region: region.clone(),
            id: id.clone(),
        })?;
        engine.stop(&id).await?;
        // Its secrets again, in case an engine restart emptied the memory-backed volume
        // that holds them (only into berth's own secrets volume, through its keeper).
        if let Some(pod) = self.spec.pods.get(&c.address.name)
            && pod.secrets.iter().any(|s| s.value.env().is_none())
        {
            let image = self
                .desired(c)
                .and_then(|r| attr::image_ref(&r.attrs))
                .map(str::to_owned)
                .unwrap_or_default();
            let owner = self.owner(c, &region, pod, &image).await?;
            self.refill(c, &region, pod, &id, owner).await?;
        }
        let asked = std::time::Instant::now();
        engine.start(&id).await?;
        self.gate(c, &region, &id, asked, false).await?;
        self.proxy_mark(&region, &name, false);
        self.proxy_reresolve(c, &region, &name, false).await?;
        self.done(c, format!("! {address}: started again and healthy"));
        Ok(())
    }

    /// Set aside now, removed once every gate has passed (the commit).
    pub(super) async fn delete_pod(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        let address = c.address.to_string();
        if let Some(id) = self.observed_id(c) {
            let name = container_name_of(self.project, &c.address);
            let aside = format!("{name}-berth-deleted-{}", short(&id));
            // Later reloads (another pod's switch) no longer name it.
            self.proxy_mark(&region, &name, true);
            self.set_aside(&region, &id, &name, &aside).await?;
            self.commit
                .borrow_mut()
                .push(CommitItem::Container { region, id });
        }
        self.done(
            c,
            format!("- {address}: stopped (removed once every gate passed)"),
        );
        Ok(())
    }

    /// Creates and starts the container of a pod change, then runs its gates. Its removal
    /// is on the undo stack before it starts.
    async fn start_pod(
        &self,
        c: &Change,
        region: &str,
        name: Option<&str>,
    ) -> Result<String, ApplyError> {
        let engine = self.engine(region);
        let mut resource = self
            .desired(c)
            .cloned()
            .ok_or_else(|| ApplyError::Unsupported {
                address: c.address.to_string(),
                what: "find the pod in the spec".into(),
                help: "this is a bug in berth: please report it".into(),
            })?;
        self.known_versions(&mut resource);
        let Some(pod) = self.spec.pods.get(&c.address.name) else {
            return Err(ApplyError::Unsupported {
                address: c.address.to_string(),
                what: "find the pod in the spec".into(),
                help: "this is a bug in berth: please report it".into(),
            });
        };
        let candidate = name.is_some();
        let name = name.map_or_else(|| container_name(self.project, &resource), str::to_owned);
        // A blue-green candidate gets the pod's network alias only once it has passed its
        // gates, so that no peer reaches it before.
        let alias = (!candidate).then_some(&*c.address.name);
        let mut body = container::body(
            self.project,
            alias,
            pod,
            labels::encode(self.project, &resource, self.revision),
            self.spec_dir,
        );
        // The image as planned: a built tag, or the spec's image (pinned to an id by a
        // rollback).
        if let Some(image) = attr::image_ref(&resource.attrs) {
            body.image = Some(image.to_owned());
        }
        self.label_image(region, &mut body).await?;
        self.deliver(c, region, pod, &name, &mut body).await?;
        self.event(
            Some(&c.address),
            Status::Started,
            format!("  {}: starting {name}, waiting for its gates", c.address),
        );
        self.record_undo(Undo::RemoveContainer {
            region: region.to_owned(),
            name: name.clone(),
        })?;
        let id = engine.create_container(&name, body).await?;
        let asked = std::time::Instant::now();
        engine.start(&id).await?;
        self.gate(c, region, &id, asked, true).await?;
        Ok(id)
    }

    /// The fingerprints of files re-encrypted earlier in this apply, known now, in place
    /// of "(known after apply)" in `resource`'s attributes (its labels record them).
    pub(super) fn known_versions(&self, resource: &mut crate::graph::Resource) {
        resource.attrs.replace_values(|field, value| {
            let name = field
                .strip_prefix(attr::SECRET_PREFIX)
                .and_then(|f| f.strip_suffix(".version"))
                .filter(|_| value == files::KNOWN_AFTER_APPLY)?;
            Some(self.secret_files.borrow().get(name)?.fingerprint.clone())
        });
    }

    /// Waits the pod's `update.drain` for requests in flight to its old container (cut short
    /// by SIGINT/SIGTERM).
    async fn drain(&self, c: &Change) -> Result<(), ApplyError> {
        let wait = self
            .spec
            .pods
            .get(&c.address.name)
            .map_or(std::time::Duration::ZERO, |p| p.drain());
        self.event(
            Some(&c.address),
            Status::Started,
            format!("  {}: draining the old container ({wait:?})", c.address),
        );
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ApplyError::Interrupted {
                    report: String::new(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops a container and renames it aside, having recorded how to undo both: give it
    /// its name back and start it.
    pub(super) async fn set_aside(
        &self,
        region: &str,
        id: &str,
        name: &str,
        aside: &str,
    ) -> Result<(), ApplyError> {
        let engine = self.engine(region);
        // A container observed stopped (drift in `state`) stays stopped when restored, and
        // a job's is never started again.
        let was_running = !self.observed.resources.iter().any(|o| {
            o.id.as_deref() == Some(id)
                && (o.address.kind == crate::graph::Kind::Job
                    || o.drift.iter().any(|d| d.field == attr::STATE))
        });
        self.record_undo(Undo::Restore {
            region: region.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
            was_running,
        })?;
        engine.stop(id).await?;
        engine.rename(id, aside).await?;
        Ok(())
    }
}
