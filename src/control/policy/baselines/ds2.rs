//! `ds2`: DS2 (Kalavri et al., "Three steps is all you need: fast,
//! accurate, automatic scaling decisions for distributed streaming
//! dataflows", OSDI '18) in the one-step form the Flink Kubernetes
//! operator's autoscaler uses (flink-kubernetes-operator,
//! `autoscaler/JobVertexScaler.java`).
//!
//! DS2 measures each operator's **useful time** (time spent processing,
//! not waiting for input or blocked on output) and from it the **true
//! processing rate** per instance: what one instance could do if it never
//! waited. The parallelism that sustains the target rate at the target
//! utilization is then
//!
//! `slots = ceil(target rate / true rate per slot / TARGET_UTILIZATION)`.
//!
//! Here, per slotted stage and window:
//!
//! - useful slot-seconds = mean in-flight × (1 − share of the window the
//!   stage was blocked on a full downstream) × window; true rate per slot =
//!   units finished / useful slot-seconds;
//! - target rate = units finished per second + the growth of the stage's
//!   input queue per second + the queue drained over
//!   [`CATCH_UP_WINDOWS`] windows (the operator's backlog catch-up);
//! - no change while utilization (target ÷ (true rate per slot × slots))
//!   stays inside `TARGET_UTILIZATION ± BOUNDARY` (the operator's
//!   `target.utilization` 0.7 and `target.utilization.boundary` 0.3);
//! - the rates are averaged over the windows since the stage's limit last
//!   changed, skipping the first of them (DS2's activation time: a
//!   rescaled operator's first window mixes both settings);
//! - a scale-down is delayed: it is applied once it has been recommended
//!   in [`SCALE_DOWN_WINDOWS`] consecutive windows, to the largest of those
//!   recommendations (the operator's `scale-down.interval`); a scale-down
//!   is at most by [`MAX_SCALE_DOWN_FACTOR`] (`scale-down.max-factor`).
//!
//! The operator's timings (15 min metric window, 5 min stabilization, 1 h
//! scale-down interval, 5 min catch-up) are made for jobs that run for days;
//! the bench's scenarios last minutes, so the windows above are fixed in
//! control windows (10 s each by default) instead. They were set before
//! any scenario was run and are not tuned to one.
//!
//! DS2 knows throughput and time only: push-back (429, timeouts) is not a
//! signal for it; a stage throttled by its upstream shows a lower true rate
//! per slot and so is given fewer slots only if the target rate is met.

use super::{baseline_policy, resync, Rule, Sample};

/// `target.utilization`.
pub const TARGET_UTILIZATION: f64 = 0.7;
/// `target.utilization.boundary`.
pub const BOUNDARY: f64 = 0.3;
/// Windows over which a stage's input backlog is to be drained.
pub const CATCH_UP_WINDOWS: f64 = 30.0;
/// Consecutive windows a scale-down must be recommended in.
pub const SCALE_DOWN_WINDOWS: usize = 3;
/// Most a scale-down removes (`scale-down.max-factor`): to 1 − 0.6 of the slots.
pub const MAX_SCALE_DOWN_FACTOR: f64 = 0.6;
/// Windows averaged at most.
pub const METRIC_WINDOWS: usize = 6;

/// One window's rates.
#[derive(Debug, Clone, Copy)]
struct Rates {
    /// Units per useful slot-second.
    per_slot: f64,
    /// Units per second the stage should sustain.
    target: f64,
}

/// DS2's state for one stage.
#[derive(Debug, Clone)]
pub struct Ds2Rule {
    limit: f64,
    /// The limit the windows in `rates` ran under.
    under: f64,
    /// Windows since that limit took effect (the first is skipped).
    windows: usize,
    rates: Vec<Rates>,
    prev_queue: Option<f64>,
    /// Scale-down recommendations in a row.
    downs: Vec<f64>,
}

impl Ds2Rule {
    /// The averaged rates, if any window counts yet.
    fn mean(&self) -> Option<Rates> {
        let n = self.rates.len();
        (n > 0).then(|| Rates {
            per_slot: self.rates.iter().map(|r| r.per_slot).sum::<f64>() / n as f64,
            target: self.rates.iter().map(|r| r.target).sum::<f64>() / n as f64,
        })
    }
}

impl Rule for Ds2Rule {
    fn new(limit: f64) -> Self {
        Ds2Rule {
            limit,
            under: limit,
            windows: 0,
            rates: Vec::new(),
            prev_queue: None,
            downs: Vec::new(),
        }
    }

