//! `RootSupervisor`: spawns every long-lived actor linked to itself and handles every
//! child event itself (ractor's default would stop the supervisor when any child stops).
//!
//! A child that fails or is killed is restarted after a backoff that doubles per recent
//! failure (the first within 10 ms). More than `restart_intensity` failures within
//! `restart_period` is a meltdown: liveness turns false and the supervisor stops, so the
//! process exits non-zero and Kubernetes restarts the pod. Once draining starts, nothing
//! is restarted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};

use crate::handles::{ActorHandles, ActorStatus, METRICS, WRITER, shard_name};
use crate::metrics::{MetricsActor, MetricsArgs};
use crate::shard::{Shard, ShardArgs};
use crate::store::TodoStore;
use crate::writer::{Writer, WriterArgs};

/// First restart delay; doubles with each recent failure of the same child.
pub const FIRST_RESTART_DELAY: Duration = Duration::from_millis(10);
/// Longest restart delay.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(2);

/// Tunables of the actor system (from `Settings`).
#[derive(Debug, Clone)]
pub struct ActorConfig {
    /// Most commands per write batch.
    pub batch_max: usize,
    /// Extra wait for a fuller batch.
    pub batch_linger: Duration,
    /// Write batches in flight at once, each on its own connection.
    pub writer_connections: usize,
    /// Cache entries per shard.
    pub cache_capacity: usize,
    /// Upper bound on one database connect, batch or query.
    pub db_timeout: Duration,
    /// Failures tolerated within `restart_period`.
    pub restart_intensity: u32,
    /// The window of `restart_intensity`.
    pub restart_period: Duration,
}

/// A supervised child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Child {
    /// The writer.
    Writer,
    /// Query shard `n`.
    Shard(usize),
    /// The metrics actor.
    Metrics,
}

impl Child {
    /// Its name in metrics and `/admin/actors`.
    pub fn name(self) -> String {
        match self {
            Self::Writer => WRITER.to_owned(),
            Self::Shard(i) => shard_name(i),
            Self::Metrics => METRICS.to_owned(),
        }
    }
}

/// Messages of the supervisor.
pub enum RootMessage {
    /// Start `Child` again (sent to itself after the backoff).
    Restart(Child),
}

/// The root supervisor.
pub struct RootSupervisor<S: TodoStore> {
    store: S,
}

impl<S: TodoStore> RootSupervisor<S> {
    /// A supervisor whose children use `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }
}

/// What the app passes at start.
pub struct SupervisorArgs {
    /// Tunables.
    pub config: ActorConfig,
    /// Slots to fill, shared with the edges.
    pub handles: Arc<ActorHandles>,
}

/// The supervisor's state.
pub struct SupervisorState {
    config: ActorConfig,
    handles: Arc<ActorHandles>,
    children: HashMap<ActorId, Child>,
    failures: VecDeque<Instant>,
    recent: HashMap<Child, VecDeque<Instant>>,
}

impl<S: TodoStore> Actor for RootSupervisor<S> {
    type Msg = RootMessage;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            config: args.config,
            handles: args.handles,
            children: HashMap::new(),
            failures: VecDeque::new(),
            recent: HashMap::new(),
        };
        let shards = state.handles.shards.len();
        let mut all = vec![Child::Metrics];
        all.extend((0..shards).map(Child::Shard));
        all.push(Child::Writer);
        for child in all {
            self.spawn_child(&myself, &mut state, child).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMessage::Restart(child) => {
                if state.handles.health.is_draining() {
                    return Ok(());
                }
                if let Err(e) = self.spawn_child(&myself, state, child).await {
                    tracing::error!(actor = %child.name(), error.message = %e, "restart failed");
                    self.child_down(&myself, state, child, format!("restart failed: {e}"));
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = reason.unwrap_or_else(|| "stopped".into());
                (cell, format!("terminated: {reason}"))
            }
            _ => return Ok(()),
        };
        let Some(child) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        self.clear_slot(state, child, cell.get_id());
        if state.handles.health.is_draining() {
            tracing::info!(actor = %child.name(), %reason, "actor stopped during shutdown");
            state
                .handles
                .record(&child.name(), ActorStatus::Stopped, None);
            return Ok(());
        }
        tracing::error!(actor = %child.name(), %reason, "supervised actor went down");
        self.child_down(&myself, state, child, reason);
        Ok(())
    }
}

