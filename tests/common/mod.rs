//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;

/// A scenario with fast, fault-free endpoints.
pub const FAST: &str = r#"
name = "fast"
[[phase]]
name = "only"
duration_s = 600
js_share = 0.0
[phase.search]
latency_ms = { p50 = 2, p99 = 8 }
[phase.render]
latency_ms = { p50 = 5, p99 = 20 }
[phase.pages]
latency_ms = { p50 = 2, p99 = 8 }
"#;

/// Appended to [`FAST`]: `citybeat.sim.test` serves only JavaScript shells.
pub const CITYBEAT_SHELLS: &str = r#"
[phase.domains."citybeat.sim.test"]
js_share = 1.0
"#;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, unique, not yet created directory.
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("freshet-{name}-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the `freshet` binary from the package root: (success, stdout, stderr).
pub fn freshet(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the freshet binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub mod kafka;
