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
    let ct = encrypt_message(state, p, item).await?;
    Ok(EncryptOut { ciphertext: B64.encode(ct) })
}

/// One item's message.
async fn encrypt_message(state: &AppState, p: &Principal, item: EncryptItem) -> Result<Vec<u8>, ApiError> {
    let caller = caller(p)?;
    let tenant = tenant_id(&item.tenant)?;
    let purpose = Purpose::parse(&item.purpose).map_err(|e| ApiError::invalid(format!("invalid purpose: {e}")))?;
    let plaintext =
        B64.decode(&item.plaintext).map_err(|e| ApiError::invalid(format!("plaintext is not base64: {e}")))?;
    let context = EncryptionContext::from_caller_pairs(item.context)
        .map_err(|e| ApiError::invalid(format!("invalid context: {e}")))?;
    let mut ct = Vec::with_capacity(plaintext.len() + 1024);
    state.lifecycle.encrypt(&caller, tenant, purpose, context, &plaintext, &mut ct).await?;
    Ok(ct)
}

async fn decrypt_one(state: &AppState, p: &Principal, item: DecryptItem) -> Result<DecryptOut, ApiError> {
    let (plaintext, purpose, context) = decrypt_message(state, p, item).await?;
    Ok(DecryptOut { plaintext: B64.encode(&*plaintext), purpose: purpose.to_string(), context })
}

/// One item's plaintext, purpose and caller context.
async fn decrypt_message(
    state: &AppState,
    p: &Principal,
    item: DecryptItem,
) -> Result<(zeroize::Zeroizing<Vec<u8>>, Purpose, BTreeMap<String, String>), ApiError> {
    let caller = caller(p)?;
    let tenant = tenant_id(&item.tenant)?;
    let ct = B64.decode(&item.ciphertext).map_err(|e| ApiError::invalid(format!("ciphertext is not base64: {e}")))?;
    let mut plaintext = zeroize::Zeroizing::new(Vec::with_capacity(ct.len()));
    let d = state.lifecycle.decrypt(&caller, &tenant, &ct, &mut plaintext).await?;
    let context = d
        .header
        .context()
        .iter()
        .filter(|(k, _)| *k != RESERVED_TENANT_KEY && *k != RESERVED_PURPOSE_KEY)
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok((plaintext, d.purpose, context))
}

/// A JSON answer written directly: `{"<field>":"<base64>"` and what `rest` appends, then
/// `}`. Base64 holds no character JSON escapes, so the bytes are what serde would write
/// without serde scanning them one by one (the single-item answers' largest cost after
/// the cryptography).
fn base64_json(field: &str, bytes: &[u8], rest: impl FnOnce(&mut Vec<u8>)) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let encoded = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    let mut body = Vec::with_capacity(encoded + field.len() + 64);
    body.extend_from_slice(b"{\"");
    body.extend_from_slice(field.as_bytes());
    body.extend_from_slice(b"\":\"");
    let start = body.len();
    body.resize(start + encoded, 0);
    let written = body.get_mut(start..).map_or(0, |out| B64.encode_slice(bytes, out).unwrap_or(0));
    body.truncate(start + written);
    body.push(b'"');
    rest(&mut body);
    body.push(b'}');
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
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
        (status = 429, body = ErrorBody, description = "`rate_limited`: the tenant's or the service's request rate, or the tenant's key-service budget; retry after `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody,
            description = "`key_unavailable`, `audit_unavailable` (nothing was returned), `registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn encrypt(
    p: Principal,
    State(state): Shared,
    ApiJson(item): ApiJson<EncryptItem>,
) -> Result<axum::response::Response, ApiError> {
    let ct = encrypt_message(&state, &p, item).await?;
    Ok(base64_json("ciphertext", &ct, |_| {}))
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
        (status = 429, body = ErrorBody, description = "`rate_limited`: the tenant's or the service's request rate, or the tenant's key-service budget; retry after `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody,
            description = "`key_unavailable`, `audit_unavailable` (nothing was returned), `registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn decrypt(
    p: Principal,
    State(state): Shared,
    ApiJson(item): ApiJson<DecryptItem>,
) -> Result<axum::response::Response, ApiError> {
    let (plaintext, purpose, context) = decrypt_message(&state, &p, item).await?;
    Ok(base64_json("plaintext", &plaintext, |body| {
        // A purpose is `[a-z0-9._-]`: nothing to escape.
        body.extend_from_slice(b",\"purpose\":\"");
        body.extend_from_slice(purpose.as_str().as_bytes());
        body.extend_from_slice(b"\",\"context\":");
        if serde_json::to_writer(&mut *body, &context).is_err() {
            body.extend_from_slice(b"{}");
        }
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: axum::response::Response) -> (Option<String>, Vec<u8>) {
        use http_body_util::BodyExt as _;
        let ct = r.headers().get(axum::http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
        (ct, r.into_body().collect().await.unwrap().to_bytes().to_vec())
    }

    /// The hand-written answers are byte for byte what serde writes for the documented
    /// schemas, for every length's base64 padding.
    #[tokio::test]
    async fn direct_answers_are_the_documented_json() {
        for len in [0, 1, 2, 3, 1024, 1025] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let (ct, b) = body(base64_json("ciphertext", &bytes, |_| {})).await;
            assert_eq!(ct.as_deref(), Some("application/json"));
            assert_eq!(b, serde_json::to_vec(&EncryptOut { ciphertext: B64.encode(&bytes) }).unwrap());
            let context: BTreeMap<String, String> =
                [("k\"\\".to_owned(), "v\n\u{1}é".to_owned()), ("a".to_owned(), String::new())].into();
            let (_, b) = body(base64_json("plaintext", &bytes, |body| {
                body.extend_from_slice(b",\"purpose\":\"billing.v2\",\"context\":");
                serde_json::to_writer(&mut *body, &context).unwrap();
            }))
            .await;
            let want = DecryptOut { plaintext: B64.encode(&bytes), purpose: "billing.v2".into(), context };
            assert_eq!(b, serde_json::to_vec(&want).unwrap());
        }
    }
}
