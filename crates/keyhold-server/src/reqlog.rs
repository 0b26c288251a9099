//! The request log line: what a request's handler learns about it (the tenant, the calling
//! service, why authentication failed), kept in a task-local while the request runs, and
//! written as one event when it ends (target `keyhold::request`).
//!
//! One event per request, and no span unless traces are exported: formatting a span's
//! fields for the log costs an allocation per field and per record, which the request line
//! does not need. When [`set_spans`] is on (an OTLP exporter is installed), each request
//! also runs in a `request` span carrying the same fields, for the trace.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keyhold_core::TenantId;

tokio::task_local! {
    static FIELDS: RefCell<Fields>;
}

static SPANS: AtomicBool = AtomicBool::new(false);

/// Whether requests run in `request` spans (for trace export).
pub fn spans() -> bool {
    SPANS.load(Ordering::Relaxed)
}

/// Turns request spans on or off (on when an OTLP exporter is installed).
pub fn set_spans(on: bool) {
    SPANS.store(on, Ordering::Relaxed);
}

/// What a request's line says beyond its method, route, status and latency.
#[derive(Debug, Default)]
pub struct Fields {
    /// The tenant the request named (the last one, for a batch).
    pub tenant: Option<TenantId>,
    /// The calling service.
    pub service: Option<Arc<str>>,
    /// Why authentication failed.
    pub auth_error: Option<String>,
}

/// Runs `fut` with a fresh set of fields; returns its output and the fields it recorded.
pub async fn scope<F: std::future::Future>(fut: F) -> (F::Output, Fields) {
    FIELDS
        .scope(RefCell::new(Fields::default()), async {
            let out = fut.await;
            (out, FIELDS.with(|f| std::mem::take(&mut *f.borrow_mut())))
        })
        .await
}

/// Records the tenant a request names.
pub fn tenant(t: &TenantId) {
    let _ = FIELDS.try_with(|f| f.borrow_mut().tenant = Some(t.clone()));
    if spans() {
        tracing::Span::current().record("tenant", tracing::field::display(t.as_str()));
    }
}

/// Records the calling service.
pub fn service(name: &Arc<str>) {
    let _ = FIELDS.try_with(|f| f.borrow_mut().service = Some(name.clone()));
    if spans() {
        tracing::Span::current().record("service", tracing::field::display(name));
    }
}

/// The longest authentication-failure reason logged (a reason may quote what the client
/// sent).
pub const MAX_REASON_CHARS: usize = 160;

/// Records why authentication failed (cut to [`MAX_REASON_CHARS`]).
pub fn auth_error(reason: &str) {
    let reason = match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((at, _)) => reason.get(..at).unwrap_or(reason),
        None => reason,
    };
    let _ = FIELDS.try_with(|f| f.borrow_mut().auth_error = Some(reason.to_owned()));
    if spans() {
        tracing::Span::current().record("auth_error", tracing::field::display(reason));
    }
}
