//! The change-audit log: append-only, hash-chained JSON Lines (docs/ARCHITECTURE.md §5).
//!
//! One record per event (proposal, applied, rejected, rolled back, committed,
//! manual override, prompt reloaded, policy error, paused, resumed, …). Each
//! record carries a sequence number, the time, the config versions, the knob
//! diff, the actor, the observation summary and the guard's verdict, plus
//! `prev` (the previous record's hash) and `hash`: SHA-256 over the record's
//! canonical JSON ([`canonical_json`]: keys sorted by their bytes, no
//! whitespace, integers as written, other numbers in the shortest form that
//! reads back to the same `f64` (ryu), strings escaped as JSON requires and
//! nothing more; `hash` left out). The form is written out here, not left to
//! serde_json, so a crate feature (`preserve_order`, say) cannot change what
//! a hash covers; it is byte for byte what serde_json 1.x wrote for the logs
//! before it, so those still verify. So:
//!
//! - an **edited** record no longer matches its `hash`;
//! - a **removed** record breaks the `seq` sequence and the next `prev`;
//! - **reordered** records break both as well;
//! - **removed newest records** (truncation) leave a valid shorter chain,
//!   which the **head file** catches: `audit.head` beside the log holds the
//!   last `seq` and `hash`, replaced atomically (write, fsync, rename, fsync
//!   the directory) after every append. [`verify`] refuses a log that ends
//!   before the head's seq or whose record at that seq has another hash. A
//!   log one record past its head is a crash between the two writes and is
//!   accepted. A log without a head file (written before heads existed)
//!   still verifies, and the report says it was not anchored;
//! - a **rewritten** file with recomputed hashes passes all of the above,
//!   unless the chain is keyed: with `FRESHET_SERVICE__AUDIT_KEY` set, every
//!   new record's `hash` is an HMAC-SHA256 under that key (and the record
//!   says `"keyed": true`), so nobody without the key can forge one. With a
//!   key set, [`verify`] also refuses a chain whose records after the first
//!   keyed one are not keyed, or that does not end keyed.
//!
//! A head file on the same disk does not stop someone who can rewrite both
//! files and cut the log: [`verify`] prints the head (seq, hash) so an
//! operator can keep it elsewhere. Mirroring the head to the Kafka control
//! topic is not built yet (issue 15, item 3).
//!
//! [`verify`] names the first record where the chain breaks.
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

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The environment variable holding the key of an HMAC chain.
pub const AUDIT_KEY_VAR: &str = "FRESHET_SERVICE__AUDIT_KEY";

/// The key of an HMAC chain from [`AUDIT_KEY_VAR`] (unset or empty: none).
pub fn key_from_env() -> Option<Vec<u8>> {
    std::env::var(AUDIT_KEY_VAR)
        .ok()
        .filter(|k| !k.is_empty())
        .map(String::into_bytes)
}

/// The canonical text of `value` that record hashes cover (module docs).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() => out.push_str(ryu::Buffer::new().format_finite(f)),
                    _ => out.push_str("null"),
                }
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn is_false(b: &bool) -> bool {
    !*b
}

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
    /// Dead letters were replayed through a running instance.
    DlqReplayed,
    /// The service started with the knobs of its settings file (version 1):
    /// whatever the records before say was in force ends here.
    Started,
    /// A proposal waits for a person's approval; the record's seq is the
    /// approval's id.
    ApprovalQueued,
    /// A person rejected a queued proposal (the reason is the detail).
    ApprovalRejected,
    /// A queued proposal expired without a decision.
    ApprovalExpired,
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
        diff_lines(&self.diff).join(", ")
    }
}

/// The changes of a knob diff (`[{knob, from, to}, ...]`, as records and
/// the approval queue carry it) as `knob from -> to`, one per change.
pub fn diff_lines(diff: &Value) -> Vec<String> {
    diff.as_array()
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
                .collect()
        })
        .unwrap_or_default()
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
    /// Whether `hash` is an HMAC under the audit key (absent: false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keyed: bool,
    /// SHA-256 (hex) of this record's canonical JSON without `hash`, or
    /// HMAC-SHA256 under the audit key when `keyed`.
    pub hash: String,
}

