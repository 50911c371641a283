//! The open-loop load generator and its ledger.
//!
//! Requests start on a fixed schedule (a tokio interval with `MissedTickBehavior::Burst`,
//! one task per tick), whatever the answers to earlier ones: a slow or failing service
//! does not slow the load down, as with real clients. The mix, by tick number modulo 10:
//! creates (0–3; every fourth create makes a todo that is later deleted), patches of the
//! `order` (4–5), reads (6–8) and deletes (9).
//!
//! Every attempt is counted (status or transport error, latency). Creates carry an
//! `Idempotency-Key` that is also their title, and are retried with the same key after a
//! 502/503/504, a 409 (key in progress) or a transport error, as a careful client does.
//! Patches and deletes are not retried: an answer other than success leaves their
//! outcome unknown, which the ledger records as such.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Attempts per create (the first and its retries).
const CREATE_ATTEMPTS: u32 = 8;
/// Longest wait between two attempts of a create, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_millis(1000);

/// What one attempt came to.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An HTTP status, and whether a `Retry-After` header came with it.
    Status(u16, bool),
    /// No answer: the connection failed or broke.
    Conn,
    /// No answer within the client's timeout.
    Timeout,
}

impl Answer {
    fn ok(&self) -> bool {
        matches!(self, Self::Status(s, _) if (200..300).contains(s))
    }
    fn key(&self) -> String {
        match self {
            Self::Status(s, _) => s.to_string(),
            Self::Conn => "conn".into(),
            Self::Timeout => "timeout".into(),
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When it was sent.
    pub sent: Instant,
    /// When the answer (or the error) came.
    pub answered: Instant,
    /// What came back.
    pub answer: Answer,
    /// The operation (`create`, `patch`, `get`, `delete`, or a scenario's own).
    pub op: &'static str,
}

/// Every attempt's figures.
#[derive(Debug, Default)]
pub struct Stats {
    /// Latencies of answered attempts, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Failed attempts.
    pub failures: Vec<Failure>,
    /// Attempts.
    pub requests: u64,
    /// Successful attempts.
    pub ok: u64,
    /// Latest successful answer.
    pub last_ok: Option<Instant>,
    /// Longest time an attempt waited for an answer, error or not.
    pub max_wait: Duration,
}

impl Stats {
    /// Records one attempt.
    pub fn record(&mut self, op: &'static str, sent: Instant, answer: Answer) {
        let took = sent.elapsed();
        self.requests += 1;
        self.max_wait = self.max_wait.max(took);
        if !matches!(answer, Answer::Timeout) {
            self.latencies_us
                .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        }
        if answer.ok() {
            self.ok += 1;
            self.last_ok = Some(Instant::now());
        } else {
            self.failures.push(Failure {
                sent,
                answered: Instant::now(),
                answer,
                op,
            });
        }
    }

    /// p99 latency in milliseconds.
    pub fn p99_ms(&self) -> u64 {
        percentile(&self.latencies_us, 0.99) / 1000
    }

    /// `status:count,…` of the failures (`none` without any).
    pub fn errors(&self) -> String {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for f in &self.failures {
            *counts.entry(f.answer.key()).or_default() += 1;
        }
        if counts.is_empty() {
            return "none".into();
        }
        counts
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Failures that are not a 503 with `Retry-After`.
    pub fn not_503(&self) -> usize {
        self.failures
            .iter()
            .filter(|f| !matches!(f.answer, Answer::Status(503, true)))
            .count()
    }
}

/// The `q` quantile of `values` (nearest rank), 0 when empty.
pub fn percentile(values: &[u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// What the clients were told about one todo.
#[derive(Debug, Default, Clone)]
pub struct Acked {
    /// The create's key (its title).
    pub key: String,
    /// Acknowledged versions and the `order` each set.
    pub versions: BTreeMap<i64, Option<i32>>,
    /// Orders sent by patches whose outcome is unknown.
    pub maybe: HashSet<i32>,
    /// The delete was acknowledged (204).
    pub deleted: bool,
    /// A delete was sent and its outcome is unknown.
    pub maybe_deleted: bool,
}

/// The ledger: every acknowledged write, by todo id and key.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Acknowledged todos by id.
    pub todos: HashMap<String, Acked>,
    /// Keys of every create sent, acknowledged or not.
    pub keys_sent: HashSet<String>,
    /// Todos reads and patches pick from.
    pool: Vec<String>,
    /// Todos waiting to be deleted.
    to_delete: Vec<String>,
}

/// The shared state of one load run.
#[derive(Default)]
pub struct Shared {
    /// Figures of every attempt.
    pub stats: Mutex<Stats>,
    /// The ledger.
    pub ledger: Mutex<Ledger>,
    /// Ticks so far.
    pub ticks: AtomicU64,
    stop: AtomicBool,
}

/// Locks a mutex, whatever a panicking holder left.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running load.
pub struct Load {
    /// Its state.
    pub shared: Arc<Shared>,
    ticker: JoinHandle<Vec<JoinHandle<()>>>,
}

/// Where and how hard to send requests.
#[derive(Clone)]
pub struct LoadSpec {
    /// Base URL (the load balancer).
    pub base: String,
    /// Requests started per second.
    pub rate: u32,
    /// Title/key prefix, unique per scenario run.
    pub prefix: String,
    /// The HTTP client.
    pub client: reqwest::Client,
}

impl Load {
    /// Starts the load.
    pub fn start(spec: LoadSpec) -> Self {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let ticker = tokio::spawn(async move {
            let mut tasks = Vec::new();
            let period = Duration::from_micros(1_000_000 / u64::from(spec.rate.max(1)));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !s.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let n = s.ticks.fetch_add(1, Ordering::Relaxed);
                let (spec, s) = (spec.clone(), Arc::clone(&s));
                tasks.push(tokio::spawn(async move { operation(&spec, &s, n).await }));
            }
            tasks
        });
        Self { shared, ticker }
    }

    /// Stops starting requests and waits for those started (and their retries).
    pub async fn stop(self) -> Arc<Shared> {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Ok(tasks) = self.ticker.await {
            for t in tasks {
                let _ = t.await;
            }
        }
        self.shared
    }
}

async fn operation(spec: &LoadSpec, s: &Shared, n: u64) {
    match n % 10 {
        0..=3 => create(spec, s, n, n % 10 == 3).await,
        4 | 5 => patch(spec, s, n).await,
        6..=8 => get(spec, s, n).await,
        _ => delete(spec, s).await,
    }
}

/// Sends a request and records the attempt; the JSON body of a success.
async fn attempt(
    s: &Shared,
    op: &'static str,
    request: reqwest::RequestBuilder,
) -> (Answer, Option<Value>, Option<Duration>) {
    let sent = Instant::now();
    let result = request.send().await;
    let (answer, body, retry_after) = match result {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            match r.bytes().await {
                Ok(b) => (
                    Answer::Status(status, retry_after.is_some()),
                    serde_json::from_slice(&b).ok(),
                    retry_after,
                ),
                Err(e) if e.is_timeout() => (Answer::Timeout, None, None),
                Err(_) => (Answer::Conn, None, None),
            }
        }
        Err(e) if e.is_timeout() => (Answer::Timeout, None, None),
        Err(_) => (Answer::Conn, None, None),
    };
    lock(&s.stats).record(op, sent, answer.clone());
    (answer, body, retry_after)
}

/// A create with a key of its own, retried with that key until acknowledged.
async fn create(spec: &LoadSpec, s: &Shared, n: u64, for_delete: bool) {
    let key = format!("{}-{n}", spec.prefix);
    lock(&s.ledger).keys_sent.insert(key.clone());
    for _ in 0..CREATE_ATTEMPTS {
        let request = spec
            .client
            .post(format!("{}/api/todos", spec.base))
            .header("idempotency-key", &key)
            .json(&json!({ "title": key }));
        let (answer, body, retry_after) = attempt(s, "create", request).await;
        match answer {
            Answer::Status(201 | 200, _) => {
                let Some(id) = body.as_ref().and_then(|b| b["id"].as_str()) else {
                    return;
                };
                let mut ledger = lock(&s.ledger);
                let acked = ledger.todos.entry(id.to_owned()).or_default();
                acked.key.clone_from(&key);
                acked.versions.insert(1, None);
                if for_delete {
                    ledger.to_delete.push(id.to_owned());
                } else {
                    ledger.pool.push(id.to_owned());
                }
                return;
            }
            Answer::Status(409 | 502 | 503 | 504, _) | Answer::Conn | Answer::Timeout => {
                let wait = retry_after
                    .unwrap_or(Duration::from_millis(200))
                    .min(MAX_RETRY_WAIT);
                tokio::time::sleep(wait).await;
            }
            Answer::Status(..) => return,
        }
    }
}

fn pick(s: &Shared, n: u64) -> Option<String> {
    let ledger = lock(&s.ledger);
    let pool = &ledger.pool;
    (!pool.is_empty()).then(|| pool[(n.wrapping_mul(7919) as usize) % pool.len()].clone())
}

/// A change of the `order` of an acknowledged todo (not retried).
async fn patch(spec: &LoadSpec, s: &Shared, n: u64) {
    let Some(id) = pick(s, n) else { return };
    let order = i32::try_from(n % 1_000_000_000).unwrap_or(0);
    let request = spec
        .client
        .patch(format!("{}/api/todos/{id}", spec.base))
        .json(&json!({ "order": order }));
    let (answer, body, _) = attempt(s, "patch", request).await;
    let mut ledger = lock(&s.ledger);
    let Some(acked) = ledger.todos.get_mut(&id) else {
        return;
    };
    match (answer, body.as_ref().and_then(|b| b["version"].as_i64())) {
        (Answer::Status(200, _), Some(version)) => {
            acked.versions.insert(version, Some(order));
        }
        _ => {
            acked.maybe.insert(order);
        }
    }
}

/// A read of an acknowledged todo.
async fn get(spec: &LoadSpec, s: &Shared, n: u64) {
    let Some(id) = pick(s, n) else { return };
    let request = spec.client.get(format!("{}/api/todos/{id}", spec.base));
    attempt(s, "get", request).await;
}

/// A delete of a todo created for it (never one that patches or reads pick).
async fn delete(spec: &LoadSpec, s: &Shared) {
    let Some(id) = lock(&s.ledger).to_delete.pop() else {
        return;
    };
    let request = spec.client.delete(format!("{}/api/todos/{id}", spec.base));
    let (answer, _, _) = attempt(s, "delete", request).await;
    let mut ledger = lock(&s.ledger);
    if let Some(acked) = ledger.todos.get_mut(&id) {
        if matches!(answer, Answer::Status(204, _)) {
            acked.deleted = true;
        } else {
            acked.maybe_deleted = true;
        }
    }
}

/// An HTTP client for the load: no connection reuse across a dead peer matters here,
/// HAProxy holds the connections to the replicas.
///
/// # Errors
/// When the client cannot be built.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(256)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.99), 0);
    }

    #[test]
    fn errors_count_statuses_and_transport_errors() {
        let mut stats = Stats::default();
        let now = Instant::now();
        stats.record("get", now, Answer::Status(200, false));
        stats.record("create", now, Answer::Status(503, true));
        stats.record("create", now, Answer::Status(503, false));
        stats.record("patch", now, Answer::Conn);
        stats.record("get", now, Answer::Timeout);
        assert_eq!(stats.errors(), "503:2,conn:1,timeout:1");
        assert_eq!(stats.requests, 5);
        assert_eq!(
            stats.not_503(),
            3,
            "a 503 without Retry-After is not a proper 503"
        );
        assert_eq!(stats.latencies_us.len(), 4, "a timeout has no latency");
        assert_eq!(Stats::default().errors(), "none");
    }
}