    fn update(&mut self, x: &Sample<'_>) -> Option<String> {
        self.limit = resync(self.limit, x.in_force).floor();
        let s = x.stats;
        let growth = self
            .prev_queue
            .map(|q| (s.queue_depth - q).max(0.0) / x.window_s)
            .unwrap_or(0.0);
        self.prev_queue = Some(s.queue_depth);
        if x.in_force != self.under {
            self.under = x.in_force;
            self.windows = 0;
            self.rates.clear();
            self.downs.clear();
        }
        self.windows += 1;
        if self.windows == 1 {
            return None; // activation: the first window under a new limit
        }
        let useful = s.in_flight * (1.0 - s.backpressure.clamp(0.0, 1.0));
        if useful <= 0.0 || s.throughput <= 0.0 {
            return None;
        }
        self.rates.push(Rates {
            per_slot: s.throughput / useful,
            target: s.throughput + growth + s.queue_depth / (CATCH_UP_WINDOWS * x.window_s),
        });
        if self.rates.len() > METRIC_WINDOWS {
            self.rates.remove(0);
        }
        let r = self.mean()?;
        let (min, max) = x.bounds;
        let utilization = r.target / (r.per_slot * self.limit);
        if (TARGET_UTILIZATION - BOUNDARY..=TARGET_UTILIZATION + BOUNDARY).contains(&utilization) {
            self.downs.clear();
            return None;
        }
        let want = (r.target / r.per_slot / TARGET_UTILIZATION)
            .ceil()
            .clamp(min, max);
        let before = self.limit;
        if want < self.limit {
            self.downs.push(want);
            if self.downs.len() < SCALE_DOWN_WINDOWS {
                return None;
            }
            let floor = (self.limit * (1.0 - MAX_SCALE_DOWN_FACTOR)).ceil();
            let most = self.downs.iter().copied().fold(0.0, f64::max);
            self.limit = most.max(floor).max(min);
            self.downs.clear();
        } else {
            self.downs.clear();
            self.limit = want;
        }
        (self.limit != before).then(|| {
            format!(
                "target {:.1}/s at {:.2}/s per useful slot: utilization {:.2} outside {:.1}..{:.1}, limit {before:.0} -> {:.0}",
                r.target,
                r.per_slot,
                utilization,
                TARGET_UTILIZATION - BOUNDARY,
                TARGET_UTILIZATION + BOUNDARY,
                self.limit
            )
        })
    }

    fn limit(&self) -> f64 {
        self.limit
    }
}

baseline_policy!(Ds2, Ds2Rule, "ds2");

#[cfg(test)]
mod tests {
    use super::super::testkit::{drive, stage};
    use super::*;

    /// A stage whose units take 100 ms of useful time each, offered
    /// `offered` units/s with a queue of `queue` waiting.
    fn window(slots: u32, offered: f64, queue: f64) -> crate::control::observe::StageStats {
        let capacity = slots as f64 / 0.1;
        let throughput = offered.min(capacity);
        let mut s = stage(slots as f64, throughput * 0.1, 0.1);
        s.throughput = throughput;
        s.queue_depth = queue;
        s
    }

    #[test]
    fn parallelism_comes_from_useful_time() {
        // 10 slots, 100 ms per unit: 10 units/s per slot, capacity 100/s,
        // saturated with 300 units queued: target 100 + 300/30 = 110/s.
        // slots = ceil(110 / 10 / 0.7) = 16.
        let p = Ds2::default();
        let limits = drive(&p, 10, |_, slots| window(slots, 1000.0, 300.0), 3);
        assert_eq!(limits, vec![10, 16, 16], "{limits:?}");
    }

    #[test]
    fn blocked_time_is_not_useful_time() {
        // Same stage, but half of each window blocked on a full downstream:
        // the true rate per slot doubles (20/s), so no growth is wanted:
        // utilization 110 / (20 * 10) = 0.55 is inside 0.4..1.0.
        let p = Ds2::default();
        let limits = drive(
            &p,
            10,
            |_, slots| {
                let mut s = window(slots, 1000.0, 300.0);
                s.backpressure = 0.5;
                s
            },
            3,
        );
        assert_eq!(limits, vec![10, 10, 10], "{limits:?}");
    }

    #[test]
    fn the_dead_band_holds_and_scale_down_waits() {
        // 40 units/s offered to 10 slots: utilization 0.4 -> inside, no change.
        let p = Ds2::default();
        let limits = drive(&p, 10, |_, slots| window(slots, 40.0, 0.0), 6);
        assert_eq!(limits, vec![10; 6]);
        // 20 units/s to 20 slots: utilization 0.1; wanted ceil(20/10/0.7) = 3,
        // floored at 40 % of 20 = 8, applied after three windows in a row
        // (the first window is the activation window).
        let p = Ds2::default();
        let limits = drive(&p, 20, |_, slots| window(slots, 20.0, 0.0), 5);
        assert_eq!(limits, vec![20, 20, 20, 8, 8], "{limits:?}");
    }
}
