//! The Proxmox VE REST client: authentication, TLS trust, the wire format
//! (form bodies, `{"data": …}` envelopes, reason-phrase errors), retries of the
//! transient failures, and task polling.
//!
//! The endpoint is resolved through the `AddressBook`, so the lab can point the
//! profile's `https://10.8.16.10:8006` at a loopback listener.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

use super::error::{PveError, TransportKind};
use super::pace::DownloadPace;
use super::upid::{Upid, exit_ok};
use crate::net::AddressBook;
use crate::tls::{Pin, PinnedVerifier, parse_fingerprint};

/// How the client proves who it is.
#[derive(Clone)]
pub enum Credentials {
    /// `USER@REALM!TOKENID` and its secret.
    Token { id: String, secret: SecretString },
    /// Ticket login (`/access/ticket`), the fallback without a token.
    Password {
        user: String,
        password: SecretString,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token { id, .. } => write!(f, "Token({id}, secret: [redacted])"),
            Credentials::Password { user, .. } => write!(f, "Password({user}, [redacted])"),
        }
    }
}

impl Credentials {
    /// Parse `USER@REALM!TOKENID=SECRET`; `origin` names where it came from, for errors.
    pub fn parse_token(s: &str, origin: &str) -> Result<Credentials, PveError> {
        let bad = || PveError::BadToken {
            origin: origin.into(),
        };
        let (id, secret) = s.trim().split_once('=').ok_or_else(bad)?;
        let (user, token) = id.split_once('!').ok_or_else(bad)?;
        if !user.contains('@') || token.is_empty() || secret.is_empty() {
            return Err(bad());
        }
        Ok(Credentials::Token {
            id: id.into(),
            secret: SecretString::from(secret.to_owned()),
        })
    }

    pub fn principal(&self) -> &str {
        match self {
            Credentials::Token { id, .. } => id,
            Credentials::Password { user, .. } => user,
        }
    }
}

/// Whom to trust for the server certificate.
#[derive(Debug, Clone, PartialEq)]
pub enum Trust {
    /// Normal certificate verification (a CA-signed or cluster-CA-trusted host).
    Verify,
    /// Pin the end-entity SHA-256 (`AA:BB:…`).
    Fingerprint(String),
    /// Verify against this CA (PEM), e.g. the cluster's `pve-root-ca.pem`, which
    /// signed every node's default certificate.
    Ca(String),
    /// Accept any certificate (`--insecure`): warned about loudly.
    Insecure,
}

/// Retries of transient errors: `attempts` tries in all, backing off from `base` to `cap`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

/// Task polling: first wait `first`, doubling each poll up to `max` (downloads,
/// which take seconds to minutes, are paced by their progress: `pace`). Quick tasks cost one or
/// two polls; long ones stay well under one poll per second.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(8),
        }
    }
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(250),
            max: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoint: String,
    /// More endpoints of the same joined cluster, tried in order when the ones
    /// before do not answer.
    pub fallback_endpoints: Vec<String>,
    pub credentials: Credentials,
    pub trust: Trust,
    /// Standalone hosts, each its own PVE: when not empty, a call about a node
    /// goes to that host's API, and `endpoint` is the first host's.
    pub standalone: Vec<HostApi>,
    /// Per-request timeout; ≥ 30 s since a create with large disks blocks.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub poll: PollPolicy,
}

impl ClientConfig {
    pub fn new(endpoint: &str, credentials: Credentials, trust: Trust) -> Self {
        Self {
            endpoint: endpoint.into(),
            fallback_endpoints: Vec::new(),
            credentials,
            trust,
            standalone: Vec::new(),
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            poll: PollPolicy::default(),
        }
    }
}

/// One standalone host: its node name and its own API, trust and credentials
/// (a standalone host has its own users, CA and VMID space).
#[derive(Debug, Clone)]
pub struct HostApi {
    pub node: String,
    pub endpoint: String,
    pub credentials: Credentials,
    pub trust: Trust,
}

struct Ticket {
    cookie: HeaderValue,
    csrf: HeaderValue,
    obtained: Instant,
}

enum Auth {
    Token(HeaderValue),
    Password {
        user: String,
        password: SecretString,
        ticket: Mutex<Option<Ticket>>,
    },
}

/// A task's final state.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    pub upid: String,
    pub exitstatus: String,
}

/// One PVE API: a joined cluster (one or more endpoints) or one standalone host.
struct Site {
    http: reqwest::Client,
    /// Dialable `https://…/api2/json`, in the order of `endpoints`.
    bases: Vec<String>,
    /// As configured, for messages.
    endpoints: Vec<String>,
    /// The endpoint that answered last: failover moves it on, and it stays there.
    active: AtomicUsize,
    /// Who calls: `USER@REALM!TOKENID` or the ticket user (no secret).
    identity: String,
    auth: Auth,
}

