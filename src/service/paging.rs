//! Paging of lists: the page size rules and the opaque keyset cursor. A cursor is the
//! sort key of the last todo of a page (`order`, `created_at` in µs, `id`), base64url
//! encoded: clients treat it as opaque, and any edge can hand it back.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use todo_actors::domain::{Cursor, MAX_LIST_LIMIT, Todo, TodoId};

use super::error::ServiceError;

/// Page size when none is given.
pub const DEFAULT_LIMIT: u32 = 100;

/// The page size: `limit` when it is 1 to [`MAX_LIST_LIMIT`], the default when absent.
///
/// # Errors
/// `ServiceError::Validation` naming `limit` otherwise.
pub fn page_size(limit: Option<u32>) -> Result<u32, ServiceError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ServiceError::field(
            "limit",
            format!("must be an integer from 1 to {MAX_LIST_LIMIT}"),
        )),
    }
}

/// The cursor that continues after `last`.
pub fn encode_cursor(last: &Todo) -> String {
    let order = last.order.map(|o| o.to_string()).unwrap_or_default();
    let raw = format!("{order}|{}|{}", last.created_at.timestamp_micros(), last.id);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a cursor this service made.
///
/// # Errors
/// `ServiceError::Validation` naming `cursor` for anything else.
pub fn decode_cursor(s: &str) -> Result<Cursor, ServiceError> {
    parse(s).ok_or_else(|| ServiceError::field("cursor", "is not a cursor this API made"))
}

fn parse(s: &str) -> Option<Cursor> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let mut parts = raw.split('|');
    let order = match parts.next()? {
        "" => None,
        o => Some(o.parse::<i32>().ok()?),
    };
    let created_at = DateTime::<Utc>::from_timestamp_micros(parts.next()?.parse().ok()?)?;
    let id = TodoId::parse(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Cursor {
        order,
        created_at,
        id,
    })
}

#[cfg(test)]
mod tests {
    use todo_actors::domain::{NewTodo, Owner, TodoTitle, now};

    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let todo = Todo::create(
            TodoId::generate(),
            Owner::public(),
            NewTodo {
                title: TodoTitle::parse("a").expect("valid"),
                completed: false,
                order: Some(-4),
            },
            now(),
        );
        let cursor = decode_cursor(&encode_cursor(&todo)).expect("round trip");
        assert_eq!(cursor.order, Some(-4));
        assert_eq!(cursor.id, todo.id);
        assert_eq!(cursor.created_at, todo.created_at);
        assert!(decode_cursor("not-a-cursor").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("1|2")).is_err());
    }

    #[test]
    fn page_sizes_are_1_to_1000_and_default_to_100() {
        assert_eq!(page_size(None), Ok(100));
        assert_eq!(page_size(Some(1000)), Ok(1000));
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(1001)).is_err());
    }
}
