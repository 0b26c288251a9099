//! Webhook delivery, following the Standard Webhooks specification: each event is POSTed
//! as `{"type","timestamp","data"}` with `webhook-id` (`msg_<event id>`, the same on every
//! retry), `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,` and the
//! base64 HMAC-SHA256 of `id.timestamp.body` under the endpoint's `whsec_` secret; during
//! a secret rotation's overlap, one signature per secret, space-separated).
//!
//! The queue is the registry's (deliveries are queued with their event, in its
//! transaction). Every instance runs a [`Dispatcher`]: it claims due deliveries with a
//! lease (at most one per endpoint at a time, so endpoints are served fairly and in order),
//! sends them concurrently (up to [`WebhookConfig::concurrency`], a slot refilled as soon
//! as it frees), and records each attempt; the delivery log shows a coarse error (the
//! details of a failed connection go to keyhold's log, not to the tenant). A 2xx delivers; `410 Gone` disables the endpoint; anything else (other
//! statuses, timeouts, refused connections) is retried on [`SCHEDULE`] with ±20% jitter,
//! about three days in all, then given up.
//!
//! **Destinations.** Endpoint URLs are the tenants' (tenant admins register them), so
//! keyhold refuses to become a way into the platform's network: only `https://` URLs, and
//! no destination address that is loopback, private, link-local, CGNAT, multicast or
//! unspecified, checked on the addresses a name resolves to when connecting (a name that
//! later resolves elsewhere gains nothing). [`WebhookConfig::allow_private`] lifts both
//! (development and tests). Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use keyhold_registry::{AttemptOutcome, ClaimedDelivery, Registry};

/// How long after a failed attempt the next one is made: the n-th entry after the n-th
/// failure (the first attempt is immediate); about 3 days in all.
pub const SCHEDULE: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];

/// How long a claimed delivery is its claimer's: past it, another instance may send it.
pub const LEASE: Duration = Duration::from_secs(60);

/// The secret's prefix.
pub const SECRET_PREFIX: &str = "whsec_";

/// How webhooks are delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WebhookConfig {
    /// Multiplies [`SCHEDULE`] (1.0 in production; small in tests and drills).
    pub retry_scale: f64,
    /// Allow `http://` URLs and private, loopback and link-local destinations.
    pub allow_private: bool,
    /// The longest one attempt may take.
    pub timeout: Duration,
    /// Deliveries sent at once by one instance.
    pub concurrency: usize,
    /// How often the queue is looked at when it was empty.
    pub poll: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            retry_scale: 1.0,
            allow_private: false,
            timeout: Duration::from_secs(10),
            concurrency: 16,
            poll: Duration::from_millis(500),
        }
    }
}

/// A new `whsec_` secret: 32 random bytes.
pub fn new_secret() -> Result<String, String> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "no randomness".to_owned())?;
    Ok(format!("{SECRET_PREFIX}{}", B64.encode(b)))
}

/// A new endpoint id: `wh_` and 32 hex digits.
pub fn new_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "no randomness".to_owned())?;
    Ok(format!("wh_{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
}

/// The `v1,` signature of `id.timestamp.body` under `secret` (`whsec_` + base64).
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Option<String> {
    let key = B64.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Some(format!("v1,{}", B64.encode(ctx.sign().as_ref())))
}

/// Whether keyhold may send to `ip` without [`WebhookConfig::allow_private`]: globally
/// routable addresses only. IPv4 excludes this network, private, CGNAT, loopback,
/// link-local, the IETF protocol block, the documentation and benchmarking ranges,
/// multicast and the reserved block; IPv6 allows global unicast (`2000::/3`) only,
/// without documentation (`2001:db8::/32`), Teredo (`2001::/32`) or 6to4 (`2002::/16`),
/// which embed other addresses, and judges IPv4-mapped addresses as IPv4.
pub fn public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let in_net = |net: [u8; 4], bits: u32| {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                (u32::from_be_bytes(o) & mask) == (u32::from_be_bytes(net) & mask)
            };
            let special: [([u8; 4], u32); 14] = [
                ([0, 0, 0, 0], 8),
                ([10, 0, 0, 0], 8),
                ([100, 64, 0, 0], 10),
                ([127, 0, 0, 0], 8),
                ([169, 254, 0, 0], 16),
                ([172, 16, 0, 0], 12),
                ([192, 0, 0, 0], 24),
                ([192, 0, 2, 0], 24),
                ([192, 88, 99, 0], 24),
                ([192, 168, 0, 0], 16),
                ([198, 18, 0, 0], 15),
                ([198, 51, 100, 0], 24),
                ([203, 0, 113, 0], 24),
                ([224, 0, 0, 0], 3),
            ];
            !special.iter().any(|(net, bits)| in_net(*net, *bits))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_address(IpAddr::V4(v4));
            }
            let s = v6.segments();
            (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && (s[1] == 0x0db8 || s[1] == 0)) && s[0] != 0x2002
        }
    }
}

