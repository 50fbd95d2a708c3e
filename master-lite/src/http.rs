//! The HTTP layer: [`app`] builds the router of the native API (`/v1`, see `docs/api.md`).
//!
//! Handlers are thin: they parse and validate the input (path ids, query, JSON body, the
//! partition header) into `slapos-proto` types, hand one closure to the database worker (one
//! transaction), and turn the result or the [`ApiError`] into a response. Nothing here touches
//! SQLite directly. The router is testable without a socket (`tower::ServiceExt::oneshot`).
//!
//! Identity: the `identify` middleware attaches an [`Identity`] to every request (the
//! client certificate's over mTLS, after checking its serial is recorded and not revoked;
//! [`Identity::Local`] without TLS) and logs every 403 with the identity, method and path.
//! Every handler asks [`auth::allow`] before acting; lists are filtered with [`auth::allowed`].
//! Over TLS, a connection without a client certificate reaches `POST /v1/enroll` only; the SLAP
//! routes (`crate::slap`) authorize each call with the same [`auth::allow`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Extension, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use slapos_proto::{
    Bang, ComputerId, ConnectionPublish, DesiredQuery, Health, InstanceRequest, InstanceTitle,
    MAX_BODY_BYTES, MAX_LONG_POLL_SECS, PARTITION_HEADER, PROTOCOL_VERSION, PartitionId,
    PartitionRef, PartitionReport, RegisterComputer, SoftwareReport, StateChange, SupplyRequest,
};

use slapos_proto::identity::{Credentials, ENROLL_ROUTE, EnrollRequest};

use crate::auth::{self, Action, Identity, InstanceFacts};
use crate::db::Db;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::local::{LocalTrust, describe_uid};
use crate::pki::Ca;
use crate::server::{Peer, Transport};
use crate::store::{CertificateRow, RequestRules};

/// What every handler shares: the database worker and the long-poll hub.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database worker.
    pub db: Db,
    /// Long-poll wake-ups and last contact.
    pub hub: Arc<Hub>,
    /// Configuration of the classic SLAP routes (`slapos-master serve --cfg`).
    pub slap: Arc<crate::slap::SlapConfig>,
    /// The certificate authority, when the master serves mTLS (enrollment, partition
    /// certificates).
    pub ca: Option<Arc<Ca>>,
    /// Who local plain-HTTP callers are.
    pub local: LocalTrust,
    /// Bytes of request bodies being received at once, over all requests.
    pub bodies: BodyBudget,
}

/// The connection a request came on is from this host (plain HTTP with a known client uid, or
/// an in-process call): set by `identify`, read by `register` (local uids of partitions).
#[derive(Clone, Copy, Debug)]
pub struct FromThisHost(pub bool);

