//! Reads of the `todos` table: a query shard's connection ([`PgReader`]), with its
//! statements prepared once, and the row decoding every query shares.

use todo_actors::domain::{ListQuery, Owner, StoredReply, Todo, TodoId};
use todo_actors::store::{ReadConn, StoreError};
use tokio_postgres::{Client, Row, Statement};
use uuid::Uuid;

use super::error::{before_commit, describe};
use super::keys;

/// The columns of a todo, in [`todo_from_row`]'s order.
pub const COLUMNS: &str =
    r#"id, owner, title, completed, "order", version, created_at, updated_at"#;

/// A query shard's connection.
pub struct PgReader {
    client: Client,
    get: Statement,
    list: Statement,
    reply: Statement,
}

impl PgReader {
    /// Prepares the shard's statements on `client`.
    ///
    /// # Errors
    /// The preparing statement's error.
    pub async fn prepare(client: Client) -> Result<Self, tokio_postgres::Error> {
        let get = client
            .prepare(&format!(
                "SELECT t.{} FROM todos t
                 JOIN unnest($1::uuid[], $2::text[]) AS k(id, owner)
                   ON t.id = k.id AND t.owner = k.owner",
                COLUMNS.replace(", ", ", t.")
            ))
            .await?;
        let list = client
            .prepare(&format!(
                r#"SELECT {COLUMNS} FROM todos
                   WHERE owner = $1
                     AND ($2::bool IS NULL OR completed = $2)
                     AND (NOT $3::bool OR (CASE
                           WHEN $4::int4 IS NULL THEN
                             "order" IS NULL AND (created_at, id) > ($5::timestamptz, $6::uuid)
                           ELSE
                             "order" > $4 OR "order" IS NULL
                             OR ("order" = $4 AND (created_at, id) > ($5::timestamptz, $6::uuid))
                         END))
                   ORDER BY "order" ASC NULLS LAST, created_at, id
                   LIMIT $7"#
            ))
            .await?;
        let reply = client.prepare(keys::SELECT_REPLY).await?;
        Ok(Self {
            client,
            get,
            list,
            reply,
        })
    }
}

impl ReadConn for PgReader {
    async fn get_todos(&self, keys: &[(Owner, TodoId)]) -> Result<Vec<Todo>, StoreError> {
        let ids: Vec<Uuid> = keys.iter().map(|(_, id)| id.into_inner()).collect();
        let owners: Vec<&str> = keys.iter().map(|(o, _)| o.as_ref()).collect();
        let rows = self
            .client
            .query(&self.get, &[&ids, &owners])
            .await
            .map_err(|e| before_commit(&e))?;
        rows.iter()
            .map(|r| todo_from_row(r).map_err(|e| StoreError::Query(describe(&e))))
            .collect()
    }

    async fn list_todos(&self, query: &ListQuery) -> Result<Vec<Todo>, StoreError> {
        let after = query.after.as_ref();
        let limit = i64::from(query.limit);
        let rows = self
            .client
            .query(
                &self.list,
                &[
                    &query.owner.as_ref(),
                    &query.completed,
                    &after.is_some(),
                    &after.and_then(|c| c.order),
                    &after.map(|c| c.created_at),
                    &after.map(|c| c.id.into_inner()),
                    &limit,
                ],
            )
            .await
            .map_err(|e| before_commit(&e))?;
        rows.iter()
            .map(|r| todo_from_row(r).map_err(|e| StoreError::Query(describe(&e))))
            .collect()
    }

    async fn get_reply(&self, owner: &Owner, key: &str) -> Result<Option<StoredReply>, StoreError> {
        let row = self
            .client
            .query_opt(&self.reply, &[&owner.as_ref(), &key])
            .await
            .map_err(|e| before_commit(&e))?;
        row.as_ref()
            .map(keys::reply_from_row)
            .transpose()
            .map_err(StoreError::Query)
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// A todo from a row of [`COLUMNS`].
///
/// # Errors
/// When a column does not decode.
pub fn todo_from_row(row: &Row) -> Result<Todo, tokio_postgres::Error> {
    Ok(Todo {
        id: TodoId::from_uuid(row.try_get("id")?),
        owner: Owner::from_stored(row.try_get("owner")?),
        title: row.try_get("title")?,
        completed: row.try_get("completed")?,
        order: row.try_get("order")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
