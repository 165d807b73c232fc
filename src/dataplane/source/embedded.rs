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

/// Dead letters of malformed lines written with one `fsync` at most.
pub const DEAD_LETTER_BATCH: usize = 256;

/// What feeding a stream did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FeedReport {
    /// Tasks handed to the pipeline.
    pub accepted: u64,
    /// Lines dead-lettered as malformed (the summary of a stopped feed
    /// included).
    pub rejected: u64,
    /// The line at which reading stopped, because the stream had more
    /// malformed lines than allowed or (`busy`) the pipeline had no room;
    /// it and the lines after it were not read (resend them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at_line: Option<u64>,
    /// Reading stopped because the pipeline had no room within
    /// [`FeedLimits::room_wait`] (an upstream is down or slow).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
}

/// Bounds on one fed stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedLimits {
    /// Malformed lines allowed before reading stops (see
    /// [`EmbeddedSource::feed_lines`]); `None`: no limit.
    pub max_invalid: Option<u64>,
    /// How long one line may wait for room in the pipeline before reading
    /// stops with [`FeedReport::busy`]; `None`: as long as it takes (files,
    /// stdin).
    pub room_wait: Option<std::time::Duration>,
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

    /// Feeds every line of `reader` (a file, stdin, a request body) as its
    /// own partition. `name` names the stream in dead letters and payloads.
    ///
    /// Malformed lines are dead-lettered in batches (one `fsync` for up to
    /// [`DEAD_LETTER_BATCH`] of them, written as soon as the input would
    /// wait, so none sits unwritten while the stream is idle). With
    /// `max_invalid`, the malformed line after that many is not
    /// dead-lettered itself: one summary dead letter (`too_many_invalid`)
    /// names where reading stopped, and nothing after it is read
    /// ([`FeedReport::stopped_at_line`]). With `room_wait`, a line that
    /// finds no room in the pipeline within it stops the feed the same way
    /// (`busy`), instead of holding the caller while an upstream is down.
    pub async fn feed_lines<R: AsyncBufRead + Unpin>(
        &self,
        mut reader: R,
        name: &str,
        limits: FeedLimits,
    ) -> std::io::Result<FeedReport> {
        let partition = self.queue.next_partition.fetch_add(1, Ordering::Relaxed);
        let mut report = FeedReport::default();
        let mut bad = BadLines::default();
        let read = self
            .feed_until(&mut reader, name, partition, limits, &mut report, &mut bad)
            .await;
        // Whatever ended the feed, the dead letters gathered so far are written.
        self.write_bad(&mut bad, &mut report).await;
        read.map(|()| report)
    }

    async fn feed_until<R: AsyncBufRead + Unpin>(
        &self,
        reader: &mut R,
        name: &str,
        partition: i32,
        limits: FeedLimits,
        report: &mut FeedReport,
        bad: &mut BadLines,
    ) -> std::io::Result<()> {
        let mut line = Vec::new();
        let mut number: i64 = 0;
        let mut invalid: u64 = 0;
        loop {
            if !bad.letters.is_empty()
                && (bad.letters.len() >= DEAD_LETTER_BATCH || would_wait(reader).await)
            {
                self.write_bad(bad, report).await;
            }
            line.clear();
            let n = read_line_capped(reader, &mut line).await?;
            if n == 0 {
                return Ok(());
            }
            number += 1;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let position = Position {
                partition,
                offset: number,
            };
            let source = format!("{name}:{partition}:{number}");
            let parsed = if n > MAX_LINE_BYTES {
                Err(format!("line is longer than {MAX_LINE_BYTES} bytes"))
            } else {
                Task::parse(text)
            };
            let busy = |report: &mut FeedReport| -> std::io::Result<()> {
                report.stopped_at_line = Some(number as u64);
                report.busy = true;
                Ok(())
            };
            let why = match parsed {
                Ok(task) => {
                    // A task needs room in the pipeline's input first.
                    let slot = match room(limits.room_wait, self.tx.reserve()).await {
                        None => return busy(report),
                        Some(Err(_)) => return Ok(()), // pipeline closed
                        Some(Ok(slot)) => slot,
                    };
                    let Some(ack) = self.share(position, limits, bad, report).await else {
                        return busy(report);
                    };
                    slot.send(Envelope {
                        task,
                        ack,
                        received_ms: now_ms(),
                        source,
                    });
                    report.accepted += 1;
                    continue;
                }
                Err(why) => why,
            };
            let Some(ack) = self.share(position, limits, bad, report).await else {
                return busy(report);
            };
            let snippet = serde_json::Value::String(text.chars().take(500).collect());
            invalid += 1;
            if let Some(max) = limits.max_invalid.filter(|&max| invalid > max) {
                let message = format!(
                    "line {number}: more than {max} malformed lines in {name}; stopped reading here, this line and the ones after it were not read ({why})"
                );
                let letter =
                    DeadLetter::new("source", "too_many_invalid", message, snippet, source);
                bad.push(letter, ack);
                report.stopped_at_line = Some(number as u64);
                return Ok(());
            }
            let message = format!("line {number}: {why}");
            bad.push(
                DeadLetter::new("source", "invalid", message, snippet, source),
                ack,
            );
        }
    }

    /// Registers the share of the line at `position`. When
    /// `source.max_in_flight` is reached, the gathered dead letters (which
    /// hold shares too) are written first, then it waits at most
    /// `room_wait`; `None` when no share came in time.
    async fn share(
        &self,
        position: Position,
        limits: FeedLimits,
        bad: &mut BadLines,
        report: &mut FeedReport,
    ) -> Option<crate::dataplane::ack::Ack> {
        if let Some(ack) = self.tracker().try_register(position) {
            return Some(ack);
        }
        self.write_bad(bad, report).await;
        room(limits.room_wait, self.tracker().register(position)).await
    }

    /// Writes the gathered dead letters durably, then finishes their shares;
    /// if the write fails, the shares are abandoned (never acknowledged
    /// without their record).
    async fn write_bad(&self, bad: &mut BadLines, report: &mut FeedReport) {
        if bad.letters.is_empty() {
            return;
        }
        let letters = std::mem::take(&mut bad.letters);
        let acks = std::mem::take(&mut bad.acks);
        let n = letters.len() as u64;
        let dlq = self.queue.dlq.clone();
        match tokio::task::spawn_blocking(move || dlq.write_batch(&letters)).await {
            Ok(Ok(())) => {
                for ack in acks {
                    ack.done();
                }
                report.rejected += n;
                self.queue.rejected.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                tracing::error!(lines = n, error = %e, "cannot write the dead letters of malformed lines");
            }
            Err(e) => {
                tracing::error!(lines = n, error = %e, "writing the dead letters of malformed lines failed");
            }
        }
    }
}

