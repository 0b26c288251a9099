//! Tenants: create, list, show, delete; the key policy and CloudFormation templates a
//! tenant administrator applies.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyhold_onboarding::{PolicyParams, byok_role_template, cmk_template, key_policy};
use keyhold_registry::{Tenant, TenantKey, TenantMode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiPath, ApiQuery, TenantPath};
use super::keys::catalog_region;
use super::{ApiJson, Shared, admin_only, manages, schema, tenant_id};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// A tenant as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantOut {
    /// Id.
    pub id: String,
    /// Realm.
    pub realm: String,
    /// `cmk`, `byok` or `local`.
    pub mode: String,
    /// `pending`, `active`, `degraded`, `suspended`, `deleted`.
    pub state: String,
    /// The stable code of why it is in that state (`created`, `keys_validated`,
    /// `validation_failed`, `key_refused`, `key_unavailable`, `keys_healthy`, `deleted`).
    pub cause: Option<String>,
    /// Why it is in that state, in words.
    pub reason: Option<String>,
    /// BYOK: the role in the tenant's account keyhold assumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// BYOK: the ExternalId keyhold presents when assuming it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The realm's regions, home first.
    pub regions: Vec<String>,
    /// Its key history: every key attached, with its status.
    pub keys: Vec<KeyOut>,
    /// Created (ms since the Unix epoch).
    pub created_ms: u64,
    /// Last changed (ms since the Unix epoch).
    pub updated_ms: u64,
}

/// A key of a tenant's key history.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyOut {
    /// Region.
    pub region: String,
    /// Key ARN or local key id.
    pub key_arn: String,
    /// `active` (encrypts and decrypts), `decrypt_only` (replaced; decrypts what it
    /// protects) or `retired`.
    pub status: String,
    /// What the last validation or probe found: `valid`, `invalid`, `revoked`.
    pub state: String,
    /// Last validated or probed (ms since the Unix epoch).
    pub last_check_ms: Option<u64>,
    /// Attached (ms since the Unix epoch).
    pub attached_ms: u64,
    /// Status last changed (ms since the Unix epoch).
    pub status_ms: u64,
}

impl From<TenantKey> for KeyOut {
    fn from(k: TenantKey) -> Self {
        KeyOut {
            region: k.region.to_string(),
            key_arn: k.key,
            status: k.status.to_string(),
            state: k.state.to_string(),
            last_check_ms: k.last_check_ms,
            attached_ms: k.attached_ms,
            status_ms: k.status_ms,
        }
    }
}

pub(crate) async fn tenant_out(state: &AppState, t: Tenant) -> Result<TenantOut, ApiError> {
    let keys = state.lifecycle.key_history(&t.id).await?;
    let regions =
        state.lifecycle.catalog().get(t.realm.as_str()).map(|r| r.regions.iter().map(|r| r.to_string()).collect());
    Ok(TenantOut {
        id: t.id.to_string(),
        realm: t.realm.to_string(),
        mode: t.mode.to_string(),
        state: t.state.to_string(),
        cause: t.cause.map(|c| c.to_string()),
        reason: t.reason,
        external_id: t.role_arn.as_ref().map(|_| keyhold_onboarding::external_id(&t.id)),
        role_arn: t.role_arn,
        regions: regions.unwrap_or_default(),
        keys: keys.into_iter().map(KeyOut::from).collect(),
        created_ms: t.created_ms,
        updated_ms: t.updated_ms,
    })
}

/// `POST /v1/tenants` body (its schema: [`schema::create_tenant`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Tenant id: ASCII letters, digits and `-_.:`, starting with a letter or digit.
    pub id: String,
    /// Realm id (`eu`, `us`, `de`, ...).
    pub realm: String,
    /// `cmk` (key policy grants the platform), `byok` (role in the tenant's account) or
    /// `local` (keys of the embedded local provider).
    pub mode: String,
    /// BYOK only: the role keyhold assumes (`arn:aws:iam::<account>:role/<name>`, from the
    /// byok-role template), with ExternalId `keyhold-<tenant id>`.
    #[serde(default)]
    pub role_arn: Option<String>,
}

