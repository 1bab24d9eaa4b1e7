//! The proxy of a region as it runs during an apply, and a routed pod's blue-green switch
//! through it: the candidate in the upstream in place of the old container, then the pod's
//! own container again; and a reload that looks a pod's containers up again.

use std::collections::{BTreeMap, BTreeSet};

use super::super::super::{ApplyError, Run, Undo};
use super::proxy_name;
use crate::graph::Kind;
use crate::plan::Change;
use crate::resources::attr;

/// The proxy of a region as it runs during this apply: its container, the config it was
/// given as the spec renders it (`base`), and the containers standing in for a pod's own in
/// its upstreams while that pod is replaced blue-green (stable name -> candidate's name).
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Its container; empty when this apply set it aside (no proxy runs).
    pub id: String,
    pub base: String,
    pub overrides: BTreeMap<String, String>,
    /// Containers the config names that this apply has stopped (deleted, set aside to be
    /// recreated, being healed): named by a reload in the meantime, nginx could not look
    /// them up and would refuse the whole config, so they are marked down instead.
    pub down: BTreeSet<String>,
}

impl Live {
    /// The config that runs: `base`, with each overridden server swapped and each stopped
    /// one marked down, and a token of its own so that the health endpoint tells which
    /// config answers.
    pub fn text(&self) -> String {
        if self.overrides.is_empty() && self.down.is_empty() {
            return self.base.clone();
        }
        let mut text = self.base.clone();
        for (from, to) in &self.overrides {
            text = swap_server(&text, from, to);
        }
        for name in &self.down {
            text = down_server(&text, name);
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

/// `text` with the upstream servers named `name` replaced by a placeholder that is down.
fn down_server(text: &str, name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match server_of(line) {
            Some(host) if host == name => {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(&format!("{indent}server 127.0.0.1:1 down;\n"));
            }
            _ => out.push_str(line),
        }
    }
    out
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

impl Run<'_> {
    /// The proxy of `region` as it runs now: from this apply's own steps, else as observed
    /// (running; a stopped one serves nothing to switch).
    pub(in crate::apply) fn live_proxy(&self, region: &str) -> Option<Live> {
        self.spec.proxy.as_ref()?;
        if let Some(l) = self.proxies.borrow().get(region) {
            return (!l.id.is_empty()).then(|| l.clone());
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
            base: o.attrs.get(attr::CONFIG)?.to_owned(),
            overrides: BTreeMap::new(),
            down: BTreeSet::new(),
        };
        self.proxies
            .borrow_mut()
            .insert(region.to_owned(), live.clone());
        Some(live)
    }

    /// Marks the container `name` stopped (`down`) or running again in the running proxy's
    /// view of this apply: later reloads name it only when it can be looked up.
    pub(in crate::apply) fn proxy_mark(&self, region: &str, name: &str, down: bool) {
        let Some(mut live) = self.live_proxy(region) else {
            return;
        };
        if !live.routes_to(name) {
            return;
        }
        if down {
            live.down.insert(name.to_owned());
        } else {
            live.down.remove(name);
        }
        self.proxies.borrow_mut().insert(region.to_owned(), live);
    }

    /// Blue-green through the proxy: the candidate `next` takes the place of the container
    /// named `name` in the running proxy's upstreams (checked, recorded, reloaded, gated).
    /// Returns whether the proxy routes to it at all (only then is there anything to drain).
    pub(in crate::apply) async fn proxy_switch(
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
        let live = self.live_proxy(region).unwrap_or(live);
        let at = self.proxy_change(c, region);
        // The candidate is reached the way the spec now says (a route's port may have
        // changed with it): the planned config, the containers not running yet marked down.
        let mut switched = self.towards_plan(&at, region, &live).await?;
        switched.overrides.insert(name.to_owned(), next.to_owned());
        let text = switched.text();
        self.reload_proxy(&at, region, &live, &text, true, false)
            .await?;
        self.proxies
            .borrow_mut()
            .insert(region.to_owned(), switched);
        Ok(true)
    }

    /// `live` with the planned config as its base when this apply changes the config (its
    /// servers that do not run yet marked down: nginx must look every name up), else as is.
    async fn towards_plan(
        &self,
        at: &Change,
        region: &str,
        live: &Live,
    ) -> Result<Live, ApplyError> {
        let Ok(planned) = self.planned_config(at) else {
            return Ok(live.clone());
        };
        if planned == live.base || planned.is_empty() {
            return Ok(live.clone());
        }
        let running: BTreeSet<String> = self
            .engine(region)
            .containers(self.project)
            .await?
            .into_iter()
            .filter(|c| c.state == "running")
            .map(|c| c.name)
            .collect();
        let down = planned
            .lines()
            .filter_map(server_of)
            .filter(|host| {
                *host != "127.0.0.1"
                    && !running.contains(*host)
                    && !live.overrides.contains_key(*host)
            })
            .map(str::to_owned)
            .collect();
        Ok(Live {
            id: live.id.clone(),
            base: planned,
            overrides: live.overrides.clone(),
            down,
        })
    }

    /// After a switch: the candidate `new_id` takes the pod's own name, and the config names
    /// it so again (the config the spec renders once no other switch is under way). Both
    /// in one turn: no other reload renders a config naming the candidate's old name, which
    /// no longer resolves, in between.
    pub(in crate::apply) async fn proxy_rename_and_settle(
        &self,
        c: &Change,
        region: &str,
        new_id: &str,
        name: &str,
    ) -> Result<(), ApplyError> {
        let _turn = self.proxy_turn.lock().await;
        self.engine(region).rename(new_id, name).await?;
        let Some(mut live) = self.live_proxy(region) else {
            return Ok(());
        };
        let before = live.clone();
        live.overrides.remove(name);
        live.down.remove(name);
        let at = self.proxy_change(c, region);
        // Undoing the switch (recorded before it) puts the old config back; nothing new to
        // record.
        self.reload_proxy(&at, region, &before, &live.text(), false, false)
            .await?;
        self.proxies.borrow_mut().insert(region.to_owned(), live);
        Ok(())
    }

    /// The proxy reloaded with the same config, so that it looks the pod's containers up
    /// again (a recreated or restarted container may have a new address). The previous
    /// config is recorded first, so that undoing ends with a reload too.
    pub(in crate::apply) async fn proxy_reresolve(
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
        self.reload_proxy(&at, region, &live, &live.text(), false, false)
            .await
    }

    /// A change standing for the region's proxy, for a reload a pod's step makes (errors
    /// then name the proxy).
    pub(in crate::apply) fn proxy_change(&self, c: &Change, region: &str) -> Change {
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
            down: BTreeSet::new(),
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
            down: BTreeSet::new(),
        };
        let t = switched.text();
        assert!(t.contains("server shop-api-0-berth-next:8000;"), "{t}");
        assert_ne!(crate::proxy::token(&t), crate::proxy::token(&text));
        assert_eq!(crate::proxy::seal(&t), t);
    }

    #[test]
    fn a_stopped_server_is_marked_down_and_comes_back() {
        let mut live = Live {
            id: "x".into(),
            base: CONFIG.into(),
            overrides: BTreeMap::new(),
            down: BTreeSet::from(["shop-api-10".to_owned()]),
        };
        let text = live.text();
        assert!(!text.contains("shop-api-10:"), "{text}");
        assert!(
            text.contains("        server 127.0.0.1:1 down;\n"),
            "{text}"
        );
        assert!(text.contains("server shop-api-1:8000;"));
        live.down.clear();
        assert_eq!(live.text(), CONFIG);
    }
}
