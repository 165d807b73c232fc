//! Pipeline wiring: stages as tasks connected by bounded channels.
//!
//! ```text
//! input ─▶ router ─┬─ keyword ─▶ search ─▶ URLs ─┐
//!                  ├─ url ───────────────────────┴▶ extract ─▶ docs ─┐
//!                  ├─ document ─────────────────────────────────────┴▶ transform ─▶ embed ─▶ [buffer] ─▶ index ─▶ ack
//!                  └─ delete ───────────────────────────────────────▶ transform ──────────────────────▶ index (delete by doc)
//! ```
//!
//! - Every stage reads the live knobs once per unit of work (a page, a
//!   micro-batch, a request).
//! - Concurrency per stage is the stage's slot limit; a dispatcher takes a
//!   slot **before** it spawns the work, so the number of tasks is bounded
//!   and waiting for a slot pushes back on the channel before it.
//! - Time spent blocked on a full downstream channel is counted per stage
//!   (`freshet_stage_backpressure_microseconds_total`): the controller's signal.
//! - Every derived item carries its source message's [`Ack`] share; a share
//!   is finished only when its chunks are indexed, it was filtered on
//!   purpose, or it was dead-lettered (DLQ record fsynced first).
//! - Ordering per document: the transform numbers every version of a
//!   document (and every delete) as it arrives; the index stage writes a
//!   version only if no newer one has been numbered since, under a per-document
//!   lock, so concurrent requests never let an old version overwrite a new one.
//! - Shutdown: drop the input sender; each stage ends when its input is
//!   closed and its spawned work is done. [`Pipeline::finish`] waits for that
//!   up to a deadline, then aborts: unfinished shares are dropped undone, so
//!   their messages are redelivered, never lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::ack::Ack;
use super::dlq::{DeadLetter, Dlq};
use super::embed::Embedder;
use super::extract::ExtractStage;
use super::index::{ChunkPayload, ChunkPoint, VectorIndex};
use super::retry::{self, ErrorClass};
use super::search::SearchStage;
use super::transform::{self, DocIn, DocOut, Dropped};
use super::Stage;
use crate::live::{LiveConfig, Slots};
use crate::metrics;

/// Capacity of every inter-stage channel.
pub const CHANNEL_CAPACITY: usize = 256;

/// A unit of work as sources deliver it (one JSON object per message/line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Task {
    /// Search the web for `query` and index the pages found.
    Keyword {
        /// The search query.
        query: String,
        /// Event time (Unix ms); freshness is measured from it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ms: Option<u64>,
    },
    /// Fetch and index one page; its document id is the URL without fragment.
    Url {
        /// http(s) URL.
        url: String,
        /// Event time (Unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ms: Option<u64>,
    },
    /// Index a document given in full (replaces an earlier version).
    Document {
        /// Document id.
        id: String,
        /// Text or markdown.
        text: String,
        /// Title.
        #[serde(default)]
        title: String,
        /// Where it lives, if anywhere.
        #[serde(default)]
        url: String,
        /// Event time (Unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ms: Option<u64>,
        /// Fields stored with every chunk under `metadata` (e.g. a table's
        /// payload columns), for filtering at query time.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        metadata: BTreeMap<String, serde_json::Value>,
    },
    /// Remove every chunk of a document.
    Delete {
        /// Document id.
        id: String,
        /// Event time (Unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ms: Option<u64>,
    },
}

/// Largest document text accepted in a task.
pub const MAX_TEXT_BYTES: usize = 10 * 1024 * 1024;

/// Largest `metadata` of a document task, as JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

impl Task {
    /// Parses and validates one task; the error says what is wrong.
    pub fn parse(json: &str) -> Result<Task, String> {
        let task: Task = serde_json::from_str(json).map_err(|e| format!("not a task: {e}"))?;
        task.validate()?;
        Ok(task)
    }

