//! `freshet query` beside a running `freshet run` (processes): it asks the
//! instance's `POST /v1/search` (found through the data dir's lock file, or
//! `--addr`) instead of opening the index the instance holds; a second
//! `run` on the same data dir is refused and names the holder; after the
//! instance stops, `query` opens the index itself.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

#[test]
fn query_uses_the_running_instance_and_a_second_run_is_refused() {
    let tmp = common::TempDir::new("query-process");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let port = common::free_port();
    let data = tmp.0.join("data");
    let data_arg = data.display().to_string();
    let config = tmp.0.join("freshet.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\ndata_dir = {data_arg:?}\nlisten = \"127.0.0.1:{port}\"\nlog_format = \"json\"\n\
             ingest_token = \"ingest-t0ken\"\nread_token = \"read-t0ken\"\n\
             [embed]\nbackend = \"hash\"\ndimensions = 64\n[knobs.transform]\nlinger_ms = 2\n",
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let common::Logged {
        mut child,
        stderr: lines,
    } = common::spawn_logged(
        env!("CARGO_BIN_EXE_freshet"),
        &["--config", config_arg, "run"],
    );
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    common::wait_ready(&client, &base, Duration::from_secs(60));
    let doc = serde_json::json!({"type": "document", "id": "faq:refunds", "title": "Refund policy",
        "text": "Refunds take five business days.", "url": "https://shop.example/help/refunds"});
    let answer: serde_json::Value = client
        .post(format!("{base}/v1/ingest"))
        .bearer_auth("ingest-t0ken")
        .header("content-type", "application/x-ndjson")
        .body(doc.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["accepted"], 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r: serde_json::Value = client
            .post(format!("{base}/v1/search"))
            .bearer_auth("read-t0ken")
            .json(&serde_json::json!({"query": "refunds", "k": 3}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if r["results"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "never searchable: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The data dir is held: query goes through the instance's API.
    let (ok, out, err) = common::freshet_env(
        &["--config", config_arg, "query", "refunds", "-k", "3"],
        &[],
    );
    assert!(ok, "query through the running instance failed: {err}");
    assert!(out.contains("Refund policy"), "{out}");
    assert!(out.contains("https://shop.example/help/refunds"), "{out}");
    assert!(!err.contains("WouldBlock"), "{err}");
    // Without settings, only the data dir: the token comes from the environment.
    let (ok, out, err) = common::freshet_env(
        &["query", "refunds", "--data-dir", &data_arg],
        &[("FRESHET_SERVICE__READ_TOKEN", "read-t0ken")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("Refund policy"), "{out}");
    // A wrong token is the instance's 401, said plainly.
    let (ok, _, err) = common::freshet_env(
        &["query", "refunds", "--data-dir", &data_arg],
        &[("FRESHET_SERVICE__READ_TOKEN", "nope")],
    );
    assert!(!ok);
    assert!(err.contains("401") && err.contains("READ_TOKEN"), "{err}");
    // --addr names the instance directly (the data dir does not matter).
    let elsewhere = tmp.0.join("elsewhere").display().to_string();
    let (ok, out, err) = common::freshet_env(
        &[
            "query",
            "refunds",
            "--data-dir",
            &elsewhere,
            "--addr",
            &format!("127.0.0.1:{port}"),
        ],
        &[("FRESHET_SERVICE__READ_TOKEN", "read-t0ken")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("Refund policy"), "{out}");
    // Bad input is the instance's 400.
    let (ok, _, err) = common::freshet_env(
        &["--config", config_arg, "query", "refunds", "-k", "1000"],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("400") && err.contains("`k` must be 1..=100"),
        "{err}"
    );

    // A second run on the held data dir is refused, naming the holder.
    let second_port = common::free_port();
    let second = tmp.0.join("second.toml");
    std::fs::write(
        &second,
        format!(
            "[service]\ndata_dir = {data_arg:?}\nlisten = \"127.0.0.1:{second_port}\"\n\
             ingest_token = \"x\"\n[embed]\nbackend = \"hash\"\ndimensions = 64\n",
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (ok, _, err) = common::freshet_env(&["--config", second.to_str().unwrap(), "run"], &[]);
    assert!(!ok, "a second run on the same data dir started");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        err.contains("is in use by another freshet process"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains(&format!("http://127.0.0.1:{port}")), "{err}");

    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
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

    // Nobody holds the data dir now: query opens the index itself.
    let (ok, out, err) = common::freshet_env(&["--config", config_arg, "query", "refunds"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("Refund policy"), "{out}");
}
