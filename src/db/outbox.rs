//! The transactional outbox (`migrations/V4`): the writer inserts an event in the
//! statement of every change (`batch.rs`); here the relay gives events their commit-order
//! `seq`, readers fetch them by `seq`, the publisher records how far NATS has them, and
//! old ones are purged.

use std::future::Future;

use deadpool_postgres::Pool;
use todo_actors::domain::{Owner, Todo, TodoId};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::DbError;
use super::keys::StoredTodo;

/// Key of the advisory lock that makes one relay at a time assign `seq`.
const SEQUENCER_LOCK: i64 = 0x746f_646f_5f73_6571; // "todo_seq"
/// Key of the advisory lock that makes one replica at a time publish to NATS.
const PUBLISHER_LOCK: i64 = 0x746f_646f_5f70_7562; // "todo_pub"

/// The channel on which the relay announces newly sequenced events (payload: the
/// highest `seq`).
pub const CHANNEL: &str = "todo_outbox";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A todo was created.
    Created,
    /// A todo was changed.
    Updated,
    /// A todo was deleted (one event per todo of a clear).
    Deleted,
}

impl EventKind {
    /// `created`, `updated` or `deleted`: the SSE event name and the NATS subject's
    /// last token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Result<Self, DbError> {
        match s {
            "created" => Ok(Self::Created),
            "updated" => Ok(Self::Updated),
            "deleted" => Ok(Self::Deleted),
            other => Err(DbError::Decode(format!("unknown event kind {other:?}"))),
        }
    }
}

/// One committed change, in commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its place in the commit order (the event id).
    pub seq: i64,
    /// Whose todo.
    pub owner: Owner,
    /// What happened.
    pub kind: EventKind,
    /// Which todo.
    pub todo_id: TodoId,
    /// The replica whose writer made the change.
    pub replica: Uuid,
    /// The todo after the change (`None` when deleted).
    pub todo: Option<Todo>,
    /// The W3C `traceparent` of the request that made the change, if it had one.
    pub traceparent: Option<String>,
}

const EVENT_COLUMNS: &str = "seq, owner, kind, todo_id, replica, payload, traceparent";

fn event_from_row(row: &Row) -> Result<Event, DbError> {
    let kind = EventKind::parse(row.try_get("kind")?)?;
    let todo = match kind {
        EventKind::Deleted => None,
        _ => {
            let payload: &str = row.try_get("payload")?;
            let stored: StoredTodo = serde_json::from_str(payload)
                .map_err(|e| DbError::Decode(format!("outbox payload: {e}")))?;
            Some(stored.into())
        }
    };
    Ok(Event {
        seq: row.try_get("seq")?,
        owner: Owner::from_stored(row.try_get("owner")?),
        kind,
        todo_id: TodoId::from_uuid(row.try_get("todo_id")?),
        replica: row.try_get("replica")?,
        todo,
        traceparent: row.try_get("traceparent")?,
    })
}

/// Where the outbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    /// The highest `seq` assigned.
    pub last_seq: i64,
    /// Events up to here are on NATS.
    pub published_seq: i64,
    /// Events up to here are purged.
    pub purged_seq: i64,
}

/// Reads the outbox state.
///
/// # Errors
/// [`DbError`] when the query fails.
pub async fn state<C: GenericClient + Sync>(client: &C) -> Result<State, DbError> {
    let row = client
        .query_one(
            "SELECT last_seq, published_seq, purged_seq FROM outbox_state",
            &[],
        )
        .await?;
    Ok(State {
        last_seq: row.try_get(0)?,
        published_seq: row.try_get(1)?,
        purged_seq: row.try_get(2)?,
    })
}

