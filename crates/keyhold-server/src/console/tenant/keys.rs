//! Key change: re-encryption progress from the ledger, a new key per region, retiring a
//! replaced key (refused while messages remain, with their count).

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyhold_core::TenantId;

use super::{Outcome, base, managed, nav, notice, page_outcome, report_html};
use crate::api::extract::{ApiPath, ApiQuery, TenantKeyPath, TenantPath};
use crate::api::{self, Shared};
use crate::console::html::{self, badge, button_form, csrf_field, esc, table, url};
use crate::console::{Post, Session};
use crate::error::ApiError;
use crate::state::AppState;

/// Key change: progress of re-encryption, attaching a new key, retiring an old one.
pub async fn keys(
    State(state): Shared,
    s: Session,
    ApiPath(TenantPath { id }): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    let id = managed(&s, &id)?;
    keys_page(&state, &s, &id, Outcome::None).await
}

pub(super) async fn keys_page(
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
        Outcome::Notice(text) => {
            body.push_str(&notice("ok", text));
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
    let outcome = page_outcome(
        api::retire_key(
            s.principal.clone(),
            State(state.clone()),
            ApiPath(TenantKeyPath { id, region, key }),
            ApiQuery(api::ForceQuery { force: None }),
        )
        .await,
        |Json(out)| Outcome::Retired(out.key_arn),
    )?;
    keys_page(&state, s, &tid, outcome).await
}
