//! Rollout: apply a change, bake it, compare, commit or roll back
//! (docs/ARCHITECTURE.md §4, steps 2 and 5).
//!
//! **Apply** ([`apply`]) writes the audit record and `fsync`s it, then swaps
//! the knob snapshot atomically (version + 1) if nobody else swapped since
//! the caller read it. A crash between the two leaves a record of a change
//! that never took effect, which is safe: the log says what was *decided*,
//! the swap that follows it is what `/v1/config` and the metrics show, and
//! a restart begins from the settings file again. The reverse order could
//! leave a change in force that no record explains.
//!
//! **Bake** ([`Bake`]): after applying, the controller keeps the
//! observation windows that follow and [`Bake::judge`]s them against the
//! baseline (the windows just before the change):
//!
//! - a window whose error rate rises by more than twice the guard's
//!   `rollback_error_rate_rise` rolls back at once (no need to wait);
//! - after `bake_windows` windows, the mean of the bake windows is compared:
//!   goodput fell by more than `rollback_goodput_drop` of the baseline, the
//!   error rate rose by more than `rollback_error_rate_rise`, or mean
//!   quality fell by more than `rollback_quality_drop` → roll back;
//!   otherwise commit, marked **ineffective** when it delivered less than
//!   `ineffective_share` of the gain the policy expected.
//!
//! A fall in goodput is only held against a change while the pipeline is
//! **busy**: when every bake window is *demand-limited* (no slotted stage
//! saturated, nothing queued, nothing blocked on a full channel), the
//! pipeline indexed all that arrived and goodput followed the load, not the
//! change. Such a bake commits, and is not marked ineffective either (it
//! had nothing to show its gain on). Without this, a change made during a
//! burst is rolled back as soon as the burst ends.
//!
//! A bake **ends early**, without a verdict (outcome `superseded`), when a
//! window shows some stage's upstream refusing more than
//! [`PREEMPT_REFUSED_SHARE`] of its work (`rate_limited`) while a change
//! that is not protective bakes: the environment moved, the comparison with
//! the baseline means nothing any more, and the policy is asked at once
//! instead of three windows later while the refused load continues.
//!
//! A **protective** change (every change reduces load: fewer slots, fewer
//! retries, a smaller batch, a render override given back) is judged on
//! errors and quality only. It was made *because* the service was refused
//! or failing, and throughput usually falls with the limit that caused it;
//! rolling it back for the lower goodput would walk straight back into the
//! wall it stepped away from.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::control::audit::{AuditError, AuditLog, Event, EventKind, Record};
use crate::control::guard::Global;
use crate::control::observe::Observation;
use crate::knobs::{Change, KnobError, Knobs};
use crate::live::{LiveConfig, PatchError, Snapshot, Swapped};

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The result would not be a valid snapshot.
    #[error(transparent)]
    Invalid(#[from] KnobError),
    /// The audit record could not be written, so nothing was swapped.
    #[error("not applied: the audit log cannot be written ({0})")]
    Audit(#[from] AuditError),
    /// Another change came first.
    #[error(transparent)]
    Conflict(#[from] PatchError),
}

/// Records `event` (kind `kind`, with versions and diff filled in) and then
/// swaps `knobs` in, unless the snapshot moved on from `current`. The caller
/// serializes changes (holds the change lock).
pub fn apply(
    live: &LiveConfig,
    audit: &AuditLog,
    current: &Snapshot,
    knobs: Knobs,
    kind: EventKind,
    mut event: Event,
) -> Result<(Record, Swapped), ApplyError> {
    knobs.validate()?;
    let diff = current.knobs.diff(&knobs);
    event.from_version = Some(current.version);
    event.to_version = Some(current.version + 1);
    event.diff = serde_json::to_value(&diff).unwrap_or(Value::Null);
    let record = audit.append(kind, event)?;
    let swapped = live.swap_if(knobs, current.version)?;
    Ok((record, swapped))
}

/// The figures a change is judged on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Chunks indexed per second.
    pub goodput: f64,
    /// Operational errors per finished unit.
    pub error_rate: f64,
    /// Mean extraction quality (None when no page was scored).
    pub quality: Option<f64>,
}

impl Figures {
    /// The mean over `windows` (weighted by window length).
    pub fn mean(windows: &[&Observation]) -> Figures {
        let total: f64 = windows.iter().map(|o| o.window_s).sum();
        if total <= 0.0 {
            return Figures::default();
        }
        let w = |f: &dyn Fn(&Observation) -> f64| {
            windows.iter().map(|o| f(o) * o.window_s).sum::<f64>() / total
        };
        let pages: u64 = windows.iter().map(|o| o.quality.overall.pages).sum();
        Figures {
            goodput: w(&|o| o.goodput),
            error_rate: w(&|o| o.error_rate),
            quality: (pages > 0).then(|| {
                windows
                    .iter()
                    .map(|o| o.quality.overall.mean * o.quality.overall.pages as f64)
                    .sum::<f64>()
                    / pages as f64
            }),
        }
    }
}

/// Mean in-flight over slots from which a stage counts as busy.
pub const BUSY_SATURATION: f64 = 0.8;
/// Share of a window a stage may spend blocked on a full channel and still
/// count as idle.
pub const IDLE_BACKPRESSURE: f64 = 0.05;

/// Whether the pipeline kept up with its input during the window: no
/// slotted stage saturated, no stage with work queued, no stage blocked
/// handing work on. Its goodput then measures the load, not the knobs.
pub fn demand_limited(o: &Observation) -> bool {
    o.stages.iter().all(|(name, s)| {
        let slotted = crate::control::observe::SLOTTED
            .iter()
            .any(|stage| stage.as_str() == name.as_str());
        (!slotted || s.saturation < BUSY_SATURATION)
            && s.queue_depth < 1.0
            && s.backpressure <= IDLE_BACKPRESSURE
    })
}

/// What the bake says.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Keep baking.
    Continue,
    /// Keep the change.
    Commit {
        /// It delivered too little of its expected gain.
        ineffective: bool,
        /// The comparison, for the record.
        detail: String,
    },
    /// Undo it.
    RollBack {
        /// Which threshold it crossed.
        reason: String,
    },
}

