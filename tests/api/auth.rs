//! Authentication and owner scoping (DESIGN.md §3 "Auth"), in `api-key` and `jwt`
//! modes: every endpoint answers 401 with an RFC 6750 challenge to missing or bad
//! credentials and writes nothing; one owner can neither see nor touch another's
//! todos; `AUTH_MODE=none` acts as owner `public` whatever `Authorization` says.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use todo_service::auth::AuthMode;

use crate::helpers::{TestApp, db, spawn_app_with};

/// The HS256 secret the app verifies with (at least 32 bytes).
const SECRET: &str = "integration-tests-hs256-secret-0123456789";
/// A secret the app does not know: tokens signed with it are forgeries.
const OTHER_SECRET: &str = "not-the-configured-secret-9876543210-xyz";
const ALICE_KEY: &str = "alice-key-4f1c2a9e8b7d6c5e4f3a2b1c0d9e8f7a";
const BOB_KEY: &str = "bob-key-0a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// An app in an authenticated mode and one valid credential per owner.
struct AuthApp {
    app: TestApp,
    alice: String,
    bob: String,
}

/// Starts the app in `mode` (`ApiKey` or `Jwt`) with owners `alice` and `bob`.
async fn spawn_auth_app(mode: AuthMode) -> AuthApp {
    match mode {
        AuthMode::ApiKey => {
            let file = std::env::temp_dir().join(format!("api-keys-{}", uuid::Uuid::now_v7()));
            let text = format!(
                "# test keys\n{} alice\n{} bob\n",
                sha256_hex(ALICE_KEY),
                sha256_hex(BOB_KEY)
            );
            std::fs::write(&file, text).expect("write the API keys file");
            let keys = file.clone();
            let app = spawn_app_with(move |s| {
                s.auth.auth_mode = AuthMode::ApiKey;
                s.auth.api_keys_file = Some(keys);
            })
            .await;
            // The file is read once, at start-up.
            let _ = std::fs::remove_file(&file);
            AuthApp {
                app,
                alice: ALICE_KEY.to_owned(),
                bob: BOB_KEY.to_owned(),
            }
        }
        AuthMode::Jwt => {
            let app = spawn_app_with(|s| {
                s.auth.auth_mode = AuthMode::Jwt;
                s.auth.jwt_secret = Some(SECRET.parse().expect("secret"));
            })
            .await;
            AuthApp {
                app,
                alice: hs256(SECRET, &json!({"sub": "alice", "exp": now() + 600})),
                bob: hs256(SECRET, &json!({"sub": "bob", "exp": now() + 600})),
            }
        }
        AuthMode::None => panic!("spawn_auth_app is for api-key and jwt"),
    }
}

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).expect("HS256 key"),
    )
    .expect("token encodes")
}

/// An unsigned token (`alg: none`) claiming to be `sub`.
fn unsigned_token(sub: &str) -> String {
    let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": sub, "exp": now() + 600}))
    )
}

/// Credentials the app in `mode` must refuse as `invalid_token`, each with a name for
/// the failure messages. Every one of them claims to be alice.
fn bad_credentials(mode: AuthMode) -> Vec<(&'static str, String)> {
    let forged = hs256(OTHER_SECRET, &json!({"sub": "alice", "exp": now() + 600}));
    let expired = hs256(SECRET, &json!({"sub": "alice", "exp": now() - 3600}));
    let mut all = vec![
        ("alg none", unsigned_token("alice")),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    match mode {
        AuthMode::ApiKey => {
            all.push(("unknown key", "unknown-key-0123456789abcdef".to_owned()));
            // The hash from the keys file is not the key.
            all.push(("key hash", sha256_hex(ALICE_KEY)));
            all.push(("alice's key with a suffix", format!("{ALICE_KEY}x")));
            all.push(("a valid-looking JWT", expired.clone()));
        }
        AuthMode::Jwt => {
            all.push(("signed with another secret", forged));
            all.push(("expired", expired));
            all.push((
                "not yet valid",
                hs256(
                    SECRET,
                    &json!({"sub": "alice", "exp": now() + 7200, "nbf": now() + 3600}),
                ),
            ));
            all.push(("no exp", hs256(SECRET, &json!({"sub": "alice"}))));
            all.push(("an API key", ALICE_KEY.to_owned()));
        }
        AuthMode::None => {}
    }
    all
}

/// Every API request, for a todo at `item`: (method, path, JSON body).
fn every_endpoint(item: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/api/todos".to_owned(), None),
        (
            Method::POST,
            "/api/todos".to_owned(),
            Some(json!({"title": "intruder"})),
        ),
        (Method::DELETE, "/api/todos".to_owned(), None),
        (Method::GET, item.to_owned(), None),
        (
            Method::PATCH,
            item.to_owned(),
            Some(json!({"title": "hijacked", "completed": true})),
        ),
        (
            Method::PUT,
            item.to_owned(),
            Some(json!({"title": "replaced", "completed": true, "order": 99})),
        ),
        (Method::DELETE, item.to_owned(), None),
    ]
}

