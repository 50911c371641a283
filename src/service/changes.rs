//! The live change feed as the application layer serves it: a [`ChangeStream`] of the
//! caller's changes in commit order, from a resume point (`Last-Event-ID`), with no event
//! lost or repeated. Live events come from this replica's [`FeedHub`]; what a stream
//! missed (before it opened, or while it lagged behind a burst) is read from the outbox.
//!
//! [`FeedHub`]: crate::feed::FeedHub

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::ServiceError;
use crate::db::outbox::{self, Event};
use crate::feed::{FeedItem, Subscription};

/// Events read from the outbox at a time; a client further behind must list again.
pub const BACKLOG_LIMIT: i64 = 10_000;

/// A stream of one owner's changes.
pub struct ChangeStream {
    live: Subscription,
    pool: Pool,
    timeout: Duration,
    /// The last event id handed out (or the client's resume point).
    last: i64,
    pending: VecDeque<Arc<Event>>,
    done: bool,
}

impl ChangeStream {
    /// A stream that has `live` and, after `last_event_id`, first what it missed.
    ///
    /// # Errors
    /// 503 when the outbox cannot be read.
    pub(super) async fn open(
        live: Subscription,
        pool: Pool,
        timeout: Duration,
        last_event_id: Option<i64>,
    ) -> Result<Self, ServiceError> {
        let mut stream = Self {
            live,
            pool,
            timeout,
            last: 0,
            pending: VecDeque::new(),
            done: false,
        };
        if let Some(after) = last_event_id {
            stream.last = after;
            stream.catch_up().await?;
        }
        Ok(stream)
    }

    /// Reads what was missed since `last` into `pending`; a gap ends the stream.
    async fn catch_up(&mut self) -> Result<(), ServiceError> {
        let read =
            outbox::owner_events_after(&self.pool, self.live.owner(), self.last, BACKLOG_LIMIT);
        let (events, state) = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| ServiceError::Unavailable("the database did not answer in time".into()))?
            .map_err(|e| {
                tracing::warn!(error.message = %e, error.cause_chain = ?e,
                    "reading missed feed events failed");
                ServiceError::Unavailable("the database is unreachable".into())
            })?;
        if self.last < state.purged_seq || events.len() as i64 == BACKLOG_LIMIT {
            self.pending.clear();
            self.done = true;
            return Err(ServiceError::Gone);
        }
        self.pending.extend(events.into_iter().map(Arc::new));
        Ok(())
    }

    /// The next change; [`FeedItem::Gap`] when changes were lost (the client must list
    /// again), `None` when the stream ends (the hub closed it, or the outbox could not be
    /// read: the client resumes with `Last-Event-ID`).
    pub async fn next(&mut self) -> Option<FeedItem> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.seq <= self.last {
                    continue;
                }
                self.last = event.seq;
                return Some(FeedItem::Event(event));
            }
            if self.done {
                return None;
            }
            if self.live.must_catch_up() {
                // Rejoin first: what commits while the outbox is read is queued, and
                // what is in both is skipped by `last`.
                self.live.rejoin();
                match self.catch_up().await {
                    Ok(()) => continue,
                    Err(ServiceError::Gone) => return Some(FeedItem::Gap),
                    Err(_) => return None,
                }
            }
            match self.live.recv().await {
                Some(FeedItem::Event(e)) if e.seq <= self.last => {}
                Some(FeedItem::Event(e)) => {
                    self.last = e.seq;
                    return Some(FeedItem::Event(e));
                }
                Some(FeedItem::Gap) => {
                    self.done = true;
                    return Some(FeedItem::Gap);
                }
                None => return None,
            }
        }
    }
}
