//! The HTTP API in process (the router driven through tower), on the embedded default:
//! SQLite registry and local key provider in a temp data dir. Tenant lifecycle, encrypt
//! and decrypt with their batch forms, authentication and scopes, tenant isolation,
//! revocation and restore, crypto-shredding, the audit trail (with a canary that must
//! never reach it), metrics, OpenAPI, and error bodies for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::BodyExt as _;
use keyhold_core::{ManualClock, Region};
use keyhold_onboarding::RealmCatalog;
use keyhold_provider_local::LocalKms;
use keyhold_server::auth::{ADMIN_ISSUER, Scope, SigningKey};
use keyhold_server::devcreds;
use keyhold_server::serve::{ServeConfig, build};
use keyhold_server::{AppState, router};
use serde_json::{Value, json};
use tower::ServiceExt as _;

mod console;
mod edge;
mod events;
mod keychange;
mod monitor;
mod openapi;
mod promises;

struct Fixture {
    state: Arc<AppState>,
    dir: tempfile::TempDir,
    admin: SigningKey,
    dev: SigningKey,
    clock: Arc<ManualClock>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A new, empty database named `prefix`_<pid> on the PostgreSQL the test command starts.
async fn fresh_postgres(prefix: &str) -> String {
    use sqlx::Connection as _;
    let base = std::env::var("KEYHOLD_TEST_POSTGRES_URL")
        .expect("KEYHOLD_TEST_POSTGRES_URL is not set: run scripts/test, which starts PostgreSQL");
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let name = format!("{prefix}_{}", std::process::id());
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut admin).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

async fn fixture() -> Fixture {
    fixture_on(None).await
}

async fn fixture_on(database_url: Option<String>) -> Fixture {
    fixture_with(database_url, None).await
}

async fn fixture_with(database_url: Option<String>, aws: Option<keyhold_provider_aws::AwsSdkConfig>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(now_ms()));
    let config = ServeConfig {
        database_url,
        platform_principal: Some("arn:aws:iam::111122223333:role/keyhold".into()),
        aws,
        probe_interval: None,
        dev: true,
        ..ServeConfig::embedded(dir.path())
    };
    let (state, created) = build(&config, RealmCatalog::builtin(), clock.clone()).await.unwrap();
    assert!(created.admin.is_some() && created.dev_service.is_some());
    let admin = devcreds::read_key(&devcreds::admin_key_path(dir.path())).unwrap();
    let dev = devcreds::read_key(&devcreds::service_key_path(dir.path(), "dev")).unwrap();
    Fixture { state, dir, admin, dev, clock }
}

/// A second instance over `a`'s registry (PostgreSQL `url`), with `a`'s credentials and
/// clock.
async fn second_instance(a: &Fixture, url: String) -> Fixture {
    let config = keyhold_server::serve::ServeConfig {
        database_url: Some(url),
        probe_interval: None,
        dev: true,
        ..keyhold_server::serve::ServeConfig::embedded(a.dir.path())
    };
    let (state, _) = build(&config, RealmCatalog::builtin(), a.clock.clone()).await.unwrap();
    Fixture {
        state,
        dir: tempfile::tempdir().unwrap(),
        admin: devcreds::read_key(&devcreds::admin_key_path(a.dir.path())).unwrap(),
        dev: devcreds::read_key(&devcreds::service_key_path(a.dir.path(), "dev")).unwrap(),
        clock: a.clock.clone(),
    }
}

impl Fixture {
    fn now_s(&self) -> u64 {
        self.state.now_ms() / 1000
    }

    fn admin_token(&self) -> String {
        self.admin.token(ADMIN_ISSUER, Scope::Admin, None, self.now_s(), 300)
    }

    fn tenant_admin_token(&self, tenant: &str) -> String {
        self.admin.token(ADMIN_ISSUER, Scope::TenantAdmin, Some(tenant), self.now_s(), 300)
    }

    fn dev_token(&self) -> String {
        self.dev.token("dev", Scope::Service, None, self.now_s(), 300)
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.raw(method, path, token, body.map(|b| b.to_string())).await
    }

