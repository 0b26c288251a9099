//! Service identities through the admin API: register, list, show, change purposes,
//! rotate a key (the previous one accepted for a stated overlap), remove. Admin only.
//! Without a `public_key` in the body, keyhold generates the key pair and returns its
//! private half (PKCS#8, base64) in that one answer; it never stores it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyhold_registry::{Purposes, ServiceIdentity};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiPath, ServicePath};
use super::{ApiJson, Shared, admin_only, schema};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::services::{self, DEFAULT_OVERLAP_S};

/// A service as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceOut {
    /// Its name: the `iss` of its tokens.
    pub name: String,
    /// The purposes it may encrypt and decrypt for; `["*"]` for every purpose.
    pub purposes: Vec<String>,
    /// Registered (ms since the Unix epoch).
    pub created_ms: u64,
    /// Its keys, oldest first: the current one has no `expires_ms`.
    pub keys: Vec<ServiceKeyOut>,
    /// Only when keyhold generated the key pair: its private half (PKCS#8 DER, base64),
    /// shown this once. Sign the service's tokens with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

/// One of a service's keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceKeyOut {
    /// Key id: the first 8 bytes of the public key, hex.
    pub id: String,
    /// The Ed25519 public key, base64.
    pub public_key: String,
    /// Added (ms since the Unix epoch).
    pub created_ms: u64,
    /// Age in seconds.
    pub age_s: u64,
    /// When it stops being accepted (a rotation's overlap); absent for the current key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

fn service_out(s: ServiceIdentity, now_ms: u64, private_key: Option<Vec<u8>>) -> ServiceOut {
    ServiceOut {
        purposes: match &s.purposes {
            Purposes::All => vec!["*".into()],
            Purposes::Only(list) => list.iter().map(|p| p.as_str().to_owned()).collect(),
        },
        keys: s
            .accepted_keys(now_ms)
            .map(|k| ServiceKeyOut {
                id: k.id.clone(),
                public_key: B64.encode(&k.public_key),
                created_ms: k.created_ms,
                age_s: now_ms.saturating_sub(k.created_ms) / 1000,
                expires_ms: k.expires_ms,
            })
            .collect(),
        name: s.name,
        created_ms: s.created_ms,
        private_key: private_key.map(|k| B64.encode(k)),
    }
}

fn public_key(b64: Option<&str>) -> Result<Option<Vec<u8>>, ApiError> {
    b64.map(|k| B64.decode(k.trim()).map_err(|_| ApiError::invalid("public_key is not base64"))).transpose()
}

/// `POST /v1/services` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    /// 1 to 64 ASCII letters, digits, `-` and `_`.
    #[schema(schema_with = schema::service_name)]
    pub name: String,
    /// The purposes it may use, or `["*"]` for every purpose.
    #[schema(schema_with = schema::service_purposes)]
    pub purposes: Vec<String>,
    /// Its Ed25519 public key (32 bytes, base64); without it keyhold generates the pair.
    #[serde(default)]
    #[schema(schema_with = schema::public_key)]
    pub public_key: Option<String>,
}

