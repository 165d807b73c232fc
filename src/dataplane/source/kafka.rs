//! The Kafka source: a consumer group over task topics and Debezium topics,
//! with at-least-once delivery.
//!
//! **Delivery.** Auto-commit is off and offsets are never stored from
//! messages. Every message is registered with the [`AckTracker`] before it
//! enters the pipeline; the offset committed for a partition is the tracker's
//! watermark: one past the highest offset below which every message is
//! finished (indexed, skipped on purpose or dead-lettered, docs/ARCHITECTURE.md §2).
//! Commits happen every `commit_interval_ms`, when partitions are revoked,
//! and when the source stops. A crash therefore redelivers whatever was not
//! finished; the index's deterministic chunk ids make the replay an upsert.
//!
//! **Ordering.** Messages are handed to the pipeline in partition order, and
//! task messages are keyed by document id, so every version of a document
//! arrives in order (the pipeline keeps the newest). A document or delete
//! task whose key differs from its id is dead-lettered: it would break that
//! order.
//!
//! **Bounded intake.** A dedicated thread polls the consumer (so rebalance
//! callbacks and synchronous commits never block the async runtime). It takes
//! a `source.max_in_flight` slot and a pipeline channel slot before it hands
//! a message on. Messages polled while there is no room wait in a small
//! queue; once it holds [`PENDING_SOFT_LIMIT`] messages or
//! [`PENDING_SOFT_BYTES`] the thread polls only every [`THROTTLED_POLL`]
//! (enough for group membership, rebalances and commits), so librdkafka's
//! own prefetch queue, bounded by `queued.max.messages.kbytes` (8 MiB unless
//! set), holds the rest and its fetcher stops when that is full. Only a
//! pipeline stalled long enough for the queue to reach
//! [`PENDING_HARD_LIMIT`] messages or [`PENDING_HARD_BYTES`] pauses every
//! assigned partition (which makes librdkafka drop and later refetch its
//! prefetched messages); they resume once the queue is back under both soft
//! limits. The byte bounds keep a topic of large messages from filling
//! memory at the message-count bounds. Pausing on every
//! moment without room, as the first version did, threw the prefetch away
//! many times a second under a backlog and cost a quarter of the
//! throughput.
//!
//! **Rebalances.** On revoke, the source stops taking work from the lost
//! partitions (their queued messages are dropped unregistered), waits up to
//! [`REVOKE_WAIT`] for their in-flight messages, commits the watermark (never
//! past unfinished work) and forgets them; in-flight work that finishes later
//! counts for nothing, and the new owner redoes it. Each assignment gets a
//! fresh tracker lane, so late acknowledgements can never move a newer
//! assignment's watermark.
//!
//! **Bad messages** (not JSON, not a task, a Debezium event that does not fit
//! its table mapping, an unknown op) are dead-lettered with the reason and
//! their topic, partition and offset, then count as finished.
//!
//! **Lag** per partition is `end - committed`, where `end` is the larger of
//! the broker's high watermark and one past the highest offset seen (some
//! Kafka-compatible brokers report stale or wrong high watermarks), and
//! `committed` is the watermark (or the group's committed offset before
//! anything was consumed). It is exported as `freshet_source_lag`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::cdc::CdcTable;
use super::Source;
use crate::dataplane::ack::{AckTracker, Position};
use crate::dataplane::dlq::{DeadLetter, Dlq};
use crate::dataplane::task::{now_ms, Envelope, Task};
use crate::kafka::{client_config, log_error, log_line, source_ref, KafkaError};
use crate::metrics;
use crate::settings::KafkaSettings;

/// Longest a revoke waits for the lost partitions' in-flight messages.
pub const REVOKE_WAIT: Duration = Duration::from_secs(5);

/// Polled messages waiting for room beyond which polling slows down to one
/// poll per [`THROTTLED_POLL`].
pub const PENDING_SOFT_LIMIT: usize = 256;

