//! Scenario files: a timeline of phases, each setting per-endpoint fault
//! profiles (latency, rate and concurrency limits, error rates) and the share
//! of JavaScript-only pages, globally and per domain, plus the **workload**
//! that `freshet bench scenarios` offers the pipeline during the phase (task
//! rate and the mix of keyword, URL and document tasks).
//!
//! The workload is stated once for the scenario (`[workload]`) and may be
//! overridden per phase (`[phase.workload]`, field by field): a flash crowd
//! is a phase with a higher `rate`, a bulk import a phase whose mix leans to
//! documents. Rates are in *real* tasks per second: the simulator's latencies
//! are never time-scaled, so neither is the load that meets them.
//!
//! Parsing (`toml` + serde with `deny_unknown_fields`) is followed by
//! [`Scenario::validate`], which does no I/O and names the offending phase and
//! field.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A named timeline of phases.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short identifier, shown in `/sim/stats`.
    pub name: String,
    /// What the scenario exercises, for humans.
    #[serde(default)]
    pub description: String,
    /// The load the scenario bench offers (phases may override it).
    #[serde(default)]
    pub workload: Workload,
    /// Phases in order; the last one stays active after the timeline ends.
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
}

/// What the scenario bench feeds the pipeline: how many tasks per second and
/// of which kinds. Kinds are drawn at random (seeded) by weight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Tasks offered per second, in real time (latencies are not scaled).
    #[serde(default = "Workload::default_rate")]
    pub rate: f64,
    /// Relative weights of the task kinds.
    #[serde(default)]
    pub mix: TaskMix,
    /// Words of a generated document task (a document of 400 words makes
    /// about three chunks at the default `transform.chunk_tokens`).
    #[serde(default = "Workload::default_document_words")]
    pub document_words: usize,
}

impl Workload {
    fn default_rate() -> f64 {
        40.0
    }
    fn default_document_words() -> usize {
        400
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            rate: Workload::default_rate(),
            mix: TaskMix::default(),
            document_words: Workload::default_document_words(),
        }
    }
}

/// Relative weights of task kinds (they need not sum to 1; all zero is an
/// error). The default is URLs only.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskMix {
    /// `url` tasks: a fresh simulated article each (fetch, extract, index).
    #[serde(default)]
    pub url: f64,
    /// `keyword` tasks: a search (1 credit) whose ten hits are fetched.
    #[serde(default)]
    pub keyword: f64,
    /// `document` tasks: text given in full (transform, embed, index only).
    #[serde(default)]
    pub document: f64,
}

impl Default for TaskMix {
    fn default() -> Self {
        TaskMix {
            url: 1.0,
            keyword: 0.0,
            document: 0.0,
        }
    }
}

impl TaskMix {
    /// The weights as shares that sum to 1 (url, keyword, document).
    pub fn shares(&self) -> [f64; 3] {
        let total = self.url + self.keyword + self.document;
        [
            self.url / total,
            self.keyword / total,
            self.document / total,
        ]
    }
}

/// A phase's changes to the scenario's workload; absent fields keep the
/// scenario's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadOverride {
    /// Tasks per second during the phase.
    pub rate: Option<f64>,
    /// Task mix during the phase (replaces the whole mix).
    pub mix: Option<TaskMix>,
    /// Words per generated document during the phase.
    pub document_words: Option<usize>,
}

