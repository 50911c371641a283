//! `ActorSlot`: where the edges find the *current* incarnation of an actor.
//!
//! A restarted actor is a new `ActorRef`, so nobody outside the supervisor may keep one.
//! The supervisor fills the slot on (re)start and empties it on failure; callers go
//! through the slot, which also counts the messages sent but not yet received (ractor
//! does not expose a mailbox length).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

/// Why a call through a slot got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The actor is not running (restarting or stopped), or died with the message queued.
    #[error("actor unavailable")]
    Unavailable,
    /// No answer within the timeout; the request may still be applied later.
    #[error("actor call timed out")]
    Timeout,
}

/// The current `ActorRef` of one supervised actor plus its mailbox depth.
pub struct ActorSlot<M: Message> {
    name: String,
    current: RwLock<Option<ActorRef<M>>>,
    depth: Arc<AtomicI64>,
}

impl<M: Message> ActorSlot<M> {
    /// An empty slot for the actor called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            current: RwLock::new(None),
            depth: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The actor's name (for metrics and `/admin/actors`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The running incarnation, if any.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Installs (or, with `None`, removes) the running incarnation. A new incarnation
    /// starts with an empty mailbox.
    pub fn set(&self, actor: Option<ActorRef<M>>) {
        self.depth.store(0, Ordering::Relaxed);
        match self.current.write() {
            Ok(mut g) => *g = actor,
            Err(p) => *p.into_inner() = actor,
        }
    }

    /// Messages sent through the slot and not yet taken by the actor.
    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed).max(0)
    }

    /// The counter the actor decrements as it takes each message.
    pub fn depth_counter(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.depth)
    }

    /// Sends a request and waits for the reply, at most `timeout`.
    ///
    /// # Errors
    /// [`CallError::Unavailable`] when no actor runs or it died before answering;
    /// [`CallError::Timeout`] when it did not answer in time.
    pub async fn call<R, F>(&self, build: F, timeout: Duration) -> Result<R, CallError>
    where
        F: FnOnce(RpcReplyPort<R>) -> M,
        R: Send + 'static,
    {
        let actor = self.get().ok_or(CallError::Unavailable)?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        match actor.call(build, Some(timeout)).await {
            Ok(CallResult::Success(reply)) => Ok(reply),
            Ok(CallResult::Timeout) => Err(CallError::Timeout),
            Ok(CallResult::SenderError) => Err(CallError::Unavailable),
            Err(_) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                Err(CallError::Unavailable)
            }
        }
    }

    /// Sends a message without waiting; false when no actor took it.
    pub fn cast(&self, msg: M) -> bool {
        let Some(actor) = self.get() else {
            return false;
        };
        self.depth.fetch_add(1, Ordering::Relaxed);
        if actor.cast(msg).is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Marks one message as taken from the mailbox (called first thing in `handle`).
pub fn took_message(depth: &AtomicI64) {
    depth.fetch_sub(1, Ordering::Relaxed);
}
