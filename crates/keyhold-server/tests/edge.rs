//! The HTTP edge against hostile and sloppy clients, over real sockets: idle TLS clients,
//! half-sent requests, floods of slow clients, connection and in-flight limits, body and
//! idle timeouts; and authentication: one answer for every failure, oversized tokens,
//! the bounded token cache, and service identities removed, narrowed or rotated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use keyhold_server::auth::{Scope, SigningKey};
use keyhold_server::conn::Limits;
use keyhold_server::serve::{ServeConfig, build, run};
use keyhold_server::state::Proven;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::fixture;

/// A served instance on a loopback port.
struct Served {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(limits: Limits, tls: Option<(std::path::PathBuf, std::path::PathBuf)>) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            probe_interval: None,
            limits,
            tls,
            ..ServeConfig::embedded(dir.path())
        };
        let (state, _) =
            build(&config, keyhold_onboarding::RealmCatalog::builtin(), Arc::new(keyhold_core::SystemClock))
                .await
                .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            run(
                &config,
                state,
                async {
                    let _ = stopped.await;
                },
                move |a| {
                    let _ = ready_tx.send(a);
                },
            )
            .await
            .unwrap();
        });
        let addr = ready_rx.await.unwrap();
        Served { addr, stop: Some(stop), task, _dir: dir }
    }

    /// An admin token for this instance.
    fn admin_token(&self) -> String {
        let key =
            keyhold_server::devcreds::read_key(&keyhold_server::devcreds::admin_key_path(self._dir.path())).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        key.token(keyhold_server::auth::ADMIN_ISSUER, Scope::Admin, None, now, 300)
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        // The drain may take up to its own timeout (30 s) on a loaded machine.
        tokio::time::timeout(keyhold_server::conn::DRAIN_TIMEOUT + Duration::from_secs(5), &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// One request on a fresh plain connection; the status line and the whole response.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Waits until the server closes `s` (EOF or reset); returns what it sent meanwhile.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => panic!("the connection is still open after {limit:?}; got {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn short(limits: Limits) -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
        ..limits
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_client_blocks_nobody_and_is_dropped_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let served = Served::start(short(Limits::default()), Some((cert.clone(), key))).await;
    // Sockets that never start a handshake.
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(served.addr).await.unwrap());
    }
    // A real TLS client is served at once.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let started = Instant::now();
    let tcp = TcpStream::connect(served.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(
        Duration::from_millis(800),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("the handshake waited behind idle sockets")
    .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(started.elapsed() < Duration::from_millis(800));
    // The idle sockets are closed once the handshake timeout passes.
    for s in &mut idle {
        closed_within(s, Duration::from_secs(3)).await;
    }
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_within_the_header_timeout() {
    let served = Served::start(short(Limits::default()), None).await;
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    closed_within(&mut s, Duration::from_secs(3)).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout: {:?}", started.elapsed());
    served.shutdown().await;
}

/// Regression: hyper's own header timer also ran while a keep-alive connection (or a new
/// one a client's pool opened ahead of need) waited for its next request, so pooled
/// connections were closed after the header timeout, racing clients that reused them (the
/// HTTP benchmark's requests failed with the connection closed under them). The header
/// timer now runs from a request's first byte only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_outlives_the_header_timeout_and_closes_after_the_idle_timeout() {
    let limits = Limits { idle_timeout: Duration::from_secs(3), ..short(Limits::default()) };
    let served = Served::start(limits, None).await;
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok\n") {
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
        // Longer than the header timeout, shorter than the idle timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let started = Instant::now();
    closed_within(&mut s, Duration::from_secs(4)).await;
    assert!(started.elapsed() >= Duration::from_millis(1000), "{:?}", started.elapsed());
    // A new connection that sends nothing waits like a kept-alive one (clients open
    // connections ahead of need): past the header timeout, closed after the idle timeout.
    let mut quiet = TcpStream::connect(served.addr).await.unwrap();
    let started = Instant::now();
    closed_within(&mut quiet, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(2500), "{:?}", started.elapsed());
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_clients_leaves_healthz_answering_and_is_cleared() {
    let served = Served::start(short(Limits::default()), None).await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(served.addr).await.unwrap();
        s.write_all(b"POST /v1/encrypt HTTP/1.1\r\nHost: x\r\nContent-").await.unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    let out = get(served.addr, "/healthz").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    for s in &mut slow {
        closed_within(s, Duration::from_secs(4)).await;
    }
    assert!(get(served.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_clients_get_503_overloaded_with_retry_after() {
    let limits = Limits { max_connections: 4, header_timeout: Duration::from_secs(5), ..Limits::default() };
    let served = Served::start(limits, None).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(served.addr).await.unwrap());
    }
    // Let the server accept them all before the next one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = get(served.addr, "/v1/tenants").await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.to_ascii_lowercase().contains("retry-after: 1"), "{out}");
    let body: Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(get(served.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limit_requests_get_503_and_healthz_still_answers() {
    let limits = Limits { max_in_flight: 1, body_timeout: Duration::from_secs(5), ..Limits::default() };
    let served = Served::start(limits, None).await;
    // A request whose body never finishes holds the one permit.
    let mut holder = TcpStream::connect(served.addr).await.unwrap();
    let head = format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{",
        served.admin_token()
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = get(served.addr, "/v1/tenants").await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.to_ascii_lowercase().contains("retry-after: 1"), "{out}");
    assert!(out.contains("\"overloaded\""), "{out}");
    assert!(get(served.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(served.addr, "/metrics").await.starts_with("HTTP/1.1 200"));
    drop(holder);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(get(served.addr, "/v1/tenants").await.starts_with("HTTP/1.1 401"));
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_within_the_body_timeout_even_past_the_idle_timeout() {
    let slow_body = |token: String| {
        format!(
            "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{{"
        )
    };
    let served = Served::start(short(Limits::default()), None).await;
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    s.write_all(slow_body(served.admin_token()).as_bytes()).await.unwrap();
    let got = closed_within(&mut s, Duration::from_secs(4)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    served.shutdown().await;

    // A request being handled is not idle: a stalled upload is ended by the body timeout
    // with its 408, not cut silently by a shorter idle timeout.
    let limits =
        Limits { idle_timeout: Duration::from_secs(1), body_timeout: Duration::from_secs(2), ..Limits::default() };
    let served = Served::start(limits, None).await;
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    s.write_all(slow_body(served.admin_token()).as_bytes()).await.unwrap();
    let started = Instant::now();
    let got = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&got));
    assert!(started.elapsed() >= Duration::from_millis(1800), "{:?}", started.elapsed());
    served.shutdown().await;
}

#[tokio::test]
async fn every_authentication_failure_gets_the_same_answer() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let (stranger, _) = SigningKey::generate().unwrap();
    let now = f.now_s();
    let cached_before = f.state.token_cache_size().0;
    let unsigned_registered = stranger.token("dev", Scope::Service, None, now, 300);
    let unknown_service = stranger.token("no-such-service", Scope::Service, None, now, 300);
    let expired = f.dev.token("dev", Scope::Service, None, now - 1000, 300);
    let huge = format!("{}.{}.x", "a".repeat(9000), "b");
    let mut answers = Vec::new();
    for token in [unsigned_registered.as_str(), unknown_service.as_str(), expired.as_str(), huge.as_str(), "x"] {
        let body = json!({"tenant": "acme", "purpose": "billing", "plaintext": "aGk=", "context": {}});
        let (s, e) = f.call(Method::POST, "/v1/encrypt", Some(token), Some(body)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        answers.push(e);
    }
    let (s, none) = f.call(Method::GET, "/v1/tenants", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    answers.push(none);
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(answers[0]["error"]["code"], "unauthenticated");
    // Nothing of the refused tokens was cached.
    assert_eq!(f.state.token_cache_size().0, cached_before);
}

#[tokio::test]
async fn the_token_cache_is_bounded_in_bytes() {
    let f = fixture().await;
    let now = f.now_s();
    for i in 0..200_000u32 {
        let mut digest = [0u8; 32];
        digest[..4].copy_from_slice(&i.to_le_bytes());
        f.state.cache_token(digest, Proven::Admin, now + 600, now);
    }
    let (entries, bytes) = f.state.token_cache_size();
    assert!(bytes <= keyhold_server::state::TOKEN_CACHE_BYTES, "{bytes}");
    assert!(entries < 200_000 && entries > 1000, "{entries}");
    // Expired entries make room again.
    let mut digest = [0xff; 32];
    digest[0] = 1;
    f.state.cache_token(digest, Proven::Admin, now + 2000, now + 1000);
    assert!(f.state.cached_token(&digest, now + 1000).is_some());
    assert_eq!(f.state.token_cache_size().0, 1);
}

#[tokio::test]
async fn services_removed_narrowed_or_rotated_are_enforced_from_the_next_request() {
    let f = fixture().await;
    f.active_tenant("acme").await;
    let admin = f.admin_token();
    let (s, svc) = f
        .call(Method::POST, "/v1/services", Some(&admin), Some(json!({"name": "billing", "purposes": ["billing"]})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    assert_eq!(svc["purposes"], json!(["billing"]));
    assert_eq!(svc["keys"].as_array().unwrap().len(), 1);
    use base64::Engine as _;
    let pkcs8 = base64::engine::general_purpose::STANDARD.decode(svc["private_key"].as_str().unwrap()).unwrap();
    let key = SigningKey::from_pkcs8(&pkcs8).unwrap();
    let token = key.token("billing", Scope::Service, None, f.now_s(), 300);
    assert_eq!(f.encrypt_with("acme", &token).await.0, StatusCode::OK);
    // The private key is shown once: the list holds public keys only.
    let (_, list) = f.call(Method::GET, "/v1/services", Some(&admin), None).await;
    assert!(list.to_string().contains("billing") && !list.to_string().contains("private_key"), "{list}");
    // A duplicate is refused.
    let (s, e) =
        f.call(Method::POST, "/v1/services", Some(&admin), Some(json!({"name": "billing", "purposes": ["*"]}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("service_exists")));

    // Narrowed: the cached token now meets the narrower purposes.
    let (s, _) =
        f.call(Method::PUT, "/v1/services/billing/purposes", Some(&admin), Some(json!({"purposes": ["hr"]}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(f.encrypt_with("acme", &token).await.0, StatusCode::FORBIDDEN);
    f.call(Method::PUT, "/v1/services/billing/purposes", Some(&admin), Some(json!({"purposes": ["*"]}))).await;
    assert_eq!(f.encrypt_with("acme", &token).await.0, StatusCode::OK);

    // Rotated with an overlap: old and new keys both work until the overlap ends.
    let (new_key, _) = SigningKey::generate().unwrap();
    let pk = base64::engine::general_purpose::STANDARD.encode(new_key.public_key());
    let (s, r) = f
        .call(
            Method::POST,
            "/v1/services/billing/rotate",
            Some(&admin),
            Some(json!({"public_key": pk, "overlap_s": 60})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r.get("private_key").is_none());
    assert_eq!(r["keys"].as_array().unwrap().len(), 2);
    let new_token = new_key.token("billing", Scope::Service, None, f.now_s(), 300);
    assert_eq!(f.encrypt_with("acme", &token).await.0, StatusCode::OK);
    assert_eq!(f.encrypt_with("acme", &new_token).await.0, StatusCode::OK);
    f.clock.advance(Duration::from_secs(61));
    let fresh_old = key.token("billing", Scope::Service, None, f.now_s(), 300);
    assert_eq!(f.encrypt_with("acme", &fresh_old).await.0, StatusCode::UNAUTHORIZED);
    let new_token = new_key.token("billing", Scope::Service, None, f.now_s(), 300);
    assert_eq!(f.encrypt_with("acme", &new_token).await.0, StatusCode::OK);

    // Rotated with no overlap (a leaked key): the old key is refused at once.
    let (s, r) = f.call(Method::POST, "/v1/services/billing/rotate", Some(&admin), Some(json!({"overlap_s": 0}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r["private_key"].as_str().is_some());
    assert_eq!(f.encrypt_with("acme", &new_token).await.0, StatusCode::UNAUTHORIZED);

    // Removed: refused from the next request.
    let newest = SigningKey::from_pkcs8(
        &base64::engine::general_purpose::STANDARD.decode(r["private_key"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let newest_token = newest.token("billing", Scope::Service, None, f.now_s(), 300);
    assert_eq!(f.encrypt_with("acme", &newest_token).await.0, StatusCode::OK);
    let (s, _) = f.call(Method::DELETE, "/v1/services/billing", Some(&admin), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(f.encrypt_with("acme", &newest_token).await.0, StatusCode::UNAUTHORIZED);
    let (s, e) = f.call(Method::DELETE, "/v1/services/billing", Some(&admin), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("service_not_found")));
    // Services manage no services.
    let (s, _) = f.call(Method::GET, "/v1/services", Some(&f.dev_token()), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn another_instance_refuses_a_removed_service_within_the_view_bound() {
    let a = fixture().await;
    a.active_tenant("acme").await;
    let config = ServeConfig { probe_interval: None, ..ServeConfig::embedded(a.dir.path()) };
    let (b, _) = build(&config, keyhold_onboarding::RealmCatalog::builtin(), a.clock.clone()).await.unwrap();
    let token = a.dev_token();
    let body = json!({"tenant": "acme", "purpose": "billing", "plaintext": "aGk=", "context": {}});
    let call = |state: Arc<keyhold_server::AppState>, token: String, body: Value| async move {
        use tower::ServiceExt as _;
        let req = axum::http::Request::post("/v1/encrypt")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        keyhold_server::router(state).oneshot(req).await.unwrap().status()
    };
    assert_eq!(call(b.clone(), token.clone(), body.clone()).await, StatusCode::OK);
    let (s, _) = a.call(Method::DELETE, "/v1/services/dev", Some(&a.admin_token()), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(a.encrypt_with("acme", &token).await.0, StatusCode::UNAUTHORIZED);
    a.clock.advance(Duration::from_millis(keyhold_lifecycle::TENANT_VIEW_TTL_MS));
    assert_eq!(call(b.clone(), token, body).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_accepted_when_well_formed_and_generated_otherwise() {
    let served = Served::start(Limits::default(), None).await;
    let addr = served.addr;
    let ask = |id: Option<String>| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let header = id.map(|i| format!("X-Request-Id: {i}\r\n")).unwrap_or_default();
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-request-id: ").map(str::to_owned))
            .expect("no x-request-id on the response")
    };
    assert_eq!(ask(Some("trace-42.a:b_c".into())).await, "trace-42.a:b_c");
    let generated = ask(None).await;
    assert!(!generated.is_empty() && generated != ask(None).await);
    let too_long = "a".repeat(129);
    let replaced = ask(Some(too_long.clone())).await;
    assert_ne!(replaced, too_long);
    assert_ne!(ask(Some("with/slash".into())).await, "with/slash");
    served.shutdown().await;
}

/// Per-tenant limits: a tenant flooding requests, or spending its budget of key-service
/// calls with a new context per record, is refused with 429 `rate_limited` and
/// `Retry-After`, and stays active; another tenant on the same instance, at the same
/// time, is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_limits_is_refused_and_the_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        probe_interval: None,
        dev: true,
        tenant_limits: keyhold_server::serve::TenantLimits {
            tenant_per_s: Some(20.0),
            service_per_s: None,
            kms_per_minute: Some(40),
        },
        ..ServeConfig::embedded(dir.path())
    };
    let clock = Arc::new(keyhold_core::ManualClock::new(super::now_ms()));
    let (state, _) = build(&config, keyhold_onboarding::RealmCatalog::builtin(), clock.clone()).await.unwrap();
    let f = Arc::new(super::Fixture {
        state,
        admin: keyhold_server::devcreds::read_key(&keyhold_server::devcreds::admin_key_path(dir.path())).unwrap(),
        dev: keyhold_server::devcreds::read_key(&keyhold_server::devcreds::service_key_path(dir.path(), "dev"))
            .unwrap(),
        dir,
        clock,
    });
    f.active_tenant("acme").await;
    f.active_tenant("globex").await;
    // Request rate: acme floods (one context: no key-service call), globex is served.
    let flood: Vec<_> = (0..100)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move { f.encrypt("acme", b"x", json!({})).await })
        })
        .collect();
    let mut globex = Vec::new();
    for _ in 0..10 {
        globex.push(f.encrypt("globex", b"y", json!({})).await.0);
    }
    let mut codes = std::collections::HashMap::new();
    for t in flood {
        let (s, e) = t.await.unwrap();
        if s != StatusCode::OK {
            assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{e}");
        }
        *codes.entry(s).or_insert(0) += 1;
    }
    assert!(codes[&StatusCode::TOO_MANY_REQUESTS] >= 50, "{codes:?}");
    assert!(globex.iter().all(|s| *s == StatusCode::OK), "{globex:?}");
    // The answer carries Retry-After.
    let body = json!({"tenant": "acme", "purpose": "billing", "plaintext": "eA==", "context": {}});
    let mut limited = None;
    for _ in 0..50 {
        let req = axum::http::Request::post("/v1/encrypt")
            .header("authorization", format!("Bearer {}", f.dev_token()))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let resp = tower::ServiceExt::oneshot(keyhold_server::router(f.state.clone()), req).await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("never limited");
    assert_eq!(resp.headers()["retry-after"], "1");

    // Key-service budget: a new context per record costs calls; past 40 a minute acme is
    // refused (before any call), globex is not, and no one is suspended.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut refused = None;
    for i in 0..40 {
        let (s, e) = f.encrypt("acme", b"x", json!({"record": i.to_string()})).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(e);
            break;
        }
        assert_eq!(s, StatusCode::OK, "{e}");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let e = refused.expect("the key-service budget never ran out");
    assert_eq!(e["error"]["code"], "rate_limited");
    assert!(e["error"]["message"].as_str().unwrap().contains("budget"), "{e}");
    for i in 0..5 {
        let (s, e) = f.encrypt("globex", b"y", json!({"record": i.to_string()})).await;
        assert_eq!(s, StatusCode::OK, "{e}");
    }
    let (_, t) = f.call(Method::GET, "/v1/tenants/acme", Some(&f.admin_token()), None).await;
    assert_eq!(t["state"], "active", "{t}");
}

/// What hyper refuses itself (a malformed request, a URI or a head over the limits) and a
/// head over 64 KiB that hyper's buffer let through all get keyhold's JSON error, on a
/// closed connection; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_json_errors_too() {
    let served = Served::start(short(Limits::default()), None).await;
    let cases: [(Vec<u8>, &str, &str); 5] = [
        (b"GARBAGE\r\n\r\n".to_vec(), "400", "invalid_request"),
        (b"POST /v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(), "400", "invalid_request"),
        ([&b"GET /healthz?x="[..], &[b'a'; 70_000], b" HTTP/1.1\r\nHost: x\r\n\r\n"].concat(), "414", "uri_too_long"),
        (
            [&b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "[..], &[b'a'; 200_000], b"\r\n\r\n"].concat(),
            "431",
            "headers_too_large",
        ),
        (
            [&b"GET /v1/tenants HTTP/1.1\r\nHost: x\r\nX-Big: "[..], &[b'a'; 66_000], b"\r\n\r\n"].concat(),
            "431",
            "headers_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let mut s = TcpStream::connect(served.addr).await.unwrap();
        let _ = s.write_all(&request).await;
        let got = closed_within(&mut s, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["error"]["code"], code, "{text}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(get(served.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    served.shutdown().await;
}
