//! The link to the master: a small trait over the blocking client, the outbox of messages the
//! node owes the master, and the two tasks that drive them (poller and flusher).
//!
//! * [`MasterLink`] is the seam: [`ClientLink`] is the real side (slapos-client over HTTP, or
//!   over mTLS with the computer's certificate, [`ClientLink::with_identity`], which also fetches
//!   partition certificates).
//!   Every call runs on its own short-lived OS thread ([`off_thread`]), not on tokio's blocking
//!   pool, so a long poll in flight never delays a runtime shutdown.
//! * [`Outbox`]: reports, connection parameters and child requests waiting to be sent. Latest
//!   wins per key (one pending report per partition, one per release, …), so it is bounded by
//!   the number of partitions and releases. The flusher sends in order; when the master is
//!   unreachable it keeps everything and retries with backoff (and at once when the poller sees
//!   the master again); an item the master refuses (4xx) is logged and dropped. The outbox is
//!   in memory: after a node restart every partition is processed again, which re-generates
//!   every report.
//! * The poller registers the computer (after checking the protocol version), then long-polls the
//!   desired state; each new state is written to the cache and handed to the node. While the
//!   master is unreachable it retries with backoff up to `poll_interval`.

pub mod cache;
pub mod slap;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slapos_client::{Client, ClientError, Credentials};
use slapos_proto::{
    ComputerId, ConnectionPublish, DesiredState, InstanceRequest, PROTOCOL_VERSION, Params,
    PartitionId, PartitionRef, PartitionReport, RegisterComputer, SoftwareReport, SoftwareUrl,
};
use tokio::sync::{Notify, mpsc, watch};

use crate::backoff::Backoff;
use cache::DesiredCache;

/// A message the node owes the master.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Install state of a release.
    Software(SoftwareReport),
    /// What happened to a partition.
    Report(PartitionId, PartitionReport),
    /// A partition's connection parameters.
    Connection(PartitionId, Params),
    /// A child instance requested by a partition.
    Request(PartitionId, InstanceRequest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Software(SoftwareUrl),
    Report(PartitionId),
    Connection(PartitionId),
    Request(PartitionId, String),
}

impl Outgoing {
    fn key(&self) -> Key {
        match self {
            Self::Software(r) => Key::Software(r.url.clone()),
            Self::Report(p, _) => Key::Report(p.clone()),
            Self::Connection(p, _) => Key::Connection(p.clone()),
            Self::Request(p, r) => Key::Request(p.clone(), r.title.to_string()),
        }
    }
}

/// The node's side of the master API.
pub trait MasterLink: Send + Sync + 'static {
    /// Check the protocol version and register the computer.
    fn register(&self, reg: &RegisterComputer) -> Result<(), ClientError>;
    /// The desired state; `Ok(None)` when `etag` is still current after `wait`.
    fn desired(
        &self,
        etag: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Option<DesiredState>, ClientError>;
    /// Deliver one outgoing message.
    fn send(&self, item: &Outgoing) -> Result<(), ClientError>;
    /// True when the master issues partition certificates over this link (native mTLS).
    fn partition_certificates(&self) -> bool {
        false
    }
    /// A new certificate and key for partition `p` (`Ok(None)` when the link has no
    /// identity: see [`MasterLink::partition_certificates`]).
    fn partition_certificate(&self, _p: &PartitionId) -> Result<Option<Credentials>, ClientError> {
        Ok(None)
    }
}

/// The real link: slapos-client over HTTP, or over mTLS with the computer's certificate.
#[derive(Debug, Clone)]
pub struct ClientLink {
    client: Client,
    computer: ComputerId,
    tls: bool,
}

impl ClientLink {
    /// A link for `computer` to the master at `url` (plain HTTP, or TLS without identity).
    pub fn new(url: &str, computer: ComputerId) -> Result<Self, ClientError> {
        Ok(Self {
            client: Client::new(url)?,
            computer,
            tls: false,
        })
    }

    /// A link over mTLS (`https://` `url`) with the computer's identity.
    pub fn with_identity(
        url: &str,
        computer: ComputerId,
        id: &crate::identity::NodeIdentity,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            client: Client::with_identity(url, &id.ca_pem, &id.cert_pem, &id.key_pem)?,
            computer,
            tls: true,
        })
    }
}

