//! # slapos-client — the native API client
//!
//! A small blocking client of master-lite's native API (`/v1`, JSON), used by the node's link to
//! its master and by the `slapos-master` CLI subcommands. Routes and bodies come from
//! `slapos-proto`, so the client cannot spell a route the server does not serve.
//!
//! Over mTLS ([`Client::with_identity`]) the master's CA is the only trusted root and the
//! client presents its certificate (rustls with the ring provider, no platform roots); a new
//! node gets its certificate with [`Client::enroll`] and a one-time token.
//!
//! Blocking by design (ureq): the node calls it from `spawn_blocking`, which keeps the node's
//! runtime single-threaded and the binary small. Every error names the method, the URL and, for an
//! API error, the server's `kind` and message.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use slapos_proto::{
    Bang, ComputerId, ComputerInfo, ConnectionPublish, DesiredState, ErrorBody, Health,
    InstanceInfo, InstanceRequest, InstanceTitle, MAX_LONG_POLL_SECS, PARTITION_HEADER,
    PartitionId, PartitionRef, PartitionReport, RegisterComputer, SoftwareInfo, SoftwareReport,
    StateChange, SupplyRequest, UsageAck, UsageBatch, UsageBy, UsageReport, routes,
};

/// Default time limit of one call (long polls get `wait` on top of it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The master could not be reached (connection refused, DNS, timeout, reset).
    #[error("{method} {url}: master unreachable: {source}")]
    Unreachable {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// Transport error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The master answered with an error status.
    #[error("{method} {url}: {status} {kind}: {message}")]
    Api {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The error kind from the body (`not_found`, `conflict`, …), or `http` when the body
        /// was not an [`ErrorBody`].
        kind: String,
        /// The server's message.
        message: String,
    },
    /// The answer was not the expected JSON.
    #[error("{method} {url}: unexpected answer: {reason}")]
    Decode {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A certificate or key given for TLS is not usable.
    #[error("TLS setup: {reason}")]
    Tls {
        /// What is wrong.
        reason: String,
    },
    /// The answer is longer than the caller's limit; it was not read past the limit.
    #[error("{method} {url}: answer too large: {} > limit {limit} bytes", size_text(*.size, *.limit))]
    TooLarge {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// Its length when the server announced it (`Content-Length`), else `None` (more than
        /// `limit` bytes came).
        size: Option<u64>,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The base URL is not usable.
    #[error("invalid master URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: &'static str,
    },
}

impl ClientError {
    /// True when the master could not be reached at all (the node then works from its cache).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
            || matches!(self, Self::Api { status, .. } if *status >= 500)
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn size_text(size: Option<u64>, limit: u64) -> String {
    match size {
        Some(n) => format!("{n} bytes"),
        None => format!("more than {limit} bytes"),
    }
}

/// The default limit of a successful answer's body (a desired state of many partitions).
pub const DEFAULT_ANSWER_LIMIT: usize = 256 * 1024 * 1024;

/// How much of an error answer's body is read (its start is the message).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The response of a call that reached the master, or [`ClientError::Unreachable`].
fn reached(
    method: &'static str,
    url: &str,
    res: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<ureq::http::Response<ureq::Body>> {
    res.map_err(|e| ClientError::Unreachable {
        method,
        url: url.to_owned(),
        source: Box::new(e),
    })
}

/// The body of a successful answer as text, at most `limit` bytes: a longer one is a
/// [`ClientError::TooLarge`] (refused unread when its `Content-Length` says so). A status that
/// is not 2xx is a [`ClientError::Api`] with the status and the start of the body (`kind`
/// `http`); a transport error is [`ClientError::Unreachable`]. The SLAP transport of the node's
/// link and of a master forwarding to another ([`post_form`]).
pub fn read_answer(
    method: &'static str,
    url: String,
    res: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    limit: usize,
) -> Result<String> {
    let mut resp = reached(method, &url, res)?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let text = resp
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_LIMIT.min(limit) as u64)
            .read_to_string()
            .unwrap_or_default();
        return Err(ClientError::Api {
            method,
            url,
            status,
            kind: "http".into(),
            message: short(&text),
        });
    }
    let bytes = read_limited(method, &url, &mut resp, limit)?;
    String::from_utf8(bytes).map_err(|e| ClientError::Decode {
        method,
        url,
        reason: format!("failed to read the body: {e}"),
    })
}

/// The body of `resp`, at most `limit` bytes (see [`read_answer`]).
fn read_limited(
    method: &'static str,
    url: &str,
    resp: &mut ureq::http::Response<ureq::Body>,
    limit: usize,
) -> Result<Vec<u8>> {
    let limit = limit as u64;
    let too_large = |size| ClientError::TooLarge {
        method,
        url: url.to_owned(),
        size,
        limit,
    };
    if let Some(n) = resp.body().content_length().filter(|n| *n > limit) {
        return Err(too_large(Some(n)));
    }
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => too_large(None),
            e => ClientError::Decode {
                method,
                url: url.to_owned(),
                reason: format!("failed to read the body: {e}"),
            },
        })
}

