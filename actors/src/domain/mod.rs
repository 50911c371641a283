//! The domain: todos, their validated parts, the commands that change them and the
//! errors a caller can be told about. Pure data; no I/O.

mod error;
mod todo;

pub use error::DomainError;
pub use todo::{
    Cursor, IdempotencyKey, ListQuery, MAX_LIST_LIMIT, MAX_TITLE_CHARS, NewTodo, Owner,
    ReplyOutcome, StoredReply, Todo, TodoChange, TodoId, TodoTitle, WriteCommand, WriteEffect, now,
};