/// The native API router.
pub fn app(state: AppState) -> Router {
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
        .merge(crate::slap::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(bad_method)
        .layer(middleware::from_fn_with_state(state.clone(), body_gate))
        .layer(middleware::from_fn_with_state(state.clone(), identify))
        .with_state(state)
}

/// Attach the caller's [`Identity`] (see the module doc), refuse what no identity may reach,
/// and log every 403.
async fn identify(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(p)| p.clone());
    let here = peer.as_ref().is_none_or(|p| p.local_uid().is_some());
    let plain = !peer
        .as_ref()
        .is_some_and(|p| matches!(p.transport, Transport::Tls { .. }));
    let (who, checked) = match peer {
        // An in-process call of the router (standalone's own calls, tests).
        None => (Identity::Local, Ok(())),
        Some(Peer {
            transport: Transport::Tls { cert },
            ..
        }) => match cert {
            None => (Identity::Anonymous, Ok(())),
            Some(Err(reason)) => (
                Identity::Anonymous,
                Err(ApiError::Forbidden(format!(
                    "the client certificate carries no identity: {reason}"
                ))),
            ),
            Some(Ok((id, serial))) => {
                let checked = certificate_valid(&st, &id, serial).await;
                (id, checked)
            }
        },
        Some(Peer {
            transport: Transport::Plain {
                local_uid: Some(uid),
            },
            ..
        }) => local_identity(&st, uid).await,
        Some(Peer {
            transport: Transport::Plain { local_uid: None },
            addr,
        }) => {
            if addr.ip().to_canonical().is_loopback() {
                // On this host, yet its owner could not be looked up: never trusted.
                (
                    Identity::Anonymous,
                    Err(ApiError::Forbidden(
                        "the owner of this loopback connection could not be determined".into(),
                    )),
                )
            } else {
                // Another host over plain HTTP: only reachable with --allow-plain-http, by
                // which the operator trusts that network.
                (Identity::Local, Ok(()))
            }
        }
    };
    let checked = match &who {
        // Health is public on the plain listener, whoever asks.
        Identity::Anonymous if plain && path == "/v1/health" => Ok(()),
        Identity::Anonymous if plain => checked.and(Err(ApiError::Forbidden(
            "an unidentified local caller may only read /v1/health".into(),
        ))),
        Identity::Anonymous if path != ENROLL_ROUTE => checked.and(Err(ApiError::Forbidden(
            "a connection without a client certificate may only enroll".into(),
        ))),
        _ => checked,
    };
    let resp = match checked {
        Ok(()) => {
            req.extensions_mut().insert(who.clone());
            req.extensions_mut().insert(FromThisHost(here));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    if resp.status() == StatusCode::FORBIDDEN {
        tracing::warn!(identity = %who, %method, %path, "access denied");
    }
    resp
}

/// The identity of a plain-HTTP caller on this host running as `uid`: the operator, the
/// partition its node registered with that uid, or nobody (with the reason).
async fn local_identity(st: &AppState, uid: u32) -> (Identity, ApiResult<()>) {
    if st.local.is_operator(uid) {
        return (Identity::Local, Ok(()));
    }
    match st.db.call(move |s| s.partition_of_local_uid(uid)).await {
        Ok(Some(p)) => (Identity::Partition(p), Ok(())),
        Ok(None) => {
            let operators: Vec<String> = st
                .local
                .operators()
                .iter()
                .map(|u| describe_uid(*u))
                .collect();
            (
                Identity::Anonymous,
                Err(ApiError::Forbidden(format!(
                    "local user {} is neither this master's operator (uid {}) nor the user of a \
                     partition: run the command as the operator, or use a certificate over \
                     TLS (docs/identity.md)",
                    describe_uid(uid),
                    operators.join(", ")
                ))),
            )
        }
        Err(e) => (Identity::Anonymous, Err(e)),
    }
}

/// The certificate with `serial` was issued by this master to `id` and is not revoked.
async fn certificate_valid(st: &AppState, id: &Identity, serial: String) -> ApiResult<()> {
    let shown = serial.clone();
    let row = st.db.call(move |s| s.certificate(&serial)).await?;
    match row {
        None => Err(ApiError::Forbidden(format!(
            "certificate {shown} is not known to this master"
        ))),
        Some(r) if r.revoked_ms.is_some() => Err(ApiError::Forbidden(format!(
            "certificate {shown} ({}) is revoked",
            r.identity
        ))),
        Some(r) if r.identity != id.to_string() => Err(ApiError::Forbidden(format!(
            "certificate {shown} was issued to {}, not {id}",
            r.identity
        ))),
        Some(_) => Ok(()),
    }
}

type ApiResult<T> = Result<T, ApiError>;
type Json<T> = axum::Json<T>;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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
            let mut seen = buf.len() + data.len();
            let drain = async {
                while seen <= DRAIN_BYTES {
                    match body.frame().await {
                        Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_FOR, drain).await;
            return Err(too_large);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

/// Bytes of request bodies the master receives at once, over all requests (see `body_gate`).
pub const BODY_BUDGET: usize = 128 << 20;

/// The shared budget of body bytes in flight, counted in KiB.
#[derive(Clone, Debug)]
pub struct BodyBudget(Arc<tokio::sync::Semaphore>);

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

/// Every body has at least this long to arrive, plus [`BODY_MIN_RATE`] for its size.
pub const BODY_BASE_TIME: Duration = Duration::from_secs(10);
/// Slowest body upload accepted (bytes per second): an edge uplink, not a trickle.
pub const BODY_MIN_RATE: u64 = 64 << 10;

/// Before a handler reads a body: reserve its size (announced, else the route's limit) in the
/// shared [`BodyBudget`] (none left: 503, retry), and give it a deadline
/// ([`BODY_BASE_TIME`] + size / [`BODY_MIN_RATE`]; missed: the read fails with 408). So parallel
/// large bodies cannot exhaust memory and a client trickling a body cannot hold its request
/// forever. The reservation is held until the handler answered.
async fn body_gate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let native = req.uri().path().starts_with("/v1/");
    let limit = if native {
        MAX_BODY_BYTES
    } else {
        crate::slap::SLAP_BODY_LIMIT
    };
    let hint = http_body::Body::size_hint(req.body());
    if hint.upper() == Some(0) {
        return next.run(req).await;
    }
    let need = usize::try_from(hint.lower())
        .unwrap_or(usize::MAX)
        .max(hint.upper().map_or(limit, |_| 0))
        .min(limit)
        .max(1);
    let kib = u32::try_from(need.div_ceil(1024)).unwrap_or(u32::MAX);
    let Ok(permit) = st.bodies.0.clone().try_acquire_many_owned(kib) else {
        let msg = "the master is receiving too many large requests at once; retry in a moment";
        tracing::warn!(path = %req.uri().path(), need, "request body refused: body budget exhausted");
        let mut resp = if native {
            ApiError::Busy(msg.into()).into_response()
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, msg).into_response()
        };
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    let deadline = BODY_BASE_TIME + Duration::from_secs(need as u64 / BODY_MIN_RATE);
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(TimedBody {
        inner: body,
        sleep: Box::pin(tokio::time::sleep(deadline)),
        deadline,
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    drop(permit);
    resp
}

/// A request body that fails with [`BodyTimeout`] once its deadline passed.
struct TimedBody {
    inner: axum::body::Body,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    deadline: Duration,
}

/// A request body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimeout(pub Duration);

impl http_body::Body for TimedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            let err = axum::Error::new(BodyTimeout(self.deadline));
            return std::task::Poll::Ready(Some(Err(err)));
        }
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn bad_method(method: Method, uri: Uri) -> Response {
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
    let mut list = st.db.call(|s| s.computers()).await?;
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
    let mut info = st.db.call(move |s| s.computer(&id)).await?;
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
/// answer up to `wait` seconds until the computer's desired state changes, then `304`.
async fn desired(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(c): Path<String>,
    q: Result<Query<DesiredQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let c = computer_id(&c)?;
    auth::allow(&who, Action::Node(&c))?;
    let q = query(q)?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_LONG_POLL_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before the first read, so a change committed in between still wakes us.
    // Past the hub's bounds, answer at once (the node polls again).
    let slot = if q.etag.is_some() && !wait.is_zero() {
        st.hub.poll_slot(&c, &who)
    } else {
        None
    };
    let mut rx = slot.as_ref().map(|_| st.hub.subscribe(&c));
    let mut shutdown = st.hub.shutdown_signal();
    loop {
        let (id, known) = (c.clone(), q.etag.clone());
        let read = st.db.call(move |s| s.desired(&id, known.as_deref())).await;
        let current = match read {
            Ok(v) => v,
            Err(e) => {
                drop(rx.take());
                st.hub.forget_unused(&c);
                return Err(e);
            }
        };
        st.hub.saw(&c, now_ms());
        if let Some(d) = current {
            let etag = HeaderValue::from_str(&format!("\"{}\"", d.etag)).ok();
            let mut resp = axum::Json(d).into_response();
            if let Some(e) = etag {
                resp.headers_mut().insert(header::ETAG, e);
            }
            return Ok(resp);
        }
        let Some(rx) = rx.as_mut() else {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        };
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(StatusCode::NOT_MODIFIED.into_response());
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(StatusCode::NOT_MODIFIED.into_response());
            }
            _ = shutdown.wait_for(|down| *down) => {
                return Ok(StatusCode::NOT_MODIFIED.into_response());
            }
        }
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
    st.db
        .call(move |s| s.publish_connection(&c, &p, &conn.parameters, now))
        .await?;
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
    let now = now_ms();
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
                    let existing = s.root_owner(&req.title)?;
                    auth::allow(
                        &who,
                        Action::RequestRoot {
                            existing: existing.as_ref().map(Option::as_deref),
                        },
                    )?;
                    let owner = who.owner();
                    Ok(s.request_as(&req, None, owner.as_deref(), now, RequestRules::NATIVE)?)
                })
                .await?
        }
    };
    Ok(axum::Json(info).into_response())
}

