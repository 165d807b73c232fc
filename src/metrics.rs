//! Every metric name and label in one place.
//!
//! Conventions: a `freshet_` prefix, `_total` on counters, `_seconds` on
//! durations; every error counter carries `stage` and `error_type`. The label
//! values are listed in each metric's help text, which [`describe`] registers
//! so that `/metrics` documents itself.
//!
//! [`install`] sets the process-wide recorder once; later calls return the
//! same handle, so tests that start several components in one process share
//! it. The recorder is a tee: every update goes to the Prometheus exporter
//! (for `/metrics`) and to the [`Tap`], an in-process copy of the same
//! counters, gauges and histograms that the controller's observer reads
//! ([`tap`], [`TapSnapshot`]). One instrumentation, two readers: what the
//! controller decides on is exactly what an operator's dashboard shows.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

pub use ::metrics::{counter, gauge, histogram};
use metrics::{
    describe_counter, describe_gauge, describe_histogram, Counter, CounterFn, Gauge, GaugeFn,
    Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Labels: `stage` (search, extract, transform, embed, index, source).
pub const STAGE_REQUESTS_TOTAL: &str = "freshet_stage_requests_total";
/// Labels: `stage`, `outcome` (ok, error).
pub const STAGE_LATENCY_SECONDS: &str = "freshet_stage_latency_seconds";
/// Labels: `stage`, `error_type` (see [`crate::dataplane::retry::ErrorClass`]).
pub const STAGE_ERRORS_TOTAL: &str = "freshet_stage_errors_total";
/// Labels: `stage`, `error_type` (`panic`). Workers of a stage that
/// panicked; the stage kept serving and dead-lettered what they held.
pub const STAGE_PANICS_TOTAL: &str = "freshet_stage_panics_total";
/// Labels: `stage`, `error_type`.
pub const STAGE_RETRIES_TOTAL: &str = "freshet_stage_retries_total";
/// Labels: `stage`.
pub const STAGE_IN_FLIGHT: &str = "freshet_stage_in_flight";
/// Labels: `stage`.
pub const STAGE_SLOTS: &str = "freshet_stage_slots";
/// Labels: `stage`.
pub const STAGE_QUEUE_DEPTH: &str = "freshet_stage_queue_depth";
/// Histogram, labels: `stage`. One value per wait to hand items to a full
/// downstream channel; its `_sum` is the time blocked (the share of a
/// window is `rate(_sum)`), in seconds as Prometheus' base unit.
pub const STAGE_BACKPRESSURE_SECONDS: &str = "freshet_stage_backpressure_seconds";
/// Labels: `provider`, `endpoint` (search, render).
pub const CREDITS_TOTAL: &str = "freshet_credits_total";
/// Labels: `render_mode` (http, remote).
pub const EXTRACT_QUALITY: &str = "freshet_extract_quality";
/// Labels: `render_mode`, `method` (readability, trafilatura, remote).
pub const EXTRACT_PAGES_TOTAL: &str = "freshet_extract_pages_total";
/// No labels.
pub const EXTRACT_BYTES_TOTAL: &str = "freshet_extract_bytes_total";
/// No labels. Headless browser processes launched (restarts included).
pub const BROWSER_LAUNCHES_TOTAL: &str = "freshet_browser_launches_total";
/// No labels. Seconds per page in the headless browser (tab open to close).
pub const BROWSER_RENDER_SECONDS: &str = "freshet_browser_render_seconds";
/// Labels: `target` (browser, remote), `outcome` (improved, not_improved,
/// failed). Pages `auto` mode fetched again with its escalation target.
pub const EXTRACT_ESCALATIONS_TOTAL: &str = "freshet_extract_escalations_total";
/// Counter: outbound fetches refused by the address guard; labels `stage`
/// (extract) and `rule` (loopback, link_local, private, cgnat, unspecified, multicast, broadcast,
/// reserved, benchmark, documentation, unique_local, site_local, scheme, no_host).
pub const FETCH_BLOCKED_TOTAL: &str = "freshet_fetch_blocked_total";
/// Gauge: 1 while the stage's upstream circuit is open (its work held);
/// label `stage` (search, embed, index).
pub const CIRCUIT_OPEN: &str = "freshet_circuit_open";
/// Counter: times a stage's upstream circuit opened; label `stage`.
pub const CIRCUIT_OPENED_TOTAL: &str = "freshet_circuit_opened_total";
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
/// Labels: `domain` (the first [`MAX_DOMAIN_LABELS`] domains seen, then
/// `other`), `render_mode`. Extraction quality per page, for render
/// escalation per domain.
pub const EXTRACT_DOMAIN_QUALITY: &str = "freshet_extract_domain_quality";
/// Labels: `policy`, `outcome` (applied, rejected, rolled_back, committed,
/// ineffective, policy_error, shadow).
pub const CONTROLLER_DECISIONS_TOTAL: &str = "freshet_controller_decisions_total";
/// No labels. Time one decision took (observe, judge, propose, guard, apply).
pub const CONTROLLER_DECISION_SECONDS: &str = "freshet_controller_decision_seconds";

/// Labels: `topic`, `partition`. Messages behind the partition's end (Kafka).
pub const SOURCE_LAG: &str = "freshet_source_lag";
/// Labels: `topic`, `partition`. 1 while this instance holds the partition.
pub const SOURCE_PARTITION_ASSIGNED: &str = "freshet_source_partition_assigned";
/// No labels. 1 while this instance runs the controller (scale-out leadership).
pub const CONTROLLER_LEADER: &str = "freshet_controller_leader";
/// No labels. 1 while an operator has the controller paused.
pub const CONTROLLER_PAUSED: &str = "freshet_controller_paused";
/// No labels. Controller changes rolled back one after another since the
/// last one it kept (committed or ineffective); 0 after a kept change.
pub const CONTROLLER_ROLLBACKS_IN_A_ROW: &str = "freshet_controller_rollbacks_in_a_row";
/// No labels. 1 while the audit log's hash chain verifies (checked when the
/// service opens the log, then every minute), 0 once it does not (the
/// service still runs; the operator must look).
pub const AUDIT_VERIFY_OK: &str = "freshet_audit_verify_ok";

/// Distinct `domain` label values before the rest are folded into `other`,
/// so a crawl of a million sites cannot blow up the metric's cardinality.
pub const MAX_DOMAIN_LABELS: usize = 64;

/// The `domain` label for `host`: itself while fewer than
/// [`MAX_DOMAIN_LABELS`] domains have been seen, `other` afterwards.
pub fn domain_label(host: &str) -> SharedString {
    static SEEN: OnceLock<RwLock<std::collections::HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if seen
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .contains(host)
    {
        return SharedString::from(host.to_string());
    }
    let mut w = seen.write().unwrap_or_else(|p| p.into_inner());
    if w.len() < MAX_DOMAIN_LABELS || w.contains(host) {
        w.insert(host.to_string());
        SharedString::from(host.to_string())
    } else {
        SharedString::const_str("other")
    }
}

/// Bucket bounds for latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds for [`FRESHNESS_SECONDS`], in seconds: event to index
/// spans milliseconds (a document pushed to an idle pipeline) to hours (a
/// backlog), and an alert on "p99 above five minutes" needs buckets past
/// it (`histogram_quantile` cannot see beyond the last finite bound).
const FRESHNESS_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0, 21600.0, 86400.0,
];

