//! The writer's side of the `todos` table: a batch plan and [`PgWriter`], the writer's
//! connection, which runs a whole batch in one transaction.
//!
//! The statements of a batch are pipelined in order (tokio-postgres sends them without
//! waiting for each answer), with runs of consecutive creates folded into one
//! `INSERT … SELECT FROM unnest(…)`. If a command's data is rejected (SQLSTATE class
//! 22/23), the batch is re-run in a fresh transaction with a savepoint around each
//! command, so that command fails alone. Failures are classified by when they happened:
//! before COMMIT (rolled back, retryable), at COMMIT (outcome unknown), or after a
//! COMMIT that succeeded (never retried: the change is made).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use todo_actors::domain::{
    DomainError, Owner, Todo, TodoChange, TodoId, WriteCommand, WriteEffect,
};
use todo_actors::store::{BatchOutcome, SessionId, StoreError, WriteConn};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row, Statement, Transaction};
use uuid::Uuid;

use super::error::{at_commit, before_commit, describe, is_data_error};
use super::keys::{self, HASH_SCHEME, StoredTodo};
use super::reads::{COLUMNS, todo_from_row};

/// Every change writes its event in the same statement (see `migrations/V4`).
const OUTBOX: &str = "INSERT INTO outbox (owner, kind, todo_id, replica, payload, traceparent)";

/// The writer's prepared statements.
pub struct WriterStatements {
    /// The replica these statements write events for.
    replica: Uuid,
    insert: Statement,
    purge_keys: Statement,
    insert_keys: Statement,
    update: Statement,
    delete: Statement,
    clear: Statement,
    version: Statement,
}

impl WriterStatements {
    /// Prepares the writer's statements on `client`.
    ///
    /// # Errors
    /// The preparing statement's error.
    pub async fn prepare(client: &Client, replica: Uuid) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            replica,
            insert: client
                .prepare(&format!(
                    r#"WITH ins AS (
                         INSERT INTO todos (id, owner, title, completed, "order", version, created_at, updated_at)
                         SELECT id, owner, title, completed, ord, 1, ts, ts
                         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::int4[], $6::timestamptz[])
                              AS u(id, owner, title, completed, ord, ts)
                         RETURNING {COLUMNS})
                       {OUTBOX} SELECT ins.owner, 'created', ins.id, $7::uuid, to_jsonb(ins)::text, t.tp
                       FROM ins JOIN unnest($1::uuid[], $8::text[]) AS t(id, tp) ON t.id = ins.id"#
                ))
                .await?,
            purge_keys: client.prepare(keys::PURGE_NAMED).await?,
            insert_keys: client.prepare(keys::INSERT_REPLIES).await?,
            update: client
                .prepare(&format!(
                    r#"WITH u AS (
                         UPDATE todos SET
                           title = COALESCE($3::text, title),
                           completed = COALESCE($4::bool, completed),
                           "order" = CASE WHEN $5::bool THEN $6::int4 ELSE "order" END,
                           version = version + 1,
                           updated_at = $7::timestamptz
                         WHERE owner = $1 AND id = $2 AND ($8::int8[] IS NULL OR version = ANY($8))
                         RETURNING {COLUMNS}),
                       o AS ({OUTBOX} SELECT owner, 'updated', id, $9::uuid, to_jsonb(u)::text, $10::text FROM u)
                       SELECT {COLUMNS} FROM u"#
                ))
                .await?,
            delete: client
                .prepare(&format!(
                    "WITH d AS (
                       DELETE FROM todos WHERE owner = $1 AND id = $2
                         AND ($3::int8[] IS NULL OR version = ANY($3)) RETURNING id, owner),
                     o AS ({OUTBOX} SELECT owner, 'deleted', id, $4::uuid,
                             json_build_object('id', id)::text, $5::text FROM d)
                     SELECT id FROM d"
                ))
                .await?,
            clear: client
                .prepare(&format!(
                    "WITH d AS (
                       DELETE FROM todos WHERE owner = $1 AND ($2::bool IS NULL OR completed = $2)
                       RETURNING id, owner),
                     o AS ({OUTBOX} SELECT owner, 'deleted', id, $3::uuid,
                             json_build_object('id', id)::text, $4::text FROM d)
                     SELECT id FROM d"
                ))
                .await?,
            version: client
                .prepare("SELECT version FROM todos WHERE owner = $1 AND id = $2")
                .await?,
        })
    }
}

