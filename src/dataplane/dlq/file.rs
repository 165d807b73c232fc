//! Dead letters in a JSON Lines file: `<data_dir>/dlq.jsonl`, one record a
//! line, each `fsync`ed before the write returns. A replay moves the
//! records to `dlq.replayed.jsonl` and pushes their tasks on the embedded
//! queue.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{BadLine, DeadLetter, DeadLetterSink, Dlq, ReplayError, ReplayTarget, Replayed};
use crate::dataplane::task::Task;

/// The dead-letter file of one data dir.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl FileSink {
    /// Opens (creating) `dir/dlq.jsonl` for appending.
    pub fn open(dir: &Path) -> std::io::Result<FileSink> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("dlq.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(FileSink {
            path,
            file: Mutex::new(file),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
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

#[async_trait::async_trait]
impl DeadLetterSink for FileSink {
    fn write(&self, letter: &DeadLetter) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(letter).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let before = file.metadata()?.len();
        if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
            // Never leave a torn record for the next one to be glued onto.
            let _ = file.set_len(before);
            return Err(e);
        }
        Ok(())
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    /// Moves every record out of the file and pushes its task on the
    /// embedded queue (as `dlq-replay`); records whose task does not parse
    /// are written back unchanged.
    async fn replay(&self, dlq: &Arc<Dlq>, target: &ReplayTarget) -> Result<Replayed, ReplayError> {
        let file_error = |source| ReplayError::File {
            path: self.location(),
            source,
        };
        let letters = self.take_all().map_err(file_error)?;
        let mut replayed = 0;
        let mut kept = Vec::new();
        for letter in letters {
            match serde_json::from_value::<Task>(letter.task.clone()) {
                Ok(task) => {
                    if !target.embedded.resubmit(task, "dlq-replay").await {
                        return Err(ReplayError::PipelineClosed);
                    }
                    replayed += 1;
                }
                Err(_) => kept.push(letter),
            }
        }
        for letter in &kept {
            dlq.write(letter).map_err(file_error)?;
        }
        Ok(Replayed {
            replayed,
            kept: kept.len(),
        })
    }
}

/// Reads every record of a dead-letter file; a line that does not parse
/// is reported with its number (a torn last line after a crash included).
pub fn read_all(path: &Path) -> std::io::Result<(Vec<DeadLetter>, Vec<BadLine>)> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_take() {
        let dir = std::env::temp_dir().join(format!("freshet-dlq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dlq = FileSink::open(&dir).unwrap();
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
