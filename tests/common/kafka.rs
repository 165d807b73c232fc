//! A real Kafka-protocol broker for the Kafka tests.
//!
//! `./scripts/test` starts tansu and exports `FRESHET_TEST_KAFKA=host:port`
//! together with `FRESHET_TEST_KAFKA_REQUIRED=1`, under which a missing
//! broker fails the test. Run by hand (`cargo test`) without
//! `FRESHET_TEST_KAFKA`, the Kafka tests print that they were skipped and
//! pass; start a broker and set the variable to run them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The broker address, or `None` (after saying so) when the test should skip.
pub fn broker(test: &str) -> Option<String> {
    match std::env::var("FRESHET_TEST_KAFKA") {
        Ok(b) if !b.trim().is_empty() => Some(b.trim().to_string()),
        _ => {
            if std::env::var("FRESHET_TEST_KAFKA_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("{test}: FRESHET_TEST_KAFKA is not set but a broker is required (run ./scripts/test)");
            }
            eprintln!(
                "SKIPPED {test}: no Kafka broker (set FRESHET_TEST_KAFKA=host:port, or run ./scripts/test which starts tansu)"
            );
            None
        }
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Creates a topic (plain, not compacted).
pub async fn create_topic(broker: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics answers");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// One message to produce: partition (None: by key), key, value (None: tombstone).
pub struct Msg {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Msg {
    pub fn keyed(key: &str, value: impl Into<Vec<u8>>) -> Msg {
        Msg {
            partition: None,
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.into()),
        }
    }
    pub fn to(partition: i32, key: Option<&str>, value: Option<Vec<u8>>) -> Msg {
        Msg {
            partition: Some(partition),
            key: key.map(|k| k.as_bytes().to_vec()),
            value,
        }
    }
}

/// A producer that sends every record in a batch of its own. tansu 0.6
/// serves a partition only up to the base offset of its last batch, and a
/// fetch that starts inside a batch skips the rest of that batch, so a
/// consumer resuming from a committed offset would miss records of
/// multi-record batches; one record per batch avoids both.
pub fn producer(broker: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("acks", "all")
        .create()
        .expect("producer")
}

impl Msg {
    /// The record that sends this message to `topic`.
    fn record<'a>(&'a self, topic: &'a str) -> FutureRecord<'a, [u8], [u8]> {
        let mut record = FutureRecord::to(topic);
        if let Some(p) = self.partition {
            record = record.partition(p);
        }
        if let Some(k) = &self.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &self.value {
            record = record.payload(v.as_slice());
        }
        record
    }
}

/// Produces messages in order (one at a time, so per-partition order is
/// the given order) and returns each one's (partition, offset).
pub async fn produce(producer: &FutureProducer, topic: &str, messages: &[Msg]) -> Vec<(i32, i64)> {
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let record = m.record(topic);
        let delivery = producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
        out.push((delivery.partition, delivery.offset));
    }
    out
}

/// Produces messages all at once (concurrently; per-partition order is
/// kept); returns each one's (partition, offset).
pub async fn produce_batched(
    producer: &FutureProducer,
    topic: &str,
    messages: &[Msg],
) -> Vec<(i32, i64)> {
    let sends = messages.iter().map(|m| {
        let record = m.record(topic);
        producer.send(record, Duration::from_secs(10))
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| {
            let d = r.unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
            (d.partition, d.offset)
        })
        .collect()
}

/// The offsets `group` committed for `topic`'s partitions 0..partitions.
pub fn committed(broker: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// The latest value of every key of partition 0 of `topic`, read from the
/// beginning to its end (a compacted topic's state).
pub fn latest_by_key(broker: &str, topic: &str) -> BTreeMap<String, Option<Vec<u8>>> {
    use rdkafka::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut out = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut next = 0;
    while next < high {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic} not read to {high}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            next = m.offset() + 1;
            if let Some(key) = m.key() {
                out.insert(
                    String::from_utf8_lossy(key).into_owned(),
                    m.payload().map(<[u8]>::to_vec),
                );
            }
        }
    }
    out
}

/// Prose of `sentences` sentences that no other document shares.
pub fn prose(doc: &str, sentences: usize) -> String {
    (0..sentences)
        .map(|i| format!("In part {i} of {doc}, the council considered proposal {} and asked {} residents what they thought of it.", i * 7 + 3, i * 13 + 5))
        .collect::<Vec<_>>()
        .join(" ")
}