/// Share of a stage's units refused by its upstream in one window above
/// which a bake ends early (see the module docs).
pub const PREEMPT_REFUSED_SHARE: f64 = 0.02;

/// A change being baked.
#[derive(Debug, Clone)]
pub struct Bake {
    /// The audit record of the applied change.
    pub seq: u64,
    /// The snapshot before the change (what a rollback restores).
    pub before: Arc<Snapshot>,
    /// The version the change created.
    pub version: u64,
    /// The changes applied.
    pub changes: Vec<Change>,
    /// The policy that proposed them.
    pub policy: String,
    /// The figures before the change.
    pub baseline: Figures,
    /// The policy's expected relative goodput gain.
    pub expected_gain: Option<f64>,
    /// Every change reduces load (see the module docs).
    pub protective: bool,
    /// Windows observed since.
    pub windows: Vec<Observation>,
}

impl Bake {
    /// The mean figures of the bake windows.
    pub fn figures(&self) -> Figures {
        Figures::mean(&self.windows.iter().collect::<Vec<_>>())
    }

    /// Why this bake ends before its judgement, if it does: `obs` shows
    /// the upstream of some stage refusing more than
    /// [`PREEMPT_REFUSED_SHARE`] of its units, and the change is not itself
    /// a step back (a protective change is baked through, or a cut would be
    /// cut again before it could show its effect).
    pub fn preempted_by(&self, obs: &Observation) -> Option<String> {
        if self.protective {
            return None;
        }
        obs.refused_stage(PREEMPT_REFUSED_SHARE)
            .map(|(stage, share)| {
                format!(
                    "{:.0} % of {stage} work was refused (rate_limited) during the bake of version {}",
                    share * 100.0,
                    self.version
                )
            })
    }

