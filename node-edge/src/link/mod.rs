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
//!   master is unreachable it retries with backoff up to `poll_interval`. Every decision (when
//!   to register, fetch or wait; etag; backoff; link state) is the pure [`Session`]'s; the
//!   poller only does the calls, the sleeps, the cache writes and the logging.
//! * [`fake::FakeLink`]: an in-memory master behind [`MasterLink`] for tests (no HTTP server).
//!
//! Files: [`session`] (the state machine), [`slap`] (the SLAP link), [`cache`] (the on-disk
//! desired state), [`fake`].

pub mod cache;
pub mod fake;
pub mod identity;
pub mod session;
pub mod slap;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slapos_client::{Client, ClientError, Credentials};
use slapos_proto::{
    ComputerId, ConnectionPublish, DesiredState, InstanceRequest, PROTOCOL_VERSION, PartitionId,
    PartitionRef, PartitionReport, RegisterComputer, SoftwareReport, SoftwareUrl, UsageAck,
    UsageBatch,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::util::backoff::Backoff;
use cache::DesiredCache;
pub use session::{Answer, Event, LinkState, Session, Step, Timing};

/// A message the node owes the master.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Install state of a release.
    Software(SoftwareReport),
    /// What happened to a partition.
    Report(PartitionId, PartitionReport),
    /// A partition's connection parameters (and those it publishes for its shared instances).
    Connection(PartitionId, ConnectionPublish),
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
    /// `Some(step)` for a link whose master cannot hold a request (SLAP): it ignores `wait`
    /// and the [`Session`] polls every `step` for as long as a hold would last.
    fn poll_step(&self) -> Option<Duration> {
        None
    }
    /// False for a link whose calls return at once (an in-memory fake): the drivers then call
    /// it on the runtime's thread instead of a thread of its own ([`off_thread`]).
    fn blocks(&self) -> bool {
        true
    }
    /// Post usage samples; `Ok(None)` when this link's master takes no usage (SLAP): the
    /// samples then stay in the node's outbox (folded when it is full).
    fn post_usage(&self, _batch: &UsageBatch) -> Result<Option<UsageAck>, ClientError> {
        Ok(None)
    }
    /// Signal a problem (`slapos-node bang`): on partition `p`, whose instance tree the master
    /// then has processed again, or (`None`) on the whole computer (SLAP's `computerBang`;
    /// the native API has none: [`crate::bang`] bangs each allocated partition instead).
    /// Links without a master (fakes) ignore it.
    fn bang(&self, _p: Option<&PartitionId>, _message: &str) -> Result<(), ClientError> {
        Ok(())
    }
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
        id: &crate::link::identity::NodeIdentity,
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
            Outgoing::Connection(p, conn) => self.client.publish_connection(c, p, conn),
            Outgoing::Request(p, r) => {
                let who = PartitionRef {
                    computer: c.clone(),
                    partition: p.clone(),
                };
                self.client.clone().as_partition(&who).request(r).map(drop)
            }
        }
    }

    fn post_usage(&self, batch: &UsageBatch) -> Result<Option<UsageAck>, ClientError> {
        self.client.post_usage(&self.computer, batch).map(Some)
    }

    fn bang(&self, p: Option<&PartitionId>, message: &str) -> Result<(), ClientError> {
        let Some(p) = p else {
            return Err(ClientError::Api {
                method: "POST",
                url: format!("{}/v1/computers/{}", self.client.base_url(), self.computer),
                status: 0,
                kind: "unsupported".into(),
                message: "the native API has no computer-wide bang: bang a partition".into(),
            });
        };
        let bang = slapos_proto::Bang {
            message: message.to_owned(),
        };
        self.client.bang(&self.computer, p, &bang)
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
        let it = item.clone();
        let res = call(&link, move |l| l.send(&it)).await;
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

/// Run `f` against `link`: on a thread of its own ([`off_thread`]), or inline for a link whose
/// calls never block ([`MasterLink::blocks`]).
async fn call<T: Send + 'static>(
    link: &Arc<dyn MasterLink>,
    f: impl FnOnce(&dyn MasterLink) -> T + Send + 'static,
) -> Option<T> {
    if !link.blocks() {
        return Some(f(&**link));
    }
    let l = link.clone();
    off_thread(move || f(&*l)).await
}

