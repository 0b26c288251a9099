//! Per-tenant limits: request rates per tenant and per service, and a budget of
//! key-service calls per tenant, so one tenant (a new context per record, a flood of bogus
//! ciphertexts) cannot spend the platform's KMS quota or starve the others.
//!
//! Each limit is a token bucket per tenant (or service), in this instance's memory: a
//! rate of `r` per second holds at most `r` tokens (one second's burst); a budget of `b`
//! calls per minute holds at most `b`, refilled at `b / 60` a second. Over a limit a call
//! is refused at once with the seconds until a token is back; nothing waits. Limits are
//! per instance: a cluster of `n` instances admits up to `n` times as much. Every crypto
//! step counts once (a re-encryption decrypts and encrypts: two).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TenantLimits {
    /// Crypto requests per second per tenant.
    pub tenant_per_s: Option<f64>,
    /// Crypto requests per second per service.
    pub service_per_s: Option<f64>,
    /// Key-service calls per minute per tenant (probes excluded: they are keyhold's).
    pub kms_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by name, sharded so concurrent requests rarely share a lock.
#[derive(Debug)]
pub struct Buckets {
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
    /// Tokens a second.
    rate: f64,
    /// Most tokens held.
    burst: f64,
}

/// Names held per shard before idle (full) buckets are dropped.
const SHARD_CAP: usize = 4096;

impl Buckets {
    /// Buckets refilled at `rate` a second, holding at most `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { shards: (0..16).map(|_| Mutex::new(HashMap::new())).collect(), rate, burst: burst.max(1.0) }
    }

    /// Takes a token for `name`, or says how many seconds until one is back.
    pub fn take(&self, name: &str) -> Result<(), u32> {
        let now = Instant::now();
        let shard =
            name.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b))) % self.shards.len();
        let Some(lock) = self.shards.get(shard) else { return Ok(()) };
        let mut map = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= SHARD_CAP && !map.contains_key(name) {
            // Full buckets say nothing: forgetting them changes no answer.
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        // A name seen before costs no allocation.
        if !map.contains_key(name) {
            map.insert(name.to_owned(), Bucket { tokens: self.burst, at: now });
        }
        let Some(b) = map.get_mut(name) else { return Ok(()) };
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = if self.rate > 0.0 { (1.0 - b.tokens) / self.rate } else { 60.0 };
            Err((wait.ceil() as u32).max(1))
        }
    }
}

/// The limits in force.
#[derive(Debug)]
pub struct Limiter {
    tenants: Option<Buckets>,
    services: Option<Buckets>,
    kms: Option<Buckets>,
}

impl Limiter {
    /// The buckets for `limits`.
    pub fn new(limits: TenantLimits) -> Self {
        let per_s = |r: Option<f64>| r.filter(|r| *r > 0.0).map(|r| Buckets::new(r, r));
        Self {
            tenants: per_s(limits.tenant_per_s),
            services: per_s(limits.service_per_s),
            kms: limits.kms_per_minute.filter(|b| *b > 0).map(|b| Buckets::new(f64::from(b) / 60.0, f64::from(b))),
        }
    }

    /// Admits one crypto step of `service` for `tenant`: `Err` names the limit and the
    /// seconds to wait.
    pub fn admit(&self, service: &str, tenant: &str) -> Result<(), (&'static str, u32)> {
        if let Some(b) = &self.services {
            b.take(service).map_err(|s| ("service", s))?;
        }
        if let Some(b) = &self.tenants {
            b.take(tenant).map_err(|s| ("tenant", s))?;
        }
        Ok(())
    }

    /// Admits one key-service call for `tenant`: `Err` is the seconds to wait.
    pub fn admit_kms(&self, tenant: &str) -> Result<(), u32> {
        match &self.kms {
            Some(b) => b.take(tenant),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_the_wait() {
        let b = Buckets::new(2.0, 2.0);
        assert!(b.take("a").is_ok() && b.take("a").is_ok());
        assert_eq!(b.take("a"), Err(1));
        // Another name has its own bucket.
        assert!(b.take("b").is_ok());
        let slow = Buckets::new(1.0 / 60.0, 1.0);
        assert!(slow.take("t").is_ok());
        assert_eq!(slow.take("t"), Err(60));
    }
}
