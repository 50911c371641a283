//! `Writer`: natural batching, one transaction per batch, replies after COMMIT.
//!
//! COMMIT waits for the WAL flush, so one connection commits at most a batch per flush.
//! The writer therefore keeps up to `connections` batches in flight, each on its own
//! long-lived connection, as long as they touch disjoint todos and owners (a batch that
//! conflicts with one in flight waits for it): per-todo order is kept, and PostgreSQL
//! groups the concurrent commits into one flush.
//!
//! Batches run in spawned tasks that own their callers' reply ports, so even a killed
//! writer's batches finish and answer. What must outlive one incarnation of the writer
//! lives in [`WriterShared`], which the supervisor keeps across restarts: the idle
//! connections and the footprints of the batches in flight, so a restarted writer never
//! starts a batch that conflicts with one its predecessor left running.
//!
//! Every write is answered within the database timeout of its arrival: a batch must be
//! done by the deadline of its oldest command, and a command that waited past its
//! deadline for a free connection is answered "unavailable" without being sent.
//!
//! A batch whose COMMIT outcome is unknown puts what it touched in [`crate::limbo`]
//! until [`TodoStore::await_fate`] says the transaction can no longer commit.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Notify;
use tracing::Instrument;

use super::messages::{Origin, WriteReply, WriterMessage};
use crate::connect::ConnectGate;
use crate::domain::{DomainError, Owner, TodoId, WriteCommand, WriteEffect};
use crate::handles::{ActorHandles, WRITER};
use crate::limbo::Keys;
use crate::metrics::MetricsMessage;
use crate::shard::ShardMessage;
use crate::slot::took_message;
use crate::store::{SessionId, StoreError, TodoStore, WriteConn};

/// Attempts per batch when the transaction fails as a whole and was rolled back.
const MAX_ATTEMPTS: u32 = 3;
/// Pause before re-trying a rolled-back batch (times the attempt number).
const RETRY_PAUSE: Duration = Duration::from_millis(25);
/// Pause between attempts to settle the fate of a batch in limbo.
const SETTLE_PAUSE: Duration = Duration::from_millis(250);

/// The writer actor; generic over the store so tests can use an in-memory one. The
/// store itself is in [`WriterShared`].
pub struct Writer<S: TodoStore> {
    _store: std::marker::PhantomData<fn() -> S>,
}

impl<S: TodoStore> Default for Writer<S> {
    fn default() -> Self {
        Self {
            _store: std::marker::PhantomData,
        }
    }
}

/// What outlives one incarnation of the writer: connections and batches in flight.
pub struct WriterShared<S: TodoStore> {
    store: S,
    idle: Mutex<Vec<S::Writer>>,
    gate: ConnectGate,
    in_flight: Mutex<HashMap<u64, Footprint>>,
    /// Woken whenever a batch leaves `in_flight` (a drain waits for it to empty).
    batch_done: Notify,
    next_batch: AtomicU64,
}

impl<S: TodoStore> WriterShared<S> {
    /// Shared state for writers over `store`.
    pub fn new(store: S) -> Arc<Self> {
        Arc::new(Self {
            store,
            idle: Mutex::new(Vec::new()),
            gate: ConnectGate::default(),
            in_flight: Mutex::new(HashMap::new()),
            batch_done: Notify::new(),
            next_batch: AtomicU64::new(0),
        })
    }

    fn in_flight(&self) -> MutexGuard<'_, HashMap<u64, Footprint>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Batches in flight, whichever incarnation started them.
    pub fn batches_in_flight(&self) -> usize {
        self.in_flight().len()
    }

    /// An idle connection that still works, else a new one (connecting at most until
    /// `deadline`).
    async fn take(
        &self,
        handles: &ActorHandles,
        deadline: Instant,
    ) -> Result<S::Writer, DomainError> {
        loop {
            let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match conn {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(_) => continue,
                None => return self.open(handles, deadline).await,
            }
        }
    }

    /// A new connection, through the reconnect gate.
    async fn open(
        &self,
        handles: &ActorHandles,
        deadline: Instant,
    ) -> Result<S::Writer, DomainError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let connect = self.store.connect_writer();
        self.gate
            .open(WRITER, left, &*handles.sink, connect)
            .await
            .ok_or_else(|| DomainError::Unavailable("database unreachable".into()))
    }

    fn give_back(&self, conn: S::Writer) {
        if !conn.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }

    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Ends batch `id`: its slot is free again. Wakes a drain and the current writer.
    fn finish(&self, id: u64, handles: &ActorHandles) {
        self.in_flight().remove(&id);
        self.batch_done.notify_waiters();
        // Whichever incarnation runs now may have commands waiting for this batch.
        handles.writer.cast(WriterMessage::Done);
    }

    /// Waits until no batch is in flight.
    async fn wait_idle(&self) {
        loop {
            let notified = self.batch_done.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight().is_empty() {
                return;
            }
            notified.await;
        }
    }
}