    /// Judges the windows so far.
    pub fn judge(&self, g: &Global) -> Judgement {
        let Some(last) = self.windows.last() else {
            return Judgement::Continue;
        };
        let base = self.baseline;
        if last.error_rate > base.error_rate + 2.0 * g.rollback_error_rate_rise {
            return Judgement::RollBack {
                reason: format!(
                    "error rate {:.1} % in the last window, {:.1} % before the change (limit +{:.1} points, doubled for a single window)",
                    last.error_rate * 100.0,
                    base.error_rate * 100.0,
                    g.rollback_error_rate_rise * 100.0
                ),
            };
        }
        if (self.windows.len() as u32) < g.bake_windows.max(1) {
            return Judgement::Continue;
        }
        let now = self.figures();
        if now.error_rate > base.error_rate + g.rollback_error_rate_rise {
            return Judgement::RollBack {
                reason: format!(
                    "error rate rose from {:.1} % to {:.1} % (limit +{:.1} points)",
                    base.error_rate * 100.0,
                    now.error_rate * 100.0,
                    g.rollback_error_rate_rise * 100.0
                ),
            };
        }
        if let (Some(before), Some(after)) = (base.quality, now.quality) {
            if after < before - g.rollback_quality_drop {
                return Judgement::RollBack {
                    reason: format!(
                        "mean quality fell from {before:.3} to {after:.3} (limit -{:.3})",
                        g.rollback_quality_drop
                    ),
                };
            }
        }
        let idle = self.windows.iter().all(demand_limited);
        if !self.protective
            && !idle
            && base.goodput > 0.0
            && now.goodput < base.goodput * (1.0 - g.rollback_goodput_drop)
        {
            return Judgement::RollBack {
                reason: format!(
                    "goodput fell from {:.1} to {:.1} chunks/s (limit -{:.0} %)",
                    base.goodput,
                    now.goodput,
                    g.rollback_goodput_drop * 100.0
                ),
            };
        }
        let gain = if base.goodput > 0.0 {
            now.goodput / base.goodput - 1.0
        } else {
            0.0
        };
        let ineffective = !idle
            && self
                .expected_gain
                .is_some_and(|expected| expected > 0.0 && gain < g.ineffective_share * expected);
        Judgement::Commit {
            ineffective,
            detail: format!(
                "{}goodput {:.1} -> {:.1} chunks/s ({:+.0} %{}), error rate {:.1} % -> {:.1} %",
                if idle {
                    "the pipeline kept up with its input throughout (goodput followed the load): "
                } else {
                    ""
                },
                base.goodput,
                now.goodput,
                gain * 100.0,
                match self.expected_gain {
                    Some(e) => format!(", expected {:+.0} %", e * 100.0),
                    None => String::new(),
                },
                base.error_rate * 100.0,
                now.error_rate * 100.0
            ),
        }
    }
}

