//! The warp edge: the REST API (`api`) and the admin port (`admin::routes`), served by
//! [`server`].
//!
//! Every API request passes, in order:
//! 1. [`Edge`], a service around the routes that comes first of all: it takes the
//!    request id (or makes one), opens the request's span (every log line of the
//!    request — handler, service, actor, write batch — is inside it or follows from it),
//!    and, once the response is ready, adds `X-Request-Id` and the CORS headers and
//!    records the `http_*` metrics and the access log under the route *template* and a
//!    fixed set of methods (any other method counts as `other`);
//! 2. CORS preflight, answered at once;
//! 3. the routes ([`todos`], `/health`, `/openapi.json`), whose handlers translate the
//!    request into one call of the application layer ([`crate::service`]) and its
//!    outcome back into a response. Admission control, idempotency and paging live
//!    there, not here.

pub mod admin;
pub mod error;
pub mod events;
pub mod openapi;
pub mod server;
pub mod todos;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tracing::Instrument;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::service::{Call, ServiceError, TodoService};
use error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Content-Type, Authorization, If-Match, If-None-Match, Idempotency-Key, X-Request-Id, traceparent";
const EXPOSE_HEADERS: &str =
    "ETag, Location, Link, X-Request-Id, Retry-After, Idempotent-Replayed, X-Cache";

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

    fn allow(&self, origin: &[u8]) -> Option<HeaderValue> {
        match self {
            Self::Any => Some(HeaderValue::from_static("*")),
            Self::Only(list) => list
                .iter()
                .any(|o| o.as_bytes() == origin)
                .then(|| HeaderValue::from_bytes(origin).ok())
                .flatten(),
        }
    }
}

/// What the API handlers share.
pub struct ApiContext {
    /// The application layer.
    pub service: Arc<TodoService>,
    /// Who the caller is (`AUTH_MODE`).
    pub auth: Arc<Authenticator>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `PUBLIC_URL`, without a trailing slash.
    pub public_url: Option<String>,
    /// CORS policy.
    pub cors: Cors,
    /// Longest wait for a request body once the headers are in.
    pub body_timeout: Duration,
    /// Start time, for `/health`.
    pub started: Instant,
}

impl ApiContext {
    /// The call a request makes: its authenticated owner and its request id.
    ///
    /// # Errors
    /// 401 without valid credentials.
    pub fn call(&self, headers: &HeaderMap, request_id: &RequestId) -> Result<Call, ApiError> {
        let authorization: Vec<&[u8]> = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let owner = self
            .auth
            .authenticate(&authorization)
            .map_err(ServiceError::from)?;
        Ok(Call {
            owner,
            request_id: Arc::clone(&request_id.0),
        })
    }
}

/// Shared handle to the context.
pub type Ctx = Arc<ApiContext>;

/// The request id of a request (taken from `X-Request-Id`, or made), put into the
/// request's extensions by [`Edge`].
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    /// The client's id when it is sane (1 to 200 visible characters), else a new one.
    fn of(headers: &HeaderMap) -> Self {
        let given = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200);
        Self(given.map_or_else(crate::service::new_request_id, Arc::from))
    }
}

/// A request's headers, moved out of the request by [`Edge`] (not copied) and shared
/// with the handler that answers it.
#[derive(Debug, Clone)]
pub struct Headers(pub Arc<HeaderMap>);

/// The request's headers: the ones [`Edge`] moved aside, else (a request that bypassed
/// `Edge`, or a preflight, whose headers stay in place) a copy.
pub fn headers() -> impl Filter<Extract = (Arc<HeaderMap>,), Error = Infallible> + Clone {
    warp::ext::get::<Headers>()
        .map(|h: Headers| h.0)
        .or(warp::header::headers_cloned().map(Arc::new))
        .unify()
}

/// Hands every request a clone of the shared context `ctx`.
fn with_ctx<T: Send + Sync + 'static>(
    ctx: Arc<T>,
) -> impl Filter<Extract = (Arc<T>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&ctx))
}

