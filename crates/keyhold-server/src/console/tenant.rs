//! A tenant's console pages: key health (with the banner of a suspended or degraded
//! tenant), the onboarding wizard, key change, notices, webhooks, audit and usage.
//!
//! Each page first checks that the session manages the tenant (the API's `manages`), then
//! calls the API handler or lifecycle function the API would, so the console can do
//! exactly what a tenant-admin token can and nothing more.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keyhold_audit::{Event, Record};
use keyhold_core::TenantId;
use keyhold_registry::EventFilter;
use serde::Deserialize;

use super::html::{self, Nav, badge, button_form, csrf_field, esc, table, time, time_or, url};
use super::{Post, Session};
use crate::api::extract::{ApiPath, ApiQuery, TenantKeyPath, TenantPath, TenantRegionPath};
use crate::api::{self, Shared, manages, tenant_id};
use crate::error::ApiError;
use crate::state::AppState;

/// The tenant of a console path, once the session is known to manage it.
fn managed(s: &Session, id: &str) -> Result<TenantId, ApiError> {
    let id = tenant_id(id)?;
    manages(&s.principal, &id)?;
    Ok(id)
}

fn base(id: &TenantId) -> String {
    format!("/console/t/{}", url(id.as_str()))
}

fn nav<'a>(s: &'a Session, id: &'a TenantId, current: &'a str) -> Nav<'a> {
    s.nav(Some(id.as_str()), current)
}