/// The writer's connection.
pub struct PgWriter {
    client: Client,
    stmts: WriterStatements,
    session: SessionId,
}

impl PgWriter {
    /// A writer connection over `client`, whose server session is `session`.
    pub fn new(client: Client, stmts: WriterStatements, session: SessionId) -> Self {
        Self {
            client,
            stmts,
            session,
        }
    }
}

/// A step of a batch: a run of creates, or one other command; each with the
/// `traceparent` of its request(s), written with its events.
enum Step<'a> {
    Creates(Vec<&'a Todo>, Vec<Option<&'a str>>),
    One(&'a WriteCommand, Option<&'a str>),
}

impl<'a> Step<'a> {
    /// The step of one command alone.
    fn of(command: &'a WriteCommand, trace: Option<&'a str>) -> Self {
        match command {
            WriteCommand::Create { todo, .. } => Self::Creates(vec![todo], vec![trace]),
            other => Self::One(other, trace),
        }
    }
}

/// The trace of the `i`th command, if any.
fn trace_of(traces: &[Option<Arc<str>>], i: usize) -> Option<&str> {
    traces.get(i).and_then(|t| t.as_deref())
}

/// The steps of a batch in order, runs of consecutive creates folded into one.
fn plan<'a>(commands: &'a [WriteCommand], traces: &'a [Option<Arc<str>>]) -> Vec<Step<'a>> {
    let mut steps: Vec<Step<'_>> = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        let trace = trace_of(traces, i);
        match (command, steps.last_mut()) {
            (WriteCommand::Create { todo, .. }, Some(Step::Creates(run, tps))) => {
                run.push(todo);
                tps.push(trace);
            }
            _ => steps.push(Step::of(command, trace)),
        }
    }
    steps
}

/// What one statement returned, before it is turned into per-command outcomes.
enum Raw {
    Inserted,
    Rows(Vec<Row>),
}

impl PgWriter {
    async fn run_step<C: GenericClient + Sync>(
        stmts: &WriterStatements,
        tx: &C,
        step: &Step<'_>,
    ) -> Result<Raw, tokio_postgres::Error> {
        match step {
            Step::Creates(todos, traces) => {
                let ids: Vec<Uuid> = todos.iter().map(|t| t.id.into_inner()).collect();
                let owners: Vec<&str> = todos.iter().map(|t| t.owner.as_ref()).collect();
                let titles: Vec<&str> = todos.iter().map(|t| t.title.as_str()).collect();
                let completed: Vec<bool> = todos.iter().map(|t| t.completed).collect();
                let orders: Vec<Option<i32>> = todos.iter().map(|t| t.order).collect();
                let times: Vec<DateTime<Utc>> = todos.iter().map(|t| t.created_at).collect();
                tx.execute(
                    &stmts.insert,
                    &[
                        &ids,
                        &owners,
                        &titles,
                        &completed,
                        &orders,
                        &times,
                        &stmts.replica,
                        traces,
                    ],
                )
                .await
                .map(|_| Raw::Inserted)
            }
            Step::One(
                WriteCommand::Update {
                    owner,
                    id,
                    change,
                    expected_versions,
                    at,
                    ..
                },
                trace,
            ) => {
                let (title, completed, set_order, order) = match change {
                    TodoChange::Patch {
                        title,
                        completed,
                        order,
                    } => (
                        title.as_ref().map(|t| t.as_ref()),
                        *completed,
                        order.is_some(),
                        order.flatten(),
                    ),
                    TodoChange::Replace(new) => (
                        Some(new.title.as_ref()),
                        Some(new.completed),
                        true,
                        new.order,
                    ),
                };
                tx.query(
                    &stmts.update,
                    &[
                        &owner.as_ref(),
                        &id.into_inner(),
                        &title,
                        &completed,
                        &set_order,
                        &order,
                        at,
                        expected_versions,
                        &stmts.replica,
                        trace,
                    ],
                )
                .await
                .map(Raw::Rows)
            }
            Step::One(
                WriteCommand::Delete {
                    owner,
                    id,
                    expected_versions,
                },
                trace,
            ) => tx
                .query(
                    &stmts.delete,
                    &[
                        &owner.as_ref(),
                        &id.into_inner(),
                        expected_versions,
                        &stmts.replica,
                        trace,
                    ],
                )
                .await
                .map(Raw::Rows),
            Step::One(WriteCommand::Clear { owner, completed }, trace) => tx
                .query(
                    &stmts.clear,
                    &[&owner.as_ref(), completed, &stmts.replica, trace],
                )
                .await
                .map(Raw::Rows),
            Step::One(WriteCommand::Create { .. }, _) => Ok(Raw::Inserted),
        }
    }

