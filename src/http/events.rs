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
use super::server::ConnectionCloser;
use super::{Ctx, RequestId, request_id, with_ctx};
use crate::db::outbox::{Event, EventKind};
use crate::feed::FeedItem;
use crate::service::wire::{TodoDto, base_url};
use crate::service::{ChangeStream, ServiceError};

/// How often an idle stream gets a comment.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// `/api/todos/events`: GET, and 405 for anything else.
pub fn route(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let path = || warp::path!("api" / "todos" / "events");
    let get = path()
        .and(warp::get())
        .and(with_ctx(ctx))
        .and(request_id())
        .and(warp::ext::optional::<ConnectionCloser>())
        .and(super::headers())
        .then(change_feed);
    let other = path().map(|| ApiError::MethodNotAllowed("GET, OPTIONS").into_response());
    get.or(other).unify()
}

/// `GET /api/todos/events`
async fn change_feed(
    ctx: Ctx,
    id: RequestId,
    closer: Option<ConnectionCloser>,
    headers: Arc<HeaderMap>,
) -> Response {
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
        let closer = closer.map(|c| c.0);
        Ok::<_, ApiError>(ctx.service.subscribe(&call, last, closer).await)
    }
    .await;
    let events = match opened {
        Err(e) => return e.into_response(),
        Ok(Err(ServiceError::Gone)) => stream::iter(vec![Ok(gap_event())]).left_stream(),
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Ok(Ok(changes)) => {
            let base = base_url(ctx.public_url.as_deref(), |name| {
                headers.get(name).and_then(|v| v.to_str().ok())
            });
            sse_events(changes, base).right_stream()
        }
    };
    warp::sse::reply(warp::sse::keep_alive().interval(HEARTBEAT).stream(events)).into_response()
}

/// The stream of SSE events, ending with an `error` event when changes were lost. A
/// task drives the change stream and hands events over a small queue (warp wants a
/// `Sync` stream); it ends as soon as the client is gone.
fn sse_events(
    mut changes: ChangeStream,
    base: String,
) -> impl Stream<Item = Result<Sse, Infallible>> + Send + Sync + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Sse>(16);
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                item = changes.next() => item,
                () = tx.closed() => return,
            };
            let (event, last) = match item {
                Some(FeedItem::Event(e)) => (sse(&e, &base), false),
                Some(FeedItem::Gap) => (gap_event(), true),
                None => return,
            };
            if tx.send(event).await.is_err() || last {
                return;
            }
        }
    });
    stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
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
    let problem = ServiceError::Gone.problem();
    Sse::default()
        .event("error")
        .data(String::from_utf8(problem.to_json()).unwrap_or_default())
}
