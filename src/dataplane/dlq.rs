//! Dead letters: work that failed for good, with the reason, kept for replay.
//!
//! The embedded back end is a JSON Lines file in the data dir
//! (`dlq.jsonl`). A record is written and `fsync`ed **before** the source
//! message's share is acknowledged, so a dead letter is never lost: if the
//! write fails, the share is abandoned and the message comes back after a
//! restart. `freshet dlq replay` feeds the records' tasks back into the
//! pipeline and moves the replayed records to `dlq.replayed.jsonl`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Unix milliseconds when it was written.
    pub time_ms: u64,
    /// Stage that gave up: source, search, extract, transform, embed, index.
    pub stage: String,
    /// Error class (the `error_type` label).
    pub error_type: String,
    /// What went wrong.
    pub message: String,
    /// The task to replay (JSON), or the raw input when it did not parse.
    pub task: serde_json::Value,
    /// Where the input came from, e.g. `embedded:0:17` or `file:tasks.jsonl:3`.
    pub source: String,
}

impl DeadLetter {
    /// A dead letter stamped now.
    pub fn new(
        stage: &str,
        error_type: &str,
        message: impl Into<String>,
        task: serde_json::Value,
        source: impl Into<String>,
    ) -> DeadLetter {
        DeadLetter {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            stage: stage.to_string(),
            error_type: error_type.to_string(),
            message: message.into(),
            task,
            source: source.into(),
        }
    }
}

/// A line of a dead-letter file that is not a record: its number and why.
pub type BadLine = (usize, String);

/// The dead-letter file of one data dir.
#[derive(Debug)]
pub struct Dlq {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    written: std::sync::atomic::AtomicU64,
}

impl Dlq {
    /// Opens (creating) `dir/dlq.jsonl` for appending.
    pub fn open(dir: &Path) -> std::io::Result<Dlq> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("dlq.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Dlq {
            path,
            file: Mutex::new(file),
            written: Default::default(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and fsyncs one record. Blocking: call from a blocking context
    /// or accept a short stall (records are rare and small).
    pub fn write(&self, letter: &DeadLetter) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(letter).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let before = file.metadata()?.len();
        if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
            // Never leave a torn record for the next one to be glued onto.
            let _ = file.set_len(before);
            return Err(e);
        }
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(crate::metrics::DLQ_RECORDS_TOTAL, "stage" => letter.stage.clone(), "error_type" => letter.error_type.clone())
            .increment(1);
        Ok(())
    }

    /// Records written by this process.
    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads every record of a dead-letter file; a line that does not parse
    /// is reported with its number (a torn last line after a crash included).
    pub fn read_all(path: &Path) -> std::io::Result<(Vec<DeadLetter>, Vec<BadLine>)> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()))
            }
            Err(e) => return Err(e),
        };
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<DeadLetter>(&line) {
                Ok(letter) => good.push(letter),
                Err(e) => bad.push((i + 1, e.to_string())),
            }
        }
        Ok((good, bad))
    }

    /// Moves every record out of the file (for replay): returns them and
    /// appends them to `dlq.replayed.jsonl`. Lines that are not records stay
    /// in `dlq.jsonl` for a person to look at; nothing is dropped.
    pub fn take_all(&self) -> std::io::Result<Vec<DeadLetter>> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let raw = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut letters = Vec::new();
        let mut keep = String::new();
        for line in raw.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<DeadLetter>(line) {
                Ok(letter) => letters.push(letter),
                Err(_) => {
                    keep.push_str(line);
                    keep.push('\n');
                }
            }
        }
        let replayed = self.path.with_file_name("dlq.replayed.jsonl");
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(replayed)?;
        for letter in &letters {
            let mut line = serde_json::to_vec(letter).map_err(std::io::Error::other)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        out.sync_data()?;
        file.set_len(0)?;
        file.write_all(keep.as_bytes())?;
        file.sync_data()?;
        Ok(letters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_take() {
        let dir = std::env::temp_dir().join(format!("freshet-dlq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dlq = Dlq::open(&dir).unwrap();
        let letter = DeadLetter::new(
            "extract",
            "timeout",
            "slow",
            serde_json::json!({"type": "url", "url": "http://x"}),
            "embedded:0:1",
        );
        dlq.write(&letter).unwrap();
        dlq.write(&letter).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dlq.path())
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        let (good, bad) = Dlq::read_all(dlq.path()).unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 3);
        let taken = dlq.take_all().unwrap();
        assert_eq!(taken.len(), 2);
        let (left, bad) = Dlq::read_all(dlq.path()).unwrap();
        assert_eq!(left.len(), 0);
        assert_eq!(bad.len(), 1, "the torn line stays for a person to see");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
