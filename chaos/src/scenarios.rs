//! The scenarios (docs/chaos.md describes each one, its targets and what `recovery_ms`
//! means for it). Each runs the open-loop load of [`crate::load`] through the load
//! balancer, makes its fault, checks the ledger against PostgreSQL and returns its line
//! and the targets it missed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::check;
use crate::cluster::{Cluster, LB, PG_URL, PROXY_CONTROL, REPLICAS};
use crate::load::{Answer, Load, LoadSpec, Shared, Stats, lock, percentile};
use crate::proxy;

/// The one line a scenario prints, and the targets it missed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// Attempts sent.
    pub requests: u64,
    /// Acknowledged writes.
    pub acked: u64,
    /// Acknowledged writes lost.
    pub lost: u64,
    /// Keys applied twice.
    pub duplicated: u64,
    /// `status:count,…`.
    pub errors: String,
    /// Request latency p99.
    pub p99_ms: u64,
    /// Per scenario, see docs/chaos.md.
    pub recovery_ms: u64,
    /// Targets missed (empty: passed).
    pub missed: Vec<String>,
    /// A note for the line (e.g. what "passed" means for the negative control).
    pub note: Option<String>,
}

impl Outcome {
    /// The scenario's line.
    pub fn line(&self) -> String {
        let mut l = format!(
            "scenario={} requests={} acked={} lost={} duplicated={} errors={} p99_ms={} recovery_ms={}",
            self.name,
            self.requests,
            self.acked,
            self.lost,
            self.duplicated,
            self.errors,
            self.p99_ms,
            self.recovery_ms
        );
        if let Some(note) = &self.note {
            l.push_str(&format!(" note={note}"));
        }
        l
    }
}

/// Records a target: `ok`, or missed with `why`.
pub fn target(missed: &mut Vec<String>, ok: bool, why: impl FnOnce() -> String) {
    if !ok {
        missed.push(why());
    }
}

/// How long things last: the `--short` form or the full one.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Actor kills for this long.
    pub kills_for: Duration,
    /// A dependency stays down this long.
    pub down_for: Duration,
    /// Load before and after a fault.
    pub settle: Duration,
}

impl Sizes {
    /// The CI form (about 5 minutes in all).
    pub fn short() -> Self {
        Self {
            kills_for: Duration::from_secs(50),
            down_for: Duration::from_secs(5),
            settle: Duration::from_secs(3),
        }
    }
    /// The full form.
    pub fn full() -> Self {
        Self {
            kills_for: Duration::from_secs(60),
            down_for: Duration::from_secs(10),
            settle: Duration::from_secs(5),
        }
    }
}

/// What every scenario gets.
pub struct Ctx {
    /// The cluster.
    pub cluster: Cluster,
    /// Durations.
    pub sizes: Sizes,
    /// Unique per run, so keys never collide with an earlier run's.
    pub run_id: String,
    /// The load's HTTP client.
    pub client: reqwest::Client,
}

impl Ctx {
    fn spec(&self, name: &str, rate: u32) -> LoadSpec {
        LoadSpec {
            base: LB.into(),
            rate,
            prefix: self.prefix(name),
            client: self.client.clone(),
        }
    }

    /// The key/title prefix of scenario `name` in this run.
    pub fn prefix(&self, name: &str) -> String {
        format!("c{}-{name}", self.run_id)
    }

    /// Every replica ready and the proxy passing: the state each scenario starts from.
    async fn healthy(&self) -> anyhow::Result<()> {
        proxy::control(PROXY_CONTROL, "pass").await?;
        self.cluster
            .wait_all_ready(Duration::from_secs(30))
            .await
            .context("cluster not healthy before the scenario")
    }
}

/// Fills an outcome from a finished load and checks its ledger.
pub async fn settle(name: &str, shared: &Shared, prefix: &str) -> anyhow::Result<Outcome> {
    // The load has stopped: the ledger is final.
    let ledger = std::mem::take(&mut *lock(&shared.ledger));
    let acked = ledger
        .todos
        .values()
        .map(|a| a.versions.len() as u64 + u64::from(a.deleted))
        .sum();
    let verdict = check::ledger(PG_URL, prefix, &ledger).await?;
    for d in &verdict.details {
        eprintln!("  {name}: {d}");
    }
    let stats = lock(&shared.stats);
    let mut by_op: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &stats.failures {
        *by_op.entry(f.op).or_default() += 1;
    }
    if !by_op.is_empty() {
        eprintln!("  {name}: failed attempts by operation {by_op:?}");
    }
    Ok(Outcome {
        name: name.into(),
        requests: stats.requests,
        acked,
        lost: verdict.lost,
        duplicated: verdict.duplicated,
        errors: stats.errors(),
        p99_ms: stats.p99_ms(),
        ..Outcome::default()
    })
}

