//! The `qdrant` back end: a Qdrant server or cluster over gRPC (qdrant-client).
//!
//! One collection with one unnamed dense vector (cosine), a sparse BM25
//! vector named `bm25` with the `idf` modifier (computed here from each
//! chunk's text, see [`super::sparse`]), and keyword payload indexes on
//! `doc_id`, `doc_hash` and `domain` (the search filter). Hybrid queries are
//! fused by the server (prefetch + RRF, Qdrant 1.10 or newer).
//!
//! A Qdrant server cannot add a sparse vector to an existing collection, so
//! a collection created before freshet wrote sparse vectors stays dense:
//! writes carry only the dense vector and a `sparse` or `hybrid` search is
//! refused with an error that says to re-create the collection.
//!
//! Every write is sent with `wait: true`,
//! so it has been applied (and written to the server's WAL) when the call
//! returns — that is this back end's "durable when it returns".
//!
//! qdrant-client is used without its `serde` feature, so payloads are
//! converted between `serde_json` and Qdrant's protobuf `Value` here
//! ([`json_to_value`], [`value_to_json`]).

use std::collections::HashMap;
use std::time::Duration;

use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::value::Kind;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, ListValue, Modifier, PayloadIncludeSelector,
    PointId, PointStruct, PointsIdsList, PrefetchQueryBuilder, Query, QueryPointsBuilder,
    RrfBuilder, ScrollPointsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder, Struct,
    UpsertPointsBuilder, Value, Vector, VectorInput, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use uuid::Uuid;

use super::sparse::{self, SearchQuery, SPARSE_VECTOR};
use super::{ChunkPayload, ChunkPoint, DocState, Hit, IndexError, SearchFilter, VectorIndex};
use crate::dataplane::retry::ErrorClass;

const BACKEND: &str = "qdrant";
/// Points fetched per scroll page in `doc_state` and `all_points`.
const SCROLL_PAGE: u32 = 1024;
/// Payload fields with a keyword index.
const INDEXED_FIELDS: [&str; 3] = ["doc_id", "doc_hash", "domain"];
/// Per-request gRPC deadline; the pipeline's own per-attempt timeout may be shorter.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A collection on a Qdrant server. Cheap to clone (the client pools channels).
#[derive(Clone)]
pub struct QdrantIndex {
    client: Qdrant,
    url: String,
    collection: String,
    dim: usize,
    /// Whether the collection has the `bm25` sparse vector.
    has_sparse: bool,
}

impl std::fmt::Debug for QdrantIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its config holds the API key.
        f.debug_struct("QdrantIndex")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .field("dim", &self.dim)
            .field("has_sparse", &self.has_sparse)
            .finish()
    }
}

impl QdrantIndex {
    /// Connects to the Qdrant server at `url` (gRPC, usually port 6334) and
    /// makes sure `collection` exists with vectors of `dim` (cosine) and the
    /// keyword indexes; an existing collection with another vector size is an
    /// `Invalid` error.
    pub async fn connect(
        url: &str,
        api_key: Option<String>,
        collection: &str,
        dim: usize,
    ) -> Result<QdrantIndex, IndexError> {
        if dim == 0 {
            return Err(err(
                "connect",
                ErrorClass::Invalid,
                "vector dimension must be at least 1".into(),
            ));
        }
        // The compatibility check would run a blocking health check on a
        // temporary runtime inside `build`; `collection_exists` below tells
        // us the same (is the server there?) without blocking.
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .skip_compatibility_check()
            .build()
            .map_err(|e| map_err("connect", e))?;
        let mut index = QdrantIndex {
            client,
            url: url.to_owned(),
            collection: collection.to_owned(),
            dim,
            has_sparse: false,
        };
        index.has_sparse = index.ensure_collection().await?;
        if !index.has_sparse {
            tracing::warn!(
                collection = collection,
                "the Qdrant collection has no `{SPARSE_VECTOR}` sparse vector (created by an older \
                 freshet): sparse and hybrid search are refused until it is re-created"
            );
        }
        Ok(index)
    }

