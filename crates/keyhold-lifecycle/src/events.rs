//! Lifecycle events: the catalogue of what happens to a tenant and its keys, each with a
//! stable type, and the one place their bodies are built.
//!
//! Every event's `data` names the tenant and, where they apply, the region, the key, the
//! cause code, what happened (`message`) and the fix in one sentence (`fix`), plus the
//! fields of its type. Events are stored in the registry in the transaction of the change
//! they report (a transition, an attach, a retirement, a role, a rotation); findings that
//! change no other row (a key's check) are stored with the check they change, once
//! however many instances see them; progress events are stored once per step.

use keyhold_core::{RealmId, TenantId};
use keyhold_registry::{Cause, KeyCheck, KeyStatus, NewEvent, Tenant, TenantMode, TenantState};
use serde_json::{Map, Value, json};

/// The event catalogue: every type keyhold stores, with what it means.
pub const CATALOGUE: &[(&str, &str)] = &[
    ("tenant.created", "a tenant was created (pending until every region's key validates)"),
    ("tenant.configured", "a pending tenant's realm or key mode was chosen, before any key was attached"),
    ("tenant.activated", "every region's key validated: the tenant is served"),
    (
        "tenant.suspended",
        "a key refused keyhold (revoked, disabled, denied) or validation failed: requests are refused",
    ),
    ("tenant.resumed", "a suspended or degraded tenant's keys answer again: it is served"),
    ("tenant.degraded", "a key failed transiently: the tenant is still served"),
    ("tenant.deleted", "the tenant was deleted: its key references are destroyed"),
    (
        "tenant.revocation_confirmed",
        "every running instance dropped the suspended or deleted tenant's cached keys: none can use them since the time given",
    ),
    ("tenant.role_changed", "a BYOK tenant's role was replaced by one that validated"),
    ("key.attached", "a key became its region's active key"),
    ("key.replaced", "a key was replaced by a newer one: decrypt only from now on"),
    ("key.retired", "a replaced key was retired: keyhold never uses it again"),
    ("key.misconfigured", "a key is reachable but misconfigured (policy, grants, rotation, spec)"),
    ("key.revoked", "a key refuses keyhold: disabled, pending deletion, gone or access denied"),
    ("key.restored", "a key that was revoked or misconfigured works again"),
    ("key_change.progress", "re-encryption away from replaced keys passed another tenth of the messages"),
    ("key_change.completed", "every message under the replaced keys was re-encrypted"),
    ("data_keys.rotated", "the tenant's data keys were rotated by force: no instance uses the old ones"),
    ("webhook.test", "a test event, sent on request to one webhook endpoint"),
    (
        "audit.unavailable",
        "the tenant's audit trail could not be written for a while: its requests were refused meanwhile",
    ),
];

/// Where and why, for an event about a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    /// The region.
    pub region: Option<String>,
    /// The key.
    pub key: Option<String>,
    /// The code of what was found (an AWS error code or a validation finding's code).
    pub code: Option<String>,
    /// How to fix it, in one sentence.
    pub fix: Option<String>,
}

fn body(tenant: &TenantId, message: &str, detail: &Detail, extra: Value) -> String {
    let mut m = Map::new();
    m.insert("tenant".into(), tenant.as_str().into());
    for (k, v) in [("region", &detail.region), ("key", &detail.key), ("code", &detail.code)] {
        if let Some(v) = v {
            m.insert(k.into(), v.as_str().into());
        }
    }
    m.insert("message".into(), message.into());
    if let Some(f) = &detail.fix {
        m.insert("fix".into(), f.as_str().into());
    }
    if let Value::Object(extra) = extra {
        m.extend(extra);
    }
    Value::Object(m).to_string()
}

fn event(tenant: &TenantId, kind: &'static str, data: String) -> NewEvent {
    NewEvent { tenant: Some(tenant.clone()), kind, data, dedupe: None }
}

/// The event of a new tenant.
pub(crate) fn created(id: &TenantId, realm: &RealmId, mode: TenantMode) -> NewEvent {
    let message = format!("tenant created in realm {realm} (mode {mode}); attach a key per region to activate it");
    let extra = json!({"realm": realm.as_str(), "mode": mode.as_str()});
    event(id, "tenant.created", body(id, &message, &Detail::default(), extra))
}

/// The event of a pending tenant's new realm or mode.
pub(crate) fn configured(id: &TenantId, realm: &RealmId, mode: TenantMode) -> NewEvent {
    let message =
        format!("the tenant's keys are now in realm {realm} (mode {mode}); attach a key per region to activate it");
    let extra = json!({"realm": realm.as_str(), "mode": mode.as_str()});
    event(id, "tenant.configured", body(id, &message, &Detail::default(), extra))
}

