//! The pipeline's transform stage: micro-batches of documents and deletes.
//!
//! Per batch: number every version and delete in arrival order
//! ([`Versions::assign`](crate::dataplane::versions::Versions::assign)),
//! supersede an older version of a document by a newer one of the same
//! batch before any work is spent on it, run [`transform_batch`] off the
//! async runtime, then compare each chunked document with what the index
//! holds (unchanged, duplicate of another document, or a write with its
//! stale chunks) and hand the writes to embed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::{transform_batch, Chunk, DocIn, DocKind, DocLimits, DocOut, Dropped};
use crate::dataplane::events::{
    DocChunked, DocFiltered, DocSkipped, FilterReason, InternalEvent, LetterClass, QueueDepth,
    SkipReason, StageCompleted, StageRequested,
};
use crate::dataplane::flow::{send_measured, ChunkedDoc, Ctx, DocItem, TransformIn, Write};
use crate::dataplane::index::{IndexError, VectorIndex};
use crate::dataplane::retry::{self, ErrorClass};
use crate::dataplane::Stage;
use crate::knobs::TransformKnobs;

const STAGE: Stage = Stage::Transform;

/// Runs until `rx` is closed and the last batch is handed on.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    index: Arc<dyn VectorIndex>,
    limits: DocLimits,
    mut rx: mpsc::Receiver<TransformIn>,
    embed_tx: mpsc::Sender<Write>,
) {
    let mut open = true;
    while open {
        // Collect one micro-batch: up to batch_size items or linger_ms.
        let knobs = ctx.live.load().knobs.transform.clone();
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(knobs.linger_ms);
        while batch.len() < knobs.batch_size as usize {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        QueueDepth {
            stage: STAGE,
            depth: rx.len(),
        }
        .emit();
        transform(&ctx, index.as_ref(), batch, &knobs, limits, &embed_tx).await;
    }
}

/// One micro-batch, from numbering to the writes handed to embed.
async fn transform(
    ctx: &Ctx,
    index: &dyn VectorIndex,
    batch: Vec<TransformIn>,
    knobs: &TransformKnobs,
    limits: DocLimits,
    embed_tx: &mpsc::Sender<Write>,
) {
    let started = Instant::now();
    StageRequested { stage: STAGE }.emit();
    let docs = number(ctx, batch, embed_tx).await;
    let inputs: Vec<DocIn> = docs
        .iter()
        .map(|(d, _)| DocIn {
            doc_id: d.doc_id.clone(),
            text: d.text.clone(),
            quality: d.quality,
            min_words: limits.of(d.kind),
            max_chunks: limits.max_chunks,
            boilerplate: d.kind == DocKind::Page,
        })
        .collect();
    let knobs_for_batch = knobs.clone();
    let outs =
        tokio::task::spawn_blocking(move || transform_batch(&inputs, &knobs_for_batch)).await;
    let outs = match outs {
        Ok(Ok(outs)) => outs,
        Ok(Err(e)) => return failed(ctx, docs, format!("transform failed: {e}")).await,
        Err(e) => return failed(ctx, docs, format!("transform crashed: {e}")).await,
    };
    StageCompleted {
        stage: STAGE,
        ok: true,
        elapsed: started.elapsed(),
    }
    .emit();
    for ((doc, seq), out) in docs.into_iter().zip(outs) {
        match out {
            DocOut::Dropped(why) => {
                let message = why_dropped(why, &doc, knobs, limits);
                dropped(ctx, index, doc, seq, why, message, embed_tx).await
            }
            DocOut::Chunks { doc_hash, chunks } => {
                chunked(ctx, index, doc, seq, doc_hash, chunks, embed_tx).await
            }
        }
    }
}

/// Numbers versions and deletes in arrival order; deletes go straight on,
/// an older version of a document in the batch is superseded by the newer.
async fn number(
    ctx: &Ctx,
    batch: Vec<TransformIn>,
    embed_tx: &mpsc::Sender<Write>,
) -> Vec<(DocItem, u64)> {
    let mut docs: Vec<(DocItem, u64)> = Vec::new();
    for item in batch {
        match item {
            TransformIn::Doc(doc) => {
                let seq = ctx.versions.assign(&doc.doc_id);
                if let Some(pos) = docs.iter().position(|(d, _)| d.doc_id == doc.doc_id) {
                    let (old, _) = docs.remove(pos);
                    ctx.emit(DocSkipped {
                        doc_id: &old.doc_id,
                        reason: SkipReason::Superseded,
                    });
                    old.origin.ack.done();
                }
                docs.push((doc, seq));
            }
            TransformIn::Delete { doc_id, origin } => {
                let seq = ctx.versions.assign(&doc_id);
                let write = Write::Delete {
                    doc_id,
                    origin,
                    seq,
                };
                let _ = send_measured(embed_tx, write, STAGE).await;
            }
        }
    }
    docs
}

/// The whole batch failed: dead-letter every document of it.
async fn failed(ctx: &Ctx, docs: Vec<(DocItem, u64)>, why: String) {
    for (doc, seq) in docs {
        ctx.versions.retire(&doc.doc_id, seq);
        let class = LetterClass::Error(ErrorClass::Invalid);
        ctx.dead_letter(STAGE, class, why.clone(), doc.origin).await;
    }
}

/// What a dead letter of a dropped document says.
fn why_dropped(why: Dropped, doc: &DocItem, knobs: &TransformKnobs, limits: DocLimits) -> String {
    let (kind, setting) = match doc.kind {
        DocKind::Page => ("web page", "page_min_words"),
        DocKind::Document => ("document", "document_min_words"),
    };
    match why {
        Dropped::DuplicateInBatch => "same content as another document of the batch".into(),
        Dropped::TooLarge => format!(
            "{} bytes of text would become more than {} chunks ([transform] max_chunks_per_doc); split it into smaller documents",
            doc.text.len(),
            limits.max_chunks
        ),
        Dropped::LowQuality => format!(
            "quality {:.2} is below transform.min_quality {:.2}",
            doc.quality, knobs.min_quality
        ),
        Dropped::TooShort if limits.of(doc.kind) <= 1 => {
            "no words after cleaning: nothing to index".into()
        }
        Dropped::TooShort => format!(
            "fewer than {} words after cleaning (the floor for a {kind}: [source] {setting})",
            limits.of(doc.kind)
        ),
    }
}

/// A document the transform produced no chunks for.
async fn dropped(
    ctx: &Ctx,
    index: &dyn VectorIndex,
    doc: DocItem,
    seq: u64,
    why: Dropped,
    message: String,
    embed_tx: &mpsc::Sender<Write>,
) {
    let reason = match why {
        Dropped::DuplicateInBatch => {
            return duplicate_in_batch(ctx, index, doc, seq, embed_tx).await
        }
        Dropped::LowQuality => FilterReason::LowQuality,
        Dropped::TooShort => FilterReason::TooShort,
        Dropped::TooLarge => FilterReason::TooLarge,
    };
    ctx.versions.retire(&doc.doc_id, seq);
    ctx.emit(DocFiltered {
        doc_id: &doc.doc_id,
        reason,
    });
    let class = LetterClass::Filtered(reason);
    ctx.dead_letter(STAGE, class, message, doc.origin).await;
}

/// Same content as another document of the batch: that one is indexed;
/// this one's older chunks, if any, must not stay as a second version.
async fn duplicate_in_batch(
    ctx: &Ctx,
    index: &dyn VectorIndex,
    doc: DocItem,
    seq: u64,
    embed_tx: &mpsc::Sender<Write>,
) {
    ctx.emit(DocSkipped {
        doc_id: &doc.doc_id,
        reason: SkipReason::Duplicate,
    });
    let state = {
        let _guard = ctx.versions.lock(&doc.doc_id).await;
        retry::Retry::new(&ctx.live, Stage::Index)
            .through(&ctx.circuits.index)
            .run(|_| index.doc_state(&doc.doc_id))
            .await
    };
    match state {
        Ok(state) if !state.chunk_ids.is_empty() => {
            let write = Write::Delete {
                doc_id: doc.doc_id,
                origin: doc.origin,
                seq,
            };
            let _ = send_measured(embed_tx, write, STAGE).await;
        }
        Ok(_) => ctx.skip(&doc.doc_id, seq, doc.origin),
        Err(e) => {
            let message = e.to_string();
            ctx.index_failed(&doc.doc_id, seq, doc.origin, e.class, message)
                .await
        }
    }
}

/// A chunked document: write it, or skip it as unchanged or a duplicate.
async fn chunked(
    ctx: &Ctx,
    index: &dyn VectorIndex,
    doc: DocItem,
    seq: u64,
    doc_hash: String,
    chunks: Vec<Chunk>,
    embed_tx: &mpsc::Sender<Write>,
) {
    match against_index(ctx, index, &doc, &doc_hash, &chunks).await {
        Ok(Verdict::Write(stale)) => {
            ctx.emit(DocChunked {
                doc_id: &doc.doc_id,
            });
            let chunked = ChunkedDoc {
                meta: doc,
                doc_hash,
                chunks,
                stale,
                seq,
            };
            let write = Write::Upsert {
                doc: Box::new(chunked),
                vectors: Vec::new(),
            };
            let _ = send_measured(embed_tx, write, STAGE).await;
        }
        Ok(Verdict::Unchanged) => {
            ctx.emit(DocSkipped {
                doc_id: &doc.doc_id,
                reason: SkipReason::Unchanged,
            });
            ctx.skip(&doc.doc_id, seq, doc.origin);
        }
        Ok(Verdict::Duplicate { of, had_chunks }) => {
            ctx.emit(DocSkipped {
                doc_id: &doc.doc_id,
                reason: SkipReason::Duplicate,
            });
            tracing::debug!(doc = %doc.doc_id, of = %of, "duplicate of an indexed document");
            if had_chunks {
                // Its older version must go: the content now lives under
                // the other document.
                let write = Write::Delete {
                    doc_id: doc.doc_id,
                    origin: doc.origin,
                    seq,
                };
                let _ = send_measured(embed_tx, write, STAGE).await;
            } else {
                ctx.skip(&doc.doc_id, seq, doc.origin);
            }
        }
        Err(e) => {
            let message = e.to_string();
            ctx.index_failed(&doc.doc_id, seq, doc.origin, e.class, message)
                .await
        }
    }
}

enum Verdict {
    Write(Vec<Uuid>),
    Unchanged,
    Duplicate { of: String, had_chunks: bool },
}

/// Compares a chunked document with what the index holds.
async fn against_index(
    ctx: &Ctx,
    index: &dyn VectorIndex,
    doc: &DocItem,
    doc_hash: &str,
    chunks: &[Chunk],
) -> Result<Verdict, IndexError> {
    let live = &ctx.live;
    // Under the document's lock, so a write of an older version that is in
    // progress finishes before the state it changes is read.
    let _guard = ctx.versions.lock(&doc.doc_id).await;
    let state = retry::Retry::new(live, Stage::Index)
        .through(&ctx.circuits.index)
        .run(|_| index.doc_state(&doc.doc_id))
        .await?;
    let new_ids: HashSet<Uuid> = chunks.iter().map(|c| c.id).collect();
    if state.doc_hash.as_deref() == Some(doc_hash) && state.chunk_ids.len() == chunks.len() {
        return Ok(Verdict::Unchanged);
    }
    if let Some(other) = retry::Retry::new(live, Stage::Index)
        .through(&ctx.circuits.index)
        .run(|_| index.find_doc_hash(doc_hash, &doc.doc_id))
        .await?
    {
        return Ok(Verdict::Duplicate {
            of: other,
            had_chunks: !state.chunk_ids.is_empty(),
        });
    }
    let stale = state
        .chunk_ids
        .into_iter()
        .filter(|id| !new_ids.contains(id))
        .collect();
    Ok(Verdict::Write(stale))
}
