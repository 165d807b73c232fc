//! BM25 sparse vectors beside the dense ones, and the query modes that use
//! them.
//!
//! Every chunk is stored with a sparse vector of its text (the same text the
//! dense embedder sees), named [`SPARSE_VECTOR`]: one entry per distinct
//! term, the index a 32-bit murmur3 hash of the term and the value its
//! BM25 term-frequency part, `tf·(k1+1) / (tf + k1·(1 − b + b·len/avg_len))`
//! with k1 = 1.2, b = 0.75, avg_len = 256 tokens. The IDF part is left to
//! the store (the sparse vector is created with the `idf` modifier), so it
//! follows the collection as it grows instead of being frozen at write time.
//! A query is the set of its terms, each with weight 1: the score is then
//! exactly BM25 over the index.
//!
//! The tokenizer, English stop words and Snowball stemmer are qdrant-edge's
//! (`EdgeBm25`), which is the same pipeline a Qdrant server runs for its own
//! BM25 inference: vectors written by the `edge` back end and by the
//! `qdrant` back end mean the same thing.
//!
//! `hybrid` asks the store for the best [`fusion_candidates`] chunks by
//! each of dense and sparse, then ranks their union by reciprocal rank
//! fusion with k = [`RRF_K`] (Cormack, Clarke and Büttcher, SIGIR 2009:
//! `Σ 1/(k + rank)`); both back ends fuse inside the store.

use std::sync::OnceLock;

use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};

/// Name of the sparse vector in both back ends.
pub const SPARSE_VECTOR: &str = "bm25";

/// The k of reciprocal rank fusion: the published constant, not tuned here.
pub const RRF_K: usize = 60;

/// A sparse vector: parallel term indices and weights.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseVector {
    /// Term ids (murmur3 of the stemmed term), each once.
    pub indices: Vec<u32>,
    /// Weights, one per index.
    pub values: Vec<f32>,
}

impl SparseVector {
    /// True when no term survived tokenization (only stop words, say).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

fn model() -> &'static EdgeBm25 {
    static MODEL: OnceLock<EdgeBm25> = OnceLock::new();
    MODEL.get_or_init(|| {
        // The defaults are valid by construction (k1 1.2, b 0.75, English).
        EdgeBm25::new(EdgeBm25Config::default()).unwrap_or_else(|e| {
            unreachable!("qdrant-edge's default BM25 configuration is invalid: {e}")
        })
    })
}

fn of(v: qdrant_edge::SparseVector) -> SparseVector {
    SparseVector {
        indices: v.indices,
        values: v.values,
    }
}

/// The sparse vector stored with a chunk of `text`.
pub fn document(text: &str) -> SparseVector {
    of(model().embed_document(text))
}

/// The sparse vector of a query.
pub fn query(text: &str) -> SparseVector {
    of(model().embed_query(text))
}

/// How many candidates each of the dense and sparse searches hands to the
/// fusion when `wanted` results (offset included) are asked for: RRF needs
/// a list deeper than the answer, or a chunk ranked well by one side and
/// just below the cut by the other is lost.
pub fn fusion_candidates(wanted: usize) -> usize {
    (wanted * 4).max(40)
}

/// What a search ranks by.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchQuery {
    /// Cosine to the query's embedding.
    Dense(Vec<f32>),
    /// BM25 of the query's terms.
    Sparse(SparseVector),
    /// Reciprocal rank fusion of the two.
    Hybrid {
        /// The query's embedding.
        dense: Vec<f32>,
        /// The query's terms.
        sparse: SparseVector,
    },
}

impl SearchQuery {
    /// The dense vector, if the query has one.
    pub fn dense(&self) -> Option<&[f32]> {
        match self {
            SearchQuery::Dense(v) | SearchQuery::Hybrid { dense: v, .. } => Some(v),
            SearchQuery::Sparse(_) => None,
        }
    }

    /// The mode's name, as the search API spells it.
    pub fn mode(&self) -> Mode {
        match self {
            SearchQuery::Dense(_) => Mode::Dense,
            SearchQuery::Sparse(_) => Mode::Sparse,
            SearchQuery::Hybrid { .. } => Mode::Hybrid,
        }
    }
}

/// A retrieval mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Embedding similarity.
    Dense,
    /// BM25 over terms.
    Sparse,
    /// Both, fused by reciprocal rank.
    Hybrid,
}

impl Mode {
    /// Every mode, in the order the docs list them.
    pub const ALL: [Mode; 3] = [Mode::Dense, Mode::Sparse, Mode::Hybrid];

    /// The API's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Sparse => "sparse",
            Mode::Hybrid => "hybrid",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether the mode needs the query's embedding.
    pub fn needs_embedding(self) -> bool {
        self != Mode::Sparse
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_drops_stop_words() {
        let q = query("the refunds");
        let d = document("Refund policy: a refund within 30 days.");
        assert_eq!(q.indices.len(), 1, "`the` is a stop word: {q:?}");
        // `refunds` and `refund` stem alike, so the query term is in the doc.
        assert!(d.indices.contains(&q.indices[0]), "{q:?} {d:?}");
        assert!(q.values.iter().all(|&v| v == 1.0));
        assert!(query("the of and").is_empty());
    }

    #[test]
    fn repeated_terms_saturate() {
        let once = document("glacier melt");
        let thrice = document("glacier glacier glacier melt");
        let w = |v: &SparseVector, t: &str| {
            let id = query(t).indices[0];
            v.indices
                .iter()
                .position(|&i| i == id)
                .map(|p| v.values[p])
                .unwrap()
        };
        let (a, b) = (w(&once, "glacier"), w(&thrice, "glacier"));
        assert!(b > a && b < 3.0 * a, "tf saturates: {a} {b}");
        // Every index appears once.
        let mut ids = thrice.indices.clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), thrice.indices.len());
    }

    #[test]
    fn modes_parse_and_print() {
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
        }
        assert_eq!(Mode::parse("magic"), None);
        assert!(!Mode::Sparse.needs_embedding() && Mode::Hybrid.needs_embedding());
        assert!(fusion_candidates(10) >= 40 && fusion_candidates(100) == 400);
    }
}
