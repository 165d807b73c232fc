//! `freshet bench retrieval`: retrieval quality and embedding speed of each
//! embedder, on known-item search over real pages.
//!
//! Every page under `--pages` is extracted, cleaned and chunked as the
//! pipeline does it. A query is one page's title (pages whose title has at
//! least three words) or its first sentence (at least six words); the
//! answer is that page. Pages are ranked by their best chunk's cosine to the
//! query, exactly (no index: the figure is the embedder's, not HNSW's), and
//! each query scores 1/rank when the page is in the top 10 (MRR@10). Titles
//! are the harder set: a first sentence is in the page word for word.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::dataplane::embed::distilled::StaticEmbedder;
use crate::dataplane::embed::hash::HashEmbedder;
use crate::dataplane::embed::local::LocalEmbedder;

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RetrievalRow {
    /// Embedder name.
    pub embedder: String,
    /// Chunks embedded per second (one thread per core for `local`).
    pub chunks_per_s: f64,
    /// MRR@10 of the title queries.
    pub mrr_titles: f64,
    /// Share of title queries answered first.
    pub top1_titles: f64,
    /// MRR@10 of the first-sentence queries.
    pub mrr_sentences: f64,
}

struct Page {
    chunks: Vec<String>,
    title: String,
    first_sentence: String,
}

fn pages(dir: &Path) -> Result<Vec<Page>> {
    let mut files = Vec::new();
    super::embed::html_files(dir, &mut files)?;
    let mut out = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let (title, text, chunks) = super::embed::page_chunks_of(&bytes);
        if chunks.is_empty() {
            continue;
        }
        let first_sentence = text
            .split_inclusive(['.', '!', '?'])
            .map(str::trim)
            .find(|s| s.split_whitespace().count() >= 6 && !s.starts_with('#'))
            .unwrap_or("")
            .to_string();
        out.push(Page {
            chunks,
            title: title.trim().to_string(),
            first_sentence,
        });
    }
    if out.is_empty() {
        bail!("no page with text under {}", dir.display());
    }
    Ok(out)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// MRR@10 and top-1 share of `queries` (vector, answer page) over the
/// chunks' vectors grouped by page.
fn score(queries: &[(Vec<f32>, usize)], chunks: &[(usize, Vec<f32>)], pages: usize) -> (f64, f64) {
    if queries.is_empty() {
        return (0.0, 0.0);
    }
    let (mut rr, mut top1) = (0.0, 0.0);
    for (q, answer) in queries {
        let mut best = vec![f32::NEG_INFINITY; pages];
        for (page, v) in chunks {
            best[*page] = best[*page].max(dot(q, v));
        }
        let target = best[*answer];
        let rank = 1 + best.iter().filter(|&&s| s > target).count();
        if rank <= 10 {
            rr += 1.0 / rank as f64;
        }
        if rank == 1 {
            top1 += 1.0;
        }
    }
    let n = queries.len() as f64;
    (rr / n, top1 / n)
}

type EmbedFn<'a> = Box<dyn Fn(&[String]) -> Result<Vec<Vec<f32>>> + 'a>;

