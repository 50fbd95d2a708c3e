//! The native API (`/v1`, see `docs/api.md`): its routes and handlers.
//!
//! Handlers are thin: they parse and validate the input (path ids, query, JSON body, the
//! partition header) into `slapos-proto` types, hand one closure to the database worker (one
//! transaction), and turn the result or the [`ApiError`] into a response. Nothing here touches
//! SQLite directly. The router is testable without a socket (`tower::ServiceExt::oneshot`).
//!
//! Every handler asks [`auth::allow`] with the caller's [`Identity`] (attached by
//! [`crate::middleware`]) before acting; lists are filtered with [`auth::allowed`]. The SLAP
//! routes (`crate::slap`) authorize each call with the same [`auth::allow`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use slapos_proto::{
    Bang, ComputerId, ConnectionPublish, DesiredQuery, DesiredState, Health, InstanceRequest,
    InstanceTitle, MAX_BODY_BYTES, MAX_LONG_POLL_SECS, PARTITION_HEADER, PROTOCOL_VERSION,
    PartitionId, PartitionRef, PartitionReport, RegisterComputer, SoftwareReport, StateChange,
    SupplyRequest, UsageBatch, UsageBy,
};

use slapos_proto::identity::{ENROLL_ROUTE, EnrollRequest};

use crate::auth::{self, Action, Identity, InstanceFacts};
use crate::error::ApiError;
use crate::middleware::{BodyTimeout, drain};
use crate::pki::Ca;
use crate::server::{ParkCheck, Parked, ParkedUntil, Parking, Peer, Transport};
use crate::state::{AppState, FromThisHost, now_ms};
use crate::store::RequestRules;

/// The routes of the native API (`/v1`); [`crate::app`] adds the SLAP routes and the layers.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/computers", post(register).get(list_computers))
        .route("/v1/computers/{c}", get(show_computer))
        .route("/v1/computers/{c}/software", post(supply))
        .route("/v1/computers/{c}/software/report", post(report_software))
        .route("/v1/computers/{c}/desired", get(desired))
        .route(
            "/v1/computers/{c}/partitions/{p}/report",
            post(report_partition),
        )
        .route(
            "/v1/computers/{c}/partitions/{p}/connection",
            post(publish_connection),
        )
        .route("/v1/computers/{c}/partitions/{p}/bang", post(bang))
        .route(
            "/v1/computers/{c}/partitions/{p}/certificate",
            get(partition_certificate),
        )
        .route(ENROLL_ROUTE, post(enroll))
        .route("/v1/instances", post(request).get(list_instances))
        .route("/v1/instances/{title}", get(show_instance))
        .route("/v1/instances/{title}/state", post(set_state))
        .route("/v1/computers/{c}/usage", post(post_usage))
        .route("/v1/usage", get(usage_report))
}

type ApiResult<T> = Result<T, ApiError>;
type Json<T> = axum::Json<T>;

// ---------------------------------------------------------------------------------------------
// Extraction

/// A JSON body, decoded with serde whatever the content type says; too large → 413, anything
/// else wrong → 400 naming the problem.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read_capped(req.into_body()).await?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// How much of an over-limit body is still read (and discarded) before the 413 goes out, and
/// for how long: a client that sends its whole body before reading (curl, ureq, the `slap`
/// library) then gets the 413 and its JSON error instead of a broken pipe. A body announced
/// larger than this is refused at once.
const DRAIN_BYTES: usize = 16 * MAX_BODY_BYTES;
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// The request body, at most [`MAX_BODY_BYTES`]; over the limit → [`ApiError::TooLarge`]
/// after draining the rest (bounded by [`DRAIN_BYTES`] and [`DRAIN_FOR`]). The native routes
/// read bodies only through [`Body`], so this is their whole body limit (the SLAP routes set
/// their own with `DefaultBodyLimit`).
async fn read_capped(mut body: axum::body::Body) -> ApiResult<Vec<u8>> {
    use http_body_util::BodyExt;

    let limit = MAX_BODY_BYTES;
    let too_large = ApiError::TooLarge { limit };
    let announced = http_body::Body::size_hint(&body).lower();
    if announced > DRAIN_BYTES as u64 {
        return Err(too_large);
    }
    let unreadable = |e: axum::Error| {
        if let Some(t) = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<BodyTimeout>())
        {
            ApiError::BodyTimeout(t.0)
        } else {
            ApiError::BadRequest(format!("unreadable request body: {e}"))
        }
    };
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(unreadable)?.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            drain(&mut body, buf.len() + data.len(), DRAIN_BYTES, DRAIN_FOR).await;
            return Err(too_large);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