/// `POST` `form` (urlencoded) to `url` with the `Authorization` header `authorization` if
/// given, and read the answer with [`read_answer`] (at most `limit` bytes): the one SLAP
/// form transport of the node's link and of a master forwarding to a remote one.
pub fn post_form(
    agent: &ureq::Agent,
    url: &str,
    form: &[(&str, String)],
    authorization: Option<&str>,
    limit: usize,
) -> Result<String> {
    let mut req = agent.post(url);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let res = req.send_form(form.iter().map(|(k, v)| (*k, v.as_str())));
    read_answer("POST", url.to_owned(), res, limit)
}

/// The start of an error body, as a message (500 characters).
fn short(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

/// Result of a client call.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one master.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    partition: Option<String>,
    /// The longest successful answer read ([`Client::limit_answers`]).
    answer_limit: usize,
    /// Time limit of one call ([`Client::call_timeout`]; a long poll adds its wait).
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("partition", &self.partition)
            .finish()
    }
}

/// The base URL (trailing `/` cut, `http(s)://` required) and an agent that hands every status
/// back to the caller, with a global `timeout`: shared by [`Client`] and the node's SLAP link.
pub fn http_agent(base_url: &str, timeout: Duration) -> Result<(String, ureq::Agent)> {
    let base = base_url.trim_end_matches('/').to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ClientError::BadUrl {
            url: base_url.to_owned(),
            reason: "must start with http:// or https://",
        });
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build();
    Ok((base, agent(config)))
}

/// An agent with `config` and [`Resolver`].
///
/// ureq (3.5) resolves the host on every call, a pooled keep-alive connection's too, and with
/// a time limit set (every agent here has one) its resolver does so on a thread it spawns and
/// joins per call: `slap-bench`'s constant-answer round trip to `127.0.0.1` took 0.09 ms with
/// that thread and 0.03 ms without (docs/fleet.md), and a named master cost a DNS query per
/// call.
fn agent(config: ureq::config::Config) -> ureq::Agent {
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        Resolver::default(),
    )
}

/// How long [`Resolver`] answers a name with the addresses of its last lookup.
pub const NAME_TTL: Duration = Duration::from_secs(30);

type Addrs = ureq::unversioned::resolver::ResolvedSocketAddrs;
type Lookup = (String, std::time::Instant, Addrs);

/// ureq's resolver (with its time limit), except that an IP literal host (`127.0.0.1`,
/// `[::1]`) is its own address and a name is looked up at most once per [`NAME_TTL`]: an
/// agent talks to one master, so the last name looked up is the one kept.
#[derive(Debug, Default)]
pub struct Resolver {
    lookup: ureq::unversioned::resolver::DefaultResolver,
    /// The `host:port` looked up last, when, and its addresses.
    last: std::sync::Mutex<Option<Lookup>>,
}

