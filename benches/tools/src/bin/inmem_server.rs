//! `inmem-server`: the in-memory baseline of scripts/bench. The todo service's API shape
//! for what the benchmark drives (`POST /api/todos`, `GET /api/todos/{id}`,
//! `PATCH /api/todos/{id}`, `GET /api/todos`), answered by warp + serde over a sharded
//! in-memory map: no database, no actors, no logs, no metrics. It is the most HTTP + JSON
//! this machine can do with the load tool on it, so `service / inmem` says how much of
//! that ceiling the service keeps.
//!
//! Same shape as the service: UUIDv7 ids, the todo JSON with an absolute `url` (from
//! `Host`), `version`, RFC 3339 millisecond timestamps, `ETag: "<version>"`, `Location` on
//! 201, problem+json errors, a multi-threaded tokio runtime with one worker per core.
//! Not a second implementation of the service: no owners, paging cursors, idempotency
//! or conditional writes.
//!
//! ```sh
//! inmem-server --addr 127.0.0.1:38085
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Reply};

#[derive(Parser)]
#[command(about = "In-memory baseline of the todo API for scripts/bench (no database, no logs)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:38085")]
    addr: SocketAddr,
    /// Map shards (each behind its own RwLock).
    #[arg(long, default_value_t = 64)]
    shards: usize,
}

#[derive(Clone)]
struct Todo {
    id: Uuid,
    title: String,
    completed: bool,
    order: Option<i32>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct TodoDto<'a> {
    id: String,
    title: &'a str,
    completed: bool,
    order: Option<i32>,
    url: String,
    version: i64,
    created_at: String,
    updated_at: String,
}

/// A create or PATCH body; read-only fields are ignored as the service does.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    title: Option<String>,
    completed: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    order: Option<Option<i32>>,
    #[serde(default, rename = "id")]
    _id: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "url")]
    _url: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "version")]
    _version: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<serde::de::IgnoredAny>,
}

fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i32>>, D::Error> {
    Option::<i32>::deserialize(d).map(Some)
}

