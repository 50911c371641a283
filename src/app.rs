//! `App`: builds everything in start-up order (pool → migrations → actors → application
//! layer → edges) and runs until a shutdown signal or a meltdown; the order of shutdown
//! is [`crate::lifecycle`]'s.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::Pool;
use ractor::{Actor, ActorRef};
use todo_actors::handles::ActorHandles;
use todo_actors::supervisor::{
    ActorConfig, ChildSpec, RootMessage, RootSupervisor, SupervisorArgs,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::coherence::{CHANGE_LISTENER, ChangeListener, ListenerArgs};
use crate::config::Settings;
use crate::db::{self, PgStore};
use crate::feed::FeedHub;
use crate::http::admin::{self, AdminContext};
use crate::http::server::{Limits, Server};
use crate::http::{self, ApiContext, Cors, Edge};
use crate::lifecycle::{self, Lifecycle, Phase, Running, Timing};
use crate::maintenance::{KEY_PURGER, KeyPurger};
use crate::metrics::Metrics;
use crate::nats::NatsEdge;
use crate::nats::commands::{CommandConsumer, NATS_COMMANDS};
use crate::nats::events::NatsEvents;
use crate::nats::requests::{NATS_REQUESTS, NatsResponder};
use crate::outbox::{EventSink, OUTBOX_RELAY, OutboxRelay, RelayArgs};
use crate::service::{ServiceSettings, TodoService};
use crate::supervised::Spec;

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
/// Connections the admin port keeps open at most (probes and scrapes).
const ADMIN_MAX_CONNECTIONS: usize = 256;

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
        let mut serving = settings.db.serving_config().map_err(anyhow::Error::msg)?;
        serving.ssl_mode(pg.get_ssl_mode());
        let auth = Authenticator::from_settings(&settings.auth)
            .map_err(anyhow::Error::msg)
            .context("loading the authentication settings")?;
        let applied = db::migrate(&pg, &tls)
            .await
            .context("applying database migrations")?;
        tracing::info!(?applied, "migrations applied");
        let db_timeout = settings.db.db_timeout();
        let pool = db::create_pool(&serving, &tls, settings.db.pool_size as usize, db_timeout)
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
            db_timeout,
            restart_intensity: settings.actors.restart_intensity,
            restart_period: Duration::from_secs(settings.actors.restart_period_s),
        };
        // This replica, as other replicas' change listeners see it in the outbox. (Tests
        // run several in one process, so it is not the process's `service.instance.id`.)
        let replica = uuid::Uuid::now_v7();
        tracing::info!(%replica, instance = %crate::telemetry::instance_id(), "replica id");
        let feed = FeedHub::new(
            settings.events.feed_max_streams as usize,
            settings.events.feed_buffer as usize,
            Duration::from_secs(settings.events.feed_stall_s),
        );
        let service = Arc::new(TodoService::new(
            Arc::clone(&handles),
            ServiceSettings {
                request_timeout: settings.http.request_timeout(),
                max_in_flight: settings.http.max_in_flight as usize,
                db_timeout,
            },
            pool.clone(),
            Arc::clone(&feed),
        ));
        let auth = Arc::new(auth);
        let public_url = settings
            .http
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_owned());
        let nats = match settings.nats.url() {
            Some(url) => Some(
                NatsEdge::connect(
                    &settings.nats,
                    url,
                    Arc::clone(&service),
                    Arc::clone(&auth),
                    Arc::clone(&metrics),
                    public_url.as_deref(),
                )
                .await
                .map_err(anyhow::Error::msg)
                .context("connecting to NATS")?,
            ),
            None => None,
        };
        let mut others: Vec<Arc<dyn ChildSpec>> = vec![
            Arc::new(Spec::<ChangeListener>::new(
                CHANGE_LISTENER,
                ListenerArgs {
                    config: serving.clone(),
                    tls: tls.clone(),
                    handles: Arc::clone(&handles),
                    feed: Arc::clone(&feed),
                    replica,
                    timeout: db_timeout,
                    db_up: metrics.db_up.clone(),
                },
            )),
            Arc::new(Spec::<OutboxRelay>::new(
                OUTBOX_RELAY,
                RelayArgs {
                    pool: pool.clone(),
                    handles: Arc::clone(&handles),
                    sink: nats.as_ref().map(|edge| {
                        Arc::new(NatsEvents::new(Arc::clone(edge))) as Arc<dyn EventSink>
                    }),
                    retention: Duration::from_secs(settings.events.outbox_retention_h * 3600),
                    pending: metrics.outbox_pending.clone(),
                },
            )),
            Arc::new(Spec::<KeyPurger>::new(KEY_PURGER, pool.clone())),
        ];
        if let Some(edge) = &nats {
            others.push(Arc::new(Spec::<NatsResponder>::new(
                NATS_REQUESTS,
                Arc::clone(edge),
            )));
            others.push(Arc::new(Spec::<CommandConsumer>::new(
                NATS_COMMANDS,
                Arc::clone(edge),
            )));
        }
        let (supervisor, supervisor_done) = Actor::spawn(
            None,
            RootSupervisor::new(PgStore::new(serving, tls, replica)),
            SupervisorArgs {
                config,
                handles: Arc::clone(&handles),
                others,
            },
        )
        .await
        .context("starting the actors")?;

        let http_listener = bind(settings.http.http_addr, "HTTP_ADDR").await?;
        let admin_listener = bind(settings.http.admin_addr, "ADMIN_ADDR").await?;
        let lifecycle = Arc::new(Lifecycle::new(
            Arc::clone(&handles),
            pool.clone(),
            nats.clone(),
        ));
        let api = Arc::new(ApiContext {
            service,
            auth,
            metrics: Arc::clone(&metrics),
            public_url,
            cors: Cors::parse(&settings.http.cors_origins),
            body_timeout: settings.http.body_timeout(),
            started: Instant::now(),
        });
        if settings.http.chaos_enabled {
            // Panics the chaos hooks ask for print one line, not a backtrace.
            todo_actors::supervisor::quiet_chaos_panics();
        }
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
            feed: Arc::clone(&feed),
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
    /// None today; kept for start-up steps that may fail later.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<Exit> {
        let http_port = self.http_port();
        let admin_port = self.admin_port();
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
        let metrics = Arc::clone(&api.metrics);
        let tasks = lifecycle.tasks().clone();
        let api_server = Server::spawn(
            &tasks,
            http_listener,
            Edge::new(warp::service(http::api(Arc::clone(&api))), api),
            Limits {
                max_connections: settings.http.max_connections as usize,
                header_read_timeout: settings.http.header_read_timeout(),
                send_buffer: settings.http.send_buffer_bytes as usize,
            },
            metrics.http_connections.with_label_values(&["api"]),
        );
        let admin_server = Server::spawn(
            &tasks,
            admin_listener,
            warp::service(admin::routes(admin)),
            Limits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                header_read_timeout: settings.http.header_read_timeout(),
                send_buffer: settings.http.send_buffer_bytes as usize,
            },
            metrics.http_connections.with_label_values(&["admin"]),
        );
        lifecycle.set(Phase::Ready);
        tracing::info!(http_port, admin_port, "ready");

        let melted = tokio::select! {
            () = shutdown => false,
            _ = &mut supervisor_done => true,
        };
        let running = Running {
            lifecycle,
            api: api_server,
            admin: admin_server,
            supervisor,
            supervisor_done,
            pool,
            handles,
        };
        if melted {
            tracing::error!("the supervisor stopped: exiting so the process is restarted");
            lifecycle::give_up(running, MELTDOWN_LINGER).await;
            return Ok(Exit::MeltedDown);
        }
        lifecycle::shut_down(
            running,
            Timing {
                delay: Duration::from_secs(settings.lifecycle.shutdown_delay_s),
                grace: Duration::from_secs(settings.lifecycle.shutdown_grace_s),
            },
        )
        .await;
        Ok(Exit::Clean)
    }
}

async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {name}={addr}"))
}
