//! `RootSupervisor`: spawns every long-lived actor linked to itself and handles every
//! child event itself (ractor's default would stop the supervisor when any child stops).
//!
//! A child that fails or is killed is restarted after a backoff: the first restart after
//! 10 ms, doubling only while the child keeps failing soon after each restart (a crash
//! loop). A child that ran healthily for [`HEALTHY_AFTER`] starts over at 10 ms, so
//! independent failures, even frequent ones, are each restarted at once. More than
//! `restart_intensity` failures (of any children) within `restart_period` is a meltdown:
//! liveness turns false and the supervisor stops, so the process exits non-zero and
//! Kubernetes restarts the pod. Once draining starts, nothing is restarted.
//!
//! Besides its own actors it supervises children the service crate provides through a
//! [`ChildSpec`] (NATS consumers, the outbox relay, maintenance), so every long-lived
//! task of the process is restarted by the same root, while this crate stays free of
//! NATS and SQL.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};

use crate::handles::{ActorHandles, ActorStatus, METRICS, WRITER, shard_name};
use crate::metrics::{MetricsActor, MetricsArgs};
use crate::shard::{Shard, ShardArgs};
use crate::store::TodoStore;
use crate::writer::{Writer, WriterArgs, WriterShared};

/// First restart delay; doubles with each failure of a child that had not yet run
/// healthily for [`HEALTHY_AFTER`] since its last restart.
pub const FIRST_RESTART_DELAY: Duration = Duration::from_millis(10);
/// Longest restart delay.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(2);
/// A child that ran this long since its last (re)start failed independently of its
/// earlier failures: its next restart is immediate again.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// A future a [`ChildSpec`] returns.
pub type SpawnFuture<'a> = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send + 'a>>;

/// A child actor that the service crate provides and the root supervises like its own.
pub trait ChildSpec: Send + Sync + 'static {
    /// Its name in metrics, logs and `/admin/actors`.
    fn name(&self) -> &str;

    /// Spawns a new incarnation linked to `supervisor`, makes it reachable to whoever
    /// uses it (its slot), and returns its cell.
    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_>;

    /// The incarnation `id` went down: empty its slot, unless it already holds a newer
    /// incarnation.
    fn clear(&self, id: ActorId);
}

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
    /// The `n`th [`ChildSpec`] of [`SupervisorArgs::others`].
    Other(usize),
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
    /// Children the service crate provides, started after the writer, in this order.
    pub others: Vec<Arc<dyn ChildSpec>>,
}

/// The supervisor's state.
pub struct SupervisorState<S: TodoStore> {
    config: ActorConfig,
    handles: Arc<ActorHandles>,
    others: Vec<Arc<dyn ChildSpec>>,
    /// The writer's connections and batches in flight, kept across its restarts.
    writer_shared: Arc<WriterShared<S>>,
    children: HashMap<ActorId, Child>,
    failures: VecDeque<Instant>,
    /// Per child, its failures since it last ran healthily (the backoff exponent).
    recent: HashMap<Child, u32>,
    /// When each child was last (re)started.
    started: HashMap<Child, Instant>,
}

impl<S: TodoStore> SupervisorState<S> {
    /// The child's name in metrics and `/admin/actors`.
    pub fn name_of(&self, child: Child) -> String {
        match child {
            Child::Writer => WRITER.to_owned(),
            Child::Shard(i) => shard_name(i),
            Child::Metrics => METRICS.to_owned(),
            Child::Other(i) => self
                .others
                .get(i)
                .map_or_else(|| format!("other-{i}"), |spec| spec.name().to_owned()),
        }
    }
}

