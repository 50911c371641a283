//! `GET /openapi.json`: the OpenAPI 3.1 document of the REST API (DESIGN.md §3).
//!
//! The document is generated with utoipa from the doc-only functions below, one per
//! operation, each annotated with `#[utoipa::path]`: the warp filters in `todos.rs` cannot
//! be annotated themselves, and keeping the contract in one file makes it reviewable on
//! its own. `tests/api/openapi.rs` keeps this file and the routes in step (every routed
//! method has an operation here and the other way round) and `scripts/fuzz` checks the
//! live service against the document with schemathesis.
//!
//! Response schemas come from the DTOs (`dto::TodoDto` is `Todo`); request bodies,
//! problems and headers that have no Rust type of their own are described by schema-only
//! types here. Response header schemas, `X-Request-Id` on every response and what derive
//! cannot express are added by the modifiers [`ResponseHeaders`] and [`RequestBodies`].

use bytes::Bytes;
use http::{HeaderValue, header};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, Schema, SchemaFormat};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, ObjectBuilder, RefOr, Response as ApiResponse, Type};
use utoipa::{IntoParams, Modify, OpenApi, ToResponse, ToSchema};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::error::ApiError;
use crate::service::wire::TodoDto;

/// `GET /openapi.json`; any other method is a 405.
pub fn route() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // Serialised once: the document is fixed at compile time.
    let json: Option<Bytes> = serde_json::to_vec(&document()).ok().map(Bytes::from);
    warp::path("openapi.json").and(warp::path::end()).and(
        warp::get()
            .map(move || match &json {
                Some(json) => {
                    let mut response = Response::new(json.clone().into());
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    response
                }
                None => ApiError::Service(crate::service::ServiceError::Internal).into_response(),
            })
            .or(warp::any().map(|| ApiError::MethodNotAllowed("GET").into_response()))
            .unify(),
    )
}

/// The OpenAPI 3.1 document of the REST API.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Todo service",
        description = "Todo-Backend compatible todo API. Every response may carry \
            `X-Request-Id`; every error is `application/problem+json` (RFC 9457); every \
            503 carries `Retry-After`; every 401 carries `WWW-Authenticate`. Credentials \
            (`Authorization: Bearer <API key or JWT>`) are needed unless the service runs \
            with `AUTH_MODE=none`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        list_todos,
        create_todo,
        clear_todos,
        todo_events,
        get_todo,
        update_todo,
        replace_todo,
        delete_todo,
        health,
        openapi_json,
    ),
    components(
        schemas(TodoDto, TodoCreate, TodoPatch, Problem, FieldError, Health),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            Conflict,
            PreconditionFailed,
            RequestTimeout,
            PayloadTooLarge,
            UnsupportedMediaType,
            UnprocessableContent,
            Unavailable,
        ),
    ),
    modifiers(&BearerScheme, &ResponseHeaders, &RequestBodies),
    tags(
        (name = "todos", description = "The caller's todos"),
        (name = "meta", description = "Liveness and this document"),
    ),
)]
struct ApiDoc;

/// The `bearer` security scheme: an API key or a JWT, depending on `AUTH_MODE`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "`AUTH_MODE=api-key`: an API key from `API_KEYS_FILE`; `AUTH_MODE=jwt`: an \
             HS256/RS256 JWT whose `sub` is the owner. Not needed with `AUTH_MODE=none`."
                .into(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Every response gets `X-Request-Id`; every response header gets its schema from
/// [`header_schema`], so that a header is described once however many responses carry it.
struct ResponseHeaders;

impl Modify for ResponseHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let fix = |response: &mut RefOr<ApiResponse>| {
            let RefOr::T(response) = response else {
                return;
            };
            response.headers.insert(
                "X-Request-Id".into(),
                RefOr::T(
                    HeaderBuilder::new()
                        .description(Some(
                            "The request's `X-Request-Id` when it sent a usable one, else a new id.",
                        ))
                        .build(),
                ),
            );
            for (name, header) in &mut response.headers {
                if let RefOr::T(header) = header {
                    header.schema = Some(header_schema(name).into());
                }
            }
        };
        for item in openapi.paths.paths.values_mut() {
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                operation.responses.responses.values_mut().for_each(fix);
            }
        }
        if let Some(components) = openapi.components.as_mut() {
            components.responses.values_mut().for_each(fix);
        }
    }
}

