//! Scale-out: the instances of one consumer group share knob snapshots,
//! audit records and controller leadership through one compacted Kafka
//! topic, the *control topic* (`[kafka] control_topic`, one partition).
//!
//! Records (key -> value, JSON):
//! - `knobs` -> `{"version", "knobs", "instance", "time_ms"}`: the snapshot
//!   an instance swapped in (by hand through the admin API, or by its
//!   controller). Compaction keeps the latest.
//! - `audit/<instance>/<seq>` -> `{"instance", "record"}`: every record of
//!   every instance's change-audit log (unique keys: compaction keeps them
//!   all, so the topic holds the cluster's complete trail).
//! - `head/<instance>` -> `{"instance", "seq", "hash", "time_ms"}`: the head
//!   of that instance's audit chain (what `audit.head` holds on its disk),
//!   kept off the box: compaction keeps the latest, so a data dir whose log
//!   and head were cut back together still disagrees with the topic.
//! - `hello/<instance>` -> a start-up marker (then a tombstone): an instance
//!   that reads its own marker back has read everything before it.
//!
//! **Same version everywhere.** Every local swap is published. An instance
//! installs a published snapshot *with its version number* when the version
//! is newer than its own ([`LiveConfig::adopt`]). Two instances that changed
//! knobs at the same time publish the same version with different knobs;
//! every instance then keeps the one from the instance whose id sorts last,
//! so all converge on one snapshot per version. A starting instance first
//! reads the topic to its own marker and adopts the newest snapshot there
//! (the cluster's state wins over its settings file); on an empty topic it
//! publishes its own. Every adoption is written to the local audit log
//! (fsynced) before it is swapped in, as kind `applied` with the actor
//! `{"instance": …, "via": "control topic"}`.
//!
//! **Audit.** Each instance keeps its own hash chain in `audit.jsonl` (what
//! `freshet audit verify` checks) and mirrors every record to the topic.
//! Records of the *other* instances are appended to
//! `<data_dir>/cluster-audit.jsonl` as `{"instance", "record"}` lines (each
//! record keeps its own instance's `prev`/`hash`), so any instance can show
//! the whole cluster's trail.
//!
//! **Leadership.** Each instance also joins the group `<group_id>.control`
//! on the control topic; the member holding partition 0 runs the controller
//! (`Runtime::controller_leader`). Revocation clears the flag before the
//! partition moves, and a stopping instance leaves the group at once, so a
//! survivor takes over within a rebalance (a crashed one: within the
//! session timeout).
//!
//! The Kafka side (topic, producer, reader, group member) is
//! [`crate::kafka::control_topic`]; this module decides what the records
//! mean.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::control::audit::{AuditLog, Event, EventKind, Record};
use crate::kafka::control_topic::{ControlPublisher, ControlRunning, ControlTopic};
use crate::knobs::Knobs;
use crate::live::LiveConfig;
use crate::settings::KafkaSettings;

/// How long a starting instance reads the control topic before it gives up
/// waiting for its own marker (and runs with what it has read).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);

/// A knob snapshot on the control topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The snapshot's version.
    pub version: u64,
    /// The knobs.
    pub knobs: Knobs,
    /// The instance that swapped it in.
    pub instance: String,
    /// When it was published (Unix ms).
    pub time_ms: u64,
}

/// An audit record of one instance, as published and as kept in
/// `cluster-audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterAuditLine {
    /// The instance whose log holds the record.
    pub instance: String,
    /// The record, hash and chain fields included.
    pub record: Record,
}

struct State {
    instance: String,
    live: Arc<LiveConfig>,
    audit: Arc<AuditLog>,
    /// The snapshot last installed from the topic and its instance: the
    /// knobs in force came from there when (version, knobs) still match.
    adopted: Mutex<Option<(u64, Knobs, String)>>,
    cluster_audit: Mutex<(PathBuf, HashSet<(String, u64)>)>,
    leader: Arc<AtomicBool>,
}

