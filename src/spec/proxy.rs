//! The spec of the managed proxy: its rate limits, listeners, TLS, headers, real-IP trust
//! and routes (with their CORS policies). `crate::proxy` renders them as an nginx config.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Duration, EnvValue, NamedMap, RateUnit, RouteTargetEntry, Sp};

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// `N/s` or `N/min`.
    pub rate: RateUnit,
    /// Requests allowed above the rate before refusing (default 0).
    #[serde(default)]
    pub burst: u32,
    /// What requests are counted by: the client address (default), or a request header
    /// (`{ header: X-Api-Key }`; requests without it are counted by client address).
    #[serde(default)]
    pub key: Option<RateKey>,
}

impl RateLimit {
    /// The request header requests are counted by, if not the client address.
    pub fn key_header(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.header.value.as_str())
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateKey {
    /// A request header name, e.g. `X-Api-Key`.
    pub header: Sp<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// nginx image to run.
    pub image: Sp<String>,
    /// Host ports the proxy listens on.
    #[serde(default = "default_listen")]
    pub listen: Vec<u16>,
    #[serde(default)]
    pub security_headers: Option<SecurityHeaders>,
    /// Response headers to add, or to override those of `security_headers` (an empty value
    /// removes one of them). nginx variables (`$request_id`) in a value are expanded.
    #[serde(default)]
    pub headers: NamedMap<Sp<EnvValue>>,
    /// TLS termination, per listen port: certificate and key are secrets of the spec.
    #[serde(default)]
    pub tls: Vec<Sp<ProxyTls>>,
    /// Plain (non-TLS) listeners answer `301` to `https://` (needs a `tls` listener).
    #[serde(default)]
    pub redirect_http: Option<Sp<bool>>,
    /// The client address from a header set by a load balancer in front of the proxy.
    #[serde(default)]
    pub real_ip: Option<Sp<RealIp>>,
    #[serde(default)]
    pub routes: Vec<Sp<Route>>,
}

fn default_listen() -> Vec<u16> {
    vec![80]
}

impl Proxy {
    pub fn redirect_http(&self) -> bool {
        self.redirect_http.as_ref().is_some_and(|r| r.value)
    }

    /// The secrets the TLS listeners name (certificates and keys), sorted, each once.
    pub fn tls_secrets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .tls
            .iter()
            .flat_map(|t| [t.value.cert.value.as_str(), t.value.key.value.as_str()])
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The TLS settings of listen port `port`, if it terminates TLS.
    pub fn tls_of(&self, port: u16) -> Option<&ProxyTls> {
        self.tls
            .iter()
            .map(|t| &t.value)
            .find(|t| t.port.value == port)
    }
}

/// A TLS listener: the port (one of `listen`) and the secrets holding its certificate chain
/// (PEM, leaf first) and private key (PEM).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyTls {
    /// A port of `listen`, e.g. `443`.
    pub port: Sp<u16>,
    /// The secret holding the certificate chain.
    pub cert: Sp<String>,
    /// The secret holding the private key.
    pub key: Sp<String>,
}

/// Trust a client address header from these peers only.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RealIp {
    /// The header holding the client address (default `X-Forwarded-For`).
    #[serde(default)]
    pub header: Option<Sp<String>>,
    /// Addresses or CIDR ranges of the load balancers whose header is believed, e.g.
    /// `10.0.0.0/8`; at least one.
    pub trust: Vec<Sp<String>>,
}

impl RealIp {
    pub fn header(&self) -> &str {
        self.header
            .as_ref()
            .map_or("X-Forwarded-For", |h| h.value.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecurityHeaders {
    /// HSTS (on TLS listeners), nosniff, frame-deny, referrer policy, a restrictive CSP, a
    /// permissions policy.
    Strict,
    /// nosniff, frame-deny, referrer policy.
    Basic,
    Off,
}

impl SecurityHeaders {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityHeaders::Strict => "strict",
            SecurityHeaders::Basic => "basic",
            SecurityHeaders::Off => "off",
        }
    }
}

/// Requests matching `host` and `path` go to a pod's port.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub host: Option<Sp<String>>,
    /// Path prefix (default `/`).
    #[serde(default)]
    pub path: Option<Sp<String>>,
    /// `pod:port`.
    pub to: RouteTargetEntry,
    #[serde(default)]
    pub rate_limit: Option<Sp<String>>,
    /// CORS: the allowed origins, or a policy with origins, methods, headers, credentials
    /// and max age.
    #[serde(default)]
    pub cors: Cors,
}

impl Route {
    pub fn path(&self) -> &str {
        self.path.as_ref().map_or("/", |p| p.value.as_str())
    }
    /// `host/path` as the route's identity, `*` for any host.
    pub fn key(&self) -> String {
        let host = self.host.as_ref().map_or("*", |h| h.value.as_str());
        format!("{host}{}", self.path())
    }
    /// `to`'s pod and port, if well-formed (parsed once, at load).
    pub fn target(&self) -> Option<(&str, u16)> {
        self.to.get().ok()
    }
}

/// A route's CORS policy: a list of origins, or the full form.
#[derive(Clone, Debug, JsonSchema)]
#[serde(untagged)]
pub enum Cors {
    /// Allowed origins (`https://shop.example`, or `*`), with the default methods and the
    /// request's headers allowed.
    Origins(Vec<Sp<String>>),
    Policy(CorsPolicy),
}

