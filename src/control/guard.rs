//! The guard: editable guardrail policies that every knob change must pass
//! (docs/ARCHITECTURE.md §4, step 4).
//!
//! `policies/guardrails.toml` states, per knob, bounds, allowed values, the
//! largest step per change (as a ratio and/or an absolute amount), a
//! cooldown and whether a person must approve; and globally, how many
//! changes one decision may make, the credits budget, bake length and the
//! rollback thresholds. [`Guard::check`] gives every proposed change a
//! [`Verdict`] with a reason:
//!
//! - **rejected**: a knob the file does not name, when a policy proposes
//!   it (**deny by default** for automatic changes: a knob is open to the
//!   controller only with a `[knobs."<path>"]` table; operators may still
//!   change it through the admin API, which is audited, see
//!   [`Guard::check_operator`]), unknown knob, wrong JSON type (no coercion: `"12"` is not
//!   12), a non-finite number, a value outside the knob's bounds or allowed
//!   values, a knob in cooldown, or past the per-decision
//!   limit. Proposals come from an LLM, an untrusted source: nothing
//!   questionable is "fixed up" silently, except —
//! - **clamped**: a value within bounds but a larger step than allowed is
//!   moved to the largest allowed step, and the verdict says so;
//! - **accepted**: as proposed;
//! - **awaiting approval**: a policy's change of a knob with `approval =
//!   true` that passes every other rule: it is queued for a person
//!   (`control::approvals`), not applied. An operator's change of such a
//!   knob through `PATCH /v1/knobs` is rejected unless forced (approve the
//!   queued proposal instead, or force it).
//!
//! The file is validated as a whole when loaded (unknown fields, unknown
//! knobs, bounds outside what the code supports, `min > max`, ratios below
//! 1). [`Guard::reload`] returns an error for a bad edit and the caller keeps
//! the guard it has.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::knobs::{self, Change, KnobKind, Knobs};

/// The longest `approval_expiry_s`: a week.
pub const MAX_APPROVAL_EXPIRY_S: u64 = 7 * 86_400;

/// The shipped guardrails file.
const BUILTIN: &str = include_str!("../../policies/guardrails.toml");

/// `[global]` of the guardrails file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// Knob changes one decision may make.
    pub max_changes_per_decision: usize,
    /// Provider credits per minute the controller may steer towards (checked
    /// by the controller against its observation).
    pub credits_budget_per_minute: f64,
    /// Control intervals a change bakes before it is judged.
    pub bake_windows: u32,
    /// Roll back when goodput falls by more than this share of the baseline.
    pub rollback_goodput_drop: f64,
    /// Roll back when the error rate rises by more than this (absolute share).
    pub rollback_error_rate_rise: f64,
    /// Roll back when mean extraction quality falls by more than this.
    pub rollback_quality_drop: f64,
    /// A change that delivers less than this share of its predicted gain is
    /// marked ineffective.
    pub ineffective_share: f64,
    /// Seconds a proposal awaiting a person's approval stays in the queue
    /// before it expires (audited as `approval_expired`).
    pub approval_expiry_s: u64,
    /// Daily UTC windows in which the controller changes nothing (operators
    /// still can): `[{start = "01:30", end = "04:00"}]`. A window whose end
    /// is before its start runs over midnight.
    pub freeze_windows: Vec<FreezeWindow>,
}

/// A daily UTC time window, `HH:MM` to `HH:MM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    /// Start, `HH:MM` UTC (inclusive).
    pub start: String,
    /// End, `HH:MM` UTC (exclusive).
    pub end: String,
}

