//! `envoy-gradient`: Envoy's adaptive-concurrency filter, gradient
//! controller (envoyproxy/envoy,
//! `source/extensions/filters/http/adaptive_concurrency/controller/gradient_controller.cc`;
//! Envoy docs, "Adaptive Concurrency").
//!
//! With Envoy's defaults:
//!
//! - **minRTT**: at the start and then every [`MIN_RTT_INTERVAL_WINDOWS`]
//!   windows the limit is pinned to [`MIN_CONCURRENCY`] until at least
//!   [`MIN_RTT_REQUESTS`] requests finished under it; minRTT is their
//!   [`SAMPLE_PERCENTILE`]th percentile (here: the median of those windows'
//!   p50s), and the limit in force before the probe is restored;
//! - **sample RTT**: every update interval (here: every control window)
//!   the window's p50;
//! - **update**: `gradient = clamp(minRTT · (1 + BUFFER) / sampleRTT, 0.5, 2)`,
//!   `limit = L · gradient`, `new = limit + sqrt(limit)` (burst headroom),
//!   clamped to the bounds.
//!
//! Deviations: the minRTT interval is Envoy's 60 s expressed in control
//! windows at the default 10 s interval (the bench compresses time, and a
//! policy sees windows, not the scenario's clock); Envoy's 10 % jitter of
//! that interval is less than a window and is not modelled. The probe goes
//! through the guard like any change, so a step limit may keep the limit
//! above [`MIN_CONCURRENCY`] during a probe: minRTT is then measured at the
//! lowest limit the guard let through. Bounds are the guard's (Envoy's
//! `max_concurrency_limit` is 1000). Envoy does not react to errors: a
//! 429 or timeout is only a (long) sample.

use super::{baseline_policy, resync, Rule, Sample};

/// `min_rtt_calc_params.interval` (60 s) in windows of the default 10 s.
pub const MIN_RTT_INTERVAL_WINDOWS: u32 = 6;
/// `min_rtt_calc_params.request_count`.
pub const MIN_RTT_REQUESTS: f64 = 50.0;
/// `min_rtt_calc_params.min_concurrency`.
pub const MIN_CONCURRENCY: f64 = 3.0;
/// `min_rtt_calc_params.buffer` (25 %).
pub const BUFFER: f64 = 0.25;
/// Windows a probe waits for its lower limit to take effect before it is
/// abandoned (the guard refused or the rollout undid it before any window
/// ran under it).
pub const PROBE_PATIENCE: u32 = 4;
/// `sample_aggregate_percentile` (50).
pub const SAMPLE_PERCENTILE: u32 = 50;

#[derive(Debug, Clone)]
enum Phase {
    /// Measuring minRTT: the limit to restore, requests and p50s so far.
    Probing {
        restore: f64,
        requests: f64,
        p50s: Vec<f64>,
        /// Windows that ran above the probe's limit (refused, rolled back).
        missed: u32,
    },
    /// Updating from the sample RTT; windows since the last probe.
    Updating { windows: u32 },
}

/// Envoy's state for one stage.
#[derive(Debug, Clone)]
pub struct EnvoyRule {
    limit: f64,
    min_rtt: Option<f64>,
    phase: Phase,
}

impl EnvoyRule {
    fn start_probe(&mut self, min: f64) -> String {
        let restore = self.limit;
        self.limit = MIN_CONCURRENCY.max(min);
        self.phase = Phase::Probing {
            restore,
            requests: 0.0,
            p50s: Vec::new(),
            missed: 0,
        };
        format!(
            "minRTT probe: limit {restore:.0} -> {:.0} until {MIN_RTT_REQUESTS} requests finish",
            self.limit
        )
    }
}

impl Rule for EnvoyRule {
    fn new(limit: f64) -> Self {
        EnvoyRule {
            limit,
            min_rtt: None,
            phase: Phase::Updating {
                windows: MIN_RTT_INTERVAL_WINDOWS,
            },
        }
    }

