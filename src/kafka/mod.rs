//! What every freshet Kafka client shares: the client settings, the one log
//! context that routes librdkafka's logs to `tracing`, topic administration,
//! "assign every partition of a topic", the `kafka:<topic>:<partition>:<offset>`
//! source references, and [`KafkaError`].
//!
//! The users sit beside it and import Kafka things only from here:
//! - the Kafka source (`dataplane::source::kafka`): the consumer group over
//!   the input topics;
//! - the Kafka dead-letter sink (`dataplane::dlq::kafka`): writing, listing
//!   and replaying the dead-letter topic;
//! - [`control_topic`]: the control topic's topic, producer, reader and
//!   group member (`service::cluster` gives the records their meaning:
//!   shared knob versions, audit mirror, controller leadership);
//! - `freshet bench kafka` (`cli::bench`).
//!
//! Nothing else in the crate names `rdkafka`; in particular `service/` does
//! not, and this module imports nothing of the data plane, the control plane
//! or the service (generic modules use the `Source` and `DeadLetterSink` traits).

pub mod admin;
pub mod control_topic;
mod error;
mod partitions;
mod source_ref;

pub use admin::{admin_client, delete_topic, ensure_topic};
pub use error::KafkaError;
pub use partitions::{assign_all, IfNoPartitions};
pub use source_ref::{parse_source_ref, source_ref};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;

use crate::metrics;
use crate::settings::KafkaSettings;

/// The client settings every freshet Kafka client shares: brokers, client
/// id and the operator's extra properties.
pub fn client_config(k: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", k.brokers.trim())
        .set("client.id", client_id)
        .set_log_level(RDKafkaLogLevel::Warning);
    for (key, value) in &k.properties {
        config.set(key, value);
    }
    config
}

/// Routes librdkafka's log lines and errors to `tracing`. Consumers with
/// their own rebalance callbacks (the source, the control group member)
/// forward their `log` and `error` to [`log_line`] and [`log_error`].
#[derive(Debug, Clone, Default)]
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(level, fac, message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        log_error(&error, reason);
    }
}

impl ConsumerContext for LogContext {}

/// One librdkafka log line, at the matching `tracing` level.
pub fn log_line(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// A client-level error (brokers unreachable, authentication): counted as a
/// source connection error and logged.
pub fn log_error(error: &rdkafka::error::KafkaError, reason: &str) {
    metrics::record_error(
        "source",
        "connect",
        &format_args!("kafka: {error}: {reason}"),
    );
}
