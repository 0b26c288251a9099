//! One suite, run against both backends: SQLite in a temp dir, and a fresh database on the
//! PostgreSQL server the test command starts (`KEYHOLD_TEST_POSTGRES_URL`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use std::sync::Arc;

use keyhold_core::{Purpose, RealmId, Region, TenantId};
use keyhold_registry::{
    AuditHead, Backend, Cause, EventFilter, KeyCheck, KeyStatus, NewEvent, Purposes, Registry, RegistryError,
    TenantMode, TenantState,
};

/// A registry on `backend`, with the directory that must outlive it (SQLite).
async fn registry(backend: Backend) -> (Registry, tempfile::TempDir) {
    let (url, dir) = database(backend).await;
    let reg = Registry::connect(&url).await.unwrap();
    assert_eq!(reg.backend(), backend);
    (reg, dir)
}

/// The URL of a new, empty database on `backend`, with the directory that must outlive it
/// (SQLite).
async fn database(backend: Backend) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("registry.db").display()),
        Backend::Postgres => fresh_postgres_db().await,
    };
    (url, dir)
}

/// A new, empty database on the test server.
async fn fresh_postgres_db() -> String {
    let base = std::env::var("KEYHOLD_TEST_POSTGRES_URL").expect(
        "KEYHOLD_TEST_POSTGRES_URL is not set, so no PostgreSQL is running for this test; run scripts/test, \
         which starts one",
    );
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let name = format!("keyhold_test_{}_{}", std::process::id(), next());
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

fn next() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

fn t(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn realm(s: &str) -> RealmId {
    RealmId::parse(s).unwrap()
}

/// A test chain function: the real one (SHA-256 over a canonical encoding) is
/// `keyhold-audit`'s; storage only needs a deterministic function of its inputs.
fn chain(prev: &[u8; 32], seq: u64, at: u64, body: &str) -> [u8; 32] {
    let mut h = [0u8; 32];
    for (i, b) in prev.iter().chain(&seq.to_be_bytes()).chain(&at.to_be_bytes()).chain(body.as_bytes()).enumerate() {
        h[i % 32] = h[i % 32].rotate_left(3) ^ b;
    }
    h
}

/// A test signature: storage keeps whatever bytes it is given beside the head.
fn sign(_prev: Option<&AuditHead>, seq: u64, hash: &[u8; 32]) -> Option<Vec<u8>> {
    let mut s = seq.to_be_bytes().to_vec();
    s.extend_from_slice(hash);
    Some(s)
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(keyhold_registry::Backend::Sqlite).await; })+
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(keyhold_registry::Backend::Postgres).await; })+
        }
    };
}

both!(
    tenant_lifecycle,
    key_history,
    service_identities,
    audit_is_chained_and_paged,
    concurrent_appends_chain,
    appends_from_two_instances_are_never_lost,
    events_are_stored_with_their_change_or_not_at_all,
    a_reader_paging_events_never_skips_one,
    deliveries_are_queued_with_their_event_and_claimed_once,
    probes_are_claimed_by_one_instance_at_a_time,
    a_realm_change_and_a_key_attached_at_once_never_both_land,
);