fn computer_id(s: &str) -> ApiResult<ComputerId> {
    ComputerId::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn partition_id(s: &str) -> ApiResult<PartitionId> {
    PartitionId::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn title(s: &str) -> ApiResult<InstanceTitle> {
    InstanceTitle::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|r| ApiError::BadRequest(format!("invalid query: {}", r.body_text())))
}

/// The requesting partition named by [`PARTITION_HEADER`], if any.
fn requester(headers: &HeaderMap) -> ApiResult<Option<PartitionRef>> {
    let Some(v) = headers.get(PARTITION_HEADER) else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| {
        ApiError::BadRequest(format!("header {PARTITION_HEADER} is not valid text"))
    })?;
    PartitionRef::parse(s.trim())
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("header {PARTITION_HEADER}: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn health() -> Json<Health> {
    axum::Json(Health {
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

pub(crate) async fn bad_method(method: Method, uri: Uri) -> Response {
    let body = slapos_proto::ErrorBody {
        kind: "bad_request".into(),
        error: format!("method {method} is not allowed on {}", uri.path()),
    };
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

async fn register(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Extension(FromThisHost(here)): Extension<FromThisHost>,
    Body(reg): Body<RegisterComputer>,
) -> ApiResult<Response> {
    auth::allow(&who, Action::Register(&reg.id))?;
    let now = now_ms();
    let id = reg.id.clone();
    let mut info = st
        .db
        .call(move |s| s.register_with(&reg, now, here))
        .await?;
    st.hub.saw(&id, now);
    info.last_seen_ms = info.last_seen_ms.max(st.hub.last_seen(&id));
    Ok(axum::Json(info).into_response())
}

async fn list_computers(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
) -> ApiResult<Response> {
    let mut list = st.db.read(|s| s.computers()).await?;
    list.retain(|c| auth::allowed(&who, &Action::ReadComputer(&c.id)));
    for c in &mut list {
        c.last_seen_ms = c.last_seen_ms.max(st.hub.last_seen(&c.id));
    }
    Ok(axum::Json(list).into_response())
}

async fn show_computer(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(c): Path<String>,
) -> ApiResult<Response> {
    let c = computer_id(&c)?;
    auth::allow(&who, Action::ReadComputer(&c))?;
    let id = c.clone();
    let mut info = st.db.read(move |s| s.computer(&id)).await?;
    info.last_seen_ms = info.last_seen_ms.max(st.hub.last_seen(&c));
    Ok(axum::Json(info).into_response())
}

async fn supply(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(c): Path<String>,
    Body(req): Body<SupplyRequest>,
) -> ApiResult<Response> {
    let c = computer_id(&c)?;
    auth::allow(&who, Action::Supply(&c))?;
    let info = st.db.call(move |s| s.supply(&c, &req)).await?;
    Ok(axum::Json(info).into_response())
}

async fn report_software(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(c): Path<String>,
    Body(rep): Body<SoftwareReport>,
) -> ApiResult<Response> {
    let c = computer_id(&c)?;
    auth::allow(&who, Action::Node(&c))?;
    let now = now_ms();
    st.db
        .call(move |s| s.report_software(&c, &rep, now))
        .await?;
    Ok(empty_object())
}

/// `GET desired`: answer at once when the etag differs (or none is given); otherwise hold the
/// answer up to `wait` seconds until the computer's desired state changes, then `304`. A poll
/// that already waited outside hyper ([`DesiredParking`]) holds until its [`ParkedUntil`].
async fn desired(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(c): Path<String>,
    parked: Option<Extension<ParkedUntil>>,
    q: Result<Query<DesiredQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let c = computer_id(&c)?;
    auth::allow(&who, Action::Node(&c))?;
    let q = query(q)?;
    let now = tokio::time::Instant::now();
    let deadline = match parked {
        Some(Extension(ParkedUntil(t))) => t,
        None => now + long_poll(q.wait),
    };
    // Subscribe before the first read, so a change committed in between still wakes us.
    // Past the hub's bounds, answer at once (the node polls again).
    let slot = match &q.etag {
        Some(_) if deadline > now => st.hub.poll_slot(&c, &who),
        _ => None,
    };
    let mut rx = slot.as_ref().map(|_| st.hub.subscribe(&c));
    let known = q.etag.as_deref();
    let mut current = read_desired(&st, &c, known).await;
    if let (Ok(None), Some(rx), Some(etag)) = (&current, rx.as_mut(), known) {
        current = hold(&st, &c, etag, rx, deadline).await;
    }
    let current = current.inspect_err(|_| {
        drop(rx.take());
        st.hub.forget_unused(&c);
    })?;
    let Some(d) = current else {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    };
    let etag = HeaderValue::from_str(&format!("\"{}\"", d.etag)).ok();
    let mut resp = axum::Json(d).into_response();
    if let Some(e) = etag {
        resp.headers_mut().insert(header::ETAG, e);
    }
    Ok(resp)
}

/// How long a poll asking to wait `wait` seconds is held, at most.
fn long_poll(wait: Option<u64>) -> Duration {
    Duration::from_secs(wait.unwrap_or(0).min(MAX_LONG_POLL_SECS))
}

/// `c`'s desired state, `None` when `known` is still its etag.
async fn read_desired(
    st: &AppState,
    c: &ComputerId,
    known: Option<&str>,
) -> ApiResult<Option<DesiredState>> {
    let (id, known) = (c.clone(), known.map(str::to_owned));
    let read = st.db.read(move |s| s.desired(&id, known.as_deref())).await;
    st.hub.saw(c, now_ms());
    read
}

/// Wait for a change of `c`'s desired state away from `etag` (woken by `rx`), until `deadline`
/// or shutdown (`None`).
async fn hold(
    st: &AppState,
    c: &ComputerId,
    etag: &str,
    rx: &mut tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
) -> ApiResult<Option<DesiredState>> {
    let mut shutdown = st.hub.shutdown_signal();
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(None);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
            _ = shutdown.wait_for(|down| *down) => return Ok(None),
        }
        if let Some(d) = read_desired(st, c, Some(etag)).await? {
            return Ok(Some(d));
        }
    }
}

/// Lets a node's long poll wait outside hyper ([`crate::server`]): a `GET desired` with an
/// etag and a wait, over mTLS with the certificate of that computer (still recorded and not
/// revoked), when the etag is current and the hub has room. Anything else is served at once
/// by the handler, which also answers every parked poll in the end (the rules stay there).
pub(crate) struct DesiredParking(pub(crate) AppState);

impl Parking for DesiredParking {
    fn park(&self, peer: &Peer, target: &str) -> Option<ParkCheck> {
        let Transport::Tls {
            cert: Some(Ok((Identity::Computer(id), serial))),
        } = &peer.transport
        else {
            return None;
        };
        let uri: Uri = target.parse().ok()?;
        let c = uri
            .path()
            .strip_prefix("/v1/computers/")?
            .strip_suffix("/desired")?;
        if c != id.as_str() {
            return None;
        }
        // The handler's own query rules: a query it refuses is served (and refused) at once.
        let Query(q) = Query::<DesiredQuery>::try_from_uri(&uri).ok()?;
        let (wait, etag) = (long_poll(q.wait), q.etag?);
        if wait.is_zero() {
            return None;
        }
        let (st, id, serial) = (self.0.clone(), id.clone(), serial.clone());
        Some(Box::pin(async move {
            let who = Identity::Computer(id.clone());
            crate::middleware::certificate_valid(&st, &who, serial)
                .await
                .ok()?;
            let deadline = tokio::time::Instant::now() + wait;
            let slot = st.hub.poll_slot(&id, &who)?;
            let mut rx = st.hub.subscribe(&id);
            if !matches!(read_desired(&st, &id, Some(&etag)).await, Ok(None)) {
                drop(rx);
                st.hub.forget_unused(&id);
                return None;
            }
            let ready = async move {
                let _slot = slot.parked();
                // An error is the handler's to report, when it reads again.
                let _ = hold(&st, &id, &etag, &mut rx, deadline).await;
            };
            Some(Parked {
                deadline,
                ready: Box::pin(ready),
            })
        }))
    }
}

async fn report_partition(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path((c, p)): Path<(String, String)>,
    Body(rep): Body<PartitionReport>,
) -> ApiResult<Response> {
    let (c, p) = (computer_id(&c)?, partition_id(&p)?);
    auth::allow(&who, Action::Partition(&c, &p))?;
    let now = now_ms();
    let ack = st
        .db
        .call(move |s| s.report_partition(&c, &p, &rep, now))
        .await?;
    Ok(axum::Json(ack).into_response())
}

async fn publish_connection(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path((c, p)): Path<(String, String)>,
    Body(conn): Body<ConnectionPublish>,
) -> ApiResult<Response> {
    let (c, p) = (computer_id(&c)?, partition_id(&p)?);
    auth::allow(&who, Action::Partition(&c, &p))?;
    let now = now_ms();
    st.db.call(move |s| s.publish(&c, &p, &conn, now)).await?;
    Ok(empty_object())
}

async fn bang(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path((c, p)): Path<(String, String)>,
    Body(b): Body<Bang>,
) -> ApiResult<Response> {
    let (c, p) = (computer_id(&c)?, partition_id(&p)?);
    auth::allow(&who, Action::Partition(&c, &p))?;
    let now = now_ms();
    st.db.call(move |s| s.bang(&c, &p, &b.message, now)).await?;
    Ok(empty_object())
}

async fn request(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    Body(req): Body<InstanceRequest>,
) -> ApiResult<Response> {
    let from = requester(&headers)?;
    let routed = st.federation.route(&req).map_err(ApiError::from)?;
    let here = match (&routed, req.shared) {
        (Some(_), true) => {
            let (title, from) = (req.title.to_string(), from.clone());
            st.db
                .read(move |s| s.shared_hosted_here(&title, from.as_ref()))
                .await?
        }
        _ => false,
    };
    if let Some(remote) = routed.filter(|_| !here) {
        let remote = remote.url.clone();
        match &from {
            Some(from) => auth::allow(&who, Action::RequestChild(from))?,
            None if req.shared => {
                auth::allow(&who, Action::AdminOnly("request root shared instances"))?
            }
            None => {}
        }
        let info = crate::federation::delegate(&st, who, req, from, remote).await?;
        return Ok(axum::Json(info).into_response());
    }
    let now = now_ms();
    if req.shared {
        // As on the SLAP routes: a shared instance records no owner, so a root one (requested
        // by a user) is an operator's; a partition requests one as its child.
        match &from {
            Some(from) => auth::allow(&who, Action::RequestChild(from))?,
            None => auth::allow(&who, Action::AdminOnly("request root shared instances"))?,
        }
        let info = st
            .db
            .call(move |s| s.request_shared(&req, from.as_ref(), now))
            .await?;
        return Ok(axum::Json(info).into_response());
    }
    let info = match from {
        Some(from) => {
            auth::allow(&who, Action::RequestChild(&from))?;
            st.db
                .call(move |s| s.request(&req, Some(&from), now))
                .await?
        }
        // The owner check and the request run one after the other on the database thread, so
        // nothing can create the title in between.
        None => {
            st.db
                .call(move |s| -> ApiResult<_> {
                    let owner = auth::root_request_owner(s, &who, &req.title)?;
                    Ok(s.request_as(&req, None, owner.as_deref(), now, RequestRules::NATIVE)?)
                })
                .await?
        }
    };
    Ok(axum::Json(info).into_response())
}

/// What [`Action::ReadInstance`] decides on for `info` (shared with the console). A request
/// delegated to another master is held by no computer here: its placeholder names
/// (`federated/remote`, a computer id no node may register) grant nothing.
pub(crate) fn facts<'a>(
    info: &'a slapos_proto::InstanceInfo,
    owner: Option<&'a str>,
) -> InstanceFacts<'a> {
    let delegated = info.computer.as_str() == crate::federation::DELEGATED_COMPUTER;
    InstanceFacts {
        computer: if delegated {
            ""
        } else {
            info.computer.as_str()
        },
        partition: if delegated {
            ""
        } else {
            info.partition.as_str()
        },
        requester: info.requester.as_deref(),
        owner,
    }
}

async fn list_instances(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
) -> ApiResult<Response> {
    let list = st.db.read(|s| s.instances_owned()).await?;
    let list: Vec<_> = list
        .into_iter()
        .filter(|(i, o)| auth::allowed(&who, &Action::ReadInstance(facts(i, o.as_deref()))))
        .map(|(i, _)| i)
        .collect();
    Ok(axum::Json(list).into_response())
}

#[derive(Deserialize)]
struct RootQuery {
    #[serde(default)]
    root: Option<String>,
}

async fn show_instance(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(t): Path<String>,
    q: Result<Query<RootQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let t = title(&t)?;
    let root = query(q)?.root.as_deref().map(title).transpose()?;
    let (info, owner) = st
        .db
        .read(move |s| s.instance_owned(&t, root.as_ref()))
        .await?;
    auth::allow(&who, Action::ReadInstance(facts(&info, owner.as_deref())))?;
    Ok(axum::Json(info).into_response())
}

async fn set_state(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(t): Path<String>,
    Body(change): Body<StateChange>,
) -> ApiResult<Response> {
    let t = title(&t)?;
    let info = st
        .db
        .call(move |s| -> ApiResult<_> {
            if let Some(owner) = s.root_owner(&t)? {
                auth::allow(
                    &who,
                    Action::ChangeTree {
                        owner: owner.as_deref(),
                    },
                )?;
            }
            Ok(s.set_state(&t, change.state)?)
        })
        .await?;
    Ok(axum::Json(info).into_response())
}

/// `POST /v1/computers/{c}/usage`: the node's usage samples (stored once each).
async fn post_usage(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(c): Path<String>,
    Body(batch): Body<UsageBatch>,
) -> ApiResult<Response> {
    let c = computer_id(&c)?;
    auth::allow(&who, Action::Node(&c))?;
    let now = now_ms();
    let ack = st.db.call(move |s| s.record_usage(&c, &batch, now)).await?;
    Ok(axum::Json(ack).into_response())
}

/// The query of `GET /v1/usage`: the window `(since_ms, until_ms]` (default: the last 24 h up
/// to now) and the grouping (default: by instance).
#[derive(Debug, Deserialize)]
struct UsageQuery {
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    by: Option<UsageBy>,
}

/// `GET /v1/usage`: accounting over a window, for operators.
async fn usage_report(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> ApiResult<Response> {
    auth::allow(&who, Action::AdminOnly("read the usage report"))?;
    let q = query(q)?;
    let until = q.until_ms.unwrap_or_else(now_ms);
    let since = q.since_ms.unwrap_or(until.saturating_sub(24 * 3_600_000));
    let by = q.by.unwrap_or(UsageBy::Instance);
    let report = st
        .db
        .read(move |s| s.usage_report(since, until, by))
        .await?;
    Ok(axum::Json(report).into_response())
}

/// The CA, or a 404 when the master does not serve TLS.
fn ca(st: &AppState) -> ApiResult<Arc<Ca>> {
    st.ca.clone().ok_or_else(|| {
        ApiError::NotFound(
            "this master has no certificate authority (start it with --tls-dir)".into(),
        )
    })
}

/// `POST /v1/enroll`: a one-time token for a computer → its key, certificate and the CA.
async fn enroll(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(req): Body<EnrollRequest>,
) -> ApiResult<Response> {
    auth::allow(&who, Action::Enroll)?;
    let ca = ca(&st)?;
    if req.token.is_empty() || req.token.len() > 256 {
        return Err(ApiError::BadRequest(
            "the enrollment token must be 1 to 256 bytes".into(),
        ));
    }
    let hash = crate::certs::token_hash(&req.token);
    let now = now_ms();
    let h = hash.clone();
    let enrolled = st.db.call(move |s| s.check_token(&h, now)).await?;
    let (issued, row) =
        crate::certs::issue(ca.clone(), Identity::Computer(enrolled.computer)).await?;
    st.db
        .call(move |s| s.redeem_token(&hash, &row, now))
        .await?;
    tracing::info!(identity = %issued.identity, serial = %issued.serial, "computer enrolled");
    Ok(axum::Json(crate::certs::credentials(&ca, issued)).into_response())
}

/// `GET …/partitions/{p}/certificate`: a new certificate and key for the partition's
/// instance, for its computer's node to place in the partition.
async fn partition_certificate(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path((c, p)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (c, p) = (computer_id(&c)?, partition_id(&p)?);
    auth::allow(&who, Action::PartitionCertificate(&c, &p))?;
    let ca = ca(&st)?;
    let (cc, pp) = (c.clone(), p.clone());
    if !st.db.read(move |s| s.partition_allocated(&cc, &pp)).await? {
        return Err(ApiError::Conflict(format!(
            "partition {c}/{p} is free: only an allocated partition gets a certificate"
        )));
    }
    let id = Identity::Partition(slapos_proto::PartitionRef {
        computer: c,
        partition: p,
    });
    let (issued, row) = crate::certs::issue(ca.clone(), id).await?;
    st.db.call(move |s| s.record_certificate(&row)).await?;
    Ok(axum::Json(crate::certs::credentials(&ca, issued)).into_response())
}

fn empty_object() -> Response {
    axum::Json(serde_json::json!({})).into_response()
}
