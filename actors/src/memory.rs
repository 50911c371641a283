//! An in-memory `TodoStore` for actor unit tests: fault injection and counters.
//! Never proof of what the service promises; that is tested against PostgreSQL.
//! Also the small harness the actor tests share ([`TestSystem`], [`periodic_check`],
//! command builders).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorRef};

use crate::domain::{
    DomainError, ListQuery, NewTodo, Owner, StoredReply, Todo, TodoChange, TodoId, TodoTitle,
    WriteCommand, WriteEffect, now,
};
use crate::handles::ActorHandles;
use crate::metrics::NoopSink;
use crate::shard::{ReadOutcome, ShardMessage};
use crate::slot::CallError;
use crate::store::SessionId;
use crate::store::{BatchOutcome, ReadConn, StoreError, TodoStore, WriteConn};
use crate::supervisor::{ActorConfig, RootMessage, RootSupervisor, SupervisorArgs};
use crate::writer::Origin;
use crate::writer::{WriteReply, WriterMessage};

/// One applied batch: when it started and ended, and the ids it touched.
pub type BatchRecord = (Instant, Instant, Vec<TodoId>);

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
    /// When non-zero, the next batch answers "COMMIT outcome unknown" at once and its
    /// COMMIT lands this many milliseconds later (the server was still committing when
    /// the client gave up); `await_fate` completes only after it landed.
    pub late_commit_ms: AtomicUsize,
    /// Panic inside this many batches (before applying them).
    pub panic_batches: AtomicUsize,
    /// Apply the next batch, then fail reading its results back.
    pub after_commit_error: AtomicBool,
    /// Delay per connect, milliseconds.
    pub connect_delay_ms: AtomicUsize,
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
    /// Stored idempotent replies by (owner, key).
    pub replies: Arc<Mutex<HashMap<(Owner, String), StoredReply>>>,
    /// Delay per read query *after* it took its rows, milliseconds: the answer is in
    /// flight while writes carry on, so what it returns may already be out of date.
    pub read_reply_delay_ms: Arc<AtomicUsize>,
    /// Every batch applied: when it started and ended, and the ids it touched.
    pub batch_log: Arc<Mutex<Vec<BatchRecord>>>,
    /// Sessions handed out so far.
    sessions: Arc<AtomicU64>,
    /// Sessions whose late COMMIT has not landed yet.
    unsettled: Arc<Mutex<HashSet<u64>>>,
    /// How many times `await_fate` was asked.
    pub fate_checks: Arc<AtomicUsize>,
}

