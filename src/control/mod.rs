//! The control plane (docs/ARCHITECTURE.md §4-5): the controller loop and what it uses.
//!
//! - [`observe`]: windowed statistics from the metrics tap -> `Observation`;
//! - [`policy`]: what to change next (heuristic, LLM);
//! - [`guard`]: `policies/guardrails.toml`, which every change must pass;
//! - [`rollout`]: apply (audit first, then swap), bake, commit or roll back;
//! - [`audit`]: the hash-chained change-audit log every decision lands in;
//! - [`approvals`]: proposals that wait for a person (`approval = true`).
//!
//! Every interval the [`Controller`] closes an observation window, then:
//!
//! 1. if a change is baking, judges it (commit, roll back, or keep baking)
//!    and proposes nothing else, so every outcome is attributable to one
//!    change; unless an upstream started refusing work, which ends the
//!    bake early ([`rollout`]) and goes on to 2;
//! 2. otherwise asks its policy for a proposal (the heuristic answers when
//!    the policy fails, and the failure is recorded);
//! 3. runs the proposal through the guard and the credits budget;
//! 4. records the proposal and the verdicts, and in `auto` mode applies
//!    what passed and starts its bake (in `shadow` mode it stops at the
//!    record).
//!
//! [`ControlState`] is shared with the admin API: both go through the same
//! change lock, guard, cooldown clock and audit log, so an operator's
//! override and the controller's decision can never interleave.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::control::approvals::{ApprovalError, Approvals, Pending, Proposed, Resolution};
use crate::control::audit::{AuditLog, Event, EventKind, Record};
use crate::control::guard::{Guard, Verdict};
use crate::control::observe::{Observation, Observer};
use crate::control::policy::heuristic::Heuristic;
use crate::control::policy::{Context, Decision, Outcome, Policy, PolicyEvent, Proposal};
use crate::control::rollout::{Bake, Figures, Judgement};
use crate::knobs::{Change, KnobDiff, RenderMode};
use crate::live::{LiveConfig, Snapshot, Swapped};
use crate::metrics;
use crate::settings::ControllerMode;

pub mod approvals;
pub mod audit;
pub mod guard;
pub mod observe;
pub mod policy;
pub mod rollout;

/// What the controller and the admin API share.
#[derive(Debug)]
pub struct ControlState {
    /// Live knobs.
    pub live: Arc<LiveConfig>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// Serializes every change (admin calls and the controller).
    pub change_lock: tokio::sync::Mutex<()>,
    /// Proposals waiting for a person's approval.
    pub approvals: Approvals,
    guard: RwLock<Guard>,
    guard_file: Option<(PathBuf, Mutex<Option<SystemTime>>)>,
    last_change: Mutex<HashMap<String, Instant>>,
    paused: AtomicBool,
    time_scale: f64,
}

