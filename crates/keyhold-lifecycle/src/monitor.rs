//! The key health monitor: every tenant that is active, degraded or suspended has each of
//! its active keys probed with a real round trip under the tenant's context
//! (`GenerateDataKey` on the key, then `Decrypt` of what it returned), so both a key state
//! change and a key policy or grant change are seen. A request that meets a refusal by an
//! active key runs the same probe at once ([`Lifecycle::probe_now`]).
//!
//! **One probe per tenant per interval across the cluster** ([`spawn`]): the schedule is
//! in the registry; each watched tenant has a fixed offset in the interval (so probes are
//! spread evenly), due tenants are claimed with a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL) so one instance probes them, up to [`PROBE_CONCURRENCY`] at once, and each
//! is scheduled again one interval after it was due (a quarter of an interval while it is
//! degraded or suspended, so recovery is seen sooner). An active tenant's key that real
//! traffic used successfully for both a generate (or wrap) and a decrypt within the
//! interval is not probed: the traffic proved it. Metrics: keys probed and skipped, and
//! the worst gap between two probes of one tenant.
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
//! Revocation bound without traffic: KMS propagation + one probe interval (+ the schedule's
//! polling, at most a second); other instances learn of it through the registry's
//! notifications (PostgreSQL) or when their tenant view expires.

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
        self.probe_and_apply_skipping(t, &[]).await
    }

    /// As `probe_and_apply`, without probing the keys in `skip` (real traffic proved them
    /// within the interval).
    async fn probe_and_apply_skipping(&self, t: &Tenant, skip: &[String]) -> Option<TenantState> {
        let outcome = self.probe(t, skip).await;
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

    async fn probe(&self, tenant: &Tenant, skip: &[String]) -> Outcome {
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
        let (mut probes, mut failures, mut skipped) = (0u64, 0u64, 0u64);
        for key in view.active.iter() {
            if skip.iter().any(|k| k == key.as_str()) {
                skipped += 1;
                continue;
            }
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
        self.metrics.monitor_probe(probes, skipped);
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

/// Tenants probed at once by one instance.
pub const PROBE_CONCURRENCY: u32 = 32;

/// How often the schedule takes in new tenants (and drops deleted ones).
const SYNC_EVERY: Duration = Duration::from_secs(5);

impl Lifecycle {
    /// Claims the tenants whose probe is due (cluster-wide, see [`spawn`]) and probes them
    /// concurrently; returns how many were claimed.
    pub async fn run_due_probes(&self, interval: Duration) -> usize {
        let now = wall_ms();
        let interval_ms = ms(interval);
        let lease = interval_ms.max(30_000);
        let claimed = match self.registry.claim_probes(now, lease, PROBE_CONCURRENCY).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "due probes could not be claimed; retrying");
                return 0;
            }
        };
        let n = claimed.len();
        let Some(me) = self.me.upgrade() else { return 0 };
        let mut tasks = tokio::task::JoinSet::new();
        for c in claimed {
            let me = me.clone();
            tasks.spawn(async move { me.run_probe(c, interval_ms).await });
        }
        while tasks.join_next().await.is_some() {}
        n
    }

    /// Probes one claimed tenant (skipping keys real traffic proved within the interval,
    /// for an active tenant) and schedules its next probe: one interval after this one was
    /// due when it is active, a quarter of it when degraded or suspended.
    async fn run_probe(&self, c: keyhold_registry::ClaimedProbe, interval_ms: u64) {
        let now = wall_ms();
        if let Some(last) = c.last_ms {
            self.metrics.monitor_gap(now.saturating_sub(last));
        }
        let state = match self.tenant(&c.tenant).await {
            Ok(t) if matches!(t.state, TenantState::Active | TenantState::Degraded | TenantState::Suspended) => {
                let skip = if t.state == TenantState::Active {
                    // Traffic is recorded on the lifecycle's clock.
                    let since = self.now_ms().saturating_sub(interval_ms);
                    self.registry.keys_with_traffic(&t.id, since).await.unwrap_or_default()
                } else {
                    Vec::new()
                };
                self.probe_and_apply_skipping(&t, &skip).await
            }
            _ => None,
        };
        let period = if state == Some(TenantState::Active) { interval_ms } else { (interval_ms / 4).max(1) };
        let mut next = c.due_ms.saturating_add(period);
        let done = wall_ms();
        if next <= done {
            next = done.saturating_add(period);
        }
        if let Err(e) = self.registry.probed(&c.tenant, now, next).await {
            tracing::warn!(tenant = %c.tenant, error = %e, "probe not recorded; it runs again after its lease");
        }
    }
}

/// Where in the interval a tenant's probes fall: the same offset on every instance, spread
/// evenly over tenants.
fn spread(tenant: &str, interval_ms: u64) -> u64 {
    let h = tenant.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    h % interval_ms.max(1)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The schedule runs on the system clock (ms since the Unix epoch): its times are shared
/// by every instance, and a probe interval is real time.
fn wall_ms() -> u64 {
    keyhold_core::Clock::now_millis(&keyhold_core::SystemClock)
}

/// Runs the cluster-wide schedule until dropped: every watched tenant (active, degraded,
/// suspended) is in the registry's schedule at an offset spread over `interval`; due
/// tenants are claimed with a lease (one instance probes each), probed up to
/// [`PROBE_CONCURRENCY`] at a time, and scheduled again an interval later (a quarter of it
/// while degraded or suspended).
pub fn spawn(lifecycle: Arc<Lifecycle>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval_ms = ms(interval);
        let mut synced: Option<Instant> = None;
        loop {
            if synced.is_none_or(|s| s.elapsed() >= SYNC_EVERY.min(interval)) {
                let now = wall_ms();
                let r = lifecycle.registry.sync_probe_schedule(|id| now + spread(id, interval_ms)).await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "the probe schedule could not be updated");
                }
                synced = Some(Instant::now());
            }
            if lifecycle.run_due_probes(interval).await == 0 {
                let now = wall_ms();
                let wait = match lifecycle.registry.next_probe_due().await {
                    Ok(Some(due)) => due.saturating_sub(now).clamp(20, 1000),
                    _ => 1000,
                };
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    })
}