    /// The collection name.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// The vector size of the collection.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Creates the collection if needed and checks it; returns whether it
    /// has the sparse vector.
    async fn ensure_collection(&self) -> Result<bool, IndexError> {
        const OP: &str = "connect";
        let exists = self
            .client
            .collection_exists(self.collection.as_str())
            .await
            .map_err(|e| map_err(OP, e))?;
        if !exists {
            let created = self
                .client
                .create_collection(
                    CreateCollectionBuilder::new(self.collection.as_str())
                        .vectors_config(VectorParamsBuilder::new(self.dim as u64, Distance::Cosine))
                        .sparse_vectors_config(sparse_config()),
                )
                .await;
            // Another replica may have created it meanwhile: fine if it now exists.
            if let Err(e) = created {
                let exists_now = self
                    .client
                    .collection_exists(self.collection.as_str())
                    .await
                    .unwrap_or(false);
                if !exists_now {
                    return Err(map_err(OP, e));
                }
            }
        }

        let info = self
            .client
            .collection_info(self.collection.as_str())
            .await
            .map_err(|e| map_err(OP, e))?
            .result
            .ok_or_else(|| {
                err(
                    OP,
                    ErrorClass::Parse,
                    "collection info has no result".into(),
                )
            })?;
        let params = info.config.and_then(|c| c.params);
        let has_sparse = params
            .as_ref()
            .and_then(|p| p.sparse_vectors_config.as_ref())
            .is_some_and(|c| c.map.contains_key(SPARSE_VECTOR));
        let vectors = params.and_then(|p| p.vectors_config).and_then(|v| v.config);
        match vectors {
            Some(VectorsConfigKind::Params(p)) if p.size as usize == self.dim => {}
            Some(VectorsConfigKind::Params(p)) => {
                return Err(err(
                    OP,
                    ErrorClass::Invalid,
                    format!(
                        "collection {} was created with vector size {}, but the embedder \
                         produces {}: use another collection name, or configure an embedder \
                         with {} dimensions",
                        self.collection, p.size, self.dim, p.size
                    ),
                ))
            }
            _ => {
                return Err(err(
                    OP,
                    ErrorClass::Invalid,
                    format!(
                        "collection {} has no single unnamed dense vector (named vectors?); \
                         it was not created by freshet: use another collection name",
                        self.collection
                    ),
                ))
            }
        }

        for field in INDEXED_FIELDS {
            if info.payload_schema.contains_key(field) {
                continue;
            }
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        self.collection.as_str(),
                        field,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(|e| map_err(OP, e))?;
        }
        Ok(has_sparse)
    }

    fn check_vector(&self, op: &'static str, what: &str, v: &[f32]) -> Result<(), IndexError> {
        match super::vector_problem(what, v, self.dim) {
            Some(problem) => Err(err(op, ErrorClass::Invalid, problem)),
            None => Ok(()),
        }
    }

    /// Every point matching `filter`, with only `fields` of its payload.
    async fn scroll_all(
        &self,
        op: &'static str,
        filter: Option<Filter>,
        fields: &[&str],
    ) -> Result<Vec<(Uuid, HashMap<String, Value>)>, IndexError> {
        let mut out = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut req = ScrollPointsBuilder::new(self.collection.as_str())
                .limit(SCROLL_PAGE)
                .with_payload(include(fields))
                .with_vectors(false);
            if let Some(f) = &filter {
                req = req.filter(f.clone());
            }
            if let Some(o) = offset.take() {
                req = req.offset(o);
            }
            let resp = self.client.scroll(req).await.map_err(|e| map_err(op, e))?;
            for p in resp.result {
                out.push((uuid_of(op, p.id)?, p.payload));
            }
            match resp.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(out),
            }
        }
    }
}

