//! The lifecycle layer used as a library (no HTTP), on SQLite and the local provider:
//! compare-and-set transitions that emit exactly one event under concurrency, the probe
//! deciding on the typed cause, and the journal's aggregation and durability rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use std::future::Future as _;
use std::sync::Arc;

use keyhold_audit::{AuditKey, Auditor, Event};
use keyhold_core::{ManualClock, Region, TenantId};
use keyhold_lifecycle::{Lifecycle, LifecycleError, Parts};
use keyhold_onboarding::RealmCatalog;
use keyhold_provider::KeyProvider;
use keyhold_provider_local::LocalKms;
use keyhold_registry::{Cause, Registry, TenantMode, TenantState};

struct Fx {
    lifecycle: Arc<Lifecycle>,
    local: Arc<LocalKms>,
    _dir: tempfile::TempDir,
}

async fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open_sqlite(&dir.path().join("r.db")).await.unwrap();
    let key = Arc::new(AuditKey::generate().unwrap());
    let local = Arc::new(LocalKms::open(dir.path()).unwrap());
    let providers: Vec<Arc<dyn KeyProvider>> = vec![local.clone()];
    let lifecycle = Lifecycle::new(Parts {
        limits: Default::default(),
        auditor: Auditor::new(registry.clone(), key).with_genesis_rule(),
        registry,
        providers,
        local: Some(local.clone()),
        aws: None,
        catalog: RealmCatalog::builtin(),
        platform_principal: None,
        settings: Default::default(),
        local_region: None,
        clock: Arc::new(ManualClock::new(1_700_000_000_000)),
    });
    Fx { lifecycle, local, _dir: dir }
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

async fn active(f: &Fx, id: &str) -> String {
    f.lifecycle.create_tenant("admin", &tid(id), "de", TenantMode::Local, None).await.unwrap();
    let region = Region::parse("eu-central-1").unwrap();
    let k = f.local.create_key(&region, "").unwrap().key.to_string();
    let out = f.lifecycle.attach_key("admin", &tid(id), &region, &k).await.unwrap();
    assert!(out.report.usable && out.attached);
    assert_eq!(f.lifecycle.tenant(&tid(id)).await.unwrap().state, TenantState::Active);
    k
}

async fn events(f: &Fx, id: &str) -> Vec<Event> {
    f.lifecycle.flush(true).await;
    f.lifecycle.journal().auditor().read(&tid(id), 0, 1000).await.unwrap().into_iter().map(|r| r.event).collect()
}

/// Sixteen tasks all decide on the same read of a tenant: exactly one transition wins,
/// the others get `Conflict`, and the trail holds exactly one event for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transitions_from_one_read_make_one_change_and_one_event() {
    let f = fx().await;
    active(&f, "acme").await;
    let read = f.lifecycle.tenant(&tid("acme")).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (l, t) = (f.lifecycle.clone(), read.clone());
            tokio::spawn(async move { l.transition(&t, TenantState::Suspended, Cause::KeyRefused, Some("x")).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(LifecycleError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    let suspensions = events(&f, "acme")
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::TenantState { to, .. } if to == "suspended"))
        .count();
    assert_eq!(suspensions, 1);
}

/// The probe decides on the stored cause, not the reason's text: a tenant suspended by a
/// probe resumes when its key answers; one suspended by validation waits for validation,
/// whatever its reason says.
#[tokio::test]
async fn probes_resume_only_what_probes_suspended() {
    let f = fx().await;
    active(&f, "acme").await;
    let t = f.lifecycle.tenant(&tid("acme")).await.unwrap();
    // The reason is worded like a probe's, the cause says validation.
    let t = f
        .lifecycle
        .transition(&t, TenantState::Suspended, Cause::ValidationFailed, Some("probe: key refused"))
        .await
        .unwrap();
    f.lifecycle.probe_all().await;
    assert_eq!(f.lifecycle.tenant(&tid("acme")).await.unwrap().state, TenantState::Suspended);
    f.lifecycle.transition(&t, TenantState::Active, Cause::KeysValidated, None).await.unwrap();
    let t = f.lifecycle.tenant(&tid("acme")).await.unwrap();
    f.lifecycle.transition(&t, TenantState::Suspended, Cause::KeyRefused, Some("validation")).await.unwrap();
    let pass = f.lifecycle.probe_all().await;
    assert_eq!(pass.resumed, 1);
    let t = f.lifecycle.tenant(&tid("acme")).await.unwrap();
    assert_eq!((t.state, t.cause), (TenantState::Active, Some(Cause::KeysHealthy)));
}

/// Probes are recorded when their outcome changes, not once per probe.
#[tokio::test]
async fn probes_are_recorded_on_change_only() {
    let f = fx().await;
    let k = active(&f, "acme").await;
    for _ in 0..5 {
        f.lifecycle.probe_all().await;
    }
    f.local.disable_key(&keyhold_core::KeyRef::parse(&k).unwrap()).unwrap();
    for _ in 0..3 {
        f.lifecycle.probe_all().await;
    }
    let probes: Vec<String> = events(&f, "acme")
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::KeyProbe { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(probes, ["ok", "DisabledException"]);
    // And no provider-call event for any of the 16 probe round trips.
    assert!(!events(&f, "acme").await.iter().any(|e| matches!(e, Event::ProviderCall { context: Some(c), .. }
        if c.get("purpose").map(String::as_str) == Some(keyhold_lifecycle::monitor::PROBE_PURPOSE))));
}

/// A caller that goes away (a client disconnecting cancels its request's future) cannot
/// stop a state change half way: the deletion, its event and the shredding of the
/// tenant's local keys all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_caller_cannot_stop_a_deletion_half_way() {
    let f = fx().await;
    let k = active(&f, "acme").await;
    {
        // Polled once, then dropped: what a cancelled request does to its future.
        let id = tid("acme");
        let mut call = std::pin::pin!(f.lifecycle.delete_tenant("admin", &id));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending(), "the deletion had not finished at the first poll");
    }
    let mut deleted = false;
    for _ in 0..100 {
        if f.lifecycle.tenant(&tid("acme")).await.unwrap().state == TenantState::Deleted {
            deleted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(deleted);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let d = f.local.describe_key(&keyhold_core::KeyRef::parse(&k).unwrap()).unwrap();
    assert_eq!(d.state.name(), "PendingDeletion");
    assert!(events(&f, "acme").await.iter().any(|e| matches!(e, Event::TenantState { to, .. } if to == "deleted")));
}
