//! HTTP benchmark: 1 KiB encrypt and decrypt through `keyhold serve`'s API against a bare
//! axum JSON echo measured in the same run, on the same runtime, with the same load
//! generator (keep-alive HTTP/1.1 connections, each sending its next request when the
//! previous answer arrives). Phases alternate (echo, encrypt, decrypt, batches) so that
//! the shared machine's noise hits all of them alike; medians of the rounds are reported,
//! and each endpoint's share of the echo is the median over rounds of its rate against
//! the echo of the same round (neighbouring phases see the same machine; a slow round
//! moves both), with p99 latency, the batch endpoints' operations per second against the
//! single-item ones, `/v1/reencrypt/batch` (messages under a replaced key: each item is
//! decrypted and encrypted again) against `/v1/decrypt/batch` round by round, and
//! key-provider calls per 100,000 operations in steady state.
//!
//! keyhold runs behind its own accept loop ([`keyhold_server::conn`]) with its default
//! limits, and logs at its default level (a line per request, to a file), as `keyhold
//! serve` does; the echo runs on plain `axum::serve` with no logging.
//!
//! `BENCH_AXUM_SERVE=1` serves keyhold on plain `axum::serve` instead (no limits or
//! timeouts), and `RUST_LOG=off` turns its logging off: the costs of the accept loop and
//! of the request line, measured against the same echo.
//!
//! Run: `cargo bench -p keyhold-server --bench http` (env `ROUNDS`, `SECONDS`,
//! `CONNECTIONS` to change the defaults 3, 2 and 16).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "bench")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyhold_core::{Region, SystemClock};
use keyhold_onboarding::RealmCatalog;
use keyhold_provider_local::LocalKms;
use keyhold_server::auth::{ADMIN_ISSUER, Scope};
use keyhold_server::devcreds;
use keyhold_server::serve::{ServeConfig, build};
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The allocator the `keyhold` binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// keyhold as `keyhold serve` runs it: its own accept loop, limits and timeouts.
async fn serve_keyhold(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = keyhold_server::conn::Limits::default();
    tokio::spawn(keyhold_server::conn::serve(listener, None, router, limits, std::future::pending()));
    format!("http://{addr}")
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn post_json(client: &HttpClient, url: &str, token: &str, body: Bytes) -> (u16, Bytes) {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(body))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// One phase: `connections` loops posting `body` to `url` for `seconds`; returns
/// requests per second and every latency in microseconds.
async fn phase(
    client: &HttpClient,
    url: &str,
    token: &str,
    body: Bytes,
    connections: u64,
    seconds: u64,
) -> (f64, Vec<u32>) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, token, body, stop) =
                (client.clone(), url.to_owned(), token.to_owned(), body.clone(), stop.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (status, _) = post_json(&client, &url, &token, body.clone()).await;
                    assert_eq!(status, 200, "{url}");
                    lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    (rps, all)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(mut v: Vec<u32>) -> f64 {
    v.sort_unstable();
    f64::from(v[(v.len() * 99 / 100).min(v.len() - 1)]) / 1000.0
}

#[derive(Default)]
struct Series {
    rps: Vec<f64>,
    lat: Vec<u32>,
}

fn main() {
    let rounds = env_or("ROUNDS", 3);
    let seconds = env_or("SECONDS", 2);
    let connections = env_or("CONNECTIONS", 16);
    // Logging as `keyhold serve` does at its default level (a line per request), to a file.
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let guard =
        keyhold_server::telemetry::init_to(&keyhold_server::telemetry::Telemetry::default(), log, false).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        // keyhold on its embedded default, one active tenant with two local keys.
        let dir = tempfile::tempdir().unwrap();
        let config = ServeConfig { probe_interval: None, ..ServeConfig::embedded(dir.path()) };
        let (state, _) = build(&config, RealmCatalog::builtin(), Arc::new(SystemClock)).await.unwrap();
        let keyhold_url = if std::env::var_os("BENCH_AXUM_SERVE").is_some() {
            serve(keyhold_server::router(state.clone())).await
        } else {
            serve_keyhold(keyhold_server::router(state.clone())).await
        };
        let echo_url = serve(axum::Router::new().route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }))).await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let admin = devcreds::read_key(&devcreds::admin_key_path(dir.path())).unwrap();
        let admin = admin.token(ADMIN_ISSUER, Scope::Admin, None, now, 600);
        let dev = devcreds::read_key(&devcreds::service_key_path(dir.path(), "dev")).unwrap();
        let dev = dev.token("dev", Scope::Service, None, now, 600);
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http();
        let tenant = json!({"id": "acme", "realm": "eu", "mode": "local"}).to_string();
        assert_eq!(post_json(&client, &format!("{keyhold_url}/v1/tenants"), &admin, tenant.into()).await.0, 201);
        let kms = LocalKms::open(dir.path()).unwrap();
        for region in ["eu-central-1", "eu-west-1"] {
            let k = kms.create_key(&Region::parse(region).unwrap(), "bench").unwrap().key;
            let req = hyper::Request::put(format!("{keyhold_url}/v1/tenants/acme/keys/{region}"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {admin}"))
                .body(Full::new(Bytes::from(json!({"key_arn": k.as_str()}).to_string())))
                .unwrap();
            assert_eq!(client.request(req).await.unwrap().status(), 200);
        }

        let plaintext = B64.encode(vec![0x42u8; 1024]);
        let enc_item = json!({"tenant": "acme", "purpose": "bench", "plaintext": plaintext});
        let enc_body = Bytes::from(enc_item.to_string());
        let (_, out) = post_json(&client, &format!("{keyhold_url}/v1/encrypt"), &dev, enc_body.clone()).await;
        let ct = serde_json::from_slice::<Value>(&out).unwrap()["ciphertext"].clone();
        let dec_item = json!({"tenant": "acme", "ciphertext": ct});
        let dec_body = Bytes::from(dec_item.to_string());
        const BATCH: usize = 100;
        let enc_batch = Bytes::from(json!({"items": vec![enc_item.clone(); BATCH]}).to_string());
        let dec_batch = Bytes::from(json!({"items": vec![dec_item.clone(); BATCH]}).to_string());
        // A key change: a new eu-central-1 key, so the message above is under a
        // decrypt-only key and every re-encryption of it decrypts and encrypts again.
        let new_key = kms.create_key(&Region::parse("eu-central-1").unwrap(), "bench-new").unwrap().key;
        let req = hyper::Request::put(format!("{keyhold_url}/v1/tenants/acme/keys/eu-central-1"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {admin}"))
            .body(Full::new(Bytes::from(json!({"key_arn": new_key.as_str()}).to_string())))
            .unwrap();
        assert_eq!(client.request(req).await.unwrap().status(), 200);
        let (status, out) = post_json(&client, &format!("{keyhold_url}/v1/reencrypt/batch"), &dev, dec_batch.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["results"][0]["changed"], true);

        // Warm up every path, then count provider calls from here on.
        for (url, body) in [
            (format!("{echo_url}/echo"), enc_body.clone()),
            (format!("{keyhold_url}/v1/encrypt"), enc_body.clone()),
            (format!("{keyhold_url}/v1/decrypt"), dec_body.clone()),
        ] {
            phase(&client, &url, &dev, body, connections, 1).await;
        }
        let calls_before: u64 = state.metrics().provider_calls().values().sum();
        let (mut echo, mut enc, mut dec, mut encb, mut decb, mut reb) = (
            Series::default(),
            Series::default(),
            Series::default(),
            Series::default(),
            Series::default(),
            Series::default(),
        );
        let mut ops = 0u64;
        for round in 0..rounds {
            for (series, url, body, items) in [
                (&mut echo, format!("{echo_url}/echo"), enc_body.clone(), 1),
                (&mut enc, format!("{keyhold_url}/v1/encrypt"), enc_body.clone(), 1),
                (&mut dec, format!("{keyhold_url}/v1/decrypt"), dec_body.clone(), 1),
                (&mut encb, format!("{keyhold_url}/v1/encrypt/batch"), enc_batch.clone(), BATCH),
                (&mut decb, format!("{keyhold_url}/v1/decrypt/batch"), dec_batch.clone(), BATCH),
                (&mut reb, format!("{keyhold_url}/v1/reencrypt/batch"), dec_batch.clone(), BATCH),
            ] {
                let (rps, lat) = phase(&client, &url, &dev, body, connections, seconds).await;
                if !url.ends_with("/echo") {
                    ops += lat.len() as u64 * items as u64;
                }
                series.rps.push(rps * items as f64);
                series.lat.extend(lat);
            }
            eprintln!("round {} of {rounds} done", round + 1);
        }
        let calls: u64 = state.metrics().provider_calls().values().sum::<u64>() - calls_before;

        let (e, en, de) = (median(echo.rps.clone()), median(enc.rps.clone()), median(dec.rps.clone()));
        // Each round's rate against the same round's echo.
        let share = |s: &Series| median(s.rps.iter().zip(&echo.rps).map(|(r, e)| r / e).collect());
        let (en_share, de_share) = (share(&enc), share(&dec));
        let (eb, db, rb) = (median(encb.rps.clone()), median(decb.rps.clone()), median(reb.rps.clone()));
        // Each round's re-encryption rate against the same round's batch decryption.
        let re_share = median(reb.rps.iter().zip(&decb.rps).map(|(r, d)| r / d).collect());
        println!("HTTP, 1 KiB plaintext, {connections} keep-alive connections, {rounds} rounds of {seconds} s per phase (medians)");
        println!("  axum JSON echo      {e:>9.0} req/s   p99 {:>6.2} ms", p99(echo.lat));
        println!("  POST /v1/encrypt    {en:>9.0} req/s   p99 {:>6.2} ms   {:.2} of echo", p99(enc.lat), en_share);
        println!("  POST /v1/decrypt    {de:>9.0} req/s   p99 {:>6.2} ms   {:.2} of echo", p99(dec.lat), de_share);
        println!("  encrypt/batch x{BATCH} {eb:>9.0} items/s p99 {:>6.2} ms   {:.1}x single encrypt", p99(encb.lat), eb / en);
        println!("  decrypt/batch x{BATCH} {db:>9.0} items/s p99 {:>6.2} ms   {:.1}x single decrypt", p99(decb.lat), db / de);
        println!(
            "  reencrypt/batch x{BATCH} {rb:>7.0} items/s p99 {:>6.2} ms   {re_share:.2} of decrypt/batch",
            p99(reb.lat)
        );
        println!(
            "  key-provider calls in steady state: {calls} for {ops} operations = {:.2} per 100,000",
            calls as f64 * 100_000.0 / ops.max(1) as f64
        );
    });
    drop(guard);
    let lines = std::fs::read_to_string(&log_path).unwrap().lines().filter(|l| l.contains("keyhold::request")).count();
    println!("  request log lines written (default level, text): {lines}");
}
