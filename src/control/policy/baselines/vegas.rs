//! `vegas`: Netflix concurrency-limits' `VegasLimit`
//! (github.com/Netflix/concurrency-limits, `limit/VegasLimit.java`), after
//! TCP Vegas (Brakmo & Peterson, 1995).
//!
//! Per sample (here: per control window, its mean round-trip time), with
//! the library's defaults:
//!
//! - `rtt_noload` is the lowest RTT seen; a sample below it only lowers it.
//!   Every `jitter · PROBE_MULTIPLIER · limit` samples (jitter drawn from
//!   [0.5, 1)) the sample *becomes* `rtt_noload` (a probe, so a lasting
//!   rise of the base latency is learned);
//! - the queue estimate is `ceil(limit · (1 − rtt_noload / rtt))`;
//! - on a drop (push-back on more than [`super::BACKOFF_SHARE`] of the units)
//!   the limit decreases to `limit − log10(limit)`;
//! - otherwise, when in flight is below half the limit, nothing changes
//!   (no upward drift when not close to the limit); else with
//!   `l = max(1, log10 limit)`, alpha = 3·l, beta = 6·l, threshold = l:
//!   queue ≤ threshold: `limit + beta`; queue < alpha: `limit + l`;
//!   queue > beta: `limit − l`; in between: unchanged;
//! - smoothing 1.0 (the new limit is taken as it is).
//!
//! Deviations: bounds are the guard's (the library's `maxConcurrency` is
//! 1000), the initial limit is the knob in force, in flight is the
//! window's mean, and the probe jitter comes from a fixed-seed generator so
//! runs repeat. `log10` is evaluated on the integer limit, as the library's
//! `Log10RootFunction` does.

use super::{baseline_policy, resync, Rule, Sample};

/// `probeMultiplier`.
pub const PROBE_MULTIPLIER: f64 = 30.0;
/// `smoothing`.
pub const SMOOTHING: f64 = 1.0;

/// `Log10RootFunction.create(0)`: `max(1, log10(limit))`, as an integer.
fn log10(limit: f64) -> f64 {
    (limit.max(1.0).floor().log10() as i64).max(1) as f64
}

/// Vegas's state for one stage.
#[derive(Debug, Clone)]
pub struct VegasRule {
    limit: f64,
    rtt_noload: f64,
    probe_count: u64,
    probe_jitter: f64,
    rng: u64,
}

impl VegasRule {
    fn next_jitter(&mut self) -> f64 {
        // xorshift64: reproducible jitter in [0.5, 1).
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64 * 0.5
    }
}

impl Rule for VegasRule {
    fn new(limit: f64) -> Self {
        let mut r = VegasRule {
            limit,
            rtt_noload: 0.0,
            probe_count: 0,
            probe_jitter: 0.75,
            rng: 0x9E37_79B9_7F4A_7C15,
        };
        r.probe_jitter = r.next_jitter();
        r
    }

    fn update(&mut self, x: &Sample<'_>) -> Option<String> {
        self.limit = resync(self.limit, x.in_force);
        let (min, max) = x.bounds;
        let rtt = x.stats.latency_mean_s.filter(|r| *r > 0.0)?;
        self.probe_count += 1;
        if self.probe_jitter * PROBE_MULTIPLIER * self.limit <= self.probe_count as f64 {
            self.probe_jitter = self.next_jitter();
            self.probe_count = 0;
            self.rtt_noload = rtt;
            return None;
        }
        if self.rtt_noload == 0.0 || rtt < self.rtt_noload {
            self.rtt_noload = rtt;
            return None;
        }
        let queue = (self.limit.floor() * (1.0 - self.rtt_noload / rtt)).ceil();
        let l = log10(self.limit);
        let before = self.limit;
        let (new, why) = if x.dropped {
            (self.limit.floor() - l, "units pushed back")
        } else if x.stats.in_flight * 2.0 < self.limit.floor() {
            return None;
        } else if queue <= l {
            (self.limit + 6.0 * l, "no queue")
        } else if queue < 3.0 * l {
            (self.limit.floor() + l, "a short queue")
        } else if queue > 6.0 * l {
            (self.limit.floor() - l, "a long queue")
        } else {
            return None;
        };
        let new = new.clamp(1.0, max);
        self.limit = ((1.0 - SMOOTHING) * self.limit + SMOOTHING * new).clamp(min, max);
        (self.limit.floor() != before.floor()).then(|| {
            format!(
                "{why} (estimate {queue:.0} from round trip {:.0} ms over {:.0} ms unloaded): limit {before:.0} -> {:.0}",
                rtt * 1e3,
                self.rtt_noload * 1e3,
                self.limit
            )
        })
    }

    fn limit(&self) -> f64 {
        self.limit
    }
}

baseline_policy!(Vegas, VegasRule, "vegas");

#[cfg(test)]
mod tests {
    use super::super::testkit::{drive, stage};
    use super::*;

    #[test]
    fn no_queue_grows_by_beta_and_a_long_queue_shrinks() {
        let p = Vegas::default();
        // First window sets rtt_noload; then the same RTT: queue 0 -> +6.
        let limits = drive(&p, 20, |_, slots| stage(slots as f64, slots as f64, 0.1), 3);
        assert_eq!(limits, vec![20, 26, 32]);
        // RTT doubles: queue = ceil(L/2) > 6 -> L - 1 each window.
        let p = Vegas::default();
        let limits = drive(
            &p,
            20,
            |i, slots| stage(slots as f64, slots as f64, if i == 0 { 0.1 } else { 0.2 }),
            4,
        );
        assert_eq!(limits, vec![20, 19, 18, 17]);
    }

    #[test]
    fn a_short_queue_grows_by_log10_and_the_sweet_spot_holds() {
        // L = 20, rtt_noload 100 ms. Queue estimate ceil(20 (1 - 0.1/rtt)):
        // rtt 105 ms -> 1 (<= threshold 1: +6); 110 ms -> 2 (< alpha 3: +1);
        // 125 ms -> 4 (between alpha 3 and beta 6: hold).
        for (rtt, want) in [(0.105, 26), (0.110, 21), (0.125, 20)] {
            let p = Vegas::default();
            let limits = drive(
                &p,
                20,
                |i, slots| stage(slots as f64, slots as f64, if i == 0 { 0.1 } else { rtt }),
                2,
            );
            assert_eq!(limits[1], want, "rtt {rtt}: {limits:?}");
        }
    }

    #[test]
    fn a_drop_decreases_by_log10() {
        let p = Vegas::default();
        let limits = drive(
            &p,
            20,
            |i, slots| {
                let mut s = stage(slots as f64, slots as f64, 0.1);
                if i > 0 {
                    s.errors.insert("timeout".into(), 20);
                }
                s
            },
            3,
        );
        assert_eq!(limits, vec![20, 19, 18]);
    }
}
