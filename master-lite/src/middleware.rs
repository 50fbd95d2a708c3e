//! The layers every request passes before its handler: who is calling (`identify`) and the
//! budget and deadline of its body (`body_gate`).
//!
//! Identity: `identify` attaches an [`Identity`] to every request (the client certificate's
//! over mTLS, after checking its serial is recorded and not revoked; over plain HTTP, the uid
//! owning the client socket mapped by [`crate::local::LocalTrust`]) and logs every 403 with the identity,
//! method and path. Over TLS, a connection without a client certificate reaches
//! `POST /v1/enroll` only; an unidentified local caller `GET /v1/health` only.

use std::future::Future;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use slapos_proto::MAX_BODY_BYTES;
use slapos_proto::identity::{ENROLL_ROUTE, Identity};

use crate::error::ApiError;
use crate::local::describe_uid;
use crate::server::{Peer, Transport};
use crate::state::{AppState, FromThisHost};

type ApiResult<T> = Result<T, ApiError>;

/// How much of a refused request's body is read before its answer ([`drain`]).
const REFUSED_DRAIN_BYTES: usize = 64 << 10;
/// How long a refused request's body is waited for before its answer ([`drain`]).
const REFUSED_DRAIN_FOR: Duration = Duration::from_secs(2);

/// Reads and drops what is left of a request body that will not be used (a refusal, a body
/// over its limit) before the answer: until more than `max` bytes were seen (`seen` of them
/// read already) or `within` passed. hyper closes a connection whose request body was left
/// unread; the body's bytes that arrive after the close make the kernel reset the connection,
/// and a reset can drop the answer before the client read it: the caller sees a broken
/// connection instead of its 403 or 413 (a client that writes the headers and the body apart,
/// as ureq does, loses that race now and then). Read, the body lets the connection stay open,
/// as nginx's lingering close does.
pub(crate) async fn drain(
    body: &mut axum::body::Body,
    mut seen: usize,
    max: usize,
    within: Duration,
) {
    use http_body_util::BodyExt;

    let rest = async {
        while seen <= max {
            match body.frame().await {
                Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(within, rest).await;
}

/// Attach the caller's [`Identity`] (see the module doc), refuse what no identity may reach,
/// and log every 403.
pub(crate) async fn identify(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
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
        Err(e) => {
            drain(req.body_mut(), 0, REFUSED_DRAIN_BYTES, REFUSED_DRAIN_FOR).await;
            e.into_response()
        }
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
    match st.db.lookup(move |s| s.partition_of_local_uid(uid)).await {
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
pub(crate) async fn certificate_valid(
    st: &AppState,
    id: &Identity,
    serial: String,
) -> ApiResult<()> {
    let shown = serial.clone();
    let row = st.db.lookup(move |s| s.certificate(&serial)).await?;
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

/// Every body has at least this long to arrive, plus [`BODY_MIN_RATE`] for its size.
pub const BODY_BASE_TIME: Duration = Duration::from_secs(10);
/// Slowest body upload accepted (bytes per second): an edge uplink, not a trickle.
pub const BODY_MIN_RATE: u64 = 64 << 10;

/// Before a handler reads a body: reserve its size (announced, else the route's limit) in the
/// shared [`BodyBudget`] (none left: 503, retry), and give it a deadline
/// ([`BODY_BASE_TIME`] + size / [`BODY_MIN_RATE`]; missed: the read fails with 408). So parallel
/// large bodies cannot exhaust memory and a client trickling a body cannot hold its request
/// forever. The reservation is held until the handler answered.
pub(crate) async fn body_gate(State(st): State<AppState>, req: Request, next: Next) -> Response {
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
