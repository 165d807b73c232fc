//! The local embedder: a BERT-family sentence encoder run in-process on the
//! CPU (candle), so `freshet run` needs no API key and no network to embed.
//!
//! The default model is sentence-transformers' `all-MiniLM-L6-v2` (Apache
//! 2.0; 6 layers, 384 dimensions, 22.7 M parameters), installed by
//! `freshet model fetch` (see [`crate::cli::model`]). Any sentence-transformers
//! directory of the same family works: `config.json` (a BERT config),
//! `tokenizer.json`, `model.safetensors`, and optionally
//! `sentence_bert_config.json` (`max_seq_length`), `1_Pooling/config.json`
//! (mean or CLS pooling) and `modules.json` (a `Normalize` module).
//!
//! What it computes is what sentence-transformers computes for the same
//! directory: WordPiece tokens with `[CLS]`/`[SEP]`, truncated at
//! `max_seq_length`; the encoder's last hidden states; their mean over the
//! real (unpadded) tokens; L2 normalization. `tests/local_embed.rs` holds it to
//! vectors the reference implementation produced, within 1e-3 cosine.
//!
//! A request's texts are sorted by token length and run in groups of
//! similar lengths sized by [`ATTENTION_BUDGET`], so a short chunk is not
//! padded to a long one's size. The
//! work runs on a dedicated thread pool of `embed.threads` threads (0: one
//! per core), off the async runtime; the pool is rebuilt when the knob
//! changes, between requests.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use super::{EmbedError, Embedder};
use crate::dataplane::retry::ErrorClass;
use crate::knobs::EmbedKnobs;

pub use crate::settings::DEFAULT_LOCAL_MODEL as DEFAULT_MODEL;

/// Bytes one forward pass's attention scores (rows × heads × width²
/// floats) may take. Texts run longest first in groups of similar length
/// sized to this: short texts go many at a time, long ones a few, so no
/// text is padded far past its length and the largest buffers stay below
/// the allocator's mmap threshold (at 50 MB they were mapped, zeroed and
/// unmapped on every layer: a fifth of the time went to page faults).
const ATTENTION_BUDGET: usize = 8 << 20;
/// At most this many texts per forward pass.
const MAX_ROWS: usize = 64;

/// How a sequence's token vectors become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    /// The mean over the real tokens (sentence-transformers' default).
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
}

/// A loaded model: weights, tokenizer and the sentence-transformers head.
struct Model {
    name: String,
    bert: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    heads: usize,
    pad_id: u32,
    max_tokens: usize,
    pooling: Pooling,
    normalize: bool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("dim", &self.dim)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .finish()
    }
}

