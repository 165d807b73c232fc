//! Observe: windowed statistics for the controller (docs/ARCHITECTURE.md §4, step 1).
//!
//! The observer reads the same instrumentation that feeds `/metrics`: the
//! process-wide recorder tees every update into [`crate::metrics::Tap`], and
//! an [`Observation`] is the difference between two tap snapshots, one at
//! the start of the window and one at its end. Counters become rates,
//! histograms become the window's own percentiles (not the process
//! lifetime's), and gauges, which only say "now", are sampled several times
//! per window by [`Observer::sample`] and averaged, so a stage that was busy
//! for most of the window does not look idle because it was idle at the
//! instant the window closed.
//!
//! An [`Observation`] is a plain serializable struct: it goes into the LLM
//! policy's prompt and, summarized, into every audit record. It holds numbers
//! and sanitized names (stage names, render modes, host names) only; page
//! content never reaches it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::dataplane::retry::ErrorClass;
use crate::dataplane::Stage;
use crate::live::LiveConfig;
use crate::metrics::{self, HistogramData, Labels, Tap, TapSnapshot};

/// The stages the observer reports on, in pipeline order.
pub const STAGES: [Stage; 5] = [
    Stage::Search,
    Stage::Extract,
    Stage::Transform,
    Stage::Embed,
    Stage::Index,
];

/// Stages whose concurrency is a `<stage>.slots` knob.
pub const SLOTTED: [Stage; 4] = [Stage::Search, Stage::Extract, Stage::Embed, Stage::Index];

/// Most domains listed in [`Quality::domains`].
pub const MAX_DOMAINS: usize = 32;

/// Error classes that say the *service* is struggling (overload, outages),
/// as opposed to the *content* (a JavaScript shell, a PDF, a 404). Only these
/// count towards [`StageStats::error_rate`]; the rest are
/// [`StageStats::content_failure_rate`].
pub const OPERATIONAL_CLASSES: [ErrorClass; 6] = [
    ErrorClass::Timeout,
    ErrorClass::RateLimited,
    ErrorClass::Upstream,
    ErrorClass::Connect,
    ErrorClass::Reset,
    ErrorClass::Auth,
];

/// One stage over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    /// Units of work finished per second (ok or failed).
    pub throughput: f64,
    /// Operational failures (see [`OPERATIONAL_CLASSES`]) per finished unit.
    pub error_rate: f64,
    /// Content failures (no content, not HTML, …) per finished unit.
    pub content_failure_rate: f64,
    /// Failures by error class (counts in the window).
    pub errors: BTreeMap<String, u64>,
    /// Retried attempts per finished unit.
    pub retry_rate: f64,
    /// Retries by error class (counts in the window).
    pub retries: BTreeMap<String, u64>,
    /// Latency percentiles and moments in seconds (None: nothing finished).
    pub latency_p50_s: Option<f64>,
    /// 95th percentile.
    pub latency_p95_s: Option<f64>,
    /// 99th percentile.
    pub latency_p99_s: Option<f64>,
    /// Mean.
    pub latency_mean_s: Option<f64>,
    /// Standard deviation.
    pub latency_sd_s: Option<f64>,
    /// The slot limit (the knob; 0 for stages without slots).
    pub slots: f64,
    /// Mean units in flight over the window's samples.
    pub in_flight: f64,
    /// `in_flight / slots` (0 for stages without slots).
    pub saturation: f64,
    /// Mean items waiting in the stage's input channel.
    pub queue_depth: f64,
    /// Share of the window this stage spent blocked on a full downstream channel.
    pub backpressure: f64,
}

/// Extraction quality of one render mode or one domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityStats {
    /// Pages scored in the window.
    pub pages: u64,
    /// Mean score in [0, 1].
    pub mean: f64,
    /// Share of pages below `transform.min_quality` (they yield no chunks).
    pub low_share: f64,
}

/// Quality of one domain under one render mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainQuality {
    /// Host name (or `other` past the metric's cardinality cap).
    pub domain: String,
    /// `http` or `remote`.
    pub render_mode: String,
    /// The figures.
    #[serde(flatten)]
    pub stats: QualityStats,
}

/// Extraction quality over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// All pages.
    pub overall: QualityStats,
    /// By render mode.
    pub by_mode: BTreeMap<String, QualityStats>,
    /// The domains with the most pages (at most [`MAX_DOMAINS`]).
    pub domains: Vec<DomainQuality>,
}

