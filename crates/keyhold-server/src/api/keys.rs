//! A tenant's keys: attaching a key for a region (validated first), the key history, and
//! validation of the active set.

use axum::Json;
use axum::extract::State;
use keyhold_core::Region;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{ApiPath, TenantPath, TenantRegionPath};
use super::{ApiJson, Shared, manages, schema, tenant_id};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// `PUT /v1/tenants/{id}/keys/{region}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachKey {
    /// The key's ARN (or, for a `local` tenant, a local key id).
    #[schema(schema_with = schema::key_arn)]
    pub key_arn: String,
}

fn report_json(report: &keyhold_onboarding::Report, attached: Option<bool>) -> Result<serde_json::Value, ApiError> {
    let mut v = serde_json::to_value(report).map_err(|_| ApiError::internal())?;
    if let (Some(a), Some(o)) = (attached, v.as_object_mut()) {
        o.insert("attached".into(), serde_json::Value::Bool(a));
    }
    Ok(v)
}

/// Validates a key for one region of the tenant's realm and attaches it as the region's
/// active key (the previous one becomes `decrypt_only`); returns the validation report of
/// the tenant's key set with `attached`. A tenant in service keeps its keys when the new
/// set is not usable; the tenant becomes `active` when every region's key validates.
#[utoipa::path(put, path = "/v1/tenants/{id}/keys/{region}", request_body = AttachKey, params(TenantRegionPath),
    responses(
        (status = 200, body = Object,
            description = "the validation report of the tenant's key set, with `attached` (false when the key or the \
                           set it makes does not validate)"),
        (status = 400, body = ErrorBody,
            description = "`invalid_request`: the tenant id, a region that is not in the tenant's realm, a key ARN \
                           that is malformed, an alias, or in another region than the path's"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody,
            description = "`key_in_use` (another tenant's or region's key), `key_retired`, `conflict` (retry), \
                           `not_configured` (the tenant's realm is not in the catalog)"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`, `audit_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn attach_key(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantRegionPath { id, region }): ApiPath<TenantRegionPath>,
    ApiJson(body): ApiJson<AttachKey>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let region = catalog_region(&state, &region)?;
    let outcome = state.lifecycle.attach_key(&p.actor(), &id, &region, &body.key_arn).await?;
    Ok(Json(report_json(&outcome.report, Some(outcome.attached))?))
}

/// A region from the request: a region of some realm of the catalog (the document's
/// `Region` enum), checked before the tenant is read; whether it is in the tenant's realm
/// is for the lifecycle layer to say.
pub(crate) fn catalog_region(state: &AppState, s: &str) -> Result<Region, ApiError> {
    let region = Region::parse(s).map_err(|e| ApiError::invalid(format!("invalid region: {e}")))?;
    if !state.lifecycle.catalog().realms().iter().any(|r| r.regions.contains(&region)) {
        return Err(ApiError::invalid(format!("region {region} is in no realm of this server's catalog")));
    }
    Ok(region)
}

/// Validates the tenant's active keys again (after the tenant fixed a finding, or
/// restored access); a usable set makes the tenant `active`.
#[utoipa::path(post, path = "/v1/tenants/{id}/validate", params(TenantPath),
    responses(
        (status = 200, body = Object, description = "the validation report of the tenant's active keys"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody, description = "`conflict`: a probe changed the tenant meanwhile, retry"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`, `audit_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn validate_tenant(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let report = state.lifecycle.validate(&p.actor(), &id).await?;
    Ok(Json(report_json(&report, None)?))
}
