//! The audit trail on a real registry (SQLite): chained appends, verification that names
//! an edited, deleted, reordered or truncated event, JSON-lines export, usage counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::collections::BTreeMap;

use keyhold_audit::{Auditor, ChainBreak, Event, Record, UsageCounter, chain_hash};
use keyhold_core::{Purpose, TenantId};
use keyhold_registry::Registry;

fn t(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn call(n: u64) -> Event {
    Event::ProviderCall {
        operation: "GenerateDataKey".into(),
        key: "arn:aws:kms:eu-central-1:111122223333:key/k".into(),
        region: Some("eu-central-1".into()),
        context: Some(BTreeMap::from([("tenant".to_owned(), "acme".to_owned())])),
        context_digest: None,
        outcome: "ok".into(),
        latency_us: n,
        count: 1,
        last_ms: None,
    }
}

async fn auditor_with(n: u64) -> (Auditor, Registry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open_sqlite(&dir.path().join("r.db")).await.unwrap();
    let a = Auditor::new(reg.clone());
    for i in 1..=n {
        assert_eq!(a.record(&t("acme"), 1000 + i, &call(i)).await.unwrap(), i);
    }
    a.record(&t("globex"), 5, &Event::AdminAction { actor: "admin".into(), action: "x".into(), detail: None })
        .await
        .unwrap();
    (a, reg, dir)
}

#[tokio::test]
async fn an_intact_trail_verifies_and_exports() {
    let (a, _reg, _dir) = auditor_with(5).await;
    assert_eq!(a.verify(&t("acme")).await.unwrap(), Ok(5));
    assert_eq!(a.verify(&t("globex")).await.unwrap(), Ok(1));
    assert_eq!(a.verify(&t("nobody")).await.unwrap(), Ok(0));
    let mut out = Vec::new();
    assert_eq!(a.export(&t("acme"), &mut out).await.unwrap(), 5);
    let records: Vec<Record> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 5);
    assert_eq!(records[0].prev_hash, "0".repeat(64));
    assert_eq!(records[2].event, call(3));
    for w in records.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    // The hash is the documented function of the stored fields.
    let body = serde_json::to_string(&call(1)).unwrap();
    let h = chain_hash(&[0; 32], 1, 1001, &body);
    assert_eq!(records[0].hash, h.iter().map(|b| format!("{b:02x}")).collect::<String>());
    assert_eq!(a.read(&t("acme"), 3, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_edited_event_is_named() {
    let (a, reg, _dir) = auditor_with(5).await;
    let edited = serde_json::to_string(&call(999)).unwrap();
    reg.execute_raw(&format!("UPDATE audit_events SET body = '{edited}' WHERE tenant_id = 'acme' AND seq = 3"))
        .await
        .unwrap();
    assert_eq!(a.verify(&t("acme")).await.unwrap(), Err(ChainBreak::Edited { seq: 3 }));
    // The other tenant's trail is unaffected.
    assert_eq!(a.verify(&t("globex")).await.unwrap(), Ok(1));
}

#[tokio::test]
async fn a_deleted_event_is_named() {
    let (a, reg, _dir) = auditor_with(5).await;
    reg.execute_raw("DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 2").await.unwrap();
    assert_eq!(a.verify(&t("acme")).await.unwrap(), Err(ChainBreak::Missing { expected: 2, found: 3 }));
}

#[tokio::test]
async fn reordered_events_are_named() {
    let (a, reg, _dir) = auditor_with(5).await;
    // Swap events 2 and 4 (their sequence numbers), keeping each one's own hash.
    reg.execute_raw("UPDATE audit_events SET seq = 100 WHERE tenant_id = 'acme' AND seq = 2").await.unwrap();
    reg.execute_raw("UPDATE audit_events SET seq = 2 WHERE tenant_id = 'acme' AND seq = 4").await.unwrap();
    reg.execute_raw("UPDATE audit_events SET seq = 4 WHERE tenant_id = 'acme' AND seq = 100").await.unwrap();
    assert_eq!(a.verify(&t("acme")).await.unwrap(), Err(ChainBreak::Unlinked { seq: 2, prev: 1 }));
}

#[tokio::test]
async fn a_deleted_newest_event_is_named() {
    let (a, reg, _dir) = auditor_with(5).await;
    reg.execute_raw("DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 5").await.unwrap();
    assert_eq!(a.verify(&t("acme")).await.unwrap(), Err(ChainBreak::Truncated { last: 4, head: 5 }));
    // And a recomputed, re-chained replacement of the edited event is still caught by the
    // next event's link.
    let (a, reg, _dir) = auditor_with(3).await;
    let body = serde_json::to_string(&call(42)).unwrap();
    let rows = reg.audit(&t("acme"), 0, 10).await.unwrap();
    let forged = chain_hash(&rows[0].hash, 2, rows[1].at_ms, &body);
    let hex: String = forged.iter().map(|b| format!("{b:02x}")).collect();
    reg.execute_raw(&format!(
        "UPDATE audit_events SET body = '{body}', hash = X'{hex}' WHERE tenant_id = 'acme' AND seq = 2"
    ))
    .await
    .unwrap();
    assert_eq!(a.verify(&t("acme")).await.unwrap(), Err(ChainBreak::Unlinked { seq: 3, prev: 2 }));
}

#[test]
fn usage_is_counted_per_minute_purpose_and_service() {
    let u = UsageCounter::new();
    let p = Purpose::parse("billing").unwrap();
    let q = Purpose::parse("hr").unwrap();
    u.encrypted(&t("acme"), &p, "api", 60_000, 3);
    u.decrypted(&t("acme"), &p, "api", 119_999, 2);
    u.encrypted(&t("acme"), &q, "api", 70_000, 1);
    u.encrypted(&t("acme"), &p, "api", 120_000, 7);
    // At 125 s, only the minute starting at 60 s is over.
    let done = u.drain(125_000, false);
    assert_eq!(done.len(), 2);
    assert_eq!(
        done[0].1,
        Event::Usage { minute_ms: 60_000, purpose: "billing".into(), service: "api".into(), encrypts: 3, decrypts: 2 }
    );
    assert!(matches!(&done[1].1, Event::Usage { purpose, encrypts: 1, .. } if purpose == "hr"));
    let rest = u.drain(125_000, true);
    assert!(matches!(&rest[..], [(_, Event::Usage { minute_ms: 120_000, encrypts: 7, .. })]));
    assert!(u.drain(10_000_000, true).is_empty());
}
