//! Large objects over HTTP: `application/octet-stream` bodies encrypted, decrypted or
//! re-encrypted as they arrive, and answered as they are produced, so an object of any
//! size passes through a bounded amount of memory (a few 64 KiB chunks in flight).
//!
//! Every check (token, tenant, purpose, state, the message's tenant and keys) happens
//! before the status is sent. What can fail after it, a frame that does not authenticate,
//! or a signature (`0x0578`) that fails at the end of the message, **aborts the
//! response**: the chunked body ends without its terminating chunk and the connection is
//! closed, so an HTTP client reports an incomplete body rather than a complete one. Frames
//! answered before that authenticated individually; the message as a whole did not, so a
//! client must treat any bytes of an aborted response as unauthenticated and discard them
//! (as the CLI does with a non-zero exit). A response body ends cleanly only when its
//! task says the message is complete; a task that stops otherwise aborts it.
//!
//! Timeouts: the message header (for decrypt and re-encrypt) must arrive within the body
//! timeout (`408 request_timeout`); once the status is sent, the connection's idle timeout
//! applies (see [`crate::conn`]): a client that stops sending or reading for that long is
//! disconnected, its answer aborted.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt as _;
use keyhold_core::{EncryptionContext, Purpose, RESERVED_PURPOSE_KEY};
use keyhold_envelope::{AlgorithmSuite, DecryptConfig, EncryptConfig, Encryptor, Header, HeaderParse};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use super::extract::ApiQuery;
use super::{Shared, schema, tenant_id};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Chunks read or written at a time.
const CHUNK: usize = 64 << 10;

/// The largest message header read before the body (a header holds at most 65,535
/// encrypted data keys of 64 KiB; keyhold's hold a few hundred bytes).
const MAX_HEADER: usize = 1 << 20;

/// The context header of `POST /v1/encrypt/stream`.
pub const CONTEXT_HEADER: &str = "x-keyhold-context";

/// `?tenant=&purpose=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EncryptStreamQuery {
    /// The tenant whose keys protect the data.
    #[param(schema_with = schema::tenant_id, required = true)]
    pub tenant: String,
    /// The data's purpose.
    #[param(schema_with = schema::purpose, required = true)]
    pub purpose: String,
}

/// `?tenant=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// The tenant the caller acts for.
    #[param(schema_with = schema::tenant_id, required = true)]
    pub tenant: String,
}

fn caller(p: &Principal) -> Result<keyhold_lifecycle::Caller<'_>, ApiError> {
    match p {
        Principal::Service { name, purposes } => Ok(keyhold_lifecycle::Caller { service: name, purposes }),
        _ => Err(ApiError::forbidden("streams need a service token")),
    }
}

fn octet_stream(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"))
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the object as Content-Type: application/octet-stream",
        ))
    }
}

/// Cached materials as an [`Encryptor`] holds them.
struct Held(std::sync::Arc<keyhold_service::Materials>);

impl std::borrow::Borrow<keyhold_envelope::EncryptionMaterials> for Held {
    fn borrow(&self) -> &keyhold_envelope::EncryptionMaterials {
        &self.0.message
    }
}

/// What a stream does once its message authenticated completely (given the plaintext
/// length), before its last bytes are sent; an error aborts the response.
type OnDone = Box<
    dyn FnOnce(std::sync::Arc<AppState>, u64) -> Pin<Box<dyn std::future::Future<Output = Result<(), ApiError>> + Send>>
        + Send,
>;

/// What a stream's task hands its response body.
enum Piece {
    /// The next bytes.
    Data(Bytes),
    /// The message is complete: the body may end.
    End,
    /// Something failed after the status was sent: the body is aborted.
    Abort(std::io::Error),
}

/// The sending half of a stream's response body.
type Tx = mpsc::Sender<Piece>;

/// A response body fed by a task: each chunk as it is produced. It ends cleanly only on
/// [`Piece::End`]; an abort, or a task that stops without saying the message is complete
/// (a panic, a dropped sender), ends it with an error, so hyper never terminates a
/// truncated answer as if it were whole.
struct ChannelBody(mpsc::Receiver<Piece>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|piece| match piece {
            Some(Piece::Data(b)) => Some(Ok(hyper::body::Frame::data(b))),
            Some(Piece::End) => None,
            Some(Piece::Abort(e)) => Some(Err(e)),
            None => Some(Err(std::io::Error::other("the stream stopped before its message was complete"))),
        })
    }
}