/// Polled messages waiting for room at which every assigned partition pauses.
pub const PENDING_HARD_LIMIT: usize = 1024;

/// Bytes of polled messages (keys and payloads) waiting for room beyond
/// which polling slows down, like [`PENDING_SOFT_LIMIT`]: a few large
/// messages weigh as much as many small ones.
pub const PENDING_SOFT_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of polled messages waiting for room at which every assigned
/// partition pauses, like [`PENDING_HARD_LIMIT`]. With librdkafka's own
/// prefetch bound (`queued.max.messages.kbytes`), this bounds what a stalled
/// pipeline keeps of a topic in memory.
pub const PENDING_HARD_BYTES: usize = 64 * 1024 * 1024;

/// How full the pending queue is: what the poll loop does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pressure {
    /// Room: poll at full speed, resume paused partitions.
    Low,
    /// At a soft limit: poll only every [`THROTTLED_POLL`], stay as paused
    /// as it is.
    Throttle,
    /// At a hard limit: pause every assigned partition.
    Pause,
}

/// Polled messages waiting for room, and their bytes.
#[derive(Default)]
struct PendingQueue {
    items: VecDeque<Pending>,
    bytes: usize,
}

impl PendingQueue {
    fn push_back(&mut self, item: Pending) {
        self.bytes += item.bytes;
        self.items.push_back(item);
    }

    fn front(&self) -> Option<&Pending> {
        self.items.front()
    }

    fn pop_front(&mut self) -> Option<Pending> {
        let item = self.items.pop_front()?;
        self.bytes -= item.bytes;
        Some(item)
    }

    fn retain(&mut self, keep: impl Fn(&Pending) -> bool) {
        self.items.retain(|p| keep(p));
        self.bytes = self.items.iter().map(|p| p.bytes).sum();
    }

    fn pressure(&self) -> Pressure {
        let (n, bytes) = (self.items.len(), self.bytes);
        if n >= PENDING_HARD_LIMIT || bytes >= PENDING_HARD_BYTES {
            Pressure::Pause
        } else if n >= PENDING_SOFT_LIMIT || bytes >= PENDING_SOFT_BYTES {
            Pressure::Throttle
        } else {
            Pressure::Low
        }
    }
}

/// Poll interval while the pending queue is at its soft limit.
pub const THROTTLED_POLL: Duration = Duration::from_millis(100);

/// Largest raw message kept in a dead letter.
const MAX_RAW_BYTES: usize = 64 * 1024;

const RUN: u8 = 0;
const DRAIN: u8 = 1;
const FINISH: u8 = 2;

/// How the messages of one topic are read.
#[derive(Debug)]
enum Decoder {
    Tasks,
    Cdc(Box<CdcTable>),
}

/// A message that could not become a task.
#[derive(Debug)]
struct Bad {
    class: &'static str,
    reason: String,
    raw: String,
}

#[derive(Debug)]
struct Pending {
    topic: String,
    partition: i32,
    lane: i32,
    offset: i64,
    event_ms: u64,
    /// Key and payload bytes, counted against [`PENDING_HARD_BYTES`].
    bytes: usize,
    decoded: Result<Task, Bad>,
}

#[derive(Debug, Clone, Copy)]
struct Lane {
    id: i32,
    committed: Option<i64>,
    max_seen: Option<i64>,
}

/// Counters of the source (tests, logs).
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// Messages polled from assigned partitions.
    pub received: AtomicU64,
    /// Tasks handed to the pipeline.
    pub delivered: AtomicU64,
    /// Bad messages dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Successful offset commits.
    pub commits: AtomicU64,
    /// Rebalances (assignments and revocations).
    pub rebalances: AtomicU64,
    /// Times every assigned partition was paused because the pipeline had no
    /// room for [`PENDING_HARD_LIMIT`] polled messages (or intake stopped).
    pub pauses: AtomicU64,
}

