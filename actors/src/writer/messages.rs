//! Messages of the writer actor.

use ractor::RpcReplyPort;

use crate::domain::{DomainError, WriteCommand, WriteEffect};

/// The answer to a write: the committed effect or why it failed.
pub type WriteReply = Result<WriteEffect, DomainError>;

/// What the writer accepts.
pub enum WriterMessage {
    /// Apply a command; answered after COMMIT.
    Write {
        /// The command.
        command: WriteCommand,
        /// Where the answer goes.
        reply: RpcReplyPort<WriteReply>,
    },
    /// Commit what has been collected (sent by the writer to itself).
    Flush,
    /// A batch task finished (sent by the task): its connection is free again.
    Done {
        /// Which batch.
        batch: u64,
    },
    /// Chaos testing: panic in the handler.
    Panic,
}