fn streamed(rx: mpsc::Receiver<Piece>, extra: Option<(&'static str, &'static str)>) -> Response {
    let mut resp = Response::new(Body::new(ChannelBody(rx)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some((k, v)) = extra {
        resp.headers_mut().insert(k, HeaderValue::from_static(v));
    }
    resp
}

/// Reads the request body until a message header parses, within `timeout` (answered
/// `408 request_timeout`, as a JSON body that does not arrive in time); returns the header,
/// what was read past it, and the rest of the body.
async fn read_header(
    body: Body,
    config: &DecryptConfig,
    timeout: std::time::Duration,
) -> Result<(Header, Vec<u8>, Body), ApiError> {
    tokio::time::timeout(timeout, read_header_untimed(body, config)).await.map_err(|_| {
        ApiError::request_timeout(format!(
            "the message header did not arrive within {} s; send the body without pausing",
            timeout.as_secs()
        ))
    })?
}

async fn read_header_untimed(body: Body, config: &DecryptConfig) -> Result<(Header, Vec<u8>, Body), ApiError> {
    let mut body = body;
    let mut buf = Vec::new();
    loop {
        match Header::parse(&buf, config) {
            Ok(HeaderParse::Complete(h)) => {
                let rest = buf.split_off(h.len());
                return Ok((*h, rest, body));
            }
            Ok(HeaderParse::Incomplete(_)) if buf.len() < MAX_HEADER => {}
            Ok(HeaderParse::Incomplete(_)) => {
                return Err(ApiError::invalid_ciphertext("the message header is over 1 MiB; keyhold did not write it"));
            }
            Err(e) => return Err(ApiError::invalid_ciphertext(format!("the ciphertext is not a valid message: {e}"))),
        }
        match body.frame().await {
            None => return Err(ApiError::invalid_ciphertext("the body ended inside the message header")),
            Some(Err(e)) => return Err(ApiError::invalid(format!("the request body could not be read: {e}"))),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
        }
    }
}

/// Sends `out` as one chunk (emptying it); false when the client went away.
async fn send(tx: &Tx, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    // A fresh buffer of a chunk's size: growing an empty one frame by frame reallocates.
    let chunk = Bytes::from(std::mem::replace(out, Vec::with_capacity(CHUNK + 1024)));
    tx.send(Piece::Data(chunk)).await.is_ok()
}

/// Sends the last bytes and ends the body cleanly.
async fn complete(tx: &Tx, out: &mut Vec<u8>) {
    if send(tx, out).await {
        let _ = tx.send(Piece::End).await;
    }
}

async fn abort(tx: &Tx, why: impl std::fmt::Display) {
    tracing::warn!(target: "keyhold::stream", reason = %why, "stream aborted after its status was sent");
    let _ = tx.send(Piece::Abort(std::io::Error::other(why.to_string()))).await;
}

/// The caller context of an encrypt stream, from its header (a JSON object of strings).
fn context_header(headers: &HeaderMap) -> Result<EncryptionContext, ApiError> {
    let Some(v) = headers.get(CONTEXT_HEADER) else { return Ok(EncryptionContext::new()) };
    let pairs: std::collections::BTreeMap<String, String> = v
        .to_str()
        .ok()
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| ApiError::invalid(format!("{CONTEXT_HEADER} must be a JSON object of strings")))?;
    EncryptionContext::from_caller_pairs(pairs).map_err(|e| ApiError::invalid(format!("invalid context: {e}")))
}

/// Encrypts the request body (`application/octet-stream`) as it arrives into one message,
/// answered as it is written. The caller context is the `x-keyhold-context` header (a
/// JSON object of strings).
#[utoipa::path(post, path = "/v1/encrypt/stream", params(EncryptStreamQuery,
        ("x-keyhold-context" = Option<String>, Header, description = "caller context, a JSON object of strings")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>,
            description = "the message, streamed; aborted (incomplete body) if the upload fails midway"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: tenant, purpose or context"),
        (status = 403, body = ErrorBody, description = "`forbidden`, `tenant_suspended`, `key_revoked`"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody, description = "`tenant_not_active`, `key_misconfigured`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not application/octet-stream"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the tenant's or the service's request rate, or the tenant's key-service budget; retry after `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody,
            description = "`key_unavailable`, `audit_unavailable`, `registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn encrypt_stream(
    p: Principal,
    State(state): Shared,
    ApiQuery(q): ApiQuery<EncryptStreamQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let c = caller(&p)?;
    octet_stream(&headers)?;
    let tenant = tenant_id(&q.tenant)?;
    let purpose = Purpose::parse(&q.purpose).map_err(|e| ApiError::invalid(format!("invalid purpose: {e}")))?;
    let context = context_header(&headers)?;
    let materials =
        state.lifecycle.stream_materials(&c, &tenant, purpose.clone(), context, AlgorithmSuite::default()).await?;
    let (tx, rx) = mpsc::channel(4);
    let (service, purposes) = match &p {
        Principal::Service { name, purposes } => (name.clone(), purposes.clone()),
        _ => return Err(ApiError::forbidden("streams need a service token")),
    };
    tokio::spawn(async move {
        let mut out = Vec::with_capacity(CHUNK + 1024);
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut enc = match Encryptor::new(Held(materials.clone()), &EncryptConfig::default(), &rng, &mut out) {
            Ok(e) => e,
            Err(e) => return abort(&tx, e).await,
        };
        let mut body = body;
        let mut total = 0u64;
        loop {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return abort(&tx, format!("the request body could not be read: {e}")).await,
                Some(Ok(f)) => {
                    let Ok(d) = f.into_data() else { continue };
                    total += d.len() as u64;
                    if let Err(e) = enc.update(&d, &mut out) {
                        return abort(&tx, e).await;
                    }
                    if out.len() >= CHUNK && !send(&tx, &mut out).await {
                        return;
                    }
                }
            }
        }
        if let Err(e) = enc.finish(&mut out) {
            return abort(&tx, e).await;
        }
        let c = keyhold_lifecycle::Caller { service: &service, purposes: &purposes };
        state.lifecycle.stream_encrypted(&c, &tenant, &purpose, &materials, total);
        complete(&tx, &mut out).await;
    });
    Ok(streamed(rx, None))
}

