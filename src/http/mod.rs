//! The warp edge: the REST API (`api`) and the admin port (`admin::routes`).
//!
//! Every API request passes, in order: CORS preflight short-circuit → admission control
//! (a semaphore of `MAX_IN_FLIGHT` permits; none left is an immediate 503) → the routes
//! → `finish`, which adds `X-Request-Id` and CORS headers and records the
//! `http_*` metrics under the route *template*.

pub mod admin;
pub mod auth;
pub mod conditional;
pub mod dto;
pub mod error;
pub mod openapi;
pub mod todos;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use todo_actors::handles::ActorHandles;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::metrics::Metrics;
use error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Content-Type, Authorization, If-Match, If-None-Match, Idempotency-Key, X-Request-Id, traceparent";
const EXPOSE_HEADERS: &str =
    "ETag, Location, Link, X-Request-Id, Retry-After, Idempotent-Replayed, X-Cache";

/// Where the process is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Start-up not finished.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// SIGTERM received: finishing in-flight work.
    Draining = 2,
}

/// The shared lifecycle phase.
#[derive(Debug, Default)]
pub struct Lifecycle(AtomicU8);

impl Lifecycle {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::SeqCst);
    }
}

/// Allowed CORS origins.
#[derive(Debug, Clone)]
pub enum Cors {
    /// Any origin.
    Any,
    /// Only these.
    Only(Vec<String>),
}

impl Cors {
    /// Parses `CORS_ORIGINS`.
    pub fn parse(origins: &str) -> Self {
        let list: Vec<String> = origins
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if list.is_empty() || list.iter().any(|o| o == "*") {
            Self::Any
        } else {
            Self::Only(list)
        }
    }

    fn allow(&self, origin: &str) -> Option<HeaderValue> {
        match self {
            Self::Any => Some(HeaderValue::from_static("*")),
            Self::Only(list) => list
                .iter()
                .any(|o| o == origin)
                .then(|| HeaderValue::from_str(origin).ok())
                .flatten(),
        }
    }
}

/// What the API handlers share.
pub struct ApiContext {
    /// The actors.
    pub handles: Arc<ActorHandles>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `PUBLIC_URL`, without a trailing slash.
    pub public_url: Option<String>,
    /// CORS policy.
    pub cors: Cors,
    /// How long a handler waits for an actor.
    pub request_timeout: Duration,
    /// Admission control.
    pub admission: Arc<Semaphore>,
    /// Start time, for `/health`.
    pub started: Instant,
    /// Who the caller is (`AUTH_MODE`).
    pub auth: auth::Authenticator,
    /// Idempotency keys of requests in flight on this replica.
    pub keys_in_flight: conditional::KeysInFlight,
}

/// Shared handle to the context.
pub type Ctx = Arc<ApiContext>;

/// Hands every request a clone of the shared context `ctx`.
fn with_ctx<T: Send + Sync + 'static>(
    ctx: Arc<T>,
) -> impl Filter<Extract = (Arc<T>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&ctx))
}

/// The REST API on `HTTP_ADDR`.
pub fn api(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let routes = todos::routes(Arc::clone(&ctx))
        .or(health(Arc::clone(&ctx)))
        .unify()
        .or(openapi::route())
        .unify()
        .or(warp::any().map(|| ApiError::NotFound.into_response()))
        .unify();
    let admitted = admit(Arc::clone(&ctx))
        .and(routes)
        .map(|_permit: OwnedSemaphorePermit, response: Response| response);
    let served = preflight(Arc::clone(&ctx))
        .or(admitted)
        .unify()
        .recover(error::handle_rejection)
        .unify();
    warp::any()
        .map(Instant::now)
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::optional::<String>("x-request-id"))
        .and(warp::header::optional::<String>("origin"))
        .and(with_ctx(ctx))
        .and(served)
        .map(finish)
        // Only a request id or origin header that is not text gets here.
        .recover(error::handle_rejection)
        .unify()
}

/// Takes a permit or rejects with 503 before any routing work.
fn admit(ctx: Ctx) -> impl Filter<Extract = (OwnedSemaphorePermit,), Error = Rejection> + Clone {
    warp::any().and_then(move || {
        let permit = Arc::clone(&ctx.admission).try_acquire_owned();
        async move {
            permit.map_err(|_| {
                warp::reject::custom(ApiError::Unavailable(
                    "overloaded: too many requests in flight".into(),
                ))
            })
        }
    })
}

