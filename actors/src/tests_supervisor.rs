//! `RootSupervisor` unit tests: restarts, calls to a dead actor, meltdown, draining.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};

use crate::handles::{ActorHandles, ActorInfo, ActorStatus, WRITER, shard_name};
use crate::memory::{MemoryStore, TestSystem, owner, periodic_check, test_config};
use crate::metrics::ReadSource;
use crate::slot::CallError;
use crate::supervisor::{
    ActorConfig, ChildSpec, HEALTHY_AFTER, RootSupervisor, SpawnFuture, SupervisorArgs,
};

fn info(handles: &ActorHandles, name: &str) -> Option<ActorInfo> {
    handles.snapshot().into_iter().find(|i| i.name == name)
}

fn writer_id(sys: &TestSystem) -> Option<ActorId> {
    sys.handles.writer.get().map(|a| a.get_id())
}

/// Panics the writer and waits until a new incarnation runs; returns how long it took.
async fn panic_writer_and_wait_for_restart(sys: &TestSystem) -> Duration {
    let old = writer_id(sys).expect("writer running");
    let started = Instant::now();
    assert!(sys.handles.chaos_panic(WRITER), "the panic was delivered");
    let restarted = periodic_check(
        || writer_id(sys).is_some_and(|id| id != old),
        Duration::from_secs(1),
    )
    .await;
    assert!(restarted, "the writer was not restarted");
    started.elapsed()
}

