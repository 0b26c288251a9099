//! Audit and usage: the trail paged and filtered with its verification badge, the signed
//! export, and usage charts per purpose and day from the trail's usage records and
//! key-service calls.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use keyhold_audit::{Event, Record};
use keyhold_core::TenantId;
use serde::Deserialize;

use super::{base, download, managed, nav};
use crate::api::extract::{ApiPath, ApiQuery, TenantPath};
use crate::api::{self, Shared};
use crate::console::Session;
use crate::console::html::{self, badge, esc, table, time, url};
use crate::error::ApiError;
use crate::state::AppState;

/// `?type=&operation=&purpose=&outcome=&from=&to=&after=` of the audit page.
#[derive(Debug, Default, Deserialize)]
pub struct AuditFilter {
    /// The event type (`provider_call`, `tenant_state`, ...).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A provider operation or admin action.
    operation: Option<String>,
    /// The purpose.
    purpose: Option<String>,
    /// `ok` or `error`.
    outcome: Option<String>,
    /// From this day (YYYY-MM-DD, UTC).
    from: Option<String>,
    /// To this day, included.
    to: Option<String>,
    /// After this sequence number.
    after: Option<u64>,
}

const AUDIT_KINDS: [&str; 8] =
    ["provider_call", "tenant_state", "key_state", "key_status", "key_probe", "probe_summary", "admin_action", "usage"];

/// A day `YYYY-MM-DD` as ms since the Unix epoch at its start.
fn day_ms(s: &str) -> Result<u64, ApiError> {
    let at = humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).map_err(|_| {
        ApiError::invalid(format!("dates are YYYY-MM-DD, not {:?}", s.chars().take(32).collect::<String>()))
    })?;
    Ok(u64::try_from(at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(0))
}

fn purpose_of(e: &Event) -> Option<&str> {
    match e {
        Event::ProviderCall { context: Some(c), .. } => c.get(keyhold_core::RESERVED_PURPOSE_KEY).map(String::as_str),
        Event::Usage { purpose, .. } => Some(purpose),
        _ => None,
    }
}

fn outcome_of(e: &Event) -> Option<&str> {
    match e {
        Event::ProviderCall { outcome, .. } | Event::KeyProbe { outcome, .. } => Some(outcome),
        _ => None,
    }
}

fn operation_of(e: &Event) -> Option<&str> {
    match e {
        Event::ProviderCall { operation, .. } => Some(operation),
        Event::AdminAction { action, .. } => Some(action),
        _ => None,
    }
}

/// `s` cut to at most `max` characters, marked when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", s.get(..at).unwrap_or(s)),
        None => s.to_owned(),
    }
}

