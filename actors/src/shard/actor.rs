//! `Shard`: cache, batched point reads, coalesced lists.
//!
//! The handler never waits for the database: queries run in spawned tasks on the
//! shard's connection, and (re)connecting runs in a background task too, so cache hits
//! are served while a connection is being made. Reads that need the database while it
//! is being made wait for that one attempt (bounded by the database timeout).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::messages::{ReadOutcome, ShardMessage};
use crate::connect::ConnectGate;
use crate::domain::{DomainError, ListQuery, Owner, StoredReply, Todo, TodoId, WriteEffect};
use crate::handles::ActorHandles;
use crate::limbo::{Keys, Limbo};
use crate::metrics::ReadSource;
use crate::slot::took_message;
use crate::store::{ReadConn, StoreError, TodoStore};
use tracing::Instrument;

/// How often a shard without a usable connection tries to reconnect by itself.
const TICK_EVERY: Duration = Duration::from_secs(1);

type GetReply = RpcReplyPort<Result<ReadOutcome, DomainError>>;
type ListReply = RpcReplyPort<Result<Vec<Todo>, DomainError>>;
type ReplayReply = RpcReplyPort<Result<Option<StoredReply>, DomainError>>;

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
    /// Shared handles (metrics sink, own mailbox counter, limbo).
    pub handles: Arc<ActorHandles>,
}

struct InFlightList {
    waiters: Vec<ListReply>,
    /// The query's span: each joiner's message span is linked to it.
    span: tracing::Span,
}

/// A point read waiting for the database.
struct Miss {
    owner: Owner,
    id: TodoId,
    reply: GetReply,
    /// The message's span: the query that answers it links to it.
    span: tracing::Span,
    /// The cached copy, when the cache is not to be trusted but had one: served, marked
    /// stale, if the database cannot be read.
    fallback: Option<Todo>,
}

impl Miss {
    /// Answers that the database cannot be read: the fallback copy, or unavailable.
    fn unreachable(self) {
        let answer = match self.fallback {
            Some(todo) => Ok(ReadOutcome {
                todo,
                source: ReadSource::Cache,
                stale: true,
            }),
            None => Err(db_unreachable()),
        };
        let _ = self.reply.send(answer);
    }
}

/// A request that needs the database while no connection is ready.
enum Parked {
    List(ListQuery, tracing::Span, ListReply),
    Replay(Owner, String, tracing::Span, ReplayReply),
}

