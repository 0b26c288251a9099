//! The key health monitor: every tenant that is active, degraded or suspended has each of
//! its active keys probed on a schedule (jittered), with a real round trip under the
//! tenant's context (`GenerateDataKey` on the key, then `Decrypt` of what it returned), so
//! both a key state change and a key policy or grant change are seen. A request that meets
//! a refusal by an active key runs the same probe at once ([`Lifecycle::probe_now`]).
//!
//! A definitive refusal (disabled, pending deletion, not found, access denied, wrong key)
//! suspends the tenant at once (cause `key_refused`): its cached data keys are dropped and
//! every request is refused with `tenant_suspended`. A transient failure marks an active
//! tenant degraded (still served). When every active key answers again, a tenant suspended
//! or degraded by a probe is active again; one suspended by validation waits for the next
//! validation. The decision is made on the stored [`Cause`], never on reason text.
//!
//! Probes are not recorded call by call: a key's probe outcome is recorded
//! ([`Event::KeyProbe`]) when it differs from the previous probe's, and each tenant gets a
//! [`Event::ProbeSummary`] every [`SUMMARY_EVERY_MS`].
//!
//! Revocation bound on this instance without traffic: KMS propagation + one probe interval
//! (+10% jitter); on other instances sharing the registry, add the tenant view's lifetime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyhold_audit::Event;
use keyhold_core::{EncryptionContext, KeyRef, RESERVED_PURPOSE_KEY, RESERVED_TENANT_KEY, TenantId};
use keyhold_provider::{ErrorClass, ProviderError};
use keyhold_registry::{Cause, KeyCheck, Tenant, TenantState};

use crate::{Detail, Lifecycle};

/// The `purpose` in a probe's encryption context, so the tenant can tell probes apart in
/// CloudTrail.
pub const PROBE_PURPOSE: &str = "keyhold-probe";

/// The default interval between probes of a tenant's keys.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Request-triggered probes of one tenant at most this often (a refusal within it shares
/// the last probe's verdict).
pub const MIN_PROBE_SPACING: Duration = Duration::from_secs(1);

/// How often each tenant's probe summary is written.
pub const SUMMARY_EVERY_MS: u64 = 3_600_000;

/// What one probe pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Tenants probed.
    pub probed: usize,
    /// Tenants suspended by this pass.
    pub suspended: usize,
    /// Tenants marked degraded.
    pub degraded: usize,
    /// Tenants made active again.
    pub resumed: usize,
}

/// What the monitor remembers between probes: each key's last outcome, and each tenant's
/// counts since its last summary.
#[derive(Default)]
pub(crate) struct ProbeMemory {
    last: Mutex<HashMap<(TenantId, KeyRef), String>>,
    counts: Mutex<HashMap<TenantId, (u64, u64, u64)>>,
}

enum Outcome {
    Healthy,
    /// A definitive refusal: why, and where (the first key that refused).
    Refused(String, Detail),
    /// A transient failure: why, and where.
    Transient(String, Detail),
}

impl Lifecycle {
    /// Probes every tenant once and applies the outcomes.
    pub async fn probe_all(&self) -> Pass {
        let mut pass = Pass::default();
        let Ok(tenants) = self.registry.tenants().await else { return pass };
        for t in tenants {
            if !matches!(t.state, TenantState::Active | TenantState::Degraded | TenantState::Suspended) {
                continue;
            }
            pass.probed += 1;
            match self.probe_and_apply(&t).await {
                Some(TenantState::Suspended) if t.state != TenantState::Suspended => pass.suspended += 1,
                Some(TenantState::Degraded) if t.state != TenantState::Degraded => pass.degraded += 1,
                Some(TenantState::Active) if t.state != TenantState::Active => pass.resumed += 1,
                _ => {}
            }
        }
        pass
    }

    /// Probes `tenant`'s active keys now, unless a probe of it started after `since`
    /// (then that probe's verdict stands): concurrent callers share one probe. Returns the
    /// tenant's state afterwards, when known.
    pub async fn probe_now(&self, tenant: &TenantId, since: Instant) -> Option<TenantState> {
        let tenant = tenant.clone();
        // In a task of its own: the probe and its verdict complete even if the request
        // that asked for it is cancelled, so waiters never share an unfinished verdict.
        self.detached(move |me| async move { Ok(me.probe_gated(&tenant, since).await) }).await.ok().flatten()
    }

