//! The monitor at fleet scale (`scripts/bench fleet`): `FLEET_TENANTS` tenants (default
//! 10,000) with two keys each, watched by three keyhold instances (three lifecycles in
//! this process, each with its own pool, schedule loop, notification listener and flush)
//! sharing one PostgreSQL (`KEYHOLD_BENCH_POSTGRES_URL`, a fresh database). The key
//! provider is a stand-in KMS behind 50 ms of injected latency per call (the latency and
//! the revocations are what the benchmark injects; keyhold's local provider keeps its keys
//! in one file and is not built for tens of thousands).
//!
//! Reports, over `FLEET_INTERVALS` probe intervals of `FLEET_INTERVAL_S` seconds:
//! key-service calls per key per hour across the cluster (against the schedule's 2 per
//! interval), the worst gap between two probes of one tenant, the distribution of the time
//! from a key's revocation (at random moments) to its tenant being refused by each of the
//! three instances, and the instances' memory per tenant.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_precision_loss,
    reason = "a benchmark: a failure stops it with its reason"
)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keyhold_core::{DataKey, EncryptedDataKey, EncryptionContext, KeyRef, RealmId, Region, TenantId};
use keyhold_lifecycle::{Lifecycle, Parts};
use keyhold_provider::{KeyDescription, KeyProvider, ProviderError};
use keyhold_registry::{Cause, KeyCheck, Registry, TenantMode, TenantState};

/// A stand-in KMS: keys `fk-<n>`, every call `latency` late; a revoked key refuses.
struct FleetKms {
    latency: Duration,
    revoked: Mutex<HashSet<String>>,
}

