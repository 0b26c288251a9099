//! Attaching and validating a tenant's keys: validation-driven activation and the key
//! history.
//!
//! Attaching a key for a region validates the set it would make (the other regions'
//! active keys plus the new one). The key is recorded only if its own round trip under
//! the tenant's context worked, so a tenant cannot claim a key it cannot use; for a tenant
//! in service the whole new set must also be usable, so a broken key never replaces a
//! working one. The region's previous key becomes `decrypt_only`. Alias ARNs are refused:
//! every message records the key ARN, and an alias can be moved to another key.
//!
//! Validation verdicts are compare-and-set on the tenant as read before validating: a
//! probe or another instance that changed the tenant meanwhile wins. Findings that only
//! say the key service or the audit trail failed for a moment suspend no one.
//!
//! Attaches and validations of one tenant run one at a time on an instance; across
//! instances every attach re-reads the active set after committing and validates it again
//! if another attach changed it, so the last attach to commit always sees (and can
//! activate on) every key: concurrent attaches for different regions lose nothing.

use std::collections::BTreeMap;

use keyhold_audit::Event;
use keyhold_core::{KeyArn, KeyRef, Region, TenantId};
use keyhold_onboarding::{Report, Severity, Validation};
use keyhold_provider::KeyProvider;
use keyhold_registry::{Cause, KeyCheck, KeyStatus, Tenant, TenantMode, TenantState};
use std::sync::Arc;

use crate::{Detail, Lifecycle, LifecycleError};

/// The outcome of attaching a key.
#[derive(Debug)]
pub struct AttachOutcome {
    /// The validation report of the tenant's key set.
    pub report: Report,
    /// Whether the key was attached (a tenant in service keeps its keys when the new set
    /// is not usable).
    pub attached: bool,
}

/// The longest role ARN accepted (IAM's own limit).
pub const MAX_ROLE_ARN: usize = 2048;

/// The longest key reference accepted (AWS KMS allows key ids and ARNs up to 2048
/// characters): anything longer is refused before it is validated or recorded.
pub const MAX_KEY_REF: usize = 2048;

/// A mode and a role that go together: a role for `byok`, none otherwise.
pub(crate) fn check_mode_role(mode: TenantMode, role_arn: Option<&str>) -> Result<(), LifecycleError> {
    match (mode, role_arn) {
        (TenantMode::Byok, Some(arn)) => check_role_arn(arn),
        (TenantMode::Byok, None) => {
            Err(LifecycleError::Invalid("a byok tenant needs role_arn: the role its byok-role template created".into()))
        }
        (_, Some(_)) => Err(LifecycleError::Invalid("role_arn is only for mode byok".into())),
        (_, None) => Ok(()),
    }
}

/// Checks a role ARN: `arn:<partition>:iam::<12 digits>:role/<path/name>`, the path and
/// name in printable ASCII without spaces (what IAM allows, and a rule every regex dialect
/// reads alike, so the OpenAPI document states it exactly).
pub fn check_role_arn(arn: &str) -> Result<(), LifecycleError> {
    if arn.len() > MAX_ROLE_ARN {
        return Err(LifecycleError::Invalid(format!(
            "role_arn is at most {MAX_ROLE_ARN} bytes (IAM's limit); this one has {}",
            arn.len()
        )));
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = matches!(parts.as_slice(), ["arn", p, "iam", "", account, resource]
        if !p.is_empty() && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic())));
    if ok {
        Ok(())
    } else {
        // Quoted up to 128 characters: an error never echoes a client's whole input.
        let shown: String = arn.chars().take(128).collect();
        let more = if arn.chars().count() > 128 { "…" } else { "" };
        Err(LifecycleError::Invalid(format!(
            "role_arn {shown:?}{more} is not an IAM role ARN such as arn:aws:iam::111122223333:role/keyhold-access"
        )))
    }
}

