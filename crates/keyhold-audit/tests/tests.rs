//! The audit trail on a real registry: chained and signed appends that are never lost
//! (SQLite and PostgreSQL), verification that names an edited, deleted, reordered,
//! truncated, re-chained or erased trail, checkpoints, JSON-lines export and its offline
//! verification (streaming a million events), usage counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::sync::Arc;

use base64::Engine as _;
use keyhold_audit::{
    AuditError, AuditKey, Auditor, ChainBreak, Checkpoint, Event, ExportError, Record, UsageCounter, chain_hash,
    parse_public_key, verify_export,
};
use keyhold_core::{Purpose, TenantId};
use keyhold_registry::{Backend, Registry};

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An auditor on a fresh SQLite registry, with `n` events in `acme`'s trail and one in
/// `globex`'s.
struct Fixture {
    a: Auditor,
    reg: Registry,
    key: Arc<AuditKey>,
    _dir: tempfile::TempDir,
}

async fn auditor_with(n: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open_sqlite(&dir.path().join("r.db")).await.unwrap();
    let key = Arc::new(AuditKey::generate().unwrap());
    let a = Auditor::new(reg.clone(), key.clone());
    for i in 1..=n {
        assert_eq!(a.record(&t("acme"), 1000 + i, &call(i)).await.unwrap(), i);
    }
    a.record(&t("globex"), 5, &Event::AdminAction { actor: "admin".into(), action: "x".into(), detail: None })
        .await
        .unwrap();
    Fixture { a, reg, key, _dir: dir }
}

#[tokio::test]
async fn an_intact_trail_verifies_and_exports() {
    let f = auditor_with(5).await;
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Ok(5));
    assert_eq!(f.a.verify(&t("globex"), true).await.unwrap(), Ok(1));
    assert_eq!(f.a.verify(&t("nobody"), false).await.unwrap(), Ok(0));
    let mut out = Vec::new();
    assert_eq!(f.a.export(&t("acme"), &mut out).await.unwrap(), 5);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    let records: Vec<Record> = lines[..5].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records[0].prev_hash, "0".repeat(64));
    assert_eq!(records[2].event, call(3));
    for w in records.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    // The hash is the documented function of the stored fields, the body among them.
    let body = serde_json::to_string(&call(1)).unwrap();
    assert_eq!(records[0].body, body);
    assert_eq!(records[0].hash, hex(&chain_hash(&[0; 32], 1, 1001, &body)));
    // The last line is the checkpoint, the same one `checkpoint` hands out.
    let line: serde_json::Value = serde_json::from_str(lines[5]).unwrap();
    let cp: Checkpoint = serde_json::from_value(line["checkpoint"].clone()).unwrap();
    assert_eq!(cp, f.a.checkpoint(&t("acme")).await.unwrap());
    assert_eq!((cp.tenant.as_str(), cp.seq, cp.at_ms, cp.hash.as_str()), ("acme", 5, 1005, records[4].hash.as_str()));
    assert_eq!(parse_public_key(&cp.public_key).unwrap(), f.key.public_key());
    assert_eq!(f.a.read(&t("acme"), 3, 10).await.unwrap().len(), 2);
    assert!(matches!(f.a.checkpoint(&t("nobody")).await, Err(AuditError::NoTrail(_))));
    assert!(matches!(f.a.export(&t("nobody"), &mut Vec::new()).await, Err(AuditError::NoTrail(_))));
}

#[tokio::test]
async fn an_edited_event_is_named() {
    let f = auditor_with(5).await;
    let edited = serde_json::to_string(&call(999)).unwrap();
    f.reg
        .execute_raw(&format!("UPDATE audit_events SET body = '{edited}' WHERE tenant_id = 'acme' AND seq = 3"))
        .await
        .unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::Edited { seq: 3 }));
    assert!(matches!(f.a.checkpoint(&t("acme")).await, Err(AuditError::Broken(ChainBreak::Edited { seq: 3 }))));
    // The other tenant's trail is unaffected.
    assert_eq!(f.a.verify(&t("globex"), true).await.unwrap(), Ok(1));
}