fn read_json(dir: &Path, name: &str) -> Result<Option<serde_json::Value>> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not valid JSON", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl Model {
    fn load(dir: &Path) -> Result<Model> {
        let missing = |name: &str| {
            format!(
                "the local embedding model in {} has no {name}; install it with `freshet model fetch` \
                 (or set [embed] model_dir to a sentence-transformers directory)",
                dir.display()
            )
        };
        let config_json = read_json(dir, "config.json")?.with_context(|| missing("config.json"))?;
        let config: Config = serde_json::from_value(config_json)
            .with_context(|| format!("{}/config.json is not a BERT config", dir.display()))?;
        let max_seq = read_json(dir, "sentence_bert_config.json")?
            .and_then(|v| v.get("max_seq_length").and_then(|n| n.as_u64()))
            .map(|n| n as usize)
            .unwrap_or(config.max_position_embeddings)
            .clamp(2, config.max_position_embeddings);
        let pooling = match read_json(dir, "1_Pooling/config.json")? {
            None => Pooling::Mean,
            Some(p) => {
                let on = |key: &str| p.get(key).and_then(|b| b.as_bool()).unwrap_or(false);
                if on("pooling_mode_mean_tokens") {
                    Pooling::Mean
                } else if on("pooling_mode_cls_token") {
                    Pooling::Cls
                } else {
                    bail!(
                        "{}/1_Pooling/config.json asks for a pooling other than mean or CLS, which freshet does not implement",
                        dir.display()
                    )
                }
            }
        };
        let normalize = match read_json(dir, "modules.json")? {
            None => true,
            Some(modules) => modules
                .as_array()
                .map(|ms| {
                    ms.iter().any(|m| {
                        m.get("type")
                            .and_then(|t| t.as_str())
                            .is_some_and(|t| t.ends_with(".Normalize"))
                    })
                })
                .unwrap_or(false),
        };

        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.exists() {
            bail!(missing("tokenizer.json"));
        }
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
        // The file's own padding (fixed 128) and truncation are training-time
        // settings; sentence-transformers truncates at max_seq_length and pads
        // per batch, and so does this.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq,
                ..TruncationParams::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        // Padding is done per group, by `forward`.
        tokenizer.with_padding(None);

        let weights_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).with_context(|| missing("model.safetensors"))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
            .with_context(|| format!("{} is not a safetensors file", weights_path.display()))?;
        let bert = BertModel::load(vb, &config)
            .with_context(|| format!("loading the BERT weights of {}", weights_path.display()))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_MODEL.to_string());
        Ok(Model {
            name,
            bert,
            tokenizer,
            dim: config.hidden_size,
            heads: config.num_attention_heads.max(1),
            pad_id: config.pad_token_id as u32,
            max_tokens: max_seq,
            pooling,
            normalize,
        })
    }

    /// One vector per text, in order.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let sequences: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        self.embed_ids(&sequences)
    }

    /// One vector per token sequence (special tokens included), in order.
    fn embed_ids(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); sequences.len()];
        let mut rest = &order[..];
        while let Some(&longest) = rest.first() {
            // Longest first: the group's width is its first sequence's length.
            let width = sequences[longest].len().max(1);
            let rows = (ATTENTION_BUDGET / (self.heads * width * width * 4)).clamp(1, MAX_ROWS);
            let (group, tail) = rest.split_at(rows.min(rest.len()));
            let batch: Vec<&[u32]> = group.iter().map(|&i| sequences[i]).collect();
            for (&i, v) in group.iter().zip(self.forward(&batch, width)?) {
                out[i] = v;
            }
            rest = tail;
        }
        Ok(out)
    }

    /// One forward pass over sequences padded to `width` tokens.
    fn forward(&self, sequences: &[&[u32]], width: usize) -> Result<Vec<Vec<f32>>> {
        let rows = sequences.len();
        let mut ids = vec![self.pad_id; rows * width];
        let mut mask = vec![0u32; rows * width];
        for (r, seq) in sequences.iter().enumerate() {
            let n = seq.len().min(width);
            ids[r * width..r * width + n].copy_from_slice(&seq[..n]);
            mask[r * width..r * width + n].fill(1);
        }
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, width), &device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &device)?;
        let types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &types, Some(&mask))?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&weights)?.sum(1)?;
                let counts = weights.sum(1)?.clamp(1e-9, f32::MAX)?;
                summed.broadcast_div(&counts)?
            }
        };
        let pooled = if self.normalize {
            let norms = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f32::MAX)?;
            pooled.broadcast_div(&norms)?
        } else {
            pooled
        };
        Ok(pooled.to_vec2::<f32>()?)
    }
}

/// The in-process embedder.
#[derive(Debug)]
pub struct LocalEmbedder {
    model: Arc<Model>,
    /// `embed.threads` as last seen (0: one per core).
    threads: AtomicUsize,
    pool: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>>,
}

impl LocalEmbedder {
    /// Loads the model in `dir`; `dim` is `[embed] dimensions`, which must be
    /// the model's own.
    pub fn load(dir: &Path, dim: usize) -> Result<LocalEmbedder> {
        let embedder = LocalEmbedder::open(dir)?;
        let model = &embedder.model;
        if model.dim != dim {
            bail!(
                "[embed] dimensions = {dim} but the local model in {} gives {}-dimensional vectors; set dimensions = {}",
                dir.display(),
                model.dim,
                model.dim
            );
        }
        Ok(embedder)
    }

    /// Loads the model in `dir`, whatever its dimension.
    pub fn open(dir: &Path) -> Result<LocalEmbedder> {
        keep_freed_memory();
        Ok(LocalEmbedder {
            model: Arc::new(Model::load(dir)?),
            threads: AtomicUsize::new(0),
            pool: Mutex::new(None),
        })
    }

    /// The model's name (its directory's name).
    pub fn model_name(&self) -> &str {
        &self.model.name
    }