impl<S: TodoStore> Actor for RootSupervisor<S> {
    type Msg = RootMessage;
    type State = SupervisorState<S>;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            config: args.config,
            handles: args.handles,
            writer_shared: WriterShared::new(self.store.clone()),
            others: args.others,
            children: HashMap::new(),
            failures: VecDeque::new(),
            recent: HashMap::new(),
            started: HashMap::new(),
        };
        let shards = state.handles.shards.len();
        let mut all = vec![Child::Metrics];
        all.extend((0..shards).map(Child::Shard));
        all.push(Child::Writer);
        all.extend((0..state.others.len()).map(Child::Other));
        for child in all {
            self.spawn_child(&myself, &mut state, child).await?;
            // Exported from the start, so dashboards and alerts see a zero, not nothing.
            state.handles.sink.actor_known(&state.name_of(child));
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
                    tracing::error!(actor = %state.name_of(child), error.message = %e, "restart failed");
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
        let name = state.name_of(child);
        if state.handles.health.is_draining() {
            tracing::info!(actor = %name, %reason, "actor stopped during shutdown");
            state.handles.record(&name, ActorStatus::Stopped, None);
            return Ok(());
        }
        tracing::error!(actor = %name, %reason, "supervised actor went down");
        self.child_down(&myself, state, child, reason);
        Ok(())
    }
}

impl<S: TodoStore> RootSupervisor<S> {
    async fn spawn_child(
        &self,
        myself: &ActorRef<RootMessage>,
        state: &mut SupervisorState<S>,
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
                    shared: Arc::clone(&state.writer_shared),
                };
                let (actor, _) =
                    Actor::spawn_linked(None, Writer::<S>::default(), args, supervisor).await?;
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
            Child::Other(index) => {
                let spec = Arc::clone(&state.others[index]);
                let cell = spec.spawn(supervisor).await?;
                let id = cell.get_id();
                handles.set_other(spec.name(), Some(cell));
                id
            }
        };
        state.children.insert(id, child);
        state.started.insert(child, Instant::now());
        handles.record(&state.name_of(child), ActorStatus::Running, None);
        Ok(())
    }

    /// Empties the child's slot, unless it already holds a newer incarnation.
    fn clear_slot(&self, state: &SupervisorState<S>, child: Child, id: ActorId) {
        let h = &state.handles;
        match child {
            Child::Writer if h.writer.get().is_some_and(|a| a.get_id() == id) => h.writer.set(None),
            Child::Shard(i) if h.shards[i].get().is_some_and(|a| a.get_id() == id) => {
                h.shards[i].set(None);
            }
            Child::Metrics if h.metrics.get().is_some_and(|a| a.get_id() == id) => {
                h.metrics.set(None);
            }
            Child::Other(i) => {
                let spec = &state.others[i];
                spec.clear(id);
                h.set_other(spec.name(), None);
            }
            _ => {}
        }
    }

    /// Counts a failure, then restarts `child` after its backoff, or melts down.
    fn child_down(
        &self,
        myself: &ActorRef<RootMessage>,
        state: &mut SupervisorState<S>,
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
        let name = state.name_of(child);
        if state.failures.len() > state.config.restart_intensity as usize {
            tracing::error!(
                failures = state.failures.len(),
                period_s = period.as_secs_f64(),
                "restart intensity exceeded; giving up so the process is restarted"
            );
            state.handles.health.melt();
            state
                .handles
                .record(&name, ActorStatus::Stopped, Some(reason));
            myself.stop(Some("restart intensity exceeded".into()));
            return;
        }
        // A child that ran healthily for a while failed for a new reason: restart it at
        // once. Only failures soon after a restart (a crash loop) back off.
        let healthy = state
            .started
            .get(&child)
            .is_none_or(|t| now.duration_since(*t) >= HEALTHY_AFTER);
        let recent = state.recent.entry(child).or_default();
        if healthy {
            *recent = 0;
        }
        let exponent = (*recent).min(16);
        *recent = recent.saturating_add(1);
        let delay = (FIRST_RESTART_DELAY * 2u32.pow(exponent)).min(MAX_RESTART_DELAY);
        state
            .handles
            .record(&name, ActorStatus::Restarting, Some(reason));
        tracing::warn!(actor = %name, delay_ms = delay.as_millis() as u64, "restarting actor");
        myself.send_after(delay, move || RootMessage::Restart(child));
    }
}

/// Makes the panics the chaos hooks ask for (`"chaos: …"`) print one line instead of
/// going through the default hook (tests, chaos runs), which with `RUST_BACKTRACE=1` symbolicates a backtrace
/// (hundreds of milliseconds under load) before the actor even fails. Other panics, such
/// as failed assertions, still go to the default hook.
pub fn quiet_chaos_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            match message {
                Some(m) if m.starts_with("chaos:") => eprintln!("{m}"),
                _ => default(info),
            }
        }));
    });
}
