//! How berth reaches a remote engine, as bollard's custom transports:
//! - `tcp://HOST:PORT` with TLS client authentication: rustls trusting only the region's
//!   CA (not the system's roots, as `docker --tlsverify --tlscacert` does), the client
//!   certificate and key held in memory (the key never written anywhere);
//! - `ssh://[USER@]HOST[:PORT]`: the system's `ssh` running `docker system dial-stdio` on
//!   the far side, one process per connection, as the docker CLI does. The user's ssh
//!   config, agent, keys and `known_hosts` apply; `BatchMode=yes` (berth never prompts). The
//!   port and user of the address are passed as `-p` and `-l`. When ssh fails, its own
//!   message (host key, authentication, `docker: command not found`) is the error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bollard::{BollardRequest, ClientVersion, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use zeroize::Zeroizing;

/// A TLS client's files, read: the CA that signs the engine's certificate, the client
/// certificate (chain) and its private key, all PEM.
pub struct TlsMaterial {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Zeroizing<Vec<u8>>,
}

/// How berth makes clients of one engine: one per API version, all sharing their
/// connections, their requests' errors carrying their causes' text; and the API version
/// the engine says it speaks (the `Api-Version` header of its answers).
pub struct Clients {
    make: Box<MakeClient>,
    api: Arc<Mutex<Said>>,
}

/// What the engine's answers said of it.
#[derive(Default)]
struct Said {
    /// `Api-Version`.
    api: Option<String>,
    /// `Libpod-Api-Version` (a Podman engine).
    podman: bool,
}

/// Makes a client of one engine in the API version asked for.
type MakeClient = dyn Fn(&ClientVersion) -> Result<Docker, String> + Send + Sync;

impl Clients {
    /// A client sending requests in API `version`.
    pub fn client(&self, version: &ClientVersion) -> Result<Docker, String> {
        (self.make)(version)
    }

    /// The API version the engine's latest answer said it speaks.
    pub fn engine_api(&self) -> Option<String> {
        self.api.lock().ok().and_then(|a| a.api.clone())
    }

    /// Whether an answer said it is Podman's API (`Libpod-Api-Version`).
    pub fn is_podman(&self) -> bool {
        self.api.lock().is_ok_and(|a| a.podman)
    }
}

/// Clients over `connector`, keeping idle connections for reuse or not (`pool`).
fn custom<C>(connector: C, addr: &str, timeout: u64, pool: bool) -> Clients
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let mut builder = Client::builder(TokioExecutor::new());
    match pool {
        true => builder.pool_idle_timeout(std::time::Duration::from_secs(30)),
        false => builder.pool_max_idle_per_host(0),
    };
    let client = Arc::new(builder.build(connector));
    let api: Arc<Mutex<Said>> = Arc::default();
    let said = Arc::clone(&api);
    let addr = addr.to_owned();
    let make = move |version: &ClientVersion| {
        let (client, said) = (Arc::clone(&client), Arc::clone(&said));
        Docker::connect_with_custom_transport(
            move |req: BollardRequest| {
                let (client, said) = (Arc::clone(&client), Arc::clone(&said));
                async move {
                    let res = client.request(req).await.map_err(flatten)?;
                    let headers = res.headers();
                    if let Some(v) = headers.get("api-version").and_then(|v| v.to_str().ok())
                        && let Ok(mut said) = said.lock()
                    {
                        said.api = Some(v.to_owned());
                        said.podman |= headers.contains_key("libpod-api-version");
                    }
                    Ok(res)
                }
            },
            Some(&addr),
            timeout,
            version,
        )
        .map_err(|e| e.to_string())
    };
    Clients {
        make: Box::new(make),
        api,
    }
}

/// Clients of the engine at `unix:///PATH`, a new connection per request (as bollard's
/// own: a connection an attach or exec took over is never reused).
pub fn unix(endpoint: &str, timeout: u64) -> Result<Clients, String> {
    let path = endpoint.trim_start_matches("unix://");
    if path.is_empty() {
        return Err("no socket path after unix://".to_owned());
    }
    let connector = UnixConnector {
        path: std::path::PathBuf::from(path),
    };
    Ok(custom(connector, "http://engine", timeout, false))
}

