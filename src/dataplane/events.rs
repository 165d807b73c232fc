//! Typed internal events of the data plane: one struct per outcome.
//!
//! An event's `emit` does everything that outcome means for observability,
//! in one place: the Prometheus metric (which the recorder tees into the
//! in-process [`Tap`](crate::metrics::Tap) the controller reads), the exact
//! [`Counters`] of the pipeline that emitted it, and a rate-limited log
//! line. A stage never touches a metric or a counter directly, so the two
//! tallies of one outcome cannot drift apart.
//!
//! Two kinds:
//! - [`PipelineEvent`]s are outcomes of a pipeline's work (documents,
//!   tasks, dead letters) and also count in that pipeline's [`Counters`];
//! - [`InternalEvent`]s are stage telemetry (requests, latency, errors,
//!   slots, queues, backpressure, panics) that only metrics and logs see;
//!   stages used outside a pipeline (the query and extract endpoints) emit
//!   them too.
//!
//! Metrics emitted elsewhere: dead-letter records
//! (`freshet_dlq_records_total`, by the DLQ when a record is durable),
//! retries (by [`retry`](crate::dataplane::retry), which this module
//! depends on for [`ErrorClass`], so an event there would be an import
//! cycle), fetched bytes (by the fetcher), the sources' own metrics, the
//! knob version and the control plane's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::retry::ErrorClass;
use super::Stage;
use crate::metrics::{self, log_allowed};

/// Exact counts of what the pipeline did (tests, demo summary).
#[derive(Debug, Default)]
pub struct Counters {
    /// Tasks accepted from sources.
    pub tasks: AtomicU64,
    /// Searches that returned results.
    pub searches: AtomicU64,
    /// URLs handed to extract (from url tasks and search results).
    pub urls: AtomicU64,
    /// Pages extracted.
    pub pages: AtomicU64,
    /// Documents chunked and sent on to be indexed.
    pub docs_chunked: AtomicU64,
    /// Documents dropped by the quality filter (dead-lettered).
    pub docs_low_quality: AtomicU64,
    /// Documents dropped as too short (dead-lettered).
    pub docs_too_short: AtomicU64,
    /// Documents that would become more chunks than
    /// `[transform] max_chunks_per_doc` (dead-lettered).
    pub docs_too_large: AtomicU64,
    /// Documents identical to another document (skipped).
    pub docs_duplicate: AtomicU64,
    /// Documents identical to their indexed version (skipped).
    pub docs_unchanged: AtomicU64,
    /// Versions (upserts and deletes) overtaken by a newer version of the
    /// same document (skipped).
    pub docs_superseded: AtomicU64,
    /// Documents indexed (all chunks upserted).
    pub docs_indexed: AtomicU64,
    /// Delete tasks applied.
    pub docs_deleted: AtomicU64,
    /// Chunks upserted.
    pub chunks_indexed: AtomicU64,
    /// Stale chunks deleted after a document changed.
    pub chunks_stale_deleted: AtomicU64,
    /// Dead letters written.
    pub dead_letters: AtomicU64,
    /// Freshness per chunk, microseconds.
    pub freshness_us: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn record_freshness(&self, seconds: f64, n: u64) {
        let mut h = self.freshness_us.lock().unwrap_or_else(|p| p.into_inner());
        let h = h.get_or_insert_with(|| {
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("valid histogram bounds")
        });
        let us = (seconds * 1e6).clamp(1.0, 3_600_000_000.0) as u64;
        let _ = h.record_n(us, n);
    }

    /// Freshness quantile in seconds (e.g. 0.5, 0.99), if any chunk was indexed.
    pub fn freshness_quantile(&self, q: f64) -> Option<f64> {
        let h = self.freshness_us.lock().unwrap_or_else(|p| p.into_inner());
        h.as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1e6)
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Emits `event` into these counters, its metric and its log.
    pub fn emit(&self, event: impl PipelineEvent) {
        event.emit(self);
    }
}

/// An outcome of a pipeline's work: counted in its [`Counters`] and in the
/// matching metric together.
pub trait PipelineEvent {
    /// Records the outcome.
    fn emit(self, counters: &Counters);
}

