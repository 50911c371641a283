//! The todo service: a warp HTTP edge and a NATS edge in front of one
//! application layer, which drives supervised ractor actors that own all PostgreSQL
//! access.
//!
//! # Layout
//! - [`config`]: `Settings`, parsed from flags and environment; nothing else reads env.
//! - [`app`]: start-up order, and the run until a signal or a meltdown.
//! - [`lifecycle`]: the phase, readiness, background tasks and the order of shutdown.
//! - [`service`]: the application layer: every operation once (idempotency, paging,
//!   owner, admission, timeouts), and the wire formats the edges share.
//! - [`auth`]: from a bearer credential to an owner, whatever the transport.
//! - [`http`]: the REST API and the admin port, translations onto [`service`], and the
//!   server that bounds connections and slow clients.
//! - [`nats`]: the NATS edge (request/reply micro service, durable JetStream commands,
//!   events), translations onto [`service`] too.
//! - [`db`]: PostgreSQL connections, migrations, `TodoStore` over SQL, the outbox.
//! - [`outbox`]: the relay that orders committed events and publishes them (NATS).
//! - [`coherence`]: the change listener that keeps every replica's caches coherent and
//!   feeds [`feed`], the live change feed.
//! - [`maintenance`]: supervised background work (the idempotency-key purge).
//! - [`supervised`]: how this crate's actors join the root supervisor.
//! - [`metrics`]: every Prometheus metric; also the actors' `MetricsSink`.
//! - [`telemetry`], [`shutdown`], [`healthcheck`]: process plumbing.
//!
//! The actors themselves live in the `todo-actors` crate.

pub mod app;
pub mod auth;
pub mod coherence;
pub mod config;
pub mod db;
pub mod feed;
pub mod healthcheck;
pub mod http;
pub mod lifecycle;
pub mod maintenance;
pub mod metrics;
pub mod nats;
pub mod outbox;
pub mod service;
pub mod shutdown;
pub mod supervised;
pub mod telemetry;