    /// Checks the fields a parser cannot.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = |id: &str| !id.trim().is_empty() && id.len() <= 1024;
        match self {
            Task::Keyword { query, .. } if query.trim().is_empty() || query.len() > 2048 => {
                Err("keyword query must be 1..=2048 bytes".into())
            }
            Task::Url { url, .. } => match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
                Ok(u) => Err(format!(
                    "url must be http(s) with a host, got scheme `{}`",
                    u.scheme()
                )),
                Err(e) => Err(format!("bad url: {e}")),
            },
            Task::Document { id, .. } | Task::Delete { id, .. } if !id_ok(id) => {
                Err("document id must be 1..=1024 bytes".into())
            }
            Task::Document { text, .. } if text.len() > MAX_TEXT_BYTES => Err(format!(
                "document text is larger than {MAX_TEXT_BYTES} bytes"
            )),
            Task::Document { metadata, .. }
                if metadata.keys().any(|k| k.is_empty() || k.len() > 128) =>
            {
                Err("metadata keys must be 1..=128 bytes".into())
            }
            Task::Document { metadata, .. }
                if serde_json::to_vec(metadata).map_or(0, |v| v.len()) > MAX_METADATA_BYTES =>
            {
                Err(format!(
                    "document metadata is larger than {MAX_METADATA_BYTES} bytes of JSON"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The task type label.
    pub fn kind(&self) -> &'static str {
        match self {
            Task::Keyword { .. } => "keyword",
            Task::Url { .. } => "url",
            Task::Document { .. } => "document",
            Task::Delete { .. } => "delete",
        }
    }

    fn ts_ms(&self) -> Option<u64> {
        match self {
            Task::Keyword { ts_ms, .. }
            | Task::Url { ts_ms, .. }
            | Task::Document { ts_ms, .. }
            | Task::Delete { ts_ms, .. } => *ts_ms,
        }
    }
}

/// The document id of a page: its URL without the fragment.
pub fn url_doc_id(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// A task with its acknowledgement share, as sources hand it in.
#[derive(Debug)]
pub struct Envelope {
    /// The task.
    pub task: Task,
    /// Its source message's share.
    pub ack: Ack,
    /// Unix ms when the source received it (freshness when the task has no `ts_ms`).
    pub received_ms: u64,
    /// Where it came from, e.g. `embedded:0:17`.
    pub source: String,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What travels with an item for acknowledgement, freshness and dead letters.
#[derive(Debug)]
struct Origin {
    ack: Ack,
    event_ms: u64,
    source: String,
    task: Arc<serde_json::Value>,
}

impl Origin {
    /// A share for an item derived from this message, whose dead letter
    /// should hold `task` (what to replay), not the whole original task.
    fn derive(&self, task: &Task) -> Origin {
        Origin {
            ack: self.ack.clone(),
            event_ms: self.event_ms,
            source: self.source.clone(),
            task: Arc::new(serde_json::to_value(task).unwrap_or_default()),
        }
    }
}

#[derive(Debug)]
struct DocItem {
    doc_id: String,
    url: String,
    title: String,
    text: String,
    quality: f64,
    render_mode: String,
    fetched_at_ms: u64,
    metadata: BTreeMap<String, serde_json::Value>,
    origin: Origin,
}

#[derive(Debug)]
enum TransformIn {
    Doc(DocItem),
    Delete { doc_id: String, origin: Origin },
}

#[derive(Debug)]
struct ChunkedDoc {
    meta: DocItem,
    doc_hash: String,
    chunks: Vec<transform::Chunk>,
    stale: Vec<Uuid>,
    seq: u64,
}

#[derive(Debug)]
enum Write {
    Upsert {
        doc: Box<ChunkedDoc>,
        vectors: Vec<Vec<f32>>,
    },
    Delete {
        doc_id: String,
        origin: Origin,
        seq: u64,
    },
}

impl Write {
    fn points(&self) -> usize {
        match self {
            Write::Upsert { doc, .. } => doc.chunks.len(),
            Write::Delete { .. } => 1,
        }
    }
    fn doc_id(&self) -> &str {
        match self {
            Write::Upsert { doc, .. } => &doc.meta.doc_id,
            Write::Delete { doc_id, .. } => doc_id,
        }
    }
}

/// Exact counts of what the pipeline did (tests, demo summary).
#[derive(Debug, Default)]
pub struct Counters {
    /// Tasks accepted from sources.
    pub tasks: AtomicU64,
    /// Searches that returned results.
    pub searches: AtomicU64,
    /// URLs handed to extract (from url tasks and search results).
    pub urls: AtomicU64,
    /// Pages extracted.
    pub pages: AtomicU64,
    /// Documents chunked and sent on to be indexed.
    pub docs_chunked: AtomicU64,
    /// Documents dropped by the quality filter (dead-lettered).
    pub docs_low_quality: AtomicU64,
    /// Documents dropped as too short (dead-lettered).
    pub docs_too_short: AtomicU64,
    /// Documents identical to another document (skipped).
    pub docs_duplicate: AtomicU64,
    /// Documents identical to their indexed version (skipped).
    pub docs_unchanged: AtomicU64,
    /// Versions overtaken by a newer version of the same document (skipped).
    pub docs_superseded: AtomicU64,
    /// Documents indexed (all chunks upserted).
    pub docs_indexed: AtomicU64,
    /// Delete tasks applied.
    pub docs_deleted: AtomicU64,
    /// Chunks upserted.
    pub chunks_indexed: AtomicU64,
    /// Stale chunks deleted after a document changed.
    pub chunks_stale_deleted: AtomicU64,
    /// Dead letters written.
    pub dead_letters: AtomicU64,
    /// Freshness per chunk, microseconds.
    pub freshness_us: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn record_freshness(&self, seconds: f64, n: u64) {
        let mut h = self.freshness_us.lock().unwrap_or_else(|p| p.into_inner());
        let h = h.get_or_insert_with(|| {
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("valid histogram bounds")
        });
        let us = (seconds * 1e6).clamp(1.0, 3_600_000_000.0) as u64;
        let _ = h.record_n(us, n);
    }

    /// Freshness quantile in seconds (e.g. 0.5, 0.99), if any chunk was indexed.
    pub fn freshness_quantile(&self, q: f64) -> Option<f64> {
        let h = self.freshness_us.lock().unwrap_or_else(|p| p.into_inner());
        h.as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1e6)
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The stages and stores a pipeline runs with.
#[derive(Debug, Clone)]
pub struct Deps {
    /// Live knobs.
    pub live: Arc<LiveConfig>,
    /// Search stage; keyword tasks are dead-lettered without one.
    pub search: Option<Arc<SearchStage>>,
    /// Extract stage.
    pub extract: Arc<ExtractStage>,
    /// Embedder.
    pub embedder: Arc<dyn Embedder>,
    /// Vector index.
    pub index: Arc<dyn VectorIndex>,
    /// Dead letters.
    pub dlq: Arc<Dlq>,
}

struct Shared {
    deps: Deps,
    counters: Arc<Counters>,
    seqs: Mutex<HashMap<String, u64>>,
    next_seq: AtomicU64,
    doc_locks: Vec<tokio::sync::Mutex<()>>,
    embed_slots: Arc<Slots>,
    index_slots: Arc<Slots>,
}

/// A running pipeline.
pub struct Pipeline {
    input: Option<mpsc::Sender<Envelope>>,
    tasks: JoinSet<()>,
    counters: Arc<Counters>,
    _followers: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

async fn send_measured<T>(tx: &mpsc::Sender<T>, item: T, stage: &'static str) -> Result<(), T> {
    match tx.try_send(item) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(item)) => Err(item),
        Err(mpsc::error::TrySendError::Full(item)) => {
            let started = Instant::now();
            let result = tx.send(item).await.map_err(|e| e.0);
            metrics::counter!(metrics::STAGE_BACKPRESSURE_MICROSECONDS_TOTAL, "stage" => stage)
                .increment(started.elapsed().as_micros() as u64);
            result
        }
    }
}

impl Shared {
    /// Writes a dead letter, then finishes the share; if the write fails the
    /// share is abandoned (redelivered later) instead.
    async fn dead_letter(&self, stage: Stage, class: &str, message: String, origin: Origin) {
        let letter = DeadLetter::new(
            stage.as_str(),
            class,
            message,
            (*origin.task).clone(),
            origin.source.clone(),
        );
        let dlq = self.deps.dlq.clone();
        let written = tokio::task::spawn_blocking(move || dlq.write(&letter)).await;
        match written {
            Ok(Ok(())) => {
                Counters::add(&self.counters.dead_letters, 1);
                origin.ack.done();
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot write dead letter; the message will be redelivered");
                drop(origin.ack);
            }
            Err(e) => {
                tracing::error!(error = %e, "dead-letter writer failed; the message will be redelivered");
                drop(origin.ack);
            }
        }
    }

    /// A document version is settled without a write (skipped on purpose).
    fn skip(&self, doc_id: &str, seq: u64, origin: Origin) {
        self.retire_seq(doc_id, seq);
        origin.ack.done();
    }

    /// A document version failed at the index: dead-letter it.
    async fn index_failed(
        &self,
        doc_id: &str,
        seq: u64,
        origin: Origin,
        e: &super::index::IndexError,
    ) {
        self.retire_seq(doc_id, seq);
        self.dead_letter(Stage::Index, e.class.as_str(), e.to_string(), origin)
            .await;
    }

    fn assign_seq(&self, doc_id: &str) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(doc_id.to_string(), seq);
        seq
    }

    fn is_latest(&self, doc_id: &str, seq: u64) -> bool {
        self.seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(doc_id)
            // Only the newest version removes the entry, so a missing entry
            // means a newer version (or delete) has already been settled.
            .is_some_and(|&s| s == seq)
    }

    fn retire_seq(&self, doc_id: &str, seq: u64) {
        let mut seqs = self.seqs.lock().unwrap_or_else(|p| p.into_inner());
        if seqs.get(doc_id) == Some(&seq) {
            seqs.remove(doc_id);
        }
    }

    fn lock_index(&self, doc_id: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        doc_id.hash(&mut h);
        (h.finish() % self.doc_locks.len() as u64) as usize
    }
}

impl Pipeline {
    /// Starts every stage; feed it through [`sender`](Self::sender).
    pub fn start(deps: Deps) -> Pipeline {
        let live = deps.live.clone();
        let embed_slots = Arc::new(Slots::new(live.load().knobs.embed.slots as usize));
        let index_slots = Arc::new(Slots::new(live.load().knobs.index.slots as usize));
        let followers = vec![
            embed_slots.follow(&live, |k| k.embed.slots),
            index_slots.follow(&live, |k| k.index.slots),
        ];
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            deps,
            counters: counters.clone(),
            seqs: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(0),
            doc_locks: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
            embed_slots,
            index_slots,
        });
        let (input_tx, input_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (extract_tx, extract_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (transform_tx, transform_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (embed_tx, embed_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (index_tx, index_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let mut tasks = JoinSet::new();
        tasks.spawn(router(
            shared.clone(),
            input_rx,
            extract_tx,
            transform_tx.clone(),
        ));
        tasks.spawn(extract_dispatch(shared.clone(), extract_rx, transform_tx));
        tasks.spawn(transform_stage(shared.clone(), transform_rx, embed_tx));
        tasks.spawn(embed_stage(shared.clone(), embed_rx, index_tx));
        tasks.spawn(index_stage(shared, index_rx));
        Pipeline {
            input: Some(input_tx),
            tasks,
            counters,
            _followers: followers,
        }
    }

    /// The input channel (clone it per source).
    pub fn sender(&self) -> mpsc::Sender<Envelope> {
        self.input
            .clone()
            .expect("pipeline input is open until finish")
    }

    /// Exact counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Closes the input and waits for every stage to drain, up to `deadline`;
    /// past it, the rest is aborted (and redelivered later). Returns whether
    /// everything drained. Sources must have dropped their senders.
    pub async fn finish(mut self, deadline: Duration) -> bool {
        self.input.take();
        let drained = tokio::time::timeout(deadline, async {
            while let Some(result) = self.tasks.join_next().await {
                if let Err(e) = result {
                    tracing::error!(error = %e, "pipeline stage failed");
                }
            }
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(
                "drain deadline passed; aborting unfinished work (it will be redelivered)"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        drained
    }
}

async fn router(
    shared: Arc<Shared>,
    mut input: mpsc::Receiver<Envelope>,
    extract_tx: mpsc::Sender<(String, Origin)>,
    transform_tx: mpsc::Sender<TransformIn>,
) {
    let mut searches = JoinSet::new();
    while let Some(envelope) = input.recv().await {
        Counters::add(&shared.counters.tasks, 1);
        metrics::counter!(metrics::TASKS_TOTAL, "type" => envelope.task.kind()).increment(1);
        let origin = Origin {
            ack: envelope.ack,
            event_ms: envelope.task.ts_ms().unwrap_or(envelope.received_ms),
            source: envelope.source,
            task: Arc::new(serde_json::to_value(&envelope.task).unwrap_or_default()),
        };
        if let Err(why) = envelope.task.validate() {
            shared
                .dead_letter(Stage::Source, ErrorClass::Invalid.as_str(), why, origin)
                .await;
            continue;
        }
        match envelope.task {
            Task::Keyword { query, .. } => {
                let Some(search) = shared.deps.search.clone() else {
                    shared
                        .dead_letter(
                            Stage::Search,
                            ErrorClass::Invalid.as_str(),
                            "no search provider configured".into(),
                            origin,
                        )
                        .await;
                    continue;
                };
                let permit = search.slots().acquire().await;
                let shared = shared.clone();
                let extract_tx = extract_tx.clone();
                searches.spawn(async move {
                    match search.search_permitted(&query, Some(permit)).await {
                        Ok(hits) => {
                            Counters::add(&shared.counters.searches, 1);
                            let mut seen = HashSet::new();
                            for hit in hits {
                                let doc_id = url_doc_id(&hit.url);
                                if seen.insert(doc_id) {
                                    Counters::add(&shared.counters.urls, 1);
                                    let derived = origin.derive(&Task::Url {
                                        url: hit.url.clone(),
                                        ts_ms: Some(origin.event_ms),
                                    });
                                    if send_measured(&extract_tx, (hit.url, derived), "search")
                                        .await
                                        .is_err()
                                    {
                                        break;
                                    }
                                }
                            }
                            origin.ack.done();
                        }
                        Err(e) => {
                            shared
                                .dead_letter(Stage::Search, e.class.as_str(), e.to_string(), origin)
                                .await;
                        }
                    }
                });
                while searches.try_join_next().is_some() {}
            }
            Task::Url { url, .. } => {
                Counters::add(&shared.counters.urls, 1);
                let _ = send_measured(&extract_tx, (url, origin), "source").await;
            }
            Task::Document {
                id,
                text,
                title,
                url,
                metadata,
                ..
            } => {
                let item = DocItem {
                    doc_id: id,
                    url,
                    title,
                    text,
                    quality: 1.0,
                    render_mode: "document".into(),
                    fetched_at_ms: now_ms(),
                    metadata,
                    origin,
                };
                let _ = send_measured(&transform_tx, TransformIn::Doc(item), "source").await;
            }
            Task::Delete { id, .. } => {
                let _ = send_measured(
                    &transform_tx,
                    TransformIn::Delete { doc_id: id, origin },
                    "source",
                )
                .await;
            }
        }
    }
    while searches.join_next().await.is_some() {}
}

async fn extract_dispatch(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(String, Origin)>,
    transform_tx: mpsc::Sender<TransformIn>,
) {
    let mut running = JoinSet::new();
    while let Some((url, origin)) = rx.recv().await {
        metrics::gauge!(metrics::STAGE_QUEUE_DEPTH, "stage" => "extract").set(rx.len() as f64);
        let permit = shared.deps.extract.slots().acquire().await;
        let shared = shared.clone();
        let transform_tx = transform_tx.clone();
        running.spawn(async move {
            match shared
                .deps
                .extract
                .extract_permitted(&url, None, Some(permit))
                .await
            {
                Ok(page) => {
                    Counters::add(&shared.counters.pages, 1);
                    let item = DocItem {
                        doc_id: url_doc_id(&url),
                        url: page.final_url,
                        title: page.title,
                        text: page.markdown,
                        quality: page.quality.score,
                        render_mode: page.render_mode.as_str().to_string(),
                        fetched_at_ms: page.fetched_at_ms,
                        metadata: BTreeMap::new(),
                        origin,
                    };
                    let _ = send_measured(&transform_tx, TransformIn::Doc(item), "extract").await;
                }
                Err(e) => {
                    shared
                        .dead_letter(Stage::Extract, e.class.as_str(), e.to_string(), origin)
                        .await;
                }
            }
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

async fn transform_stage(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<TransformIn>,
    embed_tx: mpsc::Sender<Write>,
) {
    let mut open = true;
    while open {
        // Collect one micro-batch: up to batch_size items or linger_ms.
        let knobs = shared.deps.live.load().knobs.transform.clone();
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(knobs.linger_ms);
        while batch.len() < knobs.batch_size as usize {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        metrics::gauge!(metrics::STAGE_QUEUE_DEPTH, "stage" => "transform").set(rx.len() as f64);
        let started = Instant::now();
        metrics::counter!(metrics::STAGE_REQUESTS_TOTAL, "stage" => "transform").increment(1);
        // Number versions and deletes in arrival order.
        let mut docs: Vec<(DocItem, u64)> = Vec::new();
        for item in batch {
            match item {
                TransformIn::Doc(doc) => {
                    let seq = shared.assign_seq(&doc.doc_id);
                    // An older version of the same document in this batch is
                    // superseded before any work is spent on it.
                    if let Some(pos) = docs.iter().position(|(d, _)| d.doc_id == doc.doc_id) {
                        let (old, _) = docs.remove(pos);
                        metrics::counter!(metrics::DOCS_TOTAL, "outcome" => "superseded")
                            .increment(1);
                        Counters::add(&shared.counters.docs_superseded, 1);
                        old.origin.ack.done();
                    }
                    docs.push((doc, seq));
                }
                TransformIn::Delete { doc_id, origin } => {
                    let seq = shared.assign_seq(&doc_id);
                    let _ = send_measured(
                        &embed_tx,
                        Write::Delete {
                            doc_id,
                            origin,
                            seq,
                        },
                        "transform",
                    )
                    .await;
                }
            }
        }
        let inputs: Vec<DocIn> = docs
            .iter()
            .map(|(d, _)| DocIn {
                doc_id: d.doc_id.clone(),
                text: d.text.clone(),
                quality: d.quality,
            })
            .collect();
        let knobs_for_batch = knobs.clone();
        let outs = tokio::task::spawn_blocking(move || {
            transform::transform_batch(&inputs, &knobs_for_batch)
        })
        .await;
        let outs = match outs {
            Ok(Ok(outs)) => outs,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("transform failed: {e}"),
                    Err(e) => format!("transform crashed: {e}"),
                    Ok(Ok(_)) => unreachable!("matched above"),
                };
                for (doc, seq) in docs {
                    shared.retire_seq(&doc.doc_id, seq);
                    shared
                        .dead_letter(
                            Stage::Transform,
                            ErrorClass::Invalid.as_str(),
                            why.clone(),
                            doc.origin,
                        )
                        .await;
                }
                continue;
            }
        };
        metrics::histogram!(metrics::STAGE_LATENCY_SECONDS, "stage" => "transform", "outcome" => "ok")
            .record(started.elapsed().as_secs_f64());
        for ((doc, seq), out) in docs.into_iter().zip(outs) {
            match out {
                DocOut::Dropped(why) => {
                    metrics::counter!(metrics::DOCS_TOTAL, "outcome" => why.as_str()).increment(1);
                    match why {
                        Dropped::DuplicateInBatch => {
                            // Same content as another document of the batch:
                            // that one is indexed; this one's older chunks,
                            // if any, must not stay as a second version.
                            Counters::add(&shared.counters.docs_duplicate, 1);
                            let state = {
                                let _guard = shared.doc_locks[shared.lock_index(&doc.doc_id)]
                                    .lock()
                                    .await;
                                let index = &shared.deps.index;
                                retry::retry(&shared.deps.live, Stage::Index, |_| {
                                    index.doc_state(&doc.doc_id)
                                })
                                .await
                            };
                            match state {
                                Ok(state) if !state.chunk_ids.is_empty() => {
                                    let write = Write::Delete {
                                        doc_id: doc.doc_id,
                                        origin: doc.origin,
                                        seq,
                                    };
                                    let _ = send_measured(&embed_tx, write, "transform").await;
                                }
                                Ok(_) => shared.skip(&doc.doc_id, seq, doc.origin),
                                Err(e) => {
                                    shared.index_failed(&doc.doc_id, seq, doc.origin, &e).await
                                }
                            }
                        }
                        Dropped::LowQuality => {
                            shared.retire_seq(&doc.doc_id, seq);
                            Counters::add(&shared.counters.docs_low_quality, 1);
                            let message = format!(
                                "quality {:.2} is below transform.min_quality {:.2}",
                                doc.quality, knobs.min_quality
                            );
                            shared
                                .dead_letter(Stage::Transform, "quality", message, doc.origin)
                                .await;
                        }
                        Dropped::TooShort => {
                            shared.retire_seq(&doc.doc_id, seq);
                            Counters::add(&shared.counters.docs_too_short, 1);
                            let message =
                                format!("fewer than {} words after cleaning", transform::MIN_WORDS);
                            shared
                                .dead_letter(Stage::Transform, "too_short", message, doc.origin)
                                .await;
                        }
                    }
                }
                DocOut::Chunks { doc_hash, chunks } => {
                    match against_index(&shared, &doc, &doc_hash, &chunks).await {
                        Ok(Verdict::Write(stale)) => {
                            metrics::counter!(metrics::DOCS_TOTAL, "outcome" => "chunked")
                                .increment(1);
                            Counters::add(&shared.counters.docs_chunked, 1);
                            let chunked = ChunkedDoc {
                                meta: doc,
                                doc_hash,
                                chunks,
                                stale,
                                seq,
                            };
                            let _ = send_measured(
                                &embed_tx,
                                Write::Upsert {
                                    doc: Box::new(chunked),
                                    vectors: Vec::new(),
                                },
                                "transform",
                            )
                            .await;
                        }
                        Ok(Verdict::Unchanged) => {
                            metrics::counter!(metrics::DOCS_TOTAL, "outcome" => "unchanged")
                                .increment(1);
                            Counters::add(&shared.counters.docs_unchanged, 1);
                            shared.retire_seq(&doc.doc_id, seq);
                            doc.origin.ack.done();
                        }
                        Ok(Verdict::Duplicate { of, had_chunks }) => {
                            metrics::counter!(metrics::DOCS_TOTAL, "outcome" => "duplicate")
                                .increment(1);
                            Counters::add(&shared.counters.docs_duplicate, 1);
                            tracing::debug!(doc = %doc.doc_id, of = %of, "duplicate of an indexed document");
                            if had_chunks {
                                // Its older version must go: the content now
                                // lives under the other document.
                                let write = Write::Delete {
                                    doc_id: doc.doc_id,
                                    origin: doc.origin,
                                    seq,
                                };
                                let _ = send_measured(&embed_tx, write, "transform").await;
                            } else {
                                shared.skip(&doc.doc_id, seq, doc.origin);
                            }
                        }
                        Err(e) => shared.index_failed(&doc.doc_id, seq, doc.origin, &e).await,
                    }
                }
            }
        }
    }
}

enum Verdict {
    Write(Vec<Uuid>),
    Unchanged,
    Duplicate { of: String, had_chunks: bool },
}

/// Compares a chunked document with what the index holds.
async fn against_index(
    shared: &Shared,
    doc: &DocItem,
    doc_hash: &str,
    chunks: &[transform::Chunk],
) -> Result<Verdict, super::index::IndexError> {
    let index = &shared.deps.index;
    let live = &shared.deps.live;
    // Under the document's lock, so a write of an older version that is in
    // progress finishes before the state it changes is read.
    let _guard = shared.doc_locks[shared.lock_index(&doc.doc_id)]
        .lock()
        .await;
    let state = retry::retry(live, Stage::Index, |_| index.doc_state(&doc.doc_id)).await?;
    let new_ids: HashSet<Uuid> = chunks.iter().map(|c| c.id).collect();
    if state.doc_hash.as_deref() == Some(doc_hash) && state.chunk_ids.len() == chunks.len() {
        return Ok(Verdict::Unchanged);
    }
    if let Some(other) = retry::retry(live, Stage::Index, |_| {
        index.find_doc_hash(doc_hash, &doc.doc_id)
    })
    .await?
    {
        return Ok(Verdict::Duplicate {
            of: other,
            had_chunks: !state.chunk_ids.is_empty(),
        });
    }
    let stale = state
        .chunk_ids
        .into_iter()
        .filter(|id| !new_ids.contains(id))
        .collect();
    Ok(Verdict::Write(stale))
}

async fn embed_stage(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Write>,
    index_tx: mpsc::Sender<Write>,
) {
    let mut running = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let batch_size = shared.deps.live.load().knobs.embed.batch_size as usize;
        // Group whatever is ready, up to one request's worth of chunks.
        let mut group = vec![first];
        let mut chunks: usize = group[0].points();
        while chunks < batch_size {
            match rx.try_recv() {
                Ok(item) => {
                    chunks += item.points();
                    group.push(item);
                }
                Err(_) => break,
            }
        }
        metrics::gauge!(metrics::STAGE_QUEUE_DEPTH, "stage" => "embed").set(rx.len() as f64);
        let permit = shared.embed_slots.acquire().await;
        let shared = shared.clone();
        let index_tx = index_tx.clone();
        running.spawn(async move {
            let _permit = permit;
            let _in_flight = metrics::InFlight::new("embed");
            metrics::gauge!(metrics::STAGE_SLOTS, "stage" => "embed")
                .set(shared.embed_slots.limit() as f64);
            let texts: Vec<String> = group
                .iter()
                .filter_map(|w| match w {
                    Write::Upsert { doc, .. } => Some(doc.chunks.iter().map(|c| c.text.clone())),
                    Write::Delete { .. } => None,
                })
                .flatten()
                .collect();
            let vectors = match embed_all(&shared, &texts).await {
                Ok(v) => v,
                Err(e) => {
                    for w in group {
                        match w {
                            Write::Upsert { doc, .. } => {
                                shared.retire_seq(&doc.meta.doc_id, doc.seq);
                                shared
                                    .dead_letter(
                                        Stage::Embed,
                                        e.class.as_str(),
                                        e.to_string(),
                                        doc.meta.origin,
                                    )
                                    .await;
                            }
                            delete @ Write::Delete { .. } => {
                                let _ = send_measured(&index_tx, delete, "embed").await;
                            }
                        }
                    }
                    return;
                }
            };
            let mut vectors = vectors.into_iter();
            for w in group {
                let item = match w {
                    Write::Upsert { doc, .. } => {
                        let v: Vec<Vec<f32>> = vectors.by_ref().take(doc.chunks.len()).collect();
                        Write::Upsert { doc, vectors: v }
                    }
                    delete => delete,
                };
                if send_measured(&index_tx, item, "embed").await.is_err() {
                    break;
                }
            }
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Embeds `texts` in requests of at most `embed.batch_size`, with retries.
async fn embed_all(
    shared: &Shared,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, super::embed::EmbedError> {
    let mut out = Vec::with_capacity(texts.len());
    let mut start = 0;
    while start < texts.len() {
        let batch_size = (shared.deps.live.load().knobs.embed.batch_size as usize).max(1);
        let end = (start + batch_size).min(texts.len());
        let request = &texts[start..end];
        let started = Instant::now();
        metrics::counter!(metrics::STAGE_REQUESTS_TOTAL, "stage" => "embed").increment(1);
        let result = retry::retry(&shared.deps.live, Stage::Embed, |_| {
            shared.deps.embedder.embed(request)
        })
        .await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!(metrics::STAGE_LATENCY_SECONDS, "stage" => "embed", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(vectors) => {
                super::embed::check_vectors(
                    shared.deps.embedder.backend(),
                    shared.deps.embedder.dim(),
                    request.len(),
                    &vectors,
                )?;
                out.extend(vectors);
            }
            Err(e) => {
                metrics::record_error("embed", e.class.as_str(), &e);
                return Err(e);
            }
        }
        start = end;
    }
    Ok(out)
}

async fn index_stage(shared: Arc<Shared>, mut rx: mpsc::Receiver<Write>) {
    let mut running = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let knobs = shared.deps.live.load().knobs.index.clone();
        let mut group = vec![first];
        let mut points = group[0].points();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(knobs.linger_ms);
        while points < knobs.batch_size as usize {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => {
                    points += item.points();
                    group.push(item);
                }
                _ => break,
            }
        }
        metrics::gauge!(metrics::STAGE_QUEUE_DEPTH, "stage" => "index").set(rx.len() as f64);
        let permit = shared.index_slots.acquire().await;
        let shared = shared.clone();
        running.spawn(async move {
            let _permit = permit;
            let _in_flight = metrics::InFlight::new("index");
            metrics::gauge!(metrics::STAGE_SLOTS, "stage" => "index")
                .set(shared.index_slots.limit() as f64);
            write_group(&shared, group).await;
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Applies one group of writes under the per-document locks.
async fn write_group(shared: &Shared, group: Vec<Write>) {
    let mut stripes: Vec<usize> = group
        .iter()
        .map(|w| shared.lock_index(w.doc_id()))
        .collect();
    stripes.sort_unstable();
    stripes.dedup();
    let mut guards = Vec::with_capacity(stripes.len());
    for s in stripes {
        guards.push(shared.doc_locks[s].lock().await);
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for w in group {
        match w {
            Write::Upsert { doc, vectors } => {
                if shared.is_latest(&doc.meta.doc_id, doc.seq) {
                    upserts.push((doc, vectors));
                } else {
                    metrics::counter!(metrics::DOCS_TOTAL, "outcome" => "superseded").increment(1);
                    Counters::add(&shared.counters.docs_superseded, 1);
                    doc.meta.origin.ack.done();
                }
            }
            Write::Delete {
                doc_id,
                origin,
                seq,
            } => {
                if shared.is_latest(&doc_id, seq) {
                    deletes.push((doc_id, origin, seq));
                } else {
                    Counters::add(&shared.counters.docs_superseded, 1);
                    origin.ack.done();
                }
            }
        }
    }
    let index = &shared.deps.index;
    let live = &shared.deps.live;
    if !upserts.is_empty() {
        let points: Vec<ChunkPoint> = upserts
            .iter()
            .flat_map(|(doc, vectors)| {
                doc.chunks
                    .iter()
                    .zip(vectors)
                    .map(|(chunk, vector)| ChunkPoint {
                        id: chunk.id,
                        vector: vector.clone(),
                        payload: ChunkPayload {
                            doc_id: doc.meta.doc_id.clone(),
                            chunk_index: chunk.index,
                            chunk_count: doc.chunks.len() as u32,
                            url: doc.meta.url.clone(),
                            title: doc.meta.title.clone(),
                            text: chunk.text.clone(),
                            content_hash: chunk.content_hash.clone(),
                            doc_hash: doc.doc_hash.clone(),
                            fetched_at_ms: doc.meta.fetched_at_ms,
                            render_mode: doc.meta.render_mode.clone(),
                            quality: doc.meta.quality,
                            source_offset: doc.meta.origin.source.clone(),
                            metadata: doc.meta.metadata.clone(),
                        },
                    })
            })
            .collect();
        let n = points.len() as u64;
        let started = Instant::now();
        metrics::counter!(metrics::STAGE_REQUESTS_TOTAL, "stage" => "index").increment(1);
        let result = retry::retry(live, Stage::Index, |_| index.upsert(points.clone())).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!(metrics::STAGE_LATENCY_SECONDS, "stage" => "index", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                let now = now_ms();
                Counters::add(&shared.counters.chunks_indexed, n);
                metrics::counter!(metrics::CHUNKS_INDEXED_TOTAL).increment(n);
                for (doc, _) in upserts {
                    if !doc.stale.is_empty() {
                        let stale = doc.stale.clone();
                        match retry::retry(live, Stage::Index, |_| {
                            index.delete_points(stale.clone())
                        })
                        .await
                        {
                            Ok(()) => Counters::add(
                                &shared.counters.chunks_stale_deleted,
                                doc.stale.len() as u64,
                            ),
                            Err(e) => {
                                // The new chunks are in; the stale ones stay
                                // until the document's next version or a replay.
                                shared.retire_seq(&doc.meta.doc_id, doc.seq);
                                shared
                                    .dead_letter(
                                        Stage::Index,
                                        e.class.as_str(),
                                        format!("stale chunks not deleted: {e}"),
                                        doc.meta.origin,
                                    )
                                    .await;
                                continue;
                            }
                        }
                    }
                    let fresh = now.saturating_sub(doc.meta.origin.event_ms) as f64 / 1e3;
                    metrics::histogram!(metrics::FRESHNESS_SECONDS).record(fresh);
                    shared
                        .counters
                        .record_freshness(fresh, doc.chunks.len() as u64);
                    Counters::add(&shared.counters.docs_indexed, 1);
                    shared.retire_seq(&doc.meta.doc_id, doc.seq);
                    doc.meta.origin.ack.done();
                }
            }
            Err(e) => {
                metrics::record_error("index", e.class.as_str(), &e);
                for (doc, _) in upserts {
                    shared.retire_seq(&doc.meta.doc_id, doc.seq);
                    shared
                        .dead_letter(
                            Stage::Index,
                            e.class.as_str(),
                            e.to_string(),
                            doc.meta.origin,
                        )
                        .await;
                }
            }
        }
    }
    for (doc_id, origin, seq) in deletes {
        match retry::retry(live, Stage::Index, |_| index.delete_doc(&doc_id)).await {
            Ok(_) => {
                metrics::counter!(metrics::DOCS_TOTAL, "outcome" => "deleted").increment(1);
                Counters::add(&shared.counters.docs_deleted, 1);
                shared.retire_seq(&doc_id, seq);
                origin.ack.done();
            }
            Err(e) => {
                shared.retire_seq(&doc_id, seq);
                shared
                    .dead_letter(Stage::Index, e.class.as_str(), e.to_string(), origin)
                    .await;
            }
        }
    }
    drop(guards);
}
