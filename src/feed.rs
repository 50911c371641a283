//! `FeedHub`: the live change feed of one replica. Every committed change, whichever
//! replica or edge made it, reaches every replica's change listener in commit order
//! (`crate::coherence`), which hands it here; the hub passes it to the open streams of
//! its owner.
//!
//! Memory stays bounded whatever the consumers do: each stream has a queue of
//! `FEED_BUFFER` events. A stream whose queue is full stops getting events and is marked
//! lagging; once its consumer has taken what is queued, it catches up from the outbox in
//! PostgreSQL (the events are all there, in order) and rejoins, so a burst (a clear of
//! thousands of todos) loses nothing. A consumer that stays behind for `FEED_STALL_S`
//! cannot keep up: its connection is closed (it can resume with `Last-Event-ID`). The
//! number of open streams per replica is bounded too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use todo_actors::domain::Owner;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::outbox::Event;

/// What a stream receives.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// A change.
    Event(Arc<Event>),
    /// Events were lost (the listener missed more than the outbox keeps): the client must
    /// list again.
    Gap,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<FeedItem>,
    /// Set when its queue was full; it gets no events until it has caught up.
    lagging: Arc<AtomicBool>,
    lagging_since: Option<Instant>,
    /// Closes the stream's connection (a consumer that cannot keep up).
    closer: Option<CancellationToken>,
}

/// The open streams of this replica, by owner.
pub struct FeedHub {
    streams: Mutex<HashMap<Owner, Vec<Subscriber>>>,
    open: AtomicUsize,
    next: AtomicU64,
    max_streams: usize,
    buffer: usize,
    stall_limit: Duration,
}

/// One open stream; unsubscribes when dropped.
pub struct Subscription {
    hub: Arc<FeedHub>,
    owner: Owner,
    id: u64,
    lagging: Arc<AtomicBool>,
    rx: mpsc::Receiver<FeedItem>,
}

impl Subscription {
    /// The next queued item; `None` when the stream was closed by the hub.
    pub async fn recv(&mut self) -> Option<FeedItem> {
        self.rx.recv().await
    }

    /// True when the stream missed events (its queue was full) and, its queue now
    /// drained, must catch up from the outbox before taking more.
    pub fn must_catch_up(&self) -> bool {
        self.lagging.load(Ordering::SeqCst) && self.rx.is_empty()
    }

    /// Takes events again (call before reading what was missed from the outbox, so
    /// nothing committed in between is lost; repeats are the reader's to skip).
    pub fn rejoin(&self) {
        self.hub.rejoin(&self.owner, self.id);
    }

    /// The owner whose changes it carries.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(&self.owner, self.id);
    }
}

