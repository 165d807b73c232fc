//! Per-source-message acknowledgement and commit watermarks.
//!
//! Delivery is at-least-once. A source message is *finished* when everything
//! derived from it (one keyword fans out into URLs, pages and chunks) is
//! indexed or dead-lettered. Each message gets an [`Ack`]; every derived item
//! carries a clone. A holder ends its share with [`Ack::done`] (indexed,
//! filtered on purpose, or dead-lettered). When the last share is done the
//! message is finished.
//!
//! A share that is **dropped without `done`** (a cancelled task, a crash
//! path, a shutdown deadline) marks the message *abandoned*: it is never
//! counted as finished, so its offset is never committed and the message is
//! delivered again after a restart. Losing work therefore requires an
//! explicit, reviewed `done` call, never an accident. (Redelivery needs a
//! durable source such as Kafka; the embedded queue can only count and log
//! abandoned messages.)
//!
//! Per partition, [`AckTracker`] keeps the offsets handed out and not yet
//! finished; the commit watermark is the highest offset below which every
//! message is finished. `source.max_in_flight` bounds unfinished messages
//! across all partitions ([`AckTracker::register`] waits for room).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::live::{LiveConfig, SlotPermit, Slots};

/// Identifies a source message: a partition and an offset in it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    /// Partition (0 for single-stream sources).
    pub partition: i32,
    /// Offset within the partition, increasing.
    pub offset: i64,
}

#[derive(Debug, Default)]
struct Partition {
    /// Offsets handed out and not finished (abandoned ones stay here).
    open: BTreeSet<i64>,
    /// Highest offset ever registered.
    max_seen: Option<i64>,
    /// Messages abandoned in this partition.
    abandoned: u64,
}

/// Counters of the tracker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AckCounts {
    /// Messages registered.
    pub registered: u64,
    /// Messages finished.
    pub finished: u64,
    /// Messages abandoned (will be redelivered).
    pub abandoned: u64,
}

#[derive(Debug)]
struct TrackerInner {
    partitions: Mutex<BTreeMap<i32, Partition>>,
    counts: Mutex<AckCounts>,
    in_flight: Arc<Slots>,
    finished_tx: tokio::sync::watch::Sender<u64>,
}

/// Tracks unfinished source messages and computes commit watermarks.
#[derive(Debug, Clone)]
pub struct AckTracker {
    inner: Arc<TrackerInner>,
    _follow: Arc<tokio::task::JoinHandle<()>>,
}

impl AckTracker {
    /// A tracker whose in-flight bound follows `source.max_in_flight`.
    pub fn new(live: &LiveConfig) -> AckTracker {
        let in_flight = Arc::new(Slots::new(live.load().knobs.source.max_in_flight as usize));
        let follow = in_flight.follow(live, |k| k.source.max_in_flight);
        let (finished_tx, _) = tokio::sync::watch::channel(0);
        AckTracker {
            inner: Arc::new(TrackerInner {
                partitions: Mutex::new(BTreeMap::new()),
                counts: Mutex::new(AckCounts::default()),
                in_flight,
                finished_tx,
            }),
            _follow: Arc::new(follow),
        }
    }

    /// Registers a message, waiting while `source.max_in_flight` messages are
    /// unfinished. Offsets must increase within a partition.
    pub async fn register(&self, position: Position) -> Ack {
        let permit = self.inner.in_flight.acquire().await;
        self.register_with(position, Some(permit))
    }

    /// Registers a message if `source.max_in_flight` leaves room, without
    /// waiting (a source that must keep polling, like Kafka's, pauses its
    /// partitions instead of waiting).
    pub fn try_register(&self, position: Position) -> Option<Ack> {
        let permit = self.inner.in_flight.try_acquire()?;
        Some(self.register_with(position, Some(permit)))
    }

    /// Unfinished (or abandoned) messages of `partition`.
    pub fn open_in(&self, partition: i32) -> usize {
        self.inner
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .map_or(0, |p| p.open.len())
    }

    fn register_with(&self, position: Position, permit: Option<SlotPermit>) -> Ack {
        {
            let mut parts = self
                .inner
                .partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let part = parts.entry(position.partition).or_default();
            part.open.insert(position.offset);
            part.max_seen = Some(
                part.max_seen
                    .map_or(position.offset, |m| m.max(position.offset)),
            );
        }
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .registered += 1;
        Ack {
            shared: Arc::new(AckShared {
                position,
                abandoned: AtomicBool::new(false),
                tracker: self.inner.clone(),
                _permit: Mutex::new(permit),
            }),
            settled: false,
        }
    }

    /// The offset to commit for `partition`: one past the highest offset
    /// below which every registered message is finished (Kafka's convention),
    /// or `None` when nothing is finished yet.
    pub fn commit_offset(&self, partition: i32) -> Option<i64> {
        let parts = self
            .inner
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let part = parts.get(&partition)?;
        match part.open.first() {
            Some(&lowest_open) => Some(lowest_open),
            None => part.max_seen.map(|m| m + 1),
        }
        .filter(|_| part.max_seen.is_some())
    }

    /// Every partition's commit offset.
    pub fn commit_offsets(&self) -> BTreeMap<i32, i64> {
        let keys: Vec<i32> = self
            .inner
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        keys.into_iter()
            .filter_map(|p| self.commit_offset(p).map(|o| (p, o)))
            .collect()
    }

