//! `aimd`: the adaptive-concurrency baseline of the scenario bench.
//!
//! This is the approach other data pipelines take to "self-tuning"
//! (Vector's adaptive request concurrency, Netflix's concurrency-limits,
//! TCP congestion control): each stage's concurrency limit is its only
//! knob, and it follows two signals.
//!
//! - **Additive increase**: a stage that used its whole limit during the
//!   window (mean in-flight at least [`USED`] of its slots) while its
//!   round-trip time stayed near the recent mean gets one more slot.
//! - **Multiplicative decrease**: a stage whose requests were pushed back
//!   (rate limited, timed out, upstream errors or resets on more than
//!   [`BACKOFF_SHARE`] of its units) or whose mean round-trip time rose past
//!   [`RTT_RISE`] times the recent mean goes to [`DECREASE_RATIO`] of its
//!   slots (at least one fewer).
//!
//! It knows nothing else: not render modes, not batch sizes, not retry
//! budgets or timeouts, and it cannot tell a hanging upstream (which more
//! slots would ride out) from an overloaded one (which fewer slots would
//! relieve). That is the point of the baseline: it shows what concurrency
//! control alone achieves, and so what freshet's own heuristic adds.
//!
//! Like the heuristic it is stateless: the round-trip history is read from
//! the recent observations in the [`Context`].

use serde_json::json;

use super::{Context, Policy, PolicyError, Proposal};
use crate::control::observe::{Observation, StageStats, SLOTTED};
use crate::dataplane::retry::ErrorClass;
use crate::dataplane::Stage;
use crate::knobs::Change;

/// Mean in-flight over slots at which the limit counts as used.
pub const USED: f64 = 0.8;
/// Share of a stage's units pushed back that triggers a decrease.
pub const BACKOFF_SHARE: f64 = 0.01;
/// A mean round-trip time this many times the recent mean triggers a decrease.
pub const RTT_RISE: f64 = 1.5;
/// The multiplicative decrease (Vector's default `decrease_ratio`).
pub const DECREASE_RATIO: f64 = 0.9;
/// Recent windows the round-trip mean is taken over.
pub const RTT_HISTORY: usize = 6;

/// The AIMD concurrency baseline.
#[derive(Debug, Default, Clone, Copy)]
pub struct Aimd;

#[async_trait::async_trait]
impl Policy for Aimd {
    fn name(&self) -> &str {
        "aimd"
    }

    async fn propose(&self, ctx: &Context<'_>) -> Result<Proposal, PolicyError> {
        Ok(decide(ctx))
    }
}

/// Units pushed back (failed or retried as rate limited, timed out, 5xx,
/// reset or refused) per finished unit.
pub(crate) fn pushed_back(s: &StageStats, window_s: f64) -> f64 {
    let n: u64 = [
        ErrorClass::RateLimited,
        ErrorClass::Timeout,
        ErrorClass::Upstream,
        ErrorClass::Reset,
        ErrorClass::Connect,
    ]
    .into_iter()
    .map(|c| s.class_count(c))
    .sum();
    s.per_finished(n, window_s)
}

/// Mean round-trip time of `stage` over the recent windows (None with fewer than three).
fn rtt_mean(stage: Stage, recent: &[Observation]) -> Option<f64> {
    let h: Vec<f64> = recent
        .iter()
        .rev()
        .take(RTT_HISTORY)
        .filter_map(|o| o.stages.get(stage.as_str()).and_then(|s| s.latency_mean_s))
        .collect();
    (h.len() >= 3).then(|| h.iter().sum::<f64>() / h.len() as f64)
}

