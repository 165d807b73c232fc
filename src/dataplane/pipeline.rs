//! Pipeline wiring: stages as tasks connected by bounded channels.
//!
//! ```text
//! input ─▶ router ─┬─ keyword ─▶ search ─▶ URLs ─┐
//!                  ├─ url ───────────────────────┴▶ extract ─▶ docs ─┐
//!                  ├─ document ─────────────────────────────────────┴▶ transform ─▶ embed ─▶ [buffer] ─▶ index ─▶ ack
//!                  └─ delete ───────────────────────────────────────▶ transform ──────────────────────▶ index (delete by doc)
//! ```
//!
//! This module only wires; each stage lives in its own file:
//! `search/stage.rs`, `extract/stage.rs`, `transform/stage.rs`,
//! `embed/stage.rs`, `index/stage.rs`. The items on the channels and what
//! the stages share are in `flow.rs`, the slotted stages' dispatch loop
//! (with panic supervision) in [`dispatch`](super::dispatch), version
//! ordering in [`versions`](super::versions), and every outcome is one
//! typed event ([`events`](super::events)).
//!
//! - Every stage reads the live knobs once per unit of work (a page, a
//!   micro-batch, a request).
//! - Concurrency per stage is the stage's slot limit; a dispatcher takes a
//!   slot **before** it spawns the work, so the number of tasks is bounded
//!   and waiting for a slot pushes back on the channel before it. A worker
//!   that panics is counted and logged, and its items are dead-lettered;
//!   the stage keeps serving.
//! - Time spent blocked on a full downstream channel is counted per stage
//!   (`freshet_stage_backpressure_seconds`): the controller's signal.
//! - Every derived item carries its source message's [`Ack`] share; a share
//!   is finished only when its chunks are indexed, it was filtered on
//!   purpose, or it was dead-lettered (DLQ record fsynced first).
//! - Ordering per document ([`Versions`](super::versions::Versions)): the
//!   transform numbers every version of a document (and every delete) as it
//!   arrives; the index stage writes a version only if no newer one has been
//!   numbered since, under a per-document lock, so concurrent requests never
//!   let an old version overwrite a new one.
//! - Shutdown: drop the input sender; each stage ends when its input is
//!   closed and its spawned work is done. [`Pipeline::finish`] waits for that
//!   up to a deadline, then aborts: unfinished shares are dropped undone, so
//!   their messages are redelivered, never lost.

use super::circuit::Circuits;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::dlq::Dlq;
use super::embed::stage::EmbedStage;
use super::embed::Embedder;
use super::events::Counters;
use super::events::{LetterClass, TaskReceived, UrlQueued};
use super::extract::ExtractStage;
use super::flow::{send_measured, Ctx, DocItem, DocKind, Origin, TransformIn};
use super::index::stage::IndexStage;
use super::index::VectorIndex;
use super::retry::ErrorClass;
use super::search::SearchStage;
use super::task::{now_ms, Envelope, Task};
use super::Stage;
use crate::live::LiveConfig;

/// Capacity of every inter-stage channel.
pub const CHANNEL_CAPACITY: usize = 256;

/// The stages and stores a pipeline runs with.
#[derive(Debug, Clone)]
pub struct Deps {
    /// Live knobs.
    pub live: Arc<LiveConfig>,
    /// Search stage; keyword tasks are dead-lettered without one.
    pub search: Option<Arc<SearchStage>>,
    /// Extract stage.
    pub extract: Arc<ExtractStage>,
    /// Embedder.
    pub embedder: Arc<dyn Embedder>,
    /// Vector index.
    pub index: Arc<dyn VectorIndex>,
    /// Dead letters.
    pub dlq: Arc<Dlq>,
    /// The fewest words a document needs and the most chunks it may become.
    pub limits: super::transform::DocLimits,
}

