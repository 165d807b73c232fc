//! The `edge` back end: qdrant-edge, an embedded Qdrant shard in the data dir.
//!
//! One shard holds one unnamed dense vector (cosine) per point, a sparse
//! BM25 vector named `bm25` with the `idf` modifier (see
//! [`super::sparse`]), and keyword payload indexes on `doc_id`, `doc_hash`
//! and `domain` (the search filter). A shard written before the sparse
//! vector existed gets it when it is opened: the vector is created and every
//! stored chunk's BM25 vector is computed from its text, once.
//!
//! # Concurrency
//!
//! qdrant-edge is synchronous, so every call runs in
//! [`tokio::task::spawn_blocking`]. The shard sits behind an [`RwLock`]:
//! searches, counts and scrolls share it, while updates (and the flush that
//! follows them) take it exclusively. The exclusivity is not only about
//! ordering: `EdgeShard::flush` uses `try_lock`/`try_read` on its internal
//! WAL and segment locks and *panics* if either is contended, so no other
//! operation may be in flight while it runs.
//!
//! # Durability
//!
//! qdrant-edge 0.7.2 writes every update to a WAL first, but
//! `EdgeShard::load` never replays that WAL: after a restart the shard holds
//! exactly what its segments had flushed to disk. A WAL flush alone therefore
//! makes nothing durable. Every mutating call here ends with
//! `EdgeShard::flush`, which flushes the WAL and then flushes (and fsyncs)
//! every segment (`flush_all(sync = true, force = true)`); only then does
//! the call return. That is what "durable when it returns" means for this
//! back end, and it is the dominant cost of a small upsert — batch upserts.
//!
//! The WAL is never truncated by qdrant-edge either (it only appends), so it
//! grows with the number of updates (32 MiB WAL segments pile up in
//! `<dir>/wal`); [`EdgeIndex::wal_bytes`] reports its size.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use std::collections::HashMap;

use qdrant_edge::{
    Condition, CreateVectorName, Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams,
    EdgeVectorParams, FieldCondition, FieldIndexOperations, Filter, Fusion, JsonPath, Match,
    Modifier, OperationError, Payload, PayloadFieldSchema, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStructPersisted, PointVectorsPersisted, Prefetch,
    QueryEnum, QueryRequest, Record, ScoredPoint, ScoringQuery, ScrollRequest, SearchRequest,
    UpdateOperation, UpdateVectorsOp, ValueVariants, VectorInternal, VectorNameConfig,
    VectorNameOperations, VectorOperations, VectorPersisted, VectorStructPersisted,
    WithPayloadInterface, WithVector, DEFAULT_VECTOR_NAME,
};
use uuid::Uuid;

use super::sparse::{self, SearchQuery, SparseVector, SPARSE_VECTOR};
use super::{ChunkPayload, ChunkPoint, DocState, Hit, IndexError, SearchFilter, VectorIndex};
use crate::dataplane::retry::ErrorClass;

const BACKEND: &str = "edge";
/// Points fetched per scroll page in `doc_state` and `all_points`.
const SCROLL_PAGE: usize = 1024;
/// Payload fields with a keyword index.
const INDEXED_FIELDS: [&str; 3] = ["doc_id", "doc_hash", "domain"];

/// The embedded qdrant-edge index. Cheap to clone (shares the shard).
#[derive(Clone)]
pub struct EdgeIndex {
    shard: Arc<RwLock<EdgeShard>>,
    dir: PathBuf,
    dim: usize,
}

impl std::fmt::Debug for EdgeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeIndex")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .finish()
    }
}

