//! keyhold's HTTP API v1 on axum: what platform services call (encrypt, decrypt) and
//! operators and tenant administrators use (tenants, keys, validation, audit).
//!
//! - [`api`]: the handlers; [`router`] wires them with the edge middleware (request id,
//!   in-flight limit, one log line and metrics per request) and JSON 404s and 405s.
//! - [`console`]: the tenant-admin console and operators' view at `/console/`, server
//!   rendered, every asset embedded, signed in with one-time links.
//! - [`conn`]: the accept loop, TLS handshakes, timeouts and connection limits.
//! - [`auth`]: Ed25519 JWTs for services (verified against each service's registered key)
//!   and for the admin and tenant admins (verified against the admin key).
//! - [`error`]: `{"error":{"code","message"}}`, status from the variant.
//! - [`state`]: shared state: the lifecycle layer (`keyhold-lifecycle`), which makes every
//!   decision about a tenant, the admin key and the verified-token cache.
//! - [`devcreds`]: the development admin key and `dev` service a fresh data dir gets.
//! - [`openapi`]: the OpenAPI document, generated from the handlers' annotations.
//! - [`services`]: service identities' lifecycle (register, rotate, narrow, remove).
//! - [`telemetry`]: logs (text or JSON) and OTLP trace export.
//! - [`reqlog`]: the one log line per request and what handlers add to it.
//! - [`webhooks`]: signed webhook delivery (Standard Webhooks) from the registry's queue.
//! - [`serve`]: assembling the state from configuration, listening (plain or [`tls`]),
//!   graceful shutdown.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod conn;
pub mod console;
pub mod devcreds;
pub mod error;
pub mod openapi;
pub mod reqlog;
pub mod serve;
pub mod services;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod webhooks;

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tracing::Instrument as _;

pub use state::AppState;

/// The largest request body accepted (a batch of 1000 items of ~12 KiB).
pub const MAX_BODY: usize = 16 << 20;

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/tenants", post(api::create_tenant).get(api::list_tenants))
        .route("/v1/tenants/{id}", get(api::get_tenant).delete(api::delete_tenant))
        .route("/v1/tenants/{id}/setup", put(api::configure_tenant))
        .route("/v1/tenants/{id}/key-policy", get(api::get_key_policy))
        .route("/v1/tenants/{id}/cloudformation", get(api::get_cloudformation))
        .route("/v1/tenants/{id}/keys", get(api::list_keys))
        .route("/v1/tenants/{id}/keys/{region}", put(api::attach_key))
        .route("/v1/tenants/{id}/keys/{region}/{key}/retire", post(api::retire_key))
        .route("/v1/tenants/{id}/key-change", get(api::key_change))
        .route("/v1/tenants/{id}/rotate-data-keys", post(api::rotate_data_keys))
        .route("/v1/tenants/{id}/role", put(api::set_role))
        .route("/v1/tenants/{id}/validate", post(api::validate_tenant))
        .route("/v1/tenants/{id}/audit", get(api::audit))
        .route("/v1/tenants/{id}/events", get(api::tenant_events))
        .route("/v1/events", get(api::events))
        .route("/v1/tenants/{id}/webhooks", post(api::create_tenant_webhook).get(api::list_tenant_webhooks))
        .route("/v1/tenants/{id}/webhooks/{wid}", get(api::get_tenant_webhook).delete(api::delete_tenant_webhook))
        .route("/v1/tenants/{id}/webhooks/{wid}/rotate-secret", post(api::rotate_tenant_webhook))
        .route("/v1/tenants/{id}/webhooks/{wid}/test", post(api::test_tenant_webhook))
        .route("/v1/tenants/{id}/webhooks/{wid}/deliveries", get(api::tenant_webhook_deliveries))
        .route("/v1/webhooks", post(api::create_webhook).get(api::list_webhooks))
        .route("/v1/webhooks/{wid}", get(api::get_webhook).delete(api::delete_webhook))
        .route("/v1/webhooks/{wid}/rotate-secret", post(api::rotate_webhook))
        .route("/v1/webhooks/{wid}/test", post(api::test_webhook))
        .route("/v1/webhooks/{wid}/deliveries", get(api::webhook_deliveries))
        .route("/v1/tenants/{id}/audit/verify", get(api::audit_verify))
        .route("/v1/tenants/{id}/audit/checkpoint", get(api::audit_checkpoint))
        .route("/v1/audit/public-key", get(api::audit_public_key))
        .route("/v1/services", post(api::create_service).get(api::list_services))
        .route("/v1/services/{name}", get(api::get_service).delete(api::delete_service))
        .route("/v1/services/{name}/purposes", put(api::set_service_purposes))
        .route("/v1/services/{name}/rotate", post(api::rotate_service))
        .route("/v1/encrypt", post(api::encrypt))
        .route("/v1/decrypt", post(api::decrypt))
        .route("/v1/encrypt/batch", post(api::encrypt_batch))
        .route("/v1/decrypt/batch", post(api::decrypt_batch))
        .route("/v1/reencrypt", post(api::reencrypt))
        .route("/v1/reencrypt/batch", post(api::reencrypt_batch))
        .route("/v1/encrypt/stream", post(api::encrypt_stream))
        .route("/v1/decrypt/stream", post(api::decrypt_stream))
        .route("/v1/reencrypt/stream", post(api::reencrypt_stream))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/console/links", post(api::create_console_link))
        .merge(console::routes(state.clone()))
        .method_not_allowed_fallback(api::extract::method_not_allowed)
        .fallback(|| async { error::ApiError::no_route() })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

