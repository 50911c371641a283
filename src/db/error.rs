//! `DbError` and the mapping from SQLSTATE to what the actors need to know.

use todo_actors::store::StoreError;
use tokio_postgres::error::SqlState;

/// What went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A query or connection failed.
    #[error("database error")]
    Query(#[from] tokio_postgres::Error),
    /// The pool could not hand out a connection.
    #[error("connection pool: {0}")]
    Pool(String),
    /// TLS could not be set up.
    #[error("database TLS: {0}")]
    Tls(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A row did not decode.
    #[error("cannot decode a row: {0}")]
    Decode(String),
    /// Publishing events elsewhere (NATS) failed.
    #[error("publishing events failed: {0}")]
    Publish(String),
}

/// True for failures that roll the transaction back and are worth retrying: lost or
/// refused connections, serialization failures, deadlocks, admin shutdown.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true, // I/O error: the connection is gone
        Some(code) => {
            code == &SqlState::T_R_SERIALIZATION_FAILURE
                || code == &SqlState::T_R_DEADLOCK_DETECTED
                || code == &SqlState::ADMIN_SHUTDOWN
                || code == &SqlState::CRASH_SHUTDOWN
                || code == &SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        }
    }
}

/// True for failures caused by one command's data (SQLSTATE classes 22 and 23): they
/// fail that command only.
pub fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

/// Maps a failure before COMMIT.
pub fn before_commit(e: &tokio_postgres::Error) -> StoreError {
    if is_transient(e) {
        StoreError::Transient(describe(e))
    } else {
        StoreError::Query(describe(e))
    }
}

/// Maps a failure of COMMIT itself: a server error means it rolled back; a broken
/// connection means nobody knows.
pub fn at_commit(e: &tokio_postgres::Error) -> StoreError {
    if e.as_db_error().is_some() {
        StoreError::Transient(describe(e))
    } else {
        StoreError::CommitUnknown(describe(e))
    }
}

/// The error with its cause (tokio-postgres' Display alone says little).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}
