//! The operators' view (admin sessions only): every tenant with its state, realm, mode,
//! last probe and findings, filtered; the platform-wide event feed; sign-in links minted
//! for a tenant's administrator.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::Response;
use keyhold_registry::ConsoleUser;
use serde::Deserialize;

use super::html::{self, badge, csrf_field, esc, table, time_or, url};
use super::tenant::{FeedQuery, feed};
use super::{Post, Session};
use crate::api::extract::{ApiPath, ApiQuery, TenantPath};
use crate::api::{Shared, admin_only, tenant_id};
use crate::error::ApiError;

/// `?state=&realm=&mode=&q=` of the tenant list.
#[derive(Debug, Default, Deserialize)]
pub struct TenantFilter {
    state: Option<String>,
    realm: Option<String>,
    mode: Option<String>,
    q: Option<String>,
    /// Tenants after this many of the matching ones (a page's start).
    skip: Option<usize>,
}

/// Tenants shown per page: only these have their key history read.
const TENANTS_PAGE: usize = 200;

/// Every tenant, filtered.
pub async fn tenants(
    State(state): Shared,
    s: Session,
    ApiQuery(f): ApiQuery<TenantFilter>,
) -> Result<Response, ApiError> {
    admin_only(&s.principal)?;
    tenants_page(&state, &s, &f, String::new()).await
}

async fn tenants_page(
    state: &crate::AppState,
    s: &Session,
    f: &TenantFilter,
    top: String,
) -> Result<Response, ApiError> {
    let pick = |o: &Option<String>| o.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let (want_state, want_realm, want_mode, q) = (pick(&f.state), pick(&f.realm), pick(&f.mode), pick(&f.q));
    let all = state.lifecycle.registry().tenants().await?;
    let mut rows = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for t in &all {
        *counts.entry(t.state.to_string()).or_default() += 1;
    }
    let matching: Vec<_> = all
        .iter()
        .filter(|t| {
            want_state.as_deref().is_none_or(|v| t.state.as_str() == v)
                && want_realm.as_deref().is_none_or(|v| t.realm.as_str() == v)
                && want_mode.as_deref().is_none_or(|v| t.mode.to_string() == v)
                && q.as_deref().is_none_or(|v| t.id.as_str().to_ascii_lowercase().contains(&v.to_ascii_lowercase()))
        })
        .collect();
    let skip = f.skip.unwrap_or(0).min(matching.len());
    for t in matching.iter().skip(skip).take(TENANTS_PAGE) {
        let keys = state.lifecycle.key_history(&t.id).await?;
        let active: Vec<_> = keys.iter().filter(|k| k.status.as_str() == "active").collect();
        let last_probe = active.iter().filter_map(|k| k.last_check_ms).max();
        let (mut errors, mut warnings) = (0, 0);
        for k in &active {
            let list: Vec<serde_json::Value> = serde_json::from_str(&k.findings).unwrap_or_default();
            for f in list {
                match f.get("severity").and_then(|v| v.as_str()) {
                    Some("error") => errors += 1,
                    Some("warning") => warnings += 1,
                    _ => {}
                }
            }
        }
        rows.push(vec![
            format!(r#"<a href="/console/t/{}/">{}</a>"#, url(t.id.as_str()), esc(t.id.as_str())),
            badge(t.state.as_str()),
            esc(t.reason.as_deref().unwrap_or_default()),
            esc(t.realm.as_str()),
            esc(&t.mode.to_string()),
            time_or(last_probe, "never"),
            format!("{errors} errors, {warnings} warnings"),
            format!(
                r#"<form method="post" action="/console/tenants/{}/link" class="inline">{}<button type="submit" class="secondary">Sign-in link for {}</button></form>"#,
                url(t.id.as_str()),
                csrf_field(&s.csrf),
                esc(t.id.as_str())
            ),
        ]);
    }
    let opt = |v: &Option<String>, o: &str| {
        format!(
            r#"<option value="{0}"{1}>{0}</option>"#,
            esc(o),
            if v.as_deref() == Some(o) { " selected" } else { "" }
        )
    };
    let realms: Vec<String> = state.lifecycle.catalog().realms().iter().map(|r| r.id.to_string()).collect();
    let mut body = top;
    let _ = write!(
        body,
        r#"<p>{}</p><form method="get" action="/console/tenants" class="filters"><div><label for="f-state">State</label><select id="f-state" name="state"><option value="">any</option>{}</select></div><div><label for="f-realm">Realm</label><select id="f-realm" name="realm"><option value="">any</option>{}</select></div><div><label for="f-mode">Mode</label><select id="f-mode" name="mode"><option value="">any</option>{}</select></div><div><label for="f-q">Tenant id contains</label><input id="f-q" name="q" type="search" value="{}"></div><button type="submit">Filter</button></form>"#,
        counts.iter().map(|(k, v)| format!("{} {v}", badge(k))).collect::<Vec<_>>().join(" "),
        ["pending", "active", "degraded", "suspended", "deleted"]
            .iter()
            .map(|o| opt(&want_state, o))
            .collect::<String>(),
        realms.iter().map(|o| opt(&want_realm, o)).collect::<String>(),
        ["cmk", "byok", "local"].iter().map(|o| opt(&want_mode, o)).collect::<String>(),
        esc(q.as_deref().unwrap_or_default()),
    );
    body.push_str(&table(
        "Tenants",
        &["Tenant", "State", "Why", "Realm", "Mode", "Last probe", "Findings", "Console"],
        &rows,
    ));
    if matching.len() > skip + TENANTS_PAGE {
        let mut params = vec![format!("skip={}", skip + TENANTS_PAGE)];
        for (k, v) in [("state", &want_state), ("realm", &want_realm), ("mode", &want_mode), ("q", &q)] {
            if let Some(v) = v {
                params.push(format!("{k}={}", url(v)));
            }
        }
        let _ = write!(
            body,
            r#"<p>Tenants {} to {} of {}. <a href="/console/tenants?{}">Next tenants</a></p>"#,
            skip + 1,
            skip + TENANTS_PAGE,
            matching.len(),
            esc(&params.join("&"))
        );
    }
    Ok(html::page("Tenants", Some(&s.nav(None, "/console/tenants")), &body))
}

/// Mints a sign-in link for a tenant's administrator and shows it once.
pub async fn tenant_link(
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    admin_only(&s.principal)?;
    let tid = tenant_id(&id)?;
    state.lifecycle.live_tenant(&tid).await?;
    let (path, expires) = super::mint_link(&state, &ConsoleUser::TenantAdmin(tid.clone())).await?;
    let top = format!(
        r#"<div class="banner ok" role="status"><p>One-time sign-in link for the administrator of {} (valid until {}; works once): <code class="secret" id="link">{}</code></p><p><button type="button" class="secondary" data-copy="link">Copy the link path</button></p></div>"#,
        esc(tid.as_str()),
        html::time(expires),
        esc(&path)
    );
    tenants_page(&state, s, &TenantFilter::default(), top).await
}

/// The platform-wide event feed.
pub async fn events(State(state): Shared, s: Session, ApiQuery(q): ApiQuery<FeedQuery>) -> Result<Response, ApiError> {
    admin_only(&s.principal)?;
    let body = feed(&state, None, &q, "/console/events").await?;
    Ok(html::page("Platform events", Some(&s.nav(None, "/console/events")), &body))
}
