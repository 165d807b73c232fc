//! Every metric name and label in one place.
//!
//! Conventions: a `freshet_` prefix, `_total` on counters, `_seconds` on
//! durations; every error counter carries `stage` and `error_type`. The label
//! values are listed in each metric's help text, which [`describe`] registers
//! so that `/metrics` documents itself.
//!
//! [`install`] sets the process-wide Prometheus recorder once; later calls
//! return the same handle, so tests that start several components in one
//! process share it.

use std::sync::OnceLock;

pub use ::metrics::{counter, gauge, histogram};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Labels: `stage` (search, extract, transform, embed, index, source).
pub const STAGE_REQUESTS_TOTAL: &str = "freshet_stage_requests_total";
/// Labels: `stage`, `outcome` (ok, error).
pub const STAGE_LATENCY_SECONDS: &str = "freshet_stage_latency_seconds";
/// Labels: `stage`, `error_type` (see [`crate::dataplane::retry::ErrorClass`]).
pub const STAGE_ERRORS_TOTAL: &str = "freshet_stage_errors_total";
/// Labels: `stage`, `error_type`.
pub const STAGE_RETRIES_TOTAL: &str = "freshet_stage_retries_total";
/// Labels: `stage`.
pub const STAGE_IN_FLIGHT: &str = "freshet_stage_in_flight";
/// Labels: `stage`.
pub const STAGE_SLOTS: &str = "freshet_stage_slots";
/// Labels: `stage`.
pub const STAGE_QUEUE_DEPTH: &str = "freshet_stage_queue_depth";
/// Labels: `stage`.
pub const STAGE_BACKPRESSURE_SECONDS_TOTAL: &str = "freshet_stage_backpressure_seconds_total";
/// Labels: `provider`, `endpoint` (search, render).
pub const CREDITS_TOTAL: &str = "freshet_credits_total";
/// Labels: `render_mode` (http, remote).
pub const EXTRACT_QUALITY: &str = "freshet_extract_quality";
/// Labels: `render_mode`, `method` (readability, trafilatura, remote).
pub const EXTRACT_PAGES_TOTAL: &str = "freshet_extract_pages_total";
/// No labels.
pub const EXTRACT_BYTES_TOTAL: &str = "freshet_extract_bytes_total";
/// Labels: `stage`, `error_type`.
pub const DLQ_RECORDS_TOTAL: &str = "freshet_dlq_records_total";
/// Labels: `type` (keyword, url, document, delete, invalid).
pub const TASKS_TOTAL: &str = "freshet_tasks_total";
/// Labels: `outcome` (chunked, low_quality, too_short, duplicate, unchanged, superseded, deleted).
pub const DOCS_TOTAL: &str = "freshet_docs_total";
/// No labels. Chunks upserted into the index (all passed the quality bar).
pub const CHUNKS_INDEXED_TOTAL: &str = "freshet_chunks_indexed_total";
/// No labels. Event time (or receive time) to upsert acknowledged, per chunk.
pub const FRESHNESS_SECONDS: &str = "freshet_freshness_seconds";
/// No labels.
pub const KNOBS_VERSION: &str = "freshet_knobs_version";

/// Bucket bounds for latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("latency buckets are not empty");
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is already global (an embedding program's):
                // keep ours private so rendering still works.
                Err(_) => PrometheusBuilder::new()
                    .set_buckets(LATENCY_BUCKETS)
                    .expect("latency buckets are not empty")
                    .build_recorder()
                    .handle(),
            };
            describe();
            handle
        })
        .clone()
}

