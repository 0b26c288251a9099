//! A tenant's console pages: key health (with the banner of a suspended or degraded
//! tenant), the onboarding wizard, key change, notices, webhooks, audit and usage.
//!
//! Each page first checks that the session manages the tenant (the API's `manages`), then
//! calls the API handler or lifecycle function the API would, so the console can do
//! exactly what a tenant-admin token can and nothing more.
//!
//! This module: key health and what the pages share; [`setup`] the wizard, [`keys`] key
//! change, [`notices`] events and webhooks, [`audit`] audit and usage.

mod audit;
mod keys;
mod notices;
mod setup;

pub use audit::{audit, audit_export, usage};
pub use keys::{keys, retire};
pub(crate) use notices::{FeedQuery, feed};
pub use notices::{add_webhook, delete_webhook, events, rotate_webhook, test_webhook, webhook, webhooks};
pub use setup::{attach, configure, key_policy_file, set_role, setup, template_file, validate};

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use keyhold_core::TenantId;
use keyhold_registry::EventFilter;

use super::Session;
use super::html::{self, Nav, badge, button_form, esc, table, time_or, url};
use crate::api::extract::{ApiPath, TenantPath};
use crate::api::{self, Shared, manages, tenant_id};
use crate::error::ApiError;
use crate::state::AppState;

/// The tenant of a console path, once the session is known to manage it.
pub(super) fn managed(s: &Session, id: &str) -> Result<TenantId, ApiError> {
    let id = tenant_id(id)?;
    manages(&s.principal, &id)?;
    Ok(id)
}

pub(super) fn base(id: &TenantId) -> String {
    format!("/console/t/{}", url(id.as_str()))
}

pub(super) fn nav<'a>(s: &'a Session, id: &'a TenantId, current: &'a str) -> Nav<'a> {
    s.nav(Some(id.as_str()), current)
}