#[tokio::test]
async fn a_deleted_event_is_named() {
    let f = auditor_with(5).await;
    f.reg.execute_raw("DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 2").await.unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::Missing { expected: 2, found: 3 }));
}

#[tokio::test]
async fn reordered_events_are_named() {
    let f = auditor_with(5).await;
    // Swap events 2 and 4 (their sequence numbers), keeping each one's own hash.
    f.reg.execute_raw("UPDATE audit_events SET seq = 100 WHERE tenant_id = 'acme' AND seq = 2").await.unwrap();
    f.reg.execute_raw("UPDATE audit_events SET seq = 2 WHERE tenant_id = 'acme' AND seq = 4").await.unwrap();
    f.reg.execute_raw("UPDATE audit_events SET seq = 4 WHERE tenant_id = 'acme' AND seq = 100").await.unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::Unlinked { seq: 2, prev: 1 }));
}

#[tokio::test]
async fn a_deleted_newest_event_is_named() {
    let f = auditor_with(5).await;
    f.reg.execute_raw("DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 5").await.unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::Truncated { last: 4, head: 5 }));
    // And a recomputed, re-chained replacement of the edited event is still caught by the
    // next event's link.
    let f = auditor_with(3).await;
    let body = serde_json::to_string(&call(42)).unwrap();
    let rows = f.reg.audit(&t("acme"), 0, 10).await.unwrap();
    let forged = chain_hash(&rows[0].hash, 2, rows[1].at_ms, &body);
    f.reg
        .execute_raw(&format!(
            "UPDATE audit_events SET body = '{body}', hash = X'{}' WHERE tenant_id = 'acme' AND seq = 2",
            hex(&forged)
        ))
        .await
        .unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::Unlinked { seq: 3, prev: 2 }));
}

/// Deletes `acme`'s events 2 and 3 and re-chains the rest as someone with database access
/// would: renumbered, every hash recomputed with the public chain function, the head
/// moved to the new last event. `sig` is what the forged head is left with.
async fn rechain_without_the_key(reg: &Registry, sig: &str) {
    reg.execute_raw("DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq IN (2, 3)").await.unwrap();
    let rows = reg.audit(&t("acme"), 0, 100).await.unwrap();
    let mut prev = [0u8; 32];
    for (i, row) in rows.iter().enumerate() {
        let seq = i as u64 + 1;
        let hash = chain_hash(&prev, seq, row.at_ms, &row.body);
        reg.execute_raw(&format!(
            "UPDATE audit_events SET seq = {seq}, prev_hash = X'{}', hash = X'{}' WHERE tenant_id = 'acme' AND seq = {}",
            hex(&prev),
            hex(&hash),
            row.seq
        ))
        .await
        .unwrap();
        prev = hash;
    }
    reg.execute_raw(&format!(
        "UPDATE audit_heads SET seq = {}, hash = X'{}', sig = {sig} WHERE tenant_id = 'acme'",
        rows.len(),
        hex(&prev)
    ))
    .await
    .unwrap();
}

/// Regression: the chain was unkeyed, so deleting events and recomputing the chain and the
/// head verified as intact.
#[tokio::test]
async fn a_rechained_trail_is_detected_by_the_head_signature() {
    // Keeping the old head's signature.
    let f = auditor_with(5).await;
    rechain_without_the_key(&f.reg, "sig").await;
    let rows = f.reg.audit(&t("acme"), 0, 100).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let broken = f.a.verify(&t("acme"), true).await.unwrap();
    assert_eq!(broken, Err(ChainBreak::BadSignature { seq: 3 }));
    assert!(broken.unwrap_err().to_string().contains("rewritten by someone without keyhold's audit key"));
    // Removing the signature.
    let f = auditor_with(5).await;
    rechain_without_the_key(&f.reg, "NULL").await;
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::Unsigned { seq: 3 }));
    // Signing with another key.
    let f = auditor_with(5).await;
    rechain_without_the_key(&f.reg, "sig").await;
    let head = f.reg.audit_head(&t("acme")).await.unwrap().unwrap();
    let other = AuditKey::generate().unwrap().sign_head(&t("acme"), 3, &head.hash).unwrap();
    f.reg
        .execute_raw(&format!("UPDATE audit_heads SET sig = X'{}' WHERE tenant_id = 'acme'", hex(&other)))
        .await
        .unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::BadSignature { seq: 3 }));
    // The other tenant's head signature does not transfer either.
    let f = auditor_with(1).await;
    f.reg
        .execute_raw(
            "UPDATE audit_heads SET sig = (SELECT sig FROM audit_heads WHERE tenant_id = 'globex') \
             WHERE tenant_id = 'acme'",
        )
        .await
        .unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::BadSignature { seq: 1 }));
}

