//! The MCP server, driven by a client freshet did not write: the official
//! Python SDK (`mcp` from PyPI; `scripts/test` installs it and names its
//! interpreter in `FRESHET_TEST_PYTHON`). The client's checks are in
//! `tests/mcp/client.py`: tools listed, a document ingested through
//! `ingest_document` becomes searchable through `search` (with its source URL
//! and age in the model-facing text), `status` reports it, bad arguments and
//! missing roles are tool errors, and `/mcp` without a token answers 401.

use std::path::PathBuf;
use std::process::Command;

use freshet::service::Runtime;

mod common;

const READ: &str = "mcp-read-t0ken";
const INGEST: &str = "mcp-ingest-t0ken";

/// The Python interpreter with the `mcp` package, or `None` to skip (only
/// outside the suite: with `FRESHET_TEST_SUITE=1` a missing client fails).
fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("FRESHET_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let has_sdk = Command::new(&candidate)
        .args(["-c", "import mcp"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if has_sdk {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("FRESHET_TEST_SUITE").is_none(),
        "{} cannot import the Python MCP SDK; scripts/test installs it (FRESHET_TEST_PYTHON)",
        candidate.display()
    );
    eprintln!("skipped: no Python with the `mcp` package (set FRESHET_TEST_PYTHON)");
    None
}

fn client_script() -> String {
    format!("{}/tests/mcp/client.py", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the Python client with `args`; panics with its output unless every
/// check passed.
fn run_client(python: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(client_script())
        .args(args)
        .output()
        .expect("the Python client runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the MCP client failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

fn settings(dir: &std::path::Path) -> common::TestSettings {
    common::TestSettings::new(dir)
        .set("service.read_token", READ)
        .set("service.ingest_token", INGEST)
        .set("knobs.transform.linger_ms", 2)
        .set("knobs.index.linger_ms", 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_searches_and_ingests_over_streamable_http() {
    let Some(python) = python() else { return };
    let dir = common::TempDir::new("mcp-http");
    let runtime = Runtime::build(&settings(&dir.0).build())
        .await
        .expect("the runtime starts");
    let served = common::serve_runtime(&runtime).await;
    let url = format!("{}/mcp", served.base);
    let out =
        tokio::task::spawn_blocking(move || run_client(&python, &["http", &url, READ, INGEST]))
            .await
            .expect("the client task");
    assert!(out.contains("ok /mcp without a token answers 401"), "{out}");
    let _ = served.stop.send(true);
    let _ = served.server.await;
    let (drained, _, _) = runtime.drain().await;
    assert!(drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_launches_freshet_mcp_over_stdio() {
    let Some(python) = python() else { return };
    let dir = common::TempDir::new("mcp-stdio");
    std::fs::create_dir_all(&dir.0).unwrap();
    let config = dir.0.join("freshet.toml");
    settings(&dir.0.join("data"))
        .set(
            "service.listen",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .write(&config);
    let config_arg = config.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run_client(
            &python,
            &["stdio", env!("CARGO_BIN_EXE_freshet"), &config_arg],
        )
    })
    .await
    .expect("the client task");
    assert!(out.contains("ok the hit is the ingested document"), "{out}");
    // The client closed the session: `freshet mcp` drained, exited and let
    // go of the data dir, so another runtime can open it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let reopened = loop {
        match Runtime::build(&settings(&dir.0.join("data")).build()).await {
            Ok(r) => break r,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the data dir is still held after the MCP client left: {e:#}"),
        }
    };
    let (drained, _, _) = reopened.drain().await;
    assert!(drained);
}
