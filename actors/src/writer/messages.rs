//! Messages of the writer actor.

use std::sync::Arc;
use std::time::Instant;

use ractor::RpcReplyPort;

use crate::domain::{DomainError, WriteCommand, WriteEffect};

/// The answer to a write: the committed effect or why it failed.
pub type WriteReply = Result<WriteEffect, DomainError>;

/// Where a write came from: the request it serves (its id goes into the batch's log lines
/// and span) and the span it was sent from (the batch span follows from it).
#[derive(Debug, Clone)]
pub struct Origin {
    /// The request id (HTTP `X-Request-Id`, or the NATS edge's own).
    pub request_id: Arc<str>,
    /// The request's span.
    pub span: tracing::Span,
    /// When the request reached the service: the writer answers within its database
    /// timeout of this instant, whatever the queue.
    pub arrived: Instant,
    /// The request's W3C `traceparent`, stored with the change's event so the events
    /// published from the outbox carry it on.
    pub trace: Option<Arc<str>>,
}

impl Origin {
    /// The origin of a write sent now, from the current span.
    pub fn here(request_id: Arc<str>) -> Self {
        Self {
            request_id,
            span: tracing::Span::current(),
            arrived: Instant::now(),
            trace: None,
        }
    }

    /// The same, with the request's `traceparent`.
    pub fn with_trace(mut self, trace: Option<Arc<str>>) -> Self {
        self.trace = trace;
        self
    }
}

/// What the writer accepts.
// Nearly every message is a `Write`, and ractor boxes each message anyway: boxing the
// variant as well would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum WriterMessage {
    /// Apply a command; answered after COMMIT.
    Write {
        /// The command.
        command: WriteCommand,
        /// Who asked.
        origin: Origin,
        /// Where the answer goes.
        reply: RpcReplyPort<WriteReply>,
    },
    /// Commit what has been collected (sent by the writer to itself).
    Flush,
    /// A batch finished (sent by its task, to whichever incarnation of the writer runs
    /// then): its connection slot is free again.
    Done,
    /// Chaos testing: panic in the handler.
    Panic,
}
