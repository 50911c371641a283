//! `DomainError`: every failure an actor reports back to its caller through the reply port.

/// What went wrong, described for the caller (the edges map it to a status code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field failed validation; `field` names it as the client spelled it.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field at fault.
        field: &'static str,
        /// Why it is invalid, safe to show to the client.
        message: String,
    },
    /// No todo with that id belongs to the caller.
    #[error("todo not found")]
    NotFound,
    /// The caller's expected version (`If-Match`) is not the current one.
    #[error("the todo is at version {current}, not the expected one")]
    PreconditionFailed {
        /// The version the todo has now.
        current: i64,
    },
    /// The idempotency key is already used by a request that is in flight or committed
    /// elsewhere; retrying later replays its result.
    #[error("the idempotency key is in use by another request")]
    IdempotencyConflict,
    /// The change was not applied (a dependency is down or an actor is restarting);
    /// retrying is safe.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// The change may or may not have been applied (COMMIT outcome unknown, call timed
    /// out); retrying is safe only with an idempotency key.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

impl DomainError {
    /// Shorthand for [`DomainError::Invalid`].
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}
