//! `freshet bench embed`: the local embedder's throughput on real chunks,
//! side by side with its reference implementation in the same run.
//!
//! Chunks are made the way the pipeline makes them: the real pages under
//! `--pages` (tests/data/realpages by default) are extracted, cleaned and
//! chunked with the default `transform.chunk_tokens` and overlap. freshet
//! embeds them in requests of `--batch` chunks on `--threads` threads; with
//! `--python`, sentence-transformers (scripts/embed-reference.py) embeds the
//! same chunks with the same batch size and thread count, and each row also
//! says how far freshet's vectors are from the reference's (lowest cosine).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::dataplane::embed::local::LocalEmbedder;
use crate::dataplane::embed::Embedder;
use crate::knobs::{EmbedKnobs, TransformKnobs};

/// What `freshet bench embed` measures.
#[derive(Debug, Clone)]
pub struct EmbedBenchOptions {
    /// HTML pages (searched recursively for `*.html`).
    pub pages: PathBuf,
    /// How many chunks to embed.
    pub chunks: usize,
    /// Thread counts (one row each per implementation).
    pub threads: Vec<usize>,
    /// Chunks per request.
    pub batch: usize,
    /// The model directory.
    pub model_dir: PathBuf,
    /// A Python with sentence-transformers, for the reference column.
    pub python: Option<PathBuf>,
    /// The reference script.
    pub script: PathBuf,
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbedRow {
    /// `freshet (candle)` or `sentence-transformers`.
    pub implementation: String,
    /// Threads.
    pub threads: usize,
    /// Chunks embedded.
    pub chunks: usize,
    /// Seconds for all of them.
    pub seconds: f64,
    /// Lowest cosine between freshet's and the reference's vector of a chunk.
    pub min_cosine: Option<f64>,
    /// Whether this row is the reference implementation's.
    pub reference: bool,
}

impl EmbedRow {
    fn per_s(&self) -> f64 {
        self.chunks as f64 / self.seconds.max(1e-9)
    }
}

/// Every `*.html` under `dir`, recursively, in path order (without the
/// readability corpus's `expected.html` answers).
pub(super) fn html_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            html_files(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "html")
            // mozilla/readability's ground truth sits beside each page.
            && path.file_name().is_some_and(|n| n != "expected.html")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// The first `want` chunks of the pages, made as the pipeline makes them.
pub fn page_chunks(pages: &Path, want: usize) -> Result<Vec<String>> {
    let mut files = Vec::new();
    html_files(pages, &mut files)?;
    let mut chunks = Vec::new();
    // Round-robin over pages, so a small `want` still spans many of them.
    let per_page: Vec<Vec<String>> = files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .map(|bytes| page_chunks_of(&bytes).2)
        .collect();
    let longest = per_page.iter().map(Vec::len).max().unwrap_or(0);
    'fill: for i in 0..longest {
        for page in &per_page {
            if let Some(c) = page.get(i) {
                chunks.push(c.clone());
                if chunks.len() == want {
                    break 'fill;
                }
            }
        }
    }
    if chunks.is_empty() {
        bail!("no text in the pages under {}", pages.display());
    }
    Ok(chunks)
}

