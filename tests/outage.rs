//! Outages hold, not drop (issue 15, item 5): under a steady load, the
//! embedder goes away for 30 s, then the index does. Nothing is lost and
//! nothing is dead-lettered: the stage's circuit opens, its work waits, the
//! embedded source stops taking more (its pushes wait for room), and work
//! resumes within 5 s of the upstream coming back.
//!
//! The embedder is the real OpenAI-compatible client talking to the
//! simulator's `/v1/embeddings` over loopback HTTP through a TCP proxy that
//! refuses connections and cuts the open ones while "down". The index is the
//! real qdrant-edge engine behind a wrapper that fails every call with a
//! connection error while "down" (no Qdrant server runs on this machine to
//! put a proxy in front of; the failure is what the gRPC client reports
//! when its server port is closed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet::dataplane::ack::AckTracker;
use freshet::dataplane::dlq::Dlq;
use freshet::dataplane::embed::openai::OpenAiEmbedder;
use freshet::dataplane::extract::{fetch::Fetcher, render, ExtractStage};
use freshet::dataplane::index::edge::EdgeIndex;
use freshet::dataplane::index::{
    ChunkPoint, DocState, Hit, IndexError, SearchFilter, SearchQuery, VectorIndex,
};
use freshet::dataplane::pipeline::{Deps, Pipeline};
use freshet::dataplane::retry::ErrorClass;
use freshet::dataplane::source::embedded::EmbeddedSource;
use freshet::dataplane::task::Task;
use freshet::knobs::Knobs;
use freshet::live::LiveConfig;
use freshet::sim::{Scenario, SimOptions, SimServer};

mod common;

const OUTAGE: Duration = Duration::from_secs(30);
const RESUME_WITHIN: Duration = Duration::from_secs(5);

/// A loopback TCP proxy that can refuse and cut connections.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (d, c) = (down.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if d.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Proxy { addr, down, conns }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for h in self.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }
}

/// The real edge index, failing every call like an unreachable server
/// while `down`.
#[derive(Debug)]
struct Unreachable {
    inner: EdgeIndex,
    down: AtomicBool,
    refused: AtomicU64,
}

