//! Per-minute usage counts: encrypt and decrypt operations per tenant, purpose and
//! service, kept in memory and drained into [`Event::Usage`] events once a minute is over.

use std::collections::HashMap;
use std::sync::Mutex;

use keyhold_core::{Purpose, TenantId};

use crate::Event;

const MINUTE_MS: u64 = 60_000;

#[derive(Default, Clone, Copy)]
struct Counts {
    encrypts: u64,
    decrypts: u64,
}

type Key = (TenantId, Purpose, String, u64);

/// Counts operations; [`UsageCounter::drain`] returns the finished minutes' events.
#[derive(Default)]
pub struct UsageCounter {
    counts: Mutex<HashMap<Key, Counts>>,
}

impl UsageCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `n` encryptions at `now_ms`.
    pub fn encrypted(&self, tenant: &TenantId, purpose: &Purpose, service: &str, now_ms: u64, n: u64) {
        self.add(tenant, purpose, service, now_ms, |c| c.encrypts += n);
    }

    /// Counts `n` decryptions at `now_ms`.
    pub fn decrypted(&self, tenant: &TenantId, purpose: &Purpose, service: &str, now_ms: u64, n: u64) {
        self.add(tenant, purpose, service, now_ms, |c| c.decrypts += n);
    }

    fn add(&self, tenant: &TenantId, purpose: &Purpose, service: &str, now_ms: u64, f: impl FnOnce(&mut Counts)) {
        let minute = now_ms - now_ms % MINUTE_MS;
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(counts.entry((tenant.clone(), purpose.clone(), service.to_owned(), minute)).or_default());
    }

    /// Removes and returns the counts of every minute that ended at or before `now_ms`
    /// (or of every minute, with `all`), as (tenant, event) pairs in a stable order.
    pub fn drain(&self, now_ms: u64, all: bool) -> Vec<(TenantId, Event)> {
        let current = now_ms - now_ms % MINUTE_MS;
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut done: Vec<Key> = counts.keys().filter(|k| all || k.3 < current).cloned().collect();
        done.sort_by(|a, b| (a.0.as_str(), a.3, a.1.as_str(), &a.2).cmp(&(b.0.as_str(), b.3, b.1.as_str(), &b.2)));
        done.into_iter()
            .filter_map(|k| {
                let c = counts.remove(&k)?;
                Some((
                    k.0,
                    Event::Usage {
                        minute_ms: k.3,
                        purpose: k.1.to_string(),
                        service: k.2,
                        encrypts: c.encrypts,
                        decrypts: c.decrypts,
                    },
                ))
            })
            .collect()
    }
}
