//! `PgStore` directly against PostgreSQL: the batch semantics the writer relies on.

use todo_actors::domain::{
    DomainError, NewTodo, Owner, Todo, TodoChange, TodoId, TodoTitle, WriteCommand, WriteEffect,
    now,
};
use todo_actors::store::{TodoStore, WriteConn};
use todo_service::db::{PgStore, migrate, tls};
use todo_service::service::ServiceError;

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
    let mut conn = PgStore::new(config, tls, uuid::Uuid::now_v7())
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
    let results = conn
        .apply_batch(&batch, &[])
        .await
        .expect("batch committed");
    // Assert: the bad one fails alone, with a fixed message (PostgreSQL's own text names
    // the constraint and the table: it goes to the log, never to a client).
    assert_eq!(results[0], Ok(WriteEffect::Created(good1)));
    let Err(DomainError::Invalid { message, .. }) = &results[1] else {
        panic!("{:?}", results[1]);
    };
    assert_eq!(message, "the database refused a value of this request");
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
    let embedded = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations dir")
        .count();
    assert_eq!(embedded, todo_service::db::migration_count());
    assert_eq!(applied, embedded, "each migration applied exactly once");
    assert!(migrate(&config, &tls).await.expect("again").is_empty());
}

#[tokio::test]
async fn a_rejected_value_reaches_the_client_without_database_text() {
    // Arrange: what the writer answers for a refused value, as the service maps it.
    let answer = DomainError::invalid("body", "the database refused a value of this request");

    // Act
    let problem = ServiceError::from(answer).problem();

    // Assert
    let json = String::from_utf8(problem.to_json()).expect("utf8");
    assert_eq!(problem.status, 400);
    for leak in ["constraint", "violates", "todos_", "relation", "SQL"] {
        assert!(!json.contains(leak), "{json}");
    }
}

#[tokio::test]
async fn settling_a_session_ends_it_and_rolls_back_what_it_left_uncommitted() {
    // Arrange: a writer connection holds an open transaction that changed a row, as a
    // batch does when its COMMIT is lost on the way.
    let url = create_database().await;
    let mut config: tokio_postgres::Config = url.parse().expect("url");
    config.application_name("todo-service");
    let tls = tls(&mut config, None).expect("tls");
    migrate(&config, &tls).await.expect("migrate");
    let store = PgStore::new(config.clone(), tls, uuid::Uuid::now_v7());
    let todo = new_todo("before");
    let mut writer = store.connect_writer().await.expect("connect");
    writer
        .apply_batch(
            &[WriteCommand::Create {
                todo: todo.clone(),
                idempotency: None,
            }],
            &[],
        )
        .await
        .expect("created");
    let session = writer.session();
    let check = db(&url).await;
    let open = db(&url).await;
    let pid: i32 = check
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
             AND application_name = 'todo-service'",
            &[],
        )
        .await
        .expect("the writer's backend")
        .get(0);
    assert_eq!(
        u64::from(pid.unsigned_abs()),
        session.0 >> 32,
        "the session is the backend"
    );
    open.batch_execute("BEGIN").await.expect("begin");
    open.execute(
        "UPDATE todos SET title = 'in limbo' WHERE id = $1",
        &[&todo.id.into_inner()],
    )
    .await
    .expect("update");
    let open_pid: i32 = open
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let open_session: i64 = check
        .query_one(
            "SELECT pid::int8 << 32
                 | ((extract(epoch FROM backend_start) * 1000000)::int8 & 4294967295)
             FROM pg_stat_activity WHERE pid = $1",
            &[&open_pid],
        )
        .await
        .expect("session")
        .get(0);

    // Act
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.await_fate(todo_actors::store::SessionId(open_session as u64)),
    )
    .await
    .expect("settled in time")
    .expect("settled");

    // Assert: the backend is gone and its uncommitted change with it; the writer's own
    // session was left alone.
    let alive: i64 = check
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&open_pid],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(alive, 0);
    let title: String = check
        .query_one(
            "SELECT title FROM todos WHERE id = $1",
            &[&todo.id.into_inner()],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(title, "before");
    assert!(!writer.is_closed());
}
