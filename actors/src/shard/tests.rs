//! Query shard unit tests over the in-memory store (batched misses, cache, coalesced
//! lists, read-your-writes, database down).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::ShardMessage;
use crate::domain::{DomainError, WriteEffect};
use crate::memory::{CALL_TIMEOUT, TestSystem, create, delete, list_query, owner};
use crate::metrics::ReadSource;

#[tokio::test]
async fn concurrent_misses_become_one_query() {
    // Arrange: 20 todos in the database, none cached; reads are slow so requests pile up.
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let todos: Vec<_> = (0..20)
        .map(|i| sys.store.seed(&alice, &format!("t{i}")))
        .collect();
    sys.store.read_delay_ms.store(30, Ordering::SeqCst);

    // Act
    let reads = join_all(todos.iter().map(|t| sys.get(&alice, t.id))).await;

    // Assert
    assert_eq!(sys.store.read_sizes(), vec![20]);
    for (todo, read) in todos.iter().zip(reads) {
        let Ok(Ok(read)) = read else {
            panic!("{read:?}");
        };
        assert_eq!(&read.todo, todo);
        assert_eq!(read.source, ReadSource::Db);
        assert!(!read.stale);
    }
    sys.shutdown().await;
}

#[tokio::test]
async fn a_hit_is_served_from_the_cache() {
    // Arrange
    let sys = TestSystem::with_shards(2).await;
    let alice = owner("alice");
    let todo = sys.store.seed(&alice, "cache me");
    let first = sys.get(&alice, todo.id).await;
    assert!(
        matches!(&first, Ok(Ok(r)) if r.source == ReadSource::Db),
        "{first:?}"
    );

    // Act
    let second = sys.get(&alice, todo.id).await;

    // Assert
    let Ok(Ok(second)) = second else {
        panic!("{second:?}");
    };
    assert_eq!(second.source, ReadSource::Cache);
    assert_eq!(second.todo, todo);
    assert!(!second.stale);
    assert_eq!(
        sys.store.read_sizes(),
        vec![1],
        "the second get ran no query"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn another_owners_todo_is_not_found() {
    // Arrange: alice's todo, asked for by bob through the shard that caches it.
    let sys = TestSystem::with_shards(4).await;
    let alice = owner("alice");
    let bob = owner("bob");
    let todo = sys.store.seed(&alice, "private");
    let shard = sys.handles.shard_index(&alice);

    // Act: from the database (not cached yet) ...
    let from_db = sys.get_via(shard, &bob, todo.id).await;
    // ... then from the cache (alice's own read fills it).
    let own = sys.get_via(shard, &alice, todo.id).await;
    let from_cache = sys.get_via(shard, &bob, todo.id).await;
    // ... and through bob's own shard.
    let routed = sys.get(&bob, todo.id).await;

    // Assert
    assert_eq!(from_db, Ok(Err(DomainError::NotFound)));
    assert!(matches!(&own, Ok(Ok(r)) if r.todo == todo), "{own:?}");
    assert_eq!(from_cache, Ok(Err(DomainError::NotFound)));
    assert_eq!(routed, Ok(Err(DomainError::NotFound)));
    sys.shutdown().await;
}

#[tokio::test]
async fn identical_in_flight_lists_share_one_query() {
    // Arrange
    let sys = TestSystem::with_shards(2).await;
    let alice = owner("alice");
    for i in 0..3 {
        sys.store.seed(&alice, &format!("t{i}"));
    }
    sys.store.read_delay_ms.store(30, Ordering::SeqCst);

    // Act
    let lists = join_all((0..10).map(|_| sys.list(&alice))).await;

    // Assert
    assert_eq!(sys.store.lists.load(Ordering::SeqCst), 1);
    let first = lists[0].clone().expect("answered").expect("listed");
    assert_eq!(first.len(), 3);
    assert!(lists.iter().all(|l| l == &Ok(Ok(first.clone()))));
    sys.shutdown().await;
}

#[tokio::test]
async fn a_list_sent_after_a_committed_change_does_not_join_an_older_query() {
    // Arrange: an empty list is in flight; its rows were read before the write below and
    // reach the shard only 150 ms later.
    let sys = TestSystem::with_shards(2).await;
    let alice = owner("alice");
    sys.store.read_reply_delay_ms.store(150, Ordering::SeqCst);
    let older = {
        let handles = Arc::clone(&sys.handles);
        let query = list_query(&alice);
        tokio::spawn(async move {
            handles
                .shard_for(&query.owner.clone())
                .call(
                    |reply| ShardMessage::List {
                        query,
                        span: tracing::Span::current(),
                        reply,
                    },
                    CALL_TIMEOUT,
                )
                .await
        })
    };
    let started =
        crate::memory::periodic_check(|| sys.store.lists.load(Ordering::SeqCst) == 1, CALL_TIMEOUT)
            .await;
    assert!(started, "the first list query never started");
    sys.store.read_reply_delay_ms.store(0, Ordering::SeqCst);

    // Act: alice writes, then lists.
    let todo = sys.create(&alice, "mine").await;
    let newer = sys.list(&alice).await;

    // Assert: the newer list ran its own query and shows the write.
    assert_eq!(newer, Ok(Ok(vec![todo])));
    assert_eq!(sys.store.lists.load(Ordering::SeqCst), 2);
    let older = older.await.expect("list task");
    assert_eq!(
        older,
        Ok(Ok(vec![])),
        "the older query read before the write"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn a_load_overtaken_by_a_delete_does_not_resurrect_the_todo() {
    // Arrange: the todo is in the database, not cached; the miss query reads it, and its
    // answer is delayed until after the delete below.
    let sys = TestSystem::with_shards(2).await;
    let alice = owner("alice");
    let todo = sys.store.seed(&alice, "doomed");
    sys.store.read_reply_delay_ms.store(100, Ordering::SeqCst);
    let load = {
        let handles = Arc::clone(&sys.handles);
        let owner = alice.clone();
        let id = todo.id;
        tokio::spawn(async move {
            handles
                .shard_for(&owner.clone())
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
        })
    };
    let started =
        crate::memory::periodic_check(|| sys.store.read_sizes().len() == 1, CALL_TIMEOUT).await;
    assert!(started, "the miss query never started");
    sys.store.read_reply_delay_ms.store(0, Ordering::SeqCst);

    // Act: delete while the load is in flight, then let the load land.
    let deleted = sys.write(delete(&alice, todo.id)).await;
    assert!(
        matches!(deleted, Ok(Ok(WriteEffect::Deleted { .. }))),
        "{deleted:?}"
    );
    let loaded = load.await.expect("load task");
    assert!(matches!(&loaded, Ok(Ok(r)) if r.todo == todo), "{loaded:?}");

    // Assert: the load's late answer was not cached over the delete.
    let after = sys.get(&alice, todo.id).await;
    assert_eq!(after, Ok(Err(DomainError::NotFound)));
    assert_eq!(
        sys.store.read_sizes(),
        vec![1, 1],
        "the second get went to the database"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn database_down_serves_cached_todos_stale_and_fails_the_rest() {
    // Arrange: one todo cached, one not.
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let cached = sys.create(&alice, "cached").await;
    let uncached = sys.store.seed(&alice, "uncached");
    sys.store.faults.down.store(true, Ordering::SeqCst);

    // Act
    let hit = sys.get(&alice, cached.id).await;
    let miss = sys.get(&alice, uncached.id).await;
    let list = sys.list(&alice).await;

    // Assert
    let Ok(Ok(hit)) = hit else {
        panic!("{hit:?}");
    };
    assert_eq!(hit.todo, cached);
    assert_eq!(hit.source, ReadSource::Cache);
    assert!(hit.stale, "served while the database is down");
    assert!(
        matches!(miss, Ok(Err(DomainError::Unavailable(_)))),
        "{miss:?}"
    );
    assert!(
        matches!(list, Ok(Err(DomainError::Unavailable(_)))),
        "{list:?}"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn a_write_through_the_writer_fills_the_cache() {
    // Arrange
    let sys = TestSystem::with_shards(3).await;
    let alice = owner("alice");

    // Act
    let reply = sys.write(create(&alice, "fresh")).await;
    let Ok(Ok(WriteEffect::Created(todo))) = reply else {
        panic!("{reply:?}");
    };
    let read = sys.get(&alice, todo.id).await;

    // Assert
    assert!(matches!(&read, Ok(Ok(r)) if r.source == ReadSource::Cache && r.todo == todo));
    assert!(sys.store.read_sizes().is_empty());
    sys.shutdown().await;
}

#[tokio::test]
async fn an_update_reported_after_a_delete_never_brings_the_todo_back() {
    // Arrange: the todo is cached, then deleted.
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let todo = sys.create(&alice, "short-lived").await;
    let deleted = sys.write(delete(&alice, todo.id)).await;
    assert!(
        matches!(deleted, Ok(Ok(WriteEffect::Deleted { .. }))),
        "{deleted:?}"
    );

    // Act: a late report of an earlier change (another replica's, or a reordered one).
    let mut late = todo.clone();
    late.version = 2;
    late.title = "late".into();
    assert!(sys.handles.shards[0].cast(ShardMessage::Apply(vec![
        WriteEffect::Updated(late.clone()),
        WriteEffect::Created(late),
    ])));
    let read = sys.get(&alice, todo.id).await;

    // Assert
    assert_eq!(
        read,
        Ok(Err(DomainError::NotFound)),
        "served a deleted todo"
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn a_slow_reconnect_never_holds_up_cache_hits() {
    // Arrange: a cached todo; then the connection breaks and connects take 800 ms.
    let sys = TestSystem::with_shards(1).await;
    let alice = owner("alice");
    let cached = sys.create(&alice, "cached").await;
    let uncached = sys.store.seed(&alice, "uncached");
    sys.store
        .faults
        .connect_delay_ms
        .store(800, Ordering::SeqCst);
    sys.store.faults.down.store(true, Ordering::SeqCst);

    // Act: a miss starts a reconnect; a hit right behind it is timed.
    let miss = {
        let handles = Arc::clone(&sys.handles);
        let alice = alice.clone();
        tokio::spawn(async move {
            handles.shards[0]
                .call(
                    |reply| ShardMessage::Get {
                        owner: alice,
                        id: uncached.id,
                        span: tracing::Span::current(),
                        reply,
                    },
                    CALL_TIMEOUT,
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let hit = sys.get(&alice, cached.id).await;
    let took = started.elapsed();

    // Assert
    assert!(
        matches!(&hit, Ok(Ok(r)) if r.source == ReadSource::Cache && r.stale),
        "{hit:?}"
    );
    assert!(took < Duration::from_millis(100), "a hit waited {took:?}");
    let miss = miss.await.expect("miss task");
    assert!(
        matches!(miss, Ok(Err(DomainError::Unavailable(_)))),
        "{miss:?}"
    );
    sys.shutdown().await;
}
