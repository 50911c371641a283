//! The NATS edge against a real nats-server: every request/reply endpoint and error, the
//! micro service's `$SRV` verbs, durable JetStream commands (duplicates, a broker
//! crash, a service crash between COMMIT and ack, invalid commands, dead letters), events
//! after a NATS outage, and replicas that agree with NATS up and down.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, create_database, db, nats_prefix, nats_url, spawn_app_at, spawn_app_with, wait_for,
    with_nats,
};
use crate::replicas::{changes_show_on_the_other_replica, p99};

/// A nats-server of the test's own (JetStream on), to kill and restart.
pub struct PrivateNats {
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateNats {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("todo-nats-{}", uuid::Uuid::now_v7().simple()));
        let mut nats = Self {
            port,
            dir,
            child: None,
        };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same store).
    pub fn restart(&mut self) {
        let bin = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "nats-server",
        ]
        .into_iter()
        .find(|b| std::path::Path::new(b).exists())
        .unwrap_or("nats-server");
        let child = std::process::Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start nats-server ({e}): install it, or run scripts/test, which does"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An app with NATS (at `url`, with a fresh prefix) and a client of its own.
struct NatsApp {
    app: TestApp,
    client: async_nats::Client,
    prefix: String,
}

impl NatsApp {
    async fn start(url: String, tweak: fn(&mut todo_service::config::Settings)) -> Self {
        let prefix = nats_prefix();
        let (u, p) = (url.clone(), prefix.clone());
        let app = spawn_app_with(move |s| {
            with_nats(s, &u, &p);
            tweak(s);
        })
        .await;
        let client = async_nats::connect(&url).await.expect("test client");
        let this = Self {
            app,
            client,
            prefix,
        };
        this.wait_responding().await;
        this
    }

    fn subject(&self, verb: &str) -> String {
        format!("{}.{verb}", self.prefix)
    }