impl Site {
    fn new(
        endpoints: Vec<String>,
        credentials: Credentials,
        trust: &Trust,
        timeout: Duration,
        book: &AddressBook,
    ) -> Result<Site, PveError> {
        let bases = endpoints
            .iter()
            .map(|e| base_url(e, book))
            .collect::<Result<_, _>>()?;
        let identity = credentials.principal().to_owned();
        let auth = match credentials {
            Credentials::Token { id, secret } => Auth::Token(sensitive(format!(
                "PVEAPIToken={id}={}",
                secret.expose_secret()
            ))?),
            Credentials::Password { user, password } => Auth::Password {
                user,
                password,
                ticket: Mutex::new(None),
            },
        };
        Ok(Site {
            http: http_client(trust, timeout)?,
            bases,
            endpoints,
            active: AtomicUsize::new(0),
            identity,
            auth,
        })
    }
}

/// Where a call goes.
#[derive(Debug, PartialEq)]
enum Route {
    One(usize),
    /// Every standalone host, answers (lists) concatenated.
    All,
}

#[derive(Clone)]
pub struct Client {
    /// One site for a joined cluster, one per host for standalone hosts.
    sites: Arc<Vec<Site>>,
    /// Standalone hosts: the encoded node name → its site. Empty for a cluster.
    by_node: Arc<BTreeMap<String, usize>>,
    /// Every call goes to this site (`host_view`).
    pinned: Option<usize>,
    retry: RetryPolicy,
    poll: PollPolicy,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field(
                "endpoints",
                &self.sites.iter().map(|s| &s.endpoints).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// `https://host[:port]` → `https://<dialable authority>` after the address book.
pub fn resolve_origin(
    url: &str,
    book: &AddressBook,
    default_port: u16,
) -> Result<String, PveError> {
    resolve_scheme_origin("https", url, book, default_port)
}

/// `resolve_origin` for a `scheme` other than https (a plain-http Image Factory).
pub fn resolve_scheme_origin(
    scheme: &str,
    url: &str,
    book: &AddressBook,
    default_port: u16,
) -> Result<String, PveError> {
    let bad = || PveError::BadEndpoint(url.into());
    let rest = url
        .trim_end_matches('/')
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(bad)?;
    let authority = rest.split('/').next().ok_or_else(bad)?;
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
    // `[v6]` or `[v6]:port` (RFC 3986 §3.2.2), else `host` or `host:port`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']').ok_or_else(bad)? {
            (h, "") => (h, default_port),
            (h, after) => (h, port(after.strip_prefix(':').ok_or_else(bad)?)?),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, port(p)?),
            None => (authority, default_port),
        },
    };
    if host.is_empty() {
        return Err(bad());
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => {
            let to =
                book.resolve(SocketAddr::new(ip, port))
                    .map_err(|source| PveError::Resolve {
                        endpoint: url.into(),
                        source,
                    })?;
            Ok(format!("{scheme}://{to}"))
        }
        Err(_) if book.is_lab() => Err(PveError::BadEndpoint(format!(
            "{url} (the lab maps IP addresses only)"
        ))),
        Err(_) => {
            if std::env::var(crate::net::LOOPBACK_ONLY_ENV).is_ok_and(|v| v == "1")
                && host != "localhost"
            {
                return Err(PveError::BadEndpoint(format!(
                    "{url} ({} is set: loopback only)",
                    crate::net::LOOPBACK_ONLY_ENV
                )));
            }
            Ok(format!("{scheme}://{host}:{port}"))
        }
    }
}

fn base_url(endpoint: &str, book: &AddressBook) -> Result<String, PveError> {
    Ok(format!(
        "{}/api2/json",
        resolve_origin(endpoint, book, 8006)?
    ))
}

/// An HTTPS client trusting what `trust` says; shared with the Image Factory client.
pub fn http_client(trust: &Trust, timeout: Duration) -> Result<reqwest::Client, PveError> {
    crate::tls::install_provider();
    let b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("talos-pve/", env!("CARGO_PKG_VERSION")));
    let pin = match trust {
        Trust::Verify => None,
        Trust::Ca(pem) => {
            let roots = crate::tls::roots_from_pem(pem).map_err(PveError::Tls)?;
            let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| PveError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            return b
                .tls_backend_preconfigured(cfg)
                .build()
                .map_err(|e| PveError::Tls(e.to_string()));
        }
        Trust::Fingerprint(f) => Some(Pin::Sha256(
            parse_fingerprint(f).ok_or_else(|| PveError::BadFingerprint(f.clone()))?,
        )),
        Trust::Insecure => {
            tracing::warn!(
                "TLS verification of the Proxmox API is OFF (--insecure): anyone on the path can read the API token; pin the fingerprint instead"
            );
            Some(Pin::Any)
        }
    };
    let b = match pin {
        None => b,
        Some(pin) => {
            let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| PveError::Tls(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(PinnedVerifier::new(pin))
                .with_no_client_auth();
            b.tls_backend_preconfigured(cfg)
        }
    };
    b.build().map_err(|e| PveError::Tls(e.to_string()))
}

fn sensitive(v: String) -> Result<HeaderValue, PveError> {
    let mut h = HeaderValue::from_str(&v).map_err(|_| {
        PveError::Tls("credentials contain characters not allowed in a header".into())
    })?;
    h.set_sensitive(true);
    Ok(h)
}

