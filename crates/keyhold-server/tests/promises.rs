//! Regression tests for the promises a tenant buys, each named after what it caught in an
//! attack review: no request can suspend a tenant; a replaced key is kept, decrypt-only;
//! audit that loses nothing and fails closed; bounded trail size; crypto-shredding of
//! local tenants; concurrent key attaches.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyhold_core::{KeyRef, Purpose, Region, SystemClock, TenantId};
use keyhold_envelope::AlgorithmSuite;
use keyhold_provider::KeyProvider;
use keyhold_service::{EncryptParams, Keyhold, Settings};
use serde_json::{Value, json};

use super::{Fixture, fixture, fixture_on, fresh_postgres};

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// A message that claims to be `tenant`'s (purpose billing) but whose data key is wrapped
/// only by `keys`: what an attacker with the local provider, or a corrupted store, holds.
async fn forged_message(f: &Fixture, tenant: &str, keys: &[KeyRef]) -> Value {
    let provider: Arc<dyn KeyProvider> = Arc::new(f.local());
    let k = Keyhold::new(vec![provider], Settings::default(), Arc::new(SystemClock));
    let params = EncryptParams {
        tenant: tid(tenant),
        purpose: Purpose::parse("billing").unwrap(),
        keys: keys.to_vec().into(),
        context: Default::default(),
        suite: AlgorithmSuite::default(),
        generation: 0,
    };
    Value::String(B64.encode(k.encrypt(&params, b"forged").await.unwrap()))
}

async fn state_of(f: &Fixture, tenant: &str) -> String {
    let (_, t) = f.call(Method::GET, &format!("/v1/tenants/{tenant}"), Some(&f.admin_token()), None).await;
    t["state"].as_str().unwrap().to_owned()
}

fn code(v: &Value) -> Option<&str> {
    v["error"]["code"].as_str()
}

async fn trail(f: &Fixture, tenant: &str) -> Vec<Value> {
    f.state.lifecycle.flush(true).await;
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = f
            .call(Method::GET, &format!("/v1/tenants/{tenant}/audit?after={after}"), Some(&f.admin_token()), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        after = events.last().unwrap()["seq"].as_u64().unwrap();
        out.extend(events);
    }
}

fn provider_calls(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["event"]["type"] == "provider_call").collect()
}

/// Finding 1: a message naming keys the tenant never had, whose key refuses, suspended
/// the tenant (repeatable at will by any service). Now it is refused with
/// `key_not_in_tenant`, no key is asked, and the tenant stays active.
#[tokio::test]
async fn a_message_naming_foreign_keys_suspends_no_one() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let foreign = f.local().create_key(&Region::parse("eu-central-1").unwrap(), "not acme's").unwrap().key;
    let forged = forged_message(&f, "acme", std::slice::from_ref(&foreign)).await;
    f.local().schedule_key_deletion(&foreign, 7).unwrap();
    let before = f.state.metrics().provider_calls();
    for _ in 0..3 {
        let (s, e) = f.decrypt("acme", &forged).await;
        assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, Some("key_not_in_tenant")), "{e}");
    }
    assert_eq!(f.state.metrics().provider_calls(), before, "no key was asked");
    assert_eq!(state_of(&f, "acme").await, "active");
    // A batch of them changes nothing either, and writes no provider-call event.
    let items: Vec<Value> = (0..50).map(|_| json!({"tenant": "acme", "ciphertext": forged})).collect();
    let (s, out) = f.call(Method::POST, "/v1/decrypt/batch", Some(&f.dev_token()), Some(json!({"items": items}))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(out["results"].as_array().unwrap().iter().all(|r| code(r) == Some("key_not_in_tenant")));
    assert_eq!(state_of(&f, "acme").await, "active");
    let events = trail(&f, "acme").await;
    assert!(provider_calls(&events).iter().all(|e| e["event"]["key"] != foreign.as_str()));
    // Genuine data still decrypts.
    let (_, e) = f.encrypt("acme", b"real", json!({})).await;
    assert_eq!(f.decrypt("acme", &e["ciphertext"]).await.0, StatusCode::OK);
}