/// What the data plane did over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Unix milliseconds at the end of the window.
    pub at_ms: u64,
    /// Window length in seconds.
    pub window_s: f64,
    /// Knob version in force at the end of the window.
    pub knobs_version: u64,
    /// Source tasks received per second.
    pub tasks_per_s: f64,
    /// Per stage (see [`STAGES`]).
    pub stages: BTreeMap<String, StageStats>,
    /// Operational failures per finished unit over the network stages.
    pub error_rate: f64,
    /// Chunks indexed per second (every indexed chunk passed the quality bar).
    pub goodput: f64,
    /// Chunks indexed in the window.
    pub chunks_indexed: u64,
    /// Documents through the transform by outcome (counts).
    pub docs: BTreeMap<String, u64>,
    /// Dead letters per second.
    pub dead_letters_per_s: f64,
    /// Event to searchable, seconds.
    pub freshness_p50_s: Option<f64>,
    /// 99th percentile.
    pub freshness_p99_s: Option<f64>,
    /// Provider credits spent per minute.
    pub credits_per_min: f64,
    /// Credits per indexed chunk (None when nothing was indexed).
    pub credits_per_chunk: Option<f64>,
    /// Extraction quality.
    pub quality: Quality,
    /// Messages behind the source's end (Kafka; None for the embedded source).
    pub source_lag: Option<f64>,
    /// Stages whose upstream was down (circuit open) at some point of the
    /// window: their work was held, so their figures say nothing about
    /// their knobs, and the controller changes none of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

impl StageStats {
    /// Failed plus retried units of error `class` in the window.
    pub fn class_count(&self, class: ErrorClass) -> u64 {
        let class = class.as_str();
        self.errors.get(class).copied().unwrap_or(0) + self.retries.get(class).copied().unwrap_or(0)
    }

    /// Share of this stage's finished units that the upstream refused
    /// (`rate_limited` errors and retries) in a window of `window_s`.
    pub fn refused_share(&self, window_s: f64) -> f64 {
        self.per_finished(self.class_count(ErrorClass::RateLimited), window_s)
    }

    /// `n` units per unit finished in a window of `window_s` (1 when `n`
    /// is not zero and nothing finished: everything tried went wrong).
    pub fn per_finished(&self, n: u64, window_s: f64) -> f64 {
        let finished = self.throughput.max(0.0) * window_s;
        if finished <= 0.0 {
            return if n > 0 { 1.0 } else { 0.0 };
        }
        n as f64 / finished
    }
}

impl Observation {
    /// The figures of `stage` (zeros when it did nothing).
    pub fn stage(&self, stage: &str) -> StageStats {
        self.stages.get(stage).cloned().unwrap_or_default()
    }

    /// The first stage whose upstream refused more than `share` of its
    /// units in this window, with that share.
    pub fn refused_stage(&self, share: f64) -> Option<(&str, f64)> {
        let window = self.window_s.max(1e-3);
        self.stages
            .iter()
            .map(|(name, s)| (name.as_str(), s.refused_share(window)))
            .find(|(_, r)| *r > share)
    }

    /// A short summary for audit records.
    pub fn summary(&self) -> serde_json::Value {
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        let stages: serde_json::Map<String, serde_json::Value> = self
            .stages
            .iter()
            .filter(|(_, s)| s.throughput > 0.0 || s.slots > 0.0)
            .map(|(name, s)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "throughput": r3(s.throughput),
                        "error_rate": r3(s.error_rate),
                        "p50_s": s.latency_p50_s.map(r3),
                        "p99_s": s.latency_p99_s.map(r3),
                        "saturation": r3(s.saturation),
                        "queue": r3(s.queue_depth),
                        "slots": s.slots,
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "window_s": r3(self.window_s),
            "knobs_version": self.knobs_version,
            "goodput": r3(self.goodput),
            "error_rate": r3(self.error_rate),
            "quality": r3(self.quality.overall.mean),
            "freshness_p99_s": self.freshness_p99_s.map(r3),
            "credits_per_min": r3(self.credits_per_min),
            "stages": stages,
            "held": self.held,
        })
    }
}

#[derive(Debug, Default, Clone)]
struct GaugeSums {
    samples: u64,
    in_flight: BTreeMap<String, f64>,
    queue: BTreeMap<String, f64>,
    lag: Option<f64>,
    /// Stages whose circuit was open in a sample.
    held: std::collections::BTreeSet<String>,
}

/// Turns tap snapshots into [`Observation`]s, one per window.
#[derive(Debug)]
pub struct Observer {
    tap: Arc<Tap>,
    live: Arc<LiveConfig>,
    start: TapSnapshot,
    started: Instant,
    gauges: GaugeSums,
}