impl ureq::unversioned::resolver::Resolver for Resolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> std::result::Result<Addrs, ureq::Error> {
        // What ureq's resolver would look up: `host:port`, the scheme's port by default.
        let Some(host_port) = uri
            .scheme()
            .zip(uri.authority())
            .and_then(|(s, a)| ureq::unversioned::resolver::DefaultResolver::host_and_port(s, a))
        else {
            return self.lookup.resolve(uri, config, timeout);
        };
        if let Ok(addr) = host_port.parse::<std::net::SocketAddr>() {
            let mut addrs = self.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        if let Some((key, at, addrs)) = &*self.last()
            && *key == host_port
            && at.elapsed() < NAME_TTL
        {
            return Ok(addrs.clone());
        }
        let addrs = self.lookup.resolve(uri, config, timeout)?;
        *self.last() = Some((host_port, std::time::Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

impl Resolver {
    fn last(&self) -> std::sync::MutexGuard<'_, Option<Lookup>> {
        match self.last.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

pub use slapos_proto::identity::{
    Credentials, ENROLL_ROUTE, EnrollRequest, partition_certificate_route,
};

/// TLS settings for ureq: the certificates of `ca_pem` as the only roots, the client certificate
/// if given, ring. Also what the node uses for `https://` release downloads (the system CA
/// bundle as `ca_pem`), so no root store is compiled in.
pub fn tls_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
    let bad = |what: &str, e: &dyn std::fmt::Display| ClientError::Tls {
        reason: format!("{what}: {e}"),
    };
    let certs = |pem: &str, what: &str| -> Result<Vec<Certificate<'static>>> {
        let mut out = Vec::new();
        for item in ureq::tls::parse_pem(pem.as_bytes()) {
            if let PemItem::Certificate(c) = item.map_err(|e| bad(what, &e))? {
                out.push(c);
            }
        }
        if out.is_empty() {
            return Err(bad(what, &"no PEM certificate"));
        }
        Ok(out)
    };
    let roots = certs(ca_pem, "the CA certificate")?;
    let mut b = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&roots))
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ));
    if let Some((cert_pem, key_pem)) = identity {
        let chain = certs(cert_pem, "the client certificate")?;
        let key = PrivateKey::from_pem(key_pem.as_bytes()).map_err(|e| bad("the key", &e))?;
        b = b.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(b.build())
}