/// Registers a platform service.
#[utoipa::path(post, path = "/v1/services", request_body = CreateService,
    responses((status = 201, body = ServiceOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_service(
    p: Principal,
    State(state): Shared,
    ApiJson(body): ApiJson<CreateService>,
) -> Result<(StatusCode, Json<ServiceOut>), ApiError> {
    admin_only(&p)?;
    let purposes = services::purposes_from(&body.purposes)?;
    let (public, private) = services::key_for(public_key(body.public_key.as_deref())?.as_deref())?;
    let now = state.now_ms();
    let s = services::register(state.lifecycle.registry(), &body.name, &purposes, &public, now).await?;
    state.forget_services();
    Ok((StatusCode::CREATED, Json(service_out(s, now, private))))
}

/// Lists services with their purposes and keys.
#[utoipa::path(get, path = "/v1/services",
    responses((status = 200, body = [ServiceOut]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_services(p: Principal, State(state): Shared) -> Result<Json<Vec<ServiceOut>>, ApiError> {
    admin_only(&p)?;
    let now = state.now_ms();
    let all = state.lifecycle.registry().services().await?;
    Ok(Json(all.into_iter().map(|s| service_out(s, now, None)).collect()))
}

/// Shows one service.
#[utoipa::path(get, path = "/v1/services/{name}", params(ServicePath),
    responses((status = 200, body = ServiceOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_service(
    p: Principal,
    State(state): Shared,
    ApiPath(ServicePath { name }): ApiPath<ServicePath>,
) -> Result<Json<ServiceOut>, ApiError> {
    admin_only(&p)?;
    services::check_name(&name)?;
    let s = state
        .lifecycle
        .registry()
        .service(&name)
        .await?
        .ok_or(keyhold_registry::RegistryError::ServiceNotFound(name))?;
    Ok(Json(service_out(s, state.now_ms(), None)))
}

/// Removes a service: its tokens are refused from the next request on this instance, and
/// on every instance within the view bound.
#[utoipa::path(delete, path = "/v1/services/{name}", params(ServicePath),
    responses((status = 204, description = "removed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_service(
    p: Principal,
    State(state): Shared,
    ApiPath(ServicePath { name }): ApiPath<ServicePath>,
) -> Result<StatusCode, ApiError> {
    admin_only(&p)?;
    services::remove(state.lifecycle.registry(), &name).await?;
    state.forget_services();
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/services/{name}/purposes` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPurposes {
    /// The purposes it may use, or `["*"]` for every purpose.
    #[schema(schema_with = schema::service_purposes)]
    pub purposes: Vec<String>,
}

/// Replaces what a service may use (narrowing takes effect like removal).
#[utoipa::path(put, path = "/v1/services/{name}/purposes", request_body = SetPurposes,
    params(ServicePath),
    responses((status = 200, body = ServiceOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_service_purposes(
    p: Principal,
    State(state): Shared,
    ApiPath(ServicePath { name }): ApiPath<ServicePath>,
    ApiJson(body): ApiJson<SetPurposes>,
) -> Result<Json<ServiceOut>, ApiError> {
    admin_only(&p)?;
    let purposes = services::purposes_from(&body.purposes)?;
    let s = services::set_purposes(state.lifecycle.registry(), &name, &purposes).await?;
    state.forget_services();
    Ok(Json(service_out(s, state.now_ms(), None)))
}

/// `POST /v1/services/{name}/rotate` body (every field optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateService {
    /// The new Ed25519 public key (32 bytes, base64); without it keyhold generates the pair.
    #[serde(default)]
    #[schema(schema_with = schema::public_key)]
    pub public_key: Option<String>,
    /// Seconds the previous keys stay accepted (default 86400, at most 2592000; 0 ends
    /// them at once, for a leaked key).
    #[serde(default, deserialize_with = "whole_seconds")]
    #[schema(schema_with = schema::overlap_s)]
    pub overlap_s: Option<u64>,
}

/// A whole number of seconds: an integer, or a number with no fraction (`524.0`), as JSON
/// Schema's `integer` allows.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<serde_json::Number> = Option::deserialize(d)?;
    let Some(n) = v else { return Ok(None) };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!("overlap_s must be a whole number of seconds from 0, not {n}"))),
    }
}

/// Gives a service a new key; its previous keys stay accepted for the overlap.
#[utoipa::path(post, path = "/v1/services/{name}/rotate", request_body = RotateService,
    params(ServicePath),
    responses((status = 200, body = ServiceOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_service(
    p: Principal,
    State(state): Shared,
    ApiPath(ServicePath { name }): ApiPath<ServicePath>,
    ApiJson(body): ApiJson<RotateService>,
) -> Result<Json<ServiceOut>, ApiError> {
    admin_only(&p)?;
    let (public, private) = services::key_for(public_key(body.public_key.as_deref())?.as_deref())?;
    let now = state.now_ms();
    let overlap = body.overlap_s.unwrap_or(DEFAULT_OVERLAP_S);
    let s = services::rotate(state.lifecycle.registry(), &name, &public, overlap, now).await?;
    state.forget_services();
    Ok(Json(service_out(s, now, private)))
}
