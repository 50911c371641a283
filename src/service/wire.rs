//! The wire formats every edge shares: request bodies (decoded with per-field errors)
//! and their conversion into domain types, the todo as clients see it, and the list and
//! clear parameters, whether they come from an HTTP query string or a NATS JSON payload.
//! Nothing here knows HTTP or NATS types: edges hand over bytes and strings.
//!
//! Bodies are first decoded into [`TodoBody`], whose fields are kept as raw JSON so that
//! each can be checked on its own and reported by name (`errors[].field`). Unknown
//! fields and duplicate keys are rejected by serde; read-only fields are ignored so a
//! GET body can be sent back (`id` is kept: NATS requests name their todo with it).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use todo_actors::domain::{NewTodo, Todo, TodoChange, TodoId, TodoTitle};

use super::error::{FieldError, ServiceError};

/// A todo as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Todo)]
pub struct TodoDto {
    /// UUIDv7.
    #[schema(format = "uuid")]
    pub id: String,
    /// Title.
    #[schema(min_length = 1, max_length = 1000)]
    pub title: String,
    /// Done or not.
    pub completed: bool,
    /// Position, or null.
    #[schema(required = true)]
    pub order: Option<i32>,
    /// Absolute URL of this todo.
    #[schema(format = "uri")]
    pub url: String,
    /// Version (the ETag).
    #[schema(minimum = 1)]
    pub version: i64,
    /// RFC 3339, milliseconds, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339, milliseconds, UTC.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl TodoDto {
    /// The view of `todo` with URLs under `base`.
    pub fn new(todo: &Todo, base: &str) -> Self {
        Self {
            id: todo.id.to_string(),
            title: todo.title.clone(),
            completed: todo.completed,
            order: todo.order,
            url: format!("{base}/api/todos/{}", todo.id),
            version: todo.version,
            created_at: timestamp(todo.created_at),
            updated_at: timestamp(todo.updated_at),
        }
    }
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A request body as sent: every writable field raw, read-only ones ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TodoBody {
    #[serde(default, deserialize_with = "present")]
    title: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    completed: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    order: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default, rename = "url")]
    _url: Option<IgnoredAny>,
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<IgnoredAny>,
}

/// Keeps an explicit `null` apart from an absent field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl TodoBody {
    /// Decodes a JSON body.
    ///
    /// # Errors
    /// `ServiceError::BadRequest` for malformed JSON, a non-object, unknown or duplicate
    /// fields.
    pub fn decode(body: &[u8]) -> Result<Self, ServiceError> {
        serde_json::from_slice(body).map_err(|e| {
            let what = e.to_string();
            ServiceError::BadRequest(format!("the body is not a valid todo JSON object: {what}"))
        })
    }

    /// The todo a NATS request names with `"id"` (REST names it in the path). An id
    /// that is not a UUID cannot name a todo: it is "not found", as in a REST path.
    ///
    /// # Errors
    /// `ServiceError::Validation` when `id` is absent or not a string;
    /// `ServiceError::NotFound` when it is not a UUID.
    pub fn target(&self) -> Result<TodoId, ServiceError> {
        target(self.id.as_ref())
    }

    /// The create command's fields (`title` required).
    ///
    /// # Errors
    /// `ServiceError::Validation` listing every invalid field.
    pub fn into_new(self) -> Result<NewTodo, ServiceError> {
        let mut errors = Vec::new();
        let title = required_title(self.title, &mut errors);
        let completed = optional_bool(self.completed, &mut errors).unwrap_or(false);
        let order = optional_order(self.order, &mut errors).flatten();
        match title {
            Some(title) if errors.is_empty() => Ok(NewTodo {
                title,
                completed,
                order,
            }),
            _ => Err(ServiceError::Validation(errors)),
        }
    }

    /// A PATCH: only the given fields, at least one.
    ///
    /// # Errors
    /// `ServiceError::Validation` listing every invalid field.
    pub fn into_patch(self) -> Result<TodoChange, ServiceError> {
        let mut errors = Vec::new();
        if self.title.is_none() && self.completed.is_none() && self.order.is_none() {
            return Err(ServiceError::field(
                "body",
                "give at least one of title, completed, order",
            ));
        }
        let title = self.title.and_then(|v| parse_title(v, &mut errors));
        let completed = optional_bool(self.completed, &mut errors);
        let order = optional_order(self.order, &mut errors);
        if errors.is_empty() {
            Ok(TodoChange::Patch {
                title,
                completed,
                order,
            })
        } else {
            Err(ServiceError::Validation(errors))
        }
    }

    /// A PUT: title required, the others reset to their defaults when absent.
    ///
    /// # Errors
    /// `ServiceError::Validation` listing every invalid field.
    pub fn into_replace(self) -> Result<TodoChange, ServiceError> {
        self.into_new().map(TodoChange::Replace)
    }
}