/// Plaintext of a decrypt stream, or the new message of a re-encryption, from the rest
/// of a message's body.
#[allow(clippy::too_many_arguments, reason = "the decryptor, the body, the encryptor and the channel")]
async fn drive(
    state: std::sync::Arc<AppState>,
    mut dec: keyhold_envelope::BodyDecryptor,
    leftover: Vec<u8>,
    mut body: Body,
    mut enc: Option<Encryptor<Held>>,
    tx: Tx,
    on_done: OnDone,
    mut out: Vec<u8>,
) {
    let mut total = 0u64;
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(CHUNK + 1024));
    let mut buf = leftover;
    loop {
        let used = match dec.process(&buf, &mut plain) {
            Ok(n) => n,
            Err(e) => return abort(&tx, e).await,
        };
        buf.drain(..used);
        if !plain.is_empty() {
            total += plain.len() as u64;
            match &mut enc {
                Some(enc) => {
                    if let Err(e) = enc.update(&plain, &mut out) {
                        return abort(&tx, e).await;
                    }
                    plain.iter_mut().for_each(|b| *b = 0);
                    plain.clear();
                }
                None => out.append(&mut plain),
            }
            if out.len() >= CHUNK && !send(&tx, &mut out).await {
                return;
            }
        }
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            Some(Err(e)) => return abort(&tx, format!("the request body could not be read: {e}")).await,
            None => {
                let used = match dec.process(&buf, &mut plain) {
                    Ok(n) => n,
                    Err(e) => return abort(&tx, e).await,
                };
                total += plain.len() as u64;
                if used != buf.len() {
                    let why = if dec.is_done() {
                        format!("{} bytes follow the message", buf.len() - used)
                    } else {
                        "the body ends inside a frame of the message: it is truncated".to_owned()
                    };
                    return abort(&tx, why).await;
                }
                // The message authenticated to its end (signature included) or nothing more
                // is sent.
                if let Err(e) = dec.finish() {
                    return abort(&tx, e).await;
                }
                match &mut enc {
                    Some(enc) => {
                        if let Err(e) = enc.update(&plain, &mut out).and_then(|()| enc.finish(&mut out)) {
                            return abort(&tx, e).await;
                        }
                    }
                    None => out.append(&mut plain),
                }
                if let Err(e) = on_done(state, total).await {
                    return abort(&tx, e.message).await;
                }
                complete(&tx, &mut out).await;
                return;
            }
        }
    }
}

/// Decrypts the request body (a message, `application/octet-stream`) as it arrives,
/// answering the plaintext frame by frame. The message's tenant, purpose and keys are
/// checked from its header before the status is sent; a frame or signature that fails
/// later aborts the response (module docs).
#[utoipa::path(post, path = "/v1/decrypt/stream", params(TenantQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>,
            description = "the plaintext, streamed; aborted (incomplete body) when a frame or the signature fails"),
        (status = 400, body = ErrorBody,
            description = "`invalid_request`, `malformed_ciphertext` (the header), `key_not_in_tenant`"),
        (status = 403, body = ErrorBody,
            description = "`forbidden`, `tenant_mismatch`, `tenant_suspended`, `key_revoked`"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody, description = "`tenant_not_active`, `key_misconfigured`, `key_retired`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not application/octet-stream"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the tenant's or the service's request rate, or the tenant's key-service budget; retry after `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody,
            description = "`key_unavailable`, `audit_unavailable`, `registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn decrypt_stream(
    p: Principal,
    State(state): Shared,
    ApiQuery(q): ApiQuery<TenantQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let c = caller(&p)?;
    octet_stream(&headers)?;
    let tenant = tenant_id(&q.tenant)?;
    let config = state.lifecycle.keyhold().settings().decrypt;
    let (header, leftover, body) = read_header(body, &config, state.limits.body_timeout).await?;
    let d = state.lifecycle.stream_decryptor(&c, &tenant, header).await?;
    let (tx, rx) = mpsc::channel(4);
    let out = Vec::with_capacity(CHUNK + 1024);
    let done: OnDone = Box::new(|_, _| Box::pin(async { Ok(()) }));
    tokio::spawn(drive(state, d.body, leftover, body, None, tx, done, out));
    Ok(streamed(rx, None))
}

