//! The JetStream streams and the command consumer, defined once here and created or
//! updated at start (and whenever they are found missing). `nats/streams/*.json` holds
//! the same definitions for operators and the compose stack's `nats-init`; a test keeps
//! the two in step.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};

/// Every subject and stream name, from `NATS_PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The subject prefix (`todo`).
    pub prefix: String,
    /// `TODO_COMMANDS`.
    pub commands: String,
    /// `TODO_EVENTS`.
    pub events: String,
    /// `TODO_DLQ`.
    pub dlq: String,
    /// The commands' durable consumer, shared by every replica.
    pub consumer: String,
}

impl Names {
    /// The names for `prefix` (the stream names are its upper-case form: `todo` gives
    /// `TODO_COMMANDS`).
    pub fn new(prefix: &str) -> Self {
        let stem: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            prefix: prefix.to_owned(),
            commands: format!("{stem}_COMMANDS"),
            events: format!("{stem}_EVENTS"),
            dlq: format!("{stem}_DLQ"),
            consumer: "todo-service".to_owned(),
        }
    }

    /// A request endpoint's subject: `todo.create`.
    pub fn endpoint(&self, verb: &str) -> String {
        format!("{}.{verb}", self.prefix)
    }

    /// Commands: `todo.cmd.>`.
    pub fn commands_subjects(&self) -> String {
        format!("{}.cmd.>", self.prefix)
    }

    /// An event's subject: `todo.events.created`.
    pub fn event(&self, kind: &str) -> String {
        format!("{}.events.{kind}", self.prefix)
    }

    /// A dead letter's subject: `todo.dlq.create`.
    pub fn dead_letter(&self, verb: &str) -> String {
        format!("{}.dlq.{verb}", self.prefix)
    }
}

const MIB: i64 = 1024 * 1024;
const DAY: Duration = Duration::from_secs(86_400);
/// A command or event republished within this window is stored once (`Nats-Msg-Id`).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

fn base(name: &str, subjects: String, description: &str) -> Config {
    Config {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        subjects: vec![subjects],
        storage: StorageType::File,
        num_replicas: 1,
        max_consumers: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        max_message_size: 1_048_576,
        duplicate_window: DUPLICATE_WINDOW,
        ..Config::default()
    }
}

/// Durable commands: a work queue (a command leaves it when a replica acks it after
/// COMMIT); new ones are refused when it is full rather than old ones dropped.
pub fn commands(names: &Names) -> Config {
    Config {
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::New,
        max_bytes: 512 * MIB,
        max_age: 7 * DAY,
        ..base(
            &names.commands,
            names.commands_subjects(),
            "Durable todo commands (todo.cmd.create|update|delete). Work queue: a command is removed once a replica acks it after COMMIT.",
        )
    }
}

/// Committed changes, published from the outbox for other services.
pub fn events(names: &Names) -> Config {
    Config {
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_bytes: 1024 * MIB,
        max_age: 7 * DAY,
        ..base(
            &names.events,
            format!("{}.events.>", names.prefix),
            "Committed changes published from the outbox (todo.events.created|updated|deleted), in commit order; Nats-Msg-Id is the event id.",
        )
    }
}

/// Commands that failed `NATS_MAX_DELIVER` times, kept for inspection and replay.
pub fn dead_letters(names: &Names) -> Config {
    Config {
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_bytes: 256 * MIB,
        max_age: 30 * DAY,
        ..base(
            &names.dlq,
            format!("{}.dlq.>", names.prefix),
            "Commands that failed MaxDeliver times (todo.dlq.>), with the reason in Todo-Dlq-Reason, kept for inspection and replay.",
        )
    }
}

/// Deliveries the broker allows beyond `NATS_MAX_DELIVER`. The service dead-letters a
/// command when the delivery count in its metadata reaches `NATS_MAX_DELIVER`; a
/// nats-server (2.9) now and then reports a redelivery with the count of the one before
/// (after a pull request expired under it), and with the broker's limit equal to ours
/// that command would then never be delivered again nor dead-lettered: lost.
pub const MAX_DELIVER_HEADROOM: i64 = 3;

/// The commands' durable pull consumer, shared by every replica; `max_deliver` is
/// `NATS_MAX_DELIVER` (the broker's own limit is [`MAX_DELIVER_HEADROOM`] above it).
pub fn consumer(names: &Names, ack_wait: Duration, max_deliver: i64) -> pull::Config {
    let max_deliver = max_deliver.saturating_add(MAX_DELIVER_HEADROOM);
    pull::Config {
        durable_name: Some(names.consumer.clone()),
        description: Some("todo-service replicas: apply commands, ack after COMMIT".into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver,
        filter_subject: names.commands_subjects(),
        max_ack_pending: 10_000,
        ..pull::Config::default()
    }
}

/// Creates the streams, or updates them to these definitions.
///
/// # Errors
/// What JetStream answered, e.g. while NATS is down.
pub async fn ensure(js: &Context, names: &Names) -> Result<(), String> {
    for config in [commands(names), events(names), dead_letters(names)] {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|e| format!("stream {name}: {e}"))?;
    }
    Ok(())
}

/// The commands' consumer, created when missing (an existing one is used as it is: an
/// in-place update needs nats-server 2.10).
///
/// # Errors
/// What JetStream answered.
pub async fn ensure_consumer(
    js: &Context,
    names: &Names,
    config: pull::Config,
) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
    let stream = js
        .get_stream(&names.commands)
        .await
        .map_err(|e| format!("stream {}: {e}", names.commands))?;
    match stream.create_consumer(config).await {
        Ok(consumer) => Ok(consumer),
        Err(create) => stream
            .get_consumer(&names.consumer)
            .await
            .map_err(|e| format!("consumer {}: {create}; {e}", names.consumer)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The definitions kept in `nats/streams/` for operators and `nats-init` say what the
    /// code creates.
    #[test]
    fn the_stream_files_match_the_code() {
        let names = Names::new("todo");
        for config in [commands(&names), events(&names), dead_letters(&names)] {
            let path = format!(
                "{}/nats/streams/{}.json",
                env!("CARGO_MANIFEST_DIR"),
                config.name
            );
            let file: Value = serde_json::from_str(
                &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
            )
            .expect("JSON");
            let code = serde_json::to_value(&config).expect("serializable");
            for key in [
                "name",
                "subjects",
                "retention",
                "storage",
                "discard",
                "max_bytes",
                "max_age",
                "max_msg_size",
                "duplicate_window",
                "num_replicas",
                "description",
            ] {
                assert_eq!(file[key], code[key], "{path}: {key}");
            }
        }
    }

    #[test]
    fn names_follow_the_prefix() {
        let n = Names::new("t-1.x");
        assert_eq!(n.commands, "T_1_X_COMMANDS");
        assert_eq!(n.endpoint("get"), "t-1.x.get");
        assert_eq!(n.event("deleted"), "t-1.x.events.deleted");
        assert_eq!(n.commands_subjects(), "t-1.x.cmd.>");
    }
}
