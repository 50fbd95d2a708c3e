//! Federation: delegating requests to other masters (slapproxy's multimaster, issue 15).
//!
//! A master configured with remotes ([`Federation`]: `[multimaster/URL]` sections of
//! `serve --cfg`, or `serve --federate`) does not allocate a request whose release is in a
//! remote's list, or whose SLA names a remote (`master=URL`, or slapproxy's `master_url=URL`):
//! it records the request as delegated to that remote ([`crate::store::Store::delegate`], in the
//! API call's transaction, idempotent by title like a local request) and answers at once. A
//! background task ([`spawn`]) forwards the due delegated requests, as the configured identity,
//! and brings back what the remote answers:
//!
//! * a remote master-lite over the native API ([`Api::Native`], `POST /v1/instances`: plain HTTP
//!   on loopback, or mTLS with a certificate that master issued);
//! * a SlapOS master or slapproxy (or master-lite's SLAP routes) over the SLAP wire
//!   ([`Api::Slap`], `requestComputerPartition` as an open order, like slapproxy's
//!   `forwardRequestToExternalMaster`).
//!
//! The request is made again until the remote answers connection parameters, then every
//! [`REFRESH`]; a state change (stop, destroy) is forwarded the same way, and a destruction the
//! remote accepted forgets the delegation. A remote that cannot be reached leaves the request
//! pending with the reason in its status line (`delegated to URL: pending, remote unreachable:
//! …; retrying`, the `bang` of `GET /v1/instances/{title}`), retried with a backoff up to
//! [`MAX_BACKOFF`]; it completes when the remote is back.
//!
//! Each remote is served by at most one batch at a time, its requests one after the other in
//! due order, and different remotes concurrently ([`spawn`]): a remote that hangs delays only
//! its own requests. Each remote's client is built once and reused ([`Link`]). What a remote
//! answers is stored, so it is bounded: [`MAX_ANSWER_BYTES`] read, and
//! [`crate::store::federation::MAX_CONNECTION_BYTES`] of connection parameters stored; over
//! either the request stays pending (`remote answer too large: N bytes > limit L bytes …`).
//!
//! Every replica of a PostgreSQL master runs the task: forwarding is idempotent (the remote
//! request is idempotent by title, and an outcome recorded for an older revision leaves the
//! newer one due), so two replicas forwarding the same row at once do no harm.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use slapos_client::{Client, ClientError};
use slapos_proto::slap::{SlapPartitionAuth, SoftwareInstanceDoc, loads};
use slapos_proto::{
    ComputerId, InstanceInfo, InstanceRequest, InstanceState, PartitionId, PartitionRef,
};

use crate::auth::{self, Identity};
use crate::db::Db;
use crate::error::ApiError;
use crate::now_ms;
use crate::state::AppState;
use crate::store::federation::{Delegation, Outcome};

pub use crate::remotes::{Api, Federation, FederationError, Remote, UnknownMaster, Wake};
pub use crate::store::federation::{
    DELEGATED_COMPUTER, DELEGATED_PARTITION, DELEGATED_PREFIX, remote_title,
};