impl AuthApp {
    /// Sends a request with `Authorization: <authorization>` when given.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        authorization: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.app.client.request(method, self.app.url(path));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        request.send().await.expect("request")
    }

    async fn as_owner(
        &self,
        credential: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        self.send(method, path, body, Some(&format!("Bearer {credential}")))
            .await
    }

    /// Creates a todo as the owner of `credential`; returns its JSON.
    async fn create_as(&self, credential: &str, body: Value) -> Value {
        let r = self
            .as_owner(credential, Method::POST, "/api/todos", Some(&body))
            .await;
        assert_eq!(r.status(), 201, "create {body}");
        r.json().await.expect("json")
    }

    /// The ids of the caller's list.
    async fn list_ids(&self, credential: &str) -> Vec<String> {
        let r = self
            .as_owner(credential, Method::GET, "/api/todos", None)
            .await;
        assert_eq!(r.status(), 200);
        let todos: Vec<Value> = r.json().await.expect("json");
        todos
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_owned())
            .collect()
    }
}

fn item_path(todo: &Value) -> String {
    format!("/api/todos/{}", todo["id"].as_str().expect("id"))
}

/// A stored todo as the database has it: (owner, title, completed, order, version).
type Row = (String, String, bool, Option<i32>, i64);

async fn stored(db_url: &str, id: &str) -> Option<Row> {
    let id = uuid::Uuid::parse_str(id).expect("uuid");
    db(db_url)
        .await
        .query_opt(
            r#"SELECT owner, title, completed, "order", version FROM todos WHERE id = $1"#,
            &[&id],
        )
        .await
        .expect("query")
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
}

async fn count_rows(db_url: &str) -> i64 {
    db(db_url)
        .await
        .query_one("SELECT count(*) FROM todos", &[])
        .await
        .expect("count")
        .get(0)
}

/// Checks a 401: problem+json, a `Bearer realm="todo"` challenge with
/// `error="invalid_token"` exactly when `invalid`, and `secret` nowhere in the headers
/// or the body.
async fn assert_unauthorized(r: reqwest::Response, invalid: bool, secret: &str, what: &str) {
    assert_eq!(r.status(), 401, "{what}");
    let headers = r.headers().clone();
    let challenge = headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"))
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        challenge.starts_with(r#"Bearer realm="todo""#),
        "{what}: {challenge}"
    );
    assert_eq!(
        challenge.contains(r#"error="invalid_token""#),
        invalid,
        "{what}: {challenge}"
    );
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{what}"
    );
    let body = r.text().await.expect("body");
    let problem: Value = serde_json::from_str(&body).expect("problem json");
    assert_eq!(problem["status"], 401, "{what}: {body}");
    if !secret.is_empty() {
        assert!(
            !body.contains(secret),
            "{what}: the body echoes the credential"
        );
        for (name, value) in &headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(secret),
                "{what}: header {name} echoes the credential"
            );
        }
    }
}

