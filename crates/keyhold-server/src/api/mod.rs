//! The HTTP API v1 handlers, one module per resource, each handler documented for the
//! OpenAPI document by its `#[utoipa::path]`. Handlers are thin: extract, authorise, call
//! one function of the lifecycle layer, map its error. Every handler takes the
//! authenticated [`Principal`] first and checks what it may do before touching anything;
//! tenant-scoped paths refuse a tenant admin of another tenant with 403.
//!
//! - [`tenants`]: create, list, show, delete; key policy and CloudFormation templates.
//! - [`keys`]: attach a key, the key history, validation.
//! - [`crypto`]: encrypt and decrypt, one at a time or in batches.
//! - [`audit`]: the trail, its verification, signed checkpoints.
//! - [`events`]: lifecycle events, per tenant and platform-wide.
//! - [`webhooks`]: webhook endpoints, per tenant and platform-wide.
//! - [`console`]: one-time sign-in links to the console.
//! - [`services`]: service identities: register, list, purposes, key rotation, removal.
//! - [`ops`]: health, readiness, metrics.
//! - [`extract`]: path and query extractors answering in keyhold's error format, the
//!   typed path parameters, the 405 and 415 answers.
//! - [`schema`]: the constraints the server enforces, as JSON Schema for the document.

pub mod audit;
pub mod console;
pub mod crypto;
pub mod events;
pub mod extract;
pub mod keychange;
pub mod keys;
pub mod ops;
pub mod schema;
pub mod services;
pub mod stream;
pub mod tenants;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use keyhold_core::TenantId;

use crate::auth::{self, Principal, Scope};
use crate::error::ApiError;
use crate::state::{AppState, Proven};

pub use audit::*;
pub use console::*;
pub use crypto::*;
pub use events::*;
pub use keychange::*;
pub use keys::*;
pub use ops::*;
pub use services::*;
pub use stream::*;
pub use tenants::*;
pub use webhooks::*;

/// Shared state as handlers see it.
pub type Shared = State<Arc<AppState>>;

/// A JSON body, read under [`crate::conn::Limits::body_timeout`] and at most
/// [`crate::MAX_BODY`] bytes, whose every rejection is an error in keyhold's format: a
/// body that is not `application/json` is `415 unsupported_media_type`, one that arrives
/// too slowly `408 request_timeout`, one too large `413 payload_too_large`, bad JSON or
/// missing fields or wrong types `400 invalid_request`.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<Arc<AppState>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim();
                m.eq_ignore_ascii_case("application/json")
                    || (m.len() > 5 && m.get(m.len() - 5..).is_some_and(|t| t.eq_ignore_ascii_case("+json")))
            });
        if !json {
            return Err(extract::unsupported_media_type());
        }
        let bytes = read_body(req.into_body(), crate::MAX_BODY, state.limits.body_timeout).await?;
        // Every body keyhold takes is an object; serde would also read a struct from an
        // array of its fields, which no document describes.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("the request body must be a JSON object"));
        }
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

/// Reads a whole body of at most `limit` bytes, which must arrive within `timeout`.
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError::request_timeout(format!(
            "the request body did not arrive within {} s; send it faster or in smaller requests",
            timeout.as_secs()
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over {limit} bytes; split it into smaller requests"),
        )),
        // The client went away or sent a malformed body (bad chunked encoding).
        Ok(Err(e)) => Err(ApiError::invalid(format!("the request body could not be read: {e}"))),
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    /// Every authentication failure gets the same answer, so a caller learns nothing
    /// about which services exist or what was wrong; the reason goes to the request's log
    /// line (`auth_error`).
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state).await {
            Ok(p) => {
                if let Principal::Service { name, .. } = &p {
                    crate::reqlog::service(name);
                }
                Ok(p)
            }
            Err(Refused::Registry(e)) => Err(e.into()),
            Err(Refused::Token(reason)) => {
                crate::reqlog::auth_error(&reason);
                Err(ApiError::unauthenticated(UNAUTHENTICATED))
            }
        }
    }
}

/// The one answer to every authentication failure.
pub const UNAUTHENTICATED: &str =
    "this call needs a valid, unexpired bearer token (Authorization: Bearer <token>) issued to a registered caller";

/// Why a request was not authenticated.
enum Refused {
    /// The token is missing or does not prove anything (the reason, for the log).
    Token(String),
    /// The directory of services could not be read: retryable, not the caller's fault.
    Registry(keyhold_registry::RegistryError),
}

