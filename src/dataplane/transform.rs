//! The transform stage: documents become clean, deduplicated chunks.
//!
//! Documents arrive one by one and are processed in micro-batches
//! (`transform.batch_size` documents, or whatever arrived within
//! `transform.linger_ms`). Per batch:
//!
//! 1. **normalize** (per document, in Rust): Unicode NFKC (skipped for text
//!    that is already NFKC, which most is), then boilerplate lines dropped
//!    (share/subscribe/cookie/copyright lines and the like);
//! 2. **columnar step** (Polars): whitespace collapsed, word counts, the
//!    quality and length filters (`transform.min_quality`, [`MIN_WORDS`]),
//!    and the within-batch dedupe on the document hash (first one wins);
//! 3. **chunking**: sentence-packed chunks of about `transform.chunk_tokens`
//!    tokens with `transform.chunk_overlap` tokens repeated between
//!    neighbours, each with a deterministic id (UUIDv5 of document id and
//!    chunk index) and the SHA-256 of its text.
//!
//! Tokens are estimated as 4/3 per word (the usual ratio of BPE tokenizers
//! on English prose); it keeps chunks inside an embedding model's window
//! without tying freshet to one tokenizer.
//!
//! Deduplication against what is already indexed, and the deletion of a
//! changed document's stale chunks, need the index: the pipeline does those
//! with [`DocState`](crate::dataplane::index::DocState) lookups after this
//! step.

use polars::prelude::*;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::dataplane::index::chunk_id;
use crate::knobs::TransformKnobs;

/// Documents with fewer words after cleaning are dropped as `too_short`.
pub const MIN_WORDS: u32 = 20;

/// A document entering the transform.
#[derive(Debug, Clone)]
pub struct DocIn {
    /// Document id.
    pub doc_id: String,
    /// Markdown or plain text.
    pub text: String,
    /// Extraction quality in [0, 1] (1 for pushed documents).
    pub quality: f64,
}

/// Why a document produced no chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    /// Quality below `transform.min_quality`.
    LowQuality,
    /// Fewer than [`MIN_WORDS`] words after cleaning.
    TooShort,
    /// Same content as an earlier document of the batch.
    DuplicateInBatch,
}

impl Dropped {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::LowQuality => "low_quality",
            Dropped::TooShort => "too_short",
            Dropped::DuplicateInBatch => "duplicate",
        }
    }
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// UUIDv5 of document id and index.
    pub id: Uuid,
    /// Position in the document.
    pub index: u32,
    /// The text.
    pub text: String,
    /// SHA-256 (hex) of the text.
    pub content_hash: String,
}

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

/// Unicode NFKC, skipping text that is already normalized, then drops short
/// boilerplate lines.
pub fn normalize(text: &str) -> String {
    let text: std::borrow::Cow<str> = match unicode_normalization::is_nfkc_quick(text.chars()) {
        unicode_normalization::IsNormalized::Yes => text.into(),
        _ => text.nfkc().collect::<String>().into(),
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.len() < 120 {
            let lower = trimmed.to_lowercase();
            if BOILERPLATE.iter().any(|b| lower.contains(b)) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
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

/// Runs one micro-batch; the result has one entry per input, in order.
pub fn transform_batch(docs: &[DocIn], knobs: &TransformKnobs) -> Result<Vec<DocOut>, PolarsError> {
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let cleaned: Vec<String> = docs.iter().map(|d| normalize(&d.text)).collect();
    let row: Vec<u32> = (0..docs.len() as u32).collect();
    let quality: Vec<f64> = docs.iter().map(|d| d.quality).collect();
    let frame = DataFrame::new(
        docs.len(),
        vec![
            Column::new("row".into(), row),
            Column::new("text".into(), cleaned),
            Column::new("quality".into(), quality),
        ],
    )?;
    let out = frame
        .lazy()
        .with_columns([
            // Collapse runs of spaces/tabs and blank lines; keep paragraph breaks.
            col("text")
                .str()
                .replace_all(lit(r"[ \t\u{00A0}]+"), lit(" "), false)
                .str()
                .replace_all(lit(r" ?\n ?"), lit("\n"), false)
                .str()
                .replace_all(lit(r"\n{3,}"), lit("\n\n"), false)
                .str()
                .strip_chars(lit(NULL))
                .alias("text"),
        ])
        .with_columns([col("text")
            .str()
            .count_matches(lit(r"\S+"), false)
            .alias("words")])
        .collect()?;
    let rows = out.column("row")?.u32()?;
    let texts = out.column("text")?.str()?;
    let words = out.column("words")?.u32()?;
    let qualities = out.column("quality")?.f64()?;

    let mut results: Vec<Option<DocOut>> = vec![None; docs.len()];
    let mut seen = std::collections::HashSet::new();
    for i in 0..out.height() {
        let row = rows.get(i).unwrap_or(0) as usize;
        let text = texts.get(i).unwrap_or("");
        let verdict = if qualities.get(i).unwrap_or(0.0) < knobs.min_quality {
            DocOut::Dropped(Dropped::LowQuality)
        } else if words.get(i).unwrap_or(0) < MIN_WORDS {
            DocOut::Dropped(Dropped::TooShort)
        } else {
            let doc_hash = sha256_hex(text);
            if !seen.insert(doc_hash.clone()) {
                DocOut::Dropped(Dropped::DuplicateInBatch)
            } else {
                let chunks = chunk(
                    &docs[row].doc_id,
                    text,
                    knobs.chunk_tokens,
                    knobs.chunk_overlap,
                );
                DocOut::Chunks { doc_hash, chunks }
            }
        };
        results[row] = Some(verdict);
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or(DocOut::Dropped(Dropped::TooShort)))
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
    ranges
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
        .collect()
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
    fn filters_dedupes_and_keeps_order() {
        let docs = vec![
            DocIn {
                doc_id: "a".into(),
                text: prose(40, "first"),
                quality: 0.9,
            },
            DocIn {
                doc_id: "b".into(),
                text: prose(40, "first"),
                quality: 0.9,
            },
            DocIn {
                doc_id: "c".into(),
                text: prose(40, "third"),
                quality: 0.1,
            },
            DocIn {
                doc_id: "d".into(),
                text: "too short".into(),
                quality: 0.9,
            },
            DocIn {
                doc_id: "e".into(),
                text: format!(
                    "Share this article\n{}\nAll rights reserved 2026",
                    prose(40, "fifth")
                ),
                quality: 0.9,
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
        assert_eq!(
            chunks
                .iter()
                .map(|c| c.text.chars().filter(|ch| *ch == '数').count())
                .sum::<usize>()
                >= 20_000,
            true
        );
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
}