fn push(errors: &mut Vec<FieldError>, field: &str, message: impl Into<String>) {
    errors.push(FieldError {
        field: field.to_owned(),
        message: message.into(),
    });
}

fn required_title(value: Option<Value>, errors: &mut Vec<FieldError>) -> Option<TodoTitle> {
    match value {
        None => {
            push(errors, "title", "is required");
            None
        }
        Some(v) => parse_title(v, errors),
    }
}

fn parse_title(value: Value, errors: &mut Vec<FieldError>) -> Option<TodoTitle> {
    match value {
        Value::String(s) => match TodoTitle::parse(s) {
            Ok(t) => Some(t),
            Err(e) => {
                let message = match e {
                    todo_actors::domain::DomainError::Invalid { message, .. } => message,
                    other => other.to_string(),
                };
                push(errors, "title", message);
                None
            }
        },
        _ => {
            push(errors, "title", "must be a string");
            None
        }
    }
}

fn optional_bool(value: Option<Value>, errors: &mut Vec<FieldError>) -> Option<bool> {
    match value {
        None => None,
        Some(Value::Bool(b)) => Some(b),
        Some(_) => {
            push(errors, "completed", "must be true or false");
            None
        }
    }
}

/// `None`: absent; `Some(None)`: null; `Some(Some(n))`: a 32-bit integer.
fn optional_order(value: Option<Value>, errors: &mut Vec<FieldError>) -> Option<Option<i32>> {
    match value {
        None => None,
        Some(Value::Null) => Some(None),
        // JSON Schema counts 487.0 and 1e2 as integers, so they are accepted as such.
        Some(Value::Number(n)) => match n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX) + 1.0)
                    .map(|f| f as i64)
            })
            .and_then(|n| i32::try_from(n).ok())
        {
            Some(n) => Some(Some(n)),
            None => {
                push(errors, "order", "must be a 32-bit integer or null");
                None
            }
        },
        Some(_) => {
            push(errors, "order", "must be a 32-bit integer or null");
            None
        }
    }
}

/// The todo a JSON `"id"` names (see [`TodoBody::target`]).
fn target(id: Option<&Value>) -> Result<TodoId, ServiceError> {
    match id {
        None => Err(ServiceError::field("id", "is required")),
        Some(Value::String(s)) => TodoId::parse(s).map_err(|_| ServiceError::NotFound),
        Some(_) => Err(ServiceError::field("id", "must be a string")),
    }
}

/// A payload that only names a todo: `{"id": "…"}` (NATS `todo.get` and `todo.delete`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdPayload {
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
}

/// Decodes `{"id": "…"}`.
///
/// # Errors
/// `ServiceError::BadRequest` for malformed JSON or other fields; see
/// [`TodoBody::target`] for the id itself.
pub fn decode_id(payload: &[u8]) -> Result<TodoId, ServiceError> {
    let p: IdPayload = serde_json::from_slice(payload).map_err(|e| {
        ServiceError::BadRequest(format!("the payload must be {{\"id\": \"…\"}}: {e}"))
    })?;
    target(p.id.as_ref())
}

