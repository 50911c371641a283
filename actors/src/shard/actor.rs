//! `Shard`: cache, batched point reads, coalesced lists.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use lru::LruCache;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::messages::{ReadOutcome, ShardMessage};
use crate::connect::ConnectGate;
use crate::domain::{DomainError, ListQuery, Owner, StoredReply, Todo, TodoId, WriteEffect};
use crate::handles::ActorHandles;
use crate::metrics::ReadSource;
use crate::slot::took_message;
use crate::store::{ReadConn, StoreError, TodoStore};

/// How often a shard without a usable connection tries to reconnect by itself.
const TICK_EVERY: Duration = Duration::from_secs(1);

type GetReply = RpcReplyPort<Result<ReadOutcome, DomainError>>;
type ListReply = RpcReplyPort<Result<Vec<Todo>, DomainError>>;

/// A query shard; generic over the store so tests can use an in-memory one.
pub struct Shard<S: TodoStore> {
    store: S,
}

impl<S: TodoStore> Shard<S> {
    /// A shard over `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }
}

/// What the supervisor passes at (re)start.
pub struct ShardArgs {
    /// Which shard this is.
    pub index: usize,
    /// Most todos cached (`CACHE_CAPACITY`).
    pub cache_capacity: usize,
    /// Upper bound on one connect or query.
    pub db_timeout: Duration,
    /// Shared handles (metrics sink, own mailbox counter).
    pub handles: Arc<ActorHandles>,
}

struct InFlightList {
    waiters: Vec<ListReply>,
}

