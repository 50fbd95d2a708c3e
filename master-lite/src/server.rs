//! Serving connections: one accept loop for the plain and the mTLS listener, with the limits
//! that keep slow, idle or numerous clients from taking the master down (issue 19).
//!
//! * **File descriptors.** [`raise_nofile`] lifts the soft `RLIMIT_NOFILE` to the hard one at
//!   start; [`Limits::for_nofile`] keeps the connection cap below it (a reserve stays for the
//!   database, logs and the listener), so accepting never fails for lack of descriptors.
//! * **At capacity**, a new connection evicts the oldest connection that is idle: still in its
//!   TLS handshake, or between requests; one that has not sent a byte yet goes first, so a
//!   flood of silent connections does not cut a real client's handshake short. Connections
//!   with a request in flight (long polls included) are never evicted; when every connection
//!   is busy, the new one is closed.
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
//! **Requests and long polls.** The connection loop reads each request head itself
//! ([`gate::parse`], with `httparse`, hyper's own parser), then lets hyper serve that one
//! request through a [`gate::Gate`] and takes the connection back once the response is out.
//! A `GET` that a [`Parking`] accepts (a node's long poll of its desired state, when nothing is
//! new) waits in between, outside hyper: only the connection's TLS stream, its request head
//! and the hub's receiver are kept, not hyper's 16 KB of buffers and the middleware futures.
//! When it has an answer (a change, its deadline, shutdown) hyper serves it like any request,
//! with [`ParkedUntil`] attached. A parked poll counts as a request in flight (never evicted);
//! the client closing the connection ends it. Requests the loop cannot frame without doubt
//! (a chunked body, an unusual `Content-Length`, a head hyper will refuse) go to hyper with the
//! rest of the connection, as before. hyper no longer watches the socket while a framed request
//! runs: a client leaving mid-request no longer cancels its handler (the call completes, its
//! answer fails to send, the connection closes). Should the end of a response ever go unseen,
//! hyper's own header timeout closes the connection: a missed hand-back cannot hang it.
//!
//! [`serve`] ends on shutdown: it stops accepting, ends the waiting long polls (the caller's
//! shutdown future does that through the hub), lets in-flight requests finish (graceful
//! shutdown of each connection, bounded by [`DRAIN`]) and returns.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

mod gate;

use gate::{Gate, Parsed, Served, Tracked};

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
    /// The client has sent something (its handshake or a request head) that was read.
    heard: AtomicBool,
    /// The socket, to see whether the client sent bytes not read yet.
    fd: Option<std::os::fd::RawFd>,
    /// Asked to close (evicted).
    evict: Notify,
}

impl Live {
    fn idle(&self) -> bool {
        self.handshaking.load(Ordering::Relaxed) || self.inflight.load(Ordering::Relaxed) == 0
    }

    /// The client has sent bytes: read already, or waiting in the socket (a task not polled
    /// yet under load has not read its client's handshake, yet that client is no silent one).
    fn spoke(&self) -> bool {
        self.heard.load(Ordering::Relaxed) || self.fd.is_some_and(unread_bytes)
    }
}