/// The request id [`Edge`] put into the request.
fn request_id() -> impl Filter<Extract = (RequestId,), Error = Infallible> + Clone {
    warp::ext::optional::<RequestId>().map(|id: Option<RequestId>| {
        // Only requests that bypass `Edge` (in-memory filter tests) have none.
        id.unwrap_or_else(|| RequestId(crate::service::new_request_id()))
    })
}

/// The REST API routes on `HTTP_ADDR` (wrap them in [`Edge`] to serve them).
pub fn api(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let routes = events::route(Arc::clone(&ctx))
        .or(todos::routes(Arc::clone(&ctx)))
        .unify()
        .or(health(Arc::clone(&ctx)))
        .unify()
        .or(openapi::route())
        .unify()
        .or(warp::any().map(|| ApiError::NotFound.into_response()))
        .unify();
    // The routes end in a catch-all 404, so nothing is left to reject.
    preflight(ctx).or(routes).unify()
}

/// `OPTIONS` with `Access-Control-Request-Method`: answered here, for every path.
fn preflight(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::options()
        .and(warp::header::optional::<String>(
            "access-control-request-method",
        ))
        .and(warp::header::optional::<String>("origin"))
        .and_then(move |method: Option<String>, origin: Option<String>| {
            let ctx = Arc::clone(&ctx);
            async move {
                if method.is_none() {
                    return Err(warp::reject::not_found());
                }
                let mut response = Response::new(Default::default());
                *response.status_mut() = StatusCode::NO_CONTENT;
                let origin = origin.unwrap_or_default();
                if let Some(allowed) = ctx.cors.allow(origin.as_bytes()) {
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
        "/api/todos/events" => "/api/todos/events",
        p if p.starts_with("/api/todos/") && !p["/api/todos/".len()..].contains('/') => {
            "/api/todos/:id"
        }
        "/health" => "/health",
        "/openapi.json" => "/openapi.json",
        _ => "unmatched",
    }
}

/// The `method` label: the methods the API knows, and `other` for anything else, so a
/// client inventing methods cannot inflate the label set.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// The service that comes first (see the module documentation).
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    ctx: Ctx,
}

impl<S> Edge<S> {
    /// Wraps `inner` (the routes, as a service).
    pub fn new(inner: S, ctx: Ctx) -> Self {
        Self { inner, ctx }
    }
}

/// What [`Edge`] keeps of a request while the routes serve it.
struct Seen {
    started: Instant,
    method: &'static str,
    route: &'static str,
    uri: http::Uri,
    origin: Option<HeaderValue>,
    request_id: RequestId,
}

impl<S, B> tower_service::Service<http::Request<B>> for Edge<S>
where
    S: tower_service::Service<http::Request<B>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let request_id = RequestId::of(request.headers());
        let seen = Seen {
            started: Instant::now(),
            method: method_label(request.method()),
            route: route_template(request.uri().path()),
            uri: request.uri().clone(),
            origin: request.headers().get(header::ORIGIN).cloned(),
            request_id: request_id.clone(),
        };
        let span = tracing::info_span!(
            "http_request",
            otel.name = %format_args!("{} {}", seen.method, seen.route),
            otel.kind = "server",
            request_id = %request_id.0,
            http.request.method = seen.method,
            http.route = seen.route,
            url.path = seen.uri.path(),
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, |name| {
            request.headers().get(name).and_then(|v| v.to_str().ok())
        });
        request.extensions_mut().insert(request_id);
        if request.method() != Method::OPTIONS {
            // The handlers read the headers from here; only a preflight's filters read
            // them in place.
            let headers = std::mem::take(request.headers_mut());
            request.extensions_mut().insert(Headers(Arc::new(headers)));
        }
        let ctx = Arc::clone(&self.ctx);
        let in_flight = InFlight::new(&ctx.metrics.http_in_flight);
        let served = self.inner.call(request);
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = served.await.unwrap_or_else(|never| match never {});
                drop(in_flight);
                recorded.record("http.response.status_code", response.status().as_u16());
                if response.status().is_server_error() {
                    recorded.record("otel.status_code", "error");
                }
                Ok(finish(&ctx, seen, response))
            }
            .instrument(span),
        )
    }
}

