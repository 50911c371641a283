//! `App`: builds everything in start-up order (pool → migrations → actors → edges) and
//! runs until a shutdown signal, then stops in the order that loses nothing:
//! readiness 503 → keep serving `SHUTDOWN_DELAY_S` → stop accepting → in-flight requests
//! finish → drain the actors (the writer commits and answers its queue) → close the pool.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::Pool;
use ractor::{Actor, ActorRef};
use todo_actors::handles::ActorHandles;
use todo_actors::supervisor::{ActorConfig, RootMessage, RootSupervisor, SupervisorArgs};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::db::{self, PgStore};
use crate::http::admin::{self, AdminContext};
use crate::http::{self, ApiContext, Cors, Lifecycle, Phase};
use crate::metrics::Metrics;

/// How the app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shut down on request; everything drained.
    Clean,
    /// Restart intensity exceeded: the process should exit non-zero.
    MeltedDown,
}

/// How long `/livez` shows the meltdown before the process exits.
const MELTDOWN_LINGER: Duration = Duration::from_millis(500);

/// A built application, listening but not yet serving.
pub struct App {
    settings: Settings,
    http_listener: TcpListener,
    admin_listener: TcpListener,
    api: http::Ctx,
    admin: Arc<AdminContext>,
    handles: Arc<ActorHandles>,
    lifecycle: Arc<Lifecycle>,
    supervisor: ActorRef<RootMessage>,
    supervisor_done: JoinHandle<()>,
    pool: Pool,
}

impl App {
    /// Connects, migrates, starts the actors and binds both ports.
    ///
    /// # Errors
    /// Any start-up step that fails, with context.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate().map_err(anyhow::Error::msg)?;
        tracing::info!(settings = ?settings, "starting");
        let mut pg = settings.db.pg_config().map_err(anyhow::Error::msg)?;
        let tls =
            db::tls(&mut pg, settings.db.ca_file.as_deref()).context("setting up database TLS")?;
        let auth = http::auth::Authenticator::from_settings(&settings.auth)
            .map_err(anyhow::Error::msg)
            .context("loading the authentication settings")?;
        let applied = db::migrate(&pg, &tls)
            .await
            .context("applying database migrations")?;
        tracing::info!(?applied, "migrations applied");
        let pool = db::create_pool(&pg, &tls, settings.db.pool_size as usize)
            .context("creating the database pool")?;

        let metrics = Arc::new(Metrics::new());
        let handles = Arc::new(ActorHandles::new(
            settings.actors.query_shards as usize,
            Arc::clone(&metrics) as Arc<dyn todo_actors::metrics::MetricsSink>,
        ));
        let config = ActorConfig {
            batch_max: settings.actors.batch_max as usize,
            batch_linger: Duration::from_micros(settings.actors.batch_linger_us),
            writer_connections: settings.actors.writer_connections as usize,
            cache_capacity: settings.actors.cache_capacity as usize,
            db_timeout: settings.db.db_timeout(),
            restart_intensity: settings.actors.restart_intensity,
            restart_period: Duration::from_secs(settings.actors.restart_period_s),
        };
        let (supervisor, supervisor_done) = Actor::spawn(
            None,
            RootSupervisor::new(PgStore::new(pg, tls)),
            SupervisorArgs {
                config,
                handles: Arc::clone(&handles),
            },
        )
        .await
        .context("starting the actors")?;

        let http_listener = bind(settings.http.http_addr, "HTTP_ADDR").await?;
        let admin_listener = bind(settings.http.admin_addr, "ADMIN_ADDR").await?;
        let lifecycle = Arc::new(Lifecycle::default());
        let api = Arc::new(ApiContext {
            handles: Arc::clone(&handles),
            metrics: Arc::clone(&metrics),
            public_url: settings
                .http
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            cors: Cors::parse(&settings.http.cors_origins),
            request_timeout: settings.http.request_timeout(),
            admission: Arc::new(Semaphore::new(settings.http.max_in_flight as usize)),
            started: Instant::now(),
            auth,
            keys_in_flight: http::conditional::KeysInFlight::default(),
        });
        let admin = Arc::new(AdminContext {
            handles: Arc::clone(&handles),
            metrics,
            pool: pool.clone(),
            lifecycle: Arc::clone(&lifecycle),
            chaos_token: settings
                .http
                .chaos_enabled
                .then(|| settings.http.admin_token.clone())
                .flatten(),
        });
        Ok(Self {
            settings,
            http_listener,
            admin_listener,
            api,
            admin,
            handles,
            lifecycle,
            supervisor,
            supervisor_done,
            pool,
        })
    }

    /// The API port actually bound (useful with port 0).
    pub fn http_port(&self) -> u16 {
        self.http_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// The admin port actually bound.
    pub fn admin_port(&self) -> u16 {
        self.admin_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// Serves until `shutdown` completes (then drains) or the supervisor melts down.
    ///
    /// # Errors
    /// When a server task fails unexpectedly.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<Exit> {
        let Self {
            settings,
            http_listener,
            admin_listener,
            api,
            admin,
            handles,
            lifecycle,
            supervisor,
            mut supervisor_done,
            pool,
        } = self;
        let http_port = http_listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let admin_port = admin_listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let stop_api = CancellationToken::new();
        let stop_admin = CancellationToken::new();
        let api_server = tokio::spawn(
            warp::serve(http::api(api))
                .incoming(http_listener)
                .graceful(stop_api.clone().cancelled_owned())
                .run(),
        );
        let admin_server = tokio::spawn(
            warp::serve(admin::routes(admin))
                .incoming(admin_listener)
                .graceful(stop_admin.clone().cancelled_owned())
                .run(),
        );
        let purge = tokio::spawn(purge_keys_every(PURGE_EVERY, pool.clone()));
        lifecycle.set(Phase::Ready);
        tracing::info!(http_port, admin_port, "ready");

        tokio::select! {
            () = shutdown => {}
            _ = &mut supervisor_done => {
                tracing::error!("the supervisor stopped: exiting so the process is restarted");
                lifecycle.set(Phase::Draining);
                tokio::time::sleep(MELTDOWN_LINGER).await;
                stop_api.cancel();
                stop_admin.cancel();
                pool.close();
                return Ok(Exit::MeltedDown);
            }
        }

        let grace = Duration::from_secs(settings.lifecycle.shutdown_grace_s);
        lifecycle.set(Phase::Draining);
        tracing::info!(
            delay_s = settings.lifecycle.shutdown_delay_s,
            "draining: readiness is 503"
        );
        tokio::time::sleep(Duration::from_secs(settings.lifecycle.shutdown_delay_s)).await;

        stop_api.cancel();
        if tokio::time::timeout(grace, api_server).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        handles.health.start_draining();
        // Children first: when a parent exits, ractor kills the children still running.
        supervisor.drain_children_and_wait(Some(grace)).await;
        if supervisor.drain_and_wait(Some(grace)).await.is_err() {
            supervisor.kill();
        }
        let _ = supervisor_done.await;
        stop_admin.cancel();
        let _ = admin_server.await;
        purge.abort();
        pool.close();
        tracing::info!("stopped");
        Ok(Exit::Clean)
    }
}

/// How often expired idempotency keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Purges expired idempotency keys forever, in the background (requests never wait on it).
async fn purge_keys_every(every: Duration, pool: Pool) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        match db::purge_expired_keys(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error.message = %e, "purging idempotency keys failed"),
        }
    }
}

async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {name}={addr}"))
}