fn minute_of_day(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl FreezeWindow {
    /// Whether `minute` (of the UTC day) falls inside the window.
    pub fn contains(&self, minute: u32) -> bool {
        match (minute_of_day(&self.start), minute_of_day(&self.end)) {
            (Some(s), Some(e)) if s <= e => (s..e).contains(&minute),
            (Some(s), Some(e)) => minute >= s || minute < e,
            _ => false,
        }
    }
}

impl Default for Global {
    fn default() -> Self {
        Global {
            max_changes_per_decision: 3,
            credits_budget_per_minute: 600.0,
            bake_windows: 3,
            rollback_goodput_drop: 0.15,
            rollback_error_rate_rise: 0.05,
            rollback_quality_drop: 0.10,
            ineffective_share: 0.25,
            approval_expiry_s: 3600,
            freeze_windows: Vec::new(),
        }
    }
}

/// One knob's guardrails.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnobRule {
    /// Smallest value allowed (numbers).
    pub min: Option<f64>,
    /// Largest value allowed (numbers).
    pub max: Option<f64>,
    /// Allowed values (render modes; for maps, allowed modes of every entry).
    pub allowed: Option<Vec<String>>,
    /// Largest factor per change: new within [old / r, old * r] (r >= 1).
    pub max_step_ratio: Option<f64>,
    /// Largest absolute change per change.
    pub max_step_abs: Option<f64>,
    /// Seconds after a change of this knob before it may change again.
    #[serde(default)]
    pub cooldown_s: u64,
    /// Changes need a person's approval (the controller may only propose).
    #[serde(default)]
    pub approval: bool,
    /// Never change this knob automatically.
    #[serde(default)]
    pub frozen: bool,
}

/// The guardrails file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardFile {
    /// Global limits.
    #[serde(default)]
    pub global: Global,
    /// Per-knob rules by knob path.
    #[serde(default)]
    pub knobs: BTreeMap<String, KnobRule>,
}

/// Why a guardrails file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct GuardError {
    /// File (or `<inline>`).
    pub origin: String,
    /// What is wrong, naming the field.
    pub message: String,
}

/// The outcome for one proposed change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Applied as proposed.
    Accepted {
        /// Knob path.
        knob: String,
        /// The value.
        value: Value,
    },
    /// Applied with a smaller step.
    Clamped {
        /// Knob path.
        knob: String,
        /// What was proposed.
        proposed: Value,
        /// What will be applied.
        value: Value,
        /// Why.
        reason: String,
    },
    /// Passes the guard, but the knob needs a person's approval: queued,
    /// not applied (see `control::approvals`).
    AwaitingApproval {
        /// Knob path.
        knob: String,
        /// What was proposed.
        proposed: Value,
        /// What will be applied once approved (clamped like any change).
        value: Value,
        /// Why it waits (and, when clamped, by how much).
        reason: String,
    },
    /// Not applied.
    Rejected {
        /// Knob path (as proposed, possibly unknown).
        knob: String,
        /// What was proposed.
        proposed: Value,
        /// Why.
        reason: String,
    },
}

impl Verdict {
    /// The change to apply, if any.
    pub fn change(&self) -> Option<Change> {
        match self {
            Verdict::Accepted { knob, value } | Verdict::Clamped { knob, value, .. } => {
                Some(Change::new(knob.clone(), value.clone()))
            }
            Verdict::Rejected { .. } | Verdict::AwaitingApproval { .. } => None,
        }
    }

    /// The change a person is asked to approve, if the verdict is one.
    pub fn awaiting(&self) -> Option<Change> {
        match self {
            Verdict::AwaitingApproval { knob, value, .. } => {
                Some(Change::new(knob.clone(), value.clone()))
            }
            _ => None,
        }
    }

    /// The knob, whatever the verdict.
    pub fn knob(&self) -> &str {
        match self {
            Verdict::Accepted { knob, .. }
            | Verdict::Clamped { knob, .. }
            | Verdict::AwaitingApproval { knob, .. }
            | Verdict::Rejected { knob, .. } => knob,
        }
    }
}

/// Who a change is checked for (see [`Guard::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// A policy: deny by default, `approval` knobs wait for a person.
    Automatic,
    /// An operator through the admin API: unnamed knobs are open, `approval`
    /// knobs are refused (unless forced, which skips the guard).
    Operator,
    /// A person approving a queued proposal: like an operator, and the
    /// `approval` rule is what they are satisfying.
    Approved,
}

/// A loaded, validated guard.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    file: GuardFile,
}

