//! The pipeline's index stage: groups writes for `index.linger_ms` up to
//! `index.batch_size` points, and applies each group holding an
//! `index.slots` slot and the locks of its documents. A write whose version
//! was overtaken by a newer one of the same document is skipped as
//! superseded; an upsert is acknowledged once its chunks are in and its
//! stale chunks are gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{ChunkPayload, ChunkPoint, VectorIndex};
use crate::dataplane::dispatch::{self, Dispatch};
use crate::dataplane::events::{
    ChunksIndexed, DocDeleted, DocIndexed, DocSkipped, InternalEvent, LetterClass, QueueDepth,
    SkipReason, StageCompleted, StageFailed, StageRequested, StaleChunksDeleted,
};
use crate::dataplane::flow::{ChunkedDoc, Ctx, Origin, Write};
use crate::dataplane::retry;
use crate::dataplane::task::now_ms;
use crate::dataplane::Stage;
use crate::live::{LiveConfig, Slots};

const STAGE: Stage = Stage::Index;

/// The index stage: its slots follow `index.slots`.
#[derive(Debug)]
pub(crate) struct IndexStage {
    index: Arc<dyn VectorIndex>,
    slots: Arc<Slots>,
    _follow: tokio::task::JoinHandle<()>,
}

type Upsert = (Box<ChunkedDoc>, Vec<Vec<f32>>);

impl IndexStage {
    pub fn new(live: &Arc<LiveConfig>, index: Arc<dyn VectorIndex>) -> IndexStage {
        let slots = Arc::new(Slots::new(live.load().knobs.index.slots as usize));
        let follow = slots.follow(live, |k| k.index.slots);
        IndexStage {
            index,
            slots,
            _follow: follow,
        }
    }

    /// Runs until `rx` is closed and every group is written.
    pub async fn run(self, ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Write>) {
        let mut dispatch = Dispatch::new(STAGE, ctx.letters.clone());
        while let Some(first) = dispatch.next(&mut rx).await {
            let group = gather(&ctx, first, &mut rx).await;
            QueueDepth {
                stage: STAGE,
                depth: rx.len(),
            }
            .emit();
            let held = group.iter().map(|w| w.origin().letter()).collect();
            let (ctx, slots, index) = (ctx.clone(), self.slots.clone(), self.index.clone());
            dispatch
                .spawn(&self.slots, held, move |permit| async move {
                    let _permit = permit;
                    let _in_flight = dispatch::occupy(STAGE, &slots);
                    write_group(&ctx, index.as_ref(), group).await;
                })
                .await;
        }
        dispatch.drain().await;
    }
}

/// `first` and what arrives within `index.linger_ms`, up to
/// `index.batch_size` points.
async fn gather(ctx: &Ctx, first: Write, rx: &mut mpsc::Receiver<Write>) -> Vec<Write> {
    let knobs = ctx.live.load().knobs.index.clone();
    let mut points = first.points();
    let mut group = vec![first];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(knobs.linger_ms);
    while points < knobs.batch_size as usize {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => {
                points += item.points();
                group.push(item);
            }
            _ => break,
        }
    }
    group
}

/// Applies one group of writes under the per-document locks.
async fn write_group(ctx: &Ctx, index: &dyn VectorIndex, group: Vec<Write>) {
    let guards = ctx.versions.lock_all(group.iter().map(Write::doc_id)).await;
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for w in group {
        match w {
            Write::Upsert { doc, vectors } => {
                if ctx.versions.is_latest(&doc.meta.doc_id, doc.seq) {
                    upserts.push((doc, vectors));
                } else {
                    superseded(ctx, &doc.meta.doc_id, doc.meta.origin);
                }
            }
            Write::Delete {
                doc_id,
                origin,
                seq,
            } => {
                if ctx.versions.is_latest(&doc_id, seq) {
                    deletes.push((doc_id, origin, seq));
                } else {
                    superseded(ctx, &doc_id, origin);
                }
            }
        }
    }
    if !upserts.is_empty() {
        upsert(ctx, index, upserts).await;
    }
    for (doc_id, origin, seq) in deletes {
        delete(ctx, index, doc_id, origin, seq).await;
    }
    drop(guards);
}

