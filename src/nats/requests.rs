//! `NatsResponder`: request/reply as the NATS micro service `todo` (async-nats
//! `service`): `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` answer, and seven endpoints in
//! one queue group shared by all replicas translate requests onto the application layer:
//!
//! | subject | payload | reply |
//! |---|---|---|
//! | `<prefix>.create` | the REST body; `Idempotency-Key` header | the todo |
//! | `<prefix>.get` | `{"id"}` | the todo |
//! | `<prefix>.list` | `{"completed", "limit", "cursor"}`, all optional | the array; `Todo-Next-Cursor` header |
//! | `<prefix>.update` | the REST body plus `"id"`; `If-Match`, `Idempotency-Key` | the todo |
//! | `<prefix>.replace` | the REST body plus `"id"`; `If-Match` | the todo |
//! | `<prefix>.delete` | `{"id"}`; `If-Match` | empty |
//! | `<prefix>.clear` | `{}` or `{"completed": true}` | empty |
//!
//! An error is the problem document with `Nats-Service-Error-Code` (the HTTP status) and
//! `Nats-Service-Error` (its title). The library counts an error in `$SRV.STATS` only
//! when it sends the error reply itself, and it sends that one without a body; so the
//! problem document goes first, then the library's bodiless error reply, which the
//! requester (who takes the first reply) never sees.
//!
//! The actor owns the micro service: its incarnation starts it, a crash or a stop ends
//! it, and the supervisor starts a new one.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use todo_actors::domain::TodoId;
use tracing::Instrument;

use super::NatsEdge;
use super::message::{self, caller, problem, request_id, todo_json, values, with_traceparent};
use crate::service::conditional::if_match_versions;
use crate::service::idempotency::Key;
use crate::service::wire::{ListParams, TodoBody, decode_id};
use crate::service::{Call, Page, ServiceError};

/// Its name in metrics, logs and `/admin/actors`.
pub const NATS_REQUESTS: &str = "nats-requests";

/// The endpoints, by name (the last token of their subject).
pub const ENDPOINTS: [&str; 7] = [
    "create", "get", "list", "update", "replace", "delete", "clear",
];

/// The responder actor.
#[derive(Default)]
pub struct NatsResponder;

/// Its messages.
pub enum ResponderMessage {
    /// The request stream ended (the service stopped): fail, so the supervisor starts
    /// a new incarnation.
    Ended,
}

/// Its state. Dropping it (the actor stopped, failed or was killed) stops the micro
/// service: a killed incarnation runs no post_stop, and must not keep answering.
pub struct ResponderState {
    _serving: tokio_util::sync::DropGuard,
}

impl Actor for NatsResponder {
    type Msg = ResponderMessage;
    type State = ResponderState;
    type Arguments = Arc<NatsEdge>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        edge: Arc<NatsEdge>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let service = edge
            .client
            .service_builder()
            .description("Todos: create, read, change and delete (REST bodies over NATS)")
            .queue_group(&edge.settings.nats_queue_group)
            .start("todo", env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| format!("starting the NATS micro service: {e}"))?;
        let group = service.group(&edge.names.prefix);
        let mut endpoints = Vec::with_capacity(ENDPOINTS.len());
        for name in ENDPOINTS {
            let endpoint = group
                .endpoint(name)
                .await
                .map_err(|e| format!("adding endpoint {name}: {e}"))?;
            endpoints.push(endpoint.map(move |request| (name, request)));
        }
        let mut requests = futures::stream::select_all(endpoints);
        let gone = tokio_util::sync::CancellationToken::new();
        let serving = gone.clone().drop_guard();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = requests.next() => next,
                    () = edge.stop.cancelled() => break,
                    () = gone.cancelled() => break,
                };
                let Some((endpoint, request)) = next else {
                    let _ = myself.cast(ResponderMessage::Ended);
                    break;
                };
                let edge = Arc::clone(&edge);
                edge.in_flight
                    .clone()
                    .spawn(async move { respond(&edge, endpoint, request).await });
            }
            let _ = service.stop().await;
        });
        Ok(ResponderState { _serving: serving })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ResponderMessage::Ended => Err("the NATS request stream ended".into()),
        }
    }
}

/// A successful reply: body and headers.
struct Reply {
    body: Bytes,
    headers: HeaderMap,
}

