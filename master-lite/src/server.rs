//! Serving connections: one accept loop for the plain and the mTLS listener, with the limits
//! that keep slow, idle or numerous clients from taking the master down (issue 19).
//!
//! * **File descriptors.** [`raise_nofile`] lifts the soft `RLIMIT_NOFILE` to the hard one at
//!   start; [`Limits::for_nofile`] keeps the connection cap below it (a reserve stays for the
//!   database, logs and the listener), so accepting never fails for lack of descriptors.
//! * **At capacity**, a new connection evicts the oldest connection that is idle: still in its
//!   TLS handshake, or between requests. Connections with a request in flight (long polls
//!   included) are never evicted; when every connection is busy, the new one is closed.
//! * **Per source**, connections that have not proven an identity (plain connections of local
//!   users other than the operator, by uid; TLS connections before a verified certificate, by
//!   uid on this host, else by address) are capped ([`Limits::per_source`]): past the cap, a new
//!   connection of that source evicts that source's oldest idle one, so one local user or one
//!   address churns through its own share and cannot fill the table. The operator's plain
//!   connections and those of verified certificates are exempt.
//! * **Timeouts.** A TLS handshake must finish within [`Limits::handshake_timeout`]; request
//!   headers, and the next request on a kept-alive connection, within
//!   [`Limits::header_timeout`] (hyper's header read timeout, which also runs while a connection
//!   waits for its next request). Bodies get their deadline from the body gate in
//!   [`crate::http`].
//! * Handshakes run in each connection's own task: a silent client delays nobody.
//! * When the connection count falls back to zero, freed heap is returned to the system
//!   (`malloc_trim`), so the memory of a burst of connections does not stay with the process.
//!
//! [`serve`] ends on shutdown: it stops accepting, ends the waiting long polls (the caller's
//! shutdown future does that through the hub), lets in-flight requests finish (graceful
//! shutdown of each connection, bounded by [`DRAIN`]) and returns.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use crate::local::{self, LocalTrust};
use slapos_proto::identity::Identity;

/// Descriptors kept free of connections (database, WAL, logs, netlink lookups, the listener).
pub const FD_RESERVE: usize = 128;

/// How long in-flight requests may take to finish once shutdown started.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Connection limits (see the module doc).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections of one unproven source (uid or address) at once.
    pub per_source: usize,
    /// Time for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for request headers, and for the next request of a kept-alive connection.
    pub header_timeout: Duration,
    /// Largest request head and read buffer of a connection (bytes).
    pub max_buf: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            per_source: 256,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(20),
            max_buf: 64 << 10,
        }
    }
}

impl Limits {
    /// The defaults, with the connection cap kept [`FD_RESERVE`] below the `nofile` limit.
    pub fn for_nofile(nofile: u64) -> Self {
        let fit = usize::try_from(nofile)
            .unwrap_or(usize::MAX)
            .saturating_sub(FD_RESERVE)
            .max(16);
        Self {
            max_connections: fit.min(65_536),
            ..Self::default()
        }
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force after.
// `u64::from` converts nothing on 64-bit targets, but rlim_t is u32 on 32-bit glibc (armv7).
#[allow(clippy::useless_conversion)]
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => u64::from(hard),
            Err(e) => {
                tracing::warn!("could not raise the open-file limit from {soft} to {hard}: {e}");
                u64::from(soft)
            }
        },
        Ok((soft, _)) => u64::from(soft),
        Err(e) => {
            tracing::warn!("could not read the open-file limit: {e}");
            1024
        }
    }
}

/// How a connection reached the master.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Plain HTTP; `local_uid`: the uid owning the client socket when the client runs on this
    /// host ([`local::client_uid`]).
    Plain {
        /// Owner of the client socket, for a client on this host.
        local_uid: Option<u32>,
    },
    /// mTLS: `None` without a client certificate; else the identity and serial of the verified
    /// certificate, or why its subject is no identity.
    Tls {
        /// The verified client certificate, if any.
        cert: Option<Result<(Identity, String), String>>,
    },
}

/// The client of one connection, attached to each of its requests (`ConnectInfo<Peer>`).
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// How it is connected.
    pub transport: Transport,
}

impl Peer {
    /// A plain-HTTP client.
    pub fn plain(addr: SocketAddr, local_uid: Option<u32>) -> Self {
        Self {
            addr,
            transport: Transport::Plain { local_uid },
        }
    }

    /// The uid of a plain client on this host.
    pub fn local_uid(&self) -> Option<u32> {
        match self.transport {
            Transport::Plain { local_uid } => local_uid,
            Transport::Tls { .. } => None,
        }
    }
}

/// What a source of unproven connections is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Uid(u32),
    Addr(IpAddr),
}

/// One connection's live state, shared by its task and the registry.
#[derive(Debug, Default)]
struct Live {
    /// Requests being handled.
    inflight: AtomicUsize,
    /// Still in the TLS handshake.
    handshaking: AtomicBool,
    /// Asked to close (evicted).
    evict: Notify,
}