/// A shard's mutable state.
pub struct ShardState<R> {
    name: String,
    reader: Option<Arc<R>>,
    gate: ConnectGate,
    cache: LruCache<TodoId, Todo>,
    misses: Vec<(Owner, TodoId, GetReply)>,
    flush_scheduled: bool,
    /// Bumped on every applied change; a miss query started before a change must not
    /// put what it read over that change.
    seq: u64,
    /// Ids changed while miss queries were in flight, with the `seq` of the change.
    changed_at: HashMap<TodoId, u64>,
    /// Owners all of whose todos were forgotten while miss queries were in flight.
    owners_changed_at: HashMap<Owner, u64>,
    loads_in_flight: usize,
    lists: HashMap<u64, InFlightList>,
    /// In-flight lists a new identical request may join (none started before a change
    /// of that owner: joining those could miss the caller's own write).
    joinable: HashMap<ListQuery, u64>,
    next_token: u64,
    db_timeout: Duration,
    handles: Arc<ActorHandles>,
    depth: Arc<AtomicI64>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl<S: TodoStore> Actor for Shard<S> {
    type Msg = ShardMessage;
    type State = ShardState<S::Reader>;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ShardArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let capacity = NonZeroUsize::new(args.cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        let slot = &args.handles.shards[args.index];
        Ok(ShardState {
            name: slot.name().to_owned(),
            depth: slot.depth_counter(),
            reader: None,
            gate: ConnectGate::default(),
            cache: LruCache::new(capacity),
            misses: Vec::new(),
            flush_scheduled: false,
            seq: 0,
            changed_at: HashMap::new(),
            owners_changed_at: HashMap::new(),
            loads_in_flight: 0,
            lists: HashMap::new(),
            joinable: HashMap::new(),
            next_token: 0,
            db_timeout: args.db_timeout,
            handles: args.handles,
            ticker: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = self.ensure_reader(state).await;
        state.ticker = Some(myself.send_interval(TICK_EVERY, || ShardMessage::Tick));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let started = Instant::now();
        match message {
            ShardMessage::Get { owner, id, reply } => {
                took_message(&state.depth);
                self.get(&myself, state, owner, id, reply).await;
            }
            ShardMessage::List { query, reply } => {
                took_message(&state.depth);
                self.list(&myself, state, query, reply).await;
            }
            ShardMessage::Replay { owner, key, reply } => {
                took_message(&state.depth);
                self.replay(state, owner, key, reply).await;
            }
            ShardMessage::Apply(effects) => {
                took_message(&state.depth);
                apply(state, effects);
            }
            ShardMessage::Forget(keys) => {
                took_message(&state.depth);
                forget(state, keys);
            }
            ShardMessage::Tick => {
                if state.reader.as_ref().is_none_or(|r| r.is_closed()) {
                    let _ = self.ensure_reader(state).await;
                }
            }
            ShardMessage::Flush => {
                state.flush_scheduled = false;
                self.flush_misses(&myself, state).await;
            }
            ShardMessage::Filled { seq, todos } => fill(state, seq, todos),
            ShardMessage::Listed { token, result } => {
                state.joinable.retain(|_, t| *t != token);
                if let Some(list) = state.lists.remove(&token) {
                    let answer = result.map_err(|e| {
                        state.handles.sink.db_error("query");
                        tracing::warn!(error.message = %e, "list query failed");
                        db_unreachable()
                    });
                    for waiter in list.waiters {
                        let _ = waiter.send(answer.clone());
                    }
                }
            }
            ShardMessage::Panic => {
                took_message(&state.depth);
                panic!("chaos: panic requested in a query shard");
            }
        }
        state
            .handles
            .sink
            .message_handled(&state.name, started.elapsed().as_secs_f64());
        Ok(())
    }
}

impl<S: TodoStore> Shard<S> {
    /// A usable connection, reconnecting through the gate.
    async fn ensure_reader(&self, state: &mut ShardState<S::Reader>) -> Option<Arc<S::Reader>> {
        if let Some(r) = state.reader.as_ref().filter(|r| !r.is_closed()) {
            return Some(Arc::clone(r));
        }
        state.reader = None;
        let connect = self.store.connect_reader();
        let reader = Arc::new(
            state
                .gate
                .open(&state.name, state.db_timeout, &*state.handles.sink, connect)
                .await?,
        );
        state.reader = Some(Arc::clone(&reader));
        Some(reader)
    }

    async fn get(
        &self,
        myself: &ActorRef<ShardMessage>,
        state: &mut ShardState<S::Reader>,
        owner: Owner,
        id: TodoId,
        reply: GetReply,
    ) {
        let hit = state.cache.get(&id).filter(|t| t.owner == owner).cloned();
        if let Some(todo) = hit {
            // Never wait for a reconnect on a hit: `Tick` reconnects in the background.
            let stale = state.reader.as_ref().is_none_or(|r| r.is_closed());
            state.handles.sink.query_reads(ReadSource::Cache, 1);
            let _ = reply.send(Ok(ReadOutcome {
                todo,
                source: ReadSource::Cache,
                stale,
            }));
            return;
        }
        state.misses.push((owner, id, reply));
        if !state.flush_scheduled {
            state.flush_scheduled = true;
            if myself.cast(ShardMessage::Flush).is_err() {
                self.flush_misses(myself, state).await;
            }
        }
    }

    /// Sends the collected misses as one query, answered from a spawned task.
    async fn flush_misses(
        &self,
        myself: &ActorRef<ShardMessage>,
        state: &mut ShardState<S::Reader>,
    ) {
        if state.misses.is_empty() {
            return;
        }
        let misses = std::mem::take(&mut state.misses);
        let Some(reader) = self.ensure_reader(state).await else {
            for (_, _, reply) in misses {
                let _ = reply.send(Err(db_unreachable()));
            }
            return;
        };
        let mut keys: Vec<(Owner, TodoId)> =
            misses.iter().map(|(o, i, _)| (o.clone(), *i)).collect();
        keys.sort();
        keys.dedup();
        state.loads_in_flight += 1;
        let seq = state.seq;
        let sink = Arc::clone(&state.handles.sink);
        let timeout = state.db_timeout;
        let myself = myself.clone();
        tokio::spawn(async move {
            sink.query_batch(keys.len());
            let result = match tokio::time::timeout(timeout, reader.get_todos(&keys)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable("query timed out".into())),
            };
            let todos = match result {
                Ok(todos) => {
                    sink.query_reads(ReadSource::Db, misses.len() as u64);
                    let found: HashMap<TodoId, &Todo> = todos.iter().map(|t| (t.id, t)).collect();
                    for (owner, id, reply) in misses {
                        let answer = match found.get(&id).filter(|t| t.owner == owner) {
                            Some(t) => Ok(ReadOutcome {
                                todo: (*t).clone(),
                                source: ReadSource::Db,
                                stale: false,
                            }),
                            None => Err(DomainError::NotFound),
                        };
                        let _ = reply.send(answer);
                    }
                    todos
                }
                Err(e) => {
                    sink.db_error("query");
                    tracing::warn!(error.message = %e, "point read failed");
                    for (_, _, reply) in misses {
                        let _ = reply.send(Err(db_unreachable()));
                    }
                    Vec::new()
                }
            };
            let _ = myself.cast(ShardMessage::Filled { seq, todos });
        });
    }

    async fn replay(
        &self,
        state: &mut ShardState<S::Reader>,
        owner: Owner,
        key: String,
        reply: RpcReplyPort<Result<Option<StoredReply>, DomainError>>,
    ) {
        let Some(reader) = self.ensure_reader(state).await else {
            let _ = reply.send(Err(db_unreachable()));
            return;
        };
        let timeout = state.db_timeout;
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(timeout, reader.get_reply(&owner, &key)).await {
                Ok(Ok(stored)) => Ok(stored),
                Ok(Err(e)) => {
                    tracing::warn!(error.message = %e, "idempotency lookup failed");
                    Err(db_unreachable())
                }
                Err(_) => Err(DomainError::Unavailable(
                    "the database did not answer in time".into(),
                )),
            };
            let _ = reply.send(answer);
        });
    }