async fn missing_credentials_are_401_with_a_bare_challenge(mode: AuthMode) {
    // Arrange
    let app = spawn_auth_app(mode).await;
    let bobs = app.create_as(&app.bob, json!({"title": "bob's"})).await;
    let bob_id = bobs["id"].as_str().expect("id");
    let before = stored(&app.app.db_url, bob_id).await;
    for (method, path, body) in every_endpoint(&item_path(&bobs)) {
        // Another scheme than Bearer counts as no credentials (RFC 6750 §3.1).
        for authorization in [None, Some("Basic YWxpY2U6c2VjcmV0"), Some("Token abc")] {
            let what = format!("{mode:?} {method} {path} with {authorization:?}");
            // Act
            let r = app
                .send(method.clone(), &path, body.as_ref(), authorization)
                .await;
            // Assert
            assert_unauthorized(r, false, "YWxpY2U6c2VjcmV0", &what).await;
        }
    }
    assert_eq!(stored(&app.app.db_url, bob_id).await, before);
    assert_eq!(count_rows(&app.app.db_url).await, 1);
}

#[tokio::test]
async fn every_endpoint_answers_401_with_a_bearer_challenge_without_credentials_in_api_key_mode() {
    missing_credentials_are_401_with_a_bare_challenge(AuthMode::ApiKey).await;
}

#[tokio::test]
async fn every_endpoint_answers_401_with_a_bearer_challenge_without_credentials_in_jwt_mode() {
    missing_credentials_are_401_with_a_bare_challenge(AuthMode::Jwt).await;
}

async fn bad_credentials_are_401_invalid_token_and_write_nothing(mode: AuthMode) {
    // Arrange
    let app = spawn_auth_app(mode).await;
    let alices = app
        .create_as(&app.alice, json!({"title": "alice's", "order": 1}))
        .await;
    let alice_id = alices["id"].as_str().expect("id");
    let before = stored(&app.app.db_url, alice_id).await;
    for (name, credential) in bad_credentials(mode) {
        for (method, path, body) in every_endpoint(&item_path(&alices)) {
            let what = format!("{mode:?} {method} {path} with {name}");
            // Act
            let r = app
                .as_owner(&credential, method.clone(), &path, body.as_ref())
                .await;
            // Assert
            assert_unauthorized(r, true, &credential, &what).await;
        }
    }
    assert_eq!(stored(&app.app.db_url, alice_id).await, before);
    assert_eq!(count_rows(&app.app.db_url).await, 1);
    // The real credential still works after all those failures.
    assert_eq!(app.list_ids(&app.alice).await, vec![alice_id.to_owned()]);
}

#[tokio::test]
async fn every_endpoint_answers_401_invalid_token_to_unknown_or_malformed_keys_in_api_key_mode() {
    bad_credentials_are_401_invalid_token_and_write_nothing(AuthMode::ApiKey).await;
}

#[tokio::test]
async fn every_endpoint_answers_401_invalid_token_to_forged_expired_and_unsigned_tokens_in_jwt_mode()
 {
    bad_credentials_are_401_invalid_token_and_write_nothing(AuthMode::Jwt).await;
}

