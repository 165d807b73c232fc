//! What flows between the stages and what every stage of one pipeline
//! shares: the items on the channels (with [`Chunk`], the transform's
//! output), the live knobs, the counters, version ordering and
//! dead-lettering.
//!
//! The stages' own files (`<stage>/stage.rs`) import this module and it
//! imports none of them: each stage's runtime owns its store or client
//! (the embed stage its embedder, the index stage its index), so there is
//! no import cycle between the stages and what they share.

use crate::dataplane::circuit::Circuits;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::dlq::{DeadLetter, Dlq};
use super::events::{
    BackpressureWaited, Counters, DeadLettered, InternalEvent, LetterClass, PipelineEvent,
};
use super::retry::ErrorClass;
use super::task::Task;
use super::versions::Versions;
use super::Stage;
use crate::live::LiveConfig;

/// What a dead letter of an item holds: the task to replay and its source.
#[derive(Debug, Clone)]
pub(crate) struct Letter {
    pub task: Arc<serde_json::Value>,
    pub source: String,
}

/// What travels with an item for acknowledgement, freshness and dead letters.
#[derive(Debug)]
pub(crate) struct Origin {
    pub ack: super::ack::Ack,
    pub event_ms: u64,
    pub source: String,
    pub task: Arc<serde_json::Value>,
}

impl Origin {
    /// A share for an item derived from this message, whose dead letter
    /// should hold `task` (what to replay), not the whole original task.
    pub fn derive(&self, task: &Task) -> Origin {
        Origin {
            ack: self.ack.clone(),
            event_ms: self.event_ms,
            source: self.source.clone(),
            task: Arc::new(serde_json::to_value(task).unwrap_or_default()),
        }
    }

    /// What a dead letter of this item would hold.
    pub fn letter(&self) -> Letter {
        Letter {
            task: self.task.clone(),
            source: self.source.clone(),
        }
    }
}

/// Where a document came from, which decides the filters it meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// A page extracted from the web (`url` and `keyword` tasks).
    Page,
    /// A document given in full (`document` tasks, CDC rows).
    Document,
}

/// A document on its way to the transform.
#[derive(Debug)]
pub(crate) struct DocItem {
    pub kind: DocKind,
    pub doc_id: String,
    pub url: String,
    pub title: String,
    pub text: String,
    pub quality: f64,
    pub render_mode: String,
    pub fetched_at_ms: u64,
    pub metadata: BTreeMap<String, serde_json::Value>,
    pub origin: Origin,
}

/// The transform's input.
#[derive(Debug)]
pub(crate) enum TransformIn {
    Doc(DocItem),
    Delete { doc_id: String, origin: Origin },
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

/// A document the transform chunked, numbered `seq` among its versions.
#[derive(Debug)]
pub(crate) struct ChunkedDoc {
    pub meta: DocItem,
    pub doc_hash: String,
    pub chunks: Vec<Chunk>,
    pub stale: Vec<Uuid>,
    pub seq: u64,
}

/// What embed and index carry: an upsert (vectors filled in by embed) or a
/// delete.
#[derive(Debug)]
pub(crate) enum Write {
    Upsert {
        doc: Box<ChunkedDoc>,
        vectors: Vec<Vec<f32>>,
    },
    Delete {
        doc_id: String,
        origin: Origin,
        seq: u64,
    },
}

impl Write {
    /// Index points the write touches (batching weight).
    pub fn points(&self) -> usize {
        match self {
            Write::Upsert { doc, .. } => doc.chunks.len(),
            Write::Delete { .. } => 1,
        }
    }

    pub fn doc_id(&self) -> &str {
        match self {
            Write::Upsert { doc, .. } => &doc.meta.doc_id,
            Write::Delete { doc_id, .. } => doc_id,
        }
    }

    pub fn origin(&self) -> &Origin {
        match self {
            Write::Upsert { doc, .. } => &doc.meta.origin,
            Write::Delete { origin, .. } => origin,
        }
    }
}

/// Sends `item`, counting the time spent waiting on a full channel as
/// `stage`'s backpressure. Gives the item back if the channel is closed.
pub(crate) async fn send_measured<T>(tx: &mpsc::Sender<T>, item: T, stage: Stage) -> Result<(), T> {
    match tx.try_send(item) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(item)) => Err(item),
        Err(mpsc::error::TrySendError::Full(item)) => {
            let started = Instant::now();
            let result = tx.send(item).await.map_err(|e| e.0);
            BackpressureWaited {
                stage,
                waited: started.elapsed(),
            }
            .emit();
            result
        }
    }
}

/// Writes dead letters and counts them.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetters {
    pub dlq: Arc<Dlq>,
    pub counters: Arc<Counters>,
}

impl DeadLetters {
    /// Writes one dead letter (fsynced before it returns true).
    pub async fn write(
        &self,
        stage: Stage,
        class: LetterClass,
        message: String,
        letter: Letter,
    ) -> bool {
        let record = DeadLetter::new(
            stage.as_str(),
            class.as_str(),
            message,
            (*letter.task).clone(),
            letter.source,
        );
        let dlq = self.dlq.clone();
        match tokio::task::spawn_blocking(move || dlq.write(&record)).await {
            Ok(Ok(())) => {
                self.counters.emit(DeadLettered { stage, class });
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot write dead letter; the message will be redelivered");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "dead-letter writer failed; the message will be redelivered");
                false
            }
        }
    }

    /// Writes a dead letter, then finishes the share; if the write fails the
    /// share is abandoned (redelivered later) instead.
    pub async fn settle(&self, stage: Stage, class: LetterClass, message: String, origin: Origin) {
        if self.write(stage, class, message, origin.letter()).await {
            origin.ack.done();
        }
    }
}

/// What every stage of one pipeline shares.
pub(crate) struct Ctx {
    pub live: Arc<LiveConfig>,
    pub counters: Arc<Counters>,
    pub letters: DeadLetters,
    pub versions: Versions,
    pub circuits: Circuits,
}

impl Ctx {
    pub fn new(live: Arc<LiveConfig>, dlq: Arc<Dlq>, circuits: Circuits) -> Ctx {
        let counters = Arc::new(Counters::default());
        let letters = DeadLetters {
            dlq,
            counters: counters.clone(),
        };
        Ctx {
            live,
            counters,
            letters,
            versions: Versions::new(),
            circuits,
        }
    }

    /// Records an outcome in the counters and metrics.
    pub fn emit(&self, event: impl PipelineEvent) {
        self.counters.emit(event);
    }

    /// Dead-letters an item (see [`DeadLetters::settle`]).
    pub async fn dead_letter(
        &self,
        stage: Stage,
        class: LetterClass,
        message: String,
        origin: Origin,
    ) {
        self.letters.settle(stage, class, message, origin).await;
    }

    /// A document version is settled without a write (skipped on purpose).
    pub fn skip(&self, doc_id: &str, seq: u64, origin: Origin) {
        self.versions.retire(doc_id, seq);
        origin.ack.done();
    }

    /// A document version failed at the index with `class`: dead-letter it.
    pub async fn index_failed(
        &self,
        doc_id: &str,
        seq: u64,
        origin: Origin,
        class: ErrorClass,
        message: String,
    ) {
        self.versions.retire(doc_id, seq);
        self.dead_letter(Stage::Index, LetterClass::Error(class), message, origin)
            .await;
    }
}