impl ControlState {
    /// State over `live` with `guard` (loaded from `guard_path`, which is
    /// re-read when it changes), writing to `audit`.
    pub fn new(
        live: Arc<LiveConfig>,
        guard: Guard,
        guard_path: Option<PathBuf>,
        audit: Arc<AuditLog>,
    ) -> ControlState {
        let guard_file = guard_path.map(|p| {
            let mtime = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, Mutex::new(mtime))
        });
        // Registered at 0 (not set: another state in the same process may
        // be paused), so the series exists before any pause.
        metrics::gauge!(metrics::CONTROLLER_PAUSED).increment(0.0);
        ControlState {
            live,
            audit,
            change_lock: tokio::sync::Mutex::new(()),
            approvals: Approvals::default(),
            guard: RwLock::new(guard),
            guard_file,
            last_change: Default::default(),
            paused: AtomicBool::new(false),
            time_scale: 1.0,
        }
    }

    /// Counts cooldowns in scenario time: `scale` seconds per real second
    /// (the simulator's time-scaled runs compress every duration alike).
    pub fn with_time_scale(mut self, scale: f64) -> ControlState {
        self.time_scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        self
    }

    /// The guard in force.
    pub fn guard(&self) -> Guard {
        self.guard.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Seconds since each knob last changed (scenario time).
    pub fn since_change(&self) -> impl Fn(&str) -> Option<u64> {
        let last = self
            .last_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let scale = self.time_scale;
        move |k: &str| {
            last.get(k)
                .map(|t| (t.elapsed().as_secs_f64() * scale) as u64)
        }
    }

    /// Starts the cooldown clock of every knob in `diff`.
    pub fn note_changed(&self, diff: &[KnobDiff]) {
        let now = Instant::now();
        let mut last = self.last_change.lock().unwrap_or_else(|p| p.into_inner());
        for d in diff {
            last.insert(d.knob.clone(), now);
        }
    }

    /// Whether an operator paused the controller.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pauses or resumes; returns whether the state changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        metrics::gauge!(metrics::CONTROLLER_PAUSED).set(if paused { 1.0 } else { 0.0 });
        self.paused.swap(paused, Ordering::SeqCst) != paused
    }

    /// Expires the approvals whose time is up (audited); returns how many.
    pub async fn expire_approvals(&self) -> usize {
        let _serial = self.change_lock.lock().await;
        self.approvals
            .expire(&self.audit, crate::dataplane::task::now_ms())
    }

    /// The proposals waiting for approval (expired ones dropped first).
    pub async fn pending_approvals(&self) -> Vec<Pending> {
        self.expire_approvals().await;
        self.approvals.list()
    }

    /// Approves queued proposal `id` for `operator`: checked again, applied
    /// (audited), and baked by the controller at its next window.
    pub async fn approve(
        &self,
        id: u64,
        operator: &str,
    ) -> Result<(Record, Swapped), ApprovalError> {
        let _serial = self.change_lock.lock().await;
        self.approvals
            .expire(&self.audit, crate::dataplane::task::now_ms());
        let (record, swapped) = self.approvals.approve(
            &self.live,
            &self.audit,
            &self.guard(),
            self.since_change(),
            id,
            operator,
        )?;
        self.note_changed(&swapped.diff);
        Ok((record, swapped))
    }

    /// Rejects queued proposal `id` with `operator`'s `reason` (audited).
    pub async fn reject_approval(
        &self,
        id: u64,
        operator: &str,
        reason: &str,
    ) -> Result<Record, ApprovalError> {
        let _serial = self.change_lock.lock().await;
        self.approvals
            .expire(&self.audit, crate::dataplane::task::now_ms());
        self.approvals.reject(&self.audit, id, operator, reason)
    }

    /// Re-reads the guardrails file when it changed on disk. A bad edit
    /// keeps the guard in force and is returned as an error message (once
    /// per edit).
    pub fn reload_guard(&self) -> Option<Result<PathBuf, String>> {
        let (path, seen) = self.guard_file.as_ref()?;
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == mtime {
                return None;
            }
            *seen = mtime;
        }
        let current = self.guard();
        match current.reload(path) {
            Ok(g) => {
                *self.guard.write().unwrap_or_else(|p| p.into_inner()) = g;
                Some(Ok(path.clone()))
            }
            Err(e) => Some(Err(format!("{e}; the previous guardrails stay in force"))),
        }
    }
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// `off`, `shadow` or `auto`.
    pub mode: ControllerMode,
    /// Length of one observation window.
    pub interval: Duration,
    /// Gauge samples per window.
    pub samples: u32,
    /// Observations and decisions kept for the policy's context.
    pub history: usize,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            mode: ControllerMode::Auto,
            interval: Duration::from_secs(10),
            samples: 4,
            history: 12,
        }
    }
}

/// What the controller did so far (for the demo's summary, the bench and
/// `GET /v1/controller`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ControllerReport {
    /// Windows observed.
    pub windows: u64,
    /// Proposals with at least one change.
    pub proposals: u64,
    /// Changes applied (decisions, not knobs).
    pub applied: u64,
    /// Proposals the guard refused entirely.
    pub rejected: u64,
    /// Applied changes undone after their bake.
    pub rolled_back: u64,
    /// Applied changes kept.
    pub committed: u64,
    /// Changes rolled back one after another since the last one kept
    /// (`freshet_controller_rollbacks_in_a_row`).
    pub rollbacks_in_a_row: u64,
    /// Kept, but delivered too little of the expected gain.
    pub ineffective: u64,
    /// Policy failures (the heuristic answered instead).
    pub policy_errors: u64,
    /// Guard verdicts that clamped or rejected a change.
    pub guard_interventions: u64,
    /// Recent decisions with outcomes, oldest first.
    pub decisions: Vec<Decision>,
    /// The last observation.
    pub last: Option<Observation>,
    /// Recent observations, oldest first (as many as `history`).
    pub recent: Vec<Observation>,
}