/// How often a delegated request that has its connection parameters is asked again.
pub const REFRESH: Duration = Duration::from_secs(30);
/// How often a forwarded request is asked again while its connection parameters are missing.
pub const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts on an unreachable remote.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest answer read from a remote (`requestComputerPartition`'s XML, or the native
/// `InstanceInfo`): it carries the request's parameters back and the connection parameters,
/// each at most [`slapos_proto::MAX_BODY_BYTES`] as a node publishes them, in XML that spends
/// more bytes than JSON. A longer answer is not read past this limit (refused unread when its
/// `Content-Length` says so): the delegation stays pending, `remote answer too large: …`.
/// The connection parameters stored are capped apart
/// ([`crate::store::federation::MAX_CONNECTION_BYTES`]).
pub const MAX_ANSWER_BYTES: usize = 4 * slapos_proto::MAX_BODY_BYTES;
/// Time limit of one call to a remote.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the forwarding task looks for due requests (a new one wakes it at once).
const TICK: Duration = Duration::from_millis(500);
/// Delegated requests of one remote forwarded in one batch (one after the other).
const BATCH: usize = 16;

/// Delegate `req` (routed to `remote` by [`Federation::route`]) as `who`, requested by the
/// partition `from` (the caller checked that `who` may act as it) or as a root request (the
/// owner rule of the native API, checked on the database thread with the write), then wake the
/// forwarding task.
pub(crate) async fn delegate(
    st: &AppState,
    who: Identity,
    req: InstanceRequest,
    from: Option<PartitionRef>,
    remote: String,
) -> Result<InstanceInfo, ApiError> {
    let now = now_ms();
    let info = st
        .db
        .call(move |s| -> Result<_, ApiError> {
            let owner = match &from {
                Some(_) => None,
                None => auth::root_request_owner(s, &who, &req.title)?,
            };
            Ok(s.delegate(&req, from.as_ref(), owner.as_deref(), &remote, now)?)
        })
        .await?;
    st.federation_wake.notify();
    Ok(info)
}

/// The system CA bundle (Debian's), trusted for a SLAP remote over https without `ca`.
const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

impl From<UnknownMaster> for ApiError {
    fn from(e: UnknownMaster) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// Why one call to a remote failed.
#[derive(Debug)]
struct Failure {
    /// As users read it.
    reason: String,
    /// The remote could not be reached at all (transport error or time limit): the rest of
    /// its batch waits for the next one.
    unreachable: bool,
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self {
            reason,
            unreachable: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(reason: &str) -> Self {
        reason.to_owned().into()
    }
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Self {
        Outcome::Failed { reason: f.reason }
    }
}

/// `e` as a [`Failure`].
fn failure(e: &ClientError) -> Failure {
    Failure {
        reason: reason(e),
        unreachable: matches!(e, ClientError::Unreachable { .. }),
    }
}

/// Why a call to a remote failed, as users read it.
fn reason(e: &ClientError) -> String {
    match e {
        ClientError::TooLarge {
            method,
            url,
            size: Some(n),
            limit,
        } => format!("remote answer too large: {n} bytes > limit {limit} bytes ({method} {url})"),
        ClientError::TooLarge {
            method, url, limit, ..
        } => format!(
            "remote answer too large: more than the limit of {limit} bytes ({method} {url})"
        ),
        e if e.is_unreachable() => format!("remote unreachable: {e}"),
        e => format!("remote refused: {e}"),
    }
}

fn read(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read {what} {}: {e}", path.display()))
}

/// Forward `d` to its remote once (blocking: run it off the runtime), over a link built for
/// this call; the forwarding task keeps one [`Link`] per remote instead.
pub fn forward(fed: &Federation, d: &Delegation) -> Outcome {
    match fed.remote(&d.remote) {
        Some(remote) => Link::new(remote.clone()).forward(&d.request),
        None => unlisted(),
    }
}

/// The outcome of a delegation whose remote is no longer configured.
fn unlisted() -> Outcome {
    Outcome::Failed {
        reason: "this master no longer lists that remote in its configuration".into(),
    }
}

/// How a remote is spoken to, once set up.
enum Transport {
    /// A native API client.
    Native(Client),
    /// The SLAP wire: the base URL and its agent.
    Slap { base: String, agent: ureq::Agent },
}

/// The modification times of the files a transport was built from (certificate, key, CA).
type Stamp = [Option<std::time::SystemTime>; 3];

/// The connection to one remote master: its transport (HTTP agent, TLS configuration) is built
/// at the first call and reused by the next ones, so ureq keeps the connection open between
/// them and the PEM files are not parsed at every attempt. It is built again when the
/// certificate, key or CA file changes on disk (modification time), so a renewed certificate
/// is used without a restart. A transport that cannot be built (a file missing) is not kept:
/// the call fails with the reason and the next one tries again.
pub struct Link {
    remote: Remote,
    built: Option<(Stamp, Transport)>,
    /// How many times the transport was built (tests, debug log).
    builds: u64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("remote", &self.remote.url)
            .field("builds", &self.builds)
            .finish()
    }
}

impl Link {
    /// A link to `remote`; nothing is set up before the first call.
    pub fn new(remote: Remote) -> Self {
        Self {
            remote,
            built: None,
            builds: 0,
        }
    }

    /// The files the transport is built from: certificate, key, CA (the system bundle for a
    /// SLAP remote over https without `ca`).
    fn files(&self) -> [Option<&Path>; 3] {
        let r = &self.remote;
        let ca = match (&r.ca, r.api) {
            (Some(ca), _) => Some(ca.as_path()),
            (None, Api::Slap) if r.url.starts_with("https://") => Some(Path::new(SYSTEM_CA)),
            (None, _) => None,
        };
        [r.cert.as_deref(), r.key.as_deref(), ca]
    }

    fn stamp(&self) -> Stamp {
        self.files()
            .map(|f| f.and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()))
    }

    /// The transport, built now if there is none or its files changed.
    fn transport(&mut self) -> Result<&Transport, String> {
        let stamp = self.stamp();
        let (_, t) = match self.built.take().filter(|(s, _)| *s == stamp) {
            Some(kept) => self.built.insert(kept),
            None => {
                let t = build(&self.remote).map_err(|e| format!("client setup: {e}"))?;
                self.builds += 1;
                tracing::debug!(
                    "federation: client of {} built ({} times)",
                    self.remote.url,
                    self.builds
                );
                self.built.insert((stamp, t))
            }
        };
        Ok(t)
    }

    /// Forward `req` once (blocking: run it off the runtime).
    pub fn forward(&mut self, req: &InstanceRequest) -> Outcome {
        self.attempt(req).unwrap_or_else(Outcome::from)
    }

    fn attempt(&mut self, req: &InstanceRequest) -> Result<Outcome, Failure> {
        let as_partition = self.remote.as_partition.clone();
        match self.transport()? {
            Transport::Native(client) => forward_native(client, req),
            Transport::Slap { base, agent } => {
                forward_slap(base, agent, as_partition.as_ref(), req)
            }
        }
    }
}

/// Set up the transport of `remote` (reads its PEM files).
fn build(remote: &Remote) -> Result<Transport, String> {
    let setup = |e: ClientError| e.to_string();
    match remote.api {
        Api::Native => {
            let client = match (&remote.ca, &remote.cert, &remote.key) {
                (Some(ca), Some(cert), Some(key)) => Client::with_identity(
                    &remote.url,
                    &read(ca, "the CA")?,
                    &read(cert, "the certificate")?,
                    &read(key, "the key")?,
                ),
                (Some(ca), _, _) => Client::with_ca(&remote.url, &read(ca, "the CA")?),
                _ => Client::new(&remote.url),
            }
            .map_err(setup)?;
            let client = match &remote.as_partition {
                Some(p) => client.as_partition(p),
                None => client,
            };
            Ok(Transport::Native(
                client
                    .limit_answers(MAX_ANSWER_BYTES)
                    .call_timeout(CALL_TIMEOUT),
            ))
        }
        Api::Slap => {
            let (base, agent) = if remote.url.starts_with("https://") {
                let ca = read(
                    remote.ca.as_deref().unwrap_or(Path::new(SYSTEM_CA)),
                    "the CA",
                )?;
                let identity = match (&remote.cert, &remote.key) {
                    (Some(c), Some(k)) => Some((read(c, "the certificate")?, read(k, "the key")?)),
                    _ => None,
                };
                slapos_client::tls_agent(
                    &remote.url,
                    &ca,
                    identity.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
                    CALL_TIMEOUT,
                )
            } else {
                slapos_client::http_agent(&remote.url, CALL_TIMEOUT)
            }
            .map_err(setup)?;
            Ok(Transport::Slap { base, agent })
        }
    }
}

fn forward_native(client: &Client, req: &InstanceRequest) -> Result<Outcome, Failure> {
    let destroy = req.state == Some(InstanceState::Destroyed);
    match client.request(req) {
        Ok(_) if destroy => Ok(Outcome::Destroyed),
        Err(e) if destroy && e.status() == Some(404) => Ok(Outcome::Destroyed),
        Ok(info) => Ok(Outcome::Accepted {
            connection: info.connection,
            placed: Some(format!("{}/{}", info.computer, info.partition)),
        }),
        Err(e) => Err(failure(&e)),
    }
}

fn forward_slap(
    base: &str,
    agent: &ureq::Agent,
    as_partition: Option<&PartitionRef>,
    req: &InstanceRequest,
) -> Result<Outcome, Failure> {
    // As the configured partition of the remote (`ComputerPartition.request`), else an open
    // order (`OpenOrder.request`: the same form without its requester).
    let placeholder = PartitionRef {
        computer: ComputerId::parse("federation").map_err(|e| e.to_string())?,
        partition: PartitionId::parse("federation").map_err(|e| e.to_string())?,
    };
    let who = as_partition.unwrap_or(&placeholder);
    let mut form = node_edge::link::slap::request_form(&who.computer, &who.partition, req);
    if as_partition.is_none() {
        form.requester = None;
    }
    let fields = form
        .to_form()
        .map_err(|e| format!("encode the request: {e}"))?;
    let url = format!("{base}/requestComputerPartition");
    let auth = as_partition
        .map(|p| SlapPartitionAuth::header_value(p.computer.as_str(), p.partition.as_str()));
    let destroy = req.state == Some(InstanceState::Destroyed);
    let body =
        match slapos_client::post_form(agent, &url, &fields, auth.as_deref(), MAX_ANSWER_BYTES) {
            Ok(body) => body,
            Err(e) => {
                return match e.status() {
                    Some(404) if destroy => Ok(Outcome::Destroyed),
                    // slapproxy's ResourceNotReady: the instance is not allocated there yet.
                    Some(408) => Err("the remote has not allocated it yet (408 not ready)".into()),
                    _ => Err(failure(&e)),
                };
            }
        };
    if destroy {
        return Ok(Outcome::Destroyed);
    }
    let connection = node_edge::link::slap::request_answer(&body)
        .map_err(|e| format!("remote answered an unreadable instance: {e}"))?;
    let placed = loads(&body)
        .ok()
        .and_then(|v| SoftwareInstanceDoc::from_value(&v).ok())
        .and_then(|doc| {
            let c = doc.str_attr("slap_computer_id")?.to_owned();
            let p = doc.str_attr("slap_computer_partition_id")?.to_owned();
            Some(format!("{c}/{p}"))
        });
    Ok(Outcome::Accepted { connection, placed })
}

/// When to try `d` again after `outcome`.
pub fn next_attempt(now_ms: u64, d: &Delegation, outcome: &Outcome) -> u64 {
    let wait = match outcome {
        Outcome::Accepted { connection, .. } if connection.is_empty() => POLL,
        Outcome::Accepted { .. } | Outcome::Destroyed => REFRESH,
        Outcome::Failed { .. } => POLL
            .saturating_mul(1u32 << d.attempts.min(5))
            .min(MAX_BACKOFF),
    };
    now_ms.saturating_add(wait.as_millis() as u64)
}

/// Start the forwarding task on the current runtime; it runs until the runtime stops (or its
/// handle is aborted, which aborts the batches in flight).
///
/// Remotes are served concurrently, each by at most one batch at a time: a batch forwards
/// one remote's due requests (at most [`BATCH`], the longest waiting first) one after the
/// other over that remote's [`Link`], recording each outcome as it comes. A remote that hangs
/// until the call's time limit so delays only its own requests; the task looks for due requests
/// of the other remotes every [`TICK`] and at a new delegation.
pub fn spawn(db: Db, fed: Arc<Federation>, wake: Arc<Wake>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The links of the remotes with no batch in flight (a batch owns its remote's link).
        let mut idle: HashMap<String, Link> = HashMap::new();
        // The remote of each batch in flight.
        let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut batches = tokio::task::JoinSet::new();
        loop {
            let now = now_ms();
            let due = match db
                .read(move |s| s.delegations_due_per_remote(now, BATCH))
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("federation: reading the delegated requests: {e}");
                    Vec::new()
                }
            };
            for (remote, batch) in by_remote(due) {
                if busy.values().any(|r| *r == remote) {
                    continue;
                }
                let link = idle
                    .remove(&remote)
                    .or_else(|| fed.remote(&remote).cloned().map(Link::new));
                let task = batches.spawn(forward_batch(db.clone(), link, batch));
                busy.insert(task.id(), remote);
            }
            // Not at a batch's end: a remote whose outcomes cannot be recorded (rows still
            // due) is then called again at most every TICK, as before batches.
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = wake.notified() => {}
            }
            while let Some(done) = batches.try_join_next_with_id() {
                match done {
                    Ok((id, link)) => {
                        if let (Some(remote), Some(link)) = (busy.remove(&id), link) {
                            idle.insert(remote, link);
                        }
                    }
                    Err(e) => {
                        let remote = busy.remove(&e.id()).unwrap_or_default();
                        tracing::warn!("federation: the batch of {remote} ended: {e}");
                    }
                }
            }
        }
    })
}