static TAP: OnceLock<Arc<Tap>> = OnceLock::new();

/// Installs the recorder (once per process) and returns the Prometheus handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let prometheus = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("latency buckets are not empty")
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(FRESHNESS_SECONDS.into()),
                    FRESHNESS_BUCKETS,
                )
                .expect("freshness buckets are not empty")
                .build_recorder();
            let handle = prometheus.handle();
            let tap = TAP.get_or_init(Default::default).clone();
            // When another recorder is already global (an embedding
            // program's), ours stays private: rendering still works but
            // nothing is recorded, and the observer sees an idle pipeline.
            if metrics::set_global_recorder(Tee { prometheus, tap }).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

/// The in-process copy of every metric (installs the recorder if needed).
pub fn tap() -> Arc<Tap> {
    install();
    TAP.get_or_init(Default::default).clone()
}

/// Sends every update to Prometheus and to the [`Tap`].
struct Tee {
    prometheus: PrometheusRecorder,
    tap: Arc<Tap>,
}

struct TeeCounter(Counter, Arc<TapCounter>);
struct TeeGauge(Gauge, Arc<TapGauge>);
struct TeeHistogram(Histogram, Arc<TapHistogram>);

impl CounterFn for TeeCounter {
    fn increment(&self, value: u64) {
        self.0.increment(value);
        self.1.increment(value);
    }
    fn absolute(&self, value: u64) {
        self.0.absolute(value);
        self.1.absolute(value);
    }
}