/// One period of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Shown in `/sim/stats`.
    pub name: String,
    /// Length in seconds at `time_scale = 1`.
    pub duration_s: f64,
    /// Default share in [0, 1] of article pages served as JavaScript-only shells.
    #[serde(default)]
    pub js_share: f64,
    /// The `/api/search` endpoint (1 credit per successful call).
    #[serde(default)]
    pub search: EndpointProfile,
    /// The `/api/url` remote rendering endpoint (5 credits per successful call).
    #[serde(default = "EndpointProfile::render_default")]
    pub render: EndpointProfile,
    /// The OpenAI-compatible `/v1/embeddings` endpoint: `latency_ms` is the
    /// fixed overhead per request, `per_item_ms` the cost per input, `knee`
    /// the concurrency past which it slows down.
    #[serde(default = "EndpointProfile::embed_default")]
    pub embed: EndpointProfile,
    /// Page fetches on the simulated domains. Rate and concurrency limits
    /// apply per domain (each site limits its own visitors).
    #[serde(default = "EndpointProfile::pages_default")]
    pub pages: EndpointProfile,
    /// Per-domain overrides of `pages` and `js_share`.
    #[serde(default)]
    pub domains: BTreeMap<String, DomainOverride>,
    /// Changes to the scenario's `[workload]` during this phase.
    #[serde(default)]
    pub workload: WorkloadOverride,
}

/// Latency distribution: lognormal fitted to the two percentiles.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Median in milliseconds.
    pub p50: f64,
    /// 99th percentile in milliseconds (≥ p50).
    pub p99: f64,
}

/// Faults and limits of one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointProfile {
    /// Service time before answering.
    #[serde(default = "EndpointProfile::default_latency")]
    pub latency_ms: Latency,
    /// Token bucket rate (burst = one second's worth, at least 1); absent = unlimited.
    #[serde(default)]
    pub rate_limit_rps: Option<f64>,
    /// In-flight requests allowed; past it the request gets 429. Absent = unlimited.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Probability of a 500/502/503 answer.
    #[serde(default)]
    pub error_5xx: f64,
    /// Extra service time per input item (embeddings: per text), in ms.
    #[serde(default)]
    pub per_item_ms: f64,
    /// In-flight requests the service handles at full speed; past the knee
    /// every request slows down in proportion (`in_flight / knee`). Absent = no knee.
    #[serde(default)]
    pub knee: Option<usize>,
    /// Probability of closing the connection without any response.
    #[serde(default)]
    pub reset: f64,
    /// Probability of hanging (60 s, bounded) far past any sane client timeout.
    #[serde(default)]
    pub timeout: f64,
}

impl EndpointProfile {
    fn default_latency() -> Latency {
        Latency {
            p50: 50.0,
            p99: 200.0,
        }
    }
    fn render_default() -> EndpointProfile {
        EndpointProfile {
            latency_ms: Latency {
                p50: 800.0,
                p99: 2500.0,
            },
            ..Default::default()
        }
    }
    /// 30 ms overhead, 0.4 ms per input, knee at 4 concurrent requests.
    pub fn embed_default() -> EndpointProfile {
        EndpointProfile {
            latency_ms: Latency {
                p50: 30.0,
                p99: 60.0,
            },
            per_item_ms: 0.4,
            knee: Some(4),
            ..Default::default()
        }
    }
    fn pages_default() -> EndpointProfile {
        EndpointProfile {
            latency_ms: Latency {
                p50: 40.0,
                p99: 250.0,
            },
            ..Default::default()
        }
    }
}

impl Default for EndpointProfile {
    fn default() -> Self {
        EndpointProfile {
            latency_ms: Self::default_latency(),
            rate_limit_rps: None,
            max_concurrency: None,
            error_5xx: 0.0,
            per_item_ms: 0.0,
            knee: None,
            reset: 0.0,
            timeout: 0.0,
        }
    }
}

/// Per-domain overrides; every absent field falls back to the phase's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainOverride {
    pub js_share: Option<f64>,
    pub latency_ms: Option<Latency>,
    pub rate_limit_rps: Option<f64>,
    pub max_concurrency: Option<usize>,
    pub error_5xx: Option<f64>,
    pub reset: Option<f64>,
    pub timeout: Option<f64>,
}

