//! The change-audit log: append-only, hash-chained JSON Lines (DESIGN.md §5).
//!
//! One record per event (proposal, applied, rejected, rolled back, committed,
//! manual override, prompt reloaded, policy error, paused, resumed, …). Each
//! record carries a sequence number, the time, the config versions, the knob
//! diff, the actor, the observation summary and the guard's verdict, plus
//! `prev` (the previous record's hash) and `hash`: SHA-256 over the record's
//! canonical JSON (keys sorted, `hash` left out). So:
//!
//! - an **edited** record no longer matches its `hash`;
//! - a **removed** record breaks the `seq` sequence and the next `prev`;
//! - **reordered** records break both as well;
//!
//! and [`verify`] names the first record where the chain breaks.
//!
//! [`AuditLog::append`] writes the line and `fsync`s before it returns, so a
//! caller that appends *before* swapping a config never has a swap without
//! its record. A crash in the middle of a write leaves a **torn last line**
//! (no final newline, not JSON): [`AuditLog::open`] detects it, cuts it off,
//! and appends a `log_repaired` record saying how many bytes it removed.
//! Anything else that does not verify is reported, never silently skipped.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The hash that the first record's `prev` holds.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A policy proposed changes.
    Proposal,
    /// A change was swapped in.
    Applied,
    /// The guard refused a change.
    Rejected,
    /// A change was undone after its bake.
    RolledBack,
    /// A change survived its bake.
    Committed,
    /// An operator set knobs by hand.
    Override,
    /// The controller's prompt file changed.
    PromptReloaded,
    /// The guardrails file changed and was loaded.
    GuardReloaded,
    /// A policy failed (late, malformed or refused answer).
    PolicyError,
    /// The controller was paused.
    Paused,
    /// The controller was resumed.
    Resumed,
    /// A request was refused for lack of a valid token.
    Unauthorized,
    /// A torn last line was cut off when the log was opened.
    LogRepaired,
    /// The service started with the knobs of its settings file (version 1):
    /// whatever the records before say was in force ends here.
    Started,
}

/// The fields a caller fills in; the log adds `seq`, `time_ms`, `prev`, `hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Event {
    /// Config version before the event (if it concerns one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<u64>,
    /// Config version after the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<u64>,
    /// The knob diff: `[{"knob", "from", "to"}]`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub diff: Value,
    /// Who: `{"policy", "model", "prompt_sha256"}` or `{"operator"}`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub actor: Value,
    /// The observation summary the decision was based on.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub observation: Value,
    /// The guard's verdict with reasons.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub verdict: Value,
    /// Free text: why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Event {
    /// The knob changes of `diff` in one line: `knob from -> to, ...`.
    pub fn diff_summary(&self) -> String {
        self.diff
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|c| {
                        format!(
                            "{} {} -> {}",
                            c["knob"].as_str().unwrap_or("?"),
                            c["from"],
                            c["to"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// Unix milliseconds.
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The event's fields.
    #[serde(flatten)]
    pub event: Event,
    /// `hash` of the previous record ([`GENESIS`] for the first).
    pub prev: String,
    /// SHA-256 (hex) of this record's canonical JSON without `hash`.
    pub hash: String,
}

impl Record {
    /// The hash this record should carry.
    pub fn compute_hash(&self) -> String {
        let mut value = serde_json::to_value(self).expect("records serialize");
        if let Value::Object(map) = &mut value {
            map.remove("hash");
        }
        // serde_json's Map is ordered by key: the text is canonical.
        let canonical = serde_json::to_string(&value).expect("values serialize");
        hex(&Sha256::digest(canonical.as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// Why a log does not verify.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuditError {
    /// The file could not be read or written.
    #[error("audit log {path}: {message}")]
    Io {
        /// File.
        path: String,
        /// What failed.
        message: String,
    },
    /// A line is not a record.
    #[error("audit log line {line}: not a record ({message})")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// A record was edited: its content no longer matches its hash.
    #[error(
        "audit record seq {seq} (line {line}) was altered: its hash does not match its content"
    )]
    Edited {
        /// Sequence number.
        seq: u64,
        /// Line.
        line: usize,
    },
    /// The chain breaks: a record is missing or out of order.
    #[error("audit chain breaks at line {line}: expected seq {expected_seq} after {after}, found seq {found_seq}{why}")]
    Broken {
        /// Line.
        line: usize,
        /// The seq that should be here.
        expected_seq: u64,
        /// The seq found.
        found_seq: u64,
        /// Description of the previous record.
        after: String,
        /// `prev` mismatch note.
        why: String,
    },
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Hash of the last record (the head of the chain).
    pub head: String,
    /// Bytes of a torn final line (only reported; [`AuditLog::open`] repairs it).
    pub torn_tail_bytes: u64,
}

/// The log's bytes; a missing file is an empty log.
fn read_log(path: &Path) -> Result<Vec<u8>, AuditError> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(AuditError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// Reads and checks a whole log; the error names the first bad record.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let bytes = read_log(path)?;
    let (complete, torn) = split_torn(&bytes);
    let (records, head) = check_chain(complete)?;
    Ok(VerifyReport {
        records,
        head,
        torn_tail_bytes: torn as u64,
    })
}

/// Splits off a final line without a newline.
fn split_torn(bytes: &[u8]) -> (&[u8], usize) {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => (&bytes[..=i], bytes.len() - i - 1),
        None => (&bytes[..0], bytes.len()),
    }
}

fn check_chain(bytes: &[u8]) -> Result<(u64, String), AuditError> {
    let mut prev = GENESIS.to_string();
    let mut expected = 1u64;
    for (i, line) in bytes.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| AuditError::Malformed {
            line: line_no,
            message: e.to_string(),
        })?;
        let record: Record = serde_json::from_str(&line).map_err(|e| AuditError::Malformed {
            line: line_no,
            message: e.to_string(),
        })?;
        if record.compute_hash() != record.hash {
            return Err(AuditError::Edited {
                seq: record.seq,
                line: line_no,
            });
        }
        if record.seq != expected || record.prev != prev {
            return Err(AuditError::Broken {
                line: line_no,
                expected_seq: expected,
                found_seq: record.seq,
                after: if expected == 1 {
                    "the start".into()
                } else {
                    format!("seq {}", expected - 1)
                },
                why: if record.prev != prev {
                    "; its `prev` is not the previous record's hash".into()
                } else {
                    String::new()
                },
            });
        }
        prev = record.hash;
        expected += 1;
    }
    Ok((expected - 1, prev))
}

/// An open, verified log that appends records.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<(std::fs::File, u64, String)>,
    mirror: std::sync::OnceLock<Mirror>,
}

