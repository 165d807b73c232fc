//! Policies: what to change next (docs/ARCHITECTURE.md §4, step 3).
//!
//! A [`Policy`] looks at a [`Context`] (the last observation and a few before
//! it, the knobs in force, the guard's limits and the recent decisions with
//! their outcomes) and returns a [`Proposal`]: knob changes by path, each
//! with a reason, plus a rationale. Proposals are *requests*: the guard
//! judges every change and the rollout bakes what it applies, so a policy
//! never needs to be trusted, and the LLM policy is not.
//!
//! - [`Static`] never changes anything (the bench's `static` baseline).
//! - [`aimd`] moves slots only, by additive increase and multiplicative
//!   decrease (the adaptive-concurrency baseline of the scenario bench).
//! - [`baselines`]: published adaptive controllers (`gradient2`, `vegas`,
//!   `arc`, `envoy-gradient`, `ds2`), each from its source with its
//!   defaults, moving slots only: the yardsticks of the scenario bench.
//! - [`heuristic`] is built in and needs nothing: AIMD on slots, batch sizes
//!   from per-call overhead, retry budgets from the error mix, render
//!   escalation per domain from quality.
//! - [`llm`] asks an OpenAI-compatible chat endpoint, steered by
//!   `prompts/controller.md`; when it fails the controller falls back to the
//!   heuristic and records why.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::control::guard::Guard;
use crate::control::observe::Observation;
use crate::knobs::{Change, Knobs};

pub mod aimd;
pub mod baselines;
pub mod heuristic;
pub mod llm;

/// What a policy wants changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Changes by knob path, each with a reason.
    pub changes: Vec<Change>,
    /// Why, as a whole.
    pub rationale: String,
    /// The relative goodput gain the policy expects (0.2 = +20 %), if it
    /// predicts one; a change that delivers less than the guard's
    /// `ineffective_share` of it is marked ineffective.
    #[serde(default)]
    pub expected_gain: Option<f64>,
}

impl Proposal {
    /// A proposal that changes nothing.
    pub fn none(rationale: impl Into<String>) -> Proposal {
        Proposal {
            rationale: rationale.into(),
            ..Default::default()
        }
    }

    /// The first `max` of `changes`, the rationale their reasons joined
    /// (`idle` when there are none), no predicted gain.
    pub fn from_changes(mut changes: Vec<Change>, max: usize, idle: impl Into<String>) -> Proposal {
        changes.truncate(max.max(1));
        let rationale = if changes.is_empty() {
            idle.into()
        } else {
            changes
                .iter()
                .map(|c| c.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        Proposal {
            changes,
            rationale,
            expected_gain: None,
        }
    }
}

/// How a past decision turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied and still baking.
    Baking,
    /// Survived its bake.
    Committed,
    /// Survived its bake but delivered too little of its expected gain.
    Ineffective,
    /// Undone after it hurt.
    RolledBack,
    /// Refused by the guard.
    Rejected,
    /// Recorded only (shadow mode).
    Shadow,
    /// Superseded by an operator's change before its bake ended.
    Superseded,
    /// Queued for a person's approval (a knob with `approval = true`).
    AwaitingApproval,
    /// Waited for approval until it expired.
    Expired,
}

/// One past decision, as policies see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The audit record of the decision.
    pub seq: u64,
    /// When (Unix ms).
    pub at_ms: u64,
    /// The policy that proposed it.
    pub policy: String,
    /// The changes (as applied, or as proposed when rejected).
    pub changes: Vec<Change>,
    /// How it went.
    pub outcome: Outcome,
    /// Goodput in the window before the change.
    pub goodput_before: f64,
    /// Mean goodput over the bake (None while baking or when not applied).
    pub goodput_after: Option<f64>,
}

/// Everything a policy may look at.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The window that just ended.
    pub observation: &'a Observation,
    /// Earlier windows, oldest first (the current one not included).
    pub recent: &'a [Observation],
    /// The knobs in force.
    pub knobs: &'a Knobs,
    /// Their version.
    pub version: u64,
    /// The guard the proposal must pass.
    pub guard: &'a Guard,
    /// Recent decisions, oldest first.
    pub decisions: &'a [Decision],
}

/// Why a policy gave no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// No answer in time.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The endpoint could not be reached or answered with an error.
    #[error("endpoint error: {0}")]
    Endpoint(String),
    /// The answer did not follow the schema.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// Something a policy reports between decisions (the controller audits it).
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyEvent {
    /// The prompt file changed and was loaded.
    PromptReloaded {
        /// The file.
        path: String,
        /// SHA-256 of the new text.
        sha256: String,
        /// SHA-256 of the text before.
        previous: String,
    },
    /// The prompt file changed but cannot be used; the previous text stays.
    PromptRejected {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
}

/// A source of proposals.
#[async_trait::async_trait]
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// `heuristic`, `llm`, …
    fn name(&self) -> &str;

    /// The actor recorded in audit records: policy name plus, for model
    /// policies, the model and the prompt's SHA-256.
    fn actor(&self) -> Value {
        json!({"policy": self.name()})
    }

    /// Proposes changes for the next interval.
    async fn propose(&self, ctx: &Context<'_>) -> Result<Proposal, PolicyError>;

    /// Events since the last call (prompt reloads and the like).
    fn events(&self) -> Vec<PolicyEvent> {
        Vec::new()
    }
}

/// A policy that never changes anything: the `static` baseline of the
/// scenario bench, and what `mode = "off"` amounts to.
#[derive(Debug, Default, Clone, Copy)]
pub struct Static;

#[async_trait::async_trait]
impl Policy for Static {
    fn name(&self) -> &str {
        "static"
    }

    async fn propose(&self, _ctx: &Context<'_>) -> Result<Proposal, PolicyError> {
        Ok(Proposal::none("static policy: the knobs never change"))
    }
}

/// The policy `[controller] policy` names.
pub fn from_settings(
    settings: &crate::settings::ControllerSettings,
) -> anyhow::Result<std::sync::Arc<dyn Policy>> {
    use crate::settings::PolicyKind as K;
    use std::sync::Arc;
    Ok(match settings.policy {
        K::Heuristic => Arc::new(heuristic::Heuristic),
        K::Llm => Arc::new(llm::LlmPolicy::from_settings(settings)?),
        K::Static => Arc::new(Static),
        K::Aimd => Arc::new(aimd::Aimd),
        K::Gradient2 => Arc::new(baselines::gradient2::Gradient2::default()),
        K::Vegas => Arc::new(baselines::vegas::Vegas::default()),
        K::Arc => Arc::new(baselines::arc::VectorArc::default()),
        K::EnvoyGradient => Arc::new(baselines::envoy::EnvoyGradient::default()),
        K::Ds2 => Arc::new(baselines::ds2::Ds2::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ControllerSettings;

    #[test]
    fn every_built_in_policy_is_selectable_by_name() {
        for name in [
            "heuristic",
            "static",
            "aimd",
            "gradient2",
            "vegas",
            "arc",
            "envoy-gradient",
            "ds2",
        ] {
            let s: ControllerSettings = toml::from_str(&format!("policy = \"{name}\"")).unwrap();
            assert_eq!(from_settings(&s).unwrap().name(), name);
        }
        assert!(toml::from_str::<ControllerSettings>("policy = \"envoy\"").is_err());
    }
}
