//! The HTTP API v1 handlers, each documented for the OpenAPI document by its
//! `#[utoipa::path]`. Every handler takes the authenticated [`Principal`] first and checks
//! what it may do before touching anything; tenant-scoped paths refuse a tenant admin of
//! another tenant with 403.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyhold_audit::{Event, Record};
use keyhold_core::{EncryptionContext, Purpose, RESERVED_PURPOSE_KEY, RealmId, Region, TenantId};
use keyhold_envelope::AlgorithmSuite;
use keyhold_onboarding::{PolicyParams, Realm, Validation, byok_role_template, cmk_template, key_policy};
use keyhold_registry::{KeyStatus, Tenant, TenantKey, TenantMode, TenantState};
use keyhold_service::EncryptParams;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{self, Principal, Scope};
use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, TenantView};

/// Shared state as handlers see it.
pub type Shared = State<Arc<AppState>>;

/// The most items a batch request may hold.
pub const MAX_BATCH: usize = 1000;

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
                let service = state.registry.service(&claims.iss).await?.ok_or_else(|| {
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

fn admin_only(p: &Principal) -> Result<(), ApiError> {
    match p {
        Principal::Admin => Ok(()),
        _ => Err(ApiError::forbidden("this call needs an admin token")),
    }
}

fn manages(p: &Principal, tenant: &TenantId) -> Result<(), ApiError> {
    match p {
        Principal::Admin => Ok(()),
        Principal::TenantAdmin(t) if t == tenant => Ok(()),
        Principal::TenantAdmin(_) => Err(ApiError::forbidden("a tenant-admin token covers only its own tenant")),
        Principal::Service { .. } => Err(ApiError::forbidden("services may only encrypt and decrypt")),
    }
}

fn tenant_id(s: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(s).map_err(|e| ApiError::invalid(format!("invalid tenant id: {e}")))
}

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
    /// Why it is in that state.
    pub reason: Option<String>,
    /// BYOK: the role in the tenant's account keyhold assumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// BYOK: the ExternalId keyhold presents when assuming it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The realm's regions, home first.
    pub regions: Vec<String>,
    /// Its keys per region.
    pub keys: Vec<KeyOut>,
    /// Created (ms since the Unix epoch).
    pub created_ms: u64,
    /// Last changed (ms since the Unix epoch).
    pub updated_ms: u64,
}

/// A tenant's key in one region.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyOut {
    /// Region.
    pub region: String,
    /// Key ARN or local key id.
    pub key_arn: String,
    /// `valid`, `invalid`, `revoked`.
    pub state: String,
    /// Last validated (ms since the Unix epoch).
    pub last_check_ms: Option<u64>,
}

async fn tenant_out(state: &AppState, t: Tenant) -> Result<TenantOut, ApiError> {
    let keys = state.registry.keys(&t.id).await?;
    let regions = state.catalog.get(t.realm.as_str()).map(|r| r.regions.iter().map(|r| r.to_string()).collect());
    Ok(TenantOut {
        id: t.id.to_string(),
        realm: t.realm.to_string(),
        mode: t.mode.to_string(),
        state: t.state.to_string(),
        reason: t.reason,
        external_id: t.role_arn.as_ref().map(|_| keyhold_onboarding::external_id(&t.id)),
        role_arn: t.role_arn,
        regions: regions.unwrap_or_default(),
        keys: keys
            .into_iter()
            .map(|k| KeyOut {
                region: k.region.to_string(),
                key_arn: k.key,
                state: k.state.to_string(),
                last_check_ms: k.last_check_ms,
            })
            .collect(),
        created_ms: t.created_ms,
        updated_ms: t.updated_ms,
    })
}

/// `POST /v1/tenants` body.
#[derive(Debug, Deserialize, ToSchema)]
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

/// Checks a role ARN: `arn:<partition>:iam::<12 digits>:role/<path/name>`.
fn check_role_arn(arn: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = matches!(parts.as_slice(), ["arn", p, "iam", "", account, resource]
        if !p.is_empty() && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|n| !n.is_empty() && !n.contains(char::is_whitespace)));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "role_arn {arn:?} is not an IAM role ARN such as arn:aws:iam::111122223333:role/keyhold-access"
        )))
    }
}

