//! The OpenAPI document is the truth: every error, extractor rejections and unknown
//! routes included, is `{"error":{"code","message"}}`, and every status the server answers
//! is one the document lists for that operation (a table of every way to get one).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::BodyExt as _;
use keyhold_server::router;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{Fixture, fixture};

/// Who calls.
#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    Admin,
    Service,
    /// The tenant admin of `acme`.
    TenantAdmin,
}

/// The body sent.
#[derive(Clone, Debug)]
enum Sent {
    None,
    Json(Value),
    Raw(&'static str, String),
}

/// A call and the answer it must get: `code` `None` when the answer may be either of two
/// documented ones (see the case).
struct Case {
    method: Method,
    path: String,
    /// The document's path template the call is an operation of.
    template: &'static str,
    who: Who,
    sent: Sent,
    status: StatusCode,
    code: Option<&'static str>,
}

fn case(
    method: Method,
    path: impl Into<String>,
    template: &'static str,
    who: Who,
    sent: Sent,
    status: StatusCode,
    code: &'static str,
) -> Case {
    Case { method, path: path.into(), template, who, sent, status, code: Some(code) }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    allow: Option<String>,
    body: Value,
}

impl Fixture {
    fn token(&self, who: Who) -> Option<String> {
        match who {
            Who::Nobody => None,
            Who::Admin => Some(self.admin_token()),
            Who::Service => Some(self.dev_token()),
            Who::TenantAdmin => Some(self.tenant_admin_token("acme")),
        }
    }

    async fn send(&self, method: Method, path: &str, who: Who, sent: Sent) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = self.token(who) {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match sent {
            Sent::None => req.body(Body::empty()),
            Sent::Json(v) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())),
            Sent::Raw(content_type, b) => req.header(header::CONTENT_TYPE, content_type).body(Body::from(b)),
        }
        .unwrap();
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let text = |h: header::HeaderName| resp.headers().get(h).map(|v| v.to_str().unwrap().to_owned());
        let (content_type, allow) = (text(header::CONTENT_TYPE).unwrap_or_default(), text(header::ALLOW));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Answer { status, content_type, allow, body }
    }

    async fn document(&self) -> Value {
        self.send(Method::GET, "/openapi.json", Who::Nobody, Sent::None).await.body
    }
}

/// The answer is keyhold's error format: JSON `{"error":{"code","message"}}`.
fn assert_error(a: &Answer, what: &str) {
    assert_eq!(a.content_type, "application/json", "{what}: {}", a.body);
    let e = &a.body["error"];
    assert!(e["code"].as_str().is_some_and(|c| !c.is_empty()), "{what}: {}", a.body);
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {}", a.body);
    assert_eq!(a.body.as_object().map(|o| o.len()), Some(1), "{what}: {}", a.body);
}