/// Regression: deleting a tenant's whole trail verified as `ok, events: 0`.
#[tokio::test]
async fn a_trail_deleted_whole_is_detected() {
    let f = auditor_with(5).await;
    f.reg.execute_raw("DELETE FROM audit_events WHERE tenant_id = 'acme'").await.unwrap();
    f.reg.execute_raw("DELETE FROM audit_heads WHERE tenant_id = 'acme'").await.unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::Erased));
    // Events without their head, and a head without its events.
    let f = auditor_with(5).await;
    f.reg.execute_raw("DELETE FROM audit_heads WHERE tenant_id = 'acme'").await.unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::HeadMissing { last: 5 }));
    let f = auditor_with(5).await;
    f.reg.execute_raw("DELETE FROM audit_events WHERE tenant_id = 'acme'").await.unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::Truncated { last: 0, head: 5 }));
}

#[tokio::test]
async fn an_event_added_beyond_the_signed_head_is_detected() {
    let f = auditor_with(3).await;
    let rows = f.reg.audit(&t("acme"), 0, 10).await.unwrap();
    let body = serde_json::to_string(&call(4)).unwrap();
    let hash = chain_hash(&rows[2].hash, 4, 2000, &body);
    f.reg
        .execute_raw(&format!(
            "INSERT INTO audit_events (tenant_id, seq, at_ms, body, prev_hash, hash) \
             VALUES ('acme', 4, 2000, '{body}', X'{}', X'{}')",
            hex(&rows[2].hash),
            hex(&hash)
        ))
        .await
        .unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Err(ChainBreak::BeyondHead { seq: 4, head: 3 }));
}

/// The documented limit: with database write access and a copy of an old trail and its
/// signed head, the trail can be rolled back so that it verifies; a checkpoint the tenant
/// took before exposes it, its sequence number being beyond the head.
#[tokio::test]
async fn a_rollback_verifies_but_a_kept_checkpoint_exposes_it() {
    let f = auditor_with(3).await;
    let old = f.reg.audit_head(&t("acme")).await.unwrap().unwrap();
    f.a.record(&t("acme"), 2000, &call(4)).await.unwrap();
    let kept = f.a.checkpoint(&t("acme")).await.unwrap();
    f.reg.execute_raw("DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 4").await.unwrap();
    f.reg
        .execute_raw(&format!(
            "UPDATE audit_heads SET seq = 3, hash = X'{}', sig = X'{}' WHERE tenant_id = 'acme'",
            hex(&old.hash),
            hex(old.sig.as_deref().unwrap())
        ))
        .await
        .unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Ok(3));
    let now = f.a.checkpoint(&t("acme")).await.unwrap();
    assert!(now.seq < kept.seq, "the kept checkpoint (event {}) is beyond the trail's head ({})", kept.seq, now.seq);
}

