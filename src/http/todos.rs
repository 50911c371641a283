//! `/api/todos`: filters (path first, then method) and handlers.
//!
//! Each path ends in a fallback that answers 405 with `Allow`, so an unknown method on a
//! known path is a 405 and an unknown path stays a 404. Handlers never reject: they
//! answer errors as problem+json themselves (see `error.rs`).

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use todo_actors::domain::{
    Cursor, IdempotencyKey, ListQuery, MAX_LIST_LIMIT, Owner, StoredReply, Todo, TodoId,
    WriteCommand, WriteEffect, now,
};
use todo_actors::metrics::ReadSource;
use todo_actors::shard::{ReadOutcome, ShardMessage};
use todo_actors::writer::WriterMessage;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::conditional;
use super::dto::{TodoBody, TodoDto, base_url};
use super::error::ApiError;
use super::{Ctx, body, raw_query, with_ctx};

const DEFAULT_LIMIT: u32 = 100;

/// All `/api/todos` routes.
pub fn routes(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    collection(Arc::clone(&ctx)).or(item(ctx)).unify()
}

fn headers() -> impl Filter<Extract = (HeaderMap,), Error = Infallible> + Clone {
    warp::header::headers_cloned()
}

/// `/api/todos`: GET list, POST create, DELETE clear.
fn collection(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let path = || warp::path!("api" / "todos");
    let list = path()
        .and(warp::get())
        .and(with_ctx(Arc::clone(&ctx)))
        .and(headers())
        .and(raw_query())
        .then(list_todos);
    let create = path()
        .and(warp::post())
        .and(with_ctx(Arc::clone(&ctx)))
        .and(headers())
        .and(body())
        .then(create_todo);
    let clear = path()
        .and(warp::delete())
        .and(with_ctx(ctx))
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
        .and(headers())
        .then(get_todo);
    let patch = path()
        .and(warp::patch())
        .and(with_ctx(Arc::clone(&ctx)))
        .and(headers())
        .and(body())
        .then(|id, ctx, headers, body| update_todo(id, ctx, headers, body, Mode::Patch));
    let put = path()
        .and(warp::put())
        .and(with_ctx(Arc::clone(&ctx)))
        .and(headers())
        .and(body())
        .then(|id, ctx, headers, body| update_todo(id, ctx, headers, body, Mode::Replace));
    let delete = path()
        .and(warp::delete())
        .and(with_ctx(ctx))
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

/// The caller's owner (`AUTH_MODE`); every handler scopes every read and write by it.
fn owner(ctx: &Ctx, headers: &HeaderMap) -> Result<Owner, ApiError> {
    ctx.auth
        .authenticate(headers)
        .map_err(|e| ApiError::Unauthorized(e.www_authenticate()))
}

/// A write's result: committed now, or the stored first result of an idempotent request.
enum Written {
    Fresh(WriteEffect),
    Replayed(StoredReply),
}

/// Writes `command`, honouring `Idempotency-Key`: a stored first result is replayed
/// (422 when the key came with another request), a key in flight here is a 409, and a
/// new result is stored with the change, in its transaction.
async fn write_once(
    ctx: &Ctx,
    owner: &Owner,
    headers: &HeaderMap,
    request: (&str, &str, &[u8]),
    command: impl FnOnce(Option<IdempotencyKey>) -> WriteCommand,
) -> Result<Written, ApiError> {
    let Some(key) = conditional::idempotency_key(headers)? else {
        return write(ctx, command(None)).await.map(Written::Fresh);
    };
    let (method, path, body) = request;
    let request_hash = conditional::request_hash(method, path, body);
    let _claim = ctx.keys_in_flight.claim(owner, &key)?;
    let lookup_owner = owner.clone();
    let lookup_key = key.clone();
    let stored = ctx
        .handles
        .shard_for(owner)
        .call(
            |reply| ShardMessage::Replay {
                owner: lookup_owner,
                key: lookup_key,
                reply,
            },
            ctx.request_timeout,
        )
        .await??;
    if let Some(stored) = stored {
        if stored.request_hash != request_hash {
            return Err(ApiError::KeyReused);
        }
        return Ok(Written::Replayed(stored));
    }
    let key = IdempotencyKey { key, request_hash };
    write(ctx, command(Some(key))).await.map(Written::Fresh)
}

/// The response to a create or change, fresh or replayed.
fn written_response(
    ctx: &Ctx,
    headers: &HeaderMap,
    written: Written,
    fresh: StatusCode,
) -> Result<Response, ApiError> {
    match written {
        Written::Fresh(WriteEffect::Created(todo) | WriteEffect::Updated(todo)) => {
            Ok(todo_response(ctx, headers, &todo, fresh))
        }
        Written::Fresh(_) => Err(ApiError::Internal),
        Written::Replayed(stored) => {
            let status = StatusCode::from_u16(stored.status).unwrap_or(fresh);
            let mut response = todo_response(ctx, headers, &stored.todo, status);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

/// A malformed id cannot name a todo: it is a 404 like any unknown id.
fn todo_id(raw: &str) -> Result<TodoId, ApiError> {
    TodoId::parse(raw).map_err(|_| ApiError::NotFound)
}

fn etag(todo: &Todo) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", todo.version))
        .unwrap_or(HeaderValue::from_static("\"0\""))
}

fn todo_response(ctx: &Ctx, headers: &HeaderMap, todo: &Todo, status: StatusCode) -> Response {
    let base = base_url(ctx.public_url.as_deref(), headers);
    let dto = TodoDto::new(todo, &base);
    let location = HeaderValue::from_str(&dto.url).ok();
    let mut response = warp::reply::with_status(warp::reply::json(&dto), status).into_response();
    let h = response.headers_mut();
    h.insert(header::ETAG, etag(todo));
    if let (StatusCode::CREATED, Some(location)) = (status, location) {
        h.insert(header::LOCATION, location);
    }
    response
}

/// Sends a command to the writer and waits for its committed effect.
async fn write(ctx: &Ctx, command: WriteCommand) -> Result<WriteEffect, ApiError> {
    ctx.handles
        .writer
        .call(
            |reply| WriterMessage::Write { command, reply },
            ctx.request_timeout,
        )
        .await?
        .map_err(ApiError::from)
}

/// `GET /api/todos`
async fn list_todos(ctx: Ctx, headers: HeaderMap, query: String) -> Response {
    respond(
        async {
            let owner = owner(&ctx, &headers)?;
            let params = ListParams::parse(&query)?;
            let query = ListQuery {
                owner: owner.clone(),
                completed: params.completed,
                // One more than asked tells whether a next page exists.
                limit: params.limit + 1,
                after: params.cursor,
            };
            let mut todos = ctx
                .handles
                .shard_for(&owner)
                .call(
                    |reply| ShardMessage::List { query, reply },
                    ctx.request_timeout,
                )
                .await??;
            let more = todos.len() > params.limit as usize;
            todos.truncate(params.limit as usize);
            let base = base_url(ctx.public_url.as_deref(), &headers);
            let dtos: Vec<TodoDto> = todos.iter().map(|t| TodoDto::new(t, &base)).collect();
            let mut response = warp::reply::json(&dtos).into_response();
            if let (true, Some(last)) = (more, todos.last()) {
                let mut next = format!("{base}/api/todos?limit={}", params.limit);
                if let Some(c) = params.completed {
                    next.push_str(&format!("&completed={c}"));
                }
                next.push_str(&format!("&cursor={}", encode_cursor(last)));
                if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
                    response.headers_mut().insert(header::LINK, v);
                }
            }
            Ok(response)
        }
        .await,
    )
}

/// `POST /api/todos`
async fn create_todo(ctx: Ctx, headers: HeaderMap, body: Result<Bytes, ApiError>) -> Response {
    respond(
        async {
            let owner = owner(&ctx, &headers)?;
            let body = body?;
            let new = TodoBody::decode(&headers, &body)?.into_new()?;
            let todo = Todo::create(TodoId::generate(), owner.clone(), new, now());
            let written = write_once(
                &ctx,
                &owner,
                &headers,
                ("POST", "/api/todos", &body),
                |idempotency| WriteCommand::Create { todo, idempotency },
            )
            .await?;
            written_response(&ctx, &headers, written, StatusCode::CREATED)
        }
        .await,
    )
}

/// `DELETE /api/todos`
async fn clear_todos(ctx: Ctx, headers: HeaderMap, query: String) -> Response {
    respond(
        async {
            let owner = owner(&ctx, &headers)?;
            let params = ListParams::parse(&query)?;
            if params.cursor.is_some() || params.limit_given {
                return Err(ApiError::BadRequest(
                    "DELETE /api/todos takes only ?completed=".into(),
                ));
            }
            write(
                &ctx,
                WriteCommand::Clear {
                    owner,
                    completed: params.completed,
                },
            )
            .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// `GET /api/todos/{id}`
async fn get_todo(id: String, ctx: Ctx, headers: HeaderMap) -> Response {
    respond(
        async {
            let owner = owner(&ctx, &headers)?;
            let id = todo_id(&id)?;
            let ReadOutcome {
                todo,
                source,
                stale,
            } = ctx
                .handles
                .shard_for(&owner)
                .call(
                    |reply| ShardMessage::Get { owner, id, reply },
                    ctx.request_timeout,
                )
                .await??;
            if conditional::not_modified(&headers, &todo) {
                let mut response = StatusCode::NOT_MODIFIED.into_response();
                response.headers_mut().insert(header::ETAG, etag(&todo));
                return Ok(response);
            }
            let mut response = todo_response(&ctx, &headers, &todo, StatusCode::OK);
            let cache = match (stale, source) {
                (true, _) => "stale",
                (false, ReadSource::Cache) => "hit",
                (false, ReadSource::Db) => "miss",
            };
            response
                .headers_mut()
                .insert("x-cache", HeaderValue::from_static(cache));
            Ok(response)
        }
        .await,
    )
}

#[derive(Clone, Copy)]
enum Mode {
    Patch,
    Replace,
}

/// `PATCH /api/todos/{id}` and `PUT /api/todos/{id}`
async fn update_todo(
    id: String,
    ctx: Ctx,
    headers: HeaderMap,
    body: Result<Bytes, ApiError>,
    mode: Mode,
) -> Response {
    respond(
        async {
            let owner = owner(&ctx, &headers)?;
            let id = todo_id(&id)?;
            let body = body?;
            let decoded = TodoBody::decode(&headers, &body)?;
            let change = match mode {
                Mode::Patch => decoded.into_patch()?,
                Mode::Replace => decoded.into_replace()?,
            };
            let expected_versions = conditional::if_match_versions(&headers);
            let command = |idempotency| WriteCommand::Update {
                owner: owner.clone(),
                id,
                change,
                expected_versions,
                at: now(),
                idempotency,
            };
            let written = match mode {
                // Idempotency-Key is honoured on PATCH; PUT is idempotent by nature.
                Mode::Patch => {
                    let path = format!("/api/todos/{id}");
                    write_once(&ctx, &owner, &headers, ("PATCH", &path, &body), command).await?
                }
                Mode::Replace => Written::Fresh(write(&ctx, command(None)).await?),
            };
            written_response(&ctx, &headers, written, StatusCode::OK)
        }
        .await,
    )
}

/// `DELETE /api/todos/{id}`
async fn delete_todo(id: String, ctx: Ctx, headers: HeaderMap) -> Response {
    respond(
        async {
            let owner = owner(&ctx, &headers)?;
            let id = todo_id(&id)?;
            let command = WriteCommand::Delete {
                owner,
                id,
                expected_versions: conditional::if_match_versions(&headers),
            };
            write(&ctx, command).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// Query parameters of the collection.
struct ListParams {
    completed: Option<bool>,
    limit: u32,
    limit_given: bool,
    cursor: Option<Cursor>,
}

impl ListParams {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::BadRequest("the query string is malformed".into()))?;
        let mut params = Self {
            completed: None,
            limit: DEFAULT_LIMIT,
            limit_given: false,
            cursor: None,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "completed" => {
                    params.completed = Some(match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(ApiError::field("completed", "must be true or false")),
                    });
                }
                "limit" => {
                    params.limit_given = true;
                    params.limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::field(
                                "limit",
                                format!("must be an integer from 1 to {MAX_LIST_LIMIT}"),
                            )
                        })?;
                }
                "cursor" => {
                    params.cursor = Some(decode_cursor(&value).ok_or_else(|| {
                        ApiError::field("cursor", "is not a cursor this API made")
                    })?);
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown query parameter {other:?}"
                    )));
                }
            }
        }
        Ok(params)
    }
}

