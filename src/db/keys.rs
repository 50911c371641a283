//! The `idempotency_keys` table: the stored first result of an idempotent request, written
//! in the transaction of its change (by `batch.rs`), read back by the query shards (and
//! by the application layer while a shard restarts), purged after 24 hours.
//!
//! A stored result is transport-neutral: what the request did (`outcome`: created or
//! updated) and the todo it answered with. Rows written before migration V3 have no
//! `outcome` (it is derived from their HTTP status) and a request hash of another scheme
//! (method, path and raw body), which no request can match now: they are replayed
//! without comparing hashes (`hash_scheme` 1) until they expire. The status is still
//! written for replicas of the previous release during a rolling update.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use todo_actors::domain::{Owner, ReplyOutcome, StoredReply, Todo, TodoId};
use tokio_postgres::Row;
use uuid::Uuid;

use super::DbError;

/// The hash scheme of rows this release writes: a hash of the parsed command.
pub const HASH_SCHEME: i16 = 2;

/// Looks up an owner's unexpired key; `$1` owner, `$2` key.
pub const SELECT_REPLY: &str =
    "SELECT request_hash, hash_scheme, outcome, status_code, response_body
     FROM idempotency_keys
     WHERE owner = $1 AND key = $2 AND created_at > now() - interval '24 hours'";

/// Purges the named keys if expired, so they can be taken again.
pub const PURGE_NAMED: &str = "DELETE FROM idempotency_keys
     WHERE (owner, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
       AND created_at < now() - interval '24 hours'";

/// Stores results (a key already taken fails with a unique violation).
pub const INSERT_REPLIES: &str = "INSERT INTO idempotency_keys
       (owner, key, request_hash, hash_scheme, outcome, status_code, response_body)
     SELECT o, k, h, $6::int2, oc, s, b
     FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::int2[], $7::bytea[])
          AS u(o, k, h, oc, s, b)";

/// The status code a replica of the previous release replays for `outcome`.
pub fn legacy_status(outcome: ReplyOutcome) -> i16 {
    match outcome {
        ReplyOutcome::Created => 201,
        ReplyOutcome::Updated => 200,
    }
}

/// A todo as stored in an idempotent reply.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StoredTodo {
    id: Uuid,
    owner: String,
    title: String,
    completed: bool,
    order: Option<i32>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&Todo> for StoredTodo {
    fn from(t: &Todo) -> Self {
        Self {
            id: t.id.into_inner(),
            owner: t.owner.as_ref().to_owned(),
            title: t.title.clone(),
            completed: t.completed,
            order: t.order,
            version: t.version,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

impl From<StoredTodo> for Todo {
    fn from(t: StoredTodo) -> Self {
        Self {
            id: TodoId::from_uuid(t.id),
            owner: Owner::from_stored(t.owner),
            title: t.title,
            completed: t.completed,
            order: t.order,
            version: t.version,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Decodes a row of [`SELECT_REPLY`].
///
/// # Errors
/// A message when the row does not decode.
pub fn reply_from_row(row: &Row) -> Result<StoredReply, String> {
    let text = |e: tokio_postgres::Error| super::error::describe(&e);
    let hash: Vec<u8> = row.try_get(0).map_err(text)?;
    let scheme: i16 = row.try_get(1).map_err(text)?;
    let outcome: Option<String> = row.try_get(2).map_err(text)?;
    let status: Option<i16> = row.try_get(3).map_err(text)?;
    let body: Vec<u8> = row.try_get(4).map_err(text)?;
    let outcome = match (outcome.as_deref().and_then(ReplyOutcome::parse), status) {
        (Some(o), _) => o,
        (None, Some(201)) => ReplyOutcome::Created,
        (None, _) => ReplyOutcome::Updated,
    };
    let stored: StoredTodo =
        serde_json::from_slice(&body).map_err(|e| format!("stored idempotent reply: {e}"))?;
    Ok(StoredReply {
        request_hash: (scheme >= HASH_SCHEME).then_some(hash),
        outcome,
        todo: stored.into(),
    })
}

/// Reads an unexpired key on a pooled connection (while the owner's shard restarts).
///
/// # Errors
/// [`DbError`] when no connection answers, the query fails or the row does not decode.
pub async fn lookup(pool: &Pool, owner: &Owner, key: &str) -> Result<Option<StoredReply>, DbError> {
    let client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    let statement = client.prepare_cached(SELECT_REPLY).await?;
    let row = client
        .query_opt(&statement, &[&owner.as_ref(), &key])
        .await?;
    row.as_ref()
        .map(reply_from_row)
        .transpose()
        .map_err(DbError::Decode)
}

/// Rows deleted per statement by [`purge_expired`], so a purge never holds many row
/// locks or blocks the writer for long.
const PURGE_CHUNK: i64 = 1000;

/// Deletes idempotency keys older than 24 hours, a chunk at a time, on a pooled
/// connection (never the writer's). Returns how many were deleted.
///
/// # Errors
/// [`DbError`] when no connection answers or a delete fails.
pub async fn purge_expired(pool: &Pool) -> Result<u64, DbError> {
    let client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    let statement = client
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE ctid IN (
                 SELECT ctid FROM idempotency_keys
                 WHERE created_at < now() - interval '24 hours'
                 LIMIT $1)",
        )
        .await?;
    let mut total = 0;
    loop {
        let n = client.execute(&statement, &[&PURGE_CHUNK]).await?;
        total += n;
        if n < PURGE_CHUNK as u64 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
