//! `ActorHandles`: the one place the edges and the actors find each other.
//!
//! It holds a slot per supervised actor (filled and emptied by the supervisor), the
//! routing of owners to query shards, the table of actor lifecycle facts, the metrics
//! sink, and the supervisor's health flags. Built once in `app.rs` and shared by `Arc`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use ractor::ActorCell;

use crate::domain::Owner;
use crate::limbo::Limbo;
use crate::metrics::{MetricsMessage, MetricsSink};
use crate::shard::ShardMessage;
use crate::slot::ActorSlot;
use crate::writer::WriterMessage;

/// Registry name of the writer actor.
pub const WRITER: &str = "writer";
/// Registry name of the metrics actor.
pub const METRICS: &str = "metrics";

/// Name of query shard `index`.
pub fn shard_name(index: usize) -> String {
    format!("shard-{index}")
}

/// A supervised actor's state as `/admin/actors` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorStatus {
    /// Running and taking messages.
    Running,
    /// Failed or killed; a restart is scheduled.
    Restarting,
    /// Stopped on purpose (shutdown) or given up on (restart intensity exceeded).
    Stopped,
}

/// One row of the supervision table.
#[derive(Debug, Clone, Serialize)]
pub struct ActorInfo {
    /// Actor name (`writer`, `shard-0`, `metrics`).
    pub name: String,
    /// Current status.
    pub status: ActorStatus,
    /// Restarts since the process started.
    pub restarts: u64,
    /// Messages waiting in its mailbox.
    pub mailbox_depth: i64,
    /// The reason of the last failure, if any.
    pub last_failure: Option<String>,
    /// When the status last changed.
    pub since: DateTime<Utc>,
    /// Restarts already turned into the Prometheus counter (kept here, not in the
    /// metrics actor, so a restarted metrics actor does not count them twice).
    #[serde(skip)]
    pub restarts_reported: u64,
}

/// Liveness and shutdown flags shared by the supervisor and the admin port.
#[derive(Debug, Default)]
pub struct Health {
    melted: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// True until restart intensity was exceeded.
    pub fn is_live(&self) -> bool {
        !self.melted.load(Ordering::SeqCst)
    }

    /// Marks the process as no longer live (restart intensity exceeded).
    pub fn melt(&self) {
        self.melted.store(true, Ordering::SeqCst);
    }

    /// True once shutdown began: the supervisor restarts nothing any more.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Begins shutdown.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// Whether this replica's caches can be trusted to show other replicas' changes.
///
/// Several replicas share one database, so each replica's cache is a copy that another
/// replica's write can make stale; a channel of committed changes (the service crate's
/// change listener) tells the shards what to drop. While that channel cannot be proven
/// whole (not connected yet, disconnected, just reconnected), the shards serve nothing
/// from their caches and cache nothing; each break or repair moves the epoch on, and a
/// shard that sees a new epoch drops its whole cache.
#[derive(Debug)]
pub struct Coherence {
    whole: AtomicBool,
    epoch: AtomicU64,
}

impl Coherence {
    /// True while the caches may be used.
    pub fn is_whole(&self) -> bool {
        self.whole.load(Ordering::SeqCst)
    }

    /// Changes with every break and every repair.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The channel broke (or is not up yet): stop using the caches.
    pub fn broken(&self) {
        self.whole.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The channel is whole again: caches start over from empty.
    pub fn restored(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.whole.store(true, Ordering::SeqCst);
    }
}

impl Default for Coherence {
    /// Whole: a single replica needs no channel (the writer tells its own shards).
    fn default() -> Self {
        Self {
            whole: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
        }
    }
}

/// Slots of every supervised actor plus what they share.
pub struct ActorHandles {
    /// The writer.
    pub writer: ActorSlot<WriterMessage>,
    /// The query shards, indexed by [`ActorHandles::shard_index`].
    pub shards: Vec<ActorSlot<ShardMessage>>,
    /// The metrics actor.
    pub metrics: ActorSlot<MetricsMessage>,
    /// Per shard, the todos in limbo (see [`crate::limbo`]), indexed like `shards`.
    pub limbo: Vec<Limbo>,
    /// Where hot-path counters go directly (prometheus counters are atomics).
    pub sink: Arc<dyn MetricsSink>,
    /// Supervisor health.
    pub health: Health,
    /// Whether the caches may be used (see [`Coherence`]).
    pub coherence: Coherence,
    /// Woken after every committed batch (the outbox relay waits on it).
    pub committed: tokio::sync::Notify,
    table: Mutex<BTreeMap<String, ActorInfo>>,
    /// The running incarnations of children the service crate provides (see
    /// [`crate::supervisor::ChildSpec`]), by name, for the chaos hooks.
    others: Mutex<BTreeMap<String, ActorCell>>,
}

impl ActorHandles {
    /// Empty slots for a writer, `query_shards` shards and the metrics actor.
    pub fn new(query_shards: usize, sink: Arc<dyn MetricsSink>) -> Self {
        Self {
            writer: ActorSlot::new(WRITER),
            shards: (0..query_shards.max(1))
                .map(|i| ActorSlot::new(shard_name(i)))
                .collect(),
            metrics: ActorSlot::new(METRICS),
            limbo: (0..query_shards.max(1)).map(|_| Limbo::default()).collect(),
            sink,
            health: Health::default(),
            coherence: Coherence::default(),
            committed: tokio::sync::Notify::new(),
            table: Mutex::new(BTreeMap::new()),
            others: Mutex::new(BTreeMap::new()),
        }
    }