impl Unreachable {
    async fn gate(&self, op: &'static str) -> Result<(), IndexError> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Err(IndexError {
                backend: "edge",
                op,
                class: ErrorClass::Connect,
                message: "transport error: connection refused (test outage)".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl VectorIndex for Unreachable {
    fn backend(&self) -> &'static str {
        "edge"
    }
    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), IndexError> {
        self.gate("upsert").await?;
        self.inner.upsert(points).await
    }
    async fn delete_points(&self, ids: Vec<uuid::Uuid>) -> Result<(), IndexError> {
        self.gate("delete").await?;
        self.inner.delete_points(ids).await
    }
    async fn delete_doc(&self, doc_id: &str) -> Result<u64, IndexError> {
        self.gate("delete").await?;
        self.inner.delete_doc(doc_id).await
    }
    async fn doc_state(&self, doc_id: &str) -> Result<DocState, IndexError> {
        self.gate("doc_state").await?;
        self.inner.doc_state(doc_id).await
    }
    async fn find_doc_hash(
        &self,
        hash: &str,
        except_doc: &str,
    ) -> Result<Option<String>, IndexError> {
        self.gate("find_doc_hash").await?;
        self.inner.find_doc_hash(hash, except_doc).await
    }
    async fn search_where(
        &self,
        query: &SearchQuery,
        k: usize,
        offset: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>, IndexError> {
        self.gate("search").await?;
        self.inner.search_where(query, k, offset, filter).await
    }
    async fn count(&self) -> Result<u64, IndexError> {
        self.gate("count").await?;
        self.inner.count().await
    }
    async fn all_points(&self) -> Result<Vec<(uuid::Uuid, String)>, IndexError> {
        self.gate("all_points").await?;
        self.inner.all_points().await
    }
}

const SCENARIO: &str = r#"
name = "outage"
[[phase]]
name = "only"
duration_s = 600
[phase.embed]
latency_ms = { p50 = 5, p99 = 10 }
per_item_ms = 0.2
"#;

fn doc(i: usize) -> Task {
    Task::Document {
        id: format!("doc-{i}"),
        text: format!(
            "Report {i}: the harbour authority counted {} ships in week {} and asked {} pilots about the new schedule.",
            i * 3 + 1,
            i % 52,
            i % 17 + 2
        ),
        title: format!("Report {i}"),
        url: String::new(),
        ts_ms: None,
        metadata: Default::default(),
    }
}

/// Waits until `chunks` grows past `from`; returns how long that took.
async fn resumed(chunks: impl Fn() -> u64, from: u64, within: Duration) -> Duration {
    let started = Instant::now();
    while chunks() <= from {
        assert!(
            started.elapsed() < within,
            "nothing indexed within {within:?} of the upstream coming back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_and_index_outages_hold_and_lose_nothing() {
    let tmp = common::TempDir::new("outage");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let sim = SimServer::start(SimOptions::new(
        Scenario::from_toml_str(SCENARIO).unwrap(),
        1,
    ))
    .await
    .unwrap();
    let sim_addr: SocketAddr = url::Url::parse(&sim.base_url())
        .unwrap()
        .socket_addrs(|| None)
        .unwrap()[0];
    let proxy = Proxy::start(sim_addr).await;

    let mut knobs = Knobs::default();
    knobs.transform.linger_ms = 5;
    knobs.source.max_in_flight = 64;
    let live = LiveConfig::new(knobs).unwrap();
    let embedder = OpenAiEmbedder::new(
        &format!("http://{}/v1", proxy.addr),
        "sim-key",
        "freshet-sim-hash",
        64,
        true,
    );
    let index = Arc::new(Unreachable {
        inner: EdgeIndex::open(&tmp.0.join("index"), 64).unwrap(),
        down: AtomicBool::new(false),
        refused: AtomicU64::new(0),
    });
    let dlq = Arc::new(Dlq::open(&tmp.0).unwrap());
    let pipeline = Pipeline::start(Deps {
        live: live.clone(),
        search: None,
        extract: Arc::new(ExtractStage::new(
            Fetcher::new(&Default::default(), &[]).unwrap(),
            Arc::new(render::NoRenderer),
            live.clone(),
        )),
        embedder: Arc::new(embedder),
        index: index.clone(),
        dlq: dlq.clone(),
        limits: Default::default(),
    });
    let circuits = pipeline.circuits();
    let counters = pipeline.counters();
    let tracker = AckTracker::new(&live);
    let source = EmbeddedSource::new(pipeline.sender(), tracker.clone(), dlq.clone());
    let chunks = {
        let counters = counters.clone();
        move || freshet::dataplane::Counters::get(&counters.chunks_indexed)
    };

    // A steady producer: 8 documents a second until told to stop; a push
    // waits while the pipeline has no room (the source holds).
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (source, stop) = (source.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) {
                assert!(source.push(doc(sent), "load").await, "pipeline closed");
                sent += 1;
                tokio::time::sleep(Duration::from_millis(125)).await;
            }
            sent
        })
    };
    drop(source);

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(chunks() > 0, "nothing indexed before the outage");

    // The embedder goes away.
    proxy.set_down(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !circuits.embed.is_open() {
        assert!(Instant::now() < deadline, "the embed circuit never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(OUTAGE).await;
    assert!(circuits.embed.is_open(), "{:?}", circuits.embed.status());
    assert_eq!(dlq.written(), 0, "dead letters during the embedder outage");
    let before = chunks();
    proxy.set_down(false);
    let embed_resume = resumed(&chunks, before, RESUME_WITHIN).await;

    // Then the index.
    tokio::time::sleep(Duration::from_secs(2)).await;
    index.down.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !circuits.index.is_open() {
        assert!(Instant::now() < deadline, "the index circuit never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(OUTAGE).await;
    assert!(circuits.index.is_open());
    assert_eq!(dlq.written(), 0, "dead letters during the index outage");
    let before = chunks();
    index.down.store(false, Ordering::SeqCst);
    let index_resume = resumed(&chunks, before, RESUME_WITHIN).await;
    assert!(
        index.refused.load(Ordering::Relaxed) < 2_000,
        "the held work hammered the index: {} refused calls in 30 s",
        index.refused.load(Ordering::Relaxed)
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = producer.await.unwrap();
    assert!(pipeline.finish(Duration::from_secs(60)).await, "drain");

    let c = tracker.counts();
    assert_eq!(c.registered, sent as u64);
    assert_eq!(c.finished, sent as u64, "every pushed document finished");
    assert_eq!(c.abandoned, 0);
    assert_eq!(dlq.written(), 0, "no dead letters at all");
    for i in 0..sent {
        let state = index.inner.doc_state(&format!("doc-{i}")).await.unwrap();
        assert!(!state.chunk_ids.is_empty(), "doc-{i} is not in the index");
    }
    assert!(!circuits.embed.is_open() && !circuits.index.is_open());
    assert_eq!(circuits.embed.status().opened_total, 1);
    assert_eq!(circuits.index.status().opened_total, 1);
    eprintln!(
        "outage test: {sent} documents; resumed {embed_resume:?} after the embedder and {index_resume:?} after the index came back"
    );
}
