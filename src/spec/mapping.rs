//! The `a:b[:c]` forms of the spec: a pod's mount (`volume:/path[:ro]`) and port mapping
//! (`[ip:]host:container[/proto]`), and a route's target (`pod:port`), each read once where
//! the spec is loaded into a [`Parsed`] entry that keeps the text, its span and the outcome
//! (as [`super::units`] does for durations): the checks report a bad entry, the rest of
//! berth reads the parsed value.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{Deserialize, Deserializer};

use super::Sp;
use crate::diag::Span;

/// A pod's entry as written, with its span and the outcome of parsing it.
#[derive(Clone, Debug)]
pub struct Parsed<T: FromEntry> {
    /// The text as written.
    pub value: String,
    pub span: Span,
    parsed: Result<T, T::Error>,
}

/// What a [`Parsed`] entry holds once read: how it is parsed from its text.
pub trait FromEntry: Sized {
    /// Why a text is not such an entry (its `Display` is the message a user reads).
    type Error: std::error::Error + Clone;
    fn from_entry(text: &str) -> Result<Self, Self::Error>;
}

impl<T: FromEntry> Parsed<T> {
    pub fn new(value: String, span: Span) -> Self {
        let parsed = T::from_entry(&value);
        Parsed {
            value,
            span,
            parsed,
        }
    }
}

impl<'de, T: FromEntry> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Sp::<String>::deserialize(d)?;
        Ok(Parsed::new(raw.value, raw.span))
    }
}

/// Written as a string: the schema is a string's, described by the field that holds it.
impl<T: FromEntry> JsonSchema for Parsed<T> {
    fn inline_schema() -> bool {
        String::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        String::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        String::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        String::json_schema(generator)
    }
}

/// A pod's mount, parsed once.
pub type MountEntry = Parsed<MountAt>;
/// A pod's published port, parsed once.
pub type PortEntry = Parsed<PortMapping>;
/// A route's `to`, parsed once.
pub type RouteTargetEntry = Parsed<RouteTarget>;

/// Where the parts of a valid mount lie in its text (a [`Mount`] borrows them from it).
#[derive(Clone, Copy, Debug)]
pub struct MountAt {
    /// The `:` after the source.
    colon: usize,
    /// The end of the target.
    end: usize,
    read_only: bool,
    bind: bool,
}

impl FromEntry for MountAt {
    type Error = MountError;
    fn from_entry(text: &str) -> Result<Self, MountError> {
        let m = Mount::parse(text)?;
        let colon = m.source.len();
        Ok(MountAt {
            colon,
            end: colon + 1 + m.target.len(),
            read_only: m.read_only,
            bind: m.bind,
        })
    }
}

impl Parsed<MountAt> {
    /// The mount, or why its text is not one.
    pub fn get(&self) -> Result<Mount<'_>, &MountError> {
        let at = self.parsed.as_ref()?;
        let part = |r: std::ops::Range<usize>| self.value.get(r).unwrap_or_default();
        Ok(Mount {
            source: part(0..at.colon),
            target: part(at.colon + 1..at.end),
            read_only: at.read_only,
            bind: at.bind,
        })
    }
}

impl FromEntry for PortMapping {
    type Error = PortError;
    fn from_entry(text: &str) -> Result<Self, PortError> {
        PortMapping::parse(text)
    }
}

impl Parsed<PortMapping> {
    /// The port mapping, or why its text is not one.
    pub fn get(&self) -> Result<&PortMapping, &PortError> {
        self.parsed.as_ref()
    }
}

/// Why a text is not a `source:target[:ro|rw]` mount.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("unknown option `{option}` (use `ro` or `rw`)")]
    UnknownOption { option: String },
    #[error("no container path")]
    NoContainerPath,
    #[error("too many `:`")]
    TooManyColons,
    #[error("empty source")]
    EmptySource,
    #[error("container path `{target}` is not absolute")]
    RelativeTarget { target: String },
    #[error(
        "container path `{target}` is the container's root, which the engine never mounts over (mount at a directory such as `/data`)"
    )]
    ContainerRoot { target: String },
}