/// Creates a tenant (state `pending` until its keys validate).
#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_tenant(
    p: Principal,
    State(state): Shared,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantOut>), ApiError> {
    admin_only(&p)?;
    let id = tenant_id(&body.id)?;
    let realm = state.catalog.get(&body.realm).map_err(|e| ApiError::invalid(e.to_string()))?;
    let realm_id = RealmId::parse(realm.id.as_str()).map_err(|e| ApiError::invalid(e.to_string()))?;
    let mode: TenantMode = body.mode.parse().map_err(|e: String| ApiError::invalid(format!("invalid mode: {e}")))?;
    match (mode, &body.role_arn) {
        (TenantMode::Byok, Some(arn)) => check_role_arn(arn)?,
        (TenantMode::Byok, None) => {
            return Err(ApiError::invalid("a byok tenant needs role_arn: the role its byok-role template created"));
        }
        (_, Some(_)) => return Err(ApiError::invalid("role_arn is only for mode byok")),
        (_, None) => {}
    }
    let t = state.registry.create_tenant(&id, &realm_id, mode, body.role_arn.as_deref(), state.now_ms()).await?;
    state.audit(&id, &Event::TenantState { from: "none".into(), to: t.state.to_string(), reason: None }).await;
    admin_event(&state, &p, &id, "create_tenant", Some(format!("realm {} mode {}", t.realm, t.mode))).await;
    Ok((StatusCode::CREATED, Json(tenant_out(&state, t).await?)))
}

async fn admin_event(state: &AppState, p: &Principal, tenant: &TenantId, action: &str, detail: Option<String>) {
    state.audit(tenant, &Event::AdminAction { actor: p.actor(), action: action.to_owned(), detail }).await;
}

/// Lists tenants.
#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [TenantOut])), security(("bearer" = [])))]
pub async fn list_tenants(p: Principal, State(state): Shared) -> Result<Json<Vec<TenantOut>>, ApiError> {
    admin_only(&p)?;
    let mut out = Vec::new();
    for t in state.registry.tenants().await? {
        out.push(tenant_out(&state, t).await?);
    }
    Ok(Json(out))
}

async fn load_tenant(state: &AppState, id: &TenantId) -> Result<Tenant, ApiError> {
    state.registry.tenant(id).await?.ok_or_else(|| ApiError::tenant_not_found(id.as_str()))
}

/// Shows one tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = TenantOut), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_tenant(
    p: Principal,
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<TenantOut>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let t = load_tenant(&state, &id).await?;
    Ok(Json(tenant_out(&state, t).await?))
}

/// Deletes a tenant: its key references are destroyed (crypto-shredding: its data can no
/// longer be decrypted through keyhold), its cached data keys dropped; its audit trail
/// stays. Later requests for it get `tenant_deleted`.
#[utoipa::path(delete, path = "/v1/tenants/{id}", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = TenantOut), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_tenant(
    p: Principal,
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<TenantOut>, ApiError> {
    let id = tenant_id(&id)?;
    admin_only(&p)?;
    let t = load_tenant(&state, &id).await?;
    if t.state == TenantState::Deleted {
        return Err(keyhold_registry::RegistryError::TenantDeleted(id).into());
    }
    admin_event(&state, &p, &id, "delete_tenant", None).await;
    let t = state.change_state(&t, TenantState::Deleted, Some("deleted by an admin")).await?;
    Ok(Json(tenant_out(&state, t).await?))
}

/// `?region=` of the key-policy call.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RegionQuery {
    /// One region of the tenant's realm; default: every region.
    pub region: Option<String>,
}

fn principal_of(state: &AppState) -> Result<&str, ApiError> {
    state.platform_principal.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_configured",
            "keyhold has no platform principal configured (--platform-principal); it cannot write key policies",
        )
    })
}

fn realm_of(state: &AppState, t: &Tenant) -> Result<Realm, ApiError> {
    state.catalog.get(t.realm.as_str()).cloned().map_err(|e| {
        ApiError::new(StatusCode::CONFLICT, "not_configured", format!("the tenant's realm is not in the catalog: {e}"))
    })
}