/// What the supervisor passes at (re)start.
pub struct WriterArgs<S: TodoStore> {
    /// Most commands per batch (`BATCH_MAX`).
    pub batch_max: usize,
    /// Extra time to wait for more commands before committing (`BATCH_LINGER_US`).
    pub linger: Duration,
    /// Every write is answered within this long of its arrival (`DB_TIMEOUT_MS`).
    pub db_timeout: Duration,
    /// Batches in flight at once, each on its own connection (`WRITER_CONNECTIONS`).
    pub connections: usize,
    /// Where the shards and the metrics actor are.
    pub handles: Arc<ActorHandles>,
    /// Connections and batches in flight, kept across restarts.
    pub shared: Arc<WriterShared<S>>,
}

struct Pending {
    command: WriteCommand,
    origin: Origin,
    reply: RpcReplyPort<WriteReply>,
}

/// What a batch in flight touches; a batch touching the same may not overtake it.
#[derive(Default)]
struct Footprint {
    ids: HashSet<TodoId>,
    owners: HashSet<Owner>,
    cleared: HashSet<Owner>,
}

impl Footprint {
    fn of(batch: &[Pending]) -> Self {
        let mut f = Self::default();
        for p in batch {
            let (owner, id) = p.command.key();
            match id {
                Some(id) => {
                    f.ids.insert(id);
                }
                None => {
                    f.cleared.insert(owner.clone());
                }
            }
            f.owners.insert(owner);
        }
        f
    }

    fn conflicts(&self, other: &Self) -> bool {
        !self.ids.is_disjoint(&other.ids)
            || !self.cleared.is_disjoint(&other.owners)
            || !other.cleared.is_disjoint(&self.owners)
    }
}

/// The writer's mutable state (one incarnation's).
pub struct WriterState<S: TodoStore> {
    pending: Vec<Pending>,
    flush_scheduled: bool,
    args: WriterArgs<S>,
    depth: Arc<AtomicI64>,
}

