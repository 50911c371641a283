//! `Settings`: every setting is a flag with an environment fallback and a default, so
//! `todo-service --help` documents them all. Nothing else in the service reads the
//! environment. Values are validated here, at start-up, with messages that name the
//! variable.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::AuthMode;

/// The todo service: REST and NATS edges over supervised actors and PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "todo-service", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Apply migrations, then serve the API and admin ports (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Exit 0 when the admin port's /livez answers 200 (for container health checks).
    Healthcheck {
        /// The URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:9000/livez")]
        url: String,
    },
}

/// All settings, grouped by concern.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// HTTP edge.
    #[command(flatten)]
    pub http: HttpSettings,
    /// PostgreSQL.
    #[command(flatten)]
    pub db: DbSettings,
    /// Actor system.
    #[command(flatten)]
    pub actors: ActorSettings,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    /// Lifecycle.
    #[command(flatten)]
    pub lifecycle: LifecycleSettings,
    /// Authentication of API requests.
    #[command(flatten)]
    pub auth: AuthSettings,
    /// The NATS edge.
    #[command(flatten)]
    pub nats: NatsSettings,
    /// The outbox and the live change feed.
    #[command(flatten)]
    pub events: EventSettings,
}

/// The NATS edge (optional: without `NATS_URL` the service runs HTTP-only).
#[derive(Clone, Args)]
pub struct NatsSettings {
    /// NATS server(s), comma-separated (credentials may be in the URL); unset: no NATS.
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<Secret>,
    /// First token of every subject and the name of every stream: `<prefix>.create`,
    /// `<prefix>.cmd.>`, `<prefix>.events.>`; streams `<PREFIX>_COMMANDS` and so on.
    #[arg(long, env = "NATS_PREFIX", default_value = "todo")]
    pub nats_prefix: String,
    /// Queue group of the request endpoints, shared by all replicas.
    #[arg(long, env = "NATS_QUEUE_GROUP", default_value = "todo-service")]
    pub nats_queue_group: String,
    /// Seconds a command may stay unacknowledged before NATS delivers it again.
    #[arg(long, env = "NATS_ACK_WAIT_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub nats_ack_wait_s: u64,
    /// Deliveries of a command that keeps failing before it goes to the dead-letter
    /// subject `<prefix>.dlq.<verb>`.
    #[arg(long, env = "NATS_MAX_DELIVER", default_value_t = 5,
          value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub nats_max_deliver: i64,
}

impl NatsSettings {
    /// `NATS_URL`, unless unset or empty.
    pub fn url(&self) -> Option<&str> {
        self.nats_url
            .as_ref()
            .map(Secret::expose)
            .filter(|u| !u.trim().is_empty())
    }
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("nats_url", &self.nats_url.as_ref().map(|_| "<redacted>"))
            .field("nats_prefix", &self.nats_prefix)
            .field("nats_queue_group", &self.nats_queue_group)
            .field("nats_ack_wait_s", &self.nats_ack_wait_s)
            .field("nats_max_deliver", &self.nats_max_deliver)
            .finish()
    }
}

/// The outbox and the live change feed.
#[derive(Debug, Clone, Args)]
pub struct EventSettings {
    /// Hours published events are kept (a feed client can resume within them).
    #[arg(long, env = "OUTBOX_RETENTION_H", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=24 * 365))]
    pub outbox_retention_h: u64,
    /// Change-feed streams a replica keeps open at most (503 beyond).
    #[arg(long, env = "FEED_MAX_STREAMS", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub feed_max_streams: u32,
    /// Events a stream queues; a stream further behind stops getting events and catches
    /// up from the outbox.
    #[arg(long, env = "FEED_BUFFER", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub feed_buffer: u32,
    /// Seconds a stream may stay behind before its connection is closed (its consumer
    /// cannot keep up; it may resume with Last-Event-ID).
    #[arg(long, env = "FEED_STALL_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub feed_stall_s: u64,
}