async fn tenant_lifecycle(backend: Backend) {
    let (reg, _dir) = registry(backend).await;
    let acme = reg.create_tenant(&t("acme"), &realm("eu"), TenantMode::Cmk, None, 1000).await.unwrap();
    assert_eq!((acme.state, acme.mode, acme.created_ms), (TenantState::Pending, TenantMode::Cmk, 1000));
    assert!(matches!(
        reg.create_tenant(&t("acme"), &realm("us"), TenantMode::Byok, None, 2000).await,
        Err(RegistryError::TenantExists(_))
    ));
    let g = reg
        .create_tenant(&t("globex"), &realm("us"), TenantMode::Byok, Some("arn:aws:iam::111122223333:role/k"), 1500)
        .await
        .unwrap();
    assert_eq!(reg.tenant(&t("globex")).await.unwrap().unwrap(), g);
    assert_eq!(g.role_arn.as_deref(), Some("arn:aws:iam::111122223333:role/k"));
    let ids: Vec<String> = reg.tenants().await.unwrap().into_iter().map(|t| t.id.to_string()).collect();
    assert_eq!(ids, ["acme", "globex"]);
    assert_eq!(reg.tenant(&t("acme")).await.unwrap().unwrap(), acme);
    assert_eq!(reg.tenant(&t("nobody")).await.unwrap(), None);

    // Transitions are compare-and-set on (state, version): a stale copy loses.
    let s = reg
        .transition(&acme, TenantState::Suspended, Cause::KeyRefused, Some("key disabled"), 3000, &[])
        .await
        .unwrap();
    assert_eq!(
        (s.state, s.cause, s.reason.as_deref(), s.updated_ms, s.version),
        (TenantState::Suspended, Some(Cause::KeyRefused), Some("key disabled"), 3000, 1)
    );
    assert!(matches!(
        reg.transition(&acme, TenantState::Active, Cause::KeysHealthy, None, 3500, &[]).await,
        Err(RegistryError::Conflict { state: TenantState::Suspended, version: 1, .. })
    ));
    let s = reg.transition(&s, TenantState::Active, Cause::KeysHealthy, None, 4000, &[]).await.unwrap();
    assert_eq!((s.state, s.reason.as_deref(), s.version), (TenantState::Active, None, 2));
    let mut nobody = s.clone();
    nobody.id = t("nobody");
    assert!(matches!(
        reg.transition(&nobody, TenantState::Active, Cause::KeysHealthy, None, 1, &[]).await,
        Err(RegistryError::TenantNotFound(_))
    ));

    // Crypto-shred: keys gone, state final.
    reg.attach_key(&t("acme"), &region("eu-central-1"), "lk-1", KeyCheck::Valid, "[]", 4500, |_| Vec::new())
        .await
        .unwrap();
    let s = reg.tenant(&t("acme")).await.unwrap().unwrap();
    let d = reg
        .transition(&s, TenantState::Deleted, Cause::Deleted, Some("requested by the tenant"), 5000, &[])
        .await
        .unwrap();
    assert_eq!((d.state, d.reason.as_deref()), (TenantState::Deleted, Some("requested by the tenant")));
    assert!(reg.keys(&t("acme")).await.unwrap().is_empty());
    assert!(matches!(
        reg.transition(&d, TenantState::Active, Cause::KeysHealthy, None, 6000, &[]).await,
        Err(RegistryError::TenantDeleted(_))
    ));
    assert!(matches!(
        reg.attach_key(&t("acme"), &region("eu-west-1"), "lk-2", KeyCheck::Valid, "[]", 1, |_| Vec::new()).await,
        Err(RegistryError::TenantDeleted(_))
    ));
    // The other tenant is untouched.
    assert_eq!(reg.tenant(&t("globex")).await.unwrap().unwrap().state, TenantState::Pending);
}

fn region(r: &str) -> Region {
    Region::parse(r).unwrap()
}

async fn key_history(backend: Backend) {
    let (reg, _dir) = registry(backend).await;
    reg.create_tenant(&t("acme"), &realm("eu"), TenantMode::Cmk, None, 1).await.unwrap();
    reg.create_tenant(&t("globex"), &realm("eu"), TenantMode::Cmk, None, 1).await.unwrap();
    assert!(matches!(
        reg.attach_key(&t("nobody"), &region("eu-west-1"), "k", KeyCheck::Valid, "[]", 1, |_| Vec::new()).await,
        Err(RegistryError::TenantNotFound(_))
    ));
    let (a, b, c) = (
        "arn:aws:kms:eu-central-1:111122223333:key/a",
        "arn:aws:kms:eu-west-1:111122223333:key/b",
        "arn:aws:kms:eu-west-1:111122223333:key/c",
    );
    let changes =
        reg.attach_key(&t("acme"), &region("eu-west-1"), b, KeyCheck::Valid, "[]", 10, |_| Vec::new()).await.unwrap();
    assert_eq!(changes, [(b.to_owned(), None, KeyStatus::Active)]);
    reg.attach_key(&t("acme"), &region("eu-central-1"), a, KeyCheck::Valid, "[]", 20, |_| Vec::new()).await.unwrap();
    // Replacing a region's key keeps the old one, decrypt-only.
    let changes = reg
        .attach_key(&t("acme"), &region("eu-west-1"), c, KeyCheck::Invalid, r#"[{"code":"key_disabled"}]"#, 30, |_| {
            Vec::new()
        })
        .await
        .unwrap();
    assert_eq!(
        changes,
        [(b.to_owned(), Some(KeyStatus::Active), KeyStatus::DecryptOnly), (c.to_owned(), None, KeyStatus::Active)]
    );
    let keys = reg.keys(&t("acme")).await.unwrap();
    let summary: Vec<(&str, &str, KeyStatus, KeyCheck)> =
        keys.iter().map(|k| (k.region.as_str(), k.key.as_str(), k.status, k.state)).collect();
    assert_eq!(
        summary,
        [
            ("eu-central-1", a, KeyStatus::Active, KeyCheck::Valid),
            ("eu-west-1", b, KeyStatus::DecryptOnly, KeyCheck::Valid),
            ("eu-west-1", c, KeyStatus::Active, KeyCheck::Invalid),
        ]
    );
    assert_eq!((keys[1].attached_ms, keys[1].status_ms), (10, 30));
    // Attaching the old key again makes it active again, the other decrypt-only.
    reg.attach_key(&t("acme"), &region("eu-west-1"), b, KeyCheck::Valid, "[]", 40, |_| Vec::new()).await.unwrap();
    let statuses: Vec<KeyStatus> = reg.keys(&t("acme")).await.unwrap().iter().map(|k| k.status).collect();
    assert_eq!(statuses, [KeyStatus::Active, KeyStatus::Active, KeyStatus::DecryptOnly]);
    // A key protects one tenant's data: another tenant cannot attach it.
    assert!(matches!(
        reg.attach_key(&t("globex"), &region("eu-west-1"), b, KeyCheck::Valid, "[]", 50, |_| Vec::new()).await,
        Err(RegistryError::KeyInUse { .. })
    ));
    assert!(reg.record_check(&t("acme"), c, KeyCheck::Revoked, None, 60, None).await.unwrap());
    assert!(!reg.record_check(&t("globex"), c, KeyCheck::Revoked, None, 60, None).await.unwrap());
    let k = reg.keys(&t("acme")).await.unwrap().into_iter().find(|k| k.key == c).unwrap();
    assert_eq!(
        (k.state, k.last_check_ms, k.findings.as_str()),
        (KeyCheck::Revoked, Some(60), r#"[{"code":"key_disabled"}]"#)
    );
    // Every attach bumped the version.
    assert_eq!(reg.tenant(&t("acme")).await.unwrap().unwrap().version, 4);
}

