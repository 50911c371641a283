//! Request and response bodies of the REST API, and their conversion into domain types.
//!
//! Bodies are first decoded into [`TodoBody`], whose fields are kept as raw JSON so that
//! each can be checked on its own and reported by name (`errors[].field`). Unknown
//! fields and duplicate keys are rejected by serde; read-only fields are ignored so a
//! GET body can be sent back.

use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, header};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use todo_actors::domain::{NewTodo, Todo, TodoChange, TodoTitle};

use super::error::{ApiError, FieldError};

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
    #[serde(default, rename = "id")]
    _id: Option<IgnoredAny>,
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
    /// `ApiError::BadRequest` for malformed JSON, a non-object, unknown or duplicate fields.
    pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        require_json(headers)?;
        serde_json::from_slice(body).map_err(|e| {
            let what = e.to_string();
            ApiError::BadRequest(format!("the body is not a valid todo JSON object: {what}"))
        })
    }

    /// The create command's fields (`title` required).
    ///
    /// # Errors
    /// `ApiError::Validation` listing every invalid field.
    pub fn into_new(self) -> Result<NewTodo, ApiError> {
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
            _ => Err(ApiError::Validation(errors)),
        }
    }

    /// A PATCH: only the given fields, at least one.
    ///
    /// # Errors
    /// `ApiError::Validation` listing every invalid field.
    pub fn into_patch(self) -> Result<TodoChange, ApiError> {
        let mut errors = Vec::new();
        if self.title.is_none() && self.completed.is_none() && self.order.is_none() {
            return Err(ApiError::field(
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
            Err(ApiError::Validation(errors))
        }
    }

    /// A PUT: title required, the others reset to their defaults when absent.
    ///
    /// # Errors
    /// `ApiError::Validation` listing every invalid field.
    pub fn into_replace(self) -> Result<TodoChange, ApiError> {
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

/// Checks `Content-Type: application/json` (parameters such as charset allowed).
///
/// # Errors
/// `ApiError::UnsupportedMediaType` otherwise.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// The absolute base URL of this API as the client sees it: `PUBLIC_URL`, else
/// `Forwarded`, else `X-Forwarded-Proto`/`X-Forwarded-Host`, else `Host`.
pub fn base_url(public_url: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(url) = public_url {
        return url.to_owned();
    }
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
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

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().expect("valid"),
        );
        h
    }

    #[test]
    fn unknown_and_duplicate_fields_are_rejected_read_only_ones_ignored() {
        let h = json_headers();
        assert!(TodoBody::decode(&h, br#"{"title":"a","colour":"red"}"#).is_err());
        assert!(TodoBody::decode(&h, br#"{"title":"a","title":"b"}"#).is_err());
        let body = TodoBody::decode(&h, br#"{"title":"a","id":"x","url":"u","version":3}"#);
        assert!(body.and_then(TodoBody::into_new).is_ok());
    }

    #[test]
    fn every_invalid_field_is_reported_by_name() {
        let h = json_headers();
        let body = TodoBody::decode(&h, br#"{"title":"","completed":"yes","order":1e20}"#)
            .expect("decodes");
        match body.into_new() {
            Err(ApiError::Validation(errors)) => {
                let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["title", "completed", "order"]);
            }
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let h = json_headers();
        let new = TodoBody::decode(&h, br#"{"title":"a","order":487.0}"#)
            .and_then(TodoBody::into_new)
            .expect("valid");
        assert_eq!(new.order, Some(487));
        assert!(
            TodoBody::decode(&h, br#"{"title":"a","order":1.5}"#)
                .and_then(TodoBody::into_new)
                .is_err()
        );
        assert!(
            TodoBody::decode(&h, br#"{"title":"a","order":3e9}"#)
                .and_then(TodoBody::into_new)
                .is_err()
        );
    }

    #[test]
    fn base_url_prefers_public_url_then_forwarded_then_host() {
        let mut h = HeaderMap::new();
        h.insert("host", "api.local:8080".parse().expect("valid"));
        assert_eq!(base_url(None, &h), "http://api.local:8080");
        h.insert("x-forwarded-proto", "https".parse().expect("valid"));
        h.insert("x-forwarded-host", "todo.example".parse().expect("valid"));
        assert_eq!(base_url(None, &h), "https://todo.example");
        h.insert(
            "forwarded",
            "for=1.2.3.4;proto=http;host=fw.example"
                .parse()
                .expect("valid"),
        );
        assert_eq!(base_url(None, &h), "http://fw.example");
        assert_eq!(
            base_url(Some("https://pub.example"), &h),
            "https://pub.example"
        );
    }
}