/// HTTP and admin ports.
#[derive(Clone, Args)]
pub struct HttpSettings {
    /// Address of the REST API.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Address of the admin port (/livez, /readyz, /metrics, /admin/*).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9000")]
    pub admin_addr: SocketAddr,
    /// Base of the absolute `url` of each todo (else taken from Forwarded/Host headers).
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Allowed CORS origins, comma-separated, or `*`.
    #[arg(long, env = "CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,
    /// Longest a request waits for an actor, in milliseconds.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout_ms: u64,
    /// Operations being processed (from either edge) beyond which the service answers
    /// 503 at once. Counts work in progress, not connections or bodies still arriving.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    /// Longest a request body may take to arrive once the headers are in, in seconds;
    /// after that the client gets 408 and the connection is closed.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub body_timeout_s: u64,
    /// Longest a connection may take to send a request's headers (or stay idle between
    /// requests), in seconds; then it is closed. Keep it above the load balancer's idle
    /// timeout.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=30))]
    pub header_read_timeout_s: u64,
    /// Open connections per port beyond which a new one is answered 503 and closed.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Kernel send buffer per connection, in bytes: what a client that stops reading can
    /// pin in memory (Linux would let it grow to 4 MB).
    #[arg(long, env = "HTTP_SEND_BUFFER_BYTES", default_value_t = 262_144,
          value_parser = clap::value_parser!(u32).range(4096..=16_777_216))]
    pub send_buffer_bytes: u32,
    /// Enables the chaos hooks on the admin port (needs ADMIN_TOKEN).
    #[arg(long, env = "CHAOS_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub chaos_enabled: bool,
    /// Bearer token for the admin chaos hooks.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("http_addr", &self.http_addr)
            .field("admin_addr", &self.admin_addr)
            .field("public_url", &self.public_url)
            .field("cors_origins", &self.cors_origins)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_in_flight", &self.max_in_flight)
            .field("body_timeout_s", &self.body_timeout_s)
            .field("header_read_timeout_s", &self.header_read_timeout_s)
            .field("max_connections", &self.max_connections)
            .field("send_buffer_bytes", &self.send_buffer_bytes)
            .field("chaos_enabled", &self.chaos_enabled)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl HttpSettings {
    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The body timeout.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_s)
    }

    /// The header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_s)
    }
}

/// PostgreSQL connection. `DATABASE_URL` wins; otherwise libpq's `PG*` variables.
#[derive(Clone, Args)]
pub struct DbSettings {
    /// Connection URL, e.g. postgres://user:pass@host:5432/todos.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Host when DATABASE_URL is unset.
    #[arg(long, env = "PGHOST", default_value = "127.0.0.1")]
    pub pg_host: String,
    /// Port when DATABASE_URL is unset.
    #[arg(long, env = "PGPORT", default_value_t = 5432)]
    pub pg_port: u16,
    /// User when DATABASE_URL is unset.
    #[arg(long, env = "PGUSER", default_value = "postgres")]
    pub pg_user: String,
    /// Password when DATABASE_URL is unset.
    #[arg(long, env = "PGPASSWORD", hide_env_values = true)]
    pub pg_password: Option<Secret>,
    /// Database when DATABASE_URL is unset.
    #[arg(long, env = "PGDATABASE", default_value = "todos")]
    pub pg_database: String,
    /// PEM bundle of the CA that signed the server's certificate (e.g. Amazon RDS's), used
    /// when DATABASE_URL has sslmode=require; without it, the Mozilla roots.
    #[arg(long, env = "DB_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Pooled connections for readiness checks and maintenance (actors own their own).
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,
    /// Upper bound on one connect, write batch or query, in milliseconds: every write is
    /// answered within this long of reaching the writer.
    #[arg(long, env = "DB_TIMEOUT_MS", default_value_t = 1500,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub db_timeout_ms: u64,
    /// PostgreSQL `statement_timeout` of the service's sessions, in milliseconds: the
    /// server stops a statement the service has long given up on.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub statement_timeout_ms: u64,
    /// PostgreSQL `lock_timeout` of the service's sessions, in milliseconds.
    #[arg(long, env = "DB_LOCK_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub lock_timeout_ms: u64,
    /// PostgreSQL `idle_in_transaction_session_timeout` of the service's sessions, in
    /// milliseconds: a transaction left open by a lost client never holds locks longer.
    #[arg(long, env = "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub idle_in_transaction_timeout_ms: u64,
    /// Seconds of silence before TCP keepalive probes start (then one a second, three in
    /// all), so a half-open connection after a failover is found in seconds.
    #[arg(long, env = "DB_KEEPALIVE_IDLE_S", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=7200))]
    pub keepalive_idle_s: u64,
}

