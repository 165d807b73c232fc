//! The pipeline's embed stage: groups whatever writes are ready into one
//! request's worth of chunks (`embed.batch_size`), embeds them holding an
//! `embed.slots` slot, and hands the writes on to the index with their
//! vectors. Deletes pass through in order with the upserts around them.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{check_vectors, EmbedError, Embedder};
use crate::dataplane::dispatch::{self, Dispatch};
use crate::dataplane::events::{
    InternalEvent, LetterClass, QueueDepth, StageCompleted, StageFailed, StageRequested,
};
use crate::dataplane::flow::{send_measured, Ctx, Write};
use crate::dataplane::retry;
use crate::dataplane::Stage;
use crate::live::{LiveConfig, Slots};

const STAGE: Stage = Stage::Embed;

/// The embed stage: its slots follow `embed.slots`, capped by the
/// embedder's [`Embedder::max_concurrency`].
#[derive(Debug)]
pub(crate) struct EmbedStage {
    embedder: Arc<dyn Embedder>,
    slots: Arc<Slots>,
    _follow: tokio::task::JoinHandle<()>,
}

impl EmbedStage {
    pub fn new(live: &Arc<LiveConfig>, embedder: Arc<dyn Embedder>) -> EmbedStage {
        let cap = embedder.max_concurrency();
        let pick =
            move |k: &crate::knobs::Knobs| cap.map_or(k.embed.slots, |c| k.embed.slots.min(c));
        let slots = Arc::new(Slots::new(pick(&live.load().knobs) as usize));
        let follow = slots.follow(live, pick);
        EmbedStage {
            embedder,
            slots,
            _follow: follow,
        }
    }

    /// Runs until `rx` is closed and every request is done.
    pub async fn run(
        self,
        ctx: Arc<Ctx>,
        mut rx: mpsc::Receiver<Write>,
        index_tx: mpsc::Sender<Write>,
    ) {
        let mut dispatch = Dispatch::new(STAGE, ctx.letters.clone());
        while let Some(first) = dispatch.next(&mut rx).await {
            let batch_size = ctx.live.load().knobs.embed.batch_size as usize;
            let group = gather(first, &mut rx, batch_size);
            QueueDepth {
                stage: STAGE,
                depth: rx.len(),
            }
            .emit();
            let held = group.iter().map(|w| w.origin().letter()).collect();
            let (ctx, index_tx, slots) = (ctx.clone(), index_tx.clone(), self.slots.clone());
            let embedder = self.embedder.clone();
            dispatch
                .spawn(&self.slots, held, move |permit| async move {
                    let _permit = permit;
                    let _in_flight = dispatch::occupy(STAGE, &slots);
                    embed_group(&ctx, embedder.as_ref(), group, &index_tx).await;
                })
                .await;
        }
        dispatch.drain().await;
    }
}

/// `first` and whatever is ready behind it, up to `batch_size` chunks.
fn gather(first: Write, rx: &mut mpsc::Receiver<Write>, batch_size: usize) -> Vec<Write> {
    let mut chunks = first.points();
    let mut group = vec![first];
    while chunks < batch_size {
        match rx.try_recv() {
            Ok(item) => {
                chunks += item.points();
                group.push(item);
            }
            Err(_) => break,
        }
    }
    group
}

/// Embeds a group's chunks and sends its writes on; on failure the upserts
/// are dead-lettered and the deletes still go on.
async fn embed_group(
    ctx: &Ctx,
    embedder: &dyn Embedder,
    group: Vec<Write>,
    index_tx: &mpsc::Sender<Write>,
) {
    let texts: Vec<String> = group
        .iter()
        .filter_map(|w| match w {
            Write::Upsert { doc, .. } => Some(doc.chunks.iter().map(|c| c.text.clone())),
            Write::Delete { .. } => None,
        })
        .flatten()
        .collect();
    let vectors = match embed_all(ctx, embedder, &texts).await {
        Ok(v) => v,
        Err(e) => {
            for w in group {
                match w {
                    Write::Upsert { doc, .. } => {
                        ctx.versions.retire(&doc.meta.doc_id, doc.seq);
                        let class = LetterClass::Error(e.class);
                        ctx.dead_letter(STAGE, class, e.to_string(), doc.meta.origin)
                            .await;
                    }
                    delete @ Write::Delete { .. } => {
                        let _ = send_measured(index_tx, delete, STAGE).await;
                    }
                }
            }
            return;
        }
    };
    let mut vectors = vectors.into_iter();
    for w in group {
        let item = match w {
            Write::Upsert { doc, .. } => {
                let v: Vec<Vec<f32>> = vectors.by_ref().take(doc.chunks.len()).collect();
                Write::Upsert { doc, vectors: v }
            }
            delete => delete,
        };
        if send_measured(index_tx, item, STAGE).await.is_err() {
            break;
        }
    }
}

/// Embeds `texts` in requests of at most `embed.batch_size`, with retries.
async fn embed_all(
    ctx: &Ctx,
    embedder: &dyn Embedder,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let mut out = Vec::with_capacity(texts.len());
    let mut start = 0;
    while start < texts.len() {
        let knobs = ctx.live.load().knobs.embed.clone();
        embedder.tune(&knobs);
        let batch_size = (knobs.batch_size as usize).max(1);
        let end = (start + batch_size).min(texts.len());
        let request = &texts[start..end];
        let started = Instant::now();
        StageRequested { stage: STAGE }.emit();
        let result = retry::Retry::new(&ctx.live, STAGE)
            .through(&ctx.circuits.embed)
            .run(|_| embedder.embed(request))
            .await;
        StageCompleted {
            stage: STAGE,
            ok: result.is_ok(),
            elapsed: started.elapsed(),
        }
        .emit();
        match result {
            Ok(vectors) => {
                check_vectors(embedder.backend(), embedder.dim(), request.len(), &vectors)?;
                out.extend(vectors);
            }
            Err(e) => {
                StageFailed::of(STAGE, &e).emit();
                return Err(e);
            }
        }
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::embed::hash::HashEmbedder;
    use crate::knobs::Knobs;

    /// The hash embedder, claiming a fixed pool like the local model's.
    #[derive(Debug)]
    struct OnePool(HashEmbedder);

    #[async_trait::async_trait]
    impl Embedder for OnePool {
        fn backend(&self) -> &'static str {
            "one-pool"
        }
        fn dim(&self) -> usize {
            self.0.dim()
        }
        fn max_concurrency(&self) -> Option<u32> {
            Some(1)
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.embed(texts).await
        }
    }

    async fn settle(slots: &Slots, want: usize) -> usize {
        for _ in 0..100 {
            if slots.limit() == want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        slots.limit()
    }

    #[tokio::test]
    async fn slots_follow_the_knob_capped_by_the_embedder() {
        let mut knobs = Knobs::default();
        knobs.embed.slots = 4;
        let live = LiveConfig::new(knobs.clone()).unwrap();
        let open = EmbedStage::new(&live, Arc::new(HashEmbedder::new(8)));
        let capped = EmbedStage::new(&live, Arc::new(OnePool(HashEmbedder::new(8))));
        assert_eq!(open.slots.limit(), 4);
        assert_eq!(capped.slots.limit(), 1);
        knobs.embed.slots = 8;
        live.swap(knobs).unwrap();
        assert_eq!(settle(&open.slots, 8).await, 8);
        assert_eq!(
            settle(&capped.slots, 8).await,
            1,
            "the cap holds after a change"
        );
    }
}
