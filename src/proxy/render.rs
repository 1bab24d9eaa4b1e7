//! The nginx config of the proxy, rendered from the spec and the servers of each routed pod.
//! Pure: no I/O. Only core http directives that both nginx 1.22 (Debian) and 1.27 (the
//! upstream image) know: no `include`, no `user`, no dynamic module.

use std::collections::{BTreeMap, BTreeSet};

use super::headers::{Lines, quote};
use crate::engine::names::container_name_of;
use crate::graph::{Address, Kind};
use crate::spec::units::RatePer;
use crate::spec::{Proxy, Route, Spec};

/// Where berth puts the config in the proxy container, and the command that runs nginx on it.
pub const CONFIG_DIR: &str = "/etc/berth";
pub const CONFIG_PATH: &str = "/etc/berth/nginx.conf";
/// The proxy's own health endpoint (answered on every listener, never routed).
pub const HEALTH_PATH: &str = "/.berth/health";
/// Where the secrets of TLS listeners are delivered in the proxy container.
pub const SECRETS_DIR: &str = crate::spec::SECRETS_MOUNT_POINT;

/// The line that holds the token (once, so that a change to the config changes one line of
/// it); the health endpoint answers `berth $berth_token`.
const TOKEN_MAP: &str = "map $host $berth_token {";
/// Stands for the token while the config is rendered (the token is a hash of the rest); as
/// long as a token (16 hex digits), so that the token takes its place.
const PLACEHOLDER: &str = "@@BERTH-TOKEN@@@";
/// Where nginx sends a refused request (429), to answer it with `Retry-After`.
const LOCATION_429: &str = "@berth_429";

/// The container's command: nginx in the foreground on berth's config.
pub fn command() -> Vec<String> {
    ["nginx", "-c", CONFIG_PATH, "-g", "daemon off;"]
        .map(String::from)
        .to_vec()
}

/// For each pod the proxy routes to, the host names of its containers (the upstream's
/// servers), in instance order. A missing or empty entry means the pod has no container yet:
/// its upstream gets a placeholder server marked `down`, so the config stays valid.
pub type Servers = BTreeMap<String, Vec<String>>;

/// The servers of the current generation: for each routed pod, the stable container names
/// of its instances in `region` (`<project>-<pod>`, or `<project>-<pod>-<i>` for replicas).
pub fn stable_servers(spec: &Spec, region: &str) -> Servers {
    let mut out = Servers::new();
    let Some(proxy) = &spec.proxy else {
        return out;
    };
    let project = &spec.project.value;
    for route in &proxy.routes {
        let Some((name, _)) = route.value.target() else {
            continue;
        };
        let Some(pod) = spec.pods.get(name) else {
            continue;
        };
        if !Spec::runs_in(&pod.regions, region) || out.contains_key(name) {
            continue;
        }
        let address = Address::new(Kind::Pod, name);
        let names = match pod.replicas() {
            1 => vec![container_name_of(project, &address)],
            n => (0..n)
                .map(|i| container_name_of(project, &address.clone().index(Some(i))))
                .collect(),
        };
        out.insert(name.to_owned(), names);
    }
    out
}

/// The config text. Deterministic: the same spec and servers give the same bytes.
pub fn render(spec: &Spec, proxy: &Proxy, servers: &Servers) -> String {
    let mut w = Writer::default();
    let r = Renderer::new(spec, proxy, servers);
    r.main(&mut w);
    let mut text = w.out;
    let token = crate::encode::sha256_hex(text.as_bytes());
    let token = token.get(..PLACEHOLDER.len()).unwrap_or(&token);
    if let Some(at) = text.find(PLACEHOLDER) {
        text.replace_range(at..at + PLACEHOLDER.len(), token);
    }
    text
}

/// The comment a config starts with for each TLS secret: `# secret NAME: VERSION` (the
/// ciphertext's fingerprint), added by `resources` where the versions are known.
pub const SECRET_VERSION_COMMENT: &str = "# secret ";

/// `text` (a rendered config, changed since: a comment added, a server swapped) with its
/// token computed again the way [`render`] computes it, so that the health endpoint tells
/// this text from any other. A sealed text seals to itself.
pub fn seal(text: &str) -> String {
    let Some(old) = token(text) else {
        return text.to_owned();
    };
    let marker = format!("default \"{old}\";");
    let open = text.replacen(&marker, &format!("default \"{PLACEHOLDER}\";"), 1);
    let token = crate::encode::sha256_hex(open.as_bytes());
    open.replace(PLACEHOLDER, token.get(..16).unwrap_or(&token))
}

