//! Messages of a query shard.

use ractor::RpcReplyPort;

use crate::domain::{DomainError, ListQuery, Owner, StoredReply, Todo, TodoId, WriteEffect};
use crate::limbo::Keys;
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
        /// The caller's span for this message: a database read made for it links to it.
        span: tracing::Span,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<ReadOutcome, DomainError>>,
    },
    /// One page of an owner's todos.
    List {
        /// The query (identical queries in flight are coalesced).
        query: ListQuery,
        /// The caller's span for this message: the list query is its child (or, when
        /// joined, links to it).
        span: tracing::Span,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<Vec<Todo>, DomainError>>,
    },
    /// The stored result of an idempotent request (read straight from the database).
    Replay {
        /// Whose key.
        owner: Owner,
        /// The `Idempotency-Key`.
        key: String,
        /// The caller's span for this message: the lookup is its child.
        span: tracing::Span,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<Option<StoredReply>, DomainError>>,
    },
    /// Committed changes, from the writer (or, later, from other replicas' events).
    Apply(Vec<WriteEffect>),
    /// Drop what changed without the shard hearing how (a commit whose results were
    /// lost): `(owner, Some(id))` one todo, `(owner, None)` all of the owner's.
    Forget(Keys),
    /// The limbo entry with this id is settled (see [`crate::limbo`]): drop what it held
    /// and take it out of limbo.
    Settle(u64),
    /// Reconnect if the connection is gone (sent by the shard to itself every second).
    Tick,
    /// A background connect finished (its connection, if any, is in the shard's
    /// hand-over slot).
    Connected,
    /// A query on the connection of this generation timed out: it is dropped and a new
    /// one made (a half-open or black-holed connection never answers again).
    ReaderBroken {
        /// The generation of the connection that failed.
        generation: u64,
    },
    /// Send the collected cache misses as one query (sent by the shard to itself).
    Flush,
    /// A miss query finished: the rows to cache (sent by the query task).
    Filled {
        /// The shard's change counter when the query was sent.
        seq: u64,
        /// The coherence epoch when the query was sent.
        epoch: u64,
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