    /// Turns one step's raw result into outcomes for its commands.
    async fn outcomes<C: GenericClient + Sync>(
        stmts: &WriterStatements,
        tx: &C,
        step: &Step<'_>,
        raw: Raw,
        out: &mut BatchOutcome,
    ) -> Result<(), tokio_postgres::Error> {
        match (step, raw) {
            (Step::Creates(todos, _), Raw::Inserted) => {
                out.extend(todos.iter().map(|t| Ok(WriteEffect::Created((*t).clone()))));
            }
            (
                Step::One(
                    WriteCommand::Update {
                        owner,
                        id,
                        expected_versions,
                        ..
                    },
                    _,
                ),
                Raw::Rows(rows),
            ) => {
                out.push(match rows.first() {
                    Some(row) => Ok(WriteEffect::Updated(todo_from_row(row)?)),
                    None => Err(Self::why_missing(stmts, tx, owner, *id, expected_versions).await?),
                });
            }
            (
                Step::One(
                    WriteCommand::Delete {
                        owner,
                        id,
                        expected_versions,
                    },
                    _,
                ),
                Raw::Rows(rows),
            ) => {
                out.push(if rows.is_empty() {
                    Err(Self::why_missing(stmts, tx, owner, *id, expected_versions).await?)
                } else {
                    Ok(WriteEffect::Deleted {
                        owner: owner.clone(),
                        id: *id,
                    })
                });
            }
            (Step::One(WriteCommand::Clear { owner, .. }, _), Raw::Rows(rows)) => {
                out.push(Ok(WriteEffect::Cleared {
                    owner: owner.clone(),
                    ids: rows
                        .iter()
                        .map(|r| r.try_get::<_, Uuid>(0).map(TodoId::from_uuid))
                        .collect::<Result<_, _>>()?,
                }));
            }
            _ => out.push(Err(DomainError::Unavailable(
                "unexpected statement result".into(),
            ))),
        }
        Ok(())
    }

    /// An update or delete matched no row: unknown id, or a stale `If-Match`.
    async fn why_missing<C: GenericClient + Sync>(
        stmts: &WriterStatements,
        tx: &C,
        owner: &Owner,
        id: TodoId,
        expected: &Option<Vec<i64>>,
    ) -> Result<DomainError, tokio_postgres::Error> {
        if expected.is_none() {
            return Ok(DomainError::NotFound);
        }
        let row = tx
            .query_opt(&stmts.version, &[&owner.as_ref(), &id.into_inner()])
            .await?;
        Ok(match row {
            Some(r) => DomainError::PreconditionFailed {
                current: r.try_get(0)?,
            },
            None => DomainError::NotFound,
        })
    }

