//! `PgStore` directly against PostgreSQL: the batch semantics the writer relies on.

use todo_actors::domain::{
    DomainError, NewTodo, Owner, Todo, TodoChange, TodoId, TodoTitle, WriteCommand, WriteEffect,
    now,
};
use todo_actors::store::{TodoStore, WriteConn};
use todo_service::db::{PgStore, migrate, tls};

use crate::helpers::{create_database, db};

fn new_todo(title: &str) -> Todo {
    Todo::create(
        TodoId::generate(),
        Owner::public(),
        NewTodo {
            title: TodoTitle::parse(title).expect("valid"),
            completed: false,
            order: None,
        },
        now(),
    )
}

#[tokio::test]
async fn a_row_the_database_rejects_fails_alone_and_the_rest_of_the_batch_commits() {
    // Arrange: a todo whose title bypassed validation violates the CHECK constraint.
    let url = create_database().await;
    let mut config: tokio_postgres::Config = url.parse().expect("url");
    let tls = tls(&mut config, None).expect("tls");
    migrate(&config, &tls).await.expect("migrate");
    let mut conn = PgStore::new(config, tls)
        .connect_writer()
        .await
        .expect("connect");
    let mut bad = new_todo("placeholder");
    bad.title = String::new();
    let good1 = new_todo("good one");
    let good2 = new_todo("good two");
    let batch = vec![
        WriteCommand::Create {
            todo: good1.clone(),
            idempotency: None,
        },
        WriteCommand::Create {
            todo: bad,
            idempotency: None,
        },
        WriteCommand::Create {
            todo: good2.clone(),
            idempotency: None,
        },
        WriteCommand::Update {
            owner: Owner::public(),
            id: TodoId::generate(),
            change: TodoChange::Patch {
                title: None,
                completed: Some(true),
                order: None,
            },
            expected_versions: None,
            at: now(),
            idempotency: None,
        },
    ];
    // Act
    let results = conn.apply_batch(&batch).await.expect("batch committed");
    // Assert
    assert_eq!(results[0], Ok(WriteEffect::Created(good1)));
    assert!(
        matches!(results[1], Err(DomainError::Invalid { .. })),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], Ok(WriteEffect::Created(good2)));
    assert_eq!(results[3], Err(DomainError::NotFound));
    let count: i64 = db(&url)
        .await
        .query_one("SELECT count(*) FROM todos", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 2);
}

#[tokio::test]
async fn migrations_are_idempotent_and_serialised() {
    let url = create_database().await;
    let mut config: tokio_postgres::Config = url.parse().expect("url");
    let tls = tls(&mut config, None).expect("tls");
    let (a, b) = tokio::join!(migrate(&config, &tls), migrate(&config, &tls));
    let applied = a.expect("first").len() + b.expect("second").len();
    assert_eq!(applied, 3, "each migration applied exactly once");
    assert!(migrate(&config, &tls).await.expect("again").is_empty());
}
