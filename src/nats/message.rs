//! What the NATS handlers share: who the caller is (the `Todo-Owner` header, or the
//! credential in `Authorization` when `AUTH_MODE` is not `none`), the request id, header
//! values, and the encoding of todos and problems. The JSON bodies are the REST ones
//! (`crate::service::wire`).

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use todo_actors::domain::{Owner, Todo};

use super::NatsEdge;
use crate::auth::AuthMode;
use crate::service::wire::TodoDto;
use crate::service::{Call, ServiceError, new_request_id};
use crate::telemetry;

/// The owner header used when `AUTH_MODE=none` (NATS permissions decide who may
/// publish).
pub const OWNER: &str = "Todo-Owner";

/// The values of header `name` (none when the message has no headers).
pub fn values<'h>(headers: Option<&'h HeaderMap>, name: &str) -> Vec<&'h [u8]> {
    headers
        .map(|h| h.get_all(name).map(|v| v.as_str().as_bytes()).collect())
        .unwrap_or_default()
}

/// The call a message makes.
///
/// # Errors
/// 401 for bad credentials (`api-key`, `jwt`), 400 for a bad `Todo-Owner` (`none`).
pub fn caller(
    edge: &NatsEdge,
    headers: Option<&HeaderMap>,
    request_id: Arc<str>,
) -> Result<Call, ServiceError> {
    let owner = match edge.auth.mode() {
        AuthMode::None => match values(headers, OWNER).as_slice() {
            [] => Owner::public(),
            [one] => std::str::from_utf8(one)
                .ok()
                .and_then(|s| Owner::parse(s).ok())
                .ok_or_else(|| {
                    ServiceError::field(OWNER, "must be 1 to 200 characters, no control characters")
                })?,
            _ => return Err(ServiceError::field(OWNER, "must be given once")),
        },
        AuthMode::ApiKey | AuthMode::Jwt => {
            edge.auth.authenticate(&values(headers, "Authorization"))?
        }
    };
    Ok(Call { owner, request_id })
}

/// The message's `X-Request-Id`, or a new one.
pub fn request_id(headers: Option<&HeaderMap>) -> Arc<str> {
    headers
        .and_then(|h| h.get("X-Request-Id"))
        .map(|v| v.as_str())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map_or_else(new_request_id, Arc::from)
}

/// The span of one message handled: `kind` is `server` (a request) or `consumer` (a
/// command); it continues the trace of the message's `traceparent` header.
pub fn span(
    kind: &'static str,
    operation: &str,
    message: &async_nats::Message,
    request_id: &str,
) -> tracing::Span {
    let headers = message.headers.as_ref();
    let span = tracing::info_span!(
        "nats",
        otel.name = %format_args!("{} {operation}", message.subject),
        otel.kind = kind,
        messaging.system = "nats",
        messaging.destination.name = %message.subject,
        messaging.operation = operation,
        request_id,
    );
    telemetry::continue_trace(&span, |name| {
        headers.and_then(|h| h.get(name)).map(|v| v.as_str())
    });
    span
}

/// `headers` with the current span's `traceparent` (replacing any).
pub fn with_traceparent(mut headers: HeaderMap) -> HeaderMap {
    if let Some(tp) = telemetry::traceparent(&tracing::Span::current()) {
        headers.insert("traceparent", tp.as_str());
    }
    headers
}

/// A todo as the REST API shows it.
pub fn todo_json(edge: &NatsEdge, todo: &Todo) -> Bytes {
    Bytes::from(serde_json::to_vec(&TodoDto::new(todo, &edge.public_url)).unwrap_or_default())
}

/// The problem document of `e`, with the NATS micro error headers.
pub fn problem(e: &ServiceError) -> (HeaderMap, Bytes) {
    let problem = e.problem();
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Service-Error-Code",
        problem.status.to_string().as_str(),
    );
    headers.insert("Nats-Service-Error", problem.title);
    headers.insert("Content-Type", "application/problem+json");
    if let Some(seconds) = e.retry_after() {
        headers.insert("Retry-After", seconds.to_string().as_str());
    }
    (headers, Bytes::from(problem.to_json()))
}
