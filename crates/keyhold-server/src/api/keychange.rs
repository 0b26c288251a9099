//! Key change: re-encryption (one message or a batch, for services), and for the admin
//! or the tenant's own admin the ledger's view of each key, the change's progress,
//! retiring a replaced key, a forced data-key rotation and a BYOK tenant's new role.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyhold_registry::Reencrypted;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::crypto::{DecryptItem, MAX_BATCH};
use super::extract::{ApiPath, ApiQuery, TenantKeyPath, TenantPath};
use super::keys::catalog_region;
use super::tenants::KeyOut;
use super::{ApiJson, Shared, manages, schema, tenant_id};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::state::AppState;

/// A re-encryption's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReencryptOut {
    /// Whether a new message was written; `false`: the message is under the tenant's
    /// active keys already (only its header was read), keep it.
    pub changed: bool,
    /// The new message (base64), when `changed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
}

fn service_caller(p: &Principal) -> Result<keyhold_lifecycle::Caller<'_>, ApiError> {
    match p {
        Principal::Service { name, purposes } => Ok(keyhold_lifecycle::Caller { service: name, purposes }),
        _ => Err(ApiError::forbidden("re-encryption needs a service token")),
    }
}

fn decode_ciphertext(b64: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(b64).map_err(|e| ApiError::invalid(format!("ciphertext is not base64: {e}")))
}

/// One item, unrecorded: the answer and the old message's ledger record.
async fn reencrypt_one(
    state: &AppState,
    p: &Principal,
    item: DecryptItem,
) -> Result<(ReencryptOut, Option<Reencrypted>), ApiError> {
    let caller = service_caller(p)?;
    let tenant = tenant_id(&item.tenant)?;
    let ct = decode_ciphertext(&item.ciphertext)?;
    let mut out = Vec::with_capacity(ct.len() + 512);
    match state.lifecycle.reencrypt_unrecorded(&caller, &tenant, &ct, &mut out).await? {
        None => Ok((ReencryptOut { changed: false, ciphertext: None }, None)),
        Some(old) => Ok((ReencryptOut { changed: true, ciphertext: Some(B64.encode(&out)) }, Some(old))),
    }
}

/// Re-encrypts one message of a tenant under its active keys: decrypted and encrypted
/// again inside keyhold (a new message id and data key; the plaintext never leaves),
/// keeping its purpose and caller context. A message under the active keys already
/// answers `{"changed": false}` after its header is read.
#[utoipa::path(post, path = "/v1/reencrypt", request_body = DecryptItem,
    responses(
        (status = 200, body = ReencryptOut),
        (status = 400, body = ErrorBody,
            description = "`invalid_request`, `malformed_ciphertext`, `key_not_in_tenant` (no key was asked)"),
        (status = 403, body = ErrorBody,
            description = "`forbidden` (not a service token, or the message's purpose is not the service's), \
                           `tenant_mismatch`, `tenant_suspended`, `key_revoked`"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody,
            description = "`tenant_not_active`, `key_misconfigured`, `key_retired` (the message's keys were retired)"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the tenant's or the service's request rate, or the tenant's key-service budget; retry after `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody,
            description = "`key_unavailable`, `audit_unavailable`, `registry_unavailable` (nothing was returned): retry"),
    ),
    security(("bearer" = [])))]
pub async fn reencrypt(
    p: Principal,
    State(state): Shared,
    ApiJson(item): ApiJson<DecryptItem>,
) -> Result<Json<ReencryptOut>, ApiError> {
    let caller = service_caller(&p)?;
    let tenant = tenant_id(&item.tenant)?;
    let ct = decode_ciphertext(&item.ciphertext)?;
    let mut out = Vec::with_capacity(ct.len() + 512);
    let changed = state.lifecycle.reencrypt(&caller, &tenant, &ct, &mut out).await?;
    Ok(Json(ReencryptOut { changed, ciphertext: changed.then(|| B64.encode(&out)) }))
}

/// `POST /v1/reencrypt/batch` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReencryptBatch {
    /// Up to 1000 items.
    pub items: Vec<DecryptItem>,
}

impl utoipa::PartialSchema for ReencryptBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::decrypt_batch()
    }
}

impl ToSchema for ReencryptBatch {}

/// One batch result: the item's result, or its error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ReencryptResult {
    /// Success.
    Ok(ReencryptOut),
    /// Failure.
    Err(ErrorBody),
}

/// A re-encryption batch's answer, one result per item in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReencryptBatchOut {
    /// The results.
    pub results: Vec<ReencryptResult>,
}

/// Re-encrypts up to 1000 messages; each gets its result or its error (as
/// `POST /v1/reencrypt` answers them). The re-encrypted messages are recorded in the
/// ledger in one transaction before the answer: if that fails, the whole batch is
/// `503 registry_unavailable` and nothing is returned.
#[utoipa::path(post, path = "/v1/reencrypt/batch", request_body = ReencryptBatch,
    responses(
        (status = 200, body = ReencryptBatchOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: more than 1000 items"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not a service token"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: the ledger write failed, retry"),
    ),
    security(("bearer" = [])))]
