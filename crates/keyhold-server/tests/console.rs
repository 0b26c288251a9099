//! The console's sign-in and its guards, in process: one-time links (once even when
//! redeemed concurrently on two instances over one PostgreSQL), expiry, the session
//! cookie's attributes, CSRF and origin checks on every form, tenant isolation whatever
//! URL is typed, sign-out, and errors as JSON or HTML by what the client accepts. The
//! browser journey itself is in `tests/console/console_test.py` (scripts/console-tests).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use keyhold_server::router;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{Fixture, fixture, fixture_on, fresh_postgres, second_instance};

/// An answer: status, headers, body text.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(f: &Fixture, req: Request<Body>) -> Answer {
    let resp = router(f.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    Answer { status, headers, body }
}

async fn mint(f: &Fixture, tenant: Option<&str>) -> String {
    let body = tenant.map_or(json!({}), |t| json!({ "tenant": t }));
    let (s, link) = f.call(Method::POST, "/v1/console/links", Some(&f.admin_token()), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{link}");
    assert!(link["url"].as_str().unwrap().ends_with(link["path"].as_str().unwrap()));
    link["path"].as_str().unwrap().strip_prefix("/console/login?t=").unwrap().to_owned()
}

fn redeem_request(t: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/console/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "keyhold.test")
        .header(header::ORIGIN, "http://keyhold.test")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(format!("t={t}")))
        .unwrap()
}

