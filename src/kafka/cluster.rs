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

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::control::audit::{AuditLog, Event, EventKind, Record};
use super::{
    assign_all, client_config, ensure_topic, log_error, log_line, IfNoPartitions, LogContext,
};
use crate::knobs::Knobs;
use crate::live::LiveConfig;
use crate::metrics;
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

struct LeaderCtx {
    leader: Arc<AtomicBool>,
}

impl ClientContext for LeaderCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(level, fac, message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        log_error(&error, reason);
    }
}

fn set_leader(flag: &AtomicBool, on: bool) {
    let was = flag.swap(on, Ordering::AcqRel);
    metrics::gauge!(metrics::CONTROLLER_LEADER).set(if on { 1.0 } else { 0.0 });
    if was != on {
        tracing::info!(leader = on, "controller leadership changed");
    }
}

impl ConsumerContext for LeaderCtx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) if tpl.elements().iter().any(|e| e.partition() == 0) => {
                set_leader(&self.leader, false)
            }
            Rebalance::Error(_) => set_leader(&self.leader, false),
            _ => {}
        }
    }
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Membership is all this consumer is for: read nothing.
            let _ = consumer.pause(tpl);
            if tpl.elements().iter().any(|e| e.partition() == 0) {
                set_leader(&self.leader, true);
            }
        }
    }
}

/// The running scale-out link of one instance.
pub struct Cluster {
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    publisher: tokio::task::JoinHandle<()>,
    producer: FutureProducer<LogContext>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("instance", &self.state.instance)
            .finish_non_exhaustive()
    }
}