    /// Fastest path, for batches with no `If-Match` and no idempotency key (so nothing
    /// needs a second look inside the transaction): BEGIN, every statement and COMMIT go
    /// out together, one round trip. A failed statement aborts the transaction, and the
    /// COMMIT that follows it then rolls back.
    async fn apply_single_trip(
        &self,
        commands: &[WriteCommand],
        traces: &[Option<Arc<str>>],
    ) -> Result<BatchOutcome, Attempt> {
        let steps = plan(commands, traces);
        let client = &self.client;
        let stmts = &self.stmts;
        // join! polls in order and each request is sent on its first poll: the server
        // receives them in this order.
        let (begun, raws, committed) = futures::join!(
            client.batch_execute("BEGIN"),
            join_all(steps.iter().map(|s| Self::run_step(stmts, client, s))),
            client.batch_execute("COMMIT"),
        );
        let mut ok = Vec::with_capacity(raws.len());
        let mut refused = None;
        let mut lost = begun.err();
        for raw in raws {
            match raw {
                Ok(raw) => ok.push(raw),
                // The first error the server answered is the cause; later ones are
                // "current transaction is aborted".
                Err(e) if e.as_db_error().is_some() => {
                    refused.get_or_insert(e);
                }
                Err(e) => {
                    lost.get_or_insert(e);
                }
            }
        }
        // A statement the server refused means the transaction is aborted and our COMMIT
        // rolled it back: safe to classify, isolate or retry.
        if let Some(e) = refused {
            return Err(Attempt::classify(e));
        }
        // Otherwise a lost connection may have lost the answers of statements (and of the
        // COMMIT) the server did run: the outcome is unknown, never "not written".
        if let Some(e) = lost {
            return Err(Attempt::Commit(e));
        }
        committed.map_err(Attempt::Commit)?;
        let mut out = Vec::with_capacity(commands.len());
        for (step, raw) in steps.iter().zip(ok) {
            // No preconditions here, so this never queries; a row that does not decode
            // now belongs to a committed change, which must not be retried.
            Self::outcomes(stmts, client, step, raw, &mut out)
                .await
                .map_err(Attempt::AfterCommit)?;
        }
        Ok(out)
    }

    /// Fast path: every step pipelined, one COMMIT.
    async fn apply_pipelined(
        &mut self,
        commands: &[WriteCommand],
        traces: &[Option<Arc<str>>],
    ) -> Result<BatchOutcome, Attempt> {
        let steps = plan(commands, traces);
        let tx = self.client.transaction().await.map_err(Attempt::Failed)?;
        let stmts = &self.stmts;
        let raws = join_all(steps.iter().map(|s| Self::run_step(stmts, &tx, s))).await;
        let mut out = Vec::with_capacity(commands.len());
        for (step, raw) in steps.iter().zip(raws) {
            let raw = raw.map_err(Attempt::classify)?;
            Self::outcomes(stmts, &tx, step, raw, &mut out)
                .await
                .map_err(Attempt::Failed)?;
        }
        Self::store_replies(stmts, &tx, commands, &out)
            .await
            .map_err(Attempt::classify)?;
        tx.commit().await.map_err(Attempt::Commit)?;
        Ok(out)
    }

    /// Stores the result of each successful command that carries an idempotency key,
    /// in the batch's transaction (a key already taken fails with a unique violation).
    async fn store_replies(
        stmts: &WriterStatements,
        tx: &Transaction<'_>,
        commands: &[WriteCommand],
        out: &BatchOutcome,
    ) -> Result<(), tokio_postgres::Error> {
        let mut owners: Vec<&str> = Vec::new();
        let mut keys: Vec<&str> = Vec::new();
        let mut hashes: Vec<&[u8]> = Vec::new();
        let mut outcomes: Vec<&str> = Vec::new();
        let mut statuses: Vec<i16> = Vec::new();
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for (command, result) in commands.iter().zip(out) {
            let (Some(key), Ok(WriteEffect::Created(todo) | WriteEffect::Updated(todo))) =
                (command.idempotency(), result)
            else {
                continue;
            };
            owners.push(todo.owner.as_ref());
            keys.push(&key.key);
            hashes.push(&key.request_hash);
            outcomes.push(command.replay_outcome().as_str());
            statuses.push(keys::legacy_status(command.replay_outcome()));
            bodies.push(serde_json::to_vec(&StoredTodo::from(todo)).unwrap_or_default());
        }
        if keys.is_empty() {
            return Ok(());
        }
        let purge_params: [&(dyn ToSql + Sync); 2] = [&owners, &keys];
        let insert_params: [&(dyn ToSql + Sync); 7] = [
            &owners,
            &keys,
            &hashes,
            &outcomes,
            &statuses,
            &HASH_SCHEME,
            &bodies,
        ];
        // Pipelined in this order: an expired key is purged before it is taken again.
        let (purged, inserted) = futures::join!(
            tx.execute(&stmts.purge_keys, &purge_params),
            tx.execute(&stmts.insert_keys, &insert_params),
        );
        purged?;
        inserted?;
        Ok(())
    }

