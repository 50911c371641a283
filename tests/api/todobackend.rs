//! The public Todo-Backend spec (todobackend.com's spec runner), replayed as the HTTP
//! sequence a browser running it sends, with the API root at `/api/todos`: every
//! request carries `Origin`, every non-simple one is preceded by a CORS preflight, and
//! every response must carry `Access-Control-Allow-Origin` or the runner could not read it.

use futures::future::join_all;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// Where the spec runner is served from.
const ORIGIN: &str = "http://todobackend.com";

/// The API root the runner is pointed at.
const ROOT: &str = "/api/todos";

/// A response as the runner sees it.
struct Reply {
    status: u16,
    headers: HeaderMap,
    json: Value,
}

/// Sends requests the way a browser running the spec does, checking CORS on each.
struct Browser<'a> {
    app: &'a TestApp,
    /// The `Access-Control-Allow-Origin` every response must carry.
    allow_origin: &'static str,
}

impl<'a> Browser<'a> {
    /// For an app with the default `CORS_ORIGINS` (any origin).
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            allow_origin: "*",
        }
    }

    /// An absolute URL: the root, or a todo's `url` as is.
    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http") {
            url.to_owned()
        } else {
            self.app.url(url)
        }
    }

    /// The preflight a browser sends before `method` with a JSON body; asserts that it
    /// allows the origin, the method and `Content-Type`.
    async fn preflight(&self, method: &Method, url: &str) {
        let what = format!("preflight {method} {url}");
        let r = self
            .app
            .client
            .request(Method::OPTIONS, self.absolute(url))
            .header("origin", ORIGIN)
            .header("access-control-request-method", method.as_str())
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{what}: {}", r.status());
        let h = r.headers();
        assert_eq!(
            h.get("access-control-allow-origin")
                .unwrap_or_else(|| panic!("{what}: no Access-Control-Allow-Origin")),
            self.allow_origin,
            "{what}"
        );
        let methods = header_list(h, "access-control-allow-methods");
        assert!(
            methods.iter().any(|m| m == method.as_str()),
            "{what}: {methods:?}"
        );
        let headers = header_list(h, "access-control-allow-headers");
        assert!(
            headers
                .iter()
                .any(|m| m.eq_ignore_ascii_case("content-type")),
            "{what}: {headers:?}"
        );
    }

    /// A request of the runner: preflighted unless it is a simple GET, sent with
    /// `Origin` (and a JSON body when given); asserts the response allows the origin.
    async fn send(&self, method: Method, url: &str, body: Option<&Value>) -> Reply {
        let url = self.absolute(url);
        if method != Method::GET || body.is_some() {
            self.preflight(&method, &url).await;
        }
        let mut request = self
            .app
            .client
            .request(method.clone(), &url)
            .header("origin", ORIGIN);
        if let Some(b) = body {
            request = request.json(b);
        }
        let r = request.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        assert_eq!(
            headers
                .get("access-control-allow-origin")
                .unwrap_or_else(|| panic!(
                    "{method} {url} ({status}): no Access-Control-Allow-Origin"
                )),
            self.allow_origin,
            "{method} {url}"
        );
        let text = r.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
        };
        Reply {
            status,
            headers,
            json,
        }
    }

    async fn get(&self, url: &str) -> Reply {
        self.send(Method::GET, url, None).await
    }

    async fn post(&self, url: &str, body: Value) -> Reply {
        self.send(Method::POST, url, Some(&body)).await
    }

    async fn patch(&self, url: &str, body: Value) -> Reply {
        self.send(Method::PATCH, url, Some(&body)).await
    }

    async fn delete(&self, url: &str) -> Reply {
        self.send(Method::DELETE, url, None).await
    }

    /// `POST` to the root; asserts 201 and returns the todo.
    async fn create(&self, body: Value) -> Value {
        let r = self.post(ROOT, body.clone()).await;
        assert_eq!(r.status, 201, "create {body}: {}", r.json);
        r.json
    }

    /// `GET` the root; asserts 200 and returns the array.
    async fn list(&self) -> Vec<Value> {
        let r = self.get(ROOT).await;
        assert_eq!(r.status, 200);
        r.json.as_array().expect("an array").clone()
    }

    /// The runner's `beforeEach`: `DELETE` the root.
    async fn clear(&self) {
        let r = self.delete(ROOT).await;
        assert!((200..300).contains(&r.status), "DELETE root: {}", r.status);
    }
}

/// A comma-separated header, split and trimmed.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn url_of(todo: &Value) -> String {
    todo["url"].as_str().expect("url is a string").to_owned()
}

