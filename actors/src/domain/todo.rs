//! The todo and its validated parts (zero2prod's parse-don't-validate newtypes).

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DomainError;

/// Longest title accepted, in characters (Unicode scalar values).
pub const MAX_TITLE_CHARS: usize = 1000;
/// Largest page a list returns.
pub const MAX_LIST_LIMIT: u32 = 1000;
const MAX_OWNER_CHARS: usize = 200;

/// A todo's identity: a UUIDv7 made by the service, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TodoId(Uuid);

impl TodoId {
    /// A fresh UUIDv7.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the textual form of a UUID.
    ///
    /// # Errors
    /// `DomainError::Invalid` when `s` is not a UUID.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| DomainError::invalid("id", "must be a UUID"))
    }

    /// Wraps a UUID read back from storage.
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The underlying UUID.
    pub fn into_inner(self) -> Uuid {
        self.0
    }
}

impl std::fmt::Display for TodoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Who a todo belongs to. Every read and write is scoped by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(String);

impl Owner {
    /// Validates an owner name (an authenticated subject, an API-key owner or `public`).
    ///
    /// # Errors
    /// `DomainError::Invalid` when empty, too long or holding control characters.
    pub fn parse(s: impl Into<String>) -> Result<Self, DomainError> {
        let s = s.into();
        if s.is_empty() || s.chars().count() > MAX_OWNER_CHARS {
            return Err(DomainError::invalid("owner", "must be 1 to 200 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "owner",
                "must not contain control characters",
            ));
        }
        Ok(Self(s))
    }

    /// Wraps an owner read back from storage (it passed `parse` on the way in).
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The owner every request acts as when authentication is off.
    pub fn public() -> Self {
        Self("public".to_owned())
    }
}

impl AsRef<str> for Owner {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A title: 1 to 1000 characters, not only whitespace, no control characters (PostgreSQL
/// rejects NUL in text, so it must never get that far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoTitle(String);

impl TodoTitle {
    /// Validates a title.
    ///
    /// # Errors
    /// `DomainError::Invalid` naming the field `title`.
    pub fn parse(s: impl Into<String>) -> Result<Self, DomainError> {
        let s = s.into();
        if s.trim().is_empty() {
            return Err(DomainError::invalid(
                "title",
                "must not be empty or only whitespace",
            ));
        }
        if s.chars().count() > MAX_TITLE_CHARS {
            return Err(DomainError::invalid(
                "title",
                "must be at most 1000 characters",
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "title",
                "must not contain control characters",
            ));
        }
        Ok(Self(s))
    }

    /// The title text.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl AsRef<str> for TodoTitle {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A stored todo, as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Todo {
    /// Identity.
    pub id: TodoId,
    /// Whose it is.
    pub owner: Owner,
    /// Validated title text.
    pub title: String,
    /// Done or not.
    pub completed: bool,
    /// Client-chosen position; lists sort by it, nulls last.
    pub order: Option<i32>,
    /// 1 on creation, +1 per change; the strong ETag.
    pub version: i64,
    /// When it was created (millisecond precision, so JSON and storage agree).
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Todo {
    /// The todo a create command produces.
    pub fn create(id: TodoId, owner: Owner, new: NewTodo, at: DateTime<Utc>) -> Self {
        Self {
            id,
            owner,
            title: new.title.into_inner(),
            completed: new.completed,
            order: new.order,
            version: 1,
            created_at: at,
            updated_at: at,
        }
    }

    /// This todo after `change` (version and `updated_at` advanced).
    pub fn changed(&self, change: &TodoChange, at: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        match change {
            TodoChange::Patch {
                title,
                completed,
                order,
            } => {
                if let Some(t) = title {
                    next.title = t.as_ref().to_owned();
                }
                if let Some(c) = completed {
                    next.completed = *c;
                }
                if let Some(o) = order {
                    next.order = *o;
                }
            }
            TodoChange::Replace(new) => {
                next.title = new.title.as_ref().to_owned();
                next.completed = new.completed;
                next.order = new.order;
            }
        }
        next.version += 1;
        next.updated_at = at;
        next
    }
}

/// What a create asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTodo {
    /// The title.
    pub title: TodoTitle,
    /// Initial completion (default false).
    pub completed: bool,
    /// Initial order (default none).
    pub order: Option<i32>,
}

/// How an update changes a todo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TodoChange {
    /// PATCH: only the given fields; `order: Some(None)` clears the order.
    Patch {
        /// New title, if given.
        title: Option<TodoTitle>,
        /// New completion, if given.
        completed: Option<bool>,
        /// New order, if given (inner `None` = null).
        order: Option<Option<i32>>,
    },
    /// PUT: title, completed and order all replaced (absent ones take their defaults).
    Replace(NewTodo),
}

/// An `Idempotency-Key` and the hash of the request it came with: the result of the
/// first request is stored with it, in the same transaction as the change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// The key as the client sent it (1 to 255 visible ASCII characters).
    pub key: String,
    /// SHA-256 of the parsed command (what it does, not how it was sent): the same key
    /// with another command is refused.
    pub request_hash: Vec<u8>,
}

