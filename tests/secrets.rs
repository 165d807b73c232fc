//! Secrets stay hidden: a configuration full of known credentials (tokens,
//! API keys, Kafka passwords, passwords in URLs) is shown, checked and run
//! until the embedder fails (its circuit opens: `/readyz` reports it with the
//! embedder's error, and the work is held), and every output is searched for
//! them: stdout and stderr of every command, the logs, `/readyz`, the dead
//! letters, the audit log and `index-meta.json`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const SECRETS: &[&str] = &[
    "ADMIN-SECRET-0001",
    "INGEST-SECRET-0002",
    "PROVIDER-URLPASS-0003",
    "PROVIDER-KEY-0004",
    "EMBED-URLPASS-0005",
    "EMBED-KEY-0006",
    "KAFKA-PASS-0007",
    "KAFKA-SECRET-0008",
    "KAFKA-KEYPASS-0009",
    "LLM-KEY-0010",
];

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

#[test]
fn no_output_of_a_run_shows_a_secret() {
    let tmp = common::TempDir::new("secrets");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let port = common::free_port();
    let data = tmp.0.join("data");
    let config = tmp.0.join("freshet.toml");
    common::TestSettings::new(&data)
        .merge(&format!(
            r#"[service]
listen = "127.0.0.1:{port}"
drain_timeout_s = 3
log_format = "json"
admin_token = "ADMIN-SECRET-0001"
ingest_token = "INGEST-SECRET-0002"

[provider]
base_url = "http://produser:PROVIDER-URLPASS-0003@127.0.0.1:9/"
api_key = "PROVIDER-KEY-0004"

[embed]
backend = "openai"
base_url = "http://embeduser:EMBED-URLPASS-0005@127.0.0.1:9/v1"
api_key = "EMBED-KEY-0006"
model = "test-model"
dimensions = 32

[controller]
mode = "off"

[controller.llm]
api_key = "LLM-KEY-0010"

[kafka.properties]
"sasl.username" = "visible-user"
"sasl.password" = "KAFKA-PASS-0007"
"sasl.oauthbearer.client.secret" = "KAFKA-SECRET-0008"
"ssl.key.password" = "KAFKA-KEYPASS-0009"

[knobs.embed]
timeout_ms = 1000

[knobs.embed.retry]
max_attempts = 1
"#,
        ))
        .write(&config);
    let cfg = config.to_str().unwrap();

    let (ok, out, err) = common::freshet(&["--config", cfg, "config", "show"]);
    assert!(ok, "{err}");
    assert_clean("config show", &format!("{out}{err}"));
    assert!(
        out.contains("visible-user") && out.contains("***"),
        "config show hides too much or nothing: {out}"
    );
    assert!(
        out.contains("embeduser") || out.contains("***@127.0.0.1:9"),
        "{out}"
    );
    let (ok, out, err) = common::freshet(&["--config", cfg, "config", "check", cfg]);
    assert!(ok, "{err}");
    assert_clean("config check", &format!("{out}{err}"));

    // Run until a document has failed at the (unreachable) embedder.
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["--config", cfg, "run"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < deadline,
            "freshet run did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text: String = (0..30)
        .map(|i| format!("Sentence {i} says something new about the harbour. "))
        .collect();
    let r = client
        .post(format!("{base}/v1/ingest"))
        .bearer_auth("INGEST-SECRET-0002")
        .header("content-type", "application/x-ndjson")
        .body(serde_json::json!({"type": "document", "id": "d1", "text": text}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // A wrong token is refused and audited (without the token).
    let r = client
        .get(format!("{base}/v1/config"))
        .bearer_auth("ADMIN-SECRET-0001-wrong")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // A line that is not a task: a dead letter to search too.
    let r = client
        .post(format!("{base}/v1/ingest"))
        .bearer_auth("INGEST-SECRET-0002")
        .header("content-type", "application/x-ndjson")
        .body("{\"type\": \"document\", \"id\": 7}\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let dlq = data.join("dlq.jsonl");
    // The unreachable embedder opens its circuit; readyz names its error.
    let deadline = Instant::now() + Duration::from_secs(60);
    let degraded = loop {
        let r = client.get(format!("{base}/readyz")).send().unwrap();
        let (status, body) = (r.status(), r.text().unwrap());
        if status == 503 && body.contains("embed upstream down") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the embedder failure never showed: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_clean("/readyz", &degraded);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_clean("/metrics", &metrics);
    // The held document is abandoned at the drain deadline (not dead-lettered):
    // the exit says the drain did not finish.
    let _status = common::terminate(&mut child, Duration::from_secs(60))
        .expect("an exit within 60 s of SIGTERM");
    let log = err_reader.join().unwrap() + &out_reader.join().unwrap();
    assert!(log.contains("circuit open"), "{log}");
    assert_clean("the run's logs", &log);

    let letters = std::fs::read_to_string(&dlq).unwrap();
    assert!(letters.contains("\"source\""), "{letters}");
    assert!(
        !letters.contains("\"embed\""),
        "an outage was dead-lettered: {letters}"
    );
    assert_clean("dlq.jsonl", &letters);
    // Every file the run left in the data dir.
    let mut files = vec![data.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert_clean(&p.display().to_string(), &String::from_utf8_lossy(&bytes));
        }
    }
    let meta = std::fs::read_to_string(data.join("index-meta.json")).unwrap();
    assert!(meta.contains("127.0.0.1:9"), "{meta}");

    let (_, out, err) = common::freshet(&["--config", cfg, "dlq", "list"]);
    assert_clean("dlq list", &format!("{out}{err}"));
    let (_, out, err) = common::freshet(&["--config", cfg, "audit", "tail"]);
    assert_clean("audit tail", &format!("{out}{err}"));
}