/// Stage telemetry: metrics and logs only.
pub trait InternalEvent {
    /// Records the event.
    fn emit(self);
}

/// A debug line for `what`, at most one per second per (`scope`, `what`).
fn debug_limited(scope: &'static str, what: &'static str, doc_id: &str) {
    if tracing::enabled!(tracing::Level::DEBUG) && log_allowed(scope, what) {
        tracing::debug!(doc = %doc_id, outcome = what, "document {what}");
    }
}

/// A source task entered the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct TaskReceived {
    /// The task type label (`keyword`, `url`, `document`, `delete`).
    pub kind: &'static str,
}

impl PipelineEvent for TaskReceived {
    fn emit(self, counters: &Counters) {
        Counters::add(&counters.tasks, 1);
        metrics::counter!(metrics::TASKS_TOTAL, "type" => self.kind).increment(1);
    }
}

/// A search returned results (its URLs follow as [`UrlQueued`]).
#[derive(Debug, Clone, Copy)]
pub struct SearchSucceeded;

impl PipelineEvent for SearchSucceeded {
    fn emit(self, counters: &Counters) {
        Counters::add(&counters.searches, 1);
    }
}

/// A URL was handed to extract.
#[derive(Debug, Clone, Copy)]
pub struct UrlQueued;

impl PipelineEvent for UrlQueued {
    fn emit(self, counters: &Counters) {
        Counters::add(&counters.urls, 1);
    }
}

/// A page was extracted and handed to the transform (the extract stage
/// counts it by render mode and method as [`PageScored`]).
#[derive(Debug, Clone, Copy)]
pub struct PageExtracted;

impl PipelineEvent for PageExtracted {
    fn emit(self, counters: &Counters) {
        Counters::add(&counters.pages, 1);
    }
}

/// A document was chunked and sent on to be embedded and indexed.
#[derive(Debug, Clone, Copy)]
pub struct DocChunked<'a> {
    /// The document.
    pub doc_id: &'a str,
}

impl PipelineEvent for DocChunked<'_> {
    fn emit(self, counters: &Counters) {
        Counters::add(&counters.docs_chunked, 1);
        metrics::counter!(metrics::DOCS_TOTAL, "outcome" => "chunked").increment(1);
        debug_limited("docs", "chunked", self.doc_id);
    }
}

/// Why a document version was settled without a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Identical to its indexed version.
    Unchanged,
    /// Same content as another document (in the batch or in the index).
    Duplicate,
    /// A newer version (or delete) of the document was numbered since.
    Superseded,
}

impl SkipReason {
    /// The `outcome` label of `freshet_docs_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Unchanged => "unchanged",
            SkipReason::Duplicate => "duplicate",
            SkipReason::Superseded => "superseded",
        }
    }
}

/// A document version (upsert or delete) was skipped on purpose.
#[derive(Debug, Clone, Copy)]
pub struct DocSkipped<'a> {
    /// The document.
    pub doc_id: &'a str,
    /// Why.
    pub reason: SkipReason,
}

impl PipelineEvent for DocSkipped<'_> {
    fn emit(self, counters: &Counters) {
        let counter = match self.reason {
            SkipReason::Unchanged => &counters.docs_unchanged,
            SkipReason::Duplicate => &counters.docs_duplicate,
            SkipReason::Superseded => &counters.docs_superseded,
        };
        Counters::add(counter, 1);
        let outcome = self.reason.as_str();
        metrics::counter!(metrics::DOCS_TOTAL, "outcome" => outcome).increment(1);
        debug_limited("docs", outcome, self.doc_id);
    }
}

/// Why the transform filtered a document out (it is dead-lettered too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterReason {
    /// Quality below `transform.min_quality`.
    LowQuality,
    /// Too few words after cleaning.
    TooShort,
    /// More chunks than `[transform] max_chunks_per_doc`.
    TooLarge,
}

impl FilterReason {
    /// The `outcome` label of `freshet_docs_total` and the dead letter's class.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterReason::LowQuality => "low_quality",
            FilterReason::TooShort => "too_short",
            FilterReason::TooLarge => "too_large",
        }
    }
}