/// Clients of the engine at `tcp://HOST[:PORT]` (or `http://`) without TLS; with no port
/// given, 2375 (the docker CLI's).
pub fn http(endpoint: &str, timeout: u64) -> Result<Clients, String> {
    let rest = endpoint.trim_start_matches("http://");
    let addr = format!("http://{}", with_default_port(rest, 2375));
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(std::time::Duration::from_secs(30)));
    Ok(custom(http, &addr, timeout, false))
}

/// Opens connections to an engine's unix socket.
#[derive(Clone)]
struct UnixConnector {
    path: std::path::PathBuf,
}

impl tower_service::Service<hyper::Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) })
    }
}

/// A client error as one line: its message and its causes', innermost last (hyper's own
/// "client error (Connect)" says little; the cause says what happened).
fn flatten(e: hyper_util::client::legacy::Error) -> bollard::errors::Error {
    let mut parts = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    bollard::errors::Error::IOError {
        err: io::Error::other(parts.join(": ")),
    }
}

/// Clients of the engine at `tcp://HOST:PORT` over TLS, trusting `material.ca` only.
pub fn tls(endpoint: &str, material: &TlsMaterial, timeout: u64) -> Result<Clients, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&material.ca) {
        let cert = cert.map_err(|e| format!("the CA file is not PEM certificates: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no certificate".to_owned());
    }
    let chain = CertificateDer::pem_slice_iter(&material.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the client certificate file is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("the client certificate file holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key)
        .map_err(|_| "the client key is not a PEM private key".to_owned())?;
    // ring rather than aws-lc-rs (which builds C with cmake): rustls 0.23.48 marks its
    // provider deprecated for lacking post-quantum key exchange, which the engine's Go TLS
    // does not need; its suites and X25519/P-256/P-384 are what dockerd offers.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the client certificate and key do not go together: {e}"))?;
    // A host that does not answer is given up after 30 s (as ssh's ConnectTimeout), not
    // after the system's TCP timeout.
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let addr = format!("https://{}", with_default_port(endpoint, 2376));
    Ok(custom(https, &addr, timeout, true))
}

/// `tcp://HOST[:PORT]` as `HOST:PORT`, the port `default` when none is given (the docker
/// CLI's: 2376 with TLS, 2375 without).
pub fn with_default_port(endpoint: &str, default: u16) -> String {
    let rest = endpoint.trim_start_matches("tcp://").trim_end_matches('/');
    let has_port = match rest.rsplit_once(':') {
        // `[::1]:2376` has one, `[::1]` has not.
        Some((host, port)) => !port.is_empty() && !port.contains(']') && !host.is_empty(),
        None => false,
    };
    if has_port {
        rest.to_owned()
    } else {
        format!("{rest}:{default}")
    }
}

/// Whether `host` (of a `tcp://` address) is this machine: a loopback name or address.
pub fn is_loopback_host(endpoint: &str) -> bool {
    let rest = endpoint.trim_start_matches("tcp://");
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split([':', '/']).next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// The bridge of this machine whose directly attached subnet holds `ip` (the networks of
/// an engine on this machine are such bridges), from the routing table `routes` (the text
/// of `/proc/net/route`) and whether an interface is a bridge.
pub fn local_bridge_of(
    ip: std::net::Ipv4Addr,
    routes: &str,
    is_bridge: impl Fn(&str) -> bool,
) -> Option<String> {
    // The file prints each address as the kernel holds it (network byte order) read as a
    // number of this machine's order: its bytes in memory are the address's.
    let hex = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|n| u32::from_be_bytes(n.to_ne_bytes()))
    };
    for line in routes.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dest), Some(gateway), Some(mask)) = (hex(f[1]), hex(f[2]), hex(f[7])) else {
            continue;
        };
        if mask == 0 || gateway != 0 {
            continue; // the default route, or one through a router
        }
        if u32::from(ip) & mask == dest & mask && is_bridge(f[0]) {
            return Some(f[0].to_owned());
        }
    }
    None
}

