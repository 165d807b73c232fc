//! The static embedder (`[embed] backend = "static"`): one vector per
//! vocabulary token, distilled from the local transformer model, averaged
//! over a text's tokens. No neural network runs at embedding time, so it is
//! a hundred-odd times faster than the transformer on 2 cores, at some cost in
//! retrieval quality (`freshet bench retrieval` measures both).
//!
//! The idea is model2vec's (Tulkens & van Dongen, 2024): pass every token of
//! the vocabulary through the sentence encoder on its own and keep the
//! output as that token's vector; then weight tokens by how informative they
//! are. Here:
//!
//! 1. each token id `t` (special and `[unusedN]` tokens excepted) is embedded
//!    as `[CLS] t [SEP]` by the local model, exactly as a one-token text
//!    (mean pooling, normalization);
//! 2. the mean of those vectors is subtracted (the component every token
//!    shares; PCA would center too, and a rotation does not change cosines);
//! 3. each vector is scaled by the SIF weight `a / (a + p(t))` with
//!    `a = 1e-4` and `p(t)` the Zipf probability of the token's rank in the
//!    vocabulary (BERT's WordPiece vocabulary lists whole words by
//!    frequency), so "the" counts for less than "refund".
//!
//! A text's vector is the normalized sum of its tokens' vectors (no
//! `[CLS]`/`[SEP]`, no length limit). `freshet model fetch` distills the table
//! into `<model_dir>/static/embeddings.safetensors` (30,522 × 384 floats,
//! 47 MB) after installing the model; `freshet model distill` redoes it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use super::local::LocalEmbedder;
use super::{EmbedError, Embedder};
use crate::dataplane::retry::ErrorClass;

/// The table's file, under the model directory.
pub const TABLE: &str = "static/embeddings.safetensors";
/// The SIF coefficient.
const SIF_A: f64 = 1e-4;
/// Tokens embedded per call while distilling.
const DISTILL_CHUNK: usize = 2048;

/// The static embedder.
pub struct StaticEmbedder {
    tokenizer: Tokenizer,
    /// `vocab × dim`, row-major.
    table: Vec<f32>,
    dim: usize,
    vocab: usize,
}

impl std::fmt::Debug for StaticEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticEmbedder")
            .field("dim", &self.dim)
            .field("vocab", &self.vocab)
            .finish()
    }
}

/// The table's path for a model directory.
pub fn table_path(model_dir: &Path) -> PathBuf {
    model_dir.join(TABLE)
}

impl StaticEmbedder {
    /// Loads the table distilled from the model in `dir`; `dim` is
    /// `[embed] dimensions`, which must be the table's.
    pub fn load(dir: &Path, dim: usize) -> Result<StaticEmbedder> {
        let path = table_path(dir);
        if !path.is_file() {
            bail!(
                "no static embedding table at {} (run `freshet model fetch`, or `freshet model distill` \
                 for a model installed before the static embedder existed)",
                path.display()
            );
        }
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        let table = tensors
            .get("embeddings")
            .with_context(|| format!("{} holds no `embeddings` tensor", path.display()))?;
        let (vocab, width) = table
            .dims2()
            .with_context(|| format!("{}: `embeddings` is not a matrix", path.display()))?;
        if width != dim {
            bail!(
                "[embed] dimensions = {dim} but the static table in {} has {width} dimensions; set dimensions = {width}",
                path.display()
            );
        }
        let table = table.flatten_all()?.to_vec1::<f32>()?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        if tokenizer.get_vocab_size(true) > vocab {
            bail!(
                "the static table in {} has {vocab} rows but the tokenizer {} tokens; run `freshet model distill`",
                path.display(),
                tokenizer.get_vocab_size(true)
            );
        }
        Ok(StaticEmbedder {
            tokenizer,
            table,
            dim,
            vocab,
        })
    }

    /// The table's row for one vocabulary token, if the tokenizer knows it.
    pub fn token_vector(&self, token: &str) -> Option<&[f32]> {
        let id = self.tokenizer.token_to_id(token)? as usize;
        (id < self.vocab).then(|| &self.table[id * self.dim..(id + 1) * self.dim])
    }

    /// The vector of one text.
    pub fn vector(&self, text: &str) -> Result<Vec<f32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let mut v = vec![0f32; self.dim];
        for &id in encoding.get_ids() {
            let id = id as usize;
            if id < self.vocab {
                let row = &self.table[id * self.dim..(id + 1) * self.dim];
                v.iter_mut().zip(row).for_each(|(x, y)| *x += y);
            }
        }
        super::normalize_or_unit(&mut v); // no known token: a fixed unit vector
        Ok(v)
    }
}

#[async_trait::async_trait]
impl Embedder for StaticEmbedder {
    fn backend(&self) -> &'static str {
        "static"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        texts
            .iter()
            .map(|t| self.vector(t))
            .collect::<Result<_>>()
            .map_err(|e| EmbedError {
                backend: "static",
                class: ErrorClass::Invalid,
                message: format!("{e:#}"),
            })
    }
}

/// Zipf probability of the token at `rank` (1-based) in a vocabulary of `n`.
fn zipf(rank: usize, n: usize) -> f64 {
    let harmonic = (n as f64).ln() + 0.577_215_664_9;
    1.0 / (rank as f64 * harmonic)
}

/// Distills the static table from `model` (see the module doc) and writes
/// it to `<dir>/static/embeddings.safetensors` through a temporary name.
/// `progress(done, total)` is called after each slice of tokens.
pub fn distill(model: &LocalEmbedder, dir: &Path, progress: impl Fn(usize, usize)) -> Result<()> {
    let (vocab, skip, cls, sep) = model.vocabulary()?;
    let dim = model.dim();
    let kept: Vec<u32> = (0..vocab as u32).filter(|t| !skip.contains(t)).collect();
    let mut table = vec![0f64; vocab * dim];
    for (n, slice) in kept.chunks(DISTILL_CHUNK).enumerate() {
        let rows: Vec<Vec<u32>> = slice.iter().map(|&t| vec![cls, t, sep]).collect();
        let vectors = model.embed_ids_blocking(&rows)?;
        for (&t, v) in slice.iter().zip(&vectors) {
            let row = &mut table[t as usize * dim..(t as usize + 1) * dim];
            row.iter_mut().zip(v).for_each(|(x, y)| *x = *y as f64);
        }
        progress(((n + 1) * DISTILL_CHUNK).min(kept.len()), kept.len());
    }
    let mut mean = vec![0f64; dim];
    for &t in &kept {
        let row = &table[t as usize * dim..(t as usize + 1) * dim];
        mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
    }
    mean.iter_mut().for_each(|m| *m /= kept.len().max(1) as f64);
    let mut out = vec![0f32; vocab * dim];
    for &t in &kept {
        let p = zipf(t as usize + 1, vocab);
        let weight = SIF_A / (SIF_A + p);
        let i = t as usize * dim;
        for d in 0..dim {
            out[i + d] = ((table[i + d] - mean[d]) * weight) as f32;
        }
    }
    let path = table_path(dir);
    std::fs::create_dir_all(path.parent().expect("the table has a parent"))?;
    let partial = path.with_extension("partial");
    let tensor = Tensor::from_vec(out, (vocab, dim), &Device::Cpu)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("embeddings".to_string(), tensor)]),
        &partial,
    )
    .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("moving {} into place", path.display()))?;
    Ok(())
}
