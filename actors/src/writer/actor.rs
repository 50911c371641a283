//! `Writer`: natural batching, one transaction per batch, replies after COMMIT.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::messages::{WriteReply, WriterMessage};
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
/// After a failed connect, further connects wait this long (no hammering a dead server).
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

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
    /// Where the shards and the metrics actor are.
    pub handles: Arc<ActorHandles>,
}

struct Pending {
    command: WriteCommand,
    reply: RpcReplyPort<WriteReply>,
}

/// The writer's mutable state.
pub struct WriterState<C> {
    conn: Option<C>,
    last_connect_failure: Option<Instant>,
    pending: Vec<Pending>,
    flush_scheduled: bool,
    args: WriterArgs,
    depth: Arc<AtomicI64>,
}

impl<S: TodoStore> Actor for Writer<S> {
    type Msg = WriterMessage;
    type State = WriterState<S::Writer>;
    type Arguments = WriterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WriterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // The connection is made lazily: a writer that cannot reach the database still
        // starts (and answers 503), or PostgreSQL being down would look like a crash loop.
        Ok(WriterState {
            conn: None,
            last_connect_failure: None,
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
        let _ = self.ensure_conn(state).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A drain may close the mailbox before our own Flush arrives: commit what is left.
        self.flush(state).await;
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
                    self.flush(state).await;
                } else if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    // The Flush queues behind every command already waiting, so the batch
                    // holds exactly what the mailbox had: natural batching.
                    let scheduled = if state.args.linger.is_zero() {
                        myself.cast(WriterMessage::Flush).is_ok()
                    } else {
                        myself.send_after(state.args.linger, || WriterMessage::Flush);
                        true
                    };
                    if !scheduled {
                        self.flush(state).await;
                    }
                }
            }
            WriterMessage::Flush => {
                state.flush_scheduled = false;
                self.flush(state).await;
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

impl<S: TodoStore> Writer<S> {
    async fn ensure_conn(&self, state: &mut WriterState<S::Writer>) -> Result<(), DomainError> {
        if state.conn.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        state.conn = None;
        if state
            .last_connect_failure
            .is_some_and(|t| t.elapsed() < RECONNECT_PAUSE)
        {
            return Err(DomainError::Unavailable("database unreachable".into()));
        }
        match tokio::time::timeout(state.args.db_timeout, self.store.connect_writer()).await {
            Ok(Ok(conn)) => {
                state.conn = Some(conn);
                state.last_connect_failure = None;
                Ok(())
            }
            Ok(Err(e)) => {
                state.last_connect_failure = Some(Instant::now());
                state.args.handles.sink.db_error("connect");
                tracing::warn!(error.message = %e, "writer cannot connect to the database");
                Err(DomainError::Unavailable("database unreachable".into()))
            }
            Err(_) => {
                state.last_connect_failure = Some(Instant::now());
                state.args.handles.sink.db_error("timeout");
                Err(DomainError::Unavailable(
                    "database connect timed out".into(),
                ))
            }
        }
    }

    /// Commits the pending batch and answers every caller.
    async fn flush(&self, state: &mut WriterState<S::Writer>) {
        if state.pending.is_empty() {
            return;
        }
        let started = Instant::now();
        let (commands, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut state.pending)
            .into_iter()
            .map(|p| (p.command, p.reply))
            .unzip();
        let outcome = self.commit(state, &commands).await;
        let handles = Arc::clone(&state.args.handles);
        let results: Vec<WriteReply> = match outcome {
            Ok(results) => {
                notify_shards(&handles, &results);
                results
            }
            Err(e) => {
                if matches!(e, DomainError::OutcomeUnknown(_)) {
                    // The batch may have committed: the shards must not keep serving
                    // what it may have changed.
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

    /// Runs the batch: retries a rolled-back transaction, never one whose COMMIT
    /// outcome is unknown.
    async fn commit(
        &self,
        state: &mut WriterState<S::Writer>,
        commands: &[WriteCommand],
    ) -> Result<Vec<WriteReply>, DomainError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.ensure_conn(state).await?;
            let Some(conn) = state.conn.as_mut() else {
                return Err(DomainError::Unavailable("database unreachable".into()));
            };
            let sink = &state.args.handles.sink;
            match tokio::time::timeout(state.args.db_timeout, conn.apply_batch(commands)).await {
                Ok(Ok(results)) => return Ok(results),
                Ok(Err(StoreError::Transient(e))) => {
                    sink.db_error("transient");
                    if conn.is_closed() {
                        state.conn = None;
                    }
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
                    state.conn = None;
                    return Err(DomainError::OutcomeUnknown(
                        "the database connection broke during COMMIT".into(),
                    ));
                }
                Ok(Err(e)) => {
                    sink.db_error("query");
                    tracing::error!(error.message = %e, "write batch failed");
                    if conn.is_closed() {
                        state.conn = None;
                    }
                    return Err(DomainError::Unavailable(
                        "the database rejected the batch".into(),
                    ));
                }
                Err(_) => {
                    sink.db_error("timeout");
                    tracing::error!("write batch timed out; COMMIT outcome unknown");
                    // The connection is in an unknown state: drop it (this aborts the
                    // transaction if COMMIT had not been sent yet).
                    state.conn = None;
                    return Err(DomainError::OutcomeUnknown(
                        "the database did not answer in time".into(),
                    ));
                }
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
            WriteCommand::Create { todo } => (todo.owner.clone(), Some(todo.id)),
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
        Err(DomainError::Unavailable(_)) => "unavailable",
        Err(DomainError::OutcomeUnknown(_)) => "unknown",
    }
}
