//! The transform stage: documents become clean, deduplicated chunks.
//!
//! Documents arrive one by one and are processed in micro-batches
//! (`transform.batch_size` documents, or whatever arrived within
//! `transform.linger_ms`). Per batch:
//!
//! 1. **normalize** (per document, in parallel across the batch): Unicode
//!    NFKC (skipped for text that is already NFKC, which most is),
//!    boilerplate lines dropped (share/subscribe/cookie/copyright lines and
//!    the like), whitespace collapsed, words counted and the SHA-256 of the
//!    cleaned text taken, all in one pass over the text;
//! 2. **columnar step** (Polars, on the batch's metadata): the quality and
//!    length filters (`transform.min_quality`, each document's
//!    `min_words`: [`MIN_WORDS`] for web pages, none for explicit
//!    documents and CDC rows by default, see [`DocLimits`]) and the
//!    within-batch dedupe on the document hash (the first row per hash, a
//!    window `min(row) over doc_hash`);
//! 3. **chunking** (in parallel): sentence-packed chunks of about `transform.chunk_tokens`
//!    tokens with `transform.chunk_overlap` tokens repeated between
//!    neighbours, each with a deterministic id (UUIDv5 of document id and
//!    chunk index) and the SHA-256 of its text.
//!
//! An earlier version ran the whitespace clean-up as three Polars regex
//! replacements on the text column; at ~28 MB/s that was the stage's
//! bottleneck, so text work is plain Rust and Polars does what it is good at,
//! the columnar decisions over the batch.
//!
//! Tokens are estimated as 4/3 per word (the usual ratio of BPE tokenizers
//! on English prose); it keeps chunks inside an embedding model's window
//! without tying freshet to one tokenizer.
//!
//! Deduplication against what is already indexed, and the deletion of a
//! changed document's stale chunks, need the index: the pipeline does those
//! with [`DocState`](crate::dataplane::index::DocState) lookups after this
//! step.

pub(crate) mod stage;

use polars::prelude::*;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use crate::dataplane::index::chunk_id;
use crate::knobs::TransformKnobs;

/// Web pages with fewer words after cleaning are dropped as `too_short`
/// (the default of `[source] page_min_words`).
pub const MIN_WORDS: u32 = 20;

/// The most chunks one document may become (the default of
/// `[transform] max_chunks_per_doc`): about 2,000 × 256 tokens, a long book.
pub const MAX_CHUNKS_PER_DOC: u32 = 2_000;

/// How long a document may be. The floor: the fewest words it needs after
/// cleaning, by where it came from (`[source] page_min_words` and
/// `document_min_words`); a page that is mostly navigation is not worth
/// indexing, while a user's own record (an explicit document, a CDC row such
/// as an FAQ answer or a product name) is, however short, and whatever the
/// setting a document needs at least one word. The ceiling: the most chunks
/// it may become (`[transform] max_chunks_per_doc`), so one huge body cannot
/// turn into thousands of embeddings and points; over it, the document is
/// dead-lettered as `too_large` before any chunk text is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocLimits {
    /// Extracted web pages (`url` and `keyword` tasks).
    pub page: u32,
    /// Explicit `document` tasks, CDC rows included.
    pub document: u32,
    /// The most chunks of one document.
    pub max_chunks: u32,
}

impl Default for DocLimits {
    fn default() -> Self {
        DocLimits {
            page: MIN_WORDS,
            document: 0,
            max_chunks: MAX_CHUNKS_PER_DOC,
        }
    }
}

impl DocLimits {
    /// The floor for a document of `kind` (at least 1).
    pub fn of(&self, kind: DocKind) -> u32 {
        match kind {
            DocKind::Page => self.page,
            DocKind::Document => self.document,
        }
        .max(1)
    }
}

pub use crate::dataplane::flow::DocKind;

/// A document entering the transform.
#[derive(Debug, Clone)]
pub struct DocIn {
    /// Document id.
    pub doc_id: String,
    /// Markdown or plain text.
    pub text: String,
    /// Extraction quality in [0, 1] (1 for pushed documents).
    pub quality: f64,
    /// Fewer words after cleaning: dropped as `too_short`.
    pub min_words: u32,
    /// More chunks: dropped as `too_large`.
    pub max_chunks: u32,
    /// Drop boilerplate lines (share/subscribe/cookie lines): for web
    /// pages, not for a user's own records.
    pub boilerplate: bool,
}

