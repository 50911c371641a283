//! `GET /api/todos/events`: the live change feed of the caller's todos as Server-Sent
//! Events. A translation of [`crate::service::TodoService::subscribe`]: `id:` is the
//! event's commit-order id, `event:` is `created`, `updated` or `deleted`, `data:` the
//! todo as the API shows it (for a deletion, its `id`). `Last-Event-ID` resumes; when the
//! missed events are gone, an `error` event (a problem document) tells the client to
//! list again, and the stream ends. A comment every 15 s keeps proxies from closing an
//! idle stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use http::HeaderMap;
use warp::reply::Response;
use warp::sse::Event as Sse;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::{Ctx, RequestId, request_id, with_ctx};
use crate::db::outbox::{Event, EventKind};
use crate::feed::FeedItem;
use crate::service::wire::{TodoDto, base_url};
use crate::service::{ChangeStream, Problem, ServiceError};

/// How often an idle stream gets a comment.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// `/api/todos/events`: GET, and 405 for anything else.
pub fn route(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let path = || warp::path!("api" / "todos" / "events");
    let get = path()
        .and(warp::get())
        .and(with_ctx(ctx))
        .and(request_id())
        .and(warp::header::headers_cloned())
        .then(change_feed);
    let other = path().map(|| ApiError::MethodNotAllowed("GET, OPTIONS").into_response());
    get.or(other).unify()
}

/// `GET /api/todos/events`
async fn change_feed(ctx: Ctx, id: RequestId, headers: HeaderMap) -> Response {
    let opened = async {
        let call = ctx.call(&headers, &id)?;
        let last = match headers.get("last-event-id") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        ServiceError::field("Last-Event-ID", "must be an event id this feed sent")
                    })?,
            ),
        };
        Ok::<_, ApiError>(ctx.service.subscribe(&call, last).await?)
    }
    .await;
    match opened {
        Ok(changes) => {
            let base = base_url(ctx.public_url.as_deref(), |name| {
                headers.get(name).and_then(|v| v.to_str().ok())
            });
            let events = sse_events(changes, base);
            warp::sse::reply(warp::sse::keep_alive().interval(HEARTBEAT).stream(events))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The stream of SSE events: the backlog, then live changes, ending with an `error`
/// event when changes were lost, or when the consumer was cut off for being too slow.
fn sse_events(
    changes: ChangeStream,
    base: String,
) -> impl Stream<Item = Result<Sse, Infallible>> + Send + 'static {
    let base = Arc::new(base);
    let ChangeStream {
        backlog,
        gap,
        live,
        resume_after,
    } = changes;
    if gap {
        return stream::iter(vec![Ok(gap_event())]).left_stream();
    }
    let first = {
        let base = Arc::clone(&base);
        stream::iter(backlog.into_iter().map(move |e| Ok(sse(&e, &base))))
    };
    let live = stream::unfold(
        (live, resume_after, false),
        move |(mut sub, after, done)| {
            let base = Arc::clone(&base);
            async move {
                if done {
                    return None;
                }
                loop {
                    match sub.rx.recv().await {
                        Some(FeedItem::Event(e)) if e.seq <= after => continue,
                        Some(FeedItem::Event(e)) => {
                            let seq = e.seq;
                            return Some((Ok(sse(&e, &base)), (sub, seq, false)));
                        }
                        Some(FeedItem::Gap) => return Some((Ok(gap_event()), (sub, after, true))),
                        // Cut off for being too slow: it resumes with Last-Event-ID.
                        None => return None,
                    }
                }
            }
        },
    );
    first.chain(live).right_stream()
}

fn sse(event: &Event, base: &str) -> Sse {
    let data = match (&event.todo, event.kind) {
        (Some(todo), EventKind::Created | EventKind::Updated) => {
            serde_json::to_string(&TodoDto::new(todo, base)).unwrap_or_default()
        }
        _ => serde_json::json!({ "id": event.todo_id.to_string() }).to_string(),
    };
    Sse::default()
        .id(event.seq.to_string())
        .event(event.kind.as_str())
        .data(data)
}

/// Events were lost: the client must list again (and may open a new feed without
/// `Last-Event-ID`).
fn gap_event() -> Sse {
    let problem = Problem::new(
        410,
        "events since the given Last-Event-ID are no longer kept: list the todos again, \
         then open the feed without Last-Event-ID",
    );
    Sse::default()
        .event("error")
        .data(String::from_utf8(problem.to_json()).unwrap_or_default())
}
