//! Health, admin port, CORS, request ids, unknown paths and methods.

use serde_json::Value;

use std::time::Duration;

use crate::helpers::{ADMIN_TOKEN, spawn_app, spawn_app_with, wait_for};

#[tokio::test]
async fn health_livez_readyz_and_actors_answer() {
    let app = spawn_app().await;
    // On a busy machine the background actors (the change listener among them: caches
    // stay bypassed, readiness "degraded", until it has connected) may still be starting.
    wait_for(
        "every actor running and ready",
        Duration::from_secs(10),
        async || {
            let actors: Vec<Value> = app
                .admin_get("/admin/actors")
                .await
                .json()
                .await
                .unwrap_or_default();
            let ready: Value = app
                .admin_get("/readyz")
                .await
                .json()
                .await
                .unwrap_or_default();
            actors.len() == 9
                && actors.iter().all(|a| a["status"] == "running")
                && ready["status"] == "ready"
        },
    )
    .await;
    let r = app.get("/health").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "healthy");
    assert_eq!(app.admin_get("/livez").await.status(), 200);
    let r = app.admin_get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["components"]["database"], "up");
    assert_eq!(body["components"]["writer"], "up");
    let actors: Vec<Value> = app
        .admin_get("/admin/actors")
        .await
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = actors
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "change-listener",
            "key-purger",
            "metrics",
            "outbox-relay",
            "shard-0",
            "shard-1",
            "shard-2",
            "shard-3",
            "writer"
        ]
    );
    assert!(
        actors
            .iter()
            .all(|a| a["status"] == "running" && a["restarts"] == 0)
    );
}