/// Bytes in the receive queue of socket `fd`. On an fd that is closed or reused meanwhile the
/// answer is wrong but harmless: it only orders evictions.
fn unread_bytes(fd: std::os::fd::RawFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through a pointer to a local; on a bad fd the call
    // fails (EBADF, ENOTTY) and writes nothing.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    r == 0 && n > 0
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
    fn admit(
        self: &Arc<Self>,
        source: Option<Source>,
        fd: Option<std::os::fd::RawFd>,
    ) -> Option<Slot> {
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
        let live = Arc::new(Live {
            fd,
            ..Live::default()
        });
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
    /// (its task ends shortly): the oldest of those that never sent a byte, else the oldest.
    fn evict_oldest_idle(&self, t: &mut Table, source: Option<&Source>) -> bool {
        let candidate = |silent: bool| {
            t.conns
                .iter()
                .find(|(_, (live, src))| {
                    live.idle()
                        && (!silent || !live.spoke())
                        && source.is_none_or(|s| src.as_ref() == Some(s))
                })
                .map(|(id, _)| *id)
        };
        let Some(id) = candidate(true).or_else(|| candidate(false)) else {
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

/// Give glibc's freed heap back to the system (it keeps it otherwise): SQLite's allocations,
/// and every allocation of a program on the system allocator. `slapos-master`'s own
/// allocations are jemalloc's, which returns freed pages after its decay (10 s).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes read at a time while a request head arrives.
const HEAD_CHUNK: usize = 1024;

/// A long poll waiting outside hyper (see the module doc).
pub struct Parked {
    /// When its wait ends.
    pub deadline: Instant,
    /// Ready when the poll has an answer: a change, its deadline, shutdown.
    pub ready: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Whether a check of [`Parking::park`] lets a request wait.
pub type ParkCheck = Pin<Box<dyn Future<Output = Option<Parked>> + Send>>;

/// Which requests may wait outside hyper (see the module doc): the router's own rules, given
/// to [`serve`] by the application.
pub trait Parking: Send + Sync + 'static {
    /// A `GET` of `target` (path and query) by `peer`: `None` when it is served at once, else
    /// the check that decides whether it waits (its `None`: served at once).
    fn park(&self, peer: &Peer, target: &str) -> Option<ParkCheck>;
}

/// Attached to a request that waited outside hyper: its wait ends at this instant.
#[derive(Clone, Copy, Debug)]
pub struct ParkedUntil(pub Instant);

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
    parking: Option<Arc<dyn Parking>>,
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
            parking: parking.clone(),
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
    parking: Option<Arc<dyn Parking>>,
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
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let Some(slot) = self.registry.admit(source, Some(fd)) else {
            tracing::debug!(%addr, "connection refused: limits reached");
            return;
        };
        match self.security.clone() {
            Security::Plain(_) => {
                let peer = Peer::plain(addr, uid);
                Box::pin(self.http(Box::new(stream), peer, slot)).await;
            }
            Security::Tls(acceptor) => {
                slot.live.handshaking.store(true, Ordering::Relaxed);
                let timeout = self.registry.limits.handshake_timeout;
                // Boxed, as the stream after it: the task keeps pointers, not a copy of the
                // handshake's state or the TLS stream (1.2 KB) for the connection's life.
                let live = slot.live.clone();
                let handshake = async move {
                    // The first bytes of the handshake: no longer a silent connection.
                    stream.readable().await?;
                    live.heard.store(true, Ordering::Relaxed);
                    accept(&acceptor, stream).await
                };
                let hs = tokio::select! {
                    r = tokio::time::timeout(timeout, Box::pin(handshake)) => r,
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
                Box::pin(self.http(tls, peer, slot)).await;
            }
        }
    }

    /// Serve HTTP/1.1 on an established connection until it closes, is evicted or the server
    /// shuts down (in-flight requests then finish first), one request at a time (see the
    /// module doc).
    async fn http<I>(mut self, mut io: I, peer: Peer, slot: Slot)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let live = slot.live.clone();
        // Read from the socket, not yet given to hyper.
        let mut buf = Vec::new();
        loop {
            // Boxed, as every phase of a connection: the task holds only what is live now.
            let next = Box::pin(self.next_head(&mut io, &mut buf, &live, peer.addr));
            let head = match next.await {
                Some(Parsed::Head(head)) => head,
                Some(Parsed::Hyper) => {
                    let pre = Bytes::from(std::mem::take(&mut buf));
                    Box::pin(self.hyper(io, pre, u64::MAX, &peer, &live, None)).await;
                    break;
                }
                Some(Parsed::Partial) | None => break,
            };
            let mut until = None;
            let mut busy = None;
            if let (Some(parking), Some(target)) = (&self.parking, &head.get)
                && let Some(check) = parking.park(&peer, target)
            {
                busy = Some(Busy::new(live.clone()));
                if let Some(parked) = check.await {
                    buf.shrink_to_fit();
                    match Box::pin(self.wait_parked(&mut io, &mut buf, parked)).await {
                        Some(t) => until = Some(t),
                        None => break,
                    }
                }
            }
            let pre = Bytes::from(std::mem::take(&mut buf));
            let serving = Box::pin(self.hyper(io, pre, head.total, &peer, &live, until));
            let Some((back, rest)) = serving.await else {
                break;
            };
            drop(busy);
            (io, buf) = (back, rest);
        }
        drop(slot);
    }

    /// Read the next request head into `buf` (it may hold the start already): `None` when the
    /// connection ends first (closed, no complete head within the header timeout, evicted,
    /// shutting down).
    async fn next_head<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        buf: &mut Vec<u8>,
        live: &Live,
        addr: SocketAddr,
    ) -> Option<Parsed> {
        let limits = &self.registry.limits;
        let deadline = Instant::now() + limits.header_timeout;
        // Parsed again only when the bytes read may end the head (and at the first bytes, so
        // another protocol is answered at once): a client trickling its head byte by byte costs
        // one scan, not one per byte.
        let mut scanned = 0;
        loop {
            if !buf.is_empty() && (scanned == 0 || gate::may_end(buf, scanned)) {
                scanned = buf.len();
                match gate::parse(buf) {
                    Parsed::Partial => {}
                    done => return Some(done),
                }
            }
            if buf.len() >= limits.max_buf {
                // Too large a head: hyper answers it (431).
                return Some(Parsed::Hyper);
            }
            if *self.stop.borrow() {
                return None;
            }
            buf.reserve(HEAD_CHUNK.min(limits.max_buf.saturating_sub(buf.len()).max(1)));
            tokio::select! {
                r = io.read_buf(buf) => match r {
                    Ok(0) => return None,
                    Ok(_) => live.heard.store(true, Ordering::Relaxed),
                    Err(e) => {
                        tracing::debug!(%addr, "connection ended: {e}");
                        return None;
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(%addr, "no request head within {:?}: closed", limits.header_timeout);
                    return None;
                }
                () = live.evict.notified() => {
                    tracing::debug!(%addr, "connection evicted: the master is at its connection limit");
                    return None;
                }
                _ = self.stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Hold a parked poll until it has an answer: the instant its wait ends (now, on
    /// shutdown), or `None` when the client went away. Bytes the client sends meanwhile (a
    /// pipelined request) are kept in `buf`, up to the head limit.
    async fn wait_parked<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        buf: &mut Vec<u8>,
        parked: Parked,
    ) -> Option<Instant> {
        let Parked {
            deadline,
            mut ready,
        } = parked;
        let max = self.registry.limits.max_buf;
        let mut more = [0u8; 128];
        loop {
            tokio::select! {
                () = &mut ready => return Some(deadline),
                _ = self.stop.wait_for(|s| *s) => return Some(Instant::now()),
                r = io.read(&mut more), if buf.len() < max => match r {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&more[..n]),
                },
            }
        }
    }

    /// hyper serves the connection: the request of `allow` bytes that starts `pre`, or, with
    /// `u64::MAX`, the whole rest of the connection. Gives the connection back (and the bytes
    /// read past that request) once its response is out, or `None` when the connection ended.
    async fn hyper<I>(
        &mut self,
        io: I,
        pre: Bytes,
        allow: u64,
        peer: &Peer,
        live: &Arc<Live>,
        until: Option<Instant>,
    ) -> Option<(I, Vec<u8>)>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = peer.addr;
        let served = Arc::new(Served::default());
        let service = {
            let (router, peer, live, served) = (
                self.router.clone(),
                peer.clone(),
                live.clone(),
                served.clone(),
            );
            hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer.clone()));
                if let Some(t) = until {
                    req.extensions_mut().insert(ParkedUntil(t));
                }
                let busy = Busy::new(live.clone());
                let (router, served) = (router.clone(), served.clone());
                async move {
                    let resp = router.oneshot(req.map(axum::body::Body::new)).await;
                    drop(busy);
                    resp.map(|r| r.map(|body| Tracked::new(body, served)))
                }
            })
        };
        let limits = &self.registry.limits;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_buf.max(8192));
        let gate = Gate::new(io, pre, allow, served.clone());
        // Boxed: hyper's state exists only while it serves, not in every connection's task.
        let mut conn = Box::new(builder.serve_connection(TokioIo::new(gate), service));
        let one = allow != u64::MAX;
        let mut stopping = false;
        loop {
            tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| match Pin::new(&mut *conn).poll(cx) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    Poll::Pending if one && served.is_out() => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }) => match r {
                    Some(r) => {
                        if let Err(e) = r {
                            tracing::debug!(%addr, "connection ended: {e}");
                        }
                        return None;
                    }
                    None => break,
                },
                () = live.evict.notified() => {
                    tracing::debug!(%addr, "connection evicted: the master is at its connection limit");
                    return None;
                }
                r = self.stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    if r.is_ok() {
                        Pin::new(&mut *conn).graceful_shutdown();
                    }
                }
            }
        }
        let parts = conn.into_parts();
        let gate = parts.io.into_inner();
        if gate.allow != 0 {
            // hyper answered without reading the whole request (an early error): what is left
            // is no request of its own.
            return None;
        }
        let mut rest = parts.read_buf.to_vec();
        rest.extend_from_slice(&gate.pre);
        Some((gate.inner, rest))
    }
}