/// Finding 1, the other half: a corrupted stored ciphertext (its data key's bytes flipped)
/// is a client error and suspends no one; a genuine revocation met on the request path is
/// still enforced at once, because the probe it triggers confirms it.
#[tokio::test]
async fn a_corrupted_ciphertext_suspends_no_one_but_a_real_revocation_does_at_once() {
    let f = fixture().await;
    let keys = f.active_tenant("acme").await;
    let (_, e) = f.encrypt("acme", b"genuine", json!({})).await;
    let ct = B64.decode(e["ciphertext"].as_str().unwrap()).unwrap();
    let header = keyhold_envelope::read_header(&ct, &Default::default()).unwrap();
    // Flip the last byte of every encrypted data key's ciphertext.
    let mut bad = ct.clone();
    for edk in header.edk_refs() {
        let n = edk.ciphertext.len();
        let at = ct.windows(n).position(|w| w == edk.ciphertext).unwrap() + n - 1;
        bad[at] ^= 1;
    }
    f.state.lifecycle.keyhold().flush_tenant(&tid("acme"));
    for _ in 0..5 {
        let (s, err) = f.decrypt("acme", &Value::String(B64.encode(&bad))).await;
        assert!(s.is_client_error(), "{s} {err}");
        assert!(err.get("plaintext").is_none());
    }
    assert_eq!(state_of(&f, "acme").await, "active");

    // The tenant disables its keys: the first request that needs a key is refused and the
    // tenant is suspended by the probe that refusal triggered, before the answer.
    for k in &keys {
        f.local().disable_key(&KeyRef::parse(k).unwrap()).unwrap();
    }
    f.state.lifecycle.keyhold().flush_tenant(&tid("acme"));
    let (s, err) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(state_of(&f, "acme").await, "suspended");
    let (_, t) = f.call(Method::GET, "/v1/tenants/acme", Some(&f.admin_token()), None).await;
    assert_eq!(t["cause"], "key_refused", "{t}");
}

/// A flood of refused requests costs one probe, not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_costs_one_probe() {
    let f = Arc::new(fixture().await);
    let keys = f.active_tenant("acme").await;
    let (_, e) = f.encrypt("acme", b"x", json!({})).await;
    for k in &keys {
        f.local().disable_key(&KeyRef::parse(k).unwrap()).unwrap();
    }
    f.state.lifecycle.keyhold().flush_tenant(&tid("acme"));
    let before = f.state.metrics().provider_calls();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let f = f.clone();
            let ct = e["ciphertext"].clone();
            tokio::spawn(async move { f.decrypt("acme", &ct).await.0 })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::FORBIDDEN);
    }
    let after = f.state.metrics().provider_calls();
    let probes = after.get(&("Probe".to_owned(), "error".to_owned())).copied().unwrap_or(0)
        - before.get(&("Probe".to_owned(), "error".to_owned())).copied().unwrap_or(0);
    // One probe of the tenant's active keys (two regions), however many requests waited.
    assert!(probes <= 2, "{probes} probe round trips for one flood");
    assert_eq!(state_of(&f, "acme").await, "suspended");
}

