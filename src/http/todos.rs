//! `/api/todos`: filters (path first, then method) and handlers. Each handler translates
//! the request (path, query, headers, body) into one call of the application layer
//! ([`crate::service::TodoService`]) and its outcome into a status and headers; nothing
//! else. HTTP-only checks stay here: the content type, the body's size and arrival.
//!
//! Each path ends in a fallback that answers 405 with `Allow`, so an unknown method on a
//! known path is a 405 and an unknown path stays a 404. Handlers never reject: they
//! answer errors as problem+json themselves (see `error.rs`).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use todo_actors::domain::{ReplyOutcome, Todo, TodoId};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::{Ctx, RequestId, body, headers, raw_query, request_id, with_ctx};
use crate::service::conditional::{etag, if_match_versions, not_modified};
use crate::service::idempotency::Key;
use crate::service::wire::{ListParams, TodoBody, TodoDto, base_url};
use crate::service::{Page, ServiceError, Written};

/// All `/api/todos` routes.
pub fn routes(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    collection(Arc::clone(&ctx)).or(item(ctx)).unify()
}

/// `/api/todos`: GET list, POST create, DELETE clear.
fn collection(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let path = || warp::path!("api" / "todos");
    let list = path()
        .and(warp::get())
        .and(with_ctx(Arc::clone(&ctx)))
        .and(request_id())
        .and(headers())
        .and(raw_query())
        .then(list_todos);
    let create = path()
        .and(warp::post())
        .and(with_ctx(Arc::clone(&ctx)))
        .and(request_id())
        .and(headers())
        .and(body(Arc::clone(&ctx)))
        .then(create_todo);
    let clear = path()
        .and(warp::delete())
        .and(with_ctx(ctx))
        .and(request_id())
        .and(headers())
        .and(raw_query())
        .then(clear_todos);
    let other =
        path().map(|| ApiError::MethodNotAllowed("GET, POST, DELETE, OPTIONS").into_response());
    list.or(create).unify().or(clear).unify().or(other).unify()
}

/// `/api/todos/{id}`: GET, PATCH, PUT, DELETE.
fn item(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let path = || warp::path!("api" / "todos" / String);
    let get = path()
        .and(warp::get())
        .and(with_ctx(Arc::clone(&ctx)))
        .and(request_id())
        .and(headers())
        .then(get_todo);
    let patch = path()
        .and(warp::patch())
        .and(with_ctx(Arc::clone(&ctx)))
        .and(request_id())
        .and(headers())
        .and(body(Arc::clone(&ctx)))
        .then(patch_todo);
    let put = path()
        .and(warp::put())
        .and(with_ctx(Arc::clone(&ctx)))
        .and(request_id())
        .and(headers())
        .and(body(Arc::clone(&ctx)))
        .then(replace_todo);
    let delete = path()
        .and(warp::delete())
        .and(with_ctx(ctx))
        .and(request_id())
        .and(headers())
        .then(delete_todo);
    let other = path().map(|_id: String| {
        ApiError::MethodNotAllowed("GET, PUT, PATCH, DELETE, OPTIONS").into_response()
    });
    get.or(patch)
        .unify()
        .or(put)
        .unify()
        .or(delete)
        .unify()
        .or(other)
        .unify()
}

/// Answers `Ok` as is and `Err` as problem+json.
fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(ApiError::into_response)
}

/// The values of header `name`, as bytes.
fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h [u8]> {
    headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect()
}

/// A malformed id cannot name a todo: it is a 404 like any unknown id.
fn todo_id(raw: &str) -> Result<TodoId, ApiError> {
    TodoId::parse(raw).map_err(|_| ApiError::NotFound)
}

/// Checks `Content-Type: application/json` (parameters such as charset allowed).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// A JSON body of the right type, decoded.
fn todo_body(headers: &HeaderMap, body: Result<Bytes, ApiError>) -> Result<TodoBody, ApiError> {
    let body = body?;
    require_json(headers)?;
    Ok(TodoBody::decode(&body)?)
}

fn base(ctx: &Ctx, headers: &HeaderMap) -> String {
    base_url(ctx.public_url.as_deref(), |name| {
        headers.get(name).and_then(|v| v.to_str().ok())
    })
}

fn todo_response(ctx: &Ctx, headers: &HeaderMap, todo: &Todo, status: StatusCode) -> Response {
    let dto = TodoDto::new(todo, &base(ctx, headers));
    let location = HeaderValue::from_str(&dto.url).ok();
    let mut response = warp::reply::with_status(warp::reply::json(&dto), status).into_response();
    let h = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(&etag(todo.version)) {
        h.insert(header::ETAG, tag);
    }
    if let (StatusCode::CREATED, Some(location)) = (status, location) {
        h.insert(header::LOCATION, location);
    }
    response
}

