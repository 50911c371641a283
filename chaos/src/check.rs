//! The ledger against PostgreSQL (read directly, not through the fault proxy).
//!
//! - an acknowledged create exists (unless an acknowledged or unknown delete followed);
//! - its stored version is one the clients were told, with the `order` they were told,
//!   or a later one made by a patch whose outcome was unknown;
//! - an acknowledged delete left nothing behind;
//! - no key made two todos (the title is the key).
//!
//! `lost` counts acknowledged writes missing or overtaken by an older state;
//! `duplicated` counts keys stored more than once.

use std::collections::HashMap;

use anyhow::Context;

use crate::load::Ledger;

/// What the check found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Acknowledged writes not found as acknowledged.
    pub lost: u64,
    /// Keys stored more than once.
    pub duplicated: u64,
    /// The first few problems, for the log.
    pub details: Vec<String>,
}

impl Verdict {
    fn note(&mut self, s: String) {
        if self.details.len() < 10 {
            self.details.push(s);
        }
    }
}

/// A client of the private PostgreSQL.
///
/// # Errors
/// When PostgreSQL cannot be reached.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect {url}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// Rows whose title starts with `prefix`: title → [(id, version, order)].
type Stored = HashMap<String, Vec<(String, i64, Option<i32>)>>;

async fn stored(pg: &tokio_postgres::Client, prefix: &str) -> anyhow::Result<Stored> {
    let rows = pg
        .query(
            r#"SELECT id::text, title, version, "order" FROM todos WHERE starts_with(title, $1)"#,
            &[&prefix],
        )
        .await
        .context("read todos")?;
    let mut by_title: Stored = HashMap::new();
    for r in rows {
        by_title
            .entry(r.get(1))
            .or_default()
            .push((r.get(0), r.get(2), r.get(3)));
    }
    Ok(by_title)
}

/// Checks a ledger of HTTP writes whose keys start with `prefix`.
///
/// # Errors
/// When PostgreSQL cannot be read.
pub async fn ledger(pg_url: &str, prefix: &str, ledger: &Ledger) -> anyhow::Result<Verdict> {
    let pg = connect(pg_url).await?;
    let by_title = stored(&pg, prefix).await?;
    let mut v = Verdict::default();
    duplicates(&by_title, &mut v);
    let by_id: HashMap<&str, (i64, Option<i32>)> = by_title
        .values()
        .flatten()
        .map(|(id, version, order)| (id.as_str(), (*version, *order)))
        .collect();
    for (id, acked) in &ledger.todos {
        let row = by_id.get(id.as_str());
        if acked.deleted {
            if row.is_some() {
                v.lost += 1;
                v.note(format!("{id}: acknowledged delete, still stored"));
            }
            continue;
        }
        let Some(&(version, order)) = row else {
            if !acked.maybe_deleted {
                v.lost += 1;
                v.note(format!("{id} ({}): acknowledged, not stored", acked.key));
            }
            continue;
        };
        let newest = acked.versions.keys().max().copied().unwrap_or(1);
        let fine = match acked.versions.get(&version) {
            Some(o) => *o == order,
            None => version > newest && order.is_some_and(|o| acked.maybe.contains(&o)),
        };
        if !fine {
            v.lost += 1;
            v.note(format!(
                "{id}: stored v{version} order {order:?}; acknowledged up to v{newest} {:?}",
                acked.versions
            ));
        }
    }
    Ok(v)
}

/// Checks that each of `keys` (acknowledged JetStream commands) made exactly one todo.
///
/// # Errors
/// When PostgreSQL cannot be read.
pub async fn applied_once(pg_url: &str, prefix: &str, keys: &[String]) -> anyhow::Result<Verdict> {
    let pg = connect(pg_url).await?;
    let by_title = stored(&pg, prefix).await?;
    let mut v = Verdict::default();
    duplicates(&by_title, &mut v);
    for k in keys {
        if !by_title.contains_key(k) {
            v.lost += 1;
            v.note(format!(
                "command {k}: acknowledged by JetStream, not applied"
            ));
        }
    }
    Ok(v)
}

/// How many of `keys` are stored (to wait for the consumers to catch up).
///
/// # Errors
/// When PostgreSQL cannot be read.
pub async fn count_stored(pg_url: &str, prefix: &str) -> anyhow::Result<usize> {
    let pg = connect(pg_url).await?;
    Ok(stored(&pg, prefix).await?.len())
}

fn duplicates(by_title: &Stored, v: &mut Verdict) {
    for (title, rows) in by_title {
        if rows.len() > 1 {
            v.duplicated += 1;
            v.note(format!("key {title} stored {} times", rows.len()));
        }
    }
}
