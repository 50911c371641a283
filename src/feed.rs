//! `FeedHub`: the live change feed of one replica. Every committed change, whichever
//! replica or edge made it, reaches every replica's change listener in commit order
//! (`crate::coherence`), which hands it here; the hub passes it to the open streams of
//! its owner. A stream is a bounded queue: a consumer that cannot keep up is cut off
//! (it can resume with `Last-Event-ID`), never buffered without bound. The number of
//! open streams per replica is bounded too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use todo_actors::domain::Owner;
use tokio::sync::mpsc;

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
}

/// The open streams of this replica, by owner.
pub struct FeedHub {
    streams: Mutex<HashMap<Owner, Vec<Subscriber>>>,
    open: AtomicUsize,
    next: AtomicU64,
    max_streams: usize,
    buffer: usize,
}

/// One open stream; unsubscribes when dropped.
pub struct Subscription {
    hub: Arc<FeedHub>,
    owner: Owner,
    id: u64,
    /// The stream's queue (closed when the consumer was cut off).
    pub rx: mpsc::Receiver<FeedItem>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(&self.owner, self.id);
    }
}

impl FeedHub {
    /// A hub of at most `max_streams` streams, each buffering `buffer` items.
    pub fn new(max_streams: usize, buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            max_streams,
            buffer: buffer.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Owner, Vec<Subscriber>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Opens a stream of `owner`'s changes; `None` when the replica has as many as it may.
    pub fn subscribe(self: &Arc<Self>, owner: &Owner) -> Option<Subscription> {
        let mut streams = self.lock();
        if self.open.load(Ordering::SeqCst) >= self.max_streams {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        streams
            .entry(owner.clone())
            .or_default()
            .push(Subscriber { id, tx });
        self.open.fetch_add(1, Ordering::SeqCst);
        Some(Subscription {
            hub: Arc::clone(self),
            owner: owner.clone(),
            id,
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

    /// Passes committed changes, in commit order, to their owners' streams. A stream
    /// whose queue is full is cut off.
    pub fn publish(&self, events: &[Arc<Event>]) {
        let mut streams = self.lock();
        if streams.is_empty() {
            return;
        }
        for event in events {
            let Some(list) = streams.get_mut(&event.owner) else {
                continue;
            };
            let before = list.len();
            list.retain(|s| s.tx.try_send(FeedItem::Event(Arc::clone(event))).is_ok());
            let cut = before - list.len();
            if cut > 0 {
                tracing::warn!(streams = cut, "change feed consumers too slow: cut off");
                self.open.fetch_sub(cut, Ordering::SeqCst);
            }
            if list.is_empty() {
                streams.remove(&event.owner);
            }
        }
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
        })
    }

    #[test]
    fn streams_get_their_owners_events_and_a_slow_one_is_cut_off() {
        let hub = FeedHub::new(3, 2);
        let (alice, bob) = (
            Owner::parse("alice").expect("owner"),
            Owner::parse("bob").expect("owner"),
        );
        let mut a = hub.subscribe(&alice).expect("room");
        let mut b = hub.subscribe(&bob).expect("room");
        hub.publish(&[event(1, &alice), event(2, &bob)]);
        assert!(matches!(a.rx.try_recv(), Ok(FeedItem::Event(e)) if e.seq == 1));
        assert!(matches!(b.rx.try_recv(), Ok(FeedItem::Event(e)) if e.seq == 2));
        assert!(a.rx.try_recv().is_err());
        // Alice's stream holds 2; the third event cuts it off.
        hub.publish(&[event(3, &alice), event(4, &alice), event(5, &alice)]);
        assert_eq!(hub.open(), 1);
        let got: Vec<_> = std::iter::from_fn(|| a.rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 2);
        assert!(a.rx.try_recv().is_err(), "closed after the cut");
    }

    #[test]
    fn the_number_of_streams_is_bounded_and_closing_one_frees_its_place() {
        let hub = FeedHub::new(1, 4);
        let alice = Owner::parse("alice").expect("owner");
        let first = hub.subscribe(&alice).expect("room");
        assert!(hub.subscribe(&alice).is_none());
        drop(first);
        assert_eq!(hub.open(), 0);
        assert!(hub.subscribe(&alice).is_some());
    }
}
