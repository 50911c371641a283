//! PostgreSQL connections that fail safe: a black-holed or reset database gets fast 503s
//! with Retry-After, liveness stays green, and full service returns within seconds.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, create_database, db, spawn_app_at};
use crate::proxy::Proxy;

/// A todo put straight into the database: no shard has it cached.
async fn seed_uncached(app: &TestApp) -> String {
    let id = uuid::Uuid::now_v7();
    db(&app.db_url)
        .await
        .execute(
            "INSERT INTO todos (id, owner, title) VALUES ($1, 'public', 'uncached')",
            &[&id],
        )
        .await
        .expect("seed");
    id.to_string()
}

/// The app, reaching a fresh database through a proxy of the test's.
async fn app_behind_proxy() -> (TestApp, Proxy) {
    app_behind_proxy_with(|_| {}).await
}

/// The same, with `tweak` applied to the settings.
pub async fn app_behind_proxy_with(
    tweak: impl FnOnce(&mut todo_service::config::Settings),
) -> (TestApp, Proxy) {
    let url = create_database().await;
    let (server, name) = url.rsplit_once('/').expect("url/db");
    let host_port = server.rsplit_once('@').map_or(server, |(_, h)| h);
    let proxy = Proxy::start(host_port.to_owned()).await;
    let (host, _) = host_port.rsplit_once(':').expect("host:port");
    let prefix = server.rsplit_once('@').map_or("postgres://", |(p, _)| p);
    let via_proxy = format!("{prefix}@{host}:{}/{name}", proxy.port);
    let app = spawn_app_at(via_proxy, tweak).await;
    (app, proxy)
}

/// What one request got, and how long it took.
struct Answer {
    status: u16,
    retry_after: bool,
    took: Duration,
}

async fn timed(request: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let r = request.send().await.expect("answered");
    Answer {
        status: r.status().as_u16(),
        retry_after: r.headers().contains_key("retry-after"),
        took: started.elapsed(),
    }
}

/// A create, a read of an uncached todo, a list and a change, all at once.
async fn one_of_each(app: &TestApp, uncached: &str, cached: &str) -> Vec<(&'static str, Answer)> {
    let c = &app.client;
    let (create, miss, list, patch) = tokio::join!(
        timed(
            c.post(app.url("/api/todos"))
                .json(&json!({"title": "during"}))
        ),
        timed(c.get(app.url(&format!("/api/todos/{uncached}")))),
        timed(c.get(app.url("/api/todos"))),
        timed(
            c.patch(app.url(&format!("/api/todos/{cached}")))
                .json(&json!({"completed": true}))
        ),
    );
    vec![
        ("create", create),
        ("get (miss)", miss),
        ("list", list),
        ("patch", patch),
    ]
}

