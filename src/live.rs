//! `LiveConfig`: the versioned knob snapshot that workers read on the hot path.
//!
//! Workers call [`LiveConfig::load`] once per unit of work (a request, a
//! batch) and keep that snapshot until the unit ends, so a unit never sees
//! half of a change. A swap replaces the whole snapshot atomically (an
//! [`ArcSwap`]) and bumps the version; readers never block and never see a
//! torn value. Resizable things (slot semaphores, batchers) subscribe to the
//! change notification ([`LiveConfig::subscribe`]) and resize themselves;
//! [`Slots`] does so without cancelling or repeating any work in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::knobs::{Change, KnobDiff, KnobError, Knobs};

/// One immutable, validated setting of all knobs with its version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Increases by one with every swap; starts at 1.
    pub version: u64,
    /// The knob values.
    pub knobs: Knobs,
}

/// What a swap did.
#[derive(Debug, Clone)]
pub struct Swapped {
    /// The snapshot that was replaced.
    pub old: Arc<Snapshot>,
    /// The snapshot now in force.
    pub new: Arc<Snapshot>,
    /// The knobs that changed.
    pub diff: Vec<KnobDiff>,
}

/// The live knobs of one freshet process.
#[derive(Debug)]
pub struct LiveConfig {
    current: ArcSwap<Snapshot>,
    changes: watch::Sender<Arc<Snapshot>>,
    /// Serializes writers so that read-modify-write patches never lose an update.
    write_lock: std::sync::Mutex<()>,
    /// The latest [`HISTORY`] snapshots, for rollback to an earlier version.
    history: std::sync::Mutex<std::collections::VecDeque<Arc<Snapshot>>>,
}

/// Snapshots kept for rollback.
pub const HISTORY: usize = 256;

impl LiveConfig {
    /// Starts at version 1 with `knobs`, which must be valid.
    pub fn new(knobs: Knobs) -> Result<Arc<LiveConfig>, KnobError> {
        knobs.validate()?;
        let first = Arc::new(Snapshot { version: 1, knobs });
        let (changes, _) = watch::channel(first.clone());
        Ok(Arc::new(LiveConfig {
            current: ArcSwap::new(first.clone()),
            changes,
            write_lock: std::sync::Mutex::new(()),
            history: std::sync::Mutex::new(std::iter::once(first).collect()),
        }))
    }

    /// The snapshot in force. Cheap (no lock, no allocation): call it once
    /// per unit of work.
    #[inline]
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A borrowed view of the snapshot in force, cheaper than [`load`](Self::load)
    /// (no reference-count traffic) for short reads that do not await.
    #[inline]
    pub fn peek(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The version in force.
    pub fn version(&self) -> u64 {
        self.current.load().version
    }

    /// A receiver that wakes up after every swap with the new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.changes.subscribe()
    }

    /// Replaces the knobs with a validated `knobs` (version + 1).
    pub fn swap(&self, knobs: Knobs) -> Result<Swapped, KnobError> {
        knobs.validate()?;
        let _writer = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.install(knobs))
    }

    /// Like [`swap`](Self::swap), but only if `expect_version` is in force.
    pub fn swap_if(&self, knobs: Knobs, expect_version: u64) -> Result<Swapped, PatchError> {
        knobs.validate()?;
        let _writer = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let actual = self.current.load().version;
        if actual != expect_version {
            return Err(PatchError::Conflict {
                expected: expect_version,
                actual,
            });
        }
        Ok(self.install(knobs))
    }

    /// An earlier snapshot, if still kept (the last [`HISTORY`] versions).
    pub fn snapshot(&self, version: u64) -> Option<Arc<Snapshot>> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|s| s.version == version)
            .cloned()
    }

    /// Applies `changes` to the snapshot in force (version + 1). When
    /// `expect_version` is given and another swap came first, nothing is
    /// changed and the error says so.
    pub fn patch(
        &self,
        changes: &[Change],
        expect_version: Option<u64>,
    ) -> Result<Swapped, PatchError> {
        let _writer = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current.load_full();
        if let Some(expected) = expect_version {
            if expected != current.version {
                return Err(PatchError::Conflict {
                    expected,
                    actual: current.version,
                });
            }
        }
        let knobs = current.knobs.apply_patch(changes)?;
        Ok(self.install(knobs))
    }

    fn install(&self, knobs: Knobs) -> Swapped {
        let old = self.current.load_full();
        let new = Arc::new(Snapshot {
            version: old.version + 1,
            knobs,
        });
        let diff = old.knobs.diff(&new.knobs);
        self.current.store(new.clone());
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            history.push_back(new.clone());
            while history.len() > HISTORY {
                history.pop_front();
            }
        }
        self.changes.send_replace(new.clone());
        metrics::gauge!(crate::metrics::KNOBS_VERSION).set(new.version as f64);
        Swapped { old, new, diff }
    }
}

