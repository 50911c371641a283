//! `init`: logs and traces.
//!
//! - An `EnvFilter` (`RUST_LOG`, default `info`; `hyper`, `h2`, `tonic`, `reqwest` and
//!   the exporter itself capped at `warn` so the exporter does not trace itself).
//! - Logs: with `LOG_FORMAT=json` (the default) one flat JSON object per line on stdout
//!   ([`FlatJson`], fields in `logging/LOG_FIELDS.md`): `timestamp`, `level`, `target`,
//!   `message`, the event's fields, the fields of every span it is in (innermost first;
//!   a key is written once), and `trace_id`/`span_id` of the current span. `pretty` is
//!   for humans.
//! - Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//!   set, an OpenTelemetry layer makes every span and exports it over OTLP, over
//!   HTTP/protobuf by default or HTTP/JSON (`OTEL_EXPORTER_OTLP_PROTOCOL`), from a
//!   batch processor on its own thread (`OTEL_BSP_*`), sampled per `OTEL_TRACES_SAMPLER`
//!   (parent-based always-on by default). Without an endpoint nothing is exported, so
//!   spans get only their W3C ids ([`TraceIds`]: a trace id taken from `traceparent` or
//!   made, a span id each): what log lines and the `traceparent` the service passes on
//!   need, at a fraction of the SDK's cost per span. `OTEL_SDK_DISABLED=true` turns
//!   tracing off (no trace ids in logs either). Export never blocks a request: a full
//!   queue drops spans, a failed export is logged by the SDK. Resource: `service.name`
//!   (`OTEL_SERVICE_NAME`, default `todo-service`), `service.version`,
//!   `service.instance.id` (this process's replica id), plus `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! [`TelemetryGuard::shutdown`] flushes the exporter: the last step of shutdown.

use std::fmt;
use std::io::{self, BufWriter, Write as _};
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, SdkTracerProvider};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetrySettings};

/// This process's id: `service.instance.id` of its spans, and its replica id in the
/// outbox.
pub fn instance_id() -> uuid::Uuid {
    static ID: OnceLock<uuid::Uuid> = OnceLock::new();
    *ID.get_or_init(uuid::Uuid::now_v7)
}

/// Flushes telemetry on shutdown (the last step of shutdown).
#[must_use]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    logs: Option<BufferedStdout>,
}

impl TelemetryGuard {
    /// Flushes and stops the exporter (it waits for the batch in flight), then writes
    /// out the log lines still buffered.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("todo-service: flushing traces failed: {e}");
        }
        if let Some(logs) = self.logs {
            logs.flush();
        }
    }
}

/// Log lines go to stdout through one 64 KiB buffer, written out when full and every
/// [`LOG_FLUSH_EVERY`] (and at shutdown): a busy service makes one `write` for many
/// lines instead of one per line. A process killed with SIGKILL loses at most the last
/// [`LOG_FLUSH_EVERY`] of lines.
#[derive(Clone)]
struct BufferedStdout(Arc<Mutex<BufWriter<io::Stdout>>>);

/// How long a log line may wait in the buffer.
const LOG_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl BufferedStdout {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(BufWriter::with_capacity(
            64 * 1024,
            io::stdout(),
        ))))
    }

    /// Starts the thread writing the buffer out every [`LOG_FLUSH_EVERY`].
    fn start_flushing(&self) {
        let flusher = self.clone();
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(LOG_FLUSH_EVERY);
                    flusher.flush();
                }
            });
        if let Err(e) = spawned {
            eprintln!(
                "todo-service: no log flush thread ({e}): lines are written when the buffer fills"
            );
        }
    }

    fn flush(&self) {
        let mut out = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = out.flush();
    }
}

/// One event's line into the shared buffer.
struct BufferedLine<'a>(std::sync::MutexGuard<'a, BufWriter<io::Stdout>>);

