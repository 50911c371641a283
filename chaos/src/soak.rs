//! Soak mode (`scripts/chaos --soak 30m`, not in CI): steady load (100 req/s through the
//! balancer) with a random actor of a random replica killed every 10 s, for the given
//! time. Each replica's RSS and open file descriptors and the database's connections
//! are sampled after a 30 s warm-up and at the end; growth beyond the bounds below fails
//! the run, as does any acknowledged write lost or doubled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::check;
use crate::cluster::{Cluster, PG_URL, REPLICAS};
use crate::load::Load;
use crate::scenarios::{Ctx, Outcome, Rng, target};

/// Most RSS growth per replica, KiB.
pub const MAX_RSS_GROWTH_KIB: i64 = 64 * 1024;
/// Most growth of open file descriptors per replica.
pub const MAX_FD_GROWTH: i64 = 32;
/// Most growth of the database's connections (all replicas).
pub const MAX_DB_CONN_GROWTH: i64 = 4;

/// Parses `30m`, `90s`, `1h`.
///
/// # Errors
/// On anything else.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n.parse()?;
    Ok(match unit {
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => anyhow::bail!("duration {s}: use 90s, 30m or 1h"),
    })
}

/// One replica's resources.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: i64,
    fds: i64,
}

fn sample(cluster: &Cluster, n: usize) -> Sample {
    let Some(pid) = cluster.replica_pid(n) else {
        return Sample::default();
    };
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as i64);
    Sample { rss_kib, fds }
}

async fn db_connections() -> anyhow::Result<i64> {
    let pg = check::connect(PG_URL).await?;
    let row = pg
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'chaos' AND pid <> pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Runs the soak for `length`.
///
/// # Errors
/// When the cluster or PostgreSQL cannot be reached.
pub async fn soak(ctx: &Ctx, cluster: Arc<Cluster>, length: Duration) -> anyhow::Result<Outcome> {
    const NAME: &str = "soak";
    cluster.wait_all_ready(Duration::from_secs(30)).await?;
    let load = Load::start(crate::load::LoadSpec {
        base: crate::cluster::LB.into(),
        rate: 100,
        prefix: ctx.prefix(NAME),
        client: ctx.client.clone(),
    });
    let started = Instant::now();
    let mut rng = Rng::new();
    let mut kill = tokio::time::interval(Duration::from_secs(10));
    let mut start: Option<(Vec<Sample>, i64)> = None;
    let mut kills = 0u64;
    while started.elapsed() < length {
        kill.tick().await;
        if start.is_none() && started.elapsed() >= Duration::from_secs(30) {
            let s = (1..=REPLICAS).map(|n| sample(&cluster, n)).collect();
            start = Some((s, db_connections().await?));
        }
        let n = rng.below(REPLICAS) + 1;
        if let Ok(rows) = cluster.actors(n).await {
            let names: Vec<_> = rows.into_iter().filter(|a| a.status == "running").collect();
            if !names.is_empty() {
                let actor = &names[rng.below(names.len())].name;
                if cluster.chaos(n, "kill", actor).await.unwrap_or(false) {
                    kills += 1;
                }
            }
        }
    }
    let end: Vec<Sample> = (1..=REPLICAS).map(|n| sample(&cluster, n)).collect();
    let end_db = db_connections().await?;
    let shared = load.stop().await;
    let (start, start_db) = start.unwrap_or_else(|| (end.clone(), end_db));
    let mut out = crate::scenarios::settle(NAME, &shared, &ctx.prefix(NAME)).await?;
    for n in 0..REPLICAS {
        let (a, b) = (start[n], end[n]);
        println!(
            "soak replica={} rss_kib={}->{} ({:+}) fds={}->{} ({:+})",
            n + 1,
            a.rss_kib,
            b.rss_kib,
            b.rss_kib - a.rss_kib,
            a.fds,
            b.fds,
            b.fds - a.fds
        );
        target(
            &mut out.missed,
            b.rss_kib - a.rss_kib <= MAX_RSS_GROWTH_KIB,
            || format!("replica {} RSS grew {} KiB", n + 1, b.rss_kib - a.rss_kib),
        );
        target(&mut out.missed, b.fds - a.fds <= MAX_FD_GROWTH, || {
            format!("replica {} fds grew {}", n + 1, b.fds - a.fds)
        });
    }
    println!(
        "soak db_connections={start_db}->{end_db} ({:+}) kills={kills}",
        end_db - start_db
    );
    target(
        &mut out.missed,
        end_db - start_db <= MAX_DB_CONN_GROWTH,
        || format!("database connections grew {}", end_db - start_db),
    );
    target(&mut out.missed, out.lost == 0, || {
        format!("lost {}", out.lost)
    });
    target(&mut out.missed, out.duplicated == 0, || {
        format!("duplicated {}", out.duplicated)
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soak_lengths_are_seconds_minutes_or_hours() {
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m").ok(), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h").ok(), Some(Duration::from_secs(7200)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("m").is_err());
    }
}
