//! Webhook endpoints: a tenant's (its admin or an admin, under `/v1/tenants/{id}/webhooks`)
//! and the platform's (an admin, under `/v1/webhooks`), each with a `whsec_` signing
//! secret, an optional event-type filter, secret rotation, a test send and a delivery
//! log. Delivery itself is [`crate::webhooks`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyhold_core::TenantId;
use keyhold_registry::WebhookEndpoint;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiPath, TenantPath};
use super::{ApiJson, Shared, admin_only, manages, schema, tenant_id};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Endpoints a tenant may register.
pub const MAX_TENANT_ENDPOINTS: usize = 10;

/// Platform-wide endpoints.
pub const MAX_PLATFORM_ENDPOINTS: usize = 50;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_MS: u64 = 24 * 3600 * 1000;

/// Attempts shown in a delivery log.
const LOG: u32 = 100;

/// `POST …/webhooks` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are POSTed: an `https://` URL with a public host.
    #[schema(schema_with = schema::webhook_url)]
    pub url: String,
    /// The event types it receives (every type when absent).
    #[serde(default)]
    #[schema(schema_with = schema::webhook_events)]
    pub events: Option<Vec<String>>,
}

/// An endpoint as shown (its secret only when created or rotated).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOut {
    /// Its id.
    pub id: String,
    /// The tenant whose events it receives (absent: platform-wide).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Its URL.
    pub url: String,
    /// The types it receives (absent: every type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// The signing secret (`whsec_…`): shown once, when created or rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// After a rotation: until when (ms since the Unix epoch) the previous secret also
    /// signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_until_ms: Option<u64>,
    /// When it was registered (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it was disabled (it answered `410 Gone`); no more deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_ms: Option<u64>,
    /// Why it was disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

fn out(e: WebhookEndpoint, show_secret: bool, now: u64) -> WebhookOut {
    WebhookOut {
        id: e.id,
        tenant: e.tenant.map(|t| t.to_string()),
        url: e.url,
        events: e.types,
        secret: show_secret.then_some(e.secret),
        previous_secret_until_ms: e.old_secret.map(|(_, until)| until).filter(|u| *u > now),
        created_ms: e.created_ms,
        disabled_ms: e.disabled.as_ref().map(|d| d.0),
        disabled_reason: e.disabled.map(|d| d.1),
    }
}

/// The endpoints of one owner.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub webhooks: Vec<WebhookOut>,
}

/// A test send, queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestSent {
    /// The `webhook.test` event queued for the endpoint (its `webhook-id` is `msg_<id>`).
    pub event_id: u64,
}

/// An endpoint's deliveries and attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryLog {
    /// The latest deliveries, newest first.
    pub deliveries: Vec<DeliveryOut>,
    /// The latest attempts, newest first.
    pub attempts: Vec<AttemptOut>,
}

/// One delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    /// The event (its `webhook-id` is `msg_<event_id>`).
    pub event_id: u64,
    /// `pending`, `delivered`, `failed` (the schedule ran out, or 410) or `cancelled`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending).
    pub next_ms: u64,
    /// The last answer's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    /// The event.
    pub event_id: u64,
    /// Which attempt (1 for the first).
    pub attempt: u32,
    /// When.
    pub at_ms: u64,
    /// The answer's status, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
}

/// `{id}` and `{wid}`: a tenant's endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantWebhookPath {
    /// The tenant id.
    #[param(schema_with = schema::tenant_id)]
    pub id: String,
    /// The endpoint's id.
    #[param(schema_with = schema::webhook_id)]
    pub wid: String,
}

/// `{wid}`: a platform-wide endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookPath {
    /// The endpoint's id.
    #[param(schema_with = schema::webhook_id)]
    pub wid: String,
}

fn not_found(wid: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "webhook_not_found", format!("no webhook endpoint {wid} here"))
}

/// The endpoint `wid` if it is `owner`'s (a tenant's, or the platform's for `None`).
async fn owned(state: &AppState, owner: Option<&TenantId>, wid: &str) -> Result<WebhookEndpoint, ApiError> {
    match state.lifecycle.registry().webhook(webhook_id(wid)?).await? {
        Some(e) if e.tenant.as_ref() == owner => Ok(e),
        _ => Err(not_found(wid)),
    }
}

