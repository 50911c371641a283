//! PostgreSQL access. Only `src/db` holds SQL.
//!
//! - this file: connections, TLS, the pool, migrations, the readiness ping;
//! - [`store`]: [`PgStore`], the actors' persistence port (opening the writer's and the
//!   shards' connections, settling a transaction whose COMMIT outcome was lost);
//! - [`batch`]: the writer's batch plan and connection;
//! - [`reads`]: a query shard's connection and row decoding;
//! - [`keys`]: idempotency keys (stored replies, lookups, the purge);
//! - [`outbox`]: the transactional outbox (sequencing, reading, publishing, purging);
//! - [`error`]: SQLSTATE to what the actors need to know.
//!
//! Every serving connection (pool, writer, shards) fails safe: `statement_timeout`,
//! `lock_timeout` and `idle_in_transaction_session_timeout` are set for its session, and
//! TCP keepalives find a half-open connection (after a failover) in seconds.

pub mod batch;
mod error;
pub mod keys;
pub mod outbox;
pub mod reads;
pub mod store;

use std::path::Path;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
pub use tokio_postgres_rustls::MakeRustlsConnect as Tls;

pub use error::DbError;
pub use store::PgStore;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Key of the advisory lock that serialises migrations across replicas.
const MIGRATION_LOCK: i64 = 0x746f_646f_5f6d_6967; // "todo_mig"

/// The TLS connector for PostgreSQL, used when the URL says `sslmode=require` (as RDS
/// with `rds.force_ssl` needs): the server's certificate and host name are verified
/// against the CA bundle in `ca_file` (for RDS, Amazon's bundle) or, without one, the
/// Mozilla roots. With any other `sslmode` the connection is plain (local servers often
/// run self-signed certificates that nothing could verify).
///
/// # Errors
/// [`DbError::Tls`] when the CA file cannot be read or holds no certificate.
pub fn tls(config: &mut tokio_postgres::Config, ca_file: Option<&Path>) -> Result<Tls, DbError> {
    if config.get_ssl_mode() != SslMode::Require {
        config.ssl_mode(SslMode::Disable);
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| DbError::Tls(format!("DB_CA_FILE {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(DbError::Tls(format!(
                    "DB_CA_FILE {}: no certificate in it",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls::new(config))
}

/// Opens one connection and drives it on a spawned task.
///
/// # Errors
/// [`DbError`] when the server cannot be reached or refuses the login.
pub async fn connect(
    config: &tokio_postgres::Config,
    tls: &Tls,
) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = config.connect(tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error.message = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// The pool used for readiness checks and maintenance (the actors own their connections).
///
/// # Errors
/// [`DbError::Pool`] when the pool cannot be built.
pub fn create_pool(
    config: &tokio_postgres::Config,
    tls: &Tls,
    size: usize,
    timeout: std::time::Duration,
) -> Result<Pool, DbError> {
    // A pooled connection is checked with a round trip before it is handed out again; one
    // that fails is dropped. No checkout waits longer than the database timeout.
    let manager = Manager::from_config(
        config.clone(),
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// Applies the embedded migrations under an advisory lock, so replicas starting together
/// do not race. Returns the names of the migrations applied now.
///
/// # Errors
/// [`DbError`] when the database is unreachable or a migration fails.
pub async fn migrate(config: &tokio_postgres::Config, tls: &Tls) -> Result<Vec<String>, DbError> {
    let mut client = connect(config, tls).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await;
    // Unlock even when the migration failed; closing the connection would too.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = report.map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// How many migrations the binary embeds (what a fresh database gets applied).
#[must_use]
pub fn migration_count() -> usize {
    embedded::migrations::runner().get_migrations().len()
}

/// One round trip on a pooled connection (readiness).
///
/// # Errors
/// [`DbError`] when no connection answers.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