/// The event of a transition from `from` (as read) to `to`.
pub(crate) fn transition(
    from: &Tenant,
    to: TenantState,
    cause: Cause,
    reason: Option<&str>,
    detail: &Detail,
) -> NewEvent {
    let kind = match (from.state, to) {
        (_, TenantState::Deleted) => "tenant.deleted",
        (_, TenantState::Suspended) => "tenant.suspended",
        (_, TenantState::Degraded) => "tenant.degraded",
        (TenantState::Suspended | TenantState::Degraded, TenantState::Active) => "tenant.resumed",
        (_, TenantState::Active | TenantState::Pending) => "tenant.activated",
    };
    let message = reason.map_or_else(|| format!("tenant {} is {to}", from.id), str::to_owned);
    let extra = json!({"from": from.state.as_str(), "to": to.as_str(), "cause": cause.as_str()});
    event(&from.id, kind, body(&from.id, &message, detail, extra))
}

/// The events of an attach's status changes in `region`.
pub(crate) fn key_statuses(
    tenant: &TenantId,
    region: &str,
    changes: &[keyhold_registry::StatusChange],
) -> Vec<NewEvent> {
    changes
        .iter()
        .map(|(key, from, to)| {
            let detail = Detail { region: Some(region.to_owned()), key: Some(key.clone()), ..Detail::default() };
            let (kind, message) = match to {
                KeyStatus::Active => ("key.attached", format!("key {key} is the active key of {region}")),
                KeyStatus::DecryptOnly => (
                    "key.replaced",
                    format!("key {key} of {region} was replaced: it decrypts what it protects until re-encrypted"),
                ),
                KeyStatus::Retired => ("key.retired", format!("key {key} of {region} was retired")),
            };
            let from = from.map_or("none", |s| s.as_str());
            event(tenant, kind, body(tenant, &message, &detail, json!({"from": from, "to": to.as_str()})))
        })
        .collect()
}

/// The event of a key's retirement (`forced` past the ledger's count of `remaining`
/// messages).
pub(crate) fn retired(tenant: &TenantId, region: &str, key: &str, forced: bool, remaining: u64) -> NewEvent {
    let detail = Detail { region: Some(region.to_owned()), key: Some(key.to_owned()), ..Detail::default() };
    let message = if forced && remaining > 0 {
        format!("key {key} of {region} was retired by force with {remaining} messages still under it")
    } else {
        format!("key {key} of {region} was retired: keyhold never uses it again")
    };
    let extra = json!({"from": KeyStatus::DecryptOnly.as_str(), "to": KeyStatus::Retired.as_str(), "forced": forced,
        "remaining": remaining});
    event(tenant, "key.retired", body(tenant, &message, &detail, extra))
}

/// The event of a key check that changed to `check`.
pub(crate) fn key_check(tenant: &TenantId, check: KeyCheck, detail: &Detail) -> NewEvent {
    let key = detail.key.as_deref().unwrap_or("?");
    let region = detail.region.as_deref().unwrap_or("its region");
    let (kind, message) = match check {
        KeyCheck::Valid => ("key.restored", format!("key {key} in {region} works again")),
        KeyCheck::Revoked => ("key.revoked", format!("key {key} in {region} refuses keyhold")),
        KeyCheck::Invalid => ("key.misconfigured", format!("misconfiguration detected on key {key} in {region}")),
    };
    event(tenant, kind, body(tenant, &message, detail, json!({"check": check.as_str()})))
}

/// A warning validation found on a key that still works (rotation turned off, a policy
/// statement broader than needed, ...): `key.misconfigured` with severity `warning`.
pub(crate) fn key_warning(tenant: &TenantId, what: &str, detail: &Detail) -> NewEvent {
    let key = detail.key.as_deref().unwrap_or("?");
    let region = detail.region.as_deref().unwrap_or("its region");
    let message = format!("key {key} in {region}: {what}");
    event(tenant, "key.misconfigured", body(tenant, &message, detail, json!({"severity": "warning"})))
}

