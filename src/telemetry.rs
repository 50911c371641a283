//! `init`: logs and traces.
//!
//! - An `EnvFilter` (`RUST_LOG`, default `info`; `hyper`, `h2`, `tonic`, `reqwest` and
//!   the exporter itself capped at `warn` so the exporter does not trace itself).
//! - Logs: with `LOG_FORMAT=json` (the default) one flat JSON object per line on stdout
//!   ([`FlatJson`], fields in `logging/LOG_FIELDS.md`): `timestamp`, `level`, `target`,
//!   `message`, the event's fields, the fields of every span it is in (innermost first;
//!   a key is written once), and `trace_id`/`span_id` of the current span. `pretty` is
//!   for humans.
//! - Traces: an OpenTelemetry layer is always installed (so log lines carry trace ids,
//!   and spans link across edges and actors); spans are exported over OTLP only when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//!   over HTTP/protobuf by default or HTTP/JSON (`OTEL_EXPORTER_OTLP_PROTOCOL`), from a
//!   batch processor on its own thread (`OTEL_BSP_*`), sampled per `OTEL_TRACES_SAMPLER`
//!   (parent-based always-on by default). `OTEL_SDK_DISABLED=true` turns tracing off
//!   (no trace ids in logs either). Export never blocks a request: a full queue
//!   drops spans, a failed export is logged by the SDK. Resource: `service.name`
//!   (`OTEL_SERVICE_NAME`, default `todo-service`), `service.version`,
//!   `service.instance.id` (this process's replica id), plus `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! [`TelemetryGuard::shutdown`] flushes the exporter: the last step of shutdown.

use std::fmt;
use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
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
}

impl TelemetryGuard {
    /// Flushes and stops the exporter (it waits for the batch in flight).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("todo-service: flushing traces failed: {e}");
        }
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
    let provider = provider(settings)?;
    let tracer = provider.tracer("todo-service");
    let tracing_on = !settings.sdk_disabled;
    // ractor's lifelong "Actor" spans are not traced: they would only be exported when
    // an actor stops, leaving everything under them orphaned until then.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            !(meta.is_span() && meta.target().starts_with("ractor"))
        }));
    let otel = tracing_on.then_some(otel);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(SpanFields);
    let exporting = tracing_on && settings.traces_endpoint().is_some();
    let result = match settings.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(FlatJson)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
    };
    if result.is_err() {
        // Another subscriber was installed first (tests): keep it, export nothing.
        let _ = provider.shutdown();
        return Ok(TelemetryGuard { provider: None });
    }
    Ok(TelemetryGuard {
        provider: exporting.then_some(provider),
    })
}

/// The tracer provider: with an OTLP exporter when an endpoint is configured, else one
/// that only makes span contexts (for the trace ids in logs and propagation).
fn provider(settings: &TelemetrySettings) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id().to_string()),
        ])
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let endpoint = settings
        .traces_endpoint()
        .filter(|_| !settings.sdk_disabled);
    let Some(endpoint) = endpoint else {
        return Ok(builder.build());
    };
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

/// One flat JSON object per line, every key once (see the module documentation).
pub struct FlatJson;

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
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        let mut fields = Collect(Vec::new());
        event.record(&mut fields);
        for (k, v) in fields.0 {
            line.entry(k.to_owned()).or_insert(v);
        }
        if let Some(scope) = ctx.event_scope() {
            let mut current = None;
            for span in scope {
                current.get_or_insert_with(|| span.id());
                if let Some(Fields(fields)) = span.extensions().get::<Fields>() {
                    for (k, v) in fields {
                        if !line.contains_key(*k) {
                            line.insert((*k).to_owned(), v.clone());
                        }
                    }
                }
            }
            if let Some(id) = current {
                let context = tracing::dispatcher::get_default(|d| {
                    tracing_opentelemetry::get_otel_context(&id, d)
                });
                if let Some(context) = context {
                    let span = context.span();
                    let sc = span.span_context();
                    if sc.is_valid() {
                        line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
                        line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
                    }
                }
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
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
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let _ = span.set_parent(parent);
}

/// The W3C `traceparent` of `span`, to pass on in a message the service publishes.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}