async fn alice_cannot_read_change_or_delete_bobs_todo(mode: AuthMode) {
    // Arrange
    let app = spawn_auth_app(mode).await;
    let bobs = app
        .create_as(&app.bob, json!({"title": "bob's secret", "order": 5}))
        .await;
    let bob_id = bobs["id"].as_str().expect("id");
    let before = stored(&app.app.db_url, bob_id).await;
    assert_eq!(
        before,
        Some(("bob".into(), "bob's secret".into(), false, Some(5), 1))
    );
    let unknown = format!("/api/todos/{}", uuid::Uuid::now_v7());
    let bob_path = item_path(&bobs);
    // Bob reads it first, so it sits in the read cache.
    let r = app.as_owner(&app.bob, Method::GET, &bob_path, None).await;
    assert_eq!(r.status(), 200);
    for (method, path, body) in every_endpoint(&bob_path) {
        if path != bob_path {
            continue;
        }
        let what = format!("{mode:?} alice {method} bob's todo");
        // Act
        let r = app
            .as_owner(&app.alice, method.clone(), &path, body.as_ref())
            .await;
        // Assert: the same 404 as an id that does not exist, so nothing leaks.
        assert_eq!(r.status(), 404, "{what}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert!(!r.headers().contains_key("etag"), "{what}");
        let problem: Value = r.json().await.expect("json");
        let r = app
            .as_owner(&app.alice, method.clone(), &unknown, body.as_ref())
            .await;
        assert_eq!(r.status(), 404, "{what}: unknown id");
        assert_eq!(problem, r.json::<Value>().await.expect("json"), "{what}");
        assert_eq!(stored(&app.app.db_url, bob_id).await, before, "{what}");
    }
    // Conditional headers do not get around the scoping either: no 304 tells alice
    // the todo exists, no If-Match lets her delete it.
    let r = app
        .app
        .client
        .get(app.app.url(&bob_path))
        .bearer_auth(&app.alice)
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    let r = app
        .app
        .client
        .delete(app.app.url(&bob_path))
        .bearer_auth(&app.alice)
        .header("if-match", "\"1\"")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    assert_eq!(stored(&app.app.db_url, bob_id).await, before);
    // Bob still sees his todo as it was.
    let r = app.as_owner(&app.bob, Method::GET, &bob_path, None).await;
    assert_eq!(r.status(), 200);
    let todo: Value = r.json().await.expect("json");
    assert_eq!(
        (
            todo["title"].clone(),
            todo["completed"].clone(),
            todo["version"].clone()
        ),
        (json!("bob's secret"), json!(false), json!(1))
    );
}

#[tokio::test]
async fn alice_gets_404_reading_changing_or_deleting_bobs_todo_and_it_stays_unchanged_in_api_key_mode()
 {
    alice_cannot_read_change_or_delete_bobs_todo(AuthMode::ApiKey).await;
}

#[tokio::test]
async fn alice_gets_404_reading_changing_or_deleting_bobs_todo_and_it_stays_unchanged_in_jwt_mode()
{
    alice_cannot_read_change_or_delete_bobs_todo(AuthMode::Jwt).await;
}

async fn lists_and_clears_are_scoped_to_the_caller(mode: AuthMode) {
    // Arrange
    let app = spawn_auth_app(mode).await;
    let mut alice_ids = Vec::new();
    let mut bob_ids = Vec::new();
    for i in 0..3 {
        // Interleaved, with overlapping orders, so a missing owner filter would show.
        let a = app
            .create_as(&app.alice, json!({"title": format!("a{i}"), "order": i}))
            .await;
        alice_ids.push(a["id"].as_str().expect("id").to_owned());
        let b = app
            .create_as(
                &app.bob,
                json!({"title": format!("b{i}"), "order": i, "completed": i == 1}),
            )
            .await;
        bob_ids.push(b["id"].as_str().expect("id").to_owned());
    }
    // Act / Assert: each list holds only its owner's todos, in order.
    assert_eq!(app.list_ids(&app.alice).await, alice_ids);
    assert_eq!(app.list_ids(&app.bob).await, bob_ids);
    for query in ["?completed=true", "?completed=false", "?limit=1"] {
        let r = app
            .as_owner(&app.alice, Method::GET, &format!("/api/todos{query}"), None)
            .await;
        let todos: Vec<Value> = r.json().await.expect("json");
        assert!(
            todos
                .iter()
                .all(|t| alice_ids.contains(&t["id"].as_str().expect("id").to_owned())),
            "{mode:?} {query}: {todos:?}"
        );
    }
    let owners = db(&app.app.db_url)
        .await
        .query(
            "SELECT owner, count(*) FROM todos GROUP BY owner ORDER BY owner",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>();
    assert_eq!(owners, vec![("alice".into(), 3), ("bob".into(), 3)]);

    // Act: alice clears her completed ones (none), then all of hers.
    let r = app
        .as_owner(
            &app.alice,
            Method::DELETE,
            "/api/todos?completed=true",
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.list_ids(&app.bob).await,
        bob_ids,
        "bob's completed todo"
    );
    let r = app
        .as_owner(&app.alice, Method::DELETE, "/api/todos", None)
        .await;
    // Assert
    assert_eq!(r.status(), 204);
    assert!(app.list_ids(&app.alice).await.is_empty());
    assert_eq!(app.list_ids(&app.bob).await, bob_ids);
    for id in &bob_ids {
        let row = stored(&app.app.db_url, id).await.expect("bob's todo kept");
        assert_eq!((row.0.as_str(), row.4), ("bob", 1));
    }
    for id in &alice_ids {
        assert_eq!(stored(&app.app.db_url, id).await, None);
    }
}

#[tokio::test]
async fn alice_never_lists_bobs_todos_and_her_clear_leaves_them_in_api_key_mode() {
    lists_and_clears_are_scoped_to_the_caller(AuthMode::ApiKey).await;
}

#[tokio::test]
async fn alice_never_lists_bobs_todos_and_her_clear_leaves_them_in_jwt_mode() {
    lists_and_clears_are_scoped_to_the_caller(AuthMode::Jwt).await;
}

#[tokio::test]
async fn a_todo_is_stored_under_the_owner_named_by_the_key_file_or_the_token_sub() {
    for mode in [AuthMode::ApiKey, AuthMode::Jwt] {
        // Arrange
        let app = spawn_auth_app(mode).await;
        // Act
        let todo = app.create_as(&app.alice, json!({"title": "mine"})).await;
        // Assert
        let row = stored(&app.app.db_url, todo["id"].as_str().expect("id"))
            .await
            .expect("stored");
        assert_eq!(row.0, "alice", "{mode:?}");
        // The Bearer scheme is case-insensitive (RFC 9110 §11.1).
        let r = app
            .send(
                Method::GET,
                &item_path(&todo),
                None,
                Some(&format!("bearer {}", app.alice)),
            )
            .await;
        assert_eq!(r.status(), 200, "{mode:?}");
    }
}

#[tokio::test]
async fn two_keys_of_the_same_owner_share_their_todos() {
    // Arrange
    let file = std::env::temp_dir().join(format!("api-keys-{}", uuid::Uuid::now_v7()));
    std::fs::write(
        &file,
        format!(
            "{} alice\n{} alice\n",
            sha256_hex(ALICE_KEY),
            sha256_hex("alice-new-key-rotated-in")
        ),
    )
    .expect("write keys");
    let path: PathBuf = file.clone();
    let app = spawn_app_with(move |s| {
        s.auth.auth_mode = AuthMode::ApiKey;
        s.auth.api_keys_file = Some(path);
    })
    .await;
    let _ = std::fs::remove_file(&file);
    // Act
    let r = app
        .client
        .post(app.url("/api/todos"))
        .bearer_auth(ALICE_KEY)
        .json(&json!({"title": "before rotation"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 201);
    let todo: Value = r.json().await.expect("json");
    let r = app
        .client
        .get(app.url(&item_path(&todo)))
        .bearer_auth("alice-new-key-rotated-in")
        .send()
        .await
        .expect("request");
    // Assert
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn cors_preflight_needs_no_credentials_in_api_key_and_jwt_modes() {
    for mode in [AuthMode::ApiKey, AuthMode::Jwt] {
        // Arrange
        let app = spawn_auth_app(mode).await;
        for path in [
            "/api/todos",
            "/api/todos/0192f6c4-0000-7000-8000-000000000000",
        ] {
            // Act
            let r = app
                .app
                .client
                .request(Method::OPTIONS, app.app.url(path))
                .header("origin", "http://todobackend.com")
                .header("access-control-request-method", "PATCH")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .send()
                .await
                .expect("request");
            // Assert
            assert!(r.status().is_success(), "{mode:?} {path}: {}", r.status());
            let allowed = r.headers()["access-control-allow-headers"]
                .to_str()
                .expect("ascii")
                .to_ascii_lowercase();
            assert!(allowed.contains("authorization"), "{allowed}");
        }
        // And a 401 still carries CORS headers, so a browser can read it.
        let r = app
            .app
            .client
            .get(app.app.url("/api/todos"))
            .header("origin", "http://todobackend.com")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("access-control-allow-origin"));
    }
}

#[tokio::test]
async fn auth_mode_none_acts_as_public_and_ignores_any_authorization_header() {
    // Arrange
    let app = spawn_app_with(|s| s.auth.auth_mode = AuthMode::None).await;
    let jwt = hs256(SECRET, &json!({"sub": "alice", "exp": now() + 600}));
    let expired = hs256(SECRET, &json!({"sub": "alice", "exp": now() - 3600}));
    let headers = [
        None,
        Some(format!("Bearer {jwt}")),
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {ALICE_KEY}")),
        Some("Bearer not.a.jwt".to_owned()),
        Some("Basic YWxpY2U6c2VjcmV0".to_owned()),
    ];
    let mut ids = Vec::new();
    for authorization in &headers {
        // Act
        let mut request = app.client.post(app.url("/api/todos"));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let r = request
            .json(&json!({"title": format!("with {authorization:?}")}))
            .send()
            .await
            .expect("request");
        // Assert
        assert_eq!(r.status(), 201, "{authorization:?}");
        assert!(!r.headers().contains_key("www-authenticate"));
        let todo: Value = r.json().await.expect("json");
        ids.push(todo["id"].as_str().expect("id").to_owned());
    }
    // Every caller is the same owner, `public`: each sees all the todos.
    for authorization in &headers {
        let mut request = app.client.get(app.url("/api/todos"));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let todos: Vec<Value> = request
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        let listed: Vec<&str> = todos
            .iter()
            .map(|t| t["id"].as_str().expect("id"))
            .collect();
        assert_eq!(listed, ids, "{authorization:?}");
    }
    let owners: Vec<String> = db(&app.db_url)
        .await
        .query("SELECT DISTINCT owner FROM todos", &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, vec!["public".to_owned()]);
    // A token for alice can change and delete what an anonymous caller made.
    let path = format!("/api/todos/{}", ids[0]);
    let r = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&jwt)
        .json(&json!({"completed": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .delete(app.url("/api/todos"))
        .bearer_auth(&expired)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 204);
    assert_eq!(count_rows(&app.db_url).await, 0);
}

async fn idempotency_keys_are_scoped_to_the_owner(mode: AuthMode) {
    // Arrange
    let app = spawn_auth_app(mode).await;
    let body = json!({"title": "same request"});
    let post = |credential: &str| {
        app.app
            .client
            .post(app.app.url("/api/todos"))
            .bearer_auth(credential)
            .header("idempotency-key", "shared-key-1")
            .json(&body)
            .send()
    };
    let r = post(&app.alice).await.expect("request");
    assert_eq!(r.status(), 201);
    let alices: Value = r.json().await.expect("json");
    // Act: bob sends the same key and body.
    let r = post(&app.bob).await.expect("request");
    // Assert: a fresh todo of his own, not a replay of alice's.
    assert_eq!(r.status(), 201);
    assert!(!r.headers().contains_key("idempotent-replayed"), "{mode:?}");
    let bobs: Value = r.json().await.expect("json");
    assert_ne!(bobs["id"], alices["id"]);
    let row = stored(&app.app.db_url, bobs["id"].as_str().expect("id"))
        .await
        .expect("stored");
    assert_eq!(row.0, "bob");
    // Alice's own retry still replays hers.
    let r = post(&app.alice).await.expect("request");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.json::<Value>().await.expect("json")["id"], alices["id"]);
    assert_eq!(count_rows(&app.app.db_url).await, 2);
}

#[tokio::test]
async fn the_same_idempotency_key_from_two_owners_makes_two_todos_in_api_key_mode() {
    idempotency_keys_are_scoped_to_the_owner(AuthMode::ApiKey).await;
}

#[tokio::test]
async fn the_same_idempotency_key_from_two_owners_makes_two_todos_in_jwt_mode() {
    idempotency_keys_are_scoped_to_the_owner(AuthMode::Jwt).await;
}