/// Events not yet on NATS (sequenced or not).
///
/// # Errors
/// [`DbError`] when the query fails.
pub async fn pending<C: GenericClient + Sync>(client: &C) -> Result<i64, DbError> {
    let row = client
        .query_one(
            "SELECT (SELECT last_seq - published_seq FROM outbox_state)
                  + (SELECT count(*) FROM outbox WHERE seq IS NULL)",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// What a sequencing round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequenced {
    /// Another relay holds the lock: try again shortly.
    Busy,
    /// This many events got a `seq` (possibly 0); the highest `seq` is now `last_seq`.
    Done {
        /// Events sequenced now.
        count: usize,
        /// The highest `seq` assigned so far.
        last_seq: i64,
    },
}

/// Gives the oldest `limit` visible events without a `seq` theirs, in insertion order,
/// under the sequencer lock, and announces the new highest `seq` on [`CHANNEL`]. With
/// `published` (no NATS to publish to), the events count as published at once.
///
/// # Errors
/// [`DbError`] when a statement fails (nothing is assigned then).
pub async fn sequence(pool: &Pool, limit: i64, published: bool) -> Result<Sequenced, DbError> {
    let mut client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    let tx = client.transaction().await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SEQUENCER_LOCK])
        .await?
        .try_get(0)?;
    if !locked {
        return Ok(Sequenced::Busy);
    }
    let ids: Vec<i64> = tx
        .query(
            "SELECT id FROM outbox WHERE seq IS NULL ORDER BY id LIMIT $1",
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let count = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    let last_seq: i64 = tx
        .query_one(
            "UPDATE outbox_state SET last_seq = last_seq + $1,
                 published_seq = CASE WHEN $2 THEN last_seq + $1 ELSE published_seq END
             RETURNING last_seq",
            &[&count, &published],
        )
        .await?
        .try_get(0)?;
    if count > 0 {
        tx.execute(
            "UPDATE outbox o SET seq = $2::int8 - $3::int8 + n.ord
             FROM unnest($1::int8[]) WITH ORDINALITY AS n(id, ord)
             WHERE o.id = n.id",
            &[&ids, &last_seq, &count],
        )
        .await?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &last_seq.to_string()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Sequenced::Done {
        count: ids.len(),
        last_seq,
    })
}

/// Up to `limit` events after `after`, in order.
///
/// # Errors
/// [`DbError`] when the query fails or a row does not decode.
pub async fn events_after<C: GenericClient + Sync>(
    client: &C,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, DbError> {
    client
        .query(
            &format!("SELECT {EVENT_COLUMNS} FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2"),
            &[&after, &limit],
        )
        .await?
        .iter()
        .map(event_from_row)
        .collect()
}

/// Up to `limit` of `owner`'s events after `after`, in order, and the purge watermark
/// (events at or below it are gone).
///
/// # Errors
/// [`DbError`] when no connection answers or the query fails.
pub async fn owner_events_after(
    pool: &Pool,
    owner: &Owner,
    after: i64,
    limit: i64,
) -> Result<(Vec<Event>, State), DbError> {
    let client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM outbox
             WHERE owner = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .await?;
    let events = client
        .query(&statement, &[&owner.as_ref(), &after, &limit])
        .await?
        .iter()
        .map(event_from_row)
        .collect::<Result<_, _>>()?;
    Ok((events, state(&**client).await?))
}

/// Publishes the next events to NATS, one replica at a time: under the publisher lock,
/// hands up to `limit` events after `published_seq` to `publish` (which must return
/// only once every one of them is acknowledged), then records the new `published_seq`.
/// Returns how many were published (0 when another replica holds the lock).
///
/// # Errors
/// [`DbError`] when a statement fails; `publish`'s error as [`DbError::Publish`].
pub async fn publish_next<F, Fut>(pool: &Pool, limit: i64, publish: F) -> Result<usize, DbError>
where
    F: FnOnce(Vec<Event>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    let tx = client.transaction().await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PUBLISHER_LOCK])
        .await?
        .try_get(0)?;
    if !locked {
        return Ok(0);
    }
    let from = state(&*tx).await?.published_seq;
    let events = events_after(&*tx, from, limit).await?;
    let Some(upto) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    let n = events.len();
    publish(events).await.map_err(DbError::Publish)?;
    tx.execute(
        "UPDATE outbox_state SET published_seq = GREATEST(published_seq, $1)",
        &[&upto],
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Deletes published events older than `retention`, up to `chunk` at a time, and moves
/// the purge watermark. Returns how many were deleted.
///
/// # Errors
/// [`DbError`] when a statement fails.
pub async fn purge(
    pool: &Pool,
    retention: std::time::Duration,
    chunk: i64,
) -> Result<u64, DbError> {
    let client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    let seconds = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let mut total = 0;
    loop {
        let row = client
            .query_one(
                "WITH gone AS (
                   DELETE FROM outbox WHERE id IN (
                     SELECT id FROM outbox
                     WHERE seq <= (SELECT published_seq FROM outbox_state)
                       AND created_at < now() - make_interval(secs => $1)
                     ORDER BY seq LIMIT $2)
                   RETURNING seq),
                 moved AS (
                   UPDATE outbox_state SET purged_seq = GREATEST(purged_seq, (SELECT max(seq) FROM gone))
                   WHERE EXISTS (SELECT 1 FROM gone))
                 SELECT count(*) FROM gone",
                &[&(seconds as f64), &chunk],
            )
            .await?;
        let n: i64 = row.try_get(0)?;
        total += u64::try_from(n).unwrap_or(0);
        if n < chunk {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