/// The AIMD decision for one window.
pub fn decide(ctx: &Context<'_>) -> Proposal {
    let obs = ctx.observation;
    let window = obs.window_s.max(1e-3);
    let mut changes = Vec::new();
    for stage in SLOTTED {
        let s = obs.stage(stage.as_str());
        let slots = s.slots.round().max(1.0) as u64;
        if s.throughput <= 0.0 && s.in_flight <= 0.0 {
            continue; // idle: nothing to learn from
        }
        let back = pushed_back(&s, window);
        let rtt = s.latency_mean_s;
        let mean = rtt_mean(stage, ctx.recent);
        let rtt_up = matches!((rtt, mean), (Some(now), Some(m)) if now > RTT_RISE * m);
        let knob = format!("{stage}.slots");
        if back > BACKOFF_SHARE || rtt_up {
            if slots <= 1 {
                continue;
            }
            let target = ((slots as f64 * DECREASE_RATIO).floor() as u64)
                .min(slots - 1)
                .max(1);
            let reason = if back > BACKOFF_SHARE {
                format!(
                    "{:.1} % of {stage} units were pushed back: {slots} -> {target}",
                    back * 100.0
                )
            } else {
                format!(
                    "{stage} round trip {:.0} ms is past {RTT_RISE}x its recent mean {:.0} ms: {slots} -> {target}",
                    rtt.unwrap_or(0.0) * 1e3,
                    mean.unwrap_or(0.0) * 1e3
                )
            };
            changes.push(Change {
                knob,
                value: json!(target),
                reason,
            });
        } else if s.saturation >= USED {
            changes.push(Change {
                knob,
                value: json!(slots + 1),
                reason: format!(
                    "{stage} used {:.0} % of its {slots} slots with a steady round trip: {slots} -> {}",
                    s.saturation * 100.0,
                    slots + 1
                ),
            });
        }
    }
    Proposal::from_changes(
        changes,
        ctx.guard.global().max_changes_per_decision,
        "aimd: no stage used its limit or was pushed back",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::guard::Guard;
    use crate::knobs::Knobs;

    fn stage(slots: f64, in_flight: f64, rtt: f64) -> StageStats {
        StageStats {
            throughput: 50.0,
            slots,
            in_flight,
            saturation: in_flight / slots,
            latency_mean_s: Some(rtt),
            latency_p50_s: Some(rtt),
            ..Default::default()
        }
    }

    fn obs(s: StageStats) -> Observation {
        Observation {
            window_s: 1.0,
            stages: [("extract".to_string(), s)].into_iter().collect(),
            ..Default::default()
        }
    }

    fn run(now: Observation, recent: &[Observation]) -> Proposal {
        let guard = Guard::from_toml("", "t").unwrap();
        decide(&Context {
            observation: &now,
            recent,
            knobs: &Knobs::default(),
            version: 1,
            guard: &guard,
            decisions: &[],
        })
    }

    fn extract_slots(p: &Proposal) -> Option<u64> {
        p.changes
            .iter()
            .find(|c| c.knob == "extract.slots")
            .and_then(|c| c.value.as_u64())
    }

    #[test]
    fn a_used_limit_with_a_steady_round_trip_grows_by_one() {
        let history = vec![obs(stage(10.0, 9.5, 0.1)); 4];
        let p = run(obs(stage(10.0, 9.5, 0.11)), &history);
        assert_eq!(extract_slots(&p), Some(11), "{p:?}");
        // An unused limit stays.
        let p = run(obs(stage(10.0, 3.0, 0.1)), &history);
        assert_eq!(extract_slots(&p), None, "{p:?}");
    }

    #[test]
    fn push_back_or_a_rising_round_trip_decreases_multiplicatively() {
        let history = vec![obs(stage(20.0, 19.0, 0.1)); 4];
        let mut limited = stage(20.0, 19.0, 0.1);
        limited.retries.insert("rate_limited".into(), 5);
        assert_eq!(extract_slots(&run(obs(limited), &history)), Some(18));
        let slow = stage(20.0, 19.0, 0.2);
        assert_eq!(extract_slots(&run(obs(slow), &history)), Some(18));
        // Always at least one fewer, never below one.
        let mut small = stage(3.0, 3.0, 0.1);
        small.errors.insert("timeout".into(), 5);
        assert_eq!(extract_slots(&run(obs(small), &history)), Some(2));
        let mut one = stage(1.0, 1.0, 0.1);
        one.errors.insert("timeout".into(), 5);
        assert_eq!(extract_slots(&run(obs(one), &history)), None);
    }

    #[test]
    fn only_slots_are_ever_touched() {
        let history = vec![obs(stage(10.0, 9.5, 0.1)); 4];
        let mut s = stage(10.0, 9.5, 0.1);
        s.errors.insert("upstream".into(), 10);
        let p = run(obs(s), &history);
        assert!(
            p.changes.iter().all(|c| c.knob.ends_with(".slots")),
            "{p:?}"
        );
    }
}