/// What an idempotent request did the first time: transport-neutral (each edge turns it
/// into its own status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyOutcome {
    /// A todo was created.
    Created,
    /// A todo was changed.
    Updated,
}

impl ReplyOutcome {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "created" => Some(Self::Created),
            "updated" => Some(Self::Updated),
            _ => None,
        }
    }
}

/// A stored first result of an idempotent request, replayed for 24 hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    /// The hash of the request that made it; `None` for keys stored before request
    /// hashes were made from the parsed command (they are replayed without comparison).
    pub request_hash: Option<Vec<u8>>,
    /// What the first request did.
    pub outcome: ReplyOutcome,
    /// The todo it answered with.
    pub todo: Todo,
}

/// A write the writer actor applies; each is answered with a [`WriteEffect`] or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCommand {
    /// Insert a new todo (id and timestamps are chosen by the edge-facing API).
    Create {
        /// The todo to insert, fully formed.
        todo: Todo,
        /// Store the result under this key, if given.
        idempotency: Option<IdempotencyKey>,
    },
    /// Change one todo.
    Update {
        /// Whose.
        owner: Owner,
        /// Which.
        id: TodoId,
        /// How.
        change: TodoChange,
        /// `If-Match` versions, if any: the change applies only at one of them.
        expected_versions: Option<Vec<i64>>,
        /// The time to stamp as `updated_at`.
        at: DateTime<Utc>,
        /// Store the result under this key, if given.
        idempotency: Option<IdempotencyKey>,
    },
    /// Delete one todo.
    Delete {
        /// Whose.
        owner: Owner,
        /// Which.
        id: TodoId,
        /// `If-Match` versions, if any.
        expected_versions: Option<Vec<i64>>,
    },
    /// Delete all of an owner's todos (`completed: Some(true)`: only the completed ones).
    Clear {
        /// Whose.
        owner: Owner,
        /// Filter on completion, if any.
        completed: Option<bool>,
    },
}

impl WriteCommand {
    /// A create stamped now with a fresh id.
    pub fn create(owner: Owner, new: NewTodo) -> Self {
        Self::Create {
            todo: Todo::create(TodoId::generate(), owner, new, now()),
            idempotency: None,
        }
    }

