//! The search stage's runtime: slots, retries and telemetry around a
//! [`SearchProvider`], and the pipeline's keyword loop.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{ProviderError, SearchHit, SearchProvider};
use crate::dataplane::circuit::Circuit;
use crate::dataplane::dispatch::{self, Dispatch};
use crate::dataplane::events::{
    InternalEvent, LetterClass, SearchSucceeded, StageCompleted, StageFailed, StageRequested,
    UrlQueued,
};
use crate::dataplane::flow::{send_measured, Ctx, Origin};
use crate::dataplane::retry::{self, ErrorClass};
use crate::dataplane::task::{url_doc_id, Task};
use crate::dataplane::Stage;
use crate::live::{LiveConfig, SlotPermit, Slots};

const STAGE: Stage = Stage::Search;

/// The search stage runtime.
#[derive(Debug)]
pub struct SearchStage {
    provider: Arc<dyn SearchProvider>,
    live: Arc<LiveConfig>,
    slots: Arc<Slots>,
    circuit: Arc<Circuit>,
    _follow: tokio::task::JoinHandle<()>,
}

impl SearchStage {
    /// A stage whose slot count follows `search.slots`.
    pub fn new(provider: Arc<dyn SearchProvider>, live: Arc<LiveConfig>) -> SearchStage {
        let slots = Arc::new(Slots::new(live.load().knobs.search.slots as usize));
        let follow = slots.follow(&live, |k| k.search.slots);
        SearchStage {
            provider,
            live,
            slots,
            circuit: Arc::new(Circuit::new(STAGE)),
            _follow: follow,
        }
    }

    /// The provider's circuit.
    pub fn circuit(&self) -> Arc<Circuit> {
        self.circuit.clone()
    }

    /// The stage's slot limit (for observation).
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Searches `query` with retries; counts and logs the outcome.
    pub async fn search(&self, query: &str) -> Result<Vec<SearchHit>, ProviderError> {
        self.search_permitted(query, None).await
    }

    /// Like [`search`](Self::search), holding a slot the caller already took.
    pub async fn search_permitted(
        &self,
        query: &str,
        permit: Option<SlotPermit>,
    ) -> Result<Vec<SearchHit>, ProviderError> {
        let query = query.trim();
        if query.is_empty() || query.len() > 2_048 {
            let err = ProviderError {
                provider: self.provider.name(),
                endpoint: "search",
                class: ErrorClass::Invalid,
                message: format!("query must be 1..=2048 bytes, got {}", query.len()),
                retry_after: None,
            };
            StageFailed::of(STAGE, &err).emit();
            return Err(err);
        }
        let mut permit = Some(match permit {
            Some(p) => p,
            None => self.slots.acquire().await,
        });
        StageRequested { stage: STAGE }.emit();
        let in_flight = dispatch::occupy(STAGE, &self.slots);
        let started = Instant::now();
        let result = retry::Retry::new(&self.live, STAGE)
            .holding((&*self.slots, &mut permit))
            .through(&self.circuit)
            .run(|_| self.provider.search(query))
            .await;
        drop(in_flight);
        StageCompleted {
            stage: STAGE,
            ok: result.is_ok(),
            elapsed: started.elapsed(),
        }
        .emit();
        if let Err(err) = &result {
            StageFailed::of(STAGE, err).emit();
        }
        result
    }
}

/// The pipeline's search loop: one worker per keyword task, each holding a
/// `search.slots` slot; every distinct result URL goes on to extract with a
/// share of the keyword's acknowledgement.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    search: Arc<SearchStage>,
    mut rx: mpsc::Receiver<(String, Origin)>,
    extract_tx: mpsc::Sender<(String, Origin)>,
) {
    let mut dispatch = Dispatch::new(STAGE, ctx.letters.clone());
    while let Some((query, origin)) = dispatch.next(&mut rx).await {
        let (ctx, search, extract_tx) = (ctx.clone(), search.clone(), extract_tx.clone());
        let held = vec![origin.letter()];
        let slots = search.slots.clone();
        dispatch
            .spawn(&slots, held, move |permit| async move {
                match search.search_permitted(&query, Some(permit)).await {
                    Ok(hits) => fan_out(&ctx, hits, origin, &extract_tx).await,
                    Err(e) => {
                        let class = LetterClass::Error(e.class);
                        ctx.dead_letter(STAGE, class, e.to_string(), origin).await;
                    }
                }
            })
            .await;
    }
    dispatch.drain().await;
}

/// Hands every distinct hit to extract, then finishes the keyword's share.
async fn fan_out(
    ctx: &Ctx,
    hits: Vec<SearchHit>,
    origin: Origin,
    extract_tx: &mpsc::Sender<(String, Origin)>,
) {
    ctx.emit(SearchSucceeded);
    let mut seen = HashSet::new();
    for hit in hits {
        if seen.insert(url_doc_id(&hit.url)) {
            ctx.emit(UrlQueued);
            let derived = origin.derive(&Task::Url {
                url: hit.url.clone(),
                ts_ms: Some(origin.event_ms),
            });
            if send_measured(extract_tx, (hit.url, derived), STAGE)
                .await
                .is_err()
            {
                break;
            }
        }
    }
    origin.ack.done();
}
