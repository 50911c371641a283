//! Conditional requests (RFC 9110 §13) and `Idempotency-Key` (IETF httpapi draft) at the
//! edge: header parsing, the request hash, and the per-replica guard that answers 409
//! while a request with the same key is still in flight.

use std::collections::HashSet;
use std::sync::Mutex;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use todo_actors::domain::{Owner, Todo};

use super::error::ApiError;

/// Longest `Idempotency-Key` accepted.
pub const MAX_KEY_LEN: usize = 255;

/// An `If-Match` or `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EntityTags {
    /// `*`
    Any,
    /// `"3", W/"4"`: (weak, opaque tag).
    List(Vec<(bool, String)>),
}

fn entity_tags(headers: &HeaderMap, name: http::header::HeaderName) -> Option<EntityTags> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut tags = Vec::new();
    for value in values {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                return Some(EntityTags::Any);
            }
            let (weak, rest) = match item.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            if let Some(opaque) = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                tags.push((weak, opaque.to_owned()));
            }
        }
    }
    Some(EntityTags::List(tags))
}

/// The versions `If-Match` allows (`None`: no header, or `*`, which only asks that the
/// todo exists, as every change does anyway). Strong comparison: weak tags never match,
/// so a header with none usable allows no version at all (412).
pub fn if_match_versions(headers: &HeaderMap) -> Option<Vec<i64>> {
    match entity_tags(headers, http::header::IF_MATCH)? {
        EntityTags::Any => None,
        EntityTags::List(tags) => Some(
            tags.into_iter()
                .filter(|(weak, _)| !weak)
                .filter_map(|(_, opaque)| opaque.parse().ok())
                .collect(),
        ),
    }
}

/// True when `If-None-Match` matches the todo's current ETag (weak comparison), so a
/// GET answers 304.
pub fn not_modified(headers: &HeaderMap, todo: &Todo) -> bool {
    match entity_tags(headers, http::header::IF_NONE_MATCH) {
        None => false,
        Some(EntityTags::Any) => true,
        Some(EntityTags::List(tags)) => {
            let current = todo.version.to_string();
            tags.iter().any(|(_, opaque)| *opaque == current)
        }
    }
}

/// The `Idempotency-Key` header, validated: 1 to 255 visible ASCII characters.
///
/// # Errors
/// `ApiError::Validation` naming the header.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::field(
            "Idempotency-Key",
            "must be one header of 1 to 255 visible ASCII characters",
        )
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let key = value.to_str().map_err(|_| invalid())?.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

/// SHA-256 of what makes a request the same request: method, path and body.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    hasher.finalize().to_vec()
}

/// Keys of the requests in flight on this replica.
#[derive(Default)]
pub struct KeysInFlight(Mutex<HashSet<(Owner, String)>>);

/// Holds a key while its request is processed; releases it when dropped.
pub struct KeyClaim<'a> {
    set: &'a KeysInFlight,
    key: (Owner, String),
}

impl KeysInFlight {
    /// Claims `key` for `owner`.
    ///
    /// # Errors
    /// `ApiError::Conflict` (409) while another request holds it.
    pub fn claim(&self, owner: &Owner, key: &str) -> Result<KeyClaim<'_>, ApiError> {
        let entry = (owner.clone(), key.to_owned());
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(entry.clone()) {
            return Err(ApiError::Conflict);
        }
        Ok(KeyClaim {
            set: self,
            key: entry,
        })
    }
}

impl Drop for KeyClaim<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().expect("valid"));
        h
    }

    #[test]
    fn if_match_uses_strong_comparison_and_star_means_exists() {
        assert_eq!(if_match_versions(&HeaderMap::new()), None);
        assert_eq!(if_match_versions(&headers("if-match", "*")), None);
        assert_eq!(
            if_match_versions(&headers("if-match", "\"3\"")),
            Some(vec![3])
        );
        assert_eq!(
            if_match_versions(&headers("if-match", "\"3\", \"5\"")),
            Some(vec![3, 5])
        );
        assert_eq!(
            if_match_versions(&headers("if-match", "W/\"3\"")),
            Some(vec![])
        );
        assert_eq!(
            if_match_versions(&headers("if-match", "garbage")),
            Some(vec![])
        );
    }

    #[test]
    fn idempotency_keys_are_validated() {
        assert_eq!(idempotency_key(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(
            idempotency_key(&headers("idempotency-key", "abc-123")).ok(),
            Some(Some("abc-123".to_owned()))
        );
        let long: &'static str = Box::leak("k".repeat(256).into_boxed_str());
        assert!(idempotency_key(&headers("idempotency-key", long)).is_err());
        assert!(idempotency_key(&headers("idempotency-key", "a b")).is_err());
    }

    #[test]
    fn a_claimed_key_is_409_until_released() {
        let keys = KeysInFlight::default();
        let owner = Owner::public();
        let claim = keys.claim(&owner, "k").expect("free");
        assert!(matches!(keys.claim(&owner, "k"), Err(ApiError::Conflict)));
        assert!(
            keys.claim(&Owner::parse("other").expect("valid"), "k")
                .is_ok()
        );
        drop(claim);
        assert!(keys.claim(&owner, "k").is_ok());
    }
}