impl Phase {
    /// The pages profile and js share in effect for `domain` in this phase.
    pub fn domain_profile(&self, domain: &str) -> (EndpointProfile, f64) {
        let mut p = self.pages.clone();
        let mut js = self.js_share;
        if let Some(o) = self.domains.get(domain) {
            if let Some(v) = o.js_share {
                js = v;
            }
            if let Some(v) = o.latency_ms {
                p.latency_ms = v;
            }
            if o.rate_limit_rps.is_some() {
                p.rate_limit_rps = o.rate_limit_rps;
            }
            if o.max_concurrency.is_some() {
                p.max_concurrency = o.max_concurrency;
            }
            if let Some(v) = o.error_5xx {
                p.error_5xx = v;
            }
            if let Some(v) = o.reset {
                p.reset = v;
            }
            if let Some(v) = o.timeout {
                p.timeout = v;
            }
        }
        (p, js)
    }
}

/// Largest task rate a workload may ask for: past it the bench's generator
/// and the two-core reference machine, not the knobs, would be measured.
pub const MAX_WORKLOAD_RATE: f64 = 2_000.0;

fn check_workload(ctx: &str, w: &Workload) -> anyhow::Result<()> {
    if !(w.rate > 0.0 && w.rate <= MAX_WORKLOAD_RATE) {
        anyhow::bail!(
            "{ctx}: `rate` = {} must be within (0, {MAX_WORKLOAD_RATE}] tasks per second",
            w.rate
        );
    }
    let m = &w.mix;
    for (name, v) in [
        ("url", m.url),
        ("keyword", m.keyword),
        ("document", m.document),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            anyhow::bail!("{ctx}: `mix.{name}` = {v} must be a non-negative weight");
        }
    }
    if m.url + m.keyword + m.document <= 0.0 {
        anyhow::bail!("{ctx}: `mix` gives every task kind a weight of 0; give at least one kind a positive weight");
    }
    if !(20..=100_000).contains(&w.document_words) {
        anyhow::bail!(
            "{ctx}: `document_words` = {} must be within 20..=100000 (shorter documents are dropped as too short)",
            w.document_words
        );
    }
    Ok(())
}

fn check_prob(ctx: &str, field: &str, v: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&v) || v.is_nan() {
        anyhow::bail!("{ctx}: `{field}` = {v} is not a probability in [0, 1]");
    }
    Ok(())
}

fn check_latency(ctx: &str, l: &Latency) -> anyhow::Result<()> {
    if !(l.p50 > 0.0 && l.p50.is_finite()) {
        anyhow::bail!(
            "{ctx}: `latency_ms.p50` = {} must be a positive number of milliseconds",
            l.p50
        );
    }
    if !(l.p99 >= l.p50 && l.p99.is_finite()) {
        anyhow::bail!(
            "{ctx}: `latency_ms.p99` = {} must be ≥ p50 = {}",
            l.p99,
            l.p50
        );
    }
    Ok(())
}

fn check_rate(ctx: &str, r: Option<f64>) -> anyhow::Result<()> {
    if let Some(r) = r {
        if !(r > 0.0 && r.is_finite()) {
            anyhow::bail!("{ctx}: `rate_limit_rps` = {r} must be positive (omit it for no limit)");
        }
    }
    Ok(())
}

fn check_conc(ctx: &str, c: Option<usize>) -> anyhow::Result<()> {
    if c == Some(0) {
        anyhow::bail!(
            "{ctx}: `max_concurrency` = 0 would refuse everything (omit it for no limit)"
        );
    }
    Ok(())
}

fn check_profile(ctx: &str, p: &EndpointProfile) -> anyhow::Result<()> {
    check_latency(ctx, &p.latency_ms)?;
    check_rate(ctx, p.rate_limit_rps)?;
    check_conc(ctx, p.max_concurrency)?;
    check_prob(ctx, "error_5xx", p.error_5xx)?;
    check_prob(ctx, "reset", p.reset)?;
    check_prob(ctx, "timeout", p.timeout)?;
    if p.error_5xx + p.reset + p.timeout > 1.0 {
        anyhow::bail!("{ctx}: error_5xx + reset + timeout exceed 1");
    }
    if !(p.per_item_ms >= 0.0 && p.per_item_ms.is_finite()) {
        anyhow::bail!(
            "{ctx}: `per_item_ms` = {} must be a non-negative number",
            p.per_item_ms
        );
    }
    if p.knee == Some(0) {
        anyhow::bail!("{ctx}: `knee` must be at least 1");
    }
    Ok(())
}

