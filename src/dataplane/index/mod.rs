//! The index stage: chunk vectors and their payload in a vector store.
//!
//! [`VectorIndex`] is what the pipeline needs from a store. Two back ends:
//! `edge` (qdrant-edge, embedded in the process, persistent in the data dir;
//! the default) and `qdrant` (qdrant-client over gRPC, for a Qdrant server or
//! cluster). Both keep payload indexes on `doc_id` and `doc_hash`, so that
//! replacing a document's chunks and deduplicating against what is already
//! indexed are lookups, not scans.
//!
//! Point ids are UUIDv5 of the document id and chunk index
//! ([`chunk_id`]): replaying an event upserts the same points again instead
//! of adding duplicates.

pub mod edge;
pub mod qdrant;
pub mod sparse;
pub(crate) mod stage;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dataplane::retry::{Classify, ErrorClass};
pub use sparse::{Mode, SearchQuery, SparseVector};

/// Namespace of chunk ids (a fixed random UUID: ids are stable forever).
pub const CHUNK_NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_2b8e_5a7d_4c1e_9b3f_0d2a_8e4c_7a11);

/// The deterministic id of chunk `index` of document `doc_id`.
pub fn chunk_id(doc_id: &str, index: u32) -> Uuid {
    Uuid::new_v5(
        &CHUNK_NAMESPACE,
        format!("{doc_id}\u{1f}{index}").as_bytes(),
    )
}

/// What is stored with every chunk (docs/ARCHITECTURE.md §2, Index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkPayload {
    /// The document's id (its canonical URL, or the id a task gave).
    pub doc_id: String,
    /// Position of the chunk in the document, from 0.
    pub chunk_index: u32,
    /// Chunks the document has in all (to find stale ones after an edit).
    pub chunk_count: u32,
    /// Source URL, if the document came from the web.
    pub url: String,
    /// Document title.
    pub title: String,
    /// The chunk's text.
    pub text: String,
    /// SHA-256 (hex) of the chunk's normalized text.
    pub content_hash: String,
    /// SHA-256 (hex) of the whole normalized document: dedupe and change detection.
    pub doc_hash: String,
    /// Unix milliseconds when the page was fetched or the document received.
    pub fetched_at_ms: u64,
    /// Unix milliseconds of the event that produced this version (the task's
    /// `ts_ms`, else when the source received it). 0 in points written
    /// before the field existed.
    #[serde(default)]
    pub event_ts_ms: u64,
    /// Unix milliseconds when the index stage wrote this chunk.
    #[serde(default)]
    pub indexed_ts_ms: u64,
    /// Lower-case host of `url` (empty without one): the `domain` filter.
    #[serde(default)]
    pub domain: String,
    /// Render mode (`http`, `remote`) or `document` for pushed documents.
    pub render_mode: String,
    /// Extraction quality score in [0, 1].
    pub quality: f64,
    /// Where the task came from, e.g. `embedded:0:17` or `kafka:tasks:3:1042`.
    pub source_offset: String,
    /// The document's metadata (e.g. a table's payload columns).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The lower-case host of `url`, or empty when it has none.
pub fn domain_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        })
        .unwrap_or_default()
}

/// Which chunks a search may return; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Exactly this document.
    pub doc_id: Option<String>,
    /// Pages of this host (lower case; matched against the stored `domain`).
    pub domain: Option<String>,
    /// URLs starting with this prefix. The stores have no prefix match on
    /// keywords, so this one is checked on the candidates the index returns
    /// (see [`search_filtered`]).
    pub url_prefix: Option<String>,
    /// `metadata.<key>` equals the value (strings, integers, booleans).
    pub metadata: std::collections::BTreeMap<String, serde_json::Value>,
}

impl SearchFilter {
    /// Whether `payload` satisfies every condition (the reference the
    /// stores' own filters must agree with).
    pub fn matches(&self, payload: &ChunkPayload) -> bool {
        self.doc_id.as_ref().is_none_or(|d| *d == payload.doc_id)
            && self.domain.as_ref().is_none_or(|d| *d == payload.domain)
            && self
                .url_prefix
                .as_ref()
                .is_none_or(|p| payload.url.starts_with(p.as_str()))
            && self
                .metadata
                .iter()
                .all(|(k, v)| payload.metadata.get(k) == Some(v))
    }

    /// The part the store evaluates itself (all but `url_prefix`).
    pub fn indexed_part(&self) -> SearchFilter {
        SearchFilter {
            url_prefix: None,
            ..self.clone()
        }
    }

    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.doc_id.is_none()
            && self.domain.is_none()
            && self.url_prefix.is_none()
            && self.metadata.is_empty()
    }
}

/// Most candidates [`search_filtered`] looks at for a `url_prefix` filter.
pub const MAX_PREFIX_CANDIDATES: usize = 4096;