/// The schema of a response header's value.
fn header_schema(name: &str) -> Schema {
    let string = ObjectBuilder::new().schema_type(Type::String);
    let string = match name {
        // A strong validator: the todo's version, quoted.
        "ETag" => string.pattern(Some(r#"^"[1-9][0-9]*"$"#)),
        "Location" => string.format(Some(SchemaFormat::Custom("uri".into()))),
        "Link" => string.pattern(Some(r#"^<[^>]*>; *rel="next"$"#)),
        "Idempotent-Replayed" => string.enum_values(Some(["true"])),
        "X-Cache" => string.enum_values(Some(["hit", "miss", "stale"])),
        "Retry-After" => string.pattern(Some("^[0-9]+$")),
        "WWW-Authenticate" => string.pattern(Some("^Bearer")),
        _ => string,
    };
    Schema::Object(string.build())
}

/// What derive cannot say about the request bodies: the ignored fields are `readOnly`, and
/// a PATCH must name at least one writable field (`minProperties` alone would let
/// `{"id": …}` through).
struct RequestBodies;

impl Modify for RequestBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in ["TodoCreate", "TodoPatch"] {
            if let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut(name) {
                for field in READ_ONLY {
                    if let Some(RefOr::T(Schema::Object(property))) = body.properties.get_mut(field)
                    {
                        property.read_only = Some(true);
                    }
                }
            }
        }
        if let Some(patch) = components.schemas.remove("TodoPatch") {
            let one_field = ["title", "completed", "order"]
                .into_iter()
                .fold(AnyOfBuilder::new(), |any, field| {
                    any.item(ObjectBuilder::new().required(field))
                });
            let patch = AllOfBuilder::new().item(patch).item(one_field);
            components
                .schemas
                .insert("TodoPatch".into(), RefOr::T(Schema::AllOf(patch.build())));
        }
    }
}

/// Fields of a `Todo` that request bodies may carry and the service ignores.
const READ_ONLY: [&str; 5] = ["id", "url", "version", "created_at", "updated_at"];

// ---- Schemas ----------------------------------------------------------------------------

// Title pattern (in both request bodies; utoipa takes only a literal): Rust's
// `char::is_control` (Cc) and `str::trim` (Unicode White_Space) spelled out, so that a
// schema-valid title is always accepted.

/// POST and PUT body. Read-only fields of a `Todo` are accepted and ignored, so a GET body
/// can be sent back; any other property is a 400. PUT resets an absent `completed` to
/// false and an absent `order` to null.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TodoCreate {
    /// 1–1000 characters, not only whitespace, no control characters.
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    title: String,
    /// Default false.
    #[schema(required = false)]
    completed: bool,
    /// A 32-bit integer or null (the default).
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    order: Option<i32>,
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    id: (),
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    url: (),
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    version: (),
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    created_at: (),
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    updated_at: (),
}

/// PATCH body: the fields to change, at least one of `title`, `completed`, `order`.
/// Read-only fields of a `Todo` are accepted and ignored; any other property is a 400.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
#[allow(dead_code)]
struct TodoPatch {
    /// 1–1000 characters, not only whitespace, no control characters.
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$",
        required = false
    )]
    title: String,
    #[schema(required = false)]
    /// Done or not.
    completed: bool,
    /// A 32-bit integer, or null to clear it.
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    order: Option<i32>,
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    id: (),
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    url: (),
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    version: (),
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    created_at: (),
    #[schema(value_type = Value, read_only, required = false)]
    /// Ignored.
    updated_at: (),
}

/// An error (RFC 9457 problem details).
#[derive(ToSchema)]
#[allow(dead_code)]
struct Problem {
    /// Always `about:blank`: the status says what happened.
    #[schema(format = "uri-reference")]
    r#type: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, safe to show.
    detail: String,
    /// On validation failures: every invalid field.
    #[schema(required = false)]
    errors: Vec<FieldError>,
}

/// One field's validation failure.
#[derive(ToSchema)]
#[allow(dead_code)]
struct FieldError {
    /// The field, as the client spelled it (`body` for the body as a whole).
    field: String,
    /// What is wrong with it.
    message: String,
}

/// `GET /health`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Health {
    /// Always `healthy`.
    #[schema(value_type = String, pattern = "^healthy$")]
    status: (),
    /// The service version.
    version: String,
    /// Seconds since start-up.
    #[schema(minimum = 0)]
    uptime_s: u64,
}

// ---- Parameters -------------------------------------------------------------------------

/// Query of `GET /api/todos`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListQuery {
    /// Only completed (true) or only open (false) todos.
    #[param(required = false)]
    completed: bool,
    /// Page size.
    #[param(required = false, minimum = 1, maximum = 1000, default = 100)]
    limit: i32,
    /// Opaque: where the previous page ended, taken from its `Link: rel="next"`. A cursor
    /// the service did not make is a 400.
    #[param(required = false)]
    cursor: String,
}