impl EdgeIndex {
    /// Opens the shard in `dir`, creating it (cosine, one unnamed dense vector
    /// of `dim`) if the directory holds none.
    ///
    /// An existing shard must have been created with the same `dim`: a shard
    /// cannot change its vector size, and silently mixing embedding models
    /// would make every search meaningless.
    pub fn open(dir: &Path, dim: usize) -> Result<EdgeIndex, IndexError> {
        if dim == 0 {
            return Err(err(
                "open",
                ErrorClass::Invalid,
                "vector dimension must be at least 1".into(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            err(
                "open",
                ErrorClass::Invalid,
                format!("cannot create index data dir {}: {e}", dir.display()),
            )
        })?;
        let exists = dir.join("edge_config.json").exists() || dir.join("segments").exists();
        let shard = if exists {
            let shard = EdgeShard::load(dir, None).map_err(|e| {
                err(
                    "open",
                    class_of(&e),
                    format!("cannot load the edge shard in {}: {e}", dir.display()),
                )
            })?;
            let stored = shard
                .config()
                .vectors
                .get(DEFAULT_VECTOR_NAME)
                .map(|v| v.size);
            match stored {
                Some(size) if size == dim => {}
                Some(size) => {
                    return Err(err(
                        "open",
                        ErrorClass::Invalid,
                        format!(
                            "the index data dir {} was created with vector size {size}, but the \
                             embedder produces {dim}: use another data dir (or delete this one \
                             and re-index), or configure an embedder with {size} dimensions",
                            dir.display()
                        ),
                    ))
                }
                None => {
                    return Err(err(
                        "open",
                        ErrorClass::Invalid,
                        format!(
                            "the edge shard in {} has no unnamed dense vector; it was not \
                             created by freshet: use another data dir",
                            dir.display()
                        ),
                    ))
                }
            }
            shard
        } else {
            let config = EdgeConfig::builder()
                .vector(
                    DEFAULT_VECTOR_NAME,
                    EdgeVectorParams::builder(dim, Distance::Cosine).build(),
                )
                .sparse_vector(
                    SPARSE_VECTOR,
                    EdgeSparseVectorParams::builder()
                        .modifier(Modifier::Idf)
                        .build(),
                )
                .build();
            EdgeShard::new(dir, config).map_err(|e| {
                err(
                    "open",
                    class_of(&e),
                    format!("cannot create an edge shard in {}: {e}", dir.display()),
                )
            })?
        };

        // Keyword indexes, once: recreating an existing index would rebuild it.
        let schema = shard.info().payload_schema;
        let mut created = false;
        for field in INDEXED_FIELDS {
            let path = json_path(field);
            if schema.contains_key(&path) {
                continue;
            }
            shard
                .update(UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::CreateIndex(qdrant_edge::CreateIndex {
                        field_name: path,
                        field_schema: Some(PayloadFieldSchema::FieldType(
                            PayloadSchemaType::Keyword,
                        )),
                    }),
                ))
                .map_err(|e| {
                    err(
                        "open",
                        class_of(&e),
                        format!("cannot create the keyword index on {field}: {e}"),
                    )
                })?;
            created = true;
        }
        if !shard.config().sparse_vectors.contains_key(SPARSE_VECTOR) {
            add_sparse_vector(&shard)?;
            created = true;
        }
        if created {
            flush(&shard)?;
        }

        Ok(EdgeIndex {
            shard: Arc::new(RwLock::new(shard)),
            dir: dir.to_path_buf(),
            dim,
        })
    }

    /// The vector size of the shard.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes in the shard's WAL directory. qdrant-edge never truncates its
    /// WAL, so this grows with every update; exported for monitoring.
    pub fn wal_bytes(&self) -> u64 {
        dir_bytes(&self.dir.join("wal"))
    }

    /// Runs the optimizers (segment merge, HNSW indexing, vacuum) to
    /// completion. qdrant-edge has no background optimizer: without this,
    /// every search is a brute-force scan of the appendable segment. Blocks
    /// updates (not searches) while it runs; returns whether anything changed.
    pub async fn optimize(&self) -> Result<bool, IndexError> {
        let shard = self.shard.clone();
        spawn("optimize", move || {
            // Shared lock: searches go on, updates (and their flush) wait.
            let guard = shard.read().unwrap_or_else(PoisonError::into_inner);
            let changed = guard.optimize().map_err(|e| op_err("optimize", &e))?;
            drop(guard);
            let guard = shard.write().unwrap_or_else(PoisonError::into_inner);
            flush(&guard)?;
            Ok(changed)
        })
        .await
    }

    /// Checks a vector before it reaches the engine, which would otherwise
    /// fail late (dimension) or store garbage (NaN scores compare as equal).
    fn check_vector(&self, op: &'static str, what: &str, v: &[f32]) -> Result<(), IndexError> {
        match super::vector_problem(what, v, self.dim) {
            Some(problem) => Err(err(op, ErrorClass::Invalid, problem)),
            None => Ok(()),
        }
    }

    /// Runs `f` on the shard under the shared lock, off the async runtime.
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&EdgeShard) -> Result<T, IndexError> + Send + 'static,
    {
        let shard = self.shard.clone();
        spawn(op, move || {
            let guard = shard.read().unwrap_or_else(PoisonError::into_inner);
            f(&guard)
        })
        .await
    }