impl fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSettings")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("pg_host", &self.pg_host)
            .field("pg_port", &self.pg_port)
            .field("pg_user", &self.pg_user)
            .field("pg_database", &self.pg_database)
            .field("ca_file", &self.ca_file)
            .field("pool_size", &self.pool_size)
            .field("db_timeout_ms", &self.db_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .field(
                "idle_in_transaction_timeout_ms",
                &self.idle_in_transaction_timeout_ms,
            )
            .field("keepalive_idle_s", &self.keepalive_idle_s)
            .finish()
    }
}

impl DbSettings {
    /// The PostgreSQL client configuration.
    ///
    /// # Errors
    /// A message naming DATABASE_URL when it does not parse.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, String> {
        let mut config = match &self.database_url {
            Some(url) => url
                .expose()
                .parse::<tokio_postgres::Config>()
                .map_err(|e| format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?,
            None => {
                let mut c = tokio_postgres::Config::new();
                c.host(&self.pg_host)
                    .port(self.pg_port)
                    .user(&self.pg_user)
                    .dbname(&self.pg_database);
                if let Some(p) = &self.pg_password {
                    c.password(p.expose());
                }
                c
            }
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.db_timeout());
        }
        config
            .application_name("todo-service")
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(self.keepalive_idle_s))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3)
            // Data unacknowledged this long means the peer is gone, even mid-query.
            .tcp_user_timeout(Duration::from_secs(self.keepalive_idle_s + 3));
        Ok(config)
    }

    /// The configuration of serving connections (pool, writer, shards): the session
    /// timeouts on top of [`DbSettings::pg_config`]. Migrations use `pg_config` alone:
    /// they may wait for another replica's migration lock, and take their time.
    ///
    /// # Errors
    /// A message naming DATABASE_URL when it does not parse.
    pub fn serving_config(&self) -> Result<tokio_postgres::Config, String> {
        let mut config = self.pg_config()?;
        let ours = format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            self.statement_timeout_ms, self.lock_timeout_ms, self.idle_in_transaction_timeout_ms
        );
        let options = match config.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
            _ => ours,
        };
        config.options(options);
        Ok(config)
    }

    /// The database timeout.
    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }
}

/// Actor system tunables.
#[derive(Debug, Clone, Args)]
pub struct ActorSettings {
    /// Number of query shards.
    #[arg(long, env = "QUERY_SHARDS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub query_shards: u32,
    /// Most write commands per transaction.
    #[arg(long, env = "BATCH_MAX", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_max: u32,
    /// Write batches in flight at once, each on its own connection (batches touching the
    /// same todos or owners' clears never overlap).
    #[arg(long, env = "WRITER_CONNECTIONS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub writer_connections: u32,
    /// Extra wait for a fuller write batch, in microseconds.
    #[arg(long, env = "BATCH_LINGER_US", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub batch_linger_us: u64,
    /// Todos cached per query shard.
    #[arg(long, env = "CACHE_CAPACITY", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub cache_capacity: u32,
    /// Actor failures tolerated within RESTART_PERIOD_S before the process gives up.
    #[arg(long, env = "RESTART_INTENSITY", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub restart_intensity: u32,
    /// The window of RESTART_INTENSITY, in seconds.
    #[arg(long, env = "RESTART_PERIOD_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub restart_period_s: u64,
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON lines (for Logstash).
    Json,
    /// Human-readable.
    Pretty,
}

/// Logs and traces.
#[derive(Debug, Clone, Args)]
pub struct TelemetrySettings {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
    /// OTLP collector base URL (e.g. http://otel-collector:4318); traces are exported to
    /// `<it>/v1/traces` when set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP traces URL, taken as is (wins over OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_traces_endpoint: Option<String>,
    /// OTLP protocol: http/protobuf or http/json.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    pub otlp_protocol: String,
    /// `service.name` of the spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "todo-service")]
    pub service_name: String,
    /// `true` turns tracing off altogether: no spans exported, no trace ids in logs,
    /// `traceparent` neither read nor passed on.
    #[arg(long, env = "OTEL_SDK_DISABLED", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub sdk_disabled: bool,
}

impl TelemetrySettings {
    /// Where spans go, when anywhere.
    pub fn traces_endpoint(&self) -> Option<String> {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        nonempty(&self.otlp_traces_endpoint).or_else(|| {
            nonempty(&self.otlp_endpoint)
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })
    }
}

