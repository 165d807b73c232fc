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
    output(std::process::Command::new(env!("CARGO_BIN_EXE_freshet")).args(args))
}

/// Runs the `freshet` binary with `env` set and the caller's token
/// variables (`FRESHET_SERVICE__READ_TOKEN`, `__ADMIN_TOKEN`) removed:
/// (success, stdout, stderr).
#[allow(dead_code)]
pub fn freshet_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    output(
        std::process::Command::new(env!("CARGO_BIN_EXE_freshet"))
            .args(args)
            .env_remove("FRESHET_SERVICE__READ_TOKEN")
            .env_remove("FRESHET_SERVICE__ADMIN_TOKEN")
            .envs(env.iter().copied()),
    )
}

fn output(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the freshet binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `freshet` child process whose stderr is collected line by line.
#[allow(dead_code)]
pub struct Logged {
    /// The child.
    pub child: std::process::Child,
    /// Returns the stderr lines once the child has exited.
    pub stderr: std::thread::JoinHandle<Vec<String>>,
}

/// Starts `bin ARGS` with stdout discarded and stderr collected.
#[allow(dead_code)]
pub fn spawn_logged(bin: &str, args: &[&str]) -> Logged {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the freshet binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    Logged { child, stderr }
}

/// Test settings, built as a TOML table so each test states only what it
/// changes. Starts from `[embed] backend = "hash"` with 64 dimensions; the
/// other defaults are freshet's own.
pub struct TestSettings(toml::Table);

impl TestSettings {
    /// Settings writing the index, dead letters and audit log to `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> TestSettings {
        TestSettings(toml::Table::new())
            .set("service.data_dir", data_dir.display().to_string())
            .set("embed.backend", "hash")
            .set("embed.dimensions", 64)
    }

    /// Sets the value at a dotted path (`section.key`; no quoted parts).
    pub fn set(mut self, path: &str, value: impl Into<toml::Value>) -> TestSettings {
        let mut parts: Vec<&str> = path.split('.').collect();
        let key = parts.pop().expect("a non-empty path");
        let mut table = &mut self.0;
        for part in parts {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("a table on the path");
        }
        table.insert(key.to_string(), value.into());
        self
    }

    /// Points search and rendering at the simulator at `base_url` (its key
    /// `sim-key`) and resolves its `*.sim.test` hosts to loopback.
    pub fn sim(self, base_url: &str) -> TestSettings {
        self.set("provider.base_url", base_url)
            .set("provider.api_key", "sim-key")
            .merge("[extract.resolve]\n\"sim.test\" = \"127.0.0.1\"\n")
    }

    /// Merges a TOML fragment in (tables merge key by key, the fragment wins).
    pub fn merge(mut self, fragment: &str) -> TestSettings {
        fn merge_into(into: &mut toml::Table, from: toml::Table) {
            for (k, v) in from {
                match (into.get_mut(&k), v) {
                    (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge_into(a, b),
                    (_, v) => {
                        into.insert(k, v);
                    }
                }
            }
        }
        let fragment: toml::Table = fragment.parse().expect("a valid TOML fragment");
        merge_into(&mut self.0, fragment);
        self
    }

    /// The settings as the text of a TOML file.
    pub fn toml(&self) -> String {
        toml::to_string(&self.0).expect("the table renders")
    }

    /// Writes the settings file to `path` (for a child process's
    /// `--config`), creating its directory; returns the path as text.
    pub fn write(&self, path: &std::path::Path) -> String {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the settings file's directory");
        }
        std::fs::write(path, self.toml()).expect("the settings file is written");
        path.display().to_string()
    }

    /// The settings, as freshet parses and validates them.
    pub fn build(&self) -> freshet::settings::Settings {
        freshet::settings::Settings::from_toml(&self.toml(), "test", std::iter::empty())
            .expect("test settings")
    }
}

pub mod bench;
pub mod kafka;

/// Polls `{base}/readyz` until it answers 200; panics after `within`.
pub fn wait_ready(client: &reqwest::blocking::Client, base: &str, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send() {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "freshet run did not become ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Starts `freshet --config CONFIG run` with stdout discarded and stderr
/// written to `log`.
#[allow(dead_code)]
pub fn spawn_run(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["--config", config.to_str().expect("a UTF-8 path"), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("the log file can be created"))
        .spawn()
        .expect("the freshet binary starts")
}

/// Polls `{base}/readyz` of the `run` process `child` (named `name`, its
/// stderr in `log`) until it answers 200; panics with the log if the
/// process exits or `within` passes.
#[allow(dead_code)]
pub fn wait_running(
    child: &mut std::process::Child,
    name: &str,
    base: &str,
    log: &std::path::Path,
    within: std::time::Duration,
) {
    let logs = || std::fs::read_to_string(log).unwrap_or_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("a client");
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send() {
            if r.status() == 200 {
                return;
            }
        }
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            panic!("{name} exited with {status}:\n{}", logs());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not ready:\n{}",
            logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Posts NDJSON `body` to `{base}/v1/ingest` with `token`; the JSON answer.
pub fn ingest(
    client: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    body: String,
) -> serde_json::Value {
    client
        .post(format!("{base}/v1/ingest"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .expect("the ingest request is answered")
        .json()
        .expect("the ingest answer is JSON")
}

/// Sends SIGTERM to `child` and waits for it to exit, at most `within`;
/// `None` if it is still running then.
pub fn terminate(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "SIGTERM could not be sent");
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A loopback port that was free a moment ago (for a child process to bind).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("its address").port()
}

/// The service's HTTP listener on a loopback port, serving a runtime.
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Send `true` to stop the listener.
    pub stop: tokio::sync::watch::Sender<bool>,
    /// The listener's task; ends after `stop`.
    pub server: tokio::task::JoinHandle<()>,
}

/// Serves `runtime`'s ingest, search, admin API, metrics and probes over HTTP.
pub async fn serve_runtime(runtime: &freshet::service::Runtime) -> Served {
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let state = runtime.http_state(
        freshet::metrics::install(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
    );
    let (addr, server) = freshet::service::http::serve(
        "127.0.0.1:0".parse().expect("a socket address"),
        state,
        async move {
            let _ = stop_rx.changed().await;
        },
    )
    .await
    .expect("the listener starts");
    Served {
        base: format!("http://{addr}"),
        stop,
        server,
    }
}

/// The series of the metric `name` in a `/metrics` text: value by label
/// text (`topic="t",partition="0"`; empty for an unlabelled series).
pub fn parse_metric(text: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
                let (labels, v) = r.split_once('}')?;
                (labels.to_string(), v)
            } else if rest.starts_with(' ') {
                (String::new(), rest)
            } else {
                return None;
            };
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}