impl Observer {
    /// An observer of the process-wide metrics whose first window starts now.
    pub fn new(live: Arc<LiveConfig>) -> Observer {
        Observer::with_tap(live, metrics::tap())
    }

    /// An observer of `tap` (tests use a private one).
    pub fn with_tap(live: Arc<LiveConfig>, tap: Arc<Tap>) -> Observer {
        let start = tap.snapshot();
        Observer {
            tap,
            live,
            start,
            started: Instant::now(),
            gauges: GaugeSums::default(),
        }
    }

    /// Reads the gauges once (call several times per window).
    pub fn sample(&mut self) {
        let snap = self.tap.snapshot();
        self.sample_gauges(&snap);
    }

    fn sample_gauges(&mut self, snap: &TapSnapshot) {
        let g = &mut self.gauges;
        g.samples += 1;
        let mut lag = None;
        for ((name, labels), value) in &snap.gauges {
            let stage = labels.get("stage").cloned().unwrap_or_default();
            match name.as_str() {
                metrics::STAGE_IN_FLIGHT => {
                    *g.in_flight.entry(stage).or_default() += value.max(0.0);
                }
                metrics::STAGE_QUEUE_DEPTH => *g.queue.entry(stage).or_default() += value.max(0.0),
                metrics::SOURCE_LAG => *lag.get_or_insert(0.0) += value.max(0.0),
                metrics::CIRCUIT_OPEN if *value > 0.0 => {
                    g.held.insert(stage);
                }
                _ => {}
            }
        }
        if let Some(l) = lag {
            *g.lag.get_or_insert(0.0) += l;
        }
    }

    /// Closes the window: returns its observation and starts the next one.
    pub fn observe(&mut self) -> Observation {
        let end = self.tap.snapshot();
        self.sample_gauges(&end);
        let window_s = self.started.elapsed().as_secs_f64().max(1e-3);
        let gauges = std::mem::take(&mut self.gauges);
        let start = std::mem::replace(&mut self.start, end);
        self.started = Instant::now();
        let snapshot = self.live.load();
        build(
            &start,
            &self.start,
            &gauges,
            window_s,
            &snapshot.knobs,
            snapshot.version,
        )
    }
}

fn counter_delta(start: &TapSnapshot, end: &TapSnapshot, name: &str) -> Vec<(Labels, u64)> {
    end.counters
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|((n, l), v)| {
            let before = start
                .counters
                .get(&(n.clone(), l.clone()))
                .copied()
                .unwrap_or(0);
            (l.clone(), v.saturating_sub(before))
        })
        .collect()
}

fn histogram_delta(
    start: &TapSnapshot,
    end: &TapSnapshot,
    name: &str,
) -> Vec<(Labels, HistogramData)> {
    end.histograms
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|((n, l), h)| {
            (
                l.clone(),
                h.since(start.histograms.get(&(n.clone(), l.clone()))),
            )
        })
        .collect()
}

fn quality_of(h: &HistogramData, min_quality: f64) -> QualityStats {
    QualityStats {
        pages: h.count,
        mean: h.mean().unwrap_or(0.0),
        low_share: if h.count == 0 {
            0.0
        } else {
            h.count_below(min_quality) as f64 / h.count as f64
        },
    }
}

/// The per-stage metric rows of one window.
struct StageRows {
    errors: Vec<(Labels, u64)>,
    retries: Vec<(Labels, u64)>,
    backpressure: Vec<(Labels, HistogramData)>,
    latency: Vec<(Labels, HistogramData)>,
}

impl StageRows {
    fn between(start: &TapSnapshot, end: &TapSnapshot) -> StageRows {
        StageRows {
            errors: counter_delta(start, end, metrics::STAGE_ERRORS_TOTAL),
            retries: counter_delta(start, end, metrics::STAGE_RETRIES_TOTAL),
            backpressure: histogram_delta(start, end, metrics::STAGE_BACKPRESSURE_SECONDS),
            latency: histogram_delta(start, end, metrics::STAGE_LATENCY_SECONDS),
        }
    }
}

