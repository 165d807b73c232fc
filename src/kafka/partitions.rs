//! Manual assignment: readers outside a consumer group's rebalancing (the
//! dead-letter listing and replay, the control topic reader) take every
//! partition of one topic themselves.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaError;

/// How long the topic's metadata may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`assign_all`] does when the metadata lists no partition (the topic
/// does not exist yet, or was created a moment ago and the metadata lags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfNoPartitions {
    /// Assign nothing (reading an absent topic reads nothing).
    AssignNone,
    /// Assign partition 0 anyway (a one-partition topic freshet just created).
    AssignPartitionZero,
}

/// Assigns every partition of `topic` to `consumer`, each starting at
/// `offset`, and returns how many were assigned. Blocking (it fetches the
/// topic's metadata): call from a blocking context.
pub fn assign_all<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offset: Offset,
    if_none: IfNoPartitions,
) -> Result<usize, KafkaError> {
    let failed = |what: &'static str| {
        move |source| KafkaError::Partitions {
            what,
            topic: topic.to_string(),
            source,
        }
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(failed("reading the metadata"))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), offset)
                .map_err(failed("assigning the partitions"))?;
        }
    }
    if tpl.count() == 0 {
        match if_none {
            IfNoPartitions::AssignNone => return Ok(0),
            IfNoPartitions::AssignPartitionZero => tpl
                .add_partition_offset(topic, 0, offset)
                .map_err(failed("assigning the partitions"))?,
        }
    }
    consumer
        .assign(&tpl)
        .map_err(failed("assigning the partitions"))?;
    Ok(tpl.count())
}