/// The parts of `ssh://[USER@]HOST[:PORT]`: (user, host, port). A host in brackets is an
/// IPv6 address (`ssh://[::1]:2222`).
pub fn ssh_parts(endpoint: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let rest = endpoint.strip_prefix("ssh://")?.trim_end_matches('/');
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
        Some(_) => return None,
        None => (None, rest),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p.parse().ok()?)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p.parse().ok()?)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.starts_with('-') || host.contains('/') {
        return None;
    }
    Some((user, host.to_owned(), port))
}

/// Clients of the engine at `ssh://...` through the system's ssh.
pub fn ssh(endpoint: &str, timeout: u64) -> Result<Clients, String> {
    let (user, host, port) =
        ssh_parts(endpoint).ok_or_else(|| "not an ssh://[USER@]HOST[:PORT] address".to_owned())?;
    let connector = SshConnector {
        user,
        host,
        port,
        shown: endpoint.to_owned(),
    };
    Ok(custom(connector, "http://engine", timeout, true))
}

/// Opens connections to an engine over ssh: each an `ssh ... docker system dial-stdio`.
#[derive(Clone)]
struct SshConnector {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    shown: String,
}

type Exit = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// One connection: the ssh process's stdin and stdout, and what it said when it ended.
pub struct SshIo {
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    /// Resolves when the process has ended: `Some(why)` when it failed.
    exit: Exit,
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = TokioIo<SshIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<SshIo>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { me.open() })
    }
}

/// A TCP connection to `ip:port` as the far side of `ssh://...` sees it (`ssh -W`): how
/// berth's health gates and checks reach a container on an engine of another machine.
pub fn ssh_forward(endpoint: &str, ip: &str, port: u16) -> io::Result<SshIo> {
    let (user, host, ssh_port) = ssh_parts(endpoint)
        .ok_or_else(|| io::Error::other("not an ssh://[USER@]HOST[:PORT] address"))?;
    let connector = SshConnector {
        user,
        host,
        port: ssh_port,
        shown: endpoint.to_owned(),
    };
    connector.spawn(Some(&format!("{ip}:{port}")))
}

impl SshConnector {
    fn open(&self) -> io::Result<TokioIo<SshIo>> {
        self.spawn(None).map(TokioIo::new)
    }

    /// `ssh ... HOST docker system dial-stdio`, or with `forward`, `ssh -W forward ... HOST`.
    fn spawn(&self, forward: Option<&str>) -> io::Result<SshIo> {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30"]);
        if let Some(user) = &self.user {
            cmd.arg("-l").arg(user);
        }
        if let Some(port) = self.port {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(to) = forward {
            cmd.arg("-W").arg(to);
        }
        cmd.arg("--").arg(&self.host);
        if forward.is_none() {
            cmd.args(["docker", "system", "dial-stdio"]);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::other(format!("cannot run `ssh`: {e}")))?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(io::Error::other("ssh started without its pipes"));
        };
        // What ssh (or the far side) says, kept for the error if it ends badly.
        let said = Arc::new(Mutex::new(String::new()));
        let said_by = Arc::clone(&said);
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf).await;
            if let Ok(mut s) = said_by.lock() {
                *s = String::from_utf8_lossy(&buf).trim().to_owned();
            }
        });
        let shown = self.shown.clone();
        let exit: Exit = Box::pin(async move {
            let status = child.wait().await;
            let _ = reader.await;
            let said = said.lock().map(|s| s.clone()).unwrap_or_default();
            match status {
                Ok(s) if s.success() => None,
                Ok(s) => Some(ssh_failure(&shown, s.code(), &said)),
                Err(e) => Some(format!("ssh to {shown}: {e}")),
            }
        });
        Ok(SshIo {
            stdin,
            stdout,
            exit,
        })
    }
}