/// A progress event of the tenant's key change, once per tenth (and at completion) for
/// the set of replaced keys `keys`: stored once however many instances report it.
pub(crate) fn progress(tenant: &TenantId, keys: &[String], totals: &keyhold_registry::Totals) -> Option<NewEvent> {
    let messages = totals.messages;
    if messages == 0 {
        return None;
    }
    let done = messages.saturating_sub(totals.remaining);
    let complete = totals.remaining == 0 && totals.unsettled == 0;
    // A tenth is reported when passed; 100% only once complete (every count settled).
    let tenth = if complete { 10 } else { (done * 10 / messages).min(9) };
    if tenth == 0 {
        return None;
    }
    let reencrypted = done;
    let kind = if complete { "key_change.completed" } else { "key_change.progress" };
    // A digest of the replaced set: a later change (another set) reports anew.
    let set = {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for k in keys {
            h.update(k.as_bytes());
            h.update(&[0]);
        }
        let d = h.finish();
        crate::keychange::hex(d.as_ref().get(..12).unwrap_or_default())
    };
    let percent = tenth * 10;
    let message = if complete {
        format!("every message under the replaced keys is re-encrypted ({messages}); retire them when ready")
    } else {
        format!("{percent}% of the messages under the replaced keys re-encrypted ({reencrypted} of {messages})")
    };
    let extra = json!({"percent": percent, "messages": messages, "reencrypted": reencrypted, "keys": keys});
    let mut e = event(tenant, kind, body(tenant, &message, &Detail::default(), extra));
    e.dedupe = Some(format!("{tenant}:{kind}:{set}:{tenth}"));
    Some(e)
}

/// The confirmation that every running instance dropped the tenant's cached keys after
/// it reached `version` (suspended or deleted), the last at `last_ms`.
pub(crate) fn revocation_confirmed(tenant: &TenantId, version: u64, last_ms: u64) -> NewEvent {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(last_ms);
    let message = format!(
        "no keyhold instance can use the tenant's keys since {} (every running instance confirmed)",
        humantime::format_rfc3339_millis(at)
    );
    let extra = json!({"version": version, "confirmed_ms": last_ms});
    let mut e = event(tenant, "tenant.revocation_confirmed", body(tenant, &message, &Detail::default(), extra));
    e.dedupe = Some(format!("{tenant}:revocation:{version}"));
    e
}

/// The event of an audit outage of `tenant` from `from_ms` to `to_ms` (stored once the
/// trail is writable again).
pub(crate) fn audit_unavailable(tenant: &TenantId, from_ms: u64, to_ms: u64) -> NewEvent {
    let fmt = |ms: u64| humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    let message = format!(
        "keyhold could not write the tenant's audit trail from {} to {}: every request was refused meanwhile, so no \
         key use went unrecorded",
        fmt(from_ms),
        fmt(to_ms)
    );
    let detail = Detail { code: Some("audit_unavailable".into()), ..Detail::default() };
    let mut e = event(
        tenant,
        "audit.unavailable",
        body(tenant, &message, &detail, json!({"from_ms": from_ms, "to_ms": to_ms})),
    );
    e.dedupe = Some(format!("{tenant}:audit:{from_ms}"));
    e
}

/// The event of a forced data-key rotation to `generation`.
pub(crate) fn rotated(tenant: &TenantId, generation: u64) -> NewEvent {
    let message =
        "data keys rotated: every instance stops using the tenant's cached data keys within the tenant-view bound";
    event(tenant, "data_keys.rotated", body(tenant, message, &Detail::default(), json!({"generation": generation})))
}

/// The event of a BYOK tenant's new role.
pub(crate) fn role_changed(tenant: &TenantId, role_arn: &str) -> NewEvent {
    let message = format!("keyhold now reaches the tenant's keys through role {role_arn}");
    event(tenant, "tenant.role_changed", body(tenant, &message, &Detail::default(), json!({"role_arn": role_arn})))
}

/// The fix, in one sentence, for a key that refused keyhold with the AWS error `code`.
pub fn fix_for(code: &str, key: &str, region: &str) -> String {
    match code {
        "DisabledException" => {
            format!("Enable key {key} in {region} again (kms:EnableKey); keyhold resumes the tenant at its next probe.")
        }
        "KMSInvalidStateException" => format!(
            "Cancel the scheduled deletion of key {key} in {region} (kms:CancelKeyDeletion) and enable it; keyhold \
             resumes the tenant at its next probe."
        ),
        "NotFoundException" => {
            format!("Key {key} no longer exists in {region}: attach an existing key for {region}.")
        }
        "AccessDeniedException" => format!(
            "Restore the statement of key {key}'s policy in {region} that grants keyhold's role kms:GenerateDataKey, \
             kms:Decrypt and kms:DescribeKey (for a BYOK tenant, also the role's trust policy)."
        ),
        _ => format!("Check key {key} in {region} and keyhold's access to it, then validate the tenant's keys."),
    }
}