impl Guard {
    /// Parses and validates guardrails TOML (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &str) -> Result<Guard, GuardError> {
        let bad = |message: String| GuardError {
            origin: origin.to_string(),
            message,
        };
        let file: GuardFile =
            toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_string()))?;
        let g = &file.global;
        if g.max_changes_per_decision == 0 {
            return Err(bad(
                "[global] max_changes_per_decision must be at least 1".into()
            ));
        }
        for (name, v) in [
            ("rollback_goodput_drop", g.rollback_goodput_drop),
            ("rollback_error_rate_rise", g.rollback_error_rate_rise),
            ("rollback_quality_drop", g.rollback_quality_drop),
            ("ineffective_share", g.ineffective_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(format!("[global] {name} = {v} must be within [0, 1]")));
            }
        }
        if !(1..=MAX_APPROVAL_EXPIRY_S).contains(&g.approval_expiry_s) {
            return Err(bad(format!(
                "[global] approval_expiry_s = {} must be within [1, {MAX_APPROVAL_EXPIRY_S}] (seconds)",
                g.approval_expiry_s
            )));
        }
        if !(g.credits_budget_per_minute >= 0.0 && g.credits_budget_per_minute.is_finite()) {
            return Err(bad(
                "[global] credits_budget_per_minute must be a non-negative number".into(),
            ));
        }
        for w in &g.freeze_windows {
            for t in [&w.start, &w.end] {
                if minute_of_day(t).is_none() {
                    return Err(bad(format!(
                        "[global] freeze_windows: `{t}` is not a time like \"02:30\" (HH:MM, UTC)"
                    )));
                }
            }
            if w.start == w.end {
                return Err(bad(format!(
                    "[global] freeze_windows: {}-{} is empty",
                    w.start, w.end
                )));
            }
        }
        for (path, rule) in &file.knobs {
            let spec = knobs::spec(path).ok_or_else(|| {
                bad(format!(
                    "[knobs.\"{path}\"]: unknown knob (see `freshet config show`)"
                ))
            })?;
            let at = |m: String| bad(format!("[knobs.\"{path}\"] {m}"));
            match spec.kind {
                KnobKind::Integer | KnobKind::Number => {
                    for (name, v) in [("min", rule.min), ("max", rule.max)] {
                        if let Some(v) = v {
                            if !v.is_finite() || v < spec.min || v > spec.max {
                                return Err(at(format!(
                                    "{name} = {v} is outside what the code supports [{}, {}]",
                                    spec.min, spec.max
                                )));
                            }
                        }
                    }
                    if let (Some(lo), Some(hi)) = (rule.min, rule.max) {
                        if lo > hi {
                            return Err(at(format!("min {lo} is larger than max {hi}")));
                        }
                    }
                    if rule.allowed.is_some() {
                        return Err(at(
                            "`allowed` is for render modes; use min/max for numbers".into()
                        ));
                    }
                }
                KnobKind::RenderMode | KnobKind::RenderModeMap => {
                    if rule.min.is_some()
                        || rule.max.is_some()
                        || rule.max_step_ratio.is_some()
                        || rule.max_step_abs.is_some()
                    {
                        return Err(at("min/max/max_step_* apply to numbers only".into()));
                    }
                    for mode in rule.allowed.iter().flatten() {
                        knobs::RenderMode::parse(mode).map_err(|e| at(format!("allowed: {e}")))?;
                    }
                }
            }
            if let Some(r) = rule.max_step_ratio {
                if !(r >= 1.0 && r.is_finite()) {
                    return Err(at(format!("max_step_ratio = {r} must be at least 1")));
                }
            }
            if let Some(a) = rule.max_step_abs {
                if !(a > 0.0 && a.is_finite()) {
                    return Err(at(format!("max_step_abs = {a} must be positive")));
                }
            }
        }
        Ok(Guard { file })
    }

    /// The shipped `policies/guardrails.toml`, compiled in: the guard when
    /// `[service] guardrails` names no file (an empty guard would leave the
    /// controller nothing it may change).
    pub fn builtin() -> Guard {
        Guard::from_toml(BUILTIN, "<built-in policies/guardrails.toml>")
            .expect("the shipped guardrails are valid (tested)")
    }

    /// Loads a guardrails file.
    pub fn load(path: &Path) -> Result<Guard, GuardError> {
        let text = std::fs::read_to_string(path).map_err(|e| GuardError {
            origin: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Guard::from_toml(&text, &path.display().to_string())
    }

    /// Re-reads `path`; on error the caller keeps `self` (and reports it).
    pub fn reload(&self, path: &Path) -> Result<Guard, GuardError> {
        Guard::load(path)
    }

    /// The global limits.
    pub fn global(&self) -> &Global {
        &self.file.global
    }

    /// The freeze window `unix_secs` falls in, if any.
    pub fn frozen_at(&self, unix_secs: u64) -> Option<&FreezeWindow> {
        let minute = ((unix_secs % 86_400) / 60) as u32;
        self.file
            .global
            .freeze_windows
            .iter()
            .find(|w| w.contains(minute))
    }

    /// The rules (for the LLM prompt: "the guard's limits").
    pub fn file(&self) -> &GuardFile {
        &self.file
    }

    /// Judges a policy's proposal against the knobs in force: a knob the
    /// file does not name is refused (deny by default). `since_change(knob)`
    /// gives the seconds since that knob last changed (None: never).
    pub fn check(
        &self,
        proposal: &[Change],
        current: &Knobs,
        since_change: impl Fn(&str) -> Option<u64>,
    ) -> Vec<Verdict> {
        self.check_as(proposal, current, since_change, Checked::Automatic)
    }

    /// Judges an operator's change (admin API without `force`): like
    /// [`check`](Self::check), but a knob the file does not name is open
    /// within its structural limits (a person decided, and it is audited).
    pub fn check_operator(
        &self,
        proposal: &[Change],
        current: &Knobs,
        since_change: impl Fn(&str) -> Option<u64>,
    ) -> Vec<Verdict> {
        self.check_as(proposal, current, since_change, Checked::Operator)
    }

    /// Judges a queued proposal a person approves, against the knobs in
    /// force now: like [`check_operator`](Self::check_operator), except that
    /// the `approval` rule is met.
    pub fn check_approved(
        &self,
        proposal: &[Change],
        current: &Knobs,
        since_change: impl Fn(&str) -> Option<u64>,
    ) -> Vec<Verdict> {
        self.check_as(proposal, current, since_change, Checked::Approved)
    }

    fn check_as(
        &self,
        proposal: &[Change],
        current: &Knobs,
        since_change: impl Fn(&str) -> Option<u64>,
        who: Checked,
    ) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(proposal.len());
        let mut accepted = 0usize;
        let mut seen = std::collections::HashSet::new();
        for change in proposal {
            let verdict = self.check_one(change, current, &since_change, accepted, &mut seen, who);
            if !matches!(verdict, Verdict::Rejected { .. }) {
                accepted += 1;
            }
            verdicts.push(verdict);
        }
        verdicts
    }

    fn check_one(
        &self,
        change: &Change,
        current: &Knobs,
        since_change: &impl Fn(&str) -> Option<u64>,
        accepted: usize,
        seen: &mut std::collections::HashSet<String>,
        who: Checked,
    ) -> Verdict {
        let reject = |reason: String| rejected(change, reason);
        let Some(spec) = knobs::spec(&change.knob) else {
            return reject(format!("unknown knob `{}`", change.knob));
        };
        if let Err(e) = knobs::check_value(spec, &change.value) {
            return reject(e.to_string());
        }
        if !seen.insert(change.knob.clone()) {
            return reject("the proposal changes this knob twice".into());
        }
        if accepted >= self.file.global.max_changes_per_decision {
            return reject(format!(
                "more than {} changes in one decision",
                self.file.global.max_changes_per_decision
            ));
        }
        let rule = match self.file.knobs.get(&change.knob) {
            Some(rule) => rule.clone(),
            None if who == Checked::Automatic => {
                return reject(format!(
                    "`{}` has no [knobs.\"{}\"] table in the guardrails: automatic changes are denied by default (an operator can still change it through the admin API)",
                    change.knob, change.knob
                ))
            }
            None => KnobRule::default(),
        };
        if rule.frozen {
            return reject("the knob is frozen by policy".into());
        }
        let awaits = rule.approval && who == Checked::Automatic;
        if rule.approval && who == Checked::Operator {
            return reject(
                "changes to this knob need a person's approval: approve a queued proposal (`freshet approvals`), or send it with \"force\": true".into(),
            );
        }
        if rule.cooldown_s > 0 {
            if let Some(s) = since_change(&change.knob) {
                if s < rule.cooldown_s {
                    return reject(format!(
                        "in cooldown: changed {s} s ago, cooldown {} s",
                        rule.cooldown_s
                    ));
                }
            }
        }
        let old = current.get(&change.knob).unwrap_or(Value::Null);
        let verdict = match spec.kind {
            KnobKind::RenderMode | KnobKind::RenderModeMap => check_render(change, &rule),
            KnobKind::Integer | KnobKind::Number => check_number(change, &rule, spec.kind, &old),
        };
        const WAITS: &str = "changes to this knob need a person's approval: queued for one (`freshet approvals list`)";
        match verdict {
            Verdict::Accepted { knob, value } if awaits => Verdict::AwaitingApproval {
                knob,
                proposed: change.value.clone(),
                value,
                reason: WAITS.into(),
            },
            Verdict::Clamped {
                knob,
                proposed,
                value,
                reason,
            } if awaits => Verdict::AwaitingApproval {
                knob,
                proposed,
                value,
                reason: format!("{WAITS}; {reason}"),
            },
            other => other,
        }
    }
}