/// The key policy the tenant applies to its key (per region of its realm, or one).
#[utoipa::path(get, path = "/v1/tenants/{id}/key-policy", params(("id" = String, Path, description = "tenant id"), RegionQuery),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_key_policy(
    p: Principal,
    State(state): Shared,
    Path(id): Path<String>,
    Query(q): Query<RegionQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let t = load_tenant(&state, &id).await?;
    let realm = realm_of(&state, &t)?;
    let principal = principal_of(&state)?;
    let doc = key_policy(&PolicyParams { tenant: &id, platform_principal: principal, tenant_account: None })
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "not_configured", e.to_string()))?;
    Ok(Json(match q.region {
        Some(r) => {
            let region = Region::parse(&r).map_err(|e| ApiError::invalid(format!("invalid region: {e}")))?;
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
pub struct KindQuery {
    /// `cmk` (key, alias, policy) or `byok-role` (the role keyhold assumes).
    pub kind: String,
}

/// The CloudFormation template for the tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}/cloudformation", params(("id" = String, Path, description = "tenant id"), KindQuery),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_cloudformation(
    p: Principal,
    State(state): Shared,
    Path(id): Path<String>,
    Query(q): Query<KindQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let t = load_tenant(&state, &id).await?;
    let realm = realm_of(&state, &t)?;
    let principal = principal_of(&state)?;
    let doc = match q.kind.as_str() {
        "cmk" => cmk_template(&id, principal),
        "byok-role" => byok_role_template(&id, principal, &realm.regions),
        other => return Err(ApiError::invalid(format!("unknown kind {other:?}; use cmk or byok-role"))),
    }
    .map_err(|e| ApiError::new(StatusCode::CONFLICT, "not_configured", e.to_string()))?;
    Ok(Json(doc))
}

/// `PUT /v1/tenants/{id}/keys/{region}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachKey {
    /// The key's ARN (or, for a `local` tenant, a local key id).
    pub key_arn: String,
}

/// Validates `keys` (region → key) for the tenant, records each key's outcome, moves the
/// tenant to `active` when the whole set is usable, and returns the report.
async fn validate_and_record(
    state: &AppState,
    p: &Principal,
    t: &Tenant,
    keys: BTreeMap<Region, String>,
) -> Result<serde_json::Value, ApiError> {
    let realm = realm_of(state, t)?;
    let ordered: Vec<String> =
        realm.regions.iter().filter_map(|r| keys.get(r).cloned()).chain(extra(&realm, &keys)).collect();
    let providers = state.validation_providers(t).await;
    // A BYOK tenant's key policy grants its own role (through its account's IAM), not the
    // platform principal: there is no platform statement to analyse; the live round trip
    // through the assumed role is what proves access.
    let principal = match t.mode {
        TenantMode::Byok => None,
        _ => state.platform_principal.as_deref(),
    };
    let report = keyhold_onboarding::validate(&Validation {
        tenant: &t.id,
        realm: &realm,
        keys: &ordered,
        platform_principal: principal,
        providers: &providers,
    })
    .await;
    let now = state.now_ms();
    for k in &report.keys {
        let Ok(region) = Region::parse(&k.region) else { continue };
        let errors: Vec<String> = k
            .findings
            .iter()
            .filter(|f| f.severity == keyhold_onboarding::Severity::Error)
            .map(|f| f.code.to_owned())
            .collect();
        let status = if errors.is_empty() { KeyStatus::Valid } else { KeyStatus::Invalid };
        state
            .registry
            .put_key(&TenantKey {
                tenant: t.id.clone(),
                region: region.clone(),
                key: k.key.clone(),
                state: status,
                last_check_ms: Some(now),
                findings: serde_json::to_string(&k.findings).unwrap_or_else(|_| "[]".into()),
            })
            .await?;
        state
            .audit(
                &t.id,
                &Event::KeyState {
                    region: k.region.clone(),
                    key: k.key.clone(),
                    state: status.to_string(),
                    findings: k.findings.iter().map(|f| f.code.to_owned()).collect(),
                },
            )
            .await;
    }
    admin_event(state, p, &t.id, "validate_keys", Some(format!("usable: {}", report.usable))).await;
    state.forget_tenant(&t.id);
    if report.usable && t.state != TenantState::Active {
        state.change_state(t, TenantState::Active, Some("every region's key validated")).await?;
    } else if !report.usable && matches!(t.state, TenantState::Active | TenantState::Degraded) {
        state.change_state(t, TenantState::Suspended, Some("validation found errors")).await?;
    }
    serde_json::to_value(&report)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

fn extra(realm: &Realm, keys: &BTreeMap<Region, String>) -> Vec<String> {
    keys.iter().filter(|(r, _)| !realm.regions.contains(r)).map(|(_, k)| k.clone()).collect()
}

/// Validates a key for one region of the tenant's realm and attaches it; returns the
/// validation report of the tenant's whole key set. The tenant becomes `active` when
/// every region's key validates.
#[utoipa::path(put, path = "/v1/tenants/{id}/keys/{region}", request_body = AttachKey,
    params(("id" = String, Path, description = "tenant id"), ("region" = String, Path, description = "region of the realm")),
    responses((status = 200, body = Object, description = "validation report"), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn attach_key(
    p: Principal,
    State(state): Shared,
    Path((id, region)): Path<(String, String)>,
    ApiJson(body): ApiJson<AttachKey>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let region = Region::parse(&region).map_err(|e| ApiError::invalid(format!("invalid region: {e}")))?;
    let t = load_tenant(&state, &id).await?;
    if t.state == TenantState::Deleted {
        return Err(keyhold_registry::RegistryError::TenantDeleted(id).into());
    }
    let realm = realm_of(&state, &t)?;
    if !realm.regions.contains(&region) {
        return Err(ApiError::invalid(format!(
            "region {region} is not in realm {} ({})",
            realm.id,
            realm.regions.iter().map(Region::as_str).collect::<Vec<_>>().join(", ")
        )));
    }
    if body.key_arn.starts_with("arn:") {
        match keyhold_core::KeyArn::parse(&body.key_arn) {
            Ok(a) if a.region() != &region => {
                return Err(ApiError::invalid(format!("key {} is in {}, not {region}", body.key_arn, a.region())));
            }
            Ok(_) => {}
            Err(e) => return Err(ApiError::invalid(e.to_string())),
        }
    }
    let mut keys: BTreeMap<Region, String> =
        state.registry.keys(&id).await?.into_iter().map(|k| (k.region, k.key)).collect();
    keys.insert(region, body.key_arn);
    admin_event(&state, &p, &id, "attach_key", None).await;
    Ok(Json(validate_and_record(&state, &p, &t, keys).await?))
}

/// Validates the tenant's attached keys again (after the tenant fixed a finding, or
/// restored access); a usable set makes the tenant `active`.
#[utoipa::path(post, path = "/v1/tenants/{id}/validate", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = Object, description = "validation report"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn validate_tenant(
    p: Principal,
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let t = load_tenant(&state, &id).await?;
    if t.state == TenantState::Deleted {
        return Err(keyhold_registry::RegistryError::TenantDeleted(id).into());
    }
    let keys = state.registry.keys(&id).await?.into_iter().map(|k| (k.region, k.key)).collect();
    Ok(Json(validate_and_record(&state, &p, &t, keys).await?))
}

/// One item to encrypt.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptItem {
    /// The tenant whose keys protect the data.
    pub tenant: String,
    /// The data's purpose (must be allowed to the calling service).
    pub purpose: String,
    /// The plaintext, base64.
    pub plaintext: String,
    /// Extra encryption context (not `tenant` or `purpose`; low-cardinality values).
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// An encryption's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct EncryptOut {
    /// An AWS Encryption SDK message, base64.
    pub ciphertext: String,
}

/// One item to decrypt.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptItem {
    /// The tenant the caller acts for; a ciphertext of another tenant is refused.
    pub tenant: String,
    /// The message, base64.
    pub ciphertext: String,
}

/// A decryption's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecryptOut {
    /// The plaintext, base64.
    pub plaintext: String,
    /// The purpose it was encrypted for.
    pub purpose: String,
    /// The caller context it was encrypted with (without `tenant` and `purpose`).
    pub context: BTreeMap<String, String>,
}

