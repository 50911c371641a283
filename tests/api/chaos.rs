//! Actor kills under load: no acknowledged write is lost, every failure is a 503 with
//! Retry-After, and the service is ready again within 5 s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{db, spawn_app_with};

/// What a client was told about one todo: the last acknowledged version and title.
#[derive(Clone, Debug)]
struct Acked {
    version: i64,
    title: String,
    /// Titles of patches whose outcome is unknown (503 after sending), newer than `title`.
    maybe: Vec<String>,
}

#[tokio::test]
async fn killing_the_writer_and_shards_under_load_loses_no_acknowledged_write() {
    // Arrange
    let app = Arc::new(spawn_app_with(|s| s.actors.restart_intensity = 10_000).await);
    let acked: Arc<Mutex<HashMap<String, Acked>>> = Arc::default();
    let failures: Arc<Mutex<Vec<(u16, bool)>>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(4);

    // Act: 8 clients create and patch their todos; a killer kills actors meanwhile.
    let mut clients = Vec::new();
    for c in 0..8 {
        let (app, acked, failures) = (Arc::clone(&app), Arc::clone(&acked), Arc::clone(&failures));
        clients.push(tokio::spawn(async move {
            let mut mine: Vec<String> = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                if mine.is_empty() || n.is_multiple_of(3) {
                    let title = format!("c{c}-n{n}");
                    let r = app.post_todo(&json!({ "title": title })).await;
                    if r.status() == 201 {
                        let t: Value = r.json().await.expect("json");
                        let id = t["id"].as_str().expect("id").to_owned();
                        acked.lock().await.insert(
                            id.clone(),
                            Acked {
                                version: 1,
                                title,
                                maybe: vec![],
                            },
                        );
                        mine.push(id);
                    } else {
                        failures
                            .lock()
                            .await
                            .push((r.status().as_u16(), r.headers().contains_key("retry-after")));
                    }
                } else {
                    let id = mine[(n as usize) % mine.len()].clone();
                    let title = format!("c{c}-p{n}");
                    let r = app
                        .patch(&format!("/api/todos/{id}"), &json!({ "title": title }))
                        .await;
                    let status = r.status().as_u16();
                    let mut acked = acked.lock().await;
                    let entry = acked.get_mut(&id).expect("own todo");
                    if status == 200 {
                        let t: Value = r.json().await.expect("json");
                        entry.version = t["version"].as_i64().expect("version");
                        entry.title = title;
                        entry.maybe.clear();
                    } else {
                        entry.maybe.push(title);
                        failures
                            .lock()
                            .await
                            .push((status, r.headers().contains_key("retry-after")));
                    }
                }
            }
        }));
    }
    let killer = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let mut kills = 0;
            let mut i = 0;
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let target = if i % 2 == 0 {
                    "writer".to_owned()
                } else {
                    format!("shard-{}", i % 4)
                };
                let action = if i % 3 == 0 { "panic" } else { "kill" };
                if app.chaos(action, &target).await {
                    kills += 1;
                }
                i += 1;
            }
            kills
        })
    };
    for c in clients {
        c.await.expect("client");
    }
    let kills = killer.await.expect("killer");

    // Assert: ready again within 5 s.
    let took = app.wait_ready(Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5));
    assert!(kills >= 8, "only {kills} kills landed");

    // Every failure was a 503 with Retry-After.
    let failures = failures.lock().await;
    assert!(
        failures.iter().all(|(s, ra)| *s == 503 && *ra),
        "{failures:?}"
    );

    // Every acknowledged write is stored with its acknowledged state (or a later one
    // from a patch whose outcome was unknown).
    let acked = acked.lock().await;
    assert!(acked.len() > 20, "too little load: {} todos", acked.len());
    let client = db(&app.db_url).await;
    let rows = client
        .query("SELECT id::text, version, title FROM todos", &[])
        .await
        .expect("rows");
    let stored: HashMap<String, (i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for (id, a) in acked.iter() {
        let (version, title) = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged todo {id} lost"));
        assert!(
            *version >= a.version,
            "{id}: stored v{version} older than acknowledged v{}",
            a.version
        );
        if *version == a.version {
            assert_eq!(title, &a.title, "{id}");
        } else {
            assert!(
                a.maybe.contains(title),
                "{id}: {title} was never sent after the ack"
            );
        }
    }
    let actors: Vec<Value> = app
        .admin_get("/admin/actors")
        .await
        .json()
        .await
        .expect("json");
    let restarts: u64 = actors
        .iter()
        .map(|a| a["restarts"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        restarts >= kills as u64 / 2,
        "restarts {restarts} for {kills} kills"
    );
}
