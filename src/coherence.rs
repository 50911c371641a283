//! `ChangeListener`: how a replica learns of every other replica's writes.
//!
//! Several replicas share one database, so each replica's caches can be made stale by
//! another's write. The channel is PostgreSQL itself: every change writes an outbox
//! event in its own transaction, a relay gives events their commit order (`seq`) and
//! announces them with `NOTIFY todo_outbox` (delivered at COMMIT, no extra server). This
//! actor holds a connection that `LISTEN`s, reads the new events by `seq`, tells the
//! owning shards to drop what other replicas changed, and hands every event to the live
//! feed. It works the same with NATS up, down or not configured: NATS only carries the
//! events further, to other services.
//!
//! Whether the channel is whole is provable: events are read by `seq` from the table, so
//! none is skipped while the connection lives. While it does not (not connected yet,
//! lost, a poll that fails or times out), [`Coherence`] is broken and the shards serve
//! and cache nothing; once connected, listening and caught up it is restored, and the
//! caches start over empty. A poll every [`POLL_EVERY`] bounds how long a silently
//! broken connection (a black hole) goes unnoticed.
//!
//! [`Coherence`]: todo_actors::handles::Coherence

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use todo_actors::domain::WriteEffect;
use todo_actors::handles::ActorHandles;
use todo_actors::limbo::Keys;
use todo_actors::shard::ShardMessage;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::db::{self, Tls, outbox};
use crate::feed::FeedHub;

/// Its name in metrics, logs and `/admin/actors`.
pub const CHANGE_LISTENER: &str = "change-listener";

/// How often the listener reads new events even without a notification, and so how
/// soon a connection that went silent is noticed.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// Pause before connecting again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);
/// Events read per query.
const READ_LIMIT: i64 = 1000;

/// What the listener needs.
#[derive(Clone)]
pub struct ListenerArgs {
    /// The serving database configuration.
    pub config: tokio_postgres::Config,
    /// TLS for it.
    pub tls: Tls,
    /// The actors (shards, coherence).
    pub handles: Arc<ActorHandles>,
    /// The live feed.
    pub feed: Arc<FeedHub>,
    /// This replica (its own events need no invalidation).
    pub replica: Uuid,
    /// Upper bound on a connect or a read.
    pub timeout: Duration,
    /// `todo_db_up`: set by every poll, so an outage shows without traffic.
    pub db_up: prometheus::IntGauge,
}

/// The listening actor.
#[derive(Default)]
pub struct ChangeListener;

/// Its messages.
pub enum ListenMessage {
    /// Connect (again) and catch up.
    Connect,
    /// Read new events (a notification arrived, or the poll is due).
    Read,
    /// The connection of this generation ended.
    Lost(u64),
}

/// Its state.
pub struct ListenState {
    args: ListenerArgs,
    client: Option<tokio_postgres::Client>,
    generation: u64,
    /// The highest `seq` handled; `None` until the first connect.
    last: Option<i64>,
    poller: tokio::task::JoinHandle<()>,
}

impl Actor for ChangeListener {
    type Msg = ListenMessage;
    type State = ListenState;
    type Arguments = ListenerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ListenerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Until this incarnation listens, nobody vouches for the caches.
        args.handles.coherence.broken();
        let _ = myself.cast(ListenMessage::Connect);
        let poller = myself.send_interval(POLL_EVERY, || ListenMessage::Read);
        Ok(ListenState {
            args,
            client: None,
            generation: 0,
            last: None,
            poller,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.poller.abort();
        state.args.handles.coherence.broken();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ListenMessage::Connect if state.client.is_none() => {
                let connected =
                    tokio::time::timeout(state.args.timeout, connect(&myself, state)).await;
                match connected {
                    Ok(Ok(())) => {
                        state.args.db_up.set(1);
                        state.args.handles.coherence.restored();
                        tracing::info!("change listener connected: caches in use");
                    }
                    Ok(Err(e)) => {
                        state.args.db_up.set(0);
                        tracing::warn!(error.message = %e, error.cause_chain = ?e,
                            "change listener cannot connect");
                        state.client = None;
                        myself.send_after(RECONNECT_PAUSE, || ListenMessage::Connect);
                    }
                    Err(_) => {
                        state.args.db_up.set(0);
                        tracing::warn!("change listener: connecting timed out");
                        state.client = None;
                        myself.send_after(RECONNECT_PAUSE, || ListenMessage::Connect);
                    }
                }
            }
            ListenMessage::Connect => {}
            ListenMessage::Read => {
                state.args.feed.cut_stalled();
                if state.client.is_some() {
                    let read = tokio::time::timeout(state.args.timeout, read_new(state)).await;
                    let failure = match read {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("timed out".to_owned()),
                    };
                    state.args.db_up.set(i64::from(failure.is_none()));
                    if let Some(why) = failure {
                        tracing::warn!(error.message = %why, "change listener lost the database");
                        lose(&myself, state);
                    }
                }
            }
            ListenMessage::Lost(generation) => {
                if generation == state.generation && state.client.is_some() {
                    tracing::warn!("change listener connection closed");
                    lose(&myself, state);
                }
            }
        }
        Ok(())
    }
}