/// Counts a request in `http_in_flight_requests` until dropped (also when the client
/// goes away mid-request and the future is dropped).
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Adds `X-Request-Id` and CORS headers, records metrics and the access log.
fn finish(ctx: &ApiContext, seen: Seen, mut response: Response) -> Response {
    let status = response.status();
    let h = response.headers_mut();
    if let Some(origin) = &seen.origin {
        if let Some(allowed) = ctx.cors.allow(origin.as_bytes()) {
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
    let elapsed = seen.started.elapsed();
    let series = ctx.metrics.http_series(seen.method, seen.route, status);
    series.requests.inc();
    series.duration.observe(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1e3;
    let (method, route, path) = (seen.method, seen.route, seen.uri.path());
    let request_id = &*seen.request_id.0;
    if status.is_server_error() {
        tracing::warn!(
            request_id,
            method,
            route,
            path,
            status = status.as_u16(),
            latency_ms,
            "request failed"
        );
    } else {
        tracing::info!(
            request_id,
            method,
            route,
            path,
            status = status.as_u16(),
            latency_ms,
            "request completed"
        );
    }
    if let Ok(id) = HeaderValue::from_str(&seen.request_id.0) {
        h.insert("x-request-id", id);
    }
    response
}

/// The request body, at most [`MAX_BODY_BYTES`], whether or not `Content-Length` is
/// sent (a chunked body is cut off as soon as it passes the limit), and within the body
/// timeout (a client that stalls gets 408 and its connection is closed). Never rejects:
/// hyper has already refused a malformed `Content-Length`.
pub fn body(
    ctx: Ctx,
) -> impl Filter<Extract = (Result<Bytes, ApiError>,), Error = Rejection> + Clone {
    headers()
        .and(warp::body::stream())
        .then(move |headers: Arc<HeaderMap>, stream| {
            let timeout = ctx.body_timeout;
            // hyper has already refused a malformed or repeated length.
            let declared = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            async move {
                tokio::time::timeout(timeout, read_limited(declared, stream))
                    .await
                    .unwrap_or(Err(ApiError::RequestTimeout))
            }
        })
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
    while let Some(mut chunk) = stream.try_next().await.map_err(|_| {
        ApiError::Service(ServiceError::BadRequest(
            "the request body could not be read".into(),
        ))
    })? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_value_has_a_kept_metric_series_slot() {
        // Arrange: a request of every method and every route shape.
        let methods = [
            "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "FOO",
        ];
        let paths = [
            "/api/todos",
            "/api/todos/",
            "/api/todos/events",
            "/api/todos/0193f8a0-0000-7000-8000-000000000000",
            "/health",
            "/openapi.json",
            "/no/such/path",
        ];

        // Act + Assert: their labels are the ones the metrics keep handles for.
        for m in methods {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            assert!(
                crate::metrics::HTTP_METHODS.contains(&method_label(&method)),
                "{m}"
            );
        }
        for p in paths {
            assert!(
                crate::metrics::HTTP_ROUTES.contains(&route_template(p)),
                "{p}"
            );
        }
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        let invented = Method::from_bytes(b"FOO0").expect("a token is a method");
        assert_eq!(method_label(&invented), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
    }

    #[test]
    fn request_ids_are_taken_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        assert!(!RequestId::of(&h).0.is_empty());
        h.insert("x-request-id", HeaderValue::from_static("abc-1"));
        assert_eq!(&*RequestId::of(&h).0, "abc-1");
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"x".repeat(201)).expect("valid"),
        );
        assert_ne!(&*RequestId::of(&h).0, "x".repeat(201));
    }
}