impl Lifecycle {
    /// Validates `key` for `region` of the tenant's realm and attaches it (see the module
    /// docs); the tenant becomes `active` when every region's active key validates.
    pub async fn attach_key(
        &self,
        actor: &str,
        id: &TenantId,
        region: &Region,
        key: &str,
    ) -> Result<AttachOutcome, LifecycleError> {
        if key.len() > MAX_KEY_REF {
            return Err(LifecycleError::Invalid(format!(
                "a key reference is at most {MAX_KEY_REF} bytes (an ARN, or a local key id); this one has {}",
                key.len()
            )));
        }
        let (actor, id, region, key) = (actor.to_owned(), id.clone(), region.clone(), key.to_owned());
        self.detached(move |me| async move { me.attach_key_now(&actor, &id, &region, &key).await }).await
    }

    async fn attach_key_now(
        &self,
        actor: &str,
        id: &TenantId,
        region: &Region,
        key: &str,
    ) -> Result<AttachOutcome, LifecycleError> {
        let (_guard, t) = self.lock_live(id).await?;
        let realm = self.realm_of(&t)?.clone();
        if !realm.regions.contains(region) {
            return Err(LifecycleError::Invalid(format!(
                "region {region} is not in realm {} ({})",
                realm.id,
                realm.regions.iter().map(Region::as_str).collect::<Vec<_>>().join(", ")
            )));
        }
        // A key is of the tenant's kind: AWS KMS key ARNs for cmk and byok, the local
        // provider's ids for local (a cmk tenant never runs on one of the platform's keys).
        KeyRef::parse(key).map_err(|e| LifecycleError::Invalid(format!("invalid key reference: {e}")))?;
        let is_arn = key.starts_with("arn:");
        match (t.mode, is_arn) {
            (TenantMode::Local, true) => {
                return Err(LifecycleError::Invalid(format!(
                    "tenant {id} is in local mode: its keys are local key ids (lk-...), not AWS KMS ARNs"
                )));
            }
            (TenantMode::Cmk | TenantMode::Byok, false) => {
                return Err(LifecycleError::Invalid(format!(
                    "tenant {id} is in {} mode: its keys are AWS KMS key ARNs (arn:aws:kms:{region}:<account>:key/<id>)",
                    t.mode
                )));
            }
            _ => {}
        }
        if is_arn {
            match KeyArn::parse(key) {
                Ok(a) if matches!(a.resource(), keyhold_core::KeyResource::Alias(_)) => {
                    return Err(LifecycleError::Invalid(format!(
                        "{key} is an alias ARN: attach the key ARN it points to (arn:aws:kms:{region}:<account>:key/<id>); \
                         every message records the key ARN, and an alias can be moved to another key"
                    )));
                }
                Ok(a) if a.region() != region => {
                    return Err(LifecycleError::Invalid(format!("key {key} is in {}, not {region}", a.region())));
                }
                Ok(_) => {}
                Err(e) => return Err(LifecycleError::Invalid(e.to_string())),
            }
        }
        if let Some(k) = self.registry.keys(id).await?.iter().find(|k| k.key == key) {
            if k.status == KeyStatus::Retired {
                return Err(LifecycleError::KeyRetired(key.to_owned()));
            }
            if &k.region != region {
                return Err(LifecycleError::KeyInUse(key.to_owned()));
            }
        }
        self.journal.check(id)?;
        self.admin_event(actor, id, "attach_key", Some(format!("{region}: {key}"))).await;
        let mut proposed = self.active_set(id).await?;
        proposed.insert(region.clone(), key.to_owned());
        let report = self.run_validation(&t, &proposed).await;
        // A key is recorded only once its own round trip under this tenant's context
        // worked (a tenant cannot claim a key it cannot use); a tenant in service also
        // needs the whole new set usable, so a broken key never replaces a working one.
        let own_errors = report_errors(&report, key);
        let proven = report.keys.iter().any(|k| k.key == key && k.round_trip);
        let attach = proven && own_errors.is_empty() && (t.state == TenantState::Pending || report.usable);
        if !attach {
            return Ok(AttachOutcome { report, attached: false });
        }
        let check = KeyCheck::Valid;
        let findings = key_findings_json(&report, key);
        let changes = self
            .registry
            .attach_key_for(id, Some((&t.realm, t.mode)), region, key, check, &findings, self.now_ms(), |changes| {
                crate::events::key_statuses(id, region.as_str(), changes)
            })
            .await?;
        for (k, from, to) in changes {
            self.journal
                .record_or_queue(
                    id,
                    Event::KeyStatus {
                        region: region.to_string(),
                        key: k,
                        from: from.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                        to: to.to_string(),
                    },
                )
                .await;
        }
        self.forget_view(id);
        self.record_report(id, &report).await?;
        // Another instance may have attached a key meanwhile: the set to decide on is the
        // one in the registry now (the tenant read first, so a change after it makes the
        // activation below lose its compare-and-set to the attach that made the change,
        // which decides on the newer set).
        let t_after = self.tenant(id).await?;
        let now_set = self.active_set(id).await?;
        let report = if now_set == proposed {
            report
        } else {
            let r = self.run_validation(&t, &now_set).await;
            self.record_report(id, &r).await?;
            r
        };
        if report.usable {
            match self
                .settle_from(
                    &t_after,
                    TenantState::Active,
                    Cause::KeysValidated,
                    "every region's key validated",
                    &Detail::default(),
                )
                .await
            {
                // Another attach changed the tenant since: it decides on the newer set.
                Ok(()) | Err(LifecycleError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(AttachOutcome { report, attached: true })
    }

    /// Validates the tenant's active keys again (after it fixed a finding or restored
    /// access): a usable set makes it `active`; errors suspend a tenant in service.
    pub async fn validate(&self, actor: &str, id: &TenantId) -> Result<Report, LifecycleError> {
        let (actor, id) = (actor.to_owned(), id.clone());
        self.detached(move |me| async move { me.validate_now(&actor, &id).await }).await
    }

    async fn validate_now(&self, actor: &str, id: &TenantId) -> Result<Report, LifecycleError> {
        let (_guard, t) = self.lock_live(id).await?;
        self.journal.check(id)?;
        let set = self.active_set(id).await?;
        let report = self.run_validation(&t, &set).await;
        self.record_report(id, &report).await?;
        self.admin_event(actor, id, "validate_keys", Some(format!("usable: {}", report.usable))).await;
        // Decided on the tenant as read before validating: if a probe or another instance
        // changed it meanwhile, this older verdict does not override theirs (409, retry).
        if report.usable {
            self.settle_from(
                &t,
                TenantState::Active,
                Cause::KeysValidated,
                "every region's key validated",
                &Detail::default(),
            )
            .await?;
        } else if matches!(t.state, TenantState::Active | TenantState::Degraded) && definitive(&report) {
            let detail = report_detail(&report, None);
            let reason = format!(
                "misconfiguration detected: {}",
                report
                    .all_findings()
                    .find(|f| f.severity == Severity::Error)
                    .map_or("validation found errors".into(), |f| f.message.clone())
            );
            self.settle_from(&t, TenantState::Suspended, Cause::ValidationFailed, &reason, &detail).await?;
        }
        self.forget_view(id);
        Ok(report)
    }

    /// Moves `t` (as read) to `to` unless it is there already, compare-and-set: if the
    /// tenant changed since `t` was read, nothing changes ([`LifecycleError::Conflict`])
    /// unless it is in `to` already.
    async fn settle_from(
        &self,
        t: &Tenant,
        to: TenantState,
        cause: Cause,
        reason: &str,
        detail: &Detail,
    ) -> Result<(), LifecycleError> {
        if t.state == to {
            return Ok(());
        }
        match self.transition_now(t, to, cause, Some(reason), detail).await {
            Ok(_) => Ok(()),
            Err(LifecycleError::Conflict(id)) => match self.tenant(&id).await? {
                now if now.state == to => Ok(()),
                _ => Err(LifecycleError::Conflict(id)),
            },
            Err(e) => Err(e),
        }
    }

    /// The tenant's active keys by region.
    pub(crate) async fn active_set(&self, id: &TenantId) -> Result<BTreeMap<Region, String>, LifecycleError> {
        Ok(self
            .registry
            .keys(id)
            .await?
            .into_iter()
            .filter(|k| k.status == KeyStatus::Active)
            .map(|k| (k.region, k.key))
            .collect())
    }

    /// Runs the validation dry run over `keys` (region to key).
    pub(crate) async fn run_validation(&self, t: &Tenant, keys: &BTreeMap<Region, String>) -> Report {
        self.run_validation_as(t, keys, true).await
    }

    /// As [`Lifecycle::run_validation`]; a BYOK tenant's role is registered for serving
    /// only with `register` (a proposed role is validated without routing the tenant's
    /// traffic through it).
    pub(crate) async fn run_validation_as(
        &self,
        t: &Tenant,
        keys: &BTreeMap<Region, String>,
        register: bool,
    ) -> Report {
        let realm = match self.realm_of(t) {
            Ok(r) => r.clone(),
            Err(_) => return empty_report(t),
        };
        let ordered: Vec<String> = realm
            .regions
            .iter()
            .filter_map(|r| keys.get(r).cloned())
            .chain(keys.iter().filter(|(r, _)| !realm.regions.contains(r)).map(|(_, k)| k.clone()))
            .collect();
        // A BYOK tenant's own provider (its assumed role) first: calls without a context
        // (DescribeKey) would otherwise go out with the platform's credentials.
        let providers: Vec<Arc<dyn KeyProvider>> = match (t.mode, &t.role_arn, &self.aws) {
            (TenantMode::Byok, Some(role), Some(aws)) => {
                let external = keyhold_onboarding::external_id(&t.id);
                let own = if register {
                    aws.assume_for(&t.id, role, &external).await
                } else {
                    aws.assume_unregistered(&t.id, role, &external).await
                };
                std::iter::once(crate::audited(own, &self.journal, &self.metrics, &self.limiter, &self.traffic))
                    .chain(self.providers.iter().cloned())
                    .collect()
            }
            _ => self.providers.clone(),
        };
        // A BYOK tenant's key policy grants its own role (through its account's IAM), not
        // the platform principal: there is no platform statement to analyse; the live
        // round trip through the assumed role is what proves access.
        let principal = match t.mode {
            TenantMode::Byok => None,
            _ => self.platform_principal.as_deref(),
        };
        keyhold_onboarding::validate(&Validation {
            tenant: &t.id,
            realm: &realm,
            keys: &ordered,
            platform_principal: principal,
            providers: &providers,
        })
        .await
    }

    /// Records each key's findings (for keys in the history) and one key-state event each.
    async fn record_report(&self, id: &TenantId, report: &Report) -> Result<(), LifecycleError> {
        let now = self.now_ms();
        // The findings recorded before, to tell new warnings (rotation turned off, ...).
        let before: Vec<(String, String)> =
            self.registry.keys(id).await?.into_iter().map(|k| (k.key, k.findings)).collect();
        for k in &report.keys {
            let known = before.iter().find(|(key, _)| *key == k.key).map_or("", |(_, f)| f.as_str());
            for f in k.findings.iter().filter(|f| f.severity == Severity::Warning) {
                // A warning new to this key: a health finding of its own, once.
                if known.contains(&format!("\"code\":\"{}\"", f.code)) {
                    continue;
                }
                let detail = Detail {
                    region: f.region.clone().or_else(|| Some(k.region.clone())),
                    key: Some(k.key.clone()),
                    code: Some(f.code.to_owned()),
                    fix: Some(f.fix.clone()),
                };
                let event = crate::events::key_warning(id, &f.message, &detail);
                if let Err(e) = self.registry.add_event(&event, now).await {
                    tracing::warn!(tenant = %id, error = %e, "a key warning's event was not stored");
                }
            }
            let errors = report_errors(report, &k.key);
            // A transient failure (the key service did not answer) says nothing about the
            // key: its recorded check and findings stay as they were, and no event is made.
            if !errors.is_empty() && errors.iter().all(|c| TRANSIENT_FINDINGS.contains(c)) {
                continue;
            }
            // A key that refuses keyhold is revoked, as a probe would find it; other
            // errors say it is reachable but wrong.
            let check = if errors.is_empty() {
                KeyCheck::Valid
            } else if errors.iter().any(|c| REVOKED_FINDINGS.contains(c)) {
                KeyCheck::Revoked
            } else {
                KeyCheck::Invalid
            };
            let findings = key_findings_json(report, &k.key);
            let event = crate::events::key_check(id, check, &report_detail(report, Some(&k.key)));
            if self.registry.record_check(id, &k.key, check, Some(&findings), now, Some(&event)).await? {
                self.journal
                    .record_or_queue(
                        id,
                        Event::KeyState {
                            region: k.region.clone(),
                            key: k.key.clone(),
                            state: check.to_string(),
                            findings: k.findings.iter().map(|f| f.code.to_owned()).collect(),
                        },
                    )
                    .await;
            }
        }
        Ok(())
    }
}

/// Validation findings that say the key service failed for a moment, not the key.
const TRANSIENT_FINDINGS: [&str; 2] = ["kms_unavailable", "provider_error"];

/// Validation findings that mean the key refuses keyhold (a revocation), not that it is
/// misconfigured.
const REVOKED_FINDINGS: [&str; 4] = ["key_disabled", "key_pending_deletion", "key_not_found", "access_denied"];

/// Whether a report's errors say something about the keys, not only that the key service
/// or the audit trail failed for a moment (which suspends no one).
fn definitive(report: &Report) -> bool {
    report.all_findings().any(|f| f.severity == Severity::Error && !TRANSIENT_FINDINGS.contains(&f.code))
}

/// The error codes validation found for `key`.
fn report_errors(report: &Report, key: &str) -> Vec<&'static str> {
    report
        .keys
        .iter()
        .filter(|k| k.key == key)
        .flat_map(|k| k.findings.iter())
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.code)
        .collect()
}

/// Where and why for an event from a report: its first error (of `key`, when given), with
/// the finding's code and fix.
fn report_detail(report: &Report, key: Option<&str>) -> Detail {
    let mut errors = report
        .keys
        .iter()
        .filter(|k| key.is_none_or(|key| k.key == key))
        .flat_map(|k| k.findings.iter().filter(|f| f.severity == Severity::Error).map(move |f| (Some(k), f)));
    let first = errors.next().or_else(|| {
        key.is_none()
            .then(|| report.findings.iter().find(|f| f.severity == Severity::Error).map(|f| (None, f)))
            .flatten()
    });
    match first {
        Some((k, f)) => Detail {
            region: f.region.clone().or_else(|| k.map(|k| k.region.clone())),
            key: k.map(|k| k.key.clone()),
            code: Some(f.code.to_owned()),
            fix: Some(f.fix.clone()),
        },
        None => Detail {
            key: key.map(str::to_owned),
            region: key.and_then(|key| report.keys.iter().find(|k| k.key == key)).map(|k| k.region.clone()),
            ..Detail::default()
        },
    }
}

fn key_findings_json(report: &Report, key: &str) -> String {
    let findings: Vec<_> = report.keys.iter().filter(|k| k.key == key).flat_map(|k| k.findings.iter()).collect();
    serde_json::to_string(&findings).unwrap_or_else(|_| "[]".into())
}

fn empty_report(t: &Tenant) -> Report {
    Report {
        tenant: t.id.to_string(),
        realm: t.realm.to_string(),
        usable: false,
        keys: Vec::new(),
        findings: Vec::new(),
    }
}