/// Checks an endpoint URL as registered: absolute `https://` (or `http://` when allowed),
/// a host, no credentials, at most 2,048 bytes, and when the host is an address, a public
/// one (unless allowed). Names are checked again when connecting.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("the URL is over 2,048 bytes".into());
    }
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_private => {}
        Some("http") => return Err("webhook URLs must be https://".into()),
        _ => return Err("webhook URLs must be absolute https:// URLs".into()),
    }
    let auth = uri.authority().ok_or("the URL has no host")?;
    if auth.as_str().contains('@') {
        return Err("the URL must not carry credentials".into());
    }
    if let Some(port) = auth.port() {
        if port.as_u16() == 0 {
            return Err("the URL's port must be 1 to 65535".into());
        }
    } else if auth.as_str().ends_with(':') {
        return Err("the URL's port is empty".into());
    }
    if url.contains('#') {
        return Err("the URL must not carry a fragment".into());
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && !allow_private
        && !public_address(ip)
    {
        return Err(format!("{ip} is not a public address"));
    }
    if !allow_private && (host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost")) {
        return Err("localhost is not a public destination".into());
    }
    Ok(())
}

/// Resolves names for the webhook client, keeping only public addresses (unless allowed).
#[derive(Clone)]
struct Resolver {
    allow_private: bool,
}

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow || public_address(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(std::io::Error::other(format!("{} has no public address", name.as_str())));
            }
            Ok(addrs.into_iter())
        })
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>;

/// Sends due deliveries, on every instance.
pub struct Dispatcher {
    registry: Registry,
    config: WebhookConfig,
    client: HttpsClient,
    clock: Arc<dyn keyhold_core::Clock>,
}

