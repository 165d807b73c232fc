//! The service's HTTP endpoint (ingest, metrics, health) and DLQ replay,
//! over real HTTP on loopback.

use freshet::dataplane::dlq::{DeadLetter, Dlq};
use freshet::dataplane::Counters;
use freshet::service::Runtime;
use freshet::settings::Settings;

mod common;

fn settings(dir: &std::path::Path) -> Settings {
    common::TestSettings::new(dir)
        .set("service.ingest_token", "ingest-t0ken")
        .set("knobs.transform.linger_ms", 2)
        .build()
}

fn doc(id: &str) -> String {
    let text: String = (0..40)
        .map(|i| format!("Sentence {i} of {id} adds a new fact about topic {i}. "))
        .collect();
    serde_json::json!({"type": "document", "id": id, "text": text}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_metrics_and_health_over_http() {
    let tmp = common::TempDir::new("http");
    let dir = tmp.0.clone();
    let runtime = Runtime::build(&settings(&dir)).await.unwrap();
    let common::Served {
        base,
        stop: stop_tx,
        server,
    } = common::serve_runtime(&runtime).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let body = format!(
        "{}\n{{not json\n{}\n{{\"type\":\"url\",\"url\":\"ftp://x\"}}\n",
        doc("a"),
        doc("b")
    );
    let answer: serde_json::Value = client
        .post(format!("{base}/v1/ingest"))
        .bearer_auth("ingest-t0ken")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["rejected"], 2, "{answer}");

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("freshet_dlq_records_total"), "{metrics}");

    let _ = stop_tx.send(true);
    server.await.unwrap();
    let (drained, counters, tracker) = runtime.drain().await;
    assert!(drained);
    assert_eq!(tracker.counts().finished, 4);
    assert_eq!(Counters::get(&counters.docs_indexed), 2);
    let (letters, _) = Dlq::read_all(&dir.join("dlq.jsonl")).unwrap();
    assert_eq!(letters.len(), 2);
    assert!(
        letters[0].message.starts_with("line 2:"),
        "{}",
        letters[0].message
    );
    assert!(
        letters[1].message.starts_with("line 4:"),
        "{}",
        letters[1].message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_resubmits_tasks_and_keeps_raw_input() {
    let tmp = common::TempDir::new("replay");
    let dir = tmp.0.clone();
    let s = settings(&dir);
    {
        let dlq = Dlq::open(&dir).unwrap();
        let task: serde_json::Value = serde_json::from_str(&doc("replayed")).unwrap();
        dlq.write(&DeadLetter::new(
            "index",
            "timeout",
            "index was down",
            task,
            "test:0:1",
        ))
        .unwrap();
        dlq.write(&DeadLetter::new(
            "source",
            "invalid",
            "line 3: not a task",
            serde_json::json!("{garbage"),
            "f:1:3",
        ))
        .unwrap();
    }
    let runtime = Runtime::build(&s).await.unwrap();
    let (replayed, kept) = runtime.replay_dlq().await.unwrap();
    assert_eq!((replayed, kept), (1, 1));
    let (drained, counters, _) = runtime.drain().await;
    assert!(drained);
    assert_eq!(Counters::get(&counters.docs_indexed), 1);
    let (left, _) = Dlq::read_all(&dir.join("dlq.jsonl")).unwrap();
    assert_eq!(left.len(), 1, "raw input stays dead");
    assert_eq!(left[0].stage, "source");
    let (moved, _) = Dlq::read_all(&dir.join("dlq.replayed.jsonl")).unwrap();
    assert_eq!(moved.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_caps_bad_lines_and_answers_503_while_an_upstream_is_down() {
    let tmp = common::TempDir::new("http-busy");
    let dir = tmp.0.clone();
    // An embedder nobody listens at: its circuit opens on the first document.
    let s = common::TestSettings::new(&dir)
        .set("service.ingest_token", "ingest-t0ken")
        .set("service.ingest_max_invalid_lines", 3)
        .set("service.drain_timeout_s", 2)
        .set("knobs.transform.linger_ms", 2)
        .set("embed.backend", "openai")
        .set("embed.base_url", "http://127.0.0.1:9/v1")
        .set("embed.model", "m")
        .build();
    let runtime = Runtime::build(&s).await.unwrap();
    let served = common::serve_runtime(&runtime).await;
    let base = served.base.clone();
    let client = reqwest::Client::new();
    let ingest = |body: String| {
        client
            .post(format!("{base}/v1/ingest"))
            .bearer_auth("ingest-t0ken")
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };

    // Five malformed lines with a cap of three: 400, the rest unread.
    let body = format!("{}\n{{a\n{{b\n{{c\n{{d\n{}\n", doc("first"), doc("never"));
    let r = ingest(body).await.unwrap();
    assert_eq!(r.status(), 400);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["stopped_at_line"], 5, "{answer}");
    assert_eq!(
        answer["rejected"], 4,
        "three lines and the summary: {answer}"
    );
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("more than 3 malformed lines"));

    // The accepted document cannot be embedded: the embed circuit opens.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let degraded = loop {
        let r = client.get(format!("{base}/readyz")).send().await.unwrap();
        let (status, body) = (r.status(), r.text().await.unwrap());
        if status == 503 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never degraded: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        degraded.starts_with("degraded: embed upstream down"),
        "{degraded}"
    );
    let r = ingest(doc("later")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let answer: serde_json::Value = r.json().await.unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("embed upstream is down"),
        "{answer}"
    );

    let _ = served.stop.send(true);
    served.server.await.unwrap();
    let (drained, _, tracker) = runtime.drain().await;
    assert!(!drained, "the held document cannot finish");
    assert_eq!(
        tracker.counts().abandoned,
        1,
        "held, then abandoned at the deadline, not dead-lettered"
    );
    let (letters, _) = Dlq::read_all(&dir.join("dlq.jsonl")).unwrap();
    let classes: Vec<&str> = letters.iter().map(|l| l.error_type.as_str()).collect();
    assert_eq!(
        classes,
        ["invalid", "invalid", "invalid", "too_many_invalid"]
    );
}