/// A page as the pipeline sees it: its title, its cleaned text and that
/// text's chunks (default `transform.chunk_tokens` and overlap).
pub(super) fn page_chunks_of(html: &[u8]) -> (String, String, Vec<String>) {
    let knobs = TransformKnobs::default();
    let html = String::from_utf8_lossy(html);
    let page = crate::dataplane::extract::content::extract(&html, None);
    let text = crate::dataplane::transform::normalize(&page.markdown);
    let chunks =
        crate::dataplane::transform::chunk("bench", &text, knobs.chunk_tokens, knobs.chunk_overlap)
            .into_iter()
            .map(|c| c.text)
            .collect();
    (page.title, text, chunks)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// Runs the bench; returns the rows and a line about the chunks.
pub fn run(opts: &EmbedBenchOptions) -> Result<(Vec<EmbedRow>, String)> {
    let texts = page_chunks(&opts.pages, opts.chunks)?;
    let embedder = LocalEmbedder::open(&opts.model_dir)?;
    let tokens = embedder.token_counts(&texts)?;
    let about = format!(
        "{} chunks from {} ({} tokens per chunk on average, {} at the model's limit)",
        texts.len(),
        opts.pages.display(),
        tokens.iter().sum::<usize>() / tokens.len().max(1),
        tokens
            .iter()
            .filter(|&&t| t >= embedder.max_tokens())
            .count()
    );
    let batch = opts.batch.max(1);
    let mut rows = Vec::new();
    for &threads in &opts.threads {
        embedder.tune(&EmbedKnobs {
            threads: threads as u32,
            ..EmbedKnobs::default()
        });
        embedder.embed_blocking(&texts[..batch.min(texts.len())])?; // warm-up
        let started = Instant::now();
        let mut ours = Vec::with_capacity(texts.len());
        for request in texts.chunks(batch) {
            ours.extend(embedder.embed_blocking(request)?);
        }
        let seconds = started.elapsed().as_secs_f64();
        let reference = match &opts.python {
            Some(py) => Some(reference(opts, py, &texts, threads, batch)?),
            None => None,
        };
        let min_cosine = reference.as_ref().map(|(_, vectors)| {
            ours.iter()
                .zip(vectors)
                .map(|(a, b)| cosine(a, b))
                .fold(1.0, f64::min)
        });
        rows.push(EmbedRow {
            implementation: "freshet (candle)".into(),
            threads,
            chunks: texts.len(),
            seconds,
            min_cosine,
            reference: false,
        });
        if let Some((seconds, _)) = reference {
            rows.push(EmbedRow {
                implementation: "sentence-transformers (torch)".into(),
                threads,
                chunks: texts.len(),
                seconds,
                min_cosine: None,
                reference: true,
            });
        }
    }
    Ok((rows, about))
}

/// The reference's seconds and vectors for the same chunks.
fn reference(
    opts: &EmbedBenchOptions,
    python: &Path,
    texts: &[String],
    threads: usize,
    batch: usize,
) -> Result<(f64, Vec<Vec<f32>>)> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("texts.json");
    let output = dir.path().join("vectors.json");
    std::fs::write(&input, serde_json::json!({ "texts": texts }).to_string())?;
    let status = std::process::Command::new(python)
        .arg(&opts.script)
        .arg("--model")
        .arg(&opts.model_dir)
        .arg("--texts")
        .arg(&input)
        .arg("--out")
        .arg(&output)
        .args([
            "--threads",
            &threads.to_string(),
            "--batch",
            &batch.to_string(),
        ])
        .env("HF_HUB_OFFLINE", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {} {}", python.display(), opts.script.display()))?;
    if !status.success() {
        bail!("the reference ({}) failed: {status}", opts.script.display());
    }
    let answer: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&output)?)?;
    let seconds = answer["seconds"]
        .as_f64()
        .context("the reference wrote no seconds")?;
    let vectors: Vec<Vec<f32>> = serde_json::from_value(answer["vectors"].clone())?;
    if vectors.len() != texts.len() {
        bail!(
            "the reference returned {} vectors for {} chunks",
            vectors.len(),
            texts.len()
        );
    }
    Ok((seconds, vectors))
}

/// The table: chunks/s per implementation and thread count, and freshet's
/// speed relative to the reference on the same threads.
pub fn table(rows: &[EmbedRow]) -> String {
    let mut out = String::from(
        "| implementation | threads | chunks | chunks/s | ms/chunk | vs reference | lowest cosine to reference |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        let peer = rows
            .iter()
            .find(|r| r.threads == row.threads && r.reference);
        let ratio = match peer {
            Some(p) if !row.reference => {
                format!("{:.2}×", row.per_s() / p.per_s())
            }
            _ => "".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.2} | {} | {} |\n",
            row.implementation,
            row.threads,
            row.chunks,
            row.per_s(),
            1e3 * row.seconds / row.chunks.max(1) as f64,
            ratio,
            row.min_cosine
                .map(|c| format!("{c:.6}"))
                .unwrap_or_default()
        ));
    }
    out
}