#[tokio::test]
async fn a_preflight_allows_every_method_with_content_type_on_the_root_and_on_a_todo_url() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    let todo = browser.create(json!({"title": "preflighted"})).await;
    let unknown = format!("{ROOT}/{}", uuid::Uuid::now_v7());
    for url in [ROOT.to_owned(), url_of(&todo), unknown] {
        for method in [
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::PUT,
        ] {
            // Act / Assert
            browser.preflight(&method, &url).await;
        }
    }
    // A preflight changes nothing.
    assert_eq!(browser.list().await, vec![todo]);
}

#[tokio::test]
async fn the_root_responds_to_get_post_and_delete_and_after_delete_is_an_empty_array() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    // Act / Assert: "the api root responds to a GET".
    let r = browser.get(ROOT).await;
    assert_eq!(r.status, 200);
    assert!(r.json.is_array());
    // "the api root responds to a POST with the todo which was posted to it".
    let r = browser.post(ROOT, json!({"title": "a todo"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json["title"], "a todo");
    // "the api root responds successfully to a DELETE".
    let r = browser.delete(ROOT).await;
    assert!((200..300).contains(&r.status), "{}", r.status);
    // "after a DELETE the api root responds to a GET with a JSON representation of an
    // empty array".
    let r = browser.get(ROOT).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, json!([]));
}

#[tokio::test]
async fn posting_to_the_root_makes_a_not_completed_todo_whose_absolute_url_returns_it() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    browser.clear().await;
    // Act
    let r = browser.post(ROOT, json!({"title": "walk the dog"})).await;
    // Assert
    assert_eq!(r.status, 201);
    let todo = r.json;
    assert_eq!(todo["title"], "walk the dog");
    assert_eq!(todo["completed"], false);
    let url = url_of(&todo);
    assert_eq!(
        url,
        format!("{}{ROOT}/{}", app.address, todo["id"].as_str().expect("id"))
    );
    assert_eq!(r.headers["location"], url.as_str());
    // The runner's script can read Location and ETag.
    let exposed: Vec<String> = header_list(&r.headers, "access-control-expose-headers")
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    assert!(
        exposed.contains(&"location".to_owned()) && exposed.contains(&"etag".to_owned()),
        "{exposed:?}"
    );
    // "each new todo has a url, which returns a todo".
    let fetched = browser.get(&url).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json, todo);
    // "adds a new todo to the list of todos at the root url".
    let list = browser.list().await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["title"], "walk the dog");
    assert_eq!(list[0]["url"], url.as_str());
}

#[tokio::test]
async fn the_runner_navigates_from_the_list_to_each_todo_by_its_url() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    browser.clear().await;
    browser.create(json!({"title": "todo the first"})).await;
    browser.create(json!({"title": "todo the second"})).await;
    // Act
    let list = browser.list().await;
    // Assert
    assert_eq!(list.len(), 2);
    for listed in &list {
        let r = browser.get(&url_of(listed)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["title"], listed["title"]);
    }
    let mut titles: Vec<&str> = list
        .iter()
        .map(|t| t["title"].as_str().expect("title"))
        .collect();
    titles.sort_unstable();
    assert_eq!(titles, ["todo the first", "todo the second"]);
}

#[tokio::test]
async fn patching_a_todos_url_changes_its_title_completedness_and_order_and_refetching_shows_it() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    browser.clear().await;
    let url = url_of(&browser.create(json!({"title": "initial title"})).await);
    // Act / Assert: "can change the todo's title by PATCHing to the todo's url".
    let r = browser.patch(&url, json!({"title": "bathe the cat"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["title"], "bathe the cat");
    assert_eq!(browser.get(&url).await.json["title"], "bathe the cat");
    // "can change the todo's completedness by PATCHing to the todo's url".
    let r = browser.patch(&url, json!({"completed": true})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["completed"], true);
    assert_eq!(r.json["title"], "bathe the cat");
    // "changes to a todo are persisted and show up when re-fetching the todo".
    let r = browser
        .patch(&url, json!({"title": "changed title", "completed": false}))
        .await;
    assert_eq!(r.status, 200);
    let fetched = browser.get(&url).await.json;
    assert_eq!(
        (fetched["title"].clone(), fetched["completed"].clone()),
        (json!("changed title"), json!(false))
    );
    let list = browser.list().await;
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0]["title"].clone(), list[0]["completed"].clone()),
        (json!("changed title"), json!(false))
    );
    // "can PATCH a todo to change its order" and "remembers changes to a todo's order".
    let r = browser.patch(&url, json!({"order": 95})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["order"], 95);
    assert_eq!(browser.get(&url).await.json["order"], 95);
    assert_eq!(browser.list().await[0]["order"], 95);
}

