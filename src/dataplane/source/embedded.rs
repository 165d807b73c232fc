//! The embedded source: an in-process queue of tasks.
//!
//! Input is one JSON task per line (files, stdin) or per request body line
//! (`POST /v1/ingest`). A line that does not parse, or parses into an invalid
//! task, is dead-lettered with its line number and the reason, and counts as
//! finished. Each input stream is its own partition with line numbers as
//! offsets, so the same watermark logic as Kafka's applies. The embedded
//! queue itself keeps nothing across restarts: a message abandoned at a
//! drain deadline is counted (`abandoned`) and logged, but only a durable
//! source (Kafka) can deliver it again.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;

use super::Source;
use crate::dataplane::ack::{AckTracker, Position};
use crate::dataplane::dlq::{DeadLetter, Dlq, Resubmit};
use crate::dataplane::task::{now_ms, Envelope, Task};

/// Longest input line accepted (bigger lines are dead-lettered unread).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// What feeding a stream did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FeedReport {
    /// Tasks handed to the pipeline.
    pub accepted: u64,
    /// Lines dead-lettered as malformed.
    pub rejected: u64,
}

/// The in-process queue in front of a pipeline: a cheap handle to clone
/// (each clone holds a sender of the pipeline's input, so the input closes
/// once every handle is dropped).
#[derive(Debug, Clone)]
pub struct EmbeddedSource {
    tx: mpsc::Sender<Envelope>,
    queue: Arc<EmbeddedQueue>,
}

/// What every handle of one embedded source shares: its tracker, the next
/// partition and offset, and its dead letters. It holds no sender, so it is
/// what the runtime's source list keeps ([`EmbeddedSource::queue`]).
#[derive(Debug)]
pub struct EmbeddedQueue {
    tracker: AckTracker,
    dlq: Arc<Dlq>,
    next_partition: AtomicI32,
    /// Next offset of partition 0 (single pushes); the lock keeps offsets
    /// registered in increasing order.
    push_offset: tokio::sync::Mutex<i64>,
    /// Lines dead-lettered as malformed.
    rejected: AtomicU64,
}

impl EmbeddedSource {
    /// A source feeding `tx`.
    pub fn new(tx: mpsc::Sender<Envelope>, tracker: AckTracker, dlq: Arc<Dlq>) -> EmbeddedSource {
        EmbeddedSource {
            tx,
            queue: Arc::new(EmbeddedQueue {
                tracker,
                dlq,
                next_partition: AtomicI32::new(1),
                push_offset: tokio::sync::Mutex::new(0),
                rejected: AtomicU64::new(0),
            }),
        }
    }

    /// The shared state, as a [`Source`] that holds no sender.
    pub fn queue(&self) -> Arc<EmbeddedQueue> {
        self.queue.clone()
    }

    /// The tracker (commit offsets, counts, drain).
    pub fn tracker(&self) -> &AckTracker {
        &self.queue.tracker
    }

    /// Enqueues one task on partition 0. Returns false when the pipeline is closed.
    pub async fn push(&self, task: Task, source: &str) -> bool {
        let (offset, ack) = {
            let mut next = self.queue.push_offset.lock().await;
            let offset = *next;
            let ack = self
                .tracker()
                .register(Position {
                    partition: 0,
                    offset,
                })
                .await;
            *next += 1;
            (offset, ack)
        };
        let envelope = Envelope {
            task,
            ack,
            received_ms: now_ms(),
            source: format!("{source}:0:{offset}"),
        };
        self.tx.send(envelope).await.is_ok()
    }

    /// Feeds every line of `reader` (a file or stdin) as its own partition.
    /// `name` names the stream in dead letters and payloads.
    pub async fn feed_lines<R: AsyncBufRead + Unpin>(
        &self,
        mut reader: R,
        name: &str,
    ) -> std::io::Result<FeedReport> {
        let partition = self.queue.next_partition.fetch_add(1, Ordering::Relaxed);
        let mut report = FeedReport::default();
        let mut line = Vec::new();
        let mut number: i64 = 0;
        loop {
            line.clear();
            let n = read_line_capped(&mut reader, &mut line).await?;
            if n == 0 {
                break;
            }
            number += 1;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let ack = self
                .tracker()
                .register(Position {
                    partition,
                    offset: number,
                })
                .await;
            let source = format!("{name}:{partition}:{number}");
            let parsed = if n > MAX_LINE_BYTES {
                Err(format!("line is longer than {MAX_LINE_BYTES} bytes"))
            } else {
                Task::parse(text)
            };
            match parsed {
                Ok(task) => {
                    let envelope = Envelope {
                        task,
                        ack,
                        received_ms: now_ms(),
                        source,
                    };
                    if self.tx.send(envelope).await.is_err() {
                        break; // pipeline closed: the share is dropped undone
                    }
                    report.accepted += 1;
                }
                Err(why) => {
                    let snippet: String = text.chars().take(500).collect();
                    let letter = DeadLetter::new(
                        "source",
                        "invalid",
                        format!("line {number}: {why}"),
                        serde_json::Value::String(snippet),
                        source,
                    );
                    let dlq = self.queue.dlq.clone();
                    match tokio::task::spawn_blocking(move || dlq.write(&letter)).await {
                        Ok(Ok(())) => {
                            ack.done();
                            report.rejected += 1;
                            self.queue.rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            tracing::error!(
                                line = number,
                                "cannot write dead letter for a malformed line"
                            );
                            drop(ack);
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}

#[async_trait::async_trait]
impl Resubmit for EmbeddedSource {
    async fn resubmit(&self, task: Task, source: &str) -> bool {
        self.push(task, source).await
    }
}

#[async_trait::async_trait]
impl Source for EmbeddedQueue {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn tracker(&self) -> &AckTracker {
        &self.tracker
    }

    fn stop_intake(&self) {
        // Intake stops when the handles (and their senders) are dropped.
    }

    async fn finish(&self) {}

    fn dead_lettered(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// Reads one line (up to `\n`), keeping at most [`MAX_LINE_BYTES`] + 1 bytes
/// of it in memory; returns the bytes the line had (0 at end of input).
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(out.len());
        out.extend_from_slice(&buf[..take.min(room)]);
        total += take;
        reader.consume(take);
        if done {
            return Ok(total);
        }
    }
}
