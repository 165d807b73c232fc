//! `arc`: Vector's Adaptive Request Concurrency
//! (github.com/vectordotdev/vector, `src/sinks/util/adaptive_concurrency/controller.rs`;
//! "Adaptive request concurrency", Vector blog, 2020-11-24).
//!
//! Once per past RTT (here: once per control window, which is longer than
//! the round trips the stages see), with Vector's defaults:
//!
//! - the past RTT is an EWMA with variance, alpha [`EWMA_ALPHA`], of the
//!   windows' mean RTTs (`EwmaVar`: `mean += α·d`, `var = (1 − α)(var + d·α·d)`);
//! - **increase by one** when the limit was reached in the window, there
//!   was no back-pressure and the window's RTT is at most the past mean;
//! - **decrease to `floor(limit · DECREASE_RATIO)`** (at least 1) on
//!   back-pressure (a response Vector would retry: 429, 5xx, timeouts;
//!   here push-back on more than [`super::BACKOFF_SHARE`] of the units) or
//!   when the RTT is at least the past mean plus [`RTT_DEVIATION_SCALE`]
//!   standard deviations;
//! - then the window's RTT is folded into the past RTT (the first window
//!   only seeds it).
//!
//! Deviations: Vector's "reached the limit" is a request that found no
//! free permit; the observation has sampled means, so the limit counts as
//! reached when mean in-flight is at least [`REACHED`] of it. The bounds
//! are the guard's (Vector caps at 200), the initial limit is the knob in
//! force (Vector starts at 1).

use super::{baseline_policy, resync, Rule, Sample};

/// `decrease_ratio`.
pub const DECREASE_RATIO: f64 = 0.9;
/// `ewma_alpha`.
pub const EWMA_ALPHA: f64 = 0.4;
/// `rtt_deviation_scale`.
pub const RTT_DEVIATION_SCALE: f64 = 2.5;
/// Mean in-flight over the limit at which the limit counts as reached.
pub const REACHED: f64 = 0.9;

/// ARC's state for one stage.
#[derive(Debug, Clone)]
pub struct ArcRule {
    limit: f64,
    /// Past RTT: (mean, variance), None before the first window.
    past: Option<(f64, f64)>,
}

impl Rule for ArcRule {
    fn new(limit: f64) -> Self {
        ArcRule { limit, past: None }
    }

    fn update(&mut self, x: &Sample<'_>) -> Option<String> {
        self.limit = resync(self.limit, x.in_force).floor();
        let (min, max) = x.bounds;
        let rtt = x.stats.latency_mean_s.filter(|r| *r > 0.0);
        let (mean, var) = match (self.past, rtt) {
            (Some(p), _) => p,
            (None, Some(r)) => {
                // The first window only seeds the past RTT.
                self.past = Some((r, 0.0));
                return None;
            }
            (None, None) => return None,
        };
        let threshold = var.sqrt() * RTT_DEVIATION_SCALE;
        let reached = x.stats.in_flight >= REACHED * self.limit;
        let before = self.limit;
        let why = if self.limit < max && reached && !x.dropped && rtt.is_some_and(|r| r <= mean) {
            self.limit += 1.0;
            Some("limit reached, no back-pressure, round trip at or below its mean")
        } else if self.limit > 1.0 && (x.dropped || rtt.unwrap_or(0.0) >= mean + threshold) {
            self.limit = (self.limit * DECREASE_RATIO).floor().max(1.0).max(min);
            Some(if x.dropped {
                "back-pressure"
            } else {
                "round trip past mean + 2.5 sd"
            })
        } else {
            None
        };
        if let Some(r) = rtt {
            self.past = Some(match self.past {
                None => (r, 0.0),
                Some((m, v)) => {
                    let d = r - m;
                    let inc = EWMA_ALPHA * d;
                    (m + inc, (1.0 - EWMA_ALPHA) * (v + d * inc))
                }
            });
        }
        why.filter(|_| self.limit != before).map(|w| {
            format!(
                "{w} (round trip {:.0} ms, past mean {:.0} ms, sd {:.0} ms): limit {before:.0} -> {:.0}",
                rtt.unwrap_or(0.0) * 1e3,
                mean * 1e3,
                var.sqrt() * 1e3,
                self.limit
            )
        })
    }

    fn limit(&self) -> f64 {
        self.limit
    }
}

baseline_policy!(VectorArc, ArcRule, "arc");

#[cfg(test)]
mod tests {
    use super::super::testkit::{drive, stage};
    use super::*;

    #[test]
    fn a_reached_limit_with_a_steady_round_trip_grows_by_one() {
        let p = VectorArc::default();
        // The first window seeds the past RTT; then +1 a window.
        let limits = drive(&p, 10, |_, slots| stage(slots as f64, slots as f64, 0.1), 4);
        assert_eq!(limits, vec![10, 11, 12, 13]);
        // Not reached (and no slower round trip): stays.
        let p = VectorArc::default();
        let rtts = [0.10, 0.09, 0.08, 0.08];
        let limits = drive(&p, 10, |i, slots| stage(slots as f64, 5.0, rtts[i]), 4);
        assert_eq!(limits, vec![10, 10, 10, 10]);
    }

    #[test]
    fn a_round_trip_past_the_deviation_band_or_back_pressure_cuts_by_a_tenth() {
        // Noisy but steady round trips. The second window is slower than
        // a past of one sample (variance 0): Vector cuts there too. Then
        // the band (mean + 2.5 sd, ~ 112 + 24 ms) holds until a jump past it.
        let p = VectorArc::default();
        let rtts = [0.10, 0.12, 0.10, 0.12, 0.10, 0.12, 0.40];
        let limits = drive(&p, 20, |i, _| stage(20.0, 10.0, rtts[i]), rtts.len());
        assert_eq!(&limits[..6], &[20, 18, 18, 18, 18, 18], "{limits:?}");
        assert_eq!(limits[6], 16, "{limits:?}");
        // A rise inside the band is no signal.
        let p = VectorArc::default();
        let rtts = [0.10, 0.12, 0.10, 0.12, 0.10, 0.12, 0.13];
        let limits = drive(&p, 20, |i, _| stage(20.0, 10.0, rtts[i]), rtts.len());
        assert_eq!(limits[6], 18, "{limits:?}");
        let p = VectorArc::default();
        let limits = drive(
            &p,
            20,
            |_, slots| {
                let mut s = stage(slots as f64, slots as f64, 0.1);
                s.errors.insert("upstream".into(), 10);
                s
            },
            3,
        );
        assert_eq!(limits, vec![20, 18, 16]);
    }
}