    async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Option<String>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b)).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    fn local(&self) -> LocalKms {
        LocalKms::open(self.dir.path()).unwrap()
    }

    /// Creates tenant `id` in realm eu with two fresh local keys attached; returns them.
    async fn active_tenant(&self, id: &str) -> Vec<String> {
        let admin = self.admin_token();
        let (s, t) = self
            .call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": id, "realm": "eu", "mode": "local"})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let mut keys = Vec::new();
        for region in ["eu-central-1", "eu-west-1"] {
            let k = self.local().create_key(&Region::parse(region).unwrap(), "test").unwrap().key.to_string();
            let (s, report) = self
                .call(
                    Method::PUT,
                    &format!("/v1/tenants/{id}/keys/{region}"),
                    Some(&admin),
                    Some(json!({"key_arn": k})),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{report}");
            keys.push(k);
        }
        let (_, t) = self.call(Method::GET, &format!("/v1/tenants/{id}"), Some(&admin), None).await;
        assert_eq!(t["state"], "active", "{t}");
        keys
    }

    async fn encrypt(&self, tenant: &str, plaintext: &[u8], context: Value) -> (StatusCode, Value) {
        let body =
            json!({"tenant": tenant, "purpose": "billing", "plaintext": B64.encode(plaintext), "context": context});
        self.call(Method::POST, "/v1/encrypt", Some(&self.dev_token()), Some(body)).await
    }

    async fn decrypt(&self, tenant: &str, ciphertext: &Value) -> (StatusCode, Value) {
        let body = json!({"tenant": tenant, "ciphertext": ciphertext});
        self.call(Method::POST, "/v1/decrypt", Some(&self.dev_token()), Some(body)).await
    }
}

#[tokio::test]
async fn onboarding_then_encrypt_and_decrypt() {
    let f = fixture().await;
    let admin = f.admin_token();
    let (s, t) = f
        .call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": "acme", "realm": "eu", "mode": "local"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!((t["state"].as_str(), t["regions"][1].as_str()), (Some("pending"), Some("eu-west-1")));
    let (s, e) = f.encrypt("acme", b"x", json!({})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("tenant_not_active")));

    // One region attached: not yet usable (eu-west-1 missing), still pending.
    let k1 = f.local().create_key(&Region::parse("eu-central-1").unwrap(), "").unwrap().key.to_string();
    let (s, report) =
        f.call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": k1}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(report["usable"], false);
    assert!(report["findings"].as_array().unwrap().iter().any(|f| f["code"] == "key_region_missing"));
    // A key for a region outside the realm is refused up front.
    let (s, e) =
        f.call(Method::PUT, "/v1/tenants/acme/keys/us-east-1", Some(&admin), Some(json!({"key_arn": k1}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));

    let k2 = f.local().create_key(&Region::parse("eu-west-1").unwrap(), "").unwrap().key.to_string();
    let (_, report) =
        f.call(Method::PUT, "/v1/tenants/acme/keys/eu-west-1", Some(&admin), Some(json!({"key_arn": k2}))).await;
    assert_eq!(report["usable"], true, "{report}");
    let (_, t) = f.call(Method::GET, "/v1/tenants/acme", Some(&admin), None).await;
    assert_eq!(t["state"], "active");
    assert_eq!(t["keys"].as_array().unwrap().len(), 2);

    let (s, e) = f.encrypt("acme", b"card 4111", json!({"table": "payments"})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, d) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(B64.decode(d["plaintext"].as_str().unwrap()).unwrap(), b"card 4111");
    assert_eq!((d["purpose"].as_str(), d["context"]["table"].as_str()), (Some("billing"), Some("payments")));
    assert_eq!(d["context"].as_object().unwrap().len(), 1);

    // The ciphertext is a standard message keyed by both regions' keys.
    let ct = B64.decode(e["ciphertext"].as_str().unwrap()).unwrap();
    let header = keyhold_envelope::read_header(&ct, &Default::default()).unwrap();
    assert_eq!(header.edk_refs().count(), 2);
}