/// List parameters as the client sent them; their limits are checked by the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// Only completed (`true`) or open (`false`) todos.
    pub completed: Option<bool>,
    /// Page size, if given.
    pub limit: Option<u32>,
    /// Where the page starts: an opaque cursor from an earlier page.
    pub cursor: Option<String>,
}

/// The same in JSON (NATS `todo.list`, `todo.clear`): every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListPayload {
    #[serde(default)]
    completed: Option<Value>,
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    cursor: Option<Value>,
}

impl ListParams {
    /// Parses an HTTP query string (`completed=true&limit=10&cursor=…`).
    ///
    /// # Errors
    /// `ServiceError::BadRequest` for a malformed query or an unknown parameter,
    /// `ServiceError::Validation` for a bad value.
    pub fn from_query(query: &str) -> Result<Self, ServiceError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ServiceError::BadRequest("the query string is malformed".into()))?;
        let mut params = Self::default();
        for (key, value) in pairs {
            match key.as_str() {
                "completed" => {
                    params.completed = Some(match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(completed_invalid()),
                    });
                }
                // Out-of-range numbers are reported by the service with the range.
                "limit" => params.limit = Some(value.parse::<u32>().unwrap_or(0)),
                "cursor" => params.cursor = Some(value),
                other => {
                    return Err(ServiceError::BadRequest(format!(
                        "unknown query parameter {other:?}"
                    )));
                }
            }
        }
        Ok(params)
    }

    /// Parses a JSON object (`{"completed": true, "limit": 10, "cursor": "…"}`); an empty
    /// payload is `{}`.
    ///
    /// # Errors
    /// `ServiceError::BadRequest` for malformed JSON or an unknown field,
    /// `ServiceError::Validation` for a bad value.
    pub fn from_json(payload: &[u8]) -> Result<Self, ServiceError> {
        let p: ListPayload = if payload.iter().all(u8::is_ascii_whitespace) {
            ListPayload::default()
        } else {
            serde_json::from_slice(payload).map_err(|e| {
                ServiceError::BadRequest(format!("the payload is not a valid query object: {e}"))
            })?
        };
        let completed = match p.completed {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => return Err(completed_invalid()),
        };
        let limit = match p.limit {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                Some(n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0))
            }
            Some(_) => return Err(ServiceError::field("limit", "must be an integer")),
        };
        let cursor = match p.cursor {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(ServiceError::field("cursor", "must be a string")),
        };
        Ok(Self {
            completed,
            limit,
            cursor,
        })
    }

    /// The parameters of a clear: only `completed` may be given.
    ///
    /// # Errors
    /// `ServiceError::BadRequest` when `limit` or `cursor` is given.
    pub fn into_clear(self) -> Result<Option<bool>, ServiceError> {
        if self.limit.is_some() || self.cursor.is_some() {
            return Err(ServiceError::BadRequest(
                "a clear takes only `completed`".into(),
            ));
        }
        Ok(self.completed)
    }
}

fn completed_invalid() -> ServiceError {
    ServiceError::field("completed", "must be true or false")
}