    /// Tokens per text, as the model sees them (with `[CLS]`/`[SEP]`,
    /// after truncation).
    pub fn token_counts(&self, texts: &[String]) -> Result<Vec<usize>> {
        texts
            .iter()
            .map(|t| {
                self.model
                    .tokenizer
                    .encode(t.as_str(), true)
                    .map(|e| e.get_ids().len())
                    .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))
            })
            .collect()
    }

    /// The most tokens a text is embedded with (longer ones are truncated).
    pub fn max_tokens(&self) -> usize {
        self.model.max_tokens
    }

    /// Embeds on the calling thread, inside the embedder's pool (for
    /// benchmarks and tools; the pipeline calls [`Embedder::embed`]).
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let pool = self.pool()?;
        pool.install(|| self.model.embed(texts))
    }

    /// Embeds token sequences as given (special tokens included), inside
    /// the embedder's pool: the static embedder's distillation feeds it
    /// single vocabulary tokens.
    pub fn embed_ids_blocking(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let pool = self.pool()?;
        let slices: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
        pool.install(|| self.model.embed_ids(&slices))
    }

    /// The vocabulary size, the ids that are not text (special and
    /// `[unusedN]` tokens), and the ids of `[CLS]` and `[SEP]`.
    pub fn vocabulary(&self) -> Result<(usize, std::collections::HashSet<u32>, u32, u32)> {
        let tokenizer = &self.model.tokenizer;
        let id = |name: &str| {
            tokenizer
                .token_to_id(name)
                .with_context(|| format!("the tokenizer has no {name} token"))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let specials: std::collections::HashSet<u32> = tokenizer
            .get_added_tokens_decoder()
            .keys()
            .copied()
            .collect();
        let skip = tokenizer
            .get_vocab(true)
            .into_iter()
            .filter(|(token, id)| {
                specials.contains(id) || (token.starts_with("[unused") && token.ends_with(']'))
            })
            .map(|(_, id)| id)
            .collect();
        Ok((tokenizer.get_vocab_size(true), skip, cls, sep))
    }

    /// The pool for the current `embed.threads`, built on first use and
    /// rebuilt when the knob has changed.
    fn pool(&self) -> Result<Arc<rayon::ThreadPool>> {
        let want = match self.threads.load(Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut slot = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, pool)) = slot.as_ref() {
            if *n == want {
                return Ok(pool.clone());
            }
        }
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(want)
                .thread_name(|i| format!("freshet-embed-{i}"))
                .build()
                .context("starting the local embedder's threads")?,
        );
        *slot = Some((want, pool.clone()));
        Ok(pool)
    }
}

/// A forward pass allocates and frees buffers of a few MB per layer. glibc
/// hands the top of a thread's heap back to the kernel once more than its
/// trim threshold is free, so every layer faulted the same pages in again
/// (a fifth of the CPU time, most of it in the kernel). Raising the trim
/// threshold and the top pad keeps up to a few hundred MB of freed memory
/// in the process for reuse; `embed.threads` worker threads make that
/// bounded. Measured: 140 → 119 ms per 256-token chunk on one thread
/// (`freshet bench embed`). Other allocators and platforms are left alone.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only sets allocator parameters; glibc
            // documents it as safe to call at any time from any thread.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            }
        });
    }
}

fn failed(e: anyhow::Error) -> EmbedError {
    EmbedError {
        backend: "local",
        // The model runs in-process: the same input fails the same way again.
        class: ErrorClass::Invalid,
        message: format!("{e:#}"),
    }
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn backend(&self) -> &'static str {
        "local"
    }
    fn dim(&self) -> usize {
        self.model.dim
    }
    fn tune(&self, knobs: &EmbedKnobs) {
        self.threads
            .store(knobs.threads as usize, Ordering::Relaxed);
    }
    /// One request at a time: every request runs on the same pool of
    /// `embed.threads` threads (docs/BENCHMARKS.md, reader-side freshness:
    /// two slots doubled freshness p99 and raised search p99 twelvefold).
    fn max_concurrency(&self) -> Option<u32> {
        Some(1)
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let pool = self.pool().map_err(failed)?;
        let model = self.model.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || pool.install(|| model.embed(&texts)))
            .await
            .map_err(|e| failed(anyhow::anyhow!("the embedding thread ended: {e}")))?
            .map_err(failed)
    }
}
