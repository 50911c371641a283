//! The REST contract beyond CRUD: conditional requests, Idempotency-Key, pagination.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{db, spawn_app, spawn_app_with};

#[tokio::test]
async fn if_none_match_gives_304_and_if_match_guards_every_change() {
    // Arrange
    let app = spawn_app().await;
    let todo = app.create("guarded").await;
    let path = format!("/api/todos/{}", todo["id"].as_str().expect("id"));

    // If-None-Match: current → 304 with the ETag; stale or weak-other → 200; * → 304.
    let r = app
        .send_with("GET", &path, ("if-none-match", "\"1\""), None)
        .await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let r = app
        .send_with("GET", &path, ("if-none-match", "W/\"1\""), None)
        .await;
    assert_eq!(r.status(), 304, "If-None-Match uses weak comparison");
    let r = app
        .send_with("GET", &path, ("if-none-match", "\"7\", \"8\""), None)
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .send_with("GET", &path, ("if-none-match", "*"), None)
        .await;
    assert_eq!(r.status(), 304);

    // If-Match: stale → 412 problem and nothing changes; current → applied.
    for (method, body) in [
        ("PATCH", json!({"title": "x"})),
        ("PUT", json!({"title": "x"})),
    ] {
        let r = app
            .send_with(method, &path, ("if-match", "\"9\""), Some(&body))
            .await;
        assert_eq!(r.status(), 412, "{method}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = app
        .send_with("DELETE", &path, ("if-match", "\"9\""), None)
        .await;
    assert_eq!(r.status(), 412);
    let r = app
        .send_with(
            "PATCH",
            &path,
            ("if-match", "W/\"1\""),
            Some(&json!({"title": "x"})),
        )
        .await;
    assert_eq!(r.status(), 412, "If-Match uses strong comparison");
    let r = app.get(&path).await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["version"],
        1,
        "no failed precondition changed anything"
    );

    let r = app
        .send_with(
            "PATCH",
            &path,
            ("if-match", "\"1\""),
            Some(&json!({"completed": true})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let r = app
        .send_with(
            "PUT",
            &path,
            ("if-match", "\"1\", \"2\""),
            Some(&json!({"title": "y"})),
        )
        .await;
    assert_eq!(r.status(), 200, "a list matches any of its tags");
    let r = app
        .send_with(
            "PATCH",
            &path,
            ("if-match", "*"),
            Some(&json!({"order": 4})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .send_with("DELETE", &path, ("if-match", "\"4\""), None)
        .await;
    assert_eq!(r.status(), 204);
    let r = app
        .send_with(
            "PATCH",
            &path,
            ("if-match", "*"),
            Some(&json!({"order": 4})),
        )
        .await;
    assert_eq!(r.status(), 404, "If-Match: * on a missing todo");
}

#[tokio::test]
async fn idempotency_key_replays_the_first_result_and_refuses_another_body() {
    let app = spawn_app().await;
    // Act: the same request twice.
    let first = app.post_with_key("k-1", &json!({"title": "once"})).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("json");
    let again = app.post_with_key("k-1", &json!({"title": "once"})).await;
    // Assert: replayed, same todo, one row.
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    let count = app.count("todos").await;
    assert_eq!(count, 1);

    // The same key with another body is a 422 and writes nothing.
    let other = app
        .post_with_key("k-1", &json!({"title": "different"}))
        .await;
    assert_eq!(other.status(), 422);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    // A bad key is a 400.
    let r = app.post_with_key("a b", &json!({"title": "t"})).await;
    assert_eq!(r.status(), 400);

    // PATCH: replayed too, even after the todo changed again.
    let path = format!("/api/todos/{}", first["id"].as_str().expect("id"));
    let p1: Value = app
        .send_with(
            "PATCH",
            &path,
            ("idempotency-key", "p-1"),
            Some(&json!({"completed": true})),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(p1["version"], 2);
    app.patch(&path, &json!({"title": "changed later"})).await;
    let p2 = app
        .send_with(
            "PATCH",
            &path,
            ("idempotency-key", "p-1"),
            Some(&json!({"completed": true})),
        )
        .await;
    assert_eq!(p2.status(), 200);
    assert_eq!(p2.headers()["idempotent-replayed"], "true");
    assert_eq!(p2.json::<Value>().await.expect("json"), p1);
    let version: i64 = db(&app.db_url)
        .await
        .query_one("SELECT version FROM todos", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(version, 3, "the replay did not apply the patch again");
    let count = app.count("idempotency_keys").await;
    assert_eq!(count, 2);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_todo_and_the_rest_get_409_or_a_replay() {
    let app = spawn_app().await;
    let body = json!({"title": "race"});
    let results = join_all((0..10).map(|_| app.post_with_key("same", &body))).await;
    let mut created = HashSet::new();
    for r in results {
        match r.status().as_u16() {
            201 => {
                created.insert(
                    r.json::<Value>().await.expect("json")["id"]
                        .as_str()
                        .expect("id")
                        .to_owned(),
                );
            }
            409 => assert_eq!(r.headers()["content-type"], "application/problem+json"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created.len(), 1, "every 201 is the same todo");
    let count = app.count("todos").await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_create_whose_call_timed_out_and_is_retried_with_its_key_makes_exactly_one_todo() {
    // Arrange: the edge gives up after 1 ms, long before the writer commits.
    let app = spawn_app_with(|s| s.http.request_timeout_ms = 1).await;
    let body = json!({"title": "exactly once"});
    // Act: retry with the same key until the stored result is replayed.
    let mut statuses = Vec::new();
    let mut replayed = None;
    for _ in 0..200 {
        let r = app.post_with_key("retry-me", &body).await;
        statuses.push(r.status().as_u16());
        if r.status() == 201 {
            replayed = Some(r.headers().get("idempotent-replayed").is_some());
            break;
        }
        assert!(
            matches!(r.status().as_u16(), 503 | 409),
            "status {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Assert: the first attempt timed out (503), a later one got the stored 201, and
    // there is one todo.
    assert_eq!(statuses[0], 503, "{statuses:?}");
    assert_eq!(replayed, Some(true), "{statuses:?}");
    let count = app.count("todos").await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn expired_keys_are_purged_and_no_longer_replayed() {
    let app = spawn_app().await;
    let r = app.post_with_key("old", &json!({"title": "a"})).await;
    assert_eq!(r.status(), 201);
    let client = db(&app.db_url).await;
    client
        .execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'",
            &[],
        )
        .await
        .expect("age");
    // An expired key is not replayed: the request is new again.
    let r = app.post_with_key("old", &json!({"title": "a"})).await;
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("idempotent-replayed").is_none());
    // The purge deletes only expired keys.
    client
        .execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'",
            &[],
        )
        .await
        .expect("age");
    let r = app.post_with_key("fresh", &json!({"title": "b"})).await;
    assert_eq!(r.status(), 201);
    let mut config: tokio_postgres::Config = app.db_url.parse().expect("url");
    let tls = todo_service::db::tls(&mut config, None).expect("tls");
    let pool =
        todo_service::db::create_pool(&config, &tls, 1, Duration::from_secs(2)).expect("pool");
    assert_eq!(
        todo_service::db::keys::purge_expired(&pool)
            .await
            .expect("purge"),
        1
    );
    let keys: Vec<String> = client
        .query("SELECT key FROM idempotency_keys", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, ["fresh"]);
}

#[tokio::test]
async fn walking_pages_visits_every_todo_once_while_others_are_created_and_deleted() {
    // Arrange: 120 todos, some with an order, some without.
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..120 {
        let body = if i % 3 == 0 {
            json!({"title": format!("t{i}")})
        } else {
            json!({"title": format!("t{i}"), "order": i % 7})
        };
        let r = app.post_todo(&body).await;
        ids.push(
            r.json::<Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let original: HashSet<String> = ids.iter().cloned().collect();
    let doomed: HashSet<String> = ids.iter().step_by(10).cloned().collect();

    // Act: walk 7 at a time while creating and deleting between pages.
    let mut seen = Vec::new();
    let mut next = Some(app.url("/api/todos?limit=7"));
    let mut page = 0;
    while let Some(url) = next {
        let r = app.client.get(url).send().await.expect("request");
        assert_eq!(r.status(), 200);
        next = r.headers().get("link").map(|l| {
            l.to_str()
                .expect("ascii")
                .trim_start_matches('<')
                .split('>')
                .next()
                .expect("url")
                .to_owned()
        });
        let todos: Vec<Value> = r.json().await.expect("json");
        seen.extend(
            todos
                .iter()
                .map(|t| t["id"].as_str().expect("id").to_owned()),
        );
        app.post_todo(&json!({"title": format!("new {page}"), "order": page % 7}))
            .await;
        if let Some(id) = doomed.iter().nth(page) {
            app.client
                .delete(app.url(&format!("/api/todos/{id}")))
                .send()
                .await
                .expect("request");
        }
        page += 1;
        assert!(page < 100, "pagination does not end");
    }

    // Assert: no todo twice; every original todo that was not deleted was visited.
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a todo appeared twice");
    for id in original.difference(&doomed) {
        assert!(unique.contains(id), "{id} was skipped");
    }
}

#[tokio::test]
async fn keys_stored_by_the_previous_release_are_still_replayed() {
    // Arrange: a key as release 1 stored it: an HTTP status, no outcome, and a hash of
    // method, path and body (hash scheme 1).
    let app = spawn_app().await;
    let todo = app.create("stored before the upgrade").await;
    let client = db(&app.db_url).await;
    let body = json!({
        "id": todo["id"], "owner": "public", "title": "stored before the upgrade",
        "completed": false, "order": null, "version": 1,
        "created_at": todo["created_at"], "updated_at": todo["updated_at"],
    });
    client
        .execute(
            "INSERT INTO idempotency_keys (owner, key, request_hash, status_code, response_body)
             VALUES ('public', 'old-key', '\\x00', 201, $1)",
            &[&serde_json::to_vec(&body).expect("json")],
        )
        .await
        .expect("legacy row");

    // Act: the client retries its create with that key.
    let r = app
        .post_with_key("old-key", &json!({"title": "stored before the upgrade"}))
        .await;

    // Assert: the first result, replayed as a create.
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let replayed: Value = r.json().await.expect("json");
    assert_eq!(replayed["id"], todo["id"]);
    assert_eq!(app.count("todos").await, 1);
}

#[tokio::test]
async fn a_key_is_the_same_request_however_its_json_is_spelled() {
    // Arrange
    let app = spawn_app().await;
    let first = app
        .post_with_key(
            "spelled",
            &json!({"title": "t", "completed": false, "order": 2}),
        )
        .await;
    assert_eq!(first.status(), 201);

    // Act: the same command, keys in another order, a default spelled out, a float order.
    let r = app
        .client
        .post(app.url("/api/todos"))
        .header("idempotency-key", "spelled")
        .header("content-type", "application/json")
        .body(r#"{"order": 2.0, "title": "t"}"#)
        .send()
        .await
        .expect("request");

    // Assert
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(app.count("todos").await, 1);
}