/// Query of `DELETE /api/todos`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ClearQuery {
    /// Delete only completed (true) or only open (false) todos; all when absent.
    #[param(required = false)]
    completed: bool,
}

/// `Idempotency-Key` of POST and PATCH.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IdempotencyKey {
    /// Makes a retry safe: the first result is stored with the change and replayed (scoped
    /// to the owner, kept 24 hours). 1 to 255 visible ASCII characters.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    key: String,
}

/// `If-Match` of PATCH, PUT and DELETE.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IfMatch {
    /// Change the todo only while it is at one of these ETags (strong comparison), or `*`;
    /// otherwise 412 (also when the header holds no strong ETag at all).
    #[param(rename = "If-Match", required = false)]
    etags: String,
}

/// `If-None-Match` of GET.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IfNoneMatch {
    /// ETags the caller holds (or `*`): a match is a 304 without a body.
    #[param(rename = "If-None-Match", required = false)]
    etags: String,
}

// ---- Reusable responses -----------------------------------------------------------------

/// Malformed request: JSON, query, header or an invalid field (`errors` names them).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
struct BadRequest(Problem);

/// Missing or bad credentials.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge"))
)]
#[allow(dead_code)]
struct Unauthorized(Problem);

/// No such todo for this owner (another owner's todo, an id that is not a UUID).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
struct NotFound(Problem);

/// A request with the same `Idempotency-Key` is still in progress.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
struct Conflict(Problem);

/// `If-Match` does not match the todo's current version.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
struct PreconditionFailed(Problem);

/// The body did not arrive within `HTTP_BODY_TIMEOUT_S`; the connection is closed.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
struct RequestTimeout(Problem);

/// The body is larger than 64 KiB.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
struct PayloadTooLarge(Problem);

/// The body is not `application/json`.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
struct UnsupportedMediaType(Problem);

/// The `Idempotency-Key` was used before with a different body.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
struct UnprocessableContent(Problem);

/// Overloaded, restarting, or a dependency is down: retry after `Retry-After` seconds.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = String, description = "Seconds to wait before retrying"))
)]
#[allow(dead_code)]
struct Unavailable(Problem);

// ---- Operations (documentation only: the handlers are in todos.rs) -----------------------

/// List the caller's todos.
///
/// Ordered by `order` (nulls last), then `created_at`, then `id`.
#[utoipa::path(
    get,
    path = "/api/todos",
    tag = "todos",
    params(ListQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of todos", body = [TodoDto],
            headers(("Link" = String, description = "`<…>; rel=\"next\"` when there are more"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ),
)]
#[allow(dead_code)]
fn list_todos() {}

/// Create a todo.
///
/// With an `Idempotency-Key`, the first result (status and body) is stored with the
/// change and replayed for 24 hours with `Idempotent-Replayed: true`.
#[utoipa::path(
    post,
    path = "/api/todos",
    tag = "todos",
    params(IdempotencyKey),
    request_body(content = TodoCreate, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = TodoDto, headers(
            ("Location" = String, description = "The todo's URL"),
            ("ETag" = String, description = "The todo's version, quoted"),
            ("Idempotent-Replayed" = String, description = "`true` on a replay"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = Unavailable),
    ),
)]
#[allow(dead_code)]
fn create_todo() {}

/// Delete the caller's todos (all, or only completed or open ones).
#[utoipa::path(
    delete,
    path = "/api/todos",
    tag = "todos",
    params(ClearQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ),
)]
#[allow(dead_code)]
fn clear_todos() {}

/// One todo.
#[utoipa::path(
    get,
    path = "/api/todos/{id}",
    tag = "todos",
    params(
        ("id" = String, Path, format = "uuid", description = "The todo's id"),
        IfNoneMatch,
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The todo", body = TodoDto, headers(
            ("ETag" = String, description = "The todo's version, quoted"),
            ("X-Cache" = String, description = "Where the answer came from: `hit` (the owner's shard), `miss` (PostgreSQL), `stale` (the cache while PostgreSQL is unreachable)"),
        )),
        (status = 304, description = "Not modified: the caller's ETag is current",
            headers(("ETag" = String, description = "The todo's version, quoted"))),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
#[allow(dead_code)]
fn get_todo() {}

