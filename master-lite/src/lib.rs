//! # master-lite — the lightweight master
//!
//! A SlapOS-style master for one site: computers (nodes) register their partitions, users supply
//! software releases and request instances, nodes long-poll their desired state and report back.
//! The API is our own versioned JSON (`/v1`, messages in `slapos-proto`, reference in
//! `docs/api.md`); its semantics follow SlapOS (title unique within a tree, first free partition
//! in registration order, tree destruction, revisions that change only when something changed).
//!
//! ## Design
//!
//! * [`store`]: all state in embedded SQLite (WAL, `synchronous = FULL`, numbered migrations),
//!   one transaction per API call. Pure request semantics live there, free of HTTP.
//! * [`db`]: one OS thread owns the store; handlers send it closures over a bounded queue, so no
//!   SQLite call (or fsync) runs on a runtime thread.
//! * [`hub`]: per-computer `watch` channels that wake long polls as soon as a transaction that
//!   changes a computer's desired state commits.
//! * [`http`]: the native routes; handlers validate input into proto types and make one store
//!   call. One error type ([`ApiError`]) maps to `{kind, error}` JSON bodies and hides internals
//!   on 5xx; the store has its own ([`StoreError`]).
//! * [`slap`]: the classic SLAP routes of slapos.core 1.26.1 (`slapos request/supply`, the
//!   `slap` library, slapgrid) over the same store; `slapos-master serve --cfg` reads
//!   slapproxy's configuration file (`docs/slap.md`).
//! * [`Master`] / [`serve`]: open the database, start the worker and serve a listener until a
//!   shutdown future completes (used by `slapos-master serve` and by `standalone`).
//! * Identity (issue 8, `docs/identity.md`): [`pki`] is the master's CA (rcgen), [`tls`] its
//!   mTLS configuration ([`Master::run_tls`]), [`auth`] the one authorization decision every
//!   handler asks, [`middleware`] attaches the caller's identity; [`local`] names local
//!   plain-HTTP callers ([`Master::run`]).
//! * [`server`]: the accept loop of both listeners and the limits that keep slow, idle or
//!   numerous clients from taking the master down; [`mod@app`] composes every route.
//! * [`console`]: the read-only web console at `/` (embedded page, JSON view with secrets
//!   masked on the server, `docs/master-lite.md`).
//!
//! ## Invariants
//!
//! * An acknowledged write is on disk (fsynced WAL) before the answer leaves.
//! * A refused call (4xx) changes nothing: input is validated before the transaction, and any
//!   error inside it rolls it back.
//! * An identical re-request changes no revision and no etag; every change a node acts on
//!   changes both.
//!
//! ## Limits
//!
//! * Plain HTTP is for this host: a caller is the operator, a partition or nobody according to
//!   the uid owning its socket ([`local`]); `serve` refuses plain HTTP on a non-loopback address
//!   unless `--allow-plain-http`, by which every caller of that network is the operator.
//! * One writer thread: throughput is bounded by one fsync per write call (see `master-bench`).
//! * One process over one SQLite file: no replicas yet (the fleet master is issue 13).
//! * Federation ([`federation`], slapproxy's multimaster): requests delegated to other masters
//!   are forwarded by one task per process, which asks again until the remote answers (never
//!   a synchronous 523 as slapproxy; shared requests over SLAP are not forwarded).

pub mod admin;
pub mod app;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod console;
pub mod db;
pub mod error;
pub mod federation;
pub mod http;
pub mod hub;
pub mod local;
pub mod metrics;
pub mod middleware;
pub mod pki;
pub mod proxy_config;
pub mod remotes;
pub mod server;
pub mod slap;
pub mod standalone;
pub mod state;
pub mod store;
#[doc(hidden)]
pub mod testpg;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use app::app;
pub use error::{ApiError, MasterError};
pub use state::{AppState, now_ms};
pub use store::{OpenError, Store, StoreError};

/// Default listening address of `slapos-master serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8355";

/// Default master URL of the client subcommands (matches [`DEFAULT_LISTEN`]).
pub const DEFAULT_MASTER_URL: &str = "http://127.0.0.1:8355";

/// Connections (and database worker threads) of one replica on PostgreSQL.
pub const PG_CONNECTIONS: usize = 4;

/// A master: its database worker and the state shared by its handlers.
#[derive(Debug)]
pub struct Master {
    state: AppState,
    worker: db::Worker,
    limits: server::Limits,
}