impl utoipa::PartialSchema for CreateTenant {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::create_tenant()
    }
}

impl ToSchema for CreateTenant {}

/// Creates a tenant (state `pending` until its keys validate).
#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant,
    responses(
        (status = 201, body = TenantOut, description = "the tenant, `pending`"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: id, realm, mode or role_arn"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin token"),
        (status = 409, body = ErrorBody, description = "`tenant_exists` (deleted tenants' ids included)"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`, `audit_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn create_tenant(
    p: Principal,
    State(state): Shared,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantOut>), ApiError> {
    admin_only(&p)?;
    let id = tenant_id(&body.id)?;
    let mode: TenantMode = body.mode.parse().map_err(|e: String| ApiError::invalid(format!("invalid mode: {e}")))?;
    let t = state.lifecycle.create_tenant(&p.actor(), &id, &body.realm, mode, body.role_arn.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(tenant_out(&state, t).await?)))
}

/// `PUT /v1/tenants/{id}/setup` body (its schema: [`schema::configure_tenant`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigureTenant {
    /// Realm id.
    pub realm: String,
    /// `cmk`, `byok` or (admin only) `local`.
    pub mode: String,
    /// BYOK only: the role keyhold assumes.
    #[serde(default)]
    pub role_arn: Option<String>,
}

impl utoipa::PartialSchema for ConfigureTenant {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::configure_tenant()
    }
}

impl ToSchema for ConfigureTenant {}

/// Chooses a pending tenant's realm and mode (and a byok tenant's role) before any key is
/// attached: what its administrator picks in the onboarding wizard. `local` (keys of the
/// platform's own local provider) is for the admin only.
#[utoipa::path(put, path = "/v1/tenants/{id}/setup", request_body = ConfigureTenant, params(TenantPath),
    responses(
        (status = 200, body = TenantOut, description = "the tenant, still `pending`, in its new realm and mode"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id, realm, mode or role_arn"),
        (status = 403, body = ErrorBody,
            description = "`forbidden`: a service, another tenant's admin, or a tenant admin choosing `local`"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody,
            description = "`setup_fixed`: the tenant is no longer pending or has a key attached"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`, `audit_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn configure_tenant(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiJson(body): ApiJson<ConfigureTenant>,
) -> Result<Json<TenantOut>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let mode: TenantMode = body.mode.parse().map_err(|e: String| ApiError::invalid(format!("invalid mode: {e}")))?;
    if mode == TenantMode::Local && p != Principal::Admin {
        return Err(ApiError::forbidden(
            "local keys are the platform's own: a tenant's administrator chooses cmk or byok",
        ));
    }
    let t = state.lifecycle.configure(&p.actor(), &id, &body.realm, mode, body.role_arn.as_deref()).await?;
    Ok(Json(tenant_out(&state, t).await?))
}

/// Lists tenants, deleted ones included (state `deleted`).
#[utoipa::path(get, path = "/v1/tenants",
    responses(
        (status = 200, body = [TenantOut]),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin token"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn list_tenants(p: Principal, State(state): Shared) -> Result<Json<Vec<TenantOut>>, ApiError> {
    admin_only(&p)?;
    let mut out = Vec::new();
    for t in state.lifecycle.registry().tenants().await? {
        out.push(tenant_out(&state, t).await?);
    }
    Ok(Json(out))
}

/// Shows one tenant, with its key history.
#[utoipa::path(get, path = "/v1/tenants/{id}", params(TenantPath),
    responses(
        (status = 200, body = TenantOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted` (the tenant list still shows it)"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn get_tenant(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Json<TenantOut>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let t = state.lifecycle.live_tenant(&id).await?;
    Ok(Json(tenant_out(&state, t).await?))
}

/// Deletes a tenant: its key references are destroyed and its cached data keys dropped at
/// once; a `local` tenant's keys are scheduled for deletion (unusable at once, offline
/// too). A CMK or BYOK tenant shreds its data by deleting its own KMS keys. Its audit
/// trail stays in the registry, unchanged. Later requests for it, its audit trail
/// included, get `tenant_deleted` (so a tenant exports its trail before it is deleted).
#[utoipa::path(delete, path = "/v1/tenants/{id}", params(TenantPath),
    responses(
        (status = 200, body = TenantOut, description = "the tenant, `deleted`"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin token"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody, description = "`conflict`: the tenant changed meanwhile, retry"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`: deleted already"),
        (status = 500, body = ErrorBody,
            description = "`shred_incomplete`: deleted, but local keys are left to schedule for deletion by hand; `internal`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`, `audit_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn delete_tenant(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Json<TenantOut>, ApiError> {
    let id = tenant_id(&id)?;
    admin_only(&p)?;
    let t = state.lifecycle.delete_tenant(&p.actor(), &id).await?;
    Ok(Json(tenant_out(&state, t).await?))
}

/// `?region=` of the key-policy call.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegionQuery {
    /// One region of the tenant's realm; default: every region.
    #[param(schema_with = schema::region)]
    pub region: Option<String>,
}

fn principal_of(state: &AppState) -> Result<&str, ApiError> {
    state.lifecycle.platform_principal().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_configured",
            "keyhold has no platform principal configured (--platform-principal); it cannot write key policies",
        )
    })
}

