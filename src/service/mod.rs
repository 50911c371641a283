//! The application layer: every operation on todos, once. The HTTP handlers and the NATS
//! endpoints decode their wire format (with [`wire`]), call one function of
//! [`TodoService`], and encode its outcome or [`ServiceError`]; no business rule lives in
//! an edge.
//!
//! Each operation:
//! - is scoped by the caller's owner ([`Call`]; authentication is [`crate::auth`]'s);
//! - passes admission control first: at most `MAX_IN_FLIGHT` operations run at once,
//!   and one more is answered 503 at once instead of queueing without bound (it counts
//!   work in progress, not connections: a client still sending its body holds nothing);
//! - waits for its actor at most the request timeout;
//! - for creates and changes, honours an idempotency key: the first result is stored in
//!   the transaction of the change and replayed for 24 hours, the same key with another
//!   command is refused, and a key in flight here is a conflict ([`idempotency`]);
//! - for lists, applies the paging rules and the cursor ([`paging`]).

pub mod changes;
pub mod conditional;
pub mod error;
pub mod idempotency;
pub mod paging;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use todo_actors::domain::{
    IdempotencyKey, ListQuery, NewTodo, Owner, ReplyOutcome, StoredReply, Todo, TodoChange, TodoId,
    WriteCommand, WriteEffect, now,
};
use todo_actors::handles::ActorHandles;
use todo_actors::metrics::ReadSource;
use todo_actors::shard::{ReadOutcome, ShardMessage};
use todo_actors::slot::CallError;
use todo_actors::writer::{Origin, WriterMessage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

pub use error::{FieldError, Problem, ServiceError};
use idempotency::{Key, KeysInFlight};

pub use changes::ChangeStream;

use crate::feed::FeedHub;
use crate::telemetry;

/// A fresh request id: a per-process random prefix and a counter (no system call per
/// request, unlike a random UUID). Both edges use it when the caller sent none.
pub fn new_request_id() -> Arc<str> {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::now_v7().simple().to_string());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Arc::from(format!("{prefix}-{n:x}"))
}

/// Who is asking, and for which request.
#[derive(Debug, Clone)]
pub struct Call {
    /// The authenticated owner: every read and write is scoped by it.
    pub owner: Owner,
    /// The request id (into logs, spans and the writer's batch lines).
    pub request_id: Arc<str>,
}

/// A created or changed todo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The todo as committed (or as the first request got it, when replayed).
    pub todo: Todo,
    /// Created or updated.
    pub outcome: ReplyOutcome,
    /// True when this is the stored result of an earlier request with the same key.
    pub replayed: bool,
}

/// Where a read was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// The shard's cache, kept exact.
    Hit,
    /// PostgreSQL.
    Miss,
    /// The cache while PostgreSQL is unreachable.
    Stale,
}

impl CacheState {
    /// `hit`, `miss` or `stale` (the `X-Cache` header).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }
}

/// One todo, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The todo.
    pub todo: Todo,
    /// Where it came from.
    pub cache: CacheState,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The todos, in list order.
    pub todos: Vec<Todo>,
    /// The page size that was used.
    pub limit: u32,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// The settings of the application layer.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Longest wait for an actor.
    pub request_timeout: Duration,
    /// Operations in flight at once (`MAX_IN_FLIGHT`).
    pub max_in_flight: usize,
    /// Upper bound on the idempotency lookup that bypasses a restarting shard.
    pub db_timeout: Duration,
}

/// The application layer.
pub struct TodoService {
    handles: Arc<ActorHandles>,
    settings: ServiceSettings,
    admission: Arc<Semaphore>,
    keys_in_flight: KeysInFlight,
    /// Reads idempotency keys straight from PostgreSQL while the owner's shard restarts,
    /// and a resumed feed's backlog.
    pool: Pool,
    /// The live change feed of this replica.
    feed: Arc<FeedHub>,
}