impl MemoryStore {
    async fn reply_delay(&self) {
        let delay = self.read_reply_delay_ms.load(Ordering::SeqCst) as u64;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }

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
        self.connect_delay().await;
        self.check_up()?;
        Ok(self.conn())
    }

    async fn connect_reader(&self) -> Result<MemoryConn, StoreError> {
        self.connect_delay().await;
        self.check_up()?;
        Ok(self.conn())
    }

    async fn await_fate(&self, session: SessionId) -> Result<(), StoreError> {
        self.fate_checks.fetch_add(1, Ordering::SeqCst);
        loop {
            self.check_up()?;
            if !self
                .unsettled
                .lock()
                .expect("test lock")
                .contains(&session.0)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl MemoryStore {
    async fn connect_delay(&self) {
        let delay = self.faults.connect_delay_ms.load(Ordering::SeqCst) as u64;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }

    fn conn(&self) -> MemoryConn {
        MemoryConn {
            store: self.clone(),
            session: self.sessions.fetch_add(1, Ordering::SeqCst),
        }
    }
}

/// A "connection" to the memory store.
pub struct MemoryConn {
    store: MemoryStore,
    session: u64,
}

fn apply_one(
    todos: &mut HashMap<TodoId, Todo>,
    command: &WriteCommand,
) -> Result<WriteEffect, DomainError> {
    match command {
        WriteCommand::Create { todo, .. } => {
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
            expected_versions,
            at,
            ..
        } => {
            let todo = todos
                .get_mut(id)
                .filter(|t| &t.owner == owner)
                .ok_or(DomainError::NotFound)?;
            if expected_versions
                .as_ref()
                .is_some_and(|vs| !vs.contains(&todo.version))
            {
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
    async fn apply_batch(
        &mut self,
        commands: &[WriteCommand],
        _traces: &[Option<Arc<str>>],
    ) -> Result<BatchOutcome, StoreError> {
        let store = self.store.clone();
        store.check_up()?;
        let started = Instant::now();
        if store
            .faults
            .panic_batches
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("chaos: a batch task panics");
        }
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
        let late = store.faults.late_commit_ms.swap(0, Ordering::SeqCst) as u64;
        if late > 0 {
            // The client hears nothing back; the server commits a little later.
            store
                .unsettled
                .lock()
                .expect("test lock")
                .insert(self.session);
            let (commands, session) = (commands.to_vec(), self.session);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(late)).await;
                let _ = store.commit(&commands, started);
                store.unsettled.lock().expect("test lock").remove(&session);
            });
            return Err(StoreError::CommitUnknown(
                "connection reset during COMMIT".into(),
            ));
        }
        let results = store.commit(commands, started);
        if store.faults.commit_unknown.swap(false, Ordering::SeqCst) {
            return Err(StoreError::CommitUnknown(
                "connection reset during COMMIT".into(),
            ));
        }
        if store
            .faults
            .after_commit_error
            .swap(false, Ordering::SeqCst)
        {
            return Err(StoreError::AfterCommit("cannot decode a row".into()));
        }
        Ok(results)
    }

    fn is_closed(&self) -> bool {
        self.store.faults.down.load(Ordering::SeqCst)
    }

    fn session(&self) -> SessionId {
        SessionId(self.session)
    }
}

impl MemoryStore {
    /// Applies `commands` as one committed transaction.
    fn commit(&self, commands: &[WriteCommand], started: Instant) -> BatchOutcome {
        let store = self;
        let mut todos = store.todos.lock().expect("test lock");
        let mut replies = store.replies.lock().expect("test lock");
        let results = commands
            .iter()
            .map(|c| {
                let key = c.idempotency().map(|k| (c.owner().clone(), k.key.clone()));
                if key.as_ref().is_some_and(|k| replies.contains_key(k)) {
                    return Err(DomainError::IdempotencyConflict);
                }
                let result = apply_one(&mut todos, c);
                if let (Some(k), Some(i), Ok(WriteEffect::Created(t) | WriteEffect::Updated(t))) =
                    (key, c.idempotency(), &result)
                {
                    replies.insert(
                        k,
                        StoredReply {
                            request_hash: Some(i.request_hash.clone()),
                            outcome: c.replay_outcome(),
                            todo: t.clone(),
                        },
                    );
                }
                result
            })
            .collect();
        store
            .batches
            .lock()
            .expect("test lock")
            .push(commands.len());
        let ids = commands.iter().filter_map(|c| c.key().1).collect();
        store
            .batch_log
            .lock()
            .expect("test lock")
            .push((started, Instant::now(), ids));
        results
    }
}

impl ReadConn for MemoryConn {
    async fn get_todos(&self, keys: &[(Owner, TodoId)]) -> Result<Vec<Todo>, StoreError> {
        let store = &self.store;
        store.check_up()?;
        let delay = store.read_delay_ms.load(Ordering::SeqCst) as u64;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        store.reads.lock().expect("test lock").push(keys.len());
        let found: Vec<Todo> = {
            let todos = store.todos.lock().expect("test lock");
            keys.iter()
                .filter_map(|(o, id)| todos.get(id).filter(|t| &t.owner == o).cloned())
                .collect()
        };
        store.reply_delay().await;
        Ok(found)
    }

    async fn list_todos(&self, query: &ListQuery) -> Result<Vec<Todo>, StoreError> {
        let store = &self.store;
        store.check_up()?;
        let delay = store.read_delay_ms.load(Ordering::SeqCst) as u64;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        store.lists.fetch_add(1, Ordering::SeqCst);
        let page = {
            let todos = store.todos.lock().expect("test lock");
            let mut page: Vec<Todo> = todos
                .values()
                .filter(|t| {
                    t.owner == query.owner && query.completed.is_none_or(|c| t.completed == c)
                })
                .cloned()
                .collect();
            page.sort_by_key(|t| (t.order.is_none(), t.order, t.created_at, t.id));
            page.truncate(query.limit as usize);
            page
        };
        store.reply_delay().await;
        Ok(page)
    }

    async fn get_reply(&self, owner: &Owner, key: &str) -> Result<Option<StoredReply>, StoreError> {
        self.store.check_up()?;
        let replies = self.store.replies.lock().expect("test lock");
        Ok(replies.get(&(owner.clone(), key.to_owned())).cloned())
    }

    fn is_closed(&self) -> bool {
        self.store.faults.down.load(Ordering::SeqCst)
    }
}

/// A timestamp for fixtures.
pub fn at() -> chrono::DateTime<chrono::Utc> {
    now()
}

// ---- Harness shared by the actor tests (writer, shard, supervisor) ----

/// How long a test call waits for an answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Tunables for tests: no linger, generous timeouts, tolerant restart intensity.
pub fn test_config() -> ActorConfig {
    ActorConfig {
        batch_max: 64,
        batch_linger: Duration::ZERO,
        // One batch at a time, so the batching tests see deterministic batch sizes.
        writer_connections: 1,
        cache_capacity: 1000,
        db_timeout: Duration::from_secs(1),
        restart_intensity: 10,
        restart_period: Duration::from_secs(10),
    }
}

/// Empty handles with `shards` query shards and a metrics sink that drops everything.
pub fn test_handles(shards: usize) -> Arc<ActorHandles> {
    Arc::new(ActorHandles::new(shards, Arc::new(NoopSink)))
}

/// A whole actor system over a [`MemoryStore`], started by the real `RootSupervisor`.
pub struct TestSystem {
    /// The store the actors use (faults and counters are reachable through it).
    pub store: MemoryStore,
    /// The slots the supervisor fills.
    pub handles: Arc<ActorHandles>,
    /// The supervisor.
    pub supervisor: ActorRef<RootMessage>,
    /// Completes when the supervisor stops.
    pub supervisor_done: JoinHandle<()>,
}

impl TestSystem {
    /// Spawns the supervisor (and so every actor) over `store`.
    pub async fn start(store: MemoryStore, config: ActorConfig, shards: usize) -> Self {
        crate::supervisor::quiet_chaos_panics();
        let handles = test_handles(shards);
        let (supervisor, supervisor_done) = Actor::spawn(
            None,
            RootSupervisor::new(store.clone()),
            SupervisorArgs {
                config,
                handles: Arc::clone(&handles),
                others: Vec::new(),
            },
        )
        .await
        .expect("the supervisor starts");
        Self {
            store,
            handles,
            supervisor,
            supervisor_done,
        }
    }

    /// A system with the test config and `shards` shards over a fresh store.
    pub async fn with_shards(shards: usize) -> Self {
        Self::start(MemoryStore::default(), test_config(), shards).await
    }

    /// Sends a command to the writer through its slot.
    pub async fn write(&self, command: WriteCommand) -> Result<WriteReply, CallError> {
        self.handles
            .writer
            .call(
                |reply| WriterMessage::Write {
                    command,
                    origin: Origin::here("test".into()),
                    reply,
                },
                CALL_TIMEOUT,
            )
            .await
    }

    /// Creates a todo through the writer and returns it as committed.
    pub async fn create(&self, owner: &Owner, title: &str) -> Todo {
        match self.write(create(owner, title)).await {
            Ok(Ok(WriteEffect::Created(todo))) => todo,
            other => panic!("create failed: {other:?}"),
        }
    }

    /// Reads one todo through the owner's shard.
    pub async fn get(
        &self,
        owner: &Owner,
        id: TodoId,
    ) -> Result<Result<ReadOutcome, DomainError>, CallError> {
        self.get_via(self.handles.shard_index(owner), owner, id)
            .await
    }

    /// Reads one todo through shard `index`, whoever owns it.
    pub async fn get_via(
        &self,
        index: usize,
        owner: &Owner,
        id: TodoId,
    ) -> Result<Result<ReadOutcome, DomainError>, CallError> {
        let owner = owner.clone();
        self.handles.shards[index]
            .call(
                |reply| ShardMessage::Get {
                    owner,
                    id,
                    span: tracing::Span::current(),
                    reply,
                },
                CALL_TIMEOUT,
            )
            .await
    }

    /// Lists the owner's todos (first page of 100) through the owner's shard.
    pub async fn list(&self, owner: &Owner) -> Result<Result<Vec<Todo>, DomainError>, CallError> {
        let query = list_query(owner);
        self.handles
            .shard_for(owner)
            .call(
                |reply| ShardMessage::List {
                    query,
                    span: tracing::Span::current(),
                    reply,
                },
                CALL_TIMEOUT,
            )
            .await
    }

    /// Drains (no restarts) and stops the supervisor.
    pub async fn shutdown(self) {
        self.handles.health.start_draining();
        self.supervisor.stop(None);
        let _ = tokio::time::timeout(CALL_TIMEOUT, self.supervisor_done).await;
    }
}

/// Polls `check` every millisecond until it holds or `timeout` passes; true if it held.
pub async fn periodic_check(mut check: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// An owner.
pub fn owner(name: &str) -> Owner {
    Owner::parse(name).expect("valid owner")
}

/// A create command for `title`.
pub fn create(owner: &Owner, title: &str) -> WriteCommand {
    WriteCommand::create(
        owner.clone(),
        NewTodo {
            title: TodoTitle::parse(title).expect("valid title"),
            completed: false,
            order: None,
        },
    )
}

/// An update command setting the title only.
pub fn retitle(owner: &Owner, id: TodoId, title: &str) -> WriteCommand {
    WriteCommand::Update {
        owner: owner.clone(),
        id,
        change: TodoChange::Patch {
            title: Some(TodoTitle::parse(title).expect("valid title")),
            completed: None,
            order: None,
        },
        expected_versions: None,
        at: at(),
        idempotency: None,
    }
}

/// A delete command.
pub fn delete(owner: &Owner, id: TodoId) -> WriteCommand {
    WriteCommand::Delete {
        owner: owner.clone(),
        id,
        expected_versions: None,
    }
}

/// The first page (100) of an owner's todos.
pub fn list_query(owner: &Owner) -> ListQuery {
    ListQuery {
        owner: owner.clone(),
        completed: None,
        limit: 100,
        after: None,
    }
}

impl MemoryStore {
    /// Puts a todo straight into the table (no writer, so no shard has it cached).
    pub fn seed(&self, owner: &Owner, title: &str) -> Todo {
        let WriteCommand::Create { todo, .. } = create(owner, title) else {
            unreachable!("create builds a Create");
        };
        self.todos
            .lock()
            .expect("test lock")
            .insert(todo.id, todo.clone());
        todo
    }

    /// The stored todo with `id`, if any.
    pub fn stored(&self, id: TodoId) -> Option<Todo> {
        self.todos.lock().expect("test lock").get(&id).cloned()
    }

    /// How many todos are stored.
    pub fn count(&self) -> usize {
        self.todos.lock().expect("test lock").len()
    }

    /// Sizes of the committed batches so far.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().expect("test lock").clone()
    }

    /// Sizes of the point-read queries so far.
    pub fn read_sizes(&self) -> Vec<usize> {
        self.reads.lock().expect("test lock").clone()
    }
}