/// A callback that sees every record after it is durably appended (scale-out
/// publishes them to the control topic). It runs under the log's lock, in
/// `seq` order, so it must not block.
pub struct Mirror(Box<dyn Fn(&Record) + Send + Sync>);

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mirror")
    }
}

impl AuditLog {
    /// Opens (creating) `path`, verifies it, and repairs a torn last line by
    /// cutting it off and recording the repair. A log that fails to verify
    /// otherwise is an error: appending to a broken chain would hide it.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = read_log(path)?;
        let (complete, torn) = split_torn(&bytes);
        let (records, head) = check_chain(complete)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        if torn > 0 {
            file.set_len(complete.len() as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let log = AuditLog {
            path: path.to_path_buf(),
            state: Mutex::new((file, records, head)),
            mirror: std::sync::OnceLock::new(),
        };
        if torn > 0 {
            tracing::warn!(
                bytes = torn,
                "audit log: cut off a torn last line left by a crash"
            );
            log.append(
                EventKind::LogRepaired,
                Event {
                    detail: format!("cut off a torn last line of {torn} bytes (an interrupted write) when the log was opened"),
                    ..Default::default()
                },
            )?;
        }
        Ok(log)
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and fsyncs it; returns the record.
    pub fn append(&self, kind: EventKind, event: Event) -> Result<Record, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (file, last_seq, head) = &mut *state;
        let mut record = Record {
            seq: *last_seq + 1,
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            kind,
            event,
            prev: head.clone(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        let mut line = serde_json::to_vec(&record).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        use std::io::Seek;
        let end = file.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
            let _ = file.set_len(end);
            return Err(io(e));
        }
        *last_seq = record.seq;
        *head = record.hash.clone();
        if let Some(mirror) = self.mirror.get() {
            (mirror.0)(&record);
        }
        Ok(record)
    }

    /// Sets the callback that sees every record appended from now on (once
    /// per log; returns false if one is already set).
    pub fn set_mirror(&self, mirror: impl Fn(&Record) + Send + Sync + 'static) -> bool {
        self.mirror.set(Mirror(Box::new(mirror))).is_ok()
    }

    /// Records appended so far (the last seq).
    pub fn len(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Whether the log has no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads every record (for `audit tail` / `audit show`); a line that is not
/// a record is an error naming it.
pub fn read_records(path: &Path) -> Result<Vec<Record>, AuditError> {
    let bytes = read_log(path)?;
    let (complete, _) = split_torn(&bytes);
    complete
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line.map_err(|e| AuditError::Malformed {
                line: i + 1,
                message: e.to_string(),
            })?;
            serde_json::from_str(&line).map_err(|e| AuditError::Malformed {
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(name: &str) -> Tmp {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "freshet-audit-{name}-{}-{nanos}",
            std::process::id()
        ));
        Tmp(dir)
    }

    #[test]
    fn records_with_awkward_floats_verify_after_a_round_trip() {
        // serde_json parses floats exactly only with `float_roundtrip`;
        // without it some values re-serialize differently and verify fails.
        let t = tmp("floats");
        let path = t.0.join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let mut x = 0.1f64;
        for i in 0..200 {
            x = x * 1.37 + 1e-7 * i as f64;
            log.append(
                EventKind::Committed,
                Event {
                    observation: json!({"goodput": x, "p99": x / 3.0, "tiny": x * 1e-12}),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        drop(log);
        assert_eq!(verify(&path).unwrap().records, 200);
    }

    fn filled(path: &Path, n: u64) {
        let log = AuditLog::open(path).unwrap();
        for i in 0..n {
            log.append(
                EventKind::Applied,
                Event {
                    from_version: Some(i + 1),
                    to_version: Some(i + 2),
                    diff: json!([{"knob": "extract.slots", "from": i, "to": i + 1}]),
                    actor: json!({"policy": "heuristic"}),
                    ..Default::default()
                },
            )
            .unwrap();
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        std::fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    #[test]
    fn a_clean_log_verifies_and_reopens() {
        let t = tmp("clean");
        let path = t.0.join("audit.jsonl");
        filled(&path, 5);
        let report = verify(&path).unwrap();
        assert_eq!(report.records, 5);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.len(), 5);
        let r = log
            .append(
                EventKind::Paused,
                Event {
                    detail: "operator".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(r.seq, 6);
        assert_eq!(verify(&path).unwrap().records, 6);
    }

    #[test]
    fn edits_removals_and_reorders_are_named() {
        let t = tmp("tamper");
        let path = t.0.join("audit.jsonl");
        filled(&path, 6);
        let good = lines(&path);

        let mut edited = good.clone();
        edited[2] = edited[2].replace("\"to\":3", "\"to\":30");
        write_lines(&path, &edited);
        assert_eq!(
            verify(&path).unwrap_err(),
            AuditError::Edited { seq: 3, line: 3 }
        );

        let mut removed = good.clone();
        removed.remove(3);
        write_lines(&path, &removed);
        let err = verify(&path).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::Broken {
                    line: 4,
                    expected_seq: 4,
                    found_seq: 5,
                    ..
                }
            ),
            "{err}"
        );

        let mut reordered = good.clone();
        reordered.swap(1, 2);
        write_lines(&path, &reordered);
        let err = verify(&path).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::Broken {
                    line: 2,
                    expected_seq: 2,
                    found_seq: 3,
                    ..
                }
            ),
            "{err}"
        );

        let mut last_removed = good.clone();
        last_removed.pop();
        write_lines(&path, &last_removed);
        // Removing the newest record leaves a valid shorter chain; the head
        // hash changes, which is what an external anchor would catch.
        assert_eq!(verify(&path).unwrap().records, 5);

        // A broken log is refused for appending, not papered over.
        write_lines(&path, &edited);
        assert!(AuditLog::open(&path).is_err());
    }

    #[test]
    fn a_torn_last_line_is_repaired_and_recorded() {
        let t = tmp("torn");
        let path = t.0.join("audit.jsonl");
        filled(&path, 3);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"seq\":4,\"time_ms\":17,\"kind\":\"app")
            .unwrap();
        drop(f);
        assert_eq!(verify(&path).unwrap().torn_tail_bytes, 33);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.len(), 4, "the repair itself is record 4");
        let records = read_records(&path).unwrap();
        assert_eq!(records[3].kind, EventKind::LogRepaired);
        assert!(records[3].event.detail.contains("33 bytes"));
        assert_eq!(
            verify(&path).unwrap(),
            VerifyReport {
                records: 4,
                head: records[3].hash.clone(),
                torn_tail_bytes: 0
            }
        );
    }
}