/// Waits until a create, a read from PostgreSQL and a list all succeed; returns how long
/// that took.
async fn wait_full_service(app: &TestApp, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let created = app.post_todo(&json!({"title": "after"})).await;
        if created.status() == 201 {
            let todo: Value = created.json().await.expect("json");
            // Another owner-shard read path: a fresh id is not cached yet on a restarted
            // shard, and a list always reads PostgreSQL.
            let listed = app.get("/api/todos").await.status();
            let read = app
                .get(&format!("/api/todos/{}", todo["id"].as_str().expect("id")))
                .await
                .status();
            if listed == 200 && read == 200 {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < within,
            "no full service within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_fast_and_retryable(answers: &[(&str, Answer)]) {
    for (what, a) in answers {
        assert!(a.took < Duration::from_secs(2), "{what} took {:?}", a.took);
        assert!(
            a.status < 300 || (a.status == 503 && a.retry_after),
            "{what}: {} (Retry-After: {})",
            a.status,
            a.retry_after
        );
    }
}

#[tokio::test]
async fn a_black_holed_database_gets_fast_503s_and_full_service_returns_within_5_s() {
    // Arrange: two todos cached (one will be changed), one only in PostgreSQL.
    let (app, proxy) = app_behind_proxy().await;
    let cached = app.create("cached").await;
    let cached = cached["id"].as_str().expect("id").to_owned();
    let untouched = app.create("untouched").await;
    let untouched = untouched["id"].as_str().expect("id").to_owned();
    let uncached = seed_uncached(&app).await;

    // Act: the network to PostgreSQL goes silent.
    proxy.blackhole();
    let first = one_of_each(&app, &uncached, &cached).await;
    let second = one_of_each(&app, &uncached, &cached).await;
    let livez = app.admin_get("/livez").await.status();
    let hit = app.get(&format!("/api/todos/{untouched}")).await;

    // Assert: every request answered within 2 s, 503 + Retry-After when it needs the
    // database; liveness unaffected; a cached todo that no write left in doubt is still
    // served.
    assert_fast_and_retryable(&first);
    assert_fast_and_retryable(&second);
    let failed = first
        .iter()
        .chain(&second)
        .filter(|(_, a)| a.status == 503)
        .count();
    assert!(failed >= 6, "only {failed} of 8 needed the database");
    assert_eq!(livez, 200);
    assert_eq!(hit.status(), 200);
    let db_up = |app: &TestApp| {
        let admin = app.admin.clone();
        let client = app.client.clone();
        async move {
            let text = client
                .get(format!("{admin}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            text.lines()
                .find_map(|l| l.strip_prefix("todo_db_up "))
                .map(str::to_owned)
        }
    };
    assert_eq!(
        db_up(&app).await.as_deref(),
        Some("0"),
        "the outage shows in todo_db_up"
    );

    // Act: the network comes back.
    proxy.restore();

    // Assert
    let took = wait_full_service(&app, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(db_up(&app).await.as_deref(), Some("1"));
    println!(
        "black hole: full service {} ms after the network returned",
        took.as_millis()
    );
}

#[tokio::test]
async fn terminating_every_service_connection_gets_fast_answers_and_full_service_within_5_s() {
    // Arrange
    let (app, _proxy) = app_behind_proxy().await;
    let cached = app.create("cached").await;
    let cached = cached["id"].as_str().expect("id").to_owned();
    let uncached = seed_uncached(&app).await;
    let name = app.db_url.rsplit_once('/').expect("db").1.to_owned();
    let server = crate::helpers::pg_server_url();

    // Act: an operator (or a failover) ends every session of the service.
    let admin = db(&format!("{server}/postgres")).await;
    let terminated: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .expect("terminate")
        .get(0);
    let answers = one_of_each(&app, &uncached, &cached).await;

    // Assert
    assert!(terminated >= 4, "only {terminated} sessions terminated");
    assert_fast_and_retryable(&answers);
    assert_eq!(app.admin_get("/livez").await.status(), 200);
    let took = wait_full_service(&app, Duration::from_secs(5)).await;
    println!(
        "terminated sessions: full service after {} ms",
        took.as_millis()
    );
}

#[tokio::test]
async fn serving_sessions_carry_the_timeouts_and_keepalives_and_migrations_do_not() {
    // Arrange: settings as the service reads them, with timeouts of the test's choosing.
    let url = create_database().await;
    let mut settings = crate::helpers::test_settings(&url);
    settings.db.statement_timeout_ms = 1234;
    settings.db.lock_timeout_ms = 567;
    settings.db.idle_in_transaction_timeout_ms = 8910;
    let serving = settings.db.serving_config().expect("serving config");
    let plain = settings.db.pg_config().expect("config");

    // Act: a session of each kind reports what it runs with.
    let show = |config: tokio_postgres::Config| async move {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let mut out = Vec::new();
        for name in [
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
        ] {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .expect("show");
            out.push(row.get::<_, String>(0));
        }
        out
    };
    let serving_shows = show(serving.clone()).await;
    let plain_shows = show(plain).await;

    // Assert
    assert_eq!(serving_shows, ["1234ms", "567ms", "8910ms"]);
    assert_eq!(
        plain_shows,
        ["0", "0", "0"],
        "migrations may wait and take their time"
    );
    assert!(serving.get_keepalives());
    assert_eq!(serving.get_keepalives_idle(), Duration::from_secs(5));
}
