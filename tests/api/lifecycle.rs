//! Process-level behaviour: SIGTERM drains, restart intensity exits non-zero, and a
//! PostgreSQL outage degrades to fast 503s and recovers without losing writes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, db, spawn_app_at, spawn_process};

#[tokio::test]
async fn sigterm_during_a_burst_answers_every_request_keeps_every_ack_and_exits_0() {
    // Arrange
    let mut p = spawn_process(&[("SHUTDOWN_DELAY_S", "2"), ("SHUTDOWN_GRACE_S", "10")]).await;
    let client = reqwest::Client::new();
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Act: 300 creates from 32 concurrent clients; SIGTERM after the 50th ack.
    let url = format!("{}/api/todos", p.address);
    let pid = p.child.id().expect("pid");
    let results = join_all((0..32).map(|c| {
        let (client, url, acks) = (client.clone(), url.clone(), std::sync::Arc::clone(&acks));
        async move {
            let mut out = Vec::new();
            for i in 0..10 {
                let r = client
                    .post(&url)
                    .json(&json!({"title": format!("burst {c}-{i}")}))
                    .send()
                    .await;
                let outcome = match r {
                    Ok(r) if r.status() == 201 => {
                        if acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 50 {
                            let _ = std::process::Command::new("kill")
                                .args(["-TERM", &pid.to_string()])
                                .status();
                        }
                        Ok(Some(
                            r.json::<Value>().await.expect("json")["id"]
                                .as_str()
                                .expect("id")
                                .to_owned(),
                        ))
                    }
                    // Answered, but not acknowledged (a 503 while draining is allowed).
                    Ok(r) => {
                        assert_eq!(r.status(), 503, "only 201 or 503 while draining");
                        Ok(None)
                    }
                    Err(e) => Err(e.to_string()),
                };
                out.push(outcome);
            }
            out
        }
    }))
    .await;
    let readyz = client
        .get(format!("{}/readyz", p.admin))
        .send()
        .await
        .expect("admin still up");
    assert_eq!(readyz.status(), 503, "readiness is 503 while draining");
    let status = tokio::time::timeout(Duration::from_secs(20), p.child.wait())
        .await
        .expect("exits within the grace period")
        .expect("wait");
    // Assert
    assert_eq!(status.code(), Some(0));
    let outcomes: Vec<_> = results.into_iter().flatten().collect();
    let unanswered: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        unanswered.is_empty(),
        "requests without an answer: {unanswered:?}"
    );
    let ids: Vec<String> = outcomes
        .into_iter()
        .filter_map(|o| o.ok().flatten())
        .collect();
    assert!(ids.len() >= 50);
    let rows = db(&p.db_url)
        .await
        .query("SELECT id::text FROM todos", &[])
        .await
        .expect("rows");
    let stored: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    for id in &ids {
        assert!(stored.contains(id), "acknowledged create {id} lost");
    }
}

