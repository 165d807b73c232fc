//! `freshet run` as a process: it serves ingest and metrics, and SIGTERM
//! drains in-flight work and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

#[test]
fn run_serves_ingest_and_drains_on_sigterm() {
    let tmp = common::TempDir::new("run");
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
    std::fs::write(
        &config,
        format!(
            "[service]\ndata_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\nlog_format = \"json\"\ningest_token = \"ingest-t0ken\"\n\
             [embed]\nbackend = \"hash\"\ndimensions = 64\n[source]\nfiles = [{:?}]\n",
            tmp.0.join("data").display().to_string(),
            tasks.display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    // Wait for the endpoint, then ingest one more document.
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::blocking::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send() {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "freshet run did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = serde_json::json!({"type": "document", "id": "from-http", "text": text}).to_string();
    let answer: serde_json::Value = client
        .post(format!("{base}/v1/ingest"))
        .bearer_auth("ingest-t0ken")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap()
        .json()
        .unwrap();
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
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
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
