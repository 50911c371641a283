//! The live change feed, `GET /api/todos/events` (Server-Sent Events): events in commit
//! order, owner isolation, resuming with `Last-Event-ID`, changes through another
//! replica, slow consumers cut off, bounded streams, a clear error for a resume point
//! that is gone, heartbeats.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{SseEvent, SseReader, TestApp, db, spawn_app, spawn_app_with};
use crate::replicas::two_replicas;

const WAIT: Duration = Duration::from_secs(3);

async fn open_feed(app: &TestApp, last_event_id: Option<&str>, token: Option<&str>) -> SseReader {
    // No overall timeout: a stream stays open.
    let client = reqwest::Client::new();
    let mut request = client.get(app.url("/api/todos/events"));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.expect("feed");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    SseReader::new(r)
}

async fn next(feed: &mut SseReader) -> SseEvent {
    feed.next(WAIT).await.expect("an event in time")
}

#[tokio::test]
async fn the_feed_carries_every_change_in_commit_order() {
    // Arrange
    let app = spawn_app().await;
    let mut feed = open_feed(&app, None, None).await;

    // Act: create, change, delete.
    let todo = app.create("watched").await;
    let id = todo["id"].as_str().expect("id").to_owned();
    let path = format!("/api/todos/{id}");
    assert_eq!(
        app.patch(&path, &json!({"completed": true})).await.status(),
        200
    );
    let r = app
        .client
        .delete(app.url(&path))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);

    // Assert
    let (created, updated, deleted) = (
        next(&mut feed).await,
        next(&mut feed).await,
        next(&mut feed).await,
    );
    assert_eq!(
        (
            created.event.as_str(),
            updated.event.as_str(),
            deleted.event.as_str()
        ),
        ("created", "updated", "deleted")
    );
    assert_eq!(created.json()["title"], "watched");
    assert_eq!(created.json()["url"], todo["url"]);
    assert_eq!(updated.json()["version"], 2);
    assert_eq!(updated.json()["completed"], true);
    assert_eq!(deleted.json(), json!({"id": id}));
    let ids: Vec<i64> = [&created, &updated, &deleted]
        .iter()
        .map(|e| e.id.as_deref().expect("id").parse().expect("number"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn each_owner_sees_only_its_own_changes() {
    // Arrange: JWT mode, two owners, each with a feed open.
    let secret = "feed-tests-hs256-secret-0123456789abcdef";
    let app = spawn_app_with(move |s| {
        s.auth.auth_mode = todo_service::auth::AuthMode::Jwt;
        s.auth.jwt_secret = Some(secret.parse().expect("secret"));
    })
    .await;
    let token = |sub: &str| {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 600;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": sub, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("key"),
        )
        .expect("token")
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let unauthenticated = app.get("/api/todos/events").await;
    assert_eq!(unauthenticated.status(), 401);
    let mut alices = open_feed(&app, None, Some(&alice)).await;
    let mut bobs = open_feed(&app, None, Some(&bob)).await;

    // Act: bob creates, then alice.
    for (who, title) in [(&bob, "bob's"), (&alice, "alice's")] {
        let r = app
            .client
            .post(app.url("/api/todos"))
            .bearer_auth(who)
            .json(&json!({ "title": title }))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201);
    }

    // Assert
    assert_eq!(next(&mut alices).await.json()["title"], "alice's");
    assert_eq!(next(&mut bobs).await.json()["title"], "bob's");
    assert!(alices.next(Duration::from_millis(300)).await.is_none());
    assert!(bobs.next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn last_event_id_resumes_without_losing_or_repeating_an_event() {
    // Arrange: two changes seen, then the client goes away.
    let app = spawn_app().await;
    let mut feed = open_feed(&app, None, None).await;
    let first = app.create("one").await;
    app.create("two").await;
    let _ = next(&mut feed).await;
    let second = next(&mut feed).await;
    drop(feed);

    // Act: three changes while it is away, then it resumes.
    let path = format!("/api/todos/{}", first["id"].as_str().expect("id"));
    assert_eq!(
        app.patch(&path, &json!({"title": "one, changed"}))
            .await
            .status(),
        200
    );
    app.create("three").await;
    let r = app
        .client
        .delete(app.url(&path))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let mut resumed = open_feed(&app, second.id.as_deref(), None).await;
    app.create("four").await;

    // Assert: exactly the missed ones, in order, then the live one.
    let got: Vec<(String, Value)> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            let e = next(&mut resumed).await;
            v.push((e.event.clone(), e.json()));
        }
        v
    };
    assert_eq!(got[0].0, "updated");
    assert_eq!(got[0].1["title"], "one, changed");
    assert_eq!(
        (got[1].0.as_str(), &got[1].1["title"]),
        ("created", &json!("three"))
    );
    assert_eq!(got[2].0, "deleted");
    assert_eq!(
        (got[3].0.as_str(), &got[3].1["title"]),
        ("created", &json!("four"))
    );
    assert!(
        resumed.next(Duration::from_millis(300)).await.is_none(),
        "repeated events"
    );
}

#[tokio::test]
async fn a_change_through_another_replica_appears_on_this_replicas_feed() {
    // Arrange
    let (a, b) = two_replicas(|_| {}).await;
    let mut feed = open_feed(&b, None, None).await;

    // Act
    let started = Instant::now();
    let todo = a.create("made on a").await;

    // Assert
    let e = next(&mut feed).await;
    println!(
        "feed on b saw a's create after {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(
        (e.event.as_str(), &e.json()["id"]),
        ("created", &todo["id"])
    );
}

#[tokio::test]
async fn a_resume_point_that_is_gone_gets_an_error_event_telling_the_client_to_list_again() {
    // Arrange: events up to 100 were purged.
    let app = spawn_app().await;
    db(&app.db_url)
        .await
        .execute(
            "UPDATE outbox_state SET purged_seq = 100, last_seq = 100, published_seq = 100",
            &[],
        )
        .await
        .expect("purged");

    // Act
    let mut feed = open_feed(&app, Some("5"), None).await;

    // Assert
    let e = next(&mut feed).await;
    assert_eq!(e.event, "error");
    assert_eq!(e.json()["status"], 410);
    assert!(
        e.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("list")
    );
    assert!(
        feed.next(Duration::from_millis(500)).await.is_none(),
        "the stream ends"
    );
    let bad = app
        .client
        .get(app.url("/api/todos/events"))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("answered");
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn open_streams_are_bounded_and_other_methods_are_405() {
    // Arrange: two streams per replica.
    let app = spawn_app_with(|s| s.events.feed_max_streams = 2).await;
    let _one = open_feed(&app, None, None).await;
    let two = open_feed(&app, None, None).await;

    // Act
    let third = app.get("/api/todos/events").await;

    // Assert
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    drop(two);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _again = open_feed(&app, None, None).await;
    let post = app
        .client
        .post(app.url("/api/todos/events"))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn a_consumer_that_cannot_keep_up_is_cut_off_and_a_reader_keeps_every_event() {
    // Arrange: 16 events of buffer per stream. One client reads its stream; another
    // opens one over a socket it never reads from.
    let app = spawn_app_with(|s| {
        s.events.feed_buffer = 16;
        s.events.feed_stall_s = 2;
    })
    .await;
    let mut reader = open_feed(&app, None, None).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let mut stalled = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    stalled
        .write_all(b"GET /api/todos/events HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("request");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Act: 1,500 changes, a few at a time, of ~4 KB each: 6 MB, more than the kernel
    // buffers a socket (4 MB at most here) so the stalled stream really falls behind.
    const CHANGES: usize = 1500;
    let big = "😀".repeat(990);
    let counting = tokio::spawn(async move {
        let mut n = 0;
        while n < CHANGES && reader.next(Duration::from_secs(20)).await.is_some() {
            n += 1;
        }
        n
    });
    for chunk in 0..CHANGES / 10 {
        let titles: Vec<String> = (0..10).map(|i| format!("{big}{chunk}-{i}")).collect();
        futures::future::join_all(titles.iter().map(|t| app.create_quiet(t))).await;
    }

    // Assert: the reader got all of them; the stalled stream, behind for longer than
    // FEED_STALL_S (2 s here), was closed.
    assert_eq!(counting.await.expect("reader"), CHANGES);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // It has been behind since early in the run: within FEED_STALL_S (2 s here) its
    // connection is closed, and what it can still read ends.
    let mut raw = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    let delivered = text.matches("event:created").count();
    assert!(
        ended.is_ok(),
        "the stalled consumer's connection was never closed"
    );
    assert!(
        delivered < CHANGES,
        "a stalled consumer got all {delivered} events"
    );
}

#[tokio::test]
async fn an_idle_stream_gets_a_heartbeat_comment() {
    // Arrange
    let app = spawn_app().await;
    let mut feed = open_feed(&app, None, None).await;

    // Act: nothing happens for a little over 15 s.
    let nothing = feed.next(Duration::from_secs(16)).await;

    // Assert
    assert!(nothing.is_none(), "{nothing:?}");
    assert!(feed.comments >= 1, "no heartbeat");
}
