//! Dead letters: work that failed for good, with the reason, kept for replay.
//!
//! The embedded back end is a JSON Lines file in the data dir
//! (`dlq.jsonl`). A record is written and `fsync`ed **before** the source
//! message's share is acknowledged, so a dead letter is never lost: if the
//! write fails, the share is abandoned and the message comes back after a
//! restart. `freshet dlq replay` feeds the records' tasks back into the
//! pipeline and moves the replayed records to `dlq.replayed.jsonl`.
//!
//! With `[kafka] dlq_topic` set, dead letters go to that topic instead: the
//! value is the same JSON record, the key its `source`, and the headers
//! `freshet.stage`, `freshet.error_type` and, for messages that came from
//! Kafka, `freshet.topic`, `freshet.partition`, `freshet.offset`. A write
//! returns only once the broker acknowledged the record (`acks=all`), so the
//! same rule holds: no acknowledgement of the source message before its dead
//! letter is durable. `freshet dlq replay` then reads the topic back (see
//! `service::Runtime::replay_dlq`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Unix milliseconds when it was written.
    pub time_ms: u64,
    /// Stage that gave up: source, search, extract, transform, embed, index.
    pub stage: String,
    /// Error class (the `error_type` label).
    pub error_type: String,
    /// What went wrong.
    pub message: String,
    /// The task to replay (JSON), or the raw input when it did not parse.
    pub task: serde_json::Value,
    /// Where the input came from, e.g. `embedded:0:17` or `file:tasks.jsonl:3`.
    pub source: String,
}

impl DeadLetter {
    /// A dead letter stamped now.
    pub fn new(
        stage: &str,
        error_type: &str,
        message: impl Into<String>,
        task: serde_json::Value,
        source: impl Into<String>,
    ) -> DeadLetter {
        DeadLetter {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            stage: stage.to_string(),
            error_type: error_type.to_string(),
            message: message.into(),
            task,
            source: source.into(),
        }
    }
}

/// A line of a dead-letter file that is not a record: its number and why.
pub type BadLine = (usize, String);

/// The dead-letter file of one data dir (or, with a Kafka topic, the topic).
#[derive(Debug)]
pub struct Dlq {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    written: std::sync::atomic::AtomicU64,
    kafka: Option<KafkaDlq>,
}

/// Dead letters on a Kafka topic.
pub struct KafkaDlq {
    producer: rdkafka::producer::FutureProducer<crate::dataplane::source::kafka::LogContext>,
    topic: String,
}

impl std::fmt::Debug for KafkaDlq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDlq")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// How long a dead letter may take to reach the broker before the write fails
/// (and the source message is redelivered instead).
pub const KAFKA_DLQ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl KafkaDlq {
    fn write(&self, letter: &DeadLetter) -> std::io::Result<()> {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::FutureRecord;
        let value = serde_json::to_vec(letter).map_err(std::io::Error::other)?;
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "freshet.stage",
                value: Some(letter.stage.as_str()),
            })
            .insert(Header {
                key: "freshet.error_type",
                value: Some(letter.error_type.as_str()),
            });
        if let Some((topic, partition, offset)) =
            crate::dataplane::source::kafka::parse_source_ref(&letter.source)
        {
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
        let deadline = std::time::Instant::now() + KAFKA_DLQ_TIMEOUT;
        let mut record = FutureRecord::to(&self.topic)
            .key(letter.source.as_str())
            .payload(&value)
            .headers(headers);
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((e, back)) => {
                    let full = matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    );
                    if !full || std::time::Instant::now() > deadline {
                        return Err(std::io::Error::other(format!(
                            "dead-letter topic `{}`: {e}",
                            self.topic
                        )));
                    }
                    record = back;
                    std::thread::sleep(std::time::Duration::from_millis(10));
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
}