async fn service_identities(backend: Backend) {
    let (reg, _dir) = registry(backend).await;
    let only = Purposes::Only(vec![Purpose::parse("invoices").unwrap(), Purpose::parse("cards").unwrap()]);
    let (k6, k7, k8) = ("06".repeat(32), "07".repeat(32), "08".repeat(32));
    let billing = reg.add_service("billing", &only, &[7; 32], 5).await.unwrap();
    assert_eq!((billing.purposes.clone(), billing.created_ms), (only.clone(), 5));
    assert_eq!(billing.keys.len(), 1);
    assert_eq!((billing.keys[0].id.as_str(), billing.keys[0].expires_ms), (k7.as_str(), None));
    assert!(matches!(
        reg.add_service("billing", &Purposes::All, &[1; 32], 6).await,
        Err(RegistryError::ServiceExists(n)) if n == "billing"
    ));
    reg.add_service("dev", &Purposes::All, &[9; 32], 6).await.unwrap();
    assert_eq!(reg.service("dev").await.unwrap().unwrap().keys.len(), 1);
    assert_eq!(reg.service("billing").await.unwrap().unwrap(), billing);
    assert_eq!(reg.service("nobody").await.unwrap(), None);
    assert_eq!(reg.services().await.unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["billing", "dev"]);
    let s = reg.service("billing").await.unwrap().unwrap();
    assert!(s.purposes.allows(&Purpose::parse("cards").unwrap()));
    assert!(!s.purposes.allows(&Purpose::parse("hr").unwrap()));

    // Rotation: the new key is current, the old one accepted for the overlap only.
    let rotated = reg.rotate_service_key("billing", &[8; 32], 1_000, 100).await.unwrap();
    let ids: Vec<_> = rotated.accepted_keys(100).map(|k| k.id.as_str()).collect();
    assert_eq!(ids, [k7.as_str(), k8.as_str()]);
    assert_eq!(rotated.keys[0].expires_ms, Some(1_100));
    assert_eq!(rotated.accepted_keys(1_100).map(|k| k.id.as_str()).collect::<Vec<_>>(), [k8.as_str()]);
    // A second rotation never extends an earlier expiry, and drops keys already expired.
    let again = reg.rotate_service_key("billing", &[6; 32], 5_000, 1_200).await.unwrap();
    assert_eq!(
        again.keys.iter().map(|k| (k.id.as_str(), k.expires_ms)).collect::<Vec<_>>(),
        [(k8.as_str(), Some(6_200)), (k6.as_str(), None)]
    );
    assert!(matches!(reg.rotate_service_key("nobody", &[1; 32], 0, 1).await, Err(RegistryError::ServiceNotFound(_))));

    // Narrowing and removal.
    let hr = Purposes::Only(vec![Purpose::parse("hr").unwrap()]);
    assert_eq!(reg.set_service_purposes("billing", &hr).await.unwrap().purposes, hr);
    assert!(reg.remove_service("billing").await.unwrap());
    assert!(!reg.remove_service("billing").await.unwrap());
    assert_eq!(reg.service("billing").await.unwrap(), None);
    assert_eq!(reg.execute_raw("DELETE FROM service_keys WHERE service = 'billing'").await.unwrap(), 0);
    // A removed name can be registered again, with no key of its former life.
    let back = reg.add_service("billing", &Purposes::All, &[5; 32], 9).await.unwrap();
    assert_eq!(back.keys.len(), 1);
}