/// Malformed lines whose dead letters are not written yet, with their shares.
#[derive(Default)]
struct BadLines {
    letters: Vec<DeadLetter>,
    acks: Vec<crate::dataplane::ack::Ack>,
}

impl BadLines {
    fn push(&mut self, letter: DeadLetter, ack: crate::dataplane::ack::Ack) {
        self.letters.push(letter);
        self.acks.push(ack);
    }
}

/// Waits for `f`, at most `wait`; `None` when it did not finish in time.
async fn room<T>(
    wait: Option<std::time::Duration>,
    f: impl std::future::Future<Output = T>,
) -> Option<T> {
    match wait {
        Some(wait) => tokio::time::timeout(wait, f).await.ok(),
        None => Some(f.await),
    }
}

/// Whether reading the next line would wait for input (an idle stdin, a
/// slow client): then what was gathered is written first.
async fn would_wait<R: AsyncBufRead + Unpin>(reader: &mut R) -> bool {
    std::future::poll_fn(|cx| {
        let waits = std::pin::Pin::new(&mut *reader)
            .poll_fill_buf(cx)
            .is_pending();
        std::task::Poll::Ready(waits)
    })
    .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::dlq::DeadLetterSink;
    use crate::knobs::Knobs;
    use crate::live::LiveConfig;
    use std::sync::Mutex;

    /// Keeps records in memory and counts the durable writes.
    #[derive(Debug, Default)]
    struct Counting {
        letters: Mutex<Vec<DeadLetter>>,
        writes: AtomicU64,
    }

    #[async_trait::async_trait]
    impl DeadLetterSink for Arc<Counting> {
        fn write(&self, letter: &DeadLetter) -> std::io::Result<()> {
            self.write_batch(std::slice::from_ref(letter))
        }
        fn write_batch(&self, letters: &[DeadLetter]) -> std::io::Result<()> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.letters.lock().unwrap().extend_from_slice(letters);
            Ok(())
        }
        fn location(&self) -> String {
            "memory".into()
        }
        async fn replay(
            &self,
            _: &Arc<Dlq>,
            _: &crate::dataplane::dlq::ReplayTarget,
        ) -> Result<crate::dataplane::dlq::Replayed, crate::dataplane::dlq::ReplayError> {
            Ok(Default::default())
        }
    }

    fn source(max_in_flight: u32) -> (EmbeddedSource, mpsc::Receiver<Envelope>, Arc<Counting>) {
        let mut knobs = Knobs::default();
        knobs.source.max_in_flight = max_in_flight;
        let live = LiveConfig::new(knobs).unwrap();
        let sink = Arc::new(Counting::default());
        let (tx, rx) = mpsc::channel(4096);
        let src = EmbeddedSource::new(tx, AckTracker::new(&live), Arc::new(Dlq::new(sink.clone())));
        (src, rx, sink)
    }

    fn body(good: usize, bad: usize) -> String {
        let mut out = String::new();
        for i in 0..bad {
            out.push_str(&format!("{{\"type\": \"document\", \"id\": {i}\n"));
        }
        for i in 0..good {
            out.push_str(&format!(
                "{{\"type\": \"document\", \"id\": \"d{i}\", \"text\": \"hello {i}\"}}\n"
            ));
        }
        out
    }

    #[tokio::test]
    async fn malformed_lines_are_written_in_batches_and_every_share_finishes() {
        let (src, mut rx, sink) = source(10_000);
        let report = src
            .feed_lines(body(3, 1000).as_bytes(), "t", FeedLimits::default())
            .await
            .unwrap();
        assert_eq!((report.accepted, report.rejected), (3, 1000));
        assert_eq!(report.stopped_at_line, None);
        assert_eq!(sink.letters.lock().unwrap().len(), 1000);
        let writes = sink.writes.load(Ordering::Relaxed);
        assert!(
            writes <= 1000_u64.div_ceil(DEAD_LETTER_BATCH as u64),
            "{writes} writes"
        );
        for _ in 0..3 {
            rx.recv().await.unwrap().ack.done();
        }
        let c = src.tracker().counts();
        assert_eq!((c.registered, c.finished, c.abandoned), (1003, 1003, 0));
    }

    #[tokio::test]
    async fn batching_never_waits_on_its_own_shares() {
        // Fewer shares in flight than a batch: the batch is written when
        // the bound is reached instead of waiting for itself.
        let (src, _rx, sink) = source(5);
        let fed = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            src.feed_lines(body(0, 40).as_bytes(), "t", FeedLimits::default()),
        )
        .await
        .expect("no deadlock on max_in_flight")
        .unwrap();
        assert_eq!(fed.rejected, 40);
        assert_eq!(sink.letters.lock().unwrap().len(), 40);
    }

    #[tokio::test]
    async fn reading_stops_after_max_invalid_with_one_summary() {
        let (src, mut rx, sink) = source(10_000);
        let mut input = body(2, 0);
        input.push_str(&body(5, 150));
        let report = src
            .feed_lines(
                input.as_bytes(),
                "ingest",
                FeedLimits {
                    max_invalid: Some(100),
                    ..FeedLimits::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(report.accepted, 2, "the tasks before the stop");
        assert_eq!(report.stopped_at_line, Some(103));
        assert_eq!(report.rejected, 101);
        let letters = sink.letters.lock().unwrap().clone();
        assert_eq!(letters.len(), 101);
        assert!(letters[..100].iter().all(|l| l.error_type == "invalid"));
        let summary = &letters[100];
        assert_eq!(summary.error_type, "too_many_invalid");
        assert!(
            summary.message.starts_with("line 103: more than 100"),
            "{}",
            summary.message
        );
        for _ in 0..2 {
            rx.recv().await.unwrap().ack.done();
        }
        assert!(rx.try_recv().is_err(), "nothing after the stop was read");
        let c = src.tracker().counts();
        assert_eq!((c.registered, c.finished, c.abandoned), (103, 103, 0));
    }

    /// A reader that hands out `first`, then waits forever.
    struct Idle(Option<Vec<u8>>, Vec<u8>);

    impl tokio::io::AsyncRead for Idle {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            unreachable!("read through AsyncBufRead")
        }
    }

    impl AsyncBufRead for Idle {
        fn poll_fill_buf(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<&[u8]>> {
            let this = self.get_mut();
            if let Some(first) = this.0.take() {
                this.1 = first;
            }
            if this.1.is_empty() {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(Ok(&this.1))
            }
        }
        fn consume(self: std::pin::Pin<&mut Self>, amt: usize) {
            self.get_mut().1.drain(..amt);
        }
    }

    #[tokio::test]
    async fn an_idle_stream_does_not_hold_back_its_dead_letters() {
        let (src, _rx, sink) = source(10_000);
        let reader = Idle(Some(body(0, 3).into_bytes()), Vec::new());
        let src2 = src.clone();
        let feed = tokio::spawn(async move {
            src2.feed_lines(reader, "stdin", FeedLimits::default())
                .await
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sink.letters.lock().unwrap().len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "dead letters held while the input idles"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(src.tracker().counts().finished, 3);
        feed.abort();
    }
}