impl<S: TodoStore> Actor for Writer<S> {
    type Msg = WriterMessage;
    type State = WriterState<S>;
    type Arguments = WriterArgs<S>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WriterArgs<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(WriterState {
            pending: Vec::with_capacity(args.batch_max),
            flush_scheduled: false,
            depth: args.handles.writer.depth_counter(),
            args,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Open the connections in the background so the first batches do not pay for
        // them, and a database that does not answer never delays a (re)start. A writer
        // that cannot reach the database still starts and answers 503.
        let shared = Arc::clone(&state.args.shared);
        let handles = Arc::clone(&state.args.handles);
        let (wanted, timeout) = (state.args.connections.max(1), state.args.db_timeout);
        tokio::spawn(async move {
            while shared.idle_count() + shared.batches_in_flight() < wanted {
                match shared.open(&handles, Instant::now() + timeout).await {
                    Ok(conn) => shared.give_back(conn),
                    Err(_) => break,
                }
            }
        });
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A drain closes the mailbox: no more Done or Flush messages will arrive. Wait for
        // the batches in flight, then commit what is left, one batch after another.
        let shared = Arc::clone(&state.args.shared);
        shared.wait_idle().await;
        while !state.pending.is_empty() {
            let n = state.pending.len().min(state.args.batch_max.max(1));
            let batch: Vec<Pending> = state.pending.drain(..n).collect();
            let deadline = Instant::now() + state.args.db_timeout;
            run_batch(
                Arc::clone(&shared),
                Arc::clone(&state.args.handles),
                batch,
                deadline,
            )
            .await;
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
            WriterMessage::Write {
                command,
                origin,
                reply,
            } => {
                took_message(&state.depth);
                tracing::debug!(op = command.op(), "write queued");
                state.pending.push(Pending {
                    command,
                    origin,
                    reply,
                });
                if state.pending.len() >= state.args.batch_max {
                    start_batches(state);
                } else if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    // The Flush queues behind every command already waiting, so the batch
                    // holds exactly what the mailbox had: natural batching.
                    if state.args.linger.is_zero() {
                        if myself.cast(WriterMessage::Flush).is_err() {
                            start_batches(state);
                        }
                    } else {
                        myself.send_after(state.args.linger, || WriterMessage::Flush);
                    }
                }
            }
            WriterMessage::Flush => {
                state.flush_scheduled = false;
                start_batches(state);
            }
            WriterMessage::Done => start_batches(state),
            WriterMessage::Panic => {
                took_message(&state.depth);
                panic!("chaos: panic requested in the writer");
            }
        }
        state
            .args
            .handles
            .sink
            .message_handled(WRITER, started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// The deadline of a command: its arrival plus the database timeout.
fn deadline_of(p: &Pending, db_timeout: Duration) -> Instant {
    p.origin.arrived + db_timeout
}

/// Answers, without sending them, the commands that waited past their deadline.
fn expire<S: TodoStore>(state: &mut WriterState<S>) {
    let now = Instant::now();
    let db_timeout = state.args.db_timeout;
    if state
        .pending
        .first()
        .is_none_or(|p| deadline_of(p, db_timeout) > now)
    {
        return;
    }
    let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut state.pending)
        .into_iter()
        .partition(|p| deadline_of(p, db_timeout) <= now);
    state.pending = keep;
    tracing::warn!(
        expired = late.len(),
        "writes waited past the database timeout"
    );
    for p in late {
        let _ = p.reply.send(Err(timed_out()));
    }
}

/// Starts as many batches as connections allow and conflicts permit.
fn start_batches<S: TodoStore>(state: &mut WriterState<S>) {
    expire(state);
    let shared = &state.args.shared;
    let mut in_flight = shared.in_flight();
    while !state.pending.is_empty() && in_flight.len() < state.args.connections.max(1) {
        let n = state.pending.len().min(state.args.batch_max.max(1));
        let batch: Vec<Pending> = state.pending.drain(..n).collect();
        let footprint = Footprint::of(&batch);
        if in_flight.values().any(|f| f.conflicts(&footprint)) {
            // Wait for the batch it conflicts with; its Done starts this one.
            state.pending.splice(0..0, batch);
            return;
        }
        let deadline = batch
            .iter()
            .map(|p| deadline_of(p, state.args.db_timeout))
            .min()
            .unwrap_or_else(|| Instant::now() + state.args.db_timeout);
        let id = shared.next_batch.fetch_add(1, Ordering::Relaxed);
        in_flight.insert(id, footprint);
        let shared = Arc::clone(shared);
        let handles = Arc::clone(&state.args.handles);
        tokio::spawn(async move {
            run_batch(Arc::clone(&shared), Arc::clone(&handles), batch, deadline).await;
            shared.finish(id, &handles);
        });
    }
}

/// How a batch failed as a whole.
enum Failure {
    /// Nothing was applied: safe to retry.
    NotApplied(DomainError),
    /// The COMMIT outcome on `session` is unknown.
    Unknown(SessionId, DomainError),
    /// Committed, but the results could not be read.
    Committed(DomainError),
}

/// No session recorded yet (nothing was sent).
const NO_SESSION: u64 = u64::MAX;

/// Commits one batch and answers every caller; the owning shards hear first. A panic
/// inside is caught: the callers are answered and the slot is freed all the same.
async fn run_batch<S: TodoStore>(
    shared: Arc<WriterShared<S>>,
    handles: Arc<ActorHandles>,
    batch: Vec<Pending>,
    deadline: Instant,
) {
    let started = Instant::now();
    let mut commands = Vec::with_capacity(batch.len());
    let mut origins = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for p in batch {
        commands.push(p.command);
        origins.push(p.origin);
        replies.push(p.reply);
    }
    let request_ids = origins
        .iter()
        .map(|o| &*o.request_id)
        .collect::<Vec<_>>()
        .join(",");
    // A root of its own (not under the actor's lifelong span), linked to every write
    // message it carries.
    let span = tracing::info_span!(
        parent: None,
        "writer.batch",
        otel.kind = "internal",
        batch.size = commands.len(),
        request_ids = %request_ids
    );
    for origin in &origins {
        span.follows_from(&origin.span);
    }
    let session = AtomicU64::new(NO_SESSION);
    let traces: Vec<Option<Arc<str>>> = origins.iter().map(|o| o.trace.clone()).collect();
    let attempt = AssertUnwindSafe(commit(
        &shared, &handles, &commands, &traces, deadline, &session,
    ))
    .catch_unwind()
    .instrument(span.clone())
    .await;
    let _entered = span.enter();
    let failure = match attempt {
        Ok(Ok(results)) => {
            notify_shards(&handles, &commands, &results);
            handles.committed.notify_one();
            tracing::debug!(
                latency_ms = started.elapsed().as_secs_f64() * 1e3,
                "write batch committed"
            );
            Ok(results)
        }
        Ok(Err(failure)) => Err(failure),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(error.message = %what, "write batch task panicked");
            Err(match session.load(Ordering::SeqCst) {
                NO_SESSION => Failure::NotApplied(DomainError::Unavailable(
                    "the write failed before it was sent".into(),
                )),
                // Something was sent: the connection is gone with the panic, and what
                // it had in flight may still commit.
                s => Failure::Unknown(
                    SessionId(s),
                    DomainError::OutcomeUnknown("the write failed while in flight".into()),
                ),
            })
        }
    };
    let results: Vec<WriteReply> = match failure {
        Ok(results) => results,
        Err(Failure::NotApplied(e)) => vec![Err(e); commands.len()],
        Err(Failure::Unknown(session, e)) => {
            // Before anyone hears: the shards must not serve or cache what the batch may
            // still change.
            let entries = enter_limbo(&handles, &commands);
            tokio::spawn(
                settle(shared.store.clone(), Arc::clone(&handles), session, entries)
                    .instrument(span.clone()),
            );
            vec![Err(e); commands.len()]
        }
        Err(Failure::Committed(e)) => {
            forget_in_shards(&handles, &commands);
            vec![Err(e); commands.len()]
        }
    };
    let outcomes = commands
        .iter()
        .zip(&results)
        .map(|(c, r)| (c.op(), outcome_label(r)))
        .collect();
    for (reply, result) in replies.into_iter().zip(results) {
        // The caller may have timed out and gone; that is its business.
        let _ = reply.send(result);
    }
    handles.metrics.cast(MetricsMessage::BatchFlushed {
        size: commands.len(),
        seconds: started.elapsed().as_secs_f64(),
        outcomes,
    });
}

/// Runs the batch: retries a rolled-back transaction (while time is left), never one
/// whose COMMIT outcome is unknown or that committed.
async fn commit<S: TodoStore>(
    shared: &WriterShared<S>,
    handles: &ActorHandles,
    commands: &[WriteCommand],
    traces: &[Option<Arc<str>>],
    deadline: Instant,
    session: &AtomicU64,
) -> Result<Vec<WriteReply>, Failure> {
    let sink = &handles.sink;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut conn = shared
            .take(handles, deadline)
            .await
            .map_err(Failure::NotApplied)?;
        let this_session = conn.session();
        session.store(this_session.0, Ordering::SeqCst);
        let sql = tracing::info_span!(
            "db.apply_batch",
            otel.kind = "client",
            db.system = "postgresql",
            db.operation = "apply_batch",
            batch.size = commands.len(),
            attempt
        );
        let applied = tokio::time::timeout_at(
            deadline.into(),
            conn.apply_batch(commands, traces).instrument(sql),
        )
        .await;
        match applied {
            Ok(Ok(results)) => {
                shared.give_back(conn);
                return Ok(results);
            }
            Ok(Err(StoreError::Transient(e))) => {
                sink.db_error("transient");
                shared.give_back(conn);
                session.store(NO_SESSION, Ordering::SeqCst);
                let pause = RETRY_PAUSE * attempt;
                if attempt >= MAX_ATTEMPTS || Instant::now() + pause >= deadline {
                    tracing::error!(error.message = %e, attempt, "write batch rolled back; giving up");
                    return Err(Failure::NotApplied(DomainError::Unavailable(
                        "the database rolled the batch back".into(),
                    )));
                }
                tracing::warn!(error.message = %e, attempt, "write batch rolled back; retrying");
                tokio::time::sleep(pause).await;
            }
            Ok(Err(StoreError::CommitUnknown(e))) => {
                sink.db_error("commit_unknown");
                tracing::error!(error.message = %e, "write batch COMMIT outcome unknown");
                // The connection is dropped: its state is unknown.
                return Err(Failure::Unknown(
                    this_session,
                    DomainError::OutcomeUnknown(
                        "the database connection broke during COMMIT".into(),
                    ),
                ));
            }
            Ok(Err(StoreError::AfterCommit(e))) => {
                sink.db_error("after_commit");
                tracing::error!(error.message = %e, "write batch committed, results unreadable");
                shared.give_back(conn);
                return Err(Failure::Committed(DomainError::OutcomeUnknown(
                    "the change was committed but its result could not be read".into(),
                )));
            }
            Ok(Err(e)) => {
                sink.db_error("query");
                tracing::error!(error.message = %e, "write batch failed");
                shared.give_back(conn);
                return Err(Failure::NotApplied(DomainError::Unavailable(
                    "the database rejected the batch".into(),
                )));
            }
            Err(_) => {
                sink.db_error("timeout");
                tracing::error!("write batch timed out; COMMIT outcome unknown");
                // Dropping the connection aborts the transaction if COMMIT was not sent;
                // if it was, only the server knows: the batch goes to limbo.
                return Err(Failure::Unknown(
                    this_session,
                    DomainError::OutcomeUnknown("the database did not answer in time".into()),
                ));
            }
        }
    }
}

