//! Per-minute usage counts: encrypt and decrypt operations per tenant, purpose and
//! service, kept in memory and drained into [`Event::Usage`] events (a finished minute's,
//! or with `all` every minute's counts so far, for a flush that must lose nothing on a
//! crash); counts whose write failed are put back with [`UsageCounter::restore`].
//!
//! Counting is on every request's path, so it does not allocate once a (tenant, purpose,
//! service) has been seen: the map is keyed by one string built in a per-thread buffer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

use keyhold_core::{Purpose, TenantId};

use crate::Event;

const MINUTE_MS: u64 = 60_000;
const SEP: char = '\u{1f}';

#[derive(Clone, Copy)]
struct Minute {
    start_ms: u64,
    encrypts: u64,
    decrypts: u64,
}

/// Counts operations; [`UsageCounter::drain`] returns the finished minutes' events.
#[derive(Default)]
pub struct UsageCounter {
    counts: Mutex<HashMap<String, Vec<Minute>>>,
}

thread_local! {
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

impl UsageCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `n` encryptions at `now_ms`.
    pub fn encrypted(&self, tenant: &TenantId, purpose: &Purpose, service: &str, now_ms: u64, n: u64) {
        self.add(tenant, purpose, service, now_ms, n, 0);
    }

    /// Counts `n` decryptions at `now_ms`.
    pub fn decrypted(&self, tenant: &TenantId, purpose: &Purpose, service: &str, now_ms: u64, n: u64) {
        self.add(tenant, purpose, service, now_ms, 0, n);
    }

    /// Puts back the counts of a drained event whose write failed, so the next flush
    /// writes them.
    pub fn restore(&self, tenant: &TenantId, event: &Event) {
        if let Event::Usage { minute_ms, purpose, service, encrypts, decrypts } = event
            && let Ok(purpose) = Purpose::parse(purpose)
        {
            self.add(tenant, &purpose, service, *minute_ms, *encrypts, *decrypts);
        }
    }

    fn add(&self, tenant: &TenantId, purpose: &Purpose, service: &str, now_ms: u64, enc: u64, dec: u64) {
        let start_ms = now_ms - now_ms % MINUTE_MS;
        KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(tenant.as_str());
            key.push(SEP);
            key.push_str(purpose.as_str());
            key.push(SEP);
            key.push_str(service);
            let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let minutes = match counts.get_mut(key.as_str()) {
                Some(m) => m,
                None => counts.entry(key.clone()).or_default(),
            };
            match minutes.iter_mut().find(|m| m.start_ms == start_ms) {
                Some(m) => {
                    m.encrypts += enc;
                    m.decrypts += dec;
                }
                None => minutes.push(Minute { start_ms, encrypts: enc, decrypts: dec }),
            }
        });
    }

    /// Removes and returns the counts of every minute that ended at or before `now_ms`
    /// (or of every minute, with `all`), as (tenant, event) pairs ordered by tenant,
    /// minute, purpose and service.
    pub fn drain(&self, now_ms: u64, all: bool) -> Vec<(TenantId, Event)> {
        let current = now_ms - now_ms % MINUTE_MS;
        let mut out = Vec::new();
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.retain(|key, minutes| {
            let mut parts = key.split(SEP);
            let (Some(t), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else { return false };
            let Ok(tenant) = TenantId::parse(t) else { return false };
            minutes.retain(|m| {
                if all || m.start_ms < current {
                    out.push((
                        tenant.clone(),
                        m.start_ms,
                        Event::Usage {
                            minute_ms: m.start_ms,
                            purpose: p.to_owned(),
                            service: s.to_owned(),
                            encrypts: m.encrypts,
                            decrypts: m.decrypts,
                        },
                    ));
                    false
                } else {
                    true
                }
            });
            !minutes.is_empty()
        });
        drop(counts);
        out.sort_by(|a, b| (a.0.as_str(), a.1, usage_key(&a.2)).cmp(&(b.0.as_str(), b.1, usage_key(&b.2))));
        out.into_iter().map(|(t, _, e)| (t, e)).collect()
    }
}

fn usage_key(e: &Event) -> (&str, &str) {
    match e {
        Event::Usage { purpose, service, .. } => (purpose, service),
        _ => ("", ""),
    }
}