fn publish(producer: &FutureProducer<LogContext>, topic: &str, key: &str, value: Option<&[u8]>) {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    if let Err((e, _)) = producer.send_result(record) {
        tracing::warn!(error = %e, key, "cannot publish to the control topic");
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
        let topic = k.control_topic.clone();
        ensure_topic(k, &topic, 1, true).await?;
        let cluster_audit_path = data_dir.join("cluster-audit.jsonl");
        let seen = read_seen(&cluster_audit_path)?;
        set_leader(&leader, false);
        let state = Arc::new(State {
            instance: instance.to_string(),
            live: live.clone(),
            audit: audit.clone(),
            adopted: Mutex::new(None),
            cluster_audit: Mutex::new((cluster_audit_path, seen)),
            leader: leader.clone(),
        });
        let producer: FutureProducer<LogContext> = client_config(k, &format!("{instance}-control"))
            .set("acks", "all")
            .set("linger.ms", "0")
            // Few records; one per batch keeps tansu 0.6 (which mishandles
            // reads that start inside a multi-record batch) reading them all.
            .set("batch.num.messages", "1")
            .create_with_context(LogContext)
            .context("control topic producer")?;

        // Audit records go to the topic from now on.
        {
            let producer = producer.clone();
            let topic = topic.clone();
            let instance = instance.to_string();
            audit.set_mirror(move |record| {
                let line = ClusterAuditLine {
                    instance: instance.clone(),
                    record: record.clone(),
                };
                if let Ok(bytes) = serde_json::to_vec(&line) {
                    let key = format!("audit/{instance}/{:020}", record.seq);
                    publish(&producer, &topic, &key, Some(&bytes));
                }
            });
        }

        let mut reader_config = client_config(k, &format!("{instance}-control-reader"));
        reader_config
            .set("group.id", format!("{}.control-reader", k.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50");
        let reader: BaseConsumer<LogContext> = reader_config
            .create_with_context(LogContext)
            .context("control topic reader")?;
        let mut leader_config = client_config(k, &format!("{instance}-control-member"));
        leader_config
            .set("group.id", format!("{}.control", k.group_id))
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", k.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (k.session_timeout_ms / 3).max(100).to_string(),
            );
        if k.static_membership {
            // Static membership, as for the input topics: a restarted
            // instance takes its place (and its leadership) back at once.
            leader_config.set("group.instance.id", format!("{}.control", k.instance_id));
        }
        let member: BaseConsumer<LeaderCtx> = leader_config
            .create_with_context(LeaderCtx {
                leader: leader.clone(),
            })
            .context("control group member")?;

        // Catch up: read from the beginning until our own marker comes back.
        let marker_key = format!("hello/{instance}");
        let (reader, catch_up) = {
            let state = state.clone();
            let topic = topic.clone();
            let producer = producer.clone();
            let marker_key = marker_key.clone();
            let instance = instance.to_string();
            tokio::task::spawn_blocking(move || -> Result<(BaseConsumer<LogContext>, CatchUp)> {
                assign_all(&reader, &topic, Offset::Beginning, IfNoPartitions::AssignPartitionZero)
                    .context("reading the control topic from its beginning")?;
                let marker = json!({"instance": instance, "time_ms": crate::dataplane::pipeline::now_ms()}).to_string();
                publish(&producer, &topic, &marker_key, Some(marker.as_bytes()));
                let mut catch_up = CatchUp::default();
                let deadline = Instant::now() + CATCH_UP_TIMEOUT;
                while !catch_up.marker_seen && Instant::now() < deadline {
                    if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
                        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                        state.handle(&key, m.payload(), &mut catch_up);
                    }
                }
                if !catch_up.marker_seen {
                    tracing::warn!(topic, "did not read this instance's start marker back from the control topic in time; running with what was read");
                }
                Ok((reader, catch_up))
            })
            .await??
        };
        match &catch_up.best {
            Some(best) => state.consider(best, true),
            None => {
                let snapshot = live.load();
                let rec = SnapshotRecord {
                    version: snapshot.version,
                    knobs: snapshot.knobs.clone(),
                    instance: instance.to_string(),
                    time_ms: crate::dataplane::pipeline::now_ms(),
                };
                if let Ok(bytes) = serde_json::to_vec(&rec) {
                    publish(&producer, &topic, "knobs", Some(&bytes));
                }
            }
        }
        // The marker has done its job: let compaction remove it.
        publish(&producer, &topic, &marker_key, None);

        member
            .subscribe(&[&topic])
            .context("joining the control group")?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("freshet-control".into())
                .spawn(move || control_loop(reader, member, state, stop))
                .context("starting the control thread")?
        };
        let publisher = {
            let state = state.clone();
            let producer = producer.clone();
            let mut changes = live.subscribe();
            changes.borrow_and_update();
            tokio::spawn(async move {
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
                        time_ms: crate::dataplane::pipeline::now_ms(),
                    };
                    let Ok(bytes) = serde_json::to_vec(&rec) else {
                        continue;
                    };
                    // Retry until it is out, unless a newer snapshot replaces it.
                    loop {
                        let record: FutureRecord<'_, str, [u8]> =
                            FutureRecord::to(&topic).key("knobs").payload(&bytes);
                        match producer.send(record, Duration::from_secs(5)).await {
                            Ok(_) => break,
                            Err((e, _)) => {
                                tracing::warn!(error = %e, version = rec.version, "publishing a knob snapshot failed; retrying");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                if changes.has_changed().unwrap_or(true) {
                                    break;
                                }
                            }
                        }
                    }
                }
            })
        };
        tracing::info!(instance, topic = %k.control_topic, version = live.version(), "joined the cluster");
        Ok(Cluster {
            state,
            stop,
            thread: Some(thread),
            publisher,
            producer,
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
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.publisher.abort();
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer.flush(Duration::from_secs(5))
        })
        .await;
    }
}

fn control_loop(
    reader: BaseConsumer<LogContext>,
    member: BaseConsumer<LeaderCtx>,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
) {
    let mut catch_up = CatchUp {
        done: true,
        ..Default::default()
    };
    while !stop.load(Ordering::Acquire) {
        // Group membership: serves the rebalance callbacks.
        let _ = member.poll(Duration::ZERO);
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                state.handle(&key, m.payload(), &mut catch_up);
            }
            Some(Err(e)) => {
                metrics::record_error("source", "upstream", &format_args!("control topic: {e}"))
            }
            None => {}
        }
    }
    set_leader(&state.leader, false);
    member.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let _ = member.poll(Duration::from_millis(50));
        if member.assignment().map(|a| a.count() == 0).unwrap_or(true) {
            break;
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

/// A default instance id: host name, process id and start time.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "freshet".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        crate::dataplane::pipeline::now_ms()
    )
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
            crate::dataplane::pipeline::now_ms()
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