impl FleetKms {
    async fn call(&self, key: &str) -> Result<(), ProviderError> {
        tokio::time::sleep(self.latency).await;
        if self.revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(key) {
            return Err(ProviderError::KeyDisabled {
                key: KeyRef::parse(key).map_err(|_| ProviderError::InvalidRequest(key.into()))?,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl KeyProvider for FleetKms {
    fn name(&self) -> &'static str {
        "fleet"
    }

    fn accepts(&self, key: &KeyRef) -> bool {
        key.as_str().starts_with("fk-")
    }

    fn key_for(&self, edk: &EncryptedDataKey) -> Option<KeyRef> {
        (edk.provider_id == "fleet")
            .then(|| KeyRef::parse(std::str::from_utf8(&edk.provider_info).ok()?).ok())
            .flatten()
    }

    async fn generate_data_key(
        &self,
        key: &KeyRef,
        len: usize,
        _context: &EncryptionContext,
    ) -> Result<(DataKey, EncryptedDataKey), ProviderError> {
        self.call(key.as_str()).await?;
        let mut bytes = vec![0u8; len];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ProviderError::InvalidRequest("no randomness".into()))?;
        let edk = EncryptedDataKey {
            provider_id: "fleet".into(),
            provider_info: key.as_str().as_bytes().to_vec(),
            ciphertext: bytes.iter().map(|b| b ^ 0x5a).collect(),
        };
        Ok((DataKey::from_vec(bytes), edk))
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        data_key: &DataKey,
        _c: &EncryptionContext,
    ) -> Result<EncryptedDataKey, ProviderError> {
        self.call(key.as_str()).await?;
        Ok(EncryptedDataKey {
            provider_id: "fleet".into(),
            provider_info: key.as_str().as_bytes().to_vec(),
            ciphertext: data_key.expose().iter().map(|b| b ^ 0x5a).collect(),
        })
    }

    async fn unwrap(&self, edk: &EncryptedDataKey, _c: &EncryptionContext) -> Result<DataKey, ProviderError> {
        let key = String::from_utf8_lossy(&edk.provider_info).into_owned();
        self.call(&key).await?;
        Ok(DataKey::from_vec(edk.ciphertext.iter().map(|b| b ^ 0x5a).collect()))
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        self.call(key.as_str()).await?;
        Err(ProviderError::InvalidRequest(format!("{key}: not described by the stand-in")))
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().trim_end_matches("kB").trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn instance(url: &str, kms: Arc<FleetKms>, dir: &std::path::Path) -> Arc<Lifecycle> {
    let registry = Registry::connect(url).await.expect("registry");
    let key = Arc::new(keyhold_audit::AuditKey::load_or_create(&dir.join("audit.key")).expect("audit key"));
    let auditor = keyhold_audit::Auditor::new(registry.clone(), key);
    Lifecycle::new(Parts {
        registry,
        auditor,
        providers: vec![kms as Arc<dyn KeyProvider>],
        local: None,
        aws: None,
        catalog: keyhold_onboarding::RealmCatalog::builtin(),
        platform_principal: None,
        settings: keyhold_service::Settings::default(),
        local_region: None,
        clock: Arc::new(keyhold_core::SystemClock),
        limits: Default::default(),
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let url = std::env::var("KEYHOLD_BENCH_POSTGRES_URL")
        .expect("KEYHOLD_BENCH_POSTGRES_URL is not set: run scripts/bench fleet, which starts PostgreSQL");
    let tenants = env_u64("FLEET_TENANTS", 10_000);
    let interval = Duration::from_secs(env_u64("FLEET_INTERVAL_S", 30));
    let intervals = env_u64("FLEET_INTERVALS", 3);
    let revocations = env_u64("FLEET_REVOCATIONS", 20);
    let kms = Arc::new(FleetKms { latency: Duration::from_millis(50), revoked: Mutex::new(HashSet::new()) });
    let dir = tempfile::tempdir().expect("dir");

    // The fleet, written to the registry directly (validation is not what is measured).
    let setup = Instant::now();
    let registry = Registry::connect(&url).await.expect("registry");
    let realm = RealmId::parse("eu").expect("realm");
    let regions = [Region::parse("eu-central-1").expect("region"), Region::parse("eu-west-1").expect("region")];
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..16 {
        let (registry, realm, regions, next) = (registry.clone(), realm.clone(), regions.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= tenants {
                    return;
                }
                let id = TenantId::parse(&format!("t{i}")).expect("tenant");
                registry.create_tenant(&id, &realm, TenantMode::Local, None, 1).await.expect("create");
                for (r, region) in regions.iter().enumerate() {
                    let key = format!("fk-{i}-{r}");
                    registry
                        .attach_key(&id, region, &key, KeyCheck::Valid, "[]", 2, |_| Vec::new())
                        .await
                        .expect("attach");
                }
                let t = registry.tenant(&id).await.expect("read").expect("tenant");
                registry
                    .transition(&t, TenantState::Active, Cause::KeysValidated, None, 3, &[])
                    .await
                    .expect("activate");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    eprintln!("fleet: {tenants} tenants x 2 keys written in {:.0} s", setup.elapsed().as_secs_f64());

    let rss_before = rss_kib();
    let mut lifecycles = Vec::new();
    for _ in 0..3 {
        lifecycles.push(instance(&url, kms.clone(), dir.path()).await);
    }
    let mut tasks = Vec::new();
    for l in &lifecycles {
        tasks.push(keyhold_lifecycle::monitor::spawn(l.clone(), interval));
        if let Some(h) = keyhold_lifecycle::propagation::spawn_listener(l.clone()) {
            tasks.push(h);
        }
        let l2 = l.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                l2.flush(false).await;
            }
        }));
    }
    // Revocations at random moments after the first interval; each instance's view of
    // the tenant is watched until it refuses.
    let started = Instant::now();
    let run_for = interval * u32::try_from(intervals).unwrap_or(3);
    let mut watchers = Vec::new();
    for n in 0..revocations {
        let mut b = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut b);
        let r = u64::from_le_bytes(b);
        let at = interval + Duration::from_millis(r % (run_for - interval).as_millis().max(1) as u64);
        let tenant = (r >> 20) % tenants;
        let (kms, lifecycles) = (kms.clone(), lifecycles.clone());
        watchers.push(tokio::spawn(async move {
            tokio::time::sleep(at).await;
            let key = format!("fk-{tenant}-{}", n % 2);
            let id = TenantId::parse(&format!("t{tenant}")).expect("tenant");
            kms.revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key);
            let revoked = Instant::now();
            let mut times = Vec::new();
            for l in &lifecycles {
                loop {
                    let refused = match l.tenant_view(&id).await {
                        Ok(v) => v.tenant.state == TenantState::Suspended,
                        Err(_) => false,
                    };
                    if refused {
                        times.push(revoked.elapsed().as_secs_f64());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            times
        }));
    }
    tokio::time::sleep(run_for).await;
    let elapsed = started.elapsed();
    let rss_after = rss_kib();
    let (mut probed, mut skipped, mut worst_gap) = (0u64, 0u64, 0u64);
    for l in &lifecycles {
        let (p, s, g) = l.metrics().monitor();
        probed += p;
        skipped += s;
        worst_gap = worst_gap.max(g);
    }
    let mut enforced = Vec::new();
    for w in watchers {
        if let Ok(Ok(t)) = tokio::time::timeout(interval * 2, w).await {
            enforced.extend(t);
        }
    }
    enforced.sort_by(f64::total_cmp);
    let keys = tenants * 2;
    let hours = elapsed.as_secs_f64() / 3600.0;
    let calls_per_key_hour = (probed * 2) as f64 / keys as f64 / hours;
    let expected = 2.0 * 3600.0 / interval.as_secs_f64();
    println!(
        "fleet: {tenants} tenants x 2 keys, 3 instances, interval {} s, 50 ms per key-service call, {:.0} s measured",
        interval.as_secs(),
        elapsed.as_secs_f64()
    );
    println!(
        "  monitor: {:.1} calls per key per hour (schedule: {expected:.0}; ratio {:.2}); {probed} keys probed, {skipped} \
         skipped",
        calls_per_key_hour,
        calls_per_key_hour / expected
    );
    println!(
        "  worst gap between two probes of one tenant: {:.1} s (interval {} s; ratio {:.2})",
        worst_gap as f64 / 1000.0,
        interval.as_secs(),
        worst_gap as f64 / 1000.0 / interval.as_secs_f64()
    );
    println!(
        "  revocation enforced on each instance after (s, {} of {} measurements): p50 {:.2}, p90 {:.2}, max {:.2}",
        enforced.len(),
        revocations * 3,
        percentile(&enforced, 0.5),
        percentile(&enforced, 0.9),
        enforced.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  memory: {:.2} KiB per tenant per instance ({} MiB for 3 instances)",
        rss_after.saturating_sub(rss_before) as f64 / (3 * tenants) as f64,
        rss_after.saturating_sub(rss_before) / 1024
    );
    for t in tasks {
        t.abort();
    }
}