/// Finding 2: replacing a key, then disabling the old one, suspended the tenant, and the
/// old key was forgotten. Now the old key stays in the history as `decrypt_only`; its
/// refusal fails only the requests that need it.
#[tokio::test]
async fn replacing_a_key_then_disabling_the_old_one_keeps_the_tenant() {
    let f = fixture().await;
    let admin = f.admin_token();
    let (s, _) = f
        .call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": "acme", "realm": "de", "mode": "local"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let region = Region::parse("eu-central-1").unwrap();
    let k1 = f.local().create_key(&region, "first").unwrap().key;
    let (_, r) = f
        .call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": k1.as_str()})))
        .await;
    assert_eq!((r["usable"].as_bool(), r["attached"].as_bool()), (Some(true), Some(true)), "{r}");
    let (_, old) = f.encrypt("acme", b"under k1", json!({})).await;

    let k2 = f.local().create_key(&region, "second").unwrap().key;
    let (_, r) = f
        .call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": k2.as_str()})))
        .await;
    assert_eq!(r["attached"], true, "{r}");
    let (s, hist) = f.call(Method::GET, "/v1/tenants/acme/keys", Some(&f.tenant_admin_token("acme")), None).await;
    assert_eq!(s, StatusCode::OK);
    // Both were attached within the same millisecond of the test's clock: compare as a set.
    let statuses: std::collections::BTreeSet<(&str, &str)> = hist["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key_arn"].as_str().unwrap(), k["status"].as_str().unwrap()))
        .collect();
    let expected = [(k1.as_str(), "decrypt_only"), (k2.as_str(), "active")];
    assert_eq!(statuses, expected.into_iter().collect());
    // Old data still decrypts through the decrypt-only key; new data goes under k2.
    assert_eq!(f.decrypt("acme", &old["ciphertext"]).await.0, StatusCode::OK);
    let (_, new) = f.encrypt("acme", b"under k2", json!({"table": "new"})).await;
    let ct = B64.decode(new["ciphertext"].as_str().unwrap()).unwrap();
    let header = keyhold_envelope::read_header(&ct, &Default::default()).unwrap();
    let edk = header.edk_refs().next().unwrap().to_owned();
    assert_eq!(f.local().key_for(&edk).unwrap(), k2);

    // The tenant disables the old key: its old messages fail, the tenant stays active.
    f.local().disable_key(&k1).unwrap();
    f.state.lifecycle.keyhold().flush_tenant(&tid("acme"));
    let (s, e) = f.decrypt("acme", &old["ciphertext"]).await;
    assert_eq!((s, code(&e)), (StatusCode::FORBIDDEN, Some("key_revoked")), "{e}");
    assert_eq!(state_of(&f, "acme").await, "active");
    assert_eq!(f.decrypt("acme", &new["ciphertext"]).await.0, StatusCode::OK);
    // A broken key never replaces a working one of a tenant in service.
    let k3 = f.local().create_key(&region, "third").unwrap().key;
    f.local().disable_key(&k3).unwrap();
    let (s, r) = f
        .call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": k3.as_str()})))
        .await;
    assert_eq!((s, r["usable"].as_bool(), r["attached"].as_bool()), (StatusCode::OK, Some(false), Some(false)));
    assert_eq!(state_of(&f, "acme").await, "active");
    // An alias ARN is refused: messages record key ARNs, and an alias can move.
    let (s, e) = f
        .call(
            Method::PUT,
            "/v1/tenants/acme/keys/eu-central-1",
            Some(&admin),
            Some(json!({"key_arn": "arn:aws:kms:eu-central-1:111122223333:alias/acme"})),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{e}");
    // A pending tenant cannot claim a key it cannot use: nothing is recorded.
    f.call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": "initech", "realm": "de", "mode": "local"})))
        .await;
    let (s, r) = f
        .call(Method::PUT, "/v1/tenants/initech/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": k3.as_str()})))
        .await;
    assert_eq!((s, r["attached"].as_bool()), (StatusCode::OK, Some(false)), "{r}");
    let (_, hist) = f.call(Method::GET, "/v1/tenants/initech/keys", Some(&admin), None).await;
    assert!(hist["keys"].as_array().unwrap().is_empty(), "{hist}");
    // A key belongs to one tenant.
    f.call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": "globex", "realm": "de", "mode": "local"})))
        .await;
    let (s, e) = f
        .call(Method::PUT, "/v1/tenants/globex/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": k2.as_str()})))
        .await;
    assert_eq!((s, code(&e)), (StatusCode::CONFLICT, Some("key_in_use")), "{e}");
}

