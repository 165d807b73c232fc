//! The errors of freshet's Kafka clients.

/// What went wrong talking to Kafka. Every message names the brokers or
/// the topic, so the operator knows where to look.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A client (consumer, producer, admin) could not be created: bad
    /// settings in `[kafka] properties`, usually.
    #[error("kafka {what} for {brokers}: {source}")]
    Client {
        /// Which client.
        what: &'static str,
        /// The configured brokers.
        brokers: String,
        /// librdkafka's reason.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// An admin request got no answer in time.
    #[error("{action} topic `{topic}`: no answer from {brokers} in 20 s{hint}")]
    NoAnswer {
        /// `creating` or `deleting`.
        action: &'static str,
        /// The topic.
        topic: String,
        /// The configured brokers.
        brokers: String,
        /// What to check, if anything (starts with a space).
        hint: &'static str,
    },
    /// An admin request was refused.
    #[error("{action} topic `{topic}` on {brokers}: {reason}")]
    Topic {
        /// `creating` or `deleting`.
        action: &'static str,
        /// The topic.
        topic: String,
        /// The configured brokers.
        brokers: String,
        /// The broker's or librdkafka's reason.
        reason: String,
    },
    /// A topic's partitions could not be listed or assigned.
    #[error("{what} of `{topic}`: {source}")]
    Partitions {
        /// `reading the metadata` or `assigning the partitions`.
        what: &'static str,
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The brokers did not answer a metadata request.
    #[error("cannot reach the kafka brokers {brokers}: {source} (check [kafka] brokers / FRESHET_KAFKA_BROKERS)")]
    Unreachable {
        /// The configured brokers.
        brokers: String,
        /// librdkafka's reason.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Subscribing to the input topics failed.
    #[error("subscribing to {topics}: {source}")]
    Subscribe {
        /// The topics.
        topics: String,
        /// librdkafka's reason.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A client's thread could not be started (or its start-up work died).
    #[error("cannot start the kafka thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A record could not be produced.
    #[error("producing to `{topic}`: {source}")]
    Produce {
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}