fn summary(e: &Event) -> String {
    match e {
        Event::ProviderCall { operation, key, region, outcome, count, .. } => format!(
            "{operation} on {key}{} → {outcome}{}",
            region.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
            if *count > 1 { format!(" ×{count}") } else { String::new() }
        ),
        Event::TenantState { from, to, reason, .. } => {
            format!("{from} → {to}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())
        }
        Event::KeyState { region, key, state, findings } => {
            format!("{key} in {region}: {state} {}", findings.join(", "))
        }
        Event::KeyStatus { region, key, from, to } => format!("{key} in {region}: {from} → {to}"),
        Event::KeyProbe { key, outcome, .. } => format!("probe of {key}: {outcome}"),
        Event::ProbeSummary { probes, failures, .. } => format!("{probes} probes, {failures} failed"),
        Event::AdminAction { actor, action, detail } => {
            format!("{actor}: {action}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())
        }
        Event::Usage { purpose, service, encrypts, decrypts, .. } => {
            format!("{service} for {purpose}: {encrypts} encrypts, {decrypts} decrypts")
        }
    }
}

/// A tenant's trail as a page reads it: opened through the API's handler (authorisation, a
/// live tenant, the journal flushed), then read page by page from the auditor.
struct Trail<'a> {
    state: &'a AppState,
    id: TenantId,
    /// This page's place among the trail readers.
    _reading: crate::console::TrailReading,
}

impl<'a> Trail<'a> {
    async fn open(state: &'a std::sync::Arc<AppState>, s: &Session, id: &TenantId) -> Result<Self, ApiError> {
        let Json(_) = api::audit(
            s.principal.clone(),
            State(state.clone()),
            ApiPath(TenantPath { id: id.to_string() }),
            ApiQuery(api::AuditQuery { after: Some(0), limit: Some(1) }),
        )
        .await?;
        let reading =
            state.console.trail_readers.enter(id, std::time::Duration::from_secs(5)).await.ok_or_else(|| {
                ApiError::overloaded("the console is reading other audit trails; retry after the Retry-After delay")
            })?;
        Ok(Trail { state, id: id.clone(), _reading: reading })
    }

    async fn page(&self, after: u64, limit: u32) -> Result<Vec<Record>, ApiError> {
        self.state.lifecycle.journal().auditor().read(&self.id, after, limit).await.map_err(api::audit_error)
    }

    /// A sequence number after which the trail's events are from `ms` on (a minute's
    /// slack for instances' clocks): a binary search, as times grow with sequence numbers,
    /// so a page of a long trail starts without reading what comes before.
    async fn seq_before(&self, ms: u64) -> Result<u64, ApiError> {
        let ms = ms.saturating_sub(60_000);
        let head = self.state.lifecycle.registry().audit_head(&self.id).await?.map_or(0, |h| h.seq);
        let (mut lo, mut hi) = (0u64, head);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match self.page(mid - 1, 1).await?.first() {
                Some(r) if r.at_ms < ms => lo = mid,
                _ => hi = mid - 1,
            }
        }
        Ok(lo)
    }
}

/// Records scanned per audit page at most (so a narrow filter over a long trail stays
/// bounded; the page then offers to continue).
const AUDIT_SCAN: u32 = 5_000;
/// Matching records shown per page.
const AUDIT_SHOW: usize = 100;

