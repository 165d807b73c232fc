//! Dead letters in a JSON Lines file: `<data_dir>/dlq.jsonl`, one record a
//! line, each `fsync`ed before the write returns. A replay moves the
//! records to `dlq.replayed.jsonl` and pushes their tasks on the embedded
//! queue.

use std::io::Write;
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
    /// appends them to `dlq.replayed.jsonl`. Lines that are not records
    /// (a torn last line after a crash, bytes that are not UTF-8, JSON that
    /// is not a record) stay in `dlq.jsonl` byte for byte, for a person to
    /// look at; nothing is dropped. An unreadable file is an error, never
    /// an empty one: the file is rewritten only from what was read.
    ///
    /// The rewrite is atomic: the kept lines go to `dlq.jsonl.tmp`, which
    /// is `fsync`ed and renamed over `dlq.jsonl` (then the directory is
    /// `fsync`ed), so a crash leaves either the old file or the new one.
    /// Records written meanwhile wait on the same lock.
    pub fn take_all(&self) -> std::io::Result<Vec<DeadLetter>> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let raw = match std::fs::read(&self.path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut letters = Vec::new();
        let mut keep = Vec::new();
        for (_, line, parsed) in parse_lines(&raw) {
            match parsed {
                Ok(letter) => letters.push(letter),
                Err(_) => {
                    keep.extend_from_slice(line);
                    keep.push(b'\n');
                }
            }
        }
        if letters.is_empty() {
            return Ok(letters);
        }
        let replayed = self.path.with_file_name("dlq.replayed.jsonl");
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(replayed)?;
        let mut moved = Vec::new();
        for letter in &letters {
            serde_json::to_writer(&mut moved, letter).map_err(std::io::Error::other)?;
            moved.push(b'\n');
        }
        out.write_all(&moved)?;
        out.sync_data()?;

        let tmp = self.path.with_file_name("dlq.jsonl.tmp");
        {
            let mut t = std::fs::File::create(&tmp)?;
            t.write_all(&keep)?;
            t.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        Ok(letters)
    }
}

/// The non-empty lines of a dead-letter file with their 1-based numbers,
/// each parsed as a record. Works on bytes: a line that is not UTF-8 is a
/// bad line like any other, not a reason to read the file as empty.
fn parse_lines(raw: &[u8]) -> impl Iterator<Item = (usize, &[u8], serde_json::Result<DeadLetter>)> {
    raw.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| (i + 1, line, serde_json::from_slice::<DeadLetter>(line)))
}

#[async_trait::async_trait]
impl DeadLetterSink for FileSink {
    fn write(&self, letter: &DeadLetter) -> std::io::Result<()> {
        self.write_batch(std::slice::from_ref(letter))
    }

    /// One write and one `fsync` for all of them; on failure the file is
    /// cut back to where it was, so no torn record is left for the next one
    /// to be glued onto.
    fn write_batch(&self, letters: &[DeadLetter]) -> std::io::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for letter in letters {
            serde_json::to_writer(&mut lines, letter).map_err(std::io::Error::other)?;
            lines.push(b'\n');
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let before = file.metadata()?.len();
        if let Err(e) = file.write_all(&lines).and_then(|()| file.sync_data()) {
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
/// is reported with its number (a torn last line after a crash, or bytes
/// that are not UTF-8, included).
pub fn read_all(path: &Path) -> std::io::Result<(Vec<DeadLetter>, Vec<BadLine>)> {
    let raw = match std::fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (n, _, parsed) in parse_lines(&raw) {
        match parsed {
            Ok(letter) => good.push(letter),
            Err(e) => bad.push((n, e.to_string())),
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

    #[test]
    fn a_torn_multibyte_character_is_kept_not_truncated() {
        let dir = std::env::temp_dir().join(format!("freshet-dlq-utf8-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dlq = FileSink::open(&dir).unwrap();
        let letter = DeadLetter::new(
            "extract",
            "http_status",
            "caf\u{e9} ferm\u{e9}",
            serde_json::json!({"type": "url", "url": "http://x/caf\u{e9}"}),
            "embedded:0:1",
        );
        dlq.write(&letter).unwrap();
        // A crash in the middle of "é" (0xC3 0xA9): the second byte is lost.
        let torn = b"{\"time_ms\":1,\"message\":\"caf\xC3";
        std::fs::OpenOptions::new()
            .append(true)
            .open(dlq.path())
            .unwrap()
            .write_all(torn)
            .unwrap();
        dlq.write(&letter).unwrap();

        let (good, bad) = Dlq::read_all(dlq.path()).unwrap();
        assert_eq!(
            good.len(),
            1,
            "the torn line swallows the record glued to it"
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 2);

        let taken = dlq.take_all().unwrap();
        assert_eq!(taken, vec![letter.clone()]);
        let left = std::fs::read(dlq.path()).unwrap();
        assert!(left.starts_with(torn), "the bad line is kept byte for byte");
        // The sink still appends after the rewrite.
        dlq.write(&letter).unwrap();
        let (good, bad) = Dlq::read_all(dlq.path()).unwrap();
        assert_eq!((good.len(), bad.len()), (1, 1));
        let moved = std::fs::read_to_string(dir.join("dlq.replayed.jsonl")).unwrap();
        assert_eq!(moved.lines().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