impl Live {
    fn idle(&self) -> bool {
        self.handshaking.load(Ordering::Relaxed) || self.inflight.load(Ordering::Relaxed) == 0
    }
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    /// By admission order: the first idle one is the oldest.
    conns: BTreeMap<u64, (Arc<Live>, Option<Source>)>,
    per_source: HashMap<Source, usize>,
}

/// The connections of one listener.
#[derive(Debug)]
struct Registry {
    limits: Limits,
    table: Mutex<Table>,
    evictions: AtomicUsize,
}

/// A connection's place in the registry; given back when dropped.
struct Slot {
    registry: Arc<Registry>,
    id: u64,
    live: Arc<Live>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let empty = {
            let mut t = lock(&self.registry.table);
            if let Some((_, Some(src))) = t.conns.remove(&self.id) {
                release(&mut t.per_source, &src);
            }
            t.conns.is_empty()
        };
        if empty {
            trim_heap();
        }
    }
}

fn release(map: &mut HashMap<Source, usize>, src: &Source) {
    if let Some(n) = map.get_mut(src) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(src);
        }
    }
}

impl Registry {
    fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::default(),
            evictions: AtomicUsize::new(0),
        })
    }

    /// A place for a new connection from `source` (`None`: exempt from the per-source cap),
    /// evicting the oldest idle connection at capacity; `None` when refused.
    fn admit(self: &Arc<Self>, source: Option<Source>) -> Option<Slot> {
        let mut t = lock(&self.table);
        if let Some(src) = &source
            && t.per_source.get(src).copied().unwrap_or(0) >= self.limits.per_source
            && !self.evict_oldest_idle(&mut t, Some(src))
        {
            return None;
        }
        if t.conns.len() >= self.limits.max_connections && !self.evict_oldest_idle(&mut t, None) {
            return None;
        }
        let id = t.next;
        t.next += 1;
        let live = Arc::new(Live::default());
        if let Some(src) = &source {
            *t.per_source.entry(src.clone()).or_default() += 1;
        }
        t.conns.insert(id, (live.clone(), source));
        Some(Slot {
            registry: self.clone(),
            id,
            live,
        })
    }

    /// Ask the oldest idle connection (of `source`, when given) to close and forget it at once
    /// (its task ends shortly).
    fn evict_oldest_idle(&self, t: &mut Table, source: Option<&Source>) -> bool {
        let Some(id) = t
            .conns
            .iter()
            .find(|(_, (live, src))| live.idle() && source.is_none_or(|s| src.as_ref() == Some(s)))
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some((live, src)) = t.conns.remove(&id) {
            if let Some(src) = src {
                release(&mut t.per_source, &src);
            }
            live.evict.notify_one();
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The connection proved an identity: it no longer counts against its source.
    fn exempt(&self, id: u64) {
        let mut t = lock(&self.table);
        if let Some((_, src)) = t.conns.get_mut(&id)
            && let Some(src) = src.take()
        {
            release(&mut t.per_source, &src);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Give freed heap back to the system (glibc keeps it otherwise).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How the listener secures its connections.
#[derive(Clone)]
pub enum Security {
    /// Plain HTTP: local callers are identified by uid ([`LocalTrust`]).
    Plain(LocalTrust),
    /// mTLS with this acceptor.
    Tls(tokio_rustls::TlsAcceptor),
}

/// Serve `listener` with `router` until `shutdown` completes (see the module doc).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    security: Security,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let registry = Registry::new(limits);
    // Opened before the first client: a lookup never needs a descriptor of its own.
    let diag = Arc::new(local::SockDiag::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: make room, back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    {
                        let mut t = lock(&registry.table);
                        registry.evict_oldest_idle(&mut t, None);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let conn = Conn {
            diag: diag.clone(),
            registry: registry.clone(),
            router: router.clone(),
            security: security.clone(),
            local,
            stop: stop_rx.clone(),
        };
        tasks.spawn(conn.run(stream, addr));
    }
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("connections still open {DRAIN:?} after shutdown: closed");
        tasks.abort_all();
    }
    Ok(())
}

/// One accepted connection.
struct Conn {
    /// Shared by every connection: looks up local callers without a new descriptor.
    diag: Arc<local::SockDiag>,
    registry: Arc<Registry>,
    router: Router,
    security: Security,
    local: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn run(self, stream: TcpStream, addr: SocketAddr) {
        let _ = stream.set_nodelay(true);
        // The owner of a client on this host (loopback or one of our addresses).
        let local = self.local;
        // One netlink round trip, answered by the kernel at once: no need for a thread.
        let uid = self
            .diag
            .client_uid(addr, local)
            .inspect_err(|e| tracing::debug!(%addr, "sock_diag lookup failed: {e}"))
            .ok()
            .flatten();
        let source = match (&self.security, uid) {
            (Security::Plain(trust), Some(u)) if trust.is_operator(u) => None,
            (_, Some(u)) => Some(Source::Uid(u)),
            (_, None) => Some(Source::Addr(addr.ip().to_canonical())),
        };
        let Some(slot) = self.registry.admit(source) else {
            tracing::debug!(%addr, "connection refused: limits reached");
            return;
        };
        match self.security.clone() {
            Security::Plain(_) => {
                let peer = Peer::plain(addr, uid);
                self.http(TokioIo::new(stream), peer, slot).await;
            }
            Security::Tls(acceptor) => {
                slot.live.handshaking.store(true, Ordering::Relaxed);
                let timeout = self.registry.limits.handshake_timeout;
                let hs = tokio::select! {
                    r = tokio::time::timeout(timeout, acceptor.accept(stream)) => r,
                    () = slot.live.evict.notified() => return,
                };
                let tls = match hs {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(%addr, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%addr, "TLS handshake timed out");
                        return;
                    }
                };
                slot.live.handshaking.store(false, Ordering::Relaxed);
                let peer = peer_of(addr, &tls);
                if matches!(&peer.transport, Transport::Tls { cert: Some(Ok(_)) }) {
                    self.registry.exempt(slot.id);
                }
                self.http(TokioIo::new(tls), peer, slot).await;
            }
        }
    }

    /// Serve HTTP/1.1 on an established connection until it closes, is evicted or the server
    /// shuts down (in-flight requests then finish first).
    async fn http<I>(mut self, io: TokioIo<I>, peer: Peer, slot: Slot)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let live = slot.live.clone();
        let router = self.router.clone();
        let addr = peer.addr;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            let busy = Busy::new(live.clone());
            let router = router.clone();
            async move {
                let resp = router.oneshot(req.map(axum::body::Body::new)).await;
                drop(busy);
                resp
            }
        });
        let limits = &self.registry.limits;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_buf.max(8192));
        let conn = builder.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut stopping = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%addr, "connection ended: {e}");
                    }
                    break;
                }
                () = slot.live.evict.notified() => {
                    tracing::debug!(%addr, "connection evicted: the master is at its connection limit");
                    break;
                }
                r = self.stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    if r.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        drop(slot);
    }
}

