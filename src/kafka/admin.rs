//! Topic administration: freshet creates its own topics (dead letters,
//! control) and `freshet bench kafka` removes the ones it made.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use super::{client_config, KafkaError, LogContext};
use crate::settings::KafkaSettings;

/// How long the broker may take over an admin request.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long freshet waits for the answer (the error messages say 20 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// An admin client for the configured brokers.
pub fn admin_client(k: &KafkaSettings) -> Result<AdminClient<LogContext>, KafkaError> {
    client_config(k, "freshet-admin")
        .create_with_context(LogContext)
        .map_err(|source| KafkaError::Client {
            what: "admin client",
            brokers: k.brokers.clone(),
            source,
        })
}

/// Deletes `topic` (used by `freshet bench kafka` to clean up after itself).
pub async fn delete_topic(k: &KafkaSettings, topic: &str) -> Result<(), KafkaError> {
    let admin = admin_client(k)?;
    let options = AdminOptions::new().operation_timeout(Some(OPERATION_TIMEOUT));
    let refused = |reason: String| KafkaError::Topic {
        action: "deleting",
        topic: topic.to_string(),
        brokers: k.brokers.clone(),
        reason,
    };
    let results = tokio::time::timeout(ANSWER_TIMEOUT, admin.delete_topics(&[topic], &options))
        .await
        .map_err(|_| KafkaError::NoAnswer {
            action: "deleting",
            topic: topic.to_string(),
            brokers: k.brokers.clone(),
            hint: "",
        })?
        .map_err(|e| refused(e.to_string()))?;
    for result in results {
        if let Err((_, code)) = result {
            return Err(refused(code.to_string()));
        }
    }
    Ok(())
}

/// Creates `topic` if it does not exist (freshet's own topics: DLQ, control).
pub async fn ensure_topic(
    k: &KafkaSettings,
    topic: &str,
    partitions: i32,
    compacted: bool,
) -> Result<(), KafkaError> {
    let admin = admin_client(k)?;
    let mut new = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(k.replication_factor),
    );
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    let options = AdminOptions::new().operation_timeout(Some(OPERATION_TIMEOUT));
    let refused = |reason: String| KafkaError::Topic {
        action: "creating",
        topic: topic.to_string(),
        brokers: k.brokers.clone(),
        reason,
    };
    let results = tokio::time::timeout(ANSWER_TIMEOUT, admin.create_topics(&[new], &options))
        .await
        .map_err(|_| KafkaError::NoAnswer {
            action: "creating",
            topic: topic.to_string(),
            brokers: k.brokers.clone(),
            hint: " (are the brokers up?)",
        })?
        .map_err(|e| refused(e.to_string()))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(refused(code.to_string())),
        }
    }
    Ok(())
}
