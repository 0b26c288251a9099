//! Key change through the API: a full change under concurrent load (attach, re-encrypt
//! everything in batches, progress to 100%, retire, disable the old key in the provider:
//! no request fails, every message decrypts, the tenant stays active), retirement's
//! refusals and its force, re-encryption's checks, the ledger's counts (retries not
//! counted twice), a forced data-key rotation, and tenant-admin access to its own tenant
//! only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyhold_core::{KeyRef, Region};
use serde_json::{Value, json};

use super::{Fixture, fixture};

/// The ledger id of the data key a base64 message is under.
fn data_key_of(ct: &Value) -> String {
    let bytes = B64.decode(ct.as_str().unwrap()).unwrap();
    let h = keyhold_envelope::read_header(&bytes, &Default::default()).unwrap();
    let edks: Vec<_> = h.edk_refs().collect();
    keyhold_service::DataKeyId::of_message(edks.into_iter()).hex()
}

fn encode_key(k: &str) -> String {
    k.replace('%', "%25").replace('/', "%2F").replace(':', "%3A")
}

async fn reencrypt_batch(f: &Fixture, items: &[Value]) -> Vec<Value> {
    let items: Vec<Value> = items.iter().map(|c| json!({"tenant": "acme", "ciphertext": c})).collect();
    let (s, out) =
        f.call(Method::POST, "/v1/reencrypt/batch", Some(&f.dev_token()), Some(json!({"items": items}))).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    out["results"].as_array().unwrap().clone()
}