/// The [`Peer`] of an established TLS connection: the identity of its verified certificate.
fn peer_of(addr: SocketAddr, tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Peer {
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| crate::pki::parse_client_cert(der));
    Peer {
        addr,
        transport: Transport::Tls { cert },
    }
}

/// Counts a request in flight on its connection (the connection is not idle meanwhile).
struct Busy(Arc<Live>);

impl Busy {
    fn new(live: Arc<Live>) -> Self {
        live.inflight.fetch_add(1, Ordering::Relaxed);
        Self(live)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_source: usize) -> Limits {
        Limits {
            max_connections: max,
            per_source,
            ..Limits::default()
        }
    }

    #[test]
    fn at_capacity_the_oldest_idle_connection_makes_room() {
        let r = Registry::new(limits(3, 10));
        let a = r.admit(None).unwrap();
        let b = r.admit(None).unwrap();
        let c = r.admit(None).unwrap();
        // a is busy: b is the oldest idle one.
        let _busy = Busy::new(a.live.clone());
        let d = r.admit(None).unwrap();
        assert_eq!(r.evictions.load(Ordering::Relaxed), 1);
        assert!(!lock(&r.table).conns.contains_key(&b.id));
        // Everything busy: refused.
        let _all = [&c, &d].map(|s| Busy::new(s.live.clone()));
        assert!(r.admit(None).is_none());
        drop(b); // its task ends: nothing left to give back twice
        assert_eq!(lock(&r.table).conns.len(), 3);
    }

    #[test]
    fn unproven_sources_are_capped_until_they_prove_an_identity() {
        let r = Registry::new(limits(100, 2));
        let src = || Some(Source::Uid(65534));
        // At its cap, a source's new connection replaces its own oldest idle one.
        let old = r.admit(src()).unwrap();
        let a = r.admit(src()).unwrap();
        let _a_busy = Busy::new(a.live.clone());
        let _b = r.admit(src()).unwrap();
        assert!(
            !lock(&r.table).conns.contains_key(&old.id),
            "its own oldest idle went"
        );
        drop(old);
        let _b_busy = Busy::new(_b.live.clone());
        assert!(r.admit(src()).is_none(), "all of its share busy: refused");
        assert!(r.admit(Some(Source::Uid(1000))).is_some(), "another source");
        assert!(r.admit(None).is_some(), "exempt");
        r.exempt(a.id);
        let c = r.admit(src());
        assert!(c.is_some(), "a proven connection no longer counts");
        drop(a);
        assert_eq!(lock(&r.table).per_source[&Source::Uid(65534)], 2, "b and c");
        drop(c);
        assert_eq!(lock(&r.table).per_source[&Source::Uid(65534)], 1, "b");
    }

    #[test]
    fn the_connection_cap_stays_below_the_fd_limit() {
        assert_eq!(Limits::for_nofile(1024).max_connections, 1024 - FD_RESERVE);
        assert_eq!(Limits::for_nofile(1 << 20).max_connections, 65_536);
        assert!(Limits::for_nofile(10).max_connections >= 16);
    }
}
