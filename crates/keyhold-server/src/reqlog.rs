//! The request log line: what a request's handler learns about it (the tenant, the calling
//! service, why authentication failed), kept in a task-local while the request runs, and
//! written as one event when it ends (target `keyhold::request`).
//!
//! One event per request, and no span unless traces are exported: formatting a span's
//! fields for the log costs an allocation per field and per record, which the request line
//! does not need. When [`set_spans`] is on (an OTLP exporter is installed), each request
//! also runs in a `request` span carrying the same fields, for the trace.
//!
//! The line is on every request's path, so [`emit`] formats it itself, in the layout
//! `tracing-subscriber` gives every other line (text or JSON, tested to match), straight
//! into the log buffer ([`crate::telemetry`]); it goes through `tracing` only when no
//! plain log is installed (a terminal, or a library user's own subscriber). Either way
//! the filter decides whether it is written. Text values are written with control
//! characters escaped, so no field can forge a line.

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

/// One request's line.
#[derive(Debug)]
pub struct Line<'a> {
    /// The request id (checked or generated: `A-Za-z0-9._:-`).
    pub id: &'a str,
    /// The method, or `other`.
    pub method: &'static str,
    /// The matched route, or `unmatched`.
    pub route: &'a str,
    /// The response status.
    pub status: u16,
    /// Time from the request reaching the edge to its response, in µs.
    pub latency_us: u64,
    /// What the handler recorded.
    pub fields: &'a Fields,
}

/// Writes `line` when the filter lets `keyhold::request` at `info` through.
pub fn emit(line: &Line<'_>) {
    if !tracing::event_enabled!(target: "keyhold::request", tracing::Level::INFO) {
        return;
    }
    if !crate::telemetry::write_direct(|format, out| format_line(format, std::time::SystemTime::now(), line, out)) {
        emit_event(line);
    }
}

/// `line` as a `tracing` event.
fn emit_event(line: &Line<'_>) {
    let f = line.fields;
    tracing::info!(
        target: "keyhold::request",
        id = %line.id,
        method = line.method,
        route = %line.route,
        status = line.status,
        latency_us = line.latency_us,
        tenant = f.tenant.as_ref().map(|t| tracing::field::display(t.as_str())),
        service = f.service.as_deref().map(tracing::field::display),
        auth_error = f.auth_error.as_deref().map(tracing::field::display),
        "request"
    );
}

/// `line` at `now` in `format`, newline included, as `tracing-subscriber` lays out an
/// event with these fields.
fn format_line(format: crate::telemetry::LogFormat, now: std::time::SystemTime, line: &Line<'_>, out: &mut Vec<u8>) {
    use crate::telemetry::LogFormat;
    use std::io::Write as _;
    let f = line.fields;
    let tenant = f.tenant.as_ref().map(TenantId::as_str);
    let optional = [("tenant", tenant), ("service", f.service.as_deref()), ("auth_error", f.auth_error.as_deref())];
    match format {
        LogFormat::Text => {
            timestamp(now, out);
            out.extend_from_slice(b"  INFO keyhold::request: request id=");
            text_value(line.id, out);
            let _ = write!(out, " method={:?} route=", line.method);
            text_value(line.route, out);
            let _ = write!(out, " status={} latency_us={}", line.status, line.latency_us);
            for (name, value) in optional {
                if let Some(v) = value {
                    let _ = write!(out, " {name}=");
                    text_value(v, out);
                }
            }
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(now, out);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"id\":");
            json_string(line.id, out);
            out.extend_from_slice(b",\"method\":");
            json_string(line.method, out);
            out.extend_from_slice(b",\"route\":");
            json_string(line.route, out);
            let _ = write!(out, ",\"status\":{},\"latency_us\":{}", line.status, line.latency_us);
            for (name, value) in optional {
                if let Some(v) = value {
                    let _ = write!(out, ",\"{name}\":");
                    json_string(v, out);
                }
            }
            out.extend_from_slice(b",\"target\":\"keyhold::request\"}");
        }
    }
    out.push(b'\n');
}

