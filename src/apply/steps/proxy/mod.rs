//! The managed proxy: one nginx container per region (`<project>-proxy`), running the config
//! berth renders (`crate::proxy`), delivered through the engine's archive API and reloaded
//! with SIGHUP (no shell in the image is assumed). Every new config passes `nginx -t` in a
//! throwaway container of the same image, on the same network with the same mounts, before
//! the running proxy sees it; the previous config is the undo record
//! ([`Undo::ProxyConfig`]). After a reload, the proxy's own gate waits until its health
//! endpoint answers with the new config's token (so the reload is known to have happened)
//! and checks that the security headers arrive.
//!
//! A routed pod replaced blue-green goes through the proxy: the candidate, once through its
//! gates, takes the old container's place in the upstream ([`Run::proxy_switch`]), requests
//! in flight to the old one drain, then the old one goes and the config names the pod's own
//! container again ([`Run::proxy_settle`]).
//!
//! - here: the proxy's container, its config as planned, a reload, and one step per action;
//! - [`nginx`]: `nginx -t` in a throwaway container, and the proxy's gate;
//! - [`switch`]: the proxy as it runs during an apply, and a routed pod's switch through it;
//! - [`secrets`]: the TLS certificates and keys, delivered and refilled.

mod nginx;
mod secrets;
mod switch;

pub use nginx::Refused;
pub use switch::Live;

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};

use super::super::container::object_name;
use super::super::journal::CommitItem;
use super::super::{ApplyError, Run, Status, Undo};
use crate::engine::labels;
use crate::engine::names::short;
use crate::graph::Resource;
use crate::plan::Change;
use crate::resources::attr;
use crate::spec::Proxy;

/// The proxy's container name in a project.
pub fn proxy_name(project: &str) -> String {
    object_name(project, "proxy")
}

