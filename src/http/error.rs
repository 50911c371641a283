//! `ApiError` and its one mapping to `application/problem+json` (RFC 9457).
//!
//! Handlers return their errors as values (never as warp rejections), because a rejected
//! branch would let warp try the next route and answer 405 for what was a 400 or 404.
//! Rejections that warp itself raises are mapped by [`handle_rejection`] through the
//! same function.

use std::convert::Infallible;

use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use todo_actors::domain::DomainError;
use todo_actors::slot::CallError;
use warp::Rejection;
use warp::reply::Response;

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_S: &str = "1";

/// One field's validation failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, as the client spelled it.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every error the HTTP edge answers with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (JSON, query string, header).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid fields.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// Missing or bad credentials; the value is the `WWW-Authenticate` challenge.
    #[error("authentication required")]
    Unauthorized(String),
    /// The idempotency key is used by a request still in flight.
    #[error("a request with this Idempotency-Key is still being processed; retry later")]
    Conflict,
    /// The idempotency key was used with a different request.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// No such resource for this owner, or no such path.
    #[error("not found")]
    NotFound,
    /// The path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// `If-Match` does not match the current version.
    #[error("the todo has changed: it is at version {0}")]
    PreconditionFailed(i64),
    /// Body over the limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Not JSON.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// Overloaded, restarting or a dependency is down: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem+json response.
    pub fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::NotFound => "no such resource".to_owned(),
            Self::MethodNotAllowed(allow) => format!("allowed methods: {allow}"),
            other => other.to_string(),
        };
        let body = Problem {
            r#type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            errors: match &self {
                Self::Validation(errors) => Some(errors),
                _ => None,
            },
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::new(json.into());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
            }
            Self::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unauthorized(challenge) => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            _ => {}
        }
        response
    }

    /// A validation failure of one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    r#type: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a Vec<FieldError>>,
}

impl From<DomainError> for ApiError {
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

impl From<CallError> for ApiError {
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

impl warp::reject::Reject for ApiError {}

/// Maps whatever warp rejected with to problem+json.
///
/// # Errors
/// Never: every rejection becomes a response.
pub async fn handle_rejection(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed("GET, POST, PUT, PATCH, DELETE, OPTIONS")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge(super::MAX_BODY_BYTES)
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::UnsupportedMediaType
    } else if rejection.find::<warp::reject::InvalidHeader>().is_some()
        || rejection.find::<warp::reject::MissingHeader>().is_some()
        || rejection.find::<warp::reject::InvalidQuery>().is_some()
        || rejection.find::<warp::reject::LengthRequired>().is_some()
    {
        ApiError::BadRequest(format!("bad request: {rejection:?}"))
    } else {
        tracing::error!(error.cause_chain = ?rejection, "unhandled rejection");
        ApiError::Internal
    };
    Ok(error.into_response())
}