/// The token the health endpoint answers with (`berth <token>`): a hash of the config, so a
/// gate can tell that nginx runs this config after a reload. `None` when `config` has none.
pub fn token(config: &str) -> Option<&str> {
    let start = config.find(TOKEN_MAP)? + TOKEN_MAP.len();
    let rest = config[start..].trim_start().strip_prefix("default \"")?;
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric())?;
    (end > 0 && rest[end..].starts_with("\";")).then(|| &rest[..end])
}

/// For an nginx error message that names `CONFIG_PATH:LINE`, that line number and the
/// rendered line it points at (trimmed).
pub fn line_of(config: &str, nginx_message: &str) -> Option<(usize, String)> {
    let at = format!("{CONFIG_PATH}:");
    let start = nginx_message.find(&at)? + at.len();
    let digits: String = nginx_message[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let n: usize = digits.parse().ok()?;
    let line = config.lines().nth(n.checked_sub(1)?)?;
    Some((n, line.trim().to_owned()))
}

/// Lines with indentation.
#[derive(Default)]
struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    fn line(&mut self, text: &str) {
        for _ in 0..self.depth {
            self.out.push_str("    ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }
    fn lines(&mut self, lines: &[String]) {
        for l in lines {
            self.line(l);
        }
    }
    fn open(&mut self, head: &str) {
        self.line(&format!("{head} {{"));
        self.depth += 1;
    }
    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.line("}");
    }
    fn blank(&mut self) {
        self.out.push('\n');
    }
}

/// A comment that stays one line whatever it quotes.
fn comment(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("# {clean}")
}

/// The name of the upstream of a pod's port.
fn upstream(pod: &str, port: u16) -> String {
    format!("{pod}_{port}")
}

/// A route and its position in the spec (which names its CORS variables).
#[derive(Clone, Copy)]
struct At<'s> {
    index: usize,
    route: &'s Route,
}

/// One `server` block: its host (`None`: the default server) and listener kind.
#[derive(Clone, Copy)]
struct Listener<'s> {
    host: Option<&'s str>,
    /// The TLS port, or `None` for the plain ports together.
    tls: Option<u16>,
}

struct Renderer<'s> {
    spec: &'s Spec,
    proxy: &'s Proxy,
    servers: &'s Servers,
    headers: Lines,
    /// Routes by host (`None`: routes without a host), by path.
    hosts: BTreeMap<Option<&'s str>, BTreeMap<&'s str, At<'s>>>,
    plain_ports: Vec<u16>,
    tls_ports: Vec<u16>,
}

impl<'s> Renderer<'s> {
    fn new(spec: &'s Spec, proxy: &'s Proxy, servers: &'s Servers) -> Self {
        let mut hosts: BTreeMap<Option<&str>, BTreeMap<&str, At>> = BTreeMap::new();
        hosts.entry(None).or_default();
        for (index, r) in proxy.routes.iter().enumerate() {
            let route = &r.value;
            let host = route.host.as_ref().map(|h| h.value.as_str());
            hosts
                .entry(host)
                .or_default()
                .entry(route.path())
                .or_insert(At { index, route });
        }
        let mut ports: Vec<u16> = proxy.listen.clone();
        ports.sort_unstable();
        ports.dedup();
        let (tls_ports, plain_ports) = ports.into_iter().partition(|p| proxy.tls_of(*p).is_some());
        Renderer {
            spec,
            proxy,
            servers,
            headers: Lines::new(proxy),
            hosts,
            plain_ports,
            tls_ports,
        }
    }

    fn main(&self, w: &mut Writer) {
        w.line(&comment(&format!(
            "nginx config of the berth proxy of project `{}`: rendered by berth, do not edit",
            self.spec.project.value
        )));
        w.line("worker_processes auto;");
        w.line("pid /tmp/berth-nginx.pid;");
        w.line("error_log stderr warn;");
        w.blank();
        w.open("events");
        w.line("worker_connections 1024;");
        w.close();
        w.blank();
        w.open("http");
        self.http_settings(w);
        w.blank();
        w.line(&comment(
            "what the health endpoint answers: a hash of the rest of this config",
        ));
        w.open(TOKEN_MAP.trim_end_matches(" {"));
        w.line(&format!("default \"{PLACEHOLDER}\";"));
        w.close();
        self.real_ip(w);
        self.rate_limits(w);
        self.cors_maps(w);
        self.upstreams(w);
        // With `redirect_http`, one plain server answers every host (health and 301).
        let redirect = self.proxy.redirect_http() && !self.tls_ports.is_empty();
        for host in self.hosts.keys() {
            if !self.plain_ports.is_empty() && (!redirect || host.is_none()) {
                self.server(
                    w,
                    Listener {
                        host: *host,
                        tls: None,
                    },
                );
            }
            for port in &self.tls_ports {
                self.server(
                    w,
                    Listener {
                        host: *host,
                        tls: Some(*port),
                    },
                );
            }
        }
        w.close();
    }

