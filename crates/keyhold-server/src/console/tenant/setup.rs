//! The onboarding wizard: the realm and its regions, the ways keys are reached, per
//! region the key policy, CloudFormation template and commands and a key field (checked
//! as you type by the script, then live when attached), the validation report, activation;
//! and the attach, validate and role forms it posts (attach also serves the key-change page).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyhold_core::TenantId;
use serde::Deserialize;

use super::{Outcome, base, download, managed, nav, notice, page_outcome, report_html};
use crate::api::extract::{ApiPath, ApiQuery, TenantPath, TenantRegionPath};
use crate::api::{self, Shared};
use crate::console::html::{self, badge, button_form, csrf_field, esc, url};
use crate::console::{Post, Session};
use crate::error::ApiError;
use crate::state::AppState;

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
    if let Outcome::Notice(text) = &outcome {
        body.push_str(&notice("ok", text));
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
        r#"<li><h2>How your keys are reached</h2><ul class="modes"><li{}><strong>CMK</strong>: a KMS key in your account whose key policy lets the platform use it for your data only.</li><li{}><strong>BYOK</strong>: a KMS key in your account used through a role you create, which keyhold assumes with your ExternalId.</li><li{}><strong>Local</strong>: keys of keyhold's own local provider (development and evaluation).</li></ul><p>This tenant's keys are reached as <strong>{}</strong>.{}</p></li>"#,
        mark(cmk),
        mark(byok),
        mark(local),
        esc(&t.mode.to_uppercase()),
        match (&t.role_arn, &t.external_id) {
            (Some(r), Some(x)) => format!(" Role: <code>{}</code>, ExternalId: <code>{}</code>.", esc(r), esc(x)),
            _ => String::new(),
        }
    );
    if t.state == "pending" && t.keys.is_empty() {
        body.push_str(&choice_form(state, s, &t, &b));
    }
    if byok {
        let _ = write!(
            body,
            r#"<li><h2>The role keyhold assumes</h2><p>Deploy the role template once in your account (below), then give its ARN here: keyhold validates your keys through it before it replaces the current role.</p><form method="post" action="{b}/role">{}<label for="role-arn">Role ARN</label><input id="role-arn" name="role_arn" type="text" autocomplete="off" spellcheck="false" required value="{}" placeholder="arn:aws:iam::123456789012:role/keyhold-access"><button type="submit">Check and use this role</button></form></li>"#,
            csrf_field(&s.csrf),
            esc(t.role_arn.as_deref().unwrap_or_default())
        );
    }
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

/// The form that chooses a pending tenant's realm and mode, while it has no key.
fn choice_form(state: &AppState, s: &Session, t: &api::TenantOut, b: &str) -> String {
    let mut out = format!(
        r#"<li><h2>Choose your realm and how keyhold reaches your keys</h2><p>You can change these until the first key is attached.</p><form method="post" action="{b}/configure">{}<fieldset><legend>Realm</legend>"#,
        csrf_field(&s.csrf)
    );
    for realm in state.lifecycle.catalog().realms() {
        let id = realm.id.to_string();
        let regions: Vec<String> = realm.regions.iter().map(ToString::to_string).collect();
        let checked = if id == t.realm { " checked" } else { "" };
        let _ = write!(
            out,
            r#"<div class="choice"><input type="radio" id="realm-{0}" name="realm" value="{0}"{checked}><label for="realm-{0}">{0}: {1}</label></div>"#,
            esc(&id),
            esc(&regions.join(", "))
        );
    }
    out.push_str("</fieldset><fieldset><legend>Key mode</legend>");
    let mut modes = vec![
        ("cmk", "CMK: a key in your account, with a key policy for the platform"),
        ("byok", "BYOK: a key in your account, through a role keyhold assumes"),
    ];
    if matches!(s.principal, crate::auth::Principal::Admin) || t.mode == "local" {
        modes.push(("local", "Local: keys of keyhold's local provider"));
    }
    for (m, label) in modes {
        let checked = if m == t.mode { " checked" } else { "" };
        let _ = write!(
            out,
            r#"<div class="choice"><input type="radio" id="mode-{m}" name="mode" value="{m}"{checked}><label for="mode-{m}">{}</label></div>"#,
            esc(label)
        );
    }
    let _ = write!(
        out,
        r#"</fieldset><label for="choice-role">Role ARN (BYOK only)</label><input id="choice-role" name="role_arn" type="text" autocomplete="off" spellcheck="false" value="{}" placeholder="arn:aws:iam::123456789012:role/keyhold-access"><button type="submit">Save realm and mode</button></form></li>"#,
        esc(t.role_arn.as_deref().unwrap_or_default())
    );
    out
}

/// Chooses a pending tenant's realm and mode.
pub async fn configure(
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let tid = managed(s, &id)?;
    let body = api::ConfigureTenant {
        realm: post.field("realm").unwrap_or_default().to_owned(),
        mode: post.field("mode").unwrap_or_default().to_owned(),
        role_arn: post.field("role_arn").map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned),
    };
    let outcome = page_outcome(
        api::configure_tenant(
            s.principal.clone(),
            State(state.clone()),
            ApiPath(TenantPath { id }),
            crate::api::ApiJson(body),
        )
        .await,
        |Json(t)| {
            Outcome::Notice(format!(
                "Saved: realm {}, mode {}. Now create and attach a key in each region.",
                t.realm, t.mode
            ))
        },
    )?;
    setup_page(&state, s, &tid, outcome).await
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
    let outcome = page_outcome(result, |Json(report)| Outcome::Report(report))?;
    if post.field("return") == Some("keys") {
        super::keys::keys_page(&state, s, &tid, outcome).await
    } else {
        setup_page(&state, s, &tid, outcome).await
    }
}

/// A BYOK tenant's new role (used only once every active key validates through it).
pub async fn set_role(
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let tid = managed(s, &id)?;
    let role_arn = post.field("role_arn").unwrap_or_default().to_owned();
    let outcome = page_outcome(
        api::set_role(
            s.principal.clone(),
            State(state.clone()),
            ApiPath(TenantPath { id }),
            crate::api::ApiJson(api::SetRole { role_arn }),
        )
        .await,
        |Json(report)| Outcome::Report(report),
    )?;
    setup_page(&state, s, &tid, outcome).await
}

/// Validates the tenant's keys (and activates it when every region validates).
pub async fn validate(
    State(state): Shared,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
    post: Post,
) -> Result<Response, ApiError> {
    let s = &post.session;
    let tid = managed(s, &id)?;
    let report = api::validate_tenant(s.principal.clone(), State(state.clone()), ApiPath(TenantPath { id })).await;
    let outcome = page_outcome(report, |Json(report)| Outcome::Report(report))?;
    setup_page(&state, s, &tid, outcome).await
}
