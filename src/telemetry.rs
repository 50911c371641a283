//! `init`: the tracing subscriber. JSON lines on stdout by default (field names in
//! `logging/LOG_FIELDS.md`), human-readable with `LOG_FORMAT=pretty`. OTLP export comes
//! with the tracing issue; the guard is where its flush will go.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetrySettings};

/// Flushes telemetry on shutdown (the last step of shutdown).
#[must_use]
pub struct TelemetryGuard;

impl TelemetryGuard {
    /// Flushes and stops exporters.
    pub fn shutdown(self) {}
}

/// Installs the global subscriber. Safe to call more than once (tests): later calls
/// keep the first subscriber.
pub fn init(settings: &TelemetrySettings) -> TelemetryGuard {
    let filter = EnvFilter::try_new(format!(
        "{},hyper=warn,h2=warn,tonic=warn,reqwest=warn,tokio_postgres=warn",
        settings.rust_log
    ))
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
    };
    let _ = result;
    TelemetryGuard
}