impl io::Write for BufferedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        // Written out by the flush thread, not per line.
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStdout {
    type Writer = BufferedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        BufferedLine(
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An unsupported or malformed setting.
    #[error("{0}")]
    Invalid(String),
}

/// Installs the global subscriber and the trace context propagator. Safe to call more
/// than once (tests): later calls keep the first subscriber.
///
/// # Errors
/// [`TelemetryError`] naming the variable when the exporter cannot be built.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(format!(
        "{},hyper=warn,h2=warn,tonic=warn,reqwest=warn,tokio_postgres=warn,\
         opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn,\
         opentelemetry_http=warn",
        settings.rust_log
    ))
    .unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans are exported only with an endpoint (and tracing on); without one they get
    // their W3C ids only (`TraceIds`), and no SDK provider is made at all.
    let endpoint = settings
        .traces_endpoint()
        .filter(|_| !settings.sdk_disabled);
    let provider = endpoint.map(|e| provider(settings, e)).transpose()?;
    // ractor's lifelong "Actor" spans are not traced: they would only be exported when
    // an actor stops, leaving everything under them orphaned until then.
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("todo-service"))
            .with_location(false)
            .with_threads(false)
            // Neither busy/idle timings (a clock read on every poll) nor an OpenTelemetry
            // context attached on every enter: spans carry their context themselves.
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                !(meta.is_span() && actor_span(meta))
            }))
    });
    let ids = (!settings.sdk_disabled && provider.is_none()).then_some(TraceIds);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(ids)
        .with(SpanFields);
    let logs = BufferedStdout::new();
    let result = match settings.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(NoFields)
                    .event_format(FlatJson)
                    .with_writer(logs.clone()),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
    };
    if result.is_err() {
        // Another subscriber was installed first (tests): keep it, export nothing.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return Ok(TelemetryGuard {
            provider: None,
            logs: None,
        });
    }
    logs.start_flushing();
    Ok(TelemetryGuard {
        provider,
        logs: Some(logs),
    })
}

/// The tracer provider that exports to `endpoint` over OTLP/HTTP.
fn provider(
    settings: &TelemetrySettings,
    endpoint: String,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id().to_string()),
        ])
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let protocol = match settings.otlp_protocol.as_str() {
        "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        other => {
            return Err(TelemetryError::Invalid(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or http/json (grpc is not \
                 built in), got {other:?}"
            )));
        }
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| {
            TelemetryError::Invalid(format!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot export: {e}"))
        })?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The fields of a span, as JSON values, kept in its extensions for [`FlatJson`].
struct Fields(Vec<(&'static str, Value)>);

/// Records every span's fields (so log lines can carry them as typed JSON values).
struct SpanFields;

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Collect(Vec::new());
        attrs.record(&mut fields);
        // ractor's actor span names its fields `id` and `name`: in a flat line they are
        // `actor_id` and `actor` (the actor's name, as the service's own lines say it).
        let actor = attrs.metadata().target().starts_with("ractor");
        let fields = fields
            .0
            .into_iter()
            .filter(|(k, _)| !k.starts_with("otel."))
            .map(|(k, v)| match (actor, k) {
                (true, "id") => ("actor_id", v),
                (true, "name") => ("actor", v),
                _ => (k, v),
            })
            .collect();
        span.extensions_mut().insert(Fields(fields));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut more = Collect(Vec::new());
        values.record(&mut more);
        more.0.retain(|(k, _)| !k.starts_with("otel."));
        let mut extensions = span.extensions_mut();
        if let Some(Fields(fields)) = extensions.get_mut::<Fields>() {
            for (k, v) in more.0 {
                match fields.iter_mut().find(|(name, _)| *name == k) {
                    Some(slot) => slot.1 = v,
                    None => fields.push((k, v)),
                }
            }
        }
    }
}

/// Collects fields as JSON values.
struct Collect(Vec<(&'static str, Value)>);

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .push((field.name(), Value::String(format!("{value:?}"))));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), Value::String(value.to_owned())));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .push((field.name(), Value::String(value.to_string())));
    }
}