    /// Runs `f` under the exclusive lock, then flushes: durable on return.
    async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&EdgeShard) -> Result<T, IndexError> + Send + 'static,
    {
        let shard = self.shard.clone();
        spawn(op, move || {
            let guard = shard.write().unwrap_or_else(PoisonError::into_inner);
            let out = f(&guard)?;
            flush(&guard)?;
            Ok(out)
        })
        .await
    }
}

#[async_trait::async_trait]
impl VectorIndex for EdgeIndex {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), IndexError> {
        if points.is_empty() {
            return Ok(());
        }
        if let Some(problem) = super::points_problem(&points, self.dim) {
            return Err(err("upsert", ErrorClass::Invalid, problem));
        }
        self.write("upsert", move |shard| {
            // BM25 vectors are computed here, off the async runtime.
            let mut batch = Vec::with_capacity(points.len());
            for p in points {
                let sparse = sparse::document(&p.payload.text);
                batch.push(PointStructPersisted {
                    id: PointId::Uuid(p.id),
                    vector: VectorStructPersisted::Named(HashMap::from([
                        (DEFAULT_VECTOR_NAME.into(), VectorPersisted::Dense(p.vector)),
                        (
                            SPARSE_VECTOR.into(),
                            VectorPersisted::Sparse(to_sparse(sparse)),
                        ),
                    ])),
                    payload: Some(to_payload("upsert", &p.payload)?),
                });
            }
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(batch)),
                ))
                .map_err(|e| op_err("upsert", &e))
        })
        .await
    }

    async fn delete_points(&self, ids: Vec<Uuid>) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.into_iter().map(PointId::Uuid).collect();
        self.write("delete_points", move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePoints { ids },
                ))
                .map_err(|e| op_err("delete_points", &e))
        })
        .await
    }

    async fn delete_doc(&self, doc_id: &str) -> Result<u64, IndexError> {
        let filter = keyword_filter("doc_id", doc_id);
        self.write("delete_doc", move |shard| {
            // Count and delete under the same exclusive lock: the count is exact.
            let n = shard
                .count(qdrant_edge::CountRequest {
                    filter: Some(filter.clone()),
                    exact: true,
                })
                .map_err(|e| op_err("delete_doc", &e))?;
            if n > 0 {
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::DeletePointsByFilter(filter),
                    ))
                    .map_err(|e| op_err("delete_doc", &e))?;
            }
            Ok(n as u64)
        })
        .await
    }

    async fn doc_state(&self, doc_id: &str) -> Result<DocState, IndexError> {
        let filter = keyword_filter("doc_id", doc_id);
        self.read("doc_state", move |shard| {
            let records = scroll_all(
                shard,
                "doc_state",
                Some(filter),
                &["doc_hash", "chunk_index"],
            )?;
            let mut chunks = Vec::with_capacity(records.len());
            let mut doc_hash = None;
            for r in records {
                let id = uuid_of("doc_state", r.id)?;
                let payload = r.payload.unwrap_or_default();
                let index = payload
                    .0
                    .get("chunk_index")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(u64::MAX);
                if doc_hash.is_none() {
                    doc_hash = payload
                        .0
                        .get("doc_hash")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned);
                }
                chunks.push((index, id));
            }
            chunks.sort();
            Ok(DocState {
                chunk_ids: chunks.into_iter().map(|(_, id)| id).collect(),
                doc_hash,
            })
        })
        .await
    }

    async fn find_doc_hash(
        &self,
        hash: &str,
        except_doc: &str,
    ) -> Result<Option<String>, IndexError> {
        let filter = Filter {
            must: Some(vec![keyword_condition("doc_hash", hash)]),
            must_not: Some(vec![keyword_condition("doc_id", except_doc)]),
            ..Filter::new()
        };
        self.read("find_doc_hash", move |shard| {
            let (records, _) = shard
                .scroll(ScrollRequest {
                    offset: None,
                    limit: Some(1),
                    filter: Some(filter),
                    with_payload: Some(fields(&["doc_id"])),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                })
                .map_err(|e| op_err("find_doc_hash", &e))?;
            Ok(records.into_iter().find_map(|r| {
                r.payload.and_then(|p| {
                    p.0.get("doc_id")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                })
            }))
        })
        .await
    }

    async fn search_where(
        &self,
        query: &SearchQuery,
        k: usize,
        offset: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>, IndexError> {
        if let Some(v) = query.dense() {
            self.check_vector("search", "the query vector", v)?;
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let filter = to_filter(filter)?;
        let query = query.clone();
        self.read("search", move |shard| {
            let points = match query {
                SearchQuery::Dense(v) => nearest(shard, dense_query(v), filter, k, offset),
                SearchQuery::Sparse(s) => nearest(shard, sparse_query(s), filter, k, offset),
                SearchQuery::Hybrid { dense, sparse } => {
                    let candidates = sparse::fusion_candidates(k + offset);
                    let prefetch = |query| Prefetch {
                        prefetches: Vec::new(),
                        query: Some(ScoringQuery::Vector(query)),
                        limit: candidates,
                        params: None,
                        filter: filter.clone(),
                        score_threshold: None,
                    };
                    shard
                        .query(QueryRequest {
                            prefetches: vec![
                                prefetch(dense_query(dense)),
                                prefetch(sparse_query(sparse)),
                            ],
                            query: Some(ScoringQuery::Fusion(Fusion::Rrf {
                                k: sparse::RRF_K,
                                weights: None,
                            })),
                            filter: None,
                            score_threshold: None,
                            // qdrant-edge 0.7.2 raises the limit by the
                            // offset but leaves dropping the first `offset`
                            // fused points to its caller: done here.
                            limit: k + offset,
                            offset: 0,
                            params: None,
                            with_vector: WithVector::Bool(false),
                            with_payload: WithPayloadInterface::Bool(true),
                        })
                        .map(|points| points.into_iter().skip(offset).collect())
                        .map_err(|e| op_err("search", &e))
                }
            }?;
            points.into_iter().map(to_hit).collect()
        })
        .await
    }

    async fn count(&self) -> Result<u64, IndexError> {
        self.read("count", |shard| {
            shard
                .count(qdrant_edge::CountRequest {
                    filter: None,
                    exact: true,
                })
                .map(|n| n as u64)
                .map_err(|e| op_err("count", &e))
        })
        .await
    }

    async fn all_points(&self) -> Result<Vec<(Uuid, String)>, IndexError> {
        self.read("all_points", |shard| {
            scroll_all(shard, "all_points", None, &["doc_id"])?
                .into_iter()
                .map(|r| {
                    let id = uuid_of("all_points", r.id)?;
                    let doc = r
                        .payload
                        .and_then(|p| {
                            p.0.get("doc_id")
                                .and_then(|v| v.as_str())
                                .map(str::to_owned)
                        })
                        .unwrap_or_default();
                    Ok((id, doc))
                })
                .collect()
        })
        .await
    }
}

/// Runs a blocking closure on tokio's blocking pool; a panic inside the
/// engine becomes an `upstream` error instead of tearing down the caller.
async fn spawn<T, F>(op: &'static str, f: F) -> Result<T, IndexError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, IndexError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => out,
        Err(e) => Err(err(
            op,
            ErrorClass::Upstream,
            format!("the qdrant-edge call did not complete: {e}"),
        )),
    }
}

