//! `POST /v1/search`: the read side of the index, on the running service.
//!
//! ```json
//! {"query": "refund policy", "k": 10,
//!  "filter": {"url_prefix": "https://shop.example/help/", "domain": "shop.example",
//!             "doc_id": "faq:7", "metadata": {"lang": "en", "year": 2024}},
//!  "mode": "hybrid"}
//! ```
//!
//! `mode` is `dense` (cosine to the query's embedding, made by the service's
//! own embedder), `sparse` (BM25 over the chunks' terms: no embedding, so no
//! embedder time) or `hybrid` (both, fused by reciprocal rank; the default,
//! see [`DEFAULT_MODE`]). Either back end. The answer lists chunks, best
//! first:
//! `{"results": [{"doc_id", "chunk_index", "chunk_count", "title", "url",
//! "text", "score", "event_ts_ms", "indexed_ts_ms", "fetched_at_ms",
//! "metadata"}], "k", "mode", "took_ms"}`.
//!
//! It needs `Authorization: Bearer <read_token or admin_token>` (401
//! otherwise). Input is checked before any work: `query` 1..=
//! [`MAX_QUERY_BYTES`] bytes, `k` 1..=[`MAX_K`] (default 10), unknown fields
//! refused, metadata filter values strings, integers or booleans, `mode`
//! one of `dense`, `sparse`, `hybrid`; a bad request is answered 400 with
//! what is wrong.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::dataplane::embed::Embedder;
use crate::dataplane::index::{
    search_filtered, sparse, Hit, Mode, SearchFilter, SearchQuery, VectorIndex,
};
use crate::dataplane::retry::ErrorClass;
use crate::live::LiveConfig;
use crate::service::admin::error;

/// Most results one search returns.
pub const MAX_K: usize = 100;
/// Default number of results.
pub const DEFAULT_K: usize = 10;
/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most metadata conditions in one filter.
pub const MAX_METADATA_CONDITIONS: usize = 16;
/// The mode of a request that names none: hybrid ranked best on the real
/// pages of `freshet bench retrieval` with every embedder (docs/BENCHMARKS.md).
pub const DEFAULT_MODE: Mode = Mode::Hybrid;

/// What a search needs: the embedder and the index of the running pipeline.
#[derive(Debug, Clone)]
pub struct Searcher {
    /// The pipeline's embedder (queries are embedded the same way as chunks).
    pub embedder: Arc<dyn Embedder>,
    /// The pipeline's index.
    pub index: Arc<dyn VectorIndex>,
    /// Live knobs (the embed and index timeouts bound a search).
    pub live: Arc<LiveConfig>,
}

/// The body of `POST /v1/search`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// What to look for.
    pub query: String,
    /// How many chunks to return (1..=[`MAX_K`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// Conditions every result meets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterRequest>,
    /// Retrieval mode: `dense`, `sparse` or `hybrid` (default [`DEFAULT_MODE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// The `filter` of a search request.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterRequest {
    /// The chunk's URL starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_prefix: Option<String>,
    /// The URL's host (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Exactly this document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_id: Option<String>,
    /// `metadata.<key>` equals the value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// One result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResult {
    /// The document's id.
    pub doc_id: String,
    /// Position of the chunk in its document.
    pub chunk_index: u32,
    /// Chunks the document has.
    pub chunk_count: u32,
    /// Document title.
    pub title: String,
    /// Source URL (empty for documents without one).
    pub url: String,
    /// The chunk's text.
    pub text: String,
    /// Relevance, higher is better: cosine (`dense`), BM25 (`sparse`) or the
    /// reciprocal-rank-fusion sum (`hybrid`); compare within one answer only.
    pub score: f32,
    /// Unix ms of the event that produced this version.
    pub event_ts_ms: u64,
    /// Unix ms when the chunk was written to the index.
    pub indexed_ts_ms: u64,
    /// Unix ms when the page was fetched or the document received.
    pub fetched_at_ms: u64,
    /// The document's metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl From<Hit> for SearchResult {
    fn from(h: Hit) -> SearchResult {
        SearchResult {
            doc_id: h.payload.doc_id,
            chunk_index: h.payload.chunk_index,
            chunk_count: h.payload.chunk_count,
            title: h.payload.title,
            url: h.payload.url,
            text: h.payload.text,
            score: h.score,
            event_ts_ms: h.payload.event_ts_ms,
            indexed_ts_ms: h.payload.indexed_ts_ms,
            fetched_at_ms: h.payload.fetched_at_ms,
            metadata: h.payload.metadata,
        }
    }
}

/// The answer of `POST /v1/search`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResponse {
    /// Best first.
    pub results: Vec<SearchResult>,
    /// The `k` in force.
    pub k: usize,
    /// The mode used.
    pub mode: String,
    /// Time spent embedding and searching.
    pub took_ms: u64,
}

