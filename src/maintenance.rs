//! `KeyPurger`: a supervised actor that deletes expired idempotency keys in the
//! background (requests never wait on it). It is a child of the root supervisor, provided
//! through a [`ChildSpec`], so a failure is restarted like any actor's and shutdown
//! drains it instead of aborting a task.

use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};
use todo_actors::supervisor::{ChildSpec, SpawnFuture};

use crate::db;

/// Its name in metrics, logs and `/admin/actors`.
pub const KEY_PURGER: &str = "key-purger";

/// How often expired idempotency keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The purging actor.
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

/// How the root supervisor starts a [`KeyPurger`].
pub struct KeyPurgerSpec {
    pool: Pool,
    running: Mutex<Option<ActorCell>>,
}

impl KeyPurgerSpec {
    /// A purger over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            running: Mutex::new(None),
        }
    }
}

impl ChildSpec for KeyPurgerSpec {
    fn name(&self) -> &str {
        KEY_PURGER
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_> {
        Box::pin(async move {
            let (actor, _) =
                Actor::spawn_linked(None, KeyPurger, self.pool.clone(), supervisor).await?;
            let cell = actor.get_cell();
            *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(cell.clone());
            Ok(cell)
        })
    }

    fn clear(&self, id: ActorId) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.as_ref().is_some_and(|c| c.get_id() == id) {
            *running = None;
        }
    }
}