impl State {
    /// The instance whose knobs are in force at the current version.
    fn origin(&self, version: u64, knobs: &Knobs) -> String {
        match &*self.adopted.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((v, k, instance)) if *v == version && k == knobs => instance.clone(),
            _ => self.instance.clone(),
        }
    }

    /// Applies a published snapshot if it is newer, or wins the tie-break
    /// (`force_same`: a starting instance takes the cluster's snapshot).
    fn consider(&self, rec: &SnapshotRecord, force_same: bool) {
        let current = self.live.load();
        if rec.version < current.version
            || (rec.version == current.version && rec.knobs == current.knobs)
        {
            return;
        }
        let replace_same = rec.version == current.version
            && (force_same || rec.instance > self.origin(current.version, &current.knobs));
        if rec.version == current.version && !replace_same {
            return;
        }
        if let Err(e) = rec.knobs.validate() {
            tracing::warn!(instance = %rec.instance, version = rec.version, error = %e, "ignoring an invalid knob snapshot on the control topic");
            return;
        }
        let diff = current.knobs.diff(&rec.knobs);
        let recorded = self.audit.append(
            EventKind::Applied,
            Event {
                from_version: Some(current.version),
                to_version: Some(rec.version),
                diff: serde_json::to_value(&diff).unwrap_or_default(),
                actor: json!({"instance": rec.instance, "via": "control topic"}),
                detail: format!(
                    "knob snapshot v{} of instance {} adopted from the control topic",
                    rec.version, rec.instance
                ),
                ..Default::default()
            },
        );
        if let Err(e) = recorded {
            tracing::error!(error = %e, "cannot record the adoption of a knob snapshot; not applied");
            return;
        }
        *self.adopted.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((rec.version, rec.knobs.clone(), rec.instance.clone()));
        match self
            .live
            .adopt(rec.version, rec.knobs.clone(), replace_same)
        {
            Ok(Some(swapped)) => tracing::info!(
                version = swapped.new.version,
                from = %rec.instance,
                changes = swapped.diff.len(),
                "adopted knob snapshot from the control topic"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "knob snapshot refused"),
        }
    }

    fn keep_audit(&self, line: ClusterAuditLine) {
        if line.instance == self.instance {
            return;
        }
        let mut guard = self.cluster_audit.lock().unwrap_or_else(|p| p.into_inner());
        let (path, seen) = &mut *guard;
        if !seen.insert((line.instance.clone(), line.record.seq)) {
            return;
        }
        let written = serde_json::to_vec(&line)
            .map_err(std::io::Error::other)
            .and_then(|mut bytes| {
                bytes.push(b'\n');
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&*path)?
                    .write_all(&bytes)
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %path.display(), "cannot append to the cluster audit file");
        }
    }

    fn handle(&self, key: &str, value: Option<&[u8]>, catch_up: &mut CatchUp) {
        if key == "knobs" {
            let Some(value) = value else { return };
            match serde_json::from_slice::<SnapshotRecord>(value) {
                Ok(rec) if catch_up.done => self.consider(&rec, false),
                Ok(rec) => {
                    let better = catch_up
                        .best
                        .as_ref()
                        .is_none_or(|b| (rec.version, &rec.instance) >= (b.version, &b.instance));
                    if better {
                        catch_up.best = Some(rec);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed knob snapshot on the control topic")
                }
            }
        } else if key.starts_with("audit/") {
            let Some(value) = value else { return };
            match serde_json::from_slice::<ClusterAuditLine>(value) {
                Ok(line) => self.keep_audit(line),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed audit record on the control topic")
                }
            }
        } else if key == format!("hello/{}", self.instance) && value.is_some() {
            catch_up.marker_seen = true;
        }
    }
}

#[derive(Debug, Default)]
struct CatchUp {
    done: bool,
    marker_seen: bool,
    best: Option<SnapshotRecord>,
}

