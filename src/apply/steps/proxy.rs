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

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};

use super::super::container::object_name;
use super::super::journal::CommitItem;
use super::super::{ApplyError, Run, Status, Undo};
use crate::engine::labels;
use crate::engine::names::short;
use crate::graph::{Kind, Resource};
use crate::plan::Change;
use crate::resources::attr;
use crate::secrets::delivery;
use crate::spec::Proxy;

/// The proxy's container name in a project.
pub fn proxy_name(project: &str) -> String {
    object_name(project, "proxy")
}

/// The proxy of a region as it runs during this apply: its container, the config it was
/// given as the spec renders it (`base`), and the containers standing in for a pod's own in
/// its upstreams while that pod is replaced blue-green (stable name -> candidate's name).
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub id: String,
    pub base: String,
    pub overrides: BTreeMap<String, String>,
}

impl Live {
    /// The config that runs: `base`, with each overridden server swapped, and a token of its
    /// own so that the health endpoint tells which config answers.
    pub fn text(&self) -> String {
        if self.overrides.is_empty() {
            return self.base.clone();
        }
        let mut text = self.base.clone();
        for (from, to) in &self.overrides {
            text = swap_server(&text, from, to);
        }
        crate::proxy::seal(&text)
    }

    fn routes_to(&self, name: &str) -> bool {
        self.base
            .lines()
            .any(|l| server_of(l).is_some_and(|host| host == name))
    }
}

/// The host of an upstream `server HOST:PORT ...;` line.
fn server_of(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("server ")?;
    let (host, _) = rest.split_once(':')?;
    Some(host.trim())
}

/// `text` with upstream servers named `from` named `to` instead.
pub fn swap_server(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        match server_of(line) {
            Some(host) if host == from => out.push_str(&line.replacen(
                &format!("server {from}:"),
                &format!("server {to}:"),
                1,
            )),
            _ => out.push_str(line),
        }
    }
    out
}

