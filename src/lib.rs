//! The todo service: a warp HTTP edge (and, later, a NATS edge) in front of supervised
//! ractor actors that own all PostgreSQL access.
//!
//! # Layout
//! - [`config`]: `Settings`, parsed from flags and environment; nothing else reads env.
//! - [`app`]: start-up order and graceful shutdown.
//! - [`http`]: the REST API and the admin port.
//! - [`db`]: PostgreSQL connections, migrations, and `TodoStore` over SQL.
//! - [`metrics`]: every Prometheus metric; also the actors' `MetricsSink`.
//! - [`telemetry`], [`shutdown`], [`healthcheck`]: process plumbing.
//!
//! The actors themselves live in the `todo-actors` crate.

pub mod app;
pub mod config;
pub mod db;
pub mod healthcheck;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
