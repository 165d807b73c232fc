//! `freshet bench retrieval`: retrieval quality and embedding speed of each
//! embedder, on known-item search over real pages.
//!
//! Every page under `--pages` is extracted, cleaned and chunked as the
//! pipeline does it, embedded, and written to a fresh embedded index
//! (qdrant-edge, dense and BM25 vectors, as `run` writes them). A query is
//! one page's title (pages whose title has at least three words) or its
//! first sentence (at least six words); the answer is that page. The index
//! answers each query in `dense`, `sparse` and `hybrid` mode as
//! `/v1/search` does; pages are ranked by their best chunk among the top
//! [`CHUNKS_PER_QUERY`], and each query scores 1/rank when the page is in
//! the top 10 (MRR@10). The index is small enough to be searched exactly
//! (qdrant-edge's plain segment), so the dense figure is the embedder's,
//! not HNSW's. Titles are the harder set: a first sentence is in the page
//! word for word.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::dataplane::embed::distilled::StaticEmbedder;
use crate::dataplane::embed::hash::HashEmbedder;
use crate::dataplane::embed::local::LocalEmbedder;
use crate::dataplane::index::edge::EdgeIndex;
use crate::dataplane::index::{
    chunk_id, sparse, ChunkPayload, ChunkPoint, Mode, SearchFilter, SearchQuery, VectorIndex,
};

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RetrievalRow {
    /// Embedder name (`bm25` for the sparse row).
    pub embedder: String,
    /// Retrieval mode: `dense`, `sparse` or `hybrid`.
    pub mode: String,
    /// Chunks embedded per second (one thread per core for `local`; BM25
    /// vectors per second on one thread for `sparse`).
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

/// Chunks each search returns, to rank pages by their best chunk.
const CHUNKS_PER_QUERY: usize = 100;

/// The reciprocal rank of `answer` among the pages in the order their
/// chunks came (a page counts at its first chunk), 0 past rank 10.
fn reciprocal_rank(chunk_pages: &[usize], answer: usize) -> f64 {
    let mut seen = Vec::with_capacity(10);
    for &page in chunk_pages {
        if seen.contains(&page) {
            continue;
        }
        seen.push(page);
        if page == answer {
            return 1.0 / seen.len() as f64;
        }
        if seen.len() == 10 {
            break;
        }
    }
    0.0
}

/// MRR@10 and top-1 share of `queries` (query, answer page) in `index`.
async fn score(index: &EdgeIndex, queries: Vec<(SearchQuery, usize)>) -> Result<(f64, f64)> {
    if queries.is_empty() {
        return Ok((0.0, 0.0));
    }
    let n = queries.len() as f64;
    let (mut rr, mut top1) = (0.0, 0.0);
    for (query, answer) in queries {
        let hits = index
            .search_where(&query, CHUNKS_PER_QUERY, 0, &SearchFilter::default())
            .await?;
        let pages: Vec<usize> = hits
            .iter()
            .filter_map(|h| h.payload.doc_id.strip_prefix("page-")?.parse().ok())
            .collect();
        let r = reciprocal_rank(&pages, answer);
        rr += r;
        if r == 1.0 {
            top1 += 1.0;
        }
    }
    Ok((rr / n, top1 / n))
}

/// A point of chunk `i` of the bench corpus.
fn point(i: usize, page: usize, text: &str, vector: Vec<f32>) -> ChunkPoint {
    let doc_id = format!("page-{page}");
    let id = chunk_id(&doc_id, i as u32);
    ChunkPoint {
        id,
        vector,
        payload: ChunkPayload {
            doc_id,
            chunk_index: i as u32,
            chunk_count: 0,
            url: String::new(),
            title: String::new(),
            text: text.to_string(),
            content_hash: String::new(),
            doc_hash: String::new(),
            fetched_at_ms: 0,
            event_ts_ms: 0,
            indexed_ts_ms: 0,
            domain: String::new(),
            render_mode: "document".into(),
            quality: 1.0,
            source_offset: String::new(),
            metadata: Default::default(),
        },
    }
}

type EmbedFn<'a> = Box<dyn Fn(&[String]) -> Result<Vec<Vec<f32>>> + Send + Sync + 'a>;

fn embedder(name: &str, model_dir: &Path) -> Result<EmbedFn<'static>> {
    Ok(match name {
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
    })
}

