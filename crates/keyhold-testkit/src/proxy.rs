//! The fault-injection proxy: forwards AWS JSON (KMS) and query (STS) calls to moto,
//! records each one, and answers instead of moto where a [`Rule`] matches.
//!
//! A rule matches on the service (`kms`, `sts`), the operation (`GenerateDataKey`,
//! `AssumeRole`, ...) and a key (a substring of the request's `KeyId`, so a key id
//! matches its ARN), each optional, and fires a given number of times or forever. Errors
//! are written in each protocol's wire format, so the SDK parses them exactly as it would
//! parse AWS's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with an AWS error: HTTP status, error code, message.
    Error {
        /// HTTP status (400 for client errors, 500/503 for server errors).
        status: u16,
        /// The AWS error code (`DisabledException`, `ThrottlingException`, ...).
        code: String,
        /// The error message.
        message: String,
    },
    /// Wait, then forward to moto.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
    /// Forward to moto, then rewrite the `Expiration` of the credentials an STS answer
    /// carries to this long from now (to observe refresh before expiry).
    CredentialsExpireIn(Duration),
}

impl Fault {
    /// A 400 answer with `code`.
    pub fn client(code: &str, message: &str) -> Self {
        Fault::Error { status: 400, code: code.to_owned(), message: message.to_owned() }
    }

    /// What AWS KMS answers for a disabled key.
    pub fn disabled(key: &str) -> Self {
        Self::client("DisabledException", &format!("{key} is disabled."))
    }

    /// What AWS KMS answers for a key pending deletion.
    pub fn pending_deletion(key: &str) -> Self {
        Self::client("KMSInvalidStateException", &format!("{key} is pending deletion."))
    }

    /// What AWS KMS answers when the key policy does not allow the caller.
    pub fn access_denied(key: &str) -> Self {
        Self::client(
            "AccessDeniedException",
            &format!(
                "User: arn:aws:iam::111122223333:role/platform is not authorized to perform this operation on {key}"
            ),
        )
    }

    /// What AWS KMS answers for a deleted key.
    pub fn not_found(key: &str) -> Self {
        Self::client("NotFoundException", &format!("Key '{key}' does not exist"))
    }

    /// Throttling.
    pub fn throttling() -> Self {
        Self::client("ThrottlingException", "Rate exceeded")
    }

    /// A KMS internal error (HTTP 500).
    pub fn internal() -> Self {
        Fault::Error { status: 500, code: "KMSInternalException".into(), message: "internal error".into() }
    }
}

/// When a fault applies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// `kms` or `sts`; any when `None`.
    pub service: Option<String>,
    /// Operations (`GenerateDataKey`, `Encrypt`, `Decrypt`, `AssumeRole`, ...); any when empty.
    pub operations: Vec<String>,
    /// A substring of the request's `KeyId`; any when `None`.
    pub key: Option<String>,
    /// How many times it fires; forever when `None`.
    pub times: Option<u32>,
}

impl Rule {
    /// Every KMS operation that uses key material, on `key`: how a key state shows.
    pub fn crypto_on(key: &str) -> Self {
        Rule {
            service: Some("kms".into()),
            operations: ["GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "Encrypt", "Decrypt", "ReEncrypt"]
                .map(str::to_owned)
                .to_vec(),
            key: Some(key.to_owned()),
            times: None,
        }
    }

    /// One KMS operation, on any key.
    pub fn op(operation: &str) -> Self {
        Rule { service: Some("kms".into()), operations: vec![operation.to_owned()], key: None, times: None }
    }

    /// Fires only `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Only on `key`.
    pub fn on_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }
}

/// Identifies an installed rule, for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

/// One call that reached the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `kms` or `sts`.
    pub service: String,
    /// The operation.
    pub operation: String,
    /// The request's `KeyId` (KMS).
    pub key_id: Option<String>,
    /// The region it was signed for.
    pub region: Option<String>,
    /// The access key id it was signed with.
    pub access_key_id: Option<String>,
    /// `ExternalId` (STS `AssumeRole`).
    pub external_id: Option<String>,
    /// `RoleArn` (STS `AssumeRole`).
    pub role_arn: Option<String>,
    /// The KMS `EncryptionContext`.
    pub encryption_context: Option<HashMap<String, String>>,
    /// Whether a fault answered instead of moto.
    pub faulted: bool,
}

#[derive(Default)]
struct State {
    next: u64,
    rules: Vec<(RuleId, Rule, Fault)>,
    calls: Vec<Call>,
}

