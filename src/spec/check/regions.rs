//! Regions: one primary, engine addresses, and the region lists of pods.

use super::Checker;
use crate::diag::Diagnostic;
use crate::spec::{Sp, TlsKey};

impl Checker<'_> {
    pub(super) fn regions(&mut self) {
        let regions = &self.spec.regions;
        let primaries: Vec<&Sp<String>> = regions
            .iter()
            .filter(|r| r.item.primary)
            .map(|r| &r.name)
            .collect();
        if regions.len() > 1 && primaries.is_empty() {
            let first = &regions.entries()[0].name;
            self.push(
                Diagnostic::error("no-primary-region", "no region is primary")
                    .at(first.span, "one of these regions must be rolled out first")
                    .help(format!(
                        "add `primary: true` to one region, e.g. `{}`",
                        first.value
                    )),
            );
        }
        if primaries.len() > 1 {
            let mut d = Diagnostic::error(
                "several-primary-regions",
                format!("{} regions are primary", primaries.len()),
            )
            .at(primaries[1].span, "also primary")
            .help("keep `primary: true` on exactly one region");
            d = d.related(primaries[0].span, "primary");
            self.push(d);
        }
        for r in regions.iter() {
            let engine = &r.item.engine;
            let scheme = engine.value.split_once("://");
            match scheme {
                Some(("unix", rest)) if rest.starts_with('/') => {}
                Some(("tcp", rest)) if !rest.is_empty() => {}
                Some(("ssh", rest)) if !rest.is_empty() => {}
                _ => self.push(
                    Diagnostic::error("invalid-engine", format!("engine `{}` is not an engine address", engine.value))
                        .at(engine.span, "not unix://, tcp:// or ssh://")
                        .help("write `unix:///var/run/docker.sock`, `tcp://host:2376` (with `tls`) or `ssh://user@host`"),
                ),
            }
            if let Some(tls) = &r.item.tls
                && let TlsKey::Secret(k) = &tls.key
                && self.spec.secrets.get(&k.secret.value).is_none()
            {
                let defined: Vec<&str> = self
                    .spec
                    .secrets
                    .iter()
                    .map(|s| s.name.value.as_str())
                    .collect();
                self.unknown("secret", &k.secret, defined.into_iter(), "secrets");
            }
            if engine.value.starts_with("tcp://") && r.item.tls.is_none() {
                self.push(
                    Diagnostic::warning(
                        "plain-tcp-engine",
                        format!("engine `{}` is reached without TLS", engine.value),
                    )
                    .at(engine.span, "plain HTTP, no authentication")
                    .help("anyone who can reach this port controls the engine, and what berth sends (secret files too) crosses the network in clear: add `tls: { ca, cert, key }` (the engine with `--tlsverify`), or use `ssh://USER@HOST`"),
                );
            }
            if r.item.tls.is_some() && !engine.value.starts_with("tcp://") {
                self.push(
                    Diagnostic::error("tls-without-tcp", "`tls` applies only to a tcp:// engine")
                        .at(engine.span, "not a tcp:// engine")
                        .help("remove `tls`, or use `tcp://host:2376`"),
                );
            }
        }
    }

    /// Every region name in `list` exists, and the list is not empty.
    pub(super) fn region_refs(&mut self, list: &Option<Vec<Sp<String>>>, owner: &Sp<String>) {
        let Some(list) = list else { return };
        let defined = self.spec.region_names();
        if list.is_empty() {
            self.push(
                Diagnostic::error(
                    "empty-regions",
                    format!("`{}` runs in no region", owner.value),
                )
                .at(owner.span, "`regions: []`")
                .help("remove `regions:` to run it in every region, or name the regions"),
            );
        }
        for r in list {
            if !defined.contains(&r.value.as_str()) {
                self.unknown("region", r, defined.iter().copied(), "regions");
            }
        }
        self.no_duplicates(list, "region");
    }
}
