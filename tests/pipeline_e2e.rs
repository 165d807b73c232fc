//! End to end on the simulator: tasks in, chunks in the index or dead
//! letters out, counted exactly; replays are idempotent; changed documents
//! replace their chunks; deletes remove them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use freshet::dataplane::dlq::Dlq;
use freshet::dataplane::task::url_doc_id;
use freshet::dataplane::{Counters, Task};
use freshet::service::Runtime;
use freshet::settings::Settings;
use freshet::sim::{Scenario, SimOptions, SimServer};

mod common;
use common::{TempDir, TestSettings, CITYBEAT_SHELLS, FAST};

fn settings(sim: &SimServer, data_dir: &std::path::Path) -> Settings {
    TestSettings::new(data_dir)
        .set("service.drain_timeout_s", 30)
        .sim(&sim.base_url())
        .set("embed.dimensions", 128)
        .set("knobs.transform.linger_ms", 50)
        .set("knobs.index.linger_ms", 5)
        .build()
}

fn prose(doc: &str, sentences: usize) -> String {
    (0..sentences)
        .map(|i| format!("In part {i} of {doc}, the council considered proposal {} and asked {} residents what they thought of it.", i * 7 + 3, i * 13 + 5))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(
    settings: &Settings,
    tasks: Vec<Task>,
) -> (std::sync::Arc<Counters>, freshet::dataplane::ack::AckCounts) {
    let runtime = Runtime::build(settings).await.expect("runtime builds");
    for task in tasks {
        assert!(runtime.source.push(task, "test").await);
    }
    let (drained, counters, tracker) = runtime.drain().await;
    assert!(drained, "pipeline drained in time");
    (counters, tracker.counts())
}

async fn index_docs(settings: &Settings) -> BTreeMap<String, usize> {
    let index = freshet::service::open_index(settings).await.unwrap();
    let mut docs = BTreeMap::new();
    for (_, doc) in index.all_points().await.unwrap() {
        *docs.entry(doc).or_insert(0) += 1;
    }
    docs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_end_in_the_index_or_the_dlq_and_replays_change_nothing() {
    let sim = SimServer::start(SimOptions::new(
        Scenario::from_toml_str(&format!("{FAST}{CITYBEAT_SHELLS}")).unwrap(),
        11,
    ))
    .await
    .unwrap();
    let dir = TempDir::new("e2e");
    let s = settings(&sim, &dir.0);
    let port = sim.addr().port();
    let corpus = sim.corpus();
    let articles: Vec<String> = corpus
        .article_urls(port, 40)
        .into_iter()
        .filter(|u| !u.contains("citybeat.sim.test"))
        .take(30)
        .collect();
    let shells: Vec<String> = corpus
        .article_urls(port, 200)
        .into_iter()
        .filter(|u| u.contains("citybeat.sim.test"))
        .take(3)
        .collect();
    assert_eq!(shells.len(), 3);
    let hostile: Vec<String> = corpus
        .hostile_urls(port)
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k,
                freshet::sim::HostileKind::SlowDrip
                    | freshet::sim::HostileKind::Malformed
                    | freshet::sim::HostileKind::InvalidUtf8
            )
        })
        .map(|(_, u)| u)
        .collect();
    let mut tasks: Vec<Task> = Vec::new();
    tasks.extend(articles.iter().map(|u| Task::Url {
        url: u.clone(),
        ts_ms: None,
    }));
    tasks.extend(shells.iter().map(|u| Task::Url {
        url: u.clone(),
        ts_ms: None,
    }));
    tasks.extend(hostile.iter().map(|u| Task::Url {
        url: u.clone(),
        ts_ms: None,
    }));
    for i in 0..5 {
        tasks.push(Task::Document {
            id: format!("doc-{i}"),
            text: prose(&format!("doc-{i}"), 40),
            title: format!("Doc {i}"),
            url: String::new(),
            ts_ms: None,
            metadata: Default::default(),
        });
    }
    tasks.push(Task::Document {
        id: "tiny".into(),
        text: "Too short to index.".into(),
        title: String::new(),
        url: String::new(),
        ts_ms: None,
        metadata: Default::default(),
    });
    tasks.push(Task::Keyword {
        query: "heat pumps".into(),
        ts_ms: None,
    });
    let n_tasks = tasks.len() as u64;

    let (c, acks) = run(&s, tasks.clone()).await;
    assert_eq!(acks.registered, n_tasks);
    assert_eq!(acks.finished, n_tasks, "every task finished: {acks:?}");
    assert_eq!(acks.abandoned, 0);

    // Exact accounting: every chunk the pipeline indexed is in the index,
    // and every document is indexed, dead-lettered or a known skip.
    let docs = index_docs(&s).await;
    let points: usize = docs.values().sum();
    assert_eq!(points as u64, Counters::get(&c.chunks_indexed), "{docs:?}");
    let (letters, bad) = Dlq::read_all(&dir.0.join("dlq.jsonl")).unwrap();
    assert!(bad.is_empty());
    assert_eq!(letters.len() as u64, Counters::get(&c.dead_letters));
    // Shells and hostile pages; the tiny explicit document is indexed (the
    // minimum-word floor applies to extracted pages only).
    let expected_dead = shells.len() + hostile.len();
    assert_eq!(letters.len(), expected_dead, "{letters:#?}");
    assert!(
        docs.keys().any(|id| id.contains("tiny")),
        "the short explicit document is searchable: {docs:?}"
    );
    for u in &articles {
        assert!(
            docs.contains_key(&url_doc_id(u)),
            "{u} missing from the index"
        );
    }
    for i in 0..5 {
        assert!(docs.contains_key(&format!("doc-{i}")));
    }
    let dead_sources: HashSet<String> = letters.iter().map(|l| l.task.to_string()).collect();
    for u in shells.iter().chain(&hostile) {
        assert!(
            dead_sources.iter().any(|t| t.contains(u.as_str())),
            "{u} not dead-lettered"
        );
        assert!(!docs.contains_key(&url_doc_id(u)));
    }
    // keyword: its pages are articles of the corpus; each is in the index or counted as a skip
    assert_eq!(Counters::get(&c.searches), 1);
    let indexed_docs = Counters::get(&c.docs_indexed);
    assert_eq!(
        docs.len() as u64,
        indexed_docs,
        "one index entry per indexed document"
    );
    assert_eq!(
        Counters::get(&c.urls) + 5 + 1,
        Counters::get(&c.docs_indexed)
            + Counters::get(&c.docs_duplicate)
            + Counters::get(&c.docs_unchanged)
            + letters.len() as u64,
        "every URL and document accounted for"
    );
    for (doc, n) in &docs {
        assert!(*n >= 1, "{doc}");
    }

    // Replay the same input: nothing changes in the index.
    let index = freshet::service::open_index(&s).await.unwrap();
    let mut before: Vec<_> = index.all_points().await.unwrap();
    before.sort();
    drop(index);
    let (c2, acks2) = run(&s, tasks).await;
    assert_eq!(acks2.finished, n_tasks);
    assert_eq!(
        Counters::get(&c2.chunks_indexed),
        0,
        "a replay upserts nothing new"
    );
    let index = freshet::service::open_index(&s).await.unwrap();
    let mut after: Vec<_> = index.all_points().await.unwrap();
    after.sort();
    assert_eq!(before, after, "idempotent: same points after a replay");
    drop(index);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_documents_replace_their_chunks_and_deletes_remove_them() {
    let sim = SimServer::start(SimOptions::new(
        Scenario::from_toml_str(&format!("{FAST}{CITYBEAT_SHELLS}")).unwrap(),
        3,
    ))
    .await
    .unwrap();
    let dir = TempDir::new("replace");
    let s = settings(&sim, &dir.0);
    let doc = |text: String| Task::Document {
        id: "policy".into(),
        text,
        title: "Policy".into(),
        url: String::new(),
        ts_ms: None,
        metadata: Default::default(),
    };
    let other = Task::Document {
        id: "other".into(),
        text: prose("other", 30),
        title: String::new(),
        url: String::new(),
        ts_ms: None,
        metadata: Default::default(),
    };

    run(&s, vec![doc(prose("v1", 120)), other.clone()]).await;
    let v1 = index_docs(&s).await;
    let long = v1["policy"];
    assert!(long >= 4, "v1 has several chunks: {v1:?}");

    // A shorter new version: exactly its chunks remain, none of v1's extra ones.
    run(&s, vec![doc(prose("v2", 30))]).await;
    let v2 = index_docs(&s).await;
    assert!(v2["policy"] < long, "{v2:?}");
    let index = freshet::service::open_index(&s).await.unwrap();
    let state = index.doc_state("policy").await.unwrap();
    assert_eq!(state.chunk_ids.len(), v2["policy"]);
    let expected: HashSet<_> = (0..v2["policy"] as u32)
        .map(|i| freshet::dataplane::index::chunk_id("policy", i))
        .collect();
    assert_eq!(
        state.chunk_ids.iter().copied().collect::<HashSet<_>>(),
        expected
    );
    let hits = index
        .search(
            freshet::dataplane::embed::hash::HashEmbedder::new(128).vector("part 3 of v2"),
            50,
        )
        .await
        .unwrap();
    assert!(
        hits.iter()
            .filter(|h| h.payload.doc_id == "policy")
            .all(|h| h.payload.text.contains("v2")),
        "no v1 text survives"
    );
    drop(index);

    // Versions racing in one run: the last one wins.
    run(&s, vec![doc(prose("v3", 60)), doc(prose("v4", 20))]).await;
    let index = freshet::service::open_index(&s).await.unwrap();
    let hits = index
        .search(
            freshet::dataplane::embed::hash::HashEmbedder::new(128).vector("part 1 of v4"),
            50,
        )
        .await
        .unwrap();
    let policy: Vec<_> = hits
        .iter()
        .filter(|h| h.payload.doc_id == "policy")
        .collect();
    assert!(
        !policy.is_empty() && policy.iter().all(|h| h.payload.text.contains("v4")),
        "{policy:?}"
    );
    drop(index);

    // A version followed by a delete in one run: the delete wins (the
    // delete needs no embedding and reaches the index first; the older
    // version must not resurrect the document).
    for _ in 0..3 {
        run(
            &s,
            vec![
                doc(prose("v5", 60)),
                Task::Delete {
                    id: "policy".into(),
                    ts_ms: None,
                },
            ],
        )
        .await;
        assert!(!index_docs(&s).await.contains_key("policy"));
    }
    // A delete followed by an unchanged re-send: the document stays.
    run(&s, vec![doc(prose("v6", 20))]).await;
    run(
        &s,
        vec![
            Task::Delete {
                id: "policy".into(),
                ts_ms: None,
            },
            doc(prose("v6", 20)),
        ],
    )
    .await;
    assert!(
        index_docs(&s).await.contains_key("policy"),
        "the last event says the document exists"
    );

    // A document whose new content duplicates another document loses its
    // older chunks (in one batch, and against the index).
    run(
        &s,
        vec![Task::Document {
            id: "twin-a".into(),
            text: prose("a-old", 30),
            title: String::new(),
            url: String::new(),
            ts_ms: None,
            metadata: Default::default(),
        }],
    )
    .await;
    run(
        &s,
        vec![
            Task::Document {
                id: "twin-b".into(),
                text: prose("shared", 30),
                title: String::new(),
                url: String::new(),
                ts_ms: None,
                metadata: Default::default(),
            },
            Task::Document {
                id: "twin-a".into(),
                text: prose("shared", 30),
                title: String::new(),
                url: String::new(),
                ts_ms: None,
                metadata: Default::default(),
            },
        ],
    )
    .await;
    let docs = index_docs(&s).await;
    assert!(
        docs.contains_key("twin-b") && !docs.contains_key("twin-a"),
        "{docs:?}"
    );
    run(
        &s,
        vec![Task::Document {
            id: "twin-c".into(),
            text: prose("c-old", 30),
            title: String::new(),
            url: String::new(),
            ts_ms: None,
            metadata: Default::default(),
        }],
    )
    .await;
    run(
        &s,
        vec![Task::Document {
            id: "twin-c".into(),
            text: prose("shared", 30),
            title: String::new(),
            url: String::new(),
            ts_ms: None,
            metadata: Default::default(),
        }],
    )
    .await;
    let docs = index_docs(&s).await;
    assert!(
        !docs.contains_key("twin-c"),
        "no second version of twin-c stays: {docs:?}"
    );

    // Delete removes exactly that document.
    run(
        &s,
        vec![Task::Delete {
            id: "policy".into(),
            ts_ms: None,
        }],
    )
    .await;
    let after = index_docs(&s).await;
    assert!(!after.contains_key("policy"), "{after:?}");
    assert_eq!(after.get("other"), v1.get("other"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    sim.shutdown().await;
}