#[async_trait::async_trait]
impl VectorIndex for QdrantIndex {
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
        let mut batch = Vec::with_capacity(points.len());
        for p in points {
            let payload = to_payload("upsert", &p.payload)?;
            let vectors = if self.has_sparse {
                let s = sparse::document(&p.payload.text);
                HashMap::from([
                    (String::new(), Vector::new_dense(p.vector)),
                    (
                        SPARSE_VECTOR.to_owned(),
                        Vector::new_sparse(s.indices, s.values),
                    ),
                ])
            } else {
                HashMap::from([(String::new(), Vector::new_dense(p.vector))])
            };
            batch.push(PointStruct::new(p.id.to_string(), vectors, payload));
        }
        self.client
            .upsert_points(UpsertPointsBuilder::new(self.collection.as_str(), batch).wait(true))
            .await
            .map_err(|e| map_err("upsert", e))?;
        Ok(())
    }

    async fn delete_points(&self, ids: Vec<Uuid>) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = ids.iter().map(|id| PointId::from(id.to_string())).collect();
        self.client
            .delete_points(
                DeletePointsBuilder::new(self.collection.as_str())
                    .points(PointsIdsList { ids })
                    .wait(true),
            )
            .await
            .map_err(|e| map_err("delete_points", e))?;
        Ok(())
    }

    async fn delete_doc(&self, doc_id: &str) -> Result<u64, IndexError> {
        const OP: &str = "delete_doc";
        let filter = Filter::must([Condition::matches("doc_id", doc_id.to_owned())]);
        // A server has no transaction spanning count and delete; a concurrent
        // writer of the same document could make the count approximate. The
        // pipeline writes each document from one place, so it is exact there.
        let n = self
            .client
            .count(
                CountPointsBuilder::new(self.collection.as_str())
                    .filter(filter.clone())
                    .exact(true),
            )
            .await
            .map_err(|e| map_err(OP, e))?
            .result
            .map(|r| r.count)
            .unwrap_or(0);
        if n > 0 {
            self.client
                .delete_points(
                    DeletePointsBuilder::new(self.collection.as_str())
                        .points(filter)
                        .wait(true),
                )
                .await
                .map_err(|e| map_err(OP, e))?;
        }
        Ok(n)
    }

    async fn doc_state(&self, doc_id: &str) -> Result<DocState, IndexError> {
        let filter = Filter::must([Condition::matches("doc_id", doc_id.to_owned())]);
        let points = self
            .scroll_all("doc_state", Some(filter), &["doc_hash", "chunk_index"])
            .await?;
        let mut chunks = Vec::with_capacity(points.len());
        let mut doc_hash = None;
        for (id, payload) in points {
            let index = match payload.get("chunk_index").and_then(|v| v.kind.as_ref()) {
                Some(Kind::IntegerValue(i)) => *i,
                _ => i64::MAX,
            };
            if doc_hash.is_none() {
                doc_hash = string_field(&payload, "doc_hash");
            }
            chunks.push((index, id));
        }
        chunks.sort();
        Ok(DocState {
            chunk_ids: chunks.into_iter().map(|(_, id)| id).collect(),
            doc_hash,
        })
    }

    async fn find_doc_hash(
        &self,
        hash: &str,
        except_doc: &str,
    ) -> Result<Option<String>, IndexError> {
        let filter = Filter {
            must: vec![Condition::matches("doc_hash", hash.to_owned())],
            must_not: vec![Condition::matches("doc_id", except_doc.to_owned())],
            ..Default::default()
        };
        let resp = self
            .client
            .scroll(
                ScrollPointsBuilder::new(self.collection.as_str())
                    .filter(filter)
                    .limit(1)
                    .with_payload(include(&["doc_id"]))
                    .with_vectors(false),
            )
            .await
            .map_err(|e| map_err("find_doc_hash", e))?;
        Ok(resp
            .result
            .into_iter()
            .find_map(|p| string_field(&p.payload, "doc_id")))
    }

    async fn search_where(
        &self,
        query: &SearchQuery,
        k: usize,
        offset: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>, IndexError> {
        const OP: &str = "search";
        if let Some(v) = query.dense() {
            self.check_vector(OP, "the query vector", v)?;
        }
        if !self.has_sparse && !matches!(query, SearchQuery::Dense(_)) {
            return Err(err(
                OP,
                ErrorClass::Invalid,
                format!(
                    "collection {} was created without the `{SPARSE_VECTOR}` sparse vector, so \
                     `{}` search is not available: re-create the collection (a new \
                     `[index] collection` name, then re-index) or search in `dense` mode",
                    self.collection,
                    query.mode()
                ),
            ));
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let filter = to_filter(filter)?;
        let sparse_input =
            |s: &sparse::SparseVector| VectorInput::new_sparse(s.indices.clone(), s.values.clone());
        let mut req = QueryPointsBuilder::new(self.collection.as_str())
            .limit(k as u64)
            .offset(offset as u64)
            .with_payload(true);
        match query {
            SearchQuery::Dense(v) => req = req.query(Query::new_nearest(v.clone())),
            SearchQuery::Sparse(s) => {
                req = req
                    .query(Query::new_nearest(sparse_input(s)))
                    .using(SPARSE_VECTOR)
            }
            SearchQuery::Hybrid { dense, sparse: s } => {
                let limit = sparse::fusion_candidates(k + offset) as u64;
                let mut dense_side = PrefetchQueryBuilder::default()
                    .query(Query::new_nearest(dense.clone()))
                    .limit(limit);
                let mut sparse_side = PrefetchQueryBuilder::default()
                    .query(Query::new_nearest(sparse_input(s)))
                    .using(SPARSE_VECTOR)
                    .limit(limit);
                if let Some(f) = &filter {
                    dense_side = dense_side.filter(f.clone());
                    sparse_side = sparse_side.filter(f.clone());
                }
                req = req
                    .add_prefetch(dense_side)
                    .add_prefetch(sparse_side)
                    .query(Query::new_rrf(RrfBuilder::with_k(sparse::RRF_K as u32)));
            }
        }
        if let Some(f) = filter {
            req = req.filter(f);
        }
        let resp = self.client.query(req).await.map_err(|e| map_err(OP, e))?;
        resp.result
            .into_iter()
            .map(|p| {
                let id = uuid_of(OP, p.id)?;
                Ok(Hit {
                    id,
                    score: p.score,
                    payload: from_payload(OP, id, p.payload)?,
                })
            })
            .collect()
    }

    async fn count(&self) -> Result<u64, IndexError> {
        Ok(self
            .client
            .count(CountPointsBuilder::new(self.collection.as_str()).exact(true))
            .await
            .map_err(|e| map_err("count", e))?
            .result
            .map(|r| r.count)
            .unwrap_or(0))
    }

    async fn all_points(&self) -> Result<Vec<(Uuid, String)>, IndexError> {
        Ok(self
            .scroll_all("all_points", None, &["doc_id"])
            .await?
            .into_iter()
            .map(|(id, payload)| (id, string_field(&payload, "doc_id").unwrap_or_default()))
            .collect())
    }
}

/// The `bm25` sparse vector of a new collection: IDF applied by the server.
fn sparse_config() -> SparseVectorsConfigBuilder {
    let mut config = SparseVectorsConfigBuilder::default();
    config.add_named_vector_params(
        SPARSE_VECTOR,
        SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
    );
    config
}

/// The server's filter for `f`'s indexed conditions (`url_prefix` is not one).
fn to_filter(f: &SearchFilter) -> Result<Option<Filter>, IndexError> {
    let mut must = Vec::new();
    if let Some(doc) = &f.doc_id {
        must.push(Condition::matches("doc_id", doc.clone()));
    }
    if let Some(domain) = &f.domain {
        must.push(Condition::matches("domain", domain.clone()));
    }
    for (key, value) in &f.metadata {
        let field = format!("metadata.{key}");
        must.push(match value {
            serde_json::Value::String(s) => Condition::matches(field, s.clone()),
            serde_json::Value::Bool(b) => Condition::matches(field, *b),
            serde_json::Value::Number(n) if n.is_i64() => {
                Condition::matches(field, n.as_i64().unwrap_or_default())
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
        });
    }
    Ok((!must.is_empty()).then(|| Filter::must(must)))
}

fn include(fields: &[&str]) -> PayloadIncludeSelector {
    PayloadIncludeSelector {
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

fn string_field(payload: &HashMap<String, Value>, field: &str) -> Option<String> {
    match payload.get(field).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn uuid_of(op: &'static str, id: Option<PointId>) -> Result<Uuid, IndexError> {
    match id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => Uuid::parse_str(&s).map_err(|e| {
            err(
                op,
                ErrorClass::Parse,
                format!("point id {s:?} is not a UUID: {e}"),
            )
        }),
        Some(PointIdOptions::Num(n)) => Err(err(
            op,
            ErrorClass::Parse,
            format!("point id {n} is numeric; freshet only writes UUIDs"),
        )),
        None => Err(err(op, ErrorClass::Parse, "a point has no id".into())),
    }
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
        Ok(serde_json::Value::Object(map)) => Ok(Payload::from(
            map.into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect::<HashMap<String, Value>>(),
        )),
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

fn from_payload(
    op: &'static str,
    id: Uuid,
    payload: HashMap<String, Value>,
) -> Result<ChunkPayload, IndexError> {
    let map = payload
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect::<serde_json::Map<_, _>>();
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        err(
            op,
            ErrorClass::Parse,
            format!("point {id} has a payload freshet did not write: {e}"),
        )
    })
}

/// serde_json -> Qdrant protobuf value (what the client's `serde` feature does).
pub(crate) fn json_to_value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntegerValue(i),
            // u64 above i64::MAX and floats.
            None => Kind::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(Struct {
            fields: o.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// Qdrant protobuf value -> serde_json.
pub(crate) fn value_to_json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(b),
        Some(Kind::IntegerValue(i)) => J::from(i),
        Some(Kind::DoubleValue(d)) => serde_json::Number::from_f64(d).map_or(J::Null, J::Number),
        Some(Kind::StringValue(s)) => J::String(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => J::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| (k, value_to_json(v)))
                .collect(),
        ),
    }
}

/// gRPC status codes (fixed by the gRPC spec). Named here because tonic
/// is not a direct dependency and qdrant-client does not re-export it;
/// `tonic::Code` is a fieldless enum with these discriminants.
mod grpc {
    pub const CANCELLED: i32 = 1;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// gRPC status -> failure class. Unavailable, connection failures and
/// deadlines are transient; invalid arguments and missing collections are
/// not; other server-side errors are retried as `upstream`.
fn class_of_status(code: i32, message: &str) -> ErrorClass {
    match code {
        grpc::UNAVAILABLE => ErrorClass::Connect,
        grpc::DEADLINE_EXCEEDED | grpc::CANCELLED => ErrorClass::Timeout,
        grpc::INVALID_ARGUMENT | grpc::OUT_OF_RANGE | grpc::FAILED_PRECONDITION => {
            ErrorClass::Invalid
        }
        grpc::NOT_FOUND => ErrorClass::NotFound,
        grpc::UNAUTHENTICATED | grpc::PERMISSION_DENIED => ErrorClass::Auth,
        grpc::RESOURCE_EXHAUSTED => ErrorClass::RateLimited,
        // qdrant-client reports a failed connection as `internal`
        // ("Failed to connect to …").
        grpc::INTERNAL if message.contains("Failed to connect") => ErrorClass::Connect,
        _ => ErrorClass::Upstream,
    }
}

fn class_of(e: &QdrantError) -> ErrorClass {
    match e {
        QdrantError::ResponseError { status } => {
            class_of_status(status.code() as i32, status.message())
        }
        QdrantError::ResourceExhaustedError { .. } => ErrorClass::RateLimited,
        QdrantError::ConversionError(_) | QdrantError::InvalidUri(_) => ErrorClass::Invalid,
        QdrantError::Io(_) => ErrorClass::Connect,
        _ => ErrorClass::Upstream,
    }
}

fn map_err(op: &'static str, e: QdrantError) -> IndexError {
    let class = class_of(&e);
    let message = match &e {
        QdrantError::ResponseError { status } => {
            format!("gRPC {:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    };
    err(op, class, message)
}

fn err(op: &'static str, class: ErrorClass, message: String) -> IndexError {
    IndexError {
        backend: BACKEND,
        op,
        class,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> ChunkPayload {
        ChunkPayload {
            doc_id: "https://example.com/a".into(),
            chunk_index: 3,
            chunk_count: 7,
            url: "https://example.com/a".into(),
            title: "A \"title\" ü".into(),
            text: "some text".into(),
            content_hash: "c".repeat(64),
            doc_hash: "d".repeat(64),
            fetched_at_ms: 1_700_000_000_123,
            event_ts_ms: 1_700_000_000_100,
            indexed_ts_ms: 1_700_000_000_200,
            domain: "example.com".into(),
            render_mode: "http".into(),
            quality: 1.0,
            source_offset: "kafka:tasks:3:1042".into(),
            metadata: Default::default(),
        }
    }

    #[test]
    fn payload_round_trips_through_protobuf_values() {
        let p = payload();
        let map: HashMap<String, Value> = to_payload("upsert", &p).unwrap().into();
        // Integral floats stay floats, integers stay integers.
        assert!(matches!(
            map["quality"].kind,
            Some(Kind::DoubleValue(q)) if q == 1.0
        ));
        assert!(matches!(
            map["chunk_index"].kind,
            Some(Kind::IntegerValue(3))
        ));
        assert_eq!(from_payload("search", Uuid::nil(), map).unwrap(), p);
    }

    #[test]
    fn non_finite_quality_is_invalid() {
        let mut p = payload();
        p.quality = f64::NAN;
        assert_eq!(
            to_payload("upsert", &p).unwrap_err().class,
            ErrorClass::Invalid
        );
    }

    #[test]
    fn grpc_codes_map_to_classes() {
        use grpc::*;
        assert_eq!(class_of_status(UNAVAILABLE, "down"), ErrorClass::Connect);
        assert_eq!(
            class_of_status(DEADLINE_EXCEEDED, "slow"),
            ErrorClass::Timeout
        );
        assert_eq!(
            class_of_status(INVALID_ARGUMENT, "bad dim"),
            ErrorClass::Invalid
        );
        assert_eq!(
            class_of_status(
                INTERNAL,
                "Failed to connect to http://x:6334/: transport error"
            ),
            ErrorClass::Connect
        );
        assert_eq!(class_of_status(INTERNAL, "boom"), ErrorClass::Upstream);
        assert!(class_of_status(UNAVAILABLE, "").retryable());
        assert!(class_of_status(DEADLINE_EXCEEDED, "").retryable());
        assert!(!class_of_status(INVALID_ARGUMENT, "").retryable());
    }
}