fn facts<'a>(info: &'a slapos_proto::InstanceInfo, owner: Option<&'a str>) -> InstanceFacts<'a> {
    InstanceFacts {
        computer: info.computer.as_str(),
        partition: info.partition.as_str(),
        requester: info.requester.as_deref(),
        owner,
    }
}

async fn list_instances(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
) -> ApiResult<Response> {
    let list = st.db.call(|s| s.instances_owned()).await?;
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
        .call(move |s| s.instance_owned(&t, root.as_ref()))
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

/// The CA, or a 404 when the master does not serve TLS.
fn ca(st: &AppState) -> ApiResult<Arc<Ca>> {
    st.ca.clone().ok_or_else(|| {
        ApiError::NotFound(
            "this master has no certificate authority (start it with --tls-dir)".into(),
        )
    })
}

/// Issue a client certificate for `id` (CPU work, off the runtime threads).
pub(crate) async fn issue(
    ca: Arc<Ca>,
    id: Identity,
) -> ApiResult<(crate::pki::Issued, CertificateRow)> {
    let issued = tokio::task::spawn_blocking(move || ca.issue_client(&id))
        .await
        .map_err(|e| ApiError::Internal(format!("certificate issuing task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let row = CertificateRow {
        serial: issued.serial.clone(),
        identity: issued.identity.to_string(),
        kind: issued.identity.kind().to_owned(),
        issued_ms: now_ms(),
        expires_ms: issued.expires_ms,
        revoked_ms: None,
    };
    Ok((issued, row))
}

fn credentials(ca: &Ca, issued: crate::pki::Issued) -> Credentials {
    Credentials {
        identity: issued.identity.to_string(),
        serial: issued.serial,
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        ca_pem: ca.cert_pem().to_owned(),
    }
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
    let hash = token_hash(&req.token);
    let now = now_ms();
    let h = hash.clone();
    let enrolled = st.db.call(move |s| s.check_token(&h, now)).await?;
    let (issued, row) = issue(ca.clone(), Identity::Computer(enrolled.computer)).await?;
    st.db
        .call(move |s| s.redeem_token(&hash, &row, now))
        .await?;
    tracing::info!(identity = %issued.identity, serial = %issued.serial, "computer enrolled");
    Ok(axum::Json(credentials(&ca, issued)).into_response())
}

/// SHA-256 of an enrollment token, hex: what the database keeps.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
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
    if !st.db.call(move |s| s.partition_allocated(&cc, &pp)).await? {
        return Err(ApiError::Conflict(format!(
            "partition {c}/{p} is free: only an allocated partition gets a certificate"
        )));
    }
    let id = Identity::Partition(slapos_proto::PartitionRef {
        computer: c,
        partition: p,
    });
    let (issued, row) = issue(ca.clone(), id).await?;
    st.db.call(move |s| s.record_certificate(&row)).await?;
    Ok(axum::Json(credentials(&ca, issued)).into_response())
}

fn empty_object() -> Response {
    axum::Json(serde_json::json!({})).into_response()
}
