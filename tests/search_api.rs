//! `POST /v1/search` over real HTTP on loopback: documents ingested through
//! `/v1/ingest` become searchable with their fields, filters narrow the
//! results, tokens and input are checked, short records are indexed, and a
//! deleted or updated document never shows its old version to a reader once
//! its event is acknowledged. Also: one runtime per data dir.

use std::sync::Arc;
use std::time::{Duration, Instant};

use freshet::service::Runtime;
use freshet::settings::Settings;
use serde_json::{json, Value};

mod common;

const READ: &str = "read-t0ken";
const INGEST: &str = "ingest-t0ken";
const ADMIN: &str = "admin-t0ken";

fn settings(dir: &std::path::Path) -> Settings {
    common::TestSettings::new(dir)
        .set("service.read_token", READ)
        .set("service.ingest_token", INGEST)
        .set("service.admin_token", ADMIN)
        .set("knobs.transform.linger_ms", 2)
        .set("knobs.index.linger_ms", 2)
        .build()
}

fn prose(topic: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("Fact {i} about {topic}: the {topic} report lists item {i} in detail. "))
        .collect()
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn ingest(&self, lines: &[Value]) {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let answer: Value = self
            .client
            .post(format!("{}/v1/ingest", self.base))
            .bearer_auth(INGEST)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["accepted"], lines.len(), "{answer}");
    }

    async fn post(&self, token: Option<&str>, body: String) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/v1/search", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn search(&self, body: Value) -> Vec<Value> {
        let (status, answer) = self.post(Some(READ), body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        answer["results"].as_array().unwrap().clone()
    }

    /// Waits (bounded) until a search for `query` filtered to `doc_id`
    /// returns it.
    async fn wait_searchable(&self, query: &str, doc_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let hits = self
                .search(json!({"query": query, "k": 5, "filter": {"doc_id": doc_id}}))
                .await;
            if let Some(hit) = hits.into_iter().next() {
                return hit;
            }
            assert!(
                Instant::now() < deadline,
                "{doc_id} never became searchable"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn ids(hits: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = hits
        .iter()
        .map(|h| h["doc_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_documents_are_searchable_with_their_fields_and_filters() {
    let tmp = common::TempDir::new("search-api");
    let runtime = Runtime::build(&settings(&tmp.0)).await.unwrap();
    let served = common::serve_runtime(&runtime).await;
    let api = Api {
        base: served.base.clone(),
        client: reqwest::Client::new(),
    };
    let before = freshet::dataplane::task::now_ms();
    api.ingest(&[
        // Five words: a user's own record is indexed however short.
        json!({"type": "document", "id": "faq:1", "title": "Refunds",
               "text": "Refunds take five business days.",
               "url": "https://Shop.Example/help/refunds", "ts_ms": 1_700_000_000_000u64,
               "metadata": {"lang": "en", "year": 2024, "public": true}}),
        json!({"type": "document", "id": "faq:2", "title": "Harbour news",
               "text": prose("harbour", 30), "url": "https://shop.example/blog/harbour",
               "metadata": {"lang": "de", "year": 2023, "public": false}}),
        json!({"type": "document", "id": "note:3", "title": "",
               "text": prose("orchard", 30)}),
        // Reads like web boilerplate, but it is the user's record.
        json!({"type": "document", "id": "faq:4", "title": "Password",
               "text": "Click here to reset your password.",
               "url": "https://other.example/help/password"}),
    ])
    .await;

    let hit = api
        .wait_searchable("how long do refunds take", "faq:1")
        .await;
    assert_eq!(hit["title"], "Refunds");
    assert_eq!(hit["url"], "https://Shop.Example/help/refunds");
    assert_eq!(hit["text"], "Refunds take five business days.");
    assert_eq!(hit["event_ts_ms"], 1_700_000_000_000u64);
    let indexed = hit["indexed_ts_ms"].as_u64().unwrap();
    assert!(indexed >= before && indexed <= freshet::dataplane::task::now_ms());
    assert_eq!(hit["metadata"]["lang"], "en");
    assert!(hit["score"].as_f64().unwrap().is_finite());
    let pw = api.wait_searchable("reset password", "faq:4").await;
    assert_eq!(pw["text"], "Click here to reset your password.");
    api.wait_searchable("harbour", "faq:2").await;
    let note = api.wait_searchable("orchard", "note:3").await;
    // Without ts_ms, the event time is when the source received it.
    let event = note["event_ts_ms"].as_u64().unwrap();
    assert!(event >= before && event <= note["indexed_ts_ms"].as_u64().unwrap());

    // The nearest chunk of a topic comes first; k bounds the answer.
    let all = api
        .search(json!({"query": prose("harbour", 2), "k": 100}))
        .await;
    assert_eq!(all[0]["doc_id"], "faq:2");
    assert_eq!(ids(&all), ["faq:1", "faq:2", "faq:4", "note:3"]);
    let scores: Vec<f64> = all.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(
        api.search(json!({"query": "harbour", "k": 1})).await.len(),
        1
    );

    // Filters.
    let cases = [
        (json!({"domain": "SHOP.example"}), vec!["faq:1", "faq:2"]),
        (
            json!({"url_prefix": "https://shop.example/blog/"}),
            vec!["faq:2"],
        ),
        (
            json!({"url_prefix": "https://Shop.Example/help/"}),
            vec!["faq:1"],
        ),
        (
            json!({"url_prefix": "https://"}),
            vec!["faq:1", "faq:2", "faq:4"],
        ),
        (json!({"doc_id": "note:3"}), vec!["note:3"]),
        (json!({"metadata": {"lang": "de"}}), vec!["faq:2"]),
        (json!({"metadata": {"year": 2024}}), vec!["faq:1"]),
        (json!({"metadata": {"public": false}}), vec!["faq:2"]),
        (
            json!({"domain": "shop.example", "metadata": {"lang": "en"}}),
            vec!["faq:1"],
        ),
        (json!({"domain": "nowhere.example"}), vec![]),
    ];
    for (filter, want) in cases {
        let hits = api
            .search(json!({"query": "refunds harbour", "k": 100, "filter": filter}))
            .await;
        assert_eq!(ids(&hits), want, "filter {filter}");
    }
    let (status, answer) = api
        .post(
            Some(READ),
            json!({"query": "x", "mode": "dense", "k": 3}).to_string(),
        )
        .await;
    assert_eq!((status, answer["mode"].as_str()), (200, Some("dense")));
    // Sparse (BM25) finds exactly the chunks with the word; hybrid (the
    // default) ranks the document that has both the word and the meaning
    // first and still returns the dense side's neighbours.
    let (status, answer) = api
        .post(
            Some(READ),
            json!({"query": "the orchards", "mode": "sparse", "k": 100}).to_string(),
        )
        .await;
    assert_eq!(
        (status, answer["mode"].as_str()),
        (200, Some("sparse")),
        "{answer}"
    );
    let sparse_hits = answer["results"].as_array().unwrap();
    assert_eq!(ids(sparse_hits), ["note:3"], "{answer}");
    let (status, answer) = api
        .post(
            Some(READ),
            json!({"query": "orchard", "k": 100}).to_string(),
        )
        .await;
    assert_eq!((status, answer["mode"].as_str()), (200, Some("hybrid")));
    let hybrid_hits = answer["results"].as_array().unwrap();
    assert_eq!(hybrid_hits[0]["doc_id"], "note:3", "{answer}");
    assert_eq!(ids(hybrid_hits), ["faq:1", "faq:2", "faq:4", "note:3"]);

    // Tokens: read and admin may search; ingest and none may not.
    let body = json!({"query": "refunds"}).to_string();
    assert_eq!(api.post(Some(ADMIN), body.clone()).await.0, 200);
    for token in [None, Some(INGEST), Some("wrong")] {
        let (status, answer) = api.post(token, body.clone()).await;
        assert_eq!(status, 401, "token {token:?}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("token"));
    }

    // Bad input: 400 with what is wrong, before any work.
    let bad = [
        (json!({"query": ""}).to_string(), "must not be empty"),
        (
            json!({"query": "x", "k": 0}).to_string(),
            "`k` must be 1..=100",
        ),
        (
            json!({"query": "x", "k": 101}).to_string(),
            "`k` must be 1..=100",
        ),
        (json!({"query": "x", "k": -1}).to_string(), "invalid value"),
        (
            json!({"query": "x".repeat(5000)}).to_string(),
            "at most 2048",
        ),
        (
            json!({"query": "x", "mode": "keyword"}).to_string(),
            "unknown mode `keyword`",
        ),
        (
            json!({"query": "x", "limit": 3}).to_string(),
            "unknown field `limit`",
        ),
        (
            json!({"query": "x", "filter": {"lang": "en"}}).to_string(),
            "unknown field `lang`",
        ),
        (
            json!({"query": "x", "filter": {"metadata": {"a": {"b": 1}}}}).to_string(),
            "integer",
        ),
        ("{not json".to_string(), "expected"),
        (String::new(), "expected"),
    ];
    for (body, want) in bad {
        let (status, answer) = api.post(Some(READ), body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(want), "{body}: {error}");
    }

    let _ = served.stop.send(true);
    let _ = served.server.await;
    assert!(runtime.drain().await.0);
}

/// Issue 16 item 8: a reader polling concurrently never sees a deleted
/// document, nor an updated document's old text, in a search that starts
/// after the event was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_updates_are_visible_to_readers_once_acknowledged() {
    let tmp = common::TempDir::new("search-delete");
    let runtime = Runtime::build(&settings(&tmp.0)).await.unwrap();
    let served = common::serve_runtime(&runtime).await;
    let api = Arc::new(Api {
        base: served.base.clone(),
        client: reqwest::Client::new(),
    });
    let tracker = runtime.source.tracker().clone();
    let settled = |tracker: &freshet::dataplane::ack::AckTracker| {
        let c = tracker.counts();
        c.finished + c.abandoned == c.registered
    };
    api.ingest(&[
        json!({"type": "document", "id": "gone", "text": prose("glacier", 20)}),
        json!({"type": "document", "id": "kept", "text": "The old kept text about glaciers."}),
    ])
    .await;
    api.wait_searchable("glacier", "gone").await;
    api.wait_searchable("glacier", "kept").await;

    // Readers: every search records when it started and what it saw.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (api, stop) = (api.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..5_000 {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                let started = Instant::now();
                let hits = api
                    .search(json!({"query": "glacier report", "k": 20}))
                    .await;
                let gone = hits.iter().any(|h| h["doc_id"] == "gone");
                let old = hits
                    .iter()
                    .any(|h| h["text"] == "The old kept text about glaciers.");
                seen.push((started, gone, old));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.ingest(&[
        json!({"type": "delete", "id": "gone"}),
        json!({"type": "document", "id": "kept", "text": "The new kept text about glaciers."}),
    ])
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !settled(&tracker) {
        assert!(
            Instant::now() < deadline,
            "the delete was never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let acknowledged = Instant::now();
    assert_eq!(tracker.counts().abandoned, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut before = 0;
    let mut after = 0;
    for reader in readers {
        for (started, gone, old) in reader.await.unwrap() {
            if started > acknowledged {
                after += 1;
                assert!(
                    !gone,
                    "a search after the delete's acknowledgement returned it"
                );
                assert!(
                    !old,
                    "a search after the update's acknowledgement returned the old text"
                );
            } else {
                before += 1;
            }
        }
    }
    assert!(
        before > 0 && after > 0,
        "readers ran on both sides ({before}, {after})"
    );
    let kept = api.wait_searchable("glacier", "kept").await;
    assert_eq!(kept["text"], "The new kept text about glaciers.");

    let _ = served.stop.send(true);
    let _ = served.server.await;
    assert!(runtime.drain().await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runtime_per_data_dir() {
    let tmp = common::TempDir::new("search-lock");
    let first = Runtime::build(&settings(&tmp.0)).await.unwrap();
    let err = Runtime::build(&settings(&tmp.0)).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("is in use by another freshet process"),
        "{text}"
    );
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(first.drain().await.0);
    // Released with the runtime: the next one starts.
    let second = Runtime::build(&settings(&tmp.0)).await.unwrap();
    assert!(second.drain().await.0);
}