/// A newer version of the document was numbered since: nothing to write.
fn superseded(ctx: &Ctx, doc_id: &str, origin: Origin) {
    ctx.emit(DocSkipped {
        doc_id,
        reason: SkipReason::Superseded,
    });
    origin.ack.done();
}

fn points_of(upserts: &[Upsert]) -> Vec<ChunkPoint> {
    let indexed_ts_ms = now_ms();
    upserts
        .iter()
        .flat_map(|(doc, vectors)| {
            doc.chunks
                .iter()
                .zip(vectors)
                .map(|(chunk, vector)| ChunkPoint {
                    id: chunk.id,
                    vector: vector.clone(),
                    payload: ChunkPayload {
                        doc_id: doc.meta.doc_id.clone(),
                        chunk_index: chunk.index,
                        chunk_count: doc.chunks.len() as u32,
                        url: doc.meta.url.clone(),
                        title: doc.meta.title.clone(),
                        text: chunk.text.clone(),
                        content_hash: chunk.content_hash.clone(),
                        doc_hash: doc.doc_hash.clone(),
                        fetched_at_ms: doc.meta.fetched_at_ms,
                        event_ts_ms: doc.meta.origin.event_ms,
                        indexed_ts_ms,
                        domain: super::domain_of(&doc.meta.url),
                        render_mode: doc.meta.render_mode.clone(),
                        quality: doc.meta.quality,
                        source_offset: doc.meta.origin.source.clone(),
                        metadata: doc.meta.metadata.clone(),
                    },
                })
        })
        .collect()
}

/// Upserts the group's chunks in one request, then settles each document.
async fn upsert(ctx: &Ctx, index: &dyn VectorIndex, upserts: Vec<Upsert>) {
    let live = &ctx.live;
    let points = points_of(&upserts);
    let n = points.len() as u64;
    let started = Instant::now();
    StageRequested { stage: STAGE }.emit();
    let result = retry::Retry::new(live, STAGE)
        .through(&ctx.circuits.index)
        .run(|_| index.upsert(points.clone()))
        .await;
    StageCompleted {
        stage: STAGE,
        ok: result.is_ok(),
        elapsed: started.elapsed(),
    }
    .emit();
    if let Err(e) = result {
        StageFailed::of(STAGE, &e).emit();
        for (doc, _) in upserts {
            ctx.versions.retire(&doc.meta.doc_id, doc.seq);
            let class = LetterClass::Error(e.class);
            ctx.dead_letter(STAGE, class, e.to_string(), doc.meta.origin)
                .await;
        }
        return;
    }
    let now = now_ms();
    ctx.emit(ChunksIndexed { chunks: n });
    for (doc, _) in upserts {
        if !doc.stale.is_empty() {
            let stale = doc.stale.clone();
            if let Err(e) = retry::Retry::new(live, STAGE)
                .through(&ctx.circuits.index)
                .run(|_| index.delete_points(stale.clone()))
                .await
            {
                // The new chunks are in; the stale ones stay until the
                // document's next version or a replay.
                ctx.versions.retire(&doc.meta.doc_id, doc.seq);
                let message = format!("stale chunks not deleted: {e}");
                let class = LetterClass::Error(e.class);
                ctx.dead_letter(STAGE, class, message, doc.meta.origin)
                    .await;
                continue;
            }
            ctx.emit(StaleChunksDeleted {
                chunks: doc.stale.len() as u64,
            });
        }
        ctx.emit(DocIndexed {
            doc_id: &doc.meta.doc_id,
            chunks: doc.chunks.len() as u64,
            freshness_s: now.saturating_sub(doc.meta.origin.event_ms) as f64 / 1e3,
        });
        ctx.versions.retire(&doc.meta.doc_id, doc.seq);
        doc.meta.origin.ack.done();
    }
}

/// Applies one delete task.
async fn delete(ctx: &Ctx, index: &dyn VectorIndex, doc_id: String, origin: Origin, seq: u64) {
    match retry::Retry::new(&ctx.live, STAGE)
        .through(&ctx.circuits.index)
        .run(|_| index.delete_doc(&doc_id))
        .await
    {
        Ok(_) => {
            ctx.emit(DocDeleted { doc_id: &doc_id });
            ctx.versions.retire(&doc_id, seq);
            origin.ack.done();
        }
        Err(e) => {
            ctx.index_failed(&doc_id, seq, origin, e.class, e.to_string())
                .await
        }
    }
}