async fn audit_is_chained_and_paged(backend: Backend) {
    let (reg, _dir) = registry(backend).await;
    for i in 0..5u64 {
        let row = reg.append_audit(&t("acme"), 100 + i, &format!("{{\"n\":{i}}}"), chain, sign).await.unwrap();
        assert_eq!(row.seq, i + 1);
    }
    reg.append_audit(&t("globex"), 1, "{}", chain, sign).await.unwrap();
    let all = reg.audit(&t("acme"), 0, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].prev_hash, [0; 32]);
    for w in all.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
        assert_eq!(w[1].hash, chain(&w[0].hash, w[1].seq, w[1].at_ms, &w[1].body));
    }
    assert_eq!(
        reg.audit_head(&t("acme")).await.unwrap(),
        Some(AuditHead { seq: 5, hash: all[4].hash, sig: sign(None, 5, &all[4].hash) })
    );
    assert_eq!(reg.audit_head(&t("nobody")).await.unwrap(), None);
    let page = reg.audit(&t("acme"), 2, 2).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
    // Trails are per tenant.
    let g = reg.audit(&t("globex"), 0, 100).await.unwrap();
    assert_eq!((g.len(), g[0].seq, g[0].prev_hash), (1, 1, [0; 32]));
    // A head that cannot be signed is never stored, and neither is its event.
    let err = reg.append_audit(&t("acme"), 200, "{}", chain, |_, _, _| None).await.unwrap_err();
    assert!(matches!(err, RegistryError::HeadNotSigned), "{err}");
    assert_eq!(reg.audit_head(&t("acme")).await.unwrap().unwrap().seq, 5);
    assert_eq!(reg.audit(&t("acme"), 0, 100).await.unwrap().len(), 5);
}