fn service_of(p: &Principal) -> Result<(&str, &keyhold_registry::Purposes), ApiError> {
    match p {
        Principal::Service { name, purposes } => Ok((name, purposes)),
        _ => Err(ApiError::forbidden("encrypt and decrypt need a service token")),
    }
}

fn servable(view: &TenantView) -> Result<(), ApiError> {
    let t = &view.tenant;
    match t.state {
        TenantState::Active | TenantState::Degraded => Ok(()),
        TenantState::Pending => Err(ApiError::new(
            StatusCode::CONFLICT,
            "tenant_not_active",
            format!("tenant {} is pending: attach and validate a key for every region of its realm", t.id),
        )),
        TenantState::Suspended => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant_suspended",
            format!("tenant {} is suspended: {}", t.id, t.reason.as_deref().unwrap_or("access was revoked")),
        )),
        TenantState::Deleted => {
            Err(ApiError::new(StatusCode::GONE, "tenant_deleted", format!("tenant {} was deleted", t.id)))
        }
    }
}

/// Suspends a tenant whose key refused (revocation), so every later request is refused at
/// once and its cached data keys are gone.
async fn on_failure(state: &AppState, view: &TenantView, e: &keyhold_service::ServiceError) {
    if let keyhold_service::ServiceError::Provider { source, key } = e
        && source.class() == keyhold_provider::ErrorClass::Revoked
    {
        let reason = format!("key {key} refused: {}", source.code());
        let _ = state.change_state(&view.tenant, TenantState::Suspended, Some(&reason)).await;
    }
}