/// `OPTIONS` with `Access-Control-Request-Method`: answered here, for every path.
fn preflight(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::options()
        .and(warp::header::headers_cloned())
        .and_then(move |headers: HeaderMap| {
            let ctx = Arc::clone(&ctx);
            async move {
                if !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
                    return Err(warp::reject::not_found());
                }
                let mut response = Response::new(Default::default());
                *response.status_mut() = StatusCode::NO_CONTENT;
                let origin = headers
                    .get(header::ORIGIN)
                    .and_then(|o| o.to_str().ok())
                    .unwrap_or_default();
                if let Some(allowed) = ctx.cors.allow(origin) {
                    let h = response.headers_mut();
                    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_METHODS,
                        HeaderValue::from_static(ALLOW_METHODS),
                    );
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_HEADERS,
                        HeaderValue::from_static(ALLOW_HEADERS),
                    );
                    h.insert(
                        header::ACCESS_CONTROL_MAX_AGE,
                        HeaderValue::from_static("86400"),
                    );
                }
                Ok(response)
            }
        })
}

/// `GET /health`: the original service's liveness endpoint.
fn health(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path("health").and(warp::path::end()).and(
        warp::get()
            .map(move || {
                warp::reply::json(&serde_json::json!({
                    "status": "healthy",
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_s": ctx.started.elapsed().as_secs(),
                }))
                .into_response()
            })
            .or(warp::any().map(|| ApiError::MethodNotAllowed("GET").into_response()))
            .unify(),
    )
}

/// The route template of a path: a fixed label set, never the raw path.
pub fn route_template(path: &str) -> &'static str {
    match path.trim_end_matches('/') {
        "/api/todos" => "/api/todos",
        p if p.starts_with("/api/todos/") && !p["/api/todos/".len()..].contains('/') => {
            "/api/todos/:id"
        }
        "/health" => "/health",
        "/openapi.json" => "/openapi.json",
        _ => "unmatched",
    }
}

/// Adds `X-Request-Id` and CORS headers, records metrics and the access log.
fn finish(
    started: Instant,
    method: Method,
    path: warp::path::FullPath,
    request_id: Option<String>,
    origin: Option<String>,
    ctx: Ctx,
    response: Response,
) -> Response {
    let mut response = response;
    let request_id = request_id
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .and_then(|v| HeaderValue::from_str(&v).ok())
        .unwrap_or_else(new_request_id);
    let status = response.status();
    let h = response.headers_mut();
    if let Some(origin) = origin {
        if let Some(allowed) = ctx.cors.allow(&origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
        if matches!(ctx.cors, Cors::Only(_)) {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    let route = route_template(path.as_str());
    let elapsed = started.elapsed();
    let status_code = status.as_str();
    ctx.metrics
        .http_requests
        .with_label_values(&[method.as_str(), route, status_code])
        .inc();
    ctx.metrics
        .http_duration
        .with_label_values(&[method.as_str(), route, status_code])
        .observe(elapsed.as_secs_f64());
    let request_id_str = request_id.to_str().unwrap_or_default();
    if status.is_server_error() {
        tracing::warn!(request_id = request_id_str, method = %method, route, path = path.as_str(),
            status = status.as_u16(), latency_ms = elapsed.as_secs_f64() * 1e3, "request failed");
    } else {
        tracing::info!(request_id = request_id_str, method = %method, route, path = path.as_str(),
            status = status.as_u16(), latency_ms = elapsed.as_secs_f64() * 1e3, "request completed");
    }
    h.insert("x-request-id", request_id);
    response
}

/// A fresh request id: a per-process random prefix and a counter (no system call per
/// request, unlike a random UUID).
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::now_v7().simple().to_string());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix}-{n:x}")).unwrap_or(HeaderValue::from_static("unknown"))
}

/// The request body, at most [`MAX_BODY_BYTES`], whether or not `Content-Length` is
/// sent (a chunked body is cut off as soon as it passes the limit). Never rejects: hyper
/// has already refused a malformed `Content-Length`.
pub fn body() -> impl Filter<Extract = (Result<Bytes, ApiError>,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(read_limited)
}

async fn read_limited<S, B>(declared: Option<u64>, stream: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream
        .try_next()
        .await
        .map_err(|_| ApiError::BadRequest("the request body could not be read".into()))?
    {
        if body.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            body.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
}

/// The raw query string ("" when there is none). Never rejects.
pub fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}