impl GaugeFn for TeeGauge {
    fn increment(&self, value: f64) {
        self.0.increment(value);
        GaugeFn::increment(&*self.1, value);
    }
    fn decrement(&self, value: f64) {
        self.0.decrement(value);
        GaugeFn::decrement(&*self.1, value);
    }
    fn set(&self, value: f64) {
        self.0.set(value);
        GaugeFn::set(&*self.1, value);
    }
}

impl HistogramFn for TeeHistogram {
    fn record(&self, value: f64) {
        self.0.record(value);
        HistogramFn::record(&*self.1, value);
    }
}

impl Recorder for Tee {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_histogram(key, unit, description)
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(TeeCounter(
            self.prometheus.register_counter(key, metadata),
            self.tap.entry(&self.tap.counters, key),
        )))
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(TeeGauge(
            self.prometheus.register_gauge(key, metadata),
            self.tap.entry(&self.tap.gauges, key),
        )))
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(TeeHistogram(
            self.prometheus.register_histogram(key, metadata),
            self.tap.entry(&self.tap.histograms, key),
        )))
    }
}

/// Every counter, gauge and histogram, readable in process. Counters and
/// histograms only grow; a reader takes two [`TapSnapshot`]s and subtracts.
#[derive(Default)]
pub struct Tap {
    counters: RwLock<HashMap<Key, Arc<TapCounter>>>,
    gauges: RwLock<HashMap<Key, Arc<TapGauge>>>,
    histograms: RwLock<HashMap<Key, Arc<TapHistogram>>>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct TapCounter(AtomicU64);

impl CounterFn for TapCounter {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for TapGauge {
    fn increment(&self, value: f64) {
        self.update(|g| g + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|g| g - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

impl HistogramFn for TapHistogram {
    fn record(&self, value: f64) {
        self.buckets[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        if value.is_finite() {
            self.sum.update(|s| s + value);
        }
    }
}

/// A [`Tap`] on its own as a recorder: tests use it with
/// `metrics::with_local_recorder` to observe updates made on one thread,
/// apart from the rest of the process.
#[derive(Debug, Clone, Default)]
pub struct TapRecorder(pub Arc<Tap>);

impl Recorder for TapRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.entry(&self.0.counters, key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.entry(&self.0.gauges, key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.0.entry(&self.0.histograms, key))
    }
}

/// An f64 in an AtomicU64's bits.
#[derive(Default)]
struct TapGauge(AtomicU64);

impl TapGauge {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Log-spaced buckets: bucket `i > 0` holds values in
/// `[LOW * GROWTH^(i-1), LOW * GROWTH^i)`; bucket 0 holds everything below
/// `LOW` (zeros included). A quantile read from them is within one bucket
/// width (±5 %) of the exact value.
const HIST_LOW: f64 = 1e-5;
const HIST_GROWTH: f64 = 1.1;
const HIST_BUCKETS: usize = 256;

/// A histogram with fixed log-spaced buckets plus count and sum.
struct TapHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum as f64 bits.
    sum: TapGauge,
}

impl Default for TapHistogram {
    fn default() -> Self {
        TapHistogram {
            buckets: (0..HIST_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: TapGauge::default(),
        }
    }
}

fn bucket_of(value: f64) -> usize {
    if value.is_nan() || value < HIST_LOW {
        return 0;
    }
    let i = ((value / HIST_LOW).ln() / HIST_GROWTH.ln()).floor() as usize + 1;
    i.min(HIST_BUCKETS - 1)
}

/// The middle of a bucket (in log space), the value a quantile reports.
fn bucket_value(i: usize) -> f64 {
    if i == 0 {
        return 0.0;
    }
    HIST_LOW * HIST_GROWTH.powf(i as f64 - 0.5)
}

impl Tap {
    fn entry<T: Default>(&self, map: &RwLock<HashMap<Key, Arc<T>>>, key: &Key) -> Arc<T> {
        if let Some(found) = map.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return found.clone();
        }
        map.write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// A copy of every value now.
    pub fn snapshot(&self) -> TapSnapshot {
        let labels = |key: &Key| -> Labels {
            key.labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect()
        };
        let mut snap = TapSnapshot::default();
        for (key, c) in self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            snap.counters.insert(
                (key.name().to_string(), labels(key)),
                c.0.load(Ordering::Relaxed),
            );
        }
        for (key, g) in self.gauges.read().unwrap_or_else(|p| p.into_inner()).iter() {
            snap.gauges
                .insert((key.name().to_string(), labels(key)), g.get());
        }
        for (key, h) in self
            .histograms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            snap.histograms.insert(
                (key.name().to_string(), labels(key)),
                HistogramData {
                    buckets: h
                        .buckets
                        .iter()
                        .map(|b| b.load(Ordering::Relaxed))
                        .collect(),
                    count: h.count.load(Ordering::Relaxed),
                    sum: h.sum.get(),
                },
            );
        }
        snap
    }
}

/// Label pairs of one series, sorted by label name.
pub type Labels = BTreeMap<String, String>;

/// A point-in-time copy of the [`Tap`], keyed by (metric name, labels).
#[derive(Debug, Clone, Default)]
pub struct TapSnapshot {
    /// Counter values.
    pub counters: BTreeMap<(String, Labels), u64>,
    /// Gauge values.
    pub gauges: BTreeMap<(String, Labels), f64>,
    /// Histogram contents.
    pub histograms: BTreeMap<(String, Labels), HistogramData>,
}

/// One histogram's buckets, count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramData {
    buckets: Vec<u64>,
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl HistogramData {
    /// What was recorded since `earlier` (a snapshot of the same series).
    pub fn since(&self, earlier: Option<&HistogramData>) -> HistogramData {
        let Some(e) = earlier else {
            return self.clone();
        };
        HistogramData {
            buckets: self
                .buckets
                .iter()
                .zip(e.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            count: self.count.saturating_sub(e.count),
            sum: self.sum - e.sum,
        }
    }

    /// Adds another series' contents (to merge label sets).
    pub fn merge(&mut self, other: &HistogramData) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// The mean, if anything was recorded.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// The `q` quantile (0..=1), if anything was recorded.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_value(i));
            }
        }
        Some(bucket_value(self.buckets.len() - 1))
    }

