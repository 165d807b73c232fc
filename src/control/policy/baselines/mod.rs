//! Published adaptive controllers as policies: the yardsticks freshet's own
//! heuristic is measured against (`freshet bench scenarios`,
//! docs/BENCHMARKS.md).
//!
//! Each file is one published algorithm, implemented from its source with
//! its published defaults (the doc comment of each says which source and
//! which parameters):
//!
//! - [`gradient2`]: Netflix concurrency-limits `Gradient2Limit`, with an
//!   AIMD ×0.9 cut on push-back (Gradient2 alone ignores drops);
//! - [`vegas`]: Netflix concurrency-limits `VegasLimit`;
//! - [`arc`]: Vector's Adaptive Request Concurrency;
//! - [`envoy`]: Envoy's adaptive-concurrency gradient controller
//!   (`envoy-gradient`);
//! - [`ds2`]: DS2 (Kalavri et al., OSDI '18) in the form of the Flink
//!   Kubernetes operator's autoscaler: parallelism from useful time.
//!
//! They all drive the same knobs the same way: one concurrency limit per
//! slotted stage (`<stage>.slots`), nothing else, proposed through the
//! guard and baked like any other policy's changes. What they read is the
//! [`Observation`] every policy gets; a published algorithm that updates per
//! request or per sample window updates here once per control window (the
//! window's mean round-trip time is its sample, as Netflix's
//! `WindowedLimit` and Envoy's sample window both aggregate).
//!
//! Unlike the heuristic they keep state between calls (an EMA, a minimum
//! RTT, a fractional limit), as the originals do. The controller asks for a
//! proposal only when no change is baking, so each call first feeds every
//! window it has not seen yet (from [`Context::recent`], oldest first), and
//! the limit it carries is re-synchronised to the knob in force whenever
//! they disagree (the guard clamped a step, a change was rolled back, an
//! operator set the knob): the algorithm always continues from the limit
//! that is really in force, as a library owning its semaphore would.
//! Bounds are the guard's `min`/`max` of the knob.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::json;

use super::Context;
use super::Proposal;
use crate::control::observe::{Observation, StageStats, SLOTTED};
use crate::dataplane::Stage;
use crate::knobs::{Change, Knobs};

pub mod arc;
pub mod ds2;
pub mod envoy;
pub mod gradient2;
pub mod vegas;

/// Share of a stage's units pushed back (429, 5xx, timeouts, resets) that
/// counts as a drop / back-pressure signal (the `aimd` baseline's).
pub use super::aimd::BACKOFF_SHARE;

/// The `<stage>.slots` knob in force.
pub fn slots_of(knobs: &Knobs, stage: Stage) -> u32 {
    match stage {
        Stage::Search => knobs.search.slots,
        Stage::Extract => knobs.extract.slots,
        Stage::Embed => knobs.embed.slots,
        Stage::Index => knobs.index.slots,
        Stage::Transform | Stage::Source => 0,
    }
}

/// The guard's bounds of `<stage>.slots` (1 and `u32::MAX` where it names none).
pub fn bounds(ctx: &Context<'_>, stage: Stage) -> (f64, f64) {
    let rule = ctx.guard.file().knobs.get(&format!("{stage}.slots"));
    let min = rule.and_then(|r| r.min).unwrap_or(1.0).max(1.0);
    let max = rule.and_then(|r| r.max).unwrap_or(u32::MAX as f64).max(min);
    (min, max)
}

/// Whether the stage's units were pushed back in the window (rate limited,
/// timed out, 5xx, reset or refused on more than [`BACKOFF_SHARE`] of them):
/// the "drop" of concurrency-limits, the "back-pressure" of Vector.
pub fn dropped(s: &StageStats, window_s: f64) -> bool {
    super::aimd::pushed_back(s, window_s) > BACKOFF_SHARE
}

/// One window of one stage, as the limit algorithms see it.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The stage's figures.
    pub stats: &'a StageStats,
    /// Window length, seconds.
    pub window_s: f64,
    /// The limit in force during the window (the `slots` gauge).
    pub in_force: f64,
    /// Units pushed back past [`BACKOFF_SHARE`].
    pub dropped: bool,
    /// The guard's bounds of the knob.
    pub bounds: (f64, f64),
}

