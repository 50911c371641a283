//! The fault proxy between the replicas and PostgreSQL (`todo-chaos proxy`). It passes
//! bytes through until told otherwise on its control port, one command a line, answered
//! `ok`:
//!
//! - `pass`: forward normally;
//! - `latency <ms>`: hold every chunk this long before forwarding it (both ways);
//! - `blackhole`: stop forwarding without closing anything, new connections included
//!   (accepted, never answered), as a partition or a failover that left connections
//!   half-open;
//! - `reset`: abort every open connection with a TCP reset (new ones pass).
//!
//! It runs as a process of its own (started by `scripts/cluster`), so the replicas
//! always reach PostgreSQL through it and a scenario only changes its mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Latency(u64),
    Blackhole,
}

/// The shared state: the mode, and a counter bumped by each `reset`.
struct Shared {
    mode: watch::Sender<Mode>,
    resets: watch::Sender<u64>,
    connections: AtomicU64,
}

/// Runs the proxy until the process is stopped.
///
/// # Errors
/// When a port cannot be bound.
pub async fn run(listen: &str, target: &str, control: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let control = TcpListener::bind(control)
        .await
        .with_context(|| format!("bind {control}"))?;
    let shared = Arc::new(Shared {
        mode: watch::channel(Mode::Pass).0,
        resets: watch::channel(0).0,
        connections: AtomicU64::new(0),
    });
    let ctl = Arc::clone(&shared);
    tokio::spawn(async move {
        while let Ok((conn, _)) = control.accept().await {
            tokio::spawn(serve_control(conn, Arc::clone(&ctl)));
        }
    });
    loop {
        let (client, _) = listener.accept().await.context("accept")?;
        let (shared, target) = (Arc::clone(&shared), target.to_owned());
        tokio::spawn(async move {
            shared.connections.fetch_add(1, Ordering::Relaxed);
            forward(client, &target, &shared).await;
            shared.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_control(conn: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        let answer = match (words.next(), words.next().map(str::parse::<u64>)) {
            (Some("pass"), None) => {
                shared.mode.send_replace(Mode::Pass);
                "ok".to_owned()
            }
            (Some("latency"), Some(Ok(ms))) => {
                shared.mode.send_replace(Mode::Latency(ms));
                "ok".to_owned()
            }
            (Some("blackhole"), None) => {
                shared.mode.send_replace(Mode::Blackhole);
                "ok".to_owned()
            }
            (Some("reset"), None) => {
                shared.resets.send_modify(|n| *n += 1);
                "ok".to_owned()
            }
            (Some("status"), None) => format!(
                "ok mode={:?} connections={}",
                *shared.mode.borrow(),
                shared.connections.load(Ordering::Relaxed)
            ),
            _ => "error: pass | latency <ms> | blackhole | reset | status".to_owned(),
        };
        if write
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Waits while the proxy is a black hole.
async fn wait_open(mode: &mut watch::Receiver<Mode>) -> Mode {
    loop {
        let m = *mode.borrow_and_update();
        if m != Mode::Blackhole {
            return m;
        }
        if mode.changed().await.is_err() {
            return Mode::Pass;
        }
    }
}

async fn forward(client: TcpStream, target: &str, shared: &Shared) {
    let mut resets = shared.resets.subscribe();
    resets.borrow_and_update();
    // A black hole swallows new connections too: accepted, never answered.
    wait_open(&mut shared.mode.subscribe()).await;
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, shared.mode.subscribe());
    let down = pump(sr, cw, shared.mode.subscribe());
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = resets.changed() => {
            // Dropping both halves with SO_LINGER 0 sends RST to both sides.
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    // A reset must be a reset (RST), not an orderly close: linger 0. Nothing blocks on
    // drop with a zero linger time.
    #[allow(deprecated)]
    let _ = to.as_ref().set_linger(Some(Duration::ZERO));
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        wait_open(&mut mode).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read just before a black hole began are held, not delivered.
        if let Mode::Latency(ms) = wait_open(&mut mode).await {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        wait_open(&mut mode).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Sends one command to a proxy's control port.
///
/// # Errors
/// When the proxy cannot be reached or refuses the command.
pub async fn control(addr: &str, command: &str) -> anyhow::Result<String> {
    let conn = TcpStream::connect(addr)
        .await
        .with_context(|| format!("proxy control {addr}"))?;
    let (read, mut write) = conn.into_split();
    write.write_all(format!("{command}\n").as_bytes()).await?;
    let answer = BufReader::new(read)
        .lines()
        .next_line()
        .await?
        .unwrap_or_default();
    anyhow::ensure!(answer.starts_with("ok"), "proxy: {answer}");
    Ok(answer)
}