async fn encrypt_one(state: &AppState, p: &Principal, item: EncryptItem) -> Result<EncryptOut, ApiError> {
    let (service, purposes) = service_of(p)?;
    let tenant = tenant_id(&item.tenant)?;
    let purpose = Purpose::parse(&item.purpose).map_err(|e| ApiError::invalid(format!("invalid purpose: {e}")))?;
    if !purposes.allows(&purpose) {
        return Err(ApiError::forbidden(format!("service {service} may not use purpose {purpose}")));
    }
    let plaintext =
        B64.decode(&item.plaintext).map_err(|e| ApiError::invalid(format!("plaintext is not base64: {e}")))?;
    let context = EncryptionContext::from_caller_pairs(item.context)
        .map_err(|e| ApiError::invalid(format!("invalid context: {e}")))?;
    let view = state.tenant_view(&tenant).await?;
    servable(&view)?;
    let params = EncryptParams {
        tenant: tenant.clone(),
        purpose: purpose.clone(),
        keys: view.keys.clone(),
        context,
        suite: AlgorithmSuite::default(),
    };
    match state.keyhold.encrypt(&params, &plaintext).await {
        Ok(ct) => {
            state.usage.encrypted(&tenant, &purpose, service, state.now_ms(), 1);
            Ok(EncryptOut { ciphertext: B64.encode(ct) })
        }
        Err(e) => {
            on_failure(state, &view, &e).await;
            Err(e.into())
        }
    }
}

async fn decrypt_one(state: &AppState, p: &Principal, item: DecryptItem) -> Result<DecryptOut, ApiError> {
    let (service, purposes) = service_of(p)?;
    let tenant = tenant_id(&item.tenant)?;
    let ct = B64.decode(&item.ciphertext).map_err(|e| ApiError::invalid(format!("ciphertext is not base64: {e}")))?;
    // The header first: the tenant and the purpose are checked before any key is used.
    let header = keyhold_envelope::read_header(&ct, &state.keyhold.settings().decrypt)
        .map_err(|e| ApiError::invalid_ciphertext(format!("the ciphertext is not a valid message: {e}")))?;
    keyhold_service::check_tenant(&tenant, &header)?;
    let purpose = header
        .context_value(RESERVED_PURPOSE_KEY)
        .and_then(|p| Purpose::parse(p).ok())
        .ok_or_else(|| ApiError::invalid_ciphertext("the ciphertext carries no purpose; keyhold did not write it"))?;
    if !purposes.allows(&purpose) {
        return Err(ApiError::forbidden(format!("service {service} may not use purpose {purpose}")));
    }
    let view = state.tenant_view(&tenant).await?;
    servable(&view)?;
    let mut plaintext = Vec::new();
    match state.keyhold.decrypt_parsed_into(&tenant, header, &ct, &mut plaintext).await {
        Ok(header) => {
            state.usage.decrypted(&tenant, &purpose, service, state.now_ms(), 1);
            let context = header
                .context()
                .iter()
                .filter(|(k, _)| *k != keyhold_core::RESERVED_TENANT_KEY && *k != RESERVED_PURPOSE_KEY)
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            Ok(DecryptOut { plaintext: B64.encode(&plaintext), purpose: purpose.to_string(), context })
        }
        Err(e) => {
            on_failure(state, &view, &e).await;
            Err(e.into())
        }
    }
}