impl<S: TodoStore> RootSupervisor<S> {
    async fn spawn_child(
        &self,
        myself: &ActorRef<RootMessage>,
        state: &mut SupervisorState,
        child: Child,
    ) -> Result<(), SpawnErr> {
        let handles = Arc::clone(&state.handles);
        let supervisor = myself.get_cell();
        let config = &state.config;
        let id = match child {
            Child::Writer => {
                let args = WriterArgs {
                    batch_max: config.batch_max.max(1),
                    linger: config.batch_linger,
                    db_timeout: config.db_timeout,
                    connections: config.writer_connections.max(1),
                    handles: Arc::clone(&handles),
                };
                let (actor, _) =
                    Actor::spawn_linked(None, Writer::new(self.store.clone()), args, supervisor)
                        .await?;
                let id = actor.get_id();
                handles.writer.set(Some(actor));
                id
            }
            Child::Shard(index) => {
                let args = ShardArgs {
                    index,
                    cache_capacity: config.cache_capacity,
                    db_timeout: config.db_timeout,
                    handles: Arc::clone(&handles),
                };
                let (actor, _) =
                    Actor::spawn_linked(None, Shard::new(self.store.clone()), args, supervisor)
                        .await?;
                let id = actor.get_id();
                handles.shards[index].set(Some(actor));
                id
            }
            Child::Metrics => {
                let args = MetricsArgs {
                    handles: Arc::clone(&handles),
                };
                let (actor, _) = Actor::spawn_linked(None, MetricsActor, args, supervisor).await?;
                let id = actor.get_id();
                handles.metrics.set(Some(actor));
                id
            }
        };
        state.children.insert(id, child);
        handles.record(&child.name(), ActorStatus::Running, None);
        Ok(())
    }

    /// Empties the child's slot, unless it already holds a newer incarnation.
    fn clear_slot(&self, state: &SupervisorState, child: Child, id: ActorId) {
        let h = &state.handles;
        match child {
            Child::Writer if h.writer.get().is_some_and(|a| a.get_id() == id) => h.writer.set(None),
            Child::Shard(i) if h.shards[i].get().is_some_and(|a| a.get_id() == id) => {
                h.shards[i].set(None);
            }
            Child::Metrics if h.metrics.get().is_some_and(|a| a.get_id() == id) => {
                h.metrics.set(None);
            }
            _ => {}
        }
    }

    /// Counts a failure, then restarts `child` after its backoff, or melts down.
    fn child_down(
        &self,
        myself: &ActorRef<RootMessage>,
        state: &mut SupervisorState,
        child: Child,
        reason: String,
    ) {
        let now = Instant::now();
        let period = state.config.restart_period;
        state.failures.push_back(now);
        while state
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > period)
        {
            state.failures.pop_front();
        }
        if state.failures.len() > state.config.restart_intensity as usize {
            tracing::error!(
                failures = state.failures.len(),
                period_s = period.as_secs_f64(),
                "restart intensity exceeded; giving up so the process is restarted"
            );
            state.handles.health.melt();
            state
                .handles
                .record(&child.name(), ActorStatus::Stopped, Some(reason));
            myself.stop(Some("restart intensity exceeded".into()));
            return;
        }
        let recent = state.recent.entry(child).or_default();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > period)
        {
            recent.pop_front();
        }
        let exponent = u32::try_from(recent.len().saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        let delay = (FIRST_RESTART_DELAY * 2u32.pow(exponent)).min(MAX_RESTART_DELAY);
        state
            .handles
            .record(&child.name(), ActorStatus::Restarting, Some(reason));
        tracing::warn!(actor = %child.name(), delay_ms = delay.as_millis() as u64, "restarting actor");
        myself.send_after(delay, move || RootMessage::Restart(child));
    }
}