/// The absolute base URL of this API as the client sees it: `PUBLIC_URL`, else
/// `Forwarded`, else `X-Forwarded-Proto`/`X-Forwarded-Host`, else `Host`. `header`
/// looks a request header up by its lower-case name.
pub fn base_url<'h>(public_url: Option<&str>, header: impl Fn(&str) -> Option<&'h str>) -> String {
    if let Some(url) = public_url {
        return url.to_owned();
    }
    let get = |name: &str| {
        header(name)
            .map(|v| v.split(',').next().unwrap_or_default().trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut proto = None;
    let mut host = None;
    if let Some(forwarded) = get("forwarded") {
        for pair in forwarded.split(';') {
            let mut kv = pair.splitn(2, '=');
            let key = kv.next().unwrap_or_default().trim().to_ascii_lowercase();
            let value = kv
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches('"')
                .to_owned();
            match key.as_str() {
                "proto" => proto = Some(value),
                "host" => host = Some(value),
                _ => {}
            }
        }
    }
    let proto = proto
        .or_else(|| get("x-forwarded-proto"))
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".to_owned());
    let host = host
        .or_else(|| get("x-forwarded-host"))
        .or_else(|| get("host"))
        .filter(|h| valid_host(h))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{proto}://{host}")
}

/// A host[:port] made only of characters a host may hold (no header injection into URLs).
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_duplicate_fields_are_rejected_read_only_ones_ignored() {
        assert!(TodoBody::decode(br#"{"title":"a","colour":"red"}"#).is_err());
        assert!(TodoBody::decode(br#"{"title":"a","title":"b"}"#).is_err());
        let body = TodoBody::decode(br#"{"title":"a","id":"x","url":"u","version":3}"#);
        assert!(body.and_then(TodoBody::into_new).is_ok());
    }

    #[test]
    fn every_invalid_field_is_reported_by_name() {
        let body =
            TodoBody::decode(br#"{"title":"","completed":"yes","order":1e20}"#).expect("decodes");
        match body.into_new() {
            Err(ServiceError::Validation(errors)) => {
                let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["title", "completed", "order"]);
            }
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let new = TodoBody::decode(br#"{"title":"a","order":487.0}"#)
            .and_then(TodoBody::into_new)
            .expect("valid");
        assert_eq!(new.order, Some(487));
        assert!(
            TodoBody::decode(br#"{"title":"a","order":1.5}"#)
                .and_then(TodoBody::into_new)
                .is_err()
        );
        assert!(
            TodoBody::decode(br#"{"title":"a","order":3e9}"#)
                .and_then(TodoBody::into_new)
                .is_err()
        );
    }

    #[test]
    fn a_nats_payload_names_its_todo_with_id() {
        let id = TodoId::generate();
        let body = TodoBody::decode(format!(r#"{{"id":"{id}","title":"a"}}"#).as_bytes())
            .expect("decodes");
        assert_eq!(body.target(), Ok(id));
        assert_eq!(decode_id(format!(r#"{{"id":"{id}"}}"#).as_bytes()), Ok(id));
        assert_eq!(decode_id(br#"{"id":"nope"}"#), Err(ServiceError::NotFound));
        assert!(matches!(decode_id(b"{}"), Err(ServiceError::Validation(_))));
        assert!(matches!(
            decode_id(br#"{"id":"x","title":"a"}"#),
            Err(ServiceError::BadRequest(_))
        ));
    }

    #[test]
    fn list_parameters_read_the_same_from_a_query_and_from_json() {
        let q = ListParams::from_query("completed=true&limit=5&cursor=abc").expect("valid");
        let j = ListParams::from_json(br#"{"completed":true,"limit":5,"cursor":"abc"}"#)
            .expect("valid");
        assert_eq!(q, j);
        assert_eq!(ListParams::from_json(b""), Ok(ListParams::default()));
        assert!(ListParams::from_query("completed=maybe").is_err());
        assert!(ListParams::from_query("colour=red").is_err());
        assert!(ListParams::from_json(br#"{"colour":"red"}"#).is_err());
        assert!(
            ListParams::from_query("limit=3")
                .and_then(ListParams::into_clear)
                .is_err()
        );
        assert_eq!(
            ListParams::from_json(br#"{"completed":true}"#).and_then(ListParams::into_clear),
            Ok(Some(true))
        );
    }

    #[test]
    fn base_url_prefers_public_url_then_forwarded_then_host() {
        let mut h = std::collections::HashMap::new();
        let get = |h: &std::collections::HashMap<&'static str, &'static str>| {
            let h = h.clone();
            base_url(None, move |n| h.get(n).copied())
        };
        h.insert("host", "api.local:8080");
        assert_eq!(get(&h), "http://api.local:8080");
        h.insert("x-forwarded-proto", "https");
        h.insert("x-forwarded-host", "todo.example");
        assert_eq!(get(&h), "https://todo.example");
        h.insert("forwarded", "for=1.2.3.4;proto=http;host=fw.example");
        assert_eq!(get(&h), "http://fw.example");
        assert_eq!(
            base_url(Some("https://pub.example"), |_| None),
            "https://pub.example"
        );
    }
}
