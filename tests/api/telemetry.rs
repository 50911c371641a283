//! Traces and logs of the real binary. Traces: a small OTLP/HTTP receiver of the test's
//! own collects what the service exports (`OTEL_EXPORTER_OTLP_ENDPOINT`), and the tests
//! follow a create over HTTP and over NATS (request/reply, a JetStream command, the
//! event it publishes) from the caller's `traceparent` through the actor message to the
//! SQL batch, with no orphan spans. Logs: every line the service writes is JSON without
//! duplicate keys, valid against `logging/log-line.schema.json`, and fits the
//! Elasticsearch template in `logging/`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{ServiceProcess, nats_prefix, nats_url, spawn_process, wait_for};

/// One span as exported, with its resource's attributes.
#[derive(Debug, Clone)]
struct Exported {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    /// (trace id, span id) of each link.
    links: Vec<(String, String)>,
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// An OTLP/HTTP (protobuf) trace receiver: every span it was sent.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Exported>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (kept, seen) = (Arc::clone(&spans), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (kept, seen) = (Arc::clone(&kept), Arc::clone(&seen));
                tokio::spawn(async move { serve_otlp(conn, kept, seen).await });
            }
        });
        Self {
            port,
            spans,
            requests,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().expect("lock").clone()
    }

    /// Waits until `done` holds for the spans received (10 s at most).
    async fn wait_until(&self, what: &str, done: impl Fn(&[Exported]) -> bool) -> Vec<Exported> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not exported within 10 s; requests {:?}; spans {:#?}",
                self.requests.lock().expect("lock"),
                spans
                    .iter()
                    .map(|s| (&s.name, &s.trace_id, &s.span_id, &s.parent))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads HTTP/1.1 requests (with `Content-Length`) off one connection and decodes each
/// body as an `ExportTraceServiceRequest`.
async fn serve_otlp(
    mut conn: tokio::net::TcpStream,
    spans: Arc<Mutex<Vec<Exported>>>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let content_type = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        requests
            .lock()
            .expect("lock")
            .push(format!("{request_line} ({content_type}, {length} bytes)"));
        let decoded = if request_line.starts_with("POST /v1/traces ")
            && content_type == "application/x-protobuf"
        {
            ExportTraceServiceRequest::decode(&body[..]).ok()
        } else {
            None
        };
        let status = match decoded {
            Some(export) => {
                let mut out = spans.lock().expect("lock");
                for rs in export.resource_spans {
                    let resource =
                        attributes(&rs.resource.map(|r| r.attributes).unwrap_or_default());
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        out.push(Exported {
                            trace_id: hex::encode(&span.trace_id),
                            span_id: hex::encode(&span.span_id),
                            parent: hex::encode(&span.parent_span_id),
                            name: span.name.clone(),
                            kind: span.kind,
                            links: span
                                .links
                                .iter()
                                .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                                .collect(),
                            attributes: attributes(&span.attributes),
                            resource: resource.clone(),
                        });
                    }
                }
                "200 OK"
            }
            None => "400 Bad Request",
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if conn.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The `traceparent` of the event about todo `id` on `events` (within 10 s).
async fn event_traceparent(events: &mut async_nats::Subscriber, id: &Value) -> String {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the created event within 10 s")
            .expect("subscription open");
        let body: Value = serde_json::from_slice(&event.payload).unwrap_or_default();
        if body["id"] == *id {
            return event
                .headers
                .as_ref()
                .and_then(|h| h.get("traceparent"))
                .map(|v| v.as_str().to_owned())
                .expect("the event carries a traceparent");
        }
    }
}

/// A fresh W3C trace context: (trace id, parent span id, `traceparent`).
fn caller_context() -> (String, String, String) {
    let trace = uuid::Uuid::now_v7().simple().to_string();
    // The random half of another v7 id.
    let parent = uuid::Uuid::now_v7().simple().to_string()[16..].to_owned();
    let header = format!("00-{trace}-{parent}-01");
    (trace, parent, header)
}

fn kind(span: &Exported) -> SpanKind {
    SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified)
}