#[tokio::test]
async fn metrics_use_route_templates_and_the_contract_names() {
    let app = spawn_app().await;
    let todo = app.create("m").await;
    app.get(&format!("/api/todos/{}", todo["id"].as_str().expect("id")))
        .await;
    app.get("/no/such/path").await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await; // one metrics sample
    let text = app.admin_get("/metrics").await.text().await.expect("text");
    for needle in [
        r#"http_requests_total{method="POST",route="/api/todos",status_code="201"} 1"#,
        r#"http_requests_total{method="GET",route="/api/todos/:id",status_code="200"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status_code="404"} 1"#,
        "http_request_duration_seconds_bucket{",
        r#"todo_actor_up{actor="writer"} 1"#,
        "todo_actor_mailbox_depth{",
        r#"todo_actor_messages_total{actor="writer"}"#,
        "todo_actor_message_duration_seconds_bucket{",
        "todo_write_batch_size_bucket",
        "todo_write_batch_duration_seconds_bucket",
        r#"todo_write_commands_total{op="create",outcome="ok"} 1"#,
        r#"todo_query_reads_total{source="cache"} 1"#,
        "todo_db_pool_connections{",
        "todo_build_info{",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    assert!(
        !text.contains(todo["id"].as_str().expect("id")),
        "raw paths never become labels"
    );
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let app = spawn_app().await;
    for path in ["/", "/api", "/api/todo", "/api/todos/a/b", "/nope"] {
        let r = app
            .client
            .post(app.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = app
        .client
        .put(app.url("/api/todos"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST, DELETE, OPTIONS");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app
        .client
        .post(app.url(&format!("/api/todos/{}", uuid::Uuid::now_v7())))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 405);
    let r = app
        .client
        .post(app.url("/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn cors_preflight_and_simple_requests_carry_the_headers() {
    let app = spawn_app().await;
    for (method, path) in [
        ("POST", "/api/todos"),
        ("DELETE", "/api/todos"),
        ("PATCH", "/api/todos/x"),
        ("PUT", "/api/todos/x"),
    ] {
        let r = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "http://example.com")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "content-type, if-match")
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{method} {path}");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert!(
            r.headers()["access-control-allow-methods"]
                .to_str()
                .expect("ascii")
                .contains(method)
        );
        assert!(
            r.headers()["access-control-allow-headers"]
                .to_str()
                .expect("ascii")
                .contains("If-Match")
        );
    }
    let r = app
        .client
        .get(app.url("/api/todos"))
        .header("origin", "http://example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .expect("ascii")
            .contains("Location")
    );

    let app = spawn_app_with(|s| s.http.cors_origins = "https://allowed.example".into()).await;
    let r = app
        .client
        .get(app.url("/api/todos"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = app
        .client
        .get(app.url("/api/todos"))
        .header("origin", "https://allowed.example")
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://allowed.example"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/todos"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app.get("/nope").await;
    assert!(!r.headers()["x-request-id"].is_empty());
}

#[tokio::test]
async fn chaos_hooks_are_hidden_without_the_token_or_when_disabled() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(format!("{}/admin/chaos/kill/writer", app.admin))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .post(format!("{}/admin/chaos/kill/writer", app.admin))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    let off = spawn_app_with(|s| s.http.chaos_enabled = false).await;
    let r = off
        .client
        .post(format!("{}/admin/chaos/kill/writer", off.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    assert_eq!(off.admin_get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn admission_control_answers_503_with_retry_after_when_full() {
    // One permit, held by a slow list while another request arrives.
    let app = spawn_app_with(|s| s.http.max_in_flight = 1).await;
    let mut saw_503 = false;
    for _ in 0..50 {
        let (a, b, c, d) = tokio::join!(
            app.get("/api/todos"),
            app.get("/api/todos"),
            app.get("/api/todos"),
            app.get("/api/todos")
        );
        for r in [a, b, c, d] {
            if r.status() == 503 {
                assert_eq!(r.headers()["retry-after"], "1");
                assert_eq!(r.headers()["content-type"], "application/problem+json");
                saw_503 = true;
            } else {
                assert_eq!(r.status(), 200);
            }
        }
        if saw_503 {
            break;
        }
    }
    assert!(
        saw_503,
        "a second concurrent request beyond MAX_IN_FLIGHT=1 got 503"
    );
}

#[tokio::test]
async fn every_labelled_metric_family_is_exported_from_the_start() {
    // Arrange: a fresh app that has served nothing and had no failure.
    let app = spawn_app().await;

    // Act
    let text = app.admin_get("/metrics").await.text().await.expect("text");

    // Assert: each family of DESIGN.md §7 is there, at zero where nothing happened yet.
    for family in [
        "http_requests_total",
        "http_request_duration_seconds",
        "http_in_flight_requests",
        "todo_actor_up",
        "todo_actor_restarts_total",
        "todo_actor_mailbox_depth",
        "todo_actor_messages_total",
        "todo_actor_message_duration_seconds",
        "todo_write_batch_size",
        "todo_write_batch_duration_seconds",
        "todo_write_commands_total",
        "todo_query_reads_total",
        "todo_query_batch_size",
        "todo_db_pool_connections",
        "todo_db_errors_total",
        "todo_nats_messages_total",
        "todo_nats_connected",
        "todo_outbox_pending",
        "todo_db_up",
        "todo_feed_streams",
        "todo_http_connections",
        "todo_build_info",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(family)),
            "{family} is missing"
        );
    }
    for series in [
        r#"todo_actor_restarts_total{actor="writer"} 0"#,
        r#"todo_actor_restarts_total{actor="shard-0"} 0"#,
        r#"todo_db_errors_total{kind="connect"} 0"#,
        r#"todo_db_errors_total{kind="commit_unknown"} 0"#,
        r#"todo_write_commands_total{op="create",outcome="unavailable"} 0"#,
        r#"http_requests_total{method="POST",route="/api/todos",status_code="503"} 0"#,
        r#"todo_nats_messages_total{edge="command",outcome="dead_letter"} 0"#,
    ] {
        assert!(text.contains(series), "{series} is missing");
    }
}
