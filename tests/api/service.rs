//! The application layer driven directly (no HTTP), against real PostgreSQL: what the
//! edges rely on when the actors are degraded.

use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use todo_actors::domain::{NewTodo, Owner, ReplyOutcome, TodoTitle};
use todo_actors::handles::ActorHandles;
use todo_actors::metrics::NoopSink;
use todo_actors::writer::{Writer, WriterArgs, WriterShared};
use todo_service::db::{PgStore, create_pool, migrate, tls};
use todo_service::service::idempotency::Key;
use todo_service::service::{Call, ServiceError, ServiceSettings, TodoService};

use crate::helpers::create_database;

fn new(title: &str) -> NewTodo {
    NewTodo {
        title: TodoTitle::parse(title).expect("valid"),
        completed: false,
        order: None,
    }
}

#[tokio::test]
async fn idempotent_writes_are_served_while_the_owners_shard_is_down() {
    // Arrange: a writer runs; the one query shard does not (its slot is empty, as while
    // the supervisor restarts it).
    let url = create_database().await;
    let mut config: tokio_postgres::Config = url.parse().expect("url");
    let tls = tls(&mut config, None).expect("tls");
    migrate(&config, &tls).await.expect("migrate");
    let handles = Arc::new(ActorHandles::new(1, Arc::new(NoopSink)));
    let store = PgStore::new(config.clone(), tls.clone(), uuid::Uuid::now_v7());
    let (writer, _done) = Actor::spawn(
        None,
        Writer::<PgStore>::default(),
        WriterArgs {
            batch_max: 16,
            linger: Duration::ZERO,
            db_timeout: Duration::from_secs(2),
            connections: 1,
            handles: Arc::clone(&handles),
            shared: WriterShared::new(store),
        },
    )
    .await
    .expect("writer");
    handles.writer.set(Some(writer.clone()));
    assert!(handles.shards[0].get().is_none());
    let pool = create_pool(&config, &tls, 2, Duration::from_secs(2)).expect("pool");
    let service = TodoService::new(
        Arc::clone(&handles),
        ServiceSettings {
            request_timeout: Duration::from_secs(5),
            max_in_flight: 8,
            db_timeout: Duration::from_secs(2),
        },
        pool,
        todo_service::feed::FeedHub::new(10, 10, Duration::from_secs(10)),
    );
    let call = Call {
        owner: Owner::public(),
        request_id: "test".into(),
    };
    let key = || {
        Key::from_values(&["shard-down"])
            .expect("valid")
            .expect("some")
    };

    // Act: the same keyed create twice, then the key with another command.
    let first = service.create(&call, new("milk"), Some(key())).await;
    let again = service.create(&call, new("milk"), Some(key())).await;
    let other = service.create(&call, new("bread"), Some(key())).await;

    // Assert: created, then replayed from PostgreSQL, then refused.
    let first = first.expect("created although the shard is down");
    assert_eq!(
        (first.outcome, first.replayed),
        (ReplyOutcome::Created, false)
    );
    let again = again.expect("replayed");
    assert!(again.replayed);
    assert_eq!(again.todo, first.todo);
    assert_eq!(other, Err(ServiceError::KeyReused));
    writer.stop(None);
}
