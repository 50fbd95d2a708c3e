//! The whole router: the native API ([`crate::http`]), the SLAP wire ([`crate::slap`]: classic
//! routes, `/hateoas`, JSON-RPC), `/metrics` ([`crate::metrics`]) and the web console at `/`
//! ([`crate::console`]), behind the [`crate::middleware`] layers, all timed by [`track`].
//! Testable without a socket (`tower::ServiceExt::oneshot`).

use std::time::Instant;

use axum::Router;
use axum::extract::{Extension, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use slapos_proto::identity::Identity;

use crate::auth::{self, Action};
use crate::error::ApiError;
use crate::state::{AppState, now_ms};

/// The router of every route the master serves.
pub fn app(state: AppState) -> Router {
    crate::http::routes()
        .merge(crate::slap::routes())
        .merge(crate::console::routes())
        .route("/metrics", axum::routing::get(scrape))
        .fallback(crate::http::no_route)
        .method_not_allowed_fallback(crate::http::bad_method)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::body_gate,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::identify,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// The outermost layer: times every request and counts it by route template and status.
async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    st.metrics.observe(
        &route,
        &method,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}

/// `GET /metrics`: operators only (the local operator, admin certificates).
async fn scrape(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
) -> Result<Response, ApiError> {
    auth::allow(&who, Action::AdminOnly("read the fleet metrics"))?;
    let body = st.metrics.render(&st.db, &st.hub, now_ms()).await?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response())
}
