//! Hostile clients, against the built binary: slow uploads, connections that never finish
//! their headers, floods of connections, invented methods, and a chaos port without a
//! token. Each test is bounded in time and connections and cleans up after itself.

use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ServiceProcess, db, spawn_process};

/// Slow clients at once: above the default `MAX_IN_FLIGHT` (1024).
const SLOW_CLIENTS: usize = 1100;

fn host_port(p: &ServiceProcess) -> String {
    p.address.trim_start_matches("http://").to_owned()
}

/// Opens `n` connections and sends each `prefix`, then nothing more.
async fn stalled_connections(addr: &str, n: usize, prefix: &'static [u8]) -> Vec<TcpStream> {
    let connect = (0..n).map(|_| async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(prefix).await.expect("send the prefix");
        s
    });
    // A few hundred at a time, so the listen backlog never overflows.
    let mut out = Vec::with_capacity(n);
    let all: Vec<_> = connect.collect();
    let mut rest = all.into_iter();
    loop {
        let chunk: Vec<_> = rest.by_ref().take(200).collect();
        if chunk.is_empty() {
            return out;
        }
        out.extend(join_all(chunk).await);
    }
}

/// What a stalled connection got before it was closed: the response head's first line
/// ("" when it was closed without a word), or None when it is still open after `within`.
async fn fate(mut s: TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()?;
    let text = String::from_utf8_lossy(&got);
    Some(text.lines().next().unwrap_or_default().to_owned())
}

/// A plain request from a well-behaved client, timed.
async fn timed_get(url: &str) -> (u16, Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let started = Instant::now();
    let status = client
        .get(url)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (status, started.elapsed())
}

#[tokio::test]
async fn slow_uploads_hold_no_admission_slot_and_get_408_when_the_body_never_comes() {
    // Arrange: the body timeout is 2 s (default 10 s), admission the default 1024.
    let p = spawn_process(&[("HTTP_BODY_TIMEOUT_S", "2")]).await;
    let addr = host_port(&p);

    // Act: 1,100 uploads send their headers and one byte of a 100-byte body, then stall.
    let head = b"POST /api/todos HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{";
    let stalled = stalled_connections(&addr, SLOW_CLIENTS, head).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, took) = timed_get(&format!("{}/api/todos", p.address)).await;

    // Assert: another client is served at once.
    assert_eq!(status, 200, "another client's request failed");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // Assert: every stalled upload gets a 408 and its connection is closed.
    let fates = join_all(stalled.into_iter().map(|s| fate(s, Duration::from_secs(8)))).await;
    let timed_out = fates
        .iter()
        .filter(|f| f.as_deref().is_some_and(|l| l.starts_with("HTTP/1.1 408")))
        .count();
    assert_eq!(timed_out, SLOW_CLIENTS, "{:?}", &fates[..5]);
    let count: i64 = db(&p.db_url)
        .await
        .query_one("SELECT count(*) FROM todos", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 0, "nothing half-sent was written");
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed_and_others_are_served() {
    // Arrange: a header read timeout of 2 s (default 30 s).
    let p = spawn_process(&[("HTTP_HEADER_READ_TIMEOUT_S", "2")]).await;
    let addr = host_port(&p);

    // Act: 1,100 connections start a request and never finish its headers.
    let stalled = stalled_connections(
        &addr,
        SLOW_CLIENTS,
        b"GET /api/todos HTTP/1.1\r\nHost: t\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, took) = timed_get(&format!("{}/api/todos", p.address)).await;

    // Assert
    assert_eq!(status, 200, "a client was not answered");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let started = Instant::now();
    let fates = join_all(stalled.into_iter().map(|s| fate(s, Duration::from_secs(8)))).await;
    let closed = fates.iter().filter(|f| f.is_some()).count();
    assert_eq!(closed, SLOW_CLIENTS, "connections left open");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_a_503_and_closed() {
    // Arrange: at most 50 connections.
    let p = spawn_process(&[
        ("HTTP_MAX_CONNECTIONS", "50"),
        ("HTTP_HEADER_READ_TIMEOUT_S", "10"),
    ])
    .await;
    let addr = host_port(&p);
    let held = stalled_connections(&addr, 50, b"GET /api").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Act
    let extra = stalled_connections(&addr, 10, b"GET /api/todos HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let fates = join_all(extra.into_iter().map(|s| fate(s, Duration::from_secs(3)))).await;

    // Assert: refused at once with a complete 503, and served again once they are gone.
    for f in &fates {
        assert_eq!(
            f.as_deref(),
            Some("HTTP/1.1 503 Service Unavailable"),
            "{fates:?}"
        );
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = timed_get(&format!("{}/api/todos", p.address)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn invented_methods_share_one_label_value() {
    // Arrange
    let p = spawn_process(&[]).await;
    let client = reqwest::Client::new();

    // Act: 200 requests with 200 made-up methods.
    for i in 0..200 {
        let method = reqwest::Method::from_bytes(format!("FOO{i}").as_bytes()).expect("token");
        let r = client
            .request(method, format!("{}/api/todos", p.address))
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status(), 405);
    }
    let text = client
        .get(format!("{}/metrics", p.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");

    // Assert
    assert!(
        !text.contains("FOO"),
        "an invented method became a label value"
    );
    assert!(
        text.contains(
            r#"http_requests_total{method="other",route="/api/todos",status_code="405"} 200"#
        ),
        "{}",
        text.lines()
            .filter(|l| l.contains("other"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn chaos_without_an_admin_token_fails_at_start_naming_the_variable() {
    for token in [Some(""), Some("   "), None] {
        // Arrange
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_todo-service"));
        cmd.arg("serve")
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("CHAOS_ENABLED", "true")
            .env_remove("ADMIN_TOKEN")
            .kill_on_drop(true);
        if let Some(t) = token {
            cmd.env("ADMIN_TOKEN", t);
        }

        // Act
        let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
            .await
            .expect("exits at once")
            .expect("runs");

        // Assert
        assert!(!out.status.success(), "started with ADMIN_TOKEN={token:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ADMIN_TOKEN"), "{token:?}: {stderr}");
    }
}

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_request_id() {
    // Arrange: debug lines of the handler's callees (the writer and its batch) on.
    let p = spawn_process(&[("RUST_LOG", "info,todo_actors=debug")]).await;
    let client = reqwest::Client::new();

    // Act
    let r = client
        .post(format!("{}/api/todos", p.address))
        .header("x-request-id", "rid-7f3a")
        .json(&serde_json::json!({"title": "traced"}))
        .send()
        .await
        .expect("created");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], "rid-7f3a");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Assert: the access line, the writer's line and the batch's line all name it.
    let lines = p.log_lines_with("rid-7f3a");
    for message in ["request completed", "write queued", "write batch committed"] {
        assert!(
            lines.iter().any(|l| l.contains(message)),
            "no {message:?} line with the request id in {lines:#?}"
        );
    }
}
