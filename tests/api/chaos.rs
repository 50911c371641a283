//! Actor kills under load: every query shard (the load owner's included) and the writer
//! are killed in turn every 500 ms for 30 s while an open-loop load of creates (with
//! `Idempotency-Key`, retried after `Retry-After`), patches and gets runs at 180
//! requests/s. Nothing acknowledged is lost or duplicated, nearly every create gets
//! through with its retries, reads keep being served, and the service is ready within
//! 1 s of the last kill. The figures are printed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{TestApp, db, spawn_app_with};

/// How long the actors are killed for.
const CHAOS_FOR: Duration = Duration::from_secs(30);
/// Requests started per second, whatever the answers (open loop).
const RATE: u64 = 180;
/// One kill every this long.
const KILL_EVERY: Duration = Duration::from_millis(500);
/// Attempts per create (the first and its retries).
const CREATE_ATTEMPTS: u32 = 8;

/// What the clients were told about one todo. Patches change its `order` (its title is
/// its create's key, so a key that made two todos shows as a repeated title).
#[derive(Default, Debug)]
struct Acked {
    /// Acknowledged versions and their orders.
    versions: BTreeMap<i64, Option<i32>>,
    /// Orders of changes whose outcome is unknown (503 after sending).
    maybe: HashSet<i32>,
}

/// The ledger of the run.
#[derive(Default)]
struct Ledger {
    todos: Mutex<HashMap<String, Acked>>,
    ids: Mutex<Vec<String>>,
    requests: AtomicU64,
    failed: AtomicU64,
    not_503: Mutex<Vec<String>>,
    creates: AtomicU64,
    creates_acked: AtomicU64,
    reads: AtomicU64,
    reads_served: AtomicU64,
}