impl Record {
    /// The text the hash covers: the canonical JSON without `hash`.
    pub fn canonical(&self) -> String {
        let mut value = serde_json::to_value(self).expect("records serialize");
        if let Value::Object(map) = &mut value {
            map.remove("hash");
        }
        canonical_json(&value)
    }

    /// The (unkeyed) hash this record should carry.
    pub fn compute_hash(&self) -> String {
        hex(&Sha256::digest(self.canonical().as_bytes()))
    }

    /// The HMAC-SHA256 under `key` this record should carry when keyed.
    pub fn compute_mac(&self, key: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(self.canonical().as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `hash` matches the content (in constant time for a MAC).
    fn hash_matches(&self, key: Option<&[u8]>) -> bool {
        match (self.keyed, key) {
            (true, Some(key)) => {
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(self.canonical().as_bytes());
                unhex(&self.hash).is_some_and(|h| mac.verify_slice(&h).is_ok())
            }
            (true, None) => false,
            (false, _) => self.compute_hash() == self.hash,
        }
    }
}

/// Changes shown in one line before the rest are counted (`+N more`).
const LINE_CHANGES: usize = 4;
/// Characters of the detail shown in one line.
const LINE_DETAIL: usize = 120;

impl Record {
    /// The record in one readable line, as `freshet audit tail` and the
    /// demo's summary print it:
    /// `#42 applied v7: extract.slots 8 -> 12 — why (heuristic)`.
    /// The versions, the changes (a proposal's proposed values), the first
    /// line of the detail (cut at [`LINE_DETAIL`] characters) and who acted.
    pub fn summary_line(&self) -> String {
        let e = &self.event;
        let to = e.to_version.map(|v| format!(" v{v}")).unwrap_or_default();
        let what = match self.kind {
            EventKind::Proposal => match e.from_version {
                Some(v) => format!("proposed on v{v}"),
                None => "proposed".to_string(),
            },
            EventKind::Rejected => "refused".to_string(),
            EventKind::ApprovalQueued => "awaiting approval".to_string(),
            EventKind::ApprovalRejected => {
                format!("approval #{} rejected", e.verdict["approval"])
            }
            EventKind::ApprovalExpired => format!("approval #{} expired", e.verdict["approval"]),
            EventKind::Applied if e.actor["approval"].is_u64() => {
                format!("applied{to} (approval #{})", e.actor["approval"])
            }
            EventKind::RolledBack => match e.to_version {
                Some(v) => format!("rolled back (now v{v})"),
                None => "rolled back".to_string(),
            },
            EventKind::Committed if e.detail.starts_with("ineffective") => {
                format!("committed{to} (ineffective)")
            }
            kind => {
                let name = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                    .unwrap_or_else(|| format!("{kind:?}"));
                format!("{name}{to}")
            }
        };
        let changes: Vec<String> = match self.kind {
            // A proposal has no diff yet: what was asked for is in the verdict.
            EventKind::Proposal => e.verdict["changes"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| format!("{} -> {}", c["knob"].as_str().unwrap_or("?"), c["value"]))
                        .collect()
                })
                .unwrap_or_default(),
            EventKind::ApprovalQueued
            | EventKind::ApprovalRejected
            | EventKind::ApprovalExpired => diff_lines(&e.verdict["diff"]),
            _ => diff_lines(&e.diff),
        };
        let mut line = format!("#{} {what}", self.seq);
        if !changes.is_empty() {
            line.push_str(": ");
            line.push_str(&changes[..changes.len().min(LINE_CHANGES)].join(", "));
            if changes.len() > LINE_CHANGES {
                line.push_str(&format!(" (+{} more)", changes.len() - LINE_CHANGES));
            }
        }
        let detail = e.detail.lines().next().unwrap_or("").trim();
        if !detail.is_empty() {
            line.push_str(" — ");
            if detail.chars().count() > LINE_DETAIL {
                line.extend(detail.chars().take(LINE_DETAIL));
                line.push('…');
            } else {
                line.push_str(detail);
            }
        }
        if let Some(actor) = actor_name(&e.actor) {
            line.push_str(&format!(" ({actor})"));
        }
        line
    }
}