/// A request checked and turned into what the index takes.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSearch {
    /// The query text (trimmed).
    pub query: String,
    /// Results wanted.
    pub k: usize,
    /// How results are ranked.
    pub mode: Mode,
    /// The filter.
    pub filter: SearchFilter,
}

fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl SearchRequest {
    /// Checks every field; the error says what is wrong.
    pub fn validate(self) -> Result<ValidSearch, String> {
        let mode = match self.mode.as_deref() {
            None => DEFAULT_MODE,
            Some(m) => Mode::parse(m)
                .ok_or_else(|| format!("unknown mode `{m}`: use `dense`, `sparse` or `hybrid`"))?,
        };
        let query = self.query.trim();
        if query.is_empty() {
            return Err("`query` must not be empty".into());
        }
        if query.len() > MAX_QUERY_BYTES {
            return Err(format!(
                "`query` is {} bytes; at most {MAX_QUERY_BYTES} are accepted",
                query.len()
            ));
        }
        let k = self.k.unwrap_or(DEFAULT_K);
        if !(1..=MAX_K).contains(&k) {
            return Err(format!("`k` must be 1..={MAX_K}, got {k}"));
        }
        let f = self.filter.unwrap_or_default();
        let text = |name: &str, v: Option<String>| -> Result<Option<String>, String> {
            match v {
                Some(s) if s.is_empty() || s.len() > 2048 => {
                    Err(format!("`filter.{name}` must be 1..=2048 bytes"))
                }
                other => Ok(other),
            }
        };
        if f.metadata.len() > MAX_METADATA_CONDITIONS {
            return Err(format!(
                "`filter.metadata` holds {} conditions; at most {MAX_METADATA_CONDITIONS}",
                f.metadata.len()
            ));
        }
        for (key, value) in &f.metadata {
            if !plain_key(key) {
                return Err(format!(
                    "`filter.metadata` key {key:?} must be 1..=128 letters, digits, `_` or `-`"
                ));
            }
            let ok = match value {
                serde_json::Value::String(s) => s.len() <= 2048,
                serde_json::Value::Bool(_) => true,
                serde_json::Value::Number(n) => n.is_i64(),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "`filter.metadata.{key}` = {value} is not a string (at most 2048 bytes), an integer or a boolean"
                ));
            }
        }
        Ok(ValidSearch {
            query: query.to_string(),
            k,
            mode,
            filter: SearchFilter {
                doc_id: text("doc_id", f.doc_id)?,
                domain: text("domain", f.domain)?
                    .map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
                url_prefix: text("url_prefix", f.url_prefix)?,
                metadata: f.metadata,
            },
        })
    }
}

/// Why a search failed after its input was accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage} failed ({class}): {message}")]
pub struct SearchError {
    /// `embed` or `index`.
    pub stage: &'static str,
    /// Failure class.
    pub class: ErrorClass,
    /// What happened.
    pub message: String,
}

impl Searcher {
    /// Embeds the query (unless the mode is `sparse`) and searches; each
    /// step is bounded by its stage's `timeout_ms` knob.
    pub async fn search(&self, req: &ValidSearch) -> Result<Vec<SearchResult>, SearchError> {
        let knobs = self.live.load().knobs.clone();
        let query = match req.mode {
            Mode::Sparse => SearchQuery::Sparse(sparse::query(&req.query)),
            Mode::Dense => SearchQuery::Dense(self.embed_query(req, &knobs).await?),
            Mode::Hybrid => SearchQuery::Hybrid {
                dense: self.embed_query(req, &knobs).await?,
                sparse: sparse::query(&req.query),
            },
        };
        let index_timeout = Duration::from_millis(knobs.index.timeout_ms);
        let hits = match tokio::time::timeout(
            index_timeout,
            search_filtered(self.index.as_ref(), &query, req.k, &req.filter),
        )
        .await
        {
            Ok(Ok(hits)) => hits,
            Ok(Err(e)) => {
                return Err(SearchError {
                    stage: "index",
                    class: e.class,
                    message: e.message,
                })
            }
            Err(_) => {
                return Err(SearchError {
                    stage: "index",
                    class: ErrorClass::Timeout,
                    message: format!("no answer within {} ms", index_timeout.as_millis()),
                })
            }
        };
        Ok(hits.into_iter().map(SearchResult::from).collect())
    }

    /// The query's embedding, bounded by `embed.timeout_ms`.
    async fn embed_query(
        &self,
        req: &ValidSearch,
        knobs: &crate::knobs::Knobs,
    ) -> Result<Vec<f32>, SearchError> {
        let embed_timeout = Duration::from_millis(knobs.embed.timeout_ms);
        match tokio::time::timeout(
            embed_timeout,
            self.embedder.embed(std::slice::from_ref(&req.query)),
        )
        .await
        {
            Ok(Ok(mut v)) if v.len() == 1 => Ok(v.pop().unwrap_or_default()),
            Ok(Ok(v)) => Err(SearchError {
                stage: "embed",
                class: ErrorClass::Upstream,
                message: format!("the embedder returned {} vectors for one query", v.len()),
            }),
            Ok(Err(e)) => Err(SearchError {
                stage: "embed",
                class: e.class,
                message: e.message,
            }),
            Err(_) => Err(SearchError {
                stage: "embed",
                class: ErrorClass::Timeout,
                message: format!("no answer within {} ms", embed_timeout.as_millis()),
            }),
        }
    }
}

