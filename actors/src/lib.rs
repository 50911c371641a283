//! The core of the todo service: domain types, messages, actors and their supervision.
//! No HTTP, NATS or SQL here; persistence is the [`store::TodoStore`] port.
//!
//! ```text
//!                         RootSupervisor
//!          (restart with backoff, restart intensity → meltdown)
//!        ┌──────────────┬──────┴───────┬──────────────────┐
//!        ▼              ▼              ▼                  ▼
//!     Writer        Shard 0 … N-1   MetricsActor     (NATS consumers,
//!  (batches writes, (owner-keyed     (lifecycle and    outbox relay:
//!   one transaction  cache, batched   mailbox figures  later issues)
//!   per batch)       reads, lists)    → MetricsSink)
//! ```
//!
//! The edges never hold an `ActorRef`: they go through [`handles::ActorHandles`], whose
//! slots the supervisor refills on every restart.

pub mod connect;
pub mod domain;
pub mod handles;
pub mod limbo;
pub mod metrics;
pub mod shard;
pub mod slot;
pub mod store;
pub mod supervisor;
pub mod writer;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests_supervisor;