fn find(spans: &[Exported], what: impl Fn(&Exported) -> bool) -> Option<&Exported> {
    spans.iter().find(|s| what(s))
}

/// True when `span` descends from the span `ancestor` through parents in `spans`.
fn descends(spans: &[Exported], span: &Exported, ancestor: &str) -> bool {
    let mut parent = span.parent.clone();
    for _ in 0..32 {
        if parent == ancestor {
            return true;
        }
        match spans
            .iter()
            .find(|s| s.span_id == parent && s.trace_id == span.trace_id)
        {
            Some(p) => parent = p.parent.clone(),
            None => return false,
        }
    }
    false
}

/// Every span of `traces` has its parent among the exported spans (or is a root, or is
/// the edge span whose parent is the caller's `remote`).
fn assert_no_orphans(spans: &[Exported], traces: &HashSet<String>, remote: &[&str]) {
    let ids: HashSet<(&str, &str)> = spans
        .iter()
        .map(|s| (s.trace_id.as_str(), s.span_id.as_str()))
        .collect();
    for s in spans.iter().filter(|s| traces.contains(&s.trace_id)) {
        let fine = s.parent.is_empty()
            || remote.contains(&s.parent.as_str())
            || ids.contains(&(s.trace_id.as_str(), s.parent.as_str()));
        assert!(
            fine,
            "span {} ({}) is an orphan: parent {} was never exported",
            s.name, s.span_id, s.parent
        );
    }
}

/// The write chain of one request: its `writer.write` span descends from `edge`, a
/// `writer.batch` span links to it and has a `db.apply_batch` child. Returns the trace
/// ids involved.
fn assert_write_chain(spans: &[Exported], edge: &Exported) -> HashSet<String> {
    let write = find(spans, |s| {
        s.name == "writer.write" && s.trace_id == edge.trace_id && descends(spans, s, &edge.span_id)
    })
    .unwrap_or_else(|| panic!("no writer.write span under {}", edge.name));
    let batch = find(spans, |s| {
        s.name == "writer.batch"
            && s.links
                .contains(&(write.trace_id.clone(), write.span_id.clone()))
    })
    .expect("a writer.batch span linked to the write message");
    let sql = find(spans, |s| {
        s.name == "db.apply_batch" && s.trace_id == batch.trace_id && s.parent == batch.span_id
    })
    .expect("a db.apply_batch span under the batch");
    assert_eq!(kind(sql), SpanKind::Client, "the SQL span is a client span");
    assert_eq!(
        sql.attributes.get("db.system").map(String::as_str),
        Some("postgresql")
    );
    HashSet::from([edge.trace_id.clone(), batch.trace_id.clone()])
}