/// Start-up and shutdown.
#[derive(Debug, Clone, Args)]
pub struct LifecycleSettings {
    /// Seconds to keep serving after SIGTERM while /readyz already says 503.
    #[arg(long, env = "SHUTDOWN_DELAY_S", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=600))]
    pub shutdown_delay_s: u64,
    /// Seconds in-flight work may take to finish after that.
    #[arg(long, env = "SHUTDOWN_GRACE_S", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub shutdown_grace_s: u64,
}

/// Authentication of API requests (DESIGN.md §3 "Auth"); `http::auth::Authenticator` is
/// built from these once at start-up.
#[derive(Clone, Args)]
pub struct AuthSettings {
    /// How API callers prove who they are: none (everyone is owner `public`), api-key or jwt.
    #[arg(long, env = "AUTH_MODE", value_enum, default_value = "none")]
    pub auth_mode: AuthMode,
    /// File of API keys for AUTH_MODE=api-key: one `<sha256-hex-of-key> <owner>` per line.
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// HS256 shared secret for AUTH_MODE=jwt (at least 32 bytes).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// PEM file of the RSA public key that verifies RS256 tokens for AUTH_MODE=jwt.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// When set, a token's `iss` must equal it.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must contain it.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, env = "JWT_LEEWAY_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub jwt_leeway_s: u64,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("auth_mode", &self.auth_mode)
            .field("api_keys_file", &self.api_keys_file)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway_s", &self.jwt_leeway_s)
            .finish()
    }
}

impl AuthSettings {
    /// Checks that the settings the chosen `AUTH_MODE` needs are present and non-empty
    /// (files are read later, by `Authenticator::from_settings`).
    ///
    /// # Errors
    /// A message naming the variable at fault.
    pub fn validate(&self) -> Result<(), String> {
        match self.auth_mode {
            AuthMode::None => {}
            AuthMode::ApiKey => {
                if self.api_keys_file.is_none() {
                    return Err("API_KEYS_FILE is required with AUTH_MODE=api-key".into());
                }
            }
            AuthMode::Jwt => {
                if self.jwt_secret.is_none() && self.jwt_public_key_file.is_none() {
                    return Err(
                        "JWT_SECRET or JWT_PUBLIC_KEY_FILE is required with AUTH_MODE=jwt".into(),
                    );
                }
                if let Some(secret) = &self.jwt_secret
                    && secret.expose().len() < MIN_JWT_SECRET_BYTES
                {
                    return Err(format!(
                        "JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes (HS256, RFC 7518 §3.2)"
                    ));
                }
                if self.jwt_issuer.as_deref().is_some_and(str::is_empty) {
                    return Err("JWT_ISSUER must not be empty when set".into());
                }
                if self.jwt_audience.as_deref().is_some_and(str::is_empty) {
                    return Err("JWT_AUDIENCE must not be empty when set".into());
                }
            }
        }
        Ok(())
    }
}

/// Shortest HS256 secret accepted: the hash output size, as RFC 7518 §3.2 requires.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// A secret string: never printed by `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl Settings {
    /// Cross-field checks clap cannot express.
    ///
    /// # Errors
    /// A message naming the variable at fault.
    pub fn validate(&self) -> Result<(), String> {
        self.db.pg_config()?;
        self.auth.validate()?;
        if self.http.chaos_enabled
            && self
                .http
                .admin_token
                .as_ref()
                .is_none_or(|t| t.expose().trim().is_empty())
        {
            return Err("CHAOS_ENABLED=true needs a non-empty ADMIN_TOKEN".into());
        }
        let prefix = &self.nats.nats_prefix;
        if prefix.is_empty()
            || !prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        {
            return Err(format!(
                "NATS_PREFIX must be dot-separated tokens of letters, digits, _ or -, got {prefix:?}"
            ));
        }
        if let Some(url) = &self.http.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "PUBLIC_URL must start with http:// or https://, got {url}"
            ));
        }
        if let Some(origin) = self
            .http
            .cors_origins
            .split(',')
            .map(str::trim)
            .find(|o| *o != "*" && !(o.starts_with("http://") || o.starts_with("https://")))
        {
            return Err(format!(
                "CORS_ORIGINS entries must be * or http(s) origins, got {origin}"
            ));
        }
        Ok(())
    }

    /// Settings as `todo-service` sees them with no flags: environment plus defaults.
    ///
    /// # Errors
    /// clap's message naming the variable.
    pub fn from_env() -> Result<Self, clap::Error> {
        Cli::try_parse_from(["todo-service"]).map(|c| c.settings)
    }
}
