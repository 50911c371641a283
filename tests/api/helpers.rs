//! `spawn_app()` (in-process, fresh database) and `spawn_process()` (the real binary),
//! plus typed request helpers.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use todo_service::app::{App, Exit};
use todo_service::config::Settings;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The PostgreSQL server tests create their databases on.
pub fn pg_server_url() -> String {
    std::env::var("TEST_PG_SERVER_URL")
        .or_else(|_| std::env::var("PG_SERVER_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // The panics the chaos hooks ask for are the point of those tests: one line each,
        // not a backtrace symbolised on a runtime worker (with RUST_BACKTRACE=1, a good
        // part of a second in a debug build, paid by every app of the tests beside it).
        todo_actors::supervisor::quiet_chaos_panics();
        if std::env::var("TEST_LOG").is_ok() {
            let settings = Settings::from_env().expect("settings");
            let _guard = todo_service::telemetry::init(&settings.telemetry);
        }
    });
}

/// Creates an empty database and returns its URL. Fails loudly when PostgreSQL is down.
pub async fn create_database() -> String {
    let server = pg_server_url();
    let (client, connection) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach PostgreSQL at {server} ({e}): start it, or run scripts/test, \
                 which finds or starts one"
                )
            });
    tokio::spawn(connection);
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    client
        .execute(&format!("CREATE DATABASE {name}"), &[])
        .await
        .expect("create test database");
    format!("{server}/{name}")
}

/// A connection to a test database (for asserting what is stored).
pub async fn db(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// Settings for a test: environment, then port 0, the given database, chaos on.
pub fn test_settings(database_url: &str) -> Settings {
    let mut s = Settings::from_env().expect("settings from environment");
    s.http.http_addr = "127.0.0.1:0".parse().expect("addr");
    s.http.admin_addr = "127.0.0.1:0".parse().expect("addr");
    s.http.public_url = None;
    s.http.chaos_enabled = true;
    s.http.admin_token = Some(ADMIN_TOKEN.parse().expect("token"));
    s.db.database_url = Some(database_url.parse().expect("url"));
    s.lifecycle.shutdown_delay_s = 0;
    s.lifecycle.shutdown_grace_s = 5;
    // NATS only for the tests that ask for it (`with_nats`).
    s.nats.nats_url = None;
    s
}

/// The NATS server tests use. Fails loudly when none is reachable.
pub fn nats_url() -> String {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let hostport = url
        .rsplit("://")
        .next()
        .unwrap_or(&url)
        .rsplit('@')
        .next()
        .unwrap_or("");
    if std::net::TcpStream::connect_timeout(
        &hostport
            .parse()
            .unwrap_or_else(|e| panic!("NATS_URL {url}: {e}")),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!(
            "cannot reach NATS at {url}: start nats-server -js, or run scripts/test, which finds or starts one"
        );
    }
    url
}

/// A fresh subject prefix (and so fresh streams) for one test.
pub fn nats_prefix() -> String {
    format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
}

/// Settings tweak: NATS at `url` with `prefix`.
pub fn with_nats(s: &mut Settings, url: &str, prefix: &str) {
    s.nats.nats_url = Some(url.parse().expect("url"));
    s.nats.nats_prefix = prefix.to_owned();
}

/// A running in-process app.
pub struct TestApp {
    pub address: String,
    pub admin: String,
    pub db_url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _done: JoinHandle<anyhow::Result<Exit>>,
}

/// Starts the app on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app on a fresh database with `tweak` applied to its settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db_url = create_database().await;
    spawn_app_at(db_url, tweak).await
}

/// Starts the app on the database at `db_url`.
pub async fn spawn_app_at(db_url: String, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let mut settings = test_settings(&db_url);
    tweak(&mut settings);
    let app = App::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.http_port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let app = TestApp {
        address,
        admin,
        db_url,
        client,
        stop: Some(stop),
        _done: done,
    };
    app.wait_ready(Duration::from_secs(10)).await;
    app
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_todo(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/todos"))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Creates a todo and returns its JSON.
    pub async fn create(&self, title: &str) -> Value {
        let r = self.post_todo(&json!({ "title": title })).await;
        assert_eq!(r.status(), 201, "create {title}");
        r.json().await.expect("json")
    }

    /// Creates a todo; asserts only the status (for load).
    pub async fn create_quiet(&self, title: &str) {
        let r = self.post_todo(&json!({ "title": title })).await;
        assert_eq!(r.status(), 201, "create {title}");
    }

    /// `method path` with one extra header and an optional JSON body.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        header: (&str, &str),
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method.parse().expect("method"), self.url(path))
            .header(header.0, header.1);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    /// Rows in `table` of this app's database.
    pub async fn count(&self, table: &str) -> i64 {
        db(&self.db_url)
            .await
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0)
    }

    /// `POST /api/todos` with an `Idempotency-Key`.
    pub async fn post_with_key(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/todos"))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// `GET path` decoded as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.get(path).await.json().await.expect("json")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn patch(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .expect("request")
    }

    /// Fires a chaos hook; true when accepted.
    pub async fn chaos(&self, action: &str, actor: &str) -> bool {
        self.client
            .post(format!("{}/admin/chaos/{action}/{actor}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map(|r| r.status() == 202)
            .unwrap_or(false)
    }

    /// Waits until /readyz is 200 with every actor up.
    pub async fn wait_ready(&self, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.admin))
                .send()
                .await
                && r.status() == 200
            {
                let body: Value = r.json().await.unwrap_or_default();
                let c = &body["components"];
                if c["writer"] == "up" && c["shards"]["up"] == c["shards"]["total"] {
                    return started.elapsed();
                }
            }
            assert!(started.elapsed() < within, "not ready within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The real binary, started as a child process.
pub struct ServiceProcess {
    pub child: Child,
    pub address: String,
    pub admin: String,
    pub db_url: String,
    /// Every line it wrote on stdout after "ready".
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// The log lines so far that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

/// Starts `todo-service serve` on a fresh database with `env` added; waits for "ready".
pub async fn spawn_process(env: &[(&str, &str)]) -> ServiceProcess {
    let db_url = create_database().await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_todo-service"));
    cmd.arg("serve")
        // NATS only when the test gives NATS_URL in `env`.
        .env_remove("NATS_URL")
        .env("DATABASE_URL", &db_url)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("CHAOS_ENABLED", "true")
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start todo-service");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (http_port, admin_port) = loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("todo-service did not log ready in time")
            .expect("read stdout")
            .expect("todo-service exited before it was ready");
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == "ready"
        {
            break (
                v["http_port"].as_u64().expect("port"),
                v["admin_port"].as_u64().expect("port"),
            );
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&logs);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            kept.lock().expect("log lock").push(line);
        }
    });
    ServiceProcess {
        child,
        address: format!("http://127.0.0.1:{http_port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
        db_url,
        logs,
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }
}

/// A reader of an open `text/event-stream` response.
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    /// Comment lines seen (heartbeats).
    pub comments: usize,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buf: String::new(),
            comments: 0,
        }
    }

    /// The next event within `within`; `None` when the stream ended or nothing came.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    ..SseEvent::default()
                };
                let mut any = false;
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "id" => event.id = Some(value.to_owned()),
                        "event" => event.event = value.to_owned(),
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if any {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            self.buf
                .push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
        }
    }
}

/// Polls `check` every 50 ms until it holds; fails the test naming `what` after `within`.
pub async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