#[tokio::test]
async fn batches_return_a_result_per_item() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let items: Vec<Value> = (0..10)
        .map(|i| json!({"tenant": "acme", "purpose": "billing", "plaintext": B64.encode(format!("item {i}"))}))
        .chain([json!({"tenant": "nobody", "purpose": "billing", "plaintext": ""})])
        .chain([json!({"tenant": "acme", "purpose": "billing", "plaintext": "***"})])
        .collect();
    let (s, out) = f.call(Method::POST, "/v1/encrypt/batch", Some(&f.dev_token()), Some(json!({"items": items}))).await;
    assert_eq!(s, StatusCode::OK);
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 12);
    assert_eq!(results[10]["error"]["code"], "tenant_not_found");
    assert_eq!(results[11]["error"]["code"], "invalid_request");
    let cts: Vec<Value> = results[..10]
        .iter()
        .map(|r| json!({"tenant": "acme", "ciphertext": r["ciphertext"]}))
        .chain([json!({"tenant": "acme", "ciphertext": B64.encode(b"not a message")})])
        .collect();
    let (s, out) = f.call(Method::POST, "/v1/decrypt/batch", Some(&f.dev_token()), Some(json!({"items": cts}))).await;
    assert_eq!(s, StatusCode::OK);
    let results = out["results"].as_array().unwrap();
    for (i, r) in results[..10].iter().enumerate() {
        assert_eq!(B64.decode(r["plaintext"].as_str().unwrap()).unwrap(), format!("item {i}").as_bytes());
    }
    assert_eq!(results[10]["error"]["code"], "malformed_ciphertext");
    // Too many items.
    let many: Vec<Value> = (0..1001).map(|_| json!({"tenant": "acme", "ciphertext": ""})).collect();
    let (s, e) = f.call(Method::POST, "/v1/decrypt/batch", Some(&f.dev_token()), Some(json!({"items": many}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
}

#[tokio::test]
async fn tokens_and_scopes_are_enforced() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    let (s, e) = f.call(Method::GET, "/v1/tenants", None, None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")));
    let (s, _) = f.call(Method::GET, "/v1/tenants", Some("not-a-token"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // An expired admin token, and one living longer than 10 minutes.
    let old = f.admin.token(ADMIN_ISSUER, Scope::Admin, None, f.now_s() - 1000, 300);
    let (s, e) = f.call(Method::GET, "/v1/tenants", Some(&old), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"]["message"], keyhold_server::api::UNAUTHENTICATED, "{e}");
    let long = f.admin.token(ADMIN_ISSUER, Scope::Admin, None, f.now_s(), 3600);
    assert_eq!(f.call(Method::GET, "/v1/tenants", Some(&long), None).await.0, StatusCode::UNAUTHORIZED);
    // A token signed by another key.
    let (stranger, _) = SigningKey::generate().unwrap();
    let forged = stranger.token(ADMIN_ISSUER, Scope::Admin, None, f.now_s(), 300);
    assert_eq!(f.call(Method::GET, "/v1/tenants", Some(&forged), None).await.0, StatusCode::UNAUTHORIZED);
    let forged = stranger.token("dev", Scope::Service, None, f.now_s(), 300);
    assert_eq!(f.encrypt_with("acme", &forged).await.0, StatusCode::UNAUTHORIZED);

    // A service may not manage tenants; an admin may not encrypt.
    let (s, e) = f.call(Method::GET, "/v1/tenants", Some(&f.dev_token()), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    assert_eq!(f.encrypt_with("acme", &f.admin_token()).await.0, StatusCode::FORBIDDEN);

    // A tenant admin sees and changes only its own tenant.
    let ta = f.tenant_admin_token("acme");
    assert_eq!(f.call(Method::GET, "/v1/tenants/acme", Some(&ta), None).await.0, StatusCode::OK);
    assert_eq!(f.call(Method::GET, "/v1/tenants/acme/audit", Some(&ta), None).await.0, StatusCode::OK);
    for (method, path) in [
        (Method::GET, "/v1/tenants/globex"),
        (Method::GET, "/v1/tenants/globex/audit"),
        (Method::GET, "/v1/tenants/globex/key-policy"),
        (Method::POST, "/v1/tenants/globex/validate"),
        (Method::DELETE, "/v1/tenants/acme"),
        (Method::GET, "/v1/tenants"),
    ] {
        let (s, e) = f.call(method.clone(), path, Some(&ta), None).await;
        assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{method} {path}");
    }
    let (s, _) =
        f.call(Method::PUT, "/v1/tenants/globex/keys/eu-west-1", Some(&ta), Some(json!({"key_arn": "lk-x"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A service limited to some purposes.
    let (svc, _) = SigningKey::generate().unwrap();
    f.state
        .lifecycle
        .registry()
        .add_service(
            "hr",
            &keyhold_registry::Purposes::Only(vec![keyhold_core::Purpose::parse("hr").unwrap()]),
            &svc.public_key(),
            0,
        )
        .await
        .unwrap();
    // Registered in the registry directly (as `keyhold service add` does): seen within a
    // second.
    f.clock.advance(std::time::Duration::from_millis(keyhold_server::state::UNKNOWN_SERVICE_RELOAD_MS));
    let (s, e) = f.encrypt_with("acme", &svc.token("hr", Scope::Service, None, f.now_s(), 300)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    assert!(e["error"]["message"].as_str().unwrap().contains("billing"));
}

impl Fixture {
    async fn encrypt_with(&self, tenant: &str, token: &str) -> (StatusCode, Value) {
        let body = json!({"tenant": tenant, "purpose": "billing", "plaintext": B64.encode(b"x")});
        self.call(Method::POST, "/v1/encrypt", Some(token), Some(body)).await
    }
}

#[tokio::test]
async fn another_tenants_ciphertext_is_refused_and_nothing_is_decrypted() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    let (_, e) = f.encrypt("acme", b"acme secret", json!({})).await;
    let before = f.state.metrics().provider_calls();
    let (s, d) = f.decrypt("globex", &e["ciphertext"]).await;
    assert_eq!((s, d["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("tenant_mismatch")));
    assert!(d.get("plaintext").is_none());
    // No key was asked to unwrap anything.
    assert_eq!(f.state.metrics().provider_calls(), before);
}

#[tokio::test]
async fn revocation_suspends_and_validation_restores() {
    let f = fixture().await;
    let keys = f.active_tenant("acme").await;
    let (_, e) = f.encrypt("acme", b"before", json!({})).await;
    for k in &keys {
        f.local().disable_key(&keyhold_core::KeyRef::parse(k).unwrap()).unwrap();
    }
    // A request that needs a key (a new context, so no cached data key) meets the refusal:
    // the tenant is suspended at once and its cached keys are dropped.
    let (s, err) = f.encrypt("acme", b"x", json!({"table": "new"})).await;
    assert_eq!((s, err["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("key_revoked")), "{err}");
    let (s, err) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!((s, err["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("tenant_suspended")));
    let (_, t) = f.call(Method::GET, "/v1/tenants/acme", Some(&f.admin_token()), None).await;
    assert_eq!(t["state"], "suspended");
    assert!(t["reason"].as_str().unwrap().contains("DisabledException"), "{t}");

    // The tenant restores access and asks for validation: active again, old data readable.
    for k in &keys {
        f.local().enable_key(&keyhold_core::KeyRef::parse(k).unwrap()).unwrap();
    }
    let (_, report) =
        f.call(Method::POST, "/v1/tenants/acme/validate", Some(&f.tenant_admin_token("acme")), None).await;
    assert_eq!(report["usable"], true);
    let (s, d) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!(s, StatusCode::OK, "{d}");
}

#[tokio::test]
async fn deletion_crypto_shreds() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let (_, e) = f.encrypt("acme", b"to be shredded", json!({})).await;
    let (s, t) = f.call(Method::DELETE, "/v1/tenants/acme", Some(&f.admin_token()), None).await;
    assert_eq!((s, t["state"].as_str()), (StatusCode::OK, Some("deleted")));
    assert!(t["keys"].as_array().unwrap().is_empty());
    let (s, err) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!((s, err["error"]["code"].as_str()), (StatusCode::GONE, Some("tenant_deleted")));
    let (s, err) = f.encrypt("acme", b"x", json!({})).await;
    assert_eq!((s, err["error"]["code"].as_str()), (StatusCode::GONE, Some("tenant_deleted")));
    let (s, err) = f.call(Method::DELETE, "/v1/tenants/acme", Some(&f.admin_token()), None).await;
    assert_eq!((s, err["error"]["code"].as_str()), (StatusCode::GONE, Some("tenant_deleted")));
    let (s, err) = f.call(Method::GET, "/v1/tenants/nobody", Some(&f.admin_token()), None).await;
    assert_eq!((s, err["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("tenant_not_found")));
}

#[tokio::test]
async fn the_audit_trail_records_and_verifies_and_never_holds_secrets() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let canary = "CANARY-7f3c9a1e-plaintext";
    let (_, e) = f.encrypt("acme", canary.as_bytes(), json!({"table": "t"})).await;
    let (_, d) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!(B64.decode(d["plaintext"].as_str().unwrap()).unwrap(), canary.as_bytes());
    // Usage counts are written when their minute is over.
    f.clock.advance(std::time::Duration::from_secs(61));
    let ta = f.tenant_admin_token("acme");
    let (s, page) = f.call(Method::GET, "/v1/tenants/acme/audit", Some(&ta), None).await;
    assert_eq!(s, StatusCode::OK);
    let events = page["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["event"]["type"].as_str().unwrap()).collect();
    for t in ["tenant_state", "admin_action", "key_state", "provider_call", "usage"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let call = events.iter().find(|e| e["event"]["type"] == "provider_call").unwrap();
    assert_eq!(call["event"]["context"]["tenant"], "acme");
    assert_eq!(call["event"]["outcome"], "ok");
    let usage = events.iter().find(|e| e["event"]["type"] == "usage").unwrap();
    assert_eq!((usage["event"]["encrypts"].as_u64(), usage["event"]["decrypts"].as_u64()), (Some(1), Some(1)));
    assert_eq!(usage["event"]["service"], "dev");

    // No plaintext, ciphertext or key material anywhere in the trail.
    let text = page.to_string();
    for secret in [canary.to_owned(), B64.encode(canary), e["ciphertext"].as_str().unwrap().to_owned()] {
        assert!(!text.contains(&secret), "the audit trail holds {secret:?}");
    }
    let db = std::fs::read(f.dir.path().join("registry.db")).unwrap();
    assert!(!db.windows(canary.len()).any(|w| w == canary.as_bytes()));

    let (_, v) = f.call(Method::GET, "/v1/tenants/acme/audit/verify", Some(&ta), None).await;
    assert_eq!(v["ok"], true);
    assert_eq!(v["events"].as_u64().unwrap() as usize, events.len());
    f.state.lifecycle.registry().execute_raw("UPDATE audit_events SET at_ms = at_ms + 1 WHERE seq = 2").await.unwrap();
    let (_, v) = f.call(Method::GET, "/v1/tenants/acme/audit/verify", Some(&ta), None).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["problem"]["problem"], "edited");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let admin = f.admin_token();
    let dev = f.dev_token();
    type Case<'a> = (Method, &'a str, &'a str, Option<String>, StatusCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (Method::POST, "/v1/tenants", &admin, Some("{not json".into()), StatusCode::BAD_REQUEST, "invalid_request"),
        (Method::POST, "/v1/tenants", &admin, Some(r#"{"id":"x"}"#.into()), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            Method::POST,
            "/v1/tenants",
            &admin,
            Some(r#"{"id":"-bad","realm":"eu","mode":"cmk"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/tenants",
            &admin,
            Some(r#"{"id":"x","realm":"mars","mode":"cmk"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/tenants",
            &admin,
            Some(r#"{"id":"x","realm":"eu","mode":"cloud"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/tenants",
            &admin,
            Some(r#"{"id":"acme","realm":"eu","mode":"cmk"}"#.into()),
            StatusCode::CONFLICT,
            "tenant_exists",
        ),
        (
            Method::POST,
            "/v1/encrypt",
            &dev,
            Some(r#"{"tenant":"acme","purpose":"billing","plaintext":"%%%"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/encrypt",
            &dev,
            Some(r#"{"tenant":"acme","purpose":"billing","plaintext":"","context":{"tenant":"globex"}}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/decrypt",
            &dev,
            Some(format!(r#"{{"tenant":"acme","ciphertext":"{}"}}"#, B64.encode([2u8, 5, 0, 0]))),
            StatusCode::BAD_REQUEST,
            "malformed_ciphertext",
        ),
        (
            Method::GET,
            "/v1/tenants/acme/cloudformation?kind=x",
            &admin,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/tenants/acme/key-policy?region=us-east-1",
            &admin,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (Method::GET, "/v1/nothing-here", &admin, None, StatusCode::NOT_FOUND, "not_found"),
    ];
    for (method, path, token, body, status, code) in cases {
        let (s, e) = f.raw(method.clone(), path, Some(token), body.clone()).await;
        assert_eq!((s, e["error"]["code"].as_str()), (status, Some(code)), "{method} {path} {body:?}: {e}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty());
    }
    // Onboarding documents for a tenant.
    let (s, p) = f.call(Method::GET, "/v1/tenants/acme/key-policy?region=eu-west-1", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(p["Statement"].is_array());
    let (s, t) = f.call(Method::GET, "/v1/tenants/acme/cloudformation?kind=byok-role", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(t["Resources"].is_object());
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    f.encrypt("acme", b"x", json!({})).await;
    f.encrypt("acme", b"y", json!({})).await;
    assert_eq!(f.call(Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(f.call(Method::GET, "/readyz", None, None).await.0, StatusCode::OK);
    let (s, m) = f.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let m = m.as_str().unwrap().to_owned();
    assert!(m.contains(r#"keyhold_requests_total{route="/v1/encrypt",status="200"} 2"#), "{m}");
    assert!(m.contains(r#"keyhold_cache_total{cache="encrypt",result="hit"} 1"#), "{m}");
    assert!(m.contains(r#"keyhold_kms_calls_total{operation="GenerateDataKey",outcome="ok"}"#), "{m}");
    assert!(m.contains(r#"keyhold_tenants{state="active"} 1"#), "{m}");
    assert!(m.contains("keyhold_request_duration_seconds_bucket"), "{m}");
    let (s, doc) = f.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/v1/tenants", "/v1/encrypt", "/v1/decrypt/batch", "/v1/tenants/{id}/keys/{region}", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["EncryptItem"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// The same API on PostgreSQL (a fresh database on the server the test command starts).
#[tokio::test]
async fn the_api_runs_on_postgres() {
    let f = fixture_on(Some(fresh_postgres("keyhold_server_test").await)).await;
    assert_eq!(f.state.lifecycle.registry().backend(), keyhold_registry::Backend::Postgres);
    f.active_tenant("acme").await;
    let (_, e) = f.encrypt("acme", b"on postgres", json!({})).await;
    let (s, d) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(B64.decode(d["plaintext"].as_str().unwrap()).unwrap(), b"on postgres");
    let (_, v) = f.call(Method::GET, "/v1/tenants/acme/audit/verify", Some(&f.admin_token()), None).await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["events"].as_u64().unwrap() >= 6);
}

/// A BYOK tenant: keyhold assumes the tenant's role (ExternalId `keyhold-<tenant>`) for
/// validation and for every key use; a CMK tenant next to it uses the platform's own
/// credentials. Against moto through the fault proxy, which records who signed each call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byok_tenants_are_served_through_their_assumed_role() {
    let proxy = keyhold_testkit::FaultProxy::moto().await;
    let sdk = keyhold_testkit::sdk_config(&proxy.url(), "eu-central-1").await;
    let f = fixture_with(None, Some(sdk)).await;
    let admin = f.admin_token();
    let role = "arn:aws:iam::123456789012:role/keyhold-byok-acme";
    // Bad requests first: byok without a role, a malformed role, a role for a cmk tenant.
    for body in [
        json!({"id": "acme", "realm": "de", "mode": "byok"}),
        json!({"id": "acme", "realm": "de", "mode": "byok", "role_arn": "arn:aws:iam::123:role/x"}),
        json!({"id": "acme", "realm": "de", "mode": "cmk", "role_arn": role}),
    ] {
        let (s, e) = f.call(Method::POST, "/v1/tenants", Some(&admin), Some(body)).await;
        assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{e}");
    }
    let (s, t) = f
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&admin),
            Some(json!({"id": "acme", "realm": "de", "mode": "byok", "role_arn": role})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!((t["role_arn"].as_str(), t["external_id"].as_str()), (Some(role), Some("keyhold-acme")));
    let key = keyhold_testkit::create_moto_key("eu-central-1").await;
    let (_, report) =
        f.call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": key}))).await;
    assert_eq!(report["usable"], true, "{report}");
    let (s, e) = f.encrypt("acme", b"byok data", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, d) = f.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!(B64.decode(d["plaintext"].as_str().unwrap()).unwrap(), b"byok data");

    let calls = proxy.calls();
    let assume: Vec<_> = calls.iter().filter(|c| c.operation == "AssumeRole").collect();
    assert_eq!(assume.len(), 1, "credentials are cached across validation, encrypt and decrypt");
    assert_eq!((assume[0].role_arn.as_deref(), assume[0].external_id.as_deref()), (Some(role), Some("keyhold-acme")));
    for c in calls.iter().filter(|c| c.service == "kms") {
        assert_ne!(c.access_key_id.as_deref(), Some("testing"), "{} used the platform's credentials", c.operation);
    }

    // A CMK tenant is served with the platform's credentials.
    proxy.reset_calls();
    f.call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": "globex", "realm": "de", "mode": "cmk"})))
        .await;
    let (_, policy) =
        f.call(Method::GET, "/v1/tenants/globex/key-policy?region=eu-central-1", Some(&admin), None).await;
    let key = keyhold_testkit::create_moto_key_with_policy("eu-central-1", Some(&policy.to_string())).await;
    let (_, report) =
        f.call(Method::PUT, "/v1/tenants/globex/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": key}))).await;
    assert_eq!(report["usable"], true, "{report}");
    f.encrypt("globex", b"cmk data", json!({})).await;
    let kms: Vec<_> = proxy.calls().into_iter().filter(|c| c.service == "kms").collect();
    assert!(!kms.is_empty() && kms.iter().all(|c| c.access_key_id.as_deref() == Some("testing")));
}

/// Two instances on one registry: a tenant suspended through one is refused by the other
/// within the view's lifetime, and its cached data keys there are dropped.
#[tokio::test]
async fn a_change_made_through_another_instance_is_seen_within_the_view_ttl() {
    let a = fixture().await;
    a.active_tenant("acme").await;
    let (_, e) = a.encrypt("acme", b"shared", json!({})).await;
    // Instance B: same data dir (registry and keystore), its own memory.
    let config = ServeConfig { probe_interval: None, ..ServeConfig::embedded(a.dir.path()) };
    let (b_state, _) = build(&config, RealmCatalog::builtin(), a.clock.clone()).await.unwrap();
    let b = Fixture {
        state: b_state,
        dir: tempfile::tempdir().unwrap(),
        admin: devcreds::read_key(&devcreds::admin_key_path(a.dir.path())).unwrap(),
        dev: devcreds::read_key(&devcreds::service_key_path(a.dir.path(), "dev")).unwrap(),
        clock: a.clock.clone(),
    };
    assert_eq!(b.decrypt("acme", &e["ciphertext"]).await.0, StatusCode::OK);
    // Suspended through A (an operator's validation after the tenant disabled its keys).
    let t =
        a.state.lifecycle.registry().tenant(&keyhold_core::TenantId::parse("acme").unwrap()).await.unwrap().unwrap();
    a.state
        .lifecycle
        .transition(&t, keyhold_registry::TenantState::Suspended, keyhold_registry::Cause::KeyRefused, Some("revoked"))
        .await
        .unwrap();
    // B still trusts its view for up to TENANT_VIEW_TTL_MS, then reads the registry.
    a.clock.advance(std::time::Duration::from_millis(keyhold_lifecycle::TENANT_VIEW_TTL_MS));
    let (s, err) = b.decrypt("acme", &e["ciphertext"]).await;
    assert_eq!((s, err["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("tenant_suspended")));
    assert_eq!(b.state.lifecycle.keyhold().cache_stats().decrypt_entries, 0, "B dropped the tenant's cached keys");
}

/// The health monitor: a key the tenant disables suspends the tenant at the next probe,
/// even while its data keys are cached (requests are refused at once, caches dropped);
/// restoring the key resumes it at the next probe. Then the same through the running
/// schedule, within the stated bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_suspends_on_revocation_and_resumes_on_restore() {
    let f = fixture().await;
    let keys = f.active_tenant("acme").await;
    let (_, e) = f.encrypt("acme", b"cached", json!({})).await;
    assert_eq!(f.decrypt("acme", &e["ciphertext"]).await.0, StatusCode::OK);
    let pass = f.state.lifecycle.probe_all().await;
    assert_eq!((pass.probed, pass.suspended), (1, 0));

    let k0 = keyhold_core::KeyRef::parse(&keys[0]).unwrap();
    f.local().disable_key(&k0).unwrap();
    let pass = f.state.lifecycle.probe_all().await;
    assert_eq!(pass.suspended, 1);
    // Warm caches do not help: the tenant is refused at once.
    let (s, err) = f.encrypt("acme", b"x", json!({})).await;
    assert_eq!((s, err["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("tenant_suspended")));
    assert_eq!(f.state.lifecycle.keyhold().cache_stats().encrypt_entries, 0);
    let (_, t) = f.call(Method::GET, "/v1/tenants/acme", Some(&f.admin_token()), None).await;
    assert!(t["reason"].as_str().unwrap().contains("DisabledException"), "{t}");

    f.local().enable_key(&k0).unwrap();
    let pass = f.state.lifecycle.probe_all().await;
    assert_eq!(pass.resumed, 1);
    assert_eq!(f.decrypt("acme", &e["ciphertext"]).await.0, StatusCode::OK);

    // On a schedule: with a 200 ms interval, a revocation is enforced within the interval
    // plus its jitter plus one probe.
    let monitor = keyhold_lifecycle::monitor::spawn(f.state.lifecycle.clone(), std::time::Duration::from_millis(200));
    f.local().disable_key(&k0).unwrap();
    let started = std::time::Instant::now();
    loop {
        let (s, _) = f.encrypt("acme", b"x", json!({})).await;
        if s == StatusCode::FORBIDDEN {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "not suspended within 2 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() < std::time::Duration::from_millis(1500), "{:?}", started.elapsed());
    f.local().enable_key(&k0).unwrap();
    let started = std::time::Instant::now();
    while f.encrypt("acme", b"x", json!({})).await.0 != StatusCode::OK {
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "not resumed within 2 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    monitor.abort();
}

#[tokio::test]
async fn a_key_is_recorded_only_once_it_proved_itself_and_only_of_the_tenants_kind() {
    let f = fixture().await;
    let admin = f.admin_token();
    for (id, mode) in [("loco", "local"), ("cumulus", "cmk")] {
        let (s, _) = f
            .call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": id, "realm": "eu", "mode": mode})))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let me = f.tenant_admin_token("loco");
    // Nothing a key service could answer for: refused up front, or not attached.
    for key in ["", " ", "foo", "lk-00000000000000000000000000000000"] {
        let (s, out) =
            f.call(Method::PUT, "/v1/tenants/loco/keys/eu-central-1", Some(&me), Some(json!({"key_arn": key}))).await;
        assert!(
            s == StatusCode::BAD_REQUEST || (s == StatusCode::OK && out["attached"] == false),
            "{key:?}: {s} {out}"
        );
    }
    let (_, t) = f.call(Method::GET, "/v1/tenants/loco", Some(&me), None).await;
    assert_eq!(t["keys"], json!([]), "a key that never answered was recorded: {t}");
    // A tenant's keys are of its kind: no local key for a cmk tenant, no ARN for a local one.
    let local = f.local().create_key(&Region::parse("eu-central-1").unwrap(), "").unwrap().key.to_string();
    let (s, e) = f
        .call(Method::PUT, "/v1/tenants/cumulus/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": local})))
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{e}");
    let arn = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let (s, _) =
        f.call(Method::PUT, "/v1/tenants/loco/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": arn}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The local key still attaches to the local tenant.
    let (s, out) =
        f.call(Method::PUT, "/v1/tenants/loco/keys/eu-central-1", Some(&me), Some(json!({"key_arn": local}))).await;
    assert_eq!((s, out["attached"].as_bool()), (StatusCode::OK, Some(true)), "{out}");
    // A role ARN is at most IAM's 2048 bytes, wherever it is given.
    let long = format!("arn:aws:iam::123456789012:role/{}", "a".repeat(2100));
    let (s, _) = f
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&admin),
            Some(json!({"id": "b1", "realm": "eu", "mode": "byok", "role_arn": long})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