struct Store {
    shards: Vec<RwLock<HashMap<Uuid, Todo>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Store {
    fn new(n: usize) -> Self {
        Self {
            shards: (0..n.max(1)).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard(&self, id: &Uuid) -> &RwLock<HashMap<Uuid, Todo>> {
        let i = (self.hasher.hash_one(id) as usize) % self.shards.len();
        &self.shards[i]
    }
}

type Shared = Arc<Store>;

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

fn todo_response(todo: &Todo, base: &str, status: StatusCode) -> Response {
    let url = format!("{base}/api/todos/{}", todo.id);
    let dto = TodoDto {
        id: todo.id.to_string(),
        title: &todo.title,
        completed: todo.completed,
        order: todo.order,
        url,
        version: todo.version,
        created_at: timestamp(todo.created_at),
        updated_at: timestamp(todo.updated_at),
    };
    let location = (status == StatusCode::CREATED)
        .then(|| HeaderValue::from_str(&dto.url).ok())
        .flatten();
    let mut r = warp::reply::with_status(warp::reply::json(&dto), status).into_response();
    let h = r.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{}\"", todo.version)) {
        h.insert(header::ETAG, tag);
    }
    if let Some(location) = location {
        h.insert(header::LOCATION, location);
    }
    r
}

fn valid_title(t: &str) -> bool {
    let n = t.chars().count();
    (1..=1000).contains(&n) && !t.trim().is_empty() && !t.chars().any(char::is_control)
}

#[allow(clippy::result_large_err)] // an error is a whole response, answered as is
fn decode(headers: &HeaderMap, body: &Bytes) -> Result<Body, Response> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
    if !json {
        return Err(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| problem(StatusCode::BAD_REQUEST, &e.to_string()))
}

fn create(store: Shared, headers: HeaderMap, body: Bytes) -> Response {
    let b = match decode(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(title) = b.title.filter(|t| valid_title(t)) else {
        return problem(StatusCode::BAD_REQUEST, "title: 1-1000 characters required");
    };
    let now = Utc::now();
    let todo = Todo {
        id: Uuid::now_v7(),
        title,
        completed: b.completed.unwrap_or(false),
        order: b.order.flatten(),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let response = todo_response(&todo, &base(&headers), StatusCode::CREATED);
    store
        .shard(&todo.id)
        .write()
        .expect("lock")
        .insert(todo.id, todo);
    response
}

fn get(store: Shared, id: String, headers: HeaderMap) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return problem(StatusCode::NOT_FOUND, "no such todo");
    };
    let shard = store.shard(&id).read().expect("lock");
    match shard.get(&id) {
        None => problem(StatusCode::NOT_FOUND, "no such todo"),
        Some(todo) => {
            let tag = format!("\"{}\"", todo.version);
            let hit = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
            if hit {
                let mut r = StatusCode::NOT_MODIFIED.into_response();
                if let Ok(v) = HeaderValue::from_str(&tag) {
                    r.headers_mut().insert(header::ETAG, v);
                }
                return r;
            }
            todo_response(todo, &base(&headers), StatusCode::OK)
        }
    }
}

fn patch(store: Shared, id: String, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return problem(StatusCode::NOT_FOUND, "no such todo");
    };
    let b = match decode(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.title.as_deref().is_some_and(|t| !valid_title(t)) {
        return problem(StatusCode::BAD_REQUEST, "title: 1-1000 characters");
    }
    if b.title.is_none() && b.completed.is_none() && b.order.is_none() {
        return problem(
            StatusCode::BAD_REQUEST,
            "give at least one of title, completed, order",
        );
    }
    let mut shard = store.shard(&id).write().expect("lock");
    let Some(todo) = shard.get_mut(&id) else {
        return problem(StatusCode::NOT_FOUND, "no such todo");
    };
    if let Some(t) = b.title {
        todo.title = t;
    }
    if let Some(c) = b.completed {
        todo.completed = c;
    }
    if let Some(o) = b.order {
        todo.order = o;
    }
    todo.version += 1;
    todo.updated_at = Utc::now();
    todo_response(todo, &base(&headers), StatusCode::OK)
}

#[derive(Deserialize)]
struct ListQuery {
    completed: Option<bool>,
    limit: Option<usize>,
}

fn list(store: Shared, q: ListQuery, headers: HeaderMap) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut all: Vec<Todo> = Vec::new();
    for shard in &store.shards {
        let shard = shard.read().expect("lock");
        all.extend(
            shard
                .values()
                .filter(|t| q.completed.is_none_or(|c| t.completed == c))
                .cloned(),
        );
    }
    // the service's order: `order` (nulls last), then created_at, then id
    all.sort_by(|a, b| {
        (a.order.is_none(), a.order, a.created_at, a.id).cmp(&(
            b.order.is_none(),
            b.order,
            b.created_at,
            b.id,
        ))
    });
    all.truncate(limit);
    let base = base(&headers);
    let dtos: Vec<TodoDto<'_>> = all
        .iter()
        .map(|t| TodoDto {
            id: t.id.to_string(),
            title: &t.title,
            completed: t.completed,
            order: t.order,
            url: format!("{base}/api/todos/{}", t.id),
            version: t.version,
            created_at: timestamp(t.created_at),
            updated_at: timestamp(t.updated_at),
        })
        .collect();
    warp::reply::json(&dtos).into_response()
}

fn with_store(store: Shared) -> impl Filter<Extract = (Shared,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&store))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let store: Shared = Arc::new(Store::new(args.shards));
    let headers = || warp::header::headers_cloned();
    let body = || warp::body::content_length_limit(64 * 1024).and(warp::body::bytes());

    let health = warp::path!("health")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "healthy"})).into_response());
    let list = warp::path!("api" / "todos")
        .and(warp::get())
        .and(with_store(Arc::clone(&store)))
        .and(warp::query::<ListQuery>())
        .and(headers())
        .map(list);
    let create = warp::path!("api" / "todos")
        .and(warp::post())
        .and(with_store(Arc::clone(&store)))
        .and(headers())
        .and(body())
        .map(create);
    let get = warp::path!("api" / "todos" / String)
        .and(warp::get())
        .and(with_store(Arc::clone(&store)))
        .and(headers())
        .map(|id, store, headers| get(store, id, headers));
    let patch = warp::path!("api" / "todos" / String)
        .and(warp::patch())
        .and(with_store(store))
        .and(headers())
        .and(body())
        .map(|id, store, headers, body| patch(store, id, headers, body));
    let routes = health
        .or(list)
        .unify()
        .or(create)
        .unify()
        .or(get)
        .unify()
        .or(patch)
        .unify();
    warp::serve(routes).run(args.addr).await;
}