/// Who acted, in a few words: the policy (and what it stood in for), the
/// operator, or None for the service itself.
fn actor_name(actor: &Value) -> Option<String> {
    if let Some(policy) = actor["policy"].as_str() {
        return Some(match actor["fallback_for"]["policy"].as_str() {
            Some(failed) => format!("{policy}, for {failed}"),
            None => policy.to_string(),
        });
    }
    actor["operator"]
        .as_str()
        .map(|op| format!("operator {op}"))
}

/// Unix milliseconds as UTC, `2026-12-03 15:10:07Z`.
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The head file: the last record's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Last seq.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// Where the head of the log at `path` is kept (`audit.jsonl` -> `audit.head`).
pub fn head_path(path: &Path) -> PathBuf {
    path.with_extension("head")
}

fn read_head(path: &Path) -> Result<Option<Head>, AuditError> {
    let hp = head_path(path);
    match std::fs::read(&hp) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| AuditError::Io {
                path: hp.display().to_string(),
                message: format!("not a head file ({e})"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::Io {
            path: hp.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// Replaces the head file atomically: temporary file, fsync, rename, fsync
/// of the directory.
fn write_head(path: &Path, head: &Head) -> std::io::Result<()> {
    let hp = head_path(path);
    let tmp = hp.with_extension("head.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(head).map_err(std::io::Error::other)?)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &hp)?;
    if let Some(dir) = hp.parent() {
        if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            let _ = d.sync_all();
        }
    }
    Ok(())
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
    /// The log ends before the seq its head file names: records were cut off.
    #[error("audit log was truncated: it ends at seq {last} but {head_file} names seq {head_seq}")]
    Truncated {
        /// Last seq in the log.
        last: u64,
        /// Seq in the head file.
        head_seq: u64,
        /// The head file.
        head_file: String,
    },
    /// The record at the head's seq has another hash, or the head lags.
    #[error("audit log does not match its head file {head_file}: {message}")]
    HeadMismatch {
        /// The head file.
        head_file: String,
        /// What differs.
        message: String,
    },
    /// A keyed record, but no key to check it.
    #[error(
        "audit record seq {seq} (line {line}) is HMAC-keyed: set {AUDIT_KEY_VAR} to verify it"
    )]
    KeyNeeded {
        /// Sequence number.
        seq: u64,
        /// Line.
        line: usize,
    },
    /// With a key set, records are not keyed where they must be.
    #[error("audit record seq {seq} (line {line}) has no HMAC although the chain is keyed{why}: the file was rewritten without the key")]
    NotKeyed {
        /// Sequence number.
        seq: u64,
        /// Line.
        line: usize,
        /// Context.
        why: String,
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
    /// Whether the last record is HMAC-keyed (checked with the key).
    pub keyed: bool,
    /// Whether a head file was there and matched (false: a log from before
    /// head files, or the head file was removed).
    pub anchored: bool,
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

/// Reads and checks a whole log with the key of [`AUDIT_KEY_VAR`], if set;
/// the error names the first bad record.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    verify_with_key(path, key_from_env().as_deref())
}

/// [`verify`] with an explicit key (None: an unkeyed chain).
pub fn verify_with_key(path: &Path, key: Option<&[u8]>) -> Result<VerifyReport, AuditError> {
    let bytes = read_log(path)?;
    let (complete, torn) = split_torn(&bytes);
    let chain = check_chain(complete, key, true)?;
    let anchored = check_head(path, &chain)?;
    Ok(VerifyReport {
        records: chain.records,
        head: chain.last_hash,
        torn_tail_bytes: torn as u64,
        keyed: chain.last_keyed,
        anchored,
    })
}

/// What a chain check found.
struct Chain {
    records: u64,
    last_hash: String,
    last_keyed: bool,
    /// Hash per seq (index seq - 1), to check the head against.
    hashes: Vec<String>,
}

/// Checks the log against its head file; true when there is one.
fn check_head(path: &Path, chain: &Chain) -> Result<bool, AuditError> {
    let Some(head) = read_head(path)? else {
        return Ok(false);
    };
    let head_file = head_path(path).display().to_string();
    if chain.records < head.seq {
        return Err(AuditError::Truncated {
            last: chain.records,
            head_seq: head.seq,
            head_file,
        });
    }
    if head.seq > 0 && chain.hashes[(head.seq - 1) as usize] != head.hash {
        return Err(AuditError::HeadMismatch {
            head_file,
            message: format!(
                "the record at seq {} has hash {}, the head says {}",
                head.seq,
                chain.hashes[(head.seq - 1) as usize],
                head.hash
            ),
        });
    }
    if chain.records > head.seq + 1 {
        return Err(AuditError::HeadMismatch {
            head_file,
            message: format!(
                "the head names seq {} but the log runs to seq {}: the head was not updated (or an older copy was put back)",
                head.seq, chain.records
            ),
        });
    }
    Ok(true)
}

/// Splits off a final line without a newline.
fn split_torn(bytes: &[u8]) -> (&[u8], usize) {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => (&bytes[..=i], bytes.len() - i - 1),
        None => (&bytes[..0], bytes.len()),
    }
}

/// Checks every record; `require_keyed_tail`: with a key, the chain must
/// end in a keyed record (verify), which a log whose key was just set does
/// not yet do when it is opened.
fn check_chain(
    bytes: &[u8],
    key: Option<&[u8]>,
    require_keyed_tail: bool,
) -> Result<Chain, AuditError> {
    let mut prev = GENESIS.to_string();
    let mut expected = 1u64;
    let mut seen_keyed = false;
    let mut last_keyed = false;
    let mut hashes = Vec::new();
    let mut last_line = 0;
    for (i, line) in bytes.lines().enumerate() {
        let line_no = i + 1;
        last_line = line_no;
        let line = line.map_err(|e| AuditError::Malformed {
            line: line_no,
            message: e.to_string(),
        })?;
        let record: Record = serde_json::from_str(&line).map_err(|e| AuditError::Malformed {
            line: line_no,
            message: e.to_string(),
        })?;
        if record.keyed && key.is_none() {
            return Err(AuditError::KeyNeeded {
                seq: record.seq,
                line: line_no,
            });
        }
        if key.is_some() && seen_keyed && !record.keyed {
            return Err(AuditError::NotKeyed {
                seq: record.seq,
                line: line_no,
                why: " (an earlier record is keyed)".into(),
            });
        }
        if !record.hash_matches(key) {
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
        seen_keyed |= record.keyed;
        last_keyed = record.keyed;
        hashes.push(record.hash.clone());
        prev = record.hash;
        expected += 1;
    }
    if require_keyed_tail && key.is_some() && expected > 1 && !last_keyed {
        return Err(AuditError::NotKeyed {
            seq: expected - 1,
            line: last_line,
            why: format!(
                " ({AUDIT_KEY_VAR} is set; if it was set only now, start the service once so that a keyed record ends the chain)"
            ),
        });
    }
    Ok(Chain {
        records: expected - 1,
        last_hash: prev,
        last_keyed,
        hashes,
    })
}

/// An open, verified log that appends records.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    key: Option<Vec<u8>>,
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
    /// Opens (creating) `path`, verifies it (with the key of
    /// [`AUDIT_KEY_VAR`], if set, which then keys every new record), and
    /// repairs a torn last line by cutting it off and recording the repair.
    /// A log that fails to verify otherwise is an error: appending to a
    /// broken chain would hide it.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with_key(path, key_from_env())
    }

    /// [`open`](Self::open) with an explicit key (None: unkeyed records).
    pub fn open_with_key(path: &Path, key: Option<Vec<u8>>) -> Result<AuditLog, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = read_log(path)?;
        let (complete, torn) = split_torn(&bytes);
        let chain = check_chain(complete, key.as_deref(), false)?;
        check_head(path, &chain)?;
        let (records, head) = (chain.records, chain.last_hash);
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
            key,
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
            keyed: self.key.is_some(),
            hash: String::new(),
        };
        record.hash = match &self.key {
            Some(key) => record.compute_mac(key),
            None => record.compute_hash(),
        };
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
        // The record is durable; the head follows it (a crash in between
        // leaves the log one record past its head, which verifies).
        write_head(
            &self.path,
            &Head {
                seq: record.seq,
                hash: record.hash.clone(),
            },
        )
        .map_err(|e| AuditError::Io {
            path: head_path(&self.path).display().to_string(),
            message: format!("cannot replace the head file: {e}"),
        })?;
        if let Some(mirror) = self.mirror.get() {
            (mirror.0)(&record);
        }
        Ok(record)
    }

    /// Verifies the whole log as [`verify_with_key`] does, with this log's
    /// key, while it is being appended to. The file is read without the
    /// log's lock first (a long log does not hold up changes); an append
    /// that lands between reading the records and reading the head file
    /// looks like a truncation, so a failure is checked once more with
    /// appends held off, and only a failure then is reported.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        match verify_with_key(&self.path, self.key.as_deref()) {
            Ok(report) => Ok(report),
            Err(_) => {
                let _appends = self.state.lock().unwrap_or_else(|p| p.into_inner());
                verify_with_key(&self.path, self.key.as_deref())
            }
        }
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

    #[test]
    fn verifying_while_records_are_appended_never_fails_and_an_edit_is_caught() {
        let t = tmp("live-verify");
        let path = t.0.join("audit.jsonl");
        let log = std::sync::Arc::new(AuditLog::open(&path).unwrap());
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..400u64 {
                    log.append(
                        EventKind::Committed,
                        Event {
                            detail: format!("record {i}"),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                }
            })
        };
        let mut checks = 0;
        while !writer.is_finished() {
            if let Err(e) = log.verify() {
                panic!("a log being appended to failed to verify: {e}");
            }
            checks += 1;
        }
        writer.join().unwrap();
        assert!(checks > 1, "{checks} checks");
        assert_eq!(log.verify().unwrap().records, 400);
        // An edit behind the log's back is reported.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("record 7\"", "record 8\"", 1)).unwrap();
        assert!(matches!(
            log.verify(),
            Err(AuditError::Edited { seq: 8, .. })
        ));
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
        // Removing the newest record leaves a valid shorter chain: the head
        // file catches it.
        let err = verify(&path).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::Truncated {
                    last: 5,
                    head_seq: 6,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            AuditLog::open(&path).is_err(),
            "a truncated log is not appended to"
        );
        last_removed.truncate(2);
        write_lines(&path, &last_removed);
        assert!(matches!(
            verify(&path).unwrap_err(),
            AuditError::Truncated { last: 2, .. }
        ));
        // A log from before head files (no head) still verifies, unanchored.
        write_lines(&path, &good);
        std::fs::remove_file(head_path(&path)).unwrap();
        let report = verify(&path).unwrap();
        assert_eq!((report.records, report.anchored), (6, false));

        // A broken log is refused for appending, not papered over.
        write_lines(&path, &edited);
        assert!(AuditLog::open(&path).is_err());
    }

    #[test]
    fn the_canonical_form_ignores_key_order_and_is_fixed() {
        let t = tmp("canon");
        let path = t.0.join("audit.jsonl");
        let log = AuditLog::open_with_key(&path, None).unwrap();
        let r = log
            .append(
                EventKind::Committed,
                Event {
                    observation: json!({"zeta": 1.5e-9, "alpha": {"y": 2, "b": [0.1, -3]}, "mid": "tab\there \"q\" \u{1}"}),
                    actor: json!({"policy": "heuristic"}),
                    detail: "ok".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        drop(log);
        // The same record with its keys written in reverse order, at every
        // level, hashes the same.
        fn reversed(v: &Value) -> String {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    keys.reverse();
                    let parts: Vec<String> = keys
                        .iter()
                        .map(|k| {
                            format!("{}:{}", serde_json::to_string(k).unwrap(), reversed(&m[*k]))
                        })
                        .collect();
                    format!("{{{}}}", parts.join(","))
                }
                Value::Array(a) => {
                    format!("[{}]", a.iter().map(reversed).collect::<Vec<_>>().join(","))
                }
                other => other.to_string(),
            }
        }
        let line = lines(&path).remove(0);
        let text = reversed(&serde_json::from_str::<Value>(&line).unwrap());
        assert!(!text.starts_with("{\"actor\""), "{text}");
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back.compute_hash(), r.hash);
        write_lines(&path, &[text]);
        assert_eq!(verify_with_key(&path, None).unwrap().records, 1);
        // The form itself, byte for byte: sorted keys, ryu floats.
        assert_eq!(
            canonical_json(
                &json!({"b": [1.0, 1e21, 1.5e-9, -0.0], "a": "x\u{7}\n", "c": {"z": null, "y": true}, "n": -3})
            ),
            r#"{"a":"x\u0007\n","b":[1.0,1e21,1.5e-9,-0.0],"c":{"y":true,"z":null},"n":-3}"#
        );
    }

    #[test]
    fn a_keyed_chain_refuses_a_rewrite_with_recomputed_hashes() {
        let t = tmp("hmac");
        let path = t.0.join("audit.jsonl");
        let key = b"k3y-for-the-chain".to_vec();
        let log = AuditLog::open_with_key(&path, Some(key.clone())).unwrap();
        for i in 0..4u64 {
            log.append(
                EventKind::Applied,
                Event {
                    diff: json!([{"knob": "extract.slots", "from": i, "to": i + 1}]),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        drop(log);
        let report = verify_with_key(&path, Some(&key)).unwrap();
        assert!(report.keyed && report.anchored && report.records == 4);
        assert!(matches!(
            verify_with_key(&path, None).unwrap_err(),
            AuditError::KeyNeeded { seq: 1, .. }
        ));
        assert!(matches!(
            verify_with_key(&path, Some(b"wrong")).unwrap_err(),
            AuditError::Edited { seq: 1, .. }
        ));
        // Rewrite record 2 and recompute every hash (and the head) without the key.
        let mut records = read_records(&path).unwrap();
        records[1].event.diff = json!([{"knob": "extract.slots", "from": 1, "to": 99}]);
        let forge = |records: &mut Vec<Record>, keyed: bool| {
            let mut prev = GENESIS.to_string();
            for r in records.iter_mut() {
                r.prev = prev.clone();
                r.keyed = keyed;
                r.hash = r.compute_hash();
                prev = r.hash.clone();
            }
            let text: Vec<String> = records
                .iter()
                .map(|r| serde_json::to_string(r).unwrap())
                .collect();
            write_lines(&path, &text);
            write_head(
                &path,
                &Head {
                    seq: records.len() as u64,
                    hash: prev,
                },
            )
            .unwrap();
        };
        forge(&mut records, true);
        assert!(matches!(
            verify_with_key(&path, Some(&key)).unwrap_err(),
            AuditError::Edited { seq: 1, .. }
        ));
        // ... or as an unkeyed chain: refused while the key is set.
        forge(&mut records, false);
        assert!(matches!(
            verify_with_key(&path, Some(&key)).unwrap_err(),
            AuditError::NotKeyed { .. }
        ));
        // (Without the key nothing tells the forgery apart: that is what the key is for.)
        assert!(verify_with_key(&path, None).is_ok());
    }

    #[test]
    fn an_unkeyed_log_takes_a_key_later() {
        let t = tmp("later");
        let path = t.0.join("audit.jsonl");
        filled(&path, 2);
        let key = b"new-key".to_vec();
        // Opening with a new key is fine; verify wants a keyed end until then.
        let log = AuditLog::open_with_key(&path, Some(key.clone())).unwrap();
        assert!(matches!(
            verify_with_key(&path, Some(&key)).unwrap_err(),
            AuditError::NotKeyed { seq: 2, .. }
        ));
        log.append(EventKind::Started, Event::default()).unwrap();
        let report = verify_with_key(&path, Some(&key)).unwrap();
        assert_eq!((report.records, report.keyed), (3, true));
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
                torn_tail_bytes: 0,
                keyed: false,
                anchored: true,
            }
        );
    }

    fn record(kind: EventKind, event: Event) -> Record {
        Record {
            seq: 42,
            time_ms: 0,
            kind,
            event,
            prev: GENESIS.into(),
            keyed: false,
            hash: String::new(),
        }
    }

    #[test]
    fn a_record_reads_in_one_line() {
        let applied = record(
            EventKind::Applied,
            Event {
                from_version: Some(6),
                to_version: Some(7),
                diff: json!([{"knob": "extract.slots", "from": 8, "to": 12}]),
                actor: json!({"policy": "heuristic"}),
                detail: "extract saturated\nsecond line".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            applied.summary_line(),
            "#42 applied v7: extract.slots 8 -> 12 — extract saturated (heuristic)"
        );
        let proposal = record(
            EventKind::Proposal,
            Event {
                from_version: Some(3),
                actor: json!({"policy": "heuristic", "fallback_for": {"policy": "llm"}}),
                verdict: json!({"changes": [{"knob": "embed.batch", "value": 64, "reason": ""}]}),
                detail: "x".repeat(300),
                ..Default::default()
            },
        );
        let line = proposal.summary_line();
        assert!(
            line.starts_with("#42 proposed on v3: embed.batch -> 64 — xxx"),
            "{line}"
        );
        assert!(line.ends_with("x… (heuristic, for llm)"), "{line}");
        let many: Vec<Value> = (0..6)
            .map(|i| json!({"knob": format!("k{i}"), "from": i, "to": i + 1}))
            .collect();
        let over = record(
            EventKind::Override,
            Event {
                to_version: Some(2),
                diff: Value::Array(many),
                actor: json!({"operator": "alice"}),
                ..Default::default()
            },
        );
        assert_eq!(
            over.summary_line(),
            "#42 override v2: k0 0 -> 1, k1 1 -> 2, k2 2 -> 3, k3 3 -> 4 (+2 more) (operator alice)"
        );
        assert_eq!(
            record(EventKind::LogRepaired, Event::default()).summary_line(),
            "#42 log repaired"
        );
        let diff = json!([{"knob": "transform.min_quality", "from": 0.2, "to": 0.3}]);
        let queued = record(
            EventKind::ApprovalQueued,
            Event {
                from_version: Some(4),
                actor: json!({"policy": "llm"}),
                verdict: json!({"changes": [], "diff": diff}),
                detail: "shells pass the bar".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            queued.summary_line(),
            "#42 awaiting approval: transform.min_quality 0.2 -> 0.3 — shells pass the bar (llm)"
        );
        let approved = record(
            EventKind::Applied,
            Event {
                to_version: Some(5),
                diff: diff.clone(),
                actor: json!({"operator": "alice", "approval": 41, "proposed_by": {"policy": "llm"}}),
                ..Default::default()
            },
        );
        assert_eq!(
            approved.summary_line(),
            "#42 applied v5 (approval #41): transform.min_quality 0.2 -> 0.3 (operator alice)"
        );
        let rejected = record(
            EventKind::ApprovalRejected,
            Event {
                actor: json!({"operator": "bob"}),
                verdict: json!({"approval": 41, "diff": diff}),
                detail: "not during the migration".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            rejected.summary_line(),
            "#42 approval #41 rejected: transform.min_quality 0.2 -> 0.3 — not during the migration (operator bob)"
        );
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc_time(1_796_310_607_123), "2026-12-03 15:10:07Z");
    }
}
