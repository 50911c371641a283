//! Query shards: each owns the reads of the owners whose name hashes to it.
//!
//! A shard keeps a bounded LRU cache of todos, kept exact by the writer (which tells the
//! owning shard of every committed change before answering its caller). Point reads
//! that miss and arrive together become one `SELECT … WHERE (id, owner) IN …`; identical
//! list requests in flight share one query. Queries run in spawned tasks on the shard's
//! own connection (tokio-postgres pipelines them), so a slow query never blocks cache
//! hits.

mod actor;
mod messages;
#[cfg(test)]
mod tests;

pub use actor::{Shard, ShardArgs, ShardState};
pub use messages::{ReadOutcome, ShardMessage};
