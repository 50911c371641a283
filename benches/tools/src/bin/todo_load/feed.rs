//! `feed`: `--streams` live change-feed streams (`GET /api/todos/events`), each as a
//! different owner (`sub=o<i>` in an HS256 JWT signed with the service's `JWT_SECRET`),
//! all open before the first change; then `--changes` creates at `--rate` per second,
//! each a `POST /api/todos` as a random owner with a unique title. Per change: the time
//! from the POST's 201 to the `created` event with that title on the owner's stream.
//!
//! Line: `streams opened open_failed open_s changes posted post_errors delivered missed
//! misrouted duplicates dropped early p50_ms p99_ms max_ms post_p99_ms load_cpu_us`
//! - `missed`: a 201 whose event did not arrive within `--wait-s` after the last change;
//! - `misrouted`: an event on another owner's stream (must be 0: owners are isolated);
//! - `dropped`: streams that ended or failed before the run was over;
//! - `early`: events that arrived before the client had read the 201 (latency 0).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore, watch};

use crate::{Line, Rng, cpu_us, histogram};

#[derive(clap::Args)]
pub struct Args {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// Streams to open, one owner each.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Creates to make once every stream is open.
    #[arg(long, default_value_t = 2000)]
    changes: usize,
    /// Creates per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// The service's JWT_SECRET (HS256); prefer the environment variable.
    #[arg(long, env = "FEED_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Streams being opened at once.
    #[arg(long, default_value_t = 64)]
    open_concurrency: usize,
    /// Longest wait for all streams to open.
    #[arg(long, default_value_t = 60)]
    open_timeout_s: u64,
    /// After the last change, wait at most this long for the missing events.
    #[arg(long, default_value_t = 10)]
    wait_s: u64,
}

/// One change: when its 201 was read and when its event arrived.
struct Change {
    owner: usize,
    posted: Option<Instant>,
    event: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    changes: Mutex<HashMap<String, Change>>,
    opened: AtomicUsize,
    open_failed: AtomicUsize,
    dropped: AtomicUsize,
    misrouted: AtomicU64,
    duplicates: AtomicU64,
    opened_notify: Notify,
}

impl Shared {
    fn on_created(&self, stream_owner: usize, title: &str, at: Instant) {
        let mut changes = self.changes.lock().expect("lock");
        let Some(c) = changes.get_mut(title) else {
            return; // not one of ours
        };
        if c.owner != stream_owner {
            self.misrouted.fetch_add(1, Ordering::Relaxed);
        } else if c.event.is_some() {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            c.event = Some(at);
        }
    }
}

/// An HS256 JWT for `sub`, valid for an hour.
fn jwt(secret: &[u8], sub: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims =
        B64.encode(serde_json::json!({ "sub": sub, "iat": now, "exp": now + 3600 }).to_string());
    let signing_input = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Reads one stream until `stop` says the run is over.
async fn stream(
    i: usize,
    client: reqwest::Client,
    url: String,
    token: String,
    shared: Arc<Shared>,
    opening: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let permit = opening.acquire_owned().await;
    let response = client
        .get(&url)
        .bearer_auth(token)
        .header("Accept", "text/event-stream")
        .send()
        .await;
    drop(permit);
    let response = match response {
        Ok(r) if r.status() == reqwest::StatusCode::OK => r,
        Ok(r) => {
            if shared.open_failed.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("todo-load: feed stream o{i}: status {}", r.status());
            }
            shared.opened_notify.notify_one();
            return;
        }
        Err(e) => {
            if shared.open_failed.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("todo-load: feed stream o{i}: {e}");
            }
            shared.opened_notify.notify_one();
            return;
        }
    };
    shared.opened.fetch_add(1, Ordering::Relaxed);
    shared.opened_notify.notify_one();

    let mut body = response.bytes_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut event = String::new();
    let mut data = String::new();
    loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            _ = stop.changed() => return,
        };
        let chunk = match chunk {
            Some(Ok(c)) => c,
            Some(Err(_)) | None => {
                if !*stop.borrow() {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        let at = Instant::now();
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let mut line = &buf[start..start + nl];
            start += nl + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                // end of an event block
                if event == "created"
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(&data)
                    && let Some(title) = v.get("title").and_then(|t| t.as_str())
                {
                    shared.on_created(i, title, at);
                }
                event.clear();
                data.clear();
                continue;
            }
            if line[0] == b':' {
                continue; // comment (heartbeat)
            }
            let text = String::from_utf8_lossy(line);
            let (field, value) = match text.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (text.as_ref(), ""),
            };
            match field {
                "event" => {
                    event.clear();
                    event.push_str(value);
                }
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                _ => {}
            }
        }
        buf.drain(..start);
    }
}