/// Where the pod of a valid `pod:port` ends in its text, and the port.
#[derive(Clone, Copy, Debug)]
pub struct RouteTarget {
    /// The last `:`.
    colon: usize,
    port: u16,
}

/// Why a route's `to` is not `pod:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteTargetError {
    #[error("no `:` between the pod and its port")]
    NoColon,
    #[error("`{port}` is not a port number")]
    NotAPort { port: String },
}

impl FromEntry for RouteTarget {
    type Error = RouteTargetError;
    fn from_entry(text: &str) -> Result<Self, RouteTargetError> {
        let (pod, port) = text.rsplit_once(':').ok_or(RouteTargetError::NoColon)?;
        let port = port.parse().map_err(|_| RouteTargetError::NotAPort {
            port: port.to_owned(),
        })?;
        Ok(RouteTarget {
            colon: pod.len(),
            port,
        })
    }
}

impl Parsed<RouteTarget> {
    /// The pod and its port, or why the text is not `pod:port`.
    pub fn get(&self) -> Result<(&str, u16), &RouteTargetError> {
        let t = self.parsed.as_ref()?;
        Ok((self.value.get(..t.colon).unwrap_or_default(), t.port))
    }
}

/// A parsed `source:target[:ro|rw]` mount.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount<'a> {
    pub source: &'a str,
    pub target: &'a str,
    pub read_only: bool,
    /// A host path (`/..`, `./..`, `../..`, `~/..`) rather than a named volume.
    pub bind: bool,
}

impl<'a> Mount<'a> {
    fn parse(s: &'a str) -> Result<Mount<'a>, MountError> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            [_, _, opt] => {
                return Err(MountError::UnknownOption {
                    option: (*opt).to_owned(),
                });
            }
            [_] => return Err(MountError::NoContainerPath),
            _ => return Err(MountError::TooManyColons),
        };
        if source.is_empty() {
            return Err(MountError::EmptySource);
        }
        let target_owned = || target.to_owned();
        if !target.starts_with('/') {
            return Err(MountError::RelativeTarget {
                target: target_owned(),
            });
        }
        if target.split('/').all(|c| c.is_empty() || c == ".") {
            return Err(MountError::ContainerRoot {
                target: target_owned(),
            });
        }
        let bind = source.starts_with('/')
            || source.starts_with("./")
            || source.starts_with("../")
            || source.starts_with('~');
        Ok(Mount {
            source,
            target,
            read_only,
            bind,
        })
    }
}

/// Why a text is not a `[ip:]host:container[/proto]` port mapping.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("unknown protocol `{protocol}`")]
    UnknownProtocol { protocol: String },
    #[error("publish as `HOST:CONTAINER`")]
    OnePort,
    #[error("too many `:`")]
    TooManyColons,
    /// `side` is `host` or `container`.
    #[error("{side} port `{text}` is not 1-65535")]
    NotAPort { side: &'static str, text: String },
    #[error("`{ip}` is not an IPv6 address in brackets")]
    NotIpv6InBrackets { ip: String },
    #[error("`{ip}` has an unpaired bracket (write `[::1]:8080:80`)")]
    UnpairedBracket { ip: String },
    #[error("`{ip}` is not an IP address")]
    NotAnIp { ip: String },
}

/// A parsed `[ip:]host:container[/proto]` port mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub ip: String,
    pub host: u16,
    pub container: u16,
    pub protocol: String,
}