/// Time from `from` until the last failure's answer (0 without any failure after it).
fn last_failure_after(stats: &Stats, from: Instant) -> Duration {
    stats
        .failures
        .iter()
        .map(|f| f.answered)
        .filter(|t| *t > from)
        .max()
        .map_or(Duration::ZERO, |t| t - from)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A small random source (xorshift), seeded from the clock: no dependency for this.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock.
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Self(seed | 1)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

/// Actors the hooks can make panic (the others can only be killed).
fn panics(actor: &str) -> bool {
    actor == "writer" || actor == "metrics" || actor.starts_with("shard-")
}

/// Kills `actor` of replica `n` and measures its restart: from just before the kill to
/// the `since` of its `running` row with one more restart (server clock, same machine).
async fn kill_and_time(
    cluster: Arc<Cluster>,
    n: usize,
    actor: String,
    action: &'static str,
) -> Option<Duration> {
    let before = cluster
        .actors(n)
        .await
        .ok()?
        .into_iter()
        .find(|a| a.name == actor)?
        .restarts;
    let t0 = chrono::Utc::now();
    if !cluster.chaos(n, action, &actor).await.unwrap_or(false) {
        return None;
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Ok(rows) = cluster.actors(n).await else {
            continue;
        };
        if let Some(row) = rows.iter().find(|a| a.name == actor)
            && row.restarts > before
            && row.status == "running"
        {
            return Some((row.since - t0).to_std().unwrap_or(Duration::ZERO));
        }
    }
    Some(Duration::from_secs(3))
}

/// `actor-kills`: a random actor (writer, shards, metrics, relay, listener, NATS
/// consumers…) of a random replica every 500 ms at 200 req/s.
pub async fn actor_kills(ctx: &Ctx, cluster: Arc<Cluster>) -> anyhow::Result<Outcome> {
    const NAME: &str = "actor-kills";
    ctx.healthy().await?;
    let load = Load::start(ctx.spec(NAME, 200));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rng = Rng::new();
    let mut recent: Vec<VecDeque<Instant>> = vec![VecDeque::new(); REPLICAS];
    let mut timers = Vec::new();
    let mut killed: BTreeMap<String, u32> = BTreeMap::new();
    let mut last_kill: HashMap<(usize, String), Instant> = HashMap::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while started.elapsed() < ctx.sizes.kills_for {
        tick.tick().await;
        // A random replica among those with room in their restart budget (RESTART_INTENSITY
        // 10 per 10 s counts every actor of a replica): 8 kills per 10 s at most, so this
        // scenario never turns into the restart storm, which is a scenario of its own.
        let now = Instant::now();
        for q in &mut recent {
            while q
                .front()
                .is_some_and(|t| now - *t > Duration::from_secs(11))
            {
                q.pop_front();
            }
        }
        let open: Vec<usize> = (0..REPLICAS).filter(|&i| recent[i].len() < 8).collect();
        if open.is_empty() {
            continue;
        }
        let i = open[rng.below(open.len())];
        let n = i + 1;
        let Ok(rows) = cluster.actors(n).await else {
            continue;
        };
        // A kill within 1 s (HEALTHY_AFTER) of the same actor's restart is a crash loop,
        // which backs off on purpose (10, 20, 40, 80 ms…): actors of this replica killed in
        // the last 2 s are skipped, so every kill times a first restart.
        let names: Vec<String> = rows
            .into_iter()
            .filter(|a| a.status == "running")
            .map(|a| a.name)
            .filter(|a| {
                last_kill
                    .get(&(n, a.clone()))
                    .is_none_or(|t| now - *t > Duration::from_secs(2))
            })
            .collect();
        if names.is_empty() {
            continue;
        }
        let actor = names[rng.below(names.len())].clone();
        let action = if panics(&actor) && rng.below(3) == 0 {
            "panic"
        } else {
            "kill"
        };
        recent[i].push_back(now);
        last_kill.insert((n, actor.clone()), now);
        *killed.entry(format!("{action}:{actor}")).or_default() += 1;
        let label = format!("r{n}:{action}:{actor}");
        let timer = tokio::spawn(kill_and_time(Arc::clone(&cluster), n, actor, action));
        timers.push((label, timer));
    }
    let mut restarts = Vec::new();
    let mut slowest = Vec::new();
    for (label, t) in timers {
        if let Ok(Some(d)) = t.await {
            restarts.push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            slowest.push((d, label));
        }
    }
    slowest.sort();
    slowest.reverse();
    slowest.truncate(5);
    eprintln!("  {NAME}: slowest restarts {slowest:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shared = load.stop().await;
    let mut out = settle(NAME, &shared, &ctx.prefix(NAME)).await?;
    let restart_p99 = percentile(&restarts, 0.99) / 1000;
    out.recovery_ms = restart_p99;
    eprintln!(
        "  {NAME}: {} kills {killed:?}; restart p50 {} ms, p99 {restart_p99} ms, max {} ms",
        restarts.len(),
        percentile(&restarts, 0.5) / 1000,
        restarts.iter().max().copied().unwrap_or(0) / 1000
    );
    let (failures, requests, not_503) = {
        let stats = lock(&shared.stats);
        (stats.failures.len(), stats.requests, stats.not_503())
    };
    let pct = 100.0 * failures as f64 / requests.max(1) as f64;
    ledger_targets(&mut out);
    target(&mut out.missed, pct <= 2.0, || {
        format!("errors {pct:.2} % > 2 %")
    });
    target(&mut out.missed, not_503 == 0, || {
        format!("{not_503} errors not 503 + Retry-After")
    });
    target(&mut out.missed, restart_p99 <= 50, || {
        format!("restart p99 {restart_p99} ms > 50")
    });
    let expected = ctx.sizes.kills_for.as_secs() * 2 * 9 / 10;
    target(&mut out.missed, restarts.len() as u64 >= expected, || {
        format!(
            "only {} kills timed (expected ≥ {expected})",
            restarts.len()
        )
    });
    cluster
        .wait_all_ready(Duration::from_secs(5))
        .await
        .map_err(|e| out.missed.push(format!("after the kills: {e}")))
        .ok();
    Ok(out)
}

/// `restart-storm`: one replica's actors killed faster than its restart intensity
/// allows; it must leave the balancer and exit non-zero within 5 s while the others
/// serve; then it is restarted, as Kubernetes would.
pub async fn restart_storm(ctx: &Ctx, cluster: Arc<Cluster>) -> anyhow::Result<Outcome> {
    const NAME: &str = "restart-storm";
    const VICTIM: usize = 3;
    ctx.healthy().await?;
    let load = Load::start(ctx.spec(NAME, 200));
    tokio::time::sleep(ctx.sizes.settle).await;
    let names: Vec<String> = cluster
        .actors(VICTIM)
        .await?
        .into_iter()
        .map(|a| a.name)
        .filter(|n| panics(n))
        .collect();
    let first_kill = Instant::now();
    let mut unready: Option<Duration> = None;
    let mut i = 0;
    // A kill every 50 ms: 11 within 0.55 s exceed 10 per 10 s.
    while first_kill.elapsed() < Duration::from_secs(5) && unready.is_none() {
        let _ = cluster.chaos(VICTIM, "kill", &names[i % names.len()]).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if cluster.readyz(VICTIM).await != Some(200) {
            unready = Some(first_kill.elapsed());
        }
    }
    let unready_at = Instant::now();
    let exit = cluster.wait_exit(VICTIM, Duration::from_secs(6)).await;
    let exited = first_kill.elapsed();
    let others_ready = cluster.readyz(1).await == Some(200) && cluster.readyz(2).await == Some(200);
    let restart = cluster.restart_replica(VICTIM).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shared = load.stop().await;
    let mut out = settle(NAME, &shared, &ctx.prefix(NAME)).await?;
    out.recovery_ms = restart.as_ref().map_or(u64::MAX, |d| ms(*d));
    let stats = lock(&shared.stats);
    let late: Vec<_> = stats
        .failures
        .iter()
        .filter(|f| f.sent > unready_at + Duration::from_secs(1))
        .collect();
    eprintln!(
        "  {NAME}: {i} kills; /readyz 503 after {unready:?}, exit {exit:?} {} ms after the first kill; {} failures later than 1 s after",
        ms(exited),
        late.len()
    );
    ledger_targets(&mut out);
    target(
        &mut out.missed,
        unready.is_some_and(|d| d <= Duration::from_secs(5)),
        || format!("readiness 503 after {unready:?}"),
    );
    target(
        &mut out.missed,
        exit.is_some_and(|c| c != 0) && exited <= Duration::from_secs(5),
        || format!("exit {exit:?} after {} ms", ms(exited)),
    );
    target(&mut out.missed, others_ready, || {
        "the other replicas were not ready".into()
    });
    target(&mut out.missed, late.is_empty(), || {
        format!(
            "{} requests failed after the replica left the balancer: {:?}",
            late.len(),
            late.iter().take(3).collect::<Vec<_>>()
        )
    });
    drop(stats);
    if let Err(e) = restart {
        out.missed.push(format!("restart: {e}"));
    }
    Ok(out)
}

/// `replica-sigterm`: SIGTERM one replica under load; nothing may fail.
pub async fn replica_sigterm(ctx: &Ctx, cluster: Arc<Cluster>) -> anyhow::Result<Outcome> {
    const NAME: &str = "replica-sigterm";
    const VICTIM: usize = 2;
    ctx.healthy().await?;
    let load = Load::start(ctx.spec(NAME, 200));
    tokio::time::sleep(ctx.sizes.settle).await;
    let term = Instant::now();
    cluster.signal_replica(VICTIM, "TERM")?;
    let exit = cluster.wait_exit(VICTIM, Duration::from_secs(30)).await;
    let took = term.elapsed();
    let restart = cluster.restart_replica(VICTIM).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shared = load.stop().await;
    let mut out = settle(NAME, &shared, &ctx.prefix(NAME)).await?;
    out.recovery_ms = restart.as_ref().map_or(u64::MAX, |d| ms(*d));
    eprintln!("  {NAME}: exit {exit:?} {} ms after SIGTERM", ms(took));
    let stats = lock(&shared.stats);
    ledger_targets(&mut out);
    target(&mut out.missed, stats.failures.is_empty(), || {
        format!("{} requests failed", stats.failures.len())
    });
    target(&mut out.missed, exit == Some(0), || {
        format!("exit status {exit:?}")
    });
    drop(stats);
    if let Err(e) = restart {
        out.missed.push(format!("restart: {e}"));
    }
    Ok(out)
}

/// `replica-sigkill`: SIGKILL one replica under load; only requests in flight on it
/// may fail, and creates retried with their key end with nothing lost or doubled.
pub async fn replica_sigkill(ctx: &Ctx, cluster: Arc<Cluster>) -> anyhow::Result<Outcome> {
    const NAME: &str = "replica-sigkill";
    const VICTIM: usize = 1;
    ctx.healthy().await?;
    let load = Load::start(ctx.spec(NAME, 200));
    tokio::time::sleep(ctx.sizes.settle).await;
    cluster.signal_replica(VICTIM, "KILL")?;
    // The signal was delivered when the script returned (it takes a few ms to start).
    let kill = Instant::now();
    tokio::time::sleep(ctx.sizes.settle).await;
    let restart = cluster.restart_replica(VICTIM).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shared = load.stop().await;
    let mut out = settle(NAME, &shared, &ctx.prefix(NAME)).await?;
    let stats = lock(&shared.stats);
    out.recovery_ms = ms(last_failure_after(&stats, kill));
    // In flight on the victim = sent before the kill (a few ms of slack for the request
    // to travel through HAProxy).
    let after: Vec<_> = stats
        .failures
        .iter()
        .filter(|f| f.sent > kill + Duration::from_millis(20))
        .collect();
    eprintln!(
        "  {NAME}: {} failures, {} of them sent after the kill",
        stats.failures.len(),
        after.len()
    );
    ledger_targets(&mut out);
    target(&mut out.missed, after.is_empty(), || {
        format!(
            "{} requests sent after the kill failed: {:?}",
            after.len(),
            after.iter().take(3).collect::<Vec<_>>()
        )
    });
    drop(stats);
    if let Err(e) = restart {
        out.missed.push(format!("restart: {e}"));
    }
    Ok(out)
}

/// The PostgreSQL faults.
#[derive(Debug, Clone, Copy)]
pub enum PgFault {
    /// `pg_ctl stop -m fast`, start again.
    FastStop,
    /// `pg_ctl stop -m immediate` (crash), start again (crash recovery).
    Crash,
    /// SIGSTOP of every process of the instance for 10 s, then SIGCONT.
    Pause,
}

/// `pg-fast-stop`, `pg-crash`, `pg-pause`: every request answered within 2 s (503 +
/// Retry-After while PostgreSQL is away), nothing acknowledged lost, full service
/// within 5 s of its return.
pub async fn pg(ctx: &Ctx, cluster: Arc<Cluster>, fault: PgFault) -> anyhow::Result<Outcome> {
    let name = match fault {
        PgFault::FastStop => "pg-fast-stop",
        PgFault::Crash => "pg-crash",
        PgFault::Pause => "pg-pause",
    };
    ctx.healthy().await?;
    let load = Load::start(ctx.spec(name, 100));
    tokio::time::sleep(ctx.sizes.settle).await;
    match fault {
        PgFault::FastStop => cluster.script(&["pg-stop", "fast"])?,
        PgFault::Crash => cluster.script(&["pg-stop", "immediate"])?,
        PgFault::Pause => cluster.script(&["pg-pause"])?,
    }
    let down_for = match fault {
        PgFault::Pause => Duration::from_secs(10),
        _ => ctx.sizes.down_for,
    };
    tokio::time::sleep(down_for).await;
    match fault {
        PgFault::Pause => cluster.script(&["pg-resume"])?,
        _ => cluster.script(&["pg-start"])?,
    }
    let back = Instant::now();
    tokio::time::sleep(ctx.sizes.settle.max(Duration::from_secs(6))).await;
    let shared = load.stop().await;
    let mut out = settle(name, &shared, &ctx.prefix(name)).await?;
    pg_targets(&mut out, &shared, back);
    Ok(out)
}

/// The ledger's targets, every scenario's: nothing acknowledged lost, no key applied twice.
fn ledger_targets(out: &mut Outcome) {
    let (lost, duplicated) = (out.lost, out.duplicated);
    target(&mut out.missed, lost == 0, || format!("lost {lost}"));
    target(&mut out.missed, duplicated == 0, || {
        format!("duplicated {duplicated}")
    });
}

fn pg_targets(out: &mut Outcome, shared: &Shared, back: Instant) {
    let stats = lock(&shared.stats);
    let recovery = last_failure_after(&stats, back);
    outage_targets(out, &stats, recovery, "the return");
}

/// The targets of a database outage (stopped, crashed, paused, or a network fault):
/// nothing lost or duplicated, every request answered within 2 s, every failure a 503
/// with `Retry-After`, and no failure later than 5 s after `recovery`'s reference point
/// (`after`, as the line of a missed target says it).
fn outage_targets(out: &mut Outcome, stats: &Stats, recovery: Duration, after: &str) {
    out.recovery_ms = ms(recovery);
    eprintln!(
        "  {}: longest wait {} ms; {} failures, {} not 503 + Retry-After",
        out.name,
        ms(stats.max_wait),
        stats.failures.len(),
        stats.not_503()
    );
    ledger_targets(out);
    target(
        &mut out.missed,
        stats.max_wait <= Duration::from_secs(2),
        || format!("a request waited {} ms > 2000", ms(stats.max_wait)),
    );
    target(&mut out.missed, stats.not_503() == 0, || {
        format!("{} errors not 503 + Retry-After", stats.not_503())
    });
    target(&mut out.missed, recovery <= Duration::from_secs(5), || {
        format!("failures until {} ms after {after}", ms(recovery))
    });
}

/// `pg-negative-control`: PostgreSQL with `synchronous_commit=off` (WAL flushed every
/// 10 s at best) crashes under load. The ledger must see the acknowledged writes it lost:
/// this scenario passes when `lost > 0`, proving the check can fail. A crash of the
/// processes (not of the machine) loses only the WAL still in PostgreSQL's buffers (what
/// reached the kernel survives), a few commits at most, and now and then none: up to 3
/// crashes are made until one loses something.
pub async fn pg_negative_control(ctx: &Ctx, cluster: Arc<Cluster>) -> anyhow::Result<Outcome> {
    const NAME: &str = "pg-negative-control";
    let mut total = Outcome {
        name: NAME.into(),
        note: Some("passes-when-lost>0".into()),
        ..Outcome::default()
    };
    let mut all = Stats::default();
    let mut rounds = 0;
    while rounds < 3 && total.lost == 0 {
        rounds += 1;
        ctx.healthy().await?;
        cluster.script(&["pg-stop", "fast"])?;
        cluster.script(&[
            "pg-start",
            "-c synchronous_commit=off -c wal_writer_delay=10s -c wal_writer_flush_after=1GB",
        ])?;
        ctx.healthy().await?;
        let name = format!("{NAME}-r{rounds}");
        let load = Load::start(ctx.spec(&name, 100));
        tokio::time::sleep(ctx.sizes.settle).await;
        cluster.script(&["pg-stop", "immediate"])?;
        cluster.script(&["pg-start"])?;
        let back = Instant::now();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let shared = load.stop().await;
        let out = settle(NAME, &shared, &ctx.prefix(&name)).await?;
        let stats = std::mem::take(&mut *lock(&shared.stats));
        total.recovery_ms = total.recovery_ms.max(ms(last_failure_after(&stats, back)));
        total.acked += out.acked;
        total.lost += out.lost;
        total.duplicated += out.duplicated;
        all.requests += stats.requests;
        all.latencies_us.extend(stats.latencies_us);
        all.failures.extend(stats.failures);
    }
    total.requests = all.requests;
    total.errors = all.errors();
    total.p99_ms = all.p99_ms();
    eprintln!("  {NAME}: {rounds} crash(es) with synchronous_commit=off");
    target(&mut total.missed, total.lost > 0, || {
        "the ledger found no loss after 3 crashes with synchronous_commit=off".into()
    });
    Ok(total)
}

/// `db-network`: latency, black hole and resets between the replicas and PostgreSQL
/// (the fault proxy); 503 within 2 s while it lasts, the pools recover.
pub async fn db_network(ctx: &Ctx, _cluster: Arc<Cluster>) -> anyhow::Result<Outcome> {
    const NAME: &str = "db-network";
    ctx.healthy().await?;
    let load = Load::start(ctx.spec(NAME, 100));
    tokio::time::sleep(ctx.sizes.settle).await;
    let mut recoveries = Vec::new();
    for fault in ["latency 3000", "blackhole", "reset"] {
        proxy::control(PROXY_CONTROL, fault).await?;
        if fault != "reset" {
            tokio::time::sleep(ctx.sizes.down_for).await;
            proxy::control(PROXY_CONTROL, "pass").await?;
        }
        let back = Instant::now();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let r = last_failure_after(&lock(&load.shared.stats), back);
        eprintln!(
            "  {NAME}: {fault}: failures until {} ms after its end",
            ms(r)
        );
        recoveries.push(r);
    }
    let shared = load.stop().await;
    let mut out = settle(NAME, &shared, &ctx.prefix(NAME)).await?;
    let stats = lock(&shared.stats);
    let recovery = recoveries.iter().max().copied().unwrap_or_default();
    outage_targets(&mut out, &stats, recovery, "a fault's end");
    drop(stats);
    Ok(out)
}

/// Counts an outcome's failures by kind (for scenarios with their own requests).
pub fn count(stats: &Stats, extra: &BTreeMap<String, u64>) -> String {
    let mut all: BTreeMap<String, u64> = extra.clone();
    for f in &stats.failures {
        let k = match f.answer {
            Answer::Status(s, _) => s.to_string(),
            Answer::Conn => "conn".into(),
            Answer::Timeout => "timeout".into(),
        };
        *all.entry(k).or_default() += 1;
    }
    all.retain(|_, v| *v > 0);
    if all.is_empty() {
        return "none".into();
    }
    all.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_prints_the_agreed_line() {
        let out = Outcome {
            name: "pg-crash".into(),
            requests: 10,
            acked: 4,
            lost: 0,
            duplicated: 0,
            errors: "503:3".into(),
            p99_ms: 12,
            recovery_ms: 340,
            ..Outcome::default()
        };
        assert_eq!(
            out.line(),
            "scenario=pg-crash requests=10 acked=4 lost=0 duplicated=0 errors=503:3 p99_ms=12 recovery_ms=340"
        );
    }
}