    async fn wait_responding(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .client
                .request(self.subject("list"), Bytes::from_static(b"{}"))
                .await;
            if r.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the NATS endpoints never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request with headers; the reply.
    async fn request(
        &self,
        verb: &str,
        headers: &[(&str, &str)],
        payload: Value,
    ) -> async_nats::Message {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        self.client
            .request_with_headers(self.subject(verb), h, Bytes::from(payload.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{verb}: {e}"))
    }

    async fn jetstream_publish(&self, verb: &str, msg_id: &str, owner: &str, payload: Value) {
        let js = jetstream::new(self.client.clone());
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", msg_id);
        h.insert("Todo-Owner", owner);
        js.publish_with_headers(
            format!("{}.cmd.{verb}", self.prefix),
            h,
            Bytes::from(payload.to_string()),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    }

    /// Deletes the test's streams (they reserve storage on the shared server).
    async fn cleanup(&self) {
        let js = jetstream::new(self.client.clone());
        let upper = self.prefix.to_uppercase();
        for stream in ["COMMANDS", "EVENTS", "DLQ"] {
            let _ = js.delete_stream(format!("{upper}_{stream}")).await;
        }
    }
}

fn error_code(m: &async_nats::Message) -> Option<String> {
    m.headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().to_owned())
}

fn json_of(m: &async_nats::Message) -> Value {
    serde_json::from_slice(&m.payload).unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_request_endpoint_answers_as_the_rest_api_does() {
    // Arrange
    let n = NatsApp::start(nats_url(), |_| {}).await;
    let alice = [("Todo-Owner", "alice")];

    // Act + Assert: create, read, list, change, replace, delete, clear.
    let created = n
        .request("create", &alice, json!({"title": "over NATS", "order": 2}))
        .await;
    assert_eq!(error_code(&created), None, "{:?}", created.payload);
    let todo = json_of(&created);
    assert_eq!(
        (todo["title"].as_str(), todo["version"].as_i64()),
        (Some("over NATS"), Some(1))
    );
    let id = todo["id"].as_str().expect("id").to_owned();
    let got = json_of(&n.request("get", &alice, json!({"id": id})).await);
    assert_eq!(got["id"], todo["id"]);
    // The same todo through HTTP is alice's, not public's.
    assert_eq!(n.app.get(&format!("/api/todos/{id}")).await.status(), 404);
    let second = n
        .request("create", &alice, json!({"title": "second"}))
        .await;
    assert_eq!(error_code(&second), None);
    let page = n.request("list", &alice, json!({"limit": 1})).await;
    assert_eq!(json_of(&page).as_array().map(Vec::len), Some(1));
    let cursor = page
        .headers
        .as_ref()
        .and_then(|h| h.get("Todo-Next-Cursor"))
        .map(|c| c.as_str().to_owned())
        .expect("a next cursor");
    let rest = json_of(
        &n.request("list", &alice, json!({"limit": 1, "cursor": cursor}))
            .await,
    );
    assert_eq!(rest.as_array().map(Vec::len), Some(1));
    let updated = n
        .request(
            "update",
            &[("Todo-Owner", "alice"), ("If-Match", "\"1\"")],
            json!({"id": id, "completed": true}),
        )
        .await;
    assert_eq!(json_of(&updated)["version"], 2);
    let stale = n
        .request(
            "update",
            &[("Todo-Owner", "alice"), ("If-Match", "\"1\"")],
            json!({"id": id, "completed": false}),
        )
        .await;
    assert_eq!(error_code(&stale).as_deref(), Some("412"));
    let replaced = n
        .request("replace", &alice, json!({"id": id, "title": "replaced"}))
        .await;
    assert_eq!(json_of(&replaced)["order"], Value::Null);
    let deleted = n.request("delete", &alice, json!({"id": id})).await;
    assert_eq!((error_code(&deleted), deleted.payload.len()), (None, 0));
    let gone = n.request("get", &alice, json!({"id": id})).await;
    assert_eq!(error_code(&gone).as_deref(), Some("404"));
    let cleared = n.request("clear", &alice, json!({})).await;
    assert_eq!(error_code(&cleared), None);
    let empty = json_of(&n.request("list", &alice, json!({})).await);
    assert_eq!(empty, json!([]));
    n.cleanup().await;
}

#[tokio::test]
async fn errors_carry_the_status_the_title_and_the_problem_document() {
    // Arrange
    let n = NatsApp::start(nats_url(), |_| {}).await;

    // Act: one of each kind of client error.
    let cases = [
        ("create", json!({"title": ""}), "400"),
        ("create", json!({"title": "a", "colour": "red"}), "400"),
        ("get", json!({"id": "not-a-uuid"}), "404"),
        ("get", json!({}), "400"),
        ("list", json!({"limit": 0}), "400"),
        ("clear", json!({"limit": 3}), "400"),
        (
            "update",
            json!({"id": uuid::Uuid::now_v7().to_string(), "title": "x"}),
            "404",
        ),
    ];
    for (verb, payload, code) in cases {
        let reply = n.request(verb, &[], payload.clone()).await;

        // Assert
        assert_eq!(
            error_code(&reply).as_deref(),
            Some(code),
            "{verb} {payload}"
        );
        let headers = reply.headers.as_ref().expect("headers");
        assert!(headers.get("Nats-Service-Error").is_some());
        let problem = json_of(&reply);
        assert_eq!(
            problem["status"].as_u64().map(|s| s.to_string()).as_deref(),
            Some(code)
        );
        assert!(problem["detail"].is_string(), "{problem}");
    }
    let bad_owner = n
        .request("list", &[("Todo-Owner", "a\u{7}b")], json!({}))
        .await;
    assert_eq!(error_code(&bad_owner).as_deref(), Some("400"));
    n.cleanup().await;
}

#[tokio::test]
async fn srv_ping_info_and_stats_answer_with_the_endpoints_and_real_counts() {
    // Arrange: two good requests and one failing one.
    let n = NatsApp::start(nats_url(), |_| {}).await;
    let _ = n.request("create", &[], json!({"title": "counted"})).await;
    let _ = n.request("list", &[], json!({})).await;
    let _ = n.request("get", &[], json!({"id": "nope"})).await;

    // Act: $SRV verbs of the service `todo`; several test apps may run, so find ours.
    let ours = |v: &Value| {
        v["endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["subject"] == n.subject("get")))
    };
    let mut info = Value::Null;
    let mut stats = Value::Null;
    let inbox = n.client.new_inbox();
    let mut replies = n.client.subscribe(inbox.clone()).await.expect("sub");
    for verb in ["INFO", "STATS"] {
        n.client
            .publish_with_reply(format!("$SRV.{verb}.todo"), inbox.clone(), Bytes::new())
            .await
            .expect("publish");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, replies.next()).await {
            let v = json_of(&m);
            if ours(&v) {
                match verb {
                    "INFO" => info = v,
                    _ => stats = v,
                }
                break;
            }
        }
    }
    let ping = n
        .client
        .request("$SRV.PING.todo", Bytes::new())
        .await
        .expect("ping");

    // Assert
    assert_eq!(json_of(&ping)["name"], "todo");
    assert_eq!(info["name"], "todo");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    for verb in [
        "create", "get", "list", "update", "replace", "delete", "clear",
    ] {
        assert!(
            subjects.contains(&n.subject(verb).as_str()),
            "{verb}: {subjects:?}"
        );
    }
    let endpoint = |verb: &str| {
        stats["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["subject"] == n.subject(verb)))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(endpoint("create")["num_requests"], 1);
    assert_eq!(endpoint("get")["num_errors"], 1);
    assert!(endpoint("list")["num_requests"].as_u64() >= Some(1));
    n.cleanup().await;
}

#[tokio::test]
async fn a_thousand_commands_with_a_hundred_duplicates_make_exactly_a_thousand_todos() {
    // Arrange
    let n = NatsApp::start(nats_url(), |_| {}).await;

    // Act: 1,000 commands, and 100 of them published a second time.
    for i in 0..1000 {
        n.jetstream_publish(
            "create",
            &format!("cmd-{i}"),
            "bulk",
            json!({"title": format!("c{i}")}),
        )
        .await;
    }
    for i in (0..1000).step_by(10) {
        n.jetstream_publish(
            "create",
            &format!("cmd-{i}"),
            "bulk",
            json!({"title": format!("c{i}")}),
        )
        .await;
    }

    // Assert
    let client = db(&n.app.db_url).await;
    wait_for("1,000 todos", Duration::from_secs(30), async || {
        let n: i64 = client
            .query_one("SELECT count(*) FROM todos WHERE owner = 'bulk'", &[])
            .await
            .expect("count")
            .get(0);
        n >= 1000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT title) FROM todos WHERE owner = 'bulk'",
            &[],
        )
        .await
        .expect("count");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1000, 1000));
    n.cleanup().await;
}

#[tokio::test]
async fn invalid_commands_are_terminated_and_do_not_hold_up_the_next_ones() {
    // Arrange
    let n = NatsApp::start(nats_url(), |_| {}).await;

    // Act: garbage, an unknown verb, an update of an unknown todo, then a good one.
    n.jetstream_publish("create", "bad-1", "cmds", json!({"nope": true}))
        .await;
    n.jetstream_publish("frobnicate", "bad-2", "cmds", json!({"title": "x"}))
        .await;
    n.jetstream_publish(
        "update",
        "bad-3",
        "cmds",
        json!({"id": uuid::Uuid::now_v7().to_string(), "title": "x"}),
    )
    .await;
    n.jetstream_publish(
        "create",
        "good",
        "cmds",
        json!({"title": "after the bad ones"}),
    )
    .await;

    // Assert: the good one is applied; nothing is left to redeliver.
    let client = db(&n.app.db_url).await;
    wait_for("the good command", Duration::from_secs(10), async || {
        client
            .query_opt(
                "SELECT 1 FROM todos WHERE title = 'after the bad ones'",
                &[],
            )
            .await
            .expect("query")
            .is_some()
    })
    .await;
    let js = jetstream::new(n.client.clone());
    let mut stream = js
        .get_stream(format!("{}_COMMANDS", n.prefix.to_uppercase()))
        .await
        .expect("stream");
    wait_for(
        "the work queue empties",
        Duration::from_secs(10),
        async || {
            stream
                .info()
                .await
                .map(|i| i.state.messages == 0)
                .unwrap_or(false)
        },
    )
    .await;
    assert_eq!(n.app.count("todos").await, 1);
    n.cleanup().await;
}

#[tokio::test]
async fn a_command_that_keeps_failing_goes_to_the_dead_letter_subject_with_the_reason() {
    // Arrange: a private broker, and a database the service reaches through a proxy of
    // the test's, so that it can go silent: then every create fails (503).
    let nats = PrivateNats::start();
    let prefix = nats_prefix();
    let (u, p) = (nats.url(), prefix.clone());
    let (app, proxy) = crate::database::app_behind_proxy_with(move |s| {
        with_nats(s, &u, &p);
        s.nats.nats_max_deliver = 2;
    })
    .await;
    let client = async_nats::connect(nats.url()).await.expect("client");
    let n = NatsApp {
        app,
        client,
        prefix,
    };
    n.wait_responding().await;
    let mut dead = n
        .client
        .subscribe(format!("{}.dlq.>", n.prefix))
        .await
        .expect("sub");

    // Act: the database goes silent, then a command arrives.
    proxy.blackhole();
    n.jetstream_publish("create", "doomed", "dlq", json!({"title": "never"}))
        .await;

    // Assert: after two deliveries (as the broker counts them) it is dead-lettered with its
    // reason and headers.
    // A nats-server now and then reports a redelivery with the count of the one before
    // (after a pull request expired under it): then it takes a third delivery.
    let letter = tokio::time::timeout(Duration::from_secs(30), dead.next())
        .await
        .expect("a dead letter in time")
        .expect("message");
    let headers = letter.headers.as_ref().expect("headers");
    assert_eq!(letter.subject.as_str(), format!("{}.dlq.create", n.prefix));
    assert!(
        headers
            .get("Todo-Dlq-Reason")
            .is_some_and(|r| !r.as_str().is_empty())
    );
    let deliveries: i64 = headers
        .get("Todo-Dlq-Deliveries")
        .and_then(|v| v.as_str().parse().ok())
        .expect("Todo-Dlq-Deliveries");
    assert!(
        (2..=2 + todo_service::nats::streams::MAX_DELIVER_HEADROOM).contains(&deliveries),
        "dead-lettered after {deliveries} deliveries"
    );
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("doomed")
    );
    assert_eq!(json_of(&letter)["title"], "never");
    let js = jetstream::new(n.client.clone());
    let mut dlq = js
        .get_stream(format!("{}_DLQ", n.prefix.to_uppercase()))
        .await
        .expect("dlq stream");
    assert_eq!(dlq.info().await.expect("info").state.messages, 1);
    proxy.restore();
}

#[tokio::test]
async fn commands_acknowledged_by_a_broker_that_is_killed_and_restarted_are_applied_exactly_once() {
    // Arrange: a private broker.
    let mut nats = PrivateNats::start();
    let n = NatsApp::start(nats.url(), |_| {}).await;
    let js = jetstream::new(n.client.clone());
    let subject = format!("{}.cmd.create", n.prefix);

    // Act: a stream of commands; the broker is SIGKILLed in the middle and restarted.
    let mut acknowledged = Vec::new();
    for i in 0..600 {
        if i == 300 {
            nats.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            nats.restart();
        }
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("k-{i}").as_str());
        h.insert("Todo-Owner", "crash");
        let published = tokio::time::timeout(Duration::from_secs(5), async {
            js.publish_with_headers(
                subject.clone(),
                h,
                Bytes::from(json!({"title": format!("t{i}")}).to_string()),
            )
            .await
            .ok()?
            .await
            .ok()
        })
        .await
        .ok()
        .flatten();
        if published.is_some() {
            acknowledged.push(format!("t{i}"));
        }
    }

    // Assert: every command the broker acknowledged is applied, once.
    let client = db(&n.app.db_url).await;
    let want = acknowledged.len() as i64;
    wait_for(
        "every acknowledged command",
        Duration::from_secs(30),
        async || {
            let got: i64 = client
                .query_one("SELECT count(*) FROM todos WHERE owner = 'crash'", &[])
                .await
                .expect("count")
                .get(0);
            got >= want
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let titles: Vec<String> = client
        .query("SELECT title FROM todos WHERE owner = 'crash'", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let distinct: std::collections::HashSet<&String> = titles.iter().collect();
    assert_eq!(distinct.len(), titles.len(), "a command was applied twice");
    for t in &acknowledged {
        assert!(distinct.contains(t), "acknowledged {t} lost");
    }
    println!(
        "broker crash: {} of 600 publishes acknowledged, all applied once",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 500);
}

#[tokio::test]
async fn every_change_made_while_nats_is_down_is_published_once_it_is_back() {
    // Arrange
    let mut nats = PrivateNats::start();
    let n = NatsApp::start(nats.url(), |_| {}).await;
    let first = n.app.create("before the outage").await;

    // Act: NATS dies; changes go on over HTTP; NATS comes back.
    nats.kill();
    let mut made = vec![first["id"].as_str().expect("id").to_owned()];
    for i in 0..20 {
        let t = n.app.create(&format!("during {i}")).await;
        made.push(t["id"].as_str().expect("id").to_owned());
    }
    let ready = n.app.admin_get("/readyz").await;
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["components"]["nats"], "down");
    nats.restart();

    // Assert: the events stream ends up with an event per change, in commit order, ids
    // from the outbox, nothing pending.
    let client = async_nats::connect(nats.url()).await.expect("client");
    let js = jetstream::new(client);
    let stream_name = format!("{}_EVENTS", n.prefix.to_uppercase());
    wait_for("21 events", Duration::from_secs(20), async || {
        match js.get_stream(&stream_name).await {
            Ok(mut s) => s
                .info()
                .await
                .map(|i| i.state.messages >= 21)
                .unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;
    let stream = js.get_stream(&stream_name).await.expect("stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .expect("consumer");
    let mut messages = consumer
        .fetch()
        .max_messages(100)
        .messages()
        .await
        .expect("fetch");
    let mut seen = Vec::new();
    let mut seqs = Vec::new();
    while let Some(Ok(m)) = messages.next().await {
        seen.push(json_of(&m)["id"].as_str().unwrap_or_default().to_owned());
        let headers = m.headers.as_ref().expect("headers");
        assert_eq!(
            headers.get("Todo-Owner").map(|v| v.as_str()),
            Some("public")
        );
        seqs.push(
            headers
                .get("Nats-Msg-Id")
                .expect("id")
                .as_str()
                .parse::<i64>()
                .expect("seq"),
        );
        assert!(m.subject.ends_with(".events.created"));
    }
    assert_eq!(seen, made, "one event per change, in order");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    wait_for("nothing pending", Duration::from_secs(5), async || {
        let text = n
            .app
            .admin_get("/metrics")
            .await
            .text()
            .await
            .unwrap_or_default();
        text.contains("todo_outbox_pending 0")
    })
    .await;
    assert!(
        n.app
            .admin_get("/metrics")
            .await
            .text()
            .await
            .unwrap_or_default()
            .contains("todo_nats_connected 1")
    );
}

#[tokio::test]
async fn replicas_agree_with_nats_up_and_with_nats_down() {
    for outage in [false, true] {
        // Arrange: two replicas on one database and one broker.
        let mut nats = PrivateNats::start();
        let url = create_database().await;
        let prefix = nats_prefix();
        let (u, p) = (nats.url(), prefix.clone());
        let a = spawn_app_at(url.clone(), |s| with_nats(s, &u, &p)).await;
        let (u, p) = (nats.url(), prefix.clone());
        let b = spawn_app_at(url, |s| with_nats(s, &u, &p)).await;
        if outage {
            nats.kill();
        }

        // Act
        let mut lags = changes_show_on_the_other_replica(&a, &b, 25).await;

        // Assert
        let p99 = p99(&mut lags);
        let situation = if outage { "NATS down" } else { "NATS up" };
        println!(
            "replicas with {situation}: {} changes, p99 {} ms",
            lags.len(),
            p99.as_millis()
        );
        assert!(
            p99 <= Duration::from_millis(200),
            "{situation}: p99 {p99:?}"
        );
    }
}

/// The built binary with NATS, for the crash test.
async fn service_process(nats: &str, prefix: &str, db_url: &str) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_todo-service"));
    cmd.arg("serve")
        .env("DATABASE_URL", db_url)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("NATS_URL", nats)
        .env("NATS_PREFIX", prefix)
        .env("NATS_ACK_WAIT_S", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().expect("start todo-service")
}

#[tokio::test]
async fn a_service_killed_between_commit_and_ack_does_not_apply_the_redelivered_command_twice() {
    // Arrange: 2,000 commands waiting; the service starts consuming them.
    let nats = PrivateNats::start();
    let prefix = nats_prefix();
    let db_url = create_database().await;
    let client = async_nats::connect(nats.url()).await.expect("client");
    let js = jetstream::new(client.clone());
    todo_service::nats::streams::ensure(&js, &todo_service::nats::streams::Names::new(&prefix))
        .await
        .expect("streams");
    // More than one pull batch, so that the service is still busy when the link goes.
    const COMMANDS: usize = 2_000;
    // Published in chunks, the acks of each awaited (the client bounds acks in flight).
    for chunk in (0..COMMANDS).collect::<Vec<_>>().chunks(500) {
        let mut acks = Vec::with_capacity(chunk.len());
        for i in chunk {
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", format!("once-{i}").as_str());
            acks.push(
                js.publish_with_headers(
                    format!("{prefix}.cmd.create"),
                    h,
                    Bytes::from(json!({"title": format!("o{i}")}).to_string()),
                )
                .await
                .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("stored");
        }
    }
    // The first process reaches the broker through a proxy of the test's.
    let proxy = crate::proxy::Proxy::start(format!("127.0.0.1:{}", nats.port)).await;
    let through_proxy = format!("nats://127.0.0.1:{}", proxy.port);
    let mut first = service_process(&through_proxy, &prefix, &db_url).await;
    let rows = db(&db_url).await;
    let count = async || -> i64 {
        rows.query_one("SELECT count(*) FROM todos", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0)
    };

    // Act: once it is consuming, the link to the broker goes silent (a black hole, not a
    // close): the commands already pulled are committed, but their acks never arrive. The
    // service is SIGKILLed then; a new process takes over, and the unacked commands are
    // delivered again after the 2 s ack wait.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count().await == 0 {
        assert!(Instant::now() < deadline, "never started consuming");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    proxy.blackhole();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.kill().await.expect("SIGKILL");
    let committed = count().await;
    let mut stream = js
        .get_stream(format!("{}_COMMANDS", prefix.to_uppercase()))
        .await
        .expect("stream");
    // A work queue drops a command once it is acked: what is left was not acked.
    let unacked = stream.info().await.expect("info").state.messages as i64;
    let committed_not_acked = committed - (COMMANDS as i64 - unacked);
    let _second = service_process(&nats.url(), &prefix, &db_url).await;

    // Assert: every command applied exactly once, and some were delivered again.
    wait_for("all commands", Duration::from_secs(120), async || {
        count().await >= COMMANDS as i64
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let row = rows
        .query_one("SELECT count(*), count(DISTINCT title) FROM todos", &[])
        .await
        .expect("count");
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (COMMANDS as i64, COMMANDS as i64)
    );
    println!(
        "service crash: {committed} committed at the kill, {committed_not_acked} of them not \
         acked (delivered again and replayed), {COMMANDS} todos in the end"
    );
    assert!(
        committed_not_acked > 0,
        "no command was between COMMIT and ack at the kill: the test proved nothing"
    );
}

#[tokio::test]
async fn the_nats_actors_and_the_relay_are_supervised_and_come_back_after_a_kill() {
    // Arrange
    let n = NatsApp::start(nats_url(), |_| {}).await;

    // Act: each is killed in turn.
    for actor in [
        "nats-requests",
        "nats-commands",
        "outbox-relay",
        "change-listener",
    ] {
        assert!(n.app.chaos("kill", actor).await, "{actor} runs");
        n.app.wait_ready(Duration::from_secs(5)).await;
    }

    // Assert: requests, commands and events all work again.
    n.wait_responding().await;
    let created = n
        .request("create", &[], json!({"title": "after the kills"}))
        .await;
    assert_eq!(error_code(&created), None);
    n.jetstream_publish(
        "create",
        "after-kills",
        "public",
        json!({"title": "by command"}),
    )
    .await;
    let client = db(&n.app.db_url).await;
    wait_for("the command", Duration::from_secs(10), async || {
        client
            .query_opt("SELECT 1 FROM todos WHERE title = 'by command'", &[])
            .await
            .expect("query")
            .is_some()
    })
    .await;
    let mut events = n
        .client
        .subscribe(format!("{}.events.>", n.prefix))
        .await
        .expect("sub");
    n.app.create("an event after the kills").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("the event in time")
            .expect("message");
        if json_of(&event)["title"] == "an event after the kills" {
            break;
        }
    }
    // One micro service instance answers for this app: the killed one stopped.
    let inbox = n.client.new_inbox();
    let mut replies = n.client.subscribe(inbox.clone()).await.expect("sub");
    n.client
        .publish_with_reply("$SRV.INFO.todo", inbox, Bytes::new())
        .await
        .expect("publish");
    let mut ours = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, replies.next()).await {
        let info = json_of(&m);
        if info["endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["subject"] == n.subject("get")))
        {
            ours += 1;
        }
    }
    assert_eq!(ours, 1, "instances of this app's micro service");
    let actors: Vec<Value> = n
        .app
        .admin_get("/admin/actors")
        .await
        .json()
        .await
        .expect("json");
    for actor in [
        "nats-requests",
        "nats-commands",
        "outbox-relay",
        "change-listener",
    ] {
        let a = actors.iter().find(|a| a["name"] == actor).expect(actor);
        assert_eq!(
            (a["status"].as_str(), a["restarts"].as_u64()),
            (Some("running"), Some(1)),
            "{actor}"
        );
    }
    n.cleanup().await;
}