/// The controller loop.
#[derive(Debug)]
pub struct Controller {
    state: Arc<ControlState>,
    policy: Arc<dyn Policy>,
    fallback: Heuristic,
    observer: Observer,
    opts: ControllerOptions,
    recent: VecDeque<Observation>,
    decisions: VecDeque<Decision>,
    bake: Option<Bake>,
    leader: Option<Arc<AtomicBool>>,
    report: Arc<Mutex<ControllerReport>>,
}

impl Controller {
    /// A controller over `state` asking `policy`; its first window starts now.
    pub fn new(
        state: Arc<ControlState>,
        policy: Arc<dyn Policy>,
        opts: ControllerOptions,
    ) -> Controller {
        let observer = Observer::new(state.live.clone());
        Controller {
            state,
            policy,
            fallback: Heuristic,
            observer,
            opts,
            recent: VecDeque::new(),
            decisions: VecDeque::new(),
            bake: None,
            leader: None,
            report: Default::default(),
        }
    }

    /// Uses `observer` instead of the process-wide one (tests).
    pub fn with_observer(mut self, observer: Observer) -> Controller {
        self.observer = observer;
        self
    }

    /// Decides only while `leader` is true (one controller per cluster).
    pub fn with_leader(mut self, leader: Arc<AtomicBool>) -> Controller {
        self.leader = Some(leader);
        self
    }

    /// A live view of what the controller did.
    pub fn report(&self) -> Arc<Mutex<ControllerReport>> {
        self.report.clone()
    }