fn traced_process_env(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

async fn start_traced(receiver: &Receiver, more: &[(&str, &str)]) -> ServiceProcess {
    let env = traced_process_env(receiver);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(more);
    spawn_process(&all).await
}

#[tokio::test]
async fn an_http_create_is_traced_from_the_callers_traceparent_through_the_writer_to_sql() {
    let receiver = Receiver::start().await;
    let p = start_traced(&receiver, &[]).await;
    let http = reqwest::Client::new();
    let (trace, parent, traceparent) = caller_context();
    let created = http
        .post(format!("{}/api/todos", p.address))
        .header("traceparent", &traceparent)
        .json(&json!({ "title": "traced" }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);

    // A read that misses the cache (an unknown id) and a list: both reach SQL.
    let (miss_trace, miss_parent, miss_tp) = caller_context();
    let missing = http
        .get(format!("{}/api/todos/{}", p.address, uuid::Uuid::now_v7()))
        .header("traceparent", &miss_tp)
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let (list_trace, list_parent, list_tp) = caller_context();
    let listed = http
        .get(format!("{}/api/todos", p.address))
        .header("traceparent", &list_tp)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.status(), 200);

    let spans = receiver
        .wait_until("the create's SQL batch", |spans| {
            spans.iter().any(|s| s.name == "db.apply_batch")
                && spans.iter().any(|s| s.name == "db.get_todos")
                && spans
                    .iter()
                    .any(|s| s.name == "db.list_todos" && s.trace_id == list_trace)
                && spans.iter().filter(|s| kind(s) == SpanKind::Server).count() >= 3
        })
        .await;

    // The edge span is the caller's child, a server span with the route and status.
    let edge = find(&spans, |s| {
        s.trace_id == trace && kind(s) == SpanKind::Server
    })
    .expect("a server span in the caller's trace");
    assert_eq!(edge.parent, parent, "the edge span is the caller's child");
    assert_eq!(
        edge.attributes.get("http.route").map(String::as_str),
        Some("/api/todos")
    );
    assert_eq!(
        edge.attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("201")
    );
    let mut traces = assert_write_chain(&spans, edge);

    // The miss: the shard message under the edge, the query linked to the message.
    let miss_edge = find(&spans, |s| {
        s.trace_id == miss_trace && kind(s) == SpanKind::Server
    })
    .expect("the read's server span");
    assert_eq!(miss_edge.parent, miss_parent);
    let message = find(&spans, |s| {
        s.name == "shard.get" && s.trace_id == miss_trace && descends(&spans, s, &miss_edge.span_id)
    })
    .expect("a shard.get span under the read");
    let query = find(&spans, |s| {
        s.name == "db.get_todos"
            && s.links
                .contains(&(message.trace_id.clone(), message.span_id.clone()))
    })
    .expect("a db.get_todos span linked to the shard message");
    traces.insert(miss_trace.clone());
    traces.insert(query.trace_id.clone());

    // The list: its query is a child of the shard message.
    let list_edge = find(&spans, |s| {
        s.trace_id == list_trace && kind(s) == SpanKind::Server
    })
    .expect("the list's server span");
    assert_eq!(list_edge.parent, list_parent);
    let list_query = find(&spans, |s| {
        s.name == "db.list_todos" && s.trace_id == list_trace
    })
    .expect("db.list_todos");
    assert!(
        descends(&spans, list_query, &list_edge.span_id),
        "the list query descends from the list request"
    );
    traces.insert(list_trace);

    assert_no_orphans(&spans, &traces, &[&parent, &miss_parent, &list_parent]);

    // The resource names the service and this process.
    assert_eq!(
        edge.resource.get("service.name").map(String::as_str),
        Some("todo-service")
    );
    assert_eq!(
        edge.resource.get("service.version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(
        edge.resource
            .get("service.instance.id")
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()),
        "service.instance.id is the replica id: {:?}",
        edge.resource
    );

    // The access line carries the same trace.
    let access = p
        .log_lines_with("request completed")
        .into_iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .find(|l| l["trace_id"] == trace.as_str())
        .expect("the access line of the traced create");
    assert_eq!(access["span_id"], edge.span_id.as_str());
    assert_eq!(access["status"], 201);
}

#[tokio::test]
async fn nats_requests_commands_and_events_carry_the_trace_on() {
    let receiver = Receiver::start().await;
    let url = nats_url();
    let prefix = nats_prefix();
    let p = start_traced(&receiver, &[("NATS_URL", &url), ("NATS_PREFIX", &prefix)]).await;
    let client = nats_responding(&url, &prefix).await;
    let mut events = client
        .subscribe(format!("{prefix}.events.created"))
        .await
        .expect("subscribe");

    let (trace, parent, traceparent) = caller_context();
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", traceparent.as_str());
    headers.insert("Todo-Owner", "tracer");
    let reply = client
        .request_with_headers(
            format!("{prefix}.create"),
            headers,
            Bytes::from_static(br#"{"title":"traced over NATS"}"#),
        )
        .await
        .expect("create over NATS");
    let created: Value = serde_json::from_slice(&reply.payload).expect("json");
    assert_eq!(created["title"], "traced over NATS", "{created}");
    let reply_tp = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.as_str().to_owned())
        .expect("the reply carries a traceparent");
    assert!(
        reply_tp.contains(&trace),
        "reply {reply_tp} continues {trace}"
    );

    // The event of the change continues the trace too.
    let event_tp = event_traceparent(&mut events, &created["id"]).await;
    assert!(
        event_tp.contains(&trace),
        "event {event_tp} continues {trace}"
    );
    let event_span = event_tp.split('-').nth(2).expect("span id").to_owned();

    // A durable command.
    let (cmd_trace, cmd_parent, cmd_tp) = caller_context();
    let js = async_nats::jetstream::new(client.clone());
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", cmd_tp.as_str());
    headers.insert("Todo-Owner", "tracer");
    headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = js
            .publish_with_headers(
                format!("{prefix}.cmd.create"),
                headers.clone(),
                Bytes::from_static(br#"{"title":"traced command"}"#),
            )
            .await;
        let stored = match sent {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        match stored {
            true => break,
            false => {
                assert!(
                    Instant::now() < deadline,
                    "the commands stream never appeared"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let spans = receiver
        .wait_until("the NATS request, event and command spans", |spans| {
            let has = |t: &str, k: SpanKind| spans.iter().any(|s| s.trace_id == t && kind(s) == k);
            has(&trace, SpanKind::Server)
                && has(&trace, SpanKind::Producer)
                && has(&cmd_trace, SpanKind::Consumer)
                && spans.iter().filter(|s| s.name == "db.apply_batch").count() >= 2
        })
        .await;

    let request = find(&spans, |s| {
        s.trace_id == trace && kind(s) == SpanKind::Server
    })
    .expect("the request's server span");
    assert_eq!(
        request.parent, parent,
        "the NATS request span is the caller's child"
    );
    assert_eq!(
        request
            .attributes
            .get("messaging.system")
            .map(String::as_str),
        Some("nats")
    );
    let mut traces = assert_write_chain(&spans, request);
    let producer = find(&spans, |s| s.span_id == event_span).expect("the event's producer span");
    assert_eq!(kind(producer), SpanKind::Producer);
    assert_eq!(producer.trace_id, trace);
    assert!(
        descends(&spans, producer, &request.span_id),
        "the event's span descends from the request"
    );

    let command = find(&spans, |s| {
        s.trace_id == cmd_trace && kind(s) == SpanKind::Consumer
    })
    .expect("the command's consumer span");
    assert_eq!(
        command.parent, cmd_parent,
        "the command span is the publisher's child"
    );
    traces.extend(assert_write_chain(&spans, command));
    assert_no_orphans(&spans, &traces, &[&parent, &cmd_parent]);

    let js = async_nats::jetstream::new(client);
    let upper = prefix.to_uppercase();
    for stream in ["COMMANDS", "EVENTS", "DLQ"] {
        let _ = js.delete_stream(format!("{upper}_{stream}")).await;
    }
    drop(p);
}

#[tokio::test]
async fn spans_are_exported_as_json_when_asked_and_grpc_is_refused_by_name() {
    // http/json goes to the same path with a JSON body.
    let receiver = Receiver::start().await;
    let p = start_traced(&receiver, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).await;
    let created = reqwest::Client::new()
        .post(format!("{}/api/todos", p.address))
        .json(&json!({ "title": "json export" }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = receiver.requests.lock().expect("lock").clone();
        if seen
            .iter()
            .any(|r| r.starts_with("POST /v1/traces ") && r.contains("application/json"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no JSON export: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(p);

    // A protocol the binary cannot speak stops it at start, naming the variable.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_todo-service"))
        .arg("serve")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
        "the error names the variable: {stderr}"
    );
}

#[tokio::test]
async fn spans_still_buffered_at_sigterm_are_flushed_before_the_process_exits() {
    let receiver = Receiver::start().await;
    // Batches would leave only every minute: what arrives came from the final flush.
    let mut p = spawn_process(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ("SHUTDOWN_DELAY_S", "0"),
    ])
    .await;
    let (trace, _, traceparent) = caller_context();
    let created = reqwest::Client::new()
        .post(format!("{}/api/todos", p.address))
        .header("traceparent", &traceparent)
        .json(&json!({ "title": "flushed at exit" }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.spans().is_empty(),
        "nothing is exported before the schedule delay"
    );
    let pid = p.child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(20), p.child.wait())
        .await
        .expect("exits within 20 s")
        .expect("wait");
    assert!(exited.success(), "clean exit: {exited:?}");
    let spans = receiver.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == trace && kind(s) == SpanKind::Server),
        "the request's span was flushed at exit: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(
        spans.iter().any(|s| s.name == "db.apply_batch"),
        "and its SQL batch"
    );
}

#[tokio::test]
async fn otel_sdk_disabled_turns_tracing_off() {
    let receiver = Receiver::start().await;
    let p = start_traced(&receiver, &[("OTEL_SDK_DISABLED", "true")]).await;
    let (_, _, traceparent) = caller_context();
    let created = reqwest::Client::new()
        .post(format!("{}/api/todos", p.address))
        .header("traceparent", &traceparent)
        .header("x-request-id", "untraced")
        .json(&json!({ "title": "untraced" }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(receiver.spans().is_empty(), "nothing exported");
    let access = p.log_lines_with("\"untraced\"");
    assert!(!access.is_empty(), "the access line is written");
    assert!(
        access.iter().all(|l| !l.contains("trace_id")),
        "no trace ids: {access:?}"
    );
}

#[tokio::test]
async fn an_unreachable_collector_never_fails_or_slows_a_request() {
    // Nothing listens on the collector's port: exports fail in the background.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let p = spawn_process(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    for i in 0..200 {
        let r = http
            .post(format!("{}/api/todos", p.address))
            .json(&json!({ "title": format!("t{i}") }))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201);
    }
    // 200 sequential creates take well under a second on this machine; a request
    // that waited for the exporter's timeout (10 s) would blow this bound.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "200 creates took {:?} with the collector down",
        started.elapsed()
    );
}

// ---- Logs -----------------------------------------------------------------------

/// A JSON object parsed with duplicate keys refused (serde_json keeps the last).
struct UniqueObject(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<UniqueObject, A::Error> {
                let mut out = Map::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(UniqueObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The Elasticsearch type the template maps `field` to (following dotted names through
/// `properties`), if it maps it.
fn mapped_type<'a>(template: &'a Value, field: &str) -> Option<&'a str> {
    let mut node = &template["template"]["mappings"];
    for part in field.split('.') {
        node = node.get("properties")?.get(part)?;
    }
    node.get("type").and_then(Value::as_str)
}

fn fits(es_type: &str, value: &Value) -> bool {
    match es_type {
        "keyword" | "text" | "date" => value.is_string() || value.is_array(),
        "short" | "integer" | "long" => value.is_i64() || value.is_u64(),
        "float" | "double" | "scaled_float" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => false,
    }
}

#[tokio::test]
async fn every_log_line_is_unique_keyed_json_that_fits_the_schema_and_the_index_template() {
    let url = nats_url();
    let prefix = nats_prefix();
    let p = spawn_process(&[("NATS_URL", &url), ("NATS_PREFIX", &prefix)]).await;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}{path}", p.address);

    // Traffic of every kind: writes, reads, errors, a NATS request, an actor killed.
    let (trace, _, traceparent) = caller_context();
    let created = traced_create(&p, &traceparent, "log-schema-create", "logged").await;
    let path = format!("/api/todos/{}", created["id"].as_str().expect("id"));
    for r in [
        http.get(api(&path)).send().await,
        http.get(api("/api/todos")).send().await,
        http.patch(api(&path))
            .json(&json!({ "completed": true }))
            .send()
            .await,
        http.get(api("/api/todos/not-an-id")).send().await,
        http.post(api("/api/todos")).body("{nope").send().await,
        http.delete(api(&path)).send().await,
        http.get(api("/no/such/route")).send().await,
    ] {
        assert!(r.expect("request").status().as_u16() < 500);
    }
    let client = nats_responding(&url, &prefix).await;
    let killed = http
        .post(format!("{}/admin/chaos/kill/shard-0", p.admin))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("chaos");
    assert_eq!(killed.status(), 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/logging/log-line.schema.json"
        ))
        .expect("logging/log-line.schema.json"),
    )
    .expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let template: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/logging/elasticsearch/index-template.json"
        ))
        .expect("index template"),
    )
    .expect("template is JSON");

    let lines = p.logs.lock().expect("logs").clone();
    assert!(lines.len() >= 10, "too few lines to judge: {lines:#?}");
    let mut types: HashMap<String, &'static str> = HashMap::new();
    let mut keys: HashSet<String> = HashSet::new();
    let mut parsed = Vec::new();
    for line in &lines {
        let UniqueObject(object) = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object without duplicate keys ({e}): {line}"));
        let value = Value::Object(object.clone());
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{line}\nbreaks the schema: {errors:?}");
        for (k, v) in &object {
            let t = match v {
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                Value::Array(_) => "array",
                Value::Null => "null",
                Value::Object(_) => "object",
            };
            if t != "null" {
                let first = types.entry(k.clone()).or_insert(t);
                assert_eq!(
                    *first, t,
                    "field {k} is a {first} in one line and a {t} in another: {line}"
                );
            }
            if let Some(es) = mapped_type(&template, k) {
                assert!(
                    fits(es, v),
                    "field {k} = {v} does not fit its {es} mapping: {line}"
                );
            }
            keys.insert(k.clone());
        }
        parsed.push(object);
    }
    // Elasticsearch expands dotted names into objects: `a` and `a.b` cannot both exist.
    for k in &keys {
        let mut prefix = k.as_str();
        while let Some((head, _)) = prefix.rsplit_once('.') {
            assert!(
                !keys.contains(head),
                "field {head} is a value and also the object of {k}: the index would refuse one"
            );
            prefix = head;
        }
    }

    // The traced create's access line: request id, route, status, latency, the trace.
    let access = parsed
        .iter()
        .find(|l| {
            l.get("request_id") == Some(&json!("log-schema-create"))
                && l.get("message") == Some(&json!("request completed"))
        })
        .unwrap_or_else(|| panic!("the create's access line, in {lines:#?}"));
    assert_eq!(access["route"], "/api/todos");
    assert_eq!(access["status"], 201);
    assert_eq!(access["trace_id"], trace.as_str());
    assert!(access["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    // Lines of the supervisor restarting the killed shard say which actor.
    assert!(
        parsed.iter().any(|l| l
            .get("actor")
            .and_then(Value::as_str)
            .is_some_and(|n| n.contains("shard"))
            || l.values()
                .any(|v| v.as_str().is_some_and(|s| s.contains("shard-0")))),
        "no line about the killed shard"
    );

    let js = async_nats::jetstream::new(client);
    let upper = prefix.to_uppercase();
    for stream in ["COMMANDS", "EVENTS", "DLQ"] {
        let _ = js.delete_stream(format!("{upper}_{stream}")).await;
    }
}

/// A client of the NATS server at `url`, once the service's endpoints under `prefix`
/// answer.
async fn nats_responding(url: &str, prefix: &str) -> async_nats::Client {
    let client = async_nats::connect(url).await.expect("nats client");
    wait_for(
        "the NATS endpoints answer",
        Duration::from_secs(10),
        async || {
            client
                .request(format!("{prefix}.list"), Bytes::from_static(b"{}"))
                .await
                .is_ok()
        },
    )
    .await;
    client
}

/// Creates a todo titled `title` over HTTP, carrying `traceparent` and `x-request-id`.
async fn traced_create(
    p: &ServiceProcess,
    traceparent: &str,
    request_id: &str,
    title: &str,
) -> Value {
    reqwest::Client::new()
        .post(format!("{}/api/todos", p.address))
        .header("traceparent", traceparent)
        .header("x-request-id", request_id)
        .json(&json!({ "title": title }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json")
}

/// The access line of the request with `x-request-id: id`, once it is written.
async fn access_line(p: &ServiceProcess, id: &str) -> Value {
    let needle = format!("\"request_id\":\"{id}\"");
    let mut found = None;
    wait_for(
        &format!("the access line of {id}"),
        Duration::from_secs(5),
        async || {
            found = p
                .log_lines_with(&needle)
                .into_iter()
                .find(|l| l.contains("\"request completed\""));
            found.is_some()
        },
    )
    .await;
    serde_json::from_str(&found.unwrap_or_default()).expect("a JSON line")
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

#[tokio::test]
async fn without_an_exporter_the_callers_trace_still_reaches_logs_replies_and_events() {
    // Arrange: the service as it ships, no OTLP endpoint (spans get ids, nothing is
    // exported), with NATS.
    let url = nats_url();
    let prefix = nats_prefix();
    let p = spawn_process(&[("NATS_URL", &url), ("NATS_PREFIX", &prefix)]).await;
    let client = nats_responding(&url, &prefix).await;
    let mut events = client
        .subscribe(format!("{prefix}.events.created"))
        .await
        .expect("subscribe");
    let http = reqwest::Client::new();

    // Act 1: an HTTP create that carries the caller's trace.
    let (trace, parent, traceparent) = caller_context();
    let created = traced_create(&p, &traceparent, "ids-create", "traced, not exported").await;

    // Assert: its access line is in the caller's trace, with a span id of its own.
    let line = access_line(&p, "ids-create").await;
    assert_eq!(line["trace_id"], trace.as_str(), "{line}");
    let span = line["span_id"].as_str().unwrap_or_default();
    assert!(is_hex(span, 16) && span != parent, "{line}");
    // ... and so is the event of the change the relay publishes.
    let event_tp = event_traceparent(&mut events, &created["id"]).await;
    let parts: Vec<&str> = event_tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{event_tp}");
    assert_eq!(parts[1], trace, "event {event_tp} continues {trace}");
    assert!(is_hex(parts[2], 16) && parts[2] != parent, "{event_tp}");
    assert_eq!(
        parts[3], "01",
        "the caller's sampled flag is kept: {event_tp}"
    );

    // Act 2: a NATS request that carries another trace.
    let (nats_trace, nats_parent, nats_tp) = caller_context();
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", nats_tp.as_str());
    headers.insert("Todo-Owner", "tracer");
    let reply = client
        .request_with_headers(
            format!("{prefix}.create"),
            headers,
            Bytes::from_static(br#"{"title":"over NATS"}"#),
        )
        .await
        .expect("create over NATS");
    // Assert: the reply continues that trace from a span of the service's own.
    let reply_tp = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.as_str().to_owned())
        .expect("the reply carries a traceparent");
    let parts: Vec<&str> = reply_tp.split('-').collect();
    assert_eq!(parts.get(1), Some(&nats_trace.as_str()), "{reply_tp}");
    assert!(
        parts
            .get(2)
            .is_some_and(|s| is_hex(s, 16) && *s != nats_parent),
        "{reply_tp}"
    );

    // Act 3: requests without a trace.
    for id in ["ids-get-1", "ids-get-2"] {
        let r = http
            .get(format!("{}/api/todos", p.address))
            .header("x-request-id", id)
            .send()
            .await
            .expect("list");
        assert_eq!(r.status(), 200);
    }
    // Assert: each starts a trace of its own.
    let (a, b) = (
        access_line(&p, "ids-get-1").await,
        access_line(&p, "ids-get-2").await,
    );
    let (ta, tb) = (
        a["trace_id"].as_str().unwrap_or_default(),
        b["trace_id"].as_str().unwrap_or_default(),
    );
    assert!(is_hex(ta, 32) && is_hex(tb, 32), "{a}\n{b}");
    assert!(ta != tb && ta != trace && tb != trace, "{a}\n{b}");

    let js = async_nats::jetstream::new(client);
    let upper = prefix.to_uppercase();
    for stream in ["COMMANDS", "EVENTS", "DLQ"] {
        let _ = js.delete_stream(format!("{upper}_{stream}")).await;
    }
}