#[tokio::test]
async fn a_panicking_writer_is_restarted_quickly() {
    // Arrange
    let sys = TestSystem::with_shards(2).await;

    // Act
    let elapsed = panic_writer_and_wait_for_restart(&sys).await;

    // Assert: first restart after ~10 ms.
    assert!(elapsed < Duration::from_millis(200), "took {elapsed:?}");
    let recorded = periodic_check(
        || {
            info(&sys.handles, WRITER)
                .is_some_and(|i| i.restarts == 1 && i.status == ActorStatus::Running)
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(recorded, "snapshot: {:?}", info(&sys.handles, WRITER));
    let last_failure = info(&sys.handles, WRITER)
        .and_then(|i| i.last_failure)
        .unwrap_or_default();
    assert!(
        last_failure.contains("chaos"),
        "last failure: {last_failure}"
    );
    // The new incarnation works.
    let todo = sys.create(&owner("alice"), "after restart").await;
    assert_eq!(sys.store.stored(todo.id), Some(todo));
    sys.shutdown().await;
}

#[tokio::test]
async fn a_killed_shard_is_restarted_and_calls_queued_to_it_fail_unavailable() {
    // Arrange
    let sys = TestSystem::with_shards(2).await;
    let alice = owner("alice");
    let todo = sys.store.seed(&alice, "survivor");
    let index = sys.handles.shard_index(&alice);
    let name = shard_name(index);
    let old = sys.handles.shards[index]
        .get()
        .expect("shard running")
        .get_id();

    // Act: the shard is killed with the gets in its mailbox.
    let answers = {
        let mut queued = pin!(join_all((0..5).map(|_| sys.get(&alice, todo.id))));
        assert!(
            futures::poll!(queued.as_mut()).is_pending(),
            "the gets are queued"
        );
        assert!(sys.handles.chaos_kill(&name));
        tokio::time::timeout(Duration::from_secs(1), queued)
            .await
            .expect("calls to a dead actor do not hang")
    };

    // Assert
    assert!(
        answers.iter().all(|a| a == &Err(CallError::Unavailable)),
        "{answers:?}"
    );
    let restarted = periodic_check(
        || {
            sys.handles.shards[index]
                .get()
                .is_some_and(|a| a.get_id() != old)
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(restarted, "the shard was not restarted");
    let read = sys.get(&alice, todo.id).await;
    assert!(matches!(&read, Ok(Ok(r)) if r.todo == todo && r.source == ReadSource::Db));
    let recorded = periodic_check(
        || info(&sys.handles, &name).is_some_and(|i| i.restarts == 1),
        Duration::from_secs(1),
    )
    .await;
    assert!(recorded, "snapshot: {:?}", info(&sys.handles, &name));
    sys.shutdown().await;
}

#[tokio::test]
async fn exceeding_restart_intensity_stops_the_supervisor_and_marks_health_not_live() {
    // Arrange: two failures are tolerated within the period.
    let config = ActorConfig {
        restart_intensity: 2,
        ..test_config()
    };
    let sys = TestSystem::start(MemoryStore::default(), config, 1).await;
    panic_writer_and_wait_for_restart(&sys).await;
    panic_writer_and_wait_for_restart(&sys).await;
    assert!(sys.handles.health.is_live());

    // Act: the third failure.
    assert!(sys.handles.chaos_panic(WRITER));

    // Assert
    tokio::time::timeout(Duration::from_secs(1), sys.supervisor_done)
        .await
        .expect("the supervisor stops")
        .expect("the supervisor task ends cleanly");
    assert!(!sys.handles.health.is_live());
    let writer = info(&sys.handles, WRITER).expect("writer recorded");
    assert_eq!(writer.status, ActorStatus::Stopped);
    assert_eq!(writer.restarts, 2);
}

#[tokio::test]
async fn once_draining_a_failed_actor_is_not_restarted() {
    // Arrange
    let sys = TestSystem::with_shards(2).await;
    sys.handles.health.start_draining();
    let shard = shard_name(0);

    // Act
    assert!(sys.handles.chaos_panic(WRITER));
    assert!(sys.handles.chaos_kill(&shard));

    // Assert: both slots empty and marked stopped, and they stay so past the backoff.
    let stopped = periodic_check(
        || {
            [WRITER, shard.as_str()]
                .iter()
                .all(|n| info(&sys.handles, n).is_some_and(|i| i.status == ActorStatus::Stopped))
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(stopped, "snapshot: {:?}", sys.handles.snapshot());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sys.handles.writer.get().is_none());
    assert!(sys.handles.shards[0].get().is_none());
    assert_eq!(info(&sys.handles, WRITER).map(|i| i.restarts), Some(0));
    assert!(sys.handles.health.is_live(), "draining is not a meltdown");
    sys.shutdown().await;
}

#[tokio::test]
async fn a_restart_scheduled_before_draining_began_is_dropped() {
    // Arrange: two recent failures make the next restart wait 40 ms.
    let sys = TestSystem::with_shards(1).await;
    panic_writer_and_wait_for_restart(&sys).await;
    panic_writer_and_wait_for_restart(&sys).await;
    assert!(sys.handles.chaos_panic(WRITER));
    let restarting = periodic_check(
        || info(&sys.handles, WRITER).is_some_and(|i| i.status == ActorStatus::Restarting),
        Duration::from_secs(1),
    )
    .await;
    assert!(restarting, "snapshot: {:?}", info(&sys.handles, WRITER));

    // Act
    sys.handles.health.start_draining();
    tokio::time::sleep(Duration::from_millis(150)).await;

    // Assert
    assert!(
        sys.handles.writer.get().is_none(),
        "restarted while draining"
    );
    assert_eq!(info(&sys.handles, WRITER).map(|i| i.restarts), Some(2));
    sys.shutdown().await;
}

#[tokio::test]
async fn a_child_that_ran_healthily_is_restarted_at_once_however_often_it_failed_before() {
    // Arrange
    let sys = TestSystem::with_shards(1).await;

    // Act: three independent failures, each after the writer ran for a while.
    let mut delays = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(HEALTHY_AFTER + Duration::from_millis(50)).await;
        delays.push(panic_writer_and_wait_for_restart(&sys).await);
    }

    // Assert: no backoff built up (it would be 10, 20, 40 ms and more).
    assert!(
        delays.iter().all(|d| *d < Duration::from_millis(50)),
        "{delays:?}"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn a_crash_loop_still_backs_off() {
    // Arrange
    let sys = TestSystem::with_shards(1).await;

    // Act: the writer fails right after each restart.
    let mut delays = Vec::new();
    for _ in 0..5 {
        delays.push(panic_writer_and_wait_for_restart(&sys).await);
    }

    // Assert: 10, 20, 40, 80, 160 ms: the last restarts wait longer and longer.
    assert!(delays[4] >= Duration::from_millis(150), "{delays:?}");
    assert!(delays[3] >= Duration::from_millis(75), "{delays:?}");
    sys.shutdown().await;
}

/// A child of the kind the service crate provides (NATS consumers, maintenance): its
/// slot is an `Option<ActorCell>` here.
struct Echo;

impl Actor for Echo {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

#[derive(Default)]
struct EchoSpec {
    slot: Mutex<Option<ActorCell>>,
    spawned: AtomicUsize,
}

impl ChildSpec for EchoSpec {
    fn name(&self) -> &str {
        "echo"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_> {
        Box::pin(async move {
            let (actor, _) = Actor::spawn_linked(None, Echo, (), supervisor).await?;
            self.spawned.fetch_add(1, Ordering::SeqCst);
            *self.slot.lock().expect("test lock") = Some(actor.get_cell());
            Ok(actor.get_cell())
        })
    }

    fn clear(&self, id: ActorId) {
        let mut slot = self.slot.lock().expect("test lock");
        if slot.as_ref().is_some_and(|c| c.get_id() == id) {
            *slot = None;
        }
    }
}

#[tokio::test]
async fn a_child_from_a_child_spec_is_supervised_like_the_others() {
    // Arrange
    let spec = Arc::new(EchoSpec::default());
    let handles = crate::memory::test_handles(1);
    let (supervisor, done) = Actor::spawn(
        None,
        RootSupervisor::new(MemoryStore::default()),
        SupervisorArgs {
            config: test_config(),
            handles: Arc::clone(&handles),
            others: vec![Arc::clone(&spec) as Arc<dyn ChildSpec>],
        },
    )
    .await
    .expect("supervisor starts");
    assert_eq!(spec.spawned.load(Ordering::SeqCst), 1);
    assert!(info(&handles, "echo").is_some_and(|i| i.status == ActorStatus::Running));

    // Act
    assert!(handles.chaos_kill("echo"), "the chaos hook reaches it");

    // Assert: restarted, its slot refilled, the restart recorded.
    let restarted = periodic_check(
        || {
            spec.spawned.load(Ordering::SeqCst) == 2
                && spec.slot.lock().expect("test lock").is_some()
                && info(&handles, "echo").is_some_and(|i| i.restarts == 1)
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(restarted, "snapshot: {:?}", info(&handles, "echo"));
    handles.health.start_draining();
    supervisor.stop(None);
    let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
}
