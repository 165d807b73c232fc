//! The embed stage: chunk texts become vectors.
//!
//! [`Embedder`] makes one request for a batch of texts. Back ends:
//! - `openai` ([`openai::OpenAiEmbedder`]): any OpenAI-compatible
//!   `/v1/embeddings` (OpenAI, vLLM, Ollama, TEI, the simulator) via async-openai;
//! - `local` ([`local::LocalEmbedder`], the default): a sentence encoder
//!   (all-MiniLM-L6-v2) run in-process on the CPU; no key, no network;
//! - `static` ([`distilled::StaticEmbedder`]): per-token vectors distilled
//!   from the local model, averaged; no network runs at embedding time;
//! - `hash` ([`hash::HashEmbedder`]): deterministic feature hashing of words
//!   and word pairs. **Lexical only**: it finds chunks that share words with
//!   the query, not paraphrases. For tests, benchmarks and offline demos.

pub mod distilled;
pub mod hash;
pub mod local;
pub mod openai;
pub(crate) mod stage;

use std::time::Duration;

use crate::dataplane::retry::{Classify, ErrorClass};

/// A failed embedding request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("embed ({backend}) failed ({class}): {message}")]
pub struct EmbedError {
    /// Back end.
    pub backend: &'static str,
    /// Failure class.
    pub class: ErrorClass,
    /// What happened (never the API key).
    pub message: String,
}

impl Classify for EmbedError {
    fn class(&self) -> ErrorClass {
        self.class
    }
    fn timed_out(after: Duration) -> Self {
        EmbedError {
            backend: "embed",
            class: ErrorClass::Timeout,
            message: format!("no answer within {} ms", after.as_millis()),
        }
    }
}

/// Turns texts into vectors of a fixed dimension.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// Back-end name.
    fn backend(&self) -> &'static str;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Follows the live embed knobs (the local embedder's `embed.threads`);
    /// called before each request.
    fn tune(&self, _knobs: &crate::knobs::EmbedKnobs) {}
    /// Most requests worth running at once, if the back end has a fixed
    /// amount of compute: the embed stage caps `embed.slots` by it. An
    /// in-process model on its own thread pool gains nothing from a second
    /// request; the two only share the pool, each taking twice as long.
    fn max_concurrency(&self) -> Option<u32> {
        None
    }
    /// One request: a vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Scales `v` to unit length; a zero vector (nothing to embed) becomes a
/// fixed unit vector, never NaN.
pub fn normalize_or_unit(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
}

/// Checks a back end's answer: one finite vector of the right size per text.
pub fn check_vectors(
    backend: &'static str,
    dim: usize,
    texts: usize,
    vectors: &[Vec<f32>],
) -> Result<(), EmbedError> {
    let bad = |message: String| EmbedError {
        backend,
        class: ErrorClass::Parse,
        message,
    };
    if vectors.len() != texts {
        return Err(bad(format!("{} vectors for {texts} texts", vectors.len())));
    }
    for (i, v) in vectors.iter().enumerate() {
        if v.len() != dim {
            return Err(bad(format!(
                "vector {i} has {} dimensions, expected {dim} (check [embed] dimensions)",
                v.len()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!("vector {i} holds NaN or infinity")));
        }
    }
    Ok(())
}