/// A shard's mutable state.
pub struct ShardState<R> {
    name: String,
    index: usize,
    reader: Option<Arc<R>>,
    /// Bumped with every new connection, so a late "broken" report about an old one
    /// does not drop its successor.
    generation: u64,
    /// A background connect is running.
    connecting: bool,
    /// Where the background connect leaves its connection.
    handover: Arc<Mutex<Option<R>>>,
    /// Lists and replays waiting for the connection being made.
    parked: Vec<Parked>,
    gate: Arc<ConnectGate>,
    cache: LruCache<TodoId, Todo>,
    /// Ids deleted recently: a late "created" or "updated" of one must not bring it back.
    deleted: LruCache<TodoId, ()>,
    misses: Vec<Miss>,
    flush_scheduled: bool,
    /// The coherence epoch the cache belongs to (see `handles::Coherence`).
    epoch: u64,
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

impl<R> ShardState<R> {
    fn limbo(&self) -> &Limbo {
        &self.handles.limbo[self.index]
    }
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
        // A new incarnation has no cache and no reads in flight: settled entries that a
        // predecessor did not get to remove are harmless to drop.
        args.handles.limbo[args.index].remove_settled();
        Ok(ShardState {
            name: slot.name().to_owned(),
            index: args.index,
            depth: slot.depth_counter(),
            reader: None,
            generation: 0,
            connecting: false,
            handover: Arc::new(Mutex::new(None)),
            parked: Vec::new(),
            gate: Arc::new(ConnectGate::default()),
            cache: LruCache::new(capacity),
            deleted: LruCache::new(capacity),
            misses: Vec::new(),
            flush_scheduled: false,
            epoch: args.handles.coherence.epoch(),
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
        self.start_connect(&myself, state);
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
        sync_coherence(state);
        match message {
            ShardMessage::Get {
                owner,
                id,
                span,
                reply,
            } => {
                took_message(&state.depth);
                get(&myself, state, owner, id, span, reply);
            }
            ShardMessage::List { query, span, reply } => {
                took_message(&state.depth);
                self.list(&myself, state, query, span, reply);
            }
            ShardMessage::Replay {
                owner,
                key,
                span,
                reply,
            } => {
                took_message(&state.depth);
                match self.usable_reader(&myself, state) {
                    Some(reader) => replay(state, reader, owner, key, &span, reply),
                    None => state.parked.push(Parked::Replay(owner, key, span, reply)),
                }
            }
            ShardMessage::Apply(effects) => {
                took_message(&state.depth);
                apply(state, effects);
            }
            ShardMessage::Forget(keys) => {
                took_message(&state.depth);
                forget(state, keys);
            }
            ShardMessage::Settle(id) => {
                took_message(&state.depth);
                if let Some(keys) = state.limbo().remove(id) {
                    forget(state, keys);
                }
            }
            ShardMessage::Tick => {
                if state.reader.as_ref().is_none_or(|r| r.is_closed()) {
                    self.start_connect(&myself, state);
                }
            }
            ShardMessage::Connected => self.connected(&myself, state),
            ShardMessage::ReaderBroken { generation } => {
                if generation == state.generation && state.reader.take().is_some() {
                    tracing::warn!(shard = %state.name, "a query timed out: reconnecting");
                    self.start_connect(&myself, state);
                }
            }
            ShardMessage::Flush => {
                state.flush_scheduled = false;
                self.flush_misses(&myself, state);
            }
            ShardMessage::Filled { seq, epoch, todos } => fill(state, seq, epoch, todos),
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
    /// The connection if it is usable; otherwise starts making one (in the background)
    /// and returns `None`.
    fn usable_reader(
        &self,
        myself: &ActorRef<ShardMessage>,
        state: &mut ShardState<S::Reader>,
    ) -> Option<Arc<S::Reader>> {
        if let Some(r) = state.reader.as_ref().filter(|r| !r.is_closed()) {
            return Some(Arc::clone(r));
        }
        state.reader = None;
        self.start_connect(myself, state);
        None
    }

    /// Connects in a background task (through the gate, bounded by the database
    /// timeout); the task reports with `Connected`.
    fn start_connect(&self, myself: &ActorRef<ShardMessage>, state: &mut ShardState<S::Reader>) {
        if state.connecting {
            return;
        }
        state.connecting = true;
        let (gate, handover) = (Arc::clone(&state.gate), Arc::clone(&state.handover));
        let (name, timeout) = (state.name.clone(), state.db_timeout);
        let sink = Arc::clone(&state.handles.sink);
        let store = self.store.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let reader = gate
                .open(&name, timeout, &*sink, store.connect_reader())
                .await;
            *handover.lock().unwrap_or_else(|p| p.into_inner()) = reader;
            // If the shard died meanwhile, the connection is dropped with the hand-over.
            let _ = myself.cast(ShardMessage::Connected);
        });
    }

    /// A background connect finished: serve what waited for it, or fail it.
    fn connected(&self, myself: &ActorRef<ShardMessage>, state: &mut ShardState<S::Reader>) {
        state.connecting = false;
        let reader = state
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(reader) = reader {
            state.reader = Some(Arc::new(reader));
            state.generation += 1;
        }
        let parked = std::mem::take(&mut state.parked);
        match state.reader.clone() {
            Some(reader) => {
                self.flush_misses(myself, state);
                for p in parked {
                    match p {
                        Parked::List(query, span, reply) => {
                            start_list(myself, state, Arc::clone(&reader), query, &span, reply);
                        }
                        Parked::Replay(owner, key, span, reply) => {
                            replay(state, Arc::clone(&reader), owner, key, &span, reply);
                        }
                    }
                }
            }
            None => {
                for miss in state.misses.drain(..) {
                    miss.unreachable();
                }
                for p in parked {
                    match p {
                        Parked::List(_, _, reply) => {
                            let _ = reply.send(Err(db_unreachable()));
                        }
                        Parked::Replay(_, _, _, reply) => {
                            let _ = reply.send(Err(db_unreachable()));
                        }
                    }
                }
            }
        }
    }

    /// Sends the collected misses as one query, answered from a spawned task; without a
    /// connection they wait for the one being made.
    fn flush_misses(&self, myself: &ActorRef<ShardMessage>, state: &mut ShardState<S::Reader>) {
        if state.misses.is_empty() {
            return;
        }
        let Some(reader) = self.usable_reader(myself, state) else {
            return;
        };
        let misses = std::mem::take(&mut state.misses);
        let mut keys: Vec<(Owner, TodoId)> =
            misses.iter().map(|m| (m.owner.clone(), m.id)).collect();
        keys.sort();
        keys.dedup();
        state.loads_in_flight += 1;
        let (seq, generation, epoch) = (state.seq, state.generation, state.epoch);
        let sink = Arc::clone(&state.handles.sink);
        let timeout = state.db_timeout;
        let myself = myself.clone();
        // One query for many requests: a root span linked to each of their messages.
        let sql = tracing::info_span!(
            parent: None,
            "db.get_todos",
            otel.kind = "client",
            db.system = "postgresql",
            db.operation = "get_todos",
            shard = %state.name,
            batch.size = keys.len(),
        );
        for miss in &misses {
            sql.follows_from(&miss.span);
        }
        tokio::spawn(async move {
            sink.query_batch(keys.len());
            let query = reader.get_todos(&keys).instrument(sql);
            let result = match tokio::time::timeout(timeout, query).await {
                Ok(r) => r,
                Err(_) => {
                    let _ = myself.cast(ShardMessage::ReaderBroken { generation });
                    Err(StoreError::Unavailable("query timed out".into()))
                }
            };
            let todos = match result {
                Ok(todos) => {
                    sink.query_reads(ReadSource::Db, misses.len() as u64);
                    let found: HashMap<TodoId, &Todo> = todos.iter().map(|t| (t.id, t)).collect();
                    for Miss {
                        owner, id, reply, ..
                    } in misses
                    {
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
                    for miss in misses {
                        miss.unreachable();
                    }
                    Vec::new()
                }
            };
            let _ = myself.cast(ShardMessage::Filled { seq, epoch, todos });
        });
    }

    fn list(
        &self,
        myself: &ActorRef<ShardMessage>,
        state: &mut ShardState<S::Reader>,
        query: ListQuery,
        span: tracing::Span,
        reply: ListReply,
    ) {
        if let Some(list) = state
            .joinable
            .get(&query)
            .and_then(|token| state.lists.get_mut(token))
        {
            list.span.follows_from(&span);
            list.waiters.push(reply);
            return;
        }
        match self.usable_reader(myself, state) {
            Some(reader) => start_list(myself, state, reader, query, &span, reply),
            None => state.parked.push(Parked::List(query, span, reply)),
        }
    }
}

fn get<R: ReadConn>(
    myself: &ActorRef<ShardMessage>,
    state: &mut ShardState<R>,
    owner: Owner,
    id: TodoId,
    span: tracing::Span,
    reply: GetReply,
) {
    // A todo in limbo is never served from the cache (nor cached: see `fill`). While the
    // caches cannot be trusted (other replicas' changes may be missing), a cached copy is
    // only a fallback, marked stale, for when the database cannot be read.
    let cached = match state.cache.get(&id) {
        Some(t) if t.owner == owner && !state.handles.limbo[state.index].holds(&owner, id) => {
            Some(t.clone())
        }
        _ => None,
    };
    let (hit, fallback) = if state.handles.coherence.is_whole() {
        (cached, None)
    } else {
        (None, cached)
    };
    if let Some(todo) = hit {
        // Never wait for a reconnect on a hit.
        let stale = state.reader.as_ref().is_none_or(|r| r.is_closed());
        state.handles.sink.query_reads(ReadSource::Cache, 1);
        let _ = reply.send(Ok(ReadOutcome {
            todo,
            source: ReadSource::Cache,
            stale,
        }));
        return;
    }
    state.misses.push(Miss {
        owner,
        id,
        reply,
        span,
        fallback,
    });
    if !state.flush_scheduled {
        state.flush_scheduled = true;
        if myself.cast(ShardMessage::Flush).is_err() {
            state.flush_scheduled = false;
        }
    }
}

/// Joins an identical list in flight, or starts one.
fn start_list<R: ReadConn>(
    myself: &ActorRef<ShardMessage>,
    state: &mut ShardState<R>,
    reader: Arc<R>,
    query: ListQuery,
    span: &tracing::Span,
    reply: ListReply,
) {
    if let Some(list) = state
        .joinable
        .get(&query)
        .and_then(|token| state.lists.get_mut(token))
    {
        list.span.follows_from(span);
        list.waiters.push(reply);
        return;
    }
    let sql = tracing::info_span!(
        parent: span,
        "db.list_todos",
        otel.kind = "client",
        db.system = "postgresql",
        db.operation = "list_todos",
        shard = %state.name,
    );
    let token = state.next_token;
    state.next_token += 1;
    // While any of the owner's todos is in limbo, each list reads for itself.
    if !state.limbo().holds_owner(&query.owner) {
        state.joinable.insert(query.clone(), token);
    }
    state.lists.insert(
        token,
        InFlightList {
            waiters: vec![reply],
            span: sql.clone(),
        },
    );
    let (timeout, generation) = (state.db_timeout, state.generation);
    let myself = myself.clone();
    tokio::spawn(async move {
        let listed = reader.list_todos(&query).instrument(sql);
        let result = match tokio::time::timeout(timeout, listed).await {
            Ok(r) => r,
            Err(_) => {
                let _ = myself.cast(ShardMessage::ReaderBroken { generation });
                Err(StoreError::Unavailable("query timed out".into()))
            }
        };
        // If the shard died meanwhile, its waiters' ports are gone with it: they get
        // an immediate "unavailable".
        let _ = myself.cast(ShardMessage::Listed { token, result });
    });
}

fn replay<R: ReadConn>(
    state: &ShardState<R>,
    reader: Arc<R>,
    owner: Owner,
    key: String,
    span: &tracing::Span,
    reply: ReplayReply,
) {
    let timeout = state.db_timeout;
    let sql = tracing::info_span!(
        parent: span,
        "db.get_reply",
        otel.kind = "client",
        db.system = "postgresql",
        db.operation = "get_reply",
    );
    tokio::spawn(async move {
        let lookup = reader.get_reply(&owner, &key).instrument(sql);
        let answer = match tokio::time::timeout(timeout, lookup).await {
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

/// Applies committed changes to the cache, and stops later list requests from joining
/// queries that started before them.
fn apply<R>(state: &mut ShardState<R>, effects: Vec<WriteEffect>) {
    state.seq += 1;
    let seq = state.seq;
    let track = state.loads_in_flight > 0;
    for effect in effects {
        let owner = effect.owner().clone();
        match effect {
            WriteEffect::Created(todo) | WriteEffect::Updated(todo) => {
                if track {
                    state.changed_at.insert(todo.id, seq);
                }
                let id = todo.id;
                if state.deleted.contains(&id)
                    || state.limbo().holds(&owner, id)
                    || !state.handles.coherence.is_whole()
                {
                    // Deleted already (a late report), its state is unknown, or the cache
                    // is not in use.
                    state.cache.pop(&id);
                } else {
                    put_if_newer(&mut state.cache, todo);
                }
            }
            WriteEffect::Deleted { id, .. } => {
                if track {
                    state.changed_at.insert(id, seq);
                }
                state.cache.pop(&id);
                state.deleted.put(id, ());
            }
            WriteEffect::Cleared { ids, .. } => {
                for id in ids {
                    if track {
                        state.changed_at.insert(id, seq);
                    }
                    state.cache.pop(&id);
                    state.deleted.put(id, ());
                }
            }
        }
        state.joinable.retain(|q, _| q.owner != owner);
    }
}

/// Drops todos whose state the shard can no longer vouch for, and makes sure reads that
/// started before now do not put them back.
fn forget<R>(state: &mut ShardState<R>, keys: Keys) {
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

/// Caches what a miss query read, unless a change overtook it, it was deleted since, it
/// is in limbo, or the caches were not to be trusted at any time since the query started.
fn fill<R>(state: &mut ShardState<R>, seq: u64, epoch: u64, todos: Vec<Todo>) {
    state.loads_in_flight = state.loads_in_flight.saturating_sub(1);
    let coherent = state.handles.coherence.is_whole() && epoch == state.epoch;
    for todo in todos.into_iter().filter(|_| coherent) {
        let overtaken = state.changed_at.get(&todo.id).is_some_and(|&s| s > seq)
            || state
                .owners_changed_at
                .get(&todo.owner)
                .is_some_and(|&s| s > seq)
            || state.deleted.contains(&todo.id)
            || state.limbo().holds(&todo.owner, todo.id);
        if !overtaken {
            put_if_newer(&mut state.cache, todo);
        }
    }
    if state.loads_in_flight == 0 {
        state.changed_at.clear();
        state.owners_changed_at.clear();
    }
}

/// A new coherence epoch: queries that started before are not cached, and once the
/// change channel is whole again the cache starts over empty. (While it is broken, the
/// old copies stay, but only as the stale fallback of reads the database cannot serve.)
fn sync_coherence<R>(state: &mut ShardState<R>) {
    let epoch = state.handles.coherence.epoch();
    if epoch != state.epoch {
        if state.handles.coherence.is_whole() {
            state.cache.clear();
        }
        state.joinable.clear();
        state.epoch = epoch;
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
