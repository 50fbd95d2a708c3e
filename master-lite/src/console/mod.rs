//! The read-only web console (issue 14): `GET /` serves one HTML page, its stylesheet and a
//! little vanilla JavaScript, all embedded in the binary (`include_str!`, about 15 KB, no
//! build step); the page polls `GET /console/api/view` every few seconds and draws computers,
//! instances, releases, usage charts (inline SVG) and the KPIs partitions publish.
//!
//! # Why a console endpoint rather than the `/v1` API from the browser
//!
//! The page could read `/v1/computers`, `/v1/instances` and `/v1/usage`, but those answer the
//! connection parameters and instance parameters as stored, secrets included; masking them in
//! JavaScript would still hand the secrets to the browser (its cache, its DOM, an extension, a
//! screenshot). [`view`] masks them on the server, so `/console/api/view` never carries one,
//! and it answers the whole page in one round trip (one read of the database per poll).
//!
//! # Who sees what
//!
//! The console sits behind the same `identify` layer as the API: over `--tls-dir` a caller
//! without a client certificate is refused (403) before any handler, and a certified caller
//! sees what the API would show it, decided by the same [`auth::allowed`]: computers by
//! [`Action::ReadComputer`], instances by [`Action::ReadInstance`] (a user its own trees), usage
//! charts only for those who may read the usage report (operators, admins). On the loopback
//! plain-HTTP listener it is the local operator's page, the same trust as the API there.
//! The page itself holds no data; the stylesheet and script are public within that gate.
//!
//! # Limits
//!
//! Masking goes by key: free text (promise output, a reported error, a bang message) is shown
//! as the node reported it, as `/v1` shows it to the same caller. Charts of KPIs are drawn
//! from what the page has seen since it was opened (the master keeps the latest values only).

pub mod view;

use std::collections::HashSet;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use slapos_proto::identity::Identity;

use crate::auth::{self, Action};
use crate::error::ApiError;
use crate::http::facts;
use crate::state::{AppState, now_ms};

/// What `standalone` prints before the console's URL.
pub const ANNOUNCE: &str = "web console: ";

/// The route of the console's data.
pub const VIEW_ROUTE: &str = "/console/api/view";

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_CSS: &str = include_str!("assets/console.css");
const CONSOLE_JS: &str = include_str!("assets/console.js");

/// Charts cover at most this many hours, in 60 buckets.
const MAX_HOURS: u64 = 24;
const BUCKETS: u64 = 60;

/// The console's routes; [`crate::app`] mounts them beside the API, behind the same layers.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/console.css", get(css))
        .route("/console/console.js", get(js))
        .route(VIEW_ROUTE, get(view_handler))
}

/// Headers of every console answer: nothing from elsewhere runs or loads in the page, it is
/// never framed, and nothing is cached (the data changes; the assets change with the binary).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(h);
    res
}

fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

/// Query of [`VIEW_ROUTE`]: the charts' window in hours (1 by default, at most 24).
#[derive(Debug, Deserialize)]
struct ViewQuery {
    hours: Option<u64>,
}

/// `GET /console/api/view`: everything the page shows that the caller may read.
async fn view_handler(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    q: Result<Query<ViewQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|r| ApiError::BadRequest(format!("invalid query: {}", r.body_text())))?;
    let hours = q.hours.unwrap_or(1);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(ApiError::BadRequest(format!(
            "hours must be 1 to {MAX_HOURS}, got {hours}"
        )));
    }
    let now = now_ms();
    let usage = auth::allowed(&who, &Action::AdminOnly("read the usage report"));
    let bucket_ms = hours * 3_600_000 / BUCKETS;
    let until = now;
    // Whole buckets: the first one starts at the window's start.
    let since = now.saturating_sub(hours * 3_600_000) / bucket_ms * bucket_ms;
    let (computers, instances, points) = st
        .db
        .read(move |s| -> Result<_, ApiError> {
            let points = if usage {
                Some(s.usage_series(since, until, bucket_ms)?)
            } else {
                None
            };
            Ok((s.computers()?, s.instances_owned()?, points))
        })
        .await?;
    let computers: Vec<_> = computers
        .into_iter()
        .filter(|c| auth::allowed(&who, &Action::ReadComputer(&c.id)))
        .map(|mut c| {
            c.last_seen_ms = c.last_seen_ms.max(st.hub.last_seen(&c.id));
            view::computer(&c)
        })
        .collect();
    let instances: Vec<_> = instances
        .iter()
        .filter(|(i, o)| auth::allowed(&who, &Action::ReadInstance(facts(i, o.as_deref()))))
        .map(|(i, _)| view::instance(i))
        .collect();
    let shown: HashSet<_> = instances
        .iter()
        .map(|i| (i.computer.clone(), i.partition.clone(), i.title.clone()))
        .collect();
    let usage = points.map(|p| view::UsageView {
        since_ms: since,
        until_ms: until,
        bucket_ms,
        series: view::series(&p, &shown),
    });
    let mut res = axum::Json(view::View {
        now_ms: now,
        computers,
        instances,
        usage,
    })
    .into_response();
    secure(res.headers_mut());
    Ok(res)
}