/// Drops the connection: the caches stop being used until a new one is listening.
fn lose(myself: &ActorRef<ListenMessage>, state: &mut ListenState) {
    state.args.db_up.set(0);
    state.client = None;
    state.args.handles.coherence.broken();
    myself.send_after(RECONNECT_PAUSE, || ListenMessage::Connect);
}

/// Connects, listens, and catches up on what happened since the last event handled.
async fn connect(
    myself: &ActorRef<ListenMessage>,
    state: &mut ListenState,
) -> Result<(), db::DbError> {
    let (client, mut connection) = state.args.config.connect(state.args.tls.clone()).await?;
    state.generation += 1;
    let generation = state.generation;
    let me = myself.clone();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = me.cast(ListenMessage::Read);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = me.cast(ListenMessage::Lost(generation));
    });
    client
        .batch_execute(&format!("LISTEN {}", outbox::CHANNEL))
        .await?;
    state.client = Some(client);
    match state.last {
        // First connect: the caches are empty and no stream is open yet.
        None => {
            let client = state
                .client
                .as_ref()
                .ok_or(db::DbError::Pool("gone".into()))?;
            state.last = Some(outbox::state(client).await?.last_seq);
        }
        Some(last) => {
            let client = state
                .client
                .as_ref()
                .ok_or(db::DbError::Pool("gone".into()))?;
            if last < outbox::state(client).await?.purged_seq {
                // Events the feed's streams never got are gone: they must list again.
                state.args.feed.lost();
            }
            read_new(state).await?;
        }
    }
    Ok(())
}

/// Reads every event after the last one handled and passes them on.
async fn read_new(state: &mut ListenState) -> Result<(), db::DbError> {
    loop {
        let (Some(client), Some(last)) = (state.client.as_ref(), state.last) else {
            return Ok(());
        };
        let events = outbox::events_after(client, last, READ_LIMIT).await?;
        let Some(newest) = events.last().map(|e| e.seq) else {
            return Ok(());
        };
        let full = events.len() as i64 == READ_LIMIT;
        dispatch(&state.args, events);
        state.last = Some(newest);
        if !full {
            return Ok(());
        }
    }
}

/// Tells the owning shards what other replicas changed, and the feed about everything.
fn dispatch(args: &ListenerArgs, events: Vec<outbox::Event>) {
    let handles = &args.handles;
    let mut forget: Vec<Keys> = vec![Vec::new(); handles.shards.len()];
    let mut deleted: Vec<Vec<WriteEffect>> = vec![Vec::new(); handles.shards.len()];
    for event in events.iter().filter(|e| e.replica != args.replica) {
        let shard = handles.shard_index(&event.owner);
        match event.kind {
            outbox::EventKind::Deleted => deleted[shard].push(WriteEffect::Deleted {
                owner: event.owner.clone(),
                id: event.todo_id,
            }),
            _ => forget[shard].push((event.owner.clone(), Some(event.todo_id))),
        }
    }
    for ((slot, forget), deleted) in handles.shards.iter().zip(forget).zip(deleted) {
        // A shard that is not running has no cache to correct.
        if !forget.is_empty() {
            slot.cast(ShardMessage::Forget(forget));
        }
        if !deleted.is_empty() {
            slot.cast(ShardMessage::Apply(deleted));
        }
    }
    let events: Vec<Arc<outbox::Event>> = events.into_iter().map(Arc::new).collect();
    args.feed.publish(&events);
}
