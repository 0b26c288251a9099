//! Logs and traces for `keyhold serve`, on `tracing`: human-readable text or one JSON
//! object per line on standard error, filtered by level or directives, and (when an
//! endpoint is given) spans exported over OTLP/HTTP to an OpenTelemetry collector.
//!
//! What is logged never holds a secret: plaintext, ciphertext, data keys and tokens are
//! not fields of any span or event keyhold emits (the request line carries its id, route,
//! status, latency, tenant and service; never a payload). Lines are appended to a
//! buffer in memory that a background thread writes out every [`LOG_FLUSH_INTERVAL`]: a
//! slow terminal or pipe does not slow requests, and a request costs no wake-up of
//! another thread. If the buffer holds [`LOG_BUFFER_BYTES`] unwritten, further lines are
//! dropped (and counted in a line when writing resumes) rather than blocking.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The most unwritten log bytes held in memory; beyond, lines are dropped.
pub const LOG_BUFFER_BYTES: usize = 16 << 20;

/// How often the log writer writes what was logged.
pub const LOG_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// The default filter: everything at `info` and above.
pub const DEFAULT_FILTER: &str = "info";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the request span's fields.
    Json,
}

/// What [`init`] sets up.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// The log format.
    pub format: LogFormat,
    /// A level or `EnvFilter` directives; `None`: `RUST_LOG`, else [`DEFAULT_FILTER`].
    pub filter: Option<String>,
    /// An OTLP/HTTP collector (`http://host:4318`); spans go to its `/v1/traces`.
    pub otlp_endpoint: Option<String>,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The filter does not parse.
    #[error("invalid log level or filter {0:?}: {1}")]
    Filter(String, String),
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {0}: {1}")]
    Otlp(String, String),
    /// A global subscriber was installed already.
    #[error("logging was set up already: {0}")]
    Installed(String),
}

/// Keeps the log writer and the trace exporter running; dropping it flushes both.
pub struct Guard {
    writer: Option<(Arc<LogBuffer>, std::thread::JoinHandle<()>)>,
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.traces.take() {
            // Exports what is batched; a collector that is gone costs its timeout only.
            let _ = p.shutdown();
        }
        if let Some((buffer, thread)) = self.writer.take() {
            buffer.closed.store(true, Ordering::Release);
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Log lines not yet written, shared by every thread that logs and the writer thread.
#[derive(Default)]
struct LogBuffer {
    lines: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    closed: AtomicBool,
}

/// What the formatter writes one line through.
#[derive(Clone)]
struct BufferWriter(Arc<LogBuffer>);

impl std::io::Write for BufferWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut lines = self.0.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if lines.len() + line.len() > LOG_BUFFER_BYTES {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferWriter {
    type Writer = BufferWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Where [`write_direct`] appends: the installed log buffer and its format, when lines
/// go to a file or pipe (a terminal's coloured lines go through `tracing` only).
static DIRECT: OnceLock<(Arc<LogBuffer>, LogFormat)> = OnceLock::new();

/// Appends one line that `line` formats (in the installed format, newline included)
/// straight to the log buffer, bypassing `tracing`'s formatter: what the request line,
/// written once per request, takes. Returns `false`, writing nothing, when no plain log
/// is installed (the caller then emits through `tracing`). The caller checks first that
/// its event is enabled.
pub(crate) fn write_direct(line: impl FnOnce(LogFormat, &mut Vec<u8>)) -> bool {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Some((buffer, format)) = DIRECT.get() else { return false };
    SCRATCH.with(|scratch| {
        let Ok(mut scratch) = scratch.try_borrow_mut() else { return false };
        scratch.clear();
        line(*format, &mut scratch);
        let mut lines = buffer.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if lines.len() + scratch.len() > LOG_BUFFER_BYTES {
            buffer.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(&scratch);
        }
        true
    })
}

/// Writes the buffer to `out` every [`LOG_FLUSH_INTERVAL`] until closed, then once more.
fn write_out(buffer: &LogBuffer, out: &mut dyn std::io::Write) {
    let mut spare = Vec::new();
    loop {
        let closed = buffer.closed.load(Ordering::Acquire);
        {
            let mut lines = buffer.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::swap(&mut *lines, &mut spare);
        }
        let dropped = buffer.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(out, "keyhold: {dropped} log lines dropped: the log output did not keep up");
        }
        if !spare.is_empty() {
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        if closed {
            return;
        }
        std::thread::park_timeout(LOG_FLUSH_INTERVAL);
    }
}

/// Installs the global subscriber, writing to standard error.
pub fn init(config: &Telemetry) -> Result<Guard, TelemetryError> {
    init_to(config, std::io::stderr(), std::io::stderr().is_terminal())
}

/// Installs the global subscriber, writing to `out` (colours only with `ansi`).
pub fn init_to(
    config: &Telemetry,
    out: impl std::io::Write + Send + 'static,
    ansi: bool,
) -> Result<Guard, TelemetryError> {
    let directives = match &config.filter {
        Some(f) => f.clone(),
        None => std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()).unwrap_or(DEFAULT_FILTER.into()),
    };
    let filter = EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| TelemetryError::Filter(directives.clone(), e.to_string()))?;
    let buffer = Arc::new(LogBuffer::default());
    let writer = BufferWriter(buffer.clone());
    let thread = {
        let buffer = buffer.clone();
        let mut out = out;
        std::thread::Builder::new()
            .name("keyhold-log".into())
            .spawn(move || write_out(&buffer, &mut out))
            .map_err(|e| TelemetryError::Installed(format!("the log writer thread: {e}")))?
    };
    let fmt = fmt_layer(config.format, writer, ansi);
    let (otel, traces) = match &config.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let url = traces_url(endpoint);
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url.clone())
                .build()
                .map_err(|e| TelemetryError::Otlp(url.clone(), e.to_string()))?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("keyhold").build())
                .build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("keyhold"));
            crate::reqlog::set_spans(true);
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Installed(e.to_string()))?;
    if !ansi {
        let _ = DIRECT.set((buffer.clone(), config.format));
    }
    Ok(Guard { writer: Some((buffer, thread)), traces })
}