/// Finding 9: two attaches for different regions in parallel lost one key or left the
/// tenant pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_key_attaches_lose_nothing() {
    let f = Arc::new(fixture().await);
    let admin = f.admin_token();
    for round in 0..5 {
        let id = format!("t{round}");
        f.call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": id, "realm": "eu", "mode": "local"})))
            .await;
        let tasks: Vec<_> = ["eu-central-1", "eu-west-1"]
            .into_iter()
            .map(|region| {
                let f = f.clone();
                let (id, admin) = (id.clone(), admin.clone());
                tokio::spawn(async move {
                    let k = f.local().create_key(&Region::parse(region).unwrap(), "").unwrap().key.to_string();
                    f.call(
                        Method::PUT,
                        &format!("/v1/tenants/{id}/keys/{region}"),
                        Some(&admin),
                        Some(json!({"key_arn": k})),
                    )
                    .await
                    .0
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
        let (_, t) = f.call(Method::GET, &format!("/v1/tenants/{id}"), Some(&admin), None).await;
        assert_eq!(t["state"], "active", "{t}");
        assert_eq!(t["keys"].as_array().unwrap().len(), 2, "{t}");
    }
}

/// Finding 4: while the registry could not be written, decrypts were served and their key
/// uses went unrecorded. Now such a request is refused with 503 `audit_unavailable` and
/// returns nothing; served again once the trail can be written.
#[tokio::test]
async fn a_request_that_cannot_be_audited_is_refused() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let (_, e) = f.encrypt("acme", b"secret", json!({})).await;
    f.state.lifecycle.flush(true).await;
    let reg = f.state.lifecycle.registry();
    reg.execute_raw(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .await
    .unwrap();
    f.state.lifecycle.keyhold().flush_tenant(&tid("acme"));
    let (s, d) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!((s, code(&d)), (StatusCode::SERVICE_UNAVAILABLE, Some("audit_unavailable")), "{d}");
    assert!(d.get("plaintext").is_none());
    let (s, d) = f.encrypt("acme", b"more", json!({"table": "fresh"})).await;
    assert_eq!((s, code(&d)), (StatusCode::SERVICE_UNAVAILABLE, Some("audit_unavailable")), "{d}");
    assert!(d.get("ciphertext").is_none());
    // Cached keys need no call, but their usage counts cannot be written either: once a
    // flush fails, every request is refused until one succeeds.
    let (_, cached) = {
        reg.execute_raw("DROP TRIGGER no_audit").await.unwrap();
        let r = f.decrypt("acme", &e["ciphertext"]).await;
        assert_eq!(r.0, StatusCode::OK);
        reg.execute_raw("CREATE TRIGGER no_audit_2 BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'x'); END")
            .await
            .unwrap();
        r
    };
    assert!(cached.get("plaintext").is_some());
    f.state.lifecycle.flush(false).await;
    let (s, d) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!((s, code(&d)), (StatusCode::SERVICE_UNAVAILABLE, Some("audit_unavailable")), "{d}");
    reg.execute_raw("DROP TRIGGER no_audit_2").await.unwrap();
    f.state.lifecycle.flush(false).await;
    let (s, _) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!(s, StatusCode::OK);
    // The outage is in the tenant's event feed, stored once the trail was writable again.
    let (_, feed) =
        f.call(Method::GET, "/v1/tenants/acme/events?type=audit.unavailable", Some(&f.admin_token()), None).await;
    let outage = &feed["events"][0]["data"];
    assert!(outage["from_ms"].as_u64().unwrap() <= outage["to_ms"].as_u64().unwrap(), "{feed}");
    assert!(outage["message"].as_str().unwrap().contains("every request was refused"), "{feed}");
    // Every key use that was answered is in the trail; the usage counted while failing
    // was kept and written afterwards.
    let events = trail(&f, "acme").await;
    let decrypts: u64 =
        events.iter().filter(|e| e["event"]["type"] == "usage").map(|e| e["event"]["decrypts"].as_u64().unwrap()).sum();
    assert_eq!(decrypts, 2);
}

/// Finding 7: the trail's size was caller-controlled. Oversized contexts are refused
/// before any call; a failed call records a digest of its context, not the context;
/// identical failures are aggregated into one event with a count.
#[tokio::test]
async fn the_trail_size_is_bounded() {
    let f = fixture().await;
    let keys = f.active_tenant("acme").await;
    let before = f.state.metrics().provider_calls();
    let (s, e) = f.encrypt("acme", b"x", json!({"big": "v".repeat(9000)})).await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("8192"));
    assert_eq!(f.state.metrics().provider_calls(), before, "refused before any provider call");

    // Ten identical failing calls: the home key refuses every generate.
    f.local().disable_key(&KeyRef::parse(&keys[0]).unwrap()).unwrap();
    let canary = "CANARY-CONTEXT-4d2a";
    for _ in 0..10 {
        let (s, _) = f.encrypt("acme", b"x", json!({"table": canary})).await;
        assert!(s.is_client_error() || s.is_server_error());
        // Each refusal suspends through its probe; bring the tenant back for the next.
        let t = f.state.lifecycle.tenant(&tid("acme")).await.unwrap();
        if t.state == keyhold_registry::TenantState::Suspended {
            f.state
                .lifecycle
                .transition(&t, keyhold_registry::TenantState::Active, keyhold_registry::Cause::KeysValidated, None)
                .await
                .unwrap();
        }
    }
    let events = trail(&f, "acme").await;
    let failed: Vec<&Value> = provider_calls(&events).into_iter().filter(|e| e["event"]["outcome"] != "ok").collect();
    let text = serde_json::to_string(&failed).unwrap();
    assert!(!text.contains(canary), "a failed call's context is in the trail: {text}");
    assert!(failed.iter().all(|e| e["event"]["context_digest"].as_str().is_some_and(|d| d.len() == 64)));
    let count: u64 = failed.iter().map(|e| e["event"]["count"].as_u64().unwrap_or(1)).sum();
    assert_eq!(count, 10, "{text}");
    assert!(failed.len() <= 2, "10 identical failures took {} events", failed.len());
}

/// Finding 8: deleting a `local` tenant shredded nothing; its keys stayed enabled and its
/// data still decrypted offline.
#[tokio::test]
async fn deleting_a_local_tenant_shreds_its_keys() {
    let f = fixture().await;
    let keys = f.active_tenant("acme").await;
    let (_, e) = f.encrypt("acme", b"shred me", json!({})).await;
    let (s, _) = f.call(Method::DELETE, "/v1/tenants/acme", Some(&f.admin_token()), None).await;
    assert_eq!(s, StatusCode::OK);
    for k in &keys {
        let d = f.local().describe_key(&KeyRef::parse(k).unwrap()).unwrap();
        assert_eq!(d.state.name(), "PendingDeletion", "{k}");
    }
    // Offline, with the data dir and every key the provider has: no longer decryptable.
    let provider: Arc<dyn KeyProvider> = Arc::new(f.local());
    let offline = Keyhold::new(vec![provider], Settings::default(), Arc::new(SystemClock));
    let ct = B64.decode(e["ciphertext"].as_str().unwrap()).unwrap();
    assert!(offline.decrypt(&tid("acme"), &ct).await.is_err());
}

/// Finding 3: on PostgreSQL, two instances with 32 concurrent writers on one tenant lost
/// about 40% of their audit events while answering 200. Now every provider call has
/// exactly one event, and the trail verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_and_32_writers_lose_no_audit_event_on_postgres() {
    let url = fresh_postgres("keyhold_writers").await;
    let a = Arc::new(fixture_on(Some(url.clone())).await);
    a.active_tenant("acme").await;
    let b = Arc::new(super::second_instance(&a, url).await);
    let before = provider_calls(&trail(&a, "acme").await).len();
    let tasks: Vec<_> = (0..32)
        .map(|w| {
            let f = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..5 {
                    // A fresh context each time: a cache miss, so real provider calls.
                    let (s, e) = f.encrypt("acme", b"x", json!({"writer": format!("{w}-{i}")})).await;
                    assert_eq!(s, StatusCode::OK, "{e}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let events = trail(&a, "acme").await;
    // 160 encryptions, each a GenerateDataKey (home) and an Encrypt (second region).
    assert_eq!(provider_calls(&events).len() - before, 320);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "gaps in the trail");
    let (_, v) = a.call(Method::GET, "/v1/tenants/acme/audit/verify", Some(&a.admin_token()), None).await;
    assert_eq!(v["ok"], true, "{v}");
}

/// Finding 6: someone with database write access deleted events and recomputed the chain
/// and head, and the trail verified as intact; a wiped trail verified as empty. Now
/// verification fails on both, and keyhold refuses to extend a trail whose head it did not
/// sign (its requests fail closed), so a rewrite is never re-legitimised by a new event.
#[tokio::test]
async fn a_rewritten_or_wiped_trail_fails_verification_and_is_never_extended() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    let reg = f.state.lifecycle.registry();
    let verify = |t: &'static str| {
        let f = &f;
        async move { f.call(Method::GET, &format!("/v1/tenants/{t}/audit/verify"), Some(&f.admin_token()), None).await.1 }
    };
    assert_eq!(verify("acme").await["ok"], true);
    // Rewrite: drop the newest event and move the head back onto the event before, as a
    // tamperer without the audit key would (the signature no longer matches).
    let head: i64 = {
        let events = trail(&f, "acme").await;
        events.last().unwrap()["seq"].as_i64().unwrap()
    };
    reg.execute_raw(&format!("DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = {head}")).await.unwrap();
    reg.execute_raw(&format!(
        "UPDATE audit_heads SET seq = {}, hash = (SELECT hash FROM audit_events WHERE tenant_id = 'acme' AND seq = {}) \
         WHERE tenant_id = 'acme'",
        head - 1,
        head - 1
    ))
    .await
    .unwrap();
    let v = verify("acme").await;
    assert_eq!(v["ok"], false, "{v}");
    // A key use of that tenant cannot be recorded on top of the rewritten head: refused.
    let (s, e) = f.encrypt("acme", b"x", json!({"table": "after-tamper"})).await;
    assert_eq!((s, code(&e)), (StatusCode::SERVICE_UNAVAILABLE, Some("audit_unavailable")), "{e}");
    assert_eq!(verify("acme").await["ok"], false);
    // One tenant's broken trail stops only that tenant: others are served and recorded.
    f.state.lifecycle.flush(false).await;
    let (s, e) = f.encrypt("globex", b"x", json!({"table": "meanwhile"})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(verify("globex").await["ok"], true);

    // Wipe: every event and the head of globex.
    reg.execute_raw("DELETE FROM audit_events WHERE tenant_id = 'globex'").await.unwrap();
    reg.execute_raw("DELETE FROM audit_heads WHERE tenant_id = 'globex'").await.unwrap();
    let v = verify("globex").await;
    assert_eq!(v["ok"], false, "a tenant that exists cannot have an empty trail: {v}");
    // keyhold will not start the trail afresh either.
    let (s, e) = f.encrypt("globex", b"x", json!({"table": "after-wipe"})).await;
    assert_eq!((s, code(&e)), (StatusCode::SERVICE_UNAVAILABLE, Some("audit_unavailable")), "{e}");
    assert_eq!(verify("globex").await["ok"], false);
}

/// Review finding: a validation during a KMS outage (throttling) suspended an active
/// tenant with cause `validation_failed`, which no probe resumes. A transient finding
/// suspends no one; the report still says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_during_a_kms_outage_suspends_no_one() {
    let proxy = keyhold_testkit::FaultProxy::moto().await;
    let sdk = keyhold_testkit::sdk_config(&proxy.url(), "eu-central-1").await;
    let f = super::fixture_with(None, Some(sdk)).await;
    let admin = f.admin_token();
    f.call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": "acme", "realm": "de", "mode": "cmk"}))).await;
    // The key as the tenant creates it: with the generated policy, rotation on.
    let policy = keyhold_onboarding::key_policy(&keyhold_onboarding::PolicyParams {
        tenant: &tid("acme"),
        platform_principal: "arn:aws:iam::111122223333:role/keyhold",
        tenant_account: Some("123456789012"),
    })
    .unwrap()
    .to_string();
    let key = keyhold_testkit::create_moto_key_with_policy("eu-central-1", Some(&policy)).await;
    let kms = keyhold_testkit::moto_kms("eu-central-1").await;
    kms.enable_key_rotation().key_id(key.rsplit('/').next().unwrap()).send().await.unwrap();
    let (_, r) =
        f.call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": key}))).await;
    assert_eq!(r["usable"], true, "{r}");
    assert_eq!(state_of(&f, "acme").await, "active");
    let rule = keyhold_testkit::Rule { service: Some("kms".into()), operations: vec![], key: None, times: None };
    proxy.inject(
        rule,
        keyhold_testkit::Fault::Error {
            status: 400,
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
        },
    );
    let (s, r) = f.call(Method::POST, "/v1/tenants/acme/validate", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["usable"], false, "{r}");
    assert!(r.to_string().contains("kms_unavailable"), "{r}");
    assert_eq!(state_of(&f, "acme").await, "active");

    // Rotation turned off: the key still works (a warning), and the finding is a
    // `key.misconfigured` event with its fix, once however often validation runs.
    proxy.clear();
    kms.disable_key_rotation().key_id(key.rsplit('/').next().unwrap()).send().await.unwrap();
    for _ in 0..2 {
        let (s, r) = f.call(Method::POST, "/v1/tenants/acme/validate", Some(&admin), None).await;
        assert_eq!((s, r["usable"].as_bool()), (StatusCode::OK, Some(true)), "{r}");
    }
    let (_, feed) = f.call(Method::GET, "/v1/tenants/acme/events?type=key.misconfigured", Some(&admin), None).await;
    let events = feed["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{feed}");
    let d = &events[0]["data"];
    assert_eq!((d["code"].as_str(), d["severity"].as_str()), (Some("key_rotation_off"), Some("warning")), "{d}");
    assert!(d["fix"].as_str().unwrap().contains("enable-key-rotation"), "{d}");
    assert_eq!(state_of(&f, "acme").await, "active");
}