/// The audit trail, filtered and paged, with the chain's verification as a badge and the
/// export.
pub async fn audit(
    State(state): Shared,
    s: Session,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiQuery(f): ApiQuery<AuditFilter>,
) -> Result<Response, ApiError> {
    let tid = managed(&s, &id)?;
    let nonempty = |o: &Option<String>| o.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let (kind, operation, purpose, outcome) =
        (nonempty(&f.kind), nonempty(&f.operation), nonempty(&f.purpose), nonempty(&f.outcome));
    if let Some(k) = &kind
        && !AUDIT_KINDS.contains(&k.as_str())
    {
        return Err(ApiError::invalid(format!("the event type is one of {}", AUDIT_KINDS.join(", "))));
    }
    if outcome.as_deref().is_some_and(|o| o != "ok" && o != "error") {
        return Err(ApiError::invalid("the outcome is ok or error"));
    }
    let from = nonempty(&f.from).map(|d| day_ms(&d)).transpose()?;
    let to = nonempty(&f.to).map(|d| day_ms(&d).map(|m| m + 86_400_000)).transpose()?;
    let Json(verdict) =
        api::audit_verify(s.principal.clone(), State(state.clone()), ApiPath(TenantPath { id: id.clone() })).await?;
    let b = base(&tid);
    let mut body = if verdict.ok {
        format!(
            r#"<p class="verdict" id="audit-badge">{} The hash chain of {} events verifies, and its head carries keyhold's audit signature.</p>"#,
            badge("intact"),
            verdict.events
        )
    } else {
        format!(
            r#"<div class="banner bad" role="alert" id="audit-badge"><p>{} {}</p></div>"#,
            badge("broken"),
            esc(verdict.message.as_deref().unwrap_or("the chain does not verify"))
        )
    };
    let key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(state.lifecycle.journal().auditor().public_key())
    };
    let _ = write!(
        body,
        r#"<section aria-labelledby="export"><h2 id="export">Export</h2><p><a href="{b}/audit/export" download>Download the signed export</a> and verify it offline, trusting no database:</p><pre id="verify-cmd" tabindex="0">keyhold audit verify --file keyhold-audit-{}.jsonl --public-key {}</pre><p class="actions"><button type="button" class="secondary" data-copy="verify-cmd">Copy the command</button></p></section>"#,
        esc(tid.as_str()),
        esc(&key)
    );
    // Filters.
    let sel = |v: &Option<String>, o: &str| if v.as_deref() == Some(o) { " selected" } else { "" };
    let _ = write!(
        body,
        r#"<form method="get" action="{b}/audit" class="filters"><div><label for="f-type">Event type</label><select id="f-type" name="type"><option value="">any</option>{}</select></div><div><label for="f-op">Operation</label><input id="f-op" name="operation" type="text" value="{}" placeholder="Decrypt"></div><div><label for="f-purpose">Purpose</label><input id="f-purpose" name="purpose" type="text" value="{}"></div><div><label for="f-outcome">Outcome</label><select id="f-outcome" name="outcome"><option value="">any</option><option value="ok"{}>ok</option><option value="error"{}>error</option></select></div><div><label for="f-from">From (UTC day)</label><input id="f-from" name="from" type="date" value="{}"></div><div><label for="f-to">To (UTC day)</label><input id="f-to" name="to" type="date" value="{}"></div><button type="submit">Filter</button></form>"#,
        AUDIT_KINDS.iter().map(|k| format!(r#"<option value="{k}"{}>{k}</option>"#, sel(&kind, k))).collect::<String>(),
        esc(operation.as_deref().unwrap_or_default()),
        esc(purpose.as_deref().unwrap_or_default()),
        sel(&outcome, "ok"),
        sel(&outcome, "error"),
        esc(f.from.as_deref().unwrap_or_default()),
        esc(f.to.as_deref().unwrap_or_default()),
    );
    // The records.
    let trail = Trail::open(&state, &s, &tid).await?;
    let mut after = match (f.after, from) {
        (Some(a), _) => a.min(i64::MAX as u64),
        (None, Some(m)) => trail.seq_before(m).await?,
        (None, None) => 0,
    };
    let mut scanned = 0u32;
    let mut shown: Vec<Record> = Vec::new();
    let mut more = false;
    'scan: while scanned < AUDIT_SCAN {
        let page = trail.page(after, 1000).await?;
        let n = page.len();
        for r in page {
            scanned += 1;
            after = r.seq;
            let e = &r.event;
            let keep = kind.as_deref().is_none_or(|k| e.kind() == k)
                && operation.as_deref().is_none_or(|o| operation_of(e).is_some_and(|x| x.eq_ignore_ascii_case(o)))
                && purpose.as_deref().is_none_or(|p| purpose_of(e) == Some(p))
                && outcome.as_deref().is_none_or(|o| outcome_of(e).is_some_and(|x| (x == "ok") == (o == "ok")))
                && from.is_none_or(|m| r.at_ms >= m)
                && to.is_none_or(|m| r.at_ms < m);
            if keep {
                shown.push(r);
                if shown.len() == AUDIT_SHOW {
                    more = true;
                    break 'scan;
                }
            }
        }
        if n < 1000 {
            break;
        }
        more = true;
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                time(r.at_ms),
                format!("<code>{}</code>", r.event.kind()),
                esc(purpose_of(&r.event).unwrap_or_default()),
                outcome_of(&r.event).map(|o| badge(if o == "ok" { "ok" } else { o })).unwrap_or_default(),
                esc(&clip(&summary(&r.event), 300)),
            ]
        })
        .collect();
    body.push_str(&table("Audit events", &["#", "When", "Type", "Purpose", "Outcome", "What"], &rows));
    if more {
        let mut q = vec![format!("after={after}")];
        for (k, v) in [
            ("type", &kind),
            ("operation", &operation),
            ("purpose", &purpose),
            ("outcome", &outcome),
            ("from", &f.from),
            ("to", &f.to),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.push(format!("{k}={}", url(v)));
            }
        }
        let _ = write!(body, r#"<p><a href="{b}/audit?{}">Next events</a></p>"#, esc(&q.join("&")));
    }
    let current = format!("{b}/audit");
    Ok(html::page(&format!("Audit trail of {tid}"), Some(&nav(&s, &tid, &current)), &body))
}

