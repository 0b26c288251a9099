//! The tenant's audit trail: pages of events, verification of the chain and its signed
//! head, signed checkpoints.

use axum::Json;
use axum::extract::State;
use keyhold_audit::Record;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiPath, ApiQuery, TenantPath};
use super::{Shared, manages, schema, tenant_id};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};

/// `?after=&limit=` of the audit call.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Events after this sequence number (default 0: from the start).
    #[param(schema_with = schema::audit_after)]
    pub after: Option<u64>,
    /// At most this many, 1 to 1000 (default 1000).
    #[param(schema_with = schema::audit_limit)]
    pub limit: Option<u32>,
}

/// An audit page.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The events, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Record>,
}

/// The tenant's audit trail, a page at a time.
#[utoipa::path(get, path = "/v1/tenants/{id}/audit", params(TenantPath, AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id, `after` or `limit`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 410, body = ErrorBody,
            description = "`tenant_deleted`: the trail stays in the registry, unchanged, but is not served; export it before deleting"),
        (status = 500, body = ErrorBody, description = "`internal`: a stored event does not read"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn audit(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let after = q.after.unwrap_or(0);
    if i64::try_from(after).is_err() {
        return Err(ApiError::invalid(format!("after must be at most {}", i64::MAX)));
    }
    let limit = q.limit.unwrap_or(schema::AUDIT_PAGE);
    if !(1..=schema::AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1 to {}, not {limit}", schema::AUDIT_PAGE)));
    }
    state.lifecycle.live_tenant(&id).await?;
    state.lifecycle.flush(false).await;
    let events = state.lifecycle.journal().auditor().read(&id, after, limit).await.map_err(audit_error)?;
    Ok(Json(AuditPage { events }))
}

pub(crate) fn audit_error(e: keyhold_audit::AuditError) -> ApiError {
    match e {
        keyhold_audit::AuditError::Registry(r) => r.into(),
        _ => ApiError::internal(),
    }
}

/// The verification of a trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyOut {
    /// Whether the chain is intact.
    pub ok: bool,
    /// Events verified.
    pub events: u64,
    /// The first break, if any.
    #[schema(value_type = Option<Object>)]
    pub problem: Option<keyhold_audit::ChainBreak>,
    /// The break in words.
    pub message: Option<String>,
}

/// Verifies the tenant's audit trail: the hash chain, and the head's signature by the
/// audit key (which is not in the database); a trail that was rewritten, truncated or
/// wiped fails.
#[utoipa::path(get, path = "/v1/tenants/{id}/audit/verify", params(TenantPath),
    responses(
        (status = 200, body = VerifyOut, description = "the verdict, intact or the first break"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 410, body = ErrorBody,
            description = "`tenant_deleted`: the trail stays in the registry, unchanged, but is not served; export it before deleting"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn audit_verify(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Json<VerifyOut>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    state.lifecycle.live_tenant(&id).await?;
    Ok(Json(match state.lifecycle.journal().auditor().verify(&id, true).await.map_err(audit_error)? {
        Ok(n) => VerifyOut { ok: true, events: n, problem: None, message: None },
        Err(b) => VerifyOut { ok: false, events: 0, message: Some(b.to_string()), problem: Some(b) },
    }))
}

/// The tenant's signed checkpoint: the trail's head (sequence number and hash) signed by
/// keyhold's audit key. A tenant that keeps checkpoints can prove later that its trail was
/// not rolled back; the last line of an export is one.
#[utoipa::path(get, path = "/v1/tenants/{id}/audit/checkpoint", params(TenantPath),
    responses(
        (status = 200, body = Object, description = "`{\"tenant\",\"seq\",\"hash\",\"at_ms\",\"signature\",\"public_key\"}`"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 410, body = ErrorBody,
            description = "`tenant_deleted`: the trail stays in the registry, unchanged, but is not served; export it before deleting"),
        (status = 409, body = ErrorBody, description = "`audit_broken`: the trail does not verify, nothing is signed"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn audit_checkpoint(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Json<keyhold_audit::Checkpoint>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    state.lifecycle.live_tenant(&id).await?;
    state.lifecycle.flush(false).await;
    match state.lifecycle.journal().auditor().checkpoint(&id).await {
        Ok(c) => Ok(Json(c)),
        Err(keyhold_audit::AuditError::Registry(r)) => Err(r.into()),
        Err(e) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "audit_broken",
            format!("the trail does not verify, so keyhold signs no checkpoint for it: {e}"),
        )),
    }
}

/// The audit key's public half.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKeyOut {
    /// `ed25519`.
    pub algorithm: &'static str,
    /// The 32-byte public key, base64.
    pub public_key: String,
}

/// The public key that signs every trail's head and every checkpoint: what a tenant
/// verifies an export against offline (`keyhold audit verify --file --public-key`).
#[utoipa::path(get, path = "/v1/audit/public-key", responses((status = 200, body = PublicKeyOut)))]
pub async fn audit_public_key(State(state): Shared) -> Json<PublicKeyOut> {
    use base64::Engine as _;
    let key = state.lifecycle.journal().auditor().public_key();
    Json(PublicKeyOut { algorithm: "ed25519", public_key: base64::engine::general_purpose::STANDARD.encode(key) })
}
