//! The cluster `scripts/cluster` started: its addresses, and the faults made through
//! that script (processes are signalled by the PIDs it recorded, never by name).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The load balancer.
pub const LB: &str = "http://127.0.0.1:47080";
/// The private PostgreSQL, directly (not through the fault proxy).
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:56432/chaos";
/// The private nats-server.
pub const NATS_URL: &str = "nats://127.0.0.1:14222";
/// The fault proxy's control port.
pub const PROXY_CONTROL: &str = "127.0.0.1:47501";
/// Replicas.
pub const REPLICAS: usize = 3;

/// One row of a replica's `/admin/actors`.
#[derive(Debug, Clone, Deserialize)]
pub struct ActorRow {
    /// Actor name.
    pub name: String,
    /// `running`, `restarting`, `stopped`.
    pub status: String,
    /// Restarts since the replica started.
    pub restarts: u64,
    /// When its status last changed.
    pub since: chrono::DateTime<chrono::Utc>,
}

/// The cluster.
pub struct Cluster {
    root: PathBuf,
    token: String,
    /// A client for admin calls (short timeout).
    pub admin: reqwest::Client,
}

impl Cluster {
    /// The cluster of the checkout at `root`.
    ///
    /// # Errors
    /// When the admin token cannot be read (the cluster was not started).
    pub fn new(root: PathBuf) -> anyhow::Result<Self> {
        let token = std::fs::read_to_string(root.join(".local/cluster/admin-token"))
            .context("admin token: start the cluster with scripts/cluster")?;
        Ok(Self {
            root,
            token: token.trim().to_owned(),
            admin: reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()?,
        })
    }

    /// The API address of replica `n` (1-based), bypassing the load balancer.
    pub fn api(n: usize) -> String {
        format!("http://127.0.0.1:{}", 47080 + n)
    }

    /// The admin address of replica `n`.
    pub fn admin_url(n: usize) -> String {
        format!("http://127.0.0.1:{}", 47090 + n)
    }

    /// Runs `scripts/cluster <args>`.
    ///
    /// # Errors
    /// When it fails.
    pub fn script(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = Command::new(self.root.join("scripts/cluster"))
            .args(args)
            .env("CHAOS_NO_BUILD", "1")
            .status()
            .with_context(|| format!("scripts/cluster {args:?}"))?;
        if !status.success() {
            bail!("scripts/cluster {args:?}: {status}");
        }
        Ok(())
    }

    /// The pid of replica `n`, when it runs.
    pub fn replica_pid(&self, n: usize) -> Option<u32> {
        std::fs::read_to_string(self.root.join(format!(".local/cluster/replica-{n}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The exit status replica `n` recorded, once it exited.
    pub fn replica_exit(&self, n: usize) -> Option<i32> {
        std::fs::read_to_string(self.root.join(format!(".local/cluster/replica-{n}.exit")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Sends `signal` (`TERM`, `KILL`…) to replica `n`.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn signal_replica(&self, n: usize, signal: &str) -> anyhow::Result<()> {
        self.script(&["replica-signal", &n.to_string(), signal])
    }

    /// `/readyz` of replica `n`: its status code, or `None` without an answer.
    pub async fn readyz(&self, n: usize) -> Option<u16> {
        self.admin
            .get(format!("{}/readyz", Self::admin_url(n)))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Waits until replica `n` is ready; how long it took.
    ///
    /// # Errors
    /// When it is not ready within `within`.
    pub async fn wait_ready(&self, n: usize, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.readyz(n).await == Some(200) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("replica {n} not ready within {within:?}")
    }

    /// Waits until the process of replica `n` exited.
    pub async fn wait_exit(&self, n: usize, within: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(code) = self.replica_exit(n) {
                return Some(code);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// (Re)starts replica `n` and waits until it is ready and HAProxy sends it traffic
    /// (two good checks 500 ms apart).
    ///
    /// # Errors
    /// When it does not become ready in 30 s.
    pub async fn restart_replica(&self, n: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.script(&["replica-start", &n.to_string()])?;
        self.wait_ready(n, Duration::from_secs(30)).await?;
        let ready = started.elapsed();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        Ok(ready)
    }

    /// `/admin/actors` of replica `n`.
    ///
    /// # Errors
    /// When the replica does not answer.
    pub async fn actors(&self, n: usize) -> anyhow::Result<Vec<ActorRow>> {
        Ok(self
            .admin
            .get(format!("{}/admin/actors", Self::admin_url(n)))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Fires a chaos hook (`kill` or `panic`) on replica `n`; true when it fired.
    ///
    /// # Errors
    /// When the replica does not answer.
    pub async fn chaos(&self, n: usize, action: &str, actor: &str) -> anyhow::Result<bool> {
        let r = self
            .admin
            .post(format!(
                "{}/admin/chaos/{action}/{actor}",
                Self::admin_url(n)
            ))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(r.status().as_u16() == 202)
    }

    /// Waits until every replica is ready (after a fault of a shared dependency).
    ///
    /// # Errors
    /// When one is not ready within `within`.
    pub async fn wait_all_ready(&self, within: Duration) -> anyhow::Result<()> {
        for n in 1..=REPLICAS {
            self.wait_ready(n, within).await?;
        }
        Ok(())
    }
}