impl Dlq {
    /// Opens (creating) `dir/dlq.jsonl` for appending.
    pub fn open(dir: &Path) -> std::io::Result<Dlq> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("dlq.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Dlq {
            path,
            file: Mutex::new(file),
            written: Default::default(),
            kafka: None,
        })
    }

    /// Dead letters go to the Kafka topic `topic` (which must exist; the
    /// runtime creates it). `dir` keeps the file for records written before.
    pub fn open_kafka(
        dir: &Path,
        k: &crate::settings::KafkaSettings,
        topic: &str,
        client_id: &str,
    ) -> std::io::Result<Dlq> {
        let mut dlq = Dlq::open(dir)?;
        let producer = crate::dataplane::source::kafka::client_config(k, client_id)
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
            .create_with_context(crate::dataplane::source::kafka::LogContext)
            .map_err(|e| std::io::Error::other(format!("kafka producer for {}: {e}", k.brokers)))?;
        dlq.kafka = Some(KafkaDlq {
            producer,
            topic: topic.to_string(),
        });
        Ok(dlq)
    }

    /// The dead-letter topic, when dead letters go to Kafka.
    pub fn kafka_topic(&self) -> Option<&str> {
        self.kafka.as_ref().map(|k| k.topic.as_str())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and fsyncs one record. Blocking: call from a blocking context
    /// or accept a short stall (records are rare and small).
    pub fn write(&self, letter: &DeadLetter) -> std::io::Result<()> {
        if let Some(kafka) = &self.kafka {
            kafka.write(letter)?;
            self.written
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!(crate::metrics::DLQ_RECORDS_TOTAL, "stage" => letter.stage.clone(), "error_type" => letter.error_type.clone())
                .increment(1);
            return Ok(());
        }
        let mut line = serde_json::to_vec(letter).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let before = file.metadata()?.len();
        if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
            // Never leave a torn record for the next one to be glued onto.
            let _ = file.set_len(before);
            return Err(e);
        }
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(crate::metrics::DLQ_RECORDS_TOTAL, "stage" => letter.stage.clone(), "error_type" => letter.error_type.clone())
            .increment(1);
        Ok(())
    }

    /// Records written by this process.
    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads every record of a dead-letter file; a line that does not parse
    /// is reported with its number (a torn last line after a crash included).
    pub fn read_all(path: &Path) -> std::io::Result<(Vec<DeadLetter>, Vec<BadLine>)> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()))
            }
            Err(e) => return Err(e),
        };
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<DeadLetter>(&line) {
                Ok(letter) => good.push(letter),
                Err(e) => bad.push((i + 1, e.to_string())),
            }
        }
        Ok((good, bad))
    }

    /// Moves every record out of the file (for replay): returns them and
    /// appends them to `dlq.replayed.jsonl`. Lines that are not records stay
    /// in `dlq.jsonl` for a person to look at; nothing is dropped.
    pub fn take_all(&self) -> std::io::Result<Vec<DeadLetter>> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let raw = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut letters = Vec::new();
        let mut keep = String::new();
        for line in raw.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<DeadLetter>(line) {
                Ok(letter) => letters.push(letter),
                Err(_) => {
                    keep.push_str(line);
                    keep.push('\n');
                }
            }
        }
        let replayed = self.path.with_file_name("dlq.replayed.jsonl");
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(replayed)?;
        for letter in &letters {
            let mut line = serde_json::to_vec(letter).map_err(std::io::Error::other)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        out.sync_data()?;
        file.set_len(0)?;
        file.write_all(keep.as_bytes())?;
        file.sync_data()?;
        Ok(letters)
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
    pub headers: std::collections::BTreeMap<String, String>,
    /// The dead letter, or why the value is not one.
    pub letter: Result<DeadLetter, String>,
}

/// Reads a dead-letter topic from the beginning to its end. The end is
/// where one second passes without a record: some Kafka-compatible brokers
/// (tansu) report a high watermark that counts record *batches*, so it is
/// not trusted. Blocking.
pub fn read_topic(
    k: &crate::settings::KafkaSettings,
    topic: &str,
) -> std::io::Result<Vec<TopicRecord>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::{Duration, Instant};
    let err = |what: &str, e: rdkafka::error::KafkaError| {
        std::io::Error::other(format!("dead-letter topic `{topic}`: {what}: {e}"))
    };
    let consumer: BaseConsumer<crate::dataplane::source::kafka::LogContext> =
        crate::dataplane::source::kafka::client_config(k, "freshet-dlq-list")
            .set("group.id", format!("{}.dlq-list", k.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create_with_context(crate::dataplane::source::kafka::LogContext)
            .map_err(|e| err("consumer", e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| err("metadata", e))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| err("assign", e))?;
        }
    }
    let mut out = Vec::new();
    if tpl.count() == 0 {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| err("assign", e))?;
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(1) {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = polled.map_err(|e| err("read", e))?;
        last = Instant::now();
        let mut headers = std::collections::BTreeMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_take() {
        let dir = std::env::temp_dir().join(format!("freshet-dlq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dlq = Dlq::open(&dir).unwrap();
        let letter = DeadLetter::new(
            "extract",
            "timeout",
            "slow",
            serde_json::json!({"type": "url", "url": "http://x"}),
            "embedded:0:1",
        );
        dlq.write(&letter).unwrap();
        dlq.write(&letter).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dlq.path())
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        let (good, bad) = Dlq::read_all(dlq.path()).unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 3);
        let taken = dlq.take_all().unwrap();
        assert_eq!(taken.len(), 2);
        let (left, bad) = Dlq::read_all(dlq.path()).unwrap();
        assert_eq!(left.len(), 0);
        assert_eq!(bad.len(), 1, "the torn line stays for a person to see");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
