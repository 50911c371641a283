//! `nats-kill`: nats-server is SIGKILLed and restarted (its JetStream store is on disk,
//! so the streams survive) while
//!
//! - JetStream commands flow: `todo.cmd.create` with `Nats-Msg-Id` = key = title, 50/s,
//!   each retried with its id until JetStream acknowledges it (acknowledged = applied
//!   exactly once later);
//! - request/reply flows: `todo.create` then `todo.get` of what it made, 20/s, 5 s
//!   timeout;
//! - HTTP load runs through the balancer (100 req/s, with its ledger);
//! - a coherence probe patches one of its own todos through one replica's port every
//!   200 ms and, 1 s after the acknowledgement, reads it through the two others: a read
//!   older than the acknowledged version is a stale read (`stale` in the errors).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::check;
use crate::cluster::{Cluster, NATS_URL, PG_URL, REPLICAS};
use crate::load::{Load, lock, percentile};
use crate::scenarios::{Ctx, Outcome, count};

const NAME: &str = "nats-kill";

/// Counters of the NATS clients.
#[derive(Default)]
struct Figures {
    js_sent: AtomicU64,
    js_failed: AtomicU64,
    rr_sent: AtomicU64,
    rr_failed: AtomicU64,
    rr_acked: AtomicU64,
    stale: AtomicU64,
    coherence_reads: AtomicU64,
    js_acked: std::sync::Mutex<Vec<String>>,
    rr_latencies_us: std::sync::Mutex<Vec<u64>>,
    stop: AtomicBool,
}

