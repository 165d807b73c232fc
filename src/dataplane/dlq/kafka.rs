//! Dead letters on a Kafka topic (`[kafka] dlq_topic`): written with
//! `acks=all` and the `freshet.*` headers, listed by [`read_topic`], and
//! replayed in the consumer group `<group_id>.dlq-replay`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{DeadLetter, DeadLetterSink, Dlq, ReplayError, ReplayTarget, Replayed};
use crate::dataplane::ack::{AckTracker, Position};
use crate::dataplane::task::{now_ms, Envelope, Task};
use crate::kafka::{
    assign_all, client_config, ensure_topic, parse_source_ref, source_ref, IfNoPartitions,
    KafkaError, LogContext,
};
use crate::settings::KafkaSettings;

/// How long a dead letter may take to reach the broker before the write fails
/// (and the source message is redelivered instead).
pub const KAFKA_DLQ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a replay reads without a record before it takes the topic as
/// read to its end.
const REPLAY_IDLE_END: Duration = Duration::from_secs(2);

/// Dead letters on a Kafka topic.
pub struct KafkaSink {
    producer: FutureProducer<LogContext>,
    topic: String,
    settings: KafkaSettings,
    client_id: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Creates `topic` if missing (one partition) and a producer for it.
    pub async fn open(
        k: &KafkaSettings,
        topic: &str,
        client_id: &str,
    ) -> Result<KafkaSink, KafkaError> {
        ensure_topic(k, topic, 1, false).await?;
        let producer = client_config(k, client_id)
            .set("acks", "all")
            .set("linger.ms", "5")
            // One record per batch: dead letters are few, and tansu 0.6
            // skips the rest of a batch when a read starts inside it (a
            // replay resuming from its committed offset would miss records).
            .set("batch.num.messages", "1")
            .set(
                "message.timeout.ms",
                KAFKA_DLQ_TIMEOUT.as_millis().to_string(),
            )
            .create_with_context(LogContext)
            .map_err(|source| KafkaError::Client {
                what: "producer",
                brokers: k.brokers.clone(),
                source,
            })?;
        Ok(KafkaSink {
            producer,
            topic: topic.to_string(),
            settings: k.clone(),
            client_id: client_id.to_string(),
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn headers(letter: &DeadLetter) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "freshet.stage",
                value: Some(letter.stage.as_str()),
            })
            .insert(Header {
                key: "freshet.error_type",
                value: Some(letter.error_type.as_str()),
            });
        if let Some((topic, partition, offset)) = parse_source_ref(&letter.source) {
            headers = headers
                .insert(Header {
                    key: "freshet.topic",
                    value: Some(topic.as_str()),
                })
                .insert(Header {
                    key: "freshet.partition",
                    value: Some(&partition.to_string()),
                })
                .insert(Header {
                    key: "freshet.offset",
                    value: Some(&offset.to_string()),
                });
        }
        headers
    }