impl DocIn {
    /// A web page: [`MIN_WORDS`] and boilerplate removal.
    pub fn page(doc_id: impl Into<String>, text: impl Into<String>, quality: f64) -> DocIn {
        DocIn {
            doc_id: doc_id.into(),
            text: text.into(),
            quality,
            min_words: MIN_WORDS,
            max_chunks: MAX_CHUNKS_PER_DOC,
            boilerplate: true,
        }
    }
}

/// Why a document produced no chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    /// Quality below `transform.min_quality`.
    LowQuality,
    /// Fewer than the document's `min_words` after cleaning.
    TooShort,
    /// Same content as an earlier document of the batch.
    DuplicateInBatch,
    /// More chunks than the document's `max_chunks`.
    TooLarge,
}

impl Dropped {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::LowQuality => "low_quality",
            Dropped::TooShort => "too_short",
            Dropped::DuplicateInBatch => "duplicate",
            Dropped::TooLarge => "too_large",
        }
    }
}

pub use crate::dataplane::flow::Chunk;

/// The transform's verdict on one input document, in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum DocOut {
    /// Chunks to embed and index.
    Chunks {
        /// SHA-256 (hex) of the cleaned document.
        doc_hash: String,
        /// The chunks, in order.
        chunks: Vec<Chunk>,
    },
    /// Nothing to index.
    Dropped(Dropped),
}

/// Lines that are boilerplate wherever they appear.
const BOILERPLATE: &[&str] = &[
    "share this",
    "share on",
    "subscribe to",
    "sign up for",
    "newsletter",
    "all rights reserved",
    "cookie",
    "advertisement",
    "click here",
    "follow us",
    "read more:",
    "related:",
    "skip to content",
    "back to top",
];

/// Unicode NFKC (skipped when the text is already NFKC), boilerplate lines
/// dropped, runs of spaces and tabs collapsed, lines trimmed, at most one
/// blank line kept between paragraphs.
pub fn normalize(text: &str) -> String {
    normalize_with(text, true)
}

/// [`normalize`], with boilerplate lines kept unless `boilerplate`.
pub fn normalize_with(text: &str, boilerplate: bool) -> String {
    let text: std::borrow::Cow<str> = match unicode_normalization::is_nfkc_quick(text.chars()) {
        unicode_normalization::IsNormalized::Yes => text.into(),
        _ => text.nfkc().collect::<String>().into(),
    };
    let mut out = String::with_capacity(text.len());
    let mut blank_pending = false;
    for line in text.lines() {
        let trimmed = line.trim_matches(|c: char| c.is_whitespace());
        if trimmed.is_empty() {
            blank_pending = !out.is_empty();
            continue;
        }
        if boilerplate && trimmed.len() < 120 {
            let lower = trimmed.to_lowercase();
            if BOILERPLATE.iter().any(|b| lower.contains(b)) {
                continue;
            }
        }
        if !out.is_empty() {
            out.push_str(if blank_pending { "\n\n" } else { "\n" });
        }
        blank_pending = false;
        let mut in_space = false;
        for c in trimmed.chars() {
            if c == ' ' || c == '\t' || c == '\u{00A0}' {
                if !in_space {
                    out.push(' ');
                }
                in_space = true;
            } else {
                out.push(c);
                in_space = false;
            }
        }
    }
    out
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(HEX[(b >> 4) as usize] as char);
        hex.push(HEX[(b & 15) as usize] as char);
    }
    hex
}

struct Cleaned {
    text: String,
    words: u32,
    doc_hash: String,
}