/// `change` refused, with why.
fn rejected(change: &Change, reason: String) -> Verdict {
    Verdict::Rejected {
        knob: change.knob.clone(),
        proposed: change.value.clone(),
        reason,
    }
}

/// `change` accepted as proposed.
fn accepted(change: &Change) -> Verdict {
    Verdict::Accepted {
        knob: change.knob.clone(),
        value: change.value.clone(),
    }
}

/// A render-mode change against the rule's `allowed` modes.
fn check_render(change: &Change, rule: &KnobRule) -> Verdict {
    let reject = |reason: String| rejected(change, reason);
    if let Some(allowed) = &rule.allowed {
        let modes: Vec<&str> = match &change.value {
            Value::String(s) => vec![s.as_str()],
            Value::Object(m) => m.values().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        if let Some(bad) = modes.iter().find(|m| !allowed.iter().any(|a| a == *m)) {
            return reject(format!(
                "render mode `{bad}` is not allowed (allowed: {})",
                allowed.join(", ")
            ));
        }
    }
    accepted(change)
}

/// A numeric change against the rule's bounds (rejected outside them) and
/// step limits (clamped to them), from the knob's `old` value.
fn check_number(change: &Change, rule: &KnobRule, kind: KnobKind, old: &Value) -> Verdict {
    let reject = |reason: String| rejected(change, reason);
    let new = change
        .value
        .as_f64()
        .expect("check_value accepted a number");
    if let Some(lo) = rule.min {
        if new < lo {
            return reject(format!("{new} is below the policy minimum {lo}"));
        }
    }
    if let Some(hi) = rule.max {
        if new > hi {
            return reject(format!("{new} is above the policy maximum {hi}"));
        }
    }
    let Some(old) = old.as_f64() else {
        return accepted(change);
    };
    let mut lo = f64::NEG_INFINITY;
    let mut hi = f64::INFINITY;
    if let Some(r) = rule.max_step_ratio {
        lo = lo.max(old / r);
        hi = hi.min(old * r);
    }
    if let Some(a) = rule.max_step_abs {
        lo = lo.max(old - a);
        hi = hi.min(old + a);
    }
    let mut clamped = new.clamp(lo.min(hi), hi.max(lo));
    if kind == KnobKind::Integer {
        // Round towards the old value so the step never exceeds the limit,
        // but move at least one unit when the proposal moves.
        clamped = if clamped > old {
            clamped.floor().max(old + 1.0).min(new)
        } else {
            clamped.ceil().min(old - 1.0).max(new)
        };
        if new == old {
            clamped = old;
        }
    }
    if (clamped - new).abs() < 1e-12 {
        accepted(change)
    } else {
        let value = if kind == KnobKind::Integer {
            Value::from(clamped as i64)
        } else {
            serde_json::Number::from_f64(clamped)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        };
        Verdict::Clamped {
            knob: change.knob.clone(),
            proposed: change.value.clone(),
            value,
            reason: format!(
                "step from {old} to {new} is larger than the policy allows; moved to {clamped}"
            ),
        }
    }
}

#[cfg(test)]
mod freeze_tests {
    use super::*;

    #[test]
    fn freeze_windows_are_validated_and_matched() {
        let g = Guard::from_toml(
            "[global]\nfreeze_windows = [{start = \"23:30\", end = \"01:00\"}, {start = \"12:00\", end = \"12:15\"}]",
            "t",
        )
        .unwrap();
        let at = |h: u64, m: u64| 86_400 * 20_000 + h * 3600 + m * 60;
        assert!(g.frozen_at(at(23, 45)).is_some());
        assert!(g.frozen_at(at(0, 59)).is_some());
        assert!(g.frozen_at(at(1, 0)).is_none());
        assert!(g.frozen_at(at(12, 10)).is_some());
        assert!(g.frozen_at(at(12, 15)).is_none());
        for bad in ["25:00", "1:00", "12:60", "noon"] {
            let text =
                format!("[global]\nfreeze_windows = [{{start = \"{bad}\", end = \"13:00\"}}]");
            let e = Guard::from_toml(&text, "t").unwrap_err();
            assert!(e.message.contains("HH:MM"), "{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const POLICY: &str = r#"
[global]
max_changes_per_decision = 3

[knobs."extract.slots"]
min = 1
max = 64
max_step_ratio = 2.0
max_step_abs = 16
cooldown_s = 30

[knobs."extract.render_mode"]
allowed = ["http", "remote"]

[knobs."transform.min_quality"]
approval = true

[knobs."search.slots"]
[knobs."embed.slots"]
[knobs."index.slots"]
[knobs."embed.batch_size"]
"#;

    fn guard() -> Guard {
        Guard::from_toml(POLICY, "test").unwrap()
    }

    #[test]
    fn the_shipped_policy_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/guardrails.toml");
        Guard::load(&path).unwrap();
    }

    #[test]
    fn verdicts_accept_clamp_and_reject_with_reasons() {
        let g = guard();
        let k = Knobs::default(); // extract.slots = 8
        let never = |_: &str| None;
        let v = g.check(&[Change::new("extract.slots", 12)], &k, never);
        assert_eq!(
            v[0],
            Verdict::Accepted {
                knob: "extract.slots".into(),
                value: json!(12)
            }
        );
        let v = g.check(&[Change::new("extract.slots", 40)], &k, never);
        assert!(
            matches!(&v[0], Verdict::Clamped { value, .. } if *value == json!(16)),
            "{v:?}"
        );
        let v = g.check(&[Change::new("extract.slots", 1)], &k, never);
        assert!(
            matches!(&v[0], Verdict::Clamped { value, .. } if *value == json!(4)),
            "{v:?}"
        );
        let cases = [
            (Change::new("extract.slots", 0), "within"),
            (Change::new("extract.slots", 65), "policy maximum"),
            (Change::new("extract.slots", "12"), "whole number"),
            (Change::new("extract.slots", 12.5), "whole number"),
            (Change::new("extract.widen_limits", 1), "unknown knob"),
            (Change::new("extract.render_mode", 7), "render mode"),
            // Out of bounds is refused before any approval is asked for.
            (Change::new("transform.min_quality", 1.5), "within"),
        ];
        for (change, needle) in cases {
            let v = g.check(std::slice::from_ref(&change), &k, never);
            match &v[0] {
                Verdict::Rejected { reason, .. } => {
                    assert!(reason.contains(needle), "{change:?}: {reason}")
                }
                other => panic!("{change:?} was not rejected: {other:?}"),
            }
        }
        let v = g.check(&[Change::new("extract.slots", 12)], &k, |_| Some(5));
        assert!(matches!(&v[0], Verdict::Rejected { reason, .. } if reason.contains("cooldown")));
    }

    #[test]
    fn approval_knobs_wait_for_a_person_and_operators_must_approve_or_force() {
        let g = guard();
        let k = Knobs::default();
        let change = [Change::new("transform.min_quality", 0.3)];
        match &g.check(&change, &k, |_| None)[0] {
            Verdict::AwaitingApproval {
                knob,
                value,
                reason,
                ..
            } => {
                assert_eq!(knob, "transform.min_quality");
                assert_eq!(*value, json!(0.3));
                assert!(reason.contains("approval"), "{reason}");
            }
            other => panic!("a policy's change of an approval knob: {other:?}"),
        }
        assert_eq!(g.check(&change, &k, |_| None)[0].change(), None);
        match &g.check_operator(&change, &k, |_| None)[0] {
            Verdict::Rejected { reason, .. } => assert!(reason.contains("force"), "{reason}"),
            other => panic!("an operator's unforced change of an approval knob: {other:?}"),
        }
        assert!(matches!(
            &g.check_approved(&change, &k, |_| None)[0],
            Verdict::Accepted { value, .. } if *value == json!(0.3)
        ));
        // Approval does not lift the other rules.
        let shipped = Guard::builtin();
        let frozen = Guard::from_toml(
            "[knobs.\"transform.min_quality\"]\napproval = true\nfrozen = true\nmax = 0.5\n",
            "t",
        )
        .unwrap();
        for g in [&shipped, &frozen] {
            let v = g.check_approved(&[Change::new("transform.min_quality", 2.0)], &k, |_| None);
            assert!(matches!(&v[0], Verdict::Rejected { .. }), "{v:?}");
        }
        let v = frozen.check_approved(&change, &k, |_| None);
        assert!(matches!(&v[0], Verdict::Rejected { reason, .. } if reason.contains("frozen")));
        assert_eq!(shipped.global().approval_expiry_s, 3600);
        let e = Guard::from_toml("[global]\napproval_expiry_s = 0\n", "t").unwrap_err();
        assert!(e.message.contains("approval_expiry_s"), "{e}");
    }

    #[test]
    fn knobs_the_file_does_not_name_are_closed_to_policies_only() {
        let g = guard();
        let k = Knobs::default();
        let change = [Change::new("source.max_in_flight", 1_000_000)];
        match &g.check(&change, &k, |_| None)[0] {
            Verdict::Rejected { reason, .. } => {
                assert!(reason.contains("denied by default"), "{reason}")
            }
            other => panic!("a policy changed an unlisted knob: {other:?}"),
        }
        // An operator may, within the knob's structural limits.
        assert!(matches!(
            &g.check_operator(&change, &k, |_| None)[0],
            Verdict::Accepted { .. }
        ));
        // An empty file leaves a policy nothing at all.
        let empty = Guard::from_toml("", "t").unwrap();
        let v = empty.check(&[Change::new("extract.slots", 9)], &k, |_| None);
        assert!(matches!(&v[0], Verdict::Rejected { .. }), "{v:?}");
    }

    #[test]
    fn the_shipped_file_bounds_every_knob() {
        let g = Guard::builtin();
        for spec in knobs::SPECS {
            let rule = g.file().knobs.get(spec.path).unwrap_or_else(|| {
                panic!("policies/guardrails.toml has no [knobs.\"{}\"]", spec.path)
            });
            if rule.approval || rule.frozen {
                continue;
            }
            match spec.kind {
                KnobKind::Integer | KnobKind::Number => assert!(
                    rule.min.is_some() && rule.max.is_some(),
                    "{}: a policy may change it, so it needs min and max",
                    spec.path
                ),
                KnobKind::RenderMode | KnobKind::RenderModeMap => {
                    assert!(rule.allowed.is_some(), "{}", spec.path)
                }
            }
        }
        // The bounds are tighter than the code's for the knobs that hurt
        // most when pushed to the structural maximum.
        let in_flight = &g.file().knobs["source.max_in_flight"];
        assert!(in_flight.max.unwrap() <= 100_000.0);
    }

    #[test]
    fn per_decision_limit_and_duplicates() {
        let g = guard();
        let k = Knobs::default();
        let proposal = [
            Change::new("search.slots", 5),
            Change::new("search.slots", 6),
            Change::new("embed.slots", 3),
            Change::new("index.slots", 3),
            Change::new("embed.batch_size", 64),
        ];
        let v = g.check(&proposal, &k, |_| None);
        let rejected: Vec<_> = v
            .iter()
            .filter(|v| matches!(v, Verdict::Rejected { .. }))
            .collect();
        assert_eq!(rejected.len(), 2, "{v:?}");
        assert!(matches!(&v[1], Verdict::Rejected { reason, .. } if reason.contains("twice")));
        assert!(
            matches!(&v[4], Verdict::Rejected { reason, .. } if reason.contains("more than 3"))
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_field() {
        for (text, needle) in [
            ("[knobs.\"extract.slotz\"]\nmin = 1\n", "unknown knob"),
            (
                "[knobs.\"extract.slots\"]\nmin = 10\nmax = 5\n",
                "larger than max",
            ),
            (
                "[knobs.\"extract.slots\"]\nmax = 5000\n",
                "outside what the code supports",
            ),
            (
                "[knobs.\"extract.slots\"]\nmax_step_ratio = 0.5\n",
                "at least 1",
            ),
            (
                "[knobs.\"extract.render_mode\"]\nallowed = [\"warp\"]\n",
                "unknown render mode",
            ),
            ("[global]\nmax_changes_per_decision = 0\n", "at least 1"),
            ("[global]\nsurprise = 1\n", "unknown field"),
        ] {
            let err = Guard::from_toml(text, "g.toml").unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