async fn authenticate(parts: &Parts, state: &Arc<AppState>) -> Result<Principal, Refused> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| Refused::Token("no Authorization header".into()))?;
    if header.len() > auth::MAX_TOKEN_BYTES + 7 {
        return Err(Refused::Token(format!("token of {} bytes, over the limit", header.len())));
    }
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| Refused::Token("the Authorization header is not Bearer <token>".into()))?
        .trim();
    let now_ms = state.now_ms();
    let now_s = now_ms / 1000;
    let digest = auth::token_digest(token);
    let proven = match state.cached_token(&digest, now_s) {
        Some(p) => p,
        None => {
            let (proven, exp) = Box::pin(verify_token(token, state, now_ms)).await?;
            state.cache_token(digest, proven.clone(), exp, now_s);
            proven
        }
    };
    match proven {
        Proven::Admin => Ok(Principal::Admin),
        Proven::TenantAdmin(t) => Ok(Principal::TenantAdmin(t)),
        Proven::Service { name, key_id } => {
            // The directory, not the cache, says whether the service and its key are still
            // accepted, and with which purposes.
            let entry = state
                .service(&name, now_ms)
                .await
                .map_err(Refused::Registry)?
                .ok_or_else(|| Refused::Token(format!("service {name:?} is no longer registered")))?;
            if !entry.accepts(&key_id, now_ms) {
                return Err(Refused::Token(format!("key {key_id} of service {name:?} is no longer accepted")));
            }
            Ok(Principal::Service { name: entry.name.clone(), purposes: entry.purposes.clone() })
        }
    }
}

/// Verifies a token not seen before: what it proves and its expiry (s).
async fn verify_token(token: &str, state: &Arc<AppState>, now_ms: u64) -> Result<(Proven, u64), Refused> {
    let now_s = now_ms / 1000;
    let claims = auth::unverified_claims(token).map_err(|e| Refused::Token(e.to_string()))?;
    match claims.scope {
        Scope::Service => {
            let Some(entry) = state.service(&claims.iss, now_ms).await.map_err(Refused::Registry)? else {
                // As much work as for a known service's wrong signature, so the time taken
                // does not tell which services exist.
                let _ = auth::verify(token, auth::unknown_issuer_key(), now_s);
                return Err(Refused::Token(format!("no service named {:?} is registered", claims.iss)));
            };
            let mut last = auth::TokenError::Signature;
            for (id, key, expires) in &entry.keys {
                if expires.is_some_and(|e| e <= now_ms) {
                    continue;
                }
                match auth::verify(token, key, now_s) {
                    Ok(v) => return Ok((Proven::Service { name: entry.name.clone(), key_id: id.clone() }, v.exp)),
                    Err(e) => last = e,
                }
            }
            Err(Refused::Token(format!("service {:?}: {last}", claims.iss)))
        }
        Scope::Admin => {
            let v = auth::verify(token, &state.admin_public_key, now_s).map_err(|e| Refused::Token(e.to_string()))?;
            Ok((Proven::Admin, v.exp))
        }
        Scope::TenantAdmin => {
            let tenant = claims
                .tenant
                .as_deref()
                .and_then(|t| TenantId::parse(t).ok())
                .ok_or_else(|| Refused::Token("a tenant-admin token must name a valid tenant".into()))?;
            let v = auth::verify(token, &state.admin_public_key, now_s).map_err(|e| Refused::Token(e.to_string()))?;
            Ok((Proven::TenantAdmin(tenant), v.exp))
        }
    }
}

/// Only the admin may do this.
pub(crate) fn admin_only(p: &Principal) -> Result<(), ApiError> {
    match p {
        Principal::Admin => Ok(()),
        _ => Err(ApiError::forbidden("this call needs an admin token")),
    }
}

/// The admin, or this tenant's own administrator.
pub(crate) fn manages(p: &Principal, tenant: &TenantId) -> Result<(), ApiError> {
    match p {
        Principal::Admin => Ok(()),
        Principal::TenantAdmin(t) if t == tenant => Ok(()),
        Principal::TenantAdmin(_) => Err(ApiError::forbidden("a tenant-admin token covers only its own tenant")),
        Principal::Service { .. } => Err(ApiError::forbidden("services may only encrypt and decrypt")),
    }
}

/// A tenant id from the request.
pub(crate) fn tenant_id(s: &str) -> Result<TenantId, ApiError> {
    let t = TenantId::parse(s).map_err(|e| ApiError::invalid(format!("invalid tenant id: {e}")))?;
    crate::reqlog::tenant(&t);
    Ok(t)
}