/// One flat JSON object per line, every key once (see the module documentation). The
/// line is written straight into a byte buffer (no intermediate map): keys already
/// written are remembered in a short list, and a later field of the same name (an outer
/// span's) is skipped.
pub struct FlatJson;

/// A line being written.
struct Line {
    buf: Vec<u8>,
    keys: Vec<&'static str>,
    /// Scratch space for `Debug` values.
    scratch: String,
}

impl Line {
    /// Starts `"key":` unless the key was written already; false when it was.
    fn key(&mut self, key: &'static str) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        self.keys.push(key);
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        string(&mut self.buf, key);
        self.buf.push(b':');
        true
    }

    fn str(&mut self, key: &'static str, value: &str) {
        if self.key(key) {
            string(&mut self.buf, value);
        }
    }

    fn value(&mut self, key: &'static str, value: &Value) {
        if self.key(key) {
            // Writing a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.buf, value);
        }
    }
}

/// Writes `s` as a JSON string.
fn string(buf: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a Vec cannot fail.
    let _ = serde_json::to_writer(buf, s);
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field.name()) {
            use std::fmt::Write as _;
            self.scratch.clear();
            let _ = write!(self.scratch, "{value:?}");
            string(&mut self.buf, &self.scratch);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.str(field.name(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field.name()) {
            use std::io::Write as _;
            let _ = write!(self.buf, "{value}");
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field.name()) {
            use std::io::Write as _;
            let _ = write!(self.buf, "{value}");
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field.name(), &Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field.name()) {
            self.buf
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field.name()) {
            self.scratch.clear();
            use std::fmt::Write as _;
            let _ = write!(self.scratch, "{value}");
            string(&mut self.buf, &self.scratch);
        }
    }
}

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // Each thread writes its lines in one buffer it keeps: no allocation per line.
        let mut line = LINE.with(|l| l.take()).unwrap_or_else(|| Line {
            buf: Vec::with_capacity(1024),
            keys: Vec::with_capacity(32),
            scratch: String::new(),
        });
        line.buf.clear();
        line.keys.clear();
        line.buf.push(b'{');
        if line.key("timestamp") {
            timestamp(&mut line.buf, chrono::Utc::now());
        }
        line.str("level", meta.level().as_str());
        line.str("target", meta.target());
        event.record(&mut line);
        if let Some(scope) = ctx.event_scope() {
            let mut current = None;
            for span in scope {
                let extensions = span.extensions();
                current.get_or_insert_with(|| (span.id(), extensions.get::<Ids>().copied()));
                if let Some(Fields(fields)) = extensions.get::<Fields>() {
                    for (k, v) in fields {
                        line.value(k, v);
                    }
                }
            }
            let ids = current.and_then(|(id, ids)| {
                ids.or_else(|| {
                    let context = tracing::dispatcher::get_default(|d| {
                        tracing_opentelemetry::get_otel_context(&id, d)
                    })?;
                    Ids::of(context.span().span_context())
                })
            });
            if let Some(ids) = ids {
                use std::io::Write as _;
                // Hex digits: nothing to escape. Writing into a Vec cannot fail.
                if line.key("trace_id") {
                    let _ = write!(line.buf, "\"{}\"", ids.trace);
                }
                if line.key("span_id") {
                    let _ = write!(line.buf, "\"{}\"", ids.span);
                }
            }
        }
        line.buf.extend_from_slice(b"}\n");
        let written = std::str::from_utf8(&line.buf)
            .map_err(|_| fmt::Error)
            .and_then(|text| writer.write_str(text));
        // An unusually long line does not pin its memory in the thread for good.
        if line.buf.capacity() <= 16 * 1024 {
            LINE.with(|l| l.set(Some(line)));
        }
        written
    }
}

thread_local! {
    /// The thread's line buffer, between two lines.
    static LINE: std::cell::Cell<Option<Line>> = const { std::cell::Cell::new(None) };
}

