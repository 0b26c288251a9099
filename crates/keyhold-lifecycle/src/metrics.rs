//! Prometheus metrics in the text exposition format: requests and latency by route and
//! status, key-provider calls by operation and outcome, cache hits and misses, tenants by
//! state, audit write failures. Counters are atomics behind a map keyed by label values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// One route's counters: requests by status and the latency histogram.
#[derive(Default)]
struct Route {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, Route>>,
    provider: Mutex<BTreeMap<(String, String), u64>>,
    audit_failures: AtomicU64,
    key_probes: AtomicU64,
    key_probes_skipped: AtomicU64,
    worst_gap_ms: AtomicU64,
}

impl Metrics {
    /// Counts a request to `route` answered with `status` after `elapsed`.
    /// One lock, and no allocation once the route has been seen.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut routes = lock(&self.routes);
        let h = match routes.get_mut(route) {
            Some(h) => h,
            None => routes.entry(route.to_owned()).or_default(),
        };
        *h.by_status.entry(status).or_default() += 1;
        for (b, bound) in h.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *b += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Counts a key-provider call.
    pub fn provider_call(&self, operation: &str, outcome: &str) {
        *lock(&self.provider).entry((operation.to_owned(), outcome.to_owned())).or_default() += 1;
    }

    /// Counts an audit event that could not be written.
    pub fn audit_failure(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the monitor's keys probed with a round trip (two key-service calls each) and
    /// those real traffic proved (no call).
    pub fn monitor_probe(&self, probed: u64, skipped: u64) {
        self.key_probes.fetch_add(probed, Ordering::Relaxed);
        self.key_probes_skipped.fetch_add(skipped, Ordering::Relaxed);
    }

    /// Notes the gap between two probes of one tenant's keys.
    pub fn monitor_gap(&self, gap_ms: u64) {
        self.worst_gap_ms.fetch_max(gap_ms, Ordering::Relaxed);
    }

    /// (keys probed, keys skipped, worst gap in ms) so far.
    pub fn monitor(&self) -> (u64, u64, u64) {
        (
            self.key_probes.load(Ordering::Relaxed),
            self.key_probes_skipped.load(Ordering::Relaxed),
            self.worst_gap_ms.load(Ordering::Relaxed),
        )
    }

    /// Key-provider calls so far, by (operation, outcome).
    pub fn provider_calls(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.provider).clone()
    }

    /// The exposition text, with the cache counters and tenant counts given.
    pub fn render(&self, cache: &keyhold_service::CacheStats, tenants_by_state: &[(&str, usize)]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP keyhold_requests_total HTTP requests by route and status.");
        let _ = writeln!(out, "# TYPE keyhold_requests_total counter");
        let routes = lock(&self.routes);
        for (route, h) in routes.iter() {
            for (status, n) in &h.by_status {
                let _ = writeln!(out, "keyhold_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# HELP keyhold_request_duration_seconds HTTP request latency by route.");
        let _ = writeln!(out, "# TYPE keyhold_request_duration_seconds histogram");
        for (route, h) in routes.iter() {
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                let _ =
                    writeln!(out, "keyhold_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}");
            }
            let _ =
                writeln!(out, "keyhold_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "keyhold_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum);
            let _ = writeln!(out, "keyhold_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
        }
        drop(routes);
        let _ = writeln!(out, "# HELP keyhold_kms_calls_total Key-provider calls by operation and outcome.");
        let _ = writeln!(out, "# TYPE keyhold_kms_calls_total counter");
        for ((op, outcome), n) in lock(&self.provider).iter() {
            let _ = writeln!(out, "keyhold_kms_calls_total{{operation=\"{op}\",outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP keyhold_cache_total Data-key cache lookups by cache and result.");
        let _ = writeln!(out, "# TYPE keyhold_cache_total counter");
        for (cache_name, result, n) in [
            ("encrypt", "hit", cache.encrypt_hits),
            ("encrypt", "miss", cache.encrypt_misses),
            ("decrypt", "hit", cache.decrypt_hits),
            ("decrypt", "miss", cache.decrypt_misses),
        ] {
            let _ = writeln!(out, "keyhold_cache_total{{cache=\"{cache_name}\",result=\"{result}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP keyhold_tenants Tenants by state.");
        let _ = writeln!(out, "# TYPE keyhold_tenants gauge");
        for (state, n) in tenants_by_state {
            let _ = writeln!(out, "keyhold_tenants{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP keyhold_audit_write_failures_total Audit events that could not be written.");
        let _ = writeln!(out, "# TYPE keyhold_audit_write_failures_total counter");
        let _ = writeln!(out, "keyhold_audit_write_failures_total {}", self.audit_failures.load(Ordering::Relaxed));
        let (probed, skipped, gap) = self.monitor();
        let _ = writeln!(
            out,
            "# HELP keyhold_monitor_key_probes_total Keys this instance probed with a round trip (2 key-service calls each)."
        );
        let _ = writeln!(out, "# TYPE keyhold_monitor_key_probes_total counter");
        let _ = writeln!(out, "keyhold_monitor_key_probes_total {probed}");
        let _ = writeln!(
            out,
            "# HELP keyhold_monitor_key_probes_skipped_total Keys not probed: real traffic generated and decrypted with them within the interval."
        );
        let _ = writeln!(out, "# TYPE keyhold_monitor_key_probes_skipped_total counter");
        let _ = writeln!(out, "keyhold_monitor_key_probes_skipped_total {skipped}");
        let _ = writeln!(
            out,
            "# HELP keyhold_monitor_worst_gap_seconds The longest time between two probes of one tenant's keys this instance saw."
        );
        let _ = writeln!(out, "# TYPE keyhold_monitor_worst_gap_seconds gauge");
        let _ = writeln!(out, "keyhold_monitor_worst_gap_seconds {}", gap as f64 / 1000.0);
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