impl FeedHub {
    /// A hub of at most `max_streams` streams, each queueing `buffer` events and closed
    /// after `stall_limit` behind.
    pub fn new(max_streams: usize, buffer: usize, stall_limit: Duration) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            max_streams,
            buffer: buffer.max(1),
            stall_limit,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Owner, Vec<Subscriber>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Opens a stream of `owner`'s changes, whose connection `closer` closes; `None` when
    /// the replica has as many as it may.
    pub fn subscribe(
        self: &Arc<Self>,
        owner: &Owner,
        closer: Option<CancellationToken>,
    ) -> Option<Subscription> {
        let mut streams = self.lock();
        if self.open.load(Ordering::SeqCst) >= self.max_streams {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let lagging = Arc::new(AtomicBool::new(false));
        streams.entry(owner.clone()).or_default().push(Subscriber {
            id,
            tx,
            lagging: Arc::clone(&lagging),
            lagging_since: None,
            closer,
        });
        self.open.fetch_add(1, Ordering::SeqCst);
        Some(Subscription {
            hub: Arc::clone(self),
            owner: owner.clone(),
            id,
            lagging,
            rx,
        })
    }

    fn remove(&self, owner: &Owner, id: u64) {
        let mut streams = self.lock();
        if let Some(list) = streams.get_mut(owner) {
            let before = list.len();
            list.retain(|s| s.id != id);
            if list.len() < before {
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
            if list.is_empty() {
                streams.remove(owner);
            }
        }
    }

    fn rejoin(&self, owner: &Owner, id: u64) {
        let mut streams = self.lock();
        if let Some(s) = streams
            .get_mut(owner)
            .and_then(|list| list.iter_mut().find(|s| s.id == id))
        {
            s.lagging_since = None;
            s.lagging.store(false, Ordering::SeqCst);
        }
    }

    /// Passes committed changes, in commit order, to their owners' streams. A stream
    /// whose queue is full is marked lagging instead (it catches up from the outbox).
    pub fn publish(&self, events: &[Arc<Event>]) {
        let mut streams = self.lock();
        if streams.is_empty() {
            return;
        }
        let now = Instant::now();
        for event in events {
            let Some(list) = streams.get_mut(&event.owner) else {
                continue;
            };
            let before = list.len();
            list.retain_mut(|s| {
                if s.lagging_since.is_some() {
                    return true;
                }
                match s.tx.try_send(FeedItem::Event(Arc::clone(event))) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.lagging.store(true, Ordering::SeqCst);
                        s.lagging_since = Some(now);
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            self.open.fetch_sub(before - list.len(), Ordering::SeqCst);
        }
        streams.retain(|_, list| !list.is_empty());
    }

    /// Closes the connections of streams that have been behind for longer than the stall
    /// limit: their consumers cannot keep up. Returns how many.
    pub fn cut_stalled(&self) -> usize {
        self.cut_behind_for(self.stall_limit)
    }

    fn cut_behind_for(&self, limit: Duration) -> usize {
        let mut streams = self.lock();
        let mut cut = 0;
        for list in streams.values_mut() {
            list.retain(|s| {
                let stalled = s.lagging_since.is_some_and(|t| t.elapsed() >= limit);
                if stalled {
                    if let Some(closer) = &s.closer {
                        closer.cancel();
                    }
                    cut += 1;
                }
                !stalled
            });
        }
        streams.retain(|_, list| !list.is_empty());
        if cut > 0 {
            self.open.fetch_sub(cut, Ordering::SeqCst);
            tracing::warn!(
                streams = cut,
                "change feed consumers that cannot keep up: closed"
            );
        }
        cut
    }

    /// Tells every stream that events were lost, and closes it.
    pub fn lost(&self) {
        let mut streams = self.lock();
        for (_, list) in streams.drain() {
            for s in list {
                let _ = s.tx.try_send(FeedItem::Gap);
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use todo_actors::domain::TodoId;
    use uuid::Uuid;

    use super::*;
    use crate::db::outbox::EventKind;

    fn event(seq: i64, owner: &Owner) -> Arc<Event> {
        Arc::new(Event {
            seq,
            owner: owner.clone(),
            kind: EventKind::Deleted,
            todo_id: TodoId::generate(),
            replica: Uuid::now_v7(),
            todo: None,
            traceparent: None,
        })
    }

    fn owner(name: &str) -> Owner {
        Owner::parse(name).expect("owner")
    }

    #[tokio::test]
    async fn streams_get_their_owners_events_and_a_full_one_lags_then_rejoins() {
        let hub = FeedHub::new(3, 2, Duration::from_secs(60));
        let (alice, bob) = (owner("alice"), owner("bob"));
        let mut a = hub.subscribe(&alice, None).expect("room");
        let mut b = hub.subscribe(&bob, None).expect("room");
        hub.publish(&[event(1, &alice), event(2, &bob)]);
        assert!(matches!(a.recv().await, Some(FeedItem::Event(e)) if e.seq == 1));
        assert!(matches!(b.recv().await, Some(FeedItem::Event(e)) if e.seq == 2));
        // Alice's queue holds 2; the third event makes her lag (nothing is lost: she
        // catches up from the outbox), and later ones are not queued.
        hub.publish(&[event(3, &alice), event(4, &alice), event(5, &alice)]);
        assert!(!a.must_catch_up(), "two are still queued");
        assert!(matches!(a.recv().await, Some(FeedItem::Event(e)) if e.seq == 3));
        assert!(matches!(a.recv().await, Some(FeedItem::Event(e)) if e.seq == 4));
        assert!(a.must_catch_up());
        hub.publish(&[event(6, &alice)]);
        assert!(a.must_catch_up(), "nothing queued while lagging");
        a.rejoin();
        hub.publish(&[event(7, &alice)]);
        assert!(matches!(a.recv().await, Some(FeedItem::Event(e)) if e.seq == 7));
        assert_eq!(hub.open(), 2);
    }

    #[tokio::test]
    async fn a_stream_behind_for_too_long_has_its_connection_closed() {
        let hub = FeedHub::new(2, 1, Duration::from_secs(60));
        let alice = owner("alice");
        let closer = CancellationToken::new();
        let _a = hub.subscribe(&alice, Some(closer.clone())).expect("room");
        hub.publish(&[event(1, &alice), event(2, &alice)]);
        assert_eq!(hub.cut_stalled(), 0);
        assert_eq!(hub.cut_behind_for(Duration::ZERO), 1);
        assert!(closer.is_cancelled());
        assert_eq!(hub.open(), 0);
    }

    #[test]
    fn the_number_of_streams_is_bounded_and_closing_one_frees_its_place() {
        let hub = FeedHub::new(1, 4, Duration::from_secs(60));
        let alice = owner("alice");
        let first = hub.subscribe(&alice, None).expect("room");
        assert!(hub.subscribe(&alice, None).is_none());
        drop(first);
        assert_eq!(hub.open(), 0);
        assert!(hub.subscribe(&alice, None).is_some());
    }
}
