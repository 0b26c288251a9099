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
//! - [`ops`]: health, readiness, metrics.
//! - [`extract`]: path and query extractors answering in keyhold's error format, the
//!   typed path parameters, the 405 and 415 answers.
//! - [`schema`]: the constraints the server enforces, as JSON Schema for the document.

pub mod audit;
pub mod crypto;
pub mod extract;
pub mod keys;
pub mod ops;
pub mod schema;
pub mod tenants;

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use keyhold_core::TenantId;

use crate::auth::{self, Principal, Scope};
use crate::error::ApiError;
use crate::state::AppState;

pub use audit::*;
pub use crypto::*;
pub use keys::*;
pub use ops::*;
pub use tenants::*;

/// Shared state as handlers see it.
pub type Shared = State<Arc<AppState>>;

/// A JSON body whose rejections (bad JSON, missing fields, wrong types) are answered as
/// `invalid_request` in keyhold's error format.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", rejection.body_text())
                }
                _ => ApiError::invalid(rejection.body_text()),
            }),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthenticated("the Authorization header must be Bearer <token>"))?
            .trim();
        let now_s = state.now_ms() / 1000;
        if let Some(p) = state.cached_principal(token, now_s) {
            return Ok(p);
        }
        let claims = auth::unverified_claims(token).map_err(|e| ApiError::unauthenticated(e.to_string()))?;
        let (principal, key) = match claims.scope {
            Scope::Service => {
                let service = state.lifecycle.registry().service(&claims.iss).await?.ok_or_else(|| {
                    ApiError::unauthenticated(auth::TokenError::UnknownIssuer(claims.iss.clone()).to_string())
                })?;
                (
                    Principal::Service { name: service.name.into(), purposes: Arc::new(service.purposes) },
                    service.public_key,
                )
            }
            Scope::Admin => (Principal::Admin, state.admin_public_key.clone()),
            Scope::TenantAdmin => {
                let tenant = claims
                    .tenant
                    .as_deref()
                    .and_then(|t| TenantId::parse(t).ok())
                    .ok_or_else(|| ApiError::unauthenticated("a tenant-admin token must name a valid tenant"))?;
                (Principal::TenantAdmin(tenant), state.admin_public_key.clone())
            }
        };
        let verified = auth::verify(token, &key, now_s).map_err(|e| ApiError::unauthenticated(e.to_string()))?;
        state.cache_principal(token, principal.clone(), verified.exp, now_s);
        Ok(principal)
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
    TenantId::parse(s).map_err(|e| ApiError::invalid(format!("invalid tenant id: {e}")))
}