impl Default for Cors {
    fn default() -> Self {
        Cors::Origins(Vec::new())
    }
}

#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    /// Allowed origins (`https://shop.example`, or `*`).
    pub origins: Vec<Sp<String>>,
    /// Allowed methods (default `GET, HEAD, POST, PUT, PATCH, DELETE`).
    #[serde(default)]
    pub methods: Vec<Sp<String>>,
    /// Allowed request headers (default: those the preflight asks for).
    #[serde(default)]
    pub headers: Vec<Sp<String>>,
    /// Allow credentials (cookies, `Authorization`); not with origin `*`.
    #[serde(default)]
    pub credentials: Option<Sp<bool>>,
    /// How long a browser may cache a preflight answer, e.g. `10m`.
    #[serde(default)]
    pub max_age: Option<Duration>,
}

/// The methods a CORS policy allows when it names none.
pub const DEFAULT_CORS_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

impl Cors {
    pub fn origins(&self) -> &[Sp<String>] {
        match self {
            Cors::Origins(o) => o,
            Cors::Policy(p) => &p.origins,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.origins().is_empty()
    }
    /// The full form (the list form is a policy with defaults).
    pub fn policy(&self) -> Option<&CorsPolicy> {
        match self {
            Cors::Origins(_) => None,
            Cors::Policy(p) => Some(p),
        }
    }
    pub fn methods(&self) -> Vec<&str> {
        match self.policy().map(|p| &p.methods) {
            Some(m) if !m.is_empty() => m.iter().map(|m| m.value.as_str()).collect(),
            _ => DEFAULT_CORS_METHODS.to_vec(),
        }
    }
    /// The allowed request headers; empty: those the preflight asks for.
    pub fn headers(&self) -> Vec<&str> {
        self.policy()
            .map(|p| p.headers.iter().map(|h| h.value.as_str()).collect())
            .unwrap_or_default()
    }
    pub fn credentials(&self) -> bool {
        self.policy()
            .and_then(|p| p.credentials.as_ref())
            .is_some_and(|c| c.value)
    }
    pub fn max_age(&self) -> Option<std::time::Duration> {
        self.policy()
            .and_then(|p| p.max_age.as_ref())
            .and_then(|m| m.get())
    }
}

impl<'a> IntoIterator for &'a Cors {
    type Item = &'a Sp<String>;
    type IntoIter = std::slice::Iter<'a, Sp<String>>;
    /// The origins.
    fn into_iter(self) -> Self::IntoIter {
        self.origins().iter()
    }
}

// By hand rather than `untagged`, so that values keep their spans and a mistake inside the
// mapping form is reported as that mistake rather than "matched no variant".
impl<'de> Deserialize<'de> for Cors {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cors;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of origins, or a mapping with `origins`")
            }
            fn visit_unit<E>(self) -> Result<Cors, E> {
                Ok(Cors::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<Cors, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(s)).map(Cors::Origins)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Cors, A::Error> {
                CorsPolicy::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(Cors::Policy)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::{Cors, load_str};

    fn load(yaml: &str) -> crate::spec::Spec {
        let loaded = load_str(std::path::Path::new("t.yaml"), yaml.to_owned());
        assert!(!loaded.report.has_errors(), "{:?}", loaded.report);
        loaded.spec.unwrap()
    }

    #[test]
    fn cors_takes_a_list_or_a_policy_and_keeps_spans() {
        let text = "version: 1\nproject: shop\npods:\n  api: { image: a:1 }\nproxy:\n  image: n:1\n  routes:\n\
                    \x20   - { path: /a, to: api:80, cors: [https://a.example] }\n\
                    \x20   - { path: /b, to: api:80, cors: { origins: [https://b.example], methods: [GET], credentials: true, max_age: 1m } }\n\
                    \x20   - { path: /c, to: api:80 }\n";
        let spec = load(text);
        let routes = &spec.proxy.as_ref().unwrap().routes;
        let a = &routes[0].value.cors;
        assert!(matches!(a, Cors::Origins(_)));
        let origin = &a.origins()[0];
        assert_eq!(
            &text[origin.span.offset()..][..origin.value.len()],
            "https://a.example"
        );
        assert_eq!(a.methods(), super::DEFAULT_CORS_METHODS);
        assert!(!a.credentials());
        let b = &routes[1].value.cors;
        assert_eq!(b.origins()[0].value, "https://b.example");
        assert_eq!(b.methods(), ["GET"]);
        assert!(b.credentials());
        assert_eq!(b.max_age(), Some(std::time::Duration::from_secs(60)));
        assert!(routes[2].value.cors.is_empty());
        // The form the lint reads: the origins.
        assert_eq!((&routes[1].value.cors).into_iter().count(), 1);
    }

    #[test]
    fn drain_defaults_to_ten_seconds() {
        let spec = load(
            "version: 1\nproject: shop\npods:\n  a: { image: a:1 }\n\
             \x20 b: { image: b:1, update: { strategy: blue-green, drain: 1m30s } }\n",
        );
        assert_eq!(
            spec.pods.get("a").unwrap().drain(),
            crate::spec::DEFAULT_DRAIN
        );
        assert_eq!(
            spec.pods.get("b").unwrap().drain(),
            std::time::Duration::from_secs(90)
        );
    }
}