/// Why an ssh connection ended, in ssh's words (its last lines) and the exit status.
fn ssh_failure(shown: &str, code: Option<i32>, said: &str) -> String {
    let said: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = said[said.len().saturating_sub(3)..].join(" ");
    let code = code.map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"));
    if tail.is_empty() {
        format!("ssh to {shown} ended with {code}")
    } else {
        format!("ssh to {shown} ended with {code}: {tail}")
    }
}

impl Connection for SshIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for SshIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stdout).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                // The end of the stream: say why if ssh failed.
                match self.exit.as_mut().poll(cx) {
                    Poll::Ready(Some(why)) => Poll::Ready(Err(io::Error::other(why))),
                    Poll::Ready(None) => Poll::Ready(Ok(())),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for SshIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stdin).poll_write(cx, buf) {
            // ssh ended before taking the request: say why.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                match self.exit.as_mut().poll(cx) {
                    Poll::Ready(Some(why)) => Poll::Ready(Err(io::Error::other(why))),
                    Poll::Ready(None) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_address_without_a_port_is_docker_s_2376() {
        assert_eq!(
            with_default_port("tcp://fra-1.example.net", 2376),
            "fra-1.example.net:2376"
        );
        assert_eq!(
            with_default_port("tcp://10.0.0.5:3376", 2376),
            "10.0.0.5:3376"
        );
        assert_eq!(with_default_port("tcp://[::1]", 2376), "[::1]:2376");
        assert_eq!(with_default_port("tcp://[::1]:9", 2376), "[::1]:9");
        assert!(is_loopback_host("tcp://127.0.0.1:2376"));
        assert!(is_loopback_host("tcp://localhost"));
        assert!(is_loopback_host("tcp://[::1]:2376"));
        assert!(!is_loopback_host("tcp://fra-1.example.net:2376"));
        assert!(!is_loopback_host("tcp://10.0.0.5:2376"));
    }

    #[test]
    fn an_address_on_a_bridge_of_this_machine_is_found_in_the_routing_table() {
        // docker0 172.17.0.0/16, br-1 172.18.0.0/16, a VPN 10.20.0.0/16 on wg0, the default
        // route through 192.168.1.1 on eth0.
        let routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
br-1\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
wg0\t0000140A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let bridge = |i: &str| i == "docker0" || i.starts_with("br-");
        let of = |ip: &str| local_bridge_of(ip.parse().unwrap(), routes, bridge);
        assert_eq!(of("172.18.0.2").as_deref(), Some("br-1"));
        assert_eq!(of("172.17.0.9").as_deref(), Some("docker0"));
        assert_eq!(of("10.20.0.7"), None, "a routed VPN is not a local bridge");
        assert_eq!(of("172.19.0.2"), None);
        assert_eq!(
            of("8.8.8.8"),
            None,
            "the default route is not a local network"
        );
    }

    #[test]
    fn ssh_addresses_keep_user_host_and_port() {
        let p = |s: &str| ssh_parts(s);
        assert_eq!(
            p("ssh://deploy@ord-1.example.net:2222"),
            Some((
                Some("deploy".into()),
                "ord-1.example.net".into(),
                Some(2222)
            ))
        );
        assert_eq!(p("ssh://ord-1"), Some((None, "ord-1".into(), None)));
        assert_eq!(
            p("ssh://root@[::1]:22"),
            Some((Some("root".into()), "::1".into(), Some(22)))
        );
        assert_eq!(p("ssh://@host"), None);
        assert_eq!(p("ssh://host:notaport"), None);
        assert_eq!(p("ssh://-oProxyCommand=x"), None);
        assert_eq!(p("tcp://host:2376"), None);
    }

    #[test]
    fn an_ssh_failure_is_said_in_ssh_s_words() {
        let why = ssh_failure(
            "ssh://u@h",
            Some(255),
            "Warning: something\nHost key verification failed.\n",
        );
        assert!(why.contains("status 255"), "{why}");
        assert!(why.contains("Host key verification failed."), "{why}");
    }
}
