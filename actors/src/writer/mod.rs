//! The writer: the only actor that changes todos.
//!
//! It owns one long-lived database connection and batches naturally: commands that
//! queue up while a batch is being committed form the next batch (up to `batch_max`),
//! so the busier it gets, the fewer transactions per command. Each caller is answered
//! only after COMMIT; the owning query shard hears of each change before that answer,
//! so a client reads its own writes.

mod actor;
mod messages;
#[cfg(test)]
mod tests;

pub use actor::{Writer, WriterArgs, WriterState};
pub use messages::{WriteReply, WriterMessage};