    /// Standard deviation estimated from the buckets.
    pub fn std_dev(&self) -> Option<f64> {
        let mean = self.mean()?;
        let total: u64 = self.buckets.iter().sum();
        if total < 2 {
            return Some(0.0);
        }
        let var = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| *n as f64 * (bucket_value(i) - mean).powi(2))
            .sum::<f64>()
            / (total - 1) as f64;
        Some(var.sqrt())
    }

    /// Values below `threshold` (bucket resolution).
    pub fn count_below(&self, threshold: f64) -> u64 {
        let limit = bucket_of(threshold);
        self.buckets.iter().take(limit).sum()
    }
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
        "Failed units of work. stage: search|extract|…; error_type: timeout|rate_limited|upstream|connect|reset|too_large|redirect|decode|not_html|no_content|auth|not_found|client|parse|invalid|blocked"
    );
    describe_counter!(
        FETCH_BLOCKED_TOTAL,
        "Outbound fetches refused by the address guard (each also an error of type blocked). stage: extract; rule: loopback|link_local|private|cgnat|unspecified|multicast|broadcast|reserved|benchmark|documentation|unique_local|site_local|scheme|no_host"
    );
    describe_gauge!(
        CIRCUIT_OPEN,
        "1 while the stage's upstream is failing and its work is held instead of dead-lettered. stage: search|embed|index"
    );
    describe_counter!(
        CIRCUIT_OPENED_TOTAL,
        "Times a stage's upstream circuit opened. stage: search|embed|index"
    );
    describe_counter!(
        STAGE_RETRIES_TOTAL,
        "Retried attempts. stage: search|extract|embed|index; error_type as for freshet_stage_errors_total"
    );
    describe_counter!(
        STAGE_PANICS_TOTAL,
        "Stage workers that panicked (the stage keeps serving; their items are dead-lettered). stage: search|extract|embed|index; error_type: panic"
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
    describe_histogram!(
        STAGE_BACKPRESSURE_SECONDS,
        Unit::Seconds,
        "Waits of a stage to hand items to a full downstream channel; rate(_sum) is the share of time blocked. stage: …"
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
    describe_counter!(
        BROWSER_LAUNCHES_TOTAL,
        "Headless browser processes launched (restarts included)."
    );
    describe_histogram!(
        BROWSER_RENDER_SECONDS,
        Unit::Seconds,
        "Seconds per page in the headless browser, tab open to close."
    );
    describe_counter!(
        EXTRACT_ESCALATIONS_TOTAL,
        "Pages the auto render mode fetched again with its escalation target, by target and outcome."
    );
    describe_gauge!(KNOBS_VERSION, "Version of the knob snapshot in force.");
    describe_histogram!(
        EXTRACT_DOMAIN_QUALITY,
        "Extraction quality per page by domain (the first 64 domains seen; the rest as `other`). render_mode: http|remote"
    );
    describe_gauge!(
        SOURCE_LAG,
        "Consumer lag in messages per partition (Kafka source). topic, partition"
    );
    describe_counter!(
        CONTROLLER_DECISIONS_TOTAL,
        "Controller decisions. policy: heuristic|llm|…; outcome: applied|rejected|rolled_back|committed|ineffective|policy_error|shadow|none"
    );
    describe_histogram!(
        CONTROLLER_DECISION_SECONDS,
        Unit::Seconds,
        "Time one control decision took: observe, judge, propose, guard, apply."
    );
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
    describe_gauge!(
        SOURCE_PARTITION_ASSIGNED,
        "1 while this instance consumes the partition, 0 after it was revoked. topic; partition"
    );
    describe_gauge!(
        CONTROLLER_LEADER,
        "1 while this instance runs the controller (holds partition 0 of the control topic's group)."
    );
    describe_gauge!(
        CONTROLLER_PAUSED,
        "1 while an operator has the controller paused, else 0."
    );
    describe_gauge!(
        CONTROLLER_ROLLBACKS_IN_A_ROW,
        "Controller changes rolled back one after another since the last one kept (committed or ineffective)."
    );
    describe_gauge!(
        AUDIT_VERIFY_OK,
        "1 while the audit log's hash chain verifies (checked at start, then every minute), 0 once it does not."
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

/// Whether a log line for (`stage`, `error_type`) may be written now: at
/// most one per second per pair.
pub fn log_allowed(stage: &'static str, error_type: &'static str) -> bool {
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

    #[test]
    fn freshness_has_buckets_past_the_alert_threshold() {
        let handle = super::install();
        metrics::histogram!(super::FRESHNESS_SECONDS).record(400.0);
        let text = handle.render();
        // deploy/prometheus alerts on p99 above 300 s: the bounds around it
        // must exist, or histogram_quantile stops at the last finite one.
        for le in ["300", "600", "86400"] {
            assert!(
                text.contains(&format!("freshet_freshness_seconds_bucket{{le=\"{le}\"}}")),
                "{text}"
            );
        }
    }

    #[test]
    fn the_tap_sees_what_prometheus_renders() {
        let handle = super::install();
        let tap = super::tap();
        let before = tap.snapshot();
        metrics::counter!(super::STAGE_REQUESTS_TOTAL, "stage" => "tap-test").increment(3);
        for ms in [10.0, 20.0, 30.0, 40.0, 1000.0] {
            metrics::histogram!(super::STAGE_LATENCY_SECONDS, "stage" => "tap-test", "outcome" => "ok")
                .record(ms / 1e3);
        }
        metrics::gauge!(super::STAGE_SLOTS, "stage" => "tap-test").set(7.0);
        let after = tap.snapshot();
        let key = |name: &str, extra: &[(&str, &str)]| {
            let mut l: super::Labels = [("stage".to_string(), "tap-test".to_string())].into();
            for (k, v) in extra {
                l.insert(k.to_string(), v.to_string());
            }
            (name.to_string(), l)
        };
        let k = key(super::STAGE_REQUESTS_TOTAL, &[]);
        assert_eq!(
            after.counters[&k] - before.counters.get(&k).copied().unwrap_or(0),
            3
        );
        assert_eq!(after.gauges[&key(super::STAGE_SLOTS, &[])], 7.0);
        let hk = key(super::STAGE_LATENCY_SECONDS, &[("outcome", "ok")]);
        let h = after.histograms[&hk].since(before.histograms.get(&hk));
        assert_eq!(h.count, 5);
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.030).abs() < 0.030 * 0.06, "p50 {p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 - 1.0).abs() < 0.06, "p99 {p99}");
        assert!((h.mean().unwrap() - 0.22).abs() < 1e-9);
        assert_eq!(h.count_below(0.025), 2);
        assert!(handle
            .render()
            .contains("freshet_stage_requests_total{stage=\"tap-test\"} 3"));
    }
}