pub async fn run(a: Args) -> Result<Line, String> {
    if a.streams == 0 || a.rate <= 0.0 {
        return Err("--streams and --rate must be positive".into());
    }
    let secret = a.jwt_secret.as_bytes().to_vec();
    let base = a.http.trim_end_matches('/').to_owned();
    let shared = Arc::new(Shared::default());
    let streams_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())?;
    let posts_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let tokens: Vec<String> = (0..a.streams)
        .map(|i| jwt(&secret, &format!("o{i}")))
        .collect();

    // open every stream
    let (stop_tx, stop_rx) = watch::channel(false);
    let opening = Arc::new(Semaphore::new(a.open_concurrency.max(1)));
    let open_started = Instant::now();
    let mut readers = Vec::with_capacity(a.streams);
    for (i, token) in tokens.iter().enumerate() {
        readers.push(tokio::spawn(stream(
            i,
            streams_client.clone(),
            format!("{base}/api/todos/events"),
            token.clone(),
            Arc::clone(&shared),
            Arc::clone(&opening),
            stop_rx.clone(),
        )));
    }
    let open_deadline = open_started + Duration::from_secs(a.open_timeout_s);
    loop {
        let done =
            shared.opened.load(Ordering::Relaxed) + shared.open_failed.load(Ordering::Relaxed);
        if done >= a.streams {
            break;
        }
        if Instant::now() > open_deadline {
            let _ = stop_tx.send(true);
            return Err(format!(
                "only {done} of {} streams answered within {} s",
                a.streams, a.open_timeout_s
            ));
        }
        let _ =
            tokio::time::timeout(Duration::from_millis(100), shared.opened_notify.notified()).await;
    }
    let open_s = open_started.elapsed().as_secs_f64();
    let opened = shared.opened.load(Ordering::Relaxed);
    let open_failed = shared.open_failed.load(Ordering::Relaxed);
    eprintln!("todo-load: {opened} feed streams open in {open_s:.1} s ({open_failed} failed)");
    if opened == 0 {
        let _ = stop_tx.send(true);
        return Err("no feed stream could be opened".into());
    }

    // the changes, at a fixed rate, each as a random owner
    let cpu0 = cpu_us();
    let run_id = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let post_errors = Arc::new(AtomicU64::new(0));
    let post_hist = Arc::new(Mutex::new(histogram()));
    let mut rng = Rng::new(7);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate));
    let mut posts = Vec::with_capacity(a.changes);
    for j in 0..a.changes {
        ticker.tick().await;
        let owner = rng.below(a.streams);
        let title = format!("feed {run_id} o{owner} c{j}");
        shared.changes.lock().expect("lock").insert(
            title.clone(),
            Change {
                owner,
                posted: None,
                event: None,
            },
        );
        let client = posts_client.clone();
        let url = format!("{base}/api/todos");
        let token = tokens[owner].clone();
        let shared = Arc::clone(&shared);
        let post_errors = Arc::clone(&post_errors);
        let post_hist = Arc::clone(&post_hist);
        posts.push(tokio::spawn(async move {
            let body = serde_json::json!({ "title": title }).to_string();
            let sent = Instant::now();
            let r = client
                .post(url)
                .bearer_auth(token)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await;
            let at = Instant::now();
            match r {
                Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                    if let Some(c) = shared.changes.lock().expect("lock").get_mut(&title) {
                        c.posted = Some(at);
                    }
                    let _ = post_hist
                        .lock()
                        .expect("lock")
                        .record(at.duration_since(sent).as_micros().max(1) as u64);
                    let _ = r.bytes().await;
                }
                Ok(r) => {
                    if post_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("todo-load: feed POST: status {}", r.status());
                    }
                }
                Err(e) => {
                    if post_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("todo-load: feed POST: {e}");
                    }
                }
            }
        }));
    }
    for p in posts {
        let _ = p.await;
    }
    let changes_s = open_started.elapsed().as_secs_f64() - open_s;

    // wait for the stragglers
    let wait_until = Instant::now() + Duration::from_secs(a.wait_s);
    loop {
        let waiting = shared
            .changes
            .lock()
            .expect("lock")
            .values()
            .filter(|c| c.posted.is_some() && c.event.is_none())
            .count();
        if waiting == 0 || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = cpu_us().saturating_sub(cpu0);
    let _ = stop_tx.send(true);
    for r in readers {
        let _ = r.await;
    }

    let mut hist = histogram();
    let (mut posted, mut delivered, mut missed, mut early) = (0u64, 0u64, 0u64, 0u64);
    for c in shared.changes.lock().expect("lock").values() {
        let Some(p) = c.posted else { continue };
        posted += 1;
        match c.event {
            None => missed += 1,
            Some(e) => {
                delivered += 1;
                let us = if e >= p {
                    e.duration_since(p).as_micros() as u64
                } else {
                    early += 1;
                    0
                };
                let _ = hist.record(us.max(1));
            }
        }
    }
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    let post_hist = post_hist.lock().expect("lock");
    Ok(Line::new()
        .kv("streams", a.streams)
        .kv("opened", opened)
        .kv("open_failed", open_failed)
        .kv("open_s", format!("{open_s:.2}"))
        .kv("changes", a.changes)
        .kv("changes_s", format!("{changes_s:.2}"))
        .kv("posted", posted)
        .kv("post_errors", post_errors.load(Ordering::Relaxed))
        .kv("delivered", delivered)
        .kv("missed", missed)
        .kv("misrouted", shared.misrouted.load(Ordering::Relaxed))
        .kv("duplicates", shared.duplicates.load(Ordering::Relaxed))
        .kv("dropped", shared.dropped.load(Ordering::Relaxed))
        .kv("early", early)
        .kv("p50_ms", ms(hist.value_at_quantile(0.50)))
        .kv("p99_ms", ms(hist.value_at_quantile(0.99)))
        .kv("max_ms", ms(hist.max()))
        .kv("post_p99_ms", ms(post_hist.value_at_quantile(0.99)))
        .kv("load_cpu_us", cpu))
}
