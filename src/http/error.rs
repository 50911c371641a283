//! `ApiError` and its one mapping to an HTTP response: problem+json (RFC 9457) with the
//! status, plus `Retry-After`, `Allow`, `WWW-Authenticate` or `Connection: close` where
//! they belong.
//!
//! Most errors are the application layer's ([`ServiceError`]); the rest only HTTP has
//! (a wrong method, a body too large, of the wrong type, or too slow). Handlers return
//! their errors as values (never as warp rejections), because a rejected branch would let
//! warp try the next route and answer 405 for what was a 400 or 404. Rejections that warp
//! itself raises are mapped by [`handle_rejection`] through the same function.

use std::convert::Infallible;

use http::{HeaderValue, StatusCode, header};
use warp::Rejection;
use warp::reply::Response;

use crate::service::{Problem, ServiceError};

/// Every error the HTTP edge answers with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The application layer's.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// No such path.
    #[error("not found")]
    NotFound,
    /// The path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// Body over the limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Not JSON.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// The body did not arrive in time.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
}

impl ApiError {
    /// A malformed request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::Service(ServiceError::BadRequest(detail.into()))
    }

    fn problem(&self) -> Problem {
        match self {
            Self::Service(e) => e.problem(),
            Self::NotFound => ServiceError::NotFound.problem(),
            Self::MethodNotAllowed(allow) => Problem::new(405, format!("allowed methods: {allow}")),
            Self::PayloadTooLarge(_) => Problem::new(413, self.to_string()),
            Self::UnsupportedMediaType => Problem::new(415, self.to_string()),
            Self::RequestTimeout => Problem::new(408, self.to_string()),
        }
    }

    /// The problem+json response.
    pub fn into_response(self) -> Response {
        let problem = self.problem();
        let mut response = Response::new(problem.to_json().into());
        *response.status_mut() =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::Service(e) => {
                if let Some(seconds) = e.retry_after() {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                if let ServiceError::Unauthorized(why) = e
                    && let Ok(v) = HeaderValue::from_str(&why.www_authenticate())
                {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
                if matches!(e, ServiceError::Internal) {
                    tracing::error!("answering 500: a bug");
                }
            }
            Self::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            // The rest of the body may never come: do not keep reading this connection.
            Self::RequestTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
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
        ApiError::bad_request(format!("bad request: {rejection:?}"))
    } else {
        tracing::error!(error.cause_chain = ?rejection, "unhandled rejection");
        ApiError::Service(ServiceError::Internal)
    };
    Ok(error.into_response())
}
