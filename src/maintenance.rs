//! `KeyPurger`: a supervised actor that deletes expired idempotency keys in the
//! background (requests never wait on it). It is a child of the root supervisor (through
//! a [`crate::supervised::Spec`]), so a failure is restarted like any actor's and
//! shutdown drains it instead of aborting a task.

use std::time::Duration;

use deadpool_postgres::Pool;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::db;

/// Its name in metrics, logs and `/admin/actors`.
pub const KEY_PURGER: &str = "key-purger";

/// How often expired idempotency keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The purging actor.
#[derive(Default)]
pub struct KeyPurger;

/// Its messages.
pub enum PurgeMessage {
    /// Purge now (sent to itself every [`PURGE_EVERY`]).
    Tick,
}

/// Its state.
pub struct PurgeState {
    pool: Pool,
    ticker: tokio::task::JoinHandle<()>,
}

impl Actor for KeyPurger {
    type Msg = PurgeMessage;
    type State = PurgeState;
    type Arguments = Pool;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        pool: Pool,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ticker = myself.send_interval(PURGE_EVERY, || PurgeMessage::Tick);
        Ok(PurgeState { pool, ticker })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PurgeMessage::Tick => match db::keys::purge_expired(&state.pool).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
                // The database may be down: the next tick tries again.
                Err(e) => tracing::warn!(error.message = %e, error.cause_chain = ?e,
                    "purging idempotency keys failed"),
            },
        }
        Ok(())
    }
}