pub async fn reencrypt_batch(
    p: Principal,
    State(state): Shared,
    ApiJson(batch): ApiJson<ReencryptBatch>,
) -> Result<Json<ReencryptBatchOut>, ApiError> {
    service_caller(&p)?;
    if batch.items.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!("a batch holds at most {MAX_BATCH} items, not {}", batch.items.len())));
    }
    let mut results = Vec::with_capacity(batch.items.len());
    // Records by tenant, written before answering.
    let mut records: Vec<(keyhold_core::TenantId, Vec<Reencrypted>)> = Vec::new();
    for item in batch.items {
        let tenant = keyhold_core::TenantId::parse(&item.tenant).ok();
        results.push(match reencrypt_one(&state, &p, item).await {
            Ok((out, old)) => {
                if let (Some(old), Some(t)) = (old, tenant) {
                    match records.iter_mut().find(|(rt, _)| *rt == t) {
                        Some((_, v)) => v.push(old),
                        None => records.push((t, vec![old])),
                    }
                }
                ReencryptResult::Ok(out)
            }
            Err(e) => {
                ReencryptResult::Err(ErrorBody { error: ErrorDetail { code: e.code.to_owned(), message: e.message } })
            }
        });
    }
    for (tenant, old) in &records {
        state.lifecycle.record_reencrypted(tenant, old).await?;
    }
    Ok(Json(ReencryptBatchOut { results }))
}

/// A key of the history with what it protects, from the ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyLedgerOut {
    /// The key.
    #[serde(flatten)]
    pub key: KeyOut,
    /// Data keys it wraps.
    pub data_keys: u64,
    /// Messages written under those data keys (instances add their counts every flush
    /// interval).
    pub messages: u64,
    /// Plaintext bytes written under them.
    pub bytes: u64,
    /// Of those messages, how many were re-encrypted (each once).
    pub reencrypted: u64,
    /// Messages not re-encrypted yet, counted per data key (one data key's surplus of
    /// re-encrypted messages over its count never offsets another's).
    pub remaining: u64,
    /// Data keys whose counts may be incomplete: still in use by an instance, or their
    /// instance stopped without writing its last counts (`kill -9`).
    pub unsettled_data_keys: u64,
}

fn ledger_out(key: KeyOut, p: Option<&keyhold_registry::KeyProtects>) -> KeyLedgerOut {
    KeyLedgerOut {
        key,
        data_keys: p.map_or(0, |p| p.data_keys),
        messages: p.map_or(0, |p| p.messages),
        bytes: p.map_or(0, |p| p.bytes),
        reencrypted: p.map_or(0, |p| p.reencrypted),
        remaining: p.map_or(0, |p| p.remaining),
        unsettled_data_keys: p.map_or(0, |p| p.unsettled),
    }
}

/// A tenant's key history with the ledger's counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysLedgerOut {
    /// Every key attached and not destroyed, by region, oldest first.
    pub keys: Vec<KeyLedgerOut>,
}

/// The tenant's key history: every key ever attached per region, with its status, and
/// per key how many data keys and messages it protects and how many were re-encrypted
/// away (from the data-key ledger).
#[utoipa::path(get, path = "/v1/tenants/{id}/keys", params(TenantPath),
    responses(
        (status = 200, body = KeysLedgerOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`: its key history was destroyed"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn list_keys(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Json<KeysLedgerOut>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    state.lifecycle.live_tenant(&id).await?;
    state.lifecycle.flush_ledger().await;
    let history = state.lifecycle.key_history(&id).await?;
    let protects = state.lifecycle.key_protects(&id).await?;
    let keys = history
        .into_iter()
        .map(|k| {
            let p = protects.iter().find(|p| p.key == k.key);
            ledger_out(KeyOut::from(k), p)
        })
        .collect();
    Ok(Json(KeysLedgerOut { keys }))
}

/// The progress of a tenant's key change.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyChangeOut {
    /// `none` (no `decrypt_only` key), `in_progress` (messages remain under them, or
    /// some data keys' counts are not settled) or `complete` (every message the ledger
    /// counted under them was re-encrypted, and every count is settled).
    pub state: String,
    /// The `decrypt_only` keys, with what each protects.
    pub keys: Vec<KeyLedgerOut>,
    /// Data keys wrapped by any of them (each once).
    pub data_keys: u64,
    /// Messages written under those data keys.
    pub messages: u64,
    /// Of those, messages re-encrypted (each once, however often it was retried).
    pub reencrypted: u64,
    /// Messages not re-encrypted yet, counted per data key.
    pub remaining: u64,
    /// Data keys whose counts may be incomplete (in use, or their instance stopped
    /// without writing them): the change is not complete while there are any.
    pub unsettled_data_keys: u64,
    /// Messages re-encrypted in percent; 100 only when `complete`.
    pub percent: f64,
}

/// The progress of the tenant's key change: messages re-encrypted against messages
/// under its `decrypt_only` keys, from the data-key ledger.
#[utoipa::path(get, path = "/v1/tenants/{id}/key-change", params(TenantPath),
    responses(
        (status = 200, body = KeyChangeOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn key_change(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Json<KeyChangeOut>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let c = state.lifecycle.key_change(&id).await?;
    let remaining = c.remaining;
    let state_name = if c.keys.is_empty() {
        "none"
    } else if !c.complete() {
        "in_progress"
    } else {
        "complete"
    };
    let done = c.messages.saturating_sub(remaining);
    let percent = if c.messages == 0 {
        if c.complete() { 100.0 } else { 0.0 }
    } else {
        let p = (done as f64) * 100.0 / c.messages as f64;
        // 100 only once complete: unsettled counts may hide messages.
        if c.complete() { p } else { p.min(99.9) }
    };
    Ok(Json(KeyChangeOut {
        state: state_name.into(),
        keys: c.keys.into_iter().map(|(k, p)| ledger_out(KeyOut::from(k), Some(&p))).collect(),
        data_keys: c.data_keys,
        messages: c.messages,
        reencrypted: c.reencrypted,
        remaining,
        unsettled_data_keys: c.unsettled,
        percent,
    }))
}

/// `?force=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Retire even though the ledger shows messages under the key that were not
    /// re-encrypted (keyhold will not decrypt them any more).
    pub force: Option<bool>,
}

/// A retirement's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetireOut {
    /// The key, now `retired`.
    pub key_arn: String,
    /// Messages under it that were not re-encrypted (non-zero only with `force`).
    pub remaining: u64,
}