/// Encrypts one plaintext for a tenant.
#[utoipa::path(post, path = "/v1/encrypt", request_body = EncryptItem,
    responses((status = 200, body = EncryptOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn encrypt(
    p: Principal,
    State(state): Shared,
    ApiJson(item): ApiJson<EncryptItem>,
) -> Result<Json<EncryptOut>, ApiError> {
    Ok(Json(encrypt_one(&state, &p, item).await?))
}

/// Decrypts one ciphertext of a tenant.
#[utoipa::path(post, path = "/v1/decrypt", request_body = DecryptItem,
    responses((status = 200, body = DecryptOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn decrypt(
    p: Principal,
    State(state): Shared,
    ApiJson(item): ApiJson<DecryptItem>,
) -> Result<Json<DecryptOut>, ApiError> {
    Ok(Json(decrypt_one(&state, &p, item).await?))
}

/// A batch request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch<T> {
    /// Up to 1000 items.
    pub items: Vec<T>,
}

/// One batch result: the item's result, or its error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchResult<T> {
    /// Success.
    Ok(T),
    /// Failure.
    Err(ErrorBody),
}

/// A batch response, one result per item in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchOut<T> {
    /// The results.
    pub results: Vec<BatchResult<T>>,
}

/// Runs `one` on each item in order (a service token and at most [`MAX_BATCH`] items),
/// each item's error becoming its result.
async fn run_batch<T, O, F>(p: &Principal, items: Vec<T>, one: impl Fn(T) -> F) -> Result<Json<BatchOut<O>>, ApiError>
where
    F: Future<Output = Result<O, ApiError>>,
{
    service_of(p)?;
    if items.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!("a batch holds at most {MAX_BATCH} items, not {}", items.len())));
    }
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        results.push(match one(item).await {
            Ok(v) => BatchResult::Ok(v),
            Err(e) => BatchResult::Err(ErrorBody {
                error: crate::error::ErrorDetail { code: e.code.to_owned(), message: e.message },
            }),
        });
    }
    Ok(Json(BatchOut { results }))
}

/// Encrypts up to 1000 items; each gets its own result or error.
#[utoipa::path(post, path = "/v1/encrypt/batch", request_body = Batch<EncryptItem>,
    responses((status = 200, body = BatchOut<EncryptOut>), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn encrypt_batch(
    p: Principal,
    State(state): Shared,
    ApiJson(batch): ApiJson<Batch<EncryptItem>>,
) -> Result<Json<BatchOut<EncryptOut>>, ApiError> {
    run_batch(&p, batch.items, |item| encrypt_one(&state, &p, item)).await
}

/// Decrypts up to 1000 items; each gets its own result or error.
#[utoipa::path(post, path = "/v1/decrypt/batch", request_body = Batch<DecryptItem>,
    responses((status = 200, body = BatchOut<DecryptOut>), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn decrypt_batch(
    p: Principal,
    State(state): Shared,
    ApiJson(batch): ApiJson<Batch<DecryptItem>>,
) -> Result<Json<BatchOut<DecryptOut>>, ApiError> {
    run_batch(&p, batch.items, |item| decrypt_one(&state, &p, item)).await
}

/// `?after=&limit=` of the audit call.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Events after this sequence number (default 0: from the start).
    pub after: Option<u64>,
    /// At most this many (default and maximum 1000).
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
#[utoipa::path(get, path = "/v1/tenants/{id}/audit", params(("id" = String, Path, description = "tenant id"), AuditQuery),
    responses((status = 200, body = AuditPage)), security(("bearer" = [])))]
pub async fn audit(
    p: Principal,
    State(state): Shared,
    Path(id): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    load_tenant(&state, &id).await?;
    state.flush_usage(false).await;
    let limit = q.limit.unwrap_or(1000).clamp(1, 1000);
    let events = state.auditor.read(&id, q.after.unwrap_or(0), limit).await.map_err(audit_error)?;
    Ok(Json(AuditPage { events }))
}

fn audit_error(e: keyhold_audit::AuditError) -> ApiError {
    match e {
        keyhold_audit::AuditError::Registry(r) => r.into(),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
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

/// Verifies the tenant's audit trail (hash chain and recorded head).
#[utoipa::path(get, path = "/v1/tenants/{id}/audit/verify", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = VerifyOut)), security(("bearer" = [])))]
pub async fn audit_verify(
    p: Principal,
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<VerifyOut>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    load_tenant(&state, &id).await?;
    Ok(Json(match state.auditor.verify(&id).await.map_err(audit_error)? {
        Ok(n) => VerifyOut { ok: true, events: n, problem: None, message: None },
        Err(b) => VerifyOut { ok: false, events: 0, message: Some(b.to_string()), problem: Some(b) },
    }))
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the registry answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): Shared) -> Result<&'static str, ApiError> {
    state.registry.ping().await?;
    Ok("ready\n")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): Shared) -> Response {
    let mut by_state = Vec::new();
    let tenants = state.registry.tenants().await.unwrap_or_default();
    for s in TenantState::ALL {
        by_state.push((s.as_str(), tenants.iter().filter(|t| t.state == *s).count()));
    }
    let body = state.metrics.render(&state.keyhold.cache_stats(), &by_state);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