/// Change the given fields of a todo.
#[utoipa::path(
    patch,
    path = "/api/todos/{id}",
    tag = "todos",
    params(
        ("id" = String, Path, format = "uuid", description = "The todo's id"),
        IfMatch,
        IdempotencyKey,
    ),
    request_body(content = TodoPatch, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The changed todo", body = TodoDto, headers(
            ("ETag" = String, description = "The todo's new version, quoted"),
            ("Idempotent-Replayed" = String, description = "`true` on a replay"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = Unavailable),
    ),
)]
#[allow(dead_code)]
fn update_todo() {}

/// Replace a todo's title, completed and order.
#[utoipa::path(
    put,
    path = "/api/todos/{id}",
    tag = "todos",
    params(
        ("id" = String, Path, format = "uuid", description = "The todo's id"),
        IfMatch,
    ),
    request_body(content = TodoCreate, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The replaced todo", body = TodoDto, headers(
            ("ETag" = String, description = "The todo's new version, quoted"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 412, response = PreconditionFailed),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    ),
)]
#[allow(dead_code)]
fn replace_todo() {}

/// Delete a todo.
#[utoipa::path(
    delete,
    path = "/api/todos/{id}",
    tag = "todos",
    params(
        ("id" = String, Path, format = "uuid", description = "The todo's id"),
        IfMatch,
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 412, response = PreconditionFailed),
        (status = 503, response = Unavailable),
    ),
)]
#[allow(dead_code)]
fn delete_todo() {}

/// Live change feed of the caller's todos (Server-Sent Events).
///
/// Every change of the caller's todos, through any replica or over NATS, in commit order:
/// `event: created|updated|deleted`, `id:` the event id, `data:` the todo as JSON (for
/// `deleted`, `{"id"}`). Send the last `id:` received as `Last-Event-ID` to resume
/// without losing an event (within `OUTBOX_RETENTION_H`); an older one gets
/// `event: error` with a problem document (status 410) telling the client to list again,
/// and the stream ends. A comment line every 15 s keeps idle streams open. A consumer
/// that stays behind for `FEED_STALL_S` is disconnected.
#[utoipa::path(
    get,
    path = "/api/todos/events",
    tag = "todos",
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = String),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ),
)]
#[allow(dead_code)]
fn todo_events() {}

/// Liveness, as the original service had it.
#[utoipa::path(
    get,
    path = "/health",
    tag = "meta",
    responses((status = 200, description = "Alive", body = Health)),
)]
#[allow(dead_code)]
fn health() {}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document",
        content_type = "application/json", body = Object)),
)]
#[allow(dead_code)]
fn openapi_json() {}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn doc() -> Value {
        serde_json::to_value(document()).expect("the document serialises")
    }

    #[test]
    fn the_document_is_openapi_3_1_with_optional_bearer_auth_on_the_api() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let security = &operation["security"];
                if path.starts_with("/api/") {
                    assert_eq!(*security, json!([{}, {"bearer": []}]), "{method} {path}");
                } else {
                    assert!(security.is_null(), "{method} {path} needs no credentials");
                }
            }
        }
    }

    #[test]
    fn every_error_is_a_problem_and_every_response_may_carry_a_request_id() {
        let doc = doc();
        let reusable = doc["components"]["responses"]
            .as_object()
            .expect("responses");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let responses = operation["responses"].as_object().expect("responses");
                for (status, response) in responses {
                    let response = match response["$ref"].as_str() {
                        Some(r) => {
                            let name = r.trim_start_matches("#/components/responses/");
                            &reusable[name]
                        }
                        None => response,
                    };
                    let at = format!("{method} {path} {status}");
                    assert!(response["headers"]["X-Request-Id"].is_object(), "{at}");
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(
                            response["content"]["application/problem+json"]["schema"]["$ref"]
                                == "#/components/schemas/Problem",
                            "{at} is not a problem"
                        );
                    }
                    match status.as_str() {
                        "401" => assert!(response["headers"]["WWW-Authenticate"].is_object()),
                        "503" => assert!(response["headers"]["Retry-After"].is_object()),
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn a_patch_needs_a_writable_field_and_bodies_reject_unknown_ones() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["TodoCreate"]["additionalProperties"], false);
        assert_eq!(schemas["TodoCreate"]["required"], json!(["title"]));
        assert_eq!(schemas["TodoCreate"]["properties"]["id"]["readOnly"], true);
        let patch = &schemas["TodoPatch"]["allOf"];
        assert_eq!(patch[0]["additionalProperties"], false);
        assert_eq!(patch[0]["minProperties"], 1);
        let required: Vec<&Value> = patch[1]["anyOf"]
            .as_array()
            .expect("anyOf")
            .iter()
            .map(|s| &s["required"][0])
            .collect();
        assert_eq!(
            required,
            [&json!("title"), &json!("completed"), &json!("order")]
        );
    }
}