/// The key policy the tenant applies to its key (per region of its realm, or one).
#[utoipa::path(get, path = "/v1/tenants/{id}/key-policy", params(TenantPath, RegionQuery),
    responses(
        (status = 200, body = Object,
            description = "an IAM key policy; without `region`, an object of one policy per region of the realm"),
        (status = 400, body = ErrorBody,
            description = "`invalid_request`: the tenant id, or a region that is not in the tenant's realm"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody,
            description = "`not_configured`: no `--platform-principal`, or the tenant's realm is not in the catalog"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn get_key_policy(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<RegionQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let region = q.region.map(|r| catalog_region(&state, &r)).transpose()?;
    let t = state.lifecycle.live_tenant(&id).await?;
    let realm = state.lifecycle.realm_of(&t)?;
    let principal = principal_of(&state)?;
    let doc = key_policy(&PolicyParams { tenant: &id, platform_principal: principal, tenant_account: None })
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "not_configured", e.to_string()))?;
    Ok(Json(match region {
        Some(region) => {
            if !realm.regions.contains(&region) {
                return Err(ApiError::invalid(format!("region {region} is not in realm {}", realm.id)));
            }
            doc
        }
        None => serde_json::Value::Object(realm.regions.iter().map(|r| (r.to_string(), doc.clone())).collect()),
    }))
}

/// `?kind=` of the CloudFormation call.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KindQuery {
    /// `cmk` (key, alias, policy) or `byok-role` (the role keyhold assumes).
    #[param(inline)]
    pub kind: TemplateKind,
}

/// Which CloudFormation template.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateKind {
    /// The key, its alias and policy.
    Cmk,
    /// The role keyhold assumes.
    ByokRole,
}

/// The CloudFormation template for the tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}/cloudformation", params(TenantPath, KindQuery),
    responses(
        (status = 200, body = Object, description = "a CloudFormation template"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id, or `kind` missing or unknown"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody,
            description = "`not_configured`: no `--platform-principal`, or the tenant's realm is not in the catalog"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn get_cloudformation(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<KindQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let t = state.lifecycle.live_tenant(&id).await?;
    let realm = state.lifecycle.realm_of(&t)?;
    let principal = principal_of(&state)?;
    let doc = match q.kind {
        TemplateKind::Cmk => cmk_template(&id, principal),
        TemplateKind::ByokRole => byok_role_template(&id, principal, &realm.regions),
    }
    .map_err(|e| ApiError::new(StatusCode::CONFLICT, "not_configured", e.to_string()))?;
    Ok(Json(doc))
}