struct Shared {
    settings: KafkaSettings,
    tracker: AckTracker,
    dlq: Arc<Dlq>,
    decoders: HashMap<String, Decoder>,
    state: AtomicU8,
    lanes: Mutex<BTreeMap<(String, i32), Lane>>,
    next_lane: AtomicI32,
    pending: Mutex<PendingQueue>,
    assignment_gen: AtomicU64,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    stats: KafkaStats,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaShared").finish_non_exhaustive()
    }
}

struct Ctx {
    shared: Arc<Shared>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(level, fac, message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        log_error(&error, reason);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.shared.revoke(consumer, tpl),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.shared.assign(consumer, tpl);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.shared.committed(offsets),
            Err(e) => {
                tracing::warn!(error = %e, "kafka offset commit failed; retried at the next interval")
            }
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl Shared {
    fn lanes(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), Lane>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn assign(&self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let parts = partitions_of(tpl);
        // Where each partition starts, so lag is right before the first message.
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .ok();
        let mut lanes = self.lanes();
        for (topic, partition) in &parts {
            let start = committed.as_ref().and_then(|c| {
                match c.find_partition(topic, *partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                }
            });
            lanes.insert(
                (topic.clone(), *partition),
                Lane {
                    id: self.next_lane.fetch_add(1, Ordering::Relaxed),
                    committed: start,
                    max_seen: None,
                },
            );
            metrics::gauge!(metrics::SOURCE_PARTITION_ASSIGNED, "topic" => topic.clone(), "partition" => partition.to_string()).set(1.0);
        }
        drop(lanes);
        self.assignment_gen.fetch_add(1, Ordering::AcqRel);
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        tracing::info!(partitions = ?parts, "kafka partitions assigned");
    }

    fn revoke(&self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let parts = partitions_of(tpl);
        let revoked: Vec<((String, i32), Lane)> = {
            let lanes = self.lanes();
            parts
                .iter()
                .filter_map(|k| lanes.get(k).map(|l| (k.clone(), *l)))
                .collect()
        };
        // Stop taking work from them: what waits unregistered is dropped
        // (the next owner reads it from the committed offset).
        {
            let ids: Vec<i32> = revoked.iter().map(|(_, l)| l.id).collect();
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|p| !ids.contains(&p.lane));
        }
        // Give in-flight work a moment to finish, so the next owner redoes less.
        let deadline = Instant::now() + REVOKE_WAIT;
        while Instant::now() < deadline
            && revoked.iter().any(|(_, l)| self.tracker.open_in(l.id) > 0)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut commit = TopicPartitionList::new();
        for ((topic, partition), lane) in &revoked {
            if let Some(offset) = self.tracker.commit_offset(lane.id) {
                if lane.committed.is_none_or(|c| offset > c) {
                    let _ = commit.add_partition_offset(topic, *partition, Offset::Offset(offset));
                }
            }
        }
        if commit.count() > 0 {
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "commit on revoke failed; the next owner redoes the finished work")
                }
            }
        }
        {
            let mut lanes = self.lanes();
            let mut lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
            for ((topic, partition), lane) in &revoked {
                lanes.remove(&(topic.clone(), *partition));
                lag.remove(&(topic.clone(), *partition));
                self.tracker.forget_partition(lane.id);
                metrics::gauge!(metrics::SOURCE_PARTITION_ASSIGNED, "topic" => topic.clone(), "partition" => partition.to_string()).set(0.0);
                metrics::gauge!(metrics::SOURCE_LAG, "topic" => topic.clone(), "partition" => partition.to_string()).set(0.0);
            }
        }
        self.assignment_gen.fetch_add(1, Ordering::AcqRel);
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        tracing::info!(partitions = ?parts, "kafka partitions revoked");
    }

    fn committed(&self, offsets: &TopicPartitionList) {
        let mut lanes = self.lanes();
        for e in offsets.elements() {
            if let (Offset::Offset(o), Ok(())) = (e.offset(), e.error()) {
                if let Some(lane) = lanes.get_mut(&(e.topic().to_string(), e.partition())) {
                    lane.committed = Some(lane.committed.map_or(o, |c| c.max(o)));
                }
            }
        }
    }

    /// Commits every assigned partition's watermark that moved.
    fn commit(&self, consumer: &BaseConsumer<Ctx>, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), lane) in self.lanes().iter() {
            if let Some(offset) = self.tracker.commit_offset(lane.id) {
                if lane.committed.is_none_or(|c| offset > c) {
                    let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset));
                }
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                if matches!(mode, CommitMode::Sync) {
                    self.committed(&tpl);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "kafka offset commit failed; retried at the next interval")
            }
        }
    }

    /// Decodes a polled message and queues it for the pipeline.
    fn accept(&self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let topic = m.topic();
        let (partition, offset) = (m.partition(), m.offset());
        let lane = {
            let mut lanes = self.lanes();
            let Some(lane) = lanes.get_mut(&(topic.to_string(), partition)) else {
                tracing::debug!(
                    topic,
                    partition,
                    offset,
                    "message of a partition no longer assigned; skipped"
                );
                return;
            };
            lane.max_seen = Some(lane.max_seen.map_or(offset, |s| s.max(offset)));
            lane.id
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let event_ms = match m.timestamp().to_millis() {
            Some(t) if t > 0 && (t as u64) <= now => t as u64,
            _ => now,
        };
        let decoded = match self.decoders.get(topic) {
            Some(Decoder::Tasks) => decode_task(m.key(), m.payload()),
            Some(Decoder::Cdc(table)) => table.decode(m.key(), m.payload()).map_err(|e| Bad {
                class: e.class(),
                reason: e.to_string(),
                raw: raw_text(m.payload()),
            }),
            None => Err(Bad {
                class: "invalid",
                reason: format!("topic `{topic}` is not configured"),
                raw: raw_text(m.payload()),
            }),
        };
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Pending {
                topic: topic.to_string(),
                partition,
                lane,
                offset,
                event_ms,
                bytes: m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len),
                decoded,
            });
    }

    /// Hands queued messages to the pipeline while there is room; returns
    /// false when the pipeline is closed.
    fn deliver(&self, tx: &mpsc::Sender<Envelope>) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut open = true;
        while let Some(front) = pending.front() {
            let position = Position {
                partition: front.lane,
                offset: front.offset,
            };
            if front.decoded.is_ok() {
                let permit = match tx.try_reserve() {
                    Ok(permit) => permit,
                    Err(mpsc::error::TrySendError::Full(())) => break,
                    Err(mpsc::error::TrySendError::Closed(())) => {
                        open = false;
                        break;
                    }
                };
                let Some(ack) = self.tracker.try_register(position) else {
                    break;
                };
                let item = pending.pop_front().expect("front exists");
                let Ok(task) = item.decoded else {
                    unreachable!("checked above")
                };
                permit.send(Envelope {
                    task,
                    ack,
                    received_ms: item.event_ms,
                    source: source_ref(&item.topic, item.partition, item.offset),
                });
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            } else {
                let Some(ack) = self.tracker.try_register(position) else {
                    break;
                };
                let item = pending.pop_front().expect("front exists");
                let Err(bad) = item.decoded else {
                    unreachable!("checked above")
                };
                metrics::counter!(metrics::TASKS_TOTAL, "type" => "invalid").increment(1);
                let letter = DeadLetter::new(
                    "source",
                    bad.class,
                    bad.reason,
                    serde_json::Value::String(bad.raw),
                    source_ref(&item.topic, item.partition, item.offset),
                );
                let dlq = self.dlq.clone();
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                self.runtime.spawn(async move {
                    match tokio::task::spawn_blocking(move || dlq.write(&letter)).await {
                        Ok(Ok(())) => ack.done(),
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "cannot write the dead letter of a bad kafka message; it will be redelivered");
                            drop(ack);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "dead-letter writer failed; the message will be redelivered");
                            drop(ack);
                        }
                    }
                });
            }
        }
        open
    }

    fn pending_pressure(&self) -> (usize, Pressure) {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        (pending.items.len(), pending.pressure())
    }

    fn update_lag(&self, consumer: &BaseConsumer<Ctx>) {
        let lanes: Vec<((String, i32), Lane)> =
            self.lanes().iter().map(|(k, l)| (k.clone(), *l)).collect();
        let mut out = BTreeMap::new();
        for ((topic, partition), lane) in lanes {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, Duration::from_millis(500))
                .unwrap_or((-1, -1));
            let lag = lag_of(
                (low, high),
                lane.max_seen,
                self.tracker.commit_offset(lane.id).or(lane.committed),
                self.settings.auto_offset_reset,
            );
            metrics::gauge!(metrics::SOURCE_LAG, "topic" => topic.clone(), "partition" => partition.to_string()).set(lag as f64);
            out.insert((topic, partition), lag);
        }
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = out;
    }
}