impl Dispatcher {
    /// A dispatcher over `registry`.
    pub fn new(registry: Registry, config: WebhookConfig, clock: Arc<dyn keyhold_core::Clock>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            });
        let mut http = HttpConnector::new_with_resolver(Resolver { allow_private: config.allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Self { registry, config, client, clock }
    }

    /// Claims up to `n` due deliveries (at most one per endpoint at a time).
    async fn claim(&self, n: usize) -> Vec<ClaimedDelivery> {
        let now = self.clock.now_millis();
        let limit = u32::try_from(n.max(1)).unwrap_or(16);
        match self.registry.claim_deliveries(now, ms(LEASE), limit).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhook deliveries could not be claimed; retrying");
                Vec::new()
            }
        }
    }

    async fn deliver(&self, d: ClaimedDelivery) {
        let started = Instant::now();
        let outcome = match self.attempt(&d).await {
            Ok(status) if (200..300).contains(&status) => AttemptOutcome::Delivered { status },
            Ok(410) => AttemptOutcome::Gone,
            Ok(status) => {
                AttemptOutcome::Failed { status: Some(status), error: format!("HTTP {status}"), next_ms: self.next(&d) }
            }
            Err(error) => AttemptOutcome::Failed { status: None, error, next_ms: self.next(&d) },
        };
        let latency = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &outcome {
            AttemptOutcome::Delivered { .. } => {}
            AttemptOutcome::Gone => {
                tracing::warn!(endpoint = %d.endpoint.id, "webhook endpoint answered 410 Gone: disabled");
            }
            AttemptOutcome::Failed { error, next_ms, .. } => tracing::info!(
                endpoint = %d.endpoint.id, event = d.event.id, attempt = d.attempts + 1, error, retry = next_ms.is_some(),
                "webhook delivery failed"
            ),
        }
        if let Err(e) = self.registry.finish_delivery(&d, &outcome, latency, self.clock.now_millis()).await {
            // The lease runs out and the delivery is sent again, with the same id.
            tracing::warn!(endpoint = %d.endpoint.id, error = %e, "webhook attempt not recorded; it will be sent again");
        }
    }

    /// When to try again after this attempt fails, or `None` when the schedule is done.
    fn next(&self, d: &ClaimedDelivery) -> Option<u64> {
        let base = SCHEDULE.get(usize::try_from(d.attempts).ok()?)?;
        let mut b = [0u8; 2];
        let _ = aws_lc_rs::rand::fill(&mut b);
        let jitter = 0.8 + 0.4 * f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
        let delay = base.as_secs_f64() * self.config.retry_scale.max(0.0) * jitter;
        Some(self.clock.now_millis().saturating_add((delay * 1000.0) as u64))
    }

    /// One POST; the answer's status.
    async fn attempt(&self, d: &ClaimedDelivery) -> Result<u16, String> {
        check_url(&d.endpoint.url, self.config.allow_private)?;
        let data: serde_json::Value =
            serde_json::from_str(&d.event.data).map_err(|_| "the stored event does not read".to_owned())?;
        let at = std::time::UNIX_EPOCH + Duration::from_millis(d.event.at_ms);
        let body = serde_json::json!({
            "type": d.event.kind,
            "timestamp": humantime::format_rfc3339_millis(at).to_string(),
            "data": data,
        })
        .to_string();
        let id = format!("msg_{}", d.event.id);
        let ts = self.clock.now_millis() / 1000;
        let now = self.clock.now_millis();
        let mut sigs = vec![sign(&d.endpoint.secret, &id, ts, body.as_bytes()).ok_or("the secret does not read")?];
        if let Some((old, until)) = &d.endpoint.old_secret
            && *until > now
            && let Some(s) = sign(old, &id, ts, body.as_bytes())
        {
            sigs.push(s);
        }
        let req = hyper::Request::post(&d.endpoint.url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("keyhold-webhooks/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sigs.join(" "))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("the request could not be built: {e}"))?;
        let send = async {
            let resp = self.client.request(req).await.map_err(|e| {
                // The details go to the log only: a tenant's delivery log must not map the
                // network behind keyhold (which ports answer, which certificates they show).
                tracing::info!(endpoint = %d.endpoint.id, error = %chain(&e), "webhook connection failed");
                "the endpoint could not be reached (connection or TLS failed)".to_owned()
            })?;
            let status = resp.status().as_u16();
            // Read (and drop) at most 64 KiB of the answer, so the connection can be reused.
            let mut body = resp.into_body();
            let mut read = 0usize;
            while read < 64 << 10 {
                match body.frame().await {
                    Some(Ok(f)) => read += f.data_ref().map_or(0, Bytes::len),
                    _ => break,
                }
            }
            Ok(status)
        };
        tokio::time::timeout(self.config.timeout, send)
            .await
            .map_err(|_| format!("no answer within {} s", self.config.timeout.as_secs()))?
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs `dispatcher` until dropped: up to [`WebhookConfig::concurrency`] deliveries in
/// flight, a new one claimed as soon as a slot frees (a slow endpoint holds one slot, not
/// the queue); every [`WebhookConfig::poll`] when nothing was due. The registry hands out
/// at most one delivery per endpoint at a time, so one tenant's slow or flooded endpoint
/// cannot hold back the others'.
pub fn spawn(dispatcher: Arc<Dispatcher>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(dispatcher.config.concurrency.max(1)));
        loop {
            let Ok(first) = slots.clone().acquire_owned().await else { return };
            let claimed = dispatcher.claim(slots.available_permits() + 1).await;
            if claimed.is_empty() {
                drop(first);
                tokio::time::sleep(dispatcher.config.poll).await;
                continue;
            }
            let mut permit = Some(first);
            for d in claimed {
                let p = match permit.take() {
                    Some(p) => p,
                    None => match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let me = dispatcher.clone();
                tokio::spawn(async move {
                    me.deliver(d).await;
                    drop(p);
                });
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_destinations_pass() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!public_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(public_address(ip.parse().unwrap()), "{ip}");
        }
        for url in [
            "http://example.com/h",
            "https://127.0.0.1/h",
            "https://[::1]/h",
            "https://u:p@example.com/",
            "ftp://example.com",
            "/relative",
            "https://localhost/h",
            "https://169.254.169.254/latest",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
        }
        assert!(check_url("https://hooks.example.com/keyhold?x=1", false).is_ok());
        assert!(check_url("http://127.0.0.1:9000/h", true).is_ok());
    }

    /// Names are checked on what they resolve to: a name for a loopback address is
    /// refused when connecting, whatever passed at registration.
    #[tokio::test]
    async fn the_resolver_drops_non_public_addresses() {
        use tower::Service as _;
        let name: Name = "localhost".parse().unwrap();
        let err = Resolver { allow_private: false }.call(name.clone()).await.unwrap_err();
        assert!(err.to_string().contains("no public address"), "{err}");
        let addrs: Vec<SocketAddr> = Resolver { allow_private: true }.call(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }

    #[test]
    fn signatures_follow_the_specification_example() {
        // The Standard Webhooks specification's example secret and message.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