#[tokio::test]
async fn a_verification_running_while_events_are_appended_succeeds() {
    let f = auditor_with(2500).await;
    let writer = {
        let a = f.a.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                a.record(&t("acme"), 10_000 + i, &call(i)).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    for _ in 0..5 {
        let n = f.a.verify(&t("acme"), true).await.unwrap().unwrap();
        assert!((2500..=2700).contains(&n), "{n}");
    }
    writer.await.unwrap();
    assert_eq!(f.a.verify(&t("acme"), true).await.unwrap(), Ok(2700));
}

/// The database for the concurrency test on `backend`, with the directory that must outlive
/// it (SQLite).
async fn database(backend: Backend) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("r.db").display()),
        Backend::Postgres => {
            use sqlx::Connection as _;
            let base = std::env::var("KEYHOLD_TEST_POSTGRES_URL").expect(
                "KEYHOLD_TEST_POSTGRES_URL is not set, so no PostgreSQL is running for this test; run scripts/test, \
                 which starts one",
            );
            let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
            let name = format!("keyhold_audit_test_{}", std::process::id());
            sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            format!("{prefix}/{name}")
        }
    };
    (url, dir)
}

/// Regression: under 32 concurrent writers on one PostgreSQL tenant about 40% of the events
/// were lost (appends gave up after eight immediate retries). Two keyhold instances (two
/// registry pools) with 16 writers each now record all 1,600 events, and the trail
/// verifies.
async fn concurrent_writers_from_two_instances_lose_no_event(backend: Backend) {
    const TASKS: u64 = 16;
    const EACH: u64 = 50;
    let (url, _dir) = database(backend).await;
    let key = Arc::new(AuditKey::generate().unwrap());
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(Auditor::new(Registry::connect(&url).await.unwrap(), key.clone()));
    }
    let tasks: Vec<_> = instances
        .iter()
        .flat_map(|a| (0..TASKS).map(move |i| (a.clone(), i)))
        .map(|(a, i)| {
            tokio::spawn(async move {
                for n in 0..EACH {
                    a.record(&t("acme"), i * 1000 + n, &call(n)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total = 2 * TASKS * EACH;
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = instances[0].read(&t("acme"), after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        seqs.extend(page.iter().map(|r| r.seq));
    }
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    assert_eq!(instances[1].verify(&t("acme"), true).await.unwrap(), Ok(total));
}

mod concurrency {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_concurrent_writers_from_two_instances_lose_no_event() {
        super::concurrent_writers_from_two_instances_lose_no_event(keyhold_registry::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_concurrent_writers_from_two_instances_lose_no_event() {
        super::concurrent_writers_from_two_instances_lose_no_event(keyhold_registry::Backend::Postgres).await;
    }
}

/// An export's lines, to be tampered with.
async fn exported(f: &Fixture) -> Vec<String> {
    let mut out = Vec::new();
    f.a.export(&t("acme"), &mut out).await.unwrap();
    String::from_utf8(out).unwrap().lines().map(str::to_owned).collect()
}

fn verify_lines(lines: &[String], key: &[u8; 32]) -> Result<keyhold_audit::ExportVerification, ExportError> {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    verify_export(text.as_bytes(), key)
}

/// Changes field `field` of line `i` (an event record) with `f`.
fn edit(lines: &[String], i: usize, f: impl FnOnce(&mut serde_json::Value)) -> Vec<String> {
    let mut lines = lines.to_vec();
    let mut v: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
    f(&mut v);
    lines[i] = v.to_string();
    lines
}

#[tokio::test]
async fn an_export_verifies_offline_and_every_tampering_is_named() {
    let f = auditor_with(5).await;
    let lines = exported(&f).await;
    assert_eq!(lines.len(), 6);
    let pk = f.key.public_key();
    let ok = verify_lines(&lines, &pk).unwrap();
    assert_eq!((ok.tenant.as_str(), ok.events, ok.head_seq), ("acme", 5, 5));

    let without = |i: usize| -> Vec<String> {
        let mut l = lines.clone();
        l.remove(i);
        l
    };
    let other = AuditKey::generate().unwrap();
    let other_pk = base64::engine::general_purpose::STANDARD.encode(other.public_key());
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    let mut trailing = lines.clone();
    trailing.push(lines[0].clone());
    let mut garbage = lines.clone();
    garbage[3] = "{not json".to_owned();
    let edited_body = edit(&lines, 1, |v| v["body"] = serde_json::to_string(&call(77)).unwrap().into());
    let edited_event = edit(&lines, 1, |v| v["event"] = serde_json::to_value(call(77)).unwrap());
    let bad_hash = edit(&lines, 1, |v| v["hash"] = "xyz".into());
    let other_tenant = edit(&lines, 2, |v| v["tenant"] = "globex".into());
    let named_other_key = edit(&lines, 5, |v| v["checkpoint"]["public_key"] = other_pk.clone().into());
    let checkpoint_moved = edit(&lines, 5, |v| v["checkpoint"]["at_ms"] = 1.into());

    type Check = fn(&Result<keyhold_audit::ExportVerification, ExportError>) -> bool;
    let cases: Vec<(&str, Vec<String>, [u8; 32], Check)> = vec![
        ("a middle event dropped", without(2), pk, |r| {
            matches!(r, Err(ExportError::Chain { line: 3, source: ChainBreak::Missing { expected: 3, found: 4 } }))
        }),
        ("the last event dropped", without(4), pk, |r| {
            matches!(r, Err(ExportError::CheckpointMismatch { checkpoint: 5, last: 4 }))
        }),
        ("the checkpoint dropped", without(5), pk, |r| matches!(r, Err(ExportError::MissingCheckpoint))),
        ("an event's body edited", edited_body, pk, |r| {
            matches!(r, Err(ExportError::Chain { line: 2, source: ChainBreak::Edited { seq: 2 } }))
        }),
        ("an event's readable copy edited", edited_event, pk, |r| {
            matches!(r, Err(ExportError::Chain { line: 2, source: ChainBreak::Edited { seq: 2 } }))
        }),
        ("two events swapped", swapped, pk, |r| {
            matches!(r, Err(ExportError::Chain { line: 2, source: ChainBreak::Missing { expected: 2, found: 3 } }))
        }),
        ("another key trusted", lines.clone(), other.public_key(), |r| {
            matches!(r, Err(ExportError::UntrustedKey { .. }))
        }),
        ("the file names the trusted key", named_other_key, other.public_key(), |r| {
            matches!(r, Err(ExportError::CheckpointSignature))
        }),
        ("the checkpoint's time changed", checkpoint_moved, pk, |r| {
            matches!(r, Err(ExportError::CheckpointMismatch { checkpoint: 5, last: 5 }))
        }),
        ("a line after the checkpoint", trailing, pk, |r| matches!(r, Err(ExportError::AfterCheckpoint { line: 7 }))),
        ("a line that is not JSON", garbage, pk, |r| matches!(r, Err(ExportError::BadLine { line: 4, .. }))),
        ("a hash that is not hex", bad_hash, pk, |r| {
            matches!(r, Err(ExportError::BadField { line: 2, field: "hash" }))
        }),
        ("another tenant's event", other_tenant, pk, |r| matches!(r, Err(ExportError::OtherTenant { line: 3, .. }))),
        ("an empty file", Vec::new(), pk, |r| matches!(r, Err(ExportError::MissingCheckpoint))),
    ];
    for (what, lines, key, check) in cases {
        let r = verify_lines(&lines, &key);
        assert!(check(&r), "{what}: {r:?}");
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn an_overlong_line_is_refused_without_buffering_it() {
    let mut huge = vec![b'x'; keyhold_audit::MAX_LINE + 10];
    huge.push(b'\n');
    let r = verify_export(huge.as_slice(), &[0; 32]);
    assert!(matches!(r, Err(ExportError::LineTooLong { line: 1 })), "{r:?}");
}

/// An export of `n` events generated on the fly, line by line, as [`Auditor::export`]
/// writes it: a file of any length without the disk or memory to hold it. Every event is
/// the same admin action (at its own time, so every hash differs), serialized once, so that
/// generating the file costs little beside verifying it.
struct SyntheticExport<'a> {
    key: &'a AuditKey,
    n: u64,
    seq: u64,
    prev: [u8; 32],
    at_ms: u64,
    event: String,
    body: String,
    body_quoted: String,
    line: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<'a> SyntheticExport<'a> {
    fn new(key: &'a AuditKey, n: u64) -> Self {
        let event = Event::AdminAction {
            actor: "tenant-admin:acme".into(),
            action: "attach_key".into(),
            detail: Some("arn:aws:kms:eu-central-1:111122223333:key/k".into()),
        };
        let body = serde_json::to_string(&event).unwrap();
        let body_quoted = serde_json::to_string(&body).unwrap();
        let event = serde_json::to_string(&serde_json::to_value(&event).unwrap()).unwrap();
        Self {
            key,
            n,
            seq: 0,
            prev: [0; 32],
            at_ms: 0,
            event,
            body,
            body_quoted,
            line: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    fn refill(&mut self) {
        use std::io::Write as _;
        self.line.clear();
        self.pos = 0;
        if self.seq < self.n {
            self.seq += 1;
            self.at_ms = 1_700_000_000_000 + self.seq;
            let hash = chain_hash(&self.prev, self.seq, self.at_ms, &self.body);
            writeln!(
                self.line,
                r#"{{"tenant":"acme","seq":{},"at_ms":{},"event":{},"body":{},"prev_hash":"{}","hash":"{}"}}"#,
                self.seq,
                self.at_ms,
                self.event,
                self.body_quoted,
                fast_hex(&self.prev),
                fast_hex(&hash)
            )
            .unwrap();
            self.prev = hash;
        } else if !self.done {
            self.done = true;
            let b64 = base64::engine::general_purpose::STANDARD;
            let checkpoint = Checkpoint {
                tenant: "acme".into(),
                seq: self.seq,
                hash: hex(&self.prev),
                at_ms: self.at_ms,
                signature: b64.encode(self.key.sign_head(&t("acme"), self.seq, &self.prev).unwrap()),
                public_key: b64.encode(self.key.public_key()),
            };
            serde_json::to_writer(&mut self.line, &serde_json::json!({ "checkpoint": checkpoint })).unwrap();
            self.line.push(b'\n');
        }
    }
}

fn fast_hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = Vec::with_capacity(64);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)]);
        s.push(DIGITS[usize::from(b & 15)]);
    }
    String::from_utf8(s).unwrap()
}

impl Read for SyntheticExport<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.line.len() {
            self.refill();
        }
        let n = out.len().min(self.line.len() - self.pos);
        out[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// A million-event export (about 500 MB of JSON lines) verifies streaming: the peak
/// resident size grows by a few MiB at most, where holding the trail would take gigabytes.
#[test]
fn a_synthetic_export_is_a_valid_export() {
    let key = AuditKey::generate().unwrap();
    let mut text = String::new();
    SyntheticExport::new(&key, 3).read_to_string(&mut text).unwrap();
    let first: Record = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!((first.seq, first.prev_hash.as_str()), (1, "0".repeat(64).as_str()));
    let v = verify_export(text.as_bytes(), &key.public_key()).unwrap();
    assert_eq!((v.events, v.head_seq), (3, 3));
}

#[test]
fn a_million_event_export_verifies_in_bounded_memory() {
    const N: u64 = 1_000_000;
    let key = AuditKey::generate().unwrap();
    // The size of one record line, for the report: two events' export less one's.
    let size = |n| {
        let mut out = Vec::new();
        SyntheticExport::new(&key, n).read_to_end(&mut out).unwrap();
        out.len() as u64
    };
    let record_bytes = size(2) - size(1);
    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let verified = verify_export(BufReader::new(SyntheticExport::new(&key, N)), &key.public_key()).unwrap();
    let elapsed = started.elapsed();
    let after = peak_rss_kib();
    assert_eq!((verified.events, verified.head_seq), (N, N));
    let growth = after.saturating_sub(before);
    println!(
        "{N} events (~{} MB) verified in {elapsed:.1?}; peak RSS {before} KiB before, {after} KiB after (+{growth} KiB)",
        record_bytes * N / 1_000_000
    );
    assert!(growth < 32 * 1024, "peak RSS grew by {growth} KiB");
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