/// `due` (grouped by remote, as [`crate::store::Store::delegations_due_per_remote`] reads
/// them) as one batch per remote, in order.
fn by_remote(due: Vec<Delegation>) -> Vec<(String, Vec<Delegation>)> {
    let mut out: Vec<(String, Vec<Delegation>)> = Vec::new();
    for d in due {
        match out.iter_mut().find(|(r, _)| *r == d.remote) {
            Some((_, batch)) => batch.push(d),
            None => out.push((d.remote.clone(), vec![d])),
        }
    }
    out
}

/// Forward `batch` (one remote's due requests) in order over `link` (`None`: the remote is no
/// longer configured), recording each outcome before the next call, until a call cannot reach
/// the remote at all (the rest stay due for the next batch); the link back.
async fn forward_batch(db: Db, mut link: Option<Link>, batch: Vec<Delegation>) -> Option<Link> {
    for d in batch {
        let call = tokio::task::spawn_blocking(move || {
            let result = match &mut link {
                Some(link) => link.attempt(&d.request),
                None => Ok(unlisted()),
            };
            (link, d, result)
        });
        let (back, d, result) = match call.await {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!("federation: a forwarding call ended: {e}");
                return None;
            }
        };
        link = back;
        let unreachable = matches!(&result, Err(f) if f.unreachable);
        let outcome = result.unwrap_or_else(Outcome::from);
        if let Outcome::Failed { reason } = &outcome {
            tracing::info!(
                "federation: {:?} to {}: {reason}; retrying",
                d.title,
                d.remote
            );
        }
        let next = next_attempt(now_ms(), &d, &outcome);
        if let Err(e) = db
            .call(move |s| s.delegation_outcome(&d, &outcome, next))
            .await
        {
            tracing::warn!("federation: recording an outcome: {e}");
        }
        if unreachable {
            // A remote that hangs costs one time limit per batch, not one per request; the
            // rest stay due for the next batch.
            break;
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remotes::tests::req;

    #[test]
    fn backs_off_up_to_the_limit() {
        let d = |attempts| Delegation {
            root: String::new(),
            title: "t".into(),
            remote: "http://b".into(),
            request: req("http://x", &[]),
            revision: 1,
            attempts,
        };
        let failed = Outcome::Failed { reason: "x".into() };
        assert_eq!(next_attempt(0, &d(0), &failed), 1000);
        assert_eq!(next_attempt(0, &d(2), &failed), 4000);
        assert_eq!(next_attempt(0, &d(30), &failed), 30_000);
        let waiting = Outcome::Accepted {
            connection: Default::default(),
            placed: None,
        };
        assert_eq!(next_attempt(5, &d(0), &waiting), 1005);
    }

    #[test]
    fn a_link_builds_its_transport_once_and_again_when_its_ca_changes() {
        // Nothing listens on port 9: each call fails fast, after the transport was built.
        let mut plain = Link::new(Remote::new("http://127.0.0.1:9", Api::Native).unwrap());
        let r = req("http://x", &[]);
        for _ in 0..3 {
            assert!(matches!(plain.forward(&r), Outcome::Failed { .. }));
        }
        assert_eq!(plain.builds, 1);

        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::Ca::open(&dir.path().join("tls")).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let mut remote = Remote::new("https://127.0.0.1:9", Api::Slap).unwrap();
        remote.set("ca", ca_file.to_str().unwrap()).unwrap();
        remote.check().unwrap();
        let mut tls = Link::new(remote);
        tls.forward(&r);
        tls.forward(&r);
        assert_eq!(tls.builds, 1);
        // A renewed CA (another modification time) is read again at the next call.
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&ca_file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        tls.forward(&r);
        assert_eq!(tls.builds, 2);
        // A CA that cannot be read is a failed call, retried (not kept) at the next one.
        std::fs::remove_file(&ca_file).unwrap();
        let Outcome::Failed { reason } = tls.forward(&r) else {
            panic!("forwarded without its CA")
        };
        assert!(
            reason.starts_with("client setup: failed to read the CA"),
            "{reason}"
        );
        assert_eq!(tls.builds, 2);
    }

    #[test]
    fn due_requests_go_out_as_one_ordered_batch_per_remote() {
        let d = |remote: &str, title: &str| Delegation {
            root: String::new(),
            title: title.into(),
            remote: remote.into(),
            request: req("http://x", &[]),
            revision: 1,
            attempts: 0,
        };
        let batches = by_remote(vec![d("a", "1"), d("a", "2"), d("b", "3"), d("a", "4")]);
        let titles: Vec<(String, Vec<String>)> = batches
            .into_iter()
            .map(|(r, b)| (r, b.into_iter().map(|d| d.title).collect()))
            .collect();
        assert_eq!(
            titles,
            [
                ("a".to_owned(), vec!["1".to_owned(), "2".into(), "4".into()]),
                ("b".to_owned(), vec!["3".to_owned()]),
            ]
        );
    }

    /// A remote that takes each connection and `answer`s it (`None`: closes it at once); its
    /// URL and the count of connections taken.
    async fn remote_answering(
        answer: Option<&'static str>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Some(answer) = answer {
                    let mut buf = [0u8; 65536];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                }
            }
        });
        (url, calls)
    }

    #[tokio::test]
    async fn a_batch_ends_at_the_first_call_that_cannot_reach_the_remote() {
        let refused = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\
                       connection: close\r\n\r\nbusy";
        for (answer, reached) in [(None, 1), (Some(refused), 2)] {
            let (url, calls) = remote_answering(answer).await;
            let master = crate::Master::open_in_memory().unwrap();
            let db = master.state().db;
            for title in ["one", "two"] {
                let mut r = req("http://x", &[]);
                r.title = title.parse().unwrap();
                let url = url.clone();
                db.call(move |s| s.delegate(&r, None, None, &url, 0))
                    .await
                    .unwrap();
            }
            let due = db.read(|s| s.delegations_due(u64::MAX, 10)).await.unwrap();
            assert_eq!(due.len(), 2);
            let link = Link::new(Remote::new(&url, Api::Native).unwrap());
            let link = forward_batch(db.clone(), Some(link), due).await;
            assert_eq!(link.map(|l| l.builds), Some(1));
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), reached);
            let bangs: Vec<String> = db
                .read(|s| s.delegations())
                .await
                .unwrap()
                .into_iter()
                .map(|(i, _)| i.bang.unwrap_or_default())
                .collect();
            let pending = format!("delegated to {url}: pending, ");
            assert!(bangs[0].starts_with(&pending), "{bangs:?}");
            if reached == 1 {
                assert!(bangs[0].contains("remote unreachable"), "{bangs:?}");
                assert!(bangs[1].ends_with("not forwarded yet"), "{bangs:?}");
            } else {
                assert!(bangs[1].contains("500"), "{bangs:?}");
            }
        }
    }

    #[test]
    fn placeholder_names_grant_no_read_of_a_delegated_request() {
        let info = InstanceInfo {
            title: "web".parse().unwrap(),
            root_title: "web".parse().unwrap(),
            requester: None,
            software_url: "/srv/sr.toml".parse().unwrap(),
            software_type: Default::default(),
            parameters: Default::default(),
            state: InstanceState::Started,
            computer: DELEGATED_COMPUTER.parse().unwrap(),
            partition: DELEGATED_PARTITION.parse().unwrap(),
            connection: Default::default(),
            reported: None,
            bang: None,
            revision: 1,
            children: Vec::new(),
            shared: false,
        };
        let read = |who: &Identity, owner| {
            auth::allowed(
                who,
                &auth::Action::ReadInstance(crate::http::facts(&info, owner)),
            )
        };
        let computer = Identity::Computer(DELEGATED_COMPUTER.parse().unwrap());
        let partition = Identity::Partition(
            PartitionRef::parse(&format!("{DELEGATED_COMPUTER}/{DELEGATED_PARTITION}")).unwrap(),
        );
        let alice = Identity::User("alice".parse().unwrap());
        assert!(!read(&computer, None));
        assert!(!read(&partition, None));
        assert!(read(&alice, Some("user:alice")));
    }
}