impl Scenario {
    /// Read, parse and validate a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario file {}", path.display()))?;
        Scenario::from_toml_str(&text)
            .with_context(|| format!("in scenario file {}", path.display()))
    }

    /// Parse and validate scenario TOML. Syntax and schema errors carry the
    /// line and column (from `toml`); validation errors name phase and field.
    pub fn from_toml_str(s: &str) -> anyhow::Result<Scenario> {
        let sc: Scenario =
            toml::from_str(s).map_err(|e| anyhow::anyhow!("invalid scenario: {e}"))?;
        sc.validate()?;
        Ok(sc)
    }

    /// Checks that need no I/O: non-empty timeline, probabilities in [0, 1],
    /// positive latencies with p99 ≥ p50, known `*.sim.test` domain names.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.name.trim().is_empty() {
            anyhow::bail!("scenario `name` must not be empty");
        }
        if self.phases.is_empty() {
            anyhow::bail!(
                "scenario `{}` has no [[phase]]; at least one is required",
                self.name
            );
        }
        check_workload("[workload]", &self.workload)?;
        for (i, ph) in self.phases.iter().enumerate() {
            let ctx = format!("phase {i} (`{}`)", ph.name);
            check_workload(&format!("{ctx} [phase.workload]"), &self.workload_of(i))?;
            if !(ph.duration_s > 0.0 && ph.duration_s.is_finite()) {
                anyhow::bail!("{ctx}: `duration_s` = {} must be positive", ph.duration_s);
            }
            check_prob(&ctx, "js_share", ph.js_share)?;
            check_profile(&format!("{ctx} [phase.search]"), &ph.search)?;
            check_profile(&format!("{ctx} [phase.render]"), &ph.render)?;
            check_profile(&format!("{ctx} [phase.pages]"), &ph.pages)?;
            check_profile(&format!("{ctx} [phase.embed]"), &ph.embed)?;
            for (d, o) in &ph.domains {
                let dctx = format!("{ctx} [phase.domains.\"{d}\"]");
                if !crate::sim::corpus::DOMAIN_NAMES
                    .iter()
                    .any(|n| format!("{n}.sim.test") == *d)
                {
                    anyhow::bail!("{dctx}: unknown domain; use one of Corpus::domains() (e.g. \"techdaily.sim.test\")");
                }
                if let Some(v) = o.js_share {
                    check_prob(&dctx, "js_share", v)?;
                }
                let (p, _) = ph.domain_profile(d);
                check_profile(&dctx, &p)?;
            }
        }
        Ok(())
    }

    /// The workload in force during phase `index` (the scenario's, with the
    /// phase's overrides applied).
    pub fn workload_of(&self, index: usize) -> Workload {
        let mut w = self.workload.clone();
        if let Some(o) = self.phases.get(index).map(|p| &p.workload) {
            if let Some(r) = o.rate {
                w.rate = r;
            }
            if let Some(m) = o.mix {
                w.mix = m;
            }
            if let Some(d) = o.document_words {
                w.document_words = d;
            }
        }
        w
    }

    /// Length of the timeline at `time_scale = 1`.
    pub fn total_duration_s(&self) -> f64 {
        self.phases.iter().map(|p| p.duration_s).sum()
    }

    /// Index of the phase active `elapsed_s` seconds (scaled time) after start.
    pub fn phase_at(&self, elapsed_s: f64) -> usize {
        let mut acc = 0.0;
        for (i, p) in self.phases.iter().enumerate() {
            acc += p.duration_s;
            if elapsed_s < acc {
                return i;
            }
        }
        self.phases.len().saturating_sub(1)
    }

    /// `scenarios/steady.toml`, compiled in, so the demo and benches run the
    /// same simulated web from any directory.
    pub fn steady_default() -> Scenario {
        Scenario::from_toml_str(include_str!("../../scenarios/steady.toml"))
            .expect("the shipped steady scenario is valid (tested)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let s = r#"
name = "t"
[[phase]]
name = "a"
duration_s = 10
js_share = 0.2
[phase.search]
latency_ms = { p50 = 80, p99 = 300 }
rate_limit_rps = 5
[phase.domains."techdaily.sim.test"]
js_share = 0.9
"#;
        let sc = Scenario::from_toml_str(s).unwrap();
        assert_eq!(sc.phases[0].search.rate_limit_rps, Some(5.0));
        assert_eq!(sc.phases[0].domain_profile("techdaily.sim.test").1, 0.9);
        assert_eq!(sc.phase_at(100.0), 0);
    }

    #[test]
    fn rejects_bad() {
        let e = Scenario::from_toml_str("name='x'\n[[phase]]\nname='a'\nduration_s=1\nbogus=1\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        let e = Scenario::from_toml_str(
            "name='x'\n[[phase]]\nname='a'\nduration_s=1\n[phase.pages]\nerror_5xx=1.5\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("error_5xx"), "{e:#}");
        let e = Scenario::from_toml_str("name='x'\n[[phase]]\nname='a'\nduration_s=1\n[phase.search]\nlatency_ms={p50=100,p99=50}\n").unwrap_err();
        assert!(format!("{e:#}").contains("p99"), "{e:#}");
        assert!(Scenario::from_toml_str("name='x'\nphase=[]\n").is_err());
    }

    #[test]
    fn workload_defaults_and_phase_overrides() {
        let s = r#"
name = "w"
[workload]
rate = 30
mix = { url = 3, keyword = 1 }
[[phase]]
name = "calm"
duration_s = 10
[[phase]]
name = "crowd"
duration_s = 10
[phase.workload]
rate = 90
[[phase]]
name = "import"
duration_s = 10
[phase.workload]
mix = { document = 1 }
document_words = 800
"#;
        let sc = Scenario::from_toml_str(s).unwrap();
        let calm = sc.workload_of(0);
        assert_eq!(calm.rate, 30.0);
        assert_eq!(calm.mix.shares(), [0.75, 0.25, 0.0]);
        assert_eq!(sc.workload_of(1).rate, 90.0);
        assert_eq!(sc.workload_of(1).mix, calm.mix);
        let import = sc.workload_of(2);
        assert_eq!((import.rate, import.document_words), (30.0, 800));
        assert_eq!(import.mix.shares(), [0.0, 0.0, 1.0]);
        // No [workload]: 40 URL tasks per second.
        let plain =
            Scenario::from_toml_str("name='p'\n[[phase]]\nname='a'\nduration_s=1\n").unwrap();
        assert_eq!(plain.workload_of(0), Workload::default());
    }

    #[test]
    fn rejects_bad_workloads() {
        let base = "name='x'\n[[phase]]\nname='a'\nduration_s=1\n";
        for (extra, needle) in [
            ("[phase.workload]\nrate = 0\n", "rate"),
            ("[phase.workload]\nrate = 1e9\n", "rate"),
            ("[phase.workload]\nmix = { url = 0 }\n", "mix"),
            (
                "[phase.workload]\nmix = { url = -1, keyword = 2 }\n",
                "mix.url",
            ),
            ("[phase.workload]\nmix = { pdf = 1 }\n", "pdf"),
            ("[phase.workload]\ndocument_words = 3\n", "document_words"),
            ("[phase.workload]\nburst = 3\n", "burst"),
        ] {
            let e = Scenario::from_toml_str(&format!("{base}{extra}")).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{extra}: {e:#}");
        }
        let e = Scenario::from_toml_str(&format!("{base}[workload]\nrate = -3\n")).unwrap_err();
        assert!(format!("{e:#}").contains("[workload]"), "{e:#}");
    }
}
