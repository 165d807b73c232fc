//! One writer per data dir: `<data_dir>/freshet.lock`, held with an
//! exclusive `flock` for as long as a [`Runtime`](crate::service::Runtime)
//! lives (`run`, `demo`, `dlq replay`, the benches).
//!
//! The file records the holder as JSON (pid, command line, start time and,
//! once `run` listens, its HTTP address), so a second process can say who
//! holds the directory, and `freshet query` can ask that process's
//! `POST /v1/search` instead of opening the index (which only one process
//! can). The kernel drops the lock when the holder exits, even on SIGKILL:
//! a file left behind by a dead holder is not held and is taken over.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "freshet.lock";

/// Who holds a data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// The holder's command line (program name and arguments).
    pub command: String,
    /// Unix ms when it took the lock.
    pub started_ms: u64,
    /// The HTTP address it serves (`/v1/search`, `/v1/ingest`, the admin
    /// API), once it listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} (`{}`", self.pid, self.command)?;
        match &self.addr {
            Some(addr) => write!(f, ", serving http://{addr})"),
            None => write!(f, ", no HTTP endpoint)"),
        }
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("the data dir {} is in use by another freshet process: {}; stop it first, or use another data dir ([service] data_dir / --data-dir)", .dir.display(), .holder.as_ref().map_or_else(|| "its lock file names no holder yet".to_string(), |h| h.to_string()))]
    Held {
        /// The data dir.
        dir: PathBuf,
        /// What its lock file says, if it could be read.
        holder: Option<Holder>,
    },
    /// The file could not be created, locked or written.
    #[error("cannot lock the data dir {}: {source}", .dir.display())]
    Io {
        /// The data dir.
        dir: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the data dir.
#[derive(Debug)]
pub struct DataDirLock {
    file: Mutex<std::fs::File>,
    dir: PathBuf,
    holder: Mutex<Holder>,
}

fn open(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
}

/// Tries the exclusive lock: `Ok(true)` taken, `Ok(false)` held elsewhere.
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    // Called through the trait: std's inherent `File::try_lock` is newer
    // than the crate's minimum Rust version.
    match fs4::FileExt::try_lock(file) {
        Ok(()) => Ok(true),
        Err(fs4::TryLockError::WouldBlock) => Ok(false),
        Err(fs4::TryLockError::Error(e)) => Err(e),
    }
}

fn read_holder(dir: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 {
                Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(a)
            } else {
                a
            }
        })
        .collect();
    let mut line = args.join(" ");
    if line.len() > 256 {
        let mut cut = 256;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

impl DataDirLock {
    /// Takes the lock on `dir` (creating the directory and the file), or
    /// says who holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let file = open(dir).map_err(io)?;
        if !try_lock(&file).map_err(io)? {
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder: read_holder(dir),
            });
        }
        let lock = DataDirLock {
            file: Mutex::new(file),
            dir: dir.to_path_buf(),
            holder: Mutex::new(Holder {
                pid: std::process::id(),
                command: command_line(),
                started_ms: crate::dataplane::task::now_ms(),
                addr: None,
            }),
        };
        lock.write().map_err(io)?;
        Ok(lock)
    }

    /// Records the HTTP address this process serves.
    pub fn set_addr(&self, addr: std::net::SocketAddr) -> Result<(), LockError> {
        self.holder.lock().unwrap_or_else(|p| p.into_inner()).addr = Some(addr.to_string());
        self.write().map_err(|source| LockError::Io {
            dir: self.dir.clone(),
            source,
        })
    }

    /// What the lock file says about this process.
    pub fn holder(&self) -> Holder {
        self.holder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn write(&self) -> std::io::Result<()> {
        let text = serde_json::to_string(&self.holder())?;
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }
}

/// Who holds `dir` now, if another process (or another lock in this one)
/// does; `None` when it is free (a stale file of a dead holder included).
pub fn holder_of(dir: &Path) -> Result<Option<Holder>, LockError> {
    let path = dir.join(LOCK_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LockError::Io {
                dir: dir.to_path_buf(),
                source,
            })
        }
    };
    let taken = try_lock(&file).map_err(|source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    })?;
    if taken {
        // Free: ours for a moment, released when `file` closes.
        return Ok(None);
    }
    // The holder may still be writing its record: give it a moment.
    for _ in 0..20 {
        if let Some(h) = read_holder(dir) {
            return Ok(Some(h));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(LockError::Held {
        dir: dir.to_path_buf(),
        holder: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "freshet-lock-{name}-{}-{}",
            std::process::id(),
            crate::dataplane::task::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn one_holder_at_a_time_and_it_is_named() {
        let dir = temp("one");
        assert_eq!(holder_of(&dir).unwrap(), None);
        let lock = DataDirLock::acquire(&dir).unwrap();
        lock.set_addr("127.0.0.1:4321".parse().unwrap()).unwrap();
        let held = holder_of(&dir).unwrap().expect("held");
        assert_eq!(held.pid, std::process::id());
        assert_eq!(held.addr.as_deref(), Some("127.0.0.1:4321"));
        match DataDirLock::acquire(&dir) {
            Err(e @ LockError::Held { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("pid {}", std::process::id())),
                    "{text}"
                );
                assert!(text.contains("http://127.0.0.1:4321"), "{text}");
            }
            other => panic!("a second lock was granted: {other:?}"),
        }
        drop(lock);
        assert_eq!(holder_of(&dir).unwrap(), None, "released on drop");
        let again = DataDirLock::acquire(&dir).unwrap();
        assert_eq!(again.holder().addr, None, "a stale record is replaced");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
