//! `Metrics`: every Prometheus metric of the service, registered on one registry owned
//! by the app (not the global default, so tests build their own). Names are a contract
//! with dashboards and alerts; `http_*` keep the names of the Node.js service this one
//! replaces.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use todo_actors::metrics::{MetricsSink, ReadSource};

/// Latency buckets in seconds, from 100 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every `kind` of `todo_db_errors_total`.
pub const DB_ERROR_KINDS: [&str; 6] = [
    "connect",
    "timeout",
    "query",
    "transient",
    "commit_unknown",
    "after_commit",
];

/// Every `op` of `todo_write_commands_total`.
pub const WRITE_OPS: [&str; 4] = ["create", "update", "delete", "clear"];

/// The series of `http_*` made at start (success and 503 of each route), so rates and
/// ratios have a zero to start from.
const HTTP_SERIES: [(&str, &str, &str); 12] = [
    ("GET", "/api/todos", "200"),
    ("POST", "/api/todos", "201"),
    ("DELETE", "/api/todos", "204"),
    ("GET", "/api/todos/:id", "200"),
    ("PATCH", "/api/todos/:id", "200"),
    ("PUT", "/api/todos/:id", "200"),
    ("DELETE", "/api/todos/:id", "204"),
    ("GET", "/health", "200"),
    ("GET", "/api/todos", "503"),
    ("POST", "/api/todos", "503"),
    ("GET", "/api/todos/:id", "503"),
    ("PATCH", "/api/todos/:id", "503"),
];

/// Every `method` label value (see `http::method_label`).
pub(crate) const HTTP_METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "other",
];
/// Every `route` label value (see `http::route_template`).
pub(crate) const HTTP_ROUTES: [&str; 6] = [
    "/api/todos",
    "/api/todos/events",
    "/api/todos/:id",
    "/health",
    "/openapi.json",
    "unmatched",
];
/// The statuses whose series handles are kept (the others are looked up each time).
const HTTP_STATUSES: [u16; 22] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 406, 408, 409, 411, 412, 413, 415, 422, 429, 500,
    501, 503, 504,
];

/// The handles of one `http_*{method, route, status_code}` series.
#[derive(Clone)]
pub struct HttpSeries {
    /// `http_requests_total` of the series.
    pub requests: IntCounter,
    /// `http_request_duration_seconds` of the series.
    pub duration: Histogram,
}

/// Series handles looked up once per `{method, route, status_code}` instead of hashing
/// the labels twice per request.
struct HttpSeriesCache {
    slots: Box<[OnceLock<HttpSeries>]>,
}