/// Writes `now` as a JSON string, RFC 3339 UTC with microseconds
/// (`"2025-01-31T09:15:02.481337Z"`), without parsing a format string per line.
fn timestamp(buf: &mut Vec<u8>, now: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike as _, Timelike as _};
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(
        buf,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\"",
        now.year(),
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        // A leap second shows as 60 in chrono's nanoseconds: keep it within the second.
        (now.nanosecond() % 1_000_000_000) / 1_000
    );
}

/// Formats no span fields: [`FlatJson`] reads them from [`SpanFields`], so the fmt
/// layer's own copy of every span's fields would be work for nothing.
pub struct NoFields;

impl<'writer> FormatFields<'writer> for NoFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'writer>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }
}

/// Makes `span` the child of the W3C trace context (`traceparent`, `tracestate`) that
/// `header` finds in a request's headers (HTTP or NATS), when there is one.
pub fn continue_trace<'h>(span: &tracing::Span, header: impl Fn(&str) -> Option<&'h str>) {
    let Some(traceparent) = header("traceparent") else {
        return;
    };
    let mut carrier = std::collections::HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = header("tracestate") {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let remote = Ids::of(parent.span().span_context());
    let joined = with_ids(span, |ids| {
        if let Some(remote) = remote {
            ids.trace = remote.trace;
            ids.flags = remote.flags;
        }
    });
    if joined.is_none() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(parent);
    }
}

/// The W3C `traceparent` of `span`, to pass on in a message the service publishes.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let ids = with_ids(span, |ids| *ids).or_else(|| {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        Ids::of(span.context().span().span_context())
    })?;
    Some(format!(
        "00-{}-{}-{:02x}",
        ids.trace,
        ids.span,
        ids.flags.to_u8()
    ))
}

/// A span's W3C ids, when spans are not exported (see [`TraceIds`]).
#[derive(Debug, Clone, Copy)]
struct Ids {
    trace: TraceId,
    span: SpanId,
    flags: TraceFlags,
}

impl Ids {
    /// The ids of an OpenTelemetry span context, when it is valid.
    fn of(sc: &SpanContext) -> Option<Self> {
        sc.is_valid().then(|| Self {
            trace: sc.trace_id(),
            span: sc.span_id(),
            flags: sc.trace_flags(),
        })
    }
}

/// ractor's lifelong actor spans: traced by neither layer.
fn actor_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("ractor")
}

/// Gives every span its W3C ids and nothing else: the trace id of the nearest enclosing
/// span that has one (or a new trace), a new span id. Used instead of the OpenTelemetry
/// layer when nothing is exported. ractor's lifelong actor spans get none, as they get
/// no OpenTelemetry span when exporting.
struct TraceIds;

impl<S> Layer<S> for TraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if actor_span(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        let inherited = span.scope().skip(1).find_map(|s| {
            s.extensions()
                .get::<Ids>()
                .map(|ids| (ids.trace, ids.flags))
        });
        let ids = RandomIdGenerator::default();
        let (trace, flags) = inherited.unwrap_or_else(|| (ids.new_trace_id(), TraceFlags::SAMPLED));
        span.extensions_mut().insert(Ids {
            trace,
            span: ids.new_span_id(),
            flags,
        });
    }
}

/// Runs `f` on the [`Ids`] of `span`, when it has some (the [`TraceIds`] layer runs).
fn with_ids<R>(span: &tracing::Span, f: impl FnOnce(&mut Ids) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let mut extensions = data.extensions_mut();
        extensions.get_mut::<Ids>().map(f)
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        // Arrange
        let at = chrono::Utc
            .with_ymd_and_hms(2025, 1, 31, 9, 5, 2)
            .single()
            .expect("valid")
            + chrono::Duration::nanoseconds(481_337_999);
        let mut buf = Vec::new();

        // Act
        super::timestamp(&mut buf, at);

        // Assert: what chrono's own formatting says, quoted.
        assert_eq!(
            String::from_utf8(buf).expect("utf8"),
            format!("\"{}\"", at.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
        );
    }
}
