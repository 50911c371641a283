//! `js-commands`: N durable create commands published to JetStream as fast as the broker
//! acknowledges them (publishes pipelined, `--window` acks outstanding), each with a
//! unique `Nats-Msg-Id` and `Todo-Owner: <owner>`; then PostgreSQL is polled until the
//! owner has N more todos. The figure is commands applied per second, from the first
//! publish to the poll that saw the last one (the poll interval adapts to the remaining
//! work so it adds little error and little load).
//!
//! Line: `commands published pub_s pub_rate applied applied_s applied_rate missing
//! pub_errors duplicates polls load_cpu_us load_cpu_us_per_cmd`.
//!
//! Also `nats-check` (is JetStream there?) and `nats-cleanup` (delete a prefix's streams).

use std::time::{Duration, Instant};

use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::{Line, cpu_us, stream_stem};

#[derive(clap::Args)]
pub struct Args {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// The service's NATS_PREFIX (commands go to `<prefix>.cmd.create`).
    #[arg(long, default_value = "todo")]
    prefix: String,
    /// Commands to publish.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// The service's database (to count what was applied).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// `Todo-Owner` of the commands.
    #[arg(long, default_value = "bench-js")]
    owner: String,
    /// Publish acks outstanding at most.
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// Give up waiting for the commands to be applied after this many seconds (default:
    /// 60 + one per 1000 commands).
    #[arg(long)]
    timeout_s: Option<u64>,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
}

#[derive(clap::Args)]
pub struct CleanupArgs {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// The prefix whose streams are deleted.
    #[arg(long)]
    prefix: String,
}

async fn connect(url: &str) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .name("todo-load")
        .connection_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))
}

async fn count(db: &tokio_postgres::Client, owner: &str) -> Result<u64, String> {
    let row = db
        .query_one("SELECT count(*) FROM todos WHERE owner = $1", &[&owner])
        .await
        .map_err(|e| format!("counting todos: {e}"))?;
    Ok(row.get::<_, i64>(0) as u64)
}

pub async fn run(a: Args) -> Result<Line, String> {
    if a.count == 0 || a.window == 0 {
        return Err("--count and --window must be positive".into());
    }
    let client = connect(&a.url).await?;
    let js = ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_ack_inflight(a.window + 16)
        .build(client.clone());
    let stream = format!("{}_COMMANDS", stream_stem(&a.prefix));
    js.get_stream(&stream).await.map_err(|e| {
        format!(
            "JetStream stream {stream} not found ({e}): is the service running with NATS_PREFIX={}?",
            a.prefix
        )
    })?;

    let (db, connection) = tokio_postgres::connect(&a.database_url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("todo-load: PostgreSQL connection: {e}");
        }
    });
    let base = count(&db, &a.owner).await?;
    let target = base + a.count;

    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("{}.cmd.create", a.prefix);
    let mut pending = FuturesUnordered::new();
    let (mut pub_errors, mut duplicates) = (0u64, 0u64);
    fn tally<E: std::fmt::Display>(
        r: Result<PublishAck, E>,
        pub_errors: &mut u64,
        duplicates: &mut u64,
    ) {
        match r {
            Ok(ack) if ack.duplicate => *duplicates += 1,
            Ok(_) => {}
            Err(e) => {
                if *pub_errors < 5 {
                    eprintln!("todo-load: publish ack failed: {e}");
                }
                *pub_errors += 1;
            }
        }
    }

    let started = Instant::now();
    let cpu0 = cpu_us();
    for i in 0..a.count {
        while pending.len() >= a.window {
            if let Some(r) = pending.next().await {
                tally(r, &mut pub_errors, &mut duplicates);
            }
        }
        let body = Bytes::from(format!("{{\"title\":\"js command {i}\"}}"));
        let publish = Publish::build()
            .payload(body)
            .message_id(format!("bench-{run_id}-{i}"))
            .header("Todo-Owner", a.owner.as_str());
        match js.send_publish(subject.clone(), publish).await {
            Ok(ack) => pending.push(ack.into_future()),
            Err(e) => {
                if pub_errors < 5 {
                    eprintln!("todo-load: publish failed: {e}");
                }
                pub_errors += 1;
            }
        }
    }
    while let Some(r) = pending.next().await {
        tally(r, &mut pub_errors, &mut duplicates);
    }
    let published_at = started.elapsed();
    let cpu = cpu_us().saturating_sub(cpu0);
    let published = a.count - pub_errors;

    let timeout = Duration::from_secs(a.timeout_s.unwrap_or(60 + a.count / 1000));
    let mut polls = 0u64;
    let (applied, applied_at) = loop {
        let n = count(&db, &a.owner).await?;
        polls += 1;
        let elapsed = started.elapsed();
        let done = n.saturating_sub(base);
        if n >= target || elapsed > timeout {
            break (done, elapsed);
        }
        // sleep about a quarter of the expected remaining time, 5..250 ms
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
        let eta = if rate > 0.0 {
            (target - n) as f64 / rate
        } else {
            0.25
        };
        tokio::time::sleep(Duration::from_secs_f64((eta / 4.0).clamp(0.005, 0.25))).await;
    };
    let pub_s = published_at.as_secs_f64();
    let applied_s = applied_at.as_secs_f64();
    Ok(Line::new()
        .kv("commands", a.count)
        .kv("published", published)
        .kv("pub_s", format!("{pub_s:.3}"))
        .f("pub_rate", published as f64 / pub_s)
        .kv("applied", applied)
        .kv("applied_s", format!("{applied_s:.3}"))
        .f("applied_rate", applied as f64 / applied_s)
        .kv("missing", a.count.saturating_sub(applied))
        .kv("pub_errors", pub_errors)
        .kv("duplicates", duplicates)
        .kv("polls", polls)
        .kv("load_cpu_us", cpu)
        .f("load_cpu_us_per_cmd", cpu as f64 / a.count as f64))
}

pub async fn check(a: CheckArgs) -> Result<Line, String> {
    // the raw API (a typed account info does not parse every server version's answer)
    let client = connect(&a.url).await?;
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        client.request("$JS.API.INFO", Bytes::new()),
    )
    .await
    .map_err(|_| format!("JetStream did not answer at {}", a.url))?
    .map_err(|e| format!("JetStream is not available at {}: {e}", a.url))?;
    let info: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|e| format!("JetStream's account info is not JSON: {e}"))?;
    if let Some(err) = info.get("error") {
        return Err(format!("JetStream is not available at {}: {err}", a.url));
    }
    let n = |k: &str| {
        info.get(k)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(-1)
    };
    Ok(Line::new()
        .kv("jetstream", 1)
        .kv("streams", n("streams"))
        .kv("storage", n("storage"))
        .kv(
            "max_storage",
            info.pointer("/limits/max_storage")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(-1),
        ))
}

pub async fn cleanup(a: CleanupArgs) -> Result<Line, String> {
    let client = connect(&a.url).await?;
    let js = ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client);
    let stem = stream_stem(&a.prefix);
    let mut deleted = 0;
    for kind in ["COMMANDS", "EVENTS", "DLQ"] {
        let name = format!("{stem}_{kind}");
        match js.delete_stream(&name).await {
            Ok(_) => deleted += 1,
            Err(e) => {
                if !e.to_string().to_lowercase().contains("not found") {
                    eprintln!("todo-load: deleting stream {name}: {e}");
                }
            }
        }
    }
    Ok(Line::new().kv("deleted", deleted))
}