/// Re-encrypts the request body (a message) under the tenant's active keys as it arrives,
/// answering the new message as it is written (`x-keyhold-changed: true`); the new
/// message is finished only after the old one authenticated to its end, and recorded in
/// the ledger before its last bytes are sent. A message under the active keys already is
/// answered `x-keyhold-changed: false` with an empty body, after its header only.
#[utoipa::path(post, path = "/v1/reencrypt/stream", params(TenantQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>,
            description = "the new message, streamed (`x-keyhold-changed: true`), or nothing (`false`); aborted when \
                           the old message fails to authenticate"),
        (status = 400, body = ErrorBody,
            description = "`invalid_request`, `malformed_ciphertext` (the header), `key_not_in_tenant`"),
        (status = 403, body = ErrorBody,
            description = "`forbidden`, `tenant_mismatch`, `tenant_suspended`, `key_revoked`"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 409, body = ErrorBody, description = "`tenant_not_active`, `key_misconfigured`, `key_retired`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not application/octet-stream"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the tenant's or the service's request rate, or the tenant's key-service budget; retry after `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 503, body = ErrorBody,
            description = "`key_unavailable`, `audit_unavailable`, `registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn reencrypt_stream(
    p: Principal,
    State(state): Shared,
    ApiQuery(q): ApiQuery<TenantQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let c = caller(&p)?;
    octet_stream(&headers)?;
    let tenant = tenant_id(&q.tenant)?;
    let config = state.lifecycle.keyhold().settings().decrypt;
    let (header, leftover, body) = read_header(body, &config, state.limits.body_timeout).await?;
    keyhold_service::check_tenant(&tenant, &header)
        .map_err(|_| ApiError::from(keyhold_lifecycle::LifecycleError::TenantMismatch(tenant.clone())))?;
    if state.lifecycle.under_active_keys(&tenant, &header).await? {
        // The checks a re-encryption makes, without using a key.
        let purpose = header.context_value(RESERVED_PURPOSE_KEY).and_then(|p| Purpose::parse(p).ok());
        if let Some(purpose) = purpose
            && !c.purposes.allows(&purpose)
        {
            return Err(ApiError::forbidden(format!("service {} may not use purpose {purpose}", c.service)));
        }
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Piece::End);
        return Ok(streamed(rx, Some(("x-keyhold-changed", "false"))));
    }
    let old = keyhold_lifecycle::reencryption_record(&header);
    let (context, suite) = keyhold_service::reencryption_params(&header)
        .map_err(|e| ApiError::invalid_ciphertext(format!("the ciphertext's context: {e}")))?;
    let d = state.lifecycle.stream_decryptor(&c, &tenant, header).await?;
    let materials = state.lifecycle.stream_materials(&c, &tenant, d.purpose.clone(), context, suite).await?;
    let mut out = Vec::with_capacity(CHUNK + 1024);
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let enc = Encryptor::new(Held(materials.clone()), &EncryptConfig::default(), &rng, &mut out)
        .map_err(|_| ApiError::internal())?;
    let (service, purposes) = match &p {
        Principal::Service { name, purposes } => (name.clone(), purposes.clone()),
        _ => return Err(ApiError::forbidden("streams need a service token")),
    };
    let (tx, rx) = mpsc::channel(4);
    let purpose = d.purpose.clone();
    let done: OnDone = Box::new(move |state, total| {
        Box::pin(async move {
            let c = keyhold_lifecycle::Caller { service: &service, purposes: &purposes };
            state.lifecycle.stream_encrypted(&c, &tenant, &purpose, &materials, total);
            state.lifecycle.record_reencrypted(&tenant, &[old]).await.map_err(ApiError::from)
        })
    });
    tokio::spawn(drive(state, d.body, leftover, body, Some(enc), tx, done, out));
    Ok(streamed(rx, Some(("x-keyhold-changed", "true"))))
}
