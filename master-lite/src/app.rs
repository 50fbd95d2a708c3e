//! The whole router: the native API ([`crate::http`]), the SLAP wire ([`crate::slap`]: classic
//! routes, `/hateoas`, JSON-RPC) and `/metrics` ([`crate::metrics`]), behind the
//! [`crate::middleware`] layers, all timed by [`crate::metrics::track`]. Testable without a
//! socket (`tower::ServiceExt::oneshot`).

use axum::Router;
use axum::middleware;

use crate::state::AppState;

/// The router of every route the master serves.
pub fn app(state: AppState) -> Router {
    crate::http::routes()
        .merge(crate::slap::routes())
        .route("/metrics", axum::routing::get(crate::metrics::scrape))
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
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}
