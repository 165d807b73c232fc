//! `freshet run` as a process: it serves ingest and metrics, and SIGTERM
//! drains in-flight work and exits 0.

use std::time::{Duration, Instant};

mod common;

#[test]
fn run_serves_ingest_and_drains_on_sigterm() {
    serves_ingest_and_drains_on_sigterm(env!("CARGO_BIN_EXE_freshet"), "run");
}

/// The same run with the core build (`cargo build --no-default-features`:
/// no Kafka, no simulator, no benches), whose binary `scripts/test` builds
/// and names in `FRESHET_CORE_BIN`.
#[test]
fn the_core_build_serves_ingest_and_drains_on_sigterm() {
    match std::env::var("FRESHET_CORE_BIN") {
        Ok(bin) => serves_ingest_and_drains_on_sigterm(&bin, "run-core"),
        // Under scripts/test (FRESHET_TEST_SUITE=1) the binary must be there.
        Err(_) if std::env::var("FRESHET_TEST_SUITE").is_ok_and(|v| v == "1") => {
            panic!("FRESHET_CORE_BIN is not set (scripts/test builds the core binary and sets it)")
        }
        Err(_) => eprintln!("skipped: FRESHET_CORE_BIN is not set (scripts/test sets it)"),
    }
}

fn serves_ingest_and_drains_on_sigterm(bin: &str, name: &str) {
    let tmp = common::TempDir::new(name);
    std::fs::create_dir_all(&tmp.0).unwrap();
    let port = common::free_port();
    let config = tmp.0.join("freshet.toml");
    let tasks = tmp.0.join("tasks.jsonl");
    let text: String = (0..40)
        .map(|i| format!("Line {i} tells something new about the harbour. "))
        .collect();
    std::fs::write(
        &tasks,
        format!(
            "{}\nnot json\n",
            serde_json::json!({"type": "document", "id": "from-file", "text": text})
        ),
    )
    .unwrap();
    common::TestSettings::new(&tmp.0.join("data"))
        .set("service.listen", format!("127.0.0.1:{port}"))
        .set("service.log_format", "json")
        .set("service.ingest_token", "ingest-t0ken")
        .set(
            "source.files",
            toml::Value::Array(vec![tasks.display().to_string().into()]),
        )
        .write(&config);
    let common::Logged {
        mut child,
        stderr: lines,
    } = common::spawn_logged(bin, &["--config", config.to_str().unwrap(), "run"]);

    // Wait for the endpoint, then ingest one more document.
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    common::wait_ready(&client, &base, Duration::from_secs(60));
    let body = serde_json::json!({"type": "document", "id": "from-http", "text": text}).to_string();
    let answer = common::ingest(&client, &base, "ingest-t0ken", body);
    assert_eq!(answer["accepted"], 1);
    // Let the file feeder and the pipeline work, then stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        if metrics.contains("freshet_chunks_indexed_total") {
            break;
        }
        assert!(Instant::now() < deadline, "nothing indexed: {metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = common::terminate(&mut child, Duration::from_secs(40))
        .expect("an exit within 40 s of SIGTERM");
    let log = lines.join().unwrap().join("\n");
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("\"drained\":true"), "{log}");
    assert!(tmp.0.join("data/dlq.jsonl").exists());
    let dlq = std::fs::read_to_string(tmp.0.join("data/dlq.jsonl")).unwrap();
    assert!(
        dlq.contains("line 2"),
        "the malformed line is dead-lettered: {dlq}"
    );
}
