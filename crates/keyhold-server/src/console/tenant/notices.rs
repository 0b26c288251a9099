//! Notices and webhooks: the event feed (a tenant's, and the operators' platform-wide
//! feed), and the tenant's webhook endpoints with their delivery logs.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyhold_core::TenantId;
use keyhold_registry::EventFilter;
use serde::Deserialize;

use super::{base, managed, nav, notice};
use crate::api::extract::{ApiPath, ApiQuery, TenantPath};
use crate::api::{self, Shared};
use crate::console::html::{self, badge, button_form, csrf_field, esc, table, time, url};
use crate::console::{Post, Session};
use crate::error::ApiError;
use crate::state::AppState;

/// `?before=&type=` of an event feed.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    /// Events before this id (newest first).
    pub before: Option<u64>,
    /// Only this type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// How many events a feed page shows.
const FEED_PAGE: u32 = 50;

/// An event feed page (newest first) for `tenant`, or every tenant.
pub(crate) async fn feed(
    state: &AppState,
    tenant: Option<&TenantId>,
    q: &FeedQuery,
    path: &str,
) -> Result<String, ApiError> {
    let kinds: Vec<String> = match q.kind.as_deref().filter(|k| !k.is_empty()) {
        Some(k) if keyhold_lifecycle::events::CATALOGUE.iter().any(|(t, _)| *t == k) => vec![k.to_owned()],
        Some(k) => {
            return Err(ApiError::invalid(format!("unknown event type {:?}", k.chars().take(64).collect::<String>())));
        }
        None => Vec::new(),
    };
    let before = q.before.unwrap_or(u64::MAX).min(i64::MAX as u64);
    let filter = EventFilter { tenant, kinds: &kinds, after: 0, limit: FEED_PAGE, before: Some(before) };
    let events = state.lifecycle.registry().events(&filter).await?;
    let mut out = format!(
        r#"<form method="get" action="{}" class="filters"><label for="type">Type</label><select id="type" name="type"><option value="">every type</option>"#,
        esc(path)
    );
    for (t, _) in keyhold_lifecycle::events::CATALOGUE {
        let sel = if q.kind.as_deref() == Some(*t) { " selected" } else { "" };
        let _ = write!(out, r#"<option value="{0}"{sel}>{0}</option>"#, esc(t));
    }
    out.push_str(r#"</select><button type="submit">Filter</button></form>"#);
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let data: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
            let g = |k: &str| data.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let mut row = vec![time(e.at_ms), format!("<code>{}</code>", esc(&e.kind))];
            if tenant.is_none() {
                row.push(e.tenant.as_ref().map_or_else(String::new, |t| {
                    format!(r#"<a href="/console/t/{}/">{}</a>"#, url(t.as_str()), esc(t.as_str()))
                }));
            }
            row.extend([
                esc(&g("region")),
                format!("<code>{}</code>", esc(&g("key"))),
                esc(&g("message")),
                esc(&g("fix")),
            ]);
            row
        })
        .collect();
    let head: &[&str] = if tenant.is_none() {
        &["When", "Type", "Tenant", "Region", "Key", "What happened", "What to do"]
    } else {
        &["When", "Type", "Region", "Key", "What happened", "What to do"]
    };
    out.push_str(&table("Events, newest first", head, &rows));
    if events.len() == FEED_PAGE as usize
        && let Some(last) = events.last()
    {
        let kind = q.kind.as_deref().map(|k| format!("&type={}", url(k))).unwrap_or_default();
        let _ = write!(out, r#"<p><a href="{}?before={}{kind}">Older events</a></p>"#, esc(path), last.id);
    }
    Ok(out)
}

/// The tenant's notices: its event feed.
pub async fn events(
    State(state): Shared,
    s: Session,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Response, ApiError> {
    let id = managed(&s, &id)?;
    state.lifecycle.tenant(&id).await?;
    let current = format!("{}/events", base(&id));
    let body = feed(&state, Some(&id), &q, &current).await?;
    Ok(html::page(&format!("Notices for {id}"), Some(&nav(&s, &id, &current)), &body))
}

/// The tenant's webhook endpoints, with the form that adds one.
pub async fn webhooks(
    State(state): Shared,
    s: Session,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    let id = managed(&s, &id)?;
    webhooks_page(&state, &s, &id, None, StatusCode::OK).await
}

async fn webhooks_page(
    state: &std::sync::Arc<AppState>,
    s: &Session,
    id: &TenantId,
    top: Option<String>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let Json(list) = api::list_tenant_webhooks(
        s.principal.clone(),
        State(state.clone()),
        ApiPath(TenantPath { id: id.to_string() }),
    )
    .await?;
    let b = base(id);
    let mut body = top.unwrap_or_default();
    let rows: Vec<Vec<String>> = list
        .webhooks
        .iter()
        .map(|w| {
            vec![
                format!(r#"<a href="{b}/webhooks/{}">{}</a>"#, url(&w.id), esc(&w.url)),
                esc(&w.events.as_ref().map_or_else(|| "every type".to_owned(), |e| e.join(", "))),
                w.disabled_reason
                    .as_ref()
                    .map_or_else(|| badge("enabled"), |r| format!("{} {}", badge("disabled"), esc(r))),
                time(w.created_ms),
            ]
        })
        .collect();
    body.push_str(&table("Webhook endpoints", &["URL", "Events", "State", "Created"], &rows));
    let _ = write!(
        body,
        r#"<section aria-labelledby="add"><h2 id="add">Add an endpoint</h2><form method="post" action="{b}/webhooks">{}<label for="wh-url">URL (https, public)</label><input id="wh-url" name="url" type="url" required placeholder="https://hooks.example.com/keyhold"><label for="wh-events">Event types, comma-separated (empty: every type)</label><input id="wh-events" name="events" type="text" placeholder="tenant.suspended, key.revoked"><button type="submit">Add endpoint</button></form></section>"#,
        csrf_field(&s.csrf)
    );
    let current = format!("{b}/webhooks");
    let mut resp = html::page(&format!("Webhooks of {id}"), Some(&nav(s, id, &current)), &body);
    *resp.status_mut() = status;
    Ok(resp)
}

fn secret_shown(w: &api::WebhookOut, what: &str) -> String {
    format!(
        r#"<div class="banner ok" role="status"><p>{what} Its signing secret is shown only now: <code class="secret">{}</code></p></div>"#,
        esc(w.secret.as_deref().unwrap_or_default())
    )
}

/// Adds an endpoint; its secret is shown once.
pub async fn add_webhook(
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let tid = managed(s, &id)?;
    let events: Vec<String> = post
        .field("events")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect();
    let body = api::CreateWebhook {
        url: post.field("url").unwrap_or_default().trim().to_owned(),
        events: (!events.is_empty()).then_some(events),
    };
    match api::create_tenant_webhook(
        s.principal.clone(),
        State(state.clone()),
        ApiPath(TenantPath { id }),
        crate::api::ApiJson(body),
    )
    .await
    {
        Ok((_, Json(w))) => {
            webhooks_page(&state, s, &tid, Some(secret_shown(&w, "Endpoint added.")), StatusCode::OK).await
        }
        Err(e) if e.status.is_client_error() => {
            let status = e.status;
            webhooks_page(&state, s, &tid, Some(notice("bad", &format!("{}: {}", e.code, e.message))), status).await
        }
        Err(e) => Err(e),
    }
}

/// One endpoint: its delivery log and actions.
pub async fn webhook(
    State(state): Shared,
    s: Session,
    ApiPath(path): ApiPath<api::TenantWebhookPath>,
) -> Result<Response, ApiError> {
    let id = managed(&s, &path.id)?;
    webhook_page(&state, &s, &id, &path.wid, None).await
}

async fn webhook_page(
    state: &std::sync::Arc<AppState>,
    s: &Session,
    id: &TenantId,
    wid: &str,
    top: Option<String>,
) -> Result<Response, ApiError> {
    let path = || api::TenantWebhookPath { id: id.to_string(), wid: wid.to_owned() };
    let Json(w) = api::get_tenant_webhook(s.principal.clone(), State(state.clone()), ApiPath(path())).await?;
    let Json(log) = api::tenant_webhook_deliveries(s.principal.clone(), State(state.clone()), ApiPath(path())).await?;
    let b = format!("{}/webhooks/{}", base(id), url(wid));
    let mut body = top.unwrap_or_default();
    let _ = write!(
        body,
        r#"<dl class="facts"><dt>URL</dt><dd>{}</dd><dt>Events</dt><dd>{}</dd><dt>State</dt><dd>{}</dd></dl><p class="actions">{} {} {}</p>"#,
        esc(&w.url),
        esc(&w.events.as_ref().map_or_else(|| "every type".to_owned(), |e| e.join(", "))),
        w.disabled_reason.as_ref().map_or_else(|| badge("enabled"), |r| format!("{} {}", badge("disabled"), esc(r))),
        button_form(&format!("{b}/test"), &s.csrf, "Send a test event", "secondary"),
        button_form(&format!("{b}/rotate"), &s.csrf, "Rotate the secret", "secondary"),
        button_form(&format!("{b}/delete"), &s.csrf, "Delete the endpoint", "danger"),
    );
    let rows: Vec<Vec<String>> = log
        .deliveries
        .iter()
        .map(|d| {
            vec![
                format!("msg_{}", d.event_id),
                badge(&d.state),
                d.attempts.to_string(),
                d.last_status.map(|s| s.to_string()).unwrap_or_default(),
                esc(d.last_error.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    body.push_str(&table(
        "Deliveries, newest first",
        &["webhook-id", "State", "Attempts", "Last status", "Last error"],
        &rows,
    ));
    let rows: Vec<Vec<String>> = log
        .attempts
        .iter()
        .map(|a| {
            vec![
                format!("msg_{}", a.event_id),
                a.attempt.to_string(),
                time(a.at_ms),
                a.status.map(|s| s.to_string()).unwrap_or_default(),
                esc(a.error.as_deref().unwrap_or_default()),
                format!("{} ms", a.latency_ms),
            ]
        })
        .collect();
    body.push_str(&table(
        "Attempts, newest first",
        &["webhook-id", "Attempt", "When", "Status", "Error", "Latency"],
        &rows,
    ));
    let current = format!("{}/webhooks", base(id));
    Ok(html::page("Webhook endpoint", Some(&nav(s, id, &current)), &body))
}

/// Queues a test event.
pub async fn test_webhook(
    State(state): Shared,
    ApiPath(path): ApiPath<api::TenantWebhookPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let id = managed(s, &path.id)?;
    let top = match api::test_tenant_webhook(
        s.principal.clone(),
        State(state.clone()),
        ApiPath(api::TenantWebhookPath { id: path.id.clone(), wid: path.wid.clone() }),
    )
    .await
    {
        Ok((_, Json(t))) => notice("ok", &format!("Test event queued (webhook-id msg_{}).", t.event_id)),
        Err(e) if e.status.is_client_error() => notice("bad", &format!("{}: {}", e.code, e.message)),
        Err(e) => return Err(e),
    };
    webhook_page(&state, s, &id, &path.wid, Some(top)).await
}

/// Rotates the endpoint's secret; the new one is shown once.
pub async fn rotate_webhook(
    State(state): Shared,
    ApiPath(path): ApiPath<api::TenantWebhookPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let id = managed(s, &path.id)?;
    let Json(w) = api::rotate_tenant_webhook(
        s.principal.clone(),
        State(state.clone()),
        ApiPath(api::TenantWebhookPath { id: path.id.clone(), wid: path.wid.clone() }),
    )
    .await?;
    let top = secret_shown(&w, "Secret rotated: deliveries carry signatures by both secrets for 24 hours.");
    webhook_page(&state, s, &id, &path.wid, Some(top)).await
}

/// Deletes the endpoint.
pub async fn delete_webhook(
    State(state): Shared,
    ApiPath(path): ApiPath<api::TenantWebhookPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let id = managed(s, &path.id)?;
    let Json(_deleted) = api::delete_tenant_webhook(s.principal.clone(), State(state.clone()), ApiPath(path)).await?;
    webhooks_page(&state, s, &id, Some(notice("ok", "Endpoint deleted.")), StatusCode::OK).await
}
