//! `CommandConsumer`: durable commands from JetStream, stream `<PREFIX>_COMMANDS` on
//! `<prefix>.cmd.>` (`create`, `update`, `delete`, with the payloads and `Todo-Owner` of
//! the matching request endpoints), pulled by one durable consumer that every replica
//! shares.
//!
//! - A command is acked (double ack: the server confirms) only after its COMMIT.
//! - `Nats-Msg-Id` is its idempotency key (the stream sequence when there is none),
//!   recorded in PostgreSQL in the transaction of the change: a redelivered command
//!   (the service died between COMMIT and ack, or the ack was lost) replays the stored
//!   result instead of applying it twice. A delete needs no key: deleting what is gone
//!   already is done.
//! - An invalid command (undecodable, unknown todo, wrong version, a key reused with
//!   another command) is terminated (never redelivered) and logged; it holds up nothing.
//! - A command that could not be applied now (503) is redelivered after a pause, and
//!   after `NATS_MAX_DELIVER` deliveries it goes to `<prefix>.dlq.<verb>` with the
//!   reason in `Todo-Dlq-Reason`.
//!
//! Commands are pulled in batches and handled concurrently, except those naming the same
//! todo, which run one after another in delivery order. (Across replicas, two commands
//! of one todo may run concurrently; publishers that need an order wait for the event.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use futures::StreamExt;
use futures::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use todo_actors::domain::TodoId;
use tracing::Instrument;

use super::NatsEdge;
use super::message::{self, caller, request_id, values, with_traceparent};
use super::streams;
use crate::service::ServiceError;
use crate::service::conditional::if_match_versions;
use crate::service::idempotency::Key;
use crate::service::wire::{TodoBody, decode_id};

/// Its name in metrics, logs and `/admin/actors`.
pub const NATS_COMMANDS: &str = "nats-commands";

/// Commands pulled at once.
const BATCH: usize = 512;
/// How long a pull waits for commands.
const PULL_WAIT: Duration = Duration::from_millis(500);
/// Pause before a command that could not be applied now is delivered again.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Pause before trying NATS again after a failure.
const NATS_PAUSE: Duration = Duration::from_secs(1);

/// The consuming actor.
#[derive(Default)]
pub struct CommandConsumer;

/// Its messages.
pub enum ConsumerMessage {
    /// The pulling task ended: fail, so the supervisor starts a new incarnation.
    Ended,
}

/// Its state. Dropping it (the actor stopped, failed or was killed) stops the pulling:
/// a killed incarnation runs no post_stop, and must not keep consuming.
pub struct ConsumerState {
    _pulling: tokio_util::sync::DropGuard,
}

impl Actor for CommandConsumer {
    type Msg = ConsumerMessage;
    type State = ConsumerState;
    type Arguments = Arc<NatsEdge>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        edge: Arc<NatsEdge>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let gone = tokio_util::sync::CancellationToken::new();
        let pulling = gone.clone().drop_guard();
        tokio::spawn(async move {
            tokio::select! {
                () = pull(&edge) => {
                    if !edge.stop.is_cancelled() {
                        let _ = myself.cast(ConsumerMessage::Ended);
                    }
                }
                () = gone.cancelled() => {}
            }
        });
        Ok(ConsumerState { _pulling: pulling })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConsumerMessage::Ended => Err("the NATS command consumer ended".into()),
        }
    }
}

