//! `gradient2`: Netflix concurrency-limits' `Gradient2Limit`
//! (github.com/Netflix/concurrency-limits, `limit/Gradient2Limit.java`),
//! with an AIMD cut on drops.
//!
//! Per sample (here: per control window, the window's mean round-trip time,
//! as `WindowedLimit` feeds its average sample window), with the library's
//! defaults:
//!
//! - the long RTT is an exponential average over [`LONG_WINDOW`] samples
//!   after [`WARMUP`] plain ones (`ExpAvgMeasurement(600, 10)`); when it is
//!   more than twice the short RTT it decays by ×0.95 (recovery after a
//!   long overload);
//! - the stage is *app limited* when in flight is below half the limit:
//!   the limit stays;
//! - otherwise `gradient = clamp(TOLERANCE · long / short, 0.5, 1.0)`,
//!   `new = limit · gradient + QUEUE_SIZE`, and the limit moves to
//!   `limit · (1 − SMOOTHING) + new · SMOOTHING`.
//!
//! Gradient2 alone ignores drops (429, 5xx, timeouts are not latency); the
//! issue that asked for this baseline pairs it with AIMD's multiplicative
//! cut, so a window with push-back sets the limit to
//! `floor(limit · DROP_RATIO)` (at least one fewer) instead.
//!
//! Deviations, forced by the setting: the limit's bounds are the guard's
//! (the library's `minLimit` 20 / `maxConcurrency` 200 would override the
//! guardrails), its initial value is the knob in force, and "in flight" is
//! the window's mean in-flight (the library uses the sample window's
//! maximum).

use super::{baseline_policy, resync, ExpAvg, Rule, Sample};

/// Samples the long RTT averages over (`longWindow`).
pub const LONG_WINDOW: u32 = 600;
/// Plain-mean samples before the long RTT becomes an EMA.
pub const WARMUP: u32 = 10;
/// `rttTolerance`.
pub const TOLERANCE: f64 = 1.5;
/// `smoothing`.
pub const SMOOTHING: f64 = 0.2;
/// `queueSize` (the default function returns 4 for every limit).
pub const QUEUE_SIZE: f64 = 4.0;
/// The AIMD cut on a window with push-back.
pub const DROP_RATIO: f64 = 0.9;

/// Gradient2's state for one stage.
#[derive(Debug, Clone)]
pub struct Gradient2Rule {
    limit: f64,
    long_rtt: ExpAvg,
}

impl Rule for Gradient2Rule {
    fn new(limit: f64) -> Self {
        Gradient2Rule {
            limit,
            long_rtt: ExpAvg::new(LONG_WINDOW, WARMUP),
        }
    }

    fn update(&mut self, x: &Sample<'_>) -> Option<String> {
        self.limit = resync(self.limit, x.in_force);
        let (min, max) = x.bounds;
        if x.dropped {
            let before = self.limit;
            self.limit = (self.limit * DROP_RATIO)
                .floor()
                .min(self.limit.floor() - 1.0)
                .max(min);
            return Some(format!(
                "units pushed back: limit {before:.1} x {DROP_RATIO} -> {:.1}",
                self.limit
            ));
        }
        let short = x.stats.latency_mean_s.filter(|r| *r > 0.0)?;
        let mut long = self.long_rtt.add(short);
        if long / short > 2.0 {
            long *= 0.95;
            self.long_rtt.set(long);
        }
        if x.stats.in_flight < self.limit / 2.0 {
            return None; // app limited
        }
        let gradient = (TOLERANCE * long / short).clamp(0.5, 1.0);
        let new = self.limit * gradient + QUEUE_SIZE;
        let before = self.limit;
        self.limit = (self.limit * (1.0 - SMOOTHING) + new * SMOOTHING).clamp(min, max);
        (self.limit.floor() != before.floor()).then(|| {
            format!(
                "round trip {:.0} ms against a long-term {:.0} ms: gradient {gradient:.2}, limit {before:.1} -> {:.1}",
                short * 1e3,
                long * 1e3,
                self.limit
            )
        })
    }

    fn limit(&self) -> f64 {
        self.limit
    }
}

baseline_policy!(Gradient2, Gradient2Rule, "gradient2");

#[cfg(test)]
mod tests {
    use super::super::testkit::{drive, stage};
    use super::*;

    #[test]
    fn a_steady_round_trip_grows_the_limit_by_the_smoothed_queue() {
        // Saturated, steady RTT: gradient 1 (clamped), +4 smoothed by 0.2
        // = +0.8 a window: 20 -> 20.8 -> 21.6 -> 22.4 -> 23.2 -> 24.
        let p = Gradient2::default();
        let limits = drive(&p, 20, |_, slots| stage(slots as f64, slots as f64, 0.1), 5);
        assert_eq!(limits, vec![20, 21, 22, 23, 24]);
    }

    #[test]
    fn a_rising_latency_gradient_shrinks_the_limit() {
        let p = Gradient2::default();
        // Ten windows at 100 ms set the long RTT, then latency triples.
        let limits = drive(
            &p,
            40,
            |i, slots| stage(slots as f64, slots as f64, if i < 10 { 0.1 } else { 0.3 }),
            16,
        );
        let peak = limits[9];
        assert!(peak > 40, "{limits:?}");
        // gradient = 1.5 * ~0.1/0.3 = 0.5: new = L/2 + 4, smoothed: L * 0.9 + 0.8.
        assert!(limits[15] < peak, "{limits:?}");
        for w in limits[11..].windows(2) {
            assert!(w[1] <= w[0], "{limits:?}");
        }
    }

    #[test]
    fn an_app_limited_stage_keeps_its_limit_and_push_back_cuts_it() {
        let p = Gradient2::default();
        let limits = drive(&p, 20, |_, slots| stage(slots as f64, 5.0, 0.1), 4);
        assert_eq!(limits, vec![20; 4]);
        let p = Gradient2::default();
        let limits = drive(
            &p,
            20,
            |_, slots| {
                let mut s = stage(slots as f64, slots as f64, 0.1);
                s.retries.insert("rate_limited".into(), 10);
                s
            },
            2,
        );
        assert_eq!(limits, vec![18, 16]);
    }
}