/// A document was filtered out by the transform.
#[derive(Debug, Clone, Copy)]
pub struct DocFiltered<'a> {
    /// The document.
    pub doc_id: &'a str,
    /// Why.
    pub reason: FilterReason,
}

impl PipelineEvent for DocFiltered<'_> {
    fn emit(self, counters: &Counters) {
        let counter = match self.reason {
            FilterReason::LowQuality => &counters.docs_low_quality,
            FilterReason::TooShort => &counters.docs_too_short,
            FilterReason::TooLarge => &counters.docs_too_large,
        };
        Counters::add(counter, 1);
        let outcome = self.reason.as_str();
        metrics::counter!(metrics::DOCS_TOTAL, "outcome" => outcome).increment(1);
        debug_limited("docs", outcome, self.doc_id);
    }
}

/// One upsert request of `chunks` points succeeded.
#[derive(Debug, Clone, Copy)]
pub struct ChunksIndexed {
    /// Points upserted.
    pub chunks: u64,
}

impl PipelineEvent for ChunksIndexed {
    fn emit(self, counters: &Counters) {
        Counters::add(&counters.chunks_indexed, self.chunks);
        metrics::counter!(metrics::CHUNKS_INDEXED_TOTAL).increment(self.chunks);
    }
}

/// A changed document's stale chunks were deleted.
#[derive(Debug, Clone, Copy)]
pub struct StaleChunksDeleted {
    /// Chunks deleted.
    pub chunks: u64,
}

impl PipelineEvent for StaleChunksDeleted {
    fn emit(self, counters: &Counters) {
        Counters::add(&counters.chunks_stale_deleted, self.chunks);
    }
}

/// Every chunk of a document is indexed and its share finished.
#[derive(Debug, Clone, Copy)]
pub struct DocIndexed<'a> {
    /// The document.
    pub doc_id: &'a str,
    /// Its chunks.
    pub chunks: u64,
    /// Event time to acknowledged upsert, seconds.
    pub freshness_s: f64,
}

impl PipelineEvent for DocIndexed<'_> {
    fn emit(self, counters: &Counters) {
        metrics::histogram!(metrics::FRESHNESS_SECONDS).record(self.freshness_s);
        counters.record_freshness(self.freshness_s, self.chunks);
        Counters::add(&counters.docs_indexed, 1);
        debug_limited("docs", "indexed", self.doc_id);
    }
}

/// A delete task removed a document's chunks.
#[derive(Debug, Clone, Copy)]
pub struct DocDeleted<'a> {
    /// The document.
    pub doc_id: &'a str,
}

impl PipelineEvent for DocDeleted<'_> {
    fn emit(self, counters: &Counters) {
        Counters::add(&counters.docs_deleted, 1);
        metrics::counter!(metrics::DOCS_TOTAL, "outcome" => "deleted").increment(1);
        debug_limited("docs", "deleted", self.doc_id);
    }
}

/// Why an item was dead-lettered: an error class, a transform filter, or a
/// panic in the stage's worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LetterClass {
    /// The stage failed with this class.
    Error(ErrorClass),
    /// The transform filtered the document out.
    Filtered(FilterReason),
    /// The worker handling it panicked.
    Panic,
}

impl LetterClass {
    /// The dead letter's `error_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            LetterClass::Error(class) => class.as_str(),
            // Historical record values: `quality`, `too_short`.
            LetterClass::Filtered(FilterReason::LowQuality) => "quality",
            LetterClass::Filtered(FilterReason::TooShort) => "too_short",
            LetterClass::Filtered(FilterReason::TooLarge) => "too_large",
            LetterClass::Panic => "panic",
        }
    }
}

/// A dead letter was written (durably) and its share finished. The DLQ
/// counts the record itself in `freshet_dlq_records_total`.
#[derive(Debug, Clone, Copy)]
pub struct DeadLettered {
    /// Where it failed.
    pub stage: Stage,
    /// Why.
    pub class: LetterClass,
}