    /// Runs until `shutdown` completes. Each window is observed in full
    /// (with gauge samples) and then decided on; a decision that panics is
    /// counted and logged, and the loop goes on.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        use futures::FutureExt;
        // Every outcome's series exists from the start (at 0), so `rate()`
        // and `increase()` see the first decision of each kind, and the
        // alert gauges read 0 rather than nothing.
        for outcome in [
            "applied",
            "rejected",
            "rolled_back",
            "committed",
            "ineffective",
            "policy_error",
            "shadow",
            "awaiting_approval",
        ] {
            metrics::counter!(metrics::CONTROLLER_DECISIONS_TOTAL, "policy" => self.policy.name().to_string(), "outcome" => outcome)
                .increment(0);
        }
        metrics::gauge!(metrics::CONTROLLER_ROLLBACKS_IN_A_ROW).increment(0.0);
        tokio::pin!(shutdown);
        let tick = self.opts.interval / self.opts.samples.max(1);
        let mut ticker = tokio::time::interval_at(Instant::now() + tick, tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            n += 1;
            if n < self.opts.samples.max(1) {
                self.observer.sample();
                continue;
            }
            n = 0;
            let step = std::panic::AssertUnwindSafe(self.step())
                .catch_unwind()
                .await;
            if step.is_err() {
                metrics::counter!(metrics::CONTROLLER_DECISIONS_TOTAL, "policy" => "controller", "outcome" => "panic")
                    .increment(1);
                tracing::error!("a control decision panicked; the controller goes on");
                self.bake = None;
            }
        }
    }

    /// Closes the window and makes one decision.
    pub async fn step(&mut self) {
        let started = std::time::Instant::now();
        let obs = self.observer.observe();
        self.decide(obs).await;
        metrics::histogram!(metrics::CONTROLLER_DECISION_SECONDS)
            .record(started.elapsed().as_secs_f64());
    }

    fn audit(&self, kind: EventKind, event: Event) -> Option<u64> {
        match self.state.audit.append(kind, event) {
            Ok(r) => Some(r.seq),
            Err(e) => {
                metrics::record_error("controller", "audit", &e);
                None
            }
        }
    }

    fn count(&self, policy: &str, outcome: &'static str) {
        metrics::counter!(metrics::CONTROLLER_DECISIONS_TOTAL, "policy" => policy.to_string(), "outcome" => outcome)
            .increment(1);
    }

    fn remember(&mut self, decision: Decision) {
        self.decisions.push_back(decision);
        while self.decisions.len() > self.opts.history {
            self.decisions.pop_front();
        }
    }

    fn set_outcome(&mut self, seq: u64, outcome: Outcome, after: Option<f64>) {
        if let Some(d) = self.decisions.iter_mut().rev().find(|d| d.seq == seq) {
            d.outcome = outcome;
            d.goodput_after = after;
        }
    }

    async fn decide(&mut self, obs: Observation) {
        // Policy events (prompt reloads) and guard reloads are recorded
        // whatever the mode.
        for event in self.policy.events() {
            let (kind, detail, actor) = match event {
                PolicyEvent::PromptReloaded {
                    path,
                    sha256,
                    previous,
                } => (
                    EventKind::PromptReloaded,
                    format!("{path}: prompt {previous} -> {sha256}"),
                    self.policy.actor(),
                ),
                PolicyEvent::PromptRejected { path, error } => (
                    EventKind::PolicyError,
                    format!("{path}: {error}; the previous prompt stays in force"),
                    self.policy.actor(),
                ),
            };
            self.audit(
                kind,
                Event {
                    actor,
                    detail,
                    ..Default::default()
                },
            );
        }
        match self.state.reload_guard() {
            Some(Ok(path)) => {
                self.audit(
                    EventKind::GuardReloaded,
                    Event {
                        actor: json!({"guardrails": path.display().to_string()}),
                        detail: format!("guardrails reloaded from {}", path.display()),
                        ..Default::default()
                    },
                );
            }
            Some(Err(message)) => {
                self.audit(
                    EventKind::PolicyError,
                    Event {
                        actor: json!({"guardrails": "reload"}),
                        detail: message,
                        ..Default::default()
                    },
                );
            }
            None => {}
        }
        self.state.expire_approvals().await;
        let adopted = self.follow_approvals();
        {
            let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
            r.windows += 1;
            r.last = Some(obs.clone());
        }
        let leading = self
            .leader
            .as_ref()
            .is_none_or(|l| l.load(Ordering::SeqCst));
        if self.opts.mode == ControllerMode::Off || self.state.paused() || !leading {
            if let Some(bake) = self.bake.take() {
                self.set_outcome(bake.seq, Outcome::Superseded, None);
            }
            self.push_recent(obs);
            self.publish();
            return;
        }
        if adopted {
            // The approval fell inside this window: it is neither the
            // baseline nor the change's effect. Judging starts next window.
            self.push_recent(obs);
            self.publish();
            return;
        }
        if let Some(bake) = self.bake.take() {
            match bake.preempted_by(&obs) {
                Some(why) => {
                    // The upstream started refusing work: the bake's
                    // comparison no longer says anything about the change,
                    // and waiting it out keeps the load that is refused.
                    tracing::info!(version = bake.version, %why, "controller: bake ended early");
                    self.set_outcome(bake.seq, Outcome::Superseded, None);
                }
                None => {
                    self.bake = Some(bake);
                    self.judge(&obs).await;
                    self.push_recent(obs);
                    self.publish();
                    return;
                }
            }
        }
        self.propose(&obs).await;
        self.push_recent(obs);
        self.publish();
    }

    /// Follows the approval queue: an approved change becomes the bake
    /// (ending one that was running: the knobs moved under it), rejected
    /// and expired ones update the decision history. Returns whether a
    /// bake was adopted.
    fn follow_approvals(&mut self) -> bool {
        let mut adopted = false;
        for resolution in self.state.approvals.take_resolved() {
            match resolution {
                Resolution::Rejected { id } => self.set_outcome(id, Outcome::Rejected, None),
                Resolution::Expired { id } => self.set_outcome(id, Outcome::Expired, None),
                Resolution::Approved(a) => {
                    if let Some(bake) = self.bake.take() {
                        self.set_outcome(bake.seq, Outcome::Superseded, None);
                    }
                    // Baseline: the windows before the approval's.
                    let windows: Vec<&Observation> = self.recent.iter().rev().take(3).collect();
                    let baseline = Figures::mean(&windows);
                    match self.decisions.iter_mut().rev().find(|d| d.seq == a.id) {
                        Some(d) => {
                            d.seq = a.applied_seq;
                            d.outcome = Outcome::Baking;
                            d.changes = a.changes.clone();
                            d.goodput_before = baseline.goodput;
                        }
                        None => self.remember(Decision {
                            seq: a.applied_seq,
                            at_ms: crate::dataplane::task::now_ms(),
                            policy: a.policy.clone(),
                            changes: a.changes.clone(),
                            outcome: Outcome::Baking,
                            goodput_before: baseline.goodput,
                            goodput_after: None,
                        }),
                    }
                    self.count(&a.policy, "applied");
                    self.report
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .applied += 1;
                    self.bake = Some(Bake {
                        seq: a.applied_seq,
                        before: a.before,
                        version: a.version,
                        changes: a.changes,
                        policy: a.policy,
                        baseline,
                        expected_gain: a.expected_gain,
                        protective: a.protective,
                        windows: Vec::new(),
                    });
                    adopted = true;
                }
            }
        }
        adopted
    }

    fn push_recent(&mut self, obs: Observation) {
        self.recent.push_back(obs);
        while self.recent.len() > self.opts.history {
            self.recent.pop_front();
        }
    }

    fn publish(&self) {
        let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
        r.decisions = self.decisions.iter().cloned().collect();
        r.recent = self.recent.iter().cloned().collect();
    }

    async fn judge(&mut self, obs: &Observation) {
        let Some(mut bake) = self.bake.take() else {
            return;
        };
        if self.state.live.version() != bake.version {
            // Someone else changed the knobs: the comparison means nothing now.
            self.set_outcome(bake.seq, Outcome::Superseded, None);
            return;
        }
        bake.windows.push(obs.clone());
        let global = self.state.guard().global().clone();
        match bake.judge(&global) {
            Judgement::Continue => self.bake = Some(bake),
            Judgement::Commit {
                ineffective,
                detail,
            } => {
                let after = bake.figures();
                self.audit(
                    EventKind::Committed,
                    Event {
                        from_version: Some(bake.before.version),
                        to_version: Some(bake.version),
                        actor: json!({"policy": bake.policy}),
                        observation: obs.summary(),
                        verdict: json!({"applied_seq": bake.seq, "ineffective": ineffective, "baseline": bake.baseline, "after": after}),
                        detail: if ineffective {
                            format!("ineffective: {detail}")
                        } else {
                            detail
                        },
                        ..Default::default()
                    },
                );
                let outcome = if ineffective {
                    Outcome::Ineffective
                } else {
                    Outcome::Committed
                };
                self.set_outcome(bake.seq, outcome, Some(after.goodput));
                self.count(
                    &bake.policy,
                    if ineffective {
                        "ineffective"
                    } else {
                        "committed"
                    },
                );
                metrics::gauge!(metrics::CONTROLLER_ROLLBACKS_IN_A_ROW).set(0.0);
                let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
                r.committed += 1;
                r.rollbacks_in_a_row = 0;
                r.ineffective += ineffective as u64;
            }
            Judgement::RollBack { reason } => {
                let after = bake.figures();
                let state = self.state.clone();
                let _serial = state.change_lock.lock().await;
                let current = self.state.live.load();
                let result = rollout::apply(
                    &self.state.live,
                    &self.state.audit,
                    &current,
                    bake.before.knobs.clone(),
                    EventKind::RolledBack,
                    Event {
                        actor: json!({"policy": bake.policy, "controller": "bake"}),
                        observation: obs.summary(),
                        verdict: json!({"applied_seq": bake.seq, "baseline": bake.baseline, "after": after}),
                        detail: format!(
                            "rolled back to the knobs of version {}: {reason}",
                            bake.before.version
                        ),
                        ..Default::default()
                    },
                );
                match result {
                    Ok((_, swapped)) => {
                        self.state.note_changed(&swapped.diff);
                        self.set_outcome(bake.seq, Outcome::RolledBack, Some(after.goodput));
                        self.count(&bake.policy, "rolled_back");
                        let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
                        r.rolled_back += 1;
                        r.rollbacks_in_a_row += 1;
                        metrics::gauge!(metrics::CONTROLLER_ROLLBACKS_IN_A_ROW)
                            .set(r.rollbacks_in_a_row as f64);
                        drop(r);
                        tracing::warn!(version = swapped.new.version, %reason, "controller rolled back a change");
                    }
                    Err(e) => {
                        metrics::record_error("controller", "rollback", &e);
                        self.set_outcome(bake.seq, Outcome::Superseded, None);
                    }
                }
            }
        }
    }

    async fn propose(&mut self, obs: &Observation) {
        let guard = self.state.guard();
        let (actor, proposal) = self.ask_policy(obs, &guard).await;
        if proposal.changes.is_empty() {
            tracing::debug!(
                version = self.state.live.version(),
                observation = %obs.summary(),
                rationale = %proposal.rationale,
                "controller: no change this window"
            );
            return;
        }
        let policy_name = actor
            .get("policy")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .proposals += 1;
        let state = self.state.clone();
        let _serial = state.change_lock.lock().await;
        let current = self.state.live.load();
        let mut verdicts = screen(
            &guard,
            obs,
            &proposal.changes,
            &current.knobs,
            self.state.since_change(),
        );
        gate_approvals(&self.state.approvals, &mut verdicts);
        let seq = self.record_verdicts(obs, &actor, &proposal, current.version, &verdicts);
        let accepted: Vec<Change> = verdicts.iter().filter_map(Verdict::change).collect();
        let awaiting: Vec<Change> = verdicts.iter().filter_map(Verdict::awaiting).collect();
        let decision = |seq: u64, changes: Vec<Change>, outcome: Outcome| Decision {
            seq,
            at_ms: obs.at_ms,
            policy: policy_name.clone(),
            changes,
            outcome,
            goodput_before: obs.goodput,
            goodput_after: None,
        };
        if accepted.is_empty() && awaiting.is_empty() {
            self.count(&policy_name, "rejected");
            self.report
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rejected += 1;
            let d = decision(
                seq.unwrap_or(0),
                proposal.changes.clone(),
                Outcome::Rejected,
            );
            self.remember(d);
            return;
        }
        if self.opts.mode == ControllerMode::Shadow {
            self.count(&policy_name, "shadow");
            let changes = accepted.into_iter().chain(awaiting).collect();
            let d = decision(seq.unwrap_or(0), changes, Outcome::Shadow);
            self.remember(d);
            return;
        }
        if !awaiting.is_empty() {
            let queued = self.state.approvals.queue(
                &self.state.audit,
                Proposed {
                    current: &current,
                    actor: &actor,
                    policy: &policy_name,
                    changes: awaiting.clone(),
                    rationale: &proposal.rationale,
                    expected_gain: proposal.expected_gain,
                    observation: obs.summary(),
                    proposal_seq: seq,
                    now_ms: crate::dataplane::task::now_ms(),
                    expiry_s: guard.global().approval_expiry_s,
                },
            );
            match queued {
                Ok(id) => {
                    self.count(&policy_name, "awaiting_approval");
                    let d = decision(id, awaiting, Outcome::AwaitingApproval);
                    self.remember(d);
                    tracing::info!(approval = id, policy = %policy_name, "controller: a proposal waits for approval (freshet approvals list)");
                }
                Err(e) => metrics::record_error("controller", "audit", &e),
            }
        }
        if accepted.is_empty() {
            return;
        }
        let verdict_json = serde_json::to_value(&verdicts).unwrap_or(Value::Null);
        if let Some(seq) = self.apply_accepted(
            obs,
            &actor,
            &policy_name,
            &proposal,
            &current,
            &accepted,
            verdict_json,
        ) {
            let d = decision(seq, accepted, Outcome::Baking);
            self.remember(d);
        }
    }

    /// Asks the policy for a proposal; when it fails, records why and asks
    /// the heuristic. Returns the actor that answered and its proposal.
    async fn ask_policy(&self, obs: &Observation, guard: &Guard) -> (Value, Proposal) {
        let snapshot = self.state.live.load();
        let recent: Vec<Observation> = self.recent.iter().cloned().collect();
        let decisions: Vec<Decision> = self.decisions.iter().cloned().collect();
        let ctx = Context {
            observation: obs,
            recent: &recent,
            knobs: &snapshot.knobs,
            version: snapshot.version,
            guard,
            decisions: &decisions,
        };
        let actor = self.policy.actor();
        match self.policy.propose(&ctx).await {
            Ok(p) => (actor, p),
            Err(e) => {
                self.audit(
                    EventKind::PolicyError,
                    Event {
                        from_version: Some(snapshot.version),
                        actor: actor.clone(),
                        observation: obs.summary(),
                        detail: format!("{e}; the heuristic decides this window"),
                        ..Default::default()
                    },
                );
                self.count(self.policy.name(), "policy_error");
                self.report
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .policy_errors += 1;
                let actor = json!({"policy": self.fallback.name(), "fallback_for": actor});
                let proposal = self
                    .fallback
                    .propose(&ctx)
                    .await
                    .unwrap_or_else(|_| Proposal::none("fallback failed"));
                (actor, proposal)
            }
        }
    }

    /// Records the proposal with its verdicts (and the refusals, if any)
    /// and counts the guard's interventions; returns the proposal's
    /// audit sequence number.
    fn record_verdicts(
        &self,
        obs: &Observation,
        actor: &Value,
        proposal: &Proposal,
        version: u64,
        verdicts: &[Verdict],
    ) -> Option<u64> {
        let interventions = verdicts
            .iter()
            .filter(|v| !matches!(v, Verdict::Accepted { .. }))
            .count() as u64;
        let verdict_json = serde_json::to_value(verdicts).unwrap_or(Value::Null);
        let proposed = serde_json::to_value(&proposal.changes).unwrap_or(Value::Null);
        let seq = self.audit(
            EventKind::Proposal,
            Event {
                from_version: Some(version),
                actor: actor.clone(),
                observation: obs.summary(),
                verdict: json!({"changes": proposed, "verdicts": verdict_json, "expected_gain": proposal.expected_gain}),
                detail: proposal.rationale.clone(),
                ..Default::default()
            },
        );
        let rejected: Vec<&Verdict> = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Rejected { .. }))
            .collect();
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .guard_interventions += interventions;
        if !rejected.is_empty() {
            self.audit(
                EventKind::Rejected,
                Event {
                    from_version: Some(version),
                    actor: actor.clone(),
                    verdict: serde_json::to_value(&rejected).unwrap_or(Value::Null),
                    detail: format!(
                        "the guard refused {} of {} proposed changes",
                        rejected.len(),
                        verdicts.len()
                    ),
                    ..Default::default()
                },
            );
        }
        seq
    }

    /// Applies the accepted changes (audit first, then swap) and starts
    /// their bake; returns the applied record's sequence number (None when
    /// nothing was applied).
    #[allow(clippy::too_many_arguments)]
    fn apply_accepted(
        &mut self,
        obs: &Observation,
        actor: &Value,
        policy_name: &str,
        proposal: &Proposal,
        current: &Arc<Snapshot>,
        accepted: &[Change],
        verdict_json: Value,
    ) -> Option<u64> {
        let knobs = match current.knobs.apply_patch(accepted) {
            Ok(k) => k,
            Err(e) => {
                self.audit(
                    EventKind::Rejected,
                    Event {
                        from_version: Some(current.version),
                        actor: actor.clone(),
                        detail: format!("the accepted changes do not combine: {e}"),
                        ..Default::default()
                    },
                );
                return None;
            }
        };
        let protective = rollout::protective(accepted, &current.knobs);
        let result = rollout::apply(
            &self.state.live,
            &self.state.audit,
            current,
            knobs,
            EventKind::Applied,
            Event {
                actor: actor.clone(),
                observation: obs.summary(),
                verdict: verdict_json,
                detail: proposal.rationale.clone(),
                ..Default::default()
            },
        );
        match result {
            Ok((record, swapped)) => {
                self.state.note_changed(&swapped.diff);
                self.count(policy_name, "applied");
                self.report
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .applied += 1;
                // Baseline: this window and the two before it.
                let mut windows: Vec<&Observation> = self.recent.iter().rev().take(2).collect();
                windows.push(obs);
                self.bake = Some(Bake {
                    seq: record.seq,
                    before: current.clone(),
                    version: swapped.new.version,
                    changes: accepted.to_vec(),
                    policy: policy_name.to_string(),
                    baseline: Figures::mean(&windows),
                    expected_gain: proposal.expected_gain,
                    protective,
                    windows: Vec::new(),
                });
                tracing::info!(version = swapped.new.version, policy = %policy_name, rationale = %proposal.rationale, "controller applied a change");
                Some(record.seq)
            }
            Err(e) => {
                metrics::record_error("controller", "apply", &e);
                None
            }
        }
    }
}

