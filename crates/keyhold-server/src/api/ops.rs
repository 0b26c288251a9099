//! Operations: liveness, readiness, Prometheus metrics.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::error::{ApiError, ErrorBody};

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the registry answers.
#[utoipa::path(get, path = "/readyz",
    responses(
        (status = 200, description = "ready", body = String, content_type = "text/plain"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: the registry does not answer"),
    ))]
pub async fn readyz(State(state): Shared) -> Result<&'static str, ApiError> {
    state.lifecycle.registry().ping().await?;
    Ok("ready\n")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): Shared) -> Response {
    let by_state = state.tenant_gauge().await;
    let body = state.metrics().render(&state.lifecycle.keyhold().cache_stats(), &by_state);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