/// The request-id header: accepted from the client when it is 1 to 128 characters of
/// `A-Za-z0-9._:-`, generated otherwise, and returned on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Routes served even when [`conn::Limits::max_in_flight`] requests are in flight, so
/// liveness checks and metrics keep answering under overload.
const EXEMPT_ROUTES: [&str; 2] = ["/healthz", "/metrics"];

/// The edge of every request: its id, the in-flight limit, one log line with what the
/// handler recorded ([`reqlog`]), and metrics by matched route and status. With trace
/// export on, the request also runs in a `request` span.
async fn edge(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let id = request_id(req.headers().get(&REQUEST_ID));
    let method = req.method().clone();
    // hyper bounds its read buffer, not a head's size: a head over the limit is refused
    // here, in keyhold's error format.
    let head = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>();
    if head > conn::MAX_HEAD_BYTES {
        let mut resp = error::ApiError::new(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("a request head holds at most {} bytes; this one has {head}", conn::MAX_HEAD_BYTES),
        )
        .into_response();
        // A client sending such heads gets no further requests on this connection.
        resp.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
        finish(&state, &method, route, started, &mut resp, id, &reqlog::Fields::default());
        return resp;
    }
    let permit = if EXEMPT_ROUTES.contains(&route) {
        None
    } else {
        let Some(p) = state.enter_in_flight() else {
            // The request line (status 503) says it; no extra line per refusal, so a flood
            // cannot multiply the log.
            let mut resp = error::ApiError::overloaded(
                "keyhold is handling its maximum number of requests; retry after the Retry-After delay",
            )
            .into_response();
            finish(&state, &method, route, started, &mut resp, id, &reqlog::Fields::default());
            return resp;
        };
        Some(p)
    };
    let (mut resp, fields) = if reqlog::spans() {
        let span = tracing::info_span!(
            "request",
            id = %id.to_str().unwrap_or_default(),
            method = log_method(&method),
            route = %route,
            tenant = tracing::field::Empty,
            service = tracing::field::Empty,
            auth_error = tracing::field::Empty,
        );
        reqlog::scope(next.run(req).instrument(span)).await
    } else {
        reqlog::scope(next.run(req)).await
    };
    drop(permit);
    finish(&state, &method, route, started, &mut resp, id, &fields);
    resp
}

/// The request's log line and metrics, and its id on the response.
fn finish(
    state: &AppState,
    method: &axum::http::Method,
    route: &str,
    started: Instant,
    resp: &mut Response,
    id: HeaderValue,
    fields: &reqlog::Fields,
) {
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics().request(route, status, elapsed);
    reqlog::emit(&reqlog::Line {
        id: id.to_str().unwrap_or_default(),
        method: log_method(method),
        route,
        status,
        latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        fields,
    });
    resp.headers_mut().insert(REQUEST_ID, id);
}

/// A method as it may be logged: a client may send any token as its method, so
/// extension methods are logged as `other` (a line's size never depends on what a client
/// chose to send).
fn log_method(m: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        M::TRACE => "TRACE",
        M::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The client's request id when well-formed, or a new one: this process's random prefix
/// and a counter.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = given
        && (1..=128).contains(&v.len())
        && v.as_bytes().iter().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
    {
        return v.clone();
    }
    static PREFIX: LazyLock<u64> = LazyLock::new(|| {
        let mut b = [0u8; 8];
        // Without randomness the prefix is the start time: ids stay unique per process.
        if aws_lc_rs::rand::fill(&mut b).is_err() {
            return std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        }
        u64::from_le_bytes(b)
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("{:016x}-{n:x}", *PREFIX)).unwrap_or(HeaderValue::from_static("unknown"))
}