/// Retires a `decrypt_only` key: keyhold never uses it again, even if the key service
/// would. Refused (409 `key_protects_data`, with the count) while the ledger shows
/// messages under it that were not re-encrypted, unless `force=true`.
#[utoipa::path(post, path = "/v1/tenants/{id}/keys/{region}/{key}/retire", params(TenantKeyPath, ForceQuery),
    responses(
        (status = 200, body = RetireOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id, region, key or force"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`, `key_not_found`"),
        (status = 409, body = ErrorBody,
            description = "`key_protects_data` (messages remain; the message says how many), `key_active` (attach \
                           a new key first), `key_retired` (already), `conflict`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`, `audit_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn retire_key(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantKeyPath { id, region, key }): ApiPath<TenantKeyPath>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> Result<Json<RetireOut>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let region = catalog_region(&state, &region)?;
    keyhold_core::KeyRef::parse(&key).map_err(|e| ApiError::invalid(format!("invalid key: {e}")))?;
    let remaining = state.lifecycle.retire_key(&p.actor(), &id, &region, &key, q.force.unwrap_or(false)).await?;
    Ok(Json(RetireOut { key_arn: key, remaining }))
}

/// A forced rotation's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotateDataKeysOut {
    /// The tenant's data-key generation now.
    pub generation: u64,
    /// Within how many ms every instance stops using the previous data keys.
    pub bound_ms: u64,
}

/// Makes every instance stop using the tenant's current data keys (a suspected leak):
/// new messages get new data keys within the tenant-view bound; existing messages still
/// decrypt. Recorded in the audit trail.
#[utoipa::path(post, path = "/v1/tenants/{id}/rotate-data-keys", params(TenantPath),
    responses(
        (status = 200, body = RotateDataKeysOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`, `audit_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn rotate_data_keys(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Json<RotateDataKeysOut>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let generation = state.lifecycle.rotate_data_keys(&p.actor(), &id).await?;
    Ok(Json(RotateDataKeysOut { generation, bound_ms: keyhold_lifecycle::TENANT_VIEW_TTL_MS }))
}

/// `PUT /v1/tenants/{id}/role` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// The new role keyhold assumes.
    #[schema(schema_with = schema::role_arn)]
    pub role_arn: String,
}

/// Gives a BYOK tenant a new role: its active keys are validated through the new role
/// first; the role changes (`changed: true`) only if every key works through it, and
/// the tenant's traffic moves to it within the tenant-view bound. Answers the validation
/// report with `changed`.
#[utoipa::path(put, path = "/v1/tenants/{id}/role", request_body = SetRole, params(TenantPath),
    responses(
        (status = 200, body = Object, description = "the validation report through the new role, with `changed`"),
        (status = 400, body = ErrorBody,
            description = "`invalid_request`: the tenant id or a role ARN that is malformed"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody,
            description = "`tenant_not_byok` (a cmk or local tenant has no role), `conflict`, `not_configured`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`, `audit_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn set_role(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiJson(body): ApiJson<SetRole>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let outcome = state.lifecycle.set_role(&p.actor(), &id, &body.role_arn).await?;
    let mut v = serde_json::to_value(&outcome.report).map_err(|_| ApiError::internal())?;
    if let Some(o) = v.as_object_mut() {
        o.insert("changed".into(), serde_json::Value::Bool(outcome.changed));
    }
    Ok(Json(v))
}