/// Runs the bench over the embedders named (`hash`, `static`, `local`).
pub fn run(
    pages_dir: &Path,
    model_dir: &Path,
    embedders: &[String],
) -> Result<(Vec<RetrievalRow>, String)> {
    let pages = pages(pages_dir)?;
    let mut chunk_texts = Vec::new();
    let mut chunk_page = Vec::new();
    for (i, p) in pages.iter().enumerate() {
        for c in &p.chunks {
            chunk_texts.push(c.clone());
            chunk_page.push(i);
        }
    }
    let title_queries: Vec<(String, usize)> = pages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.title.split_whitespace().count() >= 3)
        .map(|(i, p)| (p.title.clone(), i))
        .collect();
    let sentence_queries: Vec<(String, usize)> = pages
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.first_sentence.is_empty())
        .map(|(i, p)| (p.first_sentence.clone(), i))
        .collect();
    let about = format!(
        "{} pages, {} chunks from {}; {} title queries, {} first-sentence queries",
        pages.len(),
        chunk_texts.len(),
        pages_dir.display(),
        title_queries.len(),
        sentence_queries.len()
    );
    let mut rows = Vec::new();
    for name in embedders {
        let embed: EmbedFn = match name.as_str() {
            "hash" => {
                let e = HashEmbedder::new(384);
                Box::new(move |texts: &[String]| Ok(texts.iter().map(|t| e.vector(t)).collect()))
            }
            "static" => {
                let e = StaticEmbedder::load(model_dir, 384)?;
                Box::new(move |texts: &[String]| texts.iter().map(|t| e.vector(t)).collect())
            }
            "local" => {
                let e = LocalEmbedder::open(model_dir)?;
                Box::new(move |texts: &[String]| {
                    let mut out = Vec::with_capacity(texts.len());
                    for request in texts.chunks(32) {
                        out.extend(e.embed_blocking(request)?);
                    }
                    Ok(out)
                })
            }
            other => bail!("unknown embedder `{other}` (hash, static, local)"),
        };
        let started = Instant::now();
        let vectors = embed(&chunk_texts)?;
        let seconds = started.elapsed().as_secs_f64();
        let chunks: Vec<(usize, Vec<f32>)> = chunk_page.iter().copied().zip(vectors).collect();
        let queries = |set: &[(String, usize)]| -> Result<Vec<(Vec<f32>, usize)>> {
            let texts: Vec<String> = set.iter().map(|(t, _)| t.clone()).collect();
            Ok(embed(&texts)?
                .into_iter()
                .zip(set.iter().map(|(_, a)| *a))
                .collect())
        };
        let (mrr_titles, top1_titles) = score(&queries(&title_queries)?, &chunks, pages.len());
        let (mrr_sentences, _) = score(&queries(&sentence_queries)?, &chunks, pages.len());
        eprintln!("{name}: {:.1} s for {} chunks", seconds, chunk_texts.len());
        rows.push(RetrievalRow {
            embedder: name.clone(),
            chunks_per_s: chunk_texts.len() as f64 / seconds.max(1e-9),
            mrr_titles,
            top1_titles,
            mrr_sentences,
        });
    }
    Ok((rows, about))
}

/// The table.
pub fn table(rows: &[RetrievalRow]) -> String {
    let mut out = String::from(
        "| embedder | chunks/s | MRR@10, titles | top-1, titles | MRR@10, first sentences |\n\
         | --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.1} | {:.3} | {:.3} | {:.3} |\n",
            r.embedder, r.chunks_per_s, r.mrr_titles, r.top1_titles, r.mrr_sentences
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrr_counts_the_rank_of_the_answer_page_by_its_best_chunk() {
        // Page 0 has two chunks, page 1 one, page 2 one.
        let chunks = vec![
            (0, vec![1.0, 0.0, 0.0]),
            (0, vec![0.0, 0.6, 0.8]),
            (1, vec![0.0, 1.0, 0.0]),
            (2, vec![0.0, 0.0, 1.0]),
        ];
        // Answered first by page 1; page 2 second behind page 0's second chunk.
        let queries = vec![(vec![0.0, 1.0, 0.0], 1), (vec![0.0, 0.0, 1.0], 2)];
        let (mrr, top1) = score(&queries, &chunks, 3);
        // Query 2: page 0 scores 0.8 (its best chunk), page 2 scores 1.0: first.
        assert!((mrr - 1.0).abs() < 1e-9 && (top1 - 1.0).abs() < 1e-9);
        let queries = vec![(vec![0.0, 0.6, 0.8], 2)];
        let (mrr, top1) = score(&queries, &chunks, 3);
        // Page 0 scores 1.0 with its second chunk, page 2 0.8: second.
        assert!((mrr - 0.5).abs() < 1e-9 && top1 == 0.0, "{mrr} {top1}");
        assert_eq!(score(&[], &chunks, 3), (0.0, 0.0));
    }
}