/// Runs one micro-batch; the result has one entry per input, in order.
pub fn transform_batch(docs: &[DocIn], knobs: &TransformKnobs) -> Result<Vec<DocOut>, PolarsError> {
    use rayon::prelude::*;
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let cleaned: Vec<Cleaned> = docs
        .par_iter()
        .map(|d| {
            let text = normalize_with(&d.text, d.boilerplate);
            Cleaned {
                words: text.split_whitespace().count().min(u32::MAX as usize) as u32,
                doc_hash: sha256_hex(&text),
                text,
            }
        })
        .collect();
    let n = docs.len();
    let frame = DataFrame::new(
        n,
        vec![
            Column::new("row".into(), (0..n as u32).collect::<Vec<u32>>()),
            Column::new(
                "quality".into(),
                docs.iter().map(|d| d.quality).collect::<Vec<f64>>(),
            ),
            Column::new(
                "words".into(),
                cleaned.iter().map(|c| c.words).collect::<Vec<u32>>(),
            ),
            Column::new(
                "min_words".into(),
                docs.iter()
                    .map(|d| d.min_words.max(1))
                    .collect::<Vec<u32>>(),
            ),
            Column::new(
                "doc_hash".into(),
                cleaned
                    .iter()
                    .map(|c| c.doc_hash.as_str())
                    .collect::<Vec<&str>>(),
            ),
        ],
    )?;
    // Rows that pass both filters, each with the first passing row of its hash.
    let kept = frame
        .lazy()
        .filter(
            col("quality")
                .gt_eq(lit(knobs.min_quality))
                .and(col("words").gt_eq(col("min_words"))),
        )
        .with_column(col("row").min().over([col("doc_hash")])?.alias("first"))
        .select([col("row"), col("first")])
        .collect()?;
    let rows = kept.column("row")?.u32()?;
    let firsts = kept.column("first")?.u32()?;
    let mut first_of: Vec<Option<u32>> = vec![None; n];
    for i in 0..kept.height() {
        if let (Some(row), Some(first)) = (rows.get(i), firsts.get(i)) {
            first_of[row as usize] = Some(first);
        }
    }
    Ok((0..n)
        .into_par_iter()
        .map(|i| match first_of[i] {
            None if docs[i].quality < knobs.min_quality => DocOut::Dropped(Dropped::LowQuality),
            None => DocOut::Dropped(Dropped::TooShort),
            Some(first) if first as usize != i => DocOut::Dropped(Dropped::DuplicateInBatch),
            Some(_) => match chunk_at_most(
                &docs[i].doc_id,
                &cleaned[i].text,
                knobs.chunk_tokens,
                knobs.chunk_overlap,
                docs[i].max_chunks.max(1) as usize,
            ) {
                Some(chunks) => DocOut::Chunks {
                    doc_hash: cleaned[i].doc_hash.clone(),
                    chunks,
                },
                None => DocOut::Dropped(Dropped::TooLarge),
            },
        })
        .collect())
}

fn tokens_of(words: usize) -> usize {
    (words * 4).div_ceil(3)
}

/// Splits text into sentences (and paragraph ends), keeping punctuation.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let end_here = (matches!(b, b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()))
            || b == b'\n';
        if end_here {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
        i += 1;
    }
    let s = text[start..].trim();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

/// Packs sentences into chunks of about `chunk_tokens` tokens with
/// `overlap` tokens of the previous chunk's end repeated at the start.
pub fn chunk(doc_id: &str, text: &str, chunk_tokens: u32, overlap: u32) -> Vec<Chunk> {
    chunk_at_most(doc_id, text, chunk_tokens, overlap, usize::MAX).unwrap_or_default()
}

