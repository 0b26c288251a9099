//! keyhold's HTTP API v1 on axum: what platform services call (encrypt, decrypt) and
//! operators and tenant administrators use (tenants, keys, validation, audit).
//!
//! - [`api`]: the handlers; [`router`] wires them with request metrics and JSON 404s and
//!   405s.
//! - [`auth`]: Ed25519 JWTs for services (verified against each service's registered key)
//!   and for the admin and tenant admins (verified against the admin key).
//! - [`error`]: `{"error":{"code","message"}}`, status from the variant.
//! - [`state`]: shared state: the lifecycle layer (`keyhold-lifecycle`), which makes every
//!   decision about a tenant, the admin key and the verified-token cache.
//! - [`devcreds`]: the development admin key and `dev` service a fresh data dir gets.
//! - [`openapi`]: the OpenAPI document, generated from the handlers' annotations.
//! - [`serve`]: assembling the state from configuration, listening (plain or [`tls`]),
//!   graceful shutdown.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod devcreds;
pub mod error;
pub mod openapi;
pub mod serve;
pub mod state;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

pub use state::AppState;

/// The largest request body accepted (a batch of 1000 items of ~12 KiB).
pub const MAX_BODY: usize = 16 << 20;

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/tenants", post(api::create_tenant).get(api::list_tenants))
        .route("/v1/tenants/{id}", get(api::get_tenant).delete(api::delete_tenant))
        .route("/v1/tenants/{id}/key-policy", get(api::get_key_policy))
        .route("/v1/tenants/{id}/cloudformation", get(api::get_cloudformation))
        .route("/v1/tenants/{id}/keys", get(api::list_keys))
        .route("/v1/tenants/{id}/keys/{region}", put(api::attach_key))
        .route("/v1/tenants/{id}/validate", post(api::validate_tenant))
        .route("/v1/tenants/{id}/audit", get(api::audit))
        .route("/v1/tenants/{id}/audit/verify", get(api::audit_verify))
        .route("/v1/tenants/{id}/audit/checkpoint", get(api::audit_checkpoint))
        .route("/v1/audit/public-key", get(api::audit_public_key))
        .route("/v1/encrypt", post(api::encrypt))
        .route("/v1/decrypt", post(api::decrypt))
        .route("/v1/encrypt/batch", post(api::encrypt_batch))
        .route("/v1/decrypt/batch", post(api::decrypt_batch))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(openapi::serve))
        .method_not_allowed_fallback(api::extract::method_not_allowed)
        .fallback(|| async { error::ApiError::no_route() })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// Counts every request by matched route and status, with its latency.
async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let resp = next.run(req).await.into_response();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics().request(route, resp.status().as_u16(), started.elapsed());
    resp
}
