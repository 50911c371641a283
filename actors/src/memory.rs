//! An in-memory `TodoStore` for actor unit tests: fault injection and counters.
//! Never proof of what the service promises; that is tested against PostgreSQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::{DomainError, ListQuery, Owner, Todo, TodoId, WriteCommand, WriteEffect, now};
use crate::store::{BatchOutcome, ReadConn, StoreError, TodoStore, WriteConn};

/// Faults the next operations will meet.
#[derive(Default)]
pub struct Faults {
    /// Refuse connections.
    pub down: AtomicBool,
    /// Fail this many batches with a rolled-back error.
    pub transient_batches: AtomicUsize,
    /// Fail the next batch with an unknown COMMIT outcome (it *is* applied).
    pub commit_unknown: AtomicBool,
    /// Delay per batch, milliseconds.
    pub batch_delay_ms: AtomicUsize,
}

/// Shared in-memory tables plus counters.
#[derive(Clone, Default)]
pub struct MemoryStore {
    pub todos: Arc<Mutex<HashMap<TodoId, Todo>>>,
    pub faults: Arc<Faults>,
    /// Sizes of the committed batches, in order.
    pub batches: Arc<Mutex<Vec<usize>>>,
    /// Sizes of the point-read queries, in order.
    pub reads: Arc<Mutex<Vec<usize>>>,
    /// How many list queries ran.
    pub lists: Arc<AtomicUsize>,
    /// Delay per read query, milliseconds.
    pub read_delay_ms: Arc<AtomicUsize>,
}

impl MemoryStore {
    fn check_up(&self) -> Result<(), StoreError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        Ok(())
    }
}

impl TodoStore for MemoryStore {
    type Writer = MemoryConn;
    type Reader = MemoryConn;

    async fn connect_writer(&self) -> Result<MemoryConn, StoreError> {
        self.check_up()?;
        Ok(MemoryConn(self.clone()))
    }

    async fn connect_reader(&self) -> Result<MemoryConn, StoreError> {
        self.check_up()?;
        Ok(MemoryConn(self.clone()))
    }
}

/// A "connection" to the memory store.
pub struct MemoryConn(MemoryStore);

fn apply_one(
    todos: &mut HashMap<TodoId, Todo>,
    command: &WriteCommand,
) -> Result<WriteEffect, DomainError> {
    match command {
        WriteCommand::Create { todo } => {
            if todo.title.contains("reject-me") {
                return Err(DomainError::invalid("title", "rejected by the store"));
            }
            todos.insert(todo.id, todo.clone());
            Ok(WriteEffect::Created(todo.clone()))
        }
        WriteCommand::Update {
            owner,
            id,
            change,
            expected_version,
            at,
        } => {
            let todo = todos
                .get_mut(id)
                .filter(|t| &t.owner == owner)
                .ok_or(DomainError::NotFound)?;
            if let Some(v) = expected_version.filter(|v| *v != todo.version) {
                let _ = v;
                return Err(DomainError::PreconditionFailed {
                    current: todo.version,
                });
            }
            *todo = todo.changed(change, *at);
            Ok(WriteEffect::Updated(todo.clone()))
        }
        WriteCommand::Delete { owner, id, .. } => {
            if todos.get(id).is_some_and(|t| &t.owner == owner) {
                todos.remove(id);
                Ok(WriteEffect::Deleted {
                    owner: owner.clone(),
                    id: *id,
                })
            } else {
                Err(DomainError::NotFound)
            }
        }
        WriteCommand::Clear { owner, completed } => {
            let ids: Vec<TodoId> = todos
                .values()
                .filter(|t| &t.owner == owner && completed.is_none_or(|c| t.completed == c))
                .map(|t| t.id)
                .collect();
            for id in &ids {
                todos.remove(id);
            }
            Ok(WriteEffect::Cleared {
                owner: owner.clone(),
                ids,
            })
        }
    }
}

impl WriteConn for MemoryConn {
    async fn apply_batch(&mut self, commands: &[WriteCommand]) -> Result<BatchOutcome, StoreError> {
        let store = &self.0;
        store.check_up()?;
        let delay = store.faults.batch_delay_ms.load(Ordering::SeqCst) as u64;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let transient = &store.faults.transient_batches;
        if transient
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Transient("serialization failure".into()));
        }
        let mut todos = store.todos.lock().expect("test lock");
        let results = commands.iter().map(|c| apply_one(&mut todos, c)).collect();
        store.batches.lock().expect("test lock").push(commands.len());
        if store.faults.commit_unknown.swap(false, Ordering::SeqCst) {
            return Err(StoreError::CommitUnknown("connection reset during COMMIT".into()));
        }
        Ok(results)
    }

    fn is_closed(&self) -> bool {
        self.0.faults.down.load(Ordering::SeqCst)
    }
}

impl ReadConn for MemoryConn {
    async fn get_todos(&self, keys: &[(Owner, TodoId)]) -> Result<Vec<Todo>, StoreError> {
        let store = &self.0;
        store.check_up()?;
        let delay = store.read_delay_ms.load(Ordering::SeqCst) as u64;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        store.reads.lock().expect("test lock").push(keys.len());
        let todos = store.todos.lock().expect("test lock");
        Ok(keys
            .iter()
            .filter_map(|(o, id)| todos.get(id).filter(|t| &t.owner == o).cloned())
            .collect())
    }

    async fn list_todos(&self, query: &ListQuery) -> Result<Vec<Todo>, StoreError> {
        let store = &self.0;
        store.check_up()?;
        let delay = store.read_delay_ms.load(Ordering::SeqCst) as u64;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        store.lists.fetch_add(1, Ordering::SeqCst);
        let todos = store.todos.lock().expect("test lock");
        let mut page: Vec<Todo> = todos
            .values()
            .filter(|t| t.owner == query.owner && query.completed.is_none_or(|c| t.completed == c))
            .cloned()
            .collect();
        page.sort_by_key(|t| (t.order.is_none(), t.order, t.created_at, t.id));
        page.truncate(query.limit as usize);
        Ok(page)
    }

    fn is_closed(&self) -> bool {
        self.0.faults.down.load(Ordering::SeqCst)
    }
}

/// A timestamp for fixtures.
pub fn at() -> chrono::DateTime<chrono::Utc> {
    now()
}