impl PortMapping {
    fn parse(s: &str) -> Result<PortMapping, PortError> {
        let (rest, protocol) = match s.rsplit_once('/') {
            Some((r, p @ ("tcp" | "udp"))) => (r, p),
            Some((_, p)) => {
                return Err(PortError::UnknownProtocol {
                    protocol: p.to_owned(),
                });
            }
            None => (s, "tcp"),
        };
        let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c, h] => ("", *h, *c),
            [c, h, ip] => (*ip, *h, *c),
            [_] => return Err(PortError::OnePort),
            _ => return Err(PortError::TooManyColons),
        };
        let port = |p: &str, side: &'static str| -> Result<u16, PortError> {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(PortError::NotAPort {
                    side,
                    text: p.to_owned(),
                }),
                Ok(n) => Ok(n),
            }
        };
        // `[v6]` in brackets (exactly one pair), or a bare address as the engine reads it.
        let ip = match (ip.strip_prefix('['), ip.ends_with(']')) {
            (Some(inner), true) => {
                let inner = &inner[..inner.len() - 1];
                if inner.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(PortError::NotIpv6InBrackets { ip: ip.to_owned() });
                }
                inner
            }
            (None, false) => ip,
            _ => {
                return Err(PortError::UnpairedBracket { ip: ip.to_owned() });
            }
        };
        if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
            return Err(PortError::NotAnIp { ip: ip.to_owned() });
        }
        Ok(PortMapping {
            ip: ip.to_owned(),
            host: port(host, "host")?,
            container: port(container, "container")?,
            protocol: protocol.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts() {
        let m = Mount::parse("db-data:/var/lib/postgresql/data").unwrap();
        assert!(!m.bind && !m.read_only);
        assert!(Mount::parse("./conf:/etc/app:ro").unwrap().bind);
        assert!(Mount::parse("/srv:/srv:ro").unwrap().read_only);
        assert!(Mount::parse("data").is_err());
        assert!(Mount::parse("data:relative").is_err());
        assert!(Mount::parse("data:/x:rx").is_err());
        for root in ["/x:/", "data://", "data:/.", "data:/./"] {
            let e = Mount::parse(root).unwrap_err().to_string();
            assert!(e.contains("the container's root"), "{root}: {e}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(PortMapping::parse("8080:80").unwrap().host, 8080);
        let p = PortMapping::parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (p.ip.as_str(), p.container, p.protocol.as_str()),
            ("127.0.0.1", 80, "udp")
        );
        assert_eq!(PortMapping::parse("[::1]:17002:80").unwrap().ip, "::1");
        assert_eq!(PortMapping::parse("::1:17002:80").unwrap().ip, "::1");
        for bad in [
            "80",
            "0:80",
            "70000:80",
            "x:80",
            "8080:80/sctp",
            "300.1.1.1:1:2",
            "[::1:17002:80",
            "::1]:17002:80",
            "[127.0.0.1]:17002:80",
            "[[::1]]:17002:80",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_are_parsed_once_and_keep_their_text() {
        let m = MountEntry::new("db-data:/var/lib/data:ro".into(), Span::default());
        let mount = m.get().unwrap();
        assert_eq!((mount.source, mount.target), ("db-data", "/var/lib/data"));
        assert!(mount.read_only && !mount.bind);
        assert_eq!(m.get().unwrap(), Mount::parse(&m.value).unwrap());
        let bad = MountEntry::new("data:relative".into(), Span::default());
        assert_eq!(
            bad.get().unwrap_err(),
            &Mount::parse("data:relative").unwrap_err()
        );
        let p = PortEntry::new("127.0.0.1:8080:80".into(), Span::default());
        assert_eq!(
            p.get().unwrap(),
            &PortMapping::parse("127.0.0.1:8080:80").unwrap()
        );
        assert!(PortEntry::new("80".into(), Span::default()).get().is_err());
    }

    #[test]
    fn route_targets_split_at_the_last_colon() {
        let t = |s: &str| RouteTargetEntry::new(s.into(), Span::default());
        assert_eq!(t("api:8000").get(), Ok(("api", 8000)));
        assert_eq!(t(":80").get(), Ok(("", 80)));
        assert_eq!(t("api").get(), Err(&RouteTargetError::NoColon));
        assert_eq!(
            t("api:http").get().unwrap_err().to_string(),
            "`http` is not a port number"
        );
        assert!(t("api:70000").get().is_err());
    }
}
