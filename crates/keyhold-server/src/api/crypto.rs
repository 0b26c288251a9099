//! Encrypt and decrypt, one item at a time or in batches of up to [`MAX_BATCH`]: the
//! handlers parse the body (base64, ids, context) and call the lifecycle layer, which
//! checks the tenant, the purpose and the keys before any key is used.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyhold_core::{EncryptionContext, Purpose, RESERVED_PURPOSE_KEY, RESERVED_TENANT_KEY};
use keyhold_lifecycle::Caller;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, Shared, schema, tenant_id};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The most items a batch request may hold.
pub const MAX_BATCH: usize = 1000;

/// One item to encrypt.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptItem {
    /// The tenant whose keys protect the data.
    #[schema(schema_with = schema::tenant_id)]
    pub tenant: String,
    /// The data's purpose (must be allowed to the calling service).
    #[schema(schema_with = schema::purpose)]
    pub purpose: String,
    /// The plaintext, base64.
    #[schema(schema_with = schema::plaintext)]
    pub plaintext: String,
    /// Extra encryption context (not `tenant` or `purpose`; low-cardinality values).
    #[serde(default)]
    #[schema(schema_with = schema::context)]
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
    #[schema(schema_with = schema::tenant_id)]
    pub tenant: String,
    /// The message, base64.
    #[schema(schema_with = schema::ciphertext)]
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

fn caller(p: &Principal) -> Result<Caller<'_>, ApiError> {
    match p {
        Principal::Service { name, purposes } => Ok(Caller { service: name, purposes }),
        _ => Err(ApiError::forbidden("encrypt and decrypt need a service token")),
    }
}

async fn encrypt_one(state: &AppState, p: &Principal, item: EncryptItem) -> Result<EncryptOut, ApiError> {
    let caller = caller(p)?;
    let tenant = tenant_id(&item.tenant)?;
    let purpose = Purpose::parse(&item.purpose).map_err(|e| ApiError::invalid(format!("invalid purpose: {e}")))?;
    let plaintext =
        B64.decode(&item.plaintext).map_err(|e| ApiError::invalid(format!("plaintext is not base64: {e}")))?;
    let context = EncryptionContext::from_caller_pairs(item.context)
        .map_err(|e| ApiError::invalid(format!("invalid context: {e}")))?;
    let mut ct = Vec::new();
    state.lifecycle.encrypt(&caller, tenant, purpose, context, &plaintext, &mut ct).await?;
    Ok(EncryptOut { ciphertext: B64.encode(ct) })
}

async fn decrypt_one(state: &AppState, p: &Principal, item: DecryptItem) -> Result<DecryptOut, ApiError> {
    let caller = caller(p)?;
    let tenant = tenant_id(&item.tenant)?;
    let ct = B64.decode(&item.ciphertext).map_err(|e| ApiError::invalid(format!("ciphertext is not base64: {e}")))?;
    let mut plaintext = Vec::new();
    let d = state.lifecycle.decrypt(&caller, &tenant, &ct, &mut plaintext).await?;
    let context = d
        .header
        .context()
        .iter()
        .filter(|(k, _)| *k != RESERVED_TENANT_KEY && *k != RESERVED_PURPOSE_KEY)
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(DecryptOut { plaintext: B64.encode(&plaintext), purpose: d.purpose.to_string(), context })
}

/// Encrypts one plaintext for a tenant.
#[utoipa::path(post, path = "/v1/encrypt", request_body = EncryptItem,
    responses(
        (status = 200, body = EncryptOut),
        (status = 400, body = ErrorBody,
            description = "`invalid_request`: tenant, purpose, plaintext or context (reserved keys, over 8,192 bytes)"),
        (status = 403, body = ErrorBody,
            description = "`forbidden` (not a service token, or a purpose the service is not allowed), \
                           `tenant_suspended`, `key_revoked` (the tenant's key refused)"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody,
            description = "`tenant_not_active` (pending: its keys are not validated yet), `key_misconfigured`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody,
            description = "`key_unavailable`, `audit_unavailable` (nothing was returned), `registry_unavailable`: retry"),
    ),
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
    responses(
        (status = 200, body = DecryptOut),
        (status = 400, body = ErrorBody,
            description = "`invalid_request` (tenant or ciphertext), `malformed_ciphertext` (not a message keyhold \
                           can read), `key_not_in_tenant` (the message names no key of the tenant's history; no key \
                           was asked)"),
        (status = 403, body = ErrorBody,
            description = "`forbidden` (not a service token, or the message's purpose is not allowed to the \
                           service), `tenant_mismatch` (another tenant's message; nothing decrypted), \
                           `tenant_suspended`, `key_revoked`"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody, description = "`tenant_not_active`, `key_misconfigured`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody,
            description = "`key_unavailable`, `audit_unavailable` (nothing was returned), `registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn decrypt(
    p: Principal,
    State(state): Shared,
    ApiJson(item): ApiJson<DecryptItem>,
) -> Result<Json<DecryptOut>, ApiError> {
    Ok(Json(decrypt_one(&state, &p, item).await?))
}

/// `POST /v1/encrypt/batch` body. Its items are checked one by one, as the single call
/// checks its body, so one bad item is that item's error and the others are served: the
/// schema of an item is its shape only ([`schema::encrypt_batch`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptBatch {
    /// Up to 1000 items.
    pub items: Vec<EncryptItem>,
}

impl utoipa::PartialSchema for EncryptBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::encrypt_batch()
    }
}

impl ToSchema for EncryptBatch {}

/// `POST /v1/decrypt/batch` body, checked item by item as [`EncryptBatch`] is
/// ([`schema::decrypt_batch`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptBatch {
    /// Up to 1000 items.
    pub items: Vec<DecryptItem>,
}

impl utoipa::PartialSchema for DecryptBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::decrypt_batch()
    }
}

impl ToSchema for DecryptBatch {}

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
    caller(p)?;
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

/// Encrypts up to 1000 items; each gets its own result or error (as `POST /v1/encrypt`
/// answers them).
#[utoipa::path(post, path = "/v1/encrypt/batch", request_body = EncryptBatch,
    responses(
        (status = 200, body = BatchOut<EncryptOut>),
        (status = 400, body = ErrorBody, description = "`invalid_request`: more than 1000 items"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not a service token"),
    ),
    security(("bearer" = [])))]
pub async fn encrypt_batch(
    p: Principal,
    State(state): Shared,
    ApiJson(batch): ApiJson<EncryptBatch>,
) -> Result<Json<BatchOut<EncryptOut>>, ApiError> {
    run_batch(&p, batch.items, |item| encrypt_one(&state, &p, item)).await
}

/// Decrypts up to 1000 items; each gets its own result or error (as `POST /v1/decrypt`
/// answers them).
#[utoipa::path(post, path = "/v1/decrypt/batch", request_body = DecryptBatch,
    responses(
        (status = 200, body = BatchOut<DecryptOut>),
        (status = 400, body = ErrorBody, description = "`invalid_request`: more than 1000 items"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not a service token"),
    ),
    security(("bearer" = [])))]
pub async fn decrypt_batch(
    p: Principal,
    State(state): Shared,
    ApiJson(batch): ApiJson<DecryptBatch>,
) -> Result<Json<BatchOut<DecryptOut>>, ApiError> {
    run_batch(&p, batch.items, |item| decrypt_one(&state, &p, item)).await
}
