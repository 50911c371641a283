//! `TodoStore`: the persistence port the actors depend on. `todo-service` implements it
//! over PostgreSQL; actor tests implement it in memory.
//!
//! The futures are spelled `impl Future<Output = …> + Send` (as ractor's own `Actor`
//! trait does) so that actor handlers holding them stay `Send`.

use std::future::Future;
use std::sync::Arc;

use crate::domain::{
    DomainError, ListQuery, Owner, StoredReply, Todo, TodoId, WriteCommand, WriteEffect,
};

/// Why a store operation failed as a whole (per-command failures are `DomainError`s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No connection could be made or used; nothing was sent.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The transaction failed and was rolled back (connection lost before COMMIT,
    /// serialization failure, deadlock, admin shutdown): retrying is safe.
    #[error("transaction rolled back: {0}")]
    Transient(String),
    /// The connection broke while COMMIT was in flight: it may or may not have committed.
    #[error("commit outcome unknown: {0}")]
    CommitUnknown(String),
    /// The transaction committed, but its results could not be read back: the change is
    /// made, the caller cannot be told what it is. Never retried.
    #[error("committed, but the results could not be read: {0}")]
    AfterCommit(String),
    /// A query failed for another reason.
    #[error("query failed: {0}")]
    Query(String),
}

/// Identifies a writer connection's server session, so that the fate of a transaction
/// whose COMMIT outcome is unknown can be settled from another connection (for
/// PostgreSQL, the backend process id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

/// One outcome per command of a batch, in the batch's order.
pub type BatchOutcome = Vec<Result<WriteEffect, DomainError>>;

/// Opens connections; each actor owns the connection it gets.
pub trait TodoStore: Clone + Send + Sync + 'static {
    /// The writer's connection.
    type Writer: WriteConn;
    /// A query shard's connection (shared by its concurrent lookups).
    type Reader: ReadConn;

    /// Opens the writer's connection (statements prepared).
    fn connect_writer(&self) -> impl Future<Output = Result<Self::Writer, StoreError>> + Send;

    /// Opens a query shard's connection.
    fn connect_reader(&self) -> impl Future<Output = Result<Self::Reader, StoreError>> + Send;

    /// Completes once whatever `session` had in flight can no longer commit: its
    /// transaction has committed or rolled back for good (for PostgreSQL, the backend
    /// has exited; it is asked to). Until then, a COMMIT whose answer was lost may still
    /// land.
    ///
    /// # Errors
    /// [`StoreError`] when that cannot be established now (the database is unreachable);
    /// the caller tries again later.
    fn await_fate(&self, session: SessionId)
    -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The writer's connection: applies whole batches, one transaction each.
pub trait WriteConn: Send + Sync + 'static {
    /// Applies `commands` in order in one transaction. Row-level failures (not found,
    /// version mismatch, a rejected value) fail only their own command; the rest commit.
    /// `traces` holds each command's W3C `traceparent` (if any), in the same order, for
    /// the events the changes write.
    ///
    /// # Errors
    /// A [`StoreError`] when the transaction as a whole failed.
    fn apply_batch(
        &mut self,
        commands: &[WriteCommand],
        traces: &[Option<Arc<str>>],
    ) -> impl Future<Output = Result<BatchOutcome, StoreError>> + Send;

    /// True once the connection is unusable.
    fn is_closed(&self) -> bool;

    /// The server session of this connection (see [`TodoStore::await_fate`]).
    fn session(&self) -> SessionId;
}

/// A query shard's connection.
pub trait ReadConn: Send + Sync + 'static {
    /// The todos among `keys` that exist (each scoped by its owner), in any order.
    ///
    /// # Errors
    /// [`StoreError`] when the query fails.
    fn get_todos(
        &self,
        keys: &[(Owner, TodoId)],
    ) -> impl Future<Output = Result<Vec<Todo>, StoreError>> + Send;

    /// One page of an owner's todos, in list order.
    ///
    /// # Errors
    /// [`StoreError`] when the query fails.
    fn list_todos(
        &self,
        query: &ListQuery,
    ) -> impl Future<Output = Result<Vec<Todo>, StoreError>> + Send;

    /// The stored first result under an owner's idempotency key, if not expired.
    ///
    /// # Errors
    /// [`StoreError`] when the query fails.
    fn get_reply(
        &self,
        owner: &Owner,
        key: &str,
    ) -> impl Future<Output = Result<Option<StoredReply>, StoreError>> + Send;

    /// True once the connection is unusable.
    fn is_closed(&self) -> bool;
}