/// One published limit algorithm, per stage.
pub trait Rule: std::fmt::Debug + Send {
    /// A fresh state for a stage whose limit starts at `limit`.
    fn new(limit: f64) -> Self
    where
        Self: Sized;

    /// Feeds one window; returns why the limit moved, if it did.
    fn update(&mut self, sample: &Sample<'_>) -> Option<String>;

    /// The limit the algorithm wants in force now.
    fn limit(&self) -> f64;
}

/// What a baseline keeps between calls.
#[derive(Debug)]
struct State<R> {
    /// `at_ms` of the newest window fed.
    seen_ms: u64,
    /// Per stage, in [`SLOTTED`] order of first sight.
    stages: Vec<(Stage, R)>,
}

/// A [`Rule`] run per slotted stage over every window, as a policy.
#[derive(Debug)]
pub struct Baseline<R> {
    name: &'static str,
    state: Mutex<State<R>>,
}

impl<R: Rule> Baseline<R> {
    /// A baseline called `name` (its policy name).
    pub fn new(name: &'static str) -> Baseline<R> {
        Baseline {
            name,
            state: Mutex::new(State {
                seen_ms: 0,
                stages: Vec::new(),
            }),
        }
    }

    /// The policy name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Feeds the windows not seen yet and proposes the limits wanted.
    pub fn decide(&self, ctx: &Context<'_>) -> Proposal {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let seen = st.seen_ms;
        let fresh: Vec<&Observation> = ctx
            .recent
            .iter()
            .chain(std::iter::once(ctx.observation))
            .filter(|o| o.at_ms > seen || (seen == 0 && o.at_ms == 0))
            .collect();
        let mut why: BTreeMap<&'static str, String> = BTreeMap::new();
        for o in &fresh {
            for stage in SLOTTED {
                let s = o.stage(stage.as_str());
                if o.held.iter().any(|h| h == stage.as_str())
                    || (s.throughput <= 0.0 && s.in_flight <= 0.0)
                {
                    continue; // idle or held: nothing to learn from
                }
                let in_force = if s.slots >= 1.0 {
                    s.slots
                } else {
                    slots_of(ctx.knobs, stage) as f64
                };
                let at = match st.stages.iter().position(|(k, _)| *k == stage) {
                    Some(i) => i,
                    None => {
                        st.stages.push((stage, R::new(in_force)));
                        st.stages.len() - 1
                    }
                };
                let rule = &mut st.stages[at].1;
                let sample = Sample {
                    stats: &s,
                    window_s: o.window_s.max(1e-3),
                    in_force,
                    dropped: dropped(&s, o.window_s.max(1e-3)),
                    bounds: bounds(ctx, stage),
                };
                if let Some(r) = rule.update(&sample) {
                    why.insert(stage.as_str(), r);
                }
            }
        }
        st.seen_ms = fresh
            .iter()
            .map(|o| o.at_ms)
            .max()
            .unwrap_or(seen)
            .max(seen);
        let mut changes = Vec::new();
        for (stage, rule) in &st.stages {
            let now = slots_of(ctx.knobs, *stage) as u64;
            let (min, max) = bounds(ctx, *stage);
            let want = rule.limit().clamp(min, max).floor().max(1.0) as u64;
            if want != now {
                changes.push(Change {
                    knob: format!("{stage}.slots"),
                    value: json!(want),
                    reason: format!(
                        "{}: {stage}.slots {now} -> {want}: {}",
                        self.name,
                        why.get(stage.as_str())
                            .map(String::as_str)
                            .unwrap_or("limit moved")
                    ),
                });
            }
        }
        Proposal::from_changes(
            changes,
            ctx.guard.global().max_changes_per_decision,
            format!("{}: every limit stays", self.name),
        )
    }
}

/// Implements [`super::Policy`] for a baseline type alias.
macro_rules! baseline_policy {
    ($ty:ident, $rule:ty, $name:literal) => {
        /// The policy (see the module doc).
        #[derive(Debug)]
        pub struct $ty(super::Baseline<$rule>);

        impl Default for $ty {
            fn default() -> Self {
                $ty(super::Baseline::new($name))
            }
        }

        #[async_trait::async_trait]
        impl crate::control::policy::Policy for $ty {
            fn name(&self) -> &str {
                self.0.name()
            }

            async fn propose(
                &self,
                ctx: &crate::control::policy::Context<'_>,
            ) -> Result<crate::control::policy::Proposal, crate::control::policy::PolicyError> {
                Ok(self.0.decide(ctx))
            }
        }
    };
}
pub(crate) use baseline_policy;

/// An exponential moving average with concurrency-limits' warm-up: the
/// plain mean of the first `warmup` samples, then `x += (s - x) * 2/(window+1)`
/// (`ExpAvgMeasurement`).
#[derive(Debug, Clone, Copy)]
pub struct ExpAvg {
    window: f64,
    warmup: u32,
    count: u32,
    value: f64,
}

impl ExpAvg {
    /// An average over `window` samples after `warmup` plain ones.
    pub fn new(window: u32, warmup: u32) -> ExpAvg {
        ExpAvg {
            window: window.max(1) as f64,
            warmup,
            count: 0,
            value: 0.0,
        }
    }