/// A notice at the top of a page (`ok`, `warn`, `bad`), announced to screen readers.
pub(super) fn notice(class: &str, text: &str) -> String {
    let role = if class == "bad" { "alert" } else { "status" };
    format!(r#"<div class="banner {class}" role="{role}"><p>{}</p></div>"#, esc(text))
}

/// `/console/t/{id}` without its slash.
pub async fn to_health(ApiPath(TenantPath { id }): ApiPath<TenantPath>) -> Response {
    Redirect::to(&format!("/console/t/{}/", url(&id))).into_response()
}

/// The latest fix the tenant's events suggest for a suspension or misconfiguration.
async fn latest_fix(state: &AppState, id: &TenantId) -> Option<String> {
    let kinds: Vec<String> =
        ["key.revoked", "key.misconfigured", "tenant.suspended", "tenant.degraded"].map(String::from).to_vec();
    let filter = EventFilter { tenant: Some(id), kinds: &kinds, after: 0, limit: 10, before: Some(u64::MAX) };
    let events = state.lifecycle.registry().events(&filter).await.ok()?;
    events.iter().find_map(|e| {
        let data: serde_json::Value = serde_json::from_str(&e.data).ok()?;
        data.get("fix").and_then(|f| f.as_str()).filter(|f| !f.is_empty()).map(str::to_owned)
    })
}

/// How long after a fix a suspended tenant is probed again (a quarter interval, and the
/// schedule's polling).
fn resume_bound_s(state: &AppState) -> Option<u64> {
    state.console.probe_interval.map(|i| i.as_secs().div_ceil(4).max(1) + 1)
}

/// The banner of a tenant that is not simply active: why, what to do, what happens next.
async fn state_banner(state: &AppState, s: &Session, t: &api::TenantOut, id: &TenantId) -> String {
    let reason = t.reason.clone().unwrap_or_default();
    let fix = latest_fix(state, id).await;
    let fix_line = fix.map(|f| format!("<p><strong>What to do:</strong> {}</p>", esc(&f))).unwrap_or_default();
    let validate = button_form(&format!("{}/validate", base(id)), &s.csrf, "Validate my keys now", "primary");
    match (t.state.as_str(), t.cause.as_deref()) {
        ("suspended", Some("key_refused")) => {
            let next = match resume_bound_s(state) {
                Some(n) => format!(
                    "While suspended, keyhold probes your keys every {} s: service resumes automatically within {n} s \
                     of the fix. You can also validate now.",
                    n - 1
                ),
                None => "Health probes are off on this server: validate once the key works again.".to_owned(),
            };
            format!(
                r#"<div class="banner bad" role="alert"><h2>Suspended: {}</h2>{fix_line}<p><strong>What happens next:</strong> {}</p><p>Until then every request for your data is refused.</p>{validate}</div>"#,
                esc(&reason),
                esc(&next)
            )
        }
        ("suspended", _) => format!(
            r#"<div class="banner bad" role="alert"><h2>Suspended: {}</h2>{fix_line}<p><strong>What happens next:</strong> once fixed, validate your keys: service resumes when every region validates.</p>{validate}</div>"#,
            esc(&reason)
        ),
        ("degraded", _) => {
            let next = resume_bound_s(state)
                .map(|n| format!("It returns to active automatically within {n} s of your keys answering again."))
                .unwrap_or_default();
            format!(
                r#"<div class="banner warn" role="status"><h2>Degraded: {}</h2>{fix_line}<p>Your data is still served. {}</p></div>"#,
                esc(&reason),
                esc(&next)
            )
        }
        ("pending", _) => format!(
            r#"<div class="banner warn" role="status"><h2>Not active yet</h2><p>{}</p><p><a href="{}/setup">Set up your keys</a> in each region of your realm.</p></div>"#,
            esc(if reason.is_empty() { "keys are not attached or not yet valid in every region" } else { &reason }),
            base(id)
        ),
        ("deleted", _) => r#"<div class="banner bad" role="alert"><h2>Deleted</h2><p>This tenant was deleted: its keys are no longer used and its data cannot be decrypted.</p></div>"#.to_owned(),
        _ => r#"<div class="banner ok" role="status"><p>Active: every region's key answers, and your data is served.</p></div>"#.to_owned(),
    }
}

/// Rotation status from a key's stored findings.
fn rotation(mode: &str, findings: &[serde_json::Value]) -> String {
    if let Some(f) = findings.iter().find(|f| f.get("code").and_then(|c| c.as_str()) == Some("key_rotation_off")) {
        return format!("{} {}", badge("disabled"), esc(f.get("fix").and_then(|v| v.as_str()).unwrap_or_default()));
    }
    if mode == "local" { "managed by the local key provider".to_owned() } else { badge("enabled") }
}

/// Key health: the banner, then per region every key of the history.
pub async fn health(
    State(state): Shared,
    s: Session,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    let id = managed(&s, &id)?;
    let Json(t) =
        api::get_tenant(s.principal.clone(), State(state.clone()), ApiPath(TenantPath { id: id.to_string() })).await?;
    let history = state.lifecycle.key_history(&id).await?;
    let mut body = r#"<div id="health" data-refresh="5">"#.to_owned();
    body.push_str(&state_banner(&state, &s, &t, &id).await);
    let _ = write!(
        body,
        r#"<dl class="facts"><dt>State</dt><dd>{}</dd><dt>Realm</dt><dd>{}</dd><dt>Mode</dt><dd>{}</dd><dt>Regions</dt><dd>{}</dd></dl>"#,
        badge(&t.state),
        esc(&t.realm),
        esc(&t.mode),
        esc(&t.regions.join(", "))
    );
    for region in &t.regions {
        let _ = write!(body, r#"<section aria-labelledby="h-{0}"><h2 id="h-{0}">{0}</h2>"#, esc(region));
        let rows: Vec<Vec<String>> = history
            .iter()
            .filter(|k| k.region.as_str() == region)
            .map(|k| {
                let findings: Vec<serde_json::Value> = serde_json::from_str(&k.findings).unwrap_or_default();
                vec![
                    format!("<code>{}</code>", esc(&k.key)),
                    badge(k.status.as_str()),
                    time_or(k.last_check_ms, "never"),
                    badge(k.state.as_str()),
                    rotation(&t.mode, &findings),
                    if findings.is_empty() {
                        "none".to_owned()
                    } else {
                        findings
                            .iter()
                            .map(|f| {
                                let g = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                                format!(
                                    "{} <code>{}</code>: {} <em>{}</em>",
                                    badge(&g("severity")),
                                    esc(&g("code")),
                                    esc(&g("message")),
                                    esc(&g("fix"))
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("<br>")
                    },
                ]
            })
            .collect();
        body.push_str(&table(
            &format!("Keys in {region}"),
            &["Key", "Status", "Last probe", "Outcome", "Rotation", "Findings"],
            &rows,
        ));
        body.push_str("</section>");
    }
    body.push_str("</div>");
    let current = format!("{}/", base(&id));
    Ok(html::page(&format!("Key health of {id}"), Some(&nav(&s, &id, &current)), &body))
}

/// What a page shows above itself after a form was posted.
pub(super) enum Outcome {
    /// Nothing: the page as it is.
    None,
    /// A line saying what was done.
    Notice(String),
    /// A key was retired.
    Retired(String),
    /// A validation report.
    Report(serde_json::Value),
    /// The API's refusal (its status becomes the page's).
    Error(ApiError),
}

/// What a form's API call comes to on its page: `ok` of its answer, or its refusal shown
/// (a client error, whose status the page takes); keyhold's own failures stay errors.
pub(super) fn page_outcome<T>(r: Result<T, ApiError>, ok: impl FnOnce(T) -> Outcome) -> Result<Outcome, ApiError> {
    match r {
        Ok(v) => Ok(ok(v)),
        Err(e) if e.status.is_client_error() => Ok(Outcome::Error(e)),
        Err(e) => Err(e),
    }
}

pub(super) fn report_html(report: &serde_json::Value) -> String {
    let usable = report.get("usable").and_then(|v| v.as_bool()).unwrap_or(false);
    let attached = report.get("attached").and_then(|v| v.as_bool());
    let mut all: Vec<serde_json::Value> = Vec::new();
    for k in report.get("keys").and_then(|v| v.as_array()).into_iter().flatten() {
        all.extend(k.get("findings").and_then(|v| v.as_array()).into_iter().flatten().cloned());
    }
    all.extend(report.get("findings").and_then(|v| v.as_array()).into_iter().flatten().cloned());
    let verdict = match (usable, attached) {
        (_, Some(false)) => notice("bad", "The key was not attached: fix what the report finds and try again."),
        (true, _) => notice("ok", "Validation passed: the keys are usable."),
        (false, _) => notice("bad", "Validation failed: fix the errors below."),
    };
    let mut out = format!(r#"<section aria-labelledby="report"><h2 id="report">Validation report</h2>{verdict}"#);
    out.push_str(&html::findings("Findings", &all));
    out.push_str("</section>");
    out
}

pub(super) fn download(name: &str, body: String) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    // Tenant ids and regions are `A-Za-z0-9-_.:`: nothing to quote.
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if let Ok(v) = HeaderValue::try_from(format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}