/// Whether every change reduces load compared with `knobs`.
pub fn protective(changes: &[Change], knobs: &Knobs) -> bool {
    !changes.is_empty()
        && changes.iter().all(|c| {
            let old = knobs.get(&c.knob).unwrap_or(Value::Null);
            match (c.value.as_f64(), old.as_f64()) {
                (Some(new), Some(old)) => {
                    new < old
                        && (c.knob.ends_with(".slots")
                            || c.knob.ends_with(".max_attempts")
                            || c.knob.ends_with(".batch_size")
                            || c.knob == "source.max_in_flight")
                }
                _ => {
                    // A render map that only gives overrides back.
                    c.knob == "extract.render_overrides"
                        && match (c.value.as_object(), old.as_object()) {
                            (Some(new), Some(old)) => {
                                new.len() < old.len()
                                    && new.iter().all(|(k, v)| old.get(k) == Some(v))
                            }
                            _ => false,
                        }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(goodput: f64, error_rate: f64) -> Observation {
        Observation {
            window_s: 2.0,
            goodput,
            error_rate,
            ..Default::default()
        }
    }

    fn bake(windows: Vec<Observation>, protective: bool) -> Bake {
        Bake {
            seq: 1,
            before: Arc::new(Snapshot {
                version: 1,
                knobs: Knobs::default(),
            }),
            version: 2,
            changes: vec![],
            policy: "test".into(),
            baseline: Figures {
                goodput: 100.0,
                error_rate: 0.01,
                quality: None,
            },
            expected_gain: Some(0.2),
            protective,
            windows,
        }
    }

    #[test]
    fn judgements() {
        let g = Global::default();
        assert_eq!(
            bake(vec![window(90.0, 0.01)], false).judge(&g),
            Judgement::Continue
        );
        // One very bad window rolls back at once.
        assert!(matches!(
            bake(vec![window(90.0, 0.2)], false).judge(&g),
            Judgement::RollBack { .. }
        ));
        // Goodput down 30 % after three windows.
        let down = vec![busy(70.0); 3];
        assert!(matches!(
            bake(down.clone(), false).judge(&g),
            Judgement::RollBack { .. }
        ));
        // ... but a protective change is kept.
        assert!(matches!(
            bake(down, true).judge(&g),
            Judgement::Commit { .. }
        ));
        // Up 2 % when 20 % was expected: ineffective.
        assert!(matches!(
            bake(vec![busy(102.0); 3], false).judge(&g),
            Judgement::Commit {
                ineffective: true,
                ..
            }
        ));
        assert!(matches!(
            bake(vec![window(125.0, 0.01); 3], false).judge(&g),
            Judgement::Commit {
                ineffective: false,
                ..
            }
        ));
    }

    fn busy(goodput: f64) -> Observation {
        let mut o = window(goodput, 0.01);
        o.stages.insert(
            "extract".into(),
            crate::control::observe::StageStats {
                slots: 8.0,
                in_flight: 8.0,
                saturation: 1.0,
                queue_depth: 50.0,
                ..Default::default()
            },
        );
        o
    }

    #[test]
    fn a_goodput_fall_counts_only_while_the_pipeline_is_busy() {
        let g = Global::default();
        // Busy and 30 % less: the change is to blame.
        assert!(matches!(
            bake(vec![busy(70.0); 3], false).judge(&g),
            Judgement::RollBack { .. }
        ));
        // Idle throughout: the load fell; commit, not ineffective.
        let mut idle = window(70.0, 0.01);
        idle.stages.insert(
            "extract".into(),
            crate::control::observe::StageStats {
                slots: 16.0,
                in_flight: 3.0,
                saturation: 0.19,
                ..Default::default()
            },
        );
        assert!(demand_limited(&idle));
        assert!(!demand_limited(&busy(70.0)));
        assert!(matches!(
            bake(vec![idle; 3], false).judge(&g),
            Judgement::Commit {
                ineffective: false,
                ..
            }
        ));
        // One busy window among idle ones is enough to judge.
        let mut mixed = vec![window(70.0, 0.01); 2];
        mixed.push(busy(70.0));
        assert!(matches!(
            bake(mixed, false).judge(&g),
            Judgement::RollBack { .. }
        ));
    }

    #[test]
    fn protective_changes() {
        let k = Knobs::default();
        assert!(protective(&[Change::new("extract.slots", 4)], &k));
        assert!(!protective(&[Change::new("extract.slots", 12)], &k));
        assert!(!protective(
            &[
                Change::new("extract.slots", 4),
                Change::new("search.slots", 8)
            ],
            &k
        ));
        assert!(!protective(&[], &k));
    }

    #[test]
    fn refused_work_ends_a_bake_early_unless_the_change_was_a_step_back() {
        let refused = |retries: u64| {
            let mut s = crate::control::observe::StageStats {
                throughput: 5.0,
                ..Default::default()
            };
            s.retries.insert("rate_limited".into(), retries);
            let mut o = window(100.0, 0.0);
            o.stages.insert("search".into(), s);
            o
        };
        // 1 refused of 10 units: ends the bake of a growth ...
        let why = bake(vec![], false).preempted_by(&refused(1));
        assert!(why.is_some_and(|w| w.contains("search")));
        // ... not a protective one, and nothing ends it when nothing is refused.
        assert!(bake(vec![], true).preempted_by(&refused(1)).is_none());
        assert!(bake(vec![], false).preempted_by(&refused(0)).is_none());
        assert!(bake(vec![], false)
            .preempted_by(&window(100.0, 0.0))
            .is_none());
    }
}