fn to_sparse(v: SparseVector) -> qdrant_edge::SparseVector {
    qdrant_edge::SparseVector {
        indices: v.indices,
        values: v.values,
    }
}

fn dense_query(v: Vec<f32>) -> QueryEnum {
    QueryEnum::Nearest(qdrant_edge::NamedQuery {
        query: v.into(),
        using: None,
    })
}

fn sparse_query(v: SparseVector) -> QueryEnum {
    QueryEnum::Nearest(qdrant_edge::NamedQuery {
        query: VectorInternal::Sparse(to_sparse(v)),
        using: Some(SPARSE_VECTOR.into()),
    })
}

/// The `k` points nearest to `query` after `offset`.
fn nearest(
    shard: &EdgeShard,
    query: QueryEnum,
    filter: Option<Filter>,
    k: usize,
    offset: usize,
) -> Result<Vec<ScoredPoint>, IndexError> {
    shard
        .search(SearchRequest {
            query,
            filter,
            params: None,
            limit: k,
            offset,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: Some(WithVector::Bool(false)),
            score_threshold: None,
        })
        .map_err(|e| op_err("search", &e))
}

/// Creates the `bm25` sparse vector in a shard written before it existed
/// and computes it for every stored chunk from the chunk's text.
fn add_sparse_vector(shard: &EdgeShard) -> Result<(), IndexError> {
    // The engine's sparse wrapper type is not exported; its serde form is
    // its documented JSON (`{"sparse": {"modifier": "idf"}}`).
    let config: VectorNameConfig = qdrant_edge::external::serde_json::from_value(
        qdrant_edge::external::serde_json::json!({"sparse": {"modifier": "idf"}}),
    )
    .map_err(|e| {
        err(
            "open",
            ErrorClass::Invalid,
            format!("sparse vector config: {e}"),
        )
    })?;
    shard
        .update(UpdateOperation::VectorNameOperation(
            VectorNameOperations::CreateVectorName(CreateVectorName {
                vector_name: SPARSE_VECTOR.into(),
                config,
            }),
        ))
        .map_err(|e| op_err("open", &e))?;
    let records = scroll_all(shard, "open", None, &["text"])?;
    for page in records.chunks(SCROLL_PAGE) {
        let points = page
            .iter()
            .map(|r| {
                let text = r
                    .payload
                    .as_ref()
                    .and_then(|p| p.0.get("text"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                PointVectorsPersisted {
                    id: r.id,
                    vector: VectorStructPersisted::Named(HashMap::from([(
                        SPARSE_VECTOR.into(),
                        VectorPersisted::Sparse(to_sparse(sparse::document(text))),
                    )])),
                }
            })
            .collect();
        shard
            .update(UpdateOperation::VectorOperation(
                VectorOperations::UpdateVectors(UpdateVectorsOp {
                    points,
                    update_filter: None,
                }),
            ))
            .map_err(|e| op_err("open", &e))?;
    }
    Ok(())
}

/// Flushes the WAL and every segment to disk (see the module docs). The
/// engine's `flush` panics on I/O errors; the panic is caught so that the
/// failure surfaces as a retryable error of the operation.
fn flush(shard: &EdgeShard) -> Result<(), IndexError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shard.flush())).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "unknown panic".into());
        err(
            "flush",
            ErrorClass::Upstream,
            format!("flushing the shard to disk failed (disk full or read-only?): {why}"),
        )
    })
}