    /// A consumer of the replay group, at its committed offsets.
    fn replay_consumer(&self) -> Result<BaseConsumer<LogContext>, ReplayError> {
        let k = &self.settings;
        let mut config = client_config(k, &format!("{}-dlq-replay", self.client_id));
        config
            .set("group.id", format!("{}.dlq-replay", k.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest");
        config
            .create_with_context(LogContext)
            .map_err(|e| self.topic_error("dead-letter replay consumer for", e))
    }

    fn topic_error(
        &self,
        what: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> ReplayError {
        ReplayError::Topic {
            what,
            topic: self.topic.clone(),
            source: Box::new(e),
        }
    }
}

#[async_trait::async_trait]
impl DeadLetterSink for KafkaSink {
    fn write(&self, letter: &DeadLetter) -> std::io::Result<()> {
        let value = serde_json::to_vec(letter).map_err(std::io::Error::other)?;
        let deadline = Instant::now() + KAFKA_DLQ_TIMEOUT;
        let mut record = FutureRecord::to(&self.topic)
            .key(letter.source.as_str())
            .payload(&value)
            .headers(KafkaSink::headers(letter));
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((e, back)) => {
                    let full = matches!(
                        e,
                        RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                    );
                    if !full || Instant::now() > deadline {
                        return Err(std::io::Error::other(format!(
                            "dead-letter topic `{}`: {e}",
                            self.topic
                        )));
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(std::io::Error::other(format!(
                "dead-letter topic `{}`: {e}",
                self.topic
            ))),
            Err(_) => Err(std::io::Error::other(format!(
                "dead-letter topic `{}`: the producer was dropped",
                self.topic
            ))),
        }
    }

    fn location(&self) -> String {
        format!("topic {}", self.topic)
    }

    /// Replays the dead-letter topic: reads it in the group
    /// `<group_id>.dlq-replay` from where the last replay stopped until two
    /// seconds pass without a record, re-submits the task of every record
    /// written before the replay started (records that fail again are new
    /// records, left for the next replay), and commits the replay group's
    /// offsets over the records whose task finished. Records whose task does
    /// not parse are published again (kept) with the replay's time. The end
    /// is not taken from the high watermark: some Kafka-compatible brokers
    /// (tansu) report one that counts record batches.
    async fn replay(&self, dlq: &Arc<Dlq>, target: &ReplayTarget) -> Result<Replayed, ReplayError> {
        let topic = self.topic.as_str();
        let consumer = self.replay_consumer()?;
        let started_ms = now_ms();
        let topic_name = topic.to_string();
        let consumer = tokio::task::spawn_blocking(move || {
            assign_all(
                &consumer,
                &topic_name,
                Offset::Stored,
                IfNoPartitions::AssignNone,
            )
            .map(|_| consumer)
        })
        .await
        .map_err(|e| self.topic_error("reading", e))?
        .map_err(|e| self.topic_error("reading", e))?;
        let tracker = AckTracker::new(&target.live);
        let sender = target.pipeline.clone();
        let mut replayed = 0;
        let mut kept = 0;
        let mut last_message = tokio::time::Instant::now();
        let consumer = Arc::new(consumer);
        let mut stopped_at: BTreeMap<i32, i64> = Default::default();
        loop {
            if last_message.elapsed() > REPLAY_IDLE_END {
                break;
            }
            let c = consumer.clone();
            let polled = tokio::task::spawn_blocking(move || {
                c.poll(Duration::from_millis(200)).map(|r| {
                    r.map(|m| (m.partition(), m.offset(), m.payload().map(<[u8]>::to_vec)))
                })
            })
            .await
            .map_err(|e| self.topic_error("reading", e))?;
            let Some(polled) = polled else { continue };
            let (partition, offset, payload) =
                polled.map_err(|e| self.topic_error("reading", e))?;
            last_message = tokio::time::Instant::now();
            let letter: Option<DeadLetter> = payload.and_then(|p| serde_json::from_slice(&p).ok());
            if stopped_at.contains_key(&partition)
                || letter.as_ref().is_some_and(|l| l.time_ms >= started_ms)
            {
                // Written since the replay started (failed again, or kept):
                // this partition's replay ends here; the rest is for next time.
                stopped_at.entry(partition).or_insert(offset);
                continue;
            }
            let ack = tracker.register(Position { partition, offset }).await;
            let task = letter
                .as_ref()
                .and_then(|l| serde_json::from_value::<Task>(l.task.clone()).ok());
            match (letter, task) {
                (Some(letter), Some(task)) => {
                    let envelope = Envelope {
                        task,
                        ack,
                        received_ms: now_ms(),
                        source: format!("dlq-replay:{}", letter.source),
                    };
                    if sender.send(envelope).await.is_err() {
                        return Err(ReplayError::PipelineClosed);
                    }
                    replayed += 1;
                }
                (letter, _) => {
                    let mut letter = letter.unwrap_or_else(|| {
                        DeadLetter::new(
                            "source",
                            "parse",
                            format!(
                                "a record of `{topic}` at {partition}:{offset} is not a dead letter"
                            ),
                            serde_json::Value::Null,
                            source_ref(topic, partition, offset),
                        )
                    });
                    letter.time_ms = started_ms;
                    let dlq = dlq.clone();
                    tokio::task::spawn_blocking(move || dlq.write(&letter))
                        .await
                        .map_err(|e| self.topic_error("keeping a record of", e))?
                        .map_err(|e| self.topic_error("keeping a record of", e))?;
                    kept += 1;
                    ack.done();
                }
            }
        }
        drop(sender);
        let deadline = tokio::time::Instant::now() + target.drain_timeout;
        if !tracker.drained(deadline).await {
            tracing::warn!(
                "not every replayed task finished in time; the rest is replayed next time"
            );
        }
        let mut commit = TopicPartitionList::new();
        for (partition, offset) in tracker.commit_offsets() {
            commit
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|e| self.topic_error("committing the replay of", e))?;
        }
        if commit.count() > 0 {
            let c = consumer.clone();
            tokio::task::spawn_blocking(move || c.commit(&commit, CommitMode::Sync))
                .await
                .map_err(|e| self.topic_error("committing the replay of", e))?
                .map_err(|e| self.topic_error("committing the replay of", e))?;
        }
        Ok(Replayed { replayed, kept })
    }
}

/// One record of a dead-letter topic, as `freshet dlq list` shows it.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    /// Partition of the DLQ topic.
    pub partition: i32,
    /// Offset in it.
    pub offset: i64,
    /// The `freshet.*` headers.
    pub headers: BTreeMap<String, String>,
    /// The dead letter, or why the value is not one.
    pub letter: Result<DeadLetter, String>,
}

/// Reads a dead-letter topic from the beginning to its end. The end is
/// where one second passes without a record: some Kafka-compatible brokers
/// (tansu) report a high watermark that counts record *batches*, so it is
/// not trusted. Blocking.
pub fn read_topic(k: &KafkaSettings, topic: &str) -> std::io::Result<Vec<TopicRecord>> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("dead-letter topic `{topic}`: {what}: {e}"))
    };
    let consumer: BaseConsumer<LogContext> = client_config(k, "freshet-dlq-list")
        .set("group.id", format!("{}.dlq-list", k.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create_with_context(LogContext)
        .map_err(|e| err("consumer", &e))?;
    let mut out = Vec::new();
    let assigned = assign_all(
        &consumer,
        topic,
        Offset::Beginning,
        IfNoPartitions::AssignNone,
    )
    .map_err(|e| err("assign", &e))?;
    if assigned == 0 {
        return Ok(out);
    }
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(1) {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = polled.map_err(|e| err("read", &e))?;
        last = Instant::now();
        let mut headers = BTreeMap::new();
        if let Some(h) = m.headers() {
            for header in h.iter() {
                if let Some(v) = header.value {
                    headers.insert(
                        header.key.to_string(),
                        String::from_utf8_lossy(v).into_owned(),
                    );
                }
            }
        }
        let letter = match m.payload() {
            Some(p) => serde_json::from_slice(p).map_err(|e| e.to_string()),
            None => Err("null value".into()),
        };
        out.push(TopicRecord {
            partition: m.partition(),
            offset: m.offset(),
            headers,
            letter,
        });
    }
    Ok(out)
}
