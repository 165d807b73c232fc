//! Feature-hashing embedder: deterministic, free, lexical only.
//!
//! Each lower-cased word and each pair of neighbouring words is hashed
//! (SipHash with fixed keys, so vectors are stable across runs and
//! machines) to a bucket and a sign; counts are log-damped and the vector is
//! L2-normalized, so cosine similarity measures shared vocabulary. It does
//! not know synonyms: use it for tests, benchmarks and offline demos, and an
//! `openai`-compatible model for real retrieval.

use std::hash::{Hash, Hasher};

use super::{EmbedError, Embedder};

/// The embedding model name the simulator's embeddings endpoint serves;
/// its vectors equal this embedder's, so `freshet query` can embed queries
/// offline for an index the demo filled.
pub const SIM_MODEL: &str = "freshet-sim-hash";

/// The feature-hashing embedder.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dim: usize,
}

impl HashEmbedder {
    /// An embedder producing `dim`-dimensional vectors (at least 8).
    pub fn new(dim: usize) -> HashEmbedder {
        HashEmbedder { dim: dim.max(8) }
    }

    /// The vector of one text.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        let mut prev: Option<String> = None;
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase())
        {
            self.add(&mut v, &word, 1.0);
            if let Some(p) = &prev {
                self.add(&mut v, &format!("{p} {word}"), 0.5);
            }
            prev = Some(word);
        }
        for x in v.iter_mut() {
            *x = x.signum() * (1.0 + x.abs()).ln();
        }
        super::normalize_or_unit(&mut v); // empty text: a fixed unit vector
        v
    }

    fn add(&self, v: &mut [f32], feature: &str, weight: f32) {
        #[allow(deprecated)] // SipHasher with fixed keys: stable output is the point
        let mut h =
            std::hash::SipHasher::new_with_keys(0x6672_6573_6865_7421, 0x0068_6173_6865_6d62);
        feature.hash(&mut h);
        let x = h.finish();
        let bucket = (x % self.dim as u64) as usize;
        let sign = if (x >> 63) == 0 { 1.0 } else { -1.0 };
        v[bucket] += sign * weight;
    }
}

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    fn backend(&self) -> &'static str {
        "hash"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn similar_texts_are_closer_and_vectors_are_stable() {
        let e = HashEmbedder::new(384);
        let a = e.vector("heat pumps cut heating bills in cold climates");
        let b = e.vector("cold climates: heat pumps and heating bills");
        let c = e.vector("the borrow checker and async runtimes in rust");
        assert!(
            cos(&a, &b) > cos(&a, &c) + 0.3,
            "{} vs {}",
            cos(&a, &b),
            cos(&a, &c)
        );
        assert_eq!(a, e.vector("heat pumps cut heating bills in cold climates"));
        assert!((cos(&a, &a) - 1.0).abs() < 1e-5);
        let empty = e.vector("");
        assert!(empty.iter().all(|x| x.is_finite()));
    }
}