/// One stage's figures over the window, with its operational failures and
/// finished units (for the network stages' overall error rate).
fn stage_stats(
    stage: Stage,
    rows: &StageRows,
    gauges: &GaugeSums,
    window_s: f64,
    knobs: &crate::knobs::Knobs,
) -> (StageStats, u64, u64) {
    let name = stage.as_str();
    let samples = gauges.samples.max(1) as f64;
    let mut lat = HistogramData::default();
    for (l, h) in &rows.latency {
        if l.get("stage").map(String::as_str) == Some(name) {
            lat.merge(h);
        }
    }
    let by_class = |rows: &[(Labels, u64)]| -> BTreeMap<String, u64> {
        rows.iter()
            .filter(|(l, v)| l.get("stage").map(String::as_str) == Some(name) && *v > 0)
            .map(|(l, v)| (l.get("error_type").cloned().unwrap_or_default(), *v))
            .fold(BTreeMap::new(), |mut m, (k, v)| {
                *m.entry(k).or_default() += v;
                m
            })
    };
    let errs = by_class(&rows.errors);
    let tries = by_class(&rows.retries);
    let finished = lat.count;
    let op: u64 = errs
        .iter()
        .filter(|(c, _)| OPERATIONAL_CLASSES.iter().any(|o| o.as_str() == c.as_str()))
        .map(|(_, v)| v)
        .sum();
    let content: u64 = errs.values().sum::<u64>() - op;
    let per = |n: u64| {
        if finished == 0 {
            0.0
        } else {
            n as f64 / finished as f64
        }
    };
    let slots = knobs
        .stage_limits(stage)
        .map_or(0.0, |(slots, _)| slots as f64);
    let in_flight = gauges.in_flight.get(name).copied().unwrap_or(0.0) / samples;
    let stats = StageStats {
        throughput: finished as f64 / window_s,
        error_rate: per(op).min(1.0),
        content_failure_rate: per(content).min(1.0),
        retry_rate: per(tries.values().sum()),
        errors: errs,
        retries: tries,
        latency_p50_s: lat.quantile(0.5),
        latency_p95_s: lat.quantile(0.95),
        latency_p99_s: lat.quantile(0.99),
        latency_mean_s: lat.mean(),
        latency_sd_s: lat.std_dev(),
        slots,
        in_flight,
        saturation: if slots > 0.0 { in_flight / slots } else { 0.0 },
        queue_depth: gauges.queue.get(name).copied().unwrap_or(0.0) / samples,
        backpressure: (rows
            .backpressure
            .iter()
            .filter(|(l, _)| l.get("stage").map(String::as_str) == Some(name))
            .map(|(_, h)| h.sum)
            .sum::<f64>()
            / window_s)
            .clamp(0.0, 1.0),
    };
    (stats, op, finished)
}

/// Extraction quality over the window: overall, by mode, by domain.
fn quality(start: &TapSnapshot, end: &TapSnapshot, min_q: f64) -> Quality {
    let mut overall = HistogramData::default();
    let mut by_mode = BTreeMap::new();
    for (l, h) in histogram_delta(start, end, metrics::EXTRACT_QUALITY) {
        overall.merge(&h);
        let mode = l.get("render_mode").cloned().unwrap_or_default();
        by_mode
            .entry(mode)
            .or_insert_with(HistogramData::default)
            .merge(&h);
    }
    let mut domains: Vec<DomainQuality> =
        histogram_delta(start, end, metrics::EXTRACT_DOMAIN_QUALITY)
            .into_iter()
            .filter(|(_, h)| h.count > 0)
            .map(|(l, h)| DomainQuality {
                domain: l.get("domain").cloned().unwrap_or_default(),
                render_mode: l.get("render_mode").cloned().unwrap_or_default(),
                stats: quality_of(&h, min_q),
            })
            .collect();
    domains.sort_by(|a, b| {
        b.stats
            .pages
            .cmp(&a.stats.pages)
            .then_with(|| a.domain.cmp(&b.domain))
    });
    domains.truncate(MAX_DOMAINS);
    Quality {
        overall: quality_of(&overall, min_q),
        by_mode: by_mode
            .iter()
            .map(|(m, h)| (m.clone(), quality_of(h, min_q)))
            .collect(),
        domains,
    }
}