/// A running pipeline.
pub struct Pipeline {
    input: Option<mpsc::Sender<Envelope>>,
    tasks: JoinSet<()>,
    counters: Arc<Counters>,
    circuits: Circuits,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts every stage; feed it through [`sender`](Self::sender).
    pub fn start(deps: Deps) -> Pipeline {
        let embed = EmbedStage::new(&deps.live, deps.embedder);
        let index = IndexStage::new(&deps.live, deps.index.clone());
        let circuits = Circuits {
            search: deps.search.as_ref().map(|s| s.circuit()),
            ..Circuits::default()
        };
        let ctx = Arc::new(Ctx::new(deps.live, deps.dlq, circuits.clone()));
        let counters = ctx.counters.clone();
        let (input_tx, input_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (search_tx, search_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (extract_tx, extract_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (transform_tx, transform_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (embed_tx, embed_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (index_tx, index_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let mut tasks = JoinSet::new();
        let search_tx = deps.search.map(|search| {
            tasks.spawn(super::search::run(
                ctx.clone(),
                search,
                search_rx,
                extract_tx.clone(),
            ));
            search_tx
        });
        let routes = Routes {
            search: search_tx,
            extract: extract_tx.clone(),
            transform: transform_tx.clone(),
        };
        tasks.spawn(router(ctx.clone(), input_rx, routes));
        let extract = super::extract::run(ctx.clone(), deps.extract, extract_rx, transform_tx);
        tasks.spawn(extract);
        let transform = super::transform::stage::run(
            ctx.clone(),
            deps.index,
            deps.limits,
            transform_rx,
            embed_tx,
        );
        tasks.spawn(transform);
        tasks.spawn(embed.run(ctx.clone(), embed_rx, index_tx));
        tasks.spawn(index.run(ctx, index_rx));
        drop(extract_tx);
        Pipeline {
            input: Some(input_tx),
            tasks,
            counters,
            circuits,
        }
    }

    /// The input channel (clone it per source).
    pub fn sender(&self) -> mpsc::Sender<Envelope> {
        self.input
            .clone()
            .expect("pipeline input is open until finish")
    }

    /// The upstream circuits of the search, embed and index stages.
    pub fn circuits(&self) -> Circuits {
        self.circuits.clone()
    }

    /// Exact counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Closes the input and waits for every stage to drain, up to `deadline`;
    /// past it, the rest is aborted (and redelivered later). Returns whether
    /// everything drained. Sources must have dropped their senders.
    pub async fn finish(mut self, deadline: Duration) -> bool {
        self.input.take();
        let drained = tokio::time::timeout(deadline, async {
            while let Some(result) = self.tasks.join_next().await {
                if let Err(e) = result {
                    tracing::error!(error = %e, "pipeline stage failed");
                }
            }
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(
                "drain deadline passed; aborting unfinished work (it will be redelivered)"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        drained
    }
}

/// Where the router sends each kind of task.
struct Routes {
    /// Keyword tasks; `None` without a search provider.
    search: Option<mpsc::Sender<(String, Origin)>>,
    extract: mpsc::Sender<(String, Origin)>,
    transform: mpsc::Sender<TransformIn>,
}

/// Counts, validates and routes every task from the sources.
async fn router(ctx: Arc<Ctx>, mut input: mpsc::Receiver<Envelope>, routes: Routes) {
    while let Some(envelope) = input.recv().await {
        ctx.emit(TaskReceived {
            kind: envelope.task.kind(),
        });
        let origin = Origin {
            ack: envelope.ack,
            event_ms: envelope.task.ts_ms().unwrap_or(envelope.received_ms),
            source: envelope.source,
            task: Arc::new(serde_json::to_value(&envelope.task).unwrap_or_default()),
        };
        if let Err(why) = envelope.task.validate() {
            let class = LetterClass::Error(ErrorClass::Invalid);
            ctx.dead_letter(Stage::Source, class, why, origin).await;
            continue;
        }
        route(&ctx, envelope.task, origin, &routes).await;
    }
}

async fn route(ctx: &Ctx, task: Task, origin: Origin, routes: &Routes) {
    match task {
        Task::Keyword { query, .. } => match &routes.search {
            Some(tx) => {
                let _ = send_measured(tx, (query, origin), Stage::Source).await;
            }
            None => {
                let class = LetterClass::Error(ErrorClass::Invalid);
                let why = "no search provider configured".to_string();
                ctx.dead_letter(Stage::Search, class, why, origin).await;
            }
        },
        Task::Url { url, .. } => {
            ctx.emit(UrlQueued);
            let _ = send_measured(&routes.extract, (url, origin), Stage::Source).await;
        }
        Task::Document {
            id,
            text,
            title,
            url,
            metadata,
            ..
        } => {
            let item = DocItem {
                kind: DocKind::Document,
                doc_id: id,
                url,
                title,
                text,
                quality: 1.0,
                render_mode: "document".into(),
                fetched_at_ms: now_ms(),
                metadata,
                origin,
            };
            let _ = send_measured(&routes.transform, TransformIn::Doc(item), Stage::Source).await;
        }
        Task::Delete { id, .. } => {
            let delete = TransformIn::Delete { doc_id: id, origin };
            let _ = send_measured(&routes.transform, delete, Stage::Source).await;
        }
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