#[tokio::test]
async fn exceeding_restart_intensity_fails_livez_then_exits_non_zero() {
    let mut p = spawn_process(&[("RESTART_INTENSITY", "2"), ("RESTART_PERIOD_S", "60")]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let mut saw_livez_503 = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = p.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        let _ = client
            .post(format!("{}/admin/chaos/panic/writer", p.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await;
        for _ in 0..5 {
            if let Ok(r) = client.get(format!("{}/livez", p.admin)).send().await {
                saw_livez_503 |= r.status() == 503;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        saw_livez_503,
        "/livez reported the meltdown before the exit"
    );
}

/// A PostgreSQL server of the test's own, started and stopped at will.
struct PrivatePg {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

fn as_postgres(program: &std::path::Path, args: &[&str]) -> std::process::Output {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut cmd = if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    };
    cmd.args(args).output().expect("run a PostgreSQL command")
}

impl PrivatePg {
    fn start_new() -> Self {
        let bin = PathBuf::from(std::env::var("PG_BIN").expect(
            "PG_BIN (PostgreSQL's bin directory with initdb and pg_ctl) must be set: scripts/test sets it",
        ));
        let dir = std::env::temp_dir().join(format!("todo-pg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let _ = std::process::Command::new("chown")
            .args(["postgres"])
            .arg(&dir)
            .status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let data = dir.join("data");
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().expect("utf8"),
                "-U",
                "postgres",
                "--auth=trust",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self { dir, port, bin };
        pg.start();
        pg
    }

    /// Gives the server a certificate for 127.0.0.1 signed by a fresh test CA (written to
    /// `ca.pem`) and restarts it with TLS on.
    fn enable_tls(&self) -> PathBuf {
        let dir = &self.dir;
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=todo test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let _ = std::process::Command::new("chown")
            .args(["postgres"])
            .arg(dir.join("server.key"))
            .arg(dir.join("server.crt"))
            .status();
        let _ = std::process::Command::new("chmod")
            .args(["600"])
            .arg(dir.join("server.key"))
            .status();
        self.stop();
        self.start();
        dir.join("ca.pem")
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn start(&self) {
        let data = self.dir.join("data");
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        if self.dir.join("server.crt").exists() {
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                self.dir.display()
            ));
        }
        let log = self.dir.join("log");
        let out = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf8"),
                "-l",
                log.to_str().expect("utf8"),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        let out = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf8"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn postgres_down_gives_fast_503s_and_stale_cache_then_recovers_without_loss() {
    // Arrange: a private server, the app on it, some acknowledged todos.
    let pg = PrivatePg::start_new();
    let admin = db(&pg.url("postgres")).await;
    admin
        .execute("CREATE DATABASE todos", &[])
        .await
        .expect("create db");
    drop(admin);
    let app = spawn_app_at(pg.url("todos"), |_| {}).await;
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(
            app.create(&format!("before {i}")).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let cached = format!("/api/todos/{}", acked[0]);
    assert_eq!(app.get(&cached).await.status(), 200);

    // Act: stop PostgreSQL.
    pg.stop();

    // Assert: fast 503 + Retry-After for writes, unknown reads and lists; stale cache hits.
    for i in 0..5 {
        let started = Instant::now();
        let r = app
            .post_todo(&json!({"title": format!("during {i}")}))
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered in {:?}",
            started.elapsed()
        );
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
    }
    let started = Instant::now();
    let r = app
        .get(&format!("/api/todos/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(r.status(), 503);
    let r2 = app.get("/api/todos").await;
    assert_eq!(r2.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(4));
    let r = app.get(&cached).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "stale");
    assert_eq!(app.admin_get("/livez").await.status(), 200);
    let ready = app.admin_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.expect("json")["components"]["database"],
        "down"
    );

    // Act: start it again.
    pg.start();

    // Assert: full service within 10 s, nothing acknowledged lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.post_todo(&json!({"title": "after"})).await;
        if r.status() == 201 {
            acked.push(
                r.json::<Value>().await.expect("json")["id"]
                    .as_str()
                    .expect("id")
                    .to_owned(),
            );
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "writes did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list: Vec<Value> = app.get_json("/api/todos?limit=1000").await;
    assert_eq!(list.len(), acked.len());
    let rows = db(&pg.url("todos"))
        .await
        .query("SELECT id::text FROM todos", &[])
        .await
        .expect("rows");
    let stored: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged {id} lost");
    }
    drop(app);
}

#[tokio::test]
async fn sslmode_require_connects_over_verified_tls_and_refuses_an_unknown_ca() {
    // Arrange: a private server with a certificate from a test CA.
    let pg = PrivatePg::start_new();
    let ca = pg.enable_tls();
    let admin = db(&pg.url("postgres")).await;
    admin
        .execute("CREATE DATABASE todos", &[])
        .await
        .expect("create db");

    // Act: the app with sslmode=require and the CA.
    let url = format!("{}?sslmode=require", pg.url("todos"));
    let app = spawn_app_at(url.clone(), |s| s.db.ca_file = Some(ca.clone())).await;
    app.create("over tls").await;

    // Assert: every connection of the service is encrypted.
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'todo-service'",
            &[],
        )
        .await
        .expect("rows");
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(0)),
        "a plain connection"
    );
    drop(app);

    // A CA that did not sign the server's certificate: start-up fails.
    let other =
        std::env::temp_dir().join(format!("other-ca-{}.pem", uuid::Uuid::now_v7().simple()));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-out")
        .arg(&other)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let mut settings = crate::helpers::test_settings(&url);
    settings.db.ca_file = Some(other.clone());
    let Err(e) = todo_service::app::App::build(settings).await else {
        panic!("an unverifiable server certificate was accepted");
    };
    let why = format!("{e:#}").to_lowercase();
    assert!(why.contains("certificate") || why.contains("tls"), "{why}");
    let _ = std::fs::remove_file(other);
}
