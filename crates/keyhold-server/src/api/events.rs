//! Lifecycle events: a tenant's feed (its admin or an admin) and the platform-wide feed
//! (an admin), paged by event id in commit order, filterable by type.

use axum::Json;
use axum::extract::State;
use keyhold_registry::{EventFilter, StoredEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiPath, ApiQuery, TenantPath};
use super::{Shared, admin_only, manages, schema, tenant_id};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};

/// `?after=&limit=&type=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events after this id (default 0: from the start).
    #[param(schema_with = schema::events_after)]
    pub after: Option<u64>,
    /// At most this many, 1 to 1000 (default 100).
    #[param(schema_with = schema::events_limit)]
    pub limit: Option<u32>,
    /// Only these types, comma-separated (`tenant.suspended,key.revoked`).
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = schema::event_types)]
    pub kinds: Option<String>,
}

/// A lifecycle event, shaped as the Standard Webhooks payload (`type`, `timestamp`,
/// `data`) with its id and tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    /// Its id: events are numbered in the order they were stored; page with `?after=`.
    pub id: u64,
    /// Its stable type (see the catalogue in the README).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was stored, RFC 3339 UTC.
    pub timestamp: String,
    /// The tenant it concerns (absent for a platform-wide event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What happened: `tenant`, and where they apply `region`, `key`, `code`, `message`,
    /// `fix` (one sentence) and the type's own fields.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<EventOut>,
    /// The `after` of the next page: the last event's id (or the `after` asked, when the
    /// page is empty).
    pub next: u64,
}

impl EventOut {
    fn from_stored(e: StoredEvent) -> Result<Self, ApiError> {
        let data = serde_json::from_str(&e.data).map_err(|_| ApiError::internal())?;
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_ms);
        Ok(Self {
            id: e.id,
            kind: e.kind,
            timestamp: humantime::format_rfc3339_millis(at).to_string(),
            tenant: e.tenant.map(|t| t.to_string()),
            data,
        })
    }
}

/// The query's page, checked: `after`, `limit` and the types named.
fn page(q: &EventsQuery) -> Result<(u64, u32, Vec<String>), ApiError> {
    let after = q.after.unwrap_or(0);
    if i64::try_from(after).is_err() {
        return Err(ApiError::invalid(format!("after must be at most {}", i64::MAX)));
    }
    let limit = q.limit.unwrap_or(schema::EVENTS_PAGE);
    if !(1..=schema::AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1 to {}, not {limit}", schema::AUDIT_PAGE)));
    }
    let mut kinds = Vec::new();
    if q.kinds.as_deref().is_some_and(|k| k.split(',').all(|t| t.trim().is_empty())) {
        return Err(ApiError::invalid("type must name at least one event type (omit it for every type)"));
    }
    for k in q.kinds.as_deref().unwrap_or_default().split(',').map(str::trim).filter(|k| !k.is_empty()) {
        if !keyhold_lifecycle::events::CATALOGUE.iter().any(|(t, _)| *t == k) {
            let known: Vec<&str> = keyhold_lifecycle::events::CATALOGUE.iter().map(|(t, _)| *t).collect();
            return Err(ApiError::invalid(format!("unknown event type {k:?}: one of {}", known.join(", "))));
        }
        if !kinds.iter().any(|x| x == k) {
            kinds.push(k.to_owned());
        }
    }
    Ok((after, limit, kinds))
}

fn answer(events: Vec<StoredEvent>, after: u64) -> Result<Json<EventPage>, ApiError> {
    let next = events.last().map_or(after, |e| e.id);
    let events = events.into_iter().map(EventOut::from_stored).collect::<Result<_, _>>()?;
    Ok(Json(EventPage { events, next }))
}

/// The tenant's lifecycle events, a page at a time (a deleted tenant's included).
#[utoipa::path(get, path = "/v1/tenants/{id}/events", params(TenantPath, EventsQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the tenant id, `after`, `limit` or `type`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: a service, or another tenant's admin"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 500, body = ErrorBody, description = "`internal`: a stored event does not read"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn tenant_events(
    p: Principal,
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let id = tenant_id(&id)?;
    manages(&p, &id)?;
    let (after, limit, kinds) = page(&q)?;
    state.lifecycle.tenant(&id).await?;
    let filter = EventFilter { tenant: Some(&id), kinds: &kinds, after, limit, before: None };
    answer(state.lifecycle.registry().events(&filter).await?, after)
}

/// Every tenant's lifecycle events and the platform's, a page at a time (admin).
#[utoipa::path(get, path = "/v1/events", params(EventsQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody, description = "`invalid_request`: `after`, `limit` or `type`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin"),
        (status = 500, body = ErrorBody, description = "`internal`: a stored event does not read"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn events(
    p: Principal,
    State(state): Shared,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    admin_only(&p)?;
    let (after, limit, kinds) = page(&q)?;
    let filter = EventFilter { tenant: None, kinds: &kinds, after, limit, before: None };
    answer(state.lifecycle.registry().events(&filter).await?, after)
}
