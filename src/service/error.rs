//! `ServiceError`: every way an operation of the application layer can fail, described for
//! the caller, and its one rendering as a problem document (RFC 9457). Both edges use the
//! status numbers: HTTP as its status, NATS in `Nats-Service-Error-Code`.

use serde::Serialize;
use todo_actors::domain::DomainError;
use todo_actors::slot::CallError;

use crate::auth::AuthError;

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_S: u32 = 1;

/// One field's validation failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, as the client spelled it.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// Malformed request (JSON, query, header).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid fields.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// Missing or bad credentials.
    #[error("authentication required")]
    Unauthorized(AuthError),
    /// No such todo for this owner (or no such resource at all).
    #[error("not found")]
    NotFound,
    /// The idempotency key is used by a request still in flight.
    #[error("a request with this Idempotency-Key is still being processed; retry later")]
    Conflict,
    /// `If-Match` does not match the current version.
    #[error("the todo has changed: it is at version {0}")]
    PreconditionFailed(i64),
    /// The idempotency key was used with a different request.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// What was asked for is no longer kept (change-feed events past their retention).
    #[error(
        "events since the given Last-Event-ID are no longer kept: list the todos again, then open the feed without Last-Event-ID"
    )]
    Gone,
    /// Overloaded, restarting or a dependency is down: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug.
    #[error("internal error")]
    Internal,
}

impl ServiceError {
    /// The HTTP status that says it (NATS reports the same number).
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) | Self::Validation(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::Gone => 410,
            Self::PreconditionFailed(_) => 412,
            Self::KeyReused => 422,
            Self::Unavailable(_) => 503,
            Self::Internal => 500,
        }
    }

    /// Seconds to wait before a retry, for the errors worth retrying.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self, Self::Unavailable(_)).then_some(RETRY_AFTER_S)
    }

    /// A validation failure of one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        let detail = match self {
            Self::NotFound => "no such resource".to_owned(),
            Self::Unauthorized(e) => e.to_string(),
            other => other.to_string(),
        };
        Problem::new(self.status(), detail).with_errors(match self {
            Self::Validation(errors) => Some(errors.clone()),
            _ => None,
        })
    }
}

/// An `application/problem+json` document (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Always `about:blank`: the status says it all.
    pub r#type: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    /// The status.
    pub status: u16,
    /// What happened, safe to show (never a database message).
    pub detail: String,
    /// The invalid fields of a validation failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self {
            r#type: "about:blank",
            title: reason(status),
            status,
            detail: detail.into(),
            errors: None,
        }
    }

    /// The same with `errors`.
    pub fn with_errors(mut self, errors: Option<Vec<FieldError>>) -> Self {
        self.errors = errors;
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The reason phrase of the statuses this service answers with.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

impl From<DomainError> for ServiceError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { field, message } => Self::field(field, message),
            DomainError::NotFound => Self::NotFound,
            DomainError::IdempotencyConflict => Self::Conflict,
            DomainError::PreconditionFailed { current } => Self::PreconditionFailed(current),
            DomainError::Unavailable(why) => {
                Self::Unavailable(format!("temporarily unavailable: {why}"))
            }
            DomainError::OutcomeUnknown(why) => Self::Unavailable(format!(
                "the outcome is unknown ({why}); retry with the same Idempotency-Key"
            )),
        }
    }
}

impl From<CallError> for ServiceError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unavailable => {
                Self::Unavailable("temporarily unavailable: the actor is restarting".into())
            }
            CallError::Timeout => Self::Unavailable(
                "no answer in time; the outcome is unknown, retry with the same Idempotency-Key"
                    .into(),
            ),
        }
    }
}

impl From<AuthError> for ServiceError {
    fn from(e: AuthError) -> Self {
        Self::Unauthorized(e)
    }
}
