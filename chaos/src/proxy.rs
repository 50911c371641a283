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
    serve(listener, control, target).await
}

/// Serves on listeners already bound (tests bind port 0).
///
/// # Errors
/// When accepting fails.
pub async fn serve(
    listener: TcpListener,
    control: TcpListener,
    target: &str,
) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server, the proxy in front of it, and the proxy's control address.
    async fn setup() -> (String, String) {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let target = echo.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let control = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (addr, ctl) = (
            listener.local_addr().expect("addr").to_string(),
            control.local_addr().expect("addr").to_string(),
        );
        tokio::spawn(async move { serve(listener, control, &target).await });
        (addr, ctl)
    }

    async fn echo(conn: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        conn.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, conn.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn proxy_passes_then_black_holes_then_passes_again() {
        // Arrange
        let (addr, ctl) = setup().await;
        let mut conn = TcpStream::connect(&addr).await.expect("connect");
        assert_eq!(
            echo(&mut conn, Duration::from_secs(2)).await.as_deref(),
            Some(&b"ping"[..])
        );

        // Act + Assert: nothing comes back through the black hole, the connection stays open
        control(&ctl, "blackhole").await.expect("blackhole");
        assert_eq!(echo(&mut conn, Duration::from_millis(300)).await, None);
        control(&ctl, "pass").await.expect("pass");
        let mut rest = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut rest))
            .await
            .expect("held bytes delivered")
            .expect("read");
        assert_eq!(&rest, b"ping");
    }

    #[tokio::test]
    async fn proxy_reset_aborts_open_connections_and_lets_new_ones_pass() {
        // Arrange
        let (addr, ctl) = setup().await;
        let mut conn = TcpStream::connect(&addr).await.expect("connect");
        assert!(echo(&mut conn, Duration::from_secs(2)).await.is_some());

        // Act
        control(&ctl, "reset").await.expect("reset");
        tokio::time::sleep(Duration::from_millis(100)).await;

        // Assert
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
            .await
            .expect("an answer, not a hang");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let mut fresh = TcpStream::connect(&addr).await.expect("connect");
        assert!(echo(&mut fresh, Duration::from_secs(2)).await.is_some());
    }

    #[tokio::test]
    async fn proxy_latency_delays_every_chunk() {
        // Arrange
        let (addr, ctl) = setup().await;
        let mut conn = TcpStream::connect(&addr).await.expect("connect");
        control(&ctl, "latency 200").await.expect("latency");

        // Act
        let started = std::time::Instant::now();
        let answer = echo(&mut conn, Duration::from_secs(3)).await;

        // Assert: 200 ms each way
        assert!(answer.is_some());
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }
}
