//! The metrics actor: turns actor lifecycle facts and write-batch facts into metrics.
//!
//! The actors crate knows no Prometheus: it reports through [`MetricsSink`], which
//! `todo-service` implements over its registry. Lifecycle facts live in the
//! [`ActorHandles`] table (written by the supervisor, which is where they happen); this
//! actor samples that table and the mailbox depths once a second into gauges and
//! counters. Per-message counters go straight to the sink from the hot path.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::handles::{ActorHandles, ActorStatus};
use crate::slot::took_message;

/// How often gauges are refreshed.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Where a read was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// The shard's cache.
    Cache,
    /// PostgreSQL.
    Db,
}

impl ReadSource {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Db => "db",
        }
    }
}

/// The metrics the actors emit; implemented by `todo-service` over Prometheus.
pub trait MetricsSink: Send + Sync + 'static {
    /// Makes every `{actor}` series of `actor` exist (at zero), so dashboards and alerts
    /// see it from the start.
    fn actor_known(&self, actor: &str);
    /// `todo_actor_up{actor}`.
    fn actor_up(&self, actor: &str, up: bool);
    /// `todo_actor_restarts_total{actor}` += n.
    fn actor_restarts(&self, actor: &str, n: u64);
    /// `todo_actor_mailbox_depth{actor}`.
    fn mailbox_depth(&self, actor: &str, depth: i64);
    /// `todo_actor_messages_total` and `todo_actor_message_duration_seconds{actor}`.
    fn message_handled(&self, actor: &str, seconds: f64);
    /// `todo_write_batch_size` and `todo_write_batch_duration_seconds`.
    fn write_batch(&self, size: usize, seconds: f64);
    /// `todo_write_commands_total{op, outcome}` += n.
    fn write_commands(&self, op: &str, outcome: &str, n: u64);
    /// `todo_query_reads_total{source}` += n.
    fn query_reads(&self, source: ReadSource, n: u64);
    /// `todo_query_batch_size`.
    fn query_batch(&self, size: usize);
    /// `todo_db_errors_total{kind}`.
    fn db_error(&self, kind: &str);
}

/// A sink that drops everything (actor unit tests).
pub struct NoopSink;

impl MetricsSink for NoopSink {
    fn actor_known(&self, _: &str) {}
    fn actor_up(&self, _: &str, _: bool) {}
    fn actor_restarts(&self, _: &str, _: u64) {}
    fn mailbox_depth(&self, _: &str, _: i64) {}
    fn message_handled(&self, _: &str, _: f64) {}
    fn write_batch(&self, _: usize, _: f64) {}
    fn write_commands(&self, _: &str, _: &str, _: u64) {}
    fn query_reads(&self, _: ReadSource, _: u64) {}
    fn query_batch(&self, _: usize) {}
    fn db_error(&self, _: &str) {}
}

/// Messages of the metrics actor.
pub enum MetricsMessage {
    /// A write batch finished: its size, duration and per-command outcomes.
    BatchFlushed {
        /// Commands in the batch.
        size: usize,
        /// Seconds from start to the last reply.
        seconds: f64,
        /// `(op, outcome)` per command.
        outcomes: Vec<(&'static str, &'static str)>,
    },
    /// Refresh the gauges (sent to itself every [`SAMPLE_EVERY`]).
    Sample,
    /// Chaos testing: panic in the handler.
    Panic,
}

/// The metrics actor.
pub struct MetricsActor;

/// What the supervisor passes at (re)start.
pub struct MetricsArgs {
    /// Shared handles: the lifecycle table, mailbox depths and the sink.
    pub handles: Arc<ActorHandles>,
}

/// Mutable state.
pub struct MetricsState {
    handles: Arc<ActorHandles>,
    depth: Arc<AtomicI64>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for MetricsActor {
    type Msg = MetricsMessage;
    type State = MetricsState;
    type Arguments = MetricsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MetricsArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ticker = myself.send_interval(SAMPLE_EVERY, || MetricsMessage::Sample);
        Ok(MetricsState {
            depth: args.handles.metrics.depth_counter(),
            handles: args.handles,
            ticker: Some(ticker),
        })
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
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let sink = &state.handles.sink;
        match message {
            MetricsMessage::BatchFlushed {
                size,
                seconds,
                outcomes,
            } => {
                took_message(&state.depth);
                sink.write_batch(size, seconds);
                for (op, outcome) in outcomes {
                    sink.write_commands(op, outcome, 1);
                }
            }
            MetricsMessage::Sample => {
                for info in state.handles.snapshot() {
                    sink.actor_up(&info.name, info.status == ActorStatus::Running);
                    sink.mailbox_depth(&info.name, info.mailbox_depth);
                }
                for (name, n) in state.handles.take_unreported_restarts() {
                    sink.actor_restarts(&name, n);
                }
            }
            MetricsMessage::Panic => {
                took_message(&state.depth);
                panic!("chaos: panic requested in the metrics actor");
            }
        }
        Ok(())
    }
}