    async fn list(
        &self,
        myself: &ActorRef<ShardMessage>,
        state: &mut ShardState<S::Reader>,
        query: ListQuery,
        reply: ListReply,
    ) {
        if let Some(list) = state
            .joinable
            .get(&query)
            .and_then(|token| state.lists.get_mut(token))
        {
            list.waiters.push(reply);
            return;
        }
        let Some(reader) = self.ensure_reader(state).await else {
            let _ = reply.send(Err(db_unreachable()));
            return;
        };
        let token = state.next_token;
        state.next_token += 1;
        state.joinable.insert(query.clone(), token);
        state.lists.insert(
            token,
            InFlightList {
                waiters: vec![reply],
            },
        );
        let timeout = state.db_timeout;
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, reader.list_todos(&query)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable("query timed out".into())),
            };
            // If the shard died meanwhile, its waiters' ports are gone with it: they get
            // an immediate "unavailable".
            let _ = myself.cast(ShardMessage::Listed { token, result });
        });
    }
}

/// Applies committed changes to the cache, and stops later list requests from joining
/// queries that started before them.
fn apply<R>(state: &mut ShardState<R>, effects: Vec<WriteEffect>) {
    state.seq += 1;
    let seq = state.seq;
    let track = state.loads_in_flight > 0;
    for effect in effects {
        let owner = match effect {
            WriteEffect::Created(todo) | WriteEffect::Updated(todo) => {
                let owner = todo.owner.clone();
                if track {
                    state.changed_at.insert(todo.id, seq);
                }
                put_if_newer(&mut state.cache, todo);
                owner
            }
            WriteEffect::Deleted { owner, id } => {
                if track {
                    state.changed_at.insert(id, seq);
                }
                state.cache.pop(&id);
                owner
            }
            WriteEffect::Cleared { owner, ids } => {
                for id in ids {
                    if track {
                        state.changed_at.insert(id, seq);
                    }
                    state.cache.pop(&id);
                }
                owner
            }
        };
        state.joinable.retain(|q, _| q.owner != owner);
    }
}

/// Drops todos whose state the shard can no longer vouch for.
fn forget<R>(state: &mut ShardState<R>, keys: Vec<(Owner, Option<TodoId>)>) {
    state.seq += 1;
    let seq = state.seq;
    let track = state.loads_in_flight > 0;
    for (owner, id) in keys {
        let ids: Vec<TodoId> = match id {
            Some(id) => vec![id],
            None => {
                if track {
                    state.owners_changed_at.insert(owner.clone(), seq);
                }
                state
                    .cache
                    .iter()
                    .filter(|(_, t)| t.owner == owner)
                    .map(|(id, _)| *id)
                    .collect()
            }
        };
        for id in ids {
            if track {
                state.changed_at.insert(id, seq);
            }
            state.cache.pop(&id);
        }
        state.joinable.retain(|q, _| q.owner != owner);
    }
}

/// Caches what a miss query read, unless a change overtook it.
fn fill<R>(state: &mut ShardState<R>, seq: u64, todos: Vec<Todo>) {
    state.loads_in_flight = state.loads_in_flight.saturating_sub(1);
    for todo in todos {
        let overtaken = state.changed_at.get(&todo.id).is_some_and(|&s| s > seq)
            || state
                .owners_changed_at
                .get(&todo.owner)
                .is_some_and(|&s| s > seq);
        if !overtaken {
            put_if_newer(&mut state.cache, todo);
        }
    }
    if state.loads_in_flight == 0 {
        state.changed_at.clear();
        state.owners_changed_at.clear();
    }
}

fn put_if_newer(cache: &mut LruCache<TodoId, Todo>, todo: Todo) {
    if cache
        .peek(&todo.id)
        .is_none_or(|c| c.version < todo.version)
    {
        cache.put(todo.id, todo);
    }
}

/// The answer to a read while the database cannot be reached.
fn db_unreachable() -> DomainError {
    DomainError::Unavailable("the database is unreachable".into())
}