impl MasterLink for ClientLink {
    fn register(&self, reg: &RegisterComputer) -> Result<(), ClientError> {
        let h = self.client.health()?;
        if h.protocol != PROTOCOL_VERSION {
            return Err(ClientError::Api {
                method: "GET",
                url: format!("{}/v1/health", self.client.base_url()),
                status: 400,
                kind: "protocol".into(),
                message: format!(
                    "master speaks protocol {} (version {}), this node speaks {PROTOCOL_VERSION}",
                    h.protocol, h.version
                ),
            });
        }
        self.client.register(reg).map(drop)
    }

    fn desired(
        &self,
        etag: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Option<DesiredState>, ClientError> {
        self.client.desired(&self.computer, etag, wait)
    }

    fn send(&self, item: &Outgoing) -> Result<(), ClientError> {
        let c = &self.computer;
        match item {
            Outgoing::Software(r) => self.client.report_software(c, r),
            Outgoing::Report(p, r) => self.client.report_partition(c, p, r),
            Outgoing::Connection(p, params) => self.client.publish_connection(
                c,
                p,
                &ConnectionPublish {
                    parameters: params.clone(),
                },
            ),
            Outgoing::Request(p, r) => {
                let who = PartitionRef {
                    computer: c.clone(),
                    partition: p.clone(),
                };
                self.client.clone().as_partition(&who).request(r).map(drop)
            }
        }
    }

    fn partition_certificates(&self) -> bool {
        self.tls
    }

    fn partition_certificate(&self, p: &PartitionId) -> Result<Option<Credentials>, ClientError> {
        if !self.tls {
            return Ok(None);
        }
        self.client
            .partition_certificate(&self.computer, p)
            .map(Some)
    }
}

/// Run a blocking call on its own OS thread and await its result. The thread is detached: if
/// the awaiting task is dropped, the call finishes in the background and its result is dropped.
pub async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("slapos-link".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        tracing::warn!("failed to start a link thread: {e}");
        return None;
    }
    rx.await.ok()
}

/// Messages waiting for the master (latest wins per key).
#[derive(Debug, Default)]
pub struct Outbox {
    items: Mutex<VecDeque<(u64, Outgoing)>>,
    seq: Mutex<u64>,
    notify: Notify,
}

impl Outbox {
    /// Queue `item`, replacing a pending one with the same key.
    pub fn push(&self, item: Outgoing) {
        let key = item.key();
        let seq = {
            let mut s = self.seq.lock().unwrap_or_else(|e| e.into_inner());
            *s += 1;
            *s
        };
        {
            let mut q = self.items.lock().unwrap_or_else(|e| e.into_inner());
            q.retain(|(_, i)| i.key() != key);
            q.push_back((seq, item));
        }
        self.notify.notify_one();
    }

    /// Number of pending messages.
    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn front(&self) -> Option<(u64, Outgoing)> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .cloned()
    }

    fn remove(&self, seq: u64) {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _)| *s != seq);
    }

    /// Wake the flusher (the master is back).
    pub fn kick(&self) {
        self.notify.notify_one();
    }
}

/// Send the outbox forever (until the task is dropped).
pub async fn flusher(link: Arc<dyn MasterLink>, outbox: Arc<Outbox>, max_retry: Duration) {
    let mut backoff = Backoff::new(Duration::from_millis(500), max_retry);
    loop {
        let Some((seq, item)) = outbox.front() else {
            outbox.notify.notified().await;
            continue;
        };
        let l = link.clone();
        let it = item.clone();
        let res = off_thread(move || l.send(&it)).await;
        match res {
            Some(Ok(())) => {
                backoff.reset();
                outbox.remove(seq);
            }
            Some(Err(e)) if e.is_unreachable() => {
                let wait = backoff.fail();
                tracing::debug!(
                    "master unreachable, {} message(s) kept, retry in {wait:?}: {e}",
                    outbox.len()
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = outbox.notify.notified() => {}
                }
            }
            Some(Err(e)) => {
                tracing::warn!("master refused a message, dropping it: {e}");
                outbox.remove(seq);
            }
            None => tokio::time::sleep(backoff.fail()).await,
        }
    }
}

/// Link status the poller publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Not contacted yet.
    #[default]
    Unknown,
    /// Last call succeeded.
    Online,
    /// Last call failed to reach the master.
    Offline,
}

/// Poller settings.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// Registration message.
    pub registration: RegisterComputer,
    /// Long-poll hold time (zero: plain polling).
    pub long_poll: Duration,
    /// Fallback polling period and retry cap.
    pub poll_interval: Duration,
}