/// The response to a create or change, fresh or replayed.
fn written_response(ctx: &Ctx, headers: &HeaderMap, written: &Written) -> Response {
    let status = match written.outcome {
        ReplyOutcome::Created => StatusCode::CREATED,
        ReplyOutcome::Updated => StatusCode::OK,
    };
    let mut response = todo_response(ctx, headers, &written.todo, status);
    if written.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `GET /api/todos`
async fn list_todos(ctx: Ctx, id: RequestId, headers: Arc<HeaderMap>, query: String) -> Response {
    respond(
        async {
            let call = ctx.call(&headers, &id)?;
            let params = ListParams::from_query(&query)?;
            let completed = params.completed;
            let Page { todos, limit, next } = ctx.service.list(&call, params).await?;
            let base = base(&ctx, &headers);
            let dtos: Vec<TodoDto> = todos.iter().map(|t| TodoDto::new(t, &base)).collect();
            let mut response = warp::reply::json(&dtos).into_response();
            if let Some(cursor) = next {
                let mut link = format!("{base}/api/todos?limit={limit}");
                if let Some(c) = completed {
                    link.push_str(&format!("&completed={c}"));
                }
                link.push_str(&format!("&cursor={cursor}"));
                if let Ok(v) = HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")) {
                    response.headers_mut().insert(header::LINK, v);
                }
            }
            Ok(response)
        }
        .await,
    )
}

/// `POST /api/todos`
async fn create_todo(
    ctx: Ctx,
    id: RequestId,
    headers: Arc<HeaderMap>,
    body: Result<Bytes, ApiError>,
) -> Response {
    respond(
        async {
            let call = ctx.call(&headers, &id)?;
            let new = todo_body(&headers, body)?.into_new()?;
            let key = Key::from_values(&values(&headers, "idempotency-key"))?;
            let written = ctx.service.create(&call, new, key).await?;
            Ok(written_response(&ctx, &headers, &written))
        }
        .await,
    )
}

/// `DELETE /api/todos`
async fn clear_todos(ctx: Ctx, id: RequestId, headers: Arc<HeaderMap>, query: String) -> Response {
    respond(
        async {
            let call = ctx.call(&headers, &id)?;
            let completed = ListParams::from_query(&query)?.into_clear().map_err(|_| {
                ServiceError::BadRequest("DELETE /api/todos takes only ?completed=".into())
            })?;
            ctx.service.clear(&call, completed).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// `GET /api/todos/{id}`
async fn get_todo(raw: String, ctx: Ctx, id: RequestId, headers: Arc<HeaderMap>) -> Response {
    respond(
        async {
            let call = ctx.call(&headers, &id)?;
            let fetched = ctx.service.get(&call, todo_id(&raw)?).await?;
            if not_modified(&values(&headers, "if-none-match"), fetched.todo.version) {
                let mut response = StatusCode::NOT_MODIFIED.into_response();
                if let Ok(tag) = HeaderValue::from_str(&etag(fetched.todo.version)) {
                    response.headers_mut().insert(header::ETAG, tag);
                }
                return Ok(response);
            }
            let mut response = todo_response(&ctx, &headers, &fetched.todo, StatusCode::OK);
            response
                .headers_mut()
                .insert("x-cache", HeaderValue::from_static(fetched.cache.as_str()));
            Ok(response)
        }
        .await,
    )
}

/// `PATCH /api/todos/{id}`
async fn patch_todo(
    raw: String,
    ctx: Ctx,
    id: RequestId,
    headers: Arc<HeaderMap>,
    body: Result<Bytes, ApiError>,
) -> Response {
    respond(
        async {
            let call = ctx.call(&headers, &id)?;
            let target = todo_id(&raw)?;
            let change = todo_body(&headers, body)?.into_patch()?;
            let key = Key::from_values(&values(&headers, "idempotency-key"))?;
            let if_match = if_match_versions(&values(&headers, "if-match"));
            let written = ctx
                .service
                .patch(&call, target, change, if_match, key)
                .await?;
            Ok(written_response(&ctx, &headers, &written))
        }
        .await,
    )
}

/// `PUT /api/todos/{id}`
async fn replace_todo(
    raw: String,
    ctx: Ctx,
    id: RequestId,
    headers: Arc<HeaderMap>,
    body: Result<Bytes, ApiError>,
) -> Response {
    respond(
        async {
            let call = ctx.call(&headers, &id)?;
            let target = todo_id(&raw)?;
            let new = todo_body(&headers, body)?.into_new()?;
            let if_match = if_match_versions(&values(&headers, "if-match"));
            let written = ctx.service.replace(&call, target, new, if_match).await?;
            Ok(written_response(&ctx, &headers, &written))
        }
        .await,
    )
}

/// `DELETE /api/todos/{id}`
async fn delete_todo(raw: String, ctx: Ctx, id: RequestId, headers: Arc<HeaderMap>) -> Response {
    respond(
        async {
            let call = ctx.call(&headers, &id)?;
            let target = todo_id(&raw)?;
            let if_match = if_match_versions(&values(&headers, "if-match"));
            ctx.service.delete(&call, target, if_match).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}