impl Master {
    /// Open (or create) the database at `path` and start the worker. Blocking (file I/O).
    pub fn open(path: &Path) -> Result<Self, MasterError> {
        Self::with_readers(Store::open(path, now_ms())?, path)
    }

    /// [`Master::open`], tightening loose database file modes instead of refusing them (for a
    /// directory the master owns, e.g. `standalone`'s; see [`store::disk`]).
    pub fn open_fixing_modes(path: &Path) -> Result<Self, MasterError> {
        Self::with_readers(Store::open_with(path, now_ms(), true)?, path)
    }

    /// The writer `store` of the SQLite file `path` with group commit, and
    /// [`db::SQLITE_READERS`] + [`db::SQLITE_LOOKUPS`] read-only connections for the reads.
    fn with_readers(store: Store, path: &Path) -> Result<Self, MasterError> {
        let open = |n| {
            (0..n)
                .map(|_| Store::open_reader(path))
                .collect::<Result<Vec<_>, _>>()
        };
        let (readers, lookups) = (open(db::SQLITE_READERS)?, open(db::SQLITE_LOOKUPS)?);
        let hub = Arc::new(hub::Hub::default());
        let (db, worker) = db::start_sqlite(store, readers, lookups, hub.clone())?;
        Ok(Self::with_worker(db, worker, hub))
    }

    /// A master over an in-memory database (tests, throw-away setups).
    pub fn open_in_memory() -> Result<Self, MasterError> {
        Self::with_store(Store::open_in_memory(now_ms())?)
    }

    /// Open the database `db` names and start the workers: on PostgreSQL,
    /// [`PG_CONNECTIONS`] connections and the listener of other replicas' changes. Blocking.
    pub fn open_db(db: &store::DbUrl) -> Result<Self, MasterError> {
        match db {
            store::DbUrl::Sqlite(p) => Self::open(p),
            store::DbUrl::Postgres(url) => {
                let hub = Arc::new(hub::Hub::default());
                let (db, worker) = db::start_postgres(url, PG_CONNECTIONS, now_ms(), hub.clone())?;
                Ok(Self::with_worker(db, worker, hub))
            }
        }
    }

    fn with_store(store: Store) -> Result<Self, MasterError> {
        let hub = Arc::new(hub::Hub::default());
        let (db, worker) = db::start(store, hub.clone())?;
        Ok(Self::with_worker(db, worker, hub))
    }

    fn with_worker(db: db::Db, worker: db::Worker, hub: Arc<hub::Hub>) -> Self {
        let metrics = Arc::new(metrics::Metrics::new(db.timings()));
        Self {
            state: AppState {
                db,
                hub,
                slap: Arc::default(),
                ca: None,
                local: local::LocalTrust::default(),
                bodies: state::BodyBudget::default(),
                metrics,
                federation: Arc::default(),
                federation_wake: Arc::default(),
            },
            worker,
            limits: server::Limits::default(),
        }
    }

    /// Configure the classic SLAP routes (default computer, software products).
    pub fn set_slap_config(&mut self, cfg: slap::SlapConfig) {
        self.state.slap = Arc::new(cfg);
    }

    /// Delegate requests to other masters ([`federation`]); [`Master::run`] and
    /// [`Master::run_tls`] then forward them.
    pub fn set_federation(&mut self, fed: federation::Federation) {
        self.state.federation = Arc::new(fed);
    }

    /// Give the master its certificate authority: enables enrollment and partition
    /// certificates (needed by [`Master::run_tls`]).
    pub fn set_ca(&mut self, ca: Arc<pki::Ca>) {
        self.state.ca = Some(ca);
    }

    /// Connection limits of [`Master::run`] and [`Master::run_tls`] (default:
    /// [`server::Limits::default`]; `serve` derives them from the open-file limit).
    pub fn set_limits(&mut self, limits: server::Limits) {
        self.limits = limits;
    }

    /// Who local plain-HTTP callers are (default: root and the master's own user are the
    /// operator; see [`local`]).
    pub fn set_local_trust(&mut self, trust: local::LocalTrust) {
        self.state.local = trust;
    }

    /// The state handlers share (for [`fn@app`], or to call the store directly).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// The router of the native API.
    pub fn router(&self) -> axum::Router {
        app(self.state.clone())
    }