    /// Adds a sample; returns the new value.
    pub fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.value += (sample - self.value) / self.count as f64;
        } else {
            let factor = 2.0 / (self.window + 1.0);
            self.value = self.value * (1.0 - factor) + sample * factor;
        }
        self.value
    }

    /// The value now (0 before any sample).
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Replaces the value (Gradient2's decay of a stale long RTT).
    pub fn set(&mut self, v: f64) {
        self.value = v;
    }
}

/// `limit` again if its floor is what is in force, else the limit in force.
pub fn resync(limit: f64, in_force: f64) -> f64 {
    if limit.floor() as i64 == in_force.round() as i64 {
        limit
    } else {
        in_force
    }
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Observations and contexts for the baselines' tests.
    use super::*;
    use crate::control::guard::Guard;
    use crate::control::policy::Policy;

    /// An extract stage with `slots`, `in_flight` and mean round trip `rtt`.
    pub fn stage(slots: f64, in_flight: f64, rtt: f64) -> StageStats {
        StageStats {
            throughput: in_flight / rtt,
            slots,
            in_flight,
            saturation: in_flight / slots,
            latency_mean_s: Some(rtt),
            latency_p50_s: Some(rtt),
            ..Default::default()
        }
    }

    /// A one-second window ending at `at_ms` with the extract stage `s`.
    pub fn obs(at_ms: u64, s: StageStats) -> Observation {
        Observation {
            at_ms,
            window_s: 1.0,
            stages: [("extract".to_string(), s)].into_iter().collect(),
            ..Default::default()
        }
    }

    /// Feeds `windows` one call each (knobs following what was proposed,
    /// as if the guard passed every change) and returns the extract limits
    /// proposed after each window (the knob in force when nothing changed).
    pub fn drive<P: Policy>(
        p: &P,
        start_slots: u32,
        mut window: impl FnMut(usize, u32) -> StageStats,
        n: usize,
    ) -> Vec<u32> {
        let guard = Guard::from_toml("", "t").unwrap();
        let mut knobs = Knobs::default();
        knobs.extract.slots = start_slots;
        let mut recent: Vec<Observation> = Vec::new();
        let mut out = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..n {
            let mut s = window(i, knobs.extract.slots);
            s.slots = knobs.extract.slots as f64;
            s.saturation = s.in_flight / s.slots;
            let o = obs(1_000 * (i as u64 + 1), s);
            let ctx = Context {
                observation: &o,
                recent: &recent,
                knobs: &knobs,
                version: i as u64,
                guard: &guard,
                decisions: &[],
            };
            let prop = rt.block_on(p.propose(&ctx)).unwrap();
            for c in &prop.changes {
                if c.knob == "extract.slots" {
                    knobs.extract.slots = c.value.as_u64().unwrap() as u32;
                }
            }
            out.push(knobs.extract.slots);
            recent.push(o);
            if recent.len() > 12 {
                recent.remove(0);
            }
        }
        out
    }
}