async fn create(state: &AppState, owner: Option<TenantId>, body: CreateWebhook) -> Result<WebhookOut, ApiError> {
    crate::webhooks::check_url(&body.url, state.webhooks.allow_private)
        .map_err(|e| ApiError::invalid(format!("invalid url: {e}")))?;
    let events = match body.events {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ApiError::invalid("events must name at least one type (omit it for every type)"));
        }
        Some(list) => {
            let mut types: Vec<String> = Vec::new();
            for t in list {
                if !keyhold_lifecycle::events::CATALOGUE.iter().any(|(k, _)| *k == t) {
                    return Err(ApiError::invalid(format!("unknown event type {t:?}: see the event catalogue")));
                }
                if !types.contains(&t) {
                    types.push(t);
                }
            }
            Some(types)
        }
    };
    let registry = state.lifecycle.registry();
    let max = if owner.is_some() { MAX_TENANT_ENDPOINTS } else { MAX_PLATFORM_ENDPOINTS };
    let now = state.now_ms();
    let e = WebhookEndpoint {
        id: crate::webhooks::new_id().map_err(|_| ApiError::internal())?,
        tenant: owner,
        url: body.url,
        types: events,
        secret: crate::webhooks::new_secret().map_err(|_| ApiError::internal())?,
        old_secret: None,
        created_ms: now,
        disabled: None,
    };
    if !registry.add_webhook(&e, max).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!("at most {max} webhook endpoints here; delete one first"),
        ));
    }
    Ok(out(e, true, now))
}

/// The type of a test send.
pub const WEBHOOK_TEST: &str = "webhook.test";

async fn rotate(state: &AppState, e: WebhookEndpoint) -> Result<WebhookOut, ApiError> {
    let now = state.now_ms();
    let secret = crate::webhooks::new_secret().map_err(|_| ApiError::internal())?;
    let until = now + ROTATION_OVERLAP_MS;
    if !state.lifecycle.registry().rotate_webhook_secret(&e.id, &secret, until).await? {
        return Err(not_found(&e.id));
    }
    let rotated = WebhookEndpoint { old_secret: Some((e.secret.clone(), until)), secret, ..e };
    Ok(out(rotated, true, now))
}

async fn test_send(state: &AppState, e: &WebhookEndpoint) -> Result<TestSent, ApiError> {
    let now = state.now_ms();
    let tenant = e.tenant.clone();
    let data = serde_json::json!({
        "tenant": tenant.as_ref().map(TenantId::as_str),
        "message": "a test event, sent on request; nothing happened to any key",
        "endpoint": e.id,
    });
    let event = keyhold_registry::NewEvent { tenant, kind: WEBHOOK_TEST, data: data.to_string(), dedupe: None };
    use keyhold_registry::TestQueued as Q;
    match state.lifecycle.registry().webhook_test(&e.id, &event, now).await? {
        Q::Queued(event_id) => Ok(TestSent { event_id }),
        Q::NoEndpoint => Err(not_found(&e.id)),
        Q::Disabled => Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_disabled",
            "the endpoint is disabled (it answered 410 Gone); register it again to use it",
        )),
        Q::Pending => Err(ApiError::new(
            StatusCode::CONFLICT,
            "test_pending",
            "a test of this endpoint is still being delivered; see its delivery log",
        )),
    }
}

async fn log(state: &AppState, e: &WebhookEndpoint) -> Result<DeliveryLog, ApiError> {
    let registry = state.lifecycle.registry();
    let deliveries = registry
        .webhook_deliveries(&e.id, LOG)
        .await?
        .into_iter()
        .map(|d| DeliveryOut {
            event_id: d.event_id,
            state: d.state,
            attempts: d.attempts,
            next_ms: d.next_ms,
            last_status: d.last_status,
            last_error: d.last_error,
        })
        .collect();
    let attempts = registry
        .webhook_attempts(&e.id, LOG)
        .await?
        .into_iter()
        .map(|a| AttemptOut {
            event_id: a.event_id,
            attempt: a.attempt,
            at_ms: a.at_ms,
            status: a.status,
            error: a.error,
            latency_ms: a.latency_ms,
        })
        .collect();
    Ok(DeliveryLog { deliveries, attempts })
}

/// The tenant `id` if the caller manages it; a deleted tenant's endpoints can still be
/// listed and deleted (not created, rotated or tested).
async fn tenant_owner(state: &AppState, p: &Principal, id: &str, live: bool) -> Result<TenantId, ApiError> {
    let id = tenant_id(id)?;
    manages(p, &id)?;
    if live {
        state.lifecycle.live_tenant(&id).await?;
    } else {
        state.lifecycle.tenant(&id).await?;
    }
    Ok(id)
}

