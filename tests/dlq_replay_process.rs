//! `freshet dlq replay` beside a running `freshet run` (processes): the
//! replay goes through the instance's `POST /v1/dlq/replay` (found through
//! the data dir's lock file) with the admin token, instead of a second
//! process opening the data dir. The replayed page is indexed, the record
//! that was never a task stays, the replay is audited, and the audit chain
//! still verifies after the instance stops.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

const PAGE: &str = "<html><head><title>Descaling a kettle</title></head><body><main><article>\
<h1>Descaling a kettle</h1>\
<p>Limescale builds up on the heating element of a kettle in areas with hard water. \
Fill the kettle halfway with equal parts white vinegar and water, bring it to the boil \
and leave it to stand for an hour before rinsing it several times.</p>\
<p>Citric acid works as well as vinegar and leaves no smell: dissolve two tablespoons \
in a full kettle of water, boil it and pour it away after fifteen minutes.</p>\
</article></main></body></html>";

/// A loopback origin that answers 404 until `up` is set, then the page.
fn origin(up: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let response = if up.load(Ordering::SeqCst) {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

#[test]
fn dlq_replay_goes_through_the_running_instance() {
    let tmp = common::TempDir::new("dlq-replay-process");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let origin_port = origin(up.clone());
    let port = common::free_port();
    let data = tmp.0.join("data");
    let data_arg = data.display().to_string();
    let config = tmp.0.join("freshet.toml");
    common::TestSettings::new(&data)
        .set("service.listen", format!("127.0.0.1:{port}"))
        .set("service.log_format", "json")
        .set("service.admin_token", "adm1n-t0ken")
        .set("service.ingest_token", "ingest-t0ken")
        .set("service.read_token", "read-t0ken")
        .set(
            "extract.allow_private",
            toml::Value::Array(vec!["127.0.0.0/8".into()]),
        )
        .set("knobs.transform.linger_ms", 2)
        .write(&config);
    let config_arg = config.to_str().unwrap();
    let common::Logged {
        mut child,
        stderr: lines,
    } = common::spawn_logged(
        env!("CARGO_BIN_EXE_freshet"),
        &["--config", config_arg, "run"],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    common::wait_ready(&client, &base, Duration::from_secs(60));

    // One page that is not there yet, and one line that is not a task.
    let url = format!("http://127.0.0.1:{origin_port}/kettle");
    let body = format!(
        "{}\n{{\"type\": \"url\", \"url\": \n",
        serde_json::json!({"type": "url", "url": url})
    );
    let answer = common::ingest(&client, &base, "ingest-t0ken", body);
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{answer}"
    );
    let dlq = data.join("dlq.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&dlq)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the 404 was never dead-lettered");
        std::thread::sleep(Duration::from_millis(50));
    }
    up.store(true, Ordering::SeqCst);

    // The replay endpoint wants the admin token and an operator.
    let refused = client
        .post(format!("{base}/v1/dlq/replay?operator=test"))
        .bearer_auth("read-t0ken")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused = client
        .post(format!("{base}/v1/dlq/replay"))
        .bearer_auth("adm1n-t0ken")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    // Without the token, the CLI says which variable to set.
    let (ok, _, err) = common::freshet_env(&["dlq", "replay", "--data-dir", &data_arg], &[]);
    assert!(!ok);
    assert!(err.contains("401") && err.contains("ADMIN_TOKEN"), "{err}");

    // The data dir is held: the replay goes through the instance.
    let (ok, out, err) = common::freshet_env(
        &[
            "dlq",
            "replay",
            "--data-dir",
            &data_arg,
            "--operator",
            "ops-test",
        ],
        &[("FRESHET_SERVICE__ADMIN_TOKEN", "adm1n-t0ken")],
    );
    assert!(ok, "replay through the running instance failed: {err}");
    assert!(out.contains("replayed 1 dead letters"), "{out}");
    assert!(out.contains("(1 could not be parsed"), "{out}");
    assert!(!err.contains("in use by another"), "{err}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r: serde_json::Value = client
            .post(format!("{base}/v1/search"))
            .bearer_auth("read-t0ken")
            .json(&serde_json::json!({"query": "descaling a kettle with citric acid", "k": 3}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let found = r["results"]
            .as_array()
            .is_some_and(|a| a.iter().any(|hit| hit["url"] == url.as_str()));
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replayed page was never indexed: {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let status =
        common::terminate(&mut child, Duration::from_secs(40)).expect("exit after SIGTERM");
    let log = lines.join().unwrap().join("\n");
    assert!(status.success(), "exit {status:?}\n{log}");

    // The replayed record moved out; the raw line stays, readable.
    let (ok, out, err) = common::freshet_env(&["--config", config_arg, "dlq", "list"], &[]);
    assert!(ok, "{err}");
    assert!(out.starts_with("1 dead letters"), "{out}");
    assert!(!out.contains("is not a dead letter"), "{out}");
    let moved = std::fs::read_to_string(data.join("dlq.replayed.jsonl")).unwrap();
    // Every record read is logged there; the raw one was written back too.
    assert_eq!(moved.lines().count(), 2, "{moved}");
    assert!(moved.contains("/kettle"), "{moved}");

    // One audit chain, with the replay in it, that verifies.
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    let replays: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"dlq_replayed\""))
        .collect();
    assert_eq!(replays.len(), 1, "{audit}");
    assert!(replays[0].contains("ops-test"), "{}", replays[0]);
    let (ok, out, err) = common::freshet_env(&["--config", config_arg, "audit", "verify"], &[]);
    assert!(ok, "audit verify failed: {out}{err}");
}