impl PipelineEvent for DeadLettered {
    fn emit(self, counters: &Counters) {
        Counters::add(&counters.dead_letters, 1);
        let (stage, class) = (self.stage.as_str(), self.class.as_str());
        if tracing::enabled!(tracing::Level::DEBUG) && log_allowed("dead_letter", class) {
            tracing::debug!(stage, error_type = class, "dead-lettered");
        }
    }
}

/// A page was scored by the extractor (also when it failed as
/// `no_content`, which still carries its score).
#[derive(Debug, Clone, Copy)]
pub struct PageScored<'a> {
    /// The URL's host (no per-domain series when empty).
    pub host: &'a str,
    /// The render mode used.
    pub render_mode: &'static str,
    /// The quality score.
    pub quality: f64,
    /// The extractor, when the page was extracted (counted as a page).
    pub method: Option<&'static str>,
}

impl InternalEvent for PageScored<'_> {
    fn emit(self) {
        let mode = self.render_mode;
        if !self.host.is_empty() {
            metrics::histogram!(metrics::EXTRACT_DOMAIN_QUALITY, "domain" => metrics::domain_label(self.host), "render_mode" => mode)
                .record(self.quality);
        }
        metrics::histogram!(metrics::EXTRACT_QUALITY, "render_mode" => mode).record(self.quality);
        if let Some(method) = self.method {
            metrics::counter!(metrics::EXTRACT_PAGES_TOTAL, "render_mode" => mode, "method" => method)
                .increment(1);
        }
    }
}

/// A stage began a unit of work (one request to its upstream).
#[derive(Debug, Clone, Copy)]
pub struct StageRequested {
    /// The stage.
    pub stage: Stage,
}

impl InternalEvent for StageRequested {
    fn emit(self) {
        metrics::counter!(metrics::STAGE_REQUESTS_TOTAL, "stage" => self.stage.as_str())
            .increment(1);
    }
}

/// A unit of work ended, retries included.
#[derive(Debug, Clone, Copy)]
pub struct StageCompleted {
    /// The stage.
    pub stage: Stage,
    /// Whether it succeeded.
    pub ok: bool,
    /// How long it took.
    pub elapsed: Duration,
}

impl InternalEvent for StageCompleted {
    fn emit(self) {
        let outcome = if self.ok { "ok" } else { "error" };
        metrics::histogram!(metrics::STAGE_LATENCY_SECONDS, "stage" => self.stage.as_str(), "outcome" => outcome)
            .record(self.elapsed.as_secs_f64());
    }
}

/// A unit of work failed: counted by stage and class, logged rate-limited.
#[derive(Clone, Copy)]
pub struct StageFailed<'a> {
    /// The stage.
    pub stage: Stage,
    /// The failure class.
    pub class: ErrorClass,
    /// What happened.
    pub error: &'a dyn std::fmt::Display,
}

impl<'a> StageFailed<'a> {
    /// The failure of `stage` that `error` is, with the error's own class.
    pub fn of<E>(stage: Stage, error: &'a E) -> StageFailed<'a>
    where
        E: crate::dataplane::retry::Classify + std::fmt::Display,
    {
        StageFailed {
            stage,
            class: error.class(),
            error,
        }
    }
}

impl InternalEvent for StageFailed<'_> {
    fn emit(self) {
        metrics::record_error(self.stage.as_str(), self.class.as_str(), self.error);
    }
}

/// A worker of a stage panicked; the stage keeps serving and the items the
/// worker held are dead-lettered.
#[derive(Debug, Clone, Copy)]
pub struct StagePanicked<'a> {
    /// The stage.
    pub stage: Stage,
    /// The panic's message.
    pub message: &'a str,
    /// Items dead-lettered for it.
    pub items: usize,
}

impl InternalEvent for StagePanicked<'_> {
    fn emit(self) {
        let stage = self.stage.as_str();
        metrics::counter!(metrics::STAGE_PANICS_TOTAL, "stage" => stage, "error_type" => "panic")
            .increment(1);
        if log_allowed(stage, "panic") {
            tracing::error!(
                stage,
                error_type = "panic",
                items = self.items,
                "a {stage} worker panicked: {}; its items are dead-lettered",
                self.message
            );
        }
    }
}