/// Registers help text and units for every metric.
pub fn describe() {
    describe_counter!(
        STAGE_REQUESTS_TOTAL,
        "Units of work started per stage. stage: search|extract|transform|embed|index|source"
    );
    describe_histogram!(
        STAGE_LATENCY_SECONDS,
        Unit::Seconds,
        "Latency of one unit of work including retries. stage: search|extract|transform|embed|index; outcome: ok|error"
    );
    describe_counter!(
        STAGE_ERRORS_TOTAL,
        "Failed units of work. stage: search|extract|…; error_type: timeout|rate_limited|upstream|connect|reset|too_large|redirect|decode|not_html|no_content|auth|not_found|client|parse|invalid"
    );
    describe_counter!(
        STAGE_RETRIES_TOTAL,
        "Retried attempts. stage: search|extract|embed|index; error_type as for freshet_stage_errors_total"
    );
    describe_gauge!(
        STAGE_IN_FLIGHT,
        "Units of work running now. stage: search|extract|…"
    );
    describe_gauge!(
        STAGE_SLOTS,
        "Concurrency limit (the <stage>.slots knob). stage: search|extract|embed|index"
    );
    describe_gauge!(
        STAGE_QUEUE_DEPTH,
        "Items waiting in the stage's input channel. stage: …"
    );
    describe_counter!(
        STAGE_BACKPRESSURE_SECONDS_TOTAL,
        Unit::Seconds,
        "Time a stage spent waiting to hand items to a full downstream channel. stage: …"
    );
    describe_counter!(
        CREDITS_TOTAL,
        "Provider credits spent. provider: serppost; endpoint: search|render"
    );
    describe_histogram!(
        EXTRACT_QUALITY,
        "Extraction quality score in [0, 1] per page. render_mode: http|remote"
    );
    describe_counter!(
        EXTRACT_PAGES_TOTAL,
        "Pages extracted. render_mode: http|remote; method: readability|trafilatura|remote"
    );
    describe_counter!(EXTRACT_BYTES_TOTAL, Unit::Bytes, "Page bytes fetched.");
    describe_gauge!(KNOBS_VERSION, "Version of the knob snapshot in force.");
    describe_counter!(DLQ_RECORDS_TOTAL, "Dead letters written. stage: source|search|extract|transform|embed|index; error_type as for freshet_stage_errors_total");
    describe_counter!(
        TASKS_TOTAL,
        "Source tasks received. type: keyword|url|document|delete|invalid"
    );
    describe_counter!(DOCS_TOTAL, "Documents through the transform. outcome: chunked|low_quality|too_short|duplicate|unchanged|superseded|deleted");
    describe_counter!(
        CHUNKS_INDEXED_TOTAL,
        "Chunks upserted into the index; all passed the quality bar, so their rate is goodput."
    );
    describe_histogram!(
        FRESHNESS_SECONDS,
        Unit::Seconds,
        "Event time (or receive time) to acknowledged upsert, per chunk."
    );
}

/// Counts and logs one failed unit of work; the log is rate limited per
/// (stage, error type) to one line per second so an error storm cannot flood it.
pub fn record_error(
    stage: &'static str,
    error_type: &'static str,
    message: &dyn std::fmt::Display,
) {
    metrics::counter!(STAGE_ERRORS_TOTAL, "stage" => stage, "error_type" => error_type)
        .increment(1);
    if log_allowed(stage, error_type) {
        tracing::warn!(stage, error_type, "{message}");
    }
}

fn log_allowed(stage: &'static str, error_type: &'static str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static LAST: OnceLock<Mutex<HashMap<(&'static str, &'static str), Instant>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match last.get(&(stage, error_type)) {
        Some(t) if now.duration_since(*t) < Duration::from_secs(1) => false,
        _ => {
            last.insert((stage, error_type), now);
            true
        }
    }
}

/// Counts one unit of work in `freshet_stage_in_flight` while it lives, so a
/// cancelled future cannot leave the gauge too high.
#[derive(Debug)]
pub struct InFlight(&'static str);

impl InFlight {
    /// Starts counting for `stage`.
    pub fn new(stage: &'static str) -> InFlight {
        metrics::gauge!(STAGE_IN_FLIGHT, "stage" => stage).increment(1.0);
        InFlight(stage)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(STAGE_IN_FLIGHT, "stage" => self.0).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rendered_metrics_carry_names_and_labels() {
        let handle = super::install();
        super::record_error("extract", "timeout", &"test");
        metrics::histogram!(super::STAGE_LATENCY_SECONDS, "stage" => "extract", "outcome" => "ok")
            .record(0.02);
        let text = handle.render();
        assert!(
            text.contains("freshet_stage_errors_total{stage=\"extract\",error_type=\"timeout\"}"),
            "{text}"
        );
        assert!(
            text.contains("freshet_stage_latency_seconds_bucket"),
            "{text}"
        );
    }
}