    fn http_settings(&self, w: &mut Writer) {
        let hosts = self.hosts.len();
        let vars = self.proxy.routes.len() * 3 + self.spec.rate_limits.len();
        for l in [
            "access_log /dev/stdout;",
            "server_tokens off;",
            "default_type application/octet-stream;",
            "client_body_temp_path /tmp/berth-client-body;",
            "proxy_temp_path /tmp/berth-proxy;",
            "fastcgi_temp_path /tmp/berth-fastcgi;",
            "uwsgi_temp_path /tmp/berth-uwsgi;",
            "scgi_temp_path /tmp/berth-scgi;",
            "server_names_hash_bucket_size 128;",
            &format!("server_names_hash_max_size {};", hash_size(hosts, 512)),
            "map_hash_bucket_size 128;",
            &format!("variables_hash_max_size {};", hash_size(vars + 512, 1024)),
            "limit_req_status 429;",
            "# to every upstream: the client's host, address and scheme; a server that refuses",
            "# (a draining one) is skipped for the next",
            "proxy_http_version 1.1;",
            "proxy_set_header Host $host;",
            "proxy_set_header X-Real-IP $remote_addr;",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "proxy_set_header Connection \"\";",
            "proxy_next_upstream error timeout http_502;",
        ] {
            w.line(l);
        }
        if !self.headers.hide.is_empty() {
            w.line("# the upstreams' own copies of the headers the proxy sets are dropped");
            w.lines(&self.headers.hide);
        }
    }

    fn real_ip(&self, w: &mut Writer) {
        let Some(r) = &self.proxy.real_ip else { return };
        w.blank();
        w.line(&comment(
            "real_ip: the client address from trusted load balancers",
        ));
        let mut trust: Vec<&str> = r.value.trust.iter().map(|t| t.value.as_str()).collect();
        trust.sort_unstable();
        trust.dedup();
        for t in trust {
            w.line(&format!("set_real_ip_from {};", quote(t)));
        }
        w.line(&format!("real_ip_header {};", quote(r.value.header())));
        w.line("real_ip_recursive on;");
    }

    fn rate_limits(&self, w: &mut Writer) {
        for (i, r) in self.spec.rate_limits.iter().enumerate() {
            let limit = &r.item;
            let Some(rate) = limit.rate.get() else {
                continue;
            };
            w.blank();
            w.line(&comment(&format!(
                "rate limit {}: {}, burst {}",
                r.name.value,
                limit.rate.canonical(),
                limit.burst
            )));
            let key = match limit.key_header() {
                None => "$binary_remote_addr".to_owned(),
                Some(h) => {
                    // Requests without the header are counted by client address.
                    let var = format!("$berth_limit_key_{i}");
                    let header = format!("$http_{}", h.to_ascii_lowercase().replace('-', "_"));
                    w.open(&format!("map {header} {var}"));
                    w.line("\"\" $binary_remote_addr;");
                    w.line(&format!("default {header};"));
                    w.close();
                    var
                }
            };
            let per = match rate.per {
                RatePer::Second => "s",
                RatePer::Minute => "m",
            };
            w.line(&format!(
                "limit_req_zone {key} zone={}:10m rate={}r/{per};",
                r.name.value, rate.requests
            ));
        }
    }

    /// Per route with CORS: the allowed origin (empty when not allowed), whether a request
    /// is a preflight from it, and the credentials header.
    fn cors_maps(&self, w: &mut Writer) {
        for (index, r) in self.proxy.routes.iter().enumerate() {
            let cors = &r.value.cors;
            if cors.is_empty() {
                continue;
            }
            w.blank();
            w.line(&comment(&format!("CORS of route {}", r.value.key())));
            w.open(&format!("map $http_origin $berth_cors_{index}"));
            if cors.origins().iter().any(|o| o.value == "*") {
                w.line("\"\" \"\";");
                w.line("default \"*\";");
            } else {
                w.line("default \"\";");
                let origins: BTreeSet<&str> =
                    cors.origins().iter().map(|o| o.value.as_str()).collect();
                for o in origins {
                    w.line(&format!("{} $http_origin;", quote(o)));
                }
            }
            w.close();
            w.open(&format!(
                "map \"$request_method:$http_access_control_request_method:$berth_cors_{index}\" $berth_preflight_{index}"
            ));
            w.line("default 0;");
            w.line("\"~^OPTIONS:[^:]+:.\" 1;");
            w.close();
            if cors.credentials() {
                w.open(&format!(
                    "map $berth_cors_{index} $berth_cors_credentials_{index}"
                ));
                w.line("\"\" \"\";");
                w.line("default \"true\";");
                w.close();
            }
        }
    }

