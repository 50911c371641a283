//! A TCP proxy of the tests' own, between the service and PostgreSQL, that can stop
//! forwarding without closing anything (a black hole: packets go nowhere, no reset, as
//! after a network partition or a failover that left connections half-open).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The proxy; stops when dropped.
pub struct Proxy {
    /// The port to connect to instead of PostgreSQL's.
    pub port: u16,
    open: Arc<Gate>,
    accept: JoinHandle<()>,
}

struct Gate {
    open: AtomicBool,
    opened: Notify,
}

impl Gate {
    async fn wait_open(&self) {
        loop {
            let notified = self.opened.notified();
            if self.open.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

impl Proxy {
    /// Forwards a new local port to `target` (host:port).
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(Gate {
            open: AtomicBool::new(true),
            opened: Notify::new(),
        });
        let gate = Arc::clone(&open);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (gate, target) = (Arc::clone(&gate), target.clone());
                tokio::spawn(async move {
                    // A black hole also swallows new connections: accepted, never answered.
                    gate.wait_open().await;
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, Arc::clone(&gate)));
                    tokio::spawn(pump(sr, cw, gate));
                });
            }
        });
        Self { port, open, accept }
    }

    /// Stops forwarding (nothing is closed: bytes just stop arriving).
    pub fn blackhole(&self) {
        self.open.open.store(false, Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.open.open.store(true, Ordering::SeqCst);
        self.open.opened.notify_waiters();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: Arc<Gate>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        gate.wait_open().await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read just before the black hole opened are held, not delivered.
        gate.wait_open().await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