    /// The idempotency key the command carries, if any.
    pub fn idempotency(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::Create { idempotency, .. } | Self::Update { idempotency, .. } => {
                idempotency.as_ref()
            }
            Self::Delete { .. } | Self::Clear { .. } => None,
        }
    }

    /// The owner the command acts for.
    pub fn owner(&self) -> &Owner {
        match self {
            Self::Create { todo, .. } => &todo.owner,
            Self::Update { owner, .. } | Self::Delete { owner, .. } | Self::Clear { owner, .. } => {
                owner
            }
        }
    }

    /// What an idempotent replay of this command's success reports: a create created,
    /// anything else updated.
    pub fn replay_outcome(&self) -> ReplyOutcome {
        if matches!(self, Self::Create { .. }) {
            ReplyOutcome::Created
        } else {
            ReplyOutcome::Updated
        }
    }

    /// What the command may change: `(owner, Some(id))` for one todo, `(owner, None)` for
    /// all of an owner's (a clear).
    pub fn key(&self) -> (Owner, Option<TodoId>) {
        match self {
            Self::Create { todo, .. } => (todo.owner.clone(), Some(todo.id)),
            Self::Update { owner, id, .. } | Self::Delete { owner, id, .. } => {
                (owner.clone(), Some(*id))
            }
            Self::Clear { owner, .. } => (owner.clone(), None),
        }
    }

    /// A fixed label for metrics and logs.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Update { .. } => "update",
            Self::Delete { .. } => "delete",
            Self::Clear { .. } => "clear",
        }
    }
}

/// What a committed write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteEffect {
    /// The todo as inserted.
    Created(Todo),
    /// The todo as it is after the change.
    Updated(Todo),
    /// The todo that was removed.
    Deleted {
        /// Whose.
        owner: Owner,
        /// Which.
        id: TodoId,
    },
    /// The todos a clear removed.
    Cleared {
        /// Whose.
        owner: Owner,
        /// Which.
        ids: Vec<TodoId>,
    },
}

impl WriteEffect {
    /// Whose todos it changed.
    pub fn owner(&self) -> &Owner {
        match self {
            Self::Created(t) | Self::Updated(t) => &t.owner,
            Self::Deleted { owner, .. } | Self::Cleared { owner, .. } => owner,
        }
    }
}

/// A position in the list order: the sort key of the last todo of a page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// `order` of the last todo seen (`None` sorts last).
    pub order: Option<i32>,
    /// Its creation time, to the microsecond.
    pub created_at: DateTime<Utc>,
    /// Its id, the final tie-breaker.
    pub id: TodoId,
}

/// A list request: one owner's todos in list order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListQuery {
    /// Whose.
    pub owner: Owner,
    /// Only completed (`Some(true)`) or open (`Some(false)`) ones.
    pub completed: Option<bool>,
    /// Page size, 1..=[`MAX_LIST_LIMIT`].
    pub limit: u32,
    /// Start after this position.
    pub after: Option<Cursor>,
}

/// The current time at the precision the API shows (milliseconds), so a todo read back
/// from PostgreSQL equals the one the writer answered with.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_rejects_empty_whitespace_control_and_overlong() {
        assert!(TodoTitle::parse("").is_err());
        assert!(TodoTitle::parse(" \t ").is_err());
        assert!(TodoTitle::parse("a\u{0}b").is_err());
        assert!(TodoTitle::parse("a\u{7}b").is_err());
        assert!(TodoTitle::parse("x".repeat(1001)).is_err());
        assert!(TodoTitle::parse("é".repeat(1000)).is_ok());
        assert_eq!(
            TodoTitle::parse(" milk ").map(TodoTitle::into_inner),
            Ok(" milk ".into())
        );
    }

    #[test]
    fn patch_changes_only_given_fields_and_bumps_version() {
        let at = now();
        let todo = Todo::create(
            TodoId::generate(),
            Owner::public(),
            NewTodo {
                title: TodoTitle::parse("a").expect("valid"),
                completed: false,
                order: Some(3),
            },
            at,
        );
        let patched = todo.changed(
            &TodoChange::Patch {
                title: None,
                completed: Some(true),
                order: Some(None),
            },
            at,
        );
        assert_eq!(patched.title, "a");
        assert!(patched.completed);
        assert_eq!(patched.order, None);
        assert_eq!(patched.version, 2);
    }

    #[test]
    fn ids_are_uuid_v7_and_parse_round_trips() {
        let id = TodoId::generate();
        assert_eq!(id.into_inner().get_version_num(), 7);
        assert_eq!(TodoId::parse(&id.to_string()), Ok(id));
        assert!(TodoId::parse("nope").is_err());
    }
}