/// An opaque cursor: base64url of `order|created_at µs|id` of the last todo of a page.
fn encode_cursor(last: &Todo) -> String {
    let order = last.order.map(|o| o.to_string()).unwrap_or_default();
    let raw = format!("{order}|{}|{}", last.created_at.timestamp_micros(), last.id);
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(s: &str) -> Option<Cursor> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let mut parts = raw.split('|');
    let order = match parts.next()? {
        "" => None,
        o => Some(o.parse::<i32>().ok()?),
    };
    let created_at = DateTime::<Utc>::from_timestamp_micros(parts.next()?.parse().ok()?)?;
    let id = TodoId::parse(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Cursor {
        order,
        created_at,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use todo_actors::domain::{NewTodo, TodoTitle};

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let todo = Todo::create(
            TodoId::generate(),
            Owner::public(),
            NewTodo {
                title: TodoTitle::parse("a").expect("valid"),
                completed: false,
                order: Some(-4),
            },
            now(),
        );
        let cursor = decode_cursor(&encode_cursor(&todo)).expect("round trip");
        assert_eq!(cursor.order, Some(-4));
        assert_eq!(cursor.id, todo.id);
        assert_eq!(cursor.created_at, todo.created_at);
        assert!(decode_cursor("not-a-cursor").is_none());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("1|2")).is_none());
    }

    #[test]
    fn list_params_validate_limit_completed_and_unknown_keys() {
        assert!(ListParams::parse("limit=0").is_err());
        assert!(ListParams::parse("limit=1001").is_err());
        assert!(ListParams::parse("completed=maybe").is_err());
        assert!(ListParams::parse("colour=red").is_err());
        let p = ListParams::parse("limit=5&completed=true").expect("valid");
        assert_eq!((p.limit, p.completed), (5, Some(true)));
    }
}
