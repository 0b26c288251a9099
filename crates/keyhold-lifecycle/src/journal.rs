//! The one event sink: every key use, state change, probe finding and usage count of a
//! tenant goes through [`Journal`] into its audit trail.
//!
//! The rules it keeps:
//! - **Fail closed.** [`Journal::record`] returns only once the event is durable; callers
//!   answering a request fail it when it errs (no key use is answered unrecorded).
//! - **Usage counts are durable within one flush interval.** Cache hits are counted in
//!   memory (the database stays off the hot path) and written every flush interval,
//!   partial minutes included; a failed write puts the counts back. A `kill -9` loses at
//!   most the counts of the last interval. While a flush is failing, [`Journal::check`]
//!   refuses requests, so the unrecorded window stays bounded by one interval.
//! - **Bounded size.** Identical failed provider calls (same tenant, operation, key,
//!   outcome and context digest) within [`REPEAT_WINDOW_MS`] become one event with a count:
//!   the first is written at once, the rest are counted and written when the window closes.
//! - **Nothing dropped.** A state-change event whose write failed is queued and retried
//!   by every flush; until it is written, requests are refused.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use keyhold_audit::{AuditError, Auditor, Event, UsageCounter};
use keyhold_core::{Clock, TenantId};
use std::sync::Arc;

use crate::metrics::Metrics;

/// How long identical failed provider calls are aggregated into one event.
pub const REPEAT_WINDOW_MS: u64 = 60_000;

/// The most aggregation windows held at once; beyond, failures are written one by one
/// (each is still recorded: aggregation only saves space).
const MAX_REPEATS: usize = 10_000;

/// A failed call as aggregated: everything but its time and latency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RepeatKey {
    tenant: TenantId,
    operation: String,
    key: String,
    outcome: String,
    context_digest: String,
}

#[derive(Debug)]
struct Repeat {
    region: Option<String>,
    first_ms: u64,
    last_ms: u64,
    /// Calls after the first, not yet written.
    extra: u64,
    latency_us: u64,
}