    async fn probe_gated(&self, tenant: &TenantId, since: Instant) -> Option<TenantState> {
        let gate = Self::tenant_lock(&self.probe_gates, tenant);
        let mut started = gate.lock().await;
        // A probe that started after this refusal, or within the last second, decides for
        // it too: a flood of refused requests costs one probe, however they interleave.
        if started.is_some_and(|s| s >= since || s.elapsed() < MIN_PROBE_SPACING) {
            drop(started);
            return self.tenant(tenant).await.ok().map(|t| t.state);
        }
        *started = Some(Instant::now());
        let t = self.tenant(tenant).await.ok()?;
        self.probe_and_apply(&t).await
    }

    /// Probes and applies the outcome to `t` (as read); returns its state afterwards.
    async fn probe_and_apply(&self, t: &Tenant) -> Option<TenantState> {
        let outcome = self.probe(t).await;
        let resumable = matches!(t.cause, Some(Cause::KeyRefused | Cause::KeyUnavailable));
        let (to, cause, reason, detail) = match outcome {
            Outcome::Healthy if t.state == TenantState::Suspended && !resumable => return Some(t.state),
            Outcome::Healthy if t.state != TenantState::Active => (
                TenantState::Active,
                Cause::KeysHealthy,
                "probe: every key answers again".to_owned(),
                Detail::default(),
            ),
            Outcome::Refused(r, d) if t.state != TenantState::Suspended => {
                (TenantState::Suspended, Cause::KeyRefused, format!("misconfiguration detected: {r}"), d)
            }
            Outcome::Transient(r, d) if t.state == TenantState::Active => {
                (TenantState::Degraded, Cause::KeyUnavailable, format!("probe: {r}"), d)
            }
            _ => return Some(t.state),
        };
        // The tenant may have changed meanwhile (deleted, another instance acted): then
        // that change stands.
        match self.transition_now(t, to, cause, Some(&reason), &detail).await {
            Ok(updated) => Some(updated.state),
            Err(_) => self.tenant(&t.id).await.ok().map(|t| t.state),
        }
    }

    async fn probe(&self, tenant: &Tenant) -> Outcome {
        self.forget_view(&tenant.id);
        let Ok(view) = self.tenant_view(&tenant.id).await else {
            return Outcome::Transient("the registry did not answer".into(), Detail::default());
        };
        if view.active.is_empty() {
            // Nothing to probe proves nothing: no resumption on an empty set.
            return Outcome::Transient("the tenant has no active key".into(), Detail::default());
        }
        let mut context = EncryptionContext::new();
        context.insert(RESERVED_TENANT_KEY, tenant.id.as_str());
        context.insert(RESERVED_PURPOSE_KEY, PROBE_PURPOSE);
        let mut transient = None;
        let mut refused = None;
        let (mut probes, mut failures) = (0u64, 0u64);
        for key in view.active.iter() {
            let Some(provider) = self.raw.iter().find(|p| p.accepts(key)) else {
                let detail = Detail {
                    key: Some(key.to_string()),
                    code: Some("no_provider".into()),
                    fix: Some("Configure keyhold with the key provider that serves this key.".into()),
                    ..Detail::default()
                };
                refused = Some((format!("no key provider serves key {key}"), detail));
                continue;
            };
            let result: Result<(), ProviderError> = async {
                let (dk, edk) = provider.generate_data_key(key, 32, &context).await?;
                let back = provider.unwrap(&edk, &context).await?;
                if back.ct_eq(&dk) {
                    Ok(())
                } else {
                    Err(ProviderError::InvalidCiphertext { key: key.clone(), reason: "round trip mismatch".into() })
                }
            }
            .await;
            probes += 1;
            self.metrics.provider_call("Probe", if result.is_ok() { "ok" } else { "error" });
            let code = match &result {
                Ok(()) => "ok".to_owned(),
                Err(e) => {
                    failures += 1;
                    e.code().to_owned()
                }
            };
            let detail = self.probe_detail(&tenant.id, key, &code).await;
            self.note_probe(&tenant.id, key, &code, &result, &detail).await;
            match result {
                Ok(()) => {}
                Err(e) if e.class() == ErrorClass::Retryable => {
                    transient = Some((format!("key {key}: {} ({e})", e.code()), detail));
                }
                Err(e) => {
                    let region = detail.region.clone().unwrap_or_else(|| "its region".into());
                    refused.get_or_insert_with(|| {
                        (format!("key {key} in {region} refused keyhold: {}", e.code()), detail)
                    });
                }
            }
        }
        self.summarise(&tenant.id, probes, failures).await;
        match (refused, transient) {
            (Some((r, d)), _) => Outcome::Refused(r, d),
            (None, Some((t, d))) => Outcome::Transient(t, d),
            (None, None) => Outcome::Healthy,
        }
    }

