//! `OutboxRelay`: moves committed events on. Every replica runs one; they take turns
//! through advisory locks in PostgreSQL (`db::outbox`).
//!
//! Each round:
//! 1. gives the events that committed since the last round their commit-order `seq`
//!    and announces it (`NOTIFY todo_outbox`), which is how every replica's change
//!    listener, and so every cache and live feed, hears of them (`crate::coherence`);
//! 2. with NATS configured, publishes the next events in `seq` order to the events
//!    stream (`Nats-Msg-Id` = `seq`, so a republished event is dropped by the stream's
//!    duplicate window) and records how far it got; while NATS is down they wait in the
//!    outbox, and `todo_outbox_pending` shows how many;
//! 3. now and then purges published events older than the retention window.
//!
//! A round starts when this replica's writer commits a batch (it wakes the relay) and
//! at least every [`POLL_EVERY`] (for other replicas' events when their relay is gone,
//! and to retry NATS). Database and NATS errors are logged and retried by the next
//! round: they never fail the actor, or an outage would look like a crash loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use prometheus::IntGauge;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use todo_actors::handles::ActorHandles;

use crate::db::outbox::{self, Event, Sequenced};

/// Its name in metrics, logs and `/admin/actors`.
pub const OUTBOX_RELAY: &str = "outbox-relay";

/// Longest time between rounds.
pub const POLL_EVERY: Duration = Duration::from_millis(100);
/// Pause before trying again when another replica's relay holds the lock.
const BUSY_PAUSE: Duration = Duration::from_millis(5);
/// Events sequenced per transaction.
const SEQUENCE_LIMIT: i64 = 5000;
/// Events published per transaction.
const PUBLISH_LIMIT: i64 = 1000;
/// How often published events are purged, and how many per statement.
const PURGE_EVERY: Duration = Duration::from_secs(60);
const PURGE_CHUNK: i64 = 1000;
/// How often `todo_outbox_pending` is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// Where events go beyond PostgreSQL (NATS).
pub trait EventSink: Send + Sync + 'static {
    /// Publishes `events`, in order; returns once every one is acknowledged.
    ///
    /// # Errors
    /// A description of what failed; the events are published again later.
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), String>>;
}

/// What the relay needs.
#[derive(Clone)]
pub struct RelayArgs {
    /// Pooled connections.
    pub pool: Pool,
    /// The writer wakes the relay through these.
    pub handles: Arc<ActorHandles>,
    /// NATS, when configured.
    pub sink: Option<Arc<dyn EventSink>>,
    /// How long published events are kept (the live feed can resume within it).
    pub retention: Duration,
    /// `todo_outbox_pending`.
    pub pending: IntGauge,
}

/// The relay actor.
#[derive(Default)]
pub struct OutboxRelay;

/// Its messages.
pub enum RelayMessage {
    /// Run a round.
    Round,
}

/// Its state.
pub struct RelayState {
    args: RelayArgs,
    /// A round is queued already (so wake-ups do not pile up in the mailbox).
    queued: Arc<AtomicBool>,
    waker: tokio::task::JoinHandle<()>,
    last_purge: Instant,
    last_gauge: Option<Instant>,
}

impl Actor for OutboxRelay {
    type Msg = RelayMessage;
    type State = RelayState;
    type Arguments = RelayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RelayArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let queued = Arc::new(AtomicBool::new(false));
        let waker = {
            let (handles, queued, myself) = (
                Arc::clone(&args.handles),
                Arc::clone(&queued),
                myself.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let _ = tokio::time::timeout(POLL_EVERY, handles.committed.notified()).await;
                    if !queued.swap(true, Ordering::SeqCst)
                        && myself.cast(RelayMessage::Round).is_err()
                    {
                        return;
                    }
                }
            })
        };
        Ok(RelayState {
            args,
            queued,
            waker,
            last_purge: Instant::now(),
            last_gauge: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.waker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RelayMessage::Round => {
                state.queued.store(false, Ordering::SeqCst);
                if round(state).await == Next::Soon && !state.queued.swap(true, Ordering::SeqCst) {
                    myself.send_after(BUSY_PAUSE, || RelayMessage::Round);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Nothing left (or only a failure that the next poll retries).
    Later,
    /// Another relay held the lock, or there is more: go again shortly.
    Soon,
}

async fn round(state: &mut RelayState) -> Next {
    let args = &state.args;
    let mut next = Next::Later;
    match outbox::sequence(&args.pool, SEQUENCE_LIMIT, args.sink.is_none()).await {
        Ok(Sequenced::Busy) => next = Next::Soon,
        Ok(Sequenced::Done { count, .. }) => {
            if count as i64 == SEQUENCE_LIMIT {
                next = Next::Soon;
            }
        }
        Err(e) => tracing::warn!(error.message = %e, error.cause_chain = ?e,
            "outbox: sequencing events failed"),
    }
    if let Some(sink) = &args.sink {
        let published =
            outbox::publish_next(&args.pool, PUBLISH_LIMIT, |events| sink.publish(events)).await;
        match published {
            Ok(n) if n as i64 == PUBLISH_LIMIT => next = Next::Soon,
            Ok(_) => {}
            Err(e) => tracing::warn!(error.message = %e, error.cause_chain = ?e,
                "outbox: publishing events failed; they wait in the outbox"),
        }
    }
    if state.last_gauge.is_none_or(|t| t.elapsed() >= GAUGE_EVERY) {
        state.last_gauge = Some(Instant::now());
        if let Ok(client) = args.pool.get().await
            && let Ok(n) = outbox::pending(&**client).await
        {
            args.pending.set(n);
        }
    }
    if state.last_purge.elapsed() >= PURGE_EVERY {
        state.last_purge = Instant::now();
        match outbox::purge(&args.pool, args.retention, PURGE_CHUNK).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "published outbox events purged"),
            Err(e) => tracing::warn!(error.message = %e, "outbox: purging failed"),
        }
    }
    next
}