fn timed_out() -> DomainError {
    DomainError::Unavailable("the database did not answer in time".into())
}

/// Tells each owning shard about the committed changes (before the callers hear). A
/// change refused for a version mismatch also drops the shard's copy: it may be the
/// stale one (another replica changed the todo), and a client re-reading to retry must
/// get the current version, not loop on 412.
fn notify_shards(handles: &ActorHandles, commands: &[WriteCommand], results: &[WriteReply]) {
    let mut per_shard: Vec<Vec<WriteEffect>> = vec![Vec::new(); handles.shards.len()];
    let mut stale: Vec<Keys> = vec![Vec::new(); handles.shards.len()];
    for (command, result) in commands.iter().zip(results) {
        match result {
            Ok(effect) => per_shard[handles.shard_index(effect.owner())].push(effect.clone()),
            Err(DomainError::PreconditionFailed { .. }) => {
                let key = command.key();
                stale[handles.shard_index(&key.0)].push(key);
            }
            Err(_) => {}
        }
    }
    for ((slot, effects), stale) in handles.shards.iter().zip(per_shard).zip(stale) {
        // A shard that is restarting starts with an empty cache: nothing to tell it.
        if !stale.is_empty() {
            slot.cast(ShardMessage::Forget(stale));
        }
        if !effects.is_empty() {
            slot.cast(ShardMessage::Apply(effects));
        }
    }
}

