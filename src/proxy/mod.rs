//! STUB (lead's, replaced by the render helper's module at merge): the interface only.

use std::collections::BTreeMap;

use crate::spec::{Proxy, Spec};

pub const CONFIG_DIR: &str = "/etc/berth";
pub const CONFIG_PATH: &str = "/etc/berth/nginx.conf";
pub const HEALTH_PATH: &str = "/.berth/health";

pub fn command() -> Vec<String> {
    ["nginx", "-c", CONFIG_PATH, "-g", "daemon off;"]
        .map(str::to_owned)
        .to_vec()
}

pub type Servers = BTreeMap<String, Vec<String>>;

pub fn stable_servers(spec: &Spec, _region: &str) -> Servers {
    let mut out = Servers::new();
    let project = &spec.project.value;
    if let Some(p) = &spec.proxy {
        for r in &p.routes {
            if let Some((pod, _)) = r.value.target() {
                let n = spec.pods.get(pod).map_or(1, |p| p.replicas());
                let names = if n > 1 {
                    (0..n).map(|i| format!("{project}-{pod}-{i}")).collect()
                } else {
                    vec![format!("{project}-{pod}")]
                };
                out.insert(pod.to_owned(), names);
            }
        }
    }
    out
}

pub fn render(_spec: &Spec, proxy: &Proxy, servers: &Servers) -> String {
    let mut s = String::from(
        "worker_processes 1;\npid /tmp/berth-nginx.pid;\nerror_log stderr warn;\nevents {}\nhttp {\n    access_log off;\n    client_body_temp_path /tmp/cb;\n    proxy_temp_path /tmp/pt;\n    fastcgi_temp_path /tmp/ft;\n    uwsgi_temp_path /tmp/ut;\n    scgi_temp_path /tmp/st;\n",
    );
    let mut locations = String::new();
    for r in &proxy.routes {
        if let Some((pod, port)) = r.value.target() {
            s.push_str(&format!("    upstream {pod}_{port} {{\n"));
            for n in servers.get(pod).into_iter().flatten() {
                s.push_str(&format!("        server {n}:{port};\n"));
            }
            s.push_str("    }\n");
            locations.push_str(&format!(
                "        location {} {{\n            proxy_pass http://{pod}_{port};\n            proxy_next_upstream error timeout http_502;\n        }}\n",
                r.value.path()
            ));
        }
    }
    s.push_str("    server {\n");
    for p in &proxy.listen {
        s.push_str(&format!("        listen {p};\n"));
    }
    s.push_str(&locations);
    s.push_str("        location = /.berth/health {\n            return 200 \"berth TOKEN\\n\";\n        }\n    }\n}\n");
    let t = crate::encode::sha256_hex(s.as_bytes());
    s.replace("TOKEN", &t[..12])
}

pub fn token(config: &str) -> Option<&str> {
    let i = config.find("\"berth ")?;
    config.get(i + 7..i + 19)
}

pub fn line_of(config: &str, nginx_message: &str) -> Option<(usize, String)> {
    let at = nginx_message.find(&format!("{CONFIG_PATH}:"))? + CONFIG_PATH.len() + 1;
    let n: usize = nginx_message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    config.lines().nth(n.checked_sub(1)?).map(|l| (n, l.to_owned()))
}