async fn concurrent_appends_chain(backend: Backend) {
    let (reg, _dir) = registry(backend).await;
    let reg = Arc::new(reg);
    let tasks: Vec<_> = (0..16u64)
        .map(|i| {
            let reg = reg.clone();
            tokio::spawn(async move { reg.append_audit(&t("acme"), i, &format!("\"e{i}\""), chain, sign).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let all = reg.audit(&t("acme"), 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=16).collect::<Vec<_>>());
    for w in all.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
}

#[tokio::test]
async fn sqlite_persists_across_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    {
        let reg = Registry::open_sqlite(&path).await.unwrap();
        reg.create_tenant(&t("acme"), &realm("eu"), TenantMode::Local, None, 1).await.unwrap();
    }
    let reg = Registry::open_sqlite(&path).await.unwrap();
    assert_eq!(reg.tenant(&t("acme")).await.unwrap().unwrap().mode, TenantMode::Local);
    reg.ping().await.unwrap();
}

#[tokio::test]
async fn unsupported_urls_are_named() {
    let err = Registry::connect("mysql://localhost/x").await.unwrap_err();
    assert!(matches!(err, RegistryError::UnsupportedUrl(_)));
    assert!(err.to_string().contains("sqlite://PATH or postgres://"), "{err}");
}

/// PostgreSQL over TLS with the server's certificate verified (`sslmode=verify-full`); a
/// certificate the client does not trust is refused.
#[tokio::test]
async fn postgres_over_verified_tls() {
    let ca = std::env::var("KEYHOLD_TEST_POSTGRES_CA")
        .expect("KEYHOLD_TEST_POSTGRES_CA is not set: run scripts/test, which starts PostgreSQL with TLS");
    let url = fresh_postgres_db().await;
    let reg = Registry::connect(&format!("{url}?sslmode=verify-full&sslrootcert={ca}")).await.unwrap();
    reg.create_tenant(&t("acme"), &realm("eu"), TenantMode::Cmk, None, 1).await.unwrap();
    assert!(reg.tenant(&t("acme")).await.unwrap().is_some());
    // Without the CA, the self-signed server certificate does not verify.
    let err = Registry::connect(&format!("{url}?sslmode=verify-full")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Database(_)), "{err}");
}

/// Regression: appends that lost the race for the next sequence number gave up after eight
/// immediate retries, so with 32 writers on one PostgreSQL tenant about 40% of the events
/// were lost. Two registries (two keyhold instances, each with its own pool) with 16
/// writers each now store every event, in one gapless chain.
async fn appends_from_two_instances_are_never_lost(backend: Backend) {
    const TASKS: u64 = 16;
    const EACH: u64 = 50;
    let (url, _dir) = database(backend).await;
    let instances =
        [Arc::new(Registry::connect(&url).await.unwrap()), Arc::new(Registry::connect(&url).await.unwrap())];
    let tasks: Vec<_> = instances
        .iter()
        .flat_map(|reg| (0..TASKS).map(move |i| (reg.clone(), i)))
        .map(|(reg, i)| {
            tokio::spawn(async move {
                for n in 0..EACH {
                    reg.append_audit(&t("acme"), n, &format!("\"e{i}-{n}\""), chain, sign).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total = 2 * TASKS * EACH;
    let all = instances[0].audit(&t("acme"), 0, 10_000).await.unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    let mut prev = [0; 32];
    for row in &all {
        assert_eq!(row.prev_hash, prev);
        assert_eq!(row.hash, chain(&prev, row.seq, row.at_ms, &row.body));
        prev = row.hash;
    }
    assert_eq!(
        instances[1].audit_head(&t("acme")).await.unwrap(),
        Some(AuditHead { seq: total, hash: prev, sig: sign(None, total, &prev) })
    );
}

fn ev(tenant: &str, kind: &'static str, n: u64) -> NewEvent {
    NewEvent { tenant: Some(t(tenant)), kind, data: format!("{{\"n\":{n}}}"), dedupe: None }
}

async fn all_events(reg: &Registry, tenant: Option<&TenantId>) -> Vec<keyhold_registry::StoredEvent> {
    reg.events(&EventFilter { tenant, kinds: &[], after: 0, limit: 100_000, before: None }).await.unwrap()
}

/// A change and its event are stored together: a transition that loses its
/// compare-and-set stores no event; a check that does not change stores none; a dedupe key
/// stores one event however often it is reported; feeds filter by tenant and type.
async fn events_are_stored_with_their_change_or_not_at_all(backend: Backend) {
    let (reg, _dir) = registry(backend).await;
    let acme = reg.create_tenant(&t("acme"), &realm("eu"), TenantMode::Local, None, 1).await.unwrap();
    reg.create_tenant(&t("globex"), &realm("eu"), TenantMode::Local, None, 1).await.unwrap();
    let s = reg
        .transition(&acme, TenantState::Active, Cause::KeysValidated, None, 2, &[ev("acme", "tenant.activated", 1)])
        .await
        .unwrap();
    // `acme` as first read is stale now: the second transition loses, and its event with it.
    assert!(matches!(
        reg.transition(&acme, TenantState::Suspended, Cause::KeyRefused, None, 3, &[ev("acme", "tenant.suspended", 2)])
            .await,
        Err(RegistryError::Conflict { .. })
    ));
    assert_eq!(all_events(&reg, None).await.len(), 1);
    reg.attach_key(&t("acme"), &region("eu-west-1"), "k1", KeyCheck::Valid, "[]", 4, |changes| {
        changes
            .iter()
            .map(|(k, _, to)| ev("acme", "key.attached", u64::from(k == "k1" && *to == KeyStatus::Active)))
            .collect()
    })
    .await
    .unwrap();
    // The same check again: no event; a changed one: its event.
    let revoked = ev("acme", "key.revoked", 3);
    assert!(reg.record_check(&t("acme"), "k1", KeyCheck::Valid, None, 5, Some(&revoked)).await.unwrap());
    assert_eq!(all_events(&reg, None).await.len(), 2);
    assert!(reg.record_check(&t("acme"), "k1", KeyCheck::Revoked, None, 6, Some(&revoked)).await.unwrap());
    assert!(reg.record_check(&t("acme"), "k1", KeyCheck::Revoked, None, 7, Some(&revoked)).await.unwrap());
    let events = all_events(&reg, None).await;
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["tenant.activated", "key.attached", "key.revoked"]
    );
    assert_eq!(events[1].data, r#"{"n":1}"#);
    // Deduplicated: one stored of three reports.
    let mut once = ev("globex", "key_change.progress", 9);
    once.dedupe = Some("globex:progress:1".into());
    assert!(reg.add_event(&once, 8).await.unwrap());
    assert!(!reg.add_event(&once, 9).await.unwrap());
    assert!(!reg.add_event(&once, 10).await.unwrap());
    assert_eq!(all_events(&reg, Some(&t("globex"))).await.len(), 1);
    // Filters and paging.
    let kinds = ["key.revoked".to_owned(), "tenant.activated".to_owned()];
    let only =
        reg.events(&EventFilter { tenant: None, kinds: &kinds, after: 0, limit: 10, before: None }).await.unwrap();
    assert_eq!(only.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["tenant.activated", "key.revoked"]);
    let page = reg
        .events(&EventFilter { tenant: Some(&t("acme")), kinds: &[], after: events[0].id, limit: 1, before: None })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, events[1].id);
    assert_eq!(page[0].at_ms, 4);
    // A deletion stores its event in its transaction.
    let now = reg.tenant(&t("acme")).await.unwrap().unwrap();
    assert_eq!(now.version, s.version + 1, "the attach bumped the version");
    let (d, _) = reg.delete_tenant(&now, Some("gone"), 11, &[ev("acme", "tenant.deleted", 4)]).await.unwrap();
    assert_eq!(d.state, TenantState::Deleted);
    assert_eq!(all_events(&reg, Some(&t("acme"))).await.last().unwrap().kind, "tenant.deleted");
}

/// Writers on two registries (two instances' pools) store events concurrently while a
/// reader pages through them with `after=`: the reader sees every event, in increasing
/// id order, none skipped (ids follow commit order).
async fn a_reader_paging_events_never_skips_one(backend: Backend) {
    let (url, _dir) = database(backend).await;
    let a = Registry::connect(&url).await.unwrap();
    let b = Registry::connect(&url).await.unwrap();
    const WRITERS: u64 = 6;
    const EACH: u64 = 40;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let reg = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let mut backoff = 1;
                // SQLite answers "busy" past its timeout under this much contention: retry.
                while let Err(e) = reg.add_event(&ev("acme", "tenant.resumed", w * 1000 + i), i).await {
                    assert!(backoff < 2000, "{e}");
                    tokio::time::sleep(std::time::Duration::from_millis(backoff)).await;
                    backoff *= 2;
                }
            }
        }));
    }
    let reader = a.clone();
    let read = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut after = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while (seen.len() as u64) < WRITERS * EACH && std::time::Instant::now() < deadline {
            let page =
                reader.events(&EventFilter { tenant: None, kinds: &[], after, limit: 7, before: None }).await.unwrap();
            for e in page {
                assert!(e.id > after, "ids go up");
                after = e.id;
                seen.push(e.data);
            }
        }
        seen
    });
    for t in tasks {
        t.await.unwrap();
    }
    let seen = read.await.unwrap();
    let mut expected: Vec<String> = all_events(&a, None).await.into_iter().map(|e| e.data).collect();
    assert_eq!(expected.len() as u64, WRITERS * EACH);
    let mut got = seen.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "the paging reader skipped events");
}