/// Makes sure the streams and the consumer exist (retrying while NATS is away), then
/// pulls and handles batches until shutdown.
async fn pull(edge: &NatsEdge) {
    let config = streams::consumer(
        &edge.names,
        Duration::from_secs(edge.settings.nats_ack_wait_s),
        edge.settings.nats_max_deliver,
    );
    let consumer = loop {
        let ready = async {
            streams::ensure(&edge.jetstream, &edge.names).await?;
            streams::ensure_consumer(&edge.jetstream, &edge.names, config.clone()).await
        };
        tokio::select! {
            ready = ready => match ready {
                Ok(consumer) => break consumer,
                Err(e) => tracing::warn!(error.message = %e, "NATS commands: not ready yet"),
            },
            () = edge.stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(NATS_PAUSE) => {}
            () = edge.stop.cancelled() => return,
        }
    };
    tracing::info!(stream = %edge.names.commands, consumer = %edge.names.consumer, "consuming NATS commands");
    while !edge.stop.is_cancelled() {
        let batch = consumer
            .batch()
            .max_messages(BATCH)
            .expires(PULL_WAIT)
            .messages()
            .await;
        let messages: Vec<Message> = match batch {
            Ok(batch) => batch.filter_map(|m| async move { m.ok() }).collect().await,
            Err(e) => {
                tracing::warn!(error.message = %e, "NATS commands: pull failed");
                tokio::time::sleep(NATS_PAUSE).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        // In flight until settled: shutdown waits for them.
        let token = edge.in_flight.token();
        handle_batch(edge, messages).await;
        drop(token);
    }
}

/// Handles a batch: commands of one todo in order, the rest concurrently.
async fn handle_batch(edge: &NatsEdge, messages: Vec<Message>) {
    let mut groups: Vec<Vec<Message>> = Vec::new();
    let mut by_todo: HashMap<String, usize> = HashMap::new();
    for message in messages {
        match target(&message) {
            Some(todo) => match by_todo.get(&todo) {
                Some(&i) => groups[i].push(message),
                None => {
                    by_todo.insert(todo, groups.len());
                    groups.push(vec![message]);
                }
            },
            None => groups.push(vec![message]),
        }
    }
    join_all(groups.into_iter().map(|group| async move {
        for message in group {
            let request_id = request_id(message.headers.as_ref());
            let span = message::span("consumer", verb(&message), &message, &request_id);
            async {
                let result = execute(edge, &message, request_id).await;
                settle(edge, &message, result).await;
            }
            .instrument(span)
            .await;
        }
    }))
    .await;
}

/// The todo a command names (updates and deletes), to keep their order.
fn target(message: &Message) -> Option<String> {
    if message.subject.ends_with(".create") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

/// The command's verb: the last token of its subject.
fn verb(message: &Message) -> &str {
    message.subject.rsplit('.').next().unwrap_or_default()
}

/// Applies one command.
async fn execute(
    edge: &NatsEdge,
    message: &Message,
    request_id: Arc<str>,
) -> Result<(), ServiceError> {
    let headers = message.headers.as_ref();
    let call = caller(edge, headers, request_id)?;
    let key = match values(headers, "Nats-Msg-Id").as_slice() {
        [] => message
            .info()
            .ok()
            .map(|i| format!("js-{}-{}", i.stream, i.stream_sequence)),
        [id] => std::str::from_utf8(id).ok().map(str::to_owned),
        _ => None,
    };
    let key = match key {
        Some(k) => Key::from_values(&[k.as_bytes()])?,
        None => None,
    };
    let payload = &message.payload;
    let service = &edge.service;
    match verb(message) {
        "create" => {
            let new = TodoBody::decode(payload)?.into_new()?;
            service.create(&call, new, key).await.map(|_| ())
        }
        "update" => {
            let body = TodoBody::decode(payload)?;
            let id: TodoId = body.target()?;
            let if_match = if_match_versions(&values(headers, "If-Match"));
            service
                .patch(&call, id, body.into_patch()?, if_match, key)
                .await
                .map(|_| ())
        }
        "delete" => {
            let if_match = if_match_versions(&values(headers, "If-Match"));
            let deleted = service.delete(&call, decode_id(payload)?, if_match).await;
            match deleted {
                // Delivered again after it was applied: it is done.
                Err(ServiceError::NotFound) if delivered(message) > 1 => Ok(()),
                other => other,
            }
        }
        other => Err(ServiceError::BadRequest(format!(
            "unknown command {other:?}: expected create, update or delete"
        ))),
    }
}

fn delivered(message: &Message) -> i64 {
    message.info().map(|i| i.delivered).unwrap_or(1)
}

/// Acks, retries, terminates or dead-letters a command after `result`.
async fn settle(edge: &NatsEdge, message: &Message, result: Result<(), ServiceError>) {
    let subject = message.subject.as_str();
    let (kind, outcome) = match &result {
        Ok(()) => (AckKind::Ack, "ok"),
        // Not applied now (or a request with its key is in flight here): later.
        Err(
            e @ (ServiceError::Unavailable(_) | ServiceError::Conflict | ServiceError::Internal),
        ) => {
            if delivered(message) >= edge.settings.nats_max_deliver {
                dead_letter(edge, message, &e.to_string()).await;
                (AckKind::Term, "dead_letter")
            } else {
                (AckKind::Nak(Some(RETRY_DELAY)), "error")
            }
        }
        Err(e) => {
            tracing::warn!(subject, status = e.status(), error.message = %e,
                "NATS command invalid: terminated");
            (AckKind::Term, "invalid")
        }
    };
    edge.count("command", outcome);
    tracing::debug!(subject, outcome, delivered = delivered(message), error.message = ?result.as_ref().err(),
        "NATS command settled");
    let acked = if matches!(kind, AckKind::Ack) {
        message.double_ack().await
    } else {
        message.ack_with(kind).await
    };
    if let Err(e) = acked {
        // Redelivered later, and applied once thanks to its key.
        tracing::warn!(subject, error.message = %e, "NATS command: ack failed");
    }
}

/// Publishes a command that failed too often to `<prefix>.dlq.<verb>`, with why.
async fn dead_letter(edge: &NatsEdge, message: &Message, reason: &str) {
    let mut headers = with_traceparent(message.headers.clone().unwrap_or_default());
    headers.insert("Todo-Dlq-Reason", reason);
    headers.insert("Todo-Dlq-Subject", message.subject.as_str());
    if let Ok(info) = message.info() {
        headers.insert(
            "Todo-Dlq-Stream-Sequence",
            info.stream_sequence.to_string().as_str(),
        );
        headers.insert("Todo-Dlq-Deliveries", info.delivered.to_string().as_str());
    }
    let subject = edge.names.dead_letter(verb(message));
    let published = edge
        .jetstream
        .publish_with_headers(subject.clone(), headers, message.payload.clone())
        .await;
    let acked = match published {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match acked {
        Ok(()) => tracing::error!(subject, reason, "NATS command dead-lettered"),
        Err(e) => tracing::error!(subject, reason, error.message = %e,
            "NATS command dead-lettered, but the dead-letter publish failed"),
    }
}