/// Every record matching `filter`, with only `payload_fields`, page by page.
fn scroll_all(
    shard: &EdgeShard,
    op: &'static str,
    filter: Option<Filter>,
    payload_fields: &[&str],
) -> Result<Vec<Record>, IndexError> {
    let mut out = Vec::new();
    let mut offset = None;
    loop {
        let (records, next) = shard
            .scroll(ScrollRequest {
                offset,
                limit: Some(SCROLL_PAGE),
                filter: filter.clone(),
                with_payload: Some(fields(payload_fields)),
                with_vector: WithVector::Bool(false),
                order_by: None,
            })
            .map_err(|e| op_err(op, &e))?;
        out.extend(records);
        match next {
            Some(n) => offset = Some(n),
            None => return Ok(out),
        }
    }
}

fn to_hit(p: ScoredPoint) -> Result<Hit, IndexError> {
    let id = uuid_of("search", p.id)?;
    let payload = from_payload("search", id, p.payload.unwrap_or_default())?;
    Ok(Hit {
        id,
        score: p.score,
        payload,
    })
}

fn to_payload(op: &'static str, payload: &ChunkPayload) -> Result<Payload, IndexError> {
    if !payload.quality.is_finite() {
        return Err(err(
            op,
            ErrorClass::Invalid,
            format!(
                "chunk {} of {} has a non-finite quality score",
                payload.chunk_index, payload.doc_id
            ),
        ));
    }
    match serde_json::to_value(payload) {
        Ok(serde_json::Value::Object(map)) => Ok(Payload(map)),
        Ok(other) => Err(err(
            op,
            ErrorClass::Invalid,
            format!("payload serialized to {other}, not an object"),
        )),
        Err(e) => Err(err(
            op,
            ErrorClass::Invalid,
            format!("cannot serialize the payload: {e}"),
        )),
    }
}