/// The running scale-out link of one instance.
pub struct Cluster {
    state: Arc<State>,
    running: ControlRunning,
    publisher: ControlPublisher,
    snapshots: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("instance", &self.state.instance)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Joins the cluster of `k.group_id` on `k.control_topic` (created if
    /// missing): catches up with the topic, adopts its newest knob snapshot,
    /// mirrors `audit`, publishes every local swap, and keeps `leader` set
    /// while this instance holds partition 0 of the control group.
    pub async fn start(
        k: &KafkaSettings,
        instance: &str,
        live: Arc<LiveConfig>,
        audit: Arc<AuditLog>,
        data_dir: &Path,
        leader: Arc<AtomicBool>,
    ) -> Result<Cluster> {
        let topic = ControlTopic::open(k, instance, leader.clone()).await?;
        let cluster_audit_path = data_dir.join("cluster-audit.jsonl");
        let seen = read_seen(&cluster_audit_path)?;
        let state = Arc::new(State {
            instance: instance.to_string(),
            live: live.clone(),
            audit: audit.clone(),
            adopted: Mutex::new(None),
            cluster_audit: Mutex::new((cluster_audit_path, seen)),
            leader,
        });
        let publisher = topic.publisher();

        // Audit records go to the topic from now on.
        {
            let publisher = publisher.clone();
            let instance = instance.to_string();
            audit.set_mirror(move |record| {
                let line = ClusterAuditLine {
                    instance: instance.clone(),
                    record: record.clone(),
                };
if let Ok(bytes) = serde_json::to_vec(&line) {
                    let key = format!("audit/{instance}/{:020}", record.seq);
                    publisher.publish(&key, Some(&bytes));
                }
                // The head, off the box: compaction keeps the latest.
                let head = json!({"instance": instance, "seq": record.seq, "hash": record.hash, "time_ms": record.time_ms});
                publisher.publish(&format!("head/{instance}"), Some(head.to_string().as_bytes()));
            });
        }

        // Catch up: read from the beginning until our own marker comes back.
        let marker_key = format!("hello/{instance}");
        let marker = json!({"instance": instance, "time_ms": crate::dataplane::task::now_ms()})
            .to_string()
            .into_bytes();
        let catch_up = Arc::new(Mutex::new(CatchUp::default()));
        let (topic, marker_seen) = {
            let state = state.clone();
            let catch_up = catch_up.clone();
            topic
                .catch_up(
                    (marker_key.clone(), marker),
                    CATCH_UP_TIMEOUT,
                    move |key, value| {
                        let mut c = catch_up.lock().unwrap_or_else(|p| p.into_inner());
                        state.handle(key, value, &mut c);
                        c.marker_seen
                    },
                )
                .await
                .context("reading the control topic from its beginning")?
        };
        if !marker_seen {
            tracing::warn!(topic = %k.control_topic, "did not read this instance's start marker back from the control topic in time; running with what was read");
        }
        let best = catch_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .best
            .take();
        match &best {
            Some(best) => state.consider(best, true),
            None => {
                let snapshot = live.load();
                let rec = SnapshotRecord {
                    version: snapshot.version,
                    knobs: snapshot.knobs.clone(),
                    instance: instance.to_string(),
                    time_ms: crate::dataplane::task::now_ms(),
                };
                if let Ok(bytes) = serde_json::to_vec(&rec) {
                    publisher.publish("knobs", Some(&bytes));
                }
            }
        }
        // The marker has done its job: let compaction remove it.
        publisher.publish(&marker_key, None);

        let running = {
            let state = state.clone();
            let mut caught_up = CatchUp {
                done: true,
                ..Default::default()
            };
            topic
                .run(move |key, value| state.handle(key, value, &mut caught_up))
                .context("joining the control group")?
        };
        let mut changes = live.subscribe();
        changes.borrow_and_update();
        let snapshots = tokio::spawn(publish_swaps(state.clone(), publisher.clone(), changes));
        tracing::info!(instance, topic = %k.control_topic, version = live.version(), "joined the cluster");
        Ok(Cluster {
            state,
            running,
            publisher,
            snapshots,
        })
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.state.instance
    }

    /// Whether this instance runs the controller now.
    pub fn is_leader(&self) -> bool {
        self.state.leader.load(Ordering::Acquire)
    }

    /// Leaves the control group (leadership moves at once) and stops.
    pub async fn stop(self) {
        self.running.stop().await;
        self.snapshots.abort();
        self.publisher.flush().await;
    }
}

/// Publishes every knob snapshot swapped in locally (not those adopted
/// from the topic), retrying until it is out unless a newer one replaces it.
async fn publish_swaps(
    state: Arc<State>,
    publisher: ControlPublisher,
    mut changes: tokio::sync::watch::Receiver<Arc<crate::live::Snapshot>>,
) {
    while changes.changed().await.is_ok() {
        let snapshot = changes.borrow_and_update().clone();
        let from_topic = matches!(
            &*state.adopted.lock().unwrap_or_else(|p| p.into_inner()),
            Some((v, k, _)) if *v == snapshot.version && *k == snapshot.knobs
        );
        if from_topic {
            continue;
        }
        let rec = SnapshotRecord {
            version: snapshot.version,
            knobs: snapshot.knobs.clone(),
            instance: state.instance.clone(),
            time_ms: crate::dataplane::task::now_ms(),
        };
        let Ok(bytes) = serde_json::to_vec(&rec) else {
            continue;
        };
        while let Err(e) = publisher.send("knobs", &bytes).await {
            tracing::warn!(error = %e, version = rec.version, "publishing a knob snapshot failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            if changes.has_changed().unwrap_or(true) {
                break;
            }
        }
    }
}

fn read_seen(path: &Path) -> Result<HashSet<(String, u64)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<ClusterAuditLine>(l).ok())
        .map(|l| (l.instance, l.record.seq))
        .collect())
}