/// A running proxy. Dropping it stops accepting connections.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free loopback port.
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let upstream: Arc<str> = upstream.trim_end_matches('/').into();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, state.clone(), client.clone(), upstream.clone())
                    });
                    // A dropped connection (Fault::Drop) ends here with an error, as intended.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// Starts a proxy in front of the moto server of [`crate::moto_endpoint`].
    ///
    /// # Panics
    /// When no loopback port can be bound.
    #[allow(clippy::expect_used)]
    pub async fn moto() -> Self {
        Self::start(&crate::moto_endpoint()).await.expect("bind a loopback port for the fault proxy")
    }

    /// The proxy's URL, to use as `AWS_ENDPOINT_URL` (or `_KMS` / `_STS`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs a rule; the newest matching rule wins.
    pub fn inject(&self, rule: Rule, fault: Fault) -> RuleId {
        let mut s = self.lock();
        s.next += 1;
        let id = RuleId(s.next);
        s.rules.push((id, rule, fault));
        id
    }

    /// Removes a rule.
    pub fn remove(&self, id: RuleId) {
        self.lock().rules.retain(|(r, _, _)| *r != id);
    }

    /// Removes every rule naming `key`.
    pub fn clear_key(&self, key: &str) {
        self.lock().rules.retain(|(_, r, _)| r.key.as_deref() != Some(key));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// The calls so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many calls of `operation` reached the proxy.
    pub fn count(&self, operation: &str) -> usize {
        self.lock().calls.iter().filter(|c| c.operation == operation).count()
    }

    /// Forgets the recorded calls.
    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: Arc<str>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    let mut call = describe(&parts.headers, &body);

    let fault = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        let hit = s.rules.iter_mut().rev().find(|(_, r, _)| matches(r, &call)).map(|(id, r, f)| {
            if let Some(n) = r.times.as_mut() {
                *n = n.saturating_sub(1);
            }
            (*id, r.times == Some(0), f.clone())
        });
        if let Some((id, true, _)) = &hit {
            let id = *id;
            s.rules.retain(|(r, _, _)| *r != id);
        }
        call.faulted = matches!(hit, Some((_, _, Fault::Error { .. } | Fault::Drop)));
        s.calls.push(call.clone());
        hit.map(|(_, _, f)| f)
    };

    match fault {
        Some(Fault::Error { status, code, message }) => Ok(error_response(&call.service, status, &code, &message)),
        Some(Fault::Drop) => Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fault: drop")),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            forward(parts, body, &client, &upstream).await
        }
        Some(Fault::CredentialsExpireIn(d)) => {
            let resp = forward(parts, body, &client, &upstream).await?;
            let (mut parts, body) = resp.into_parts();
            let text =
                String::from_utf8_lossy(&body.collect().await.map_err(std::io::Error::other)?.to_bytes()).into_owned();
            let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + d).to_string();
            let rewritten = match (text.find("<Expiration>"), text.find("</Expiration>")) {
                (Some(start), Some(end)) if start < end => {
                    format!("{}<Expiration>{at}{}", &text[..start], &text[end..])
                }
                _ => text,
            };
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, Full::new(Bytes::from(rewritten))))
        }
        None => forward(parts, body, &client, &upstream).await,
    }
}

async fn forward(
    parts: hyper::http::request::Parts,
    body: Bytes,
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::builder().method(parts.method).uri(format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST {
            out = out.header(name, value);
        }
    }
    let out = out.body(Full::new(body)).map_err(std::io::Error::other)?;
    let resp = client.request(out).await.map_err(std::io::Error::other)?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn matches(rule: &Rule, call: &Call) -> bool {
    rule.service.as_deref().is_none_or(|s| s == call.service)
        && (rule.operations.is_empty() || rule.operations.contains(&call.operation))
        && rule.key.as_deref().is_none_or(|k| call.key_id.as_deref().is_some_and(|id| id.contains(k)))
}

/// Reads what a call is from its headers and body, in either protocol.
fn describe(headers: &hyper::HeaderMap, body: &[u8]) -> Call {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (access_key_id, region) = header("authorization")
        .and_then(|a| {
            let cred = a.split("Credential=").nth(1)?.split(',').next()?.to_owned();
            let mut parts = cred.split('/');
            let akid = parts.next()?.to_owned();
            let region = parts.nth(1)?.to_owned();
            Some((Some(akid), Some(region)))
        })
        .unwrap_or((None, None));
    let mut call = Call {
        service: String::new(),
        operation: String::new(),
        key_id: None,
        region,
        access_key_id,
        external_id: None,
        role_arn: None,
        encryption_context: None,
        faulted: false,
    };
    if let Some(target) = header("x-amz-target") {
        call.service = "kms".into();
        call.operation = target.rsplit('.').next().unwrap_or_default().to_owned();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            call.key_id = v.get("KeyId").and_then(|k| k.as_str()).map(str::to_owned);
            call.encryption_context = v
                .get("EncryptionContext")
                .and_then(|c| c.as_object())
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect());
        }
    } else {
        let form: HashMap<String, String> = url_decode_form(body);
        call.service = "sts".into();
        call.operation = form.get("Action").cloned().unwrap_or_default();
        call.external_id = form.get("ExternalId").cloned();
        call.role_arn = form.get("RoleArn").cloned();
    }
    call
}

fn url_decode_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error in the service's wire format: AWS JSON 1.1 for KMS, AWS query XML for STS.
fn error_response(service: &str, status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let (content_type, body) = if service == "sts" {
        let kind = if status.is_server_error() { "Receiver" } else { "Sender" };
        (
            "text/xml",
            format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>{kind}</Type>\
                 <Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
            ),
        )
    } else {
        ("application/x-amz-json-1.1", serde_json::json!({ "__type": code, "message": message }).to_string())
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    resp.headers_mut().insert("x-amzn-requestid", hyper::header::HeaderValue::from_static("fault-proxy"));
    resp
}