impl Searcher {
    /// [`search`](Self::search), answered as `POST /v1/search` and the MCP
    /// `search` tool answer it (with the mode and the time taken).
    pub async fn respond(&self, req: &ValidSearch) -> Result<SearchResponse, SearchError> {
        let started = Instant::now();
        let results = self.search(req).await?;
        Ok(SearchResponse {
            results,
            k: req.k,
            mode: req.mode.as_str().into(),
            took_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// The handler of `POST /v1/search` (authorization already checked).
pub(crate) async fn handle(searcher: &Searcher, body: &[u8]) -> Response {
    if body.len() > MAX_BODY_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the search request is larger than {MAX_BODY_BYTES} bytes"),
        );
    }
    let req: SearchRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"query\": text, \"k\": 1..={MAX_K}, \"filter\": {{\"url_prefix\", \"domain\", \"doc_id\", \"metadata\": {{}}}}, \"mode\": \"dense\"|\"sparse\"|\"hybrid\"}}: {e}"),
            )
        }
    };
    let valid = match req.validate() {
        Ok(v) => v,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match searcher.respond(&valid).await {
        Ok(response) => Json(response).into_response(),
        Err(e) => {
            let status = match e.class {
                ErrorClass::Invalid | ErrorClass::Parse => StatusCode::INTERNAL_SERVER_ERROR,
                ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            tracing::warn!(error = %e, "search failed");
            error(status, format!("search failed: {e}"))
        }
    }
}

/// `POST /v1/search` on the service's router: read token, then [`handle`].
pub(crate) async fn endpoint(
    searcher: Option<&Searcher>,
    admin: Option<&crate::service::admin::AdminState>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    use crate::service::admin::{authorize, Role};
    let Some(admin) = admin else {
        return error(
            StatusCode::UNAUTHORIZED,
            "no read token is configured (set FRESHET_SERVICE__READ_TOKEN or FRESHET_SERVICE__ADMIN_TOKEN)",
        );
    };
    if let Err(r) = authorize(admin, headers, "POST /v1/search", Role::Read) {
        return *r;
    }
    match searcher {
        Some(s) => handle(s, body).await,
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this endpoint serves no index",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> Result<ValidSearch, String> {
        serde_json::from_value::<SearchRequest>(v)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn valid_requests_become_filters() {
        let v = req(
            json!({"query": "  refund policy ", "filter": {"domain": "Shop.Example.",
            "url_prefix": "https://shop.example/help/", "metadata": {"lang": "en", "year": 2024}}}),
        )
        .unwrap();
        assert_eq!(v.query, "refund policy");
        assert_eq!(v.k, DEFAULT_K);
        assert_eq!(v.mode, DEFAULT_MODE);
        for m in Mode::ALL {
            assert_eq!(
                req(json!({"query": "x", "mode": m.as_str()})).unwrap().mode,
                m
            );
        }
        assert_eq!(v.filter.domain.as_deref(), Some("shop.example"));
        assert_eq!(v.filter.metadata.len(), 2);
        assert_eq!(
            req(json!({"query": "x", "k": 100, "mode": "dense"}))
                .unwrap()
                .k,
            100
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            (json!({"query": ""}), "must not be empty"),
            (json!({"query": "   "}), "must not be empty"),
            (json!({"query": "x".repeat(MAX_QUERY_BYTES + 1)}), "bytes"),
            (json!({"query": "x", "k": 0}), "`k` must be"),
            (json!({"query": "x", "k": 101}), "`k` must be"),
            (json!({"query": "x", "mode": "magic"}), "unknown mode"),
            (json!({"query": "x", "mode": "Dense"}), "unknown mode"),
            (
                json!({"query": "x", "filter": {"domian": "a"}}),
                "unknown field",
            ),
            (json!({"query": "x", "top_k": 3}), "unknown field"),
            (
                json!({"query": "x", "filter": {"metadata": {"a.b": 1}}}),
                "key",
            ),
            (
                json!({"query": "x", "filter": {"metadata": {"a": 1.5}}}),
                "integer",
            ),
            (
                json!({"query": "x", "filter": {"metadata": {"a": [1]}}}),
                "integer",
            ),
            (
                json!({"query": "x", "filter": {"doc_id": ""}}),
                "filter.doc_id",
            ),
            (json!({"k": 3}), "missing field `query`"),
        ];
        for (body, want) in cases {
            let err = req(body.clone()).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }
}