    fn upstreams(&self, w: &mut Writer) {
        let targets: BTreeSet<(&str, u16)> = self
            .proxy
            .routes
            .iter()
            .filter_map(|r| r.value.target())
            .collect();
        for (pod, port) in targets {
            w.blank();
            w.open(&format!("upstream {}", upstream(pod, port)));
            w.line(&comment(&format!("pod {pod}, port {port}")));
            match self.servers.get(pod).filter(|s| !s.is_empty()) {
                Some(names) => {
                    for n in names {
                        w.line(&format!("server {n}:{port};"));
                    }
                }
                None => {
                    w.line(&comment("no container yet"));
                    w.line("server 127.0.0.1:1 down;");
                }
            }
            w.line("keepalive 16;");
            w.close();
        }
    }

    /// The routes a server of `host` serves: its own, and those without a host whose path it
    /// does not route itself.
    fn routes_of(&self, host: Option<&'s str>) -> Vec<At<'s>> {
        let own = self.hosts.get(&host);
        let any = self.hosts.get(&None);
        let mut by_path: BTreeMap<&str, At> = any.cloned().unwrap_or_default();
        if host.is_some()
            && let Some(own) = own
        {
            by_path.extend(own.iter().map(|(p, a)| (*p, *a)));
        }
        by_path.into_values().collect()
    }

    fn server(&self, w: &mut Writer, l: Listener<'s>) {
        let tls = l.tls.is_some();
        w.blank();
        w.open("server");
        let what = match l.tls {
            Some(p) => format!("port {p} (TLS)"),
            None => format!("{} (plain)", ports_text(&self.plain_ports)),
        };
        let host = l.host.unwrap_or("any other host");
        w.line(&comment(&format!("{host}, {what}")));
        let default = if l.host.is_none() {
            " default_server"
        } else {
            ""
        };
        match l.tls {
            Some(p) => w.line(&format!("listen {p} ssl{default};")),
            None => {
                for p in &self.plain_ports {
                    w.line(&format!("listen {p}{default};"));
                }
            }
        }
        w.line(&format!("server_name {};", l.host.unwrap_or("_")));
        if let Some(t) = l.tls.and_then(|p| self.proxy.tls_of(p)) {
            w.line(&format!("ssl_certificate {SECRETS_DIR}/{};", t.cert.value));
            w.line(&format!(
                "ssl_certificate_key {SECRETS_DIR}/{};",
                t.key.value
            ));
            w.line("ssl_protocols TLSv1.2 TLSv1.3;");
        }
        self.health(w, tls);
        if !tls && self.proxy.redirect_http() {
            self.redirect(w);
            w.close();
            return;
        }
        w.line(&format!("error_page 429 = {LOCATION_429};"));
        self.refused(w, None, tls);
        let routes = self.routes_of(l.host);
        for at in &routes {
            if limited_cors(at.route) {
                self.refused(w, Some(*at), tls);
            }
        }
        for at in &routes {
            self.location(w, *at, tls);
        }
        if !routes.iter().any(|a| a.route.path() == "/") {
            w.line(&comment("no route: not found"));
            w.open("location /");
            w.lines(self.headers.of(tls));
            w.line("return 404;");
            w.close();
        }
        w.close();
    }

    /// Where a refused request (429) is answered, with `Retry-After` and the headers: one
    /// for the server, and one per rate-limited CORS route (with its CORS headers, so that
    /// a browser can read the 429).
    fn refused(&self, w: &mut Writer, cors: Option<At<'_>>, tls: bool) {
        match cors {
            None => w.open(&format!("location {LOCATION_429}")),
            Some(at) => w.open(&format!("location {LOCATION_429}_{}", at.index)),
        }
        w.lines(self.headers.of(tls));
        if let Some(at) = cors {
            self.cors_allow(w, at);
        }
        w.line("add_header Retry-After 1 always;");
        w.line("return 429;");
        w.close();
    }

    fn health(&self, w: &mut Writer, tls: bool) {
        w.open(&format!("location = {HEALTH_PATH}"));
        w.line("access_log off;");
        w.line("default_type text/plain;");
        w.lines(self.headers.of(tls));
        w.line("return 200 \"berth $berth_token\\n\";");
        w.close();
    }

    /// A plain listener of a proxy with `redirect_http`: everything but health to https.
    fn redirect(&self, w: &mut Writer) {
        let port = match self.tls_ports.iter().find(|p| **p == 443) {
            Some(_) => String::new(),
            None => self
                .tls_ports
                .first()
                .map_or(String::new(), |p| format!(":{p}")),
        };
        w.line(&comment("redirect_http: to https"));
        w.open("location /");
        w.lines(self.headers.of(false));
        w.line(&format!("return 301 https://$host{port}$request_uri;"));
        w.close();
    }

    fn location(&self, w: &mut Writer, at: At<'_>, tls: bool) {
        let r = at.route;
        let Some((pod, port)) = r.target() else {
            return;
        };
        let mut what = format!("route {} -> {pod}:{port}", r.key());
        if let Some(l) = &r.rate_limit {
            what.push_str(&format!(", rate limit {}", l.value));
        }
        w.line(&comment(&what));
        w.open(&format!("location {}", quote(r.path())));
        if let Some(l) = &r.rate_limit
            && let Some(limit) = self.spec.rate_limits.get(&l.value)
            && limit.rate.get().is_some()
        {
            let burst = match limit.burst {
                0 => String::new(),
                b => format!(" burst={b} nodelay"),
            };
            // Rate limit names are letters, digits, `_` and `-` (checked): unquoted, as
            // nginx reads a quote inside a token as part of the name.
            w.line(&format!("limit_req zone={}{burst};", l.value));
            if limited_cors(r) {
                w.line(&format!("error_page 429 = {LOCATION_429}_{};", at.index));
            }
        }
        w.line(&format!("proxy_pass http://{};", upstream(pod, port)));
        if !r.cors.is_empty() {
            // A location with a `proxy_hide_header` of its own inherits none of the http
            // level's: all of them, then those of CORS.
            w.lines(&self.headers.hide);
        }
        w.lines(self.headers.of(tls));
        if !r.cors.is_empty() {
            self.cors(w, at, tls);
        }
        w.close();
    }

    /// The CORS headers of a response from an allowed origin (none for another origin: the
    /// map gives an empty value, which nginx does not send).
    fn cors_allow(&self, w: &mut Writer, at: At<'_>) {
        let cors = &at.route.cors;
        let i = at.index;
        w.line(&format!(
            "add_header Access-Control-Allow-Origin $berth_cors_{i} always;"
        ));
        if cors.credentials() {
            w.line(&format!(
                "add_header Access-Control-Allow-Credentials $berth_cors_credentials_{i} always;"
            ));
        }
        if !cors.origins().iter().any(|o| o.value == "*") {
            w.line("add_header Vary Origin always;");
        }
    }

    /// CORS in a route's location: preflights answered here, the allowed origin on the rest.
    fn cors(&self, w: &mut Writer, at: At<'_>, tls: bool) {
        let cors = &at.route.cors;
        let i = at.index;
        for h in [
            "Access-Control-Allow-Origin",
            "Access-Control-Allow-Credentials",
        ] {
            w.line(&format!("proxy_hide_header {h};"));
        }
        self.cors_allow(w, at);
        w.open(&format!("if ($berth_preflight_{i})"));
        w.lines(self.headers.of(tls));
        self.cors_allow(w, at);
        w.line(&format!(
            "add_header Access-Control-Allow-Methods {} always;",
            quote(&cors.methods().join(", "))
        ));
        let headers = cors.headers();
        if headers.is_empty() {
            w.line("add_header Access-Control-Allow-Headers $http_access_control_request_headers always;");
        } else {
            w.line(&format!(
                "add_header Access-Control-Allow-Headers {} always;",
                quote(&headers.join(", "))
            ));
        }
        if let Some(age) = cors.max_age() {
            w.line(&format!(
                "add_header Access-Control-Max-Age {} always;",
                age.as_secs()
            ));
        }
        w.line("return 204;");
        w.close();
    }
}

/// Whether a route is rate-limited and has CORS (its 429 carries the CORS headers).
fn limited_cors(r: &Route) -> bool {
    r.rate_limit.is_some() && !r.cors.is_empty()
}

/// `80`, `80, 8080`.
fn ports_text(ports: &[u16]) -> String {
    let p: Vec<String> = ports.iter().map(|p| format!("port {p}")).collect();
    p.join(", ")
}

/// A hash table size for `n` keys: a power of two, at least twice `n` and `min`.
fn hash_size(n: usize, min: usize) -> usize {
    (n * 2).next_power_of_two().max(min)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
