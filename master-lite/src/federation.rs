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
//! Every replica of a PostgreSQL master runs the task: forwarding is idempotent (the remote
//! request is idempotent by title, and an outcome recorded for an older revision leaves the
//! newer one due), so two replicas forwarding the same row at once do no harm.

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
/// Time limit of one call to a remote.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the forwarding task looks for due requests (a new one wakes it at once).
const TICK: Duration = Duration::from_millis(500);
/// Delegated requests forwarded at once.
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

/// Why one call to a remote failed, as users read it.
fn failure(e: &ClientError) -> String {
    if e.is_unreachable() {
        format!("remote unreachable: {e}")
    } else {
        format!("remote refused: {e}")
    }
}

fn read(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read {what} {}: {e}", path.display()))
}

/// Forward `d` to its remote once (blocking: run it off the runtime).
pub fn forward(fed: &Federation, d: &Delegation) -> Outcome {
    let Some(remote) = fed.remote(&d.remote) else {
        return Outcome::Failed {
            reason: "this master no longer lists that remote in its configuration".into(),
        };
    };
    let r = match remote.api {
        Api::Native => forward_native(remote, &d.request),
        Api::Slap => forward_slap(remote, &d.request),
    };
    r.unwrap_or_else(|reason| Outcome::Failed { reason })
}

fn forward_native(remote: &Remote, req: &InstanceRequest) -> Result<Outcome, String> {
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
    .map_err(|e| format!("client setup: {e}"))?;
    let client = match &remote.as_partition {
        Some(p) => client.as_partition(p),
        None => client,
    };
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

fn forward_slap(remote: &Remote, req: &InstanceRequest) -> Result<Outcome, String> {
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
        )
    } else {
        slapos_client::http_agent(&remote.url, CALL_TIMEOUT)
    }
    .map_err(|e| format!("client setup: {e}"))?;
    // As the configured partition of the remote (`ComputerPartition.request`), else an open
    // order (`OpenOrder.request`: the same form without its requester).
    let placeholder = PartitionRef {
        computer: ComputerId::parse("federation").map_err(|e| e.to_string())?,
        partition: PartitionId::parse("federation").map_err(|e| e.to_string())?,
    };
    let who = remote.as_partition.as_ref().unwrap_or(&placeholder);
    let mut form = node_edge::link::slap::request_form(&who.computer, &who.partition, req);
    if remote.as_partition.is_none() {
        form.requester = None;
    }
    let fields = form
        .to_form()
        .map_err(|e| format!("encode the request: {e}"))?;
    let url = format!("{base}/requestComputerPartition");
    let mut post = agent.post(&url);
    if let Some(p) = &remote.as_partition {
        post = post.header(
            "Authorization",
            SlapPartitionAuth::header_value(p.computer.as_str(), p.partition.as_str()),
        );
    }
    let mut resp = post
        .send_form(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .map_err(|e| format!("remote unreachable: POST {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| format!("remote unreachable: POST {url}: reading the answer: {e}"))?;
    let destroy = req.state == Some(InstanceState::Destroyed);
    match status {
        200..=299 if destroy => Ok(Outcome::Destroyed),
        404 if destroy => Ok(Outcome::Destroyed),
        200..=299 => {
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
        // slapproxy's ResourceNotReady: the instance is not allocated there yet.
        408 => Err("the remote has not allocated it yet (408 not ready)".into()),
        s => Err(format!(
            "remote refused: POST {url}: {s}: {}",
            body.chars().take(300).collect::<String>().trim()
        )),
    }
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

/// Start the forwarding task on the current runtime; it runs until the runtime stops.
pub fn spawn(db: Db, fed: Arc<Federation>, wake: Arc<Wake>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = now_ms();
            let due = match db.read(move |s| s.delegations_due(now, BATCH)).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("federation: reading the delegated requests: {e}");
                    Vec::new()
                }
            };
            let mut set = tokio::task::JoinSet::new();
            for d in due {
                let fed = fed.clone();
                set.spawn_blocking(move || {
                    let outcome = forward(&fed, &d);
                    (d, outcome)
                });
            }
            while let Some(done) = set.join_next().await {
                let Ok((d, outcome)) = done else { continue };
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
            }
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = wake.notified() => {}
            }
        }
    })
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