/// [`chunk`], or `None` when the text would become more than `max_chunks`
/// chunks (found before any chunk text is built or hashed).
pub fn chunk_at_most(
    doc_id: &str,
    text: &str,
    chunk_tokens: u32,
    overlap: u32,
    max_chunks: usize,
) -> Option<Vec<Chunk>> {
    let budget = chunk_tokens.max(16) as usize;
    let overlap = (overlap as usize).min(budget / 2);
    // Sentences longer than the budget are cut into word runs.
    let mut pieces: Vec<(std::borrow::Cow<str>, usize)> = Vec::new();
    // Text without spaces (CJK, minified blobs) is cut by length too, so no
    // piece can exceed what an embedding model accepts.
    let max_bytes = budget * 6;
    for s in sentences(text) {
        let words = s.split_ascii_whitespace().count();
        if s.len() > max_bytes && words * 12 < s.len() {
            let mut rest = s;
            while !rest.is_empty() {
                let mut cut = rest.len().min(max_bytes);
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                let (head, tail) = rest.split_at(cut);
                pieces.push((head.into(), (head.len() / 4).clamp(1, budget)));
                rest = tail;
            }
        } else if tokens_of(words) <= budget {
            pieces.push((s.into(), tokens_of(words)));
        } else {
            let per = (budget * 3 / 4).max(1);
            let all: Vec<&str> = s.split_whitespace().collect();
            for run in all.chunks(per) {
                pieces.push((run.join(" ").into(), tokens_of(run.len())));
            }
        }
    }
    // Each chunk is a range of pieces; the next range may start inside the
    // previous one (the overlap).
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    let mut used = 0;
    let mut fresh_from = 0; // first piece of `start..` that is not overlap
    let mut i = 0;
    while i < pieces.len() {
        let tokens = pieces[i].1;
        if used + tokens > budget && i > fresh_from {
            ranges.push((start, i));
            if ranges.len() > max_chunks {
                return None;
            }
            // carry the tail of the chunk for overlap
            let mut carried = 0;
            let mut new_start = i;
            // Whole sentences, until the overlap is reached (the last one may
            // cross it), as long as the next chunk still fits its budget.
            while new_start > start
                && carried < overlap
                && carried + pieces[new_start - 1].1 + tokens <= budget
            {
                new_start -= 1;
                carried += pieces[new_start].1;
            }
            start = new_start;
            used = carried;
            fresh_from = i;
        }
        used += tokens;
        i += 1;
    }
    if pieces.len() > fresh_from {
        ranges.push((start, pieces.len()));
    }
    if ranges.len() > max_chunks {
        return None;
    }
    let chunks = ranges
        .into_iter()
        .enumerate()
        .map(|(index, (from, to))| {
            let len: usize = pieces[from..to].iter().map(|p| p.0.len() + 1).sum();
            let mut text = String::with_capacity(len);
            for (k, piece) in pieces[from..to].iter().enumerate() {
                if k > 0 {
                    text.push(' ');
                }
                text.push_str(&piece.0);
            }
            let index = index as u32;
            Chunk {
                id: chunk_id(doc_id, index),
                index,
                content_hash: sha256_hex(&text),
                text,
            }
        })
        .collect();
    Some(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs() -> TransformKnobs {
        TransformKnobs::default()
    }

    fn prose(n: usize, salt: &str) -> String {
        (0..n)
            .map(|i| {
                format!(
                    "Sentence number {i} of the {salt} story says something new about item {i}."
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_short_record_is_kept_and_its_boilerplate_like_text_too() {
        let knobs = TransformKnobs::default();
        let record = |text: &str| DocIn {
            doc_id: "faq:1".into(),
            text: text.into(),
            quality: 1.0,
            min_words: DocLimits::default().of(DocKind::Document),
            max_chunks: MAX_CHUNKS_PER_DOC,
            boilerplate: false,
        };
        let docs = vec![
            record("Refunds take five business days."),
            record("Click here to reset your password."),
            record("  \n\t "),
            DocIn::page("p", "Refunds take five business days.", 1.0),
            DocIn::page("q", "Click here to reset your password.", 1.0),
        ];
        let out = transform_batch(&docs, &knobs).unwrap();
        for (i, want) in [
            "Refunds take five business days.",
            "Click here to reset your password.",
        ]
        .into_iter()
        .enumerate()
        {
            match &out[i] {
                DocOut::Chunks { chunks, .. } => {
                    assert_eq!(chunks.len(), 1);
                    assert_eq!(chunks[0].text, want);
                }
                other => panic!("record {i} was dropped: {other:?}"),
            }
        }
        assert_eq!(
            out[2],
            DocOut::Dropped(Dropped::TooShort),
            "no words at all"
        );
        assert_eq!(
            out[3],
            DocOut::Dropped(Dropped::TooShort),
            "a page needs {MIN_WORDS} words"
        );
        assert_eq!(
            out[4],
            DocOut::Dropped(Dropped::TooShort),
            "boilerplate removed from pages"
        );
    }

    #[test]
    fn filters_dedupes_and_keeps_order() {
        let docs = vec![
            DocIn {
                doc_id: "a".into(),
                text: prose(40, "first"),
                quality: 0.9,
                min_words: MIN_WORDS,
                max_chunks: MAX_CHUNKS_PER_DOC,
                boilerplate: true,
            },
            DocIn {
                doc_id: "b".into(),
                text: prose(40, "first"),
                quality: 0.9,
                min_words: MIN_WORDS,
                max_chunks: MAX_CHUNKS_PER_DOC,
                boilerplate: true,
            },
            DocIn {
                doc_id: "c".into(),
                text: prose(40, "third"),
                quality: 0.1,
                min_words: MIN_WORDS,
                max_chunks: MAX_CHUNKS_PER_DOC,
                boilerplate: true,
            },
            DocIn {
                doc_id: "d".into(),
                text: "too short".into(),
                quality: 0.9,
                min_words: MIN_WORDS,
                max_chunks: MAX_CHUNKS_PER_DOC,
                boilerplate: true,
            },
            DocIn {
                doc_id: "e".into(),
                text: format!(
                    "Share this article\n{}\nAll rights reserved 2026",
                    prose(40, "fifth")
                ),
                quality: 0.9,
                min_words: MIN_WORDS,
                max_chunks: MAX_CHUNKS_PER_DOC,
                boilerplate: true,
            },
        ];
        let out = transform_batch(&docs, &knobs()).unwrap();
        assert!(matches!(out[0], DocOut::Chunks { .. }));
        assert_eq!(out[1], DocOut::Dropped(Dropped::DuplicateInBatch));
        assert_eq!(out[2], DocOut::Dropped(Dropped::LowQuality));
        assert_eq!(out[3], DocOut::Dropped(Dropped::TooShort));
        let DocOut::Chunks { chunks, .. } = &out[4] else {
            panic!("{:?}", out[4])
        };
        let all: String = chunks.iter().map(|c| c.text.clone()).collect();
        assert!(
            !all.contains("Share this") && !all.contains("rights reserved"),
            "{all}"
        );
    }

    #[test]
    fn chunks_respect_budget_overlap_and_ids() {
        let text = prose(200, "long");
        let chunks = chunk("doc", &text, 128, 16);
        assert!(chunks.len() > 5);
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.index as usize, i);
            assert_eq!(c.id, chunk_id("doc", i as u32));
            let tokens = tokens_of(c.text.split_whitespace().count());
            assert!(tokens <= 128, "chunk {i} has {tokens} tokens");
        }
        // neighbours share their boundary sentence
        let last_of_first = sentences(&chunks[0].text).last().unwrap().to_string();
        assert!(chunks[1].text.starts_with(&last_of_first));
        // deterministic
        assert_eq!(chunks, chunk("doc", &text, 128, 16));
        // every sentence lands in some chunk
        for s in sentences(&text) {
            assert!(chunks.iter().any(|c| c.text.contains(s)), "{s}");
        }
    }

    #[test]
    fn text_without_spaces_is_cut_by_length() {
        let blob = "数据".repeat(20_000);
        let chunks = chunk("cjk", &blob, 256, 32);
        assert!(chunks.len() > 10);
        assert!(
            chunks.iter().all(|c| c.text.len() <= 256 * 6 * 2),
            "bounded chunks"
        );
        let kept: usize = chunks
            .iter()
            .map(|c| c.text.chars().filter(|ch| *ch == '数').count())
            .sum();
        assert!(kept >= 20_000, "no text lost: {kept}");
    }

    #[test]
    fn unicode_and_whitespace_are_normalized() {
        let docs = vec![DocIn {
            doc_id: "u".into(),
            text: format!(
                "ﬁne   caf\u{0065}\u{0301}\t tables.\n\n\n\n{}",
                prose(30, "uni")
            ),
            quality: 1.0,
            min_words: MIN_WORDS,
            max_chunks: MAX_CHUNKS_PER_DOC,
            boilerplate: true,
        }];
        let out = transform_batch(&docs, &knobs()).unwrap();
        let DocOut::Chunks { chunks, .. } = &out[0] else {
            panic!()
        };
        assert!(
            chunks[0].text.starts_with("fine café tables."),
            "{}",
            chunks[0].text
        );
    }

    #[test]
    fn a_document_over_max_chunks_is_dropped_as_too_large() {
        let text = prose(400, "long");
        let all = chunk("big", &text, 64, 8);
        assert!(all.len() > 10, "{} chunks", all.len());
        let doc = |max_chunks| DocIn {
            max_chunks,
            ..DocIn::page("big", text.clone(), 1.0)
        };
        let knobs = TransformKnobs {
            chunk_tokens: 64,
            chunk_overlap: 8,
            ..TransformKnobs::default()
        };
        let out = transform_batch(&[doc(all.len() as u32 - 1)], &knobs).unwrap();
        assert_eq!(out, vec![DocOut::Dropped(Dropped::TooLarge)]);
        let out = transform_batch(&[doc(all.len() as u32)], &knobs).unwrap();
        match &out[0] {
            DocOut::Chunks { chunks, .. } => assert_eq!(chunks, &all, "at the cap, every chunk"),
            other => panic!("{other:?}"),
        }
        assert_eq!(chunk_at_most("big", &text, 64, 8, 3), None);
    }
}
