//! Replicas that agree: two instances of the service on one database, a change through
//! one read through the other within 1 s (p99 ≤ 200 ms), and conditional writes through
//! either that never loop on 412 because of a stale copy.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, create_database, spawn_app_at};

/// Two replicas on one fresh database.
pub async fn two_replicas(tweak: fn(&mut todo_service::config::Settings)) -> (TestApp, TestApp) {
    let url = create_database().await;
    let a = spawn_app_at(url.clone(), tweak).await;
    let b = spawn_app_at(url, tweak).await;
    (a, b)
}

/// How long until `read` through `b` shows `expect` (polled every 2 ms), at most 1 s.
async fn until_seen(b: &TestApp, path: &str, expect: impl Fn(u16, &Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let r = b.get(path).await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_default();
        if expect(status, &body) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} not seen within 1 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Changes through `a`, read through `b` (which has each todo cached first): returns
/// how long each change took to show.
pub async fn changes_show_on_the_other_replica(
    a: &TestApp,
    b: &TestApp,
    rounds: usize,
) -> Vec<Duration> {
    let mut lags = Vec::with_capacity(rounds * 2);
    for i in 0..rounds {
        let todo = a.create(&format!("r{i}")).await;
        let path = format!("/api/todos/{}", todo["id"].as_str().expect("id"));
        // b reads it twice, so it is cached there.
        until_seen(b, &path, |s, _| s == 200).await;
        let cached = b.get(&path).await;
        assert_eq!(cached.status(), 200);
        // Changed through a.
        let r = a
            .patch(&path, &json!({ "title": format!("r{i} changed") }))
            .await;
        assert_eq!(r.status(), 200);
        lags.push(until_seen(b, &path, |s, t| s == 200 && t["version"] == 2).await);
        // Deleted through a.
        let r = a.client.delete(a.url(&path)).send().await.expect("delete");
        assert_eq!(r.status(), 204);
        lags.push(until_seen(b, &path, |s, _| s == 404).await);
    }
    lags
}

pub fn p99(lags: &mut [Duration]) -> Duration {
    lags.sort();
    lags[(lags.len() * 99 / 100).min(lags.len() - 1)]
}

#[tokio::test]
async fn a_change_through_one_replica_is_read_through_the_other_within_1_s_without_nats() {
    // Arrange: no NATS_URL at all.
    let (a, b) = two_replicas(|s| s.nats.nats_url = None).await;

    // Act
    let mut lags = changes_show_on_the_other_replica(&a, &b, 50).await;

    // Assert
    let (p99, max) = (p99(&mut lags), *lags.iter().max().expect("lags"));
    println!(
        "replicas without NATS: {} changes, p99 {} ms, max {} ms",
        lags.len(),
        p99.as_millis(),
        max.as_millis()
    );
    assert!(p99 <= Duration::from_millis(200), "p99 {p99:?}");
}

#[tokio::test]
async fn a_conditional_write_through_a_stale_replica_never_loops_on_412() {
    // Arrange: b has the todo cached at version 1; a changes it to version 2.
    let (a, b) = two_replicas(|s| s.nats.nats_url = None).await;
    let todo = a.create("contended").await;
    let path = format!("/api/todos/{}", todo["id"].as_str().expect("id"));
    for _ in 0..2 {
        assert_eq!(b.get(&path).await.status(), 200);
    }
    assert_eq!(
        a.patch(&path, &json!({"completed": true})).await.status(),
        200
    );

    // Act: a client of b does what a client must on 412: read again, retry with the
    // new ETag. At most three rounds.
    let mut etag = "\"1\"".to_owned();
    let mut rounds = 0;
    let status = loop {
        rounds += 1;
        let r = b
            .client
            .patch(b.url(&path))
            .header("if-match", &etag)
            .json(&json!({"title": "mine"}))
            .send()
            .await
            .expect("patch");
        if r.status() != 412 || rounds == 3 {
            break r.status();
        }
        let fresh = b.get(&path).await;
        etag = fresh.headers()["etag"].to_str().expect("etag").to_owned();
    };

    // Assert
    assert_eq!(status, 200, "after {rounds} rounds");
    assert!(rounds <= 2, "{rounds} rounds");
}