/// The `k` best chunks for `query` matching `filter`. Every condition but
/// `url_prefix` is evaluated by the store (payload indexes); `url_prefix`
/// is checked on the store's candidates, fetched page by page in score
/// order until `k` match or [`MAX_PREFIX_CANDIDATES`] were seen (the store
/// is narrowed to the prefix's host first when the prefix names one).
pub async fn search_filtered(
    index: &dyn VectorIndex,
    query: &SearchQuery,
    k: usize,
    filter: &SearchFilter,
) -> Result<Vec<Hit>, IndexError> {
    let Some(prefix) = filter.url_prefix.as_deref() else {
        return index.search_where(query, k, 0, filter).await;
    };
    let mut narrowed = filter.indexed_part();
    let host = domain_of(prefix);
    // Only when the prefix runs past the host (`https://a.b/x`) is the host
    // certain; `https://a.b` also prefixes `https://a.bc/`.
    if !host.is_empty()
        && url::Url::parse(prefix)
            .is_ok_and(|u| prefix.len() > u.origin().ascii_serialization().len())
    {
        match &narrowed.domain {
            Some(d) if *d != host => return Ok(Vec::new()),
            _ => narrowed.domain = Some(host),
        }
    }
    let page = (k * 4).clamp(32, 512);
    let mut out = Vec::with_capacity(k);
    let mut offset = 0;
    while out.len() < k && offset < MAX_PREFIX_CANDIDATES {
        let hits = index.search_where(query, page, offset, &narrowed).await?;
        let n = hits.len();
        // A fused (hybrid) ranking is recomputed per page from deeper
        // candidate lists, so a chunk can come back on a later page.
        let fresh: Vec<Hit> = hits
            .into_iter()
            .filter(|h| {
                h.payload.url.starts_with(prefix) && !out.iter().any(|o: &Hit| o.id == h.id)
            })
            .take(k - out.len())
            .collect();
        out.extend(fresh);
        if n < page {
            break;
        }
        offset += n;
    }
    Ok(out)
}

/// One point to upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPoint {
    /// [`chunk_id`] of the chunk.
    pub id: Uuid,
    /// The embedding.
    pub vector: Vec<f32>,
    /// The payload.
    pub payload: ChunkPayload,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Point id.
    pub id: Uuid,
    /// Relevance, higher is better: cosine for `dense`, BM25 for `sparse`,
    /// the reciprocal-rank-fusion sum for `hybrid`.
    pub score: f32,
    /// The stored payload.
    pub payload: ChunkPayload,
}

/// What the index holds for one document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocState {
    /// Ids of the document's chunks.
    pub chunk_ids: Vec<Uuid>,
    /// The document hash stored with them (all chunks carry the same one).
    pub doc_hash: Option<String>,
}

/// What is wrong with a vector for an index of `dim` dimensions, if anything.
pub(crate) fn vector_problem(what: &str, v: &[f32], dim: usize) -> Option<String> {
    if v.len() != dim {
        return Some(format!(
            "{what} has {} dimensions, the index has {dim}",
            v.len()
        ));
    }
    v.iter()
        .position(|x| !x.is_finite())
        .map(|i| format!("{what} has a non-finite value at position {i}"))
}

/// The first problem among the vectors of `points`, if any.
pub(crate) fn points_problem(points: &[ChunkPoint], dim: usize) -> Option<String> {
    points
        .iter()
        .find_map(|p| vector_problem(&format!("the vector of point {}", p.id), &p.vector, dim))
}

/// A failed index operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("index {backend} {op} failed ({class}): {message}")]
pub struct IndexError {
    /// `edge` or `qdrant`.
    pub backend: &'static str,
    /// The operation (`upsert`, `delete`, `search`, …).
    pub op: &'static str,
    /// Failure class: `timeout`/`connect`/`upstream` are retried.
    pub class: ErrorClass,
    /// What happened.
    pub message: String,
}

impl Classify for IndexError {
    fn class(&self) -> ErrorClass {
        self.class
    }
    fn timed_out(after: std::time::Duration) -> Self {
        IndexError {
            backend: "index",
            op: "request",
            class: ErrorClass::Timeout,
            message: format!("no answer within {} ms", after.as_millis()),
        }
    }
}

/// A vector store the pipeline writes to and `freshet query` reads from.
///
/// All methods are idempotent: upserting the same points or deleting an
/// absent document twice changes nothing, which is what makes at-least-once
/// replays safe.
#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync + std::fmt::Debug {
    /// Back-end name for metrics and errors.
    fn backend(&self) -> &'static str;
    /// Inserts or replaces points by id. Durable when it returns.
    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), IndexError>;
    /// Deletes points by id (absent ids are ignored).
    async fn delete_points(&self, ids: Vec<Uuid>) -> Result<(), IndexError>;
    /// Deletes every chunk of a document; returns how many there were.
    async fn delete_doc(&self, doc_id: &str) -> Result<u64, IndexError>;
    /// The chunk ids and hash the index holds for a document.
    async fn doc_state(&self, doc_id: &str) -> Result<DocState, IndexError>;
    /// Some document (other than `except_doc`) whose `doc_hash` is `hash`.
    async fn find_doc_hash(
        &self,
        hash: &str,
        except_doc: &str,
    ) -> Result<Option<String>, IndexError>;
    /// The `k` nearest chunks to `vector`.
    async fn search(&self, vector: Vec<f32>, k: usize) -> Result<Vec<Hit>, IndexError> {
        self.search_where(&SearchQuery::Dense(vector), k, 0, &SearchFilter::default())
            .await
    }
    /// The `k` best chunks for `query` that match `filter`'s `doc_id`,
    /// `domain` and `metadata` conditions, after skipping the first
    /// `offset`. `url_prefix` is ignored here: use [`search_filtered`].
    /// Every chunk is stored with its BM25 vector ([`sparse::document`] of
    /// its text), so sparse and hybrid queries need nothing from the caller
    /// at write time.
    async fn search_where(
        &self,
        query: &SearchQuery,
        k: usize,
        offset: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>, IndexError>;
    /// Points stored.
    async fn count(&self) -> Result<u64, IndexError>;
    /// Every point id with its payload's doc id (tests and audits; small indexes).
    async fn all_points(&self) -> Result<Vec<(Uuid, String)>, IndexError>;
}