/// Reads `<data_dir>/cluster-audit.jsonl`: the other instances' records.
pub fn read_cluster_audit(data_dir: &Path) -> Result<Vec<ClusterAuditLine>> {
    let path = data_dir.join("cluster-audit.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!(
                    "{} line {}: not a cluster audit line",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::Change;

    fn state(instance: &str, dir: &Path) -> State {
        State {
            instance: instance.to_string(),
            live: LiveConfig::new(Knobs::default()).unwrap(),
            audit: Arc::new(AuditLog::open(&dir.join(format!("{instance}.jsonl"))).unwrap()),
            adopted: Mutex::new(None),
            cluster_audit: Mutex::new((dir.join("cluster.jsonl"), HashSet::new())),
            leader: Arc::new(AtomicBool::new(false)),
        }
    }

    fn record(state: &State) -> SnapshotRecord {
        let s = state.live.load();
        SnapshotRecord {
            version: s.version,
            knobs: s.knobs.clone(),
            instance: state.instance.clone(),
            time_ms: 0,
        }
    }

    #[test]
    fn concurrent_changes_converge_on_one_snapshot_per_version() {
        let dir = std::env::temp_dir().join(format!(
            "freshet-cluster-{}-{}",
            std::process::id(),
            crate::dataplane::task::now_ms()
        ));
        let (a, b) = (state("a", &dir), state("b", &dir));
        // Both change knobs at the same time: both at version 2, different knobs.
        a.live
            .patch(&[Change::new("extract.slots", 3)], None)
            .unwrap();
        b.live
            .patch(&[Change::new("extract.slots", 7)], None)
            .unwrap();
        let (ra, rb) = (record(&a), record(&b));
        a.consider(&rb, false);
        b.consider(&ra, false);
        // The instance whose id sorts last wins the version on both.
        assert_eq!(a.live.load().version, 2);
        assert_eq!(a.live.load().knobs.extract.slots, 7);
        assert_eq!(b.live.load().knobs.extract.slots, 7);
        // A newer version always wins, whoever made it; older ones never do.
        a.live
            .patch(&[Change::new("extract.slots", 4)], None)
            .unwrap();
        let ra3 = record(&a);
        b.consider(&ra3, false);
        assert_eq!(
            (b.live.load().version, b.live.load().knobs.extract.slots),
            (3, 4)
        );
        b.consider(&rb, false);
        assert_eq!(
            b.live.load().version,
            3,
            "an older snapshot changes nothing"
        );
        // Every adoption was audited before it took effect.
        let records = crate::control::audit::read_records(&dir.join("b.jsonl")).unwrap();
        assert_eq!(
            records.len(),
            1,
            "b won version 2 and adopted only version 3"
        );
        assert_eq!(records[0].kind, EventKind::Applied);
        assert_eq!(records[0].event.to_version, Some(3));
        assert_eq!(records[0].event.actor["instance"], "a");
        let records = crate::control::audit::read_records(&dir.join("a.jsonl")).unwrap();
        assert_eq!(records.len(), 1, "a adopted b's version 2");
        assert_eq!(
            (records[0].event.from_version, records[0].event.to_version),
            (Some(2), Some(2))
        );
        // A starting instance takes the cluster's snapshot even at its own version.
        let c = state("c", &dir);
        let mut other = record(&a);
        other.version = 1;
        c.consider(&other, true);
        assert_eq!(c.live.load().knobs.extract.slots, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