/// Register, then fetch desired states forever (until the task is dropped). Each new state is
/// cached and sent on `out`.
pub async fn poller(
    link: Arc<dyn MasterLink>,
    settings: PollSettings,
    cache: DesiredCache,
    mut etag: Option<String>,
    out: mpsc::Sender<DesiredState>,
    state: watch::Sender<LinkState>,
    outbox: Arc<Outbox>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), settings.poll_interval);
    let mut registered = false;
    let set_state = |s: LinkState| {
        let changed = state.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
        if changed {
            match s {
                LinkState::Online => {
                    tracing::info!("master reachable");
                    outbox.kick();
                }
                LinkState::Offline => {
                    tracing::warn!("master unreachable: working from the cached desired state")
                }
                LinkState::Unknown => {}
            }
        }
    };
    loop {
        if !registered {
            let l = link.clone();
            let reg = settings.registration.clone();
            match off_thread(move || l.register(&reg)).await {
                Some(Ok(())) => {
                    tracing::info!(
                        computer = %settings.registration.id,
                        partitions = settings.registration.partitions.len(),
                        "registered"
                    );
                    registered = true;
                    set_state(LinkState::Online);
                    backoff.reset();
                }
                Some(Err(e)) => {
                    if e.is_unreachable() {
                        set_state(LinkState::Offline);
                    } else {
                        tracing::error!("registration refused: {e}");
                    }
                    tokio::time::sleep(backoff.fail()).await;
                    continue;
                }
                None => {
                    tokio::time::sleep(backoff.fail()).await;
                    continue;
                }
            }
        }
        let wait = (!settings.long_poll.is_zero() && etag.is_some()).then_some(settings.long_poll);
        let l = link.clone();
        let e = etag.clone();
        let started = tokio::time::Instant::now();
        let res = off_thread(move || l.desired(e.as_deref(), wait)).await;
        match res {
            Some(Ok(Some(d))) => {
                set_state(LinkState::Online);
                backoff.reset();
                if Some(&d.etag) != etag.as_ref() {
                    if let Err(err) = cache.save(&d) {
                        tracing::warn!(
                            "failed to write the desired-state cache `{}`: {err}",
                            cache.path().display()
                        );
                    }
                    etag = Some(d.etag.clone());
                    if out.send(d).await.is_err() {
                        return;
                    }
                } else if wait.is_none() || started.elapsed() < Duration::from_millis(500) {
                    tokio::time::sleep(settings.poll_interval).await;
                }
            }
            Some(Ok(None)) => {
                set_state(LinkState::Online);
                backoff.reset();
                // A master that answers "unchanged" at once does not hold requests: poll slowly.
                if wait.is_none() || started.elapsed() < Duration::from_millis(500) {
                    tokio::time::sleep(settings.poll_interval).await;
                }
            }
            Some(Err(e)) if e.status() == Some(404) => {
                tracing::warn!("master does not know this computer, registering again: {e}");
                registered = false;
            }
            Some(Err(e)) => {
                if e.is_unreachable() {
                    set_state(LinkState::Offline);
                } else {
                    tracing::warn!("desired state: {e}");
                }
                tokio::time::sleep(backoff.fail()).await;
            }
            None => tokio::time::sleep(backoff.fail()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> PartitionId {
        PartitionId::parse(s).unwrap()
    }

    fn report(rev: u64) -> PartitionReport {
        PartitionReport {
            state: slapos_proto::InstanceState::Started,
            revision: rev,
            promises: vec![],
            error: None,
        }
    }

    #[test]
    fn outbox_keeps_the_latest_per_key_in_order() {
        let o = Outbox::default();
        o.push(Outgoing::Connection(pid("p0"), Params::new()));
        o.push(Outgoing::Report(pid("p0"), report(1)));
        o.push(Outgoing::Report(pid("p1"), report(1)));
        o.push(Outgoing::Report(pid("p0"), report(2)));
        assert_eq!(o.len(), 3);
        let (seq, first) = o.front().unwrap();
        assert!(matches!(first, Outgoing::Connection(..)));
        o.remove(seq);
        let (seq, second) = o.front().unwrap();
        assert!(matches!(second, Outgoing::Report(ref p, _) if p.as_str() == "p1"));
        o.remove(seq);
        match o.front().unwrap().1 {
            Outgoing::Report(p, r) => assert_eq!((p.as_str(), r.revision), ("p0", 2)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn off_thread_returns_the_value() {
        assert_eq!(off_thread(|| 6 * 7).await, Some(42));
    }
}
