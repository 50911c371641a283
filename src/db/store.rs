//! `PgStore`: the actors' persistence port ([`TodoStore`]) over PostgreSQL. It opens the
//! writer's and the shards' connections (statements prepared once each), and settles the
//! fate of a transaction whose COMMIT outcome was lost.

use std::time::Duration;

use todo_actors::store::{SessionId, StoreError, TodoStore};
use tokio_postgres::Client;
use uuid::Uuid;

use super::batch::{PgWriter, WriterStatements};
use super::error::describe;
use super::reads::PgReader;

/// How often `await_fate` looks whether a backend has exited.
const FATE_POLL: Duration = Duration::from_millis(20);

/// Opens connections to one database.
#[derive(Clone)]
pub struct PgStore {
    config: tokio_postgres::Config,
    tls: super::Tls,
    replica: Uuid,
}

impl PgStore {
    /// A store for the database `config` points at, over `tls` when it asks for TLS,
    /// whose writes are marked as `replica`'s in the outbox. `config` should be the
    /// serving configuration (timeouts and keepalives set).
    pub fn new(config: tokio_postgres::Config, tls: super::Tls, replica: Uuid) -> Self {
        Self {
            config,
            tls,
            replica,
        }
    }
}

/// The session of a connection: its backend's pid in the high half, the low 32 bits of
/// its start time in µs in the low half, so a pid reused by a later backend is never
/// taken for it.
const SESSION_OF_SELF: &str = "SELECT pid::int8 << 32
        | ((extract(epoch FROM backend_start) * 1000000)::int8 & 4294967295)
     FROM pg_stat_activity WHERE pid = pg_backend_pid()";

/// The backends of a session still alive (0 or 1); `$1` pid, `$2` start bits.
const SESSION_ALIVE: &str = "SELECT pid FROM pg_stat_activity
     WHERE pid = $1
       AND ((extract(epoch FROM backend_start) * 1000000)::int8 & 4294967295) = $2";

impl TodoStore for PgStore {
    type Writer = PgWriter;
    type Reader = PgReader;

    async fn connect_writer(&self) -> Result<PgWriter, StoreError> {
        let client = connect(&self.config, &self.tls).await?;
        let unavailable = |e: tokio_postgres::Error| StoreError::Unavailable(describe(&e));
        let session: i64 = client
            .query_one(SESSION_OF_SELF, &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(unavailable)?;
        let stmts = WriterStatements::prepare(&client, self.replica)
            .await
            .map_err(unavailable)?;
        Ok(PgWriter::new(
            client,
            stmts,
            SessionId(u64::from_ne_bytes(session.to_ne_bytes())),
        ))
    }

    async fn connect_reader(&self) -> Result<PgReader, StoreError> {
        let client = connect(&self.config, &self.tls).await?;
        PgReader::prepare(client)
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))
    }

    /// Asks the session's backend to exit and waits until it has: PostgreSQL finishes or
    /// rolls back what it was doing, atomically, before the backend is gone.
    async fn await_fate(&self, session: SessionId) -> Result<(), StoreError> {
        let pid = i32::try_from(session.0 >> 32).unwrap_or(i32::MAX);
        let started = i64::try_from(session.0 & 0xffff_ffff).unwrap_or_default();
        let client = connect(&self.config, &self.tls).await?;
        let failed = |e: tokio_postgres::Error| StoreError::Unavailable(describe(&e));
        let alive = client.prepare(SESSION_ALIVE).await.map_err(failed)?;
        let mut asked = false;
        loop {
            if client
                .query_opt(&alive, &[&pid, &started])
                .await
                .map_err(failed)?
                .is_none()
            {
                return Ok(());
            }
            if !asked {
                tracing::warn!(pid, "terminating the backend of a write in limbo");
                client
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await
                    .map_err(failed)?;
                asked = true;
            }
            tokio::time::sleep(FATE_POLL).await;
        }
    }
}

async fn connect(config: &tokio_postgres::Config, tls: &super::Tls) -> Result<Client, StoreError> {
    super::connect(config, tls).await.map_err(|e| match e {
        super::DbError::Query(e) => StoreError::Unavailable(describe(&e)),
        other => StoreError::Unavailable(other.to_string()),
    })
}