fn from_payload(op: &'static str, id: Uuid, payload: Payload) -> Result<ChunkPayload, IndexError> {
    serde_json::from_value(serde_json::Value::Object(payload.0)).map_err(|e| {
        err(
            op,
            ErrorClass::Parse,
            format!("point {id} has a payload freshet did not write: {e}"),
        )
    })
}

fn uuid_of(op: &'static str, id: PointId) -> Result<Uuid, IndexError> {
    match id {
        PointId::Uuid(u) => Ok(u),
        PointId::NumId(n) => Err(err(
            op,
            ErrorClass::Parse,
            format!("point id {n} is numeric; freshet only writes UUIDs"),
        )),
    }
}

/// Only called with freshet's own payload field names (plain identifiers).
fn json_path(field: &str) -> JsonPath {
    field
        .parse()
        .unwrap_or_else(|()| unreachable!("{field:?} is a plain identifier, a valid JSON path"))
}

fn fields(names: &[&str]) -> WithPayloadInterface {
    WithPayloadInterface::Fields(names.iter().map(|n| json_path(n)).collect())
}

fn keyword_condition(field: &str, value: &str) -> Condition {
    Condition::Field(FieldCondition::new_match(
        json_path(field),
        Match::new_value(ValueVariants::String(value.to_owned())),
    ))
}

/// The store's filter for `f`'s indexed conditions (`url_prefix` is not one).
fn to_filter(f: &SearchFilter) -> Result<Option<Filter>, IndexError> {
    let mut must = Vec::new();
    if let Some(doc) = &f.doc_id {
        must.push(keyword_condition("doc_id", doc));
    }
    if let Some(domain) = &f.domain {
        must.push(keyword_condition("domain", domain));
    }
    for (key, value) in &f.metadata {
        let path: JsonPath = format!("metadata.{key}").parse().map_err(|()| {
            err(
                "search",
                ErrorClass::Invalid,
                format!("metadata key {key:?} is not a plain name"),
            )
        })?;
        let value = match value {
            serde_json::Value::String(s) => ValueVariants::String(s.clone()),
            serde_json::Value::Bool(b) => ValueVariants::Bool(*b),
            serde_json::Value::Number(n) if n.is_i64() => {
                ValueVariants::Integer(n.as_i64().unwrap_or_default())
            }
            other => {
                return Err(err(
                    "search",
                    ErrorClass::Invalid,
                    format!(
                        "metadata filter {key:?} = {other} is not a string, integer or boolean"
                    ),
                ))
            }
        };
        must.push(Condition::Field(FieldCondition::new_match(
            path,
            Match::new_value(value),
        )));
    }
    Ok((!must.is_empty()).then(|| Filter {
        must: Some(must),
        ..Filter::new()
    }))
}

fn keyword_filter(field: &str, value: &str) -> Filter {
    Filter::new_must(keyword_condition(field, value))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Input errors are permanent; the rest (I/O, storage) may pass on retry.
fn class_of(e: &OperationError) -> ErrorClass {
    match e {
        OperationError::WrongVectorDimension { .. }
        | OperationError::VectorNameNotExists { .. }
        | OperationError::PointIdError { .. }
        | OperationError::TypeError { .. }
        | OperationError::TypeInferenceError { .. }
        | OperationError::ValidationError { .. }
        | OperationError::WrongSparse
        | OperationError::WrongMulti
        | OperationError::NonFiniteNumber { .. } => ErrorClass::Invalid,
        OperationError::Timeout { .. } => ErrorClass::Timeout,
        _ => ErrorClass::Upstream,
    }
}

fn op_err(op: &'static str, e: &OperationError) -> IndexError {
    err(op, class_of(e), e.to_string())
}

fn err(op: &'static str, class: ErrorClass, message: String) -> IndexError {
    IndexError {
        backend: BACKEND,
        op,
        class,
        message,
    }
}
