//! Host ports: no two pods (or a pod and the proxy) of one region publish the same one.

use std::collections::HashMap;

use super::Checker;
use crate::diag::{Diagnostic, Span};
use crate::spec::Spec;

impl Checker<'_> {
    pub(super) fn host_ports(&mut self) {
        /// Who publishes a host port, where.
        struct Publisher {
            ip: String,
            span: Span,
            what: String,
        }
        let spec = self.spec;
        let mut clashes: Vec<(u16, Publisher, Span, String)> = Vec::new();
        for region in spec.region_names() {
            let mut seen: HashMap<(u16, String), Vec<Publisher>> = HashMap::new();
            let mut publish = |port: u16, proto: &str, ip: &str, span: Span, what: String| {
                let ip = if ip == "0.0.0.0" || ip == "::" {
                    ""
                } else {
                    ip
                };
                let list = seen.entry((port, proto.to_owned())).or_default();
                if let Some(first) = list
                    .iter()
                    .find(|p| p.ip.is_empty() || ip.is_empty() || p.ip == ip)
                {
                    clashes.push((
                        port,
                        Publisher {
                            ip: ip.to_owned(),
                            span,
                            what: what.clone(),
                        },
                        first.span,
                        first.what.clone(),
                    ));
                }
                list.push(Publisher {
                    ip: ip.to_owned(),
                    span,
                    what,
                });
            };
            for p in spec.pods.iter() {
                if !Spec::runs_in(&p.item.regions, region) {
                    continue;
                }
                for m in &p.item.ports {
                    if let Ok(pm) = m.get() {
                        publish(
                            pm.host,
                            &pm.protocol,
                            &pm.ip,
                            m.span,
                            format!("pod `{}`", p.name.value),
                        );
                    }
                }
            }
            if let Some(proxy) = &spec.proxy {
                for port in &proxy.listen {
                    publish(*port, "tcp", "", proxy.image.span, "the proxy".to_owned());
                }
            }
        }
        let mut reported = std::collections::HashSet::new();
        for (port, again, first, first_what) in clashes {
            // The same clash shows in every region both run in: report it once.
            if !reported.insert(again.span) {
                continue;
            }
            let what = again.what;
            let message = if what == first_what {
                format!("host port {port} is published twice by {what}")
            } else {
                format!("host port {port} is published by {first_what} and {what}")
            };
            self.push(
                Diagnostic::error("port-conflict", message)
                    .at(again.span, format!("{what} publishes it again"))
                    .related(first, format!("{first_what} publishes it here"))
                    .help("give each a different host port, or route both through the proxy"),
            );
        }
    }
}