impl HttpSeriesCache {
    fn new() -> Self {
        let n = HTTP_METHODS.len() * HTTP_ROUTES.len() * HTTP_STATUSES.len();
        Self {
            slots: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    fn slot(&self, method: &str, route: &str, status: u16) -> Option<&OnceLock<HttpSeries>> {
        let m = HTTP_METHODS.iter().position(|x| *x == method)?;
        let r = HTTP_ROUTES.iter().position(|x| *x == route)?;
        let s = HTTP_STATUSES.binary_search(&status).ok()?;
        self.slots
            .get((m * HTTP_ROUTES.len() + r) * HTTP_STATUSES.len() + s)
    }
}

/// Every `edge` of `todo_nats_messages_total`: request/reply, JetStream commands, and
/// events published by the outbox relay.
pub const NATS_EDGES: [&str; 3] = ["request", "command", "event"];
/// Every `outcome` of `todo_nats_messages_total`.
pub const NATS_OUTCOMES: [&str; 4] = ["ok", "error", "invalid", "dead_letter"];

/// All metrics.
pub struct Metrics {
    registry: Registry,
    http_series: HttpSeriesCache,
    /// `http_requests_total{method, route, status_code}`.
    pub http_requests: IntCounterVec,
    /// `http_request_duration_seconds{method, route, status_code}`.
    pub http_duration: HistogramVec,
    /// `http_in_flight_requests`: API requests received and not yet answered.
    pub http_in_flight: IntGauge,
    /// `todo_http_connections{listener}`: open connections per port.
    pub http_connections: IntGaugeVec,
    actor_up: IntGaugeVec,
    actor_restarts: IntCounterVec,
    actor_mailbox: IntGaugeVec,
    actor_messages: IntCounterVec,
    actor_message_duration: HistogramVec,
    write_batch_size: Histogram,
    write_batch_duration: Histogram,
    write_commands: IntCounterVec,
    query_reads: IntCounterVec,
    query_batch_size: Histogram,
    /// `todo_db_pool_connections{state}`.
    pub db_pool_connections: IntGaugeVec,
    db_errors: IntCounterVec,
    /// `todo_nats_connected` (0 until the NATS edge exists and connects).
    pub nats_connected: IntGauge,
    /// `todo_nats_messages_total{edge, outcome}`.
    pub nats_messages: IntCounterVec,
    /// `todo_outbox_pending`.
    pub outbox_pending: IntGauge,
    /// `todo_db_up`: 1 while the change listener's poll (every 250 ms) reaches PostgreSQL.
    pub db_up: IntGauge,
    /// `todo_feed_streams`: change-feed streams open on this replica.
    pub feed_streams: IntGauge,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are fixed and unique in this file, so registration cannot collide.
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    /// Builds and registers every metric, plus process metrics and build info.
    #[allow(clippy::expect_used)] // metric definitions are constants: failure is a bug
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge =
            |name: &str, help: &str| register(r, IntGauge::new(name, help).expect("valid metric"));
        let histogram_vec = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    labels,
                )
                .expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            register(
                r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                    .expect("valid metric"),
            )
        };
        let http = ["method", "route", "status_code"];
        let build = gauge_vec("todo_build_info", "Build information", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let metrics = Self {
            http_requests: counter("http_requests_total", "HTTP requests", &http),
            http_duration: histogram_vec(
                "http_request_duration_seconds",
                "HTTP request latency",
                &http,
                LATENCY_BUCKETS,
            ),
            http_in_flight: gauge("http_in_flight_requests", "HTTP requests being served"),
            http_connections: gauge_vec(
                "todo_http_connections",
                "Open HTTP connections per port",
                &["listener"],
            ),
            actor_up: gauge_vec("todo_actor_up", "1 while the actor runs", &["actor"]),
            actor_restarts: counter("todo_actor_restarts_total", "Actor restarts", &["actor"]),
            actor_mailbox: gauge_vec(
                "todo_actor_mailbox_depth",
                "Messages waiting in the actor's mailbox",
                &["actor"],
            ),
            actor_messages: counter("todo_actor_messages_total", "Messages handled", &["actor"]),
            actor_message_duration: histogram_vec(
                "todo_actor_message_duration_seconds",
                "Time to handle one message",
                &["actor"],
                LATENCY_BUCKETS,
            ),
            write_batch_size: histogram(
                "todo_write_batch_size",
                "Commands per write batch",
                BATCH_BUCKETS,
            ),
            write_batch_duration: histogram(
                "todo_write_batch_duration_seconds",
                "Time from batch start to the last reply",
                LATENCY_BUCKETS,
            ),
            write_commands: counter(
                "todo_write_commands_total",
                "Write commands by outcome",
                &["op", "outcome"],
            ),
            query_reads: counter(
                "todo_query_reads_total",
                "Point reads by source",
                &["source"],
            ),
            query_batch_size: histogram(
                "todo_query_batch_size",
                "Ids per batched point-read query",
                BATCH_BUCKETS,
            ),
            db_pool_connections: gauge_vec(
                "todo_db_pool_connections",
                "Pooled connections by state",
                &["state"],
            ),
            db_errors: counter("todo_db_errors_total", "Database errors by kind", &["kind"]),
            nats_connected: gauge("todo_nats_connected", "1 while connected to NATS"),
            nats_messages: counter(
                "todo_nats_messages_total",
                "NATS messages handled, by edge and outcome",
                &["edge", "outcome"],
            ),
            outbox_pending: gauge("todo_outbox_pending", "Events not yet published"),
            db_up: gauge(
                "todo_db_up",
                "1 while PostgreSQL answers this replica's probe (every 250 ms)",
            ),
            feed_streams: gauge("todo_feed_streams", "Change-feed streams open"),
            registry,
            http_series: HttpSeriesCache::new(),
        };
        metrics.export_zeros();
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            // Process metrics are best effort: a sandbox without /proc still serves the rest.
            let _ = metrics.registry.register(Box::new(process));
        }
        metrics
    }

    /// Makes the fixed label values of every labelled family exist from the start, so
    /// dashboards and alerts see zeros rather than nothing until the first event. (The
    /// actor families get theirs from the supervisor, which knows the actors.)
    fn export_zeros(&self) {
        for kind in DB_ERROR_KINDS {
            self.db_errors.with_label_values(&[kind]).inc_by(0);
        }
        for op in WRITE_OPS {
            for outcome in todo_actors::writer::OUTCOMES {
                self.write_commands
                    .with_label_values(&[op, outcome])
                    .inc_by(0);
            }
        }
        for source in [ReadSource::Cache, ReadSource::Db] {
            self.query_reads
                .with_label_values(&[source.label()])
                .inc_by(0);
        }
        for state in ["idle", "in_use", "max"] {
            self.db_pool_connections.with_label_values(&[state]).set(0);
        }
        for (method, route, status) in HTTP_SERIES {
            let labels = [method, route, status];
            self.http_requests.with_label_values(&labels).inc_by(0);
            let _ = self.http_duration.with_label_values(&labels);
        }
        for edge in NATS_EDGES {
            for outcome in NATS_OUTCOMES {
                self.nats_messages
                    .with_label_values(&[edge, outcome])
                    .inc_by(0);
            }
        }
        for listener in ["api", "admin"] {
            self.http_connections.with_label_values(&[listener]).set(0);
        }
    }

    /// The handles of the `http_*` series of one answered request.
    pub fn http_series(
        &self,
        method: &str,
        route: &str,
        status: http::StatusCode,
    ) -> std::borrow::Cow<'_, HttpSeries> {
        let labels = [method, route, status.as_str()];
        let make = || HttpSeries {
            requests: self.http_requests.with_label_values(&labels),
            duration: self.http_duration.with_label_values(&labels),
        };
        match self.http_series.slot(method, route, status.as_u16()) {
            Some(slot) => std::borrow::Cow::Borrowed(slot.get_or_init(make)),
            None => std::borrow::Cow::Owned(make()),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error.message = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsSink for Metrics {
    fn actor_known(&self, actor: &str) {
        let labels = [actor];
        self.actor_up.with_label_values(&labels).set(1);
        self.actor_restarts.with_label_values(&labels).inc_by(0);
        self.actor_mailbox.with_label_values(&labels).set(0);
        self.actor_messages.with_label_values(&labels).inc_by(0);
        let _ = self.actor_message_duration.with_label_values(&labels);
    }

    fn actor_up(&self, actor: &str, up: bool) {
        self.actor_up.with_label_values(&[actor]).set(i64::from(up));
    }

    fn actor_restarts(&self, actor: &str, n: u64) {
        self.actor_restarts.with_label_values(&[actor]).inc_by(n);
    }

    fn mailbox_depth(&self, actor: &str, depth: i64) {
        self.actor_mailbox.with_label_values(&[actor]).set(depth);
    }

    fn message_handled(&self, actor: &str, seconds: f64) {
        self.actor_messages.with_label_values(&[actor]).inc();
        self.actor_message_duration
            .with_label_values(&[actor])
            .observe(seconds);
    }

    fn write_batch(&self, size: usize, seconds: f64) {
        self.write_batch_size.observe(size as f64);
        self.write_batch_duration.observe(seconds);
    }

    fn write_commands(&self, op: &str, outcome: &str, n: u64) {
        self.write_commands
            .with_label_values(&[op, outcome])
            .inc_by(n);
    }

    fn query_reads(&self, source: ReadSource, n: u64) {
        self.query_reads
            .with_label_values(&[source.label()])
            .inc_by(n);
    }

    fn query_batch(&self, size: usize) {
        self.query_batch_size.observe(size as f64);
    }

    fn db_error(&self, kind: &str) {
        self.db_errors.with_label_values(&[kind]).inc();
    }
}