    /// Where and why a probe of `key` ended with `code`, with the fix for a refusal. The
    /// region is the provider's reading of the key (an ARN's), else, for a failure, the
    /// key history's.
    async fn probe_detail(&self, tenant: &TenantId, key: &KeyRef, code: &str) -> Detail {
        let mut region = self.raw.iter().find_map(|p| p.region_of(key)).map(|r| r.to_string());
        if region.is_none() && code != "ok" {
            region = self
                .registry
                .keys(tenant)
                .await
                .ok()
                .and_then(|h| h.into_iter().find(|k| k.key == key.as_str()))
                .map(|k| k.region.to_string());
        }
        let fix = (code != "ok")
            .then(|| crate::events::fix_for(code, key.as_str(), region.as_deref().unwrap_or("its region")));
        Detail { region, key: Some(key.to_string()), code: (code != "ok").then(|| code.to_owned()), fix }
    }

    /// Records a key's probe outcome when it changed since the previous probe.
    async fn note_probe(
        &self,
        tenant: &TenantId,
        key: &KeyRef,
        code: &str,
        result: &Result<(), ProviderError>,
        detail: &Detail,
    ) {
        let changed = {
            let mut last = self.probes.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let k = (tenant.clone(), key.clone());
            if last.get(&k).map(String::as_str) == Some(code) {
                false
            } else {
                last.insert(k, code.to_owned());
                true
            }
        };
        if !changed {
            return;
        }
        match result {
            Ok(()) => tracing::info!(tenant = %tenant, key = %key, outcome = code, "key probe outcome changed"),
            Err(e) => {
                tracing::warn!(tenant = %tenant, key = %key, outcome = code, error = %e, "key probe outcome changed")
            }
        }
        let check = match result {
            Ok(()) => KeyCheck::Valid,
            Err(e) if e.class() == ErrorClass::Revoked => KeyCheck::Revoked,
            Err(_) => KeyCheck::Invalid,
        };
        // A transient failure says nothing about the key: only definite outcomes update
        // its recorded check.
        // A changed check is stored with its event (once across instances).
        if !matches!(result, Err(e) if e.class() == ErrorClass::Retryable) {
            let event = crate::events::key_check(tenant, check, detail);
            if let Err(e) =
                self.registry.record_check(tenant, key.as_str(), check, None, self.now_ms(), Some(&event)).await
            {
                // Not stored: the next probe records it again.
                tracing::warn!(tenant = %tenant, key = %key, error = %e, "a key check could not be recorded");
                self.probes
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&(tenant.clone(), key.clone()));
            }
        }
        let region = detail.region.clone();
        self.journal
            .record_or_queue(tenant, Event::KeyProbe { region, key: key.to_string(), outcome: code.to_owned() })
            .await;
    }

    /// Adds a probe's counts to the tenant's summary, writing it once it is due.
    async fn summarise(&self, tenant: &TenantId, probes: u64, failures: u64) {
        let now = self.now_ms();
        let due = {
            let mut counts = self.probes.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let c = counts.entry(tenant.clone()).or_insert((now, 0, 0));
            c.1 += probes;
            c.2 += failures;
            if now.saturating_sub(c.0) >= SUMMARY_EVERY_MS {
                let out = *c;
                *c = (now, 0, 0);
                Some(out)
            } else {
                None
            }
        };
        if let Some((since_ms, probes, failures)) = due {
            self.journal.record_or_queue(tenant, Event::ProbeSummary { since_ms, probes, failures }).await;
        }
    }
}

/// Runs [`Lifecycle::probe_all`] every `interval` (plus up to 10% jitter) until dropped.
pub fn spawn(lifecycle: Arc<Lifecycle>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let jitter = interval.mul_f64(f64::from(jitter_permille()) / 10_000.0);
            tokio::time::sleep(interval + jitter).await;
            lifecycle.probe_all().await;
        }
    })
}

/// 0..=1000 from the system's random source (no extra dependency for a jitter).
fn jitter_permille() -> u16 {
    let mut b = [0u8; 2];
    match aws_lc_rs::rand::fill(&mut b) {
        Ok(()) => u16::from_le_bytes(b) % 1001,
        Err(_) => 500,
    }
}
