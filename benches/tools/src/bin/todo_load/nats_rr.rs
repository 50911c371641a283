//! `nats-rr`: closed-loop request/reply against the service's NATS micro service, the
//! NATS counterpart of wrk's creates and gets: `--concurrency` requests in flight, each
//! sent as soon as the previous one was answered, for `--seconds`.
//!
//! Line: `requests duration_us rps p50_us p99_us max_us ok err_status err_timeout
//! err_noresp err_other load_cpu_us load_cpu_us_per_req` (`err_status`: replies with a
//! `Nats-Service-Error-Code` header; they count in `requests` and the latencies, as wrk
//! counts non-2xx responses).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;

use crate::{Line, Rng, cpu_us, histogram};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Create,
    Get,
}

#[derive(clap::Args)]
pub struct Args {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// The service's NATS_PREFIX.
    #[arg(long, default_value = "todo")]
    prefix: String,
    /// `create` (`<prefix>.create`, `{"title"}`) or `get` (`<prefix>.get`, `{"id"}`).
    #[arg(long, value_enum)]
    op: Op,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Ids for `get`, one per line (picked at random per request).
    #[arg(long)]
    ids_file: Option<PathBuf>,
    /// With `create`: write the ids of the first `--ids-out-max` todos created here (the
    /// ids of a following `get` run, owned by the same `--owner`).
    #[arg(long)]
    ids_out: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    ids_out_max: usize,
    /// `Todo-Owner` header.
    #[arg(long, default_value = "bench")]
    owner: String,
    /// NATS connections the requests are spread over (wrk uses one per connection; the
    /// service has one).
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// A request without a reply for this long counts as `err_timeout`.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    err_status: u64,
    err_timeout: u64,
    err_noresp: u64,
    err_other: u64,
    ids: Vec<String>,
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

pub async fn run(a: Args) -> Result<Line, String> {
    if a.concurrency == 0 || a.clients == 0 || a.seconds <= 0.0 {
        return Err("--concurrency, --clients and --seconds must be positive".into());
    }
    let ids: Arc<Vec<Bytes>> = Arc::new(match (a.op, &a.ids_file) {
        (Op::Get, None) => return Err("--op get needs --ids-file".into()),
        (Op::Get, Some(f)) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let v: Vec<Bytes> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|id| Bytes::from(serde_json::json!({ "id": id }).to_string()))
                .collect();
            if v.is_empty() {
                return Err(format!("{} has no ids", f.display()));
            }
            v
        }
        (Op::Create, _) => Vec::new(),
    });
    let timeout = Duration::from_millis(a.timeout_ms);
    let mut clients = Vec::with_capacity(a.clients);
    for _ in 0..a.clients {
        let c = async_nats::ConnectOptions::new()
            .name("todo-load")
            .connection_timeout(Duration::from_secs(3))
            .request_timeout(Some(timeout))
            .connect(a.url.as_str())
            .await
            .map_err(|e| format!("connecting to {}: {e}", a.url))?;
        clients.push(c);
    }
    let verb = if a.op == Op::Create { "create" } else { "get" };
    let subject = format!("{}.{verb}", a.prefix);
    // one request must be answered before the clock starts: the service is there
    {
        let mut h = HeaderMap::new();
        h.insert("Todo-Owner", a.owner.as_str());
        let probe = if a.op == Op::Create {
            Bytes::from_static(b"{\"title\":\"nats-rr probe\"}")
        } else {
            ids[0].clone()
        };
        clients[0]
            .request_with_headers(subject.clone(), h, probe)
            .await
            .map_err(|e| {
                format!(
                    "no answer on {subject} (is the service up with NATS_PREFIX={}?): {e}",
                    a.prefix
                )
            })?;
    }

    let want_ids = if a.op == Op::Create && a.ids_out.is_some() {
        a.ids_out_max
    } else {
        0
    };
    let per_task_ids = want_ids.div_ceil(a.concurrency);
    let started = Instant::now();
    let cpu0 = cpu_us();
    let deadline = started + Duration::from_secs_f64(a.seconds);
    let mut tasks = Vec::with_capacity(a.concurrency);
    for t in 0..a.concurrency {
        let client = clients[t % clients.len()].clone();
        let subject = subject.clone();
        let ids = Arc::clone(&ids);
        let mut headers = HeaderMap::new();
        headers.insert("Todo-Owner", a.owner.as_str());
        let op = a.op;
        let create_body = Bytes::from(format!("{{\"title\":\"nats bench todo {t}\"}}"));
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut tally = Tally::default();
            let mut rng = Rng::new(t as u64 + 1);
            while Instant::now() < deadline {
                let payload = match op {
                    Op::Create => create_body.clone(),
                    Op::Get => ids[rng.below(ids.len())].clone(),
                };
                let request = async_nats::Request::new()
                    .payload(payload)
                    .headers(headers.clone())
                    .timeout(Some(timeout));
                let sent = Instant::now();
                match client.send_request(subject.clone(), request).await {
                    Ok(reply) => {
                        let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                        let failed = reply
                            .headers
                            .as_ref()
                            .and_then(|h| h.get("Nats-Service-Error-Code"))
                            .is_some();
                        if failed {
                            tally.err_status += 1;
                        } else {
                            tally.ok += 1;
                            if tally.ids.len() < per_task_ids
                                && let Ok(t) = serde_json::from_slice::<IdOnly>(&reply.payload)
                            {
                                tally.ids.push(t.id);
                            }
                        }
                    }
                    Err(e) => match e.kind() {
                        RequestErrorKind::TimedOut => tally.err_timeout += 1,
                        RequestErrorKind::NoResponders => {
                            tally.err_noresp += 1;
                            // no responder answers at once: don't spin
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        _ => tally.err_other += 1,
                    },
                }
            }
            (hist, tally)
        }));
    }
    let mut hist = histogram();
    let mut all = Tally::default();
    for t in tasks {
        let (h, tally) = t.await.map_err(|e| format!("a request task failed: {e}"))?;
        hist.add(h).map_err(|e| e.to_string())?;
        all.ok += tally.ok;
        all.err_status += tally.err_status;
        all.err_timeout += tally.err_timeout;
        all.err_noresp += tally.err_noresp;
        all.err_other += tally.err_other;
        all.ids.extend(tally.ids);
    }
    let duration = started.elapsed();
    let cpu = cpu_us().saturating_sub(cpu0);
    if let Some(out) = &a.ids_out {
        all.ids.truncate(a.ids_out_max);
        let mut text = all.ids.join("\n");
        text.push('\n');
        std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    let requests = all.ok + all.err_status;
    let secs = duration.as_secs_f64();
    Ok(Line::new()
        .kv("op", verb)
        .kv("requests", requests)
        .kv("duration_us", duration.as_micros())
        .f("rps", requests as f64 / secs)
        .kv("p50_us", hist.value_at_quantile(0.50))
        .kv("p99_us", hist.value_at_quantile(0.99))
        .kv("max_us", hist.max())
        .kv("ok", all.ok)
        .kv("err_status", all.err_status)
        .kv("err_timeout", all.err_timeout)
        .kv("err_noresp", all.err_noresp)
        .kv("err_other", all.err_other)
        .kv(
            "ids_written",
            if a.ids_out.is_some() {
                all.ids.len()
            } else {
                0
            },
        )
        .kv("load_cpu_us", cpu)
        .f(
            "load_cpu_us_per_req",
            if requests > 0 {
                cpu as f64 / requests as f64
            } else {
                0.0
            },
        ))
}