    fn update(&mut self, x: &Sample<'_>) -> Option<String> {
        let (min, max) = x.bounds;
        let p50 = x.stats.latency_p50_s.filter(|r| *r > 0.0);
        match &mut self.phase {
            Phase::Probing {
                restore,
                requests,
                p50s,
                missed,
            } => {
                // Count only windows that ran below the limit the probe
                // left (at the probe's limit, or the lowest the guard let
                // through on the way down).
                if x.in_force >= *restore && *restore > MIN_CONCURRENCY.max(min) {
                    *missed += 1;
                    if *missed >= PROBE_PATIENCE {
                        // The probe never took effect: measure at what is
                        // in force rather than never update.
                        let restore = *restore;
                        if self.min_rtt.is_none() {
                            self.min_rtt = p50;
                        }
                        self.limit = resync(restore, x.in_force);
                        self.phase = Phase::Updating { windows: 0 };
                        return Some("minRTT probe did not take effect: abandoned".into());
                    }
                    return None;
                }
                self.limit = x.in_force;
                *requests += x.stats.throughput * x.window_s;
                p50s.extend(p50);
                if *requests < MIN_RTT_REQUESTS || p50s.is_empty() {
                    return None;
                }
                let mut v = p50s.clone();
                v.sort_by(|a, b| a.total_cmp(b));
                let m = v[v.len() / 2];
                let restore = *restore;
                self.min_rtt = Some(m);
                self.limit = restore.clamp(min, max);
                self.phase = Phase::Updating { windows: 0 };
                Some(format!(
                    "minRTT {:.0} ms measured: limit back to {restore:.0}",
                    m * 1e3
                ))
            }
            Phase::Updating { windows } => {
                self.limit = resync(self.limit, x.in_force);
                *windows += 1;
                if *windows >= MIN_RTT_INTERVAL_WINDOWS || self.min_rtt.is_none() {
                    return Some(self.start_probe(min));
                }
                let (min_rtt, sample) = (self.min_rtt?, p50?);
                let gradient = (min_rtt * (1.0 + BUFFER) / sample).clamp(0.5, 2.0);
                let limit = self.limit * gradient;
                let before = self.limit;
                self.limit = (limit + limit.sqrt()).clamp(min, max);
                (self.limit.floor() != before.floor()).then(|| {
                    format!(
                        "p50 {:.0} ms against minRTT {:.0} ms: gradient {gradient:.2}, limit {before:.0} -> {:.0}",
                        sample * 1e3,
                        min_rtt * 1e3,
                        self.limit
                    )
                })
            }
        }
    }

    fn limit(&self) -> f64 {
        self.limit
    }
}

baseline_policy!(EnvoyGradient, EnvoyRule, "envoy-gradient");

#[cfg(test)]
mod tests {
    use super::super::testkit::{drive, stage};
    use super::*;

    #[test]
    fn probes_min_rtt_then_follows_the_gradient_with_headroom() {
        let p = EnvoyGradient::default();
        // 40 ms at the probe's 3 slots (75 req/s: 50 requests in the window),
        // 100 ms at 20 slots and more.
        let limits = drive(
            &p,
            20,
            |_, slots| {
                let rtt = if slots <= 3 { 0.04 } else { 0.1 };
                stage(slots as f64, slots as f64, rtt)
            },
            4,
        );
        // Window 1: probe (20 -> 3). Window 2: minRTT 40 ms, restore 20.
        // Window 3: gradient 0.04 * 1.25 / 0.1 = 0.5: 10 + sqrt(10) = 13.
        assert_eq!(limits[0], 3, "{limits:?}");
        assert_eq!(limits[1], 20, "{limits:?}");
        assert_eq!(limits[2], 13, "{limits:?}");
        // 13 * 0.5 = 6.5 + 2.55 = 9.05
        assert_eq!(limits[3], 9, "{limits:?}");
    }

    #[test]
    fn a_sample_near_min_rtt_grows_and_the_probe_recurs() {
        let p = EnvoyGradient::default();
        let limits = drive(
            &p,
            10,
            |_, slots| stage(slots as f64, slots as f64, 0.05),
            10,
        );
        // minRTT 50 ms, sample 50 ms: gradient 1.25: 12.5 + 3.5 = 16.
        assert_eq!(&limits[..3], &[3, 10, 16], "{limits:?}");
        // Six windows after the last probe it probes again.
        assert_eq!(limits[7], 3, "{limits:?}");
        assert!(limits[6] > 16, "{limits:?}");
    }
}
