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
    Ok(judge(&stored(&pg, prefix).await?, ledger))
}

/// The ledger against the rows stored.
fn judge(by_title: &Stored, ledger: &Ledger) -> Verdict {
    let mut v = Verdict::default();
    duplicates(by_title, &mut v);
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
    v
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Acked;

    fn acked(key: &str, versions: &[(i64, Option<i32>)]) -> Acked {
        Acked {
            key: key.into(),
            versions: versions.iter().copied().collect(),
            ..Acked::default()
        }
    }

    fn row(by_title: &mut Stored, title: &str, id: &str, version: i64, order: Option<i32>) {
        by_title
            .entry(title.into())
            .or_default()
            .push((id.into(), version, order));
    }

    #[test]
    fn acknowledged_writes_stored_as_acknowledged_pass() {
        let mut ledger = Ledger::default();
        ledger
            .todos
            .insert("a".into(), acked("k-1", &[(1, None), (2, Some(7))]));
        let mut later = acked("k-2", &[(1, None)]);
        later.maybe.insert(9);
        ledger.todos.insert("b".into(), later);
        let mut gone = acked("k-3", &[(1, None)]);
        gone.deleted = true;
        ledger.todos.insert("c".into(), gone);
        let mut stored = Stored::new();
        row(&mut stored, "k-1", "a", 2, Some(7));
        row(&mut stored, "k-2", "b", 2, Some(9));

        let v = judge(&stored, &ledger);

        assert_eq!((v.lost, v.duplicated), (0, 0), "{:?}", v.details);
    }

    #[test]
    fn missing_older_undeleted_and_doubled_writes_are_counted() {
        let mut ledger = Ledger::default();
        ledger.todos.insert("a".into(), acked("k-1", &[(1, None)]));
        ledger
            .todos
            .insert("b".into(), acked("k-2", &[(1, None), (3, Some(5))]));
        let mut gone = acked("k-3", &[(1, None)]);
        gone.deleted = true;
        ledger.todos.insert("c".into(), gone);
        ledger.todos.insert("d".into(), acked("k-4", &[(1, None)]));
        let mut stored = Stored::new();
        row(&mut stored, "k-2", "b", 2, Some(4));
        row(&mut stored, "k-3", "c", 1, None);
        row(&mut stored, "k-4", "d", 1, None);
        row(&mut stored, "k-4", "e", 1, None);

        let v = judge(&stored, &ledger);

        assert_eq!(
            v.lost, 3,
            "a missing, b older than acknowledged, c not deleted"
        );
        assert_eq!(v.duplicated, 1, "k-4 twice");
    }
}