/// Deliveries are queued with their event for the endpoints that take it (the tenant's
/// own and platform-wide ones, by type filter); two instances claiming at once never
/// claim the same delivery; a finished delivery is not claimed again, a failed one is
/// when due; 410 disables the endpoint and cancels what it had pending.
async fn deliveries_are_queued_with_their_event_and_claimed_once(backend: Backend) {
    use keyhold_registry::{AttemptOutcome, WebhookEndpoint};
    let (url, _dir) = database(backend).await;
    let a = Registry::connect(&url).await.unwrap();
    let b = Registry::connect(&url).await.unwrap();
    let endpoint = |id: &str, tenant: Option<&str>, types: Option<Vec<&str>>| WebhookEndpoint {
        id: id.into(),
        tenant: tenant.map(t),
        url: "https://example.com/h".into(),
        types: types.map(|v| v.into_iter().map(str::to_owned).collect()),
        secret: "whsec_AAAA".into(),
        old_secret: None,
        created_ms: 1,
        disabled: None,
    };
    assert!(a.add_webhook(&endpoint("wh_acme", Some("acme"), None), 10).await.unwrap());
    assert!(a.add_webhook(&endpoint("wh_globex", Some("globex"), None), 10).await.unwrap());
    assert!(a.add_webhook(&endpoint("wh_platform", None, Some(vec!["key_change.progress"])), 10).await.unwrap());
    // The per-owner limit holds under concurrent registrations on two instances.
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let reg = if i % 2 == 0 { a.clone() } else { b.clone() };
            let e = endpoint(&format!("wh_race{i}"), Some("initech"), None);
            tokio::spawn(async move {
                loop {
                    match reg.add_webhook(&e, 10).await {
                        Ok(added) => return added,
                        // SQLite's busy timeout under this contention: try again.
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();
    let mut added = 0;
    for t in tasks {
        added += usize::from(t.await.unwrap());
    }
    assert_eq!(added, 10);
    assert_eq!(a.webhooks(Some(&t("initech"))).await.unwrap().len(), 10);
    for i in 0..60 {
        let kind = if i % 3 == 0 { "key_change.progress" } else { "tenant.resumed" };
        a.add_event(&ev("acme", kind, i), 100).await.unwrap();
    }
    // A platform-wide event, a type with LIKE metacharacters that must not match.
    a.add_event(&NewEvent { tenant: None, kind: "key_change_progress", data: "{}".into(), dedupe: None }, 100)
        .await
        .unwrap();
    // Queued per endpoint: acme's gets all 60, the platform's the 20 progress events
    // (not the look-alike type), globex's none.
    assert_eq!(a.webhook_deliveries("wh_acme", 1000).await.unwrap().len(), 60);
    assert_eq!(a.webhook_deliveries("wh_platform", 1000).await.unwrap().len(), 20);
    assert!(a.webhook_deliveries("wh_globex", 1000).await.unwrap().is_empty());
    // Two instances claiming at once: one delivery per endpoint is out at a time, never
    // the same one twice, each endpoint's earliest first.
    let (x, y) = tokio::join!(a.claim_deliveries(200, 60_000, 7), b.claim_deliveries(200, 60_000, 7));
    let out: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    let mut endpoints: Vec<&str> = out.iter().map(|d| d.endpoint.id.as_str()).collect();
    endpoints.sort_unstable();
    assert_eq!(endpoints, ["wh_acme", "wh_platform"], "one per endpoint");
    assert!(a.claim_deliveries(300, 60_000, 100).await.unwrap().is_empty(), "both endpoints are busy");
    let d0 = out.iter().find(|d| d.endpoint.id == "wh_acme").unwrap().clone();
    let d1 = out.iter().find(|d| d.endpoint.id == "wh_platform").unwrap().clone();
    // Delivered: the endpoint's next one is handed out, in order.
    a.finish_delivery(&d0, &AttemptOutcome::Delivered { status: 200 }, 5, 400).await.unwrap();
    let next = b.claim_deliveries(400, 60_000, 100).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].endpoint.id, "wh_acme");
    assert!(next[0].event.id > d0.event.id);
    // Failed, due again at 1000: the platform endpoint's next one goes meanwhile.
    let failed = AttemptOutcome::Failed { status: Some(500), error: "HTTP 500".into(), next_ms: Some(1000) };
    a.finish_delivery(&d1, &failed, 5, 400).await.unwrap();
    let p2 = a.claim_deliveries(500, 60_000, 100).await.unwrap();
    assert_eq!(p2.len(), 1);
    assert_eq!(p2[0].endpoint.id, "wh_platform");
    assert_ne!(p2[0].id, d1.id);
    // 410: the endpoint is disabled and its other pending deliveries cancelled.
    a.finish_delivery(&p2[0], &AttemptOutcome::Gone, 5, 600).await.unwrap();
    let p = a.webhook("wh_platform").await.unwrap().unwrap();
    assert!(p.disabled.is_some());
    let log = a.webhook_deliveries("wh_platform", 100).await.unwrap();
    assert_eq!(log.iter().filter(|d| d.state == "cancelled").count(), 19, "the other 18 and the failed one");
    assert_eq!(a.webhook_attempts("wh_platform", 100).await.unwrap().len(), 2);
    assert!(a.claim_deliveries(5000, 60_000, 100).await.unwrap().iter().all(|d| d.endpoint.id == "wh_acme"));
    // An unfinished claim's lease runs out: claimable again, with the same delivery.
    let later = b.claim_deliveries(200_000, 60_000, 100).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].endpoint.id, "wh_acme");
    // New events do not reach a disabled endpoint.
    a.add_event(&ev("acme", "key_change.progress", 99), 80_000).await.unwrap();
    assert_eq!(a.webhook_deliveries("wh_platform", 1000).await.unwrap().len(), 20);
    assert_eq!(a.webhook_deliveries("wh_acme", 1000).await.unwrap().len(), 61);
}