/// `now` as RFC 3339 in UTC with microseconds (`2026-12-03T10:06:46.123456Z`).
fn timestamp(now: std::time::SystemTime, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    let s = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        since.subsec_micros()
    );
}

/// The proleptic Gregorian date `days` after 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A text value as written: control characters escaped (`\n`, `\u{1b}`).
fn text_value(v: &str, out: &mut Vec<u8>) {
    use std::io::Write as _;
    if !v.chars().any(char::is_control) {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    for c in v.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            let mut b = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
}

/// `v` as a JSON string.
fn json_string(v: &str, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.push(b'"');
    for c in v.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::LogFormat;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// A writer that collects what is written.
    #[derive(Clone, Default)]
    struct Collect(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Collect {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Collect {
        type Writer = Collect;
        fn make_writer(&'a self) -> Collect {
            self.clone()
        }
    }

    /// `line` as `tracing-subscriber` writes it in `format`, and as [`format_line`] does.
    fn both(format: LogFormat, line: &Line<'_>) -> (String, String) {
        let out = Collect::default();
        let subscriber = tracing_subscriber::registry().with(crate::telemetry::fmt_layer(format, out.clone(), false));
        tracing::subscriber::with_default(subscriber, || emit_event(line));
        let theirs = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut ours = Vec::new();
        format_line(format, std::time::SystemTime::now(), line, &mut ours);
        (theirs, String::from_utf8(ours).unwrap())
    }

    fn fields(tenant: Option<&str>, service: Option<&str>, auth_error: Option<&str>) -> Fields {
        Fields {
            tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
            service: service.map(Arc::from),
            auth_error: auth_error.map(str::to_owned),
        }
    }

    #[test]
    fn the_direct_line_is_the_line_tracing_subscriber_writes() {
        let full = fields(Some("acme"), Some("billing-svc"), None);
        let refused = fields(None, None, Some("token \"exp\" is in the past; see \\docs"));
        let bare = Fields::default();
        for f in [&full, &refused, &bare] {
            let line =
                Line { id: "0a1b-2c", method: "POST", route: "/v1/encrypt", status: 403, latency_us: 1234, fields: f };
            let (theirs, ours) = both(LogFormat::Text, &line);
            // The same line after the timestamp (27 bytes), which both take from the clock.
            assert_eq!(theirs.get(27..), ours.get(27..), "{theirs}{ours}");
            assert_eq!(theirs.as_bytes().get(26), Some(&b'Z'));
            let (theirs, ours) = both(LogFormat::Json, &line);
            let mut theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap();
            let mut ours_v: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert!(ours.ends_with('\n'));
            let t = theirs.as_object_mut().unwrap().remove("timestamp").unwrap();
            let o = ours_v.as_object_mut().unwrap().remove("timestamp").unwrap();
            assert_eq!(t.as_str().unwrap().len(), o.as_str().unwrap().len());
            assert_eq!(theirs, ours_v);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |secs: u64, micros: u32| {
            let mut out = Vec::new();
            timestamp(std::time::UNIX_EPOCH + std::time::Duration::new(secs, micros * 1000), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(at(1_796_300_806, 120_500), "2026-12-03T12:26:46.120500Z");
    }

    #[test]
    fn no_value_can_break_a_line() {
        let f = fields(None, None, Some("bad\nFORGED 2026 INFO x\r\u{1b}[31m\"q\"\\"));
        let line = Line { id: "x", method: "GET", route: "unmatched", status: 401, latency_us: 1, fields: &f };
        for format in [LogFormat::Text, LogFormat::Json] {
            let mut out = Vec::new();
            format_line(format, std::time::SystemTime::now(), &line, &mut out);
            let out = String::from_utf8(out).unwrap();
            assert_eq!(out.matches('\n').count(), 1, "{out}");
            assert!(out.ends_with('\n') && !out.contains('\r') && !out.contains('\u{1b}'), "{out}");
            if format == LogFormat::Json {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["auth_error"], "bad\nFORGED 2026 INFO x\r\u{1b}[31m\"q\"\\");
            }
        }
    }
}