/// What `commands` may have changed, grouped by owning shard.
fn keys_per_shard(handles: &ActorHandles, commands: &[WriteCommand]) -> Vec<(usize, Keys)> {
    let mut per_shard: Vec<Keys> = vec![Vec::new(); handles.shards.len()];
    for command in commands {
        let key = command.key();
        per_shard[handles.shard_index(&key.0)].push(key);
    }
    per_shard
        .into_iter()
        .enumerate()
        .filter(|(_, keys)| !keys.is_empty())
        .collect()
}

/// After a commit whose results were lost: the shards drop what it changed.
fn forget_in_shards(handles: &ActorHandles, commands: &[WriteCommand]) {
    for (shard, keys) in keys_per_shard(handles, commands) {
        handles.shards[shard].cast(ShardMessage::Forget(keys));
    }
}

/// Puts what `commands` may change in the owning shards' limbo; returns the entries.
fn enter_limbo(handles: &ActorHandles, commands: &[WriteCommand]) -> Vec<(usize, u64)> {
    keys_per_shard(handles, commands)
        .into_iter()
        .map(|(shard, keys)| (shard, handles.limbo[shard].enter(keys)))
        .collect()
}

/// Waits until the transaction that was in flight on `session` can no longer commit,
/// then takes its entries out of limbo (through their shards, so reads that started
/// before are not cached).
async fn settle<S: TodoStore>(
    store: S,
    handles: Arc<ActorHandles>,
    session: SessionId,
    entries: Vec<(usize, u64)>,
) {
    loop {
        match tokio::time::timeout(SETTLE_PAUSE * 4, store.await_fate(session)).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => tracing::warn!(error.message = %e, "cannot settle a write in limbo yet"),
            Err(_) => tracing::warn!("settling a write in limbo timed out"),
        }
        if handles.health.is_draining() {
            // The process is ending: nothing will read these caches again.
            return;
        }
        tokio::time::sleep(SETTLE_PAUSE).await;
    }
    tracing::info!("write in limbo settled");
    for (shard, id) in entries {
        handles.limbo[shard].mark_settled(id);
        if !handles.shards[shard].cast(ShardMessage::Settle(id)) {
            // No shard runs: the next one starts with an empty cache.
            handles.limbo[shard].remove(id);
        }
    }
}

fn outcome_label(result: &WriteReply) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(DomainError::Invalid { .. }) => "invalid",
        Err(DomainError::NotFound) => "not_found",
        Err(DomainError::PreconditionFailed { .. }) => "precondition_failed",
        Err(DomainError::IdempotencyConflict) => "conflict",
        Err(DomainError::Unavailable(_)) => "unavailable",
        Err(DomainError::OutcomeUnknown(_)) => "unknown",
    }
}

/// Every `outcome` label value of `todo_write_commands_total`.
pub const OUTCOMES: [&str; 7] = [
    "ok",
    "invalid",
    "not_found",
    "precondition_failed",
    "conflict",
    "unavailable",
    "unknown",
];