/// The probe schedule takes in watched tenants (not pending or deleted ones), and two
/// instances claiming at once never claim the same tenant; a probed tenant is due again
/// when scheduled.
async fn probes_are_claimed_by_one_instance_at_a_time(backend: Backend) {
    let (url, _dir) = database(backend).await;
    let a = Registry::connect(&url).await.unwrap();
    let b = Registry::connect(&url).await.unwrap();
    for i in 0..40 {
        let t = a.create_tenant(&t(&format!("t{i}")), &realm("eu"), TenantMode::Local, None, 1).await.unwrap();
        if i < 30 {
            a.transition(&t, TenantState::Active, Cause::KeysValidated, None, 2, &[]).await.unwrap();
        }
    }
    // 30 watched; the 10 pending ones are not.
    assert_eq!(a.sync_probe_schedule(|_| 100).await.unwrap(), 30);
    assert_eq!(b.sync_probe_schedule(|_| 100).await.unwrap(), 0);
    let claim_all = |reg: Registry| async move {
        let mut mine = Vec::new();
        loop {
            let got = reg.claim_probes(100, 1000, 4).await.unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|c| c.tenant));
        }
    };
    let (x, y) = tokio::join!(claim_all(a.clone()), claim_all(b.clone()));
    let mut all: Vec<_> = x.iter().chain(&y).cloned().collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!((n, all.len()), (30, 30), "a tenant was claimed twice");
    // Probed and scheduled at 5000: not due before, due then.
    for id in &all {
        a.probed(id, 200, 5000).await.unwrap();
    }
    assert!(a.claim_probes(4999, 1000, 100).await.unwrap().is_empty());
    assert_eq!(a.next_probe_due().await.unwrap(), Some(5000));
    let again = b.claim_probes(5000, 1000, 100).await.unwrap();
    assert_eq!(again.len(), 30);
    assert!(again.iter().all(|c| c.last_ms == Some(200) && c.due_ms == 5000));
    // An unreleased lease runs out: claimable again after it.
    assert!(a.claim_probes(5999, 1000, 100).await.unwrap().is_empty());
    assert_eq!(a.claim_probes(6000, 1000, 100).await.unwrap().len(), 30);
    // Traffic: a key proved by both a generate and a decrypt since a time.
    a.record_key_traffic(&[(t("t1"), "k1".into(), 7000, 0), (t("t1"), "k2".into(), 7000, 7100)]).await.unwrap();
    a.record_key_traffic(&[(t("t1"), "k1".into(), 0, 7200)]).await.unwrap();
    let mut proved = a.keys_with_traffic(&t("t1"), 6500).await.unwrap();
    proved.sort();
    assert_eq!(proved, ["k1", "k2"]);
    assert!(a.keys_with_traffic(&t("t1"), 7150).await.unwrap().is_empty());
}