fn build(
    start: &TapSnapshot,
    end: &TapSnapshot,
    gauges: &GaugeSums,
    window_s: f64,
    knobs: &crate::knobs::Knobs,
    version: u64,
) -> Observation {
    let rows = StageRows::between(start, end);
    let samples = gauges.samples.max(1) as f64;
    let mut stages = BTreeMap::new();
    let (mut op_errors, mut finished_net) = (0u64, 0u64);
    for stage in STAGES {
        let (stats, op, finished) = stage_stats(stage, &rows, gauges, window_s, knobs);
        if stage != Stage::Transform {
            op_errors += op;
            finished_net += finished;
        }
        stages.insert(stage.as_str().to_string(), stats);
    }
    let total =
        |name: &str| -> u64 { counter_delta(start, end, name).iter().map(|(_, v)| v).sum() };
    let chunks = total(metrics::CHUNKS_INDEXED_TOTAL);
    let credits = total(metrics::CREDITS_TOTAL);
    let docs = counter_delta(start, end, metrics::DOCS_TOTAL)
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(l, v)| (l.get("outcome").cloned().unwrap_or_default(), v))
        .fold(BTreeMap::new(), |mut m: BTreeMap<String, u64>, (k, v)| {
            *m.entry(k).or_default() += v;
            m
        });
    let mut fresh = HistogramData::default();
    for (_, h) in histogram_delta(start, end, metrics::FRESHNESS_SECONDS) {
        fresh.merge(&h);
    }
    Observation {
        at_ms: crate::dataplane::task::now_ms(),
        window_s,
        knobs_version: version,
        tasks_per_s: total(metrics::TASKS_TOTAL) as f64 / window_s,
        stages,
        error_rate: if finished_net == 0 {
            0.0
        } else {
            (op_errors as f64 / finished_net as f64).min(1.0)
        },
        goodput: chunks as f64 / window_s,
        chunks_indexed: chunks,
        docs,
        dead_letters_per_s: total(metrics::DLQ_RECORDS_TOTAL) as f64 / window_s,
        freshness_p50_s: fresh.quantile(0.5),
        freshness_p99_s: fresh.quantile(0.99),
        credits_per_min: credits as f64 * 60.0 / window_s,
        credits_per_chunk: (chunks > 0).then(|| credits as f64 / chunks as f64),
        quality: quality(start, end, knobs.transform.min_quality),
        source_lag: gauges.lag.map(|l| l / samples),
        held: {
            // Open when sampled, or opened (and maybe closed) in between.
            let mut held = gauges.held.clone();
            for (labels, n) in counter_delta(start, end, metrics::CIRCUIT_OPENED_TOTAL) {
                if n > 0 {
                    held.insert(labels.get("stage").cloned().unwrap_or_default());
                }
            }
            held.into_iter().collect()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::Knobs;
    use crate::metrics;

    #[tokio::test]
    async fn a_window_reports_rates_percentiles_and_quality() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        // A private tap keeps this test apart from others in the process.
        let recorder = metrics::TapRecorder::default();
        let mut obs = Observer::with_tap(live, recorder.0.clone());
        ::metrics::with_local_recorder(&recorder, record);
        let o = obs.observe();
        check(&o);
        // The next window starts empty.
        let o2 = obs.observe();
        assert!(o2.quality.domains.is_empty());
        assert_eq!(o2.stage("search").throughput, 0.0);
    }

    fn record() {
        for i in 0..100 {
            let outcome = if i < 90 { "ok" } else { "error" };
            metrics::histogram!(metrics::STAGE_LATENCY_SECONDS, "stage" => "search", "outcome" => outcome)
                .record(0.1);
        }
        metrics::counter!(metrics::STAGE_ERRORS_TOTAL, "stage" => "search", "error_type" => "rate_limited")
            .increment(6);
        metrics::counter!(metrics::STAGE_ERRORS_TOTAL, "stage" => "search", "error_type" => "no_content")
            .increment(4);
        metrics::histogram!(metrics::EXTRACT_DOMAIN_QUALITY, "domain" => "observe-test.example", "render_mode" => "http")
            .record(0.1);
        metrics::histogram!(metrics::EXTRACT_DOMAIN_QUALITY, "domain" => "observe-test.example", "render_mode" => "http")
            .record(0.9);
    }

    fn check(o: &Observation) {
        let s = o.stage("search");
        assert!(s.throughput > 0.0);
        assert!((s.error_rate - 0.06).abs() < 1e-9, "{s:?}");
        assert!((s.content_failure_rate - 0.04).abs() < 1e-9, "{s:?}");
        assert!((s.latency_p50_s.unwrap() - 0.1).abs() < 0.006);
        assert_eq!(s.slots, 4.0);
        let d = o
            .quality
            .domains
            .iter()
            .find(|d| d.domain == "observe-test.example")
            .expect("domain listed");
        assert_eq!(d.stats.pages, 2);
        assert!((d.stats.mean - 0.5).abs() < 1e-9);
        assert!((d.stats.low_share - 0.5).abs() < 1e-9);
        assert!((o.error_rate - 0.06).abs() < 1e-9, "{o:?}");
    }
}