/// An API path below `/api2/json` from its segments, each percent-encoded (only
/// RFC 3986 unreserved bytes stay as they are), so a profile value can never add a
/// segment or a query. `/`, `.`, `..` and empty segments are refused rather than
/// encoded: servers that decode the path before routing (the lab does, as URL
/// normalisation does for `%2E%2E`) would still see a separator or a step up.
pub fn api_path(segments: &[&dyn fmt::Display]) -> Result<String, PveError> {
    let mut path = String::new();
    for seg in segments {
        let seg = seg.to_string();
        let why = match seg.as_str() {
            "" => Some("it is empty"),
            "." | ".." => Some("it would step through the path"),
            s if s.contains('/') => Some("it contains `/`"),
            _ => None,
        };
        if let Some(why) = why {
            return Err(PveError::PathSegment {
                segment: seg.escape_debug().to_string(),
                why,
            });
        }
        path.push('/');
        path.push_str(&encode_segment(&seg));
    }
    Ok(path)
}

/// Percent-encode all but the RFC 3986 unreserved bytes.
fn encode_segment(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/nodes/{node}`, encoded; callers append constant tails.
pub fn node_path(node: &str) -> Result<String, PveError> {
    api_path(&[&"nodes", &node])
}

/// `/nodes/{node}/qemu/{vmid}`, encoded; callers append constant tails.
pub fn vm_path(node: &str, vmid: u32) -> Result<String, PveError> {
    api_path(&[&"nodes", &node, &"qemu", &vmid])
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("system RNG");
    hex::encode(b)
}

/// A `multipart/form-data` body (RFC 7578): `fields` in order, then the file as
/// the part named `filename`. Field values are ours (fixed words, hex), the file
/// name is a PVE-safe volume name, so neither needs quoting.
pub fn multipart(
    boundary: &str,
    fields: &[(&str, &str)],
    file_name: &str,
    bytes: &[u8],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(bytes.len() + 512);
    for (k, v) in fields {
        b.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    b.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    b.extend_from_slice(bytes);
    b.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    b
}

/// Form/query encoding; PVE wants every value percent-encoded.
pub fn encode(params: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Convenience to build a parameter list.
pub fn params<const N: usize>(p: [(&str, String); N]) -> Vec<(String, String)> {
    p.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Integers arrive as JSON numbers or strings (`"8192"`); accept both.
pub fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    }
}

/// Booleans: `1`, `"1"`, `true`.
pub fn boolean(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => super::propstr::parse_bool(s).unwrap_or(false),
        other => int(other).is_some_and(|n| n != 0),
    }
}

/// Any JSON scalar as a string (config values).
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(u8::from(*b).to_string()),
        _ => None,
    }
}

impl Client {
    pub fn new(cfg: ClientConfig, book: &AddressBook) -> Result<Client, PveError> {
        let mut by_node = BTreeMap::new();
        let sites = if cfg.standalone.is_empty() {
            let mut endpoints = vec![cfg.endpoint];
            endpoints.extend(cfg.fallback_endpoints);
            vec![Site::new(
                endpoints,
                cfg.credentials,
                &cfg.trust,
                cfg.timeout,
                book,
            )?]
        } else {
            let mut sites = Vec::new();
            for (i, h) in cfg.standalone.into_iter().enumerate() {
                by_node.insert(encode_segment(&h.node), i);
                sites.push(Site::new(
                    vec![h.endpoint],
                    h.credentials,
                    &h.trust,
                    cfg.timeout,
                    book,
                )?);
            }
            sites
        };
        Ok(Client {
            sites: Arc::new(sites),
            by_node: Arc::new(by_node),
            pinned: None,
            retry: cfg.retry,
            poll: cfg.poll,
        })
    }

    /// The endpoint in use (the first host's, for standalone hosts).
    pub fn endpoint(&self) -> &str {
        let s = &self.sites[self.pinned.unwrap_or(0)];
        &s.endpoints[s.active.load(Ordering::Relaxed)]
    }

    /// The token (or user) this client acts as (on the first host).
    pub fn identity(&self) -> &str {
        &self.sites[self.pinned.unwrap_or(0)].identity
    }

    /// Whether the hosts are standalone PVEs (no joined cluster).
    pub fn standalone(&self) -> bool {
        !self.by_node.is_empty()
    }

    /// The API of standalone host `node` alone, for what each host answers for
    /// itself (its version, its token's permissions); `None` for a joined
    /// cluster or a host the profile does not list.
    pub fn host_view(&self, node: &str) -> Option<Client> {
        let site = *self.by_node.get(&encode_segment(node))?;
        Some(Client {
            pinned: Some(site),
            ..self.clone()
        })
    }

    /// A call about one node goes to that node's host; a list of the whole
    /// datacenter is gathered from every host; the rest (`/version`,
    /// `/access/…`) goes to the first. A standalone host knows only itself
    /// (proxmox-semantics §6: `/nodes/<other>` is a failed hostname lookup there).
    fn route(&self, method: &Method, path: &str) -> Result<Route, PveError> {
        if let Some(site) = self.pinned {
            return Ok(Route::One(site));
        }
        if self.by_node.is_empty() {
            return Ok(Route::One(0));
        }
        if let Some(rest) = path.strip_prefix("/nodes/") {
            let node = rest.split('/').next().unwrap_or_default();
            return self
                .by_node
                .get(node)
                .map(|i| Route::One(*i))
                .ok_or_else(|| PveError::UnknownHost {
                    host: node.to_owned(),
                });
        }
        if *method == Method::GET && matches!(path, "/nodes" | "/cluster/resources") {
            return Ok(Route::All);
        }
        Ok(Route::One(0))
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        p: &[(String, String)],
    ) -> Result<T, PveError> {
        let v = self.call(Method::GET, path, p).await?;
        serde_json::from_value(v).map_err(|e| PveError::Decode {
            method: "GET".into(),
            path: path.into(),
            detail: e.to_string(),
        })
    }

    pub async fn post(&self, path: &str, p: &[(String, String)]) -> Result<Value, PveError> {
        self.call(Method::POST, path, p).await
    }

    pub async fn put(&self, path: &str, p: &[(String, String)]) -> Result<Value, PveError> {
        self.call(Method::PUT, path, p).await
    }

    pub async fn delete(&self, path: &str, p: &[(String, String)]) -> Result<Value, PveError> {
        self.call(Method::DELETE, path, p).await
    }

    /// One API call, retried on the transient errors only.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        p: &[(String, String)],
    ) -> Result<Value, PveError> {
        match self.route(&method, path)? {
            Route::One(i) => self.call_site(i, method, path, p).await,
            Route::All => {
                let (mut all, down) = self.gather_sites(&method, path, p).await?;
                for (node, e) in down {
                    // A host that does not answer is an offline node to the
                    // callers of `/nodes` (preflight reports it, discovery
                    // leaves it out); its guests stay unknown, so a list of
                    // guests fails rather than look empty.
                    if path != "/nodes" {
                        return Err(PveError::HostDown {
                            host: node,
                            source: Box::new(e),
                        });
                    }
                    tracing::warn!(host = node, error = %e, "standalone Proxmox host does not answer");
                    all.push(
                        serde_json::json!({"node": node, "status": "offline", "type": "node"}),
                    );
                }
                Ok(Value::Array(all))
            }
        }
    }

    /// A list of the whole datacenter from the hosts that answer, and each
    /// standalone host that does not (its node name, the error) — for callers
    /// that act on what they can reach and report the rest (`destroy`). A joined
    /// cluster answers as one: its offline nodes' guests are in the list.
    pub async fn gather(
        &self,
        path: &str,
        p: &[(String, String)],
    ) -> Result<(Vec<Value>, Vec<(String, PveError)>), PveError> {
        match self.route(&Method::GET, path)? {
            Route::All => self.gather_sites(&Method::GET, path, p).await,
            Route::One(i) => match self.call_site(i, Method::GET, path, p).await? {
                Value::Array(rows) => Ok((rows, Vec::new())),
                _ => Ok((Vec::new(), Vec::new())),
            },
        }
    }

    async fn gather_sites(
        &self,
        method: &Method,
        path: &str,
        p: &[(String, String)],
    ) -> Result<(Vec<Value>, Vec<(String, PveError)>), PveError> {
        let (mut all, mut down) = (Vec::new(), Vec::new());
        for i in 0..self.sites.len() {
            match self.call_site(i, method.clone(), path, p).await {
                Ok(Value::Array(rows)) => all.extend(rows),
                Ok(_) => {}
                Err(e) if e.may_fail_over(method.as_str()) => down.push((self.node_of(i), e)),
                Err(e) => return Err(e),
            }
        }
        Ok((all, down))
    }

    fn node_of(&self, site: usize) -> String {
        self.by_node
            .iter()
            .find(|(_, i)| **i == site)
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    }

    async fn call_site(
        &self,
        site: usize,
        method: Method,
        path: &str,
        p: &[(String, String)],
    ) -> Result<Value, PveError> {
        let mut delay = self.retry.base;
        let mut attempt = 1;
        loop {
            match self.failover(site, &method, path, p).await {
                Err(e) if attempt < self.retry.attempts && e.is_transient(method.as_str()) => {
                    tracing::info!(%method, path, attempt, error = %e, "transient Proxmox error, retrying");
                    crate::progress::note(format!(
                        "retry {attempt}/{} in {:.1}s after: {}",
                        self.retry.attempts - 1,
                        delay.as_secs_f64(),
                        e.to_string().lines().next().unwrap_or_default()
                    ));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.cap);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One try on each endpoint of the site in turn, from the one that answered
    /// last, for as long as the request may be sent again elsewhere
    /// (`PveError::may_fail_over`).
    async fn failover(
        &self,
        site: usize,
        method: &Method,
        path: &str,
        p: &[(String, String)],
    ) -> Result<Value, PveError> {
        let s = &self.sites[site];
        let first = s.active.load(Ordering::Relaxed);
        let n = s.bases.len();
        let mut k = 0;
        loop {
            let at = (first + k) % n;
            match self.once(s, at, method.clone(), path, p).await {
                Err(e) if k + 1 < n && e.may_fail_over(method.as_str()) => {
                    tracing::warn!(endpoint = %s.endpoints[at], next = %s.endpoints[(at + 1) % n], error = %e, "Proxmox endpoint does not answer, trying the next");
                    k += 1;
                }
                Ok(v) => {
                    s.active.store(at, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn auth_headers(
        &self,
        s: &Site,
        at: usize,
        method: &Method,
    ) -> Result<HeaderMap, PveError> {
        let mut h = HeaderMap::new();
        match &s.auth {
            Auth::Token(v) => {
                h.insert(reqwest::header::AUTHORIZATION, v.clone());
            }
            Auth::Password {
                user,
                password,
                ticket,
            } => {
                let mut t = ticket.lock().await;
                // Tickets live 2 h; renew after 1 h like other clients do.
                if t.as_ref()
                    .is_none_or(|t| t.obtained.elapsed() > Duration::from_secs(3600))
                {
                    *t = Some(self.login(s, at, user, password).await?);
                }
                let t = t.as_ref().expect("ticket just set");
                h.insert(reqwest::header::COOKIE, t.cookie.clone());
                if method != Method::GET {
                    h.insert("CSRFPreventionToken", t.csrf.clone());
                }
            }
        }
        Ok(h)
    }

    async fn login(
        &self,
        s: &Site,
        at: usize,
        user: &str,
        password: &SecretString,
    ) -> Result<Ticket, PveError> {
        let body = encode(&params([
            ("username", user.to_owned()),
            ("password", password.expose_secret().to_owned()),
        ]));
        let req = s
            .http
            .post(format!("{}/access/ticket", s.bases[at]))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        let v = send(s, at, req, "POST", "/access/ticket").await?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| PveError::Decode {
                    method: "POST".into(),
                    path: "/access/ticket".into(),
                    detail: format!("no `{k}` in the login answer"),
                })
        };
        Ok(Ticket {
            cookie: sensitive(format!("PVEAuthCookie={}", field("ticket")?))?,
            csrf: sensitive(field("CSRFPreventionToken")?.to_owned())?,
            obtained: Instant::now(),
        })
    }

    async fn once(
        &self,
        s: &Site,
        at: usize,
        method: Method,
        path: &str,
        p: &[(String, String)],
    ) -> Result<Value, PveError> {
        let headers = self.auth_headers(s, at, &method).await?;
        let url = format!("{}{path}", s.bases[at]);
        let encoded = encode(p);
        let req = if matches!(method, Method::GET | Method::DELETE) {
            let url = if encoded.is_empty() {
                url
            } else {
                format!("{url}?{encoded}")
            };
            s.http.request(method.clone(), url)
        } else {
            s.http
                .request(method.clone(), url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(encoded)
        };
        tracing::debug!(%method, path, "proxmox request");
        send(s, at, req.headers(headers), method.as_str(), path).await
    }

    /// `POST …/storage/{s}/upload`: one file as `multipart/form-data`, in the field
    /// order pve-http-server parses (`content`, `checksum-algorithm`, `checksum`,
    /// then the file part; pve-http-server `AnyEvent.pm` 1280-1375). The SHA-256
    /// makes PVE verify the bytes inside the task. Returns the `imgcopy` UPID,
    /// which runs on the node that received the request (pve-storage
    /// `API2/Storage/Status.pm` 519-734). Not retried: a repeated upload of the
    /// same name simply overwrites the file.
    pub async fn upload(
        &self,
        path: &str,
        content: &str,
        file_name: &str,
        bytes: &[u8],
    ) -> Result<String, PveError> {
        let site = match self.route(&Method::POST, path)? {
            Route::One(i) => i,
            Route::All => 0,
        };
        let s = &self.sites[site];
        let at = s.active.load(Ordering::Relaxed);
        let boundary = format!("talos-pve-{}", random_hex(16));
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes));
        let body = multipart(
            &boundary,
            &[
                ("content", content),
                ("checksum-algorithm", "sha256"),
                ("checksum", &sha),
            ],
            file_name,
            bytes,
        );
        let headers = self.auth_headers(s, at, &Method::POST).await?;
        let req = s
            .http
            .post(format!("{}{path}", s.bases[at]))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .headers(headers)
            .body(body);
        tracing::debug!(path, file_name, size = bytes.len(), "proxmox upload");
        let v = send(s, at, req, "POST", path).await?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| PveError::Decode {
                method: "POST".into(),
                path: path.into(),
                detail: format!("expected a task id (UPID), got {v}"),
            })
    }

    /// Dispatch a task-returning call and wait for it to stop.
    pub async fn run_task(
        &self,
        method: Method,
        path: &str,
        p: &[(String, String)],
        deadline: Duration,
    ) -> Result<TaskOutcome, PveError> {
        let v = self.call(method.clone(), path, p).await?;
        let upid = v.as_str().ok_or_else(|| PveError::Decode {
            method: method.to_string(),
            path: path.into(),
            detail: format!("expected a task id (UPID), got {v}"),
        })?;
        self.wait_task(upid, deadline).await
    }

    /// A running download's progress as PVE's task log shows it (wget's percent),
    /// shown and returned. Best effort: a failed read is no error.
    async fn note_download(&self, node: &str, upid: &str) -> Option<WgetProgress> {
        let path = api_path(&[&"nodes", &node, &"tasks", &upid, &"log"]).ok()?;
        let p = [("limit".to_owned(), "500".to_owned())];
        let lines = self.get::<Vec<Value>>(&path, &p).await.ok()?;
        let text = lines
            .iter()
            .filter_map(|l| l.get("t").and_then(Value::as_str));
        let progress = wget_progress(text)?;
        crate::progress::note(format!("{}%", progress.percent));
        Some(progress)
    }

    /// Poll a task on the node its UPID names until it stops; backs off from a
    /// short first interval so quick tasks cost one or two polls. Each pause is half
    /// again the last (not double): a task is found at most half the time already
    /// waited after it ends — a 2 s start found at 2.0 s, not 3.75 s — for about one
    /// poll more per task.
    pub async fn wait_task(&self, upid: &str, deadline: Duration) -> Result<TaskOutcome, PveError> {
        let parsed = Upid::parse(upid).ok_or_else(|| PveError::Decode {
            method: "POST".into(),
            path: "(task)".into(),
            detail: format!("`{upid}` is not a UPID"),
        })?;
        let path = api_path(&[&"nodes", &parsed.node, &"tasks", &upid, &"status"])?;
        let start = Instant::now();
        // A download's polls follow its progress (`pace`); other tasks back off
        // from a short first interval.
        let mut pace = (parsed.kind == "download").then(|| DownloadPace::new(self.poll));
        let mut wait = match &mut pace {
            Some(pace) => pace.next_wait(Duration::ZERO),
            None => self.poll.first,
        };
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 3 / 2).min(self.poll.max);
            match self.get::<Value>(&path, &[]).await {
                Ok(st) => {
                    if st.get("status").and_then(Value::as_str) == Some("stopped") {
                        let exit = st
                            .get("exitstatus")
                            .and_then(Value::as_str)
                            .unwrap_or("unexpected status")
                            .to_owned();
                        if exit_ok(&exit) {
                            return Ok(TaskOutcome {
                                upid: upid.into(),
                                exitstatus: exit,
                            });
                        }
                        return Err(PveError::TaskFailed {
                            upid: upid.into(),
                            node: parsed.node,
                            message: exit,
                        });
                    }
                    if let Some(pace) = &mut pace {
                        let sent = start.elapsed();
                        if pace.wants_log() {
                            let progress = self.note_download(&parsed.node, upid).await;
                            pace.read(sent, start.elapsed(), progress);
                        }
                        wait = pace.next_wait(start.elapsed());
                    }
                }
                // Right after dispatch the task may not be visible yet.
                Err(e) if e.status() == Some(400) && start.elapsed() < Duration::from_secs(10) => {}
                Err(e) => return Err(e),
            }
            if start.elapsed() > deadline {
                return Err(PveError::TaskTimeout {
                    upid: upid.into(),
                    node: parsed.node,
                    secs: deadline.as_secs(),
                });
            }
        }
    }
}

/// The last percentage in a download task's log. PVE runs `wget --progress=dot:giga`
/// (pve-common 9.2.1 src/PVE/Tools.pm `download_file_from_url`), whose lines read
/// ` 32768K ........ ........ ........ ........ 29% 98.5M 3s`.
/// What wget's `dot:giga` log says so far: the last percent, and where the next
/// percent line will come (each line is 32 MiB and starts with its offset in KiB;
/// `Length:` is the size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WgetProgress {
    pub percent: u8,
    /// The share of the file (0..1] at which the next percent line is printed;
    /// `None` when the next one is the last, printed at the end (which the task
    /// status shows anyway). Without the size or offsets: 1 (by the end).
    pub next_line: Option<f64>,
}

const WGET_LINE: u64 = 32 << 20;

fn wget_progress<'a>(lines: impl Iterator<Item = &'a str>) -> Option<WgetProgress> {
    let mut length: Option<u64> = None;
    let mut last: Option<(u8, Option<u64>)> = None;
    for l in lines {
        if let Some(rest) = l.trim_start().strip_prefix("Length:") {
            length = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            continue;
        }
        let offset = l
            .split_whitespace()
            .next()
            .and_then(|w| w.strip_suffix('K')?.parse::<u64>().ok());
        if let Some(p) = l
            .split_whitespace()
            .find_map(|w| w.strip_suffix('%')?.parse::<u8>().ok())
            .filter(|p| *p <= 100)
        {
            last = Some((p, offset.map(|k| k << 10)));
        }
    }
    let (percent, offset) = last?;
    let next_line = match (offset, length) {
        // The next line ends 32 MiB after this one; at the size itself it is the last.
        (Some(start), Some(len)) if len > 0 => {
            let end = start + 2 * WGET_LINE;
            (end < len).then(|| end as f64 / len as f64)
        }
        // Unknown: it comes before the end at the latest.
        _ => (percent < 100).then_some(1.0),
    };
    Some(WgetProgress { percent, next_line })
}

/// The innermost cause of an error: what actually failed, said once.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A request without an HTTP answer, classified; a refused certificate becomes
/// the error that shows the fingerprint the server presents.
async fn transport_error(
    s: &Site,
    at: usize,
    method: &str,
    path: &str,
    e: reqwest::Error,
) -> PveError {
    let endpoint = s.endpoints[at].clone();
    if crate::tls::is_certificate_error(&e) {
        let addr = s.bases[at]
            .strip_prefix("https://")
            .and_then(|r| r.split('/').next())
            .unwrap_or_default();
        let detail = root_cause(&e);
        return match crate::tls::presented_fingerprint(addr).await {
            Some(fingerprint) => PveError::Certificate {
                endpoint,
                fingerprint,
                detail,
            },
            None => PveError::Transport {
                method: method.into(),
                path: path.into(),
                endpoint,
                kind: TransportKind::Other,
                detail,
            },
        };
    }
    let kind = if e.is_connect() {
        TransportKind::Connect
    } else if e.is_timeout() {
        TransportKind::Timeout
    } else {
        TransportKind::Other
    };
    PveError::Transport {
        method: method.into(),
        path: path.into(),
        endpoint,
        kind,
        detail: root_cause(&e.without_url()),
    }
}

async fn send(
    s: &Site,
    at: usize,
    req: reqwest::RequestBuilder,
    method: &str,
    path: &str,
) -> Result<Value, PveError> {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Err(transport_error(s, at, method, path, e).await),
    };
    let status = resp.status();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .and_then(|r| std::str::from_utf8(r.as_bytes()).ok().map(str::to_owned));
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Err(transport_error(s, at, method, path, e).await),
    };
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        let body = body.ok_or_else(|| PveError::Decode {
            method: method.into(),
            path: path.into(),
            detail: "the body is not JSON".into(),
        })?;
        return Ok(body.get("data").cloned().unwrap_or(Value::Null));
    }
    let message = body
        .as_ref()
        .and_then(|b| b.get("message"))
        .and_then(Value::as_str)
        .map(|m| m.trim_end().to_owned())
        .filter(|m| !m.is_empty())
        .or(reason)
        .or_else(|| status.canonical_reason().map(str::to_owned))
        .unwrap_or_default();
    let errors = body
        .as_ref()
        .and_then(|b| b.get("errors"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), text(v).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Err(PveError::Api {
        method: method.into(),
        path: path.into(),
        status: status.as_u16(),
        message,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_download_percent_is_wgets_last_and_the_size_says_if_more_lines_come() {
        let log = [
            "--2026-12-06 10:00:00--  https://factory.talos.dev/image/x/v1.13.9/nocloud-amd64.iso",
            "Length: 115343360 (110M) [application/octet-stream]",
            "     0K ........ ........ ........ ........ 29% 98.5M 1s",
            " 32768K ........ ........ ........ ........ 58%  101M 1s",
        ];
        let at = |n: usize| wget_progress(log[..n].iter().copied()).unwrap();
        // 64 MiB of 110 in: the next line comes at 96 MiB.
        assert_eq!(at(4).percent, 58);
        assert_eq!(at(4).next_line, Some(96.0 / 110.0));
        assert_eq!(at(3).next_line, Some(64.0 / 110.0));
        // 96 MiB of 110: the next line is the last one, printed at the end.
        let third = " 65536K ........ ........ ........ ........ 87%  101M 0s";
        let all: Vec<&str> = log.iter().copied().chain([third]).collect();
        let p = wget_progress(all.into_iter()).unwrap();
        assert_eq!((p.percent, p.next_line), (87, None));
        // Without the size, only that the next line comes by the end.
        assert_eq!(
            wget_progress(log[2..].iter().copied()).unwrap().next_line,
            Some(1.0)
        );
        assert_eq!(wget_progress(["starting task download"].into_iter()), None);
    }

    #[test]
    fn token_parsing_and_redaction() {
        let c = Credentials::parse_token("root@pam!talos-pve=8c1f-secret", "PROXMOX_VE_API_TOKEN")
            .unwrap();
        assert_eq!(c.principal(), "root@pam!talos-pve");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("8c1f-secret"), "{dbg}");
        for bad in ["root@pam!x", "root!x=s", "root@pam=s", "root@pam!x="] {
            let e = Credentials::parse_token(bad, "env").unwrap_err();
            assert!(!e.to_string().contains(bad), "error echoes input: {e}");
        }
    }

    #[test]
    fn endpoint_resolves_through_the_address_book() {
        let book = AddressBook::lab();
        let err = base_url("https://10.8.16.10:8006", &book).unwrap_err();
        assert!(matches!(err, PveError::Resolve { .. }), "{err}");
        book.map(
            "10.8.16.10:8006".parse().unwrap(),
            "127.0.0.1:4443".parse().unwrap(),
        );
        assert_eq!(
            base_url("https://10.8.16.10:8006/", &book).unwrap(),
            "https://127.0.0.1:4443/api2/json"
        );
        assert!(base_url("http://10.8.16.10:8006", &book).is_err());
        assert_eq!(
            base_url("https://pve.lab.local", &AddressBook::direct()).unwrap(),
            "https://pve.lab.local:8006/api2/json"
        );
        // IPv6 with and without a port (issue 13 item 10).
        book.map(
            "[fd00::10]:8006".parse().unwrap(),
            "127.0.0.1:4444".parse().unwrap(),
        );
        for url in ["https://[fd00::10]", "https://[fd00::10]:8006/"] {
            assert_eq!(
                base_url(url, &book).unwrap(),
                "https://127.0.0.1:4444/api2/json",
                "{url}"
            );
        }
        for bad in [
            "https://[fd00::10",
            "https://[fd00::10]8006",
            "https://fd00::10",
        ] {
            assert!(base_url(bad, &book).is_err(), "{bad}");
        }
    }

    #[test]
    fn standalone_calls_go_to_the_host_they_name() {
        crate::tls::install_provider();
        let book = AddressBook::lab();
        for (ip, port) in [("10.8.16.10", 4441), ("10.8.16.11", 4442)] {
            book.map(
                format!("{ip}:8006").parse().unwrap(),
                format!("127.0.0.1:{port}").parse().unwrap(),
            );
        }
        let creds = Credentials::parse_token("root@pam!t=s", "t").unwrap();
        let trust = Trust::Fingerprint(crate::tls::fingerprint(b"x"));
        let host = |node: &str, ip: &str| HostApi {
            node: node.into(),
            endpoint: format!("https://{ip}:8006"),
            credentials: creds.clone(),
            trust: trust.clone(),
        };
        let mut cfg = ClientConfig::new("https://10.8.16.10:8006", creds.clone(), trust.clone());
        cfg.standalone = vec![host("pve-1", "10.8.16.10"), host("pve-2", "10.8.16.11")];
        let c = Client::new(cfg, &book).unwrap();
        let get = Method::GET;
        assert_eq!(
            c.route(&get, "/nodes/pve-2/qemu/1/config").unwrap(),
            Route::One(1)
        );
        assert_eq!(
            c.route(&Method::POST, "/nodes/pve-1/qemu").unwrap(),
            Route::One(0)
        );
        assert_eq!(c.route(&get, "/cluster/resources").unwrap(), Route::All);
        assert_eq!(c.route(&get, "/nodes").unwrap(), Route::All);
        assert_eq!(c.route(&get, "/version").unwrap(), Route::One(0));
        let e = c.route(&get, "/nodes/pve-9/status").unwrap_err();
        assert!(matches!(e, PveError::UnknownHost { .. }), "{e}");
        let view = c.host_view("pve-2").unwrap();
        assert_eq!(
            view.route(&get, "/access/permissions").unwrap(),
            Route::One(1)
        );
        assert_eq!(view.endpoint(), "https://10.8.16.11:8006");
        assert!(c.host_view("pve-9").is_none());
        // A joined cluster: everything to its one site, whatever the node.
        let c = Client::new(
            ClientConfig::new("https://10.8.16.10:8006", creds, trust),
            &book,
        )
        .unwrap();
        assert_eq!(c.route(&get, "/nodes/pve-9/status").unwrap(), Route::One(0));
        assert!(c.host_view("pve-1").is_none());
    }

    #[test]
    fn tolerant_scalars() {
        assert_eq!(int(&serde_json::json!("8192")), Some(8192));
        assert_eq!(int(&serde_json::json!(100)), Some(100));
        assert!(boolean(&serde_json::json!("1")));
        assert!(boolean(&serde_json::json!(true)));
        assert!(!boolean(&serde_json::json!(0)));
    }

    #[test]
    fn api_paths_encode_every_segment_and_refuse_traversal() {
        let upid = "UPID:pve-1:0000:0001:6740:qmstart:120:root@pam!t:";
        assert_eq!(
            api_path(&[&"nodes", &"pve-1", &"tasks", &upid, &"status"]).unwrap(),
            "/nodes/pve-1/tasks/UPID%3Apve-1%3A0000%3A0001%3A6740%3Aqmstart%3A120%3Aroot%40pam%21t%3A/status"
        );
        assert_eq!(
            api_path(&[&"storage", &"local;x y?z#"]).unwrap(),
            "/storage/local%3Bx%20y%3Fz%23"
        );
        for bad in ["", ".", "..", "local/../../x", "/abs"] {
            let e = api_path(&[&"nodes", &bad, &"storage"]).unwrap_err();
            assert!(matches!(e, PveError::PathSegment { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("\n  fix: "), "{e}");
        }
    }

    #[test]
    fn encoding_escapes_property_strings() {
        assert_eq!(
            encode(&params([("boot", "order=scsi0;ide2".into())])),
            "boot=order%3Dscsi0%3Bide2"
        );
    }
}