impl Run<'_> {
    pub(in crate::apply) fn proxy_spec(&self, c: &Change) -> Result<&Proxy, ApplyError> {
        self.spec
            .proxy
            .as_ref()
            .ok_or_else(|| ApplyError::Unsupported {
                address: c.address.to_string(),
                what: "find the proxy in the spec".into(),
                help: "this is a bug in berth: please report it".into(),
            })
    }

    pub(in crate::apply) fn proxy_resource(&self, c: &Change) -> Result<Resource, ApplyError> {
        self.desired(c)
            .cloned()
            .ok_or_else(|| ApplyError::Unsupported {
                address: c.address.to_string(),
                what: "find the proxy in the spec".into(),
                help: "this is a bug in berth: please report it".into(),
            })
    }

    /// The proxy's config as planned, with the versions of secrets re-encrypted earlier in
    /// this apply (planned as "known after apply") filled in, and sealed again.
    pub(in crate::apply) fn planned_config(&self, c: &Change) -> Result<String, ApplyError> {
        let text = self
            .proxy_resource(c)?
            .attrs
            .get(attr::CONFIG)
            .map(str::to_owned)
            .unwrap_or_default();
        if !text.contains(crate::secrets::files::KNOWN_AFTER_APPLY) {
            return Ok(text);
        }
        let files = self.secret_files.borrow();
        let settled: String = text
            .split_inclusive('\n')
            .map(|line| {
                let known = line
                    .strip_prefix(crate::proxy::SECRET_VERSION_COMMENT)
                    .and_then(|rest| rest.split_once(':'))
                    .and_then(|(name, _)| files.get(name));
                match known {
                    Some(f) if line.contains(crate::secrets::files::KNOWN_AFTER_APPLY) => {
                        line.replace(crate::secrets::files::KNOWN_AFTER_APPLY, &f.fingerprint)
                    }
                    _ => line.to_owned(),
                }
            })
            .collect();
        Ok(crate::proxy::seal(&settled))
    }

    /// The create request of the proxy's container.
    pub(in crate::apply) fn proxy_body(
        &self,
        proxy: &Proxy,
        resource: &Resource,
    ) -> ContainerCreateBody {
        let network = object_name(self.project, "default");
        let mut exposed = Vec::new();
        let mut bindings = HashMap::new();
        for port in &proxy.listen {
            let key = format!("{port}/tcp");
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(port.to_string()),
                }]),
            );
        }
        ContainerCreateBody {
            image: Some(proxy.image.value.clone()),
            cmd: Some(crate::proxy::command()),
            labels: Some(labels::encode(self.project, resource, self.revision)),
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network,
                    EndpointSettings {
                        aliases: Some(vec!["proxy".to_owned()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }

    /// Gives the running proxy `text`: checked by `nginx -t`, its previous config recorded as
    /// the undo, delivered, reloaded, and through its gate.
    pub(in crate::apply) async fn reload_proxy(
        &self,
        c: &Change,
        region: &str,
        live: &Live,
        text: &str,
        record: bool,
        planned: bool,
    ) -> Result<(), ApplyError> {
        let engine = self.engine(region);
        let proxy = self.proxy_spec(c)?;
        let resource = self.proxy_resource(c).unwrap_or_else(|_| Resource {
            address: c.address.clone(),
            attrs: Default::default(),
            depends_on: Vec::new(),
        });
        let mut body = self.proxy_body(proxy, &resource);
        // The running proxy's mounts (its certificates and keys), for `nginx -t` to load,
        // and its image (the spec's may be new in this apply, its step still to come).
        body.host_config.get_or_insert_with(Default::default).mounts =
            Some(self.proxy_secret_mounts(region, &live.id).await?);
        if let Some(image) = self
            .observed
            .resources
            .iter()
            .find(|o| o.id.as_deref() == Some(live.id.as_str()))
            .and_then(|o| o.image.clone())
        {
            body.image = Some(image);
        }
        self.check_config(c, region, &body, text).await?;
        if record {
            self.record_undo(Undo::ProxyConfig {
                region: region.to_owned(),
                name: proxy_name(self.project),
                config: live.text(),
            })?;
        }
        engine
            .put_file(&live.id, crate::proxy::CONFIG_PATH, text.as_bytes(), 0o644)
            .await?;
        // Reloaded once a new worker runs and the old ones have finished what they were
        // serving (at most 15 s: a worker held by a long request is not waited for).
        engine
            .reload_nginx(&live.id, std::time::Duration::from_secs(15))
            .await?;
        // The same text has the same token: the gate cannot tell the reload by it, and
        // looks at what nginx said instead.
        let same = live.text() == text;
        self.proxy_gate(c, region, &live.id, text, planned, same)
            .await
    }

    /// A new proxy: its config checked, its container created (its removal recorded first),
    /// given the config, started, and through its gate.
    pub(in crate::apply) async fn create_proxy(
        &self,
        c: &Change,
        region: String,
    ) -> Result<(), ApplyError> {
        let id = self.start_proxy(c, &region).await?;
        self.done(
            c,
            format!("+ {}: created and serving ({})", c.address, short(&id)),
        );
        Ok(())
    }

    pub(in crate::apply) async fn start_proxy(
        &self,
        c: &Change,
        region: &str,
    ) -> Result<String, ApplyError> {
        let (body, text) = self.prepare_proxy(c, region, None).await?;
        self.start_prepared_proxy(c, region, body, text).await
    }

    /// The planned proxy's create request and config, checked with `nginx -t`: with its
    /// certificates delivered anew, or, for the `existing` container (a stopped one healed),
    /// with the mounts it has.
    async fn prepare_proxy(
        &self,
        c: &Change,
        region: &str,
        existing: Option<&str>,
    ) -> Result<(ContainerCreateBody, String), ApplyError> {
        let proxy = self.proxy_spec(c)?;
        let resource = self.proxy_resource(c)?;
        let text = self.planned_config(c)?;
        let mut body = self.proxy_body(proxy, &resource);
        match existing {
            Some(id) => {
                body.host_config.get_or_insert_with(Default::default).mounts =
                    Some(self.proxy_secret_mounts(region, id).await?)
            }
            None => self.deliver_proxy_secrets(c, region, &mut body).await?,
        }
        self.check_config(c, region, &body, &text).await?;
        Ok((body, text))
    }

    /// A prepared proxy created (its removal recorded first), given its config, started
    /// and through its gate.
    async fn start_prepared_proxy(
        &self,
        c: &Change,
        region: &str,
        mut body: ContainerCreateBody,
        text: String,
    ) -> Result<String, ApplyError> {
        let engine = self.engine(region);
        let name = proxy_name(self.project);
        self.label_image(region, &mut body).await?;
        self.event(
            Some(&c.address),
            Status::Started,
            format!("  {}: starting {name}, waiting for its gate", c.address),
        );
        self.record_undo(Undo::RemoveContainer {
            region: region.to_owned(),
            name: name.clone(),
        })?;
        let id = engine.create_container(&name, body).await?;
        engine
            .put_file(&id, crate::proxy::CONFIG_PATH, text.as_bytes(), 0o644)
            .await?;
        engine.start(&id).await?;
        self.proxy_gate(c, region, &id, &text, true, false).await?;
        self.proxies.borrow_mut().insert(
            region.to_owned(),
            Live {
                id: id.clone(),
                base: text,
                ..Live::default()
            },
        );
        Ok(id)
    }

    /// A changed config (routes, limits, headers): reloaded in place, never restarted.
    pub(in crate::apply) async fn update_proxy(
        &self,
        c: &Change,
        region: String,
    ) -> Result<(), ApplyError> {
        let Some(mut live) = self.live_proxy(&region) else {
            return self.replace_proxy(c, region).await;
        };
        let text = self.planned_config(c)?;
        let _turn = self.proxy_turn.lock().await;
        self.refill_proxy_secrets(c, &region, &live.id).await?;
        self.reload_proxy(c, &region, &live, &text, true, true)
            .await?;
        live.base = text;
        live.overrides.clear();
        live.down.clear();
        self.proxies.borrow_mut().insert(region, live);
        self.done(c, format!("~ {}: new config, reloaded", c.address));
        Ok(())
    }

    /// A new image or new ports: the old proxy set aside (its ports freed), a new one
    /// started; the old one goes at the commit.
    pub(in crate::apply) async fn replace_proxy(
        &self,
        c: &Change,
        region: String,
    ) -> Result<(), ApplyError> {
        let name = proxy_name(self.project);
        let old = self.observed_id(c);
        // Checked before the running one stops: a config nginx refuses costs no outage.
        let (body, text) = self.prepare_proxy(c, &region, None).await?;
        if let Some(old) = &old {
            self.set_aside(&region, old, &name, &format!("{name}-berth-old"))
                .await?;
        }
        // No proxy runs until the new one does: pods' steps reload nothing meanwhile.
        self.proxies
            .borrow_mut()
            .insert(region.clone(), Live::default());
        let id = self.start_prepared_proxy(c, &region, body, text).await?;
        if let Some(old) = old {
            self.commit.borrow_mut().push(CommitItem::Container {
                region: region.clone(),
                id: old,
            });
        }
        self.done(c, format!("-/+ {}: recreated ({})", c.address, short(&id)));
        Ok(())
    }

    /// A stopped proxy: started again (nginx reads its config anew), through its gate.
    pub(in crate::apply) async fn heal_proxy(
        &self,
        c: &Change,
        region: String,
    ) -> Result<(), ApplyError> {
        let engine = self.engine(&region);
        let Some(id) = self.observed_id(c) else {
            return self.create_proxy(c, region).await;
        };
        let (_, text) = self.prepare_proxy(c, &region, Some(&id)).await?;
        // Its config as found goes back on undo (none to put back if it had none).
        let found = self
            .observed
            .resources
            .iter()
            .find(|o| o.id.as_deref() == Some(id.as_str()))
            .and_then(|o| o.attrs.get(attr::CONFIG).map(str::to_owned))
            .filter(|t| !t.is_empty());
        if let Some(config) = found {
            self.record_undo(Undo::ProxyConfig {
                region: region.clone(),
                name: proxy_name(self.project),
                config,
            })?;
        }
        engine.stop(&id).await?;
        self.refill_proxy_secrets(c, &region, &id).await?;
        engine
            .put_file(&id, crate::proxy::CONFIG_PATH, text.as_bytes(), 0o644)
            .await?;
        engine.start(&id).await?;
        self.proxy_gate(c, &region, &id, &text, true, false).await?;
        self.proxies.borrow_mut().insert(
            region,
            Live {
                id,
                base: text,
                ..Live::default()
            },
        );
        self.done(c, format!("! {}: started again and serving", c.address));
        Ok(())
    }

    /// Set aside now, removed at the commit.
    pub(in crate::apply) async fn delete_proxy(
        &self,
        c: &Change,
        region: String,
    ) -> Result<(), ApplyError> {
        if let Some(id) = self.observed_id(c) {
            let name = proxy_name(self.project);
            let aside = format!("{name}-berth-deleted-{}", short(&id));
            self.set_aside(&region, &id, &name, &aside).await?;
            self.proxies
                .borrow_mut()
                .insert(region.clone(), Live::default());
            self.commit
                .borrow_mut()
                .push(CommitItem::Container { region, id });
        }
        self.done(
            c,
            format!("- {}: stopped (removed once every gate passed)", c.address),
        );
        Ok(())
    }
}
