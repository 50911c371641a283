//! `ConnectGate`: how the writer and the shards (re)connect to the store. A connect is
//! bounded by the database timeout, and after a failure no new attempt is made for
//! [`RECONNECT_PAUSE`], so a dead server gets fast "unavailable" answers instead of a
//! connect per request.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::MetricsSink;
use crate::store::StoreError;

/// After a failed connect, further connects wait this long.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Remembers the last failed connect.
#[derive(Debug, Default)]
pub struct ConnectGate {
    last_failure: Mutex<Option<Instant>>,
}

impl ConnectGate {
    /// Runs `connect` (bounded by `timeout`) unless a connect failed less than
    /// [`RECONNECT_PAUSE`] ago; `None` when no connection could be had. `who` names the
    /// actor in the log.
    pub async fn open<T>(
        &self,
        who: &str,
        timeout: Duration,
        sink: &dyn MetricsSink,
        connect: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        let paused = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < RECONNECT_PAUSE);
        if paused {
            return None;
        }
        let result = tokio::time::timeout(timeout, connect).await;
        let mut last_failure = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(Ok(conn)) => {
                *last_failure = None;
                Some(conn)
            }
            Ok(Err(e)) => {
                *last_failure = Some(Instant::now());
                sink.db_error("connect");
                tracing::warn!(actor = who, error.message = %e, "cannot connect to the database");
                None
            }
            Err(_) => {
                *last_failure = Some(Instant::now());
                sink.db_error("timeout");
                tracing::warn!(actor = who, "connecting to the database timed out");
                None
            }
        }
    }
}
