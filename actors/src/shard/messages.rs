//! Messages of a query shard.

use ractor::RpcReplyPort;

use crate::domain::{DomainError, ListQuery, Owner, StoredReply, Todo, TodoId, WriteEffect};
use crate::metrics::ReadSource;
use crate::store::StoreError;

/// A point read's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The todo.
    pub todo: Todo,
    /// Cache or database.
    pub source: ReadSource,
    /// True when served from the cache while the database is unreachable.
    pub stale: bool,
}

/// What a shard accepts.
pub enum ShardMessage {
    /// One todo of one owner.
    Get {
        /// Whose.
        owner: Owner,
        /// Which.
        id: TodoId,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<ReadOutcome, DomainError>>,
    },
    /// One page of an owner's todos.
    List {
        /// The query (identical queries in flight are coalesced).
        query: ListQuery,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<Vec<Todo>, DomainError>>,
    },
    /// The stored result of an idempotent request (read straight from the database).
    Replay {
        /// Whose key.
        owner: Owner,
        /// The `Idempotency-Key`.
        key: String,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<Option<StoredReply>, DomainError>>,
    },
    /// Committed changes, from the writer (or, later, from other replicas' events).
    Apply(Vec<WriteEffect>),
    /// Drop what may have changed without the shard hearing how (an unknown COMMIT
    /// outcome): `(owner, Some(id))` one todo, `(owner, None)` all of the owner's.
    Forget(Vec<(Owner, Option<TodoId>)>),
    /// Reconnect if the connection is gone (sent by the shard to itself every second,
    /// so cache hits never wait for a reconnect).
    Tick,
    /// Send the collected cache misses as one query (sent by the shard to itself).
    Flush,
    /// A miss query finished: the rows to cache (sent by the query task).
    Filled {
        /// The shard's change counter when the query was sent.
        seq: u64,
        /// What the database returned.
        todos: Vec<Todo>,
    },
    /// A list query finished (sent by the query task).
    Listed {
        /// Which in-flight list.
        token: u64,
        /// Its result.
        result: Result<Vec<Todo>, StoreError>,
    },
    /// Chaos testing: panic in the handler.
    Panic,
}