    /// Serve `listener` (plain HTTP) until `shutdown` completes, then end the waiting long
    /// polls, finish the open requests and close the database.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MasterError> {
        let security = server::Security::Plain(self.state.local.clone());
        self.serve(listener, security, shutdown).await
    }

    async fn serve(
        self,
        listener: tokio::net::TcpListener,
        security: server::Security,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MasterError> {
        let addr = addr_of(&listener);
        let Master {
            state,
            worker,
            limits,
        } = self;
        let hub = state.hub.clone();
        let forwarding = (!state.federation.remotes.is_empty()).then(|| {
            federation::spawn(
                state.db.clone(),
                state.federation.clone(),
                state.federation_wake.clone(),
            )
        });
        let parking: Arc<dyn server::Parking> = Arc::new(http::DesiredParking(state.clone()));
        let router = app(state);
        let served = server::serve(
            listener,
            router,
            security,
            limits,
            Some(parking),
            shut_down(shutdown, hub),
        )
        .await
        .map_err(|source| MasterError::Serve { addr, source });
        if let Some(task) = forwarding {
            task.abort();
        }
        close(worker).await;
        served
    }
}

/// The listening address for messages (`?` if the socket cannot tell).
fn addr_of(listener: &tokio::net::TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Waits for `shutdown`, then ends the held long polls (graceful shutdown of both servers).
async fn shut_down(shutdown: impl Future<Output = ()>, hub: Arc<hub::Hub>) {
    shutdown.await;
    hub.shut_down();
}

/// Closes the database worker once the server has drained (bounded wait).
async fn close(worker: db::Worker) {
    if tokio::time::timeout(Duration::from_secs(30), worker.close())
        .await
        .is_err()
    {
        tracing::warn!("the database worker did not stop within 30 s");
    }
}

impl Master {
    /// Serve `listener` over mTLS with `config` (see [`tls::server_config`]) until `shutdown`
    /// completes; every request carries the identity of its client certificate.
    pub async fn run_tls(
        self,
        listener: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MasterError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        self.serve(listener, server::Security::Tls(acceptor), shutdown)
            .await
    }
}

/// Refuse plain HTTP on `addr` unless it is a loopback address or `allow` is set.
pub fn check_plain_http(addr: SocketAddr, allow: bool) -> Result<(), MasterError> {
    if addr.ip().is_loopback() || allow {
        Ok(())
    } else {
        Err(MasterError::PlainHttpRefused {
            addr: addr.to_string(),
        })
    }
}

/// `https://ADDR`, the URL clients use for a bound TLS address.
pub fn tls_url_of(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

/// Connections the kernel queues for `accept` (the system's `somaxconn` caps it): a burst of
/// connections (a fleet reconnecting, or a flood) must not overflow the queue and make a
/// client wait for a SYN retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Bind `addr` (port 0 picks a free port); read the bound address with `local_addr()`.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, MasterError> {
    let err = |source| MasterError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await.map_err(err)? {
        let socket = match a {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(err)?;
        let bound = socket
            .set_reuseaddr(true)
            .and_then(|()| socket.bind(a))
            .and_then(|()| socket.listen(LISTEN_BACKLOG));
        match bound {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })))
}

/// Open the database at `db` and serve `listener` until `shutdown` completes.
/// The bound address is `listener.local_addr()`, known before the call.
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    let path = db.to_owned();
    let master = tokio::task::spawn_blocking(move || Master::open(&path))
        .await
        .map_err(|e| MasterError::Worker(std::io::Error::other(e.to_string())))??;
    master.run(listener, shutdown).await
}

/// What `slapos-master serve` prints first on stdout, followed by the URL.
pub const LISTENING: &str = "listening on ";

/// Tells systemd that the master serves (`Type=notify`, dist/systemd/) and feeds its watchdog
/// from a task of the calling runtime, so a runtime that stops scheduling stops the pings. A
/// notification that fails is logged: it never stops the master. Call it inside the runtime.
pub fn notify_systemd_ready() {
    match slapos_sdnotify::ready_from_env() {
        Ok(None) => {}
        Ok(Some(dog)) => {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(dog.every()).await;
                    if let Err(e) = dog.ping() {
                        tracing::warn!("systemd watchdog: {e}");
                    }
                }
            });
        }
        Err(e) => tracing::warn!("systemd notification: {e}"),
    }
}

/// The URL in a `listening on http://ADDR` line.
pub fn listening_url(line: &str) -> Option<&str> {
    line.trim().strip_prefix(LISTENING)
}

/// `http://ADDR`, the URL clients use for a bound address.
pub fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