/// Runs the scenario.
///
/// # Errors
/// When the cluster or PostgreSQL cannot be reached at all.
pub async fn nats_kill(ctx: &Ctx, cluster: Arc<Cluster>) -> anyhow::Result<Outcome> {
    let nats = async_nats::ConnectOptions::new()
        .name("todo-chaos")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(NATS_URL)
        .await
        .context("connect nats")?;
    let mut js = async_nats::jetstream::new(nats.clone());
    js.set_timeout(Duration::from_secs(2));
    let figures = Arc::new(Figures::default());
    let js_prefix = format!("c{}-js", ctx.run_id);
    let rr_prefix = format!("c{}-rr", ctx.run_id);

    let load = Load::start(LoadSpecFor::http(ctx));
    let publisher = tokio::spawn(publish_commands(
        js,
        Arc::clone(&figures),
        js_prefix.clone(),
    ));
    let requester = tokio::spawn(requests(nats.clone(), Arc::clone(&figures), rr_prefix));
    let coherence = tokio::spawn(coherence(
        ctx.client.clone(),
        Arc::clone(&figures),
        format!("c{}-coh", ctx.run_id),
    ));
    tokio::time::sleep(ctx.sizes.settle).await;

    cluster.script(&["nats-kill"])?;
    tokio::time::sleep(ctx.sizes.down_for).await;
    cluster.script(&["nats-start"])?;
    let back = Instant::now();
    // Request/reply back: the first create answered after the server's return.
    let mut recovered = None;
    while back.elapsed() < Duration::from_secs(15) {
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            nats.request(
                "todo.create",
                Bytes::from(json!({"title": "probe"}).to_string()),
            ),
        )
        .await;
        if let Ok(Ok(m)) = r
            && m.headers
                .as_ref()
                .is_none_or(|h| h.get("Nats-Service-Error-Code").is_none())
        {
            recovered = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(ctx.sizes.settle.max(Duration::from_secs(5))).await;
    figures.stop.store(true, Ordering::Relaxed);
    let shared = load.stop().await;
    let _ = publisher.await;
    let _ = requester.await;
    let _ = coherence.await;

    // Wait for the consumers to apply what JetStream acknowledged.
    let acked_keys = lock(&figures.js_acked).clone();
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(30) {
        if check::count_stored(PG_URL, &js_prefix).await? >= acked_keys.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let js_verdict = check::applied_once(PG_URL, &js_prefix, &acked_keys).await?;
    for d in &js_verdict.details {
        eprintln!("  {NAME}: {d}");
    }
    let ledger = std::mem::take(&mut *lock(&shared.ledger));
    let http_verdict = check::ledger(PG_URL, &ctx.prefix(NAME), &ledger).await?;
    let http_acked: u64 = ledger
        .todos
        .values()
        .map(|a| a.versions.len() as u64 + u64::from(a.deleted))
        .sum();
    for d in &http_verdict.details {
        eprintln!("  {NAME}: {d}");
    }
    let stats = lock(&shared.stats);
    let f = &figures;
    let mut extra = BTreeMap::new();
    extra.insert("js-unacked".to_owned(), f.js_failed.load(Ordering::Relaxed));
    extra.insert("rr-failed".to_owned(), f.rr_failed.load(Ordering::Relaxed));
    extra.insert("stale".to_owned(), f.stale.load(Ordering::Relaxed));
    let rr_lat = lock(&f.rr_latencies_us).clone();
    let mut all_lat = stats.latencies_us.clone();
    all_lat.extend_from_slice(&rr_lat);
    let mut out = Outcome {
        name: NAME.into(),
        requests: stats.requests
            + f.js_sent.load(Ordering::Relaxed)
            + f.rr_sent.load(Ordering::Relaxed),
        acked: http_acked + acked_keys.len() as u64 + f.rr_acked.load(Ordering::Relaxed),
        lost: js_verdict.lost + http_verdict.lost,
        duplicated: js_verdict.duplicated + http_verdict.duplicated,
        errors: count(&stats, &extra),
        p99_ms: percentile(&all_lat, 0.99) / 1000,
        recovery_ms: recovered.map_or(u64::MAX, |d| d.as_millis() as u64),
        ..Outcome::default()
    };
    eprintln!(
        "  {NAME}: JetStream {} acknowledged of {} sent; request/reply p99 {} ms, max {} ms; \
         coherence reads {} ({} stale); HTTP failures {}",
        acked_keys.len(),
        f.js_sent.load(Ordering::Relaxed),
        percentile(&rr_lat, 0.99) / 1000,
        rr_lat.iter().max().copied().unwrap_or(0) / 1000,
        f.coherence_reads.load(Ordering::Relaxed),
        f.stale.load(Ordering::Relaxed),
        stats.failures.len()
    );
    let lost = out.lost;
    let dup = out.duplicated;
    out.missed.extend(
        [
            (lost == 0, format!("lost {lost}")),
            (dup == 0, format!("duplicated {dup}")),
            (
                recovered.is_some_and(|d| d <= Duration::from_secs(5)),
                format!("request/reply back after {recovered:?}"),
            ),
            (
                f.stale.load(Ordering::Relaxed) == 0,
                "stale reads through other replicas".into(),
            ),
            (
                f.coherence_reads.load(Ordering::Relaxed) > 0,
                "no coherence read made".into(),
            ),
            (
                !acked_keys.is_empty(),
                "no JetStream command acknowledged".into(),
            ),
            (
                stats.failures.is_empty(),
                format!(
                    "{} HTTP requests failed while NATS was down",
                    stats.failures.len()
                ),
            ),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, why)| why),
    );
    Ok(out)
}

/// The HTTP load's spec for this scenario.
struct LoadSpecFor;

impl LoadSpecFor {
    fn http(ctx: &Ctx) -> crate::load::LoadSpec {
        crate::load::LoadSpec {
            base: crate::cluster::LB.into(),
            rate: 100,
            prefix: ctx.prefix(NAME),
            client: ctx.client.clone(),
        }
    }
}

/// JetStream commands at 50/s, each retried with its `Nats-Msg-Id` until acknowledged.
async fn publish_commands(js: async_nats::jetstream::Context, f: Arc<Figures>, prefix: String) {
    every(Duration::from_millis(20), &f, |n| {
        let (js, f, key) = (js.clone(), Arc::clone(&f), format!("{prefix}-{n}"));
        async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                f.js_sent.fetch_add(1, Ordering::Relaxed);
                let message = PublishMessage::build()
                    .payload(Bytes::from(json!({ "title": key }).to_string()))
                    .message_id(&key);
                let acked = match js.send_publish("todo.cmd.create", message).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if acked {
                    lock(&f.js_acked).push(key);
                    return;
                }
                f.js_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    })
    .await;
}

/// Starts `task(n)` every `period` (open loop: never waiting for an answer) until the
/// figures say stop, then waits for the tasks it started.
async fn every<F>(period: Duration, f: &Figures, mut task: impl FnMut(u64) -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while !f.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        tasks.push(tokio::spawn(task(n)));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Request/reply at 20/s: a create, then a get of what it made.
async fn requests(nats: async_nats::Client, f: Arc<Figures>, prefix: String) {
    every(Duration::from_millis(50), &f, |n| {
        let (nats, f, key) = (nats.clone(), Arc::clone(&f), format!("{prefix}-{n}"));
        async move {
            let Some(todo) = request(&nats, &f, "todo.create", json!({ "title": key })).await
            else {
                return;
            };
            f.rr_acked.fetch_add(1, Ordering::Relaxed);
            if let Some(id) = todo["id"].as_str() {
                request(&nats, &f, "todo.get", json!({ "id": id })).await;
            }
        }
    })
    .await;
}

async fn request(
    nats: &async_nats::Client,
    f: &Figures,
    subject: &'static str,
    body: Value,
) -> Option<Value> {
    f.rr_sent.fetch_add(1, Ordering::Relaxed);
    let sent = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        nats.request(subject, Bytes::from(body.to_string())),
    )
    .await;
    match r {
        Ok(Ok(m))
            if m.headers
                .as_ref()
                .is_none_or(|h| h.get("Nats-Service-Error-Code").is_none()) =>
        {
            lock(&f.rr_latencies_us).push(sent.elapsed().as_micros() as u64);
            serde_json::from_slice(&m.payload).ok()
        }
        _ => {
            f.rr_failed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Patches its own todos through one replica, reads them through the others 1 s later.
async fn coherence(client: reqwest::Client, f: Arc<Figures>, prefix: String) {
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = client
            .post(format!("{}/api/todos", Cluster::api(1)))
            .json(&json!({ "title": format!("{prefix}-{i}") }))
            .send()
            .await;
        if let Ok(r) = r
            && let Ok(v) = r.json::<Value>().await
            && let Some(id) = v["id"].as_str()
        {
            ids.push(id.to_owned());
        }
    }
    if ids.is_empty() {
        return;
    }
    let mut checks = Vec::new();
    let mut n = 0usize;
    while !f.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        n += 1;
        let writer = n % REPLICAS + 1;
        let id = ids[n % ids.len()].clone();
        let Ok(r) = client
            .patch(format!("{}/api/todos/{id}", Cluster::api(writer)))
            .json(&json!({ "order": n }))
            .send()
            .await
        else {
            continue;
        };
        let Some(version) = version_of(r).await else {
            continue;
        };
        let (client, f) = (client.clone(), Arc::clone(&f));
        checks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for reader in (1..=REPLICAS).filter(|r| *r != writer) {
                let r = client
                    .get(format!("{}/api/todos/{id}", Cluster::api(reader)))
                    .send()
                    .await;
                let Ok(r) = r else { continue };
                let Some(seen) = version_of(r).await else {
                    continue;
                };
                f.coherence_reads.fetch_add(1, Ordering::Relaxed);
                if seen < version {
                    f.stale.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "  {NAME}: stale read: {id} v{seen} through replica {reader}, \
                         v{version} acknowledged by replica {writer} 1 s earlier"
                    );
                }
            }
        }));
    }
    for c in checks {
        let _ = c.await;
    }
}

/// The `version` of the todo in a response's body.
async fn version_of(r: reqwest::Response) -> Option<i64> {
    r.json::<Value>().await.ok()?["version"].as_i64()
}