impl Reply {
    fn body(body: Bytes) -> Self {
        Self {
            body,
            headers: HeaderMap::new(),
        }
    }
}

/// Answers one request.
async fn respond(edge: &NatsEdge, endpoint: &'static str, request: service::Request) {
    let request_id = request_id(request.message.headers.as_ref());
    let span = message::span("server", endpoint, &request.message, &request_id);
    respond_in(edge, endpoint, request, request_id)
        .instrument(span)
        .await;
}

async fn respond_in(
    edge: &NatsEdge,
    endpoint: &'static str,
    request: service::Request,
    request_id: Arc<str>,
) {
    let served = serve(edge, endpoint, &request.message, request_id).await;
    let outcome = match &served {
        Ok(_) => "ok",
        Err(e) if e.status() < 500 => "invalid",
        Err(_) => "error",
    };
    edge.count("request", outcome);
    let sent = match served {
        Ok(reply) => {
            request
                .respond_with_headers(Ok(reply.body), with_traceparent(reply.headers))
                .await
        }
        Err(e) => {
            let (headers, body) = problem(&e);
            if let Some(reply) = request.message.reply.clone() {
                let headers = with_traceparent(headers);
                let _ = edge.client.publish_with_headers(reply, headers, body).await;
            }
            let status = e.status();
            let error = service::error::Error {
                status: crate::service::error::reason(status).to_owned(),
                code: usize::from(status),
            };
            request.respond(Err(error)).await
        }
    };
    if let Err(e) = sent {
        tracing::warn!(error.message = %e, endpoint, "cannot reply to a NATS request");
    }
}

/// Decodes the request, calls the application layer, encodes the outcome.
async fn serve(
    edge: &NatsEdge,
    endpoint: &str,
    message: &async_nats::Message,
    request_id: Arc<str>,
) -> Result<Reply, ServiceError> {
    let headers = message.headers.as_ref();
    let call = caller(edge, headers, request_id)?;
    let payload = &message.payload;
    let service = &edge.service;
    match endpoint {
        "create" => {
            let new = TodoBody::decode(payload)?.into_new()?;
            let key = Key::from_values(&values(headers, "Idempotency-Key"))?;
            let written = service.create(&call, new, key).await?;
            Ok(Reply::body(todo_json(edge, &written.todo)))
        }
        "get" => {
            let fetched = service.get(&call, decode_id(payload)?).await?;
            Ok(Reply::body(todo_json(edge, &fetched.todo)))
        }
        "list" => list(edge, &call, ListParams::from_json(payload)?).await,
        "update" | "replace" => {
            let body = TodoBody::decode(payload)?;
            let id: TodoId = body.target()?;
            let if_match = if_match_versions(&values(headers, "If-Match"));
            let written = if endpoint == "update" {
                let key = Key::from_values(&values(headers, "Idempotency-Key"))?;
                service
                    .patch(&call, id, body.into_patch()?, if_match, key)
                    .await?
            } else {
                service
                    .replace(&call, id, body.into_new()?, if_match)
                    .await?
            };
            Ok(Reply::body(todo_json(edge, &written.todo)))
        }
        "delete" => {
            let if_match = if_match_versions(&values(headers, "If-Match"));
            service.delete(&call, decode_id(payload)?, if_match).await?;
            Ok(Reply::body(Bytes::new()))
        }
        "clear" => {
            let completed = ListParams::from_json(payload)?.into_clear()?;
            service.clear(&call, completed).await?;
            Ok(Reply::body(Bytes::new()))
        }
        other => Err(ServiceError::BadRequest(format!("no endpoint {other}"))),
    }
}

async fn list(edge: &NatsEdge, call: &Call, params: ListParams) -> Result<Reply, ServiceError> {
    let Page { todos, next, .. } = edge.service.list(call, params).await?;
    let dtos: Vec<_> = todos
        .iter()
        .map(|t| crate::service::wire::TodoDto::new(t, &edge.public_url))
        .collect();
    let mut headers = HeaderMap::new();
    if let Some(cursor) = next {
        headers.insert("Todo-Next-Cursor", cursor.as_str());
    }
    Ok(Reply {
        body: Bytes::from(serde_json::to_vec(&dtos).unwrap_or_default()),
        headers,
    })
}