impl LiveConfig {
    /// Installs a snapshot another instance published (scale-out: the
    /// control topic), keeping its version number so that every instance
    /// runs the same version. Applied when `version` is newer than the one
    /// in force, or equal to it when `replace_same` (the cluster's tie-break
    /// chose the other instance's knobs for that version) and the knobs
    /// differ. Returns `None` when nothing changed.
    pub fn adopt(
        &self,
        version: u64,
        knobs: Knobs,
        replace_same: bool,
    ) -> Result<Option<Swapped>, KnobError> {
        knobs.validate()?;
        let _writer = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current.load_full();
        let newer = version > old.version;
        let replace = replace_same && version == old.version && knobs != old.knobs;
        if !(newer || replace) {
            return Ok(None);
        }
        let new = Arc::new(Snapshot { version, knobs });
        let diff = old.knobs.diff(&new.knobs);
        self.current.store(new.clone());
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            history.retain(|s| s.version != version);
            history.push_back(new.clone());
            while history.len() > HISTORY {
                history.pop_front();
            }
        }
        self.changes.send_replace(new.clone());
        metrics::gauge!(crate::metrics::KNOBS_VERSION).set(new.version as f64);
        Ok(Some(Swapped { old, new, diff }))
    }
}

/// Why a patch was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// A knob or the result is invalid.
    #[error(transparent)]
    Knob(#[from] KnobError),
    /// Another change was swapped in since the caller read the snapshot.
    #[error(
        "knobs changed meanwhile: expected version {expected}, found {actual}; re-read and retry"
    )]
    Conflict {
        /// The version the caller based its patch on.
        expected: u64,
        /// The version in force.
        actual: u64,
    },
}

/// A concurrency limit that can be resized while permits are held.
///
/// Growing adds permits at once. Shrinking takes idle permits away at once
/// and, for permits that are held, records a debt: the next permits to come
/// back are retired instead of returned. In-flight work is never cancelled,
/// and no waiter is admitted twice.
#[derive(Debug)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    inner: Arc<SlotsInner>,
}

#[derive(Debug)]
struct SlotsInner {
    target: AtomicUsize,
    debt: AtomicUsize,
    held: AtomicUsize,
}

/// A held slot; dropping it gives the slot back (or retires it after a shrink).
#[derive(Debug)]
pub struct SlotPermit {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<SlotsInner>,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.inner.held.fetch_sub(1, Ordering::AcqRel);
        if let Some(permit) = self.permit.take() {
            let retired = self
                .inner
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                .is_ok();
            if retired {
                permit.forget();
            }
        }
    }
}

impl Slots {
    /// A limit of `n` concurrent holders (at least 1).
    pub fn new(n: usize) -> Slots {
        let n = n.max(1);
        Slots {
            semaphore: Arc::new(Semaphore::new(n)),
            inner: Arc::new(SlotsInner {
                target: AtomicUsize::new(n),
                debt: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
            }),
        }
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> SlotPermit {
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("slots semaphore is never closed");
        self.inner.held.fetch_add(1, Ordering::AcqRel);
        SlotPermit {
            permit: Some(permit),
            inner: self.inner.clone(),
        }
    }

    /// Takes a free slot without waiting, if there is one.
    pub fn try_acquire(&self) -> Option<SlotPermit> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        self.inner.held.fetch_add(1, Ordering::AcqRel);
        Some(SlotPermit {
            permit: Some(permit),
            inner: self.inner.clone(),
        })
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.inner.target.load(Ordering::Acquire)
    }