/// Runs the bench over the embedders named (`hash`, `static`, `local`):
/// each fills an embedded index (qdrant-edge, in a temporary directory)
/// and answers every query in `dense` and `hybrid` mode; `sparse` (BM25,
/// the same for every embedder) is measured once, on the first index.
pub async fn run(
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
        "{} pages, {} chunks from {}; {} title queries, {} first-sentence queries; \
         pages ranked by their best chunk among the top {CHUNKS_PER_QUERY} the index returns",
        pages.len(),
        chunk_texts.len(),
        pages_dir.display(),
        title_queries.len(),
        sentence_queries.len()
    );
    let mut rows = Vec::new();
    for (n, name) in embedders.iter().enumerate() {
        let embed = embedder(name, model_dir)?;
        let started = Instant::now();
        let vectors = tokio::task::block_in_place(|| embed(&chunk_texts))?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("{name}: {seconds:.1} s for {} chunks", chunk_texts.len());
        let dim = vectors.first().map_or(384, Vec::len);
        let dir = std::env::temp_dir().join(format!(
            "freshet-bench-retrieval-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let index = EdgeIndex::open(&dir, dim)?;
        let points: Vec<ChunkPoint> = vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| point(i, chunk_page[i], &chunk_texts[i], v))
            .collect();
        for batch in points.chunks(512) {
            index.upsert(batch.to_vec()).await?;
        }
        let dense_of = |set: &[(String, usize)]| -> Result<Vec<(Vec<f32>, usize)>> {
            let texts: Vec<String> = set.iter().map(|(t, _)| t.clone()).collect();
            Ok(tokio::task::block_in_place(|| embed(&texts))?
                .into_iter()
                .zip(set.iter().map(|(_, a)| *a))
                .collect())
        };
        let (titles, sentences) = (dense_of(&title_queries)?, dense_of(&sentence_queries)?);
        let mut modes = vec![Mode::Dense, Mode::Hybrid];
        if n == 0 {
            modes.push(Mode::Sparse);
        }
        for mode in modes {
            let of = |set: &[(Vec<f32>, usize)], texts: &[(String, usize)]| {
                set.iter()
                    .zip(texts)
                    .map(|((v, a), (t, _))| {
                        let q = match mode {
                            Mode::Dense => SearchQuery::Dense(v.clone()),
                            Mode::Sparse => SearchQuery::Sparse(sparse::query(t)),
                            Mode::Hybrid => SearchQuery::Hybrid {
                                dense: v.clone(),
                                sparse: sparse::query(t),
                            },
                        };
                        (q, *a)
                    })
                    .collect::<Vec<_>>()
            };
            let (mrr_titles, top1_titles) = score(&index, of(&titles, &title_queries)).await?;
            let (mrr_sentences, _) = score(&index, of(&sentences, &sentence_queries)).await?;
            let chunks_per_s = if mode == Mode::Sparse {
                let started = Instant::now();
                for t in &chunk_texts {
                    std::hint::black_box(sparse::document(t));
                }
                chunk_texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9)
            } else {
                chunk_texts.len() as f64 / seconds.max(1e-9)
            };
            rows.push(RetrievalRow {
                embedder: if mode == Mode::Sparse {
                    "bm25".into()
                } else {
                    name.clone()
                },
                mode: mode.as_str().into(),
                chunks_per_s,
                mrr_titles,
                top1_titles,
                mrr_sentences,
            });
        }
        drop(index);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // Sparse first, then by embedder as given, dense before hybrid.
    rows.sort_by_key(|r| r.mode != "sparse");
    Ok((rows, about))
}

/// The table.
pub fn table(rows: &[RetrievalRow]) -> String {
    let mut out = String::from(
        "| embedder | mode | chunks/s | MRR@10, titles | top-1, titles | MRR@10, first sentences |\n\
         | --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.3} | {:.3} | {:.3} |\n",
            r.embedder, r.mode, r.chunks_per_s, r.mrr_titles, r.top1_titles, r.mrr_sentences
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_ranks_at_its_best_chunk_and_counts_to_ten() {
        // Chunks of pages 3, 3, 1, 2: page 1 is second, not third.
        assert_eq!(reciprocal_rank(&[3, 3, 1, 2], 3), 1.0);
        assert_eq!(reciprocal_rank(&[3, 3, 1, 2], 1), 0.5);
        assert!((reciprocal_rank(&[3, 3, 1, 2], 2) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(reciprocal_rank(&[3, 3, 1, 2], 7), 0.0);
        // The eleventh distinct page is past the cut.
        let pages: Vec<usize> = (0..20).collect();
        assert_eq!(reciprocal_rank(&pages, 9), 0.1);
        assert_eq!(reciprocal_rank(&pages, 10), 0.0);
        assert_eq!(reciprocal_rank(&[], 0), 0.0);
    }
}
