//! `Limbo`: todos whose state nobody can vouch for, because a write batch that touched
//! them ended with its COMMIT outcome unknown. Such a COMMIT can still land later (the
//! server may be committing while the client has given up), so until its fate is settled
//! a shard must neither serve these todos from its cache nor put what it reads into it:
//! a row read now may be overwritten by the late COMMIT a moment later, and a cached copy
//! would then be served (and loop conditional writers on 412) indefinitely.
//!
//! There is one `Limbo` per query shard, kept in [`crate::handles::ActorHandles`] rather
//! than in the shard's state, so a shard that restarts while a batch is in limbo still
//! honours it. The writer enters a batch's keys before it answers the batch's callers;
//! once [`crate::store::TodoStore::await_fate`] says the transaction can no longer
//! commit, it marks the entry settled and tells the shard, which drops any copy it holds
//! and makes sure reads that started before the settlement are not cached, then removes
//! the entry. A shard that starts removes the entries already settled (it has neither a
//! cache nor reads in flight).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::domain::{Owner, TodoId};

/// What a batch may have changed: `(owner, Some(id))` one todo, `(owner, None)` every
/// todo of the owner (a clear).
pub type Keys = Vec<(Owner, Option<TodoId>)>;

struct Entry {
    id: u64,
    keys: Keys,
    settled: bool,
}

/// One shard's todos in limbo.
#[derive(Default)]
pub struct Limbo {
    entries: Mutex<Vec<Entry>>,
    /// Entries held, so the hot path skips the lock when there are none.
    len: AtomicUsize,
    next: AtomicU64,
}

impl Limbo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `keys` in limbo; returns the entry's id.
    pub fn enter(&self, keys: Keys) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        entries.push(Entry {
            id,
            keys,
            settled: false,
        });
        self.len.store(entries.len(), Ordering::SeqCst);
        id
    }

    /// Marks the entry settled (its transaction can no longer commit); the shard removes
    /// it with [`Limbo::remove`].
    pub fn mark_settled(&self, id: u64) {
        if let Some(e) = self.lock().iter_mut().find(|e| e.id == id) {
            e.settled = true;
        }
    }

    /// Removes the entry; returns its keys.
    pub fn remove(&self, id: u64) -> Option<Keys> {
        let mut entries = self.lock();
        let at = entries.iter().position(|e| e.id == id)?;
        let entry = entries.swap_remove(at);
        self.len.store(entries.len(), Ordering::SeqCst);
        Some(entry.keys)
    }

    /// Removes every settled entry (a shard starting: nothing of it can be stale yet).
    pub fn remove_settled(&self) {
        let mut entries = self.lock();
        entries.retain(|e| !e.settled);
        self.len.store(entries.len(), Ordering::SeqCst);
    }

    /// True while `owner`'s todo `id` may still be changed by a COMMIT in limbo.
    pub fn holds(&self, owner: &Owner, id: TodoId) -> bool {
        if self.len.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.lock().iter().any(|e| {
            e.keys
                .iter()
                .any(|(o, i)| o == owner && i.is_none_or(|i| i == id))
        })
    }

    /// True while any of `owner`'s todos may still be changed by a COMMIT in limbo.
    pub fn holds_owner(&self, owner: &Owner) -> bool {
        if self.len.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.lock()
            .iter()
            .any(|e| e.keys.iter().any(|(o, _)| o == owner))
    }

    /// Entries held (settled or not).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// True when nothing is in limbo.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> Owner {
        Owner::parse(name).expect("valid owner")
    }

    #[test]
    fn a_todo_is_held_until_its_entry_is_removed_and_a_clear_holds_the_whole_owner() {
        let limbo = Limbo::default();
        let (alice, bob) = (owner("alice"), owner("bob"));
        let (t1, t2) = (TodoId::generate(), TodoId::generate());
        let one = limbo.enter(vec![(alice.clone(), Some(t1))]);
        let all = limbo.enter(vec![(bob.clone(), None)]);
        assert!(limbo.holds(&alice, t1));
        assert!(!limbo.holds(&alice, t2));
        assert!(
            limbo.holds(&bob, t2),
            "a clear holds every todo of its owner"
        );
        assert!(limbo.holds_owner(&alice));
        limbo.mark_settled(one);
        limbo.remove_settled();
        assert!(!limbo.holds(&alice, t1));
        assert!(limbo.holds(&bob, t1));
        assert_eq!(limbo.remove(all).map(|k| k.len()), Some(1));
        assert!(limbo.is_empty());
    }
}
