//! The CLI as a client of `keyhold serve`: JSON over HTTP or HTTPS (system roots, plus a
//! private CA with `--ca-cert`), the bearer token from `--token` / `KEYHOLD_TOKEN`, and the
//! server's `{"error":{"code","message"}}` turned into an error that names both; and the
//! streaming endpoints, with a request body fed chunk by chunk ([`Upload`]) and the answer
//! copied out as it arrives, so an object of any size passes through bounded memory.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::flags::ClientArgs;

/// A connection to a keyhold server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BoxBody<Bytes, std::io::Error>>,
}

/// Chunk size of an upload.
pub const CHUNK: usize = 64 << 10;

/// A request body sent as it is produced: each `Ok` chunk in turn; an `Err` aborts the
/// request (the server sees an incomplete body, never a complete one); closing the
/// sender ends it.
pub struct Upload(mpsc::Receiver<std::io::Result<Bytes>>);

impl Upload {
    /// An upload and the sender that feeds it (a few chunks buffered).
    pub fn channel() -> (mpsc::Sender<std::io::Result<Bytes>>, Self) {
        let (tx, rx) = mpsc::channel(4);
        (tx, Self(rx))
    }
}

impl hyper::body::Body for Upload {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|r| r.map(hyper::body::Frame::data)))
    }
}

/// Feeds `reader` into an upload from a thread of its own, chunk by chunk (a read error
/// aborts the upload); returns when the thread has started.
pub fn pump(mut reader: impl std::io::Read + Send + 'static, tx: mpsc::Sender<std::io::Result<Bytes>>) {
    std::thread::spawn(move || {
        loop {
            let mut chunk = vec![0u8; CHUNK];
            match reader.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
}

impl Client {
    /// A client for the server `args` names.
    pub fn new(args: &ClientArgs) -> Result<Self> {
        let base = args
            .url
            .clone()
            .ok_or_else(|| anyhow!("no server given: pass --url or set KEYHOLD_URL (e.g. http://127.0.0.1:8700)"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &args.ca_cert {
            for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("reading {}", path.display()))? {
                roots.add(cert.with_context(|| format!("reading {}", path.display()))?)?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Calls `method path` with an optional JSON body; returns the JSON answer of a 2xx.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, value) = self.call_status(method, path, body).await?;
        if (200..300).contains(&status) { Ok(value) } else { bail!("{}", server_error(status, &value)) }
    }

    /// As [`Client::call`], returning the status with the answer whatever it is.
    pub async fn call_status(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let payload = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        let body = Full::new(payload).map_err(|never| match never {}).boxed();
        let resp = self.http.request(req.body(body)?).await.with_context(|| format!("calling {}{path}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok((status, value))
    }
}

impl Client {
    /// POSTs `upload` as `application/octet-stream` to `path` (with `headers`); returns
    /// the response once its head arrives, its body still streaming. A non-2xx answer is
    /// turned into the server's error.
    pub async fn stream(&self, path: &str, headers: &[(&str, &str)], upload: Upload) -> Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .http
            .request(req.body(upload.boxed())?)
            .await
            .with_context(|| format!("calling {}{path}", self.base))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        bail!("{}", server_error(status, &value))
    }
}

/// Copies a streamed answer to `out` as it arrives; returns the bytes written. An answer
/// the server aborted (a frame or signature that failed after the status was sent) is an
/// error: what was written is incomplete and unauthenticated, and must be discarded.
pub async fn copy_answer(resp: Response<Incoming>, out: &mut impl std::io::Write) -> Result<u64> {
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            anyhow!(
                "the server aborted the answer after {total} bytes ({e}): the output is incomplete and must be \
                 discarded"
            )
        })?;
        if let Ok(d) = frame.into_data() {
            out.write_all(&d).context("writing the output")?;
            total += d.len() as u64;
        }
    }
    out.flush().context("writing the output")?;
    Ok(total)
}

/// The server's error in one line: `code (HTTP status): message`.
pub fn server_error(status: u16, v: &Value) -> String {
    match (v.pointer("/error/code").and_then(Value::as_str), v.pointer("/error/message").and_then(Value::as_str)) {
        (Some(code), Some(message)) => format!("{code} (HTTP {status}): {message}"),
        _ => format!("HTTP {status}: {v}"),
    }
}
