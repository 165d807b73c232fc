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
