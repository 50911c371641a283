//! `Idempotency-Key` (IETF httpapi draft), transport-neutral: the key's syntax, the hash
//! that tells "the same request" apart from another one, and the per-replica guard that
//! answers 409 while a request with the same key is still in flight.
//!
//! The hash is of the *parsed command* (what it does: the operation, the target, the
//! validated fields, the preconditions), never of the bytes or the transport, so a
//! request retried over NATS after going out over HTTP, or with its JSON keys in another
//! order, is recognised as the same request.

use std::collections::HashSet;
use std::sync::Mutex;

use serde::Serialize;
use sha2::{Digest, Sha256};
use todo_actors::domain::{NewTodo, Owner, TodoChange, TodoId};

use super::error::ServiceError;

/// Longest `Idempotency-Key` accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A valid `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    /// The key from a header's values (none: no key).
    ///
    /// # Errors
    /// `ServiceError::Validation` naming `Idempotency-Key` for more than one value or a
    /// value that is not 1 to 255 visible ASCII characters.
    pub fn from_values<V: AsRef<[u8]>>(values: &[V]) -> Result<Option<Self>, ServiceError> {
        let invalid = || {
            ServiceError::field(
                "Idempotency-Key",
                "must be one header of 1 to 255 visible ASCII characters",
            )
        };
        let value = match values {
            [] => return Ok(None),
            [one] => one.as_ref(),
            _ => return Err(invalid()),
        };
        let key = std::str::from_utf8(value).map_err(|_| invalid())?.trim();
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid());
        }
        Ok(Some(Self(key.to_owned())))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The canonical form of a command that is hashed.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Hashed<'a> {
    Create {
        title: &'a str,
        completed: bool,
        order: Option<i32>,
    },
    Patch {
        id: TodoId,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        completed: Option<bool>,
        /// `Some(None)` is an explicit null (clear the order), kept apart from absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        order: Option<Option<i32>>,
        if_match: Option<&'a [i64]>,
    },
}

fn digest(hashed: &Hashed<'_>) -> Vec<u8> {
    // Serializing a fixed struct cannot fail; an empty input would still hash uniquely
    // per variant below, but the bytes are always there.
    let bytes = serde_json::to_vec(hashed).unwrap_or_default();
    Sha256::digest(&bytes).to_vec()
}

/// The hash of a create.
pub fn hash_create(new: &NewTodo) -> Vec<u8> {
    digest(&Hashed::Create {
        title: new.title.as_ref(),
        completed: new.completed,
        order: new.order,
    })
}

/// The hash of a change of `id` (`PATCH`, or NATS `todo.update`) under `if_match`.
pub fn hash_patch(id: TodoId, change: &TodoChange, if_match: Option<&[i64]>) -> Vec<u8> {
    let hashed = match change {
        TodoChange::Patch {
            title,
            completed,
            order,
        } => Hashed::Patch {
            id,
            title: title.as_ref().map(AsRef::as_ref),
            completed: *completed,
            order: *order,
            if_match,
        },
        TodoChange::Replace(new) => Hashed::Patch {
            id,
            title: Some(new.title.as_ref()),
            completed: Some(new.completed),
            order: Some(new.order),
            if_match,
        },
    };
    digest(&hashed)
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
    /// `ServiceError::Conflict` (409) while another request holds it.
    pub fn claim(&self, owner: &Owner, key: &Key) -> Result<KeyClaim<'_>, ServiceError> {
        let entry = (owner.clone(), key.0.clone());
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(entry.clone()) {
            return Err(ServiceError::Conflict);
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
    use todo_actors::domain::TodoTitle;

    use super::*;

    fn new(title: &str, order: Option<i32>) -> NewTodo {
        NewTodo {
            title: TodoTitle::parse(title).expect("valid"),
            completed: false,
            order,
        }
    }

    #[test]
    fn idempotency_keys_are_validated() {
        let none: [&str; 0] = [];
        assert_eq!(Key::from_values(&none), Ok(None));
        assert_eq!(
            Key::from_values(&["abc-123"]).map(|k| k.map(|k| k.0)),
            Ok(Some("abc-123".to_owned()))
        );
        assert!(Key::from_values(&["k".repeat(256)]).is_err());
        assert!(Key::from_values(&["a b"]).is_err());
        assert!(Key::from_values(&["a", "b"]).is_err());
    }

    #[test]
    fn the_hash_is_of_what_the_command_does() {
        assert_eq!(
            hash_create(&new("milk", Some(1))),
            hash_create(&new("milk", Some(1)))
        );
        assert_ne!(
            hash_create(&new("milk", Some(1))),
            hash_create(&new("milk", None))
        );
        let id = TodoId::generate();
        let clear_order = TodoChange::Patch {
            title: None,
            completed: None,
            order: Some(None),
        };
        let untouched_order = TodoChange::Patch {
            title: None,
            completed: None,
            order: None,
        };
        assert_ne!(
            hash_patch(id, &clear_order, None),
            hash_patch(id, &untouched_order, None)
        );
        assert_ne!(
            hash_patch(id, &clear_order, None),
            hash_patch(id, &clear_order, Some(&[2]))
        );
        assert_ne!(
            hash_patch(id, &clear_order, None),
            hash_patch(TodoId::generate(), &clear_order, None)
        );
    }

    #[test]
    fn a_claimed_key_is_409_until_released() {
        let keys = KeysInFlight::default();
        let owner = Owner::public();
        let k = Key("k".into());
        let claim = keys.claim(&owner, &k).expect("free");
        assert!(matches!(
            keys.claim(&owner, &k),
            Err(ServiceError::Conflict)
        ));
        assert!(
            keys.claim(&Owner::parse("other").expect("valid"), &k)
                .is_ok()
        );
        drop(claim);
        assert!(keys.claim(&owner, &k).is_ok());
    }
}