    /// Slow path after a data error: a savepoint per step; a rejected step fails only
    /// its own commands. Still one transaction.
    async fn apply_isolated(
        &mut self,
        commands: &[WriteCommand],
        traces: &[Option<Arc<str>>],
    ) -> Result<BatchOutcome, Attempt> {
        // One step per command here, so a bad create does not take its run with it.
        let steps: Vec<Step<'_>> = commands
            .iter()
            .enumerate()
            .map(|(i, c)| Step::of(c, trace_of(traces, i)))
            .collect();
        let mut tx = self.client.transaction().await.map_err(Attempt::Failed)?;
        let mut out = Vec::with_capacity(commands.len());
        for (step, command) in steps.iter().zip(commands) {
            let sp = tx.savepoint("cmd").await.map_err(Attempt::Failed)?;
            let mut own = Vec::with_capacity(1);
            let done = match Self::run_step(&self.stmts, &sp, step).await {
                Ok(raw) => {
                    Self::outcomes(&self.stmts, &sp, step, raw, &mut own)
                        .await
                        .map_err(Attempt::Failed)?;
                    Self::store_replies(&self.stmts, &sp, std::slice::from_ref(command), &own).await
                }
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {
                    sp.commit().await.map_err(Attempt::Failed)?;
                    out.append(&mut own);
                }
                Err(e) if is_data_error(&e) => {
                    sp.rollback().await.map_err(Attempt::Failed)?;
                    out.push(Err(rejected(&e)));
                }
                Err(e) => return Err(Attempt::Failed(e)),
            }
        }
        tx.commit().await.map_err(Attempt::Commit)?;
        Ok(out)
    }
}

/// How a batch attempt failed.
enum Attempt {
    /// A command's data was rejected: re-run with savepoints.
    DataError,
    /// Failed before COMMIT (rolled back).
    Failed(tokio_postgres::Error),
    /// COMMIT itself failed.
    Commit(tokio_postgres::Error),
    /// COMMIT succeeded; reading the results back failed.
    AfterCommit(tokio_postgres::Error),
}

impl Attempt {
    fn classify(e: tokio_postgres::Error) -> Self {
        if is_data_error(&e) {
            Self::DataError
        } else {
            Self::Failed(e)
        }
    }

    fn into_store_error(self) -> StoreError {
        match self {
            Self::DataError => StoreError::Query("data error".into()),
            Self::Failed(e) => before_commit(&e),
            Self::Commit(e) => at_commit(&e),
            Self::AfterCommit(e) => StoreError::AfterCommit(describe(&e)),
        }
    }
}

/// A command whose data PostgreSQL refused. The client hears a fixed message: the
/// server's own text names constraints and columns, so it goes to the log only.
fn rejected(e: &tokio_postgres::Error) -> DomainError {
    if e.as_db_error()
        .is_some_and(|d| d.constraint() == Some("idempotency_keys_pkey"))
    {
        return DomainError::IdempotencyConflict;
    }
    tracing::warn!(
        error.message = %describe(e),
        constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or_default(),
        "the database refused a command's data"
    );
    DomainError::invalid("body", "the database refused a value of this request")
}

impl WriteConn for PgWriter {
    async fn apply_batch(
        &mut self,
        commands: &[WriteCommand],
        traces: &[Option<Arc<str>>],
    ) -> Result<BatchOutcome, StoreError> {
        let simple = commands.iter().all(|c| {
            c.idempotency().is_none()
                && !matches!(
                    c,
                    WriteCommand::Update {
                        expected_versions: Some(_),
                        ..
                    } | WriteCommand::Delete {
                        expected_versions: Some(_),
                        ..
                    }
                )
        });
        let attempt = if simple {
            self.apply_single_trip(commands, traces).await
        } else {
            self.apply_pipelined(commands, traces).await
        };
        match attempt {
            Ok(out) => Ok(out),
            Err(Attempt::DataError) => self
                .apply_isolated(commands, traces)
                .await
                .map_err(Attempt::into_store_error),
            Err(other) => Err(other.into_store_error()),
        }
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn session(&self) -> SessionId {
        self.session
    }
}
