//! `NatsEvents`: where the outbox relay publishes committed changes: JetStream stream
//! `<PREFIX>_EVENTS`, subjects `<prefix>.events.created|updated|deleted`, header
//! `Todo-Owner`, `Nats-Msg-Id` = the event id (its commit-order `seq`, so an event
//! published twice is stored once), body the todo as the REST API shows it (for a
//! deletion, `{"id"}`). The relay calls it with events in order and records them as
//! published only once every one is acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::future::{BoxFuture, join_all};

use super::NatsEdge;
use super::message::{OWNER, todo_json};
use super::streams;
use crate::db::outbox::Event;
use crate::outbox::EventSink;
use crate::telemetry;

/// Longest wait for the acknowledgements of one round's events.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Publishes events to NATS.
pub struct NatsEvents {
    edge: Arc<NatsEdge>,
    /// The streams were made sure of (once per process, or again after a failure).
    ready: AtomicBool,
}

impl NatsEvents {
    /// Events published through `edge`.
    pub fn new(edge: Arc<NatsEdge>) -> Self {
        Self {
            edge,
            ready: AtomicBool::new(false),
        }
    }

    async fn publish_all(&self, events: Vec<Event>) -> Result<(), String> {
        let edge = &self.edge;
        // While NATS is away the events wait in the outbox; a round must not wait for
        // acknowledgements that cannot come (it also orders the events for the caches).
        if !edge.is_connected() {
            return Err("NATS is not connected".into());
        }
        if !self.ready.load(Ordering::SeqCst) {
            streams::ensure(&edge.jetstream, &edge.names).await?;
            self.ready.store(true, Ordering::SeqCst);
        }
        let mut acks = Vec::with_capacity(events.len());
        for event in &events {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.seq.to_string().as_str());
            headers.insert(OWNER, event.owner.as_ref());
            // The event continues the trace of the request that made the change: a
            // producer span under it, whose context goes out in `traceparent`.
            if let Some(parent) = &event.traceparent {
                let span = tracing::info_span!(
                    "todo.events publish",
                    otel.kind = "producer",
                    messaging.system = "nats",
                    messaging.destination.name = %edge.names.event(event.kind.as_str()),
                    todo.event.seq = event.seq,
                );
                telemetry::continue_trace(&span, |name| {
                    (name == "traceparent").then_some(parent.as_str())
                });
                if let Some(tp) = telemetry::traceparent(&span) {
                    headers.insert("traceparent", tp.as_str());
                }
            }
            let body = match &event.todo {
                Some(todo) => todo_json(edge, todo),
                None => {
                    Bytes::from(serde_json::json!({ "id": event.todo_id.to_string() }).to_string())
                }
            };
            let subject = edge.names.event(event.kind.as_str());
            match edge
                .jetstream
                .publish_with_headers(subject, headers, body)
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    edge.count("event", "error");
                    return Err(e.to_string());
                }
            }
        }
        let mut failed = None;
        let acks = join_all(acks.into_iter().map(std::future::IntoFuture::into_future));
        let acks = tokio::time::timeout(ACK_WAIT, acks)
            .await
            .map_err(|_| "NATS did not acknowledge the events in time".to_owned())?;
        for ack in acks {
            match ack {
                Ok(_) => edge.count("event", "ok"),
                Err(e) => {
                    edge.count("event", "error");
                    failed.get_or_insert(e.to_string());
                }
            }
        }
        if let Some(e) = failed {
            // Perhaps the stream was deleted: make sure of it next time.
            self.ready.store(false, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }
}

impl EventSink for NatsEvents {
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.publish_all(events))
    }
}
