//! The NATS edge (optional: without `NATS_URL` the service runs HTTP-only).
//!
//! - [`requests`]: request/reply as a NATS micro service `todo` (`$SRV.PING`, `INFO`,
//!   `STATS`), endpoints `<prefix>.create|get|list|update|replace|delete|clear` in one
//!   queue group shared by the replicas;
//! - [`commands`]: durable commands from JetStream (`<prefix>.cmd.>`), acked after
//!   COMMIT, `Nats-Msg-Id` as the idempotency key, dead letters after `MaxDeliver`;
//! - [`events`]: the outbox relay's way to publish committed changes
//!   (`<prefix>.events.>`);
//! - [`streams`]: the stream and consumer definitions;
//! - [`message`]: what every handler shares (caller, request id, replies).
//!
//! Every endpoint and command is a translation onto [`crate::service::TodoService`], as
//! the HTTP handlers are. The connection is made at start without waiting for the server
//! (`retry_on_initial_connect`): the service starts while NATS is down, `/readyz` shows
//! it degraded, and the responders and the consumer (supervised actors) carry on once it
//! is back.

pub mod commands;
pub mod events;
pub mod message;
pub mod requests;
pub mod streams;

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event};
use prometheus::IntGauge;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::NatsSettings;
use crate::metrics::Metrics;
use crate::service::TodoService;
use streams::Names;

/// What the NATS actors share.
pub struct NatsEdge {
    /// The connection.
    pub client: Client,
    /// JetStream on it.
    pub jetstream: async_nats::jetstream::Context,
    /// Subjects and stream names.
    pub names: Names,
    /// The settings.
    pub settings: NatsSettings,
    /// The application layer.
    pub service: Arc<TodoService>,
    /// Who the caller is.
    pub auth: Arc<Authenticator>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `PUBLIC_URL`: the base of the `url` of todos in replies and events (relative
    /// `/api/todos/…` without it).
    pub public_url: String,
    /// Cancelled at shutdown: the responders and the consumer stop taking new work.
    pub stop: CancellationToken,
    /// Messages being handled, awaited at shutdown.
    pub in_flight: TaskTracker,
}

impl NatsEdge {
    /// Connects to `NATS_URL` without waiting for the server.
    ///
    /// # Errors
    /// A message when the URL does not parse.
    pub async fn connect(
        settings: &NatsSettings,
        url: &str,
        service: Arc<TodoService>,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
        public_url: Option<&str>,
    ) -> Result<Arc<Self>, String> {
        let connected = metrics.nats_connected.clone();
        let client = ConnectOptions::new()
            .name("todo-service")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(5)))
            .event_callback(move |event| {
                let connected = connected.clone();
                async move { on_event(&connected, event) }
            })
            .connect(url)
            .await
            .map_err(|e| format!("NATS_URL: {e}"))?;
        let jetstream = async_nats::jetstream::new(client.clone());
        Ok(Arc::new(Self {
            client,
            jetstream,
            names: Names::new(&settings.nats_prefix),
            settings: settings.clone(),
            service,
            auth,
            metrics,
            public_url: public_url.unwrap_or_default().to_owned(),
            stop: CancellationToken::new(),
            in_flight: TaskTracker::new(),
        }))
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Counts one message in `todo_nats_messages_total{edge, outcome}`.
    pub fn count(&self, edge: &str, outcome: &str) {
        self.metrics
            .nats_messages
            .with_label_values(&[edge, outcome])
            .inc();
    }

    /// Stops taking new requests and commands, waits (at most `grace`) for those being
    /// handled, then drains the connection (what was published is flushed).
    pub async fn shut_down(&self, grace: Duration) {
        self.stop.cancel();
        self.in_flight.close();
        if tokio::time::timeout(grace, self.in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!("NATS messages still in flight after the grace period");
        }
        if let Err(e) = tokio::time::timeout(grace, self.client.drain()).await {
            tracing::warn!(error.message = %e, "draining the NATS connection timed out");
        }
    }
}

/// Logs and counts connection events.
fn on_event(connected: &IntGauge, event: Event) {
    match event {
        Event::Connected => {
            connected.set(1);
            tracing::info!("NATS connected");
        }
        Event::Disconnected => {
            connected.set(0);
            tracing::warn!("NATS disconnected");
        }
        Event::Closed => {
            connected.set(0);
            tracing::info!("NATS connection closed");
        }
        other => tracing::warn!(event = %other, "NATS connection event"),
    }
}
