//! What every handler shares ([`AppState`]) and the clock.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::db::Db;
use crate::hub::Hub;
use crate::local::LocalTrust;
use crate::metrics::Metrics;
use crate::pki::Ca;
use crate::proxy_config::SlapConfig;

/// What every handler shares: the database worker and the long-poll hub.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database worker.
    pub db: Db,
    /// Long-poll wake-ups and last contact.
    pub hub: Arc<Hub>,
    /// Configuration of the classic SLAP routes (`slapos-master serve --cfg`).
    pub slap: Arc<SlapConfig>,
    /// The certificate authority, when the master serves mTLS (enrollment, partition
    /// certificates).
    pub ca: Option<Arc<Ca>>,
    /// Who local plain-HTTP callers are.
    pub local: LocalTrust,
    /// Bytes of request bodies being received at once, over all requests.
    pub bodies: BodyBudget,
    /// What `GET /metrics` shows.
    pub metrics: Arc<Metrics>,
    /// The remote masters requests may be delegated to (empty: none).
    pub federation: Arc<crate::remotes::Federation>,
    /// Wakes the forwarding task when a request was delegated.
    pub federation_wake: Arc<crate::remotes::Wake>,
}

/// The connection a request came on is from this host (plain HTTP with a known client uid, or
/// an in-process call): set by `identify`, read by `register` (local uids of partitions).
#[derive(Clone, Copy, Debug)]
pub struct FromThisHost(pub bool);

/// Bytes of request bodies the master receives at once, over all requests (see `body_gate`).
pub const BODY_BUDGET: usize = 128 << 20;

/// The shared budget of body bytes in flight, counted in KiB.
#[derive(Clone, Debug)]
pub struct BodyBudget(pub(crate) Arc<tokio::sync::Semaphore>);

impl Default for BodyBudget {
    fn default() -> Self {
        Self::new(BODY_BUDGET)
    }
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(bytes.div_ceil(1024))))
    }

    /// KiB left (tests).
    pub fn available_kib(&self) -> usize {
        self.0.available_permits()
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
