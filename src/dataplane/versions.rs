//! Per-document version ordering.
//!
//! The transform numbers every version of a document (and every delete) as
//! it arrives ([`Versions::assign`]); a write is applied only if no newer
//! version of the same document has been numbered since
//! ([`Versions::is_latest`]), checked and written under the document's lock
//! ([`Versions::lock`], [`Versions::lock_all`]), so concurrent requests never
//! let an old version overwrite a new one. A version that is settled (written,
//! skipped or dead-lettered) is retired ([`Versions::retire`]); only the
//! newest version removes the document's entry, so a missing entry means a
//! newer version has already been settled and older ones are superseded.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::{Mutex as AsyncMutex, MutexGuard};

/// Lock stripes: documents share a lock when their ids hash alike.
const STRIPES: usize = 256;

/// Version numbers per document and the per-document locks.
#[derive(Debug)]
pub struct Versions {
    latest: Mutex<HashMap<String, u64>>,
    next: AtomicU64,
    locks: Vec<AsyncMutex<()>>,
}

impl Default for Versions {
    fn default() -> Self {
        Versions::new()
    }
}

impl Versions {
    /// No document numbered yet.
    pub fn new() -> Versions {
        Versions {
            latest: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            locks: (0..STRIPES).map(|_| AsyncMutex::new(())).collect(),
        }
    }

    /// Numbers a new version of `doc_id`; it is now the latest.
    pub fn assign(&self, doc_id: &str) -> u64 {
        let seq = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(doc_id.to_string(), seq);
        seq
    }

    /// Whether `seq` is still the newest version of `doc_id`.
    pub fn is_latest(&self, doc_id: &str, seq: u64) -> bool {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(doc_id)
            .is_some_and(|&s| s == seq)
    }

    /// Version `seq` of `doc_id` is settled; forgets the document if it was
    /// the newest.
    pub fn retire(&self, doc_id: &str, seq: u64) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if latest.get(doc_id) == Some(&seq) {
            latest.remove(doc_id);
        }
    }

    /// Documents with a version in flight.
    pub fn pending(&self) -> usize {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn stripe(&self, doc_id: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        doc_id.hash(&mut h);
        (h.finish() % self.locks.len() as u64) as usize
    }

    /// Holds `doc_id`'s lock (shared with the ids of its stripe).
    pub async fn lock(&self, doc_id: &str) -> MutexGuard<'_, ()> {
        self.locks[self.stripe(doc_id)].lock().await
    }

    /// Holds the locks of every id, taken in stripe order so two callers
    /// never deadlock.
    pub async fn lock_all<'a>(
        &self,
        doc_ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = doc_ids.into_iter().map(|id| self.stripe(id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.locks[s].lock().await);
        }
        guards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_version_supersedes_an_older_one() {
        let v = Versions::new();
        let old = v.assign("a");
        let new = v.assign("a");
        assert!(new > old);
        assert!(!v.is_latest("a", old), "the older version is superseded");
        assert!(v.is_latest("a", new));
        // Retiring the superseded version changes nothing.
        v.retire("a", old);
        assert!(v.is_latest("a", new));
        v.retire("a", new);
        assert!(
            !v.is_latest("a", new),
            "settled: nothing is latest any more"
        );
        assert!(!v.is_latest("a", old));
        assert_eq!(v.pending(), 0);
    }

    #[test]
    fn documents_are_numbered_apart() {
        let v = Versions::new();
        let a = v.assign("a");
        let b = v.assign("b");
        assert!(v.is_latest("a", a) && v.is_latest("b", b));
        assert!(!v.is_latest("a", b), "a number is per document");
        v.retire("a", a);
        assert!(v.is_latest("b", b));
        assert_eq!(v.pending(), 1);
    }

    #[test]
    fn a_delete_after_an_upsert_is_the_latest() {
        let v = Versions::new();
        let upsert = v.assign("doc");
        let delete = v.assign("doc");
        assert!(!v.is_latest("doc", upsert));
        assert!(v.is_latest("doc", delete));
        assert!(!v.is_latest("never-seen", 1));
    }

    #[tokio::test]
    async fn lock_all_takes_each_stripe_once() {
        let v = Versions::new();
        // The same id twice must not deadlock on its own stripe.
        let guards = v.lock_all(["x", "x", "y"]).await;
        assert!(!guards.is_empty() && guards.len() <= 2);
        drop(guards);
        let _one = v.lock("x").await;
    }
}
