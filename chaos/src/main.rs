//! `todo-chaos`: the chaos suite of the todo service (docs/chaos.md).
//!
//! - `todo-chaos proxy`: the TCP fault proxy between the replicas and PostgreSQL;
//! - `todo-chaos run [--short] [--only a,b]`: the scenarios against the cluster that
//!   `scripts/cluster` started, one line each; exits 1 when a target is missed;
//! - `todo-chaos soak 30m`: the soak.
//!
//! # Layout
//! - `load`: open-loop load generator and its ledger;
//! - `check`: the ledger against PostgreSQL;
//! - `proxy`: the fault proxy;
//! - `cluster`: addresses and faults of the cluster;
//! - `scenarios`: the HTTP, replica, PostgreSQL and network scenarios; `nats`: `nats-kill`;
//! - `soak`: the soak.

mod check;
mod cluster;
mod load;
mod nats;
mod proxy;
mod scenarios;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::cluster::Cluster;
use crate::scenarios::{Ctx, Outcome, PgFault, Sizes};

/// Every scenario, in the order they run.
const SCENARIOS: [&str; 11] = [
    "actor-kills",
    "restart-storm",
    "replica-sigterm",
    "replica-sigkill",
    "nats-kill",
    "db-network",
    "pg-fast-stop",
    "pg-crash",
    "pg-pause",
    "pg-negative-control",
    "soak",
];

#[derive(Parser)]
#[command(
    name = "todo-chaos",
    about = "The todo service's chaos suite (docs/chaos.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The TCP fault proxy (started by scripts/cluster).
    Proxy {
        /// Where the replicas connect.
        #[arg(long)]
        listen: String,
        /// PostgreSQL.
        #[arg(long)]
        target: String,
        /// The control port (`pass`, `latency <ms>`, `blackhole`, `reset`, `status`).
        #[arg(long)]
        control: String,
    },
    /// Runs the scenarios against the cluster of scripts/cluster.
    Run {
        /// Bounded durations (CI: about 5 minutes in all).
        #[arg(long)]
        short: bool,
        /// Only these scenarios (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The checkout (for scripts/cluster and .local/cluster).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Steady load with periodic kills for a while (`30m`, `2h`), resource growth checked.
    Soak {
        /// How long.
        length: String,
        /// The checkout.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("todo-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Proxy {
            listen,
            target,
            control,
        } => proxy::run(&listen, &target, &control).await.map(|()| true),
        Command::Run { short, only, root } => {
            for o in &only {
                anyhow::ensure!(SCENARIOS.contains(&o.as_str()), "no scenario {o}");
            }
            let sizes = if short { Sizes::short() } else { Sizes::full() };
            let (ctx, cluster) = context(root, sizes)?;
            let mut passed = true;
            for name in SCENARIOS.iter().filter(|s| **s != "soak") {
                if !only.is_empty() && !only.iter().any(|o| o == name) {
                    continue;
                }
                passed &= scenario(&ctx, &cluster, name).await;
            }
            Ok(passed)
        }
        Command::Soak { length, root } => {
            let length = soak::parse_duration(&length)?;
            let (ctx, cluster) = context(root, Sizes::full())?;
            let started = Instant::now();
            let out = soak::soak(&ctx, cluster, length).await?;
            Ok(report(&out, started.elapsed()))
        }
    }
}

fn context(root: PathBuf, sizes: Sizes) -> anyhow::Result<(Ctx, Arc<Cluster>)> {
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        .to_string();
    let ctx = Ctx {
        cluster: Cluster::new(root.clone())?,
        sizes,
        run_id,
        client: load::client(Duration::from_secs(5))?,
    };
    Ok((ctx, Arc::new(Cluster::new(root)?)))
}

/// Runs one scenario, prints its line; true when every target was met.
async fn scenario(ctx: &Ctx, cluster: &Arc<Cluster>, name: &str) -> bool {
    let started = Instant::now();
    let c = Arc::clone(cluster);
    let result = match name {
        "actor-kills" => scenarios::actor_kills(ctx, c).await,
        "restart-storm" => scenarios::restart_storm(ctx, c).await,
        "replica-sigterm" => scenarios::replica_sigterm(ctx, c).await,
        "replica-sigkill" => scenarios::replica_sigkill(ctx, c).await,
        "nats-kill" => nats::nats_kill(ctx, c).await,
        "db-network" => scenarios::db_network(ctx, c).await,
        "pg-fast-stop" => scenarios::pg(ctx, c, PgFault::FastStop).await,
        "pg-crash" => scenarios::pg(ctx, c, PgFault::Crash).await,
        "pg-pause" => scenarios::pg(ctx, c, PgFault::Pause).await,
        "pg-negative-control" => scenarios::pg_negative_control(ctx, c).await,
        _ => Err(anyhow::anyhow!("no scenario {name}")),
    };
    match result {
        Ok(out) => report(&out, started.elapsed()),
        Err(e) => {
            println!(
                "scenario={name} requests=0 acked=0 lost=0 duplicated=0 errors=none p99_ms=0 recovery_ms=0"
            );
            eprintln!("  {name}: MISSED: could not run: {e:#}");
            false
        }
    }
}

fn report(out: &Outcome, took: Duration) -> bool {
    println!("{}", out.line());
    if out.missed.is_empty() {
        eprintln!("  {}: passed in {:.1} s", out.name, took.as_secs_f64());
        true
    } else {
        for m in &out.missed {
            eprintln!("  {}: MISSED: {m}", out.name);
        }
        eprintln!("  {}: failed in {:.1} s", out.name, took.as_secs_f64());
        false
    }
}
