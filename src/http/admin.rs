//! The admin port: `/livez`, `/readyz`, `/metrics`, `/admin/actors` and, only with
//! `CHAOS_ENABLED=true` and the right bearer token, the chaos hooks that kill actors.

use std::sync::Arc;

use deadpool_postgres::Pool;
use http::{HeaderMap, StatusCode, header};
use serde_json::json;
use todo_actors::handles::ActorHandles;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::ApiError;
use crate::config::Secret;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;

/// What the admin handlers share.
pub struct AdminContext {
    /// The actors.
    pub handles: Arc<ActorHandles>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The pool (for its gauges).
    pub pool: Pool,
    /// Phase and readiness.
    pub lifecycle: Arc<Lifecycle>,
    /// Chaos hooks' token, when chaos is enabled.
    pub chaos_token: Option<Secret>,
    /// The live feed (its open streams are a gauge).
    pub feed: Arc<crate::feed::FeedHub>,
}

type Ctx = Arc<AdminContext>;

/// All admin routes.
pub fn routes(
    ctx: Ctx,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    let c = || super::with_ctx(Arc::clone(&ctx));
    let livez = warp::path!("livez").and(warp::get()).and(c()).map(livez);
    let readyz = warp::path!("readyz").and(warp::get()).and(c()).then(readyz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(c())
        .map(metrics);
    let actors = warp::path!("admin" / "actors")
        .and(warp::get())
        .and(c())
        .map(|ctx: Ctx| warp::reply::json(&ctx.handles.snapshot()).into_response());
    let chaos = warp::path!("admin" / "chaos" / String / String)
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(c())
        .map(chaos);
    livez
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(actors)
        .unify()
        .or(chaos)
        .unify()
        .recover(super::error::handle_rejection)
        .unify()
}

/// `GET /livez`: the process and its supervisor are alive. Never checks dependencies.
fn livez(ctx: Ctx) -> Response {
    if ctx.handles.health.is_live() {
        warp::reply::json(&json!({"status": "live"})).into_response()
    } else {
        let body = json!({"status": "melted down", "detail": "restart intensity exceeded"});
        warp::reply::with_status(warp::reply::json(&body), StatusCode::SERVICE_UNAVAILABLE)
            .into_response()
    }
}

/// `GET /readyz`: see [`Lifecycle::readiness`].
async fn readyz(ctx: Ctx) -> Response {
    let readiness = ctx.lifecycle.readiness().await;
    let code = if readiness.serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&readiness.body), code).into_response()
}

/// `GET /metrics`
fn metrics(ctx: Ctx) -> Response {
    let status = ctx.pool.status();
    let m = &ctx.metrics;
    m.feed_streams
        .set(i64::try_from(ctx.feed.open()).unwrap_or(i64::MAX));
    m.db_pool_connections
        .with_label_values(&["idle"])
        .set(i64::try_from(status.available).unwrap_or(0));
    m.db_pool_connections
        .with_label_values(&["in_use"])
        .set(i64::try_from(status.size.saturating_sub(status.available)).unwrap_or(0));
    m.db_pool_connections
        .with_label_values(&["max"])
        .set(i64::try_from(status.max_size).unwrap_or(0));
    let mut response = m.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `POST /admin/chaos/{kill|panic}/{actor}`: 404 unless chaos is enabled and the bearer
/// token matches (an unauthenticated caller cannot tell the hook exists).
fn chaos(action: String, actor: String, headers: HeaderMap, ctx: Ctx) -> Response {
    let Some(token) = &ctx.chaos_token else {
        return ApiError::NotFound.into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.expose().as_bytes())) {
        return ApiError::NotFound.into_response();
    }
    let done = match action.as_str() {
        "kill" => ctx.handles.chaos_kill(&actor),
        "panic" => ctx.handles.chaos_panic(&actor),
        _ => return ApiError::NotFound.into_response(),
    };
    if done {
        tracing::warn!(%action, %actor, "chaos hook fired");
        warp::reply::with_status(
            warp::reply::json(&json!({"action": action, "actor": actor})),
            StatusCode::ACCEPTED,
        )
        .into_response()
    } else {
        ApiError::Service(crate::service::ServiceError::Unavailable(format!(
            "{actor} is not running"
        )))
        .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
