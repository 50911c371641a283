//! `/api/todos` against real PostgreSQL: every endpoint and every error status.

use std::collections::HashSet;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{db, spawn_app, spawn_app_with};

#[tokio::test]
async fn create_returns_201_with_location_etag_absolute_url_and_uuid_v7() {
    // Arrange
    let app = spawn_app().await;
    // Act
    let r = app
        .post_todo(&json!({"title": "Buy milk", "order": 3}))
        .await;
    // Assert
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert!(r.headers().contains_key("x-request-id"));
    let todo: Value = r.json().await.expect("json");
    let id = todo["id"].as_str().expect("id");
    assert_eq!(
        uuid::Uuid::parse_str(id).expect("uuid").get_version_num(),
        7
    );
    assert_eq!(todo["title"], "Buy milk");
    assert_eq!(todo["completed"], false);
    assert_eq!(todo["order"], 3);
    assert_eq!(todo["version"], 1);
    assert_eq!(todo["url"], format!("{}/api/todos/{id}", app.address));
    assert_eq!(location, todo["url"]);
    let row = db(&app.db_url)
        .await
        .query_one(
            "SELECT title, owner, version FROM todos WHERE id = $1",
            &[&uuid::Uuid::parse_str(id).expect("uuid")],
        )
        .await
        .expect("stored");
    assert_eq!(row.get::<_, String>(0), "Buy milk");
    assert_eq!(row.get::<_, String>(1), "public");
    assert_eq!(row.get::<_, i64>(2), 1);
}

#[tokio::test]
async fn url_follows_public_url_then_forwarded_headers_then_host() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/todos"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "todo.example")
        .json(&json!({"title": "a"}))
        .send()
        .await
        .expect("request");
    let todo: Value = r.json().await.expect("json");
    assert!(
        todo["url"]
            .as_str()
            .expect("url")
            .starts_with("https://todo.example/api/todos/")
    );

    let app = spawn_app_with(|s| s.http.public_url = Some("https://public.example/".into())).await;
    let todo = app.create("b").await;
    assert!(
        todo["url"]
            .as_str()
            .expect("url")
            .starts_with("https://public.example/api/todos/")
    );
}