/// The guard's verdicts on `changes`, with the freeze window, held stages
/// and the credits budget applied on top: in a freeze window every change
/// is refused; a stage whose upstream was down in the window
/// ([`Observation::held`]) keeps its knobs; over budget, every change that
/// raises spend is refused.
fn screen(
    guard: &Guard,
    obs: &Observation,
    changes: &[Change],
    knobs: &crate::knobs::Knobs,
    since_change: impl Fn(&str) -> Option<u64>,
) -> Vec<Verdict> {
    let mut verdicts = guard.check(changes, knobs, since_change);
    let unix_secs = obs.at_ms / 1000;
    if let Some(w) = guard.frozen_at(unix_secs) {
        for v in verdicts.iter_mut() {
            if let Some(change) = v.change().or_else(|| v.awaiting()) {
                *v = Verdict::Rejected {
                    knob: change.knob.clone(),
                    proposed: change.value.clone(),
                    reason: format!(
                        "freeze window {}-{} UTC: the controller changes nothing now",
                        w.start, w.end
                    ),
                };
            }
        }
    }
    for v in verdicts.iter_mut() {
        if let Some(change) = v.change().or_else(|| v.awaiting()) {
            let stage = change.knob.split('.').next().unwrap_or_default();
            if obs.held.iter().any(|h| h == stage) {
                *v = Verdict::Rejected {
                    knob: change.knob.clone(),
                    proposed: change.value.clone(),
                    reason: format!(
                        "the {stage} stage's upstream is down (circuit open): its work is held, and the controller changes nothing of it until it is back"
                    ),
                };
            }
        }
    }
    let budget = guard.global().credits_budget_per_minute;
    if obs.credits_per_min > budget {
        for v in verdicts.iter_mut() {
            if let Some(change) = v.change().or_else(|| v.awaiting()) {
                if raises_spend(&change, knobs) {
                    *v = Verdict::Rejected {
                        knob: change.knob.clone(),
                        proposed: change.value.clone(),
                        reason: format!(
                            "credits {:.0}/min are over the budget of {budget:.0}/min: changes that raise spend are refused",
                            obs.credits_per_min
                        ),
                    };
                }
            }
        }
    }
    verdicts
}