/// Signs in with a fresh link: the session cookie (`name=value`) and its CSRF token.
async fn sign_in(f: &Fixture, tenant: Option<&str>) -> (String, String) {
    let t = mint(f, tenant).await;
    let a = send(f, redeem_request(&t)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let set = a.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = send(f, get(&cookie, "/console/")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let home = page.headers.get(header::LOCATION).unwrap().to_str().unwrap().to_owned();
    let page = send(f, get(&cookie, &home)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page.body.split(r#"<meta name="csrf" content=""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
    (cookie, csrf)
}

fn get(cookie: &str, path: &str) -> Request<Body> {
    Request::builder().uri(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap()
}

fn post(cookie: &str, path: &str, form: &str, extra: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::COOKIE, cookie)
        .header(header::HOST, "keyhold.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.body(Body::from(form.to_owned())).unwrap()
}

#[tokio::test]
async fn a_link_signs_in_once_and_sets_a_strict_http_only_cookie() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let t = mint(&f, Some("acme")).await;
    // Opening the link does not use it (a scanner fetching the URL signs nobody in).
    let page = send(&f, Request::builder().uri(format!("/console/login?t={t}")).body(Body::empty()).unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"<button type="submit">Sign in</button>"#));
    assert!(
        page.headers.get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap().contains("frame-ancestors 'none'")
    );
    let a = send(&f, redeem_request(&t)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let set = a.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(set.starts_with("keyhold_console="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    // Once only.
    let again = send(&f, redeem_request(&t)).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.json()["error"]["code"], "unauthenticated");
    assert!(again.headers.get(header::SET_COOKIE).is_none());
    // A link posted from another site is refused before it is used.
    let t = mint(&f, Some("acme")).await;
    let mut req = redeem_request(&t);
    req.headers_mut().insert("sec-fetch-site", "cross-site".parse().unwrap());
    assert_eq!(send(&f, req).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&f, redeem_request(&t)).await.status, StatusCode::SEE_OTHER, "the refused attempt used it");
}

#[tokio::test]
async fn links_and_sessions_expire() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let t = mint(&f, Some("acme")).await;
    f.clock.advance(std::time::Duration::from_millis(keyhold_server::console::LINK_TTL_MS + 1));
    assert_eq!(send(&f, redeem_request(&t)).await.status, StatusCode::UNAUTHORIZED);
    let (cookie, _) = sign_in(&f, Some("acme")).await;
    f.clock.advance(std::time::Duration::from_millis(keyhold_server::console::SESSION_TTL_MS - 1000));
    assert_eq!(send(&f, get(&cookie, "/console/t/acme/")).await.status, StatusCode::OK);
    f.clock.advance(std::time::Duration::from_millis(2000));
    let a = send(&f, get(&cookie, "/console/t/acme/")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"]["code"], "unauthenticated");
}

#[tokio::test]
async fn only_an_admin_mints_links() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let body = Some(json!({"tenant": "acme"}));
    let (s, e) = f.call(Method::POST, "/v1/console/links", Some(&f.tenant_admin_token("acme")), body.clone()).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let (s, _) = f.call(Method::POST, "/v1/console/links", Some(&f.dev_token()), body.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = f.call(Method::POST, "/v1/console/links", None, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, e) =
        f.call(Method::POST, "/v1/console/links", Some(&f.admin_token()), Some(json!({"tenant": "nobody"}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("tenant_not_found")));
    let (s, _) = f
        .call(Method::POST, "/v1/console/links", Some(&f.admin_token()), Some(json!({"tenant": "acme", "x": 1})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_form_needs_the_sessions_csrf_token_and_this_origin() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let (cookie, csrf) = sign_in(&f, Some("acme")).await;
    let path = "/console/t/acme/webhooks";
    let form = |token: &str| format!("_csrf={token}&url=https%3A%2F%2Fhooks.example.com%2Fa");
    // No token, a wrong one, another session's: refused, as JSON for a non-browser.
    let (other_cookie, other_csrf) = sign_in(&f, Some("acme")).await;
    for body in ["url=https%3A%2F%2Fhooks.example.com%2Fa".to_owned(), form("forged"), form(&other_csrf)] {
        let a = send(&f, post(&cookie, path, &body, &[])).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(a.json()["error"]["code"], "csrf_failed", "{}", a.body);
    }
    // A browser gets the same refusal as a page.
    let a = send(&f, post(&cookie, path, &form("forged"), &[("accept", "text/html")])).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap().starts_with("text/html"));
    assert!(a.body.contains("csrf_failed"), "{}", a.body);
    // The right token from another site.
    for (k, v) in [("origin", "https://evil.example"), ("sec-fetch-site", "cross-site"), ("origin", "null")] {
        let a = send(&f, post(&cookie, path, &form(&csrf), &[(k, v)])).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{k}: {v}");
    }
    // Nothing was created by any of those.
    let (_, list) = f.call(Method::GET, "/v1/tenants/acme/webhooks", Some(&f.admin_token()), None).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 0, "{list}");
    // The right token from this origin: done.
    let a = send(&f, post(&cookie, path, &form(&csrf), &[("origin", "http://keyhold.test")])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("whsec_"));
    let (_, list) = f.call(Method::GET, "/v1/tenants/acme/webhooks", Some(&f.admin_token()), None).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1, "{list}");
    // A form that is not url-encoded is refused too.
    let mut req = post(&other_cookie, path, &form(&other_csrf), &[]);
    req.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    assert_eq!(send(&f, req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_tenant_admin_reaches_no_other_tenant_whatever_the_url() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    let (cookie, csrf) = sign_in(&f, Some("acme")).await;
    for path in [
        "/console/t/globex/",
        "/console/t/globex",
        "/console/t/globex/setup",
        "/console/t/globex/keys",
        "/console/t/globex/events",
        "/console/t/globex/webhooks",
        "/console/t/globex/audit",
        "/console/t/globex/audit/export",
        "/console/t/globex/usage",
        "/console/t/globex/key-policy/eu-central-1",
        "/console/t/globex/cloudformation/cmk",
        "/console/t/nobody/",
        "/console/tenants",
        "/console/events",
    ] {
        let a = send(&f, get(&cookie, path)).await;
        assert!(
            matches!(a.status, StatusCode::FORBIDDEN | StatusCode::TEMPORARY_REDIRECT | StatusCode::SEE_OTHER),
            "{path}: {}",
            a.status
        );
        if a.status == StatusCode::FORBIDDEN {
            assert_eq!(a.json()["error"]["code"], "forbidden", "{path}");
        }
        assert!(!a.body.contains("lk-"), "{path} showed a key: {}", a.body);
    }
    let before = f.call(Method::GET, "/v1/tenants/globex", Some(&f.admin_token()), None).await.1;
    for path in [
        "/console/t/globex/validate",
        "/console/t/globex/keys/eu-central-1",
        "/console/t/globex/webhooks",
        "/console/tenants/globex/link",
    ] {
        let a =
            send(&f, post(&cookie, path, &format!("_csrf={csrf}&key_arn=lk-00&url=https%3A%2F%2Fa.example.com"), &[]))
                .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.body);
    }
    let after = f.call(Method::GET, "/v1/tenants/globex", Some(&f.admin_token()), None).await.1;
    assert_eq!(before, after);
    // The admin reaches both.
    let (admin, _) = sign_in(&f, None).await;
    for path in ["/console/t/globex/", "/console/t/acme/audit", "/console/tenants", "/console/events"] {
        assert_eq!(send(&f, get(&admin, path)).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let (cookie, csrf) = sign_in(&f, Some("acme")).await;
    let a = send(&f, post(&cookie, "/console/logout", &format!("_csrf={csrf}"), &[])).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(send(&f, get(&cookie, "/console/t/acme/")).await.status, StatusCode::UNAUTHORIZED);
    // Unknown pages and assets answer in keyhold's error format.
    let a = send(&f, get(&cookie, "/console/assets/nothing.js")).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let a = send(&f, get(&cookie, "/console/assets/console.js")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap().starts_with("text/javascript"));
}

/// Redeems one link on two instances at once, many times, from tasks on several threads
/// released together: exactly one session each time.
async fn concurrent_redemptions(a: &Fixture, b: &Fixture) {
    a.active_tenant("acme").await;
    for _ in 0..5 {
        let t = mint(a, Some("acme")).await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let state = if i % 2 == 0 { a.state.clone() } else { b.state.clone() };
                let (barrier, t) = (barrier.clone(), t.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    router(state).oneshot(redeem_request(&t)).await.unwrap().status()
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        let won = statuses.iter().filter(|s| **s == StatusCode::SEE_OTHER).count();
        let lost = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
        assert_eq!((won, lost), (1, 7), "{statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_redeemed_concurrently_signs_in_once_on_sqlite() {
    let f = fixture().await;
    concurrent_redemptions(&f, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_redeemed_concurrently_on_two_instances_signs_in_once() {
    let url = fresh_postgres("console_links").await;
    let a = fixture_on(Some(url.clone())).await;
    let b = second_instance(&a, url).await;
    concurrent_redemptions(&a, &b).await;
    // A session made on one instance is good on the other.
    let t = mint(&a, Some("acme")).await;
    let set = send(&a, redeem_request(&t)).await.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap();
    assert_eq!(send(&b, get(cookie, "/console/t/acme/")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_audit_page_filters_escapes_and_starts_at_the_day_asked() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    // Three days later, a new admin action.
    f.clock.advance(std::time::Duration::from_secs(3 * 86_400));
    let (s, _) = f.call(Method::POST, "/v1/tenants/acme/validate", Some(&f.admin_token()), None).await;
    assert_eq!(s, StatusCode::OK);
    let (cookie, _) = sign_in(&f, Some("acme")).await;
    let today = {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(f.state.now_ms());
        humantime::format_rfc3339_seconds(at).to_string()[..10].to_owned()
    };
    let all = send(&f, get(&cookie, "/console/t/acme/audit?type=admin_action")).await;
    assert_eq!(all.status, StatusCode::OK);
    assert!(all.body.contains("create_tenant") && all.body.contains("validate"), "{}", all.body);
    let recent = send(&f, get(&cookie, &format!("/console/t/acme/audit?type=admin_action&from={today}"))).await;
    assert_eq!(recent.status, StatusCode::OK);
    assert!(!recent.body.contains("create_tenant"), "an event of three days ago is shown");
    assert!(recent.body.contains("validate"), "{}", recent.body);
    // What a request carries is shown escaped.
    let a = send(&f, get(&cookie, "/console/t/acme/audit?operation=%3Cscript%3Ealert(1)%3C%2Fscript%3E%22")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(!a.body.contains("<script>alert"), "unescaped");
    assert!(a.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;"));
    // Bad filters are clear 400s.
    for q in ["from=yesterday", "outcome=maybe", "type=nothing", "after=-1", "after=99999999999999999999999"] {
        let a = send(&f, get(&cookie, &format!("/console/t/acme/audit?{q}"))).await;
        assert_eq!(
            (a.status, a.json()["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{q}"
        );
    }
    for q in ["days=0", "days=91", "days=x"] {
        let a = send(&f, get(&cookie, &format!("/console/t/acme/usage?{q}"))).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}");
    }
    assert_eq!(send(&f, get(&cookie, "/console/t/acme/usage?days=90")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_pending_tenant_chooses_its_realm_and_mode_until_its_first_key() {
    let f = fixture().await;
    let admin = f.admin_token();
    let (s, _) = f
        .call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": "hooli", "realm": "eu", "mode": "cmk"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let me = f.tenant_admin_token("hooli");
    let setup = |body: Value| f.call(Method::PUT, "/v1/tenants/hooli/setup", Some(&me), Some(body));
    let (s, t) = setup(json!({"realm": "us", "mode": "cmk"})).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!((t["realm"].as_str(), t["state"].as_str()), (Some("us"), Some("pending")));
    assert_eq!(t["regions"], json!(["us-east-1", "us-west-2"]));
    let role = "arn:aws:iam::123456789012:role/keyhold-access";
    let (s, t) = setup(json!({"realm": "de", "mode": "byok", "role_arn": role})).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!((t["mode"].as_str(), t["role_arn"].as_str()), (Some("byok"), Some(role)));
    assert_eq!(t["external_id"], "keyhold-hooli");
    for (body, code) in [
        (json!({"realm": "de", "mode": "byok"}), "invalid_request"),
        (json!({"realm": "de", "mode": "cmk", "role_arn": role}), "invalid_request"),
        (json!({"realm": "mars", "mode": "cmk"}), "invalid_request"),
        (json!({"realm": "de", "mode": "hsm"}), "invalid_request"),
        (json!({"realm": "de", "mode": "local"}), "forbidden"),
    ] {
        let (_, e) = setup(body.clone()).await;
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
    }
    // Another tenant's admin and a service cannot.
    let (s, _) = f
        .call(
            Method::PUT,
            "/v1/tenants/hooli/setup",
            Some(&f.tenant_admin_token("acme")),
            Some(json!({"realm": "eu", "mode": "cmk"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The feed says so; the admin may choose local; a key fixes the choice.
    let (_, events) = f.call(Method::GET, "/v1/tenants/hooli/events?type=tenant.configured", Some(&me), None).await;
    assert_eq!(events["events"].as_array().unwrap().len(), 2, "{events}");
    let (s, _) = f
        .call(Method::PUT, "/v1/tenants/hooli/setup", Some(&admin), Some(json!({"realm": "eu", "mode": "local"})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let k = f.local().create_key(&keyhold_core::Region::parse("eu-central-1").unwrap(), "").unwrap().key.to_string();
    let (s, _) =
        f.call(Method::PUT, "/v1/tenants/hooli/keys/eu-central-1", Some(&admin), Some(json!({"key_arn": k}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = f
        .call(Method::PUT, "/v1/tenants/hooli/setup", Some(&admin), Some(json!({"realm": "us", "mode": "local"})))
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("setup_fixed")));
    // An active tenant's setup is fixed too.
    f.active_tenant("acme").await;
    let (_, e) = f
        .call(Method::PUT, "/v1/tenants/acme/setup", Some(&admin), Some(json!({"realm": "us", "mode": "local"})))
        .await;
    assert_eq!(e["error"]["code"], "setup_fixed");
    // Through the console: the wizard's form, with its CSRF token.
    let (s, _) = f
        .call(Method::POST, "/v1/tenants", Some(&admin), Some(json!({"id": "initech", "realm": "eu", "mode": "cmk"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (cookie, csrf) = sign_in(&f, Some("initech")).await;
    let page = send(&f, get(&cookie, "/console/t/initech/setup")).await;
    assert!(page.body.contains(r#"name="realm" value="uk""#), "the wizard offers every realm");
    assert!(!page.body.contains(r#"value="local""#), "local is not offered to a tenant's administrator");
    let a = send(
        &f,
        post(&cookie, "/console/t/initech/configure", &format!("_csrf={csrf}&realm=uk&mode=cmk&role_arn="), &[]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("Saved: realm uk, mode cmk"), "{}", a.body);
    assert!(a.body.contains("eu-west-2 (home)"), "the wizard now shows the realm's regions");
}

#[tokio::test]
async fn sign_in_says_whom_it_signs_in_ends_the_old_session_and_refuses_a_deleted_tenant() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    let t = mint(&f, Some("globex")).await;
    let page = send(&f, Request::builder().uri(format!("/console/login?t={t}")).body(Body::empty()).unwrap()).await;
    assert!(page.body.contains("the administrator of tenant globex"), "{}", page.body);
    // A browser signed in as the admin signs in with globex's link: the admin session ends.
    let (admin, _) = sign_in(&f, None).await;
    let mut req = redeem_request(&t);
    req.headers_mut().insert(header::COOKIE, admin.parse().unwrap());
    assert_eq!(send(&f, req).await.status, StatusCode::SEE_OTHER);
    assert_eq!(send(&f, get(&admin, "/console/tenants")).await.status, StatusCode::UNAUTHORIZED);
    // A link minted before its tenant was deleted signs no one in.
    let t = mint(&f, Some("acme")).await;
    let (s, _) = f.call(Method::DELETE, "/v1/tenants/acme", Some(&f.admin_token()), None).await;
    assert_eq!(s, StatusCode::OK);
    let a = send(&f, redeem_request(&t)).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (StatusCode::GONE, Some("tenant_deleted")));
    assert!(a.headers.get(header::SET_COOKIE).is_none());
    // `null` is not "no tenant": it mints nothing.
    let (s, e) = f.call(Method::POST, "/v1/console/links", Some(&f.admin_token()), Some(json!({"tenant": null}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    // An unknown console page is a 404 page with the console's headers.
    let mut req = get("", "/console/nothing/here");
    req.headers_mut().insert(header::ACCEPT, "text/html".parse().unwrap());
    let a = send(&f, req).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.contains("no such console page"));
    assert!(a.headers.get(header::CONTENT_SECURITY_POLICY).is_some());
}

#[tokio::test]
async fn an_overlong_key_reference_is_refused_before_it_is_recorded() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let (cookie, csrf) = sign_in(&f, Some("acme")).await;
    let before = f.state.lifecycle.registry().audit_head(&"acme".parse().unwrap()).await.unwrap().unwrap().seq;
    let long = "x".repeat(keyhold_lifecycle::MAX_KEY_REF + 1);
    let a = send(&f, post(&cookie, "/console/t/acme/keys/eu-central-1", &format!("_csrf={csrf}&key_arn={long}"), &[]))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains("at most 2048 bytes"));
    f.state.lifecycle.flush(true).await;
    let after = f.state.lifecycle.registry().audit_head(&"acme".parse().unwrap()).await.unwrap().unwrap().seq;
    assert_eq!(before, after, "the refused key was recorded");
    let (s, _) = f
        .call(Method::PUT, "/v1/tenants/acme/keys/eu-central-1", Some(&f.admin_token()), Some(json!({"key_arn": long})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn with_a_public_url_links_use_it_and_forms_must_come_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = keyhold_server::serve::ServeConfig {
        public_url: Some("https://keyhold.example.com".into()),
        probe_interval: None,
        dev: true,
        ..keyhold_server::serve::ServeConfig::embedded(dir.path())
    };
    let clock = std::sync::Arc::new(keyhold_core::ManualClock::new(super::now_ms()));
    let (state, _) = keyhold_server::serve::build(&config, keyhold_onboarding::RealmCatalog::builtin(), clock.clone())
        .await
        .unwrap();
    let admin = keyhold_server::devcreds::read_key(&keyhold_server::devcreds::admin_key_path(dir.path())).unwrap();
    let dev =
        keyhold_server::devcreds::read_key(&keyhold_server::devcreds::service_key_path(dir.path(), "dev")).unwrap();
    let f = Fixture { state, dir, admin, dev, clock };
    f.active_tenant("acme").await;
    let (s, link) =
        f.call(Method::POST, "/v1/console/links", Some(&f.admin_token()), Some(json!({"tenant": "acme"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(link["url"].as_str().unwrap().starts_with("https://keyhold.example.com/console/login?t="), "{link}");
    let t = link["path"].as_str().unwrap().strip_prefix("/console/login?t=").unwrap();
    // The redeem request says it came from http://keyhold.test: not the public origin.
    assert_eq!(send(&f, redeem_request(t)).await.status, StatusCode::FORBIDDEN);
    let mut req = redeem_request(t);
    req.headers_mut().insert(header::ORIGIN, "https://keyhold.example.com".parse().unwrap());
    assert_eq!(send(&f, req).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn trail_readers_give_one_place_per_tenant_and_a_few_in_all() {
    use keyhold_server::console::TrailReaders;
    let readers = TrailReaders::new(2);
    let t = |s: &str| keyhold_core::TenantId::parse(s).unwrap();
    let short = std::time::Duration::from_millis(100);
    let a = readers.enter(&t("acme"), short).await.expect("a place");
    // acme's second page waits for its first: it cannot hold the other place.
    assert!(readers.enter(&t("acme"), short).await.is_none());
    let b = readers.enter(&t("globex"), short).await.expect("the other place");
    assert!(readers.enter(&t("initech"), short).await.is_none(), "only two places");
    drop(a);
    let c = readers.enter(&t("initech"), short).await.expect("a place freed");
    drop((b, c));
    assert!(readers.enter(&t("acme"), short).await.is_some());
}

#[tokio::test]
async fn the_operators_view_pages_its_tenants() {
    let f = fixture().await;
    // Straight into the registry: 205 tenants through the API would also sign 205 audit
    // heads, for nothing this test looks at.
    let registry = f.state.lifecycle.registry();
    let eu = keyhold_core::RealmId::parse("eu").unwrap();
    for i in 0..205 {
        let id = keyhold_core::TenantId::parse(&format!("t{i:03}")).unwrap();
        registry.create_tenant(&id, &eu, keyhold_registry::TenantMode::Local, None, 1).await.unwrap();
    }
    let (cookie, _) = sign_in(&f, None).await;
    let first = send(&f, get(&cookie, "/console/tenants")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body.matches(r#"<a href="/console/t/t"#).count(), 200, "one page of tenants");
    assert!(first.body.contains("Tenants 1 to 200 of 205"));
    let next = send(&f, get(&cookie, "/console/tenants?skip=200")).await;
    assert_eq!(next.body.matches(r#"<a href="/console/t/t"#).count(), 5);
    assert!(!next.body.contains("Next tenants"));
}
