//! The pipeline's counters and its metrics are one tally: a run with
//! superseded upserts and deletes, duplicates, a too-short document and a
//! delete, observed through a private tap.

use std::sync::Arc;

use super::*;
use crate::dataplane::ack::Ack;
use crate::dataplane::dlq::Dlq;
use crate::dataplane::embed::hash::HashEmbedder;
use crate::dataplane::extract::{fetch::Fetcher, render, ExtractStage};
use crate::dataplane::index::edge::EdgeIndex;
use crate::knobs::Knobs;
use crate::live::LiveConfig;
use crate::metrics::{self, Labels, TapRecorder, TapSnapshot};

fn prose(doc: &str) -> String {
    (0..30)
        .map(|i| format!("Part {i} of {doc}: the council weighed proposal {} and asked {} residents about it.", i * 7 + 3, i * 11 + 5))
        .collect::<Vec<_>>()
        .join(" ")
}

fn doc(id: &str, text: String) -> Task {
    Task::Document {
        id: id.into(),
        text,
        title: id.into(),
        url: String::new(),
        ts_ms: None,
        metadata: Default::default(),
    }
}

fn counter(snap: &TapSnapshot, name: &str, label: Option<(&str, &str)>) -> u64 {
    let labels: Labels = label
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into_iter()
        .collect();
    snap.counters
        .get(&(name.to_string(), labels))
        .copied()
        .unwrap_or(0)
}

async fn run(dir: &std::path::Path) -> Arc<Counters> {
    let mut knobs = Knobs::default();
    // Everything in one transform batch, so the numbering order is the
    // arrival order below.
    knobs.transform.linger_ms = 500;
    knobs.transform.batch_size = 64;
    let live = LiveConfig::new(knobs).unwrap();
    let fetcher = Fetcher::new(&Default::default(), &[]).unwrap();
    let deps = Deps {
        live: live.clone(),
        search: None,
        extract: Arc::new(ExtractStage::new(
            fetcher,
            Arc::new(render::NoRenderer),
            live,
        )),
        embedder: Arc::new(HashEmbedder::new(32)),
        index: Arc::new(EdgeIndex::open(&dir.join("index"), 32).unwrap()),
        dlq: Arc::new(Dlq::open(dir).unwrap()),
        limits: crate::dataplane::transform::DocLimits {
            max_chunks: 40,
            ..Default::default()
        },
    };
    let pipeline = Pipeline::start(deps);
    let tasks = vec![
        doc("a", prose("a, first draft")),
        // Supersedes the first draft within the batch.
        doc("a", prose("a, final")),
        // Numbered before the next version of `b`: superseded at the index.
        Task::Delete {
            id: "b".into(),
            ts_ms: None,
        },
        doc("b", prose("b")),
        // Same text as `b`: a duplicate in the batch.
        doc("c", prose("b")),
        // No words at all: documents need no minimum length, but one word.
        doc("short", " \n\t ".into()),
        // Far more than 40 chunks: dead-lettered before its chunks are built.
        doc(
            "huge",
            (0..200)
                .map(|i| prose(&format!("volume {i}")))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Task::Delete {
            id: "never-indexed".into(),
            ts_ms: None,
        },
    ];
    let tx = pipeline.sender();
    for (i, task) in tasks.into_iter().enumerate() {
        let envelope = Envelope {
            task,
            ack: Ack::detached(),
            received_ms: now_ms(),
            source: format!("test:0:{i}"),
        };
        tx.send(envelope).await.unwrap();
    }
    drop(tx);
    let counters = pipeline.counters();
    assert!(pipeline.finish(std::time::Duration::from_secs(30)).await);
    counters
}

#[test]
fn the_taps_document_counts_equal_the_counters_with_superseded_deletes() {
    let dir = std::env::temp_dir().join(format!(
        "freshet-pipeline-tap-{}-{}",
        std::process::id(),
        now_ms()
    ));
    let recorder = TapRecorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counters = ::metrics::with_local_recorder(&recorder, || rt.block_on(run(&dir)));
    let snap = recorder.0.snapshot();
    let get = Counters::get;
    let docs = |outcome| counter(&snap, metrics::DOCS_TOTAL, Some(("outcome", outcome)));
    assert_eq!(get(&counters.docs_superseded), 2, "one upsert, one delete");
    for (outcome, count) in [
        ("superseded", &counters.docs_superseded),
        ("chunked", &counters.docs_chunked),
        ("duplicate", &counters.docs_duplicate),
        ("unchanged", &counters.docs_unchanged),
        ("low_quality", &counters.docs_low_quality),
        ("too_short", &counters.docs_too_short),
        ("too_large", &counters.docs_too_large),
        ("deleted", &counters.docs_deleted),
    ] {
        assert_eq!(docs(outcome), get(count), "docs {outcome}");
    }
    assert_eq!(get(&counters.docs_chunked), 2, "a and b");
    assert_eq!(get(&counters.docs_indexed), 2);
    assert_eq!(get(&counters.docs_duplicate), 1);
    assert_eq!(get(&counters.docs_too_short), 1);
    assert_eq!(
        get(&counters.docs_deleted),
        1,
        "the delete of never-indexed"
    );
    assert_eq!(get(&counters.docs_too_large), 1);
    assert_eq!(
        get(&counters.dead_letters),
        2,
        "the short document and the huge one"
    );
    let (letters, _) = Dlq::read_all(&dir.join("dlq.jsonl")).unwrap();
    let huge = letters
        .iter()
        .find(|l| l.source == "test:0:6")
        .expect("the huge document's dead letter");
    assert_eq!(huge.error_type, "too_large");
    assert!(
        huge.message.contains("max_chunks_per_doc"),
        "{}",
        huge.message
    );
    assert_eq!(
        counter(&snap, metrics::CHUNKS_INDEXED_TOTAL, None),
        get(&counters.chunks_indexed)
    );
    let tasks: u64 = ["document", "delete"]
        .iter()
        .map(|kind| counter(&snap, metrics::TASKS_TOTAL, Some(("type", kind))))
        .sum();
    assert_eq!(tasks, get(&counters.tasks));
    assert_eq!(get(&counters.tasks), 8);
    let _ = std::fs::remove_dir_all(dir);
}