/// An endpoint id from the path (`wh_` and 32 hex digits).
fn webhook_id(wid: &str) -> Result<&str, ApiError> {
    let ok = wid
        .strip_prefix("wh_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    if ok { Ok(wid) } else { Err(ApiError::invalid("invalid webhook id: `wh_` and 32 lowercase hex digits")) }
}

/// Registers a webhook endpoint for the tenant's events; answers its `whsec_` secret
/// (shown this once).
#[utoipa::path(post, path = "/v1/tenants/{id}/webhooks", params(TenantPath), request_body = CreateWebhook,
    responses(
        (status = 201, body = WebhookOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id, the URL or an event type"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody, description = "`too_many_webhooks`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn create_tenant_webhook(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookOut>), ApiError> {
    let id = tenant_owner(&state, &p, &id, true).await?;
    Ok((StatusCode::CREATED, Json(create(&state, Some(id), body).await?)))
}

/// The tenant's webhook endpoints.
#[utoipa::path(get, path = "/v1/tenants/{id}/webhooks", params(TenantPath),
    responses(
        (status = 200, body = WebhookList),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn list_tenant_webhooks(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Json<WebhookList>, ApiError> {
    let id = tenant_owner(&state, &p, &id, false).await?;
    let now = state.now_ms();
    let list = state.lifecycle.registry().webhooks(Some(&id)).await?;
    Ok(Json(WebhookList { webhooks: list.into_iter().map(|e| out(e, false, now)).collect() }))
}

/// One of the tenant's webhook endpoints.
#[utoipa::path(get, path = "/v1/tenants/{id}/webhooks/{wid}", params(TenantWebhookPath),
    responses(
        (status = 200, body = WebhookOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant or endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`, `webhook_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn get_tenant_webhook(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantWebhookPath { id, wid }): ApiPath<TenantWebhookPath>,
) -> Result<Json<WebhookOut>, ApiError> {
    let id = tenant_owner(&state, &p, &id, false).await?;
    Ok(Json(out(owned(&state, Some(&id), &wid).await?, false, state.now_ms())))
}

/// Deletes one of the tenant's webhook endpoints; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/v1/tenants/{id}/webhooks/{wid}", params(TenantWebhookPath),
    responses(
        (status = 200, body = WebhookOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant or endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`, `webhook_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn delete_tenant_webhook(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantWebhookPath { id, wid }): ApiPath<TenantWebhookPath>,
) -> Result<Json<WebhookOut>, ApiError> {
    let id = tenant_owner(&state, &p, &id, false).await?;
    let e = owned(&state, Some(&id), &wid).await?;
    if !state.lifecycle.registry().remove_webhook(&e.id, state.now_ms()).await? {
        return Err(not_found(&wid));
    }
    Ok(Json(out(e, false, state.now_ms())))
}

/// Gives one of the tenant's endpoints a new secret; the previous one keeps signing
/// beside it for 24 hours (deliveries carry both signatures).
#[utoipa::path(post, path = "/v1/tenants/{id}/webhooks/{wid}/rotate-secret", params(TenantWebhookPath),
    responses(
        (status = 200, body = WebhookOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant or endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`, `webhook_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn rotate_tenant_webhook(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantWebhookPath { id, wid }): ApiPath<TenantWebhookPath>,
) -> Result<Json<WebhookOut>, ApiError> {
    let id = tenant_owner(&state, &p, &id, true).await?;
    let e = owned(&state, Some(&id), &wid).await?;
    Ok(Json(rotate(&state, e).await?))
}

/// Queues a `webhook.test` event for one of the tenant's endpoints.
#[utoipa::path(post, path = "/v1/tenants/{id}/webhooks/{wid}/test", params(TenantWebhookPath),
    responses(
        (status = 202, body = TestSent),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant or endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`, `webhook_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn test_tenant_webhook(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantWebhookPath { id, wid }): ApiPath<TenantWebhookPath>,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    let id = tenant_owner(&state, &p, &id, true).await?;
    let e = owned(&state, Some(&id), &wid).await?;
    Ok((StatusCode::ACCEPTED, Json(test_send(&state, &e).await?)))
}

/// One of the tenant's endpoints' delivery log.
#[utoipa::path(get, path = "/v1/tenants/{id}/webhooks/{wid}/deliveries", params(TenantWebhookPath),
    responses(
        (status = 200, body = DeliveryLog),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant or endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`, `webhook_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn tenant_webhook_deliveries(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantWebhookPath { id, wid }): ApiPath<TenantWebhookPath>,
) -> Result<Json<DeliveryLog>, ApiError> {
    let id = tenant_owner(&state, &p, &id, false).await?;
    let e = owned(&state, Some(&id), &wid).await?;
    Ok(Json(log(&state, &e).await?))
}

/// Registers a platform-wide webhook endpoint (every tenant's events and the
/// platform's); answers its secret (shown this once).
#[utoipa::path(post, path = "/v1/webhooks", request_body = CreateWebhook,
    responses(
        (status = 201, body = WebhookOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the URL or an event type"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin"),
        (status = 409, body = ErrorBody, description = "`too_many_webhooks`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn create_webhook(
    p: Principal,
    State(state): Shared,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookOut>), ApiError> {
    admin_only(&p)?;
    Ok((StatusCode::CREATED, Json(create(&state, None, body).await?)))
}

/// The platform-wide webhook endpoints.
#[utoipa::path(get, path = "/v1/webhooks",
    responses(
        (status = 200, body = WebhookList),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn list_webhooks(p: Principal, State(state): Shared) -> Result<Json<WebhookList>, ApiError> {
    admin_only(&p)?;
    let now = state.now_ms();
    let list = state.lifecycle.registry().webhooks(None).await?;
    Ok(Json(WebhookList { webhooks: list.into_iter().map(|e| out(e, false, now)).collect() }))
}

/// One platform-wide endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{wid}", params(WebhookPath),
    responses(
        (status = 200, body = WebhookOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin"),
        (status = 404, body = ErrorBody, description = "`webhook_not_found`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn get_webhook(
    p: Principal,
    State(state): Shared,
    ApiPath(WebhookPath { wid }): ApiPath<WebhookPath>,
) -> Result<Json<WebhookOut>, ApiError> {
    admin_only(&p)?;
    Ok(Json(out(owned(&state, None, &wid).await?, false, state.now_ms())))
}

/// Deletes a platform-wide endpoint; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/v1/webhooks/{wid}", params(WebhookPath),
    responses(
        (status = 200, body = WebhookOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin"),
        (status = 404, body = ErrorBody, description = "`webhook_not_found`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn delete_webhook(
    p: Principal,
    State(state): Shared,
    ApiPath(WebhookPath { wid }): ApiPath<WebhookPath>,
) -> Result<Json<WebhookOut>, ApiError> {
    admin_only(&p)?;
    let e = owned(&state, None, &wid).await?;
    if !state.lifecycle.registry().remove_webhook(&e.id, state.now_ms()).await? {
        return Err(not_found(&wid));
    }
    Ok(Json(out(e, false, state.now_ms())))
}

/// Gives a platform-wide endpoint a new secret (the previous one signs beside it for 24
/// hours).
#[utoipa::path(post, path = "/v1/webhooks/{wid}/rotate-secret", params(WebhookPath),
    responses(
        (status = 200, body = WebhookOut),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin"),
        (status = 404, body = ErrorBody, description = "`webhook_not_found`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn rotate_webhook(
    p: Principal,
    State(state): Shared,
    ApiPath(WebhookPath { wid }): ApiPath<WebhookPath>,
) -> Result<Json<WebhookOut>, ApiError> {
    admin_only(&p)?;
    let e = owned(&state, None, &wid).await?;
    Ok(Json(rotate(&state, e).await?))
}

/// Queues a `webhook.test` event for a platform-wide endpoint.
#[utoipa::path(post, path = "/v1/webhooks/{wid}/test", params(WebhookPath),
    responses(
        (status = 202, body = TestSent),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin"),
        (status = 404, body = ErrorBody, description = "`webhook_not_found`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn test_webhook(
    p: Principal,
    State(state): Shared,
    ApiPath(WebhookPath { wid }): ApiPath<WebhookPath>,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    admin_only(&p)?;
    let e = owned(&state, None, &wid).await?;
    Ok((StatusCode::ACCEPTED, Json(test_send(&state, &e).await?)))
}

/// A platform-wide endpoint's delivery log.
#[utoipa::path(get, path = "/v1/webhooks/{wid}/deliveries", params(WebhookPath),
    responses(
        (status = 200, body = DeliveryLog),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the endpoint id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin"),
        (status = 404, body = ErrorBody, description = "`webhook_not_found`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn webhook_deliveries(
    p: Principal,
    State(state): Shared,
    ApiPath(WebhookPath { wid }): ApiPath<WebhookPath>,
) -> Result<Json<DeliveryLog>, ApiError> {
    admin_only(&p)?;
    let e = owned(&state, None, &wid).await?;
    Ok(Json(log(&state, &e).await?))
}