/// The tenants a table needs: `acme` active, `pend` pending, `gone` deleted.
async fn tenants(f: &Fixture) -> Vec<String> {
    let keys = f.active_tenant("acme").await;
    f.active_tenant("gone").await;
    let admin = f.admin_token();
    let (s, _) = f.call(Method::DELETE, "/v1/tenants/gone", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    let body = json!({"id": "pend", "realm": "eu", "mode": "local"});
    assert_eq!(f.call(Method::POST, "/v1/tenants", Some(&admin), Some(body)).await.0, StatusCode::CREATED);
    keys
}

#[tokio::test]
async fn extractor_rejections_and_unknown_routes_are_json_errors() {
    let f = fixture().await;
    tenants(&f).await;
    use {Method as M, StatusCode as S, Who as W};
    let cases = [
        // A path segment that is not UTF-8.
        (M::GET, "/v1/tenants/%FF", W::Admin, S::BAD_REQUEST, "invalid_request"),
        (M::PUT, "/v1/tenants/acme/keys/%FF", W::Admin, S::BAD_REQUEST, "invalid_request"),
        // Query strings that do not parse, or are missing what is required.
        (M::GET, "/v1/tenants/acme/audit?limit=true", W::Admin, S::BAD_REQUEST, "invalid_request"),
        (M::GET, "/v1/tenants/acme/audit?after=-1", W::Admin, S::BAD_REQUEST, "invalid_request"),
        (M::GET, "/v1/tenants/acme/cloudformation", W::Admin, S::BAD_REQUEST, "invalid_request"),
        (M::GET, "/v1/tenants/acme/cloudformation?kind=", W::Admin, S::BAD_REQUEST, "invalid_request"),
        // Unknown paths, and known paths with a method they do not take.
        (M::GET, "/v1/nothing-here", W::Admin, S::NOT_FOUND, "not_found"),
        (M::GET, "/v1/tenants/acme/", W::Nobody, S::NOT_FOUND, "not_found"),
        (M::PATCH, "/v1/tenants/acme", W::Admin, S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (M::GET, "/v1/encrypt", W::Nobody, S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (M::POST, "/healthz", W::Nobody, S::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (method, path, who, status, code) in cases {
        let a = f.send(method.clone(), path, who, Sent::None).await;
        let what = format!("{method} {path}");
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (status, Some(code)), "{what}: {}", a.body);
        assert_error(&a, &what);
        if status == S::METHOD_NOT_ALLOWED {
            assert!(a.allow.as_deref().is_some_and(|m| !m.is_empty()), "{what}: no Allow header");
        }
    }
    let a = f.send(M::PATCH, "/v1/tenants/acme", W::Admin, Sent::None).await;
    assert_eq!(a.allow.as_deref(), Some("GET,HEAD,DELETE"));
}

/// Every way to get each error status, called for real: the answer is the error format,
/// and its status is listed for the operation in the document.
#[tokio::test]
async fn every_error_status_the_server_answers_is_documented() {
    let f = fixture().await;
    let keys = tenants(&f).await;
    use {Method as M, Sent as B, StatusCode as S, Who as W};
    let enc = |tenant: &str, plaintext: &str| {
        B::Json(json!({"tenant": tenant, "purpose": "billing", "plaintext": plaintext}))
    };
    let dec = |tenant: &str| B::Json(json!({"tenant": tenant, "ciphertext": B64.encode([2u8, 5, 0, 0])}));
    let key = |k: &str| B::Json(json!({"key_arn": k}));
    let alias = "arn:aws:kms:eu-west-1:111122223333:alias/x";
    let (t, tk, tid, ta, tc, tv, tcp) = (
        "/v1/tenants",
        "/v1/tenants/{id}/keys/{region}",
        "/v1/tenants/{id}",
        "/v1/tenants/{id}/audit",
        "/v1/tenants/{id}/cloudformation",
        "/v1/tenants/{id}/validate",
        "/v1/tenants/{id}/audit/checkpoint",
    );
    let mut cases = vec![
        case(M::POST, t, t, W::Nobody, B::None, S::UNAUTHORIZED, "unauthenticated"),
        case(
            M::POST,
            t,
            t,
            W::Service,
            B::Json(json!({"id": "x", "realm": "eu", "mode": "cmk"})),
            S::FORBIDDEN,
            "forbidden",
        ),
        case(
            M::POST,
            t,
            t,
            W::Admin,
            B::Raw("application/json", "{not json".into()),
            S::BAD_REQUEST,
            "invalid_request",
        ),
        case(
            M::POST,
            t,
            t,
            W::Admin,
            B::Json(json!({"id": "x", "realm": "mars", "mode": "cmk"})),
            S::BAD_REQUEST,
            "invalid_request",
        ),
        case(
            M::POST,
            t,
            t,
            W::Admin,
            B::Json(json!({"id": "x", "realm": "eu", "mode": "byok"})),
            S::BAD_REQUEST,
            "invalid_request",
        ),
        case(
            M::POST,
            t,
            t,
            W::Admin,
            B::Json(json!({"id": "acme", "realm": "eu", "mode": "cmk"})),
            S::CONFLICT,
            "tenant_exists",
        ),
        case(
            M::POST,
            t,
            t,
            W::Admin,
            B::Json(json!({"id": "gone", "realm": "eu", "mode": "cmk"})),
            S::CONFLICT,
            "tenant_exists",
        ),
        case(
            M::POST,
            t,
            t,
            W::Admin,
            B::Raw("application/json", "x".repeat(keyhold_server::MAX_BODY + 1)),
            S::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        case(M::GET, t, t, W::TenantAdmin, B::None, S::FORBIDDEN, "forbidden"),
        case(M::GET, "/v1/tenants/%FF", tid, W::Admin, B::None, S::BAD_REQUEST, "invalid_request"),
        case(M::GET, "/v1/tenants/-x", tid, W::Admin, B::None, S::BAD_REQUEST, "invalid_request"),
        case(M::GET, "/v1/tenants/pend", tid, W::TenantAdmin, B::None, S::FORBIDDEN, "forbidden"),
        case(M::GET, "/v1/tenants/nobody", tid, W::Admin, B::None, S::NOT_FOUND, "tenant_not_found"),
        case(M::GET, "/v1/tenants/gone", tid, W::Admin, B::None, S::GONE, "tenant_deleted"),
        case(M::DELETE, "/v1/tenants/acme", tid, W::TenantAdmin, B::None, S::FORBIDDEN, "forbidden"),
        case(M::DELETE, "/v1/tenants/nobody", tid, W::Admin, B::None, S::NOT_FOUND, "tenant_not_found"),
        case(M::DELETE, "/v1/tenants/gone", tid, W::Admin, B::None, S::GONE, "tenant_deleted"),
        case(
            M::GET,
            "/v1/tenants/acme/key-policy?region=xx-nowhere-1",
            "/v1/tenants/{id}/key-policy",
            W::Admin,
            B::None,
            S::BAD_REQUEST,
            "invalid_request",
        ),
        case(
            M::GET,
            "/v1/tenants/acme/key-policy?region=us-east-1",
            "/v1/tenants/{id}/key-policy",
            W::Admin,
            B::None,
            S::BAD_REQUEST,
            "invalid_request",
        ),
        case(
            M::GET,
            "/v1/tenants/nobody/key-policy",
            "/v1/tenants/{id}/key-policy",
            W::Admin,
            B::None,
            S::NOT_FOUND,
            "tenant_not_found",
        ),
        case(
            M::GET,
            "/v1/tenants/gone/key-policy",
            "/v1/tenants/{id}/key-policy",
            W::Admin,
            B::None,
            S::GONE,
            "tenant_deleted",
        ),
        case(
            M::GET,
            "/v1/tenants/acme/cloudformation?kind=x",
            tc,
            W::Admin,
            B::None,
            S::BAD_REQUEST,
            "invalid_request",
        ),
        case(M::GET, "/v1/tenants/acme/cloudformation?kind=cmk", tc, W::Service, B::None, S::FORBIDDEN, "forbidden"),
        case(M::GET, "/v1/tenants/gone/cloudformation?kind=cmk", tc, W::Admin, B::None, S::GONE, "tenant_deleted"),
        case(M::PUT, "/v1/tenants/acme/keys/eu_west", tk, W::Admin, key("lk-x"), S::BAD_REQUEST, "invalid_request"),
        case(M::PUT, "/v1/tenants/acme/keys/us-east-1", tk, W::Admin, key("lk-x"), S::BAD_REQUEST, "invalid_request"),
        case(M::PUT, "/v1/tenants/acme/keys/eu-west-1", tk, W::Admin, key(alias), S::BAD_REQUEST, "invalid_request"),
        case(
            M::PUT,
            "/v1/tenants/acme/keys/eu-west-1",
            tk,
            W::Admin,
            B::Json(json!({})),
            S::BAD_REQUEST,
            "invalid_request",
        ),
        case(M::PUT, "/v1/tenants/pend/keys/eu-central-1", tk, W::Admin, key(&keys[0]), S::CONFLICT, "key_in_use"),
        case(M::PUT, "/v1/tenants/nobody/keys/eu-west-1", tk, W::Admin, key("lk-x"), S::NOT_FOUND, "tenant_not_found"),
        case(M::PUT, "/v1/tenants/gone/keys/eu-west-1", tk, W::Admin, key("lk-x"), S::GONE, "tenant_deleted"),
        case(M::GET, "/v1/tenants/gone/keys", "/v1/tenants/{id}/keys", W::Admin, B::None, S::GONE, "tenant_deleted"),
        case(M::POST, "/v1/tenants/nobody/validate", tv, W::Admin, B::None, S::NOT_FOUND, "tenant_not_found"),
        case(M::POST, "/v1/tenants/gone/validate", tv, W::Admin, B::None, S::GONE, "tenant_deleted"),
        case(M::POST, "/v1/tenants/acme/validate", tv, W::Service, B::None, S::FORBIDDEN, "forbidden"),
        case(M::POST, "/v1/encrypt", "/v1/encrypt", W::Admin, enc("acme", ""), S::FORBIDDEN, "forbidden"),
        case(M::POST, "/v1/encrypt", "/v1/encrypt", W::Service, enc("acme", "%%%"), S::BAD_REQUEST, "invalid_request"),
        case(M::POST, "/v1/encrypt", "/v1/encrypt", W::Service, enc("nobody", ""), S::NOT_FOUND, "tenant_not_found"),
        case(M::POST, "/v1/encrypt", "/v1/encrypt", W::Service, enc("pend", ""), S::CONFLICT, "tenant_not_active"),
        case(M::POST, "/v1/encrypt", "/v1/encrypt", W::Service, enc("gone", ""), S::GONE, "tenant_deleted"),
        case(M::POST, "/v1/decrypt", "/v1/decrypt", W::Service, dec("acme"), S::BAD_REQUEST, "malformed_ciphertext"),
        case(M::POST, "/v1/decrypt", "/v1/decrypt", W::TenantAdmin, dec("acme"), S::FORBIDDEN, "forbidden"),
        case(
            M::POST,
            "/v1/encrypt/batch",
            "/v1/encrypt/batch",
            W::Admin,
            B::Json(json!({"items": []})),
            S::FORBIDDEN,
            "forbidden",
        ),
        case(
            M::POST,
            "/v1/decrypt/batch",
            "/v1/decrypt/batch",
            W::Service,
            B::Json(json!({"items": [{"tenant": "acme"}]})),
            S::BAD_REQUEST,
            "invalid_request",
        ),
        case(M::GET, "/v1/tenants/acme/audit?limit=0", ta, W::Admin, B::None, S::BAD_REQUEST, "invalid_request"),
        case(M::GET, "/v1/tenants/acme/audit?limit=1001", ta, W::Admin, B::None, S::BAD_REQUEST, "invalid_request"),
        case(
            M::GET,
            "/v1/tenants/acme/audit?after=9223372036854775808",
            ta,
            W::Admin,
            B::None,
            S::BAD_REQUEST,
            "invalid_request",
        ),
        case(M::GET, "/v1/tenants/gone/audit", ta, W::Admin, B::None, S::GONE, "tenant_deleted"),
        case(
            M::GET,
            "/v1/tenants/gone/audit/verify",
            "/v1/tenants/{id}/audit/verify",
            W::Admin,
            B::None,
            S::GONE,
            "tenant_deleted",
        ),
        case(M::GET, "/v1/tenants/gone/audit/checkpoint", tcp, W::Admin, B::None, S::GONE, "tenant_deleted"),
        case(M::GET, "/v1/tenants/pend/audit/checkpoint", tcp, W::TenantAdmin, B::None, S::FORBIDDEN, "forbidden"),
    ];
    let items: Vec<Value> = (0..1001).map(|_| json!({"tenant": "acme", "ciphertext": ""})).collect();
    cases.push(case(
        M::POST,
        "/v1/decrypt/batch",
        "/v1/decrypt/batch",
        W::Service,
        B::Json(json!({"items": items})),
        S::BAD_REQUEST,
        "invalid_request",
    ));
    // A JSON body sent as another media type: 415 `unsupported_media_type`.
    for (path, template) in
        [("/v1/tenants", t), ("/v1/encrypt", "/v1/encrypt"), ("/v1/tenants/acme/keys/eu-west-1", tk)]
    {
        let method = if template == tk { M::PUT } else { M::POST };
        let sent = B::Raw("text/plain", "{}".into());
        cases.push(Case {
            method,
            path: path.into(),
            template,
            who: W::Admin,
            sent,
            status: S::UNSUPPORTED_MEDIA_TYPE,
            code: Some("unsupported_media_type"),
        });
    }

    let doc = f.document().await;
    for c in cases {
        let what = format!("{} {} as {:?} with {:?}", c.method, c.path, c.who, c.sent);
        let what = what.chars().take(300).collect::<String>();
        let a = f.send(c.method.clone(), &c.path, c.who, c.sent).await;
        assert_error(&a, &what);
        match c.code {
            Some(code) => {
                assert_eq!((a.status, a.body["error"]["code"].as_str()), (c.status, Some(code)), "{what}: {}", a.body)
            }
            None => assert!(
                [S::BAD_REQUEST, S::UNSUPPORTED_MEDIA_TYPE].contains(&a.status),
                "{what}: {} {}",
                a.status,
                a.body
            ),
        }
        let op = &doc["paths"][c.template][c.method.as_str().to_ascii_lowercase()];
        assert!(op.is_object(), "{what}: no operation {} {} in the document", c.method, c.template);
        let documented = &op["responses"][a.status.as_str()];
        assert!(documented.is_object(), "{what}: {} is not documented for {} {}", a.status, c.method, c.template);
        assert_eq!(
            documented["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
            "{what}"
        );
        let code = a.body["error"]["code"].as_str().unwrap();
        assert!(
            documented["description"].as_str().unwrap().contains(&format!("`{code}`")),
            "{what}: {code} is not in the description of {} for {} {}: {documented}",
            a.status,
            c.method,
            c.template
        );
    }
}

/// Every operation, as the document lists it: each secured one answers 401 without a
/// token and documents it; the statuses the edge adds are there; path parameters are
/// required; realms and regions are the running catalog's.
#[tokio::test]
async fn every_operation_documents_what_the_edge_answers() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let doc = f.document().await;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let what = format!("{method} {path}");
            let responses = &op["responses"];
            let has = |status: &str| responses[status].is_object();
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let body = op["requestBody"].is_object();
            let params = op["parameters"].as_array().is_some_and(|p| !p.is_empty());
            if secured {
                assert!(has("401"), "{what}: 401 undocumented");
                let concrete = path.replace("{id}", "acme").replace("{region}", "eu-west-1").replace("{name}", "dev");
                let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                let sent = if body { Sent::Json(json!({})) } else { Sent::None };
                let a = f.send(method, &concrete, Who::Nobody, sent).await;
                assert_eq!(
                    (a.status, a.body["error"]["code"].as_str()),
                    (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
                    "{what}"
                );
            } else {
                assert!(!has("401") && !has("403"), "{what}: documents auth failures it cannot have");
            }
            if body || params {
                assert!(has("400"), "{what}: 400 undocumented");
            }
            for status in ["408", "413", "415"] {
                assert_eq!(has(status), body, "{what}: {status}");
            }
            let shed = !["/healthz", "/metrics"].contains(&path.as_str());
            assert_eq!(has("503"), shed || secured, "{what}: 503");
            if shed {
                assert!(responses["503"]["description"].as_str().unwrap().contains("`overloaded`"), "{what}");
                assert!(responses["503"]["headers"]["Retry-After"].is_object(), "{what}");
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{what}: {p}");
                }
            }
        }
    }
    assert_eq!(operations, 53);

    // Realms and regions: the catalog the server runs with, as enums.
    let schemas = &doc["components"]["schemas"];
    let realms: Vec<&str> =
        schemas["RealmId"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(realms, ["eu", "us", "au", "ca", "de", "in", "jp", "kr", "sg", "uk"]);
    let regions = schemas["Region"]["enum"].as_array().unwrap();
    assert!(regions.contains(&json!("eu-central-1")) && regions.contains(&json!("ap-northeast-2")));
    let catalog = keyhold_onboarding::RealmCatalog::from_json(
        r#"{"realms": [{"id": "mars", "name": "Mars", "regions": ["mars-north-1"]}]}"#,
    )
    .unwrap();
    let custom = serde_json::to_value(keyhold_server::openapi::document(&catalog)).unwrap();
    assert_eq!(custom["components"]["schemas"]["RealmId"]["enum"], json!(["mars"]));
    assert_eq!(custom["components"]["schemas"]["Region"]["enum"], json!(["mars-north-1"]));

    // Content types as sent.
    for (path, media) in [("/healthz", "text/plain"), ("/readyz", "text/plain"), ("/metrics", "text/plain")] {
        let a = f.send(Method::GET, path, Who::Nobody, Sent::None).await;
        assert!(a.content_type.starts_with(media), "{path}: {}", a.content_type);
        assert!(doc["paths"][path]["get"]["responses"]["200"]["content"][media].is_object(), "{path}");
    }
}
