//! Dead letters: work that failed for good, with the reason, kept for replay.
//!
//! [`Dlq`] is what the pipeline and the sources hold: it writes through a
//! [`DeadLetterSink`], counts the records (`freshet_dlq_records_total`) and
//! replays them. The sinks:
//!
//! - [`file`] (the default): a JSON Lines file in the data dir
//!   (`dlq.jsonl`). A record is written and `fsync`ed **before** the source
//!   message's share is acknowledged, so a dead letter is never lost: if the
//!   write fails, the share is abandoned and the message comes back after a
//!   restart. A replay feeds the records' tasks back into the pipeline and
//!   moves the replayed records to `dlq.replayed.jsonl`.
//! - [`kafka`] (`[kafka] dlq_topic` set): the value is the same JSON record,
//!   the key its `source`, and the headers `freshet.stage`,
//!   `freshet.error_type` and, for messages that came from Kafka,
//!   `freshet.topic`, `freshet.partition`, `freshet.offset`. A write returns
//!   only once the broker acknowledged the record (`acks=all`), so the same
//!   rule holds: no acknowledgement of the source message before its dead
//!   letter is durable. A replay reads the topic back in its own consumer
//!   group and commits only over replayed work that finished.
//!
//! A [`Replayer`] runs one replay at a time: `freshet dlq replay` uses it
//! when no instance holds the data dir, and a running instance serves it as
//! `POST /v1/dlq/replay` (the CLI calls that when the data dir is held).

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use file::FileSink;
#[cfg(feature = "kafka")]
pub use kafka::{read_topic, KafkaSink, TopicRecord, KAFKA_DLQ_TIMEOUT};

use crate::dataplane::task::{Envelope, Task};
use crate::live::LiveConfig;

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

/// Where dead letters are kept. Implementations: [`FileSink`], [`KafkaSink`].
#[async_trait::async_trait]
pub trait DeadLetterSink: Send + Sync + std::fmt::Debug {
    /// Writes one record durably: returns only once it is on disk or
    /// acknowledged by the broker (the source message's acknowledgement
    /// waits for it). Blocking: call from a blocking context or accept a
    /// short stall (records are rare and small).
    fn write(&self, letter: &DeadLetter) -> std::io::Result<()>;

    /// Writes several records durably, all or none where the sink can
    /// (a file: one write and one `fsync`). The default writes them one by
    /// one and stops at the first failure.
    fn write_batch(&self, letters: &[DeadLetter]) -> std::io::Result<()> {
        letters.iter().try_for_each(|l| self.write(l))
    }

    /// Where the records are, for messages: a path or `topic <name>`.
    fn location(&self) -> String;

    /// Re-submits the task of every record to `target`. Records whose task
    /// does not parse (raw input that was never a task) are written again
    /// through `dlq` (so they stay, and count as written). Returns how many
    /// were replayed and how many kept.
    async fn replay(&self, dlq: &Arc<Dlq>, target: &ReplayTarget) -> Result<Replayed, ReplayError>;
}

/// What a replay feeds.
pub struct ReplayTarget {
    /// Pushes one task on the embedded queue (its tracker counts it and the
    /// drain waits for it); the `source` names the replay.
    pub embedded: Arc<dyn Resubmit>,
    /// The pipeline's input, for sinks that track the replayed records
    /// themselves (a topic commits its offsets only over finished work).
    pub pipeline: mpsc::Sender<Envelope>,
    /// The live knobs (`source.max_in_flight` bounds a sink's own tracker).
    pub live: Arc<LiveConfig>,
    /// How long a sink that tracks its records waits for them to finish.
    pub drain_timeout: Duration,
}

impl std::fmt::Debug for ReplayTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayTarget")
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

/// A way to put a task back in front of the pipeline (the embedded source).
#[async_trait::async_trait]
pub trait Resubmit: Send + Sync {
    /// Enqueues `task`; false when the pipeline is closed.
    async fn resubmit(&self, task: Task, source: &str) -> bool;
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records whose task went back into the pipeline.
    pub replayed: usize,
    /// Records kept because their task does not parse.
    pub kept: usize,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The pipeline stopped taking tasks.
    #[error("the pipeline closed during replay")]
    PipelineClosed,
    /// Reading or rewriting the dead-letter file failed.
    #[error("dead-letter file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The dead-letter topic could not be read, kept or committed.
    #[error("{what} `{topic}`: {source}")]
    Topic {
        /// What was being done.
        what: &'static str,
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The dead letters of one service: a sink and a count of what this process
/// wrote.
#[derive(Debug)]
pub struct Dlq {
    sink: Box<dyn DeadLetterSink>,
    written: AtomicU64,
}

impl Dlq {
    /// Dead letters in `dir/dlq.jsonl` (created if missing).
    pub fn open(dir: &std::path::Path) -> std::io::Result<Dlq> {
        Ok(Dlq::new(FileSink::open(dir)?))
    }

    /// Dead letters written to `sink`.
    pub fn new(sink: impl DeadLetterSink + 'static) -> Dlq {
        Dlq {
            sink: Box::new(sink),
            written: AtomicU64::new(0),
        }
    }

    /// Where the records are: a path or `topic <name>`.
    pub fn location(&self) -> String {
        self.sink.location()
    }

    /// Writes one record durably (see [`DeadLetterSink::write`]) and counts it.
    pub fn write(&self, letter: &DeadLetter) -> std::io::Result<()> {
        self.write_batch(std::slice::from_ref(letter))
    }

    /// Writes several records durably (see [`DeadLetterSink::write_batch`])
    /// and counts them.
    pub fn write_batch(&self, letters: &[DeadLetter]) -> std::io::Result<()> {
        self.sink.write_batch(letters)?;
        self.written
            .fetch_add(letters.len() as u64, Ordering::Relaxed);
        for letter in letters {
            metrics::counter!(crate::metrics::DLQ_RECORDS_TOTAL, "stage" => letter.stage.clone(), "error_type" => letter.error_type.clone())
                .increment(1);
        }
        Ok(())
    }

    /// Records written by this process.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Reads every record of a dead-letter file (see [`file::read_all`]).
    pub fn read_all(path: &std::path::Path) -> std::io::Result<(Vec<DeadLetter>, Vec<BadLine>)> {
        file::read_all(path)
    }

    /// Re-submits the task of every record to `target`; records whose task
    /// does not parse stay (written again).
    pub async fn replay(self: &Arc<Self>, target: &ReplayTarget) -> Result<Replayed, ReplayError> {
        self.sink.replay(self, target).await
    }
}

/// Replays the dead letters of one service, one replay at a time: a second
/// call while one runs is refused instead of reading the same records twice.
pub struct Replayer {
    dlq: Arc<Dlq>,
    target: ReplayTarget,
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("dlq", &self.dlq.location())
            .finish_non_exhaustive()
    }
}

impl Replayer {
    /// Replays `dlq` into `target`.
    pub fn new(dlq: Arc<Dlq>, target: ReplayTarget) -> Replayer {
        Replayer {
            dlq,
            target,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Where the records are: a path or `topic <name>`.
    pub fn location(&self) -> String {
        self.dlq.location()
    }

    /// Replays every record (see [`Dlq::replay`]); `None` when a replay is
    /// already running.
    pub async fn replay(&self) -> Option<Result<Replayed, ReplayError>> {
        let _one = self.running.try_lock().ok()?;
        Some(self.dlq.replay(&self.target).await)
    }
}