/// The signed export (what `keyhold audit export` writes).
pub async fn audit_export(
    State(state): Shared,
    s: Session,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    let tid = managed(&s, &id)?;
    // Opened as the audit page opens it: the tenant live, the journal flushed, one of
    // the instance's trail readers held while the export is read.
    let _trail = Trail::open(&state, &s, &tid).await?;
    let mut out = Vec::new();
    state.lifecycle.journal().auditor().export(&tid, &mut out).await.map_err(api::audit_error)?;
    let mut resp = download(&format!("keyhold-audit-{tid}.jsonl"), String::from_utf8_lossy(&out).into_owned());
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(resp)
}

/// `?days=` of the usage page.
#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    /// How many days back (1 to 90, default 14).
    days: Option<u32>,
}

/// One day's counts for one purpose.
#[derive(Debug, Default, Clone, Copy)]
struct Day {
    encrypts: u64,
    decrypts: u64,
    kms: u64,
}

/// Usage per purpose and day, from the audit trail's usage records and key-service calls.
pub async fn usage(
    State(state): Shared,
    s: Session,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Response, ApiError> {
    let tid = managed(&s, &id)?;
    let days = q.days.unwrap_or(14);
    if !(1..=90).contains(&days) {
        return Err(ApiError::invalid("days is 1 to 90"));
    }
    const DAY: u64 = 86_400_000;
    let today = state.now_ms() / DAY;
    let first = today + 1 - u64::from(days);
    let mut per: BTreeMap<String, BTreeMap<u64, Day>> = BTreeMap::new();
    let trail = Trail::open(&state, &s, &tid).await?;
    let mut after = trail.seq_before(first * DAY).await?;
    loop {
        let page = trail.page(after, 1000).await?;
        let n = page.len();
        for r in page {
            after = r.seq;
            let (purpose, day, add) = match &r.event {
                Event::Usage { minute_ms, purpose, encrypts, decrypts, .. } => {
                    (purpose.as_str(), minute_ms / DAY, Day { encrypts: *encrypts, decrypts: *decrypts, kms: 0 })
                }
                Event::ProviderCall { context: Some(c), count, .. } => {
                    match c.get(keyhold_core::RESERVED_PURPOSE_KEY) {
                        Some(p) if p != keyhold_lifecycle::monitor::PROBE_PURPOSE => {
                            (p.as_str(), r.at_ms / DAY, Day { kms: *count, ..Day::default() })
                        }
                        _ => continue,
                    }
                }
                _ => continue,
            };
            if day < first {
                continue;
            }
            let d = per.entry(purpose.to_owned()).or_default().entry(day).or_default();
            d.encrypts += add.encrypts;
            d.decrypts += add.decrypts;
            d.kms += add.kms;
        }
        if n < 1000 {
            break;
        }
    }
    let b = base(&tid);
    let mut body = format!(
        r#"<form method="get" action="{b}/usage" class="filters"><label for="days">Days</label><input id="days" name="days" type="number" min="1" max="90" value="{days}"><button type="submit">Show</button></form><p>Per purpose and UTC day: messages encrypted and decrypted, and how many of those needed a call to your key (KMS calls) or were served from keyhold's cache of data keys (cache hits). Health probes are not counted.</p>"#
    );
    if per.is_empty() {
        body.push_str("<p>No usage recorded in this period.</p>");
    }
    for (purpose, by_day) in &per {
        let series: Vec<(String, Day)> = (first..=today)
            .map(|d| {
                (time(d * DAY).get(..10).unwrap_or_default().to_owned(), by_day.get(&d).copied().unwrap_or_default())
            })
            .collect();
        let _ = write!(
            body,
            r#"<section aria-labelledby="u-{0}"><h2 id="u-{0}">Purpose {1}</h2><div class="charts">"#,
            url(purpose),
            esc(purpose)
        );
        body.push_str(&chart(
            &format!("Encrypts and decrypts per day for {purpose}"),
            &series.iter().map(|(d, v)| (d.clone(), [v.encrypts, v.decrypts])).collect::<Vec<_>>(),
            ["encrypts", "decrypts"],
        ));
        body.push_str(&chart(
            &format!("KMS calls and cache hits per day for {purpose}"),
            &series
                .iter()
                .map(|(d, v)| (d.clone(), [v.kms, (v.encrypts + v.decrypts).saturating_sub(v.kms)]))
                .collect::<Vec<_>>(),
            ["KMS calls", "cache hits"],
        ));
        body.push_str("</div>");
        let rows: Vec<Vec<String>> = series
            .iter()
            .filter(|(_, v)| v.encrypts + v.decrypts + v.kms > 0)
            .map(|(d, v)| {
                vec![
                    d.clone(),
                    v.encrypts.to_string(),
                    v.decrypts.to_string(),
                    v.kms.to_string(),
                    (v.encrypts + v.decrypts).saturating_sub(v.kms).to_string(),
                ]
            })
            .collect();
        body.push_str(&table(
            &format!("Usage of {purpose}"),
            &["Day", "Encrypts", "Decrypts", "KMS calls", "Cache hits"],
            &rows,
        ));
        body.push_str("</section>");
    }
    let current = format!("{b}/usage");
    Ok(html::page(&format!("Usage of {tid}"), Some(&nav(&s, &tid, &current)), &body))
}

/// A grouped bar chart of two series per day, as SVG (its numbers are also in the table
/// that follows it).
fn chart(title: &str, points: &[(String, [u64; 2])], names: [&str; 2]) -> String {
    let max = points.iter().flat_map(|(_, v)| v.iter().copied()).max().unwrap_or(0).max(1);
    let (w, h, pad) = (640u64, 200u64, 24u64);
    let slot = (w - pad) / (points.len() as u64).max(1);
    let bar = (slot / 3).max(1);
    let idp: String = title.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let mut svg = format!(
        r#"<figure><svg viewBox="0 0 {w} {}" role="img" aria-labelledby="{idp}-t"><title id="{idp}-t">{}</title>"#,
        h + 40,
        esc(title)
    );
    for (i, (day, v)) in points.iter().enumerate() {
        let x = pad + i as u64 * slot;
        for (j, (value, name)) in v.iter().zip(names).enumerate() {
            let bh = value * h / max;
            let _ = write!(
                svg,
                r#"<rect class="s{j}" x="{}" y="{}" width="{bar}" height="{bh}"><title>{day}: {value} {}</title></rect>"#,
                x + j as u64 * bar,
                h - bh,
                esc(name)
            );
        }
        if points.len() <= 16 || i % 7 == 0 {
            let _ =
                write!(svg, r#"<text x="{x}" y="{}" class="axis">{}</text>"#, h + 16, esc(day.get(5..).unwrap_or(day)));
        }
    }
    let _ = write!(
        svg,
        r#"<text x="0" y="12" class="axis">{max}</text></svg><figcaption>{} — <span class="key s0">{}</span> <span class="key s1">{}</span></figcaption></figure>"#,
        esc(title),
        esc(names[0]),
        esc(names[1])
    );
    svg
}