/// Refuses the changes awaiting approval that cannot be queued: a knob that
/// already waits in the queue (a policy repeating itself must not fill it)
/// or a full queue.
fn gate_approvals(approvals: &Approvals, verdicts: &mut [Verdict]) {
    let room = approvals.has_room();
    for v in verdicts.iter_mut() {
        let Some(change) = v.awaiting() else { continue };
        let reason = match approvals.waiting_for(&change.knob) {
            Some(id) => format!("a proposal of this knob already waits for approval (#{id})"),
            None if !room => format!(
                "the approval queue is full ({} proposals wait)",
                approvals::MAX_PENDING
            ),
            None => continue,
        };
        let proposed = match v {
            Verdict::AwaitingApproval { proposed, .. } => proposed.clone(),
            _ => change.value.clone(),
        };
        *v = Verdict::Rejected {
            knob: change.knob,
            proposed,
            reason,
        };
    }
}

/// Whether `change` spends more provider credits than the knobs in force:
/// more search slots, or a domain moved to remote rendering.
fn raises_spend(change: &Change, knobs: &crate::knobs::Knobs) -> bool {
    match change.knob.as_str() {
        "search.slots" => change
            .value
            .as_u64()
            .is_some_and(|v| v > knobs.search.slots as u64),
        "extract.render_mode" => change.value.as_str() == Some(RenderMode::Remote.as_str()),
        "extract.render_overrides" => change.value.as_object().is_some_and(|m| {
            m.iter().any(|(d, v)| {
                v.as_str() == Some(RenderMode::Remote.as_str())
                    && knobs.extract.render_overrides.get(d) != Some(&RenderMode::Remote)
            })
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_stage_keeps_its_knobs_and_the_others_may_change() {
        let guard = Guard::builtin();
        let knobs = crate::knobs::Knobs::default();
        let obs = Observation {
            at_ms: 1_700_000_000_000,
            held: vec!["embed".into()],
            ..Default::default()
        };
        let changes = vec![
            Change::new("embed.slots", knobs.embed.slots + 1),
            Change::new("extract.slots", knobs.extract.slots + 1),
        ];
        let verdicts = screen(&guard, &obs, &changes, &knobs, |_| None);
        match &verdicts[0] {
            Verdict::Rejected { knob, reason, .. } => {
                assert_eq!(knob, "embed.slots");
                assert!(reason.contains("circuit open"), "{reason}");
            }
            other => panic!("embed.slots changed while held: {other:?}"),
        }
        assert!(verdicts[1].change().is_some(), "{:?}", verdicts[1]);
        let not_held = Observation {
            held: Vec::new(),
            ..obs
        };
        let verdicts = screen(&guard, &not_held, &changes, &knobs, |_| None);
        assert!(
            verdicts.iter().all(|v| v.change().is_some()),
            "{verdicts:?}"
        );
    }
}
