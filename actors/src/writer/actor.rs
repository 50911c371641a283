//! `Writer`: natural batching, one transaction per batch, replies after COMMIT.
//!
//! COMMIT waits for the WAL flush, so one connection commits at most a batch per flush.
//! The writer therefore keeps up to `connections` batches in flight, each on its own
//! long-lived connection, as long as they touch disjoint todos and owners (a batch that
//! conflicts with one in flight waits for it): per-todo order is kept, and PostgreSQL
//! groups the concurrent commits into one flush. Batches run in spawned tasks that own
//! their callers' reply ports, so even a killed writer's batches finish and answer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use super::messages::{WriteReply, WriterMessage};
use crate::connect::ConnectGate;
use crate::domain::{DomainError, Owner, TodoId, WriteCommand, WriteEffect};
use crate::handles::{ActorHandles, WRITER};
use crate::metrics::MetricsMessage;
use crate::shard::ShardMessage;
use crate::slot::took_message;
use crate::store::{StoreError, TodoStore, WriteConn};

/// Attempts per batch when the transaction fails as a whole and was rolled back.
const MAX_ATTEMPTS: u32 = 3;
/// Pause before re-trying a rolled-back batch (times the attempt number).
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// The writer actor; generic over the store so tests can use an in-memory one.
pub struct Writer<S: TodoStore> {
    store: S,
}

impl<S: TodoStore> Writer<S> {
    /// A writer over `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }
}

/// What the supervisor passes at (re)start.
pub struct WriterArgs {
    /// Most commands per batch (`BATCH_MAX`).
    pub batch_max: usize,
    /// Extra time to wait for more commands before committing (`BATCH_LINGER_US`).
    pub linger: Duration,
    /// Upper bound on one connect or one batch (a hung database must not hang callers).
    pub db_timeout: Duration,
    /// Batches in flight at once, each on its own connection (`WRITER_CONNECTIONS`).
    pub connections: usize,
    /// Where the shards and the metrics actor are.
    pub handles: Arc<ActorHandles>,
}

struct Pending {
    command: WriteCommand,
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
            match &p.command {
                WriteCommand::Create { todo, .. } => {
                    f.ids.insert(todo.id);
                    f.owners.insert(todo.owner.clone());
                }
                WriteCommand::Update { owner, id, .. } | WriteCommand::Delete { owner, id, .. } => {
                    f.ids.insert(*id);
                    f.owners.insert(owner.clone());
                }
                WriteCommand::Clear { owner, .. } => {
                    f.owners.insert(owner.clone());
                    f.cleared.insert(owner.clone());
                }
            }
        }
        f
    }

    fn conflicts(&self, other: &Self) -> bool {
        !self.ids.is_disjoint(&other.ids)
            || !self.cleared.is_disjoint(&other.owners)
            || !other.cleared.is_disjoint(&self.owners)
    }
}

struct InFlight {
    footprint: Footprint,
    task: JoinHandle<()>,
}

/// Idle connections shared by the batch tasks.
struct Connections<S: TodoStore> {
    store: S,
    idle: Mutex<Vec<S::Writer>>,
    gate: ConnectGate,
    db_timeout: Duration,
}

impl<S: TodoStore> Connections<S> {
    /// An idle connection that still works, else a new one.
    async fn take(&self, handles: &ActorHandles) -> Result<S::Writer, DomainError> {
        loop {
            let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match conn {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(_) => continue,
                None => return self.open(handles).await,
            }
        }
    }

