//! Lifecycle events through the API: every step of a tenant's life and of its keys' is in
//! its feed with the tenant, region, key, cause code and fix; a tenant admin reads its own
//! feed only; the platform feed is the admin's; types filter and ids page.

use axum::http::{Method, StatusCode};
use keyhold_core::{KeyRef, Region};
use serde_json::{Value, json};

use super::{Fixture, fixture, fixture_on, fresh_postgres, second_instance};

async fn feed(f: &Fixture, path: &str, token: &str) -> Vec<Value> {
    let (s, page) = f.call(Method::GET, path, Some(token), None).await;
    assert_eq!(s, StatusCode::OK, "{path}: {page}");
    page["events"].as_array().unwrap().clone()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Waits (up to 10 s) for an event of `kind` in the tenant's feed.
async fn wait_for(f: &Fixture, kind: &str) -> Value {
    let admin = f.admin_token();
    for _ in 0..100 {
        let events = feed(f, &format!("/v1/tenants/acme/events?type={kind}"), &admin).await;
        if let Some(e) = events.last() {
            return e.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no {kind} event");
}

async fn every_step_is_an_event(f: Fixture) {
    let admin = f.admin_token();
    let keys = f.active_tenant("acme").await;
    let globex_keys = f.active_tenant("globex").await;
    let events = feed(&f, "/v1/tenants/acme/events", &admin).await;
    assert_eq!(types(&events), ["tenant.created", "key.attached", "key.attached", "tenant.activated"], "{events:?}");
    for e in &events {
        assert_eq!(e["tenant"], "acme");
        assert_eq!(e["data"]["tenant"], "acme");
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'), "{e}");
        assert!(e["data"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    assert_eq!(events[1]["data"]["region"], "eu-central-1");
    assert_eq!(events[1]["data"]["key"], keys[0].as_str());
    assert!(events.windows(2).all(|w| w[0]["id"].as_u64() < w[1]["id"].as_u64()));

    // A ciphertext from before the key change.
    let (s, ct) = f.encrypt("acme", b"before", json!({})).await;
    assert_eq!(s, StatusCode::OK);

    // Revoked: the suspension says where, why and what to do; restored: resumed.
    let k0 = KeyRef::parse(&keys[0]).unwrap();
    f.local().disable_key(&k0).unwrap();
    f.state.lifecycle.probe_all().await;
    let suspended = wait_for(&f, "tenant.suspended").await;
    let d = &suspended["data"];
    assert_eq!((d["region"].as_str(), d["key"].as_str()), (Some("eu-central-1"), Some(keys[0].as_str())), "{d}");
    assert_eq!(d["code"], "DisabledException", "{d}");
    assert_eq!(
        (d["from"].as_str(), d["to"].as_str(), d["cause"].as_str()),
        (Some("active"), Some("suspended"), Some("key_refused"))
    );
    assert!(d["message"].as_str().unwrap().contains("misconfiguration detected"), "{d}");
    assert!(d["fix"].as_str().unwrap().contains("Enable key"), "{d}");
    let revoked = wait_for(&f, "key.revoked").await;
    assert_eq!(revoked["data"]["key"], keys[0].as_str());
    f.local().enable_key(&k0).unwrap();
    f.state.lifecycle.probe_all().await;
    assert_eq!(wait_for(&f, "tenant.resumed").await["data"]["cause"], "keys_healthy");
    assert_eq!(wait_for(&f, "key.restored").await["data"]["key"], keys[0].as_str());
    // A second probe finds nothing new: no event.
    let before = feed(&f, "/v1/tenants/acme/events", &admin).await.len();
    f.state.lifecycle.probe_all().await;
    assert_eq!(feed(&f, "/v1/tenants/acme/events", &admin).await.len(), before);

    // Key change, by the tenant's own admin: attach, re-encrypt (progress), retire.
    let ta = f.tenant_admin_token("acme");
    let new = f.local().create_key(&Region::parse("eu-central-1").unwrap(), "").unwrap().key.to_string();
    let (s, r) =
        f.call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&ta), Some(json!({"key_arn": new}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let tail = feed(&f, &format!("/v1/tenants/acme/events?after={}", events[3]["id"]), &admin).await;
    let replaced = tail.iter().find(|e| e["type"] == "key.replaced").unwrap();
    assert_eq!(
        (replaced["data"]["key"].as_str(), replaced["data"]["to"].as_str()),
        (Some(keys[0].as_str()), Some("decrypt_only"))
    );
    let attached = tail.iter().rfind(|e| e["type"] == "key.attached").unwrap();
    assert_eq!(attached["data"]["key"], new.as_str());
    let body = json!({"items": [{"tenant": "acme", "ciphertext": ct["ciphertext"]}]});
    let (s, out) = f.call(Method::POST, "/v1/reencrypt/batch", Some(&f.dev_token()), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    // Complete once the old data keys' counts are settled (past the settle window), and
    // reported when the progress is looked at.
    f.clock.advance(std::time::Duration::from_millis(keyhold_lifecycle::SETTLE_MS + 1));
    let (s, _) = f.call(Method::GET, "/v1/tenants/acme/key-change", Some(&ta), None).await;
    assert_eq!(s, StatusCode::OK);
    let done = wait_for(&f, "key_change.completed").await;
    assert_eq!((done["data"]["percent"].as_u64(), done["data"]["messages"].as_u64()), (Some(100), Some(1)), "{done}");
    // Reported once, however often progress is checked.
    let (s, _) = f.call(Method::GET, "/v1/tenants/acme/key-change", Some(&ta), None).await;
    assert_eq!(s, StatusCode::OK);
    let again = json!({"items": [{"tenant": "acme", "ciphertext": ct["ciphertext"]}]});
    f.call(Method::POST, "/v1/reencrypt/batch", Some(&f.dev_token()), Some(again)).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(feed(&f, "/v1/tenants/acme/events?type=key_change.completed", &admin).await.len(), 1);
    let path = format!("/v1/tenants/acme/keys/eu-central-1/{}/retire", keys[0].replace(':', "%3A").replace('/', "%2F"));
    let (s, r) = f.call(Method::POST, &path, Some(&ta), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let retired = wait_for(&f, "key.retired").await;
    assert_eq!(
        (retired["data"]["key"].as_str(), retired["data"]["forced"].as_bool()),
        (Some(keys[0].as_str()), Some(false))
    );
    let (s, _) = f.call(Method::POST, "/v1/tenants/acme/rotate-data-keys", Some(&ta), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(wait_for(&f, "data_keys.rotated").await["data"]["generation"], 1);

    // Validation finding a disabled key: revoked too (not misconfigured), with the fix.
    let g = &globex_keys;
    f.local().disable_key(&KeyRef::parse(&g[1]).unwrap()).unwrap();
    let (s, _) = f.call(Method::POST, "/v1/tenants/globex/validate", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    let revoked = feed(&f, "/v1/tenants/globex/events?type=key.revoked", &admin).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(
        (revoked[0]["data"]["key"].as_str(), revoked[0]["data"]["code"].as_str()),
        (Some(g[1].as_str()), Some("key_disabled"))
    );
    assert!(revoked[0]["data"]["fix"].as_str().is_some_and(|f| !f.is_empty()));
    let s = feed(&f, "/v1/tenants/globex/events?type=tenant.suspended", &admin).await;
    assert_eq!(s.last().unwrap()["data"]["cause"], "validation_failed");
    assert!(s.last().unwrap()["data"]["message"].as_str().unwrap().starts_with("misconfiguration detected"));
    f.local().enable_key(&KeyRef::parse(&g[1]).unwrap()).unwrap();

    // Who reads what.
    let (s, e) = f.call(Method::GET, "/v1/tenants/globex/events", Some(&ta), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    for token in [ta.clone(), f.dev_token()] {
        let (s, _) = f.call(Method::GET, "/v1/events", Some(&token), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let (s, _) = f.call(Method::GET, "/v1/tenants/acme/events", Some(&f.dev_token()), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let all = feed(&f, "/v1/events?limit=1000", &admin).await;
    assert!(all.iter().any(|e| e["tenant"] == "globex") && all.iter().any(|e| e["tenant"] == "acme"));
    let own = feed(&f, "/v1/tenants/acme/events?limit=1000", &ta).await;
    assert!(own.iter().all(|e| e["tenant"] == "acme"));
    assert_eq!(own.len(), all.iter().filter(|e| e["tenant"] == "acme").count());

    // Paging and filters.
    let (s, page) = f.call(Method::GET, "/v1/events?limit=2", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let next = page["next"].as_u64().unwrap();
    assert_eq!(next, page["events"][1]["id"].as_u64().unwrap());
    let rest = feed(&f, &format!("/v1/events?after={next}&limit=1000"), &admin).await;
    assert_eq!(rest.len() + 2, all.len());
    let two = feed(&f, "/v1/events?type=tenant.created,tenant.activated", &admin).await;
    assert!(two.iter().all(|e| ["tenant.created", "tenant.activated"].contains(&e["type"].as_str().unwrap())));
    assert!(two.len() >= 4, "{two:?}");
    for bad in ["type=tenant.exploded", "limit=0", "limit=1001", "after=-1"] {
        let (s, e) = f.call(Method::GET, &format!("/v1/events?{bad}"), Some(&admin), None).await;
        assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{bad}");
    }
    let (s, e) = f.call(Method::GET, "/v1/tenants/nobody/events", Some(&admin), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("tenant_not_found")));

    // A deletion is the feed's last word, still readable.
    let (s, _) = f.call(Method::DELETE, "/v1/tenants/globex", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    let g = feed(&f, "/v1/tenants/globex/events", &admin).await;
    let n = g.len();
    assert_eq!((g[n - 2]["type"].as_str(), g[n - 2]["data"]["to"].as_str()), (Some("tenant.deleted"), Some("deleted")));
    // ... and the confirmation that no instance can use its keys any more.
    assert_eq!(g[n - 1]["type"], "tenant.revocation_confirmed", "{g:?}");
}

#[tokio::test]
async fn every_step_of_a_tenant_and_its_keys_is_an_event() {
    every_step_is_an_event(fixture().await).await;
}

#[tokio::test]
async fn every_step_is_an_event_on_postgres() {
    every_step_is_an_event(fixture_on(Some(fresh_postgres("keyhold_events").await)).await).await;
}

/// Webhook endpoints through the API: only https URLs with public hosts (the fixture does
/// not allow private ones), known event types, at most ten per tenant; a tenant admin
/// reaches its own endpoints only, never another tenant's or the platform's; secrets are
/// shown when created and rotated, never listed.
#[tokio::test]
async fn webhook_endpoints_belong_to_their_owner() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    let admin = f.admin_token();
    let (acme, globex) = (f.tenant_admin_token("acme"), f.tenant_admin_token("globex"));
    let create = |token: String, path: &'static str, body: Value| {
        let f = &f;
        async move { f.call(Method::POST, path, Some(&token), Some(body)).await }
    };
    for url in [
        "http://hooks.example.com/k",
        "https://127.0.0.1/k",
        "https://169.254.169.254/latest",
        "https://localhost/x",
        "https://u:p@hooks.example.com/",
        "hooks.example.com",
        "",
    ] {
        let (s, e) = create(acme.clone(), "/v1/tenants/acme/webhooks", json!({"url": url})).await;
        assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{url}: {e}");
    }
    let (s, e) = create(
        acme.clone(),
        "/v1/tenants/acme/webhooks",
        json!({"url": "https://hooks.example.com/k", "events": ["key.exploded"]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) =
        create(acme.clone(), "/v1/tenants/acme/webhooks", json!({"url": "https://hooks.example.com/k", "events": []}))
            .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, mine) = create(
        acme.clone(),
        "/v1/tenants/acme/webhooks",
        json!({"url": "https://hooks.example.com/k", "events": ["tenant.suspended", "tenant.suspended", "key.revoked"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{mine}");
    assert!(mine["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(mine["events"], json!(["tenant.suspended", "key.revoked"]));
    let id = mine["id"].as_str().unwrap();
    // Listing never shows a secret.
    let (_, list) = f.call(Method::GET, "/v1/tenants/acme/webhooks", Some(&acme), None).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    assert!(list["webhooks"][0].get("secret").is_none(), "{list}");
    // Another tenant's admin: refused on acme's paths, and acme's endpoint is not found
    // under its own tenant's paths.
    for (m, p) in [
        (Method::GET, format!("/v1/tenants/acme/webhooks/{id}")),
        (Method::GET, "/v1/tenants/acme/webhooks".into()),
        (Method::DELETE, format!("/v1/tenants/acme/webhooks/{id}")),
    ] {
        let (s, _) = f.call(m, &p, Some(&globex), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{p}");
    }
    for (m, p) in [
        (Method::GET, format!("/v1/tenants/globex/webhooks/{id}")),
        (Method::POST, format!("/v1/tenants/globex/webhooks/{id}/rotate-secret")),
        (Method::POST, format!("/v1/tenants/globex/webhooks/{id}/test")),
        (Method::GET, format!("/v1/tenants/globex/webhooks/{id}/deliveries")),
        (Method::DELETE, format!("/v1/tenants/globex/webhooks/{id}")),
        (Method::GET, format!("/v1/webhooks/{id}")),
    ] {
        let token = if p.starts_with("/v1/webhooks") { &admin } else { &globex };
        let (s, e) = f.call(m, &p, Some(token), None).await;
        assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("webhook_not_found")), "{p}");
    }
    // The platform's endpoints are the admin's alone.
    for token in [&acme, &f.dev_token()] {
        let (s, _) = create(token.clone(), "/v1/webhooks", json!({"url": "https://hooks.example.com/p"})).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = f.call(Method::GET, "/v1/webhooks", Some(token), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let (s, platform) = create(admin.clone(), "/v1/webhooks", json!({"url": "https://hooks.example.com/p"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e) = f
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/webhooks/{}", platform["id"].as_str().unwrap()),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("webhook_not_found")));
    // Rotation shows the new secret and until when the old one signs.
    let (s, r) =
        f.call(Method::POST, &format!("/v1/tenants/acme/webhooks/{id}/rotate-secret"), Some(&acme), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_ne!(r["secret"], mine["secret"]);
    assert!(r["previous_secret_until_ms"].as_u64().unwrap() > f.state.now_ms());
    // A test send is queued, and is in the tenant's feed.
    let (s, t) = f.call(Method::POST, &format!("/v1/tenants/acme/webhooks/{id}/test"), Some(&acme), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{t}");
    let (_, log) = f.call(Method::GET, &format!("/v1/tenants/acme/webhooks/{id}/deliveries"), Some(&acme), None).await;
    assert_eq!(log["deliveries"][0]["event_id"], t["event_id"], "{log}");
    assert_eq!(log["deliveries"][0]["state"], "pending");
    // One test at a time per endpoint: a test send cannot flood it or the queue.
    let (s, e) = f.call(Method::POST, &format!("/v1/tenants/acme/webhooks/{id}/test"), Some(&acme), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("test_pending")), "{e}");
    // A malformed endpoint id is a client error.
    let (s, e) = f.call(Method::GET, "/v1/tenants/acme/webhooks/wh_zz", Some(&acme), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{e}");
    // At most ten per tenant.
    for i in 1..10 {
        let (s, _) =
            create(acme.clone(), "/v1/tenants/acme/webhooks", json!({"url": format!("https://hooks.example.com/{i}")}))
                .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, e) =
        create(acme.clone(), "/v1/tenants/acme/webhooks", json!({"url": "https://hooks.example.com/11"})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("too_many_webhooks")));
    // Deleted: gone from the list, its pending delivery cancelled.
    let (s, _) = f.call(Method::DELETE, &format!("/v1/tenants/acme/webhooks/{id}"), Some(&acme), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = f.call(Method::GET, &format!("/v1/tenants/acme/webhooks/{id}"), Some(&acme), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A suspension made through one instance is enforced by another within 1 s: PostgreSQL
/// notifications drop its view at once (the manual clock never lets views expire here),
/// and once both instances dropped the tenant's keys, `tenant.revocation_confirmed` says
/// since when no instance can use them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_reaches_every_instance_within_a_second_on_postgres() {
    let url = fresh_postgres("keyhold_notify").await;
    let a = fixture_on(Some(url.clone())).await;
    let keys = a.active_tenant("acme").await;
    let b = second_instance(&a, url).await;
    let listeners: Vec<_> = [&a, &b]
        .iter()
        .map(|f| keyhold_lifecycle::propagation::spawn_listener(f.state.lifecycle.clone()).unwrap())
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // b serves acme (its view and a data key cached); both instances are running.
    let (s, e) = b.encrypt("acme", b"x", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    a.state.lifecycle.flush(false).await;
    b.state.lifecycle.flush(false).await;
    // Suspended through a.
    a.local().disable_key(&KeyRef::parse(&keys[0]).unwrap()).unwrap();
    a.state.lifecycle.probe_all().await;
    let started = std::time::Instant::now();
    loop {
        let (s, e) = b.encrypt("acme", b"x", json!({})).await;
        if s == StatusCode::FORBIDDEN {
            assert_eq!(e["error"]["code"], "tenant_suspended", "{e}");
            break;
        }
        assert_eq!(s, StatusCode::OK, "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "b still serves acme after 1 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    eprintln!("suspension through a enforced by b after {:?}", started.elapsed());
    let confirmed = wait_for(&a, "tenant.revocation_confirmed").await;
    assert!(confirmed["data"]["confirmed_ms"].as_u64().is_some(), "{confirmed}");
    assert!(confirmed["data"]["message"].as_str().unwrap().starts_with("no keyhold instance can use"), "{confirmed}");
    for l in listeners {
        l.abort();
    }
}

/// A confirmation held back by an instance that stopped before confirming is given once
/// that instance no longer counts as running (the sweep looks again), never before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_delays_the_revocation_confirmation_only_while_it_counts_as_running() {
    let url = fresh_postgres("keyhold_receipts").await;
    let a = fixture_on(Some(url.clone())).await;
    let keys = a.active_tenant("acme").await;
    let b = second_instance(&a, url).await;
    // Both running (their ledgers flushed); b then stops without ever confirming.
    a.state.lifecycle.flush(false).await;
    b.state.lifecycle.flush(false).await;
    a.local().disable_key(&KeyRef::parse(&keys[0]).unwrap()).unwrap();
    a.state.lifecycle.probe_all().await;
    a.state.lifecycle.flush(false).await;
    let confirmed =
        || async { feed(&a, "/v1/tenants/acme/events?type=tenant.revocation_confirmed", &a.admin_token()).await };
    assert!(confirmed().await.is_empty(), "confirmed while b could still use the keys");
    a.clock.advance(std::time::Duration::from_millis(keyhold_lifecycle::propagation::ALIVE_MS + 1));
    a.state.lifecycle.flush(false).await;
    let c = confirmed().await;
    assert_eq!(c.len(), 1, "{c:?}");
    drop(b);
}
