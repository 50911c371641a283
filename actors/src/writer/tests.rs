//! Writer unit tests over the in-memory store (batching, failures, ordering, drain).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::future::join_all;
use ractor::Actor;

use super::{Origin, WriteReply, Writer, WriterArgs, WriterMessage, WriterShared};
use crate::domain::{DomainError, WriteEffect};
use crate::handles::WRITER;
use crate::memory::{
    CALL_TIMEOUT, MemoryStore, TestSystem, create, owner, periodic_check, retitle, test_config,
    test_handles,
};
use crate::metrics::ReadSource;
use crate::slot::CallError;

#[tokio::test]
async fn commands_that_arrive_together_are_committed_in_one_batch() {
    // Arrange: each batch takes 20 ms, so commands sent meanwhile queue up.
    let sys = TestSystem::with_shards(2).await;
    sys.store.faults.batch_delay_ms.store(20, Ordering::SeqCst);
    let alice = owner("alice");
    let first = {
        let handles = Arc::clone(&sys.handles);
        let command = create(&alice, "first");
        tokio::spawn(async move {
            handles
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
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;

    // Act: 49 more while the first batch commits.
    let replies = join_all((0..49).map(|i| sys.write(create(&alice, &format!("t{i}"))))).await;
    let first = first.await.expect("first call task");

    // Assert: two transactions for 50 commands, and every caller got its todo.
    assert_eq!(sys.store.batch_sizes(), vec![1, 49]);
    assert!(
        matches!(first, Ok(Ok(WriteEffect::Created(_)))),
        "{first:?}"
    );
    for (i, reply) in replies.into_iter().enumerate() {
        match reply {
            Ok(Ok(WriteEffect::Created(todo))) => assert_eq!(todo.title, format!("t{i}")),
            other => panic!("command {i}: {other:?}"),
        }
    }
    assert_eq!(sys.store.count(), 50);
    sys.shutdown().await;
}

#[tokio::test]
async fn batch_max_caps_a_batch() {
    // Arrange
    let config = crate::supervisor::ActorConfig {
        batch_max: 8,
        ..test_config()
    };
    let sys = TestSystem::start(MemoryStore::default(), config, 1).await;
    sys.store.faults.batch_delay_ms.store(2, Ordering::SeqCst);
    let alice = owner("alice");

    // Act
    let replies = join_all((0..50).map(|i| sys.write(create(&alice, &format!("t{i}"))))).await;

    // Assert
    assert!(
        replies
            .iter()
            .all(|r| matches!(r, Ok(Ok(WriteEffect::Created(_)))))
    );
    let sizes = sys.store.batch_sizes();
    assert!(sizes.iter().all(|&n| n <= 8), "batches: {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 50, "batches: {sizes:?}");
    assert!(sizes.len() >= 7, "batches: {sizes:?}");
    sys.shutdown().await;
}

#[tokio::test]
async fn a_rejected_command_fails_alone() {
    // Arrange
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let commands = vec![
        create(&alice, "good one"),
        create(&alice, "please reject-me"),
        create(&alice, "good two"),
    ];

    // Act: the three arrive together, so they share one batch.
    let replies = join_all(commands.into_iter().map(|c| sys.write(c))).await;

    // Assert
    assert_eq!(sys.store.batch_sizes(), vec![3]);
    let Ok(Ok(WriteEffect::Created(one))) = &replies[0] else {
        panic!("first: {:?}", replies[0]);
    };
    assert!(
        matches!(
            &replies[1],
            Ok(Err(DomainError::Invalid { field: "title", .. }))
        ),
        "rejected: {:?}",
        replies[1]
    );
    let Ok(Ok(WriteEffect::Created(two))) = &replies[2] else {
        panic!("third: {:?}", replies[2]);
    };
    assert_eq!(sys.store.stored(one.id).as_ref(), Some(one));
    assert_eq!(sys.store.stored(two.id).as_ref(), Some(two));
    assert_eq!(sys.store.count(), 2);
    sys.shutdown().await;
}

#[tokio::test]
async fn a_rolled_back_batch_is_retried_and_succeeds() {
    // Arrange
    let sys = TestSystem::with_shards(1).await;
    sys.store
        .faults
        .transient_batches
        .store(1, Ordering::SeqCst);
    let alice = owner("alice");

    // Act
    let reply = sys.write(create(&alice, "retried")).await;

    // Assert
    let Ok(Ok(WriteEffect::Created(todo))) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(sys.store.stored(todo.id), Some(todo));
    assert_eq!(sys.store.faults.transient_batches.load(Ordering::SeqCst), 0);
    assert_eq!(sys.store.batch_sizes(), vec![1]);
    sys.shutdown().await;
}

#[tokio::test]
async fn a_batch_that_keeps_failing_is_answered_unavailable() {
    // Arrange
    let sys = TestSystem::with_shards(1).await;
    sys.store
        .faults
        .transient_batches
        .store(10, Ordering::SeqCst);
    let alice = owner("alice");

    // Act
    let replies = join_all((0..5).map(|i| sys.write(create(&alice, &format!("t{i}"))))).await;

    // Assert: every caller hears Unavailable (safe to retry) and nothing was stored.
    for reply in &replies {
        assert!(
            matches!(reply, Ok(Err(DomainError::Unavailable(_)))),
            "{reply:?}"
        );
    }
    assert_eq!(sys.store.count(), 0);
    assert!(sys.store.batch_sizes().is_empty());
    sys.shutdown().await;
}

#[tokio::test]
async fn an_unknown_commit_outcome_is_answered_outcome_unknown() {
    // Arrange
    let sys = TestSystem::with_shards(1).await;
    sys.store
        .faults
        .commit_unknown
        .store(true, Ordering::SeqCst);
    let alice = owner("alice");

    // Act
    let replies = join_all((0..3).map(|i| sys.write(create(&alice, &format!("t{i}"))))).await;

    // Assert: neither success nor "retry safely", and it was not retried.
    for reply in &replies {
        assert!(
            matches!(reply, Ok(Err(DomainError::OutcomeUnknown(_)))),
            "{reply:?}"
        );
    }
    assert_eq!(sys.store.batch_sizes(), vec![3]);
    // The writer reconnects and carries on.
    let after = sys.write(create(&alice, "after")).await;
    assert!(
        matches!(after, Ok(Ok(WriteEffect::Created(_)))),
        "{after:?}"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn database_down_answers_every_caller_unavailable_quickly_and_the_writer_keeps_running() {
    // Arrange
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let writer_id = sys.handles.writer.get().expect("writer running").get_id();
    sys.store.faults.down.store(true, Ordering::SeqCst);

    // Act
    let started = Instant::now();
    let replies = join_all((0..20).map(|i| sys.write(create(&alice, &format!("t{i}"))))).await;
    let elapsed = started.elapsed();

    // Assert
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    for reply in &replies {
        assert!(
            matches!(reply, Ok(Err(DomainError::Unavailable(_)))),
            "{reply:?}"
        );
    }
    assert_eq!(sys.store.count(), 0);
    let still = sys
        .handles
        .writer
        .get()
        .expect("writer still running")
        .get_id();
    assert_eq!(still, writer_id, "the writer must not have been restarted");

    // Act: the database comes back.
    sys.store.faults.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(1);
    let recovered = loop {
        let reply = sys.write(create(&alice, "back")).await;
        if matches!(reply, Ok(Ok(WriteEffect::Created(_)))) || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Assert
    assert!(
        matches!(recovered, Ok(Ok(WriteEffect::Created(_)))),
        "{recovered:?}"
    );
    assert_eq!(sys.store.count(), 1);
    sys.shutdown().await;
}

#[tokio::test]
async fn per_todo_order_is_kept() {
    // Arrange: small batches so the patches span several transactions.
    let config = crate::supervisor::ActorConfig {
        batch_max: 8,
        ..test_config()
    };
    let sys = TestSystem::start(MemoryStore::default(), config, 1).await;
    let alice = owner("alice");
    let todo = sys.create(&alice, "v-initial").await;

    // Act: 100 patches sent in order without waiting for each other.
    let replies =
        join_all((0..100).map(|i| sys.write(retitle(&alice, todo.id, &format!("v{i}"))))).await;

    // Assert
    for (i, reply) in replies.iter().enumerate() {
        match reply {
            Ok(Ok(WriteEffect::Updated(t))) => {
                assert_eq!(t.title, format!("v{i}"));
                assert_eq!(t.version, i as i64 + 2);
            }
            other => panic!("patch {i}: {other:?}"),
        }
    }
    let stored = sys.store.stored(todo.id).expect("stored");
    assert_eq!(stored.title, "v99");
    assert_eq!(stored.version, 101);
    assert!(sys.store.batch_sizes().len() > 1);
    sys.shutdown().await;
}

#[tokio::test]
async fn drain_answers_every_queued_command() {
    // Arrange: a writer alone (no supervisor to restart it), lingering and batching by 16.
    let store = MemoryStore::default();
    store.faults.batch_delay_ms.store(2, Ordering::SeqCst);
    let handles = test_handles(1);
    let args = WriterArgs {
        batch_max: 16,
        linger: Duration::from_millis(5),
        db_timeout: Duration::from_secs(1),
        connections: 1,
        handles: Arc::clone(&handles),
        shared: WriterShared::new(store.clone()),
    };
    let (writer, _done) = Actor::spawn(None, Writer::default(), args)
        .await
        .expect("writer starts");
    handles.writer.set(Some(writer.clone()));
    let alice = owner("alice");
    let mut answers = Vec::new();
    for i in 0..100 {
        let (tx, rx) = tokio::sync::oneshot::channel::<WriteReply>();
        let command = create(&alice, &format!("t{i}"));
        writer
            .cast(WriterMessage::Write {
                command,
                origin: Origin::here("test".into()),
                reply: tx.into(),
            })
            .expect("writer takes the command");
        answers.push(rx);
    }

    // Act
    writer
        .drain_and_wait(Some(Duration::from_secs(2)))
        .await
        .expect("drain completes");

    // Assert
    for (i, rx) in answers.into_iter().enumerate() {
        let answer = rx.await;
        assert!(
            matches!(answer, Ok(Ok(WriteEffect::Created(_)))),
            "command {i}: {answer:?}"
        );
    }
    assert_eq!(store.count(), 100);
    let sizes = store.batch_sizes();
    assert!(sizes.iter().all(|&n| n <= 16), "batches: {sizes:?}");
}

#[tokio::test]
async fn the_owning_shard_hears_of_a_change_before_the_caller() {
    // Arrange: the shard has the todo cached (the create told it), and a database read
    // would be slow, so an answer from the database would show.
    let sys = TestSystem::with_shards(4).await;
    let alice = owner("alice");
    let todo = sys.create(&alice, "v0").await;
    let cached = sys.get(&alice, todo.id).await;
    assert!(
        matches!(&cached, Ok(Ok(r)) if r.source == ReadSource::Cache && r.todo.version == 1),
        "{cached:?}"
    );
    sys.store.read_delay_ms.store(300, Ordering::SeqCst);

    for i in 1..=20 {
        // Act
        let reply = sys.write(retitle(&alice, todo.id, &format!("v{i}"))).await;
        let Ok(Ok(WriteEffect::Updated(updated))) = reply else {
            panic!("update {i}: {reply:?}");
        };
        let read = sys.get(&alice, todo.id).await;

        // Assert: the read right after the answer already sees the change, from the cache.
        let Ok(Ok(read)) = read else {
            panic!("read {i}: {read:?}");
        };
        assert_eq!(read.source, ReadSource::Cache);
        assert_eq!(read.todo, updated);
        assert_eq!(read.todo.version, i + 1);
    }
    assert!(
        sys.store.read_sizes().is_empty(),
        "no read reached the store"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn a_call_with_no_writer_running_is_unavailable() {
    // Arrange: handles whose writer slot was never filled.
    let handles = test_handles(1);
    let command = create(&owner("alice"), "nobody home");

    // Act
    let reply = handles
        .writer
        .call(
            |reply| WriterMessage::Write {
                command,
                origin: Origin::here("test".into()),
                reply,
            },
            CALL_TIMEOUT,
        )
        .await;

    // Assert
    assert_eq!(reply, Err(CallError::Unavailable));
}

#[tokio::test]
async fn after_an_unknown_commit_outcome_the_shard_does_not_serve_the_old_version() {
    // Arrange: the todo is cached at version 1; the next COMMIT's outcome is unknown but
    // the change is applied.
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let todo = sys.create(&alice, "v1").await;
    sys.store
        .faults
        .commit_unknown
        .store(true, Ordering::SeqCst);

    // Act
    let reply = sys.write(retitle(&alice, todo.id, "v2")).await;
    let read = sys.get(&alice, todo.id).await;

    // Assert: the caller was told "unknown"; a read must not contradict the database.
    assert!(
        matches!(reply, Ok(Err(DomainError::OutcomeUnknown(_)))),
        "{reply:?}"
    );
    let stored = sys.store.stored(todo.id).expect("stored");
    assert_eq!(
        stored.version, 2,
        "the memory store applies an unknown commit"
    );
    let Ok(Ok(read)) = read else {
        panic!("{read:?}");
    };
    assert_eq!(
        read.todo, stored,
        "served {:?} from {:?}",
        read.todo.title, read.source
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn independent_batches_commit_concurrently_and_conflicting_ones_wait() {
    // Arrange: four connections, 50 ms per batch, small batches.
    let config = crate::supervisor::ActorConfig {
        batch_max: 4,
        writer_connections: 4,
        ..test_config()
    };
    let sys = TestSystem::start(MemoryStore::default(), config, 1).await;
    let alice = owner("alice");
    let todo = sys.create(&alice, "v0").await;
    sys.store.faults.batch_delay_ms.store(50, Ordering::SeqCst);

    // Act: 16 independent creates (four batches of four) at once.
    let started = Instant::now();
    let replies = join_all((0..16).map(|i| sys.write(create(&alice, &format!("t{i}"))))).await;
    let took = started.elapsed();

    // Assert: they overlapped (sequential batches would take at least 4 x 50 ms).
    assert!(
        replies
            .iter()
            .all(|r| matches!(r, Ok(Ok(WriteEffect::Created(_)))))
    );
    assert!(took < Duration::from_millis(190), "took {took:?}");

    // Act: patches of one todo, sent together, land in several batches.
    let replies =
        join_all((1..=12).map(|i| sys.write(retitle(&alice, todo.id, &format!("v{i}"))))).await;

    // Assert: applied in order, never overlapping (the last one wins, version 13).
    assert!(
        replies
            .iter()
            .all(|r| matches!(r, Ok(Ok(WriteEffect::Updated(_)))))
    );
    let stored = sys.store.stored(todo.id).expect("stored");
    assert_eq!((stored.title.as_str(), stored.version), ("v12", 13));
    sys.shutdown().await;
}

#[tokio::test]
async fn a_commit_that_lands_after_the_writer_gave_up_is_never_hidden_by_a_cached_copy() {
    // Arrange: the todo is cached at version 1; the next COMMIT answers nothing and
    // lands 150 ms later.
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let todo = sys.create(&alice, "v1").await;
    sys.store.faults.late_commit_ms.store(150, Ordering::SeqCst);

    // Act: the change is answered "unknown"; reads follow while it is in limbo.
    let reply = sys.write(retitle(&alice, todo.id, "v2")).await;
    let during: Vec<_> = join_all((0..3).map(|_| sys.get(&alice, todo.id))).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = sys.get(&alice, todo.id).await;
    assert!(
        periodic_check(
            || sys.store.stored(todo.id).is_some_and(|t| t.version == 2),
            Duration::from_secs(2)
        )
        .await,
        "the late commit landed"
    );
    let after = sys.get(&alice, todo.id).await;

    // Assert: "unknown" to the caller; nothing served from or put into the cache while
    // in limbo; the landed version is what readers see afterwards.
    assert!(
        matches!(reply, Ok(Err(DomainError::OutcomeUnknown(_)))),
        "{reply:?}"
    );
    for read in during.iter().chain([&again]) {
        assert!(
            matches!(read, Ok(Ok(r)) if r.source == ReadSource::Db && r.todo.version == 1),
            "{read:?}"
        );
    }
    let Ok(Ok(after)) = after else {
        panic!("{after:?}");
    };
    assert_eq!(after.todo.title, "v2", "a stale copy was served");
    // Once settled, the shard caches again.
    assert!(
        periodic_check(|| sys.handles.limbo[0].is_empty(), Duration::from_secs(2)).await,
        "left limbo"
    );
    let _ = sys.get(&alice, todo.id).await;
    let cached = sys.get(&alice, todo.id).await;
    assert!(
        matches!(&cached, Ok(Ok(r)) if r.source == ReadSource::Cache && r.todo.version == 2),
        "{cached:?}"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn a_restarted_writer_waits_for_its_predecessors_batches_before_a_conflicting_one() {
    // Arrange: batches take 150 ms; a change of the todo is in flight.
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let todo = sys.create(&alice, "v1").await;
    sys.store.faults.batch_delay_ms.store(150, Ordering::SeqCst);
    let first = {
        let handles = Arc::clone(&sys.handles);
        let command = retitle(&alice, todo.id, "first");
        tokio::spawn(async move {
            handles
                .writer
                .call(
                    |reply| WriterMessage::Write {
                        command,
                        origin: Origin::here("first".into()),
                        reply,
                    },
                    CALL_TIMEOUT,
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let old = sys.handles.writer.get().expect("writer").get_id();

    // Act: the writer is killed with that batch in flight; the next change goes to its
    // successor at once.
    assert!(sys.handles.chaos_kill(WRITER));
    assert!(
        periodic_check(
            || sys.handles.writer.get().is_some_and(|w| w.get_id() != old),
            Duration::from_secs(1)
        )
        .await
    );
    let second = sys.write(retitle(&alice, todo.id, "second")).await;
    let first = first.await.expect("first call");

    // Assert: both applied, one after the other, in order.
    assert!(
        matches!(first, Ok(Ok(WriteEffect::Updated(_)))),
        "{first:?}"
    );
    assert!(
        matches!(second, Ok(Ok(WriteEffect::Updated(_)))),
        "{second:?}"
    );
    let log = sys.store.batch_log.lock().expect("test lock").clone();
    let touching: Vec<_> = log
        .iter()
        .filter(|(_, _, ids)| ids.contains(&todo.id))
        .collect();
    for pair in touching.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "batches on the same todo overlapped: {touching:?}"
        );
    }
    let stored = sys.store.stored(todo.id).expect("stored");
    assert_eq!((stored.title.as_str(), stored.version), ("second", 3));
    sys.shutdown().await;
}

#[tokio::test]
async fn a_batch_that_committed_but_could_not_be_read_is_never_retried() {
    // Arrange
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let todo = sys.create(&alice, "v1").await;
    sys.store
        .faults
        .after_commit_error
        .store(true, Ordering::SeqCst);

    // Act
    let reply = sys.write(retitle(&alice, todo.id, "v2")).await;
    let read = sys.get(&alice, todo.id).await;

    // Assert: applied once, answered "unknown" (never "retry safely"), and the shard
    // dropped its old copy.
    assert!(
        matches!(reply, Ok(Err(DomainError::OutcomeUnknown(_)))),
        "{reply:?}"
    );
    assert_eq!(sys.store.batch_sizes(), vec![1, 1], "retried");
    assert_eq!(sys.store.stored(todo.id).map(|t| t.version), Some(2));
    assert!(
        matches!(&read, Ok(Ok(r)) if r.todo.version == 2),
        "{read:?}"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn a_panicking_batch_task_answers_its_callers_and_frees_its_connection_slot() {
    // Arrange: one connection slot; the next batch panics.
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    sys.store.faults.panic_batches.store(1, Ordering::SeqCst);

    // Act
    let panicked = sys.write(create(&alice, "doomed")).await;
    let after = sys.write(create(&alice, "after")).await;

    // Assert: a 503-class answer (the write was sent, so its outcome is unknown), and the
    // slot is free for the next batch.
    assert!(
        matches!(panicked, Ok(Err(DomainError::OutcomeUnknown(_)))),
        "{panicked:?}"
    );
    assert!(
        matches!(after, Ok(Ok(WriteEffect::Created(_)))),
        "{after:?}"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn writes_queued_behind_a_hung_database_are_answered_within_the_database_timeout() {
    // Arrange: one connection; the database takes 5 s per batch; the timeout is 300 ms.
    let config = crate::supervisor::ActorConfig {
        db_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let sys = TestSystem::start(MemoryStore::default(), config, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    sys.store
        .faults
        .batch_delay_ms
        .store(5_000, Ordering::SeqCst);
    let alice = owner("alice");

    // Act: one write in flight, more queued behind it 50 ms later.
    let started = Instant::now();
    let first = sys.write(create(&alice, "first"));
    let queued = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        join_all((0..5).map(|i| sys.write(create(&alice, &format!("q{i}"))))).await
    };
    let (first, queued) = tokio::join!(first, queued);
    let took = started.elapsed();

    // Assert: the one in flight is "unknown", the queued ones get a 503-class answer
    // once what is left of their own 300 ms runs out (not a fresh 300 ms after the first
    // batch gave up, which would make it 650 ms).
    assert!(
        matches!(first, Ok(Err(DomainError::OutcomeUnknown(_)))),
        "{first:?}"
    );
    for reply in &queued {
        assert!(
            matches!(
                reply,
                Ok(Err(
                    DomainError::Unavailable(_) | DomainError::OutcomeUnknown(_)
                ))
            ),
            "{reply:?}"
        );
    }
    assert!(took < Duration::from_millis(500), "took {took:?}");
    sys.shutdown().await;
}