    /// A new connection, through the reconnect gate.
    async fn open(&self, handles: &ActorHandles) -> Result<S::Writer, DomainError> {
        let connect = self.store.connect_writer();
        self.gate
            .open(WRITER, self.db_timeout, &*handles.sink, connect)
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
}

/// The writer's mutable state.
pub struct WriterState<S: TodoStore> {
    conns: Arc<Connections<S>>,
    pending: Vec<Pending>,
    flush_scheduled: bool,
    in_flight: HashMap<u64, InFlight>,
    next_batch: u64,
    args: WriterArgs,
    depth: Arc<AtomicI64>,
}

impl<S: TodoStore> Actor for Writer<S> {
    type Msg = WriterMessage;
    type State = WriterState<S>;
    type Arguments = WriterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WriterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Connections are made lazily: a writer that cannot reach the database still
        // starts (and answers 503), or PostgreSQL being down would look like a crash loop.
        Ok(WriterState {
            conns: Arc::new(Connections {
                store: self.store.clone(),
                idle: Mutex::new(Vec::new()),
                gate: ConnectGate::default(),
                db_timeout: args.db_timeout,
            }),
            pending: Vec::with_capacity(args.batch_max),
            flush_scheduled: false,
            in_flight: HashMap::new(),
            next_batch: 0,
            depth: args.handles.writer.depth_counter(),
            args,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Open the connections now so the first batches do not pay for it.
        for _ in 0..state.args.connections.max(1) {
            match state.conns.open(&state.args.handles).await {
                Ok(conn) => state.conns.give_back(conn),
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A drain closes the mailbox: no more Done or Flush messages will arrive. Wait for
        // the batches in flight, then commit what is left, one batch after another.
        for (_, batch) in state.in_flight.drain() {
            let _ = batch.task.await;
        }
        while !state.pending.is_empty() {
            let n = state.pending.len().min(state.args.batch_max.max(1));
            let batch: Vec<Pending> = state.pending.drain(..n).collect();
            run_batch(
                Arc::clone(&state.conns),
                Arc::clone(&state.args.handles),
                batch,
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
            WriterMessage::Write { command, reply } => {
                took_message(&state.depth);
                state.pending.push(Pending { command, reply });
                if state.pending.len() >= state.args.batch_max {
                    start_batches(&myself, state);
                } else if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    // The Flush queues behind every command already waiting, so the batch
                    // holds exactly what the mailbox had: natural batching.
                    if state.args.linger.is_zero() {
                        if myself.cast(WriterMessage::Flush).is_err() {
                            start_batches(&myself, state);
                        }
                    } else {
                        myself.send_after(state.args.linger, || WriterMessage::Flush);
                    }
                }
            }
            WriterMessage::Flush => {
                state.flush_scheduled = false;
                start_batches(&myself, state);
            }
            WriterMessage::Done { batch } => {
                state.in_flight.remove(&batch);
                start_batches(&myself, state);
            }
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

/// Starts as many batches as connections allow and conflicts permit.
fn start_batches<S: TodoStore>(myself: &ActorRef<WriterMessage>, state: &mut WriterState<S>) {
    while !state.pending.is_empty() && state.in_flight.len() < state.args.connections.max(1) {
        let n = state.pending.len().min(state.args.batch_max.max(1));
        let batch: Vec<Pending> = state.pending.drain(..n).collect();
        let footprint = Footprint::of(&batch);
        if state
            .in_flight
            .values()
            .any(|f| f.footprint.conflicts(&footprint))
        {
            // Wait for the batch it conflicts with; its Done starts this one.
            state.pending.splice(0..0, batch);
            return;
        }
        let id = state.next_batch;
        state.next_batch += 1;
        let conns = Arc::clone(&state.conns);
        let handles = Arc::clone(&state.args.handles);
        let myself = myself.clone();
        let task = tokio::spawn(async move {
            run_batch(conns, handles, batch).await;
            let _ = myself.cast(WriterMessage::Done { batch: id });
        });
        state.in_flight.insert(id, InFlight { footprint, task });
    }
}

/// Commits one batch and answers every caller; the owning shards hear first.
async fn run_batch<S: TodoStore>(
    conns: Arc<Connections<S>>,
    handles: Arc<ActorHandles>,
    batch: Vec<Pending>,
) {
    let started = Instant::now();
    let (commands, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let results: Vec<WriteReply> = match commit(&conns, &handles, &commands).await {
        Ok(results) => {
            notify_shards(&handles, &results);
            results
        }
        Err(e) => {
            if matches!(e, DomainError::OutcomeUnknown(_)) {
                // The batch may have committed: the shards must not keep serving what it
                // may have changed.
                forget_in_shards(&handles, &commands);
            }
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

/// Runs the batch: retries a rolled-back transaction, never one whose COMMIT outcome
/// is unknown.
async fn commit<S: TodoStore>(
    conns: &Connections<S>,
    handles: &ActorHandles,
    commands: &[WriteCommand],
) -> Result<Vec<WriteReply>, DomainError> {
    let sink = &handles.sink;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut conn = conns.take(handles).await?;
        match tokio::time::timeout(conns.db_timeout, conn.apply_batch(commands)).await {
            Ok(Ok(results)) => {
                conns.give_back(conn);
                return Ok(results);
            }
            Ok(Err(StoreError::Transient(e))) => {
                sink.db_error("transient");
                conns.give_back(conn);
                if attempt >= MAX_ATTEMPTS {
                    tracing::error!(error.message = %e, attempt, "write batch rolled back; giving up");
                    return Err(DomainError::Unavailable(
                        "the database rolled the batch back".into(),
                    ));
                }
                tracing::warn!(error.message = %e, attempt, "write batch rolled back; retrying");
                tokio::time::sleep(RETRY_PAUSE * attempt).await;
            }
            Ok(Err(StoreError::CommitUnknown(e))) => {
                sink.db_error("commit_unknown");
                tracing::error!(error.message = %e, "write batch COMMIT outcome unknown");
                // The connection is dropped: its state is unknown.
                return Err(DomainError::OutcomeUnknown(
                    "the database connection broke during COMMIT".into(),
                ));
            }
            Ok(Err(e)) => {
                sink.db_error("query");
                tracing::error!(error.message = %e, "write batch failed");
                conns.give_back(conn);
                return Err(DomainError::Unavailable(
                    "the database rejected the batch".into(),
                ));
            }
            Err(_) => {
                sink.db_error("timeout");
                tracing::error!("write batch timed out; COMMIT outcome unknown");
                // Dropping the connection aborts the transaction if COMMIT was not sent.
                return Err(DomainError::OutcomeUnknown(
                    "the database did not answer in time".into(),
                ));
            }
        }
    }
}

/// Tells each owning shard about the committed changes (before the callers hear).
fn notify_shards(handles: &ActorHandles, results: &[WriteReply]) {
    let mut per_shard: Vec<Vec<WriteEffect>> = vec![Vec::new(); handles.shards.len()];
    for effect in results.iter().filter_map(|r| r.as_ref().ok()) {
        let owner = match effect {
            WriteEffect::Created(t) | WriteEffect::Updated(t) => &t.owner,
            WriteEffect::Deleted { owner, .. } | WriteEffect::Cleared { owner, .. } => owner,
        };
        per_shard[handles.shard_index(owner)].push(effect.clone());
    }
    for (slot, effects) in handles.shards.iter().zip(per_shard) {
        if !effects.is_empty() {
            // A shard that is restarting starts with an empty cache: nothing to tell it.
            slot.cast(ShardMessage::Apply(effects));
        }
    }
}

/// After an unknown COMMIT outcome: the owning shards drop what the commands may have
/// changed (a clear drops everything of its owner).
fn forget_in_shards(handles: &ActorHandles, commands: &[WriteCommand]) {
    let mut per_shard: Vec<Vec<(Owner, Option<TodoId>)>> = vec![Vec::new(); handles.shards.len()];
    for command in commands {
        let key = match command {
            WriteCommand::Create { todo, .. } => (todo.owner.clone(), Some(todo.id)),
            WriteCommand::Update { owner, id, .. } | WriteCommand::Delete { owner, id, .. } => {
                (owner.clone(), Some(*id))
            }
            WriteCommand::Clear { owner, .. } => (owner.clone(), None),
        };
        per_shard[handles.shard_index(&key.0)].push(key);
    }
    for (slot, keys) in handles.shards.iter().zip(per_shard) {
        if !keys.is_empty() {
            slot.cast(ShardMessage::Forget(keys));
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