/// Register, then fetch desired states forever (until the task is dropped): the I/O side of
/// [`Session`]. Each new state is cached and sent on `out`.
pub async fn poller(
    link: Arc<dyn MasterLink>,
    settings: PollSettings,
    cache: DesiredCache,
    etag: Option<String>,
    out: mpsc::Sender<DesiredState>,
    state: watch::Sender<LinkState>,
    outbox: Arc<Outbox>,
) {
    let timing = Timing {
        long_poll: settings.long_poll,
        poll_interval: settings.poll_interval,
        poll_step: link.poll_step(),
    };
    let mut session = Session::new(timing, etag);
    loop {
        let started = Instant::now();
        let answer = match session.next(started) {
            Step::Sleep(d) => {
                tokio::time::sleep(d).await;
                continue;
            }
            Step::Register => {
                let reg = settings.registration.clone();
                call(&link, move |l| l.register(&reg))
                    .await
                    .map_or(Answer::Lost, Answer::Registered)
            }
            Step::Fetch { etag, wait } => call(&link, move |l| l.desired(etag.as_deref(), wait))
                .await
                .map_or(Answer::Lost, Answer::Desired),
        };
        for event in session.on_answer(answer, started.elapsed()) {
            match event {
                Event::Link(s) => {
                    state.send_replace(s);
                    match s {
                        LinkState::Online => {
                            tracing::info!("master reachable");
                            outbox.kick();
                        }
                        LinkState::Offline => {
                            tracing::warn!(
                                "master unreachable: working from the cached desired state"
                            )
                        }
                        LinkState::Unknown => {}
                    }
                }
                Event::Registered => tracing::info!(
                    computer = %settings.registration.id,
                    partitions = settings.registration.partitions.len(),
                    "registered"
                ),
                Event::RegistrationRefused(e) => tracing::error!("registration refused: {e}"),
                Event::Forgotten(e) => {
                    tracing::warn!("master does not know this computer, registering again: {e}")
                }
                Event::FetchFailed(e) => tracing::warn!("desired state: {e}"),
                Event::Desired(d) => {
                    if let Err(err) = cache.save(&d) {
                        tracing::warn!(
                            "failed to write the desired-state cache `{}`: {err}",
                            cache.path().display()
                        );
                    }
                    if out.send(d).await.is_err() {
                        return;
                    }
                }
            }
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
        o.push(Outgoing::Connection(
            pid("p0"),
            ConnectionPublish {
                parameters: slapos_proto::Params::new(),
                shared: Default::default(),
            },
        ));
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

    mod poller {
        use super::super::fake::{FakeCall, FakeLink};
        use super::super::session::tests::state;
        use super::super::*;
        use slapos_proto::ComputerId;

        const S: fn(u64) -> Duration = Duration::from_secs;

        struct Running {
            fake: Arc<FakeLink>,
            rx: mpsc::Receiver<DesiredState>,
            link: watch::Receiver<LinkState>,
            cache: DesiredCache,
            task: tokio::task::JoinHandle<()>,
            _dir: tempfile::TempDir,
        }

        impl Drop for Running {
            fn drop(&mut self) {
                self.task.abort();
            }
        }

        /// A poller (5 s hold, 4 s interval) against `fake`, from the cached state `cached`.
        fn start(fake: FakeLink, cached: Option<&str>) -> Running {
            let dir = tempfile::tempdir().unwrap();
            let cache = DesiredCache::new(dir.path());
            let fake = Arc::new(fake);
            let (tx, rx) = mpsc::channel(4);
            let (link_tx, link) = watch::channel(LinkState::Unknown);
            let settings = PollSettings {
                registration: RegisterComputer {
                    id: ComputerId::parse("COMP-1").unwrap(),
                    partitions: vec![],
                    labels: Default::default(),
                },
                long_poll: S(5),
                poll_interval: S(4),
            };
            let task = tokio::spawn(poller(
                fake.clone(),
                settings,
                cache.clone(),
                cached.map(str::to_owned),
                tx,
                link_tx,
                Arc::new(Outbox::default()),
            ));
            Running {
                fake,
                rx,
                link,
                cache,
                task,
                _dir: dir,
            }
        }

        fn registers(f: &FakeLink) -> usize {
            f.calls()
                .iter()
                .filter(|c| **c == FakeCall::Register)
                .count()
        }

        #[tokio::test(start_paused = true)]
        async fn registers_caches_and_hands_over_each_new_state_once() {
            let fake = FakeLink::new();
            fake.set_desired(state("1"));
            let mut r = start(fake, None);
            assert_eq!(r.rx.recv().await.unwrap().etag, "1");
            assert_eq!(*r.link.borrow(), LinkState::Online);
            let me = ComputerId::parse("COMP-1").unwrap();
            assert_eq!(r.cache.load(&me).unwrap().etag, "1");
            // The fake answers "unchanged" at once: it does not hold, so the poller waits the
            // poll interval between fetches.
            tokio::time::sleep(S(9)).await;
            let fetches: Vec<_> = r
                .fake
                .calls()
                .into_iter()
                .filter(|c| matches!(c, FakeCall::Desired { .. }))
                .collect();
            assert_eq!(
                fetches,
                [
                    FakeCall::Desired {
                        etag: None,
                        wait: None
                    },
                    FakeCall::Desired {
                        etag: Some("1".into()),
                        wait: Some(S(5))
                    },
                    FakeCall::Desired {
                        etag: Some("1".into()),
                        wait: Some(S(5))
                    },
                    FakeCall::Desired {
                        etag: Some("1".into()),
                        wait: Some(S(5))
                    },
                ]
            );
            r.fake.set_desired(state("2"));
            assert_eq!(r.rx.recv().await.unwrap().etag, "2");
            assert_eq!(r.cache.load(&me).unwrap().etag, "2");
            assert!(r.rx.try_recv().is_err());
        }

        #[tokio::test(start_paused = true)]
        async fn backs_off_while_the_master_is_down_then_registers() {
            let fake = FakeLink::new();
            fake.set_down(true);
            fake.set_desired(state("1"));
            let mut r = start(fake, None);
            // Attempts at 0, 0.5, 1.5, 3.5 and 7.5 s (capped at the 4 s poll interval).
            tokio::time::sleep(Duration::from_millis(7400)).await;
            assert_eq!(registers(&r.fake), 4);
            assert_eq!(*r.link.borrow(), LinkState::Offline);
            tokio::time::sleep(S(4)).await;
            assert_eq!(registers(&r.fake), 5);
            r.fake.set_down(false);
            assert_eq!(r.rx.recv().await.unwrap().etag, "1");
            assert_eq!(registers(&r.fake), 6);
            assert_eq!(*r.link.borrow(), LinkState::Online);
        }

        #[tokio::test(start_paused = true)]
        async fn a_restarted_master_that_forgot_the_computer_gets_it_registered_again() {
            let fake = FakeLink::new();
            fake.set_desired(state("1"));
            let mut r = start(fake, None);
            assert_eq!(r.rx.recv().await.unwrap().etag, "1");
            r.fake.set_down(true);
            tokio::time::sleep(S(10)).await;
            assert_eq!(*r.link.borrow(), LinkState::Offline);
            // Back on an empty database: 404, register again, same state: nothing handed over.
            r.fake.restart();
            r.fake.set_down(false);
            tokio::time::sleep(S(10)).await;
            assert_eq!(r.fake.registrations().len(), 2);
            assert_eq!(*r.link.borrow(), LinkState::Online);
            assert!(r.rx.try_recv().is_err());
            r.fake.set_desired(state("2"));
            assert_eq!(r.rx.recv().await.unwrap().etag, "2");
        }

        #[tokio::test(start_paused = true)]
        async fn starts_from_the_cached_etag_and_hands_over_nothing_unchanged() {
            let fake = FakeLink::new();
            fake.set_desired(state("1"));
            let mut r = start(fake, Some("1"));
            let got = tokio::time::timeout(S(30), r.rx.recv()).await;
            assert!(got.is_err(), "{got:?}");
            assert_eq!(
                r.fake.calls()[1],
                FakeCall::Desired {
                    etag: Some("1".into()),
                    wait: Some(S(5))
                }
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_link_without_holds_is_polled_every_step_during_a_hold() {
            let fake = FakeLink::with_poll_step(S(1));
            fake.set_desired(state("1"));
            let mut r = start(fake, Some("1"));
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_millis(9500)).await;
            // One fetch a second, never asking the link to hold; a hold ends at 5 s and the
            // next starts at once (fetches at 0, 1, 2, 3, 4, 5, 5, 6, 7, 8 and 9 s).
            let fetches = r.fake.calls().len() - 1;
            assert_eq!(fetches, 11);
            assert!(r.fake.calls()[1..].iter().all(|c| *c
                == FakeCall::Desired {
                    etag: Some("1".into()),
                    wait: None
                }));
            r.fake.set_desired(state("2"));
            assert_eq!(r.rx.recv().await.unwrap().etag, "2");
            assert!(t0.elapsed() <= S(11));
        }
    }

    #[tokio::test]
    async fn off_thread_returns_the_value() {
        assert_eq!(off_thread(|| 6 * 7).await, Some(42));
    }
}