async fn key_change(f: &Fixture, token: &str) -> Value {
    let (s, c) = f.call(Method::GET, "/v1/tenants/acme/key-change", Some(token), None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    c
}

/// The whole procedure while clients encrypt and decrypt throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_key_change_under_load_fails_no_request_and_loses_no_message() {
    let f = Arc::new(fixture().await);
    let old = f.active_tenant("acme").await;
    let ta = f.tenant_admin_token("acme");
    // Messages stored before the change.
    let store = Arc::new(std::sync::Mutex::new(Vec::<(Vec<u8>, Value)>::new()));
    for i in 0..150 {
        let pt = format!("record {i}").into_bytes();
        let (s, e) = f.encrypt("acme", &pt, json!({"table": if i % 2 == 0 { "a" } else { "b" }})).await;
        assert_eq!(s, StatusCode::OK, "{e}");
        store.lock().unwrap().push((pt, e["ciphertext"].clone()));
    }
    // Clients keep encrypting (storing what they write) and decrypting throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (f, store, stop, failures, done) = (f.clone(), store.clone(), stop.clone(), failures.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let pt = format!("load {c} {n}").into_bytes();
                let (s, e) = f.encrypt("acme", &pt, json!({})).await;
                if s != StatusCode::OK {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("encrypt failed under load: {s} {e}");
                    continue;
                }
                let (s, d) = f.decrypt("acme", &e["ciphertext"]).await;
                if s != StatusCode::OK
                    || B64.decode(d["plaintext"].as_str().unwrap_or_default()).ok() != Some(pt.clone())
                {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("decrypt failed under load: {s} {d}");
                }
                store.lock().unwrap().push((pt, e["ciphertext"].clone()));
                done.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
    }
    while done.load(Ordering::Relaxed) < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(key_change(&f, &ta).await["state"], "none");

    // The tenant admin attaches a new key for eu-central-1: validated, then active; the
    // old one decrypt-only.
    let new = f.local().create_key(&Region::parse("eu-central-1").unwrap(), "new").unwrap().key.to_string();
    let (s, r) =
        f.call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&ta), Some(json!({"key_arn": new}))).await;
    assert_eq!((s, r["attached"].as_bool()), (StatusCode::OK, Some(true)), "{r}");
    while done.load(Ordering::Relaxed) < 120 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let c = key_change(&f, &ta).await;
    assert_eq!(c["state"], "in_progress", "{c}");
    assert_eq!(c["keys"][0]["key_arn"], old[0].as_str(), "{c}");
    assert!(c["messages"].as_u64().unwrap() >= 150 + 40, "{c}");
    assert_eq!(c["reencrypted"], 0);

    // Re-encrypt everything stored, in batches of 50, while the load goes on.
    let mut offset = 0;
    let mut changed = 0;
    loop {
        let batch: Vec<Value> = {
            let s = store.lock().unwrap();
            s.iter().skip(offset).take(50).map(|(_, c)| c.clone()).collect()
        };
        if batch.is_empty() {
            break;
        }
        let results = reencrypt_batch(&f, &batch).await;
        assert_eq!(results.len(), batch.len());
        let mut s = store.lock().unwrap();
        for (i, r) in results.iter().enumerate() {
            assert!(r.get("error").is_none(), "{r}");
            if r["changed"] == true {
                changed += 1;
                s[offset + i].1 = r["ciphertext"].clone();
            }
        }
        offset += batch.len();
        if offset > 2000 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    // What the clients wrote after the last batch was read is under the new keys.
    let rest: Vec<Value> = store.lock().unwrap().iter().skip(offset).map(|(_, c)| c.clone()).collect();
    for r in reencrypt_batch(&f, &rest).await {
        assert_eq!(r["changed"], false, "{r}");
    }
    // Every message re-encrypted, but the old data keys' counts are settled only once
    // their instance flushed past the tenant-view bound after the switch.
    let c = key_change(&f, &ta).await;
    assert_eq!((c["state"].as_str(), c["remaining"].as_u64()), (Some("in_progress"), Some(0)), "{c}");
    assert!(c["unsettled_data_keys"].as_u64().unwrap() > 0, "{c}");
    f.clock.advance(std::time::Duration::from_millis(keyhold_lifecycle::SETTLE_MS + 1));
    let c = key_change(&f, &ta).await;
    assert_eq!((c["state"].as_str(), c["remaining"].as_u64()), (Some("complete"), Some(0)), "{c}");
    assert_eq!(c["unsettled_data_keys"], 0, "{c}");
    assert_eq!(c["percent"], 100.0);
    assert_eq!(c["reencrypted"].as_u64(), Some(changed), "{c}");
    assert_eq!(c["messages"].as_u64(), Some(changed), "every message the ledger counted was re-encrypted: {c}");

    // Retire the old key, then disable it in the provider: nothing needs it.
    let path = format!("/v1/tenants/acme/keys/eu-central-1/{}/retire", encode_key(&old[0]));
    let (s, r) = f.call(Method::POST, &path, Some(&ta), None).await;
    assert_eq!((s, r["remaining"].as_u64()), (StatusCode::OK, Some(0)), "{r}");
    f.local().disable_key(&KeyRef::parse(&old[0]).unwrap()).unwrap();
    let all: Vec<(Vec<u8>, Value)> = store.lock().unwrap().clone();
    for (pt, ct) in &all {
        let (s, d) = f.decrypt("acme", ct).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        assert_eq!(&B64.decode(d["plaintext"].as_str().unwrap()).unwrap(), pt);
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed during the key change");
    let (_, t) = f.call(Method::GET, "/v1/tenants/acme", Some(&ta), None).await;
    assert_eq!(t["state"], "active", "{t}");
    let (_, keys) = f.call(Method::GET, "/v1/tenants/acme/keys", Some(&ta), None).await;
    let retired = keys["keys"].as_array().unwrap().iter().find(|k| k["key_arn"] == old[0].as_str()).unwrap();
    assert_eq!(retired["status"], "retired");
    assert_eq!(retired["reencrypted"], retired["messages"], "{retired}");
    // Every step is in the trail.
    let (_, page) = f.call(Method::GET, "/v1/tenants/acme/audit?limit=1000", Some(&ta), None).await;
    let actions: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["type"] == "admin_action")
        .filter_map(|e| e["event"]["action"].as_str())
        .collect();
    for a in ["attach_key", "retire_key"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

#[tokio::test]
async fn retiring_is_refused_while_messages_remain_and_a_retired_key_is_never_used() {
    let f = fixture().await;
    let old = f.active_tenant("acme").await;
    let admin = f.admin_token();
    let mut cts = Vec::new();
    for i in 0..3 {
        cts.push(f.encrypt("acme", format!("m{i}").as_bytes(), json!({})).await.1["ciphertext"].clone());
    }
    let retire = |k: &str| format!("/v1/tenants/acme/keys/eu-central-1/{}/retire", encode_key(k));
    // The active key cannot be retired; an unknown one is not found.
    let (s, e) = f.call(Method::POST, &retire(&old[0]), Some(&admin), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_active")), "{e}");
    let (s, e) = f.call(Method::POST, &retire("lk-nope"), Some(&admin), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("key_not_found")), "{e}");

    let new = f.local().create_key(&Region::parse("eu-central-1").unwrap(), "").unwrap().key.to_string();
    let (s, _) =
        f.call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": new}))).await;
    assert_eq!(s, StatusCode::OK);
    // One message re-encrypted, twice (a retry): counted once.
    for _ in 0..2 {
        let (s, r) = f
            .call(
                Method::POST,
                "/v1/reencrypt",
                Some(&f.dev_token()),
                Some(json!({"tenant": "acme", "ciphertext": cts[0]})),
            )
            .await;
        assert_eq!((s, r["changed"].as_bool()), (StatusCode::OK, Some(true)), "{r}");
    }
    let c = key_change(&f, &admin).await;
    assert_eq!(
        (c["messages"].as_u64(), c["reencrypted"].as_u64(), c["remaining"].as_u64()),
        (Some(3), Some(1), Some(2)),
        "{c}"
    );
    let (s, e) = f.call(Method::POST, &retire(&old[0]), Some(&admin), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_protects_data")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("2 message(s)"), "{e}");
    let (s, r) = f.call(Method::POST, &format!("{}?force=true", retire(&old[0])), Some(&admin), None).await;
    assert_eq!((s, r["remaining"].as_u64()), (StatusCode::OK, Some(2)), "{r}");
    // A message under the retired key only (and eu-west-1's key) still decrypts through
    // eu-west-1; once that region's key is retired too, it is refused as retired.
    let (s, _) = f.decrypt("acme", &cts[1]).await;
    assert_eq!(s, StatusCode::OK);
    let new_w = f.local().create_key(&Region::parse("eu-west-1").unwrap(), "").unwrap().key.to_string();
    f.call(Method::PUT, "/v1/tenants/acme/keys/eu-west-1", Some(&admin), Some(json!({"key_arn": new_w}))).await;
    let path = format!("/v1/tenants/acme/keys/eu-west-1/{}/retire?force=true", encode_key(&old[1]));
    assert_eq!(f.call(Method::POST, &path, Some(&admin), None).await.0, StatusCode::OK);
    let (s, e) = f.decrypt("acme", &cts[1]).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_retired")), "{e}");
    // A retired key cannot come back, and retiring twice says so.
    let (s, e) =
        f.call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": old[0]}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_retired")));
    let (s, e) = f.call(Method::POST, &format!("{}?force=true", retire(&old[0])), Some(&admin), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_retired")));
}

#[tokio::test]
async fn reencryption_checks_what_decryption_checks_and_skips_current_messages() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    let (_, e) = f.encrypt("acme", b"secret", json!({"table": "t"})).await;
    let dev = f.dev_token();
    // Under the active keys already: unchanged.
    let (s, r) = f
        .call(Method::POST, "/v1/reencrypt", Some(&dev), Some(json!({"tenant": "acme", "ciphertext": e["ciphertext"]})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r, json!({"changed": false}));
    // Another tenant's message: refused as for decrypt.
    let (s, r) = f
        .call(
            Method::POST,
            "/v1/reencrypt",
            Some(&dev),
            Some(json!({"tenant": "globex", "ciphertext": e["ciphertext"]})),
        )
        .await;
    assert_eq!((s, r["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("tenant_mismatch")));
    // Not a service token: refused.
    let (s, _) = f
        .call(
            Method::POST,
            "/v1/reencrypt",
            Some(&f.tenant_admin_token("acme")),
            Some(json!({"tenant": "acme", "ciphertext": e["ciphertext"]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A corrupted message: a clear 400.
    let (s, r) =
        f.call(Method::POST, "/v1/reencrypt", Some(&dev), Some(json!({"tenant": "acme", "ciphertext": "AAAA"}))).await;
    assert_eq!((s, r["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_ciphertext")));
    // After a key change: a new message (new id, new data key), same purpose and context.
    let new = f.local().create_key(&Region::parse("eu-west-1").unwrap(), "").unwrap().key.to_string();
    f.call(Method::PUT, "/v1/tenants/acme/keys/eu-west-1", Some(&f.admin_token()), Some(json!({"key_arn": new}))).await;
    let (s, r) = f
        .call(Method::POST, "/v1/reencrypt", Some(&dev), Some(json!({"tenant": "acme", "ciphertext": e["ciphertext"]})))
        .await;
    assert_eq!((s, r["changed"].as_bool()), (StatusCode::OK, Some(true)), "{r}");
    let old_h = B64.decode(e["ciphertext"].as_str().unwrap()).unwrap();
    let new_h = B64.decode(r["ciphertext"].as_str().unwrap()).unwrap();
    let (old_h, new_h) = (
        keyhold_envelope::read_header(&old_h, &Default::default()).unwrap(),
        keyhold_envelope::read_header(&new_h, &Default::default()).unwrap(),
    );
    assert_ne!(old_h.message_id(), new_h.message_id());
    assert_ne!(data_key_of(&e["ciphertext"]), data_key_of(&r["ciphertext"]));
    let (_, d) = f.decrypt("acme", &r["ciphertext"]).await;
    assert_eq!(B64.decode(d["plaintext"].as_str().unwrap()).unwrap(), b"secret");
    assert_eq!((d["purpose"].as_str(), d["context"].clone()), (Some("billing"), json!({"table": "t"})));
}

#[tokio::test]
async fn a_forced_rotation_gives_new_messages_new_data_keys_and_old_ones_still_decrypt() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let (_, a) = f.encrypt("acme", b"a", json!({})).await;
    let (_, b) = f.encrypt("acme", b"b", json!({})).await;
    assert_eq!(data_key_of(&a["ciphertext"]), data_key_of(&b["ciphertext"]), "data keys are reused");
    let ta = f.tenant_admin_token("acme");
    let (s, r) = f.call(Method::POST, "/v1/tenants/acme/rotate-data-keys", Some(&ta), None).await;
    assert_eq!((s, r["generation"].as_u64()), (StatusCode::OK, Some(1)), "{r}");
    let (_, c) = f.encrypt("acme", b"c", json!({})).await;
    assert_ne!(data_key_of(&a["ciphertext"]), data_key_of(&c["ciphertext"]));
    assert_eq!(f.decrypt("acme", &a["ciphertext"]).await.0, StatusCode::OK);
    // The ledger shows both data keys under each key.
    let (_, keys) = f.call(Method::GET, "/v1/tenants/acme/keys", Some(&ta), None).await;
    for k in keys["keys"].as_array().unwrap() {
        assert_eq!((k["data_keys"].as_u64(), k["messages"].as_u64()), (Some(2), Some(3)), "{k}");
    }
    let (_, page) = f.call(Method::GET, "/v1/tenants/acme/audit?limit=1000", Some(&ta), None).await;
    assert!(page["events"].as_array().unwrap().iter().any(|e| e["event"]["action"] == "rotate_data_keys"));
}

#[tokio::test]
async fn a_tenant_admin_reaches_its_own_key_change_only() {
    let f = fixture().await;
    let acme = f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    let ta = f.tenant_admin_token("globex");
    let retire = format!("/v1/tenants/acme/keys/eu-central-1/{}/retire?force=true", encode_key(&acme[0]));
    for (m, p) in [
        (Method::GET, "/v1/tenants/acme/key-change"),
        (Method::POST, "/v1/tenants/acme/rotate-data-keys"),
        (Method::POST, retire.as_str()),
        (Method::GET, "/v1/tenants/acme/keys"),
    ] {
        let (s, e) = f.call(m.clone(), p, Some(&ta), None).await;
        assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{m} {p}");
        let (s, _) = f.call(m.clone(), p, Some(&f.dev_token()), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "a service on {m} {p}");
    }
    // A role is for byok tenants only.
    let (s, e) = f
        .call(
            Method::PUT,
            "/v1/tenants/globex/role",
            Some(&ta),
            Some(json!({"role_arn": "arn:aws:iam::111122223333:role/new"})),
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("tenant_not_byok")), "{e}");
}

/// Sends `body` to a stream endpoint; returns the status, `x-keyhold-changed`, and the
/// body (or the error that aborted it).
async fn stream(
    f: &Fixture,
    path: &str,
    content_type: &str,
    extra: Option<(&str, &str)>,
    body: Vec<u8>,
) -> (StatusCode, Option<String>, Result<Vec<u8>, String>) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let mut req = axum::http::Request::post(path)
        .header("authorization", format!("Bearer {}", f.dev_token()))
        .header("content-type", content_type);
    if let Some((k, v)) = extra {
        req = req.header(k, v);
    }
    let resp =
        keyhold_server::router(f.state.clone()).oneshot(req.body(axum::body::Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let changed = resp.headers().get("x-keyhold-changed").map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.map(|c| c.to_bytes().to_vec()).map_err(|e| e.to_string());
    (status, changed, body)
}

/// Large objects over HTTP, in process: encrypt, decrypt and re-encrypt streams agree
/// with each other and with the JSON API; checks happen before the status; a signed
/// message whose signature fails aborts the response body.
#[tokio::test]
async fn streams_encrypt_decrypt_and_reencrypt_and_abort_on_a_bad_signature() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    let plaintext: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let oct = "application/octet-stream";
    let (s, _, ct) = stream(
        &f,
        "/v1/encrypt/stream?tenant=acme&purpose=billing",
        oct,
        Some(("x-keyhold-context", r#"{"table":"blobs"}"#)),
        plaintext.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let ct = ct.unwrap();
    let h = keyhold_envelope::read_header(&ct, &Default::default()).unwrap();
    assert_eq!((h.context_value("table"), h.context_value("tenant")), (Some("blobs"), Some("acme")));
    let (s, _, pt) = stream(&f, "/v1/decrypt/stream?tenant=acme", oct, None, ct.clone()).await;
    assert_eq!((s, pt.unwrap() == plaintext), (StatusCode::OK, true));
    // The JSON API reads the same message.
    let (s, d) = f.decrypt("acme", &Value::String(B64.encode(&ct))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(B64.decode(d["plaintext"].as_str().unwrap()).unwrap(), plaintext);
    // Checks before the status: another tenant, the media type, a bad context.
    let (s, _, e) = stream(&f, "/v1/decrypt/stream?tenant=globex", oct, None, ct.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(String::from_utf8(e.unwrap()).unwrap().contains("tenant_mismatch"));
    let (s, _, _) = stream(&f, "/v1/decrypt/stream?tenant=acme", "application/json", None, ct.clone()).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, _) =
        stream(&f, "/v1/encrypt/stream?tenant=acme&purpose=billing", oct, Some(("x-keyhold-context", "[1]")), vec![1])
            .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Re-encryption: unchanged under the active keys; after a key change, a new message.
    let (s, changed, body) = stream(&f, "/v1/reencrypt/stream?tenant=acme", oct, None, ct.clone()).await;
    assert_eq!((s, changed.as_deref(), body.unwrap().len()), (StatusCode::OK, Some("false"), 0));
    let new = f.local().create_key(&Region::parse("eu-west-1").unwrap(), "").unwrap().key.to_string();
    f.call(Method::PUT, "/v1/tenants/acme/keys/eu-west-1", Some(&f.admin_token()), Some(json!({"key_arn": new}))).await;
    let (s, changed, re) = stream(&f, "/v1/reencrypt/stream?tenant=acme", oct, None, ct.clone()).await;
    assert_eq!((s, changed.as_deref()), (StatusCode::OK, Some("true")));
    let re = re.unwrap();
    let (_, _, pt) = stream(&f, "/v1/decrypt/stream?tenant=acme", oct, None, re.clone()).await;
    assert!(pt.unwrap() == plaintext);
    let c = key_change(&f, &f.admin_token()).await;
    assert_eq!(c["reencrypted"], 1, "{c}");
    // A signed message (0x0578) with a broken signature: the status was 200, the body
    // is aborted, so the client cannot take it for a complete plaintext.
    let keys: Vec<KeyRef> = {
        let (_, t) = f.call(Method::GET, "/v1/tenants/acme/keys", Some(&f.admin_token()), None).await;
        t["keys"]
            .as_array()
            .unwrap()
            .iter()
            // Active and decrypt-only keys: a message re-encryption has work to do on.
            .filter(|k| k["status"] != "retired")
            .map(|k| KeyRef::parse(k["key_arn"].as_str().unwrap()).unwrap())
            .collect()
    };
    let provider: Arc<dyn keyhold_provider::KeyProvider> = Arc::new(f.local());
    let k = keyhold_service::Keyhold::new(vec![provider], Default::default(), Arc::new(keyhold_core::SystemClock));
    let params = keyhold_service::EncryptParams {
        tenant: keyhold_core::TenantId::parse("acme").unwrap(),
        purpose: keyhold_core::Purpose::parse("billing").unwrap(),
        keys: keys.into(),
        context: Default::default(),
        suite: keyhold_envelope::AlgorithmSuite::from_id(0x0578).unwrap(),
        generation: 0,
    };
    let mut signed = k.encrypt(&params, &plaintext).await.unwrap();
    let (s, _, pt) = stream(&f, "/v1/decrypt/stream?tenant=acme", oct, None, signed.clone()).await;
    assert!(s == StatusCode::OK && pt.unwrap() == plaintext);
    let last = signed.len() - 1;
    signed[last] ^= 1;
    let (s, _, pt) = stream(&f, "/v1/decrypt/stream?tenant=acme", oct, None, signed.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(pt.is_err(), "a message whose signature failed was answered as complete");
    let (s, _, re) = stream(&f, "/v1/reencrypt/stream?tenant=acme", oct, None, signed).await;
    assert_eq!(s, StatusCode::OK);
    assert!(re.is_err(), "a re-encryption of a message whose signature failed was answered as complete");
}

/// The ledger's SQL on PostgreSQL: data keys recorded, a batch with the same message
/// twice counted once, progress, retirement.
#[tokio::test]
async fn the_ledger_works_on_postgres() {
    let f = super::fixture_on(Some(super::fresh_postgres("keyhold_ledger").await)).await;
    let old = f.active_tenant("acme").await;
    let admin = f.admin_token();
    let cts: Vec<Value> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(f.encrypt("acme", format!("m{i}").as_bytes(), json!({})).await.1["ciphertext"].clone());
        }
        v
    };
    let new = f.local().create_key(&Region::parse("eu-central-1").unwrap(), "").unwrap().key.to_string();
    f.call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": new}))).await;
    let mut batch = cts.clone();
    batch.push(cts[0].clone());
    for r in reencrypt_batch(&f, &batch).await {
        assert_eq!(r["changed"], true, "{r}");
    }
    f.clock.advance(std::time::Duration::from_millis(keyhold_lifecycle::SETTLE_MS + 1));
    let c = key_change(&f, &admin).await;
    assert_eq!(
        (c["messages"].as_u64(), c["reencrypted"].as_u64(), c["state"].as_str()),
        (Some(5), Some(5), Some("complete")),
        "{c}"
    );
    let path = format!("/v1/tenants/acme/keys/eu-central-1/{}/retire", encode_key(&old[0]));
    let (s, r) = f.call(Method::POST, &path, Some(&admin), None).await;
    assert_eq!((s, r["remaining"].as_u64()), (StatusCode::OK, Some(0)), "{r}");
    let (_, keys) = f.call(Method::GET, "/v1/tenants/acme/keys", Some(&admin), None).await;
    assert!(
        keys["keys"].as_array().unwrap().iter().any(|k| k["status"] == "retired" && k["reencrypted"] == 5),
        "{keys}"
    );
}