/// The TLS handshake, its stream boxed (see [`Conn::run`]).
async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<Box<tokio_rustls::server::TlsStream<TcpStream>>> {
    acceptor.accept(stream).await.map(Box::new)
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
        let a = r.admit(None, None).unwrap();
        let b = r.admit(None, None).unwrap();
        let c = r.admit(None, None).unwrap();
        // a is busy: b is the oldest idle one.
        let _busy = Busy::new(a.live.clone());
        let d = r.admit(None, None).unwrap();
        assert_eq!(r.evictions.load(Ordering::Relaxed), 1);
        assert!(!lock(&r.table).conns.contains_key(&b.id));
        // Everything busy: refused.
        let _all = [&c, &d].map(|s| Busy::new(s.live.clone()));
        assert!(r.admit(None, None).is_none());
        drop(b); // its task ends: nothing left to give back twice
        assert_eq!(lock(&r.table).conns.len(), 3);
    }

    #[test]
    fn a_silent_connection_is_evicted_before_one_that_spoke() {
        let r = Registry::new(limits(3, 10));
        let spoke = r.admit(None, None).unwrap();
        let silent = r.admit(None, None).unwrap();
        let _c = r.admit(None, None).unwrap();
        spoke.live.heard.store(true, Ordering::Relaxed);
        let _d = r.admit(None, None).unwrap();
        let t = lock(&r.table);
        assert!(t.conns.contains_key(&spoke.id), "the older one spoke: kept");
        assert!(
            !t.conns.contains_key(&silent.id),
            "the oldest silent one went"
        );
        drop(t);
        // Only connections that spoke are idle: the oldest of them goes.
        for s in [&_c, &_d] {
            s.live.heard.store(true, Ordering::Relaxed);
        }
        let _e = r.admit(None, None).unwrap();
        assert!(!lock(&r.table).conns.contains_key(&spoke.id));
    }

    /// Bytes waiting in a socket count as speaking, before the task reads them.
    #[test]
    fn unread_bytes_in_the_socket_make_a_connection_not_silent() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut spoke_c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (spoke_s, _) = l.accept().unwrap();
        let _silent_c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (silent_s, _) = l.accept().unwrap();
        spoke_c.write_all(b"\x16\x03\x01").unwrap();
        let fd = |s: &std::net::TcpStream| Some(std::os::fd::AsRawFd::as_raw_fd(s));
        let r = Registry::new(limits(2, 10));
        let spoke = r.admit(None, fd(&spoke_s)).unwrap();
        let silent = r.admit(None, fd(&silent_s)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !spoke.live.spoke() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(spoke.live.spoke() && !silent.live.spoke());
        let _new = r.admit(None, None).unwrap();
        let t = lock(&r.table);
        assert!(
            t.conns.contains_key(&spoke.id),
            "its client has sent bytes: kept"
        );
        assert!(!t.conns.contains_key(&silent.id));
    }

    #[test]
    fn unproven_sources_are_capped_until_they_prove_an_identity() {
        let r = Registry::new(limits(100, 2));
        let src = || Some(Source::Uid(65534));
        // At its cap, a source's new connection replaces its own oldest idle one.
        let old = r.admit(src(), None).unwrap();
        let a = r.admit(src(), None).unwrap();
        let _a_busy = Busy::new(a.live.clone());
        let _b = r.admit(src(), None).unwrap();
        assert!(
            !lock(&r.table).conns.contains_key(&old.id),
            "its own oldest idle went"
        );
        drop(old);
        let _b_busy = Busy::new(_b.live.clone());
        assert!(
            r.admit(src(), None).is_none(),
            "all of its share busy: refused"
        );
        assert!(
            r.admit(Some(Source::Uid(1000)), None).is_some(),
            "another source"
        );
        assert!(r.admit(None, None).is_some(), "exempt");
        r.exempt(a.id);
        let c = r.admit(src(), None);
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

/// The connection loop against real sockets and hyper: parked requests, framing, fallbacks.
#[cfg(test)]
mod loop_tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::AsyncWriteExt;

    /// Parks `GET /park?…` until `release` fires; counts the parked futures still alive.
    #[derive(Clone, Default)]
    struct TestParking {
        release: Arc<Notify>,
        alive: Arc<AtomicUsize>,
    }

    struct Alive(Arc<AtomicUsize>);

    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Parking for TestParking {
        fn park(&self, _peer: &Peer, target: &str) -> Option<ParkCheck> {
            if !target.starts_with("/park?") {
                return None;
            }
            let t = self.clone();
            Some(Box::pin(async move {
                t.alive.fetch_add(1, Ordering::SeqCst);
                let alive = Alive(t.alive.clone());
                Some(Parked {
                    deadline: Instant::now() + Duration::from_secs(60),
                    ready: Box::pin(async move {
                        let _alive = alive;
                        t.release.notified().await;
                    }),
                })
            }))
        }
    }

    struct Setup {
        addr: SocketAddr,
        parking: TestParking,
        calls: Arc<AtomicUsize>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn setup(limits: Limits) -> Setup {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let router = Router::new()
            .route(
                "/park",
                get(move |parked: Option<axum::Extension<ParkedUntil>>| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async move { if parked.is_some() { "parked" } else { "direct" } }
                }),
            )
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/refuse",
                post(|| async { (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "no") }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let parking = TestParking::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let p: Arc<dyn Parking> = Arc::new(parking.clone());
        let security = Security::Plain(LocalTrust::new(Vec::new()));
        let server = tokio::spawn(serve(listener, router, security, limits, Some(p), async {
            let _ = rx.await;
        }));
        Setup {
            addr,
            parking,
            calls,
            stop: Some(tx),
            server,
        }
    }

    /// Read one response (head and a `content-length` body): status and body.
    async fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String) {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(buf) {
                let len: usize = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                    });
                let code = r.code.unwrap();
                if buf.len() >= n + len {
                    let body = String::from_utf8(buf[n..n + len].to_vec()).unwrap();
                    buf.drain(..n + len);
                    return (code, body);
                }
            }
            let got = tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf))
                .await
                .expect("a response within 10 s")
                .unwrap();
            assert!(got > 0, "connection closed; read so far: {:?}", text(buf));
        }
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// Whether the server closed `s` (EOF) within 10 s.
    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    const POLL: &str = "GET /park?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test]
    async fn a_parked_request_waits_outside_the_router_and_the_connection_goes_on() {
        let t = setup(Limits::default()).await;
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(POLL.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(t.parking.alive.load(Ordering::SeqCst), 1, "parked");
        assert_eq!(
            t.calls.load(Ordering::SeqCst),
            0,
            "the router has not seen it"
        );
        t.parking.release.notify_one();
        assert_eq!(response(&mut s, &mut buf).await, (200, "parked".into()));
        assert_eq!(t.parking.alive.load(Ordering::SeqCst), 0);
        // Same connection: a body framed by Content-Length, then two pipelined requests (the
        // second one a GET that is not parked), then a chunked body (hyper's from then on)
        // and one more request after it.
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        assert_eq!(response(&mut s, &mut buf).await, (200, "hello".into()));
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
              GET /park HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(response(&mut s, &mut buf).await, (200, "abc".into()));
        assert_eq!(response(&mut s, &mut buf).await, (200, "direct".into()));
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nxyz\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(response(&mut s, &mut buf).await, (200, "xyz".into()));
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        assert_eq!(response(&mut s, &mut buf).await, (200, "ok".into()));
        assert_eq!(t.calls.load(Ordering::SeqCst), 2);
        drop(t.stop);
        t.server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_client_gone_while_parked_frees_its_wait_and_shutdown_answers_the_parked() {
        let mut t = setup(Limits::default()).await;
        let mut gone = TcpStream::connect(t.addr).await.unwrap();
        gone.write_all(POLL.as_bytes()).await.unwrap();
        let mut stays = TcpStream::connect(t.addr).await.unwrap();
        stays.write_all(POLL.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(t.parking.alive.load(Ordering::SeqCst), 2);
        drop(gone);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            t.parking.alive.load(Ordering::SeqCst),
            1,
            "its wait was dropped"
        );
        // Shutdown: the parked poll is answered, then its connection closes.
        let _ = t.stop.take().unwrap().send(());
        let mut buf = Vec::new();
        assert_eq!(response(&mut stays, &mut buf).await, (200, "parked".into()));
        assert!(closed(&mut stays).await);
        t.server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn unread_bodies_idle_clients_and_partial_heads_end_their_connection() {
        let t = setup(Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        // Answered before its body was read: the rest is no request of its own.
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(response(&mut s, &mut buf).await.0, 413);
        assert!(closed(&mut s).await);
        // Nothing, or half a head, within the header timeout: closed.
        let mut idle = TcpStream::connect(t.addr).await.unwrap();
        assert!(closed(&mut idle).await);
        let mut half = TcpStream::connect(t.addr).await.unwrap();
        half.write_all(b"GET /park HTTP/1.1\r\nHo").await.unwrap();
        assert!(closed(&mut half).await);
        // A head of exactly the head limit, in 1 KB pieces, without its end: hyper answers 431
        // (all of it read, so the close that follows is clean).
        let mut head = b"GET /park HTTP/1.1\r\n".to_vec();
        while head.len() < Limits::default().max_buf {
            head.extend_from_slice(format!("x-pad: {}\r\n", "a".repeat(1000)).as_bytes());
        }
        head.truncate(Limits::default().max_buf);
        let mut big = TcpStream::connect(t.addr).await.unwrap();
        for piece in head.chunks(1024) {
            big.write_all(piece).await.unwrap();
        }
        assert_eq!(response(&mut big, &mut buf).await.0, 431);
        buf.clear();
        // A head hyper refuses: hyper answers it.
        let mut bad = TcpStream::connect(t.addr).await.unwrap();
        bad.write_all(b"GET /park HTTP/1.1\r\nbad header\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut bad, &mut buf).await.0, 400);
        drop(t.stop);
        t.server.await.unwrap().unwrap();
    }
}