/// Messages of a partition not yet finished: log end minus the commit
/// base, never negative. The log end is the larger of the broker's high
/// watermark and one past the highest offset seen, because some brokers
/// (tansu 0.6) report a high watermark that counts record batches. Before
/// anything is finished or committed, the base is where the group starts.
fn lag_of(
    (low, high): (i64, i64),
    max_seen: Option<i64>,
    finished_to: Option<i64>,
    reset: crate::settings::OffsetReset,
) -> i64 {
    let end = high.max(max_seen.map_or(-1, |s| s + 1));
    let base = finished_to.unwrap_or(match reset {
        crate::settings::OffsetReset::Earliest => low.max(0),
        crate::settings::OffsetReset::Latest => end,
    });
    (end - base).max(0)
}

fn raw_text(payload: Option<&[u8]>) -> String {
    match payload {
        None => String::new(),
        Some(bytes) => {
            let cut = &bytes[..bytes.len().min(MAX_RAW_BYTES)];
            String::from_utf8_lossy(cut).into_owned()
        }
    }
}

/// A task message: one JSON task; document and delete tasks keyed by their id.
fn decode_task(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Task, Bad> {
    let bad = |class: &'static str, reason: String| Bad {
        class,
        reason,
        raw: raw_text(value),
    };
    let Some(bytes) = value else {
        return Err(bad(
            "invalid",
            "null value (a tombstone) on a task topic; a task message is one JSON object".into(),
        ));
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|e| bad("parse", format!("the value is not UTF-8 ({e})")))?;
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(bad("parse", format!("not JSON: {e}")));
    }
    let task = Task::parse(text).map_err(|e| bad("invalid", e))?;
    if let (Task::Document { id, .. } | Task::Delete { id, .. }, Some(key)) = (&task, key) {
        if !key.is_empty() && key != id.as_bytes() {
            return Err(bad(
                "invalid",
                format!(
                    "message key `{}` differs from the document id `{id}`: key document tasks by their id so that every version stays in order",
                    String::from_utf8_lossy(&key[..key.len().min(200)])
                ),
            ));
        }
    }
    Ok(task)
}