    /// Forgets a partition (after a rebalance took it away).
    pub fn forget_partition(&self, partition: i32) {
        self.inner
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }

    /// Counters so far.
    pub fn counts(&self) -> AckCounts {
        *self.inner.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages registered and neither finished nor abandoned.
    pub fn unfinished(&self) -> u64 {
        let c = self.counts();
        c.registered - c.finished - c.abandoned
    }

    /// Waits until every registered message is finished or abandoned, or
    /// `deadline` passes; returns whether all settled.
    pub async fn drained(&self, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.inner.finished_tx.subscribe();
        loop {
            if self.unfinished() == 0 {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.unfinished() == 0,
            }
        }
    }
}

#[derive(Debug)]
struct AckShared {
    position: Position,
    abandoned: AtomicBool,
    tracker: Arc<TrackerInner>,
    /// The `source.max_in_flight` slot, returned when the message settles.
    _permit: Mutex<Option<SlotPermit>>,
}

impl Drop for AckShared {
    fn drop(&mut self) {
        let abandoned = self.abandoned.load(Ordering::Acquire);
        {
            let mut parts = self
                .tracker
                .partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(part) = parts.get_mut(&self.position.partition) {
                if abandoned {
                    part.abandoned += 1; // the offset stays open: never committed
                } else {
                    part.open.remove(&self.position.offset);
                }
            }
        }
        {
            let mut counts = self
                .tracker
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if abandoned {
                counts.abandoned += 1;
            } else {
                counts.finished += 1;
            }
        }
        self.tracker.finished_tx.send_modify(|n| *n += 1);
    }
}

/// One share of a source message's acknowledgement. Clone it for every item
/// derived from the message; call [`done`](Ack::done) when that item is
/// indexed, filtered or dead-lettered.
#[derive(Debug)]
pub struct Ack {
    shared: Arc<AckShared>,
    settled: bool,
}

impl Clone for Ack {
    fn clone(&self) -> Ack {
        Ack {
            shared: self.shared.clone(),
            settled: false,
        }
    }
}

impl Ack {
    /// An acknowledgement outside any tracker (CLI one-offs, tests).
    pub fn detached() -> Ack {
        let (finished_tx, _) = tokio::sync::watch::channel(0);
        let tracker = Arc::new(TrackerInner {
            partitions: Mutex::new(BTreeMap::new()),
            counts: Mutex::new(AckCounts::default()),
            in_flight: Arc::new(Slots::new(1)),
            finished_tx,
        });
        Ack {
            shared: Arc::new(AckShared {
                position: Position {
                    partition: 0,
                    offset: 0,
                },
                abandoned: AtomicBool::new(false),
                tracker,
                _permit: Mutex::new(None),
            }),
            settled: false,
        }
    }

    /// Where the message came from.
    pub fn position(&self) -> Position {
        self.shared.position
    }

    /// This share is finished (indexed, filtered on purpose, or dead-lettered).
    pub fn done(mut self) {
        self.settled = true;
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.abandoned.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::Knobs;

    fn pos(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    #[tokio::test]
    async fn watermark_advances_only_over_finished_messages() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        let t = AckTracker::new(&live);
        let a0 = t.register(pos(0, 0)).await;
        let a1 = t.register(pos(0, 1)).await;
        let a2 = t.register(pos(0, 2)).await;
        assert_eq!(t.commit_offset(0), Some(0), "nothing finished: commit 0");
        // fan-out: message 1 has three derived items
        let (b, c) = (a1.clone(), a1.clone());
        a1.done();
        b.done();
        assert_eq!(t.commit_offset(0), Some(0));
        a0.done();
        assert_eq!(t.commit_offset(0), Some(1), "1 still has a share out");
        c.done();
        assert_eq!(t.commit_offset(0), Some(2));
        a2.done();
        assert_eq!(t.commit_offset(0), Some(3));
        assert_eq!(
            t.counts(),
            AckCounts {
                registered: 3,
                finished: 3,
                abandoned: 0
            }
        );
    }

    #[tokio::test]
    async fn dropped_shares_abandon_and_block_the_watermark() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        let t = AckTracker::new(&live);
        let a0 = t.register(pos(3, 10)).await;
        let a1 = t.register(pos(3, 11)).await;
        let lost = a0.clone();
        a0.done();
        drop(lost); // e.g. a task cancelled at shutdown
        a1.done();
        assert_eq!(t.commit_offset(3), Some(10), "10 was never finished");
        assert_eq!(t.counts().abandoned, 1);
        assert_eq!(t.unfinished(), 0);
    }

    #[tokio::test]
    async fn max_in_flight_bounds_unfinished_messages() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        live.patch(
            &[crate::knobs::Change::new("source.max_in_flight", 2)],
            None,
        )
        .unwrap();
        let t = AckTracker::new(&live);
        let a = t.register(pos(0, 0)).await;
        let _b = t.register(pos(0, 1)).await;
        let third =
            tokio::time::timeout(std::time::Duration::from_millis(50), t.register(pos(0, 2))).await;
        assert!(third.is_err(), "third waits for room");
        a.done();
        let c = tokio::time::timeout(std::time::Duration::from_millis(500), t.register(pos(0, 2)))
            .await;
        assert!(c.is_ok());
    }
}