#[tokio::test]
async fn a_todo_created_with_an_order_keeps_it() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    browser.clear().await;
    // Act
    let todo = browser.create(json!({"title": "blah", "order": 523})).await;
    // Assert: "can create a todo with an order field".
    assert_eq!(todo["order"], 523);
    assert_eq!(browser.get(&url_of(&todo)).await.json["order"], 523);
    assert_eq!(browser.list().await[0]["order"], 523);
}

#[tokio::test]
async fn putting_a_todos_url_replaces_it_across_origins() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    let url = url_of(&browser.create(json!({"title": "old", "order": 1})).await);
    // Act
    let r = browser
        .send(
            Method::PUT,
            &url,
            Some(&json!({"title": "new", "completed": true, "order": 2})),
        )
        .await;
    // Assert
    assert_eq!(r.status, 200);
    let fetched = browser.get(&url).await.json;
    assert_eq!(
        (
            fetched["title"].clone(),
            fetched["completed"].clone(),
            fetched["order"].clone()
        ),
        (json!("new"), json!(true), json!(2))
    );
}

#[tokio::test]
async fn deleting_a_todos_url_removes_it_and_its_url_then_answers_404() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    browser.clear().await;
    let kept = browser.create(json!({"title": "kept"})).await;
    let url = url_of(&browser.create(json!({"title": "deleted"})).await);
    // Act: "can delete a todo making a DELETE request to the todo's url".
    let r = browser.delete(&url).await;
    // Assert
    assert!((200..300).contains(&r.status), "{}", r.status);
    let r = browser.get(&url).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(browser.list().await, vec![kept]);
    // Deleting again is a 404 the runner can read too.
    assert_eq!(browser.delete(&url).await.status, 404);
}

#[tokio::test]
async fn deleting_the_root_empties_a_collection_of_several_todos() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    let mut urls = Vec::new();
    for i in 0..5 {
        let todo = browser
            .create(json!({"title": format!("todo {i}"), "completed": i % 2 == 0}))
            .await;
        urls.push(url_of(&todo));
    }
    assert_eq!(browser.list().await.len(), 5);
    // Act
    browser.clear().await;
    // Assert
    assert!(browser.list().await.is_empty());
    for url in &urls {
        assert_eq!(browser.get(url).await.status, 404, "{url}");
    }
}

#[tokio::test]
async fn concurrent_creates_from_the_runner_all_appear_in_the_list() {
    // Arrange
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    browser.clear().await;
    // Act
    let created = join_all(
        (0..25).map(|i| browser.create(json!({"title": format!("parallel {i}"), "order": i}))),
    )
    .await;
    // Assert
    let list = browser.list().await;
    assert_eq!(list.len(), 25);
    let mut listed: Vec<&Value> = list.iter().map(|t| &t["url"]).collect();
    let mut made: Vec<&Value> = created.iter().map(|t| &t["url"]).collect();
    listed.sort_by_key(|v| v.to_string());
    made.sort_by_key(|v| v.to_string());
    assert_eq!(listed, made);
    // The list is ordered by `order`.
    let orders: Vec<i64> = list
        .iter()
        .map(|t| t["order"].as_i64().expect("order"))
        .collect();
    assert_eq!(orders, (0..25).collect::<Vec<i64>>());
}

#[tokio::test]
async fn with_cors_origins_restricted_to_the_runner_its_origin_is_echoed_and_others_get_no_grant() {
    // Arrange
    let app = spawn_app_with(|s| s.http.cors_origins = ORIGIN.to_owned()).await;
    let browser = Browser {
        app: &app,
        allow_origin: ORIGIN,
    };
    // Act / Assert: the spec's sequence passes with the origin echoed.
    browser.clear().await;
    let todo = browser
        .create(json!({"title": "restricted", "order": 1}))
        .await;
    let url = url_of(&todo);
    let r = browser.patch(&url, json!({"completed": true})).await;
    assert_eq!(r.status, 200);
    assert!(
        header_list(&r.headers, "vary")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("origin")),
        "a cache must key on Origin"
    );
    assert_eq!(browser.get(&url).await.json["completed"], true);
    assert_eq!(browser.delete(&url).await.status, 204);
    // Another origin gets no Access-Control-Allow-Origin, so its browser reads nothing.
    let r = app
        .client
        .request(Method::OPTIONS, app.url(ROOT))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("request");
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = app
        .client
        .get(app.url(ROOT))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("request");
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}