/// [`http_agent`] over TLS (`https://` required, calls limited to `timeout`): the master CA
/// as the only root and the client certificate `identity` (cert, key PEM) if given; see
/// [`tls_config`]. Also the node's SLAP link to an https master.
pub fn tls_agent(
    base_url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<(String, ureq::Agent)> {
    let base = base_url.trim_end_matches('/').to_owned();
    if !base.starts_with("https://") {
        return Err(ClientError::BadUrl {
            url: base_url.to_owned(),
            reason: "a client with a CA must use https://",
        });
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .tls_config(tls_config(ca_pem, identity)?)
        .build();
    Ok((base, agent(config)))
}

impl Client {
    /// A client of the master at `base_url` (`https://host:port`) over mTLS: `ca_pem` is the
    /// master CA (the only trusted root), `cert_pem`/`key_pem` the client's identity.
    pub fn with_identity(
        base_url: &str,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self> {
        let (base, agent) =
            tls_agent(base_url, ca_pem, Some((cert_pem, key_pem)), DEFAULT_TIMEOUT)?;
        Ok(Self {
            base,
            agent,
            partition: None,
            answer_limit: DEFAULT_ANSWER_LIMIT,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A TLS client without a client certificate (the master is authenticated by `ca_pem`):
    /// the master lets it enroll and nothing else.
    pub fn with_ca(base_url: &str, ca_pem: &str) -> Result<Self> {
        let (base, agent) = tls_agent(base_url, ca_pem, None, DEFAULT_TIMEOUT)?;
        Ok(Self {
            base,
            agent,
            partition: None,
            answer_limit: DEFAULT_ANSWER_LIMIT,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Enroll a computer: redeem the one-time `token` over TLS without a client certificate
    /// (the master is authenticated by `ca_pem`) and get its key, certificate and CA.
    pub fn enroll(base_url: &str, ca_pem: &str, token: &str) -> Result<Credentials> {
        Self::with_ca(base_url, ca_pem)?.post(
            ENROLL_ROUTE,
            &EnrollRequest {
                token: token.to_owned(),
            },
        )
    }

    /// The certificate and key of partition `c/p` (for the node of computer `c`), issued when
    /// first asked; the node places them in the partition.
    pub fn partition_certificate(&self, c: &ComputerId, p: &PartitionId) -> Result<Credentials> {
        self.get(&partition_certificate_route(c, p))
    }

    /// A client of the master at `base_url` (`http://host:port`, no trailing path).
    pub fn new(base_url: &str) -> Result<Self> {
        let (base, agent) = http_agent(base_url, DEFAULT_TIMEOUT)?;
        Ok(Self {
            base,
            agent,
            partition: None,
            answer_limit: DEFAULT_ANSWER_LIMIT,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client, acting for a partition (child requests carry its identity).
    pub fn as_partition(mut self, who: &PartitionRef) -> Self {
        self.partition = Some(who.to_string());
        self
    }

    /// The same client, reading successful answers of at most `bytes` bytes (default
    /// [`DEFAULT_ANSWER_LIMIT`]); a longer one is a [`ClientError::TooLarge`].
    pub fn limit_answers(mut self, bytes: usize) -> Self {
        self.answer_limit = bytes;
        self
    }

    /// The same client, each call limited to `timeout` (default [`DEFAULT_TIMEOUT`]; a long
    /// poll gets its wait on top).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `req` limited to this client's call timeout.
    fn timed<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        req.config().timeout_global(Some(self.timeout)).build()
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        method: &'static str,
        url: String,
        res: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Option<T>> {
        let Some(bytes) = self.finish_bytes(method, url.clone(), res)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClientError::Decode {
                method,
                url,
                reason: e.to_string(),
            })
    }

    /// The body of a successful answer (`None` for a 304), or the API error it carries.
    fn finish_bytes(
        &self,
        method: &'static str,
        url: String,
        res: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Option<Vec<u8>>> {
        let mut resp = reached(method, &url, res)?;
        let status = resp.status().as_u16();
        if status == 304 {
            return Ok(None);
        }
        if status >= 400 {
            let text = resp
                .body_mut()
                .with_config()
                .limit(ERROR_BODY_LIMIT as u64)
                .read_to_string()
                .unwrap_or_default();
            let (kind, message) = match serde_json::from_str::<ErrorBody>(&text) {
                Ok(b) => (b.kind, b.error),
                Err(_) => ("http".to_owned(), text.trim().to_owned()),
            };
            return Err(ClientError::Api {
                method,
                url,
                status,
                kind,
                message,
            });
        }
        read_limited(method, &url, &mut resp, self.answer_limit).map(Some)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path);
        let res = self.timed(self.agent.get(&url)).call();
        self.finish("GET", url.clone(), res)?
            .ok_or_else(|| ClientError::Decode {
                method: "GET",
                url,
                reason: "304 without a conditional request".into(),
            })
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let url = self.url(path);
        let mut req = self.timed(self.agent.post(&url));
        if let Some(p) = &self.partition {
            req = req.header(PARTITION_HEADER, p);
        }
        let res = req.send_json(body);
        self.finish("POST", url.clone(), res)?
            .ok_or_else(|| ClientError::Decode {
                method: "POST",
                url,
                reason: "unexpected 304".into(),
            })
    }

    /// `GET /v1/health`.
    pub fn health(&self) -> Result<Health> {
        self.get(&routes::health())
    }

    /// `GET /metrics`: the fleet's Prometheus exposition (operators only).
    pub fn metrics(&self) -> Result<String> {
        let url = self.url("/metrics");
        let res = self.timed(self.agent.get(&url)).call();
        let bytes = self
            .finish_bytes("GET", url.clone(), res)?
            .unwrap_or_default();
        String::from_utf8(bytes).map_err(|e| ClientError::Decode {
            method: "GET",
            url,
            reason: e.to_string(),
        })
    }

    /// Post a node's usage samples (each stored once, however often it is sent).
    pub fn post_usage(&self, c: &ComputerId, batch: &UsageBatch) -> Result<UsageAck> {
        self.post(&routes::usage_samples(c), batch)
    }

    /// The usage report of the window `(since_ms, until_ms]`, grouped `by` (operators).
    pub fn usage(&self, since_ms: u64, until_ms: u64, by: UsageBy) -> Result<UsageReport> {
        self.get(&routes::usage(since_ms, until_ms, by))
    }

    /// Register (or re-register) a computer and its partitions.
    pub fn register(&self, reg: &RegisterComputer) -> Result<ComputerInfo> {
        self.post(&routes::computers(), reg)
    }

    /// Every computer.
    pub fn computers(&self) -> Result<Vec<ComputerInfo>> {
        self.get(&routes::computers())
    }

    /// One computer.
    pub fn computer(&self, id: &ComputerId) -> Result<ComputerInfo> {
        self.get(&routes::computer(id))
    }

    /// Supply (or remove) a software release on a computer.
    pub fn supply(&self, id: &ComputerId, req: &SupplyRequest) -> Result<SoftwareInfo> {
        self.post(&routes::software(id), req)
    }

    /// Report the install state of a release.
    pub fn report_software(&self, id: &ComputerId, rep: &SoftwareReport) -> Result<()> {
        self.post::<_, serde_json::Value>(&routes::software_report(id), rep)
            .map(drop)
    }

    /// The desired state of a computer. With `etag` and `wait`, a long poll: the master holds the
    /// answer until the state differs from `etag` or `wait` runs out; `Ok(None)` means unchanged.
    pub fn desired(
        &self,
        id: &ComputerId,
        etag: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Option<DesiredState>> {
        let url = self.url(&routes::desired(id));
        let mut req = self.timed(self.agent.get(&url));
        if let Some(e) = etag {
            req = req.query("etag", e);
        }
        if let Some(w) = wait {
            let secs = w.as_secs().min(MAX_LONG_POLL_SECS);
            req = req
                .query("wait", secs.to_string())
                .config()
                .timeout_global(Some(self.timeout + Duration::from_secs(secs)))
                .build();
        }
        let res = req.call();
        self.finish("GET", url, res)
    }

    /// Report what the node did with a partition.
    pub fn report_partition(
        &self,
        c: &ComputerId,
        p: &PartitionId,
        rep: &PartitionReport,
    ) -> Result<()> {
        self.post::<_, serde_json::Value>(&routes::partition_report(c, p), rep)
            .map(drop)
    }

    /// Publish a partition's connection parameters.
    pub fn publish_connection(
        &self,
        c: &ComputerId,
        p: &PartitionId,
        conn: &ConnectionPublish,
    ) -> Result<()> {
        self.post::<_, serde_json::Value>(&routes::partition_connection(c, p), conn)
            .map(drop)
    }

    /// Bang: ask the master to reprocess the partition's tree.
    pub fn bang(&self, c: &ComputerId, p: &PartitionId, bang: &Bang) -> Result<()> {
        self.post::<_, serde_json::Value>(&routes::partition_bang(c, p), bang)
            .map(drop)
    }

    /// Request an instance (as a user, or as the partition set with [`Client::as_partition`]).
    pub fn request(&self, req: &InstanceRequest) -> Result<InstanceInfo> {
        self.post(&routes::instances(), req)
    }

    /// Every instance.
    pub fn instances(&self) -> Result<Vec<InstanceInfo>> {
        self.get(&routes::instances())
    }

    /// One instance; `root` names the tree of a child instance.
    pub fn instance(
        &self,
        title: &InstanceTitle,
        root: Option<&InstanceTitle>,
    ) -> Result<InstanceInfo> {
        self.get(&routes::instance(title, root))
    }

    /// Change the requested state of a root instance.
    pub fn set_state(&self, title: &InstanceTitle, change: &StateChange) -> Result<InstanceInfo> {
        self.post(&routes::instance_state(title), change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_ends_at_the_clients_call_timeout() {
        // Accepts connections and never answers.
        let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", hole.local_addr().unwrap());
        let c = Client::new(&url)
            .unwrap()
            .call_timeout(Duration::from_millis(300));
        let t = std::time::Instant::now();
        let r = c.health();
        assert!(matches!(r, Err(ClientError::Unreachable { .. })), "{r:?}");
        assert!(
            t.elapsed() < DEFAULT_TIMEOUT / 2,
            "waited {:?}: the call timeout was not applied",
            t.elapsed()
        );
        drop(hole);
    }

    #[test]
    fn refuses_urls_without_scheme() {
        let err = Client::new("localhost:8080").unwrap_err();
        assert!(err.to_string().contains("must start with http://"), "{err}");
        assert_eq!(
            Client::new("http://127.0.0.1:1/").unwrap().base_url(),
            "http://127.0.0.1:1"
        );
    }

    /// A literal needs no lookup and a name is looked up once per [`NAME_TTL`]: a cached answer
    /// holds even with a time limit already spent (ureq's resolver would time out on its
    /// lookup thread).
    #[test]
    fn a_literal_is_never_looked_up_and_a_name_once_per_ttl() {
        use ureq::unversioned::resolver::Resolver as _;
        use ureq::unversioned::transport::NextTimeout;
        use ureq::unversioned::transport::time::Duration as Limit;
        let config = ureq::Agent::config_builder().build();
        let r = Resolver::default();
        let spent = || NextTimeout {
            after: Limit::Exact(Duration::ZERO),
            ..NextTimeout::default()
        };
        let addrs = |uri: &str, limit| -> Vec<std::net::SocketAddr> {
            let uri = uri.parse().unwrap();
            let got = r.resolve(&uri, &config, limit).unwrap();
            got.iter().copied().collect()
        };
        let looked_up = || r.last().as_ref().map(|(k, at, _)| (k.clone(), *at));
        for (uri, addr) in [
            ("http://127.0.0.1:8080/v1/health", "127.0.0.1:8080"),
            ("http://10.0.0.2/", "10.0.0.2:80"),
            ("https://[::1]/x", "[::1]:443"),
            ("https://[fd00::5]:7443", "[fd00::5]:7443"),
        ] {
            assert_eq!(addrs(uri, spent()), [addr.parse().unwrap()], "{uri}");
        }
        assert_eq!(looked_up(), None, "a literal is not looked up");

        let first = addrs("http://localhost:8080/", NextTimeout::default());
        assert!(!first.is_empty(), "localhost resolved to nothing");
        assert!(
            first
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{first:?}"
        );
        let (key, at) = looked_up().unwrap();
        assert_eq!(key, "localhost:8080");
        assert_eq!(addrs("http://localhost:8080/x", spent()), first);
        assert_eq!(
            looked_up(),
            Some((key, at)),
            "answered from the last lookup"
        );

        let other = addrs("http://localhost:9090/", NextTimeout::default());
        assert!(other.iter().all(|a| a.port() == 9090), "{other:?}");
        assert_eq!(
            looked_up().map(|(k, _)| k).as_deref(),
            Some("localhost:9090"),
            "another port is another lookup"
        );
    }

    #[test]
    fn unreachable_master_is_reported_as_such() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let c = Client::new("http://127.0.0.1:1").unwrap();
        let err = c.health().unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(
            err.to_string().contains("GET http://127.0.0.1:1/v1/health"),
            "{err}"
        );
    }
}