impl TodoService {
    /// The service over the actors in `handles`.
    pub fn new(
        handles: Arc<ActorHandles>,
        settings: ServiceSettings,
        pool: Pool,
        feed: Arc<FeedHub>,
    ) -> Self {
        Self {
            handles,
            admission: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            settings,
            keys_in_flight: KeysInFlight::default(),
            pool,
            feed,
        }
    }

    /// The actors.
    pub fn handles(&self) -> &Arc<ActorHandles> {
        &self.handles
    }

    /// Operations running now.
    pub fn in_flight(&self) -> usize {
        self.settings
            .max_in_flight
            .max(1)
            .saturating_sub(self.admission.available_permits())
    }

    /// Takes a slot of `MAX_IN_FLIGHT`, or refuses at once.
    fn admit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        Arc::clone(&self.admission)
            .try_acquire_owned()
            .map_err(|_| {
                ServiceError::Unavailable("overloaded: too many requests in flight".into())
            })
    }

    /// Creates a todo (`POST /api/todos`, `todo.create`, `todo.cmd.create`).
    ///
    /// # Errors
    /// See [`ServiceError`]: 409/422 for idempotency keys, 503 when overloaded or a
    /// dependency is down.
    pub async fn create(
        &self,
        call: &Call,
        new: NewTodo,
        key: Option<Key>,
    ) -> Result<Written, ServiceError> {
        let _permit = self.admit()?;
        let key = key.map(|k| (k, idempotency::hash_create(&new)));
        let todo = Todo::create(TodoId::generate(), call.owner.clone(), new, now());
        self.write_once(call, key, |idempotency| WriteCommand::Create {
            todo,
            idempotency,
        })
        .await
    }

    /// Changes the given fields of a todo (`PATCH`, `todo.update`, `todo.cmd.update`),
    /// at one of the `if_match` versions when given.
    ///
    /// # Errors
    /// 404 unknown todo, 412 version mismatch, and see [`TodoService::create`].
    pub async fn patch(
        &self,
        call: &Call,
        id: TodoId,
        change: TodoChange,
        if_match: Option<Vec<i64>>,
        key: Option<Key>,
    ) -> Result<Written, ServiceError> {
        let _permit = self.admit()?;
        let key = key.map(|k| (k, idempotency::hash_patch(id, &change, if_match.as_deref())));
        self.write_once(call, key, |idempotency| {
            update(call, id, change, if_match, idempotency)
        })
        .await
    }

    /// Replaces a todo's title, completion and order (`PUT`, `todo.replace`): idempotent
    /// by nature, so it takes no key.
    ///
    /// # Errors
    /// 404 unknown todo, 412 version mismatch, 503.
    pub async fn replace(
        &self,
        call: &Call,
        id: TodoId,
        new: NewTodo,
        if_match: Option<Vec<i64>>,
    ) -> Result<Written, ServiceError> {
        let _permit = self.admit()?;
        let command = update(call, id, TodoChange::Replace(new), if_match, None);
        self.write(call, command).await.and_then(fresh)
    }

    /// Deletes a todo (`DELETE /api/todos/{id}`, `todo.delete`, `todo.cmd.delete`).
    ///
    /// # Errors
    /// 404 unknown todo, 412 version mismatch, 503.
    pub async fn delete(
        &self,
        call: &Call,
        id: TodoId,
        if_match: Option<Vec<i64>>,
    ) -> Result<(), ServiceError> {
        let _permit = self.admit()?;
        let command = WriteCommand::Delete {
            owner: call.owner.clone(),
            id,
            expected_versions: if_match,
        };
        self.write(call, command).await.map(|_| ())
    }

    /// Deletes all the caller's todos, or only the completed (or open) ones.
    ///
    /// # Errors
    /// 503.
    pub async fn clear(&self, call: &Call, completed: Option<bool>) -> Result<(), ServiceError> {
        let _permit = self.admit()?;
        let command = WriteCommand::Clear {
            owner: call.owner.clone(),
            completed,
        };
        self.write(call, command).await.map(|_| ())
    }

    /// Reads one todo.
    ///
    /// # Errors
    /// 404 unknown todo (or another owner's), 503.
    pub async fn get(&self, call: &Call, id: TodoId) -> Result<Fetched, ServiceError> {
        let _permit = self.admit()?;
        let owner = call.owner.clone();
        let span = tracing::info_span!(
            "shard.get",
            otel.kind = "internal",
            cache = tracing::field::Empty
        );
        let message_span = span.clone();
        let ReadOutcome {
            todo,
            source,
            stale,
        } = self
            .handles
            .shard_for(&call.owner)
            .call(
                |reply| ShardMessage::Get {
                    owner,
                    id,
                    span: message_span,
                    reply,
                },
                self.settings.request_timeout,
            )
            .instrument(span.clone())
            .await??;
        let cache = match (stale, source) {
            (true, _) => CacheState::Stale,
            (false, ReadSource::Cache) => CacheState::Hit,
            (false, ReadSource::Db) => CacheState::Miss,
        };
        span.record("cache", cache.as_str());
        Ok(Fetched { todo, cache })
    }

    /// One page of the caller's todos.
    ///
    /// # Errors
    /// 400 for a bad limit or cursor, 503.
    pub async fn list(&self, call: &Call, params: wire::ListParams) -> Result<Page, ServiceError> {
        let limit = paging::page_size(params.limit)?;
        let after = params
            .cursor
            .as_deref()
            .map(paging::decode_cursor)
            .transpose()?;
        let _permit = self.admit()?;
        let query = ListQuery {
            owner: call.owner.clone(),
            completed: params.completed,
            // One more than asked tells whether a next page exists.
            limit: limit + 1,
            after,
        };
        let span = tracing::info_span!("shard.list", otel.kind = "internal");
        let message_span = span.clone();
        let mut todos = self
            .handles
            .shard_for(&call.owner)
            .call(
                |reply| ShardMessage::List {
                    query,
                    span: message_span,
                    reply,
                },
                self.settings.request_timeout,
            )
            .instrument(span)
            .await??;
        let more = todos.len() > limit as usize;
        todos.truncate(limit as usize);
        let next = todos.last().filter(|_| more).map(paging::encode_cursor);
        Ok(Page { todos, limit, next })
    }

    /// Opens a live stream of the caller's changes, resuming after `last_event_id` (the
    /// events missed since come first). Streams hold no admission slot: they are bounded
    /// by `FEED_MAX_STREAMS` instead. `closer` closes the stream's connection, should its
    /// consumer not keep up.
    ///
    /// # Errors
    /// 503 when the replica has as many streams open as it may, or the outbox cannot be
    /// read; 410 when events after `last_event_id` are no longer kept.
    pub async fn subscribe(
        &self,
        call: &Call,
        last_event_id: Option<i64>,
        closer: Option<tokio_util::sync::CancellationToken>,
    ) -> Result<ChangeStream, ServiceError> {
        // Subscribe first, then read the missed events: nothing committed in between is
        // lost (what is in both is skipped).
        let live = self.feed.subscribe(&call.owner, closer).ok_or_else(|| {
            ServiceError::Unavailable("too many change feeds open on this replica".into())
        })?;
        ChangeStream::open(
            live,
            self.pool.clone(),
            self.settings.db_timeout,
            last_event_id,
        )
        .await
    }

    /// Writes `command`, honouring an idempotency key: a stored first result is
    /// replayed (422 when the key came with another command), a key in flight here is a
    /// 409, and a new result is stored with the change, in its transaction.
    async fn write_once(
        &self,
        call: &Call,
        key: Option<(Key, Vec<u8>)>,
        command: impl FnOnce(Option<IdempotencyKey>) -> WriteCommand,
    ) -> Result<Written, ServiceError> {
        let Some((key, request_hash)) = key else {
            return self.write(call, command(None)).await.and_then(fresh);
        };
        let _claim = self.keys_in_flight.claim(&call.owner, &key)?;
        if let Some(stored) = self.stored_reply(&call.owner, &key).await? {
            // Keys stored before hashes were of the parsed command have none to compare.
            if stored
                .request_hash
                .as_ref()
                .is_some_and(|h| *h != request_hash)
            {
                return Err(ServiceError::KeyReused);
            }
            return Ok(Written {
                todo: stored.todo,
                outcome: stored.outcome,
                replayed: true,
            });
        }
        let key = IdempotencyKey {
            key: key.as_str().to_owned(),
            request_hash,
        };
        self.write(call, command(Some(key))).await.and_then(fresh)
    }

    /// The stored result under `key`, through the owner's shard (its connection
    /// pipelines lookups), or straight from PostgreSQL while that shard restarts.
    async fn stored_reply(
        &self,
        owner: &Owner,
        key: &Key,
    ) -> Result<Option<StoredReply>, ServiceError> {
        let (lookup_owner, lookup_key) = (owner.clone(), key.as_str().to_owned());
        let span = tracing::info_span!("shard.replay", otel.kind = "internal");
        let message_span = span.clone();
        let via_shard = self
            .handles
            .shard_for(owner)
            .call(
                |reply| ShardMessage::Replay {
                    owner: lookup_owner,
                    key: lookup_key,
                    span: message_span,
                    reply,
                },
                self.settings.request_timeout,
            )
            .instrument(span)
            .await;
        match via_shard {
            Ok(answer) => Ok(answer?),
            Err(CallError::Unavailable) => {
                let lookup = crate::db::keys::lookup(&self.pool, owner, key.as_str());
                match tokio::time::timeout(self.settings.db_timeout, lookup).await {
                    Ok(Ok(stored)) => Ok(stored),
                    Ok(Err(e)) => {
                        tracing::warn!(error.message = %e, error.cause_chain = ?e,
                            "idempotency lookup in PostgreSQL failed");
                        Err(ServiceError::Unavailable(
                            "temporarily unavailable: the database is unreachable".into(),
                        ))
                    }
                    Err(_) => Err(ServiceError::Unavailable(
                        "temporarily unavailable: the database did not answer in time".into(),
                    )),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a command to the writer and waits for its committed effect.
    /// The message has its own span (a child of the request's); the writer's batch span
    /// links to it, and the change's events carry its `traceparent`.
    async fn write(&self, call: &Call, command: WriteCommand) -> Result<WriteEffect, ServiceError> {
        let span = tracing::info_span!(
            "writer.write",
            otel.kind = "internal",
            todo.op = command.op()
        );
        let origin = {
            let _entered = span.enter();
            Origin::here(Arc::clone(&call.request_id))
                .with_trace(telemetry::traceparent(&span).map(Arc::from))
        };
        Ok(self
            .handles
            .writer
            .call(
                |reply| WriterMessage::Write {
                    command,
                    origin,
                    reply,
                },
                self.settings.request_timeout,
            )
            .instrument(span)
            .await??)
    }
}

fn update(
    call: &Call,
    id: TodoId,
    change: TodoChange,
    if_match: Option<Vec<i64>>,
    idempotency: Option<IdempotencyKey>,
) -> WriteCommand {
    WriteCommand::Update {
        owner: call.owner.clone(),
        id,
        change,
        expected_versions: if_match,
        at: now(),
        idempotency,
    }
}

/// A fresh create or change as [`Written`].
fn fresh(effect: WriteEffect) -> Result<Written, ServiceError> {
    match effect {
        WriteEffect::Created(todo) => Ok(Written {
            todo,
            outcome: ReplyOutcome::Created,
            replayed: false,
        }),
        WriteEffect::Updated(todo) => Ok(Written {
            todo,
            outcome: ReplyOutcome::Updated,
            replayed: false,
        }),
        other => {
            tracing::error!(effect = ?other, "a create or change committed as something else");
            Err(ServiceError::Internal)
        }
    }
}