    /// The shard that owns `owner`'s todos (FNV-1a of the name: stable across replicas).
    pub fn shard_index(&self, owner: &Owner) -> usize {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in owner.as_ref().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // The modulo is below `shards.len()`, so the cast back cannot truncate.
        (hash % self.shards.len() as u64) as usize
    }

    /// The shard slot for `owner`.
    pub fn shard_for(&self, owner: &Owner) -> &ActorSlot<ShardMessage> {
        &self.shards[self.shard_index(owner)]
    }

    /// Mailbox depth of the actor called `name`.
    pub fn mailbox_depth(&self, name: &str) -> i64 {
        match self.slot(name) {
            Some(Slot::Writer(s)) => s.depth(),
            Some(Slot::Shard(s)) => s.depth(),
            Some(Slot::Metrics(s)) => s.depth(),
            None => 0,
        }
    }

    /// The slot of the actor called `name`.
    fn slot(&self, name: &str) -> Option<Slot<'_>> {
        match name {
            WRITER => Some(Slot::Writer(&self.writer)),
            METRICS => Some(Slot::Metrics(&self.metrics)),
            _ => self
                .shards
                .iter()
                .find(|s| s.name() == name)
                .map(Slot::Shard),
        }
    }

    /// Records a lifecycle fact for `name`.
    pub fn record(&self, name: &str, status: ActorStatus, failure: Option<String>) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let now = Utc::now();
        let entry = table.entry(name.to_owned()).or_insert_with(|| ActorInfo {
            name: name.to_owned(),
            status,
            restarts: 0,
            mailbox_depth: 0,
            last_failure: None,
            since: now,
            restarts_reported: 0,
        });
        if entry.status == ActorStatus::Restarting && status == ActorStatus::Running {
            entry.restarts += 1;
        }
        if entry.status != status {
            entry.since = now;
        }
        entry.status = status;
        if failure.is_some() {
            entry.last_failure = failure;
        }
    }

    /// The supervision table with current mailbox depths.
    pub fn snapshot(&self) -> Vec<ActorInfo> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .values()
            .map(|info| ActorInfo {
                mailbox_depth: self.mailbox_depth(&info.name),
                ..info.clone()
            })
            .collect()
    }

    /// Restarts not yet reported to Prometheus, per actor; marks them reported.
    pub fn take_unreported_restarts(&self) -> Vec<(String, u64)> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .values_mut()
            .filter(|i| i.restarts > i.restarts_reported)
            .map(|i| {
                let delta = i.restarts - i.restarts_reported;
                i.restarts_reported = i.restarts;
                (i.name.clone(), delta)
            })
            .collect()
    }

    /// Records the running incarnation of a child the service crate provides (`None`:
    /// it is down).
    pub fn set_other(&self, name: &str, cell: Option<ActorCell>) {
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        match cell {
            Some(cell) => others.insert(name.to_owned(), cell),
            None => others.remove(name),
        };
    }

    /// Kills the actor called `name` (chaos testing). False when no such actor runs.
    pub fn chaos_kill(&self, name: &str) -> bool {
        let cell = match self.slot(name) {
            Some(Slot::Writer(s)) => s.get().map(|a| a.get_cell()),
            Some(Slot::Shard(s)) => s.get().map(|a| a.get_cell()),
            Some(Slot::Metrics(s)) => s.get().map(|a| a.get_cell()),
            None => self
                .others
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned(),
        };
        cell.map(|c| c.kill()).is_some()
    }

    /// Makes the actor called `name` panic inside a handler (chaos testing).
    pub fn chaos_panic(&self, name: &str) -> bool {
        match self.slot(name) {
            Some(Slot::Writer(s)) => s.cast(WriterMessage::Panic),
            Some(Slot::Shard(s)) => s.cast(ShardMessage::Panic),
            Some(Slot::Metrics(s)) => s.cast(MetricsMessage::Panic),
            None => false,
        }
    }
}

/// A supervised actor's slot, whatever its message type.
enum Slot<'a> {
    Writer(&'a ActorSlot<WriterMessage>),
    Shard(&'a ActorSlot<ShardMessage>),
    Metrics(&'a ActorSlot<MetricsMessage>),
}
