//! The process's life in one place: its [`Phase`], what `/readyz` reports
//! ([`Lifecycle::readiness`]), the background tasks ([`Lifecycle::tasks`], tracked and
//! awaited at the end, never aborted), and the order of shutdown ([`shut_down`]).
//!
//! Shutdown, in the order that loses nothing (DESIGN.md §9):
//! 1. readiness turns 503 at once, so load balancers stop sending;
//! 2. the API keeps serving for `SHUTDOWN_DELAY_S` (they take a while to notice);
//! 3. the API stops accepting; requests in flight finish (at most `SHUTDOWN_GRACE_S`);
//!    NATS stops taking requests and commands, those in flight finish, the connection
//!    is drained;
//! 4. the actors are drained, children first (the writer commits and answers its
//!    queue; a parent that exits would kill children still running), else stopped,
//!    else killed;
//! 5. the admin port stops; the background tasks are awaited;
//! 6. the pool closes. Flushing telemetry is the caller's last step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use ractor::ActorRef;
use serde_json::{Value, json};
use todo_actors::handles::{ActorHandles, ActorStatus};
use todo_actors::supervisor::RootMessage;
use tokio_util::task::TaskTracker;

use crate::http::server::Server;
use crate::nats::NatsEdge;

/// How long `/readyz` waits for the database.
const DB_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// Where the process is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Start-up not finished.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// SIGTERM received (or melted down): finishing in-flight work.
    Draining = 2,
}

/// The phase, the background tasks, and what readiness looks at.
pub struct Lifecycle {
    phase: AtomicU8,
    tasks: TaskTracker,
    handles: Arc<ActorHandles>,
    pool: Pool,
    nats: Option<Arc<NatsEdge>>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// True when the process should get traffic (200), false otherwise (503).
    pub serving: bool,
    /// The report: the status and each component.
    pub body: Value,
}

impl Lifecycle {
    /// A process starting, with these actors, this pool and (when configured) NATS.
    pub fn new(handles: Arc<ActorHandles>, pool: Pool, nats: Option<Arc<NatsEdge>>) -> Self {
        Self {
            phase: AtomicU8::new(Phase::Starting as u8),
            tasks: TaskTracker::new(),
            handles,
            pool,
            nats,
        }
    }

    /// The NATS edge, when configured.
    pub fn nats(&self) -> Option<&Arc<NatsEdge>> {
        self.nats.as_ref()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// Where every long-running task of the process is spawned, so shutdown can wait
    /// for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// 200 while serving (possibly degraded), 503 while starting, draining or melted
    /// down; the body lists each component.
    pub async fn readiness(&self) -> Readiness {
        let database = matches!(
            tokio::time::timeout(DB_CHECK_TIMEOUT, crate::db::ping(&self.pool)).await,
            Ok(Ok(()))
        );
        let handles = &self.handles;
        let writer = handles.writer.get().is_some();
        let shards_up = handles.shards.iter().filter(|s| s.get().is_some()).count();
        let shards_total = handles.shards.len();
        let actors = handles.snapshot();
        let others_down: Vec<&str> = actors
            .iter()
            .filter(|a| a.status != ActorStatus::Running)
            .map(|a| a.name.as_str())
            .collect();
        let nats = match &self.nats {
            None => "disabled",
            Some(edge) if edge.is_connected() => "up",
            Some(_) => "down",
        };
        let phase = self.phase();
        let live = handles.health.is_live();
        let serving = phase == Phase::Ready && live;
        let degraded = !database
            || !writer
            || shards_up < shards_total
            || !others_down.is_empty()
            || nats == "down"
            || !handles.coherence.is_whole();
        let status = match (serving, degraded) {
            (false, _) if !live => "melted down",
            (false, _) if phase == Phase::Starting => "starting",
            (false, _) => "draining",
            (true, true) => "degraded",
            (true, false) => "ready",
        };
        Readiness {
            serving,
            body: json!({
                "status": status,
                "components": {
                    "database": if database { "up" } else { "down" },
                    "nats": nats,
                    "caches": if handles.coherence.is_whole() { "coherent" } else { "bypassed" },
                    "writer": if writer { "up" } else { "restarting" },
                    "shards": {"up": shards_up, "total": shards_total},
                    "actors_down": others_down,
                }
            }),
        }
    }
}

/// Everything shutdown stops, in order.
pub struct Running {
    /// The lifecycle (phase, tasks).
    pub lifecycle: Arc<Lifecycle>,
    /// The API port.
    pub api: Server,
    /// The admin port.
    pub admin: Server,
    /// The root supervisor.
    pub supervisor: ActorRef<RootMessage>,
    /// Completes when the supervisor has stopped.
    pub supervisor_done: tokio::task::JoinHandle<()>,
    /// The pool.
    pub pool: Pool,
    /// The actors' handles.
    pub handles: Arc<ActorHandles>,
}

/// How long to keep serving while readiness is already 503, and how long each later step
/// may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `SHUTDOWN_DELAY_S`.
    pub delay: Duration,
    /// `SHUTDOWN_GRACE_S`, per step.
    pub grace: Duration,
}

/// Shuts down in the order of the module documentation.
pub async fn shut_down(running: Running, timing: Timing) {
    let Running {
        lifecycle,
        api,
        admin,
        supervisor,
        supervisor_done,
        pool,
        handles,
    } = running;
    lifecycle.set(Phase::Draining);
    tracing::info!(
        delay_s = timing.delay.as_secs(),
        "draining: readiness is 503"
    );
    tokio::time::sleep(timing.delay).await;

    if !api.stop(timing.grace).await {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    if let Some(nats) = lifecycle.nats() {
        nats.shut_down(timing.grace).await;
    }

    handles.health.start_draining();
    supervisor.drain_children_and_wait(Some(timing.grace)).await;
    if supervisor.drain_and_wait(Some(timing.grace)).await.is_err() {
        tracing::warn!("the actors did not drain in time: stopping them");
        if supervisor
            .stop_and_wait(None, Some(timing.grace))
            .await
            .is_err()
        {
            supervisor.kill();
        }
    }
    let _ = supervisor_done.await;

    admin.stop(timing.grace).await;
    lifecycle.tasks().close();
    if tokio::time::timeout(timing.grace, lifecycle.tasks().wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not finish within the grace period");
    }
    pool.close();
    tracing::info!("stopped");
}

/// After a meltdown: readiness and liveness are already failing; stop serving and let
/// the process exit non-zero.
pub async fn give_up(running: Running, linger: Duration) {
    let Running {
        lifecycle,
        api,
        admin,
        pool,
        ..
    } = running;
    lifecycle.set(Phase::Draining);
    // Long enough for a probe to see /livez fail.
    tokio::time::sleep(linger).await;
    api.stop(Duration::from_secs(1)).await;
    admin.stop(Duration::from_secs(1)).await;
    pool.close();
}