    /// Slots held right now.
    pub fn in_use(&self) -> usize {
        self.inner.held.load(Ordering::Acquire)
    }

    /// Changes the limit to `n` (at least 1).
    pub fn resize(&self, n: usize) {
        let n = n.max(1);
        let old = self.inner.target.swap(n, Ordering::AcqRel);
        if n > old {
            let mut grow = n - old;
            // First cancel debt from an earlier shrink that has not been paid yet.
            while grow > 0 {
                let paid = self
                    .inner
                    .debt
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                    .is_ok();
                if !paid {
                    break;
                }
                grow -= 1;
            }
            self.semaphore.add_permits(grow);
        } else if n < old {
            let shrink = old - n;
            let taken = self.semaphore.forget_permits(shrink);
            if taken < shrink {
                self.inner.debt.fetch_add(shrink - taken, Ordering::AcqRel);
            }
        }
    }

    /// Keeps this limit equal to `pick(knobs)` as snapshots change, until the
    /// `LiveConfig` is dropped. Returns the follower task.
    pub fn follow(
        self: &Arc<Self>,
        live: &LiveConfig,
        pick: impl Fn(&Knobs) -> u32 + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let mut changes = live.subscribe();
        let slots = Arc::downgrade(self);
        self.resize(pick(&live.load().knobs) as usize);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(slots) = slots.upgrade() else { break };
                let n = pick(&changes.borrow_and_update().knobs) as usize;
                slots.resize(n);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn swap_bumps_version_and_keeps_old_snapshot_readable() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        let before = live.load();
        let swapped = live
            .patch(&[Change::new("extract.slots", 3)], Some(1))
            .unwrap();
        assert_eq!(swapped.new.version, 2);
        assert_eq!(
            before.knobs.extract.slots, 8,
            "a held snapshot never changes"
        );
        assert_eq!(live.load().knobs.extract.slots, 3);
        assert_eq!(swapped.diff.len(), 1);
        let stale = live.patch(&[Change::new("extract.slots", 4)], Some(1));
        assert!(matches!(
            stale,
            Err(PatchError::Conflict {
                expected: 1,
                actual: 2
            })
        ));
        let bad = live.patch(&[Change::new("extract.slots", 0)], None);
        assert!(bad.is_err());
        assert_eq!(live.version(), 2, "a refused patch changes nothing");
    }

    #[tokio::test]
    async fn slots_shrink_and_grow_while_held() {
        let slots = Arc::new(Slots::new(4));
        let held: Vec<_> = futures::future::join_all((0..4).map(|_| slots.acquire())).await;
        slots.resize(2);
        assert_eq!(slots.limit(), 2);
        drop(held); // all 4 come back: 2 are retired, 2 return
        let a = slots.acquire().await;
        let b = slots.acquire().await;
        let third = tokio::time::timeout(Duration::from_millis(50), slots.acquire()).await;
        assert!(third.is_err(), "only 2 slots after the shrink");
        drop((a, b));
        slots.resize(5);
        let many: Vec<_> = futures::future::join_all((0..5).map(|_| slots.acquire())).await;
        assert_eq!(slots.in_use(), 5);
        let sixth = tokio::time::timeout(Duration::from_millis(50), slots.acquire()).await;
        assert!(sixth.is_err(), "exactly 5 after growing");
        drop(many);
    }

    #[tokio::test]
    async fn slots_follow_live_knobs() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        let slots = Arc::new(Slots::new(1));
        let _task = slots.follow(&live, |k| k.extract.slots);
        assert_eq!(slots.limit(), 8);
        live.patch(&[Change::new("extract.slots", 2)], None)
            .unwrap();
        for _ in 0..100 {
            if slots.limit() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(slots.limit(), 2);
    }
}
