//! The writer: the only actor that changes todos.
//!
//! It keeps a few long-lived database connections and batches naturally: commands that
//! queue up while batches are being committed form the next batch (up to `batch_max`),
//! so the busier it gets, the fewer transactions per command. Each caller is answered
//! only after COMMIT; the owning query shard hears of each change before that answer,
//! so a client reads its own writes.

mod actor;
mod messages;
#[cfg(test)]
mod tests;

pub use actor::{OUTCOMES, Writer, WriterArgs, WriterShared, WriterState};
pub use messages::{Origin, WriteReply, WriterMessage};