impl Ledger {
    /// Counts one answer; true when it failed.
    async fn answered(&self, r: &reqwest::Response) -> bool {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let status = r.status().as_u16();
        if status < 400 {
            return false;
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
        if status != 503 || !r.headers().contains_key("retry-after") {
            self.not_503.lock().await.push(format!(
                "{status} retry-after={:?}",
                r.headers().get("retry-after")
            ));
        }
        true
    }

    async fn some_id(&self, n: u64) -> Option<String> {
        let ids = self.ids.lock().await;
        (!ids.is_empty()).then(|| ids[(n as usize * 7919) % ids.len()].clone())
    }
}

fn retry_after(r: &reqwest::Response) -> Duration {
    let s = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Duration::from_secs(s)
}

/// A create with a key of its own, retried after `Retry-After` while it gets 503.
async fn create(app: Arc<TestApp>, ledger: Arc<Ledger>, n: u64) {
    ledger.creates.fetch_add(1, Ordering::Relaxed);
    let key = format!("chaos-{n}-{}", uuid::Uuid::now_v7().simple());
    for _ in 0..CREATE_ATTEMPTS {
        let Ok(r) = app
            .client
            .post(app.url("/api/todos"))
            .header("idempotency-key", &key)
            .json(&json!({ "title": key }))
            .send()
            .await
        else {
            ledger.requests.fetch_add(1, Ordering::Relaxed);
            ledger.failed.fetch_add(1, Ordering::Relaxed);
            ledger.not_503.lock().await.push("no answer".into());
            return;
        };
        if !ledger.answered(&r).await {
            let todo: Value = r.json().await.expect("json");
            let id = todo["id"].as_str().expect("id").to_owned();
            ledger.creates_acked.fetch_add(1, Ordering::Relaxed);
            let mut todos = ledger.todos.lock().await;
            let acked = todos.entry(id.clone()).or_default();
            acked.versions.insert(1, None);
            drop(todos);
            ledger.ids.lock().await.push(id);
            return;
        }
        if r.status() != 503 {
            return;
        }
        tokio::time::sleep(retry_after(&r)).await;
    }
}

/// A change of the order of an acknowledged todo; not retried (its outcome may be
/// unknown, and it carries no key).
async fn patch(app: Arc<TestApp>, ledger: Arc<Ledger>, n: u64) {
    let Some(id) = ledger.some_id(n).await else {
        return;
    };
    let order = i32::try_from(n).expect("small");
    let Ok(r) = app
        .client
        .patch(app.url(&format!("/api/todos/{id}")))
        .json(&json!({ "order": order }))
        .send()
        .await
    else {
        ledger.requests.fetch_add(1, Ordering::Relaxed);
        ledger.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let failed = ledger.answered(&r).await;
    let mut todos = ledger.todos.lock().await;
    let acked = todos.entry(id).or_default();
    if failed {
        acked.maybe.insert(order);
    } else {
        let todo: Value = r.json().await.expect("json");
        let version = todo["version"].as_i64().expect("version");
        acked.versions.insert(version, Some(order));
    }
}

/// A read of an acknowledged todo.
async fn get(app: Arc<TestApp>, ledger: Arc<Ledger>, n: u64) {
    let Some(id) = ledger.some_id(n).await else {
        return;
    };
    ledger.reads.fetch_add(1, Ordering::Relaxed);
    let Ok(r) = app
        .client
        .get(app.url(&format!("/api/todos/{id}")))
        .send()
        .await
    else {
        ledger.requests.fetch_add(1, Ordering::Relaxed);
        ledger.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if !ledger.answered(&r).await {
        ledger.reads_served.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn killing_every_actor_in_turn_under_load_keeps_creates_reads_and_acknowledged_writes() {
    // Arrange: restart intensity out of the way (this is not a crash loop).
    let app = Arc::new(spawn_app_with(|s| s.actors.restart_intensity = 100_000).await);
    let ledger = Arc::new(Ledger::default());
    for i in 0..20 {
        create(Arc::clone(&app), Arc::clone(&ledger), 1_000_000 + i).await;
    }
    let targets = ["writer", "shard-0", "shard-1", "shard-2", "shard-3"];
    let actors: Vec<Value> = app
        .admin_get("/admin/actors")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        actors
            .iter()
            .filter(|a| targets.contains(&a["name"].as_str().unwrap_or_default()))
            .count(),
        5,
        "the owner `public` is on one of these shards"
    );
    let started = Instant::now();

    // Act: the load, open loop.
    let load = {
        let (app, ledger) = (Arc::clone(&app), Arc::clone(&ledger));
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while started.elapsed() < CHAOS_FOR {
                tick.tick().await;
                n += 1;
                let (app, ledger) = (Arc::clone(&app), Arc::clone(&ledger));
                tasks.push(tokio::spawn(async move {
                    match n % 10 {
                        0..=3 => create(app, ledger, n).await,
                        4..=6 => patch(app, ledger, n).await,
                        _ => get(app, ledger, n).await,
                    }
                }));
            }
            for t in tasks {
                t.await.expect("request task");
            }
            n
        })
    };
    // Act: the kills, each actor in turn.
    let mut kills = 0;
    let mut last_kill = Instant::now();
    let mut killed: HashMap<&str, u32> = HashMap::new();
    let mut i = 0;
    while started.elapsed() < CHAOS_FOR {
        tokio::time::sleep(KILL_EVERY).await;
        let target = targets[i % targets.len()];
        let action = if i % 3 == 0 { "panic" } else { "kill" };
        if app.chaos(action, target).await {
            kills += 1;
            *killed.entry(target).or_default() += 1;
            last_kill = Instant::now();
        }
        i += 1;
    }
    let ready_after = app.wait_ready(Duration::from_secs(5)).await + last_kill.elapsed();
    let sent = load.await.expect("load");
    let elapsed = started.elapsed();

    // Assert: the figures.
    let requests = ledger.requests.load(Ordering::Relaxed);
    let failed = ledger.failed.load(Ordering::Relaxed);
    let creates = ledger.creates.load(Ordering::Relaxed) - 20;
    let acked = ledger.creates_acked.load(Ordering::Relaxed) - 20;
    let (reads, served) = (
        ledger.reads.load(Ordering::Relaxed),
        ledger.reads_served.load(Ordering::Relaxed),
    );
    let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "chaos: {kills} kills ({killed:?}) in {:.1} s; {sent} operations at {RATE}/s, \
         {requests} requests (retries included); creates acknowledged {acked}/{creates} = {:.2} %; \
         requests failing {failed}/{requests} = {:.2} %; reads served {served}/{reads} = {:.2} %; \
         ready {} ms after the last kill",
        elapsed.as_secs_f64(),
        pct(acked, creates),
        pct(failed, requests),
        pct(served, reads),
        ready_after.as_millis()
    );
    assert!(
        killed.len() == targets.len() && killed.values().all(|&k| k >= 8),
        "{killed:?}"
    );
    assert!(
        sent as f64 >= 0.95 * (RATE * CHAOS_FOR.as_secs()) as f64,
        "only {sent} sent"
    );
    let not_503 = ledger.not_503.lock().await;
    assert!(
        not_503.is_empty(),
        "failures other than 503 + Retry-After: {not_503:?}"
    );
    assert!(pct(acked, creates) >= 97.0, "creates acknowledged");
    assert!(pct(failed, requests) <= 15.0, "requests failing");
    assert!(pct(served, reads) >= 90.0, "reads served");
    assert!(
        ready_after <= Duration::from_secs(1),
        "ready {ready_after:?} after the last kill"
    );

    // Assert: every acknowledged write is stored in its acknowledged state (or a later one
    // whose outcome was unknown), and no key made two todos.
    let client = db(&app.db_url).await;
    let rows = client
        .query(r#"SELECT id::text, version, "order" FROM todos"#, &[])
        .await
        .expect("rows");
    let stored: HashMap<String, (i64, Option<i32>)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let todos = ledger.todos.lock().await;
    for (id, acked) in todos.iter() {
        let (version, order) = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged todo {id} lost"));
        let newest = acked.versions.keys().max().copied().unwrap_or(1);
        match acked.versions.get(version) {
            Some(o) => assert_eq!(order, o, "{id} v{version}"),
            None => {
                assert!(
                    *version > newest,
                    "{id}: v{version} older than acknowledged v{newest}"
                );
                assert!(
                    order.is_some_and(|o| acked.maybe.contains(&o)),
                    "{id}: order {order:?} was never sent"
                );
            }
        }
    }
    let duplicated = client
        .query(
            "SELECT title FROM todos WHERE title LIKE 'chaos-%' GROUP BY title HAVING count(*) > 1",
            &[],
        )
        .await
        .expect("duplicates");
    assert!(
        duplicated.is_empty(),
        "{} keys made two todos",
        duplicated.len()
    );
}