/// A pending tenant's realm chosen on one instance while a key validated for the old realm
/// is attached on another, many times at once: either the key lands and the realm stays,
/// or the realm changes and no key is in the history; never a key of one realm in a
/// tenant of another.
async fn a_realm_change_and_a_key_attached_at_once_never_both_land(backend: Backend) {
    let (url, _dir) = database(backend).await;
    let a = Arc::new(Registry::connect(&url).await.unwrap());
    let b = Arc::new(Registry::connect(&url).await.unwrap());
    let (mut attached, mut moved) = (0, 0);
    for i in 0..20 {
        let id = t(&format!("race-{i}"));
        a.create_tenant(&id, &realm("eu"), TenantMode::Local, None, 1).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let attach = {
            let (a, id, barrier) = (a.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let eu = realm("eu");
                a.attach_key_for(
                    &id,
                    Some((&eu, TenantMode::Local)),
                    &region("eu-central-1"),
                    &format!("lk-race-{i}"),
                    KeyCheck::Valid,
                    "[]",
                    2,
                    |_| Vec::new(),
                )
                .await
            })
        };
        let configure = {
            let (b, id, barrier) = (b.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                b.configure_tenant(&id, &realm("us"), TenantMode::Local, None, 2, &[]).await
            })
        };
        let (attach, configure) = (attach.await.unwrap(), configure.await.unwrap().unwrap());
        let tenant = a.tenant(&id).await.unwrap().unwrap();
        let keys = a.keys(&id).await.unwrap();
        match (attach, configure) {
            (Ok(_), false) => {
                attached += 1;
                assert_eq!((tenant.realm.as_str(), keys.len()), ("eu", 1));
            }
            (Err(RegistryError::Conflict { .. }), true) => {
                moved += 1;
                assert_eq!((tenant.realm.as_str(), keys.len()), ("us", 0));
            }
            (attach, configure) => panic!("both or neither landed: attach {attach:?}, configure {configure}"),
        }
    }
    assert_eq!(attached + moved, 20);
}