/// The running Kafka source.
#[derive(Debug)]
pub struct KafkaSource {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl KafkaSource {
    /// Connects, subscribes to every input topic of `k` in group
    /// `k.group_id`, and starts feeding `tx`. Fails when the brokers cannot
    /// be reached; topics that do not exist yet are waited for (and logged).
    pub async fn start(
        k: &KafkaSettings,
        client_id: &str,
        tracker: AckTracker,
        dlq: Arc<Dlq>,
        tx: mpsc::Sender<Envelope>,
    ) -> Result<KafkaSource, KafkaError> {
        let mut decoders = HashMap::new();
        for t in &k.task_topics {
            decoders.insert(t.clone(), Decoder::Tasks);
        }
        for (table, mapping) in &k.tables {
            decoders.insert(
                mapping.topic.clone(),
                Decoder::Cdc(Box::new(CdcTable::new(table, mapping))),
            );
        }
        let shared = Arc::new(Shared {
            settings: k.clone(),
            tracker,
            dlq,
            decoders,
            state: AtomicU8::new(RUN),
            lanes: Mutex::new(BTreeMap::new()),
            next_lane: AtomicI32::new(1),
            pending: Mutex::new(PendingQueue::default()),
            assignment_gen: AtomicU64::new(0),
            lag: Mutex::new(BTreeMap::new()),
            stats: KafkaStats::default(),
            runtime: tokio::runtime::Handle::current(),
        });
        let mut config = client_config(k, client_id);
        config
            .set("group.id", &k.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", k.auto_offset_reset.as_str())
            .set("session.timeout.ms", k.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (k.session_timeout_ms / 3).max(100).to_string(),
            );
        if k.static_membership && !k.properties.contains_key("group.instance.id") {
            // Static membership: a restarted instance (same id) takes its
            // old place at once, without waiting for the dead member's
            // session to expire (tansu 0.6 never expires it).
            config.set("group.instance.id", &k.instance_id);
        }
        if !k.properties.contains_key("fetch.wait.max.ms") {
            // Freshness: do not let an idle fetch hold new messages back
            // (tansu 0.6 holds every fetch about this long, data or not).
            config.set("fetch.wait.max.ms", "20");
        }
        if !k.properties.contains_key("queued.max.messages.kbytes") {
            // The prefetch queue that holds messages while the pipeline has
            // no room (module docs, "Bounded intake").
            config.set("queued.max.messages.kbytes", "8192");
        }
        let consumer: BaseConsumer<Ctx> = config
            .create_with_context(Ctx {
                shared: shared.clone(),
            })
            .map_err(|source| KafkaError::Client {
                what: "consumer",
                brokers: k.brokers.clone(),
                source,
            })?;
        let topics = k.input_topics();
        let brokers = k.brokers.clone();
        let consumer = tokio::task::spawn_blocking(move || -> Result<BaseConsumer<Ctx>, KafkaError> {
            let metadata = consumer
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(|source| KafkaError::Unreachable { brokers, source })?;
            for t in &topics {
                let present = metadata
                    .topics()
                    .iter()
                    .any(|mt| mt.name() == t && mt.error().is_none() && !mt.partitions().is_empty());
                if !present {
                    tracing::warn!(topic = %t, "input topic does not exist yet; freshet consumes it once it is created");
                }
            }
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&names)
                .map_err(|source| KafkaError::Subscribe {
                    topics: format!("{names:?}"),
                    source,
                })?;
            Ok(consumer)
        })
        .await
        .map_err(|e| KafkaError::Thread(std::io::Error::other(e)))??;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("freshet-kafka".into())
            .spawn(move || poll_loop(consumer, thread_shared, tx))
            .map_err(KafkaError::Thread)?;
        tracing::info!(brokers = %k.brokers, group = %k.group_id, topics = ?k.input_topics(), "kafka source started");
        Ok(KafkaSource {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The tracker of the source's messages.
    pub fn tracker(&self) -> &AckTracker {
        &self.shared.tracker
    }

    /// Counters.
    pub fn stats(&self) -> &KafkaStats {
        &self.shared.stats
    }

    /// Partitions assigned now.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.shared.lanes().keys().cloned().collect()
    }

    /// The last computed lag per partition (every `lag_interval_ms`).
    pub fn lag(&self) -> BTreeMap<(String, i32), i64> {
        self.shared
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The offsets this source committed per partition (assigned ones).
    pub fn committed(&self) -> BTreeMap<(String, i32), i64> {
        self.shared
            .lanes()
            .iter()
            .filter_map(|(k, l)| l.committed.map(|c| (k.clone(), c)))
            .collect()
    }

    /// Stops handing messages to the pipeline (partitions are paused; the
    /// group membership and commits go on). Call before draining.
    pub fn stop_intake(&self) {
        let _ = self
            .shared
            .state
            .compare_exchange(RUN, DRAIN, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Commits what finished, leaves the group and ends the thread. Call
    /// after the pipeline drained.
    pub async fn finish(&self) {
        self.stop_intake();
        self.shared.state.store(FINISH, Ordering::Release);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

#[async_trait::async_trait]
impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn tracker(&self) -> &AckTracker {
        KafkaSource::tracker(self)
    }

    fn stop_intake(&self) {
        KafkaSource::stop_intake(self)
    }

    async fn finish(&self) {
        KafkaSource::finish(self).await
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        KafkaSource::assignment(self)
    }

    fn lag(&self) -> BTreeMap<(String, i32), i64> {
        KafkaSource::lag(self)
    }

    fn dead_lettered(&self) -> u64 {
        self.stats().dead_lettered.load(Ordering::Relaxed)
    }
}

fn poll_loop(consumer: BaseConsumer<Ctx>, shared: Arc<Shared>, tx: mpsc::Sender<Envelope>) {
    let commit_every = Duration::from_millis(shared.settings.commit_interval_ms);
    let lag_every = Duration::from_millis(shared.settings.lag_interval_ms);
    let mut last_commit = Instant::now();
    let mut last_lag = Instant::now();
    let mut last_poll = Instant::now();
    let mut paused_gen: Option<u64> = None;
    let mut tx = Some(tx);
    loop {
        let state = shared.state.load(Ordering::Acquire);
        if state == FINISH {
            break;
        }
        let intake = state == RUN;
        if intake {
            if let Some(sender) = &tx {
                if !shared.deliver(sender) {
                    tracing::warn!("the pipeline closed; the kafka source stops taking messages");
                    shared.state.store(DRAIN, Ordering::Release);
                }
            }
        } else if tx.is_some() {
            // Let the pipeline see its input close once nothing more comes.
            tx = None;
        }
        let (waiting, pressure) = shared.pending_pressure();
        let want_pause = !intake || pressure == Pressure::Pause;
        let generation = shared.assignment_gen.load(Ordering::Acquire);
        if want_pause && paused_gen != Some(generation) {
            if let Ok(assigned) = consumer.assignment() {
                if let Err(e) = consumer.pause(&assigned) {
                    tracing::warn!(error = %e, "pausing kafka partitions failed");
                }
            }
            shared.stats.pauses.fetch_add(1, Ordering::Relaxed);
            paused_gen = Some(generation);
        } else if !want_pause && paused_gen.is_some() && pressure == Pressure::Low {
            if let Ok(assigned) = consumer.assignment() {
                if let Err(e) = consumer.resume(&assigned) {
                    tracing::warn!(error = %e, "resuming kafka partitions failed");
                }
            }
            paused_gen = None;
        }
        let throttled = intake && pressure >= Pressure::Throttle;
        if throttled && last_poll.elapsed() < THROTTLED_POLL {
            // No room downstream: let librdkafka's bounded prefetch queue hold
            // the messages instead of polling them into ours.
            std::thread::sleep(Duration::from_millis(2));
        } else {
            let timeout = if throttled {
                Duration::ZERO
            } else if intake && waiting > 0 {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(100)
            };
            last_poll = Instant::now();
            match consumer.poll(timeout) {
                Some(Ok(message)) => shared.accept(&message),
                Some(Err(e)) => {
                    metrics::record_error("source", "upstream", &format_args!("kafka poll: {e}"))
                }
                None => {}
            }
        }
        if last_commit.elapsed() >= commit_every {
            shared.commit(&consumer, CommitMode::Async);
            last_commit = Instant::now();
        }
        if last_lag.elapsed() >= lag_every {
            shared.update_lag(&consumer);
            last_lag = Instant::now();
        }
    }
    shared.commit(&consumer, CommitMode::Sync);
    shared.update_lag(&consumer);
    // Leave the group now (the revoke callback commits once more), so the
    // partitions move to another instance without waiting for the session
    // to time out.
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shared.lanes().is_empty() && Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    drop(consumer);
    tracing::info!("kafka source stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(bytes: usize) -> Pending {
        Pending {
            topic: "t".into(),
            partition: 0,
            lane: 1,
            offset: 0,
            event_ms: 0,
            bytes,
            decoded: Err(Bad {
                class: "invalid",
                reason: String::new(),
                raw: String::new(),
            }),
        }
    }

    #[test]
    fn the_pending_queue_is_bounded_in_bytes_as_well_as_messages() {
        let mut q = PendingQueue::default();
        // Few large messages: under the count limits, over the byte limits.
        for _ in 0..15 {
            q.push_back(pending(1024 * 1024));
        }
        assert_eq!(q.pressure(), Pressure::Low);
        q.push_back(pending(1024 * 1024));
        assert_eq!(q.pressure(), Pressure::Throttle, "16 MiB in 16 messages");
        for _ in 0..48 {
            q.push_back(pending(1024 * 1024));
        }
        assert_eq!(q.items.len(), 64);
        assert_eq!(q.pressure(), Pressure::Pause, "64 MiB in 64 messages");
        // Resuming needs both soft limits: bytes go down as items leave.
        while q.bytes >= PENDING_SOFT_BYTES {
            assert!(q.pressure() >= Pressure::Throttle);
            q.pop_front().unwrap();
        }
        assert_eq!(q.pressure(), Pressure::Low);
        q.retain(|p| p.offset != 0);
        assert_eq!((q.items.len(), q.bytes), (0, 0));
        // Many small messages still count by number.
        for _ in 0..PENDING_HARD_LIMIT {
            q.push_back(pending(10));
        }
        assert_eq!(q.pressure(), Pressure::Pause);
    }

    #[test]
    fn lag_does_not_trust_a_high_watermark_below_what_was_seen() {
        use crate::settings::OffsetReset::{Earliest, Latest};
        // tansu after one batch of 20 records: high watermark 1.
        assert_eq!(lag_of((0, 1), Some(19), Some(3), Earliest), 17);
        assert_eq!(lag_of((0, 1), Some(19), Some(20), Earliest), 0);
        // A correct high watermark ahead of what was seen.
        assert_eq!(lag_of((0, 50), Some(19), Some(3), Earliest), 47);
        // Nothing seen or committed yet.
        assert_eq!(lag_of((5, 50), None, None, Earliest), 45);
        assert_eq!(lag_of((5, 50), None, None, Latest), 0);
        // Never negative (watermark query failed: -1).
        assert_eq!(lag_of((-1, -1), None, Some(10), Earliest), 0);
    }

    #[test]
    fn task_messages_are_checked_against_their_key() {
        let doc = br#"{"type":"document","id":"kb-1","text":"hello"}"#;
        assert!(decode_task(Some(b"kb-1"), Some(doc)).is_ok());
        assert!(decode_task(None, Some(doc)).is_ok());
        let e = decode_task(Some(b"kb-2"), Some(doc)).unwrap_err();
        assert_eq!(e.class, "invalid");
        assert!(
            e.reason.contains("differs from the document id"),
            "{}",
            e.reason
        );
        let e = decode_task(None, Some(b"{oops")).unwrap_err();
        assert_eq!(e.class, "parse");
        assert_eq!(e.raw, "{oops");
        let e = decode_task(None, Some(br#"{"type":"launch"}"#)).unwrap_err();
        assert_eq!(e.class, "invalid");
        assert!(e.reason.contains("not a task"), "{}", e.reason);
        let e = decode_task(None, None).unwrap_err();
        assert!(e.reason.contains("tombstone"));
        assert!(decode_task(Some(b"x"), Some(br#"{"type":"keyword","query":"q"}"#)).is_ok());
    }
}