/// A notice at the top of a page (`ok`, `warn`, `bad`), announced to screen readers.
fn notice(class: &str, text: &str) -> String {
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

/// The AWS CLI commands that apply the policy or template in `region`.
fn cli_commands(t: &api::TenantOut, region: &str) -> String {
    let id = &t.id;
    match t.mode.as_str() {
        "byok" => format!(
            "# once, in your account: the role keyhold assumes\naws cloudformation deploy --region {region} \\\n  --stack-name keyhold-{id}-role --template-file keyhold-byok-role-{id}.json \\\n  --capabilities CAPABILITY_NAMED_IAM\n# a key in {region} that your role may use\naws kms create-key --region {region} --description \"keyhold {id}\"\naws kms enable-key-rotation --region {region} --key-id <key id>"
        ),
        "local" => format!(
            "# a key of keyhold's local provider (development and tests)\nkeyhold local-kms create-key --region {region} --description \"tenant {id}\""
        ),
        _ => format!(
            "# with CloudFormation: key, alias and key policy in one stack\naws cloudformation deploy --region {region} \\\n  --stack-name keyhold-{id} --template-file keyhold-cmk-{id}.json \\\n  --parameter-overrides AliasName=keyhold-{id}\naws cloudformation describe-stacks --region {region} --stack-name keyhold-{id} \\\n  --query \"Stacks[0].Outputs\"\n# or by hand, with the key policy\naws kms create-key --region {region} --policy file://key-policy-{id}-{region}.json \\\n  --description \"keyhold {id}\"\naws kms enable-key-rotation --region {region} --key-id <key id>"
        ),
    }
}

/// What the wizard shows after an action: a validation report, or an error.
enum Outcome {
    None,
    Retired(String),
    Report(serde_json::Value),
    Error(ApiError),
}

fn report_html(report: &serde_json::Value) -> String {
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

/// The onboarding wizard.
pub async fn setup(
    State(state): Shared,
    s: Session,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    let id = managed(&s, &id)?;
    setup_page(&state, &s, &id, Outcome::None).await
}

async fn setup_page(
    state: &std::sync::Arc<AppState>,
    s: &Session,
    id: &TenantId,
    outcome: Outcome,
) -> Result<Response, ApiError> {
    let Json(t) =
        api::get_tenant(s.principal.clone(), State(state.clone()), ApiPath(TenantPath { id: id.to_string() })).await?;
    let b = base(id);
    let mut body = String::new();
    let status = match &outcome {
        Outcome::Error(e) => {
            body.push_str(&notice("bad", &format!("{}: {}", e.code, e.message)));
            e.status
        }
        _ => StatusCode::OK,
    };
    if let Outcome::Report(r) = &outcome {
        body.push_str(&report_html(r));
    }
    if let Outcome::Retired(key) = &outcome {
        body.push_str(&notice("ok", &format!("Key {key} retired.")));
    }
    if t.state == "active" {
        body.push_str(&notice("ok", "Your tenant is active: every region's key validated."));
    }
    // Step 1: realm.
    let home = t.regions.first().cloned().unwrap_or_default();
    let _ = write!(
        body,
        r#"<ol class="steps"><li><h2>Your realm: {}</h2><p>Your data is kept in the regions of realm <strong>{}</strong>: <strong>{}</strong> is its home region{}. You need one key in <em>each</em> of these regions; keyhold uses only these keys for your data.</p></li>"#,
        esc(&t.realm),
        esc(&t.realm),
        esc(&home),
        if t.regions.len() > 1 {
            format!(", and {} hold copies", esc(&t.regions.get(1..).unwrap_or_default().join(", ")))
        } else {
            String::new()
        }
    );
    // Step 2: mode.
    let (cmk, byok, local) = (t.mode == "cmk", t.mode == "byok", t.mode == "local");
    let mark = |on: bool| if on { r#" class="chosen" aria-current="true""# } else { "" };
    let _ = write!(
        body,
        r#"<li><h2>How your keys are reached</h2><ul class="modes"><li{}><strong>CMK</strong>: a KMS key in your account whose key policy lets the platform use it for your data only.</li><li{}><strong>BYOK</strong>: a KMS key in your account used through a role you create, which keyhold assumes with your ExternalId.</li><li{}><strong>Local</strong>: keys of keyhold's own local provider (development and evaluation).</li></ul><p>Your platform set up this tenant as <strong>{}</strong>.{}</p></li>"#,
        mark(cmk),
        mark(byok),
        mark(local),
        esc(&t.mode.to_uppercase()),
        match (&t.role_arn, &t.external_id) {
            (Some(r), Some(x)) => format!(" Role: <code>{}</code>, ExternalId: <code>{}</code>.", esc(r), esc(x)),
            _ => String::new(),
        }
    );
    // Step 3: per region, the policy, template and commands, and the key field.
    body.push_str(r#"<li><h2>Create and attach a key in each region</h2>"#);
    let policy = if local {
        None
    } else {
        Some(
            api::get_key_policy(
                s.principal.clone(),
                State(state.clone()),
                ApiPath(TenantPath { id: id.to_string() }),
                ApiQuery(api::RegionQuery { region: t.regions.first().cloned() }),
            )
            .await,
        )
    };
    let active_keys: BTreeMap<String, (String, String)> = t
        .keys
        .iter()
        .filter(|k| k.status == "active")
        .map(|k| (k.region.clone(), (k.key_arn.clone(), k.state.clone())))
        .collect();
    for (i, region) in t.regions.iter().enumerate() {
        let r = esc(region);
        let _ = write!(
            body,
            r#"<section class="region" aria-labelledby="r-{r}"><h3 id="r-{r}">{r}{}</h3>"#,
            if i == 0 { " (home)" } else { "" }
        );
        match active_keys.get(region) {
            Some((k, st)) => {
                let _ = write!(body, "<p>Attached: <code>{}</code> {}</p>", esc(k), badge(st));
            }
            None => body.push_str("<p>No key attached yet.</p>"),
        }
        match &policy {
            Some(Ok(Json(doc))) => {
                let text = serde_json::to_string_pretty(doc).unwrap_or_default();
                let _ = write!(
                    body,
                    r#"<details><summary>Key policy for {r}</summary><pre id="policy-{r}" tabindex="0">{}</pre></details><p class="actions"><a href="{b}/key-policy/{}" download>Download the key policy</a> <button type="button" class="secondary" data-copy="policy-{r}">Copy the key policy</button> <a href="{b}/cloudformation/{}" download>Download the CloudFormation template</a></p>"#,
                    esc(&text),
                    url(region),
                    if byok { "byok-role" } else { "cmk" }
                );
            }
            Some(Err(e)) => {
                let _ = write!(body, "<p>The key policy is not available: {}</p>", esc(&e.message));
            }
            None => {}
        }
        let _ = write!(
            body,
            r#"<p>Commands:</p><pre id="cli-{r}" tabindex="0">{}</pre><p class="actions"><button type="button" class="secondary" data-copy="cli-{r}">Copy the commands</button></p>"#,
            esc(&cli_commands(&t, region))
        );
        let (label, hint) = if local {
            ("Local key id", "A local key id, like lk-0123… (keyhold local-kms create-key prints it).")
        } else {
            ("Key ARN", "The key's ARN: arn:aws:kms:REGION:ACCOUNT:key/KEY-ID (not an alias).")
        };
        let _ = write!(
            body,
            r#"<form method="post" action="{b}/keys/{}" class="arn">{}<input type="hidden" name="return" value="setup"><label for="arn-{r}">{label} for {r}</label><input id="arn-{r}" name="key_arn" type="text" autocomplete="off" spellcheck="false" required data-region="{r}" data-mode="{}" aria-describedby="hint-{r} msg-{r}"><p id="hint-{r}" class="hint">{}</p><p id="msg-{r}" class="msg" aria-live="polite"></p><button type="submit">Check with KMS and attach</button></form></section>"#,
            url(region),
            csrf_field(&s.csrf),
            esc(&t.mode),
            esc(hint)
        );
    }
    body.push_str("</li>");
    // Step 4: activation.
    let missing: Vec<&String> = t.regions.iter().filter(|r| !active_keys.contains_key(*r)).collect();
    body.push_str(r#"<li><h2>Activate</h2>"#);
    if missing.is_empty() {
        let _ = write!(
            body,
            "<p>Every region has a key. Validation checks each one live (state, policy, a round trip) and activates your tenant when all pass.</p>{}",
            button_form(&format!("{b}/validate"), &s.csrf, "Validate and activate", "primary")
        );
    } else {
        let _ = write!(
            body,
            "<p>Attach a key in {} first; then validate and activate here.</p>",
            esc(&missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
        );
    }
    body.push_str("</li></ol>");
    let current = format!("{b}/setup");
    let mut resp = html::page(&format!("Set up keys for {id}"), Some(&nav(s, id, &current)), &body);
    *resp.status_mut() = status;
    Ok(resp)
}

/// Downloads the key policy for one region.
pub async fn key_policy_file(
    State(state): Shared,
    s: Session,
    ApiPath(TenantRegionPath { id, region }): ApiPath<TenantRegionPath>,
) -> Result<Response, ApiError> {
    let tid = managed(&s, &id)?;
    let Json(doc) = api::get_key_policy(
        s.principal.clone(),
        State(state),
        ApiPath(TenantPath { id: id.clone() }),
        ApiQuery(api::RegionQuery { region: Some(region.clone()) }),
    )
    .await?;
    Ok(download(&format!("key-policy-{tid}-{region}.json"), serde_json::to_string_pretty(&doc).unwrap_or_default()))
}

/// `{kind}` of the template download.
#[derive(Debug, Deserialize)]
pub struct KindPath {
    id: String,
    kind: String,
}

/// Downloads a CloudFormation template.
pub async fn template_file(
    State(state): Shared,
    s: Session,
    ApiPath(KindPath { id, kind }): ApiPath<KindPath>,
) -> Result<Response, ApiError> {
    let tid = managed(&s, &id)?;
    let which = match kind.as_str() {
        "cmk" => api::TemplateKind::Cmk,
        "byok-role" => api::TemplateKind::ByokRole,
        _ => return Err(ApiError::invalid("the template is cmk or byok-role")),
    };
    let Json(doc) = api::get_cloudformation(
        s.principal.clone(),
        State(state),
        ApiPath(TenantPath { id }),
        ApiQuery(api::KindQuery { kind: which }),
    )
    .await?;
    Ok(download(&format!("keyhold-{kind}-{tid}.json"), serde_json::to_string_pretty(&doc).unwrap_or_default()))
}

fn download(name: &str, body: String) -> Response {
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

/// Attaches a key (validated live first), from the wizard or the key-change page.
pub async fn attach(
    State(state): Shared,
    ApiPath(TenantRegionPath { id, region }): ApiPath<TenantRegionPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let tid = managed(s, &id)?;
    let key_arn = post.field("key_arn").unwrap_or_default().to_owned();
    let result = api::attach_key(
        s.principal.clone(),
        State(state.clone()),
        ApiPath(TenantRegionPath { id, region }),
        crate::api::ApiJson(api::AttachKey { key_arn }),
    )
    .await;
    let outcome = match result {
        Ok(Json(report)) => Outcome::Report(report),
        Err(e) if e.status.is_client_error() => Outcome::Error(e),
        Err(e) => return Err(e),
    };
    if post.field("return") == Some("keys") {
        keys_page(&state, s, &tid, outcome).await
    } else {
        setup_page(&state, s, &tid, outcome).await
    }
}

/// Validates the tenant's keys (and activates it when every region validates).
pub async fn validate(
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let tid = managed(s, &id)?;
    let outcome =
        match api::validate_tenant(s.principal.clone(), State(state.clone()), ApiPath(TenantPath { id })).await {
            Ok(Json(report)) => Outcome::Report(report),
            Err(e) if e.status.is_client_error() => Outcome::Error(e),
            Err(e) => return Err(e),
        };
    setup_page(&state, s, &tid, outcome).await
}

/// Key change: progress of re-encryption, attaching a new key, retiring an old one.
pub async fn keys(
    State(state): Shared,
    s: Session,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    let id = managed(&s, &id)?;
    keys_page(&state, &s, &id, Outcome::None).await
}

async fn keys_page(
    state: &std::sync::Arc<AppState>,
    s: &Session,
    id: &TenantId,
    outcome: Outcome,
) -> Result<Response, ApiError> {
    let Json(change) =
        api::key_change(s.principal.clone(), State(state.clone()), ApiPath(TenantPath { id: id.to_string() })).await?;
    let Json(t) =
        api::get_tenant(s.principal.clone(), State(state.clone()), ApiPath(TenantPath { id: id.to_string() })).await?;
    let b = base(id);
    let mut body = String::new();
    let status = match &outcome {
        Outcome::Error(e) => {
            body.push_str(&notice("bad", &format!("{}: {}", e.code, e.message)));
            e.status
        }
        Outcome::Report(r) => {
            body.push_str(&report_html(r));
            StatusCode::OK
        }
        Outcome::Retired(key) => {
            body.push_str(&notice("ok", &format!("Key {key} retired: keyhold never uses it again.")));
            StatusCode::OK
        }
        Outcome::None => StatusCode::OK,
    };
    let _ = write!(
        body,
        r#"<section aria-labelledby="progress"><h2 id="progress">Re-encryption progress</h2><p>{} — {} of {} messages under replaced keys re-encrypted; {} remain{}.</p><progress max="100" value="{:.0}" aria-label="Re-encryption progress">{:.0}%</progress></section>"#,
        badge(&change.state),
        change.reencrypted,
        change.messages,
        change.remaining,
        if change.unsettled_data_keys > 0 {
            format!(", {} data keys not yet settled", change.unsettled_data_keys)
        } else {
            String::new()
        },
        change.percent,
        change.percent
    );
    let rows: Vec<Vec<String>> = change
        .keys
        .iter()
        .map(|k| {
            let retire = if k.key.status == "decrypt_only" {
                button_form(
                    &format!("{b}/keys/{}/{}/retire", url(&k.key.region), url(&k.key.key_arn)),
                    &s.csrf,
                    &format!("Retire {}", k.key.key_arn),
                    "danger",
                )
            } else {
                String::new()
            };
            vec![
                esc(&k.key.region),
                format!("<code>{}</code>", esc(&k.key.key_arn)),
                badge(&k.key.status),
                k.messages.to_string(),
                k.reencrypted.to_string(),
                k.remaining.to_string(),
                retire,
            ]
        })
        .collect();
    body.push_str(&table(
        "Keys and the messages they protect",
        &["Region", "Key", "Status", "Messages", "Re-encrypted", "Remaining", "Action"],
        &rows,
    ));
    body.push_str(r#"<section aria-labelledby="attach"><h2 id="attach">Attach a new key</h2><p>The new key becomes the region's active key; the old one stays decrypt-only until what it protects is re-encrypted, then you can retire it.</p>"#);
    for region in &t.regions {
        let r = esc(region);
        let _ = write!(
            body,
            r#"<form method="post" action="{b}/keys/{}" class="arn">{}<input type="hidden" name="return" value="keys"><label for="new-{r}">New key for {r}</label><input id="new-{r}" name="key_arn" type="text" autocomplete="off" spellcheck="false" required data-region="{r}" data-mode="{}" aria-describedby="newmsg-{r}"><p id="newmsg-{r}" class="msg" aria-live="polite"></p><button type="submit">Check with KMS and attach</button></form>"#,
            url(region),
            csrf_field(&s.csrf),
            esc(&t.mode)
        );
    }
    body.push_str("</section>");
    let current = format!("{b}/keys");
    let mut resp = html::page(&format!("Key change for {id}"), Some(&nav(s, id, &current)), &body);
    *resp.status_mut() = status;
    Ok(resp)
}

/// Retires a decrypt-only key (refused while messages remain, with the count).
pub async fn retire(
    State(state): Shared,
    ApiPath(TenantKeyPath { id, region, key }): ApiPath<TenantKeyPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let tid = managed(s, &id)?;
    let outcome = match api::retire_key(
        s.principal.clone(),
        State(state.clone()),
        ApiPath(TenantKeyPath { id, region, key }),
        ApiQuery(api::ForceQuery { force: None }),
    )
    .await
    {
        Ok(Json(out)) => Outcome::Retired(out.key_arn),
        Err(e) if e.status.is_client_error() => Outcome::Error(e),
        Err(e) => return Err(e),
    };
    keys_page(&state, s, &tid, outcome).await
}

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

/// Records scanned per audit page at most (so a narrow filter over a long trail stays
/// bounded; the page then offers to continue).
const AUDIT_SCAN: u32 = 20_000;
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
    let mut after = f.after.unwrap_or(0).min(i64::MAX as u64);
    let mut scanned = 0u32;
    let mut shown: Vec<Record> = Vec::new();
    let mut more = false;
    'scan: while scanned < AUDIT_SCAN {
        let Json(page) = api::audit(
            s.principal.clone(),
            State(state.clone()),
            ApiPath(TenantPath { id: id.clone() }),
            ApiQuery(api::AuditQuery { after: Some(after), limit: Some(1000) }),
        )
        .await?;
        let n = page.events.len();
        for r in page.events {
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
                esc(&summary(&r.event)),
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
    state.lifecycle.live_tenant(&tid).await?;
    state.lifecycle.flush(false).await;
    let mut out = Vec::new();
    state.lifecycle.journal().auditor().export(&tid, &mut out).await.map_err(|e| match e {
        keyhold_audit::AuditError::Registry(r) => r.into(),
        keyhold_audit::AuditError::NoTrail(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "this tenant has no audit trail yet")
        }
        _ => ApiError::internal(),
    })?;
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
    let mut after = 0u64;
    loop {
        let Json(page) = api::audit(
            s.principal.clone(),
            State(state.clone()),
            ApiPath(TenantPath { id: id.clone() }),
            ApiQuery(api::AuditQuery { after: Some(after), limit: Some(1000) }),
        )
        .await?;
        let n = page.events.len();
        for r in page.events {
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