#[tokio::test]
async fn get_patch_put_delete_round_trip_with_versions() {
    let app = spawn_app().await;
    let todo = app.create("first").await;
    let path = format!("/api/todos/{}", todo["id"].as_str().expect("id"));

    let r = app.get(&path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(r.json::<Value>().await.expect("json")["title"], "first");

    let r = app.patch(&path, &json!({"completed": true})).await;
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.expect("json");
    assert_eq!(
        (
            patched["completed"].clone(),
            patched["title"].clone(),
            patched["version"].clone()
        ),
        (json!(true), json!("first"), json!(2))
    );

    // PATCH can clear the order with null and ignores read-only fields sent back.
    let mut sent_back = patched.clone();
    sent_back["order"] = json!(null);
    sent_back["title"] = json!("renamed");
    let r = app.patch(&path, &sent_back).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["title"], "renamed");

    // PUT replaces: absent fields take their defaults.
    let r = app
        .client
        .put(app.url(&path))
        .json(&json!({"title": "replaced", "order": 7}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let put: Value = r.json().await.expect("json");
    assert_eq!(
        (
            put["title"].clone(),
            put["completed"].clone(),
            put["order"].clone(),
            put["version"].clone()
        ),
        (json!("replaced"), json!(false), json!(7), json!(4))
    );

    let r = app
        .client
        .delete(app.url(&path))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 204);
    assert_eq!(app.get(&path).await.status(), 404);
    let r = app
        .client
        .delete(app.url(&path))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn unknown_or_malformed_ids_are_404_problems_for_every_method() {
    let app = spawn_app().await;
    let unknown = format!("/api/todos/{}", uuid::Uuid::now_v7());
    for path in [unknown.as_str(), "/api/todos/not-a-uuid"] {
        let get = app.get(path).await;
        let patch = app.patch(path, &json!({"completed": true})).await;
        let put = app
            .client
            .put(app.url(path))
            .json(&json!({"title": "x"}))
            .send()
            .await
            .expect("request");
        let delete = app
            .client
            .delete(app.url(path))
            .send()
            .await
            .expect("request");
        for r in [get, patch, put, delete] {
            assert_eq!(r.status(), 404, "{path}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            let p: Value = r.json().await.expect("json");
            assert_eq!(p["status"], 404);
        }
    }
}

#[tokio::test]
async fn list_filters_limits_and_orders_by_order_nulls_last_then_creation() {
    let app = spawn_app().await;
    let c = app
        .post_todo(&json!({"title": "c", "order": 2}))
        .await
        .json::<Value>()
        .await
        .expect("json");
    let a = app
        .post_todo(&json!({"title": "a", "completed": true}))
        .await
        .json::<Value>()
        .await
        .expect("json");
    let b = app
        .post_todo(&json!({"title": "b", "order": 1}))
        .await
        .json::<Value>()
        .await
        .expect("json");
    let d = app
        .post_todo(&json!({"title": "d"}))
        .await
        .json::<Value>()
        .await
        .expect("json");

    let all: Vec<Value> = app.get_json("/api/todos").await;
    let titles: Vec<&str> = all
        .iter()
        .map(|t| t["title"].as_str().expect("title"))
        .collect();
    assert_eq!(titles, ["b", "c", "a", "d"]);
    assert_eq!(all[0]["url"], b["url"]);

    let done: Vec<Value> = app.get_json("/api/todos?completed=true").await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["id"], a["id"]);
    let open: Vec<Value> = app.get_json("/api/todos?completed=false").await;
    assert_eq!(open.len(), 3);

    let r = app.get("/api/todos?limit=2").await;
    let link = r.headers()["link"].to_str().expect("ascii").to_owned();
    assert!(link.contains("rel=\"next\""), "{link}");
    let page: Vec<Value> = r.json().await.expect("json");
    assert_eq!(page.len(), 2);
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("url")
        .to_owned();
    let r = app.client.get(next).send().await.expect("request");
    assert!(r.headers().get("link").is_none());
    let rest: Vec<Value> = r.json().await.expect("json");
    let rest_ids: Vec<&Value> = rest.iter().map(|t| &t["id"]).collect();
    assert_eq!(rest_ids, [&a["id"], &d["id"]]);
    let _ = c;

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "completed=maybe",
        "cursor=%%%",
        "cursor=abc",
        "what=1",
    ] {
        let r = app.get(&format!("/api/todos?{bad}")).await;
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn delete_collection_clears_all_or_only_completed() {
    let app = spawn_app().await;
    app.create("open").await;
    let done = app
        .post_todo(&json!({"title": "done", "completed": true}))
        .await
        .json::<Value>()
        .await
        .expect("json");
    let r = app
        .client
        .delete(app.url("/api/todos?completed=true"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 204);
    let left: Vec<Value> = app.get_json("/api/todos").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["title"], "open");
    let path = format!("/api/todos/{}", done["id"].as_str().expect("id"));
    assert_eq!(
        app.get(&path).await.status(),
        404,
        "the cache forgot the cleared todo"
    );

    let r = app
        .client
        .delete(app.url("/api/todos"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 204);
    let left: Vec<Value> = app.get_json("/api/todos").await;
    assert!(left.is_empty());
    let count = app.count("todos").await;
    assert_eq!(count, 0);
}

async fn assert_problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.expect("problem json");
    assert_eq!(p["status"], status);
    assert!(p["title"].is_string() && p["detail"].is_string() && p["type"].is_string());
    p
}

#[tokio::test]
async fn invalid_bodies_are_4xx_problems_and_write_nothing() {
    let app = spawn_app().await;
    let long = "x".repeat(1001);
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        (
            "empty title",
            json!({"title": ""}).to_string(),
            400,
            Some("title"),
        ),
        (
            "blank title",
            json!({"title": "   "}).to_string(),
            400,
            Some("title"),
        ),
        (
            "missing title",
            json!({"completed": true}).to_string(),
            400,
            Some("title"),
        ),
        (
            "1001 chars",
            json!({"title": long}).to_string(),
            400,
            Some("title"),
        ),
        (
            "NUL",
            r#"{"title":"a\u0000b"}"#.to_owned(),
            400,
            Some("title"),
        ),
        (
            "bell",
            r#"{"title":"a\u0007b"}"#.to_owned(),
            400,
            Some("title"),
        ),
        (
            "title number",
            json!({"title": 5}).to_string(),
            400,
            Some("title"),
        ),
        (
            "completed string",
            json!({"title": "a", "completed": "yes"}).to_string(),
            400,
            Some("completed"),
        ),
        (
            "order too big",
            json!({"title": "a", "order": 4_294_967_296_i64}).to_string(),
            400,
            Some("order"),
        ),
        (
            "order float",
            json!({"title": "a", "order": 1.5}).to_string(),
            400,
            Some("order"),
        ),
        (
            "unknown field",
            json!({"title": "a", "colour": "red"}).to_string(),
            400,
            None,
        ),
        (
            "duplicate key",
            r#"{"title":"a","title":"b"}"#.to_owned(),
            400,
            None,
        ),
        ("malformed", r#"{"title": "#.to_owned(), 400, None),
        ("array", "[1,2]".to_owned(), 400, None),
        (
            "sql",
            json!({"title": "'); DROP TABLE todos; --", "x": 1}).to_string(),
            400,
            None,
        ),
    ];
    for (what, body, status, field) in cases {
        let r = app
            .client
            .post(app.url("/api/todos"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let p = assert_problem(r, status).await;
        if let Some(field) = field {
            assert_eq!(p["errors"][0]["field"], field, "{what}");
        }
    }
    // Invalid UTF-8.
    let r = app
        .client
        .post(app.url("/api/todos"))
        .header("content-type", "application/json")
        .body(vec![
            b'{', b'"', b't', b'i', b't', b'l', b'e', b'"', b':', b'"', 0xff, b'"', b'}',
        ])
        .send()
        .await
        .expect("request");
    assert_problem(r, 400).await;
    // Wrong or missing content type.
    let r = app
        .client
        .post(app.url("/api/todos"))
        .header("content-type", "text/plain")
        .body(r#"{"title":"a"}"#)
        .send()
        .await
        .expect("request");
    assert_problem(r, 415).await;
    let r = app
        .client
        .post(app.url("/api/todos"))
        .body(r#"{"title":"a"}"#)
        .send()
        .await
        .expect("request");
    assert_problem(r, 415).await;
    // Over 64 KiB, with Content-Length and chunked without it.
    let big = json!({"title": "a".repeat(70 * 1024)}).to_string();
    let r = app
        .client
        .post(app.url("/api/todos"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .expect("request");
    assert_problem(r, 413).await;
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(8192)
        .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
        .collect();
    let r = app
        .client
        .post(app.url("/api/todos"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("request");
    assert_problem(r, 413).await;
    // PATCH with nothing to change, or a bad field.
    let todo = app.create("keep").await;
    let path = format!("/api/todos/{}", todo["id"].as_str().expect("id"));
    assert_problem(app.patch(&path, &json!({})).await, 400).await;
    assert_problem(app.patch(&path, &json!({"title": ""})).await, 400).await;

    // SQL metacharacters in the path and the query string are plain 4xx.
    for path in [
        "/api/todos/1'%20OR%20'1'='1",
        "/api/todos/%27%3B%20DROP%20TABLE%20todos%3B--",
    ] {
        assert_problem(app.get(path).await, 404).await;
    }
    for query in [
        "limit=1;DROP%20TABLE%20todos",
        "completed=true'--",
        "cursor=')%20OR%201=1--",
    ] {
        assert_problem(app.get(&format!("/api/todos?{query}")).await, 400).await;
    }
    let count = app.count("todos").await;
    assert_eq!(count, 1, "only the one valid create was written");
    // As a title they are just text, stored verbatim.
    let sql = "'); DROP TABLE todos; -- \\ %_ $1";
    let todo = app.create(sql).await;
    assert_eq!(todo["title"], sql);
    let stored: String = db(&app.db_url)
        .await
        .query_one("SELECT title FROM todos WHERE title LIKE '%DROP%'", &[])
        .await
        .expect("stored")
        .get(0);
    assert_eq!(stored, sql);
    let r = app.get(&path).await;
    assert_eq!(r.json::<Value>().await.expect("json")["version"], 1);
}

#[tokio::test]
async fn two_hundred_concurrent_creates_make_two_hundred_distinct_rows() {
    let app = spawn_app().await;
    let results = join_all((0..200).map(|i| {
        let app = &app;
        async move {
            let r = app
                .post_todo(&json!({"title": format!("todo {i}"), "order": i}))
                .await;
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    }))
    .await;
    let ids: HashSet<String> = results.into_iter().collect();
    assert_eq!(ids.len(), 200);
    let rows = db(&app.db_url)
        .await
        .query("SELECT id::text, title FROM todos", &[])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 200);
    let stored: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    assert_eq!(stored, ids);
    // The writer batched them: far fewer batches than commands.
    let metrics = app.admin_get("/metrics").await.text().await.expect("text");
    let batches: f64 = metrics
        .lines()
        .find(|l| l.starts_with("todo_write_batch_size_count"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("batch count");
    assert!(batches < 200.0, "{batches} batches for 200 creates");
}

#[tokio::test]
async fn a_batch_mixing_valid_and_failing_commands_fails_only_the_failing_ones() {
    let app = spawn_app().await;
    let keep = app.create("keep").await;
    let keep_path = format!("/api/todos/{}", keep["id"].as_str().expect("id"));
    // Creates, patches of unknown ids and patches of a real todo, all at once so they
    // share batches.
    let mut futures = Vec::new();
    for i in 0..60 {
        let app = &app;
        let keep_path = keep_path.clone();
        futures.push(async move {
            match i % 3 {
                0 => (
                    i,
                    app.post_todo(&json!({"title": format!("ok {i}")}))
                        .await
                        .status()
                        .as_u16(),
                ),
                1 => (
                    i,
                    app.patch(
                        &format!("/api/todos/{}", uuid::Uuid::now_v7()),
                        &json!({"completed": true}),
                    )
                    .await
                    .status()
                    .as_u16(),
                ),
                _ => (
                    i,
                    app.patch(&keep_path, &json!({"title": format!("keep {i}")}))
                        .await
                        .status()
                        .as_u16(),
                ),
            }
        });
    }
    for (i, status) in join_all(futures).await {
        let expected = match i % 3 {
            0 => 201,
            1 => 404,
            _ => 200,
        };
        assert_eq!(status, expected, "command {i}");
    }
    let client = db(&app.db_url).await;
    let count: i64 = client
        .query_one("SELECT count(*) FROM todos", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 21);
    let version: i64 = client
        .query_one("SELECT version FROM todos WHERE title LIKE 'keep%'", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(version, 21, "all 20 patches of the real todo applied");
}

#[tokio::test]
async fn a_client_reads_its_own_writes_through_the_cache() {
    let app = spawn_app().await;
    for i in 0..30 {
        let todo = app.create(&format!("t{i}")).await;
        let path = format!("/api/todos/{}", todo["id"].as_str().expect("id"));
        let r = app.get(&path).await;
        assert_eq!(
            r.headers()["x-cache"],
            "hit",
            "the writer put the new todo in the cache"
        );
        assert_eq!(r.json::<Value>().await.expect("json")["version"], 1);
        let r = app
            .patch(&path, &json!({"title": format!("t{i}-v2")}))
            .await;
        assert_eq!(r.status(), 200);
        let r = app.get(&path).await;
        let got: Value = r.json().await.expect("json");
        assert_eq!(
            (got["version"].clone(), got["title"].clone()),
            (json!(2), json!(format!("t{i}-v2")))
        );
        let list: Vec<Value> = app.get_json("/api/todos?limit=1000").await;
        assert!(
            list.iter()
                .any(|t| t["id"] == todo["id"] && t["version"] == 2)
        );
        assert_eq!(
            app.client
                .delete(app.url(&path))
                .send()
                .await
                .expect("request")
                .status(),
            204
        );
        assert_eq!(app.get(&path).await.status(), 404);
    }
}
