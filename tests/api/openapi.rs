//! `/openapi.json`: served as OpenAPI 3.1, and in step with the routes (every routed
//! method has an operation in the document and every operation is routed).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::spawn_app;

/// Every path template the service routes.
const KNOWN_TEMPLATES: [&str; 5] = [
    "/api/todos",
    "/api/todos/events",
    "/api/todos/{id}",
    "/health",
    "/openapi.json",
];

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

#[tokio::test]
async fn openapi_json_is_an_openapi_3_1_document() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let r = app.get("/openapi.json").await;

    // Assert
    assert_eq!(r.status(), 200);
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
    let doc: Value = r.json().await.expect("the document is JSON");
    let version = doc["openapi"].as_str().expect("an `openapi` version");
    assert!(version.starts_with("3.1"), "openapi {version}");
    assert!(doc["paths"].is_object(), "paths");
    assert!(
        doc["components"]["schemas"]["Todo"].is_object(),
        "Todo schema"
    );
    assert!(
        doc["components"]["securitySchemes"]["bearer"].is_object(),
        "bearer scheme"
    );
}

#[tokio::test]
async fn openapi_json_answers_other_methods_with_405() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let r = app
        .client
        .post(app.url("/openapi.json"))
        .send()
        .await
        .expect("request");

    // Assert
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET")
    );
}

#[tokio::test]
async fn every_routed_method_is_documented_and_every_documented_one_is_routed() {
    // Arrange
    let app = spawn_app().await;
    let doc: Value = app
        .get("/openapi.json")
        .await
        .json()
        .await
        .expect("the document is JSON");
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            METHODS
                .iter()
                .filter(|m| item.contains_key(&m.to_ascii_lowercase()))
                .map(move |m| ((*m).to_owned(), path.clone()))
        })
        .collect();
    let documented_paths: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let known: BTreeSet<&str> = KNOWN_TEMPLATES.into_iter().collect();

    // Act: a method is routed on a template unless the service answers 405 (an unknown
    // todo is a 404 problem from a routed handler, so only 405 means "no such route").
    let id = uuid::Uuid::now_v7().to_string();
    let mut routed = BTreeSet::new();
    for template in &known {
        let path = template.replace("{id}", &id);
        for method in METHODS {
            let r = app
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).expect("method"),
                    app.url(&path),
                )
                .send()
                .await
                .expect("request");
            if r.status() != 405 {
                routed.insert((method.to_owned(), (*template).to_owned()));
            }
        }
    }

    // Assert
    assert_eq!(
        documented_paths, known,
        "the document's paths are not the service's templates"
    );
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routed but not in /openapi.json: {undocumented:?}; \
         in /openapi.json but answered 405: {unrouted:?}"
    );
}