/// A provider charged credits for a request.
#[derive(Debug, Clone, Copy)]
pub struct CreditsSpent {
    /// The provider.
    pub provider: &'static str,
    /// `search` or `render`.
    pub endpoint: &'static str,
    /// Credits charged.
    pub credits: u64,
}

impl InternalEvent for CreditsSpent {
    fn emit(self) {
        metrics::counter!(metrics::CREDITS_TOTAL, "provider" => self.provider, "endpoint" => self.endpoint)
            .increment(self.credits);
    }
}

/// The stage's current slot limit.
#[derive(Debug, Clone, Copy)]
pub struct SlotsSet {
    /// The stage.
    pub stage: Stage,
    /// Its limit.
    pub limit: usize,
}

impl InternalEvent for SlotsSet {
    fn emit(self) {
        metrics::gauge!(metrics::STAGE_SLOTS, "stage" => self.stage.as_str())
            .set(self.limit as f64);
    }
}

/// Items waiting in a stage's input channel.
#[derive(Debug, Clone, Copy)]
pub struct QueueDepth {
    /// The stage.
    pub stage: Stage,
    /// Items waiting.
    pub depth: usize,
}

impl InternalEvent for QueueDepth {
    fn emit(self) {
        metrics::gauge!(metrics::STAGE_QUEUE_DEPTH, "stage" => self.stage.as_str())
            .set(self.depth as f64);
    }
}

/// A stage waited to hand an item to a full downstream channel.
#[derive(Debug, Clone, Copy)]
pub struct BackpressureWaited {
    /// The waiting stage.
    pub stage: Stage,
    /// How long.
    pub waited: Duration,
}

impl InternalEvent for BackpressureWaited {
    fn emit(self) {
        metrics::histogram!(metrics::STAGE_BACKPRESSURE_SECONDS, "stage" => self.stage.as_str())
            .record(self.waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Labels, TapRecorder};

    fn docs(snap: &crate::metrics::TapSnapshot, outcome: &str) -> u64 {
        let labels: Labels = [("outcome".to_string(), outcome.to_string())].into();
        snap.counters
            .get(&(metrics::DOCS_TOTAL.to_string(), labels))
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn one_emit_counts_in_the_counters_and_the_metric() {
        let recorder = TapRecorder::default();
        let counters = Counters::default();
        ::metrics::with_local_recorder(&recorder, || {
            for reason in [SkipReason::Superseded, SkipReason::Superseded] {
                counters.emit(DocSkipped {
                    doc_id: "a",
                    reason,
                });
            }
            counters.emit(DocSkipped {
                doc_id: "a",
                reason: SkipReason::Unchanged,
            });
            counters.emit(DocFiltered {
                doc_id: "b",
                reason: FilterReason::TooShort,
            });
            counters.emit(DocDeleted { doc_id: "c" });
        });
        let snap = recorder.0.snapshot();
        assert_eq!(docs(&snap, "superseded"), 2);
        assert_eq!(Counters::get(&counters.docs_superseded), 2);
        assert_eq!(docs(&snap, "unchanged"), 1);
        assert_eq!(Counters::get(&counters.docs_unchanged), 1);
        assert_eq!(docs(&snap, "too_short"), 1);
        assert_eq!(Counters::get(&counters.docs_too_short), 1);
        assert_eq!(docs(&snap, "deleted"), 1);
        assert_eq!(Counters::get(&counters.docs_deleted), 1);
        assert_eq!(docs(&snap, "low_quality"), 0);
    }

    #[test]
    fn letter_classes_keep_their_record_values() {
        assert_eq!(LetterClass::Error(ErrorClass::Timeout).as_str(), "timeout");
        assert_eq!(
            LetterClass::Filtered(FilterReason::LowQuality).as_str(),
            "quality"
        );
        assert_eq!(
            LetterClass::Filtered(FilterReason::TooShort).as_str(),
            "too_short"
        );
        assert_eq!(LetterClass::Panic.as_str(), "panic");
    }
}
