//! The cluster-wide probe schedule on two instances sharing PostgreSQL, in real time:
//! every tenant's keys are probed once per interval across the cluster (not once per
//! instance), with no gap much longer than the interval; keys real traffic proved are
//! skipped; a revocation is still found within the interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use keyhold_core::KeyRef;
use keyhold_onboarding::RealmCatalog;
use keyhold_server::devcreds;
use keyhold_server::serve::{ServeConfig, build};
use serde_json::json;

use super::{Fixture, fresh_postgres};

/// An instance in real time over `url`, whose data dir (local keystore, credentials) is
/// `dir`'s, which it owns when given.
async fn instance(url: &str, dir: &std::path::Path, own: Option<tempfile::TempDir>) -> Fixture {
    let config = ServeConfig {
        database_url: Some(url.to_owned()),
        probe_interval: None,
        dev: true,
        ..ServeConfig::embedded(dir)
    };
    let (state, _) = build(&config, RealmCatalog::builtin(), Arc::new(keyhold_core::SystemClock)).await.unwrap();
    Fixture {
        state,
        dir: own.unwrap_or_else(|| tempfile::tempdir().unwrap()),
        admin: devcreds::read_key(&devcreds::admin_key_path(dir)).unwrap(),
        dev: devcreds::read_key(&devcreds::service_key_path(dir, "dev")).unwrap(),
        clock: Arc::new(keyhold_core::ManualClock::new(super::now_ms())),
    }
}

fn probes(f: &Fixture) -> (u64, u64, u64) {
    f.state.metrics().monitor()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_probe_each_tenant_once_per_interval() {
    let url = fresh_postgres("keyhold_monitor").await;
    let shared = tempfile::tempdir().unwrap();
    let path = shared.path().to_owned();
    let a = instance(&url, &path, Some(shared)).await;
    let b = instance(&url, &path, None).await;
    // The local provider's keystore is the shared data dir's: both instances see its keys.
    let mut keys = Vec::new();
    for i in 0..12 {
        keys.push(a.active_tenant(&format!("t{i}")).await);
    }
    let interval = Duration::from_millis(800);
    let monitors = [
        keyhold_lifecycle::monitor::spawn(a.state.lifecycle.clone(), interval),
        keyhold_lifecycle::monitor::spawn(b.state.lifecycle.clone(), interval),
    ];
    // One tenant with real traffic: encrypt and decrypt, flushed, throughout.
    let traffic = {
        let a = Arc::new(a);
        let t = a.clone();
        let task = tokio::spawn(async move {
            loop {
                let (s, ct) = t.encrypt("t0", b"x", json!({})).await;
                assert_eq!(s, StatusCode::OK, "{ct}");
                let (s, _) = t.decrypt("t0", &ct["ciphertext"]).await;
                assert_eq!(s, StatusCode::OK);
                t.state.lifecycle.flush(false).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (a, task)
    };
    let (a, traffic_task) = traffic;
    let started = Instant::now();
    tokio::time::sleep(interval * 6).await;
    let elapsed = started.elapsed();
    let (pa, sa, ga) = probes(&a);
    let (pb, sb, gb) = probes(&b);
    let intervals = elapsed.as_secs_f64() / interval.as_secs_f64();
    // 24 keys; t0's home key is proved by traffic (skipped), so about 23 probed an interval.
    let per_key_per_interval = (pa + pb + sa + sb) as f64 / 24.0 / intervals;
    eprintln!(
        "{intervals:.1} intervals: {} keys probed ({pa} by a, {pb} by b), {} skipped; {per_key_per_interval:.2} probes \
         per key per interval; worst gap {} ms (interval {} ms)",
        pa + pb,
        sa + sb,
        ga.max(gb),
        interval.as_millis()
    );
    assert!((0.8..=1.1).contains(&per_key_per_interval), "{per_key_per_interval}");
    assert!(pa > 0 && pb > 0, "both instances take a share: {pa} / {pb}");
    assert!(sa + sb > 0, "traffic proved no key");
    assert!(ga.max(gb) <= interval.as_millis() as u64 * 11 / 10 + 100, "worst gap {} ms", ga.max(gb));
    // A revocation is found within the interval (and enforced by both instances).
    a.local().disable_key(&KeyRef::parse(&keys[5][1]).unwrap()).unwrap();
    let revoked = Instant::now();
    loop {
        let t = a.state.lifecycle.tenant(&keyhold_core::TenantId::parse("t5").unwrap()).await.unwrap();
        if t.state == keyhold_registry::TenantState::Suspended {
            break;
        }
        assert!(
            revoked.elapsed() < interval + Duration::from_millis(1500),
            "not suspended after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("revocation found by the schedule after {:?}", revoked.elapsed());
    traffic_task.abort();
    for m in monitors {
        m.abort();
    }
}