/// nginx's complaints in its output (`[emerg]`, `[alert]` lines), without their timestamp and
/// process prefix.
fn nginx_says(output: &str) -> String {
    output
        .lines()
        .filter(|l| l.contains("[emerg]") || l.contains("[alert]"))
        .map(|l| {
            let after = l.split_once("] ").map_or(l, |(_, rest)| rest);
            // `1#1: ` (pid#tid) before the message.
            match after.split_once(": ") {
                Some((pid, rest)) if pid.contains('#') => rest.trim(),
                _ => after.trim(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// The first line of `config` holding a word nginx quotes in `message` (`unknown "x"
/// variable`, `unknown directive "x"`): for messages that name no line.
fn quoted_line(config: &str, message: &str) -> Option<(usize, String)> {
    let words: Vec<&str> = message
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty())
        .collect();
    config.lines().enumerate().find_map(|(i, line)| {
        words
            .iter()
            .any(|w| line.contains(w))
            .then(|| (i + 1, line.trim().to_owned()))
    })
}

/// Why a config never reached the running proxy: `nginx -t` refused it.
#[derive(Debug, thiserror::Error)]
#[error("nginx refuses the rendered config: {message}{}", line.as_ref().map(|(n, l)| format!("\n  line {n} of the rendered config: {}", l.trim())).unwrap_or_default())]
pub struct Refused {
    /// nginx's own words.
    pub message: String,
    /// The rendered line nginx points at.
    pub line: Option<(usize, String)>,
}

/// The response headers the proxy sends on every answer of a plain listener (HSTS only on
/// TLS listeners), lower-cased.
fn expected_headers(proxy: &Proxy) -> Vec<String> {
    crate::proxy::headers::merged(proxy)
        .into_iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|name| !name.eq_ignore_ascii_case(crate::proxy::headers::HSTS))
        .collect()
}

/// How long the proxy's gate waits for its health endpoint to answer with the new config.
const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long `nginx -t` may take.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Run<'_> {
    fn proxy_spec(&self, c: &Change) -> Result<&Proxy, ApplyError> {
        self.spec
            .proxy
            .as_ref()
            .ok_or_else(|| ApplyError::Unsupported {
                address: c.address.to_string(),
                what: "find the proxy in the spec".into(),
                help: "this is a bug in berth: please report it".into(),
            })
    }

    fn proxy_resource(&self, c: &Change) -> Result<Resource, ApplyError> {
        self.desired(c)
            .cloned()
            .ok_or_else(|| ApplyError::Unsupported {
                address: c.address.to_string(),
                what: "find the proxy in the spec".into(),
                help: "this is a bug in berth: please report it".into(),
            })
    }

    /// The proxy of `region` as it runs now: from this apply's own steps, else as observed
    /// (running; a stopped one serves nothing to switch).
    fn live_proxy(&self, region: &str) -> Option<Live> {
        if let Some(l) = self.proxies.borrow().get(region) {
            return Some(l.clone());
        }
        let shown = crate::resources::shown_region(&self.spec.region_names(), region);
        let o = self
            .observed
            .resources
            .iter()
            .find(|o| o.address.kind == Kind::Proxy && o.address.region.as_deref() == shown)?;
        if o.drift.iter().any(|d| d.field == attr::STATE) {
            return None;
        }
        let live = Live {
            id: o.id.clone()?,
            base: o.attrs.get(attr::CONFIG)?.clone(),
            overrides: BTreeMap::new(),
        };
        self.proxies
            .borrow_mut()
            .insert(region.to_owned(), live.clone());
        Some(live)
    }

    /// The proxy's config as planned, with the versions of secrets re-encrypted earlier in
    /// this apply (planned as "known after apply") filled in, and sealed again.
    fn planned_config(&self, c: &Change) -> Result<String, ApplyError> {
        let text = self
            .proxy_resource(c)?
            .attrs
            .get(attr::CONFIG)
            .cloned()
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
    fn proxy_body(&self, proxy: &Proxy, resource: &Resource) -> ContainerCreateBody {
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

    /// `nginx -t` on `text` in a throwaway container made like the proxy's (same image,
    /// network and mounts, no ports), removed afterwards.
    async fn check_config(
        &self,
        c: &Change,
        region: &str,
        body: &ContainerCreateBody,
        text: &str,
    ) -> Result<(), ApplyError> {
        let engine = self.engine(region);
        let mut check = body.clone();
        check.cmd = Some(
            ["nginx", "-t", "-c", crate::proxy::CONFIG_PATH]
                .map(str::to_owned)
                .to_vec(),
        );
        check.exposed_ports = None;
        if let Some(h) = check.host_config.as_mut() {
            h.port_bindings = None;
            h.restart_policy = None;
        }
        check.labels = Some(HashMap::from([
            (labels::PROJECT.to_owned(), self.project.to_owned()),
            (labels::HELPER.to_owned(), "proxy-check".to_owned()),
        ]));
        if let Some(n) = check.networking_config.as_mut()
            && let Some(e) = n.endpoints_config.as_mut()
        {
            for settings in e.values_mut() {
                settings.aliases = None;
            }
        }
        // A name of its own each time (one left by a killed apply is swept by its label).
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!(
            "{}-check-{}",
            proxy_name(self.project),
            &crate::encode::sha256_hex(format!("{nonce}{text}").as_bytes())[..12]
        );
        let id = engine.create_container(&name, check).await?;
        let verdict = async {
            engine
                .put_file(&id, crate::proxy::CONFIG_PATH, text.as_bytes(), 0o644)
                .await?;
            engine.start(&id).await?;
            let code = engine.wait_exit(&id, CHECK_WAIT).await?;
            let output = engine.log_tail(&id, 40).await;
            Ok::<_, ApplyError>((code, output))
        }
        .await;
        let _ = engine.remove(&id).await;
        let (code, output) = verdict?;
        if code == Some(0) {
            return Ok(());
        }
        let message = nginx_says(&output);
        let message = if message.is_empty() {
            match code {
                None => format!("`nginx -t` did not finish within {CHECK_WAIT:?}"),
                Some(code) => format!("`nginx -t` exited with {code}: {}", output.trim()),
            }
        } else {
            message
        };
        let line = crate::proxy::line_of(text, &message).or_else(|| quoted_line(text, &message));
        Err(ApplyError::ProxyRefused {
            address: c.address.to_string(),
            reason: Refused { message, line },
        })
    }

    /// Waits until the proxy answers its health endpoint with `text`'s token, and checks the
    /// security headers on that answer.
    async fn proxy_gate(
        &self,
        c: &Change,
        region: &str,
        id: &str,
        text: &str,
    ) -> Result<(), ApplyError> {
        let proxy = self.proxy_spec(c)?;
        let engine = self.engine(region);
        let network = object_name(self.project, "default");
        // A plain listener answers the health endpoint (with `redirect_http` too); only a
        // proxy with no plain listener is asked over TLS's port, where berth (no TLS
        // client) sees the running container and its config only.
        let plain = proxy
            .listen
            .iter()
            .copied()
            .find(|p| proxy.tls_of(*p).is_none());
        let want = crate::proxy::token(text).unwrap_or_default().to_owned();
        let deadline = tokio::time::Instant::now() + GATE_WAIT;
        let fail = |detail: String| ApplyError::GateFailed {
            address: c.address.to_string(),
            gate: "proxy health".into(),
            detail,
            report: String::new(),
        };
        let mut last = String::from("no answer yet");
        loop {
            if self.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ApplyError::Interrupted {
                    report: String::new(),
                });
            }
            let state = engine.state(id).await?;
            if !state.running {
                let logs = engine.log_tail(id, 20).await;
                return Err(fail(format!(
                    "the proxy is not running (exit code {}): {}",
                    state.exit_code,
                    logs.trim()
                )));
            }
            let Some(port) = plain else {
                return Ok(());
            };
            if let Some(ip) = state.addresses.get(&network) {
                let timeout = std::time::Duration::from_secs(2);
                match super::super::gate::get(ip, port, crate::proxy::HEALTH_PATH, timeout).await {
                    Ok(r)
                        if r.status == 200 && String::from_utf8_lossy(&r.body).contains(&want) =>
                    {
                        let missing: Vec<String> = expected_headers(proxy)
                            .into_iter()
                            .filter(|h| !r.headers.contains_key(h.as_str()))
                            .collect();
                        if missing.is_empty() {
                            return Ok(());
                        }
                        return Err(fail(format!(
                            "the proxy's answer lacks the security header(s) {}",
                            missing.join(", ")
                        )));
                    }
                    Ok(r) => {
                        last = format!("{} {}", r.status, String::from_utf8_lossy(&r.body).trim())
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(format!(
                    "{} did not answer with the new config (token {want}) within {GATE_WAIT:?}; last answer: {last}",
                    crate::proxy::HEALTH_PATH
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Gives the running proxy `text`: checked by `nginx -t`, its previous config recorded as
    /// the undo, delivered, reloaded, and through its gate.
    async fn reload_proxy(
        &self,
        c: &Change,
        region: &str,
        live: &Live,
        text: &str,
        record: bool,
    ) -> Result<(), ApplyError> {
        let engine = self.engine(region);
        let proxy = self.proxy_spec(c)?;
        let resource = self.proxy_resource(c).unwrap_or_else(|_| Resource {
            address: c.address.clone(),
            attrs: Default::default(),
            depends_on: Vec::new(),
        });
        let mut body = self.proxy_body(proxy, &resource);
        // The running proxy's mounts (its certificates and keys), for `nginx -t` to load.
        let mounts: Vec<bollard::models::Mount> = engine
            .state(&live.id)
            .await?
            .binds
            .into_iter()
            .filter(|(_, dest)| dest == crate::proxy::SECRETS_DIR)
            .map(|(source, target)| bollard::models::Mount {
                target: Some(target),
                source: Some(source),
                typ: Some(bollard::models::MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            })
            .collect();
        body.host_config.get_or_insert_with(Default::default).mounts = Some(mounts);
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
        engine.signal(&live.id, "HUP").await?;
        self.proxy_gate(c, region, &live.id, text).await
    }

    /// A new proxy: its config checked, its container created (its removal recorded first),
    /// given the config, started, and through its gate.
    pub(super) async fn create_proxy(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        let id = self.start_proxy(c, &region).await?;
        self.done(
            c,
            format!("+ {}: created and serving ({})", c.address, short(&id)),
        );
        Ok(())
    }

    async fn start_proxy(&self, c: &Change, region: &str) -> Result<String, ApplyError> {
        let engine = self.engine(region);
        let proxy = self.proxy_spec(c)?;
        let resource = self.proxy_resource(c)?;
        let text = self.planned_config(c)?;
        let mut body = self.proxy_body(proxy, &resource);
        self.deliver_proxy_secrets(c, &mut body)?;
        self.check_config(c, region, &body, &text).await?;
        let name = proxy_name(self.project);
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
        self.proxy_gate(c, region, &id, &text).await?;
        self.proxies.borrow_mut().insert(
            region.to_owned(),
            Live {
                id: id.clone(),
                base: text,
                overrides: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    /// A changed config (routes, limits, headers): reloaded in place, never restarted.
    pub(super) async fn update_proxy(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        let Some(mut live) = self.live_proxy(&region) else {
            return self.replace_proxy(c, region).await;
        };
        let text = self.planned_config(c)?;
        let _turn = self.proxy_turn.lock().await;
        self.refill_proxy_secrets(c, &region, &live.id).await?;
        self.reload_proxy(c, &region, &live, &text, true).await?;
        live.base = text;
        live.overrides.clear();
        self.proxies.borrow_mut().insert(region, live);
        self.done(c, format!("~ {}: new config, reloaded", c.address));
        Ok(())
    }

    /// A new image or new ports: the old proxy set aside (its ports freed), a new one
    /// started; the old one goes at the commit.
    pub(super) async fn replace_proxy(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        let name = proxy_name(self.project);
        let old = self.observed_id(c);
        if let Some(old) = &old {
            self.set_aside(&region, old, &name, &format!("{name}-berth-old"))
                .await?;
        }
        self.proxies.borrow_mut().remove(&region);
        let id = self.start_proxy(c, &region).await?;
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
    pub(super) async fn heal_proxy(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        let engine = self.engine(&region);
        let Some(id) = self.observed_id(c) else {
            return self.create_proxy(c, region).await;
        };
        let text = self.planned_config(c)?;
        self.record_undo(Undo::ProxyConfig {
            region: region.clone(),
            name: proxy_name(self.project),
            config: self
                .observed
                .resources
                .iter()
                .find(|o| o.id.as_deref() == Some(id.as_str()))
                .and_then(|o| o.attrs.get(attr::CONFIG).cloned())
                .unwrap_or_default(),
        })?;
        engine.stop(&id).await?;
        self.refill_proxy_secrets(c, &region, &id).await?;
        engine
            .put_file(&id, crate::proxy::CONFIG_PATH, text.as_bytes(), 0o644)
            .await?;
        engine.start(&id).await?;
        self.proxy_gate(c, &region, &id, &text).await?;
        self.proxies.borrow_mut().insert(
            region,
            Live {
                id,
                base: text,
                overrides: BTreeMap::new(),
            },
        );
        self.done(c, format!("! {}: started again and serving", c.address));
        Ok(())
    }

    /// Set aside now, removed at the commit.
    pub(super) async fn delete_proxy(&self, c: &Change, region: String) -> Result<(), ApplyError> {
        if let Some(id) = self.observed_id(c) {
            let name = proxy_name(self.project);
            let aside = format!("{name}-berth-deleted-{}", short(&id));
            self.set_aside(&region, &id, &name, &aside).await?;
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

    /// The secrets the proxy's TLS listeners name, decrypted, as files for root (nginx's
    /// master reads them), mode 0400.
    fn proxy_secret_files(
        &self,
        c: &Change,
    ) -> Result<Vec<(String, crate::secrets::Plaintext)>, ApplyError> {
        let proxy = self.proxy_spec(c)?;
        let mut names: Vec<&str> = proxy
            .tls
            .iter()
            .flat_map(|t| [t.value.cert.value.as_str(), t.value.key.value.as_str()])
            .collect();
        names.sort_unstable();
        names.dedup();
        self.decrypt_named(c, &names)
    }

    /// The proxy's TLS certificates and keys (secrets of the spec) as files under
    /// `/run/secrets` of its container, like every secret: a fresh tmpfs directory,
    /// bind-mounted read-only.
    fn deliver_proxy_secrets(
        &self,
        c: &Change,
        body: &mut ContainerCreateBody,
    ) -> Result<(), ApplyError> {
        let values = self.proxy_secret_files(c)?;
        if values.is_empty() {
            return Ok(());
        }
        let files: Vec<delivery::SecretFile> = values
            .iter()
            .map(|(name, value)| delivery::SecretFile {
                name,
                value,
                mode: 0o400,
            })
            .collect();
        let dir =
            delivery::prepare(self.project, &files, 0, 0).map_err(|e| ApplyError::Secret {
                address: c.address.to_string(),
                reason: super::DeliverError::Files(e),
            })?;
        body.host_config
            .get_or_insert_with(Default::default)
            .mounts
            .get_or_insert_with(Vec::new)
            .push(bollard::models::Mount {
                target: Some(crate::proxy::SECRETS_DIR.to_owned()),
                source: Some(dir.display().to_string()),
                typ: Some(bollard::models::MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        Ok(())
    }

    /// The proxy's certificates and keys written again into the directory its container
    /// mounts (a new certificate, or a reboot emptied the tmpfs): nginx reads them at its
    /// next reload.
    async fn refill_proxy_secrets(
        &self,
        c: &Change,
        region: &str,
        id: &str,
    ) -> Result<(), ApplyError> {
        let values = self.proxy_secret_files(c)?;
        if values.is_empty() {
            return Ok(());
        }
        let Some((dir, _)) = self
            .engine(region)
            .state(id)
            .await?
            .binds
            .into_iter()
            .find(|(_, dest)| dest == crate::proxy::SECRETS_DIR)
        else {
            return Ok(()); // made without TLS: a new listener's `listen` change replaces it
        };
        let files: Vec<delivery::SecretFile> = values
            .iter()
            .map(|(name, value)| delivery::SecretFile {
                name,
                value,
                mode: 0o400,
            })
            .collect();
        delivery::refill(self.project, std::path::Path::new(&dir), &files, 0, 0).map_err(|e| {
            ApplyError::Secret {
                address: c.address.to_string(),
                reason: super::DeliverError::Files(e),
            }
        })
    }

    /// Blue-green through the proxy: the candidate `next` takes the place of the container
    /// named `name` in the running proxy's upstreams (checked, recorded, reloaded, gated).
    /// Returns whether the proxy routes to it at all (only then is there anything to drain).
    pub(super) async fn proxy_switch(
        &self,
        c: &Change,
        region: &str,
        name: &str,
        next: &str,
    ) -> Result<bool, ApplyError> {
        let Some(live) = self.live_proxy(region) else {
            return Ok(false);
        };
        if !live.routes_to(name) {
            return Ok(false);
        }
        let _turn = self.proxy_turn.lock().await;
        // Another step may have changed it while this one waited its turn.
        let mut live = self.live_proxy(region).unwrap_or(live);
        let mut switched = live.clone();
        switched.overrides.insert(name.to_owned(), next.to_owned());
        let text = switched.text();
        let at = self.proxy_change(c, region);
        self.reload_proxy(&at, region, &live, &text, true).await?;
        live.overrides.insert(name.to_owned(), next.to_owned());
        self.proxies.borrow_mut().insert(region.to_owned(), live);
        Ok(true)
    }

    /// After a switch: the pod's own container (now named `name`) back in the config, which
    /// is again the config the spec renders once no other switch is under way.
    pub(super) async fn proxy_settle(
        &self,
        c: &Change,
        region: &str,
        name: &str,
    ) -> Result<(), ApplyError> {
        let _turn = self.proxy_turn.lock().await;
        let Some(mut live) = self.live_proxy(region) else {
            return Ok(());
        };
        let before = live.clone();
        live.overrides.remove(name);
        let at = self.proxy_change(c, region);
        // Undoing the switch (recorded before it) puts the old config back; nothing new to
        // record.
        self.reload_proxy(&at, region, &before, &live.text(), false)
            .await?;
        self.proxies.borrow_mut().insert(region.to_owned(), live);
        Ok(())
    }

    /// The proxy reloaded with the same config, so that it looks the pod's containers up
    /// again (a recreated or restarted container may have a new address). The previous
    /// config is recorded first, so that undoing ends with a reload too.
    pub(super) async fn proxy_reresolve(
        &self,
        c: &Change,
        region: &str,
        name: &str,
        record_only: bool,
    ) -> Result<(), ApplyError> {
        let Some(live) = self.live_proxy(region) else {
            return Ok(());
        };
        if !live.routes_to(name) {
            return Ok(());
        }
        let _turn = self.proxy_turn.lock().await;
        let live = self.live_proxy(region).unwrap_or(live);
        if record_only {
            self.record_undo(Undo::ProxyConfig {
                region: region.to_owned(),
                name: proxy_name(self.project),
                config: live.text(),
            })?;
            return Ok(());
        }
        let at = self.proxy_change(c, region);
        self.reload_proxy(&at, region, &live, &live.text(), false)
            .await
    }

    /// A change standing for the region's proxy, for a reload a pod's step makes (errors
    /// then name the proxy).
    fn proxy_change(&self, c: &Change, region: &str) -> Change {
        let mut at = c.clone();
        at.address = crate::graph::Address::new(Kind::Proxy, "").region(
            crate::resources::shown_region(&self.spec.region_names(), region),
        );
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "map $host $berth_token {\n    default \"0123456789abcdef\";\n}\nupstream api_8000 {\n        server shop-api-0:8000;\n        server shop-api-1:8000;\n        server shop-api-10:8000;\n}\n";

    #[test]
    fn a_switch_swaps_exactly_one_server_and_changes_the_token() {
        let live = Live {
            id: "x".into(),
            base: CONFIG.into(),
            overrides: BTreeMap::from([("shop-api-1".into(), "shop-api-1-berth-next".into())]),
        };
        let text = live.text();
        assert!(text.contains("server shop-api-0:8000;"));
        assert!(text.contains("server shop-api-1-berth-next:8000;"));
        assert!(text.contains("server shop-api-10:8000;"));
        assert_ne!(crate::proxy::token(&text), crate::proxy::token(CONFIG));
        assert!(live.routes_to("shop-api-10"));
        assert!(!live.routes_to("shop-api-2"));
        // Without overrides the config is the spec's, byte for byte.
        let settled = Live {
            overrides: BTreeMap::new(),
            ..live
        };
        assert_eq!(settled.text(), CONFIG);
    }

    #[test]
    fn a_rendered_config_seals_to_itself_and_a_switch_seals_anew() {
        let yaml = "version: 1\nproject: shop\npods:\n  api:\n    image: api:1\n    replicas: 2\nproxy:\n  image: nginx:1.27-alpine\n  routes:\n    - { path: /, to: api:8000 }\n";
        let loaded = crate::spec::load_str(std::path::Path::new("t.yaml"), yaml.to_owned());
        let spec = loaded.spec.expect("parsed");
        let proxy = spec.proxy.as_ref().expect("proxy");
        let servers = crate::proxy::stable_servers(&spec, "local");
        let text = crate::proxy::render(&spec, proxy, &servers);
        assert_eq!(crate::proxy::seal(&text), text);
        let switched = Live {
            id: "x".into(),
            base: text.clone(),
            overrides: BTreeMap::from([("shop-api-0".into(), "shop-api-0-berth-next".into())]),
        };
        let t = switched.text();
        assert!(t.contains("server shop-api-0-berth-next:8000;"), "{t}");
        assert_ne!(crate::proxy::token(&t), crate::proxy::token(&text));
        assert_eq!(crate::proxy::seal(&t), t);
    }

    #[test]
    fn nginx_is_quoted_without_its_prefix_and_pointed_at_the_rendered_line() {
        let out = "2026/11/30 20:40:44 [emerg] 1#1: unknown \"no_such_variable\" variable\nnginx: configuration file /etc/berth/nginx.conf test failed\n";
        let said = nginx_says(out);
        assert_eq!(said, "unknown \"no_such_variable\" variable");
        let config = "http {\n    add_header X-Bad \"$no_such_variable\" always;\n}\n";
        assert_eq!(
            quoted_line(config, &said),
            Some((
                2,
                "add_header X-Bad \"$no_such_variable\" always;".to_owned()
            ))
        );
    }
}