/// The layer that formats events as log lines in `format` through `writer`.
pub(crate) fn fmt_layer<S, W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // The log shows events only: keyhold's request line carries its fields itself, and a
    // span's fields would be formatted (allocated) for nothing.
    let events_only = tracing_subscriber::filter::filter_fn(|m| m.is_event());
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_target(true)
            .with_filter(events_only)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .with_current_span(false)
            .with_span_list(false)
            .flatten_event(true)
            .with_filter(events_only)
            .boxed(),
    }
}

/// The collector's traces URL: `/v1/traces` under the endpoint unless it names a path.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest).contains('/');
    if has_path { trimmed.to_owned() } else { format!("{trimmed}/v1/traces") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_buffer_is_bounded_and_says_what_it_dropped() {
        use std::io::Write as _;
        let buffer = Arc::new(LogBuffer::default());
        let mut w = BufferWriter(buffer.clone());
        let line = vec![b'x'; 1 << 20];
        for _ in 0..20 {
            assert_eq!(w.write(&line).unwrap(), line.len());
        }
        assert!(buffer.lines.lock().unwrap().len() <= LOG_BUFFER_BYTES);
        assert_eq!(buffer.dropped.load(Ordering::Relaxed), 4);
        buffer.closed.store(true, Ordering::Release);
        let mut out = Vec::new();
        write_out(&buffer, &mut out);
        assert!(out.starts_with(b"keyhold: 4 log lines dropped"));
        assert_eq!(out.len() - out.iter().position(|b| *b == b'\n').unwrap() - 1, 16 << 20);
        assert!(buffer.lines.lock().unwrap().is_empty());
    }

    #[test]
    fn the_traces_url_gets_its_path_unless_given_one() {
        assert_eq!(traces_url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://127.0.0.1:4318/"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://collector/custom/traces"), "http://collector/custom/traces");
    }
}