/// The audit journal.
pub struct Journal {
    auditor: Auditor,
    usage: UsageCounter,
    repeats: Mutex<HashMap<RepeatKey, Repeat>>,
    pending: Mutex<Vec<(TenantId, u64, Event)>>,
    /// Tenants whose records are not all durable: their requests are refused.
    behind: Mutex<HashSet<TenantId>>,
    any_behind: AtomicBool,
    /// Since when each tenant behind has been (the start of its audit outage).
    outages: Mutex<HashMap<TenantId, u64>>,
    /// Outages that ended, (tenant, from, to), for their `audit.unavailable` event.
    ended: Mutex<Vec<(TenantId, u64, u64)>>,
    /// One flush at a time, so what is left unwritten is known exactly.
    flushing: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl Journal {
    /// A journal writing to `auditor`.
    pub fn new(auditor: Auditor, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Self {
        Self {
            auditor,
            usage: UsageCounter::new(),
            repeats: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            behind: Mutex::new(HashSet::new()),
            any_behind: AtomicBool::new(false),
            outages: Mutex::new(HashMap::new()),
            ended: Mutex::new(Vec::new()),
            flushing: tokio::sync::Mutex::new(()),
            metrics,
            clock,
        }
    }

    /// The audit trail itself (reading, verifying, exporting).
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// Per-minute usage counts (cache hits and misses alike).
    pub fn usage(&self) -> &UsageCounter {
        &self.usage
    }

    /// Refuses `tenant`'s requests while some of its records could not be written (a
    /// usage flush or a state-change event): they must not be served while their record
    /// cannot be kept. Other tenants are not affected. One atomic load when nothing is
    /// behind.
    pub fn check(&self, tenant: &TenantId) -> Result<(), crate::LifecycleError> {
        if self.any_behind.load(Ordering::Relaxed) && lock(&self.behind).contains(tenant) {
            Err(crate::LifecycleError::AuditUnavailable)
        } else {
            Ok(())
        }
    }

    fn mark_behind(&self, tenant: &TenantId) {
        lock(&self.behind).insert(tenant.clone());
        self.any_behind.store(true, Ordering::Relaxed);
        lock(&self.outages).entry(tenant.clone()).or_insert_with(|| self.clock.now_millis());
    }

    /// Audit outages that ended since the last call: (tenant, from, to) ms.
    pub fn ended_outages(&self) -> Vec<(TenantId, u64, u64)> {
        std::mem::take(&mut *lock(&self.ended))
    }

    /// Gives back outages whose event could not be stored, for the next flush.
    pub fn restore_outages(&self, outages: Vec<(TenantId, u64, u64)>) {
        lock(&self.ended).extend(outages);
    }

    /// Appends `event` to `tenant`'s trail; returns once it is durable.
    pub async fn record(&self, tenant: &TenantId, event: &Event) -> Result<u64, AuditError> {
        match self.auditor.record(tenant, self.clock.now_millis(), event).await {
            Ok(seq) => Ok(seq),
            Err(e) => {
                self.metrics.audit_failure();
                tracing::error!(tenant = %tenant, kind = event.kind(), error = %e, "audit write failed: the key use is refused");
                Err(e)
            }
        }
    }

    /// Appends a state-change event; if that fails, queues it for the next flush and
    /// refuses requests until it is written.
    pub async fn record_or_queue(&self, tenant: &TenantId, event: Event) {
        let at = self.clock.now_millis();
        if let Err(e) = self.auditor.record(tenant, at, &event).await {
            self.metrics.audit_failure();
            tracing::error!(
                tenant = %tenant, kind = event.kind(), error = %e,
                "audit write failed: the event is queued and the tenant's requests are refused until it is written"
            );
            lock(&self.pending).push((tenant.clone(), at, event));
            self.mark_behind(tenant);
        }
    }

    /// Records a failed provider call: written at once unless an identical failure was
    /// written within the window, in which case it is counted for the aggregate event.
    #[allow(clippy::too_many_arguments, reason = "one call's fields, flattened")]
    pub(crate) async fn record_failure(
        &self,
        tenant: &TenantId,
        operation: &str,
        key: &str,
        region: Option<String>,
        outcome: &str,
        context_digest: String,
        latency_us: u64,
    ) -> Result<(), AuditError> {
        let now = self.clock.now_millis();
        let rk = RepeatKey {
            tenant: tenant.clone(),
            operation: operation.to_owned(),
            key: key.to_owned(),
            outcome: outcome.to_owned(),
            context_digest,
        };
        let expired = {
            let mut repeats = lock(&self.repeats);
            match repeats.get_mut(&rk) {
                Some(r) if now.saturating_sub(r.first_ms) < REPEAT_WINDOW_MS => {
                    r.extra += 1;
                    r.last_ms = now;
                    return Ok(());
                }
                Some(_) => repeats.remove(&rk),
                None => None,
            }
        };
        // The previous window's remainder first, so the trail stays in time order; if it
        // cannot be written, it goes back for the next flush.
        if let Some(old) = expired.filter(|r| r.extra > 0)
            && let Err(e) = self.record(tenant, &aggregate(&rk, &old)).await
        {
            lock(&self.repeats).entry(rk).or_insert(old);
            return Err(e);
        }
        let event = Event::ProviderCall {
            operation: rk.operation.clone(),
            key: rk.key.clone(),
            region: region.clone(),
            context: None,
            context_digest: Some(rk.context_digest.clone()),
            outcome: rk.outcome.clone(),
            latency_us,
            count: 1,
            last_ms: None,
        };
        self.record(tenant, &event).await?;
        let mut repeats = lock(&self.repeats);
        if repeats.len() < MAX_REPEATS {
            repeats.insert(rk, Repeat { region, first_ms: now, last_ms: now, extra: 0, latency_us });
        }
        Ok(())
    }

    /// Writes what is held in memory: queued state events, usage counts (every minute,
    /// the current one included), and aggregated failures whose window closed (every one
    /// with `all`). Whatever cannot be written stays for the next flush, and its tenants'
    /// requests are refused until a flush writes it. Callers run this in a task of its own
    /// (see `Lifecycle::flush`), so a cancelled caller cannot drop what it held.
    pub async fn flush(&self, all: bool) {
        let _one = self.flushing.lock().await;
        let now = self.clock.now_millis();
        let mut behind = HashSet::new();

        let queued = std::mem::take(&mut *lock(&self.pending));
        let mut failed = Vec::new();
        for (tenant, at, event) in queued {
            if self.auditor.record(&tenant, at, &event).await.is_err() {
                behind.insert(tenant.clone());
                failed.push((tenant, at, event));
            }
        }
        if !failed.is_empty() {
            let mut pending = lock(&self.pending);
            failed.append(&mut pending);
            *pending = failed;
        }

        for (tenant, event) in self.usage.drain(now, true) {
            if self.auditor.record(&tenant, now, &event).await.is_err() {
                self.usage.restore(&tenant, &event);
                behind.insert(tenant);
            }
        }

        let closed: Vec<(RepeatKey, Repeat)> = {
            let mut repeats = lock(&self.repeats);
            let keys: Vec<RepeatKey> = repeats
                .iter()
                .filter(|(_, r)| all || now.saturating_sub(r.first_ms) >= REPEAT_WINDOW_MS)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter().filter_map(|k| repeats.remove(&k).map(|r| (k, r))).collect()
        };
        for (k, r) in closed {
            if r.extra == 0 {
                continue;
            }
            if self.auditor.record(&k.tenant, now, &aggregate(&k, &r)).await.is_err() {
                behind.insert(k.tenant.clone());
                lock(&self.repeats).entry(k).or_insert(r);
            }
        }
        if !behind.is_empty() {
            self.metrics.audit_failure();
            tracing::error!(
                tenants = behind.len(),
                "audit flush failed: those tenants' requests are refused until it succeeds"
            );
        }
        // Events queued while this flush ran keep their tenants behind.
        for (t, _, _) in lock(&self.pending).iter() {
            behind.insert(t.clone());
        }
        self.any_behind.store(!behind.is_empty(), Ordering::Relaxed);
        {
            // Outages start when a tenant first falls behind and end when a flush clears it.
            let mut outages = lock(&self.outages);
            for t in &behind {
                outages.entry(t.clone()).or_insert(now);
            }
            let over: Vec<TenantId> = outages.keys().filter(|t| !behind.contains(*t)).cloned().collect();
            let mut ended = lock(&self.ended);
            for t in over {
                if let Some(from) = outages.remove(&t) {
                    ended.push((t, from, now));
                }
            }
        }
        *lock(&self.behind) = behind;
    }
}

/// The event standing for the calls after the first of a window.
fn aggregate(k: &RepeatKey, r: &Repeat) -> Event {
    Event::ProviderCall {
        operation: k.operation.clone(),
        key: k.key.clone(),
        region: r.region.clone(),
        context: None,
        context_digest: Some(k.context_digest.clone()),
        outcome: k.outcome.clone(),
        latency_us: r.latency_us,
        count: r.extra,
        last_ms: Some(r.last_ms),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
