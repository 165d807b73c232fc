//! The built-in policy: simple rules over the observation that need no model.
//!
//! In order of priority (a decision carries at most the guard's
//! `max_changes_per_decision` changes, the most urgent first):
//!
//! 1. **Back off** (multiplicative decrease). A slotted stage whose work is
//!    refused or times out (`rate_limited`, `timeout` errors or retries on
//!    more than [`BACKOFF_SHARE`] of its units), or whose median latency
//!    jumps beyond mean + k·sd of its recent windows while it is saturated
//!    *right after its slots grew*, halves its slots (down to the mean
//!    in-flight if that is lower). Two things are deliberately not read as
//!    overload: a latency rise the stage did not cause (its slots did not
//!    grow in the last [`SELF_INFLICTED_WINDOWS`] windows: the upstream got
//!    slower on its own, and fewer slots would only cut throughput further,
//!    since pages/s = slots / latency), and timeouts of an upstream that
//!    *hangs* (see 3).
//! 2. **Render escalation** per domain: a domain fetched over plain HTTP whose
//!    pages mostly fall below `transform.min_quality` (JavaScript shells;
//!    "mostly" with 95 % confidence over the pooled pages)
//!    moves to `remote` rendering, unless the projected credit spend would
//!    pass the guard's budget. When spend is over budget, the override with
//!    the fewest pages goes back to `http`.
//! 3. **Retry budget and timeouts** from the error mix: transient upstream
//!    failures (`upstream`, `reset`, `connect`) that still fail after
//!    retries earn one more attempt; when rate limiting dominates, retries
//!    only add load, so the budget shrinks by one. Timeouts on a stage whose
//!    median unit finishes in under 1/[`HANG_RATIO`] of the timeout are
//!    requests the upstream lost, not slow answers: each holds a slot for
//!    the whole timeout, so the timeout comes down to [`HANG_TIMEOUT_P50S`]
//!    medians (at least [`MIN_TIMEOUT_MS`]).
//! 4. **Grow**. A slotted stage that is saturated (mean in-flight at least
//!    [`SATURATED`] of its slots) with work waiting, whose work is not
//!    refused and whose latency is not rising after its own last increase
//!    gets more slots. The step follows the backlog, as TCP's slow start
//!    does: twice the slots while at least twice as many units wait (the
//!    guard's step limits still apply), half again while at least as many
//!    wait or while the queue grows from one window to the next (arrivals
//!    outpace the stage: single steps would fall further behind), one
//!    otherwise. A stage whose last increase was rolled back or refused
//!    waits [`GROW_PAUSE`] windows; one whose last increase was merely
//!    ineffective waits too, unless demand has risen since: goodput
//!    [`DEMAND_ROSE`] times what that change's bake saw, with a backlog as
//!    long as the slots or a growing queue.
//! 5. **Batch size** of the embed stage from its per-call overhead: when
//!    the stage is saturated with work waiting and its batches are full,
//!    calls are dominated by overhead and a batch twice as large halves the
//!    call count; when a call's p99 passes [`SLOW_CALL_S`], the batch halves.
//!    A batch counts as full at [`FULL_BATCH`] of the batch size per call:
//!    the stage groups whole documents and splits a group into calls of at
//!    most the batch size, so a full group averages over half a batch a call.
//!
//! The heuristic is stateless: everything it needs is in the [`Context`]
//! (recent windows, past decisions), so it can be replayed from an audit log.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Context, Outcome, Policy, PolicyError, Proposal};
use crate::control::observe::{Observation, QualityStats, StageStats, SLOTTED};
use crate::dataplane::retry::ErrorClass;
use crate::dataplane::Stage;
use crate::knobs::{Change, Knobs, RenderMode};

/// Share of a stage's units refused or timed out that triggers a backoff.
pub const BACKOFF_SHARE: f64 = 0.02;
/// Mean in-flight over slots at which a stage counts as saturated.
pub const SATURATED: f64 = 0.8;
/// `k` in "latency beyond mean + k·sd".
pub const LATENCY_K: f64 = 3.0;
/// Windows a stage waits to grow again after an increase that did not pay.
pub const GROW_PAUSE: usize = 6;
/// Goodput over what an ineffective increase's bake saw that, with a
/// backlog, says demand has risen since (and lifts the [`GROW_PAUSE`]).
pub const DEMAND_ROSE: f64 = 1.25;
/// Pages a domain needs in a window before its quality is judged.
pub const MIN_DOMAIN_PAGES: u64 = 4;
/// Share of a domain's pages below the quality bar that triggers escalation.
pub const ESCALATE_LOW_SHARE: f64 = 0.5;
/// An embedding call slower than this (p99) is too large a batch.
pub const SLOW_CALL_S: f64 = 2.0;
/// Credits one remote render costs (the SERPpost-style price list).
pub const RENDER_CREDITS: f64 = 5.0;
/// Windows back in which a stage's own slot increase explains a latency rise.
pub const SELF_INFLICTED_WINDOWS: usize = 6;
/// Timeouts are hangs when the median unit takes under 1/`HANG_RATIO` of the timeout.
pub const HANG_RATIO: f64 = 10.0;
/// A hanging stage's timeout comes down to this many medians...
pub const HANG_TIMEOUT_P50S: f64 = 20.0;
/// ... but never below this.
pub const MIN_TIMEOUT_MS: u64 = 1_000;
/// Items per embedding call, as a share of the batch size, that count as full batches.
pub const FULL_BATCH: f64 = 0.45;

/// The built-in policy.
#[derive(Debug, Default, Clone, Copy)]
pub struct Heuristic;

#[async_trait::async_trait]
impl Policy for Heuristic {
    fn name(&self) -> &str {
        "heuristic"
    }

    async fn propose(&self, ctx: &Context<'_>) -> Result<Proposal, PolicyError> {
        Ok(decide(ctx))
    }
}

/// `<stage>.timeout_ms` (0 for a stage without slots).
fn timeout_of(knobs: &Knobs, stage: Stage) -> u64 {
    knobs.stage_limits(stage).map_or(0, |(_, timeout)| timeout)
}

/// `<stage>.slots` (0 for a stage without slots).
fn slots_of(knobs: &Knobs, stage: Stage) -> u64 {
    knobs
        .stage_limits(stage)
        .map_or(0, |(slots, _)| slots as u64)
}

/// Whether `stage` had fewer slots in one of the last
/// [`SELF_INFLICTED_WINDOWS`] windows than it has now: a latency rise since
/// may be the stage's own doing.
fn grew_recently(stage: Stage, slots: u64, recent: &[Observation]) -> bool {
    recent
        .iter()
        .rev()
        .take(SELF_INFLICTED_WINDOWS)
        .filter_map(|o| o.stages.get(stage.as_str()))
        .any(|s| s.slots > 0.0 && (s.slots as u64) < slots)
}

/// Whether the stage's timeouts are lost requests rather than slow answers:
/// its median unit finishes in under 1/[`HANG_RATIO`] of `timeout_ms`.
fn hanging(s: &StageStats, timeout_ms: u64) -> bool {
    s.class_count(ErrorClass::Timeout) > 0
        && s.latency_p50_s
            .is_some_and(|p50| p50 * 1e3 * HANG_RATIO < timeout_ms as f64)
}

/// Units refused or timed out (failed or retried) per finished unit. The
/// timeouts of a hanging upstream (see [`hanging`]) are not refusals: they
/// say nothing about how much load the upstream takes.
fn pressure(s: &StageStats, window_s: f64, timeout_ms: u64) -> f64 {
    let mut refused = s.class_count(ErrorClass::RateLimited);
    if !hanging(s, timeout_ms) {
        refused += s.class_count(ErrorClass::Timeout);
    }
    s.per_finished(refused, window_s)
}

/// Median latency is "jumping" when beyond mean + k·sd of the recent medians.
fn latency_jump(stage: Stage, now: &StageStats, recent: &[Observation]) -> bool {
    let history: Vec<f64> = recent
        .iter()
        .rev()
        .take(6)
        .filter_map(|o| o.stages.get(stage.as_str()).and_then(|s| s.latency_p50_s))
        .collect();
    let (Some(p50), true) = (now.latency_p50_s, history.len() >= 3) else {
        return false;
    };
    let mean = history.iter().sum::<f64>() / history.len() as f64;
    let sd = (history.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (history.len() - 1) as f64)
        .sqrt();
    p50 > mean + LATENCY_K * sd.max(0.05 * mean) && p50 > 1.5 * mean
}

/// Latency is "rising" when the median is 25 % above the recent median's mean.
fn latency_rising(stage: Stage, now: &StageStats, recent: &[Observation]) -> bool {
    let history: Vec<f64> = recent
        .iter()
        .rev()
        .take(3)
        .filter_map(|o| o.stages.get(stage.as_str()).and_then(|s| s.latency_p50_s))
        .collect();
    match (now.latency_p50_s, history.is_empty()) {
        (Some(p50), false) => p50 > 1.25 * history.iter().sum::<f64>() / history.len() as f64,
        _ => false,
    }
}

/// Windows since the last decision on `knob` whose outcome is in `bad`
/// (None: no such decision among the recent ones).
fn last_decision<'a>(
    ctx: &'a Context<'_>,
    knob: &str,
    bad: &[Outcome],
) -> Option<(usize, &'a super::Decision)> {
    let window_ms = (ctx.observation.window_s * 1000.0).max(1.0);
    ctx.decisions
        .iter()
        .rev()
        .find(|d| bad.contains(&d.outcome) && d.changes.iter().any(|c| c.knob == knob))
        .map(|d| {
            (
                (ctx.observation.at_ms.saturating_sub(d.at_ms) as f64 / window_ms) as usize,
                d,
            )
        })
}

/// A decision being drafted: the changes so far (most urgent first), the
/// gain they are expected to bring, and notes on what was considered but
/// not done (the rationale when nothing changes).
#[derive(Default)]
struct Draft {
    changes: Vec<Change>,
    gain: f64,
    notes: Vec<String>,
}

impl Draft {
    /// Adds a change and notes its reason.
    fn change(&mut self, knob: String, value: Value, why: String) {
        self.notes.push(why.clone());
        self.changes.push(Change {
            knob,
            value,
            reason: why,
        });
    }

    /// Whether a change to `knob` is already drafted.
    fn touches(&self, knob: &str) -> bool {
        self.changes.iter().any(|c| c.knob == knob)
    }
}

/// The heuristic's decision for one window: the rules of the module docs,
/// in their order.
pub fn decide(ctx: &Context<'_>) -> Proposal {
    let mut draft = Draft::default();
    back_off(ctx, &mut draft);
    escalate_render(ctx, &mut draft);
    retries_and_timeouts(ctx, &mut draft);
    grow(ctx, &mut draft);
    embed_batch(ctx, &mut draft);
    finish(ctx, draft)
}

/// Rule 1: back off a slotted stage whose work is refused, or whose
/// latency jumped while saturated right after its slots grew.
fn back_off(ctx: &Context<'_>, draft: &mut Draft) {
    let obs = ctx.observation;
    let window = obs.window_s.max(1e-3);
    let knobs = ctx.knobs;
    for stage in SLOTTED {
        let s = obs.stage(stage.as_str());
        let slots = slots_of(knobs, stage);
        let p = pressure(&s, window, timeout_of(knobs, stage));
        let jump = s.saturation >= SATURATED
            && latency_jump(stage, &s, ctx.recent)
            && grew_recently(stage, slots, ctx.recent);
        if (p > BACKOFF_SHARE || jump) && slots > 1 {
            let target = ((slots as f64 * 0.5).floor() as u64)
                .min(s.in_flight.ceil().max(1.0) as u64)
                .max(1);
            let target = target.min(slots - 1);
            let why = if p > BACKOFF_SHARE {
                format!(
                    "{:.0} % of {stage} work was refused or timed out (rate_limited/timeout): halve the slots {slots} -> {target}",
                    p * 100.0
                )
            } else {
                format!(
                    "{stage} median latency jumped to {:.0} ms while saturated, after its slots grew: cut slots {slots} -> {target}",
                    s.latency_p50_s.unwrap_or(0.0) * 1e3
                )
            };
            draft.change(format!("{stage}.slots"), json!(target), why);
        }
    }
}

/// Rule 2: render escalation by domain quality, within the credits budget;
/// over budget, the override serving the fewest pages goes back to `http`.
fn escalate_render(ctx: &Context<'_>, draft: &mut Draft) {
    let obs = ctx.observation;
    let knobs = ctx.knobs;
    let budget = ctx.guard.global().credits_budget_per_minute;
    let overrides = &knobs.extract.render_overrides;
    let mut new_overrides = overrides.clone();
    let mut projected = obs.credits_per_min;
    let mut escalated = Vec::new();
    for d in domain_quality(obs, ctx.recent) {
        if d.render_mode != "http"
            || d.domain == "other"
            || d.stats.pages < MIN_DOMAIN_PAGES
            || wilson_lower(d.stats.low_share, d.stats.pages) < ESCALATE_LOW_SHARE
            || knobs.extract.render_mode_for(&d.domain) != RenderMode::Http
            || !crate::knobs::valid_domain(&d.domain)
        {
            continue;
        }
        let extra = d.pages_per_s * 60.0 * RENDER_CREDITS;
        if projected + extra > budget {
            draft.notes.push(format!(
                "{} needs rendering ({:.0} % of its pages are below the quality bar) but {:.0} more credits/min would pass the budget of {budget:.0}",
                d.domain,
                d.stats.low_share * 100.0,
                extra
            ));
            continue;
        }
        projected += extra;
        new_overrides.insert(d.domain.clone(), RenderMode::Remote);
        escalated.push(format!(
            "{} ({:.0} % of {} pages below the bar)",
            d.domain,
            d.stats.low_share * 100.0,
            d.stats.pages
        ));
        draft.gain += d.stats.low_share * d.pages_per_s * obs.window_s
            / obs.quality.overall.pages.max(1) as f64;
    }
    if obs.credits_per_min > budget && escalated.is_empty() {
        // Over budget: give back the override that serves the fewest pages.
        let pages = |domain: &str| -> u64 {
            obs.quality
                .domains
                .iter()
                .filter(|d| d.domain == domain)
                .map(|d| d.stats.pages)
                .sum()
        };
        if let Some(domain) = overrides
            .iter()
            .filter(|(_, m)| **m == RenderMode::Remote)
            .map(|(d, _)| d.clone())
            .min_by_key(|d| pages(d))
        {
            new_overrides.remove(&domain);
            draft.notes.push(format!(
                "credits {:.0}/min are over the budget of {budget:.0}: {domain} back to http",
                obs.credits_per_min
            ));
        }
    }
    if &new_overrides != overrides {
        let reason = if escalated.is_empty() {
            draft.notes.last().cloned().unwrap_or_default()
        } else {
            format!("render remotely: {}", escalated.join(", "))
        };
        draft.changes.push(Change {
            knob: "extract.render_overrides".into(),
            value: overrides_json(&new_overrides),
            reason,
        });
    }
}

/// Rule 3: retry budgets and timeouts of the network stages from their
/// error mix.
fn retries_and_timeouts(ctx: &Context<'_>, draft: &mut Draft) {
    let knobs = ctx.knobs;
    for (stage, attempts) in [
        (Stage::Search, knobs.search.retry.max_attempts),
        (Stage::Extract, knobs.extract.retry.max_attempts),
    ] {
        hang_timeout(ctx, stage, draft);
        retry_budget(ctx, stage, attempts, draft);
    }
}

/// Rule 3, timeouts: a stage whose requests hang (see [`hanging`]) gets a
/// timeout of [`HANG_TIMEOUT_P50S`] medians.
fn hang_timeout(ctx: &Context<'_>, stage: Stage, draft: &mut Draft) {
    let obs = ctx.observation;
    let s = obs.stage(stage.as_str());
    let timeout = timeout_of(ctx.knobs, stage);
    let finished_units = (s.throughput * obs.window_s).max(1.0);
    let timeouts = s.class_count(ErrorClass::Timeout) as f64;
    if hanging(&s, timeout) && timeouts / finished_units > BACKOFF_SHARE {
        let p50_ms = s.latency_p50_s.unwrap_or(0.0) * 1e3;
        let target = ((HANG_TIMEOUT_P50S * p50_ms / 100.0).ceil() as u64 * 100).max(MIN_TIMEOUT_MS);
        if target < timeout {
            let why = format!(
                "{:.1} % of {stage} requests hang until the {timeout} ms timeout while the median takes {p50_ms:.0} ms: each hang holds a slot; timeout {timeout} -> {target} ms",
                timeouts / finished_units * 100.0
            );
            draft.change(format!("{stage}.timeout_ms"), json!(target), why);
        }
    }
}

/// Rule 3, retries: one more attempt for transient upstream failures that
/// outlast the retries; one fewer when rate limiting dominates.
fn retry_budget(ctx: &Context<'_>, stage: Stage, attempts: u32, draft: &mut Draft) {
    let obs = ctx.observation;
    let window = obs.window_s.max(1e-3);
    let s = obs.stage(stage.as_str());
    let timeout = timeout_of(ctx.knobs, stage);
    let transient: u64 = [ErrorClass::Upstream, ErrorClass::Reset, ErrorClass::Connect]
        .iter()
        .map(|c| s.errors.get(c.as_str()).copied().unwrap_or(0))
        .sum();
    let finished = (s.throughput * obs.window_s).max(1.0);
    let knob = format!("{stage}.retry.max_attempts");
    let refused = pressure(&s, window, timeout);
    if transient as f64 / finished > BACKOFF_SHARE && refused <= BACKOFF_SHARE {
        if attempts < 6 {
            let why = format!(
                "{:.1} % of {stage} work still fails on transient upstream errors after {attempts} attempts: allow {}",
                transient as f64 / finished * 100.0,
                attempts + 1
            );
            draft.change(knob, json!(attempts + 1), why);
        }
    } else if refused > 4.0 * BACKOFF_SHARE && attempts > 2 {
        let why = format!(
            "{stage} is rate limited: retries add load; attempts {attempts} -> {}",
            attempts - 1
        );
        draft.change(knob, json!(attempts - 1), why);
    }
}

/// Rule 4: grow saturated stages with work waiting, stepping with the
/// backlog, unless paused by a recent increase that did not pay.
fn grow(ctx: &Context<'_>, draft: &mut Draft) {
    let obs = ctx.observation;
    let window = obs.window_s.max(1e-3);
    let knobs = ctx.knobs;
    for stage in SLOTTED {
        let knob = format!("{stage}.slots");
        if draft.touches(&knob) {
            continue;
        }
        let s = obs.stage(stage.as_str());
        let slots = slots_of(knobs, stage);
        let waiting = s.queue_depth >= 1.0 || s.backpressure > 0.05 || upstream_blocked(obs, stage);
        // Transient upstream errors (5xx, resets) are left to the retry
        // budget: they do not say the upstream takes less load. Refusals do,
        // and so does latency that rose after this stage last grew.
        if s.saturation < SATURATED
            || !waiting
            || pressure(&s, window, timeout_of(knobs, stage)) > 0.0
            || (latency_rising(stage, &s, ctx.recent) && grew_recently(stage, slots, ctx.recent))
        {
            continue;
        }
        let backlog = s.queue_depth.max(if upstream_blocked(obs, stage) {
            2.0 * slots as f64
        } else {
            0.0
        });
        // A queue that grew over the window says arrivals outpace the stage:
        // single steps would fall further behind, so it grows by half.
        let prev_queue = ctx
            .recent
            .last()
            .map(|o| o.stage(stage.as_str()).queue_depth)
            .unwrap_or(f64::INFINITY);
        let growing = s.queue_depth >= 1.0 && s.queue_depth > prev_queue + 1.0;
        if grow_paused(ctx, &knob, slots, backlog, growing) {
            continue;
        }
        let step = if backlog >= 2.0 * slots as f64 {
            slots
        } else if backlog >= slots as f64 || growing {
            (slots / 2).max(1)
        } else {
            1
        };
        let target = slots + step;
        let why = format!(
            "{stage} is saturated ({:.0} % of {slots} slots busy, {:.0} waiting) without errors and with steady latency: {slots} -> {target}",
            s.saturation * 100.0,
            s.queue_depth
        );
        draft.gain = draft.gain.max(step as f64 / slots as f64 * 0.5);
        draft.change(knob, json!(target), why);
    }
}

/// Rule 4, the pause: after an increase of `knob` that hurt (rolled back)
/// or was refused, wait [`GROW_PAUSE`] windows. After one that merely did
/// not pay, wait too, unless the load has changed since: goodput well above
/// what that change's bake saw, with a backlog as long as the slots or a
/// growing queue (the morning ramp: a step judged ineffective while demand
/// was flat must not hold the stage back once demand rises). A backlog
/// alone is no news: behind a rate limit it is what an ineffective increase
/// leaves, and growing again would only meet the limit.
fn grow_paused(ctx: &Context<'_>, knob: &str, slots: u64, backlog: f64, growing: bool) -> bool {
    if last_decision(ctx, knob, &[Outcome::RolledBack, Outcome::Rejected])
        .is_some_and(|(w, _)| w < GROW_PAUSE)
    {
        return true;
    }
    if let Some((w, d)) = last_decision(ctx, knob, &[Outcome::Ineffective]) {
        let then = d.goodput_after.unwrap_or(d.goodput_before);
        let load_changed =
            (backlog >= slots as f64 || growing) && ctx.observation.goodput > DEMAND_ROSE * then;
        if w < GROW_PAUSE && !load_changed {
            return true;
        }
    }
    false
}

/// Rule 5: the embedding batch halves when calls are slow and doubles when
/// the stage is saturated with full batches.
fn embed_batch(ctx: &Context<'_>, draft: &mut Draft) {
    let obs = ctx.observation;
    let e = obs.stage(Stage::Embed.as_str());
    let batch = ctx.knobs.embed.batch_size as u64;
    let items_per_call = if e.throughput > 0.0 {
        obs.goodput / e.throughput
    } else {
        0.0
    };
    if e.latency_p99_s.is_some_and(|p| p > SLOW_CALL_S) && batch > 8 {
        let why = format!(
            "embedding calls take {:.1} s at p99: batch {batch} -> {}",
            e.latency_p99_s.unwrap_or(0.0),
            batch / 2
        );
        draft.changes.push(Change {
            knob: "embed.batch_size".into(),
            value: json!(batch / 2),
            reason: why,
        });
    } else if e.saturation >= SATURATED
        && e.queue_depth >= 1.0
        && items_per_call >= FULL_BATCH * batch as f64
        && e.error_rate <= BACKOFF_SHARE / 2.0
        && batch < 256
    {
        let why = format!(
            "embed is saturated with full batches of {batch}: per-call overhead dominates, batch {batch} -> {}",
            batch * 2
        );
        draft.gain = draft.gain.max(0.2);
        draft.changes.push(Change {
            knob: "embed.batch_size".into(),
            value: json!(batch * 2),
            reason: why,
        });
    }
}

/// The proposal: at most the guard's `max_changes_per_decision` changes,
/// the rationale, and the expected gain when every change grows something.
fn finish(ctx: &Context<'_>, draft: Draft) -> Proposal {
    let Draft {
        changes,
        gain,
        notes,
    } = draft;
    let idle = if notes.is_empty() {
        "nothing to change: no stage is saturated or refused, quality holds".to_string()
    } else {
        notes.join("; ")
    };
    let mut proposal =
        Proposal::from_changes(changes, ctx.guard.global().max_changes_per_decision, idle);
    let grows = proposal.changes.iter().all(|c| {
        c.value
            .as_f64()
            .zip(ctx.knobs.get(&c.knob).ok().and_then(|v| v.as_f64()))
            .is_some_and(|(new, old)| new > old)
            || c.knob == "extract.render_overrides"
    });
    proposal.expected_gain = (grows && gain > 0.0 && !proposal.changes.is_empty()).then_some(gain);
    proposal
}
/// The lower bound of the 95 % Wilson score interval of a share `p`
/// observed over `n` pages. A domain is escalated only when even this bound
/// passes [`ESCALATE_LOW_SHARE`]: with 24 domains judged every window, a
/// point estimate over a handful of pages escalates some healthy domain by
/// chance (2 low pages of 4 happen one time in twenty at a 10 % shell
/// share), and every such escalation costs credits for nothing.
fn wilson_lower(p: f64, n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (n, z) = (n as f64, 1.96f64);
    let z2 = z * z;
    (p + z2 / (2.0 * n) - z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt()) / (1.0 + z2 / n)
}

/// A domain's quality pooled over the last [`QUALITY_WINDOWS`] windows.
struct PooledQuality {
    domain: String,
    render_mode: String,
    stats: QualityStats,
    pages_per_s: f64,
}

/// Windows pooled for per-domain quality: one window rarely holds enough
/// pages of one domain to judge it (24 domains at 24 pages/s is one page
/// each per second).
pub const QUALITY_WINDOWS: usize = 5;

fn domain_quality(obs: &Observation, recent: &[Observation]) -> Vec<PooledQuality> {
    let mut pooled: BTreeMap<(String, String), (u64, f64, f64, f64)> = BTreeMap::new();
    for o in std::iter::once(obs).chain(recent.iter().rev().take(QUALITY_WINDOWS - 1)) {
        for d in &o.quality.domains {
            let e = pooled
                .entry((d.domain.clone(), d.render_mode.clone()))
                .or_default();
            e.0 += d.stats.pages;
            e.1 += d.stats.mean * d.stats.pages as f64;
            e.2 += d.stats.low_share * d.stats.pages as f64;
            e.3 += o.window_s;
        }
    }
    let mut out: Vec<PooledQuality> = pooled
        .into_iter()
        .filter(|(_, (pages, ..))| *pages > 0)
        .map(
            |((domain, render_mode), (pages, mean, low, secs))| PooledQuality {
                domain,
                render_mode,
                stats: QualityStats {
                    pages,
                    mean: mean / pages as f64,
                    low_share: low / pages as f64,
                },
                pages_per_s: pages as f64 / secs.max(1e-3),
            },
        )
        .collect();
    // Worst first, so the budget goes to the domains that need it most.
    out.sort_by(|a, b| {
        (b.stats.low_share * b.stats.pages as f64)
            .total_cmp(&(a.stats.low_share * a.stats.pages as f64))
    });
    out
}

/// Work is waiting for `stage` when the stage before it is blocked handing over.
fn upstream_blocked(obs: &Observation, stage: Stage) -> bool {
    let before = match stage {
        Stage::Extract => Stage::Search,
        Stage::Embed => Stage::Transform,
        Stage::Index => Stage::Embed,
        _ => return false,
    };
    obs.stage(before.as_str()).backpressure > 0.05
}

fn overrides_json(map: &BTreeMap<String, RenderMode>) -> Value {
    Value::Object(
        map.iter()
            .map(|(d, m)| (d.clone(), Value::String(m.as_str().to_string())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::guard::Guard;
    use crate::control::observe::DomainQuality;

    fn stage(throughput: f64, slots: f64, in_flight: f64, queue: f64) -> StageStats {
        StageStats {
            throughput,
            slots,
            in_flight,
            saturation: in_flight / slots,
            queue_depth: queue,
            latency_p50_s: Some(0.1),
            latency_p99_s: Some(0.3),
            ..Default::default()
        }
    }

    fn observation(stages: &[(&str, StageStats)]) -> Observation {
        Observation {
            at_ms: 100_000,
            window_s: 2.0,
            stages: stages
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
            goodput: 50.0,
            ..Default::default()
        }
    }

    fn run(obs: &Observation, recent: &[Observation], knobs: &Knobs) -> Proposal {
        let guard = Guard::from_toml("", "test").unwrap();
        decide(&Context {
            observation: obs,
            recent,
            knobs,
            version: 1,
            guard: &guard,
            decisions: &[],
        })
    }

    fn value(p: &Proposal, knob: &str) -> Option<Value> {
        p.changes
            .iter()
            .find(|c| c.knob == knob)
            .map(|c| c.value.clone())
    }

    #[test]
    fn a_rate_limited_stage_halves_its_slots() {
        let mut s = stage(10.0, 8.0, 8.0, 30.0);
        s.errors.insert("rate_limited".into(), 3);
        s.retries.insert("rate_limited".into(), 10);
        let knobs = Knobs::default();
        let mut k = knobs.clone();
        k.extract.slots = 8;
        let p = run(&observation(&[("extract", s)]), &[], &k);
        assert_eq!(value(&p, "extract.slots"), Some(json!(4)), "{p:?}");
    }

    #[test]
    fn a_saturated_clean_stage_grows_and_an_idle_one_does_not() {
        let knobs = Knobs::default();
        // A backlog of five times the slots: slow start doubles.
        let busy = stage(80.0, 8.0, 7.9, 40.0);
        let p = run(&observation(&[("extract", busy)]), &[], &knobs);
        assert_eq!(value(&p, "extract.slots"), Some(json!(16)), "{p:?}");
        // As many waiting as there are slots: half again; a few: one more.
        let p = run(
            &observation(&[("extract", stage(80.0, 8.0, 7.9, 9.0))]),
            &[],
            &knobs,
        );
        assert_eq!(value(&p, "extract.slots"), Some(json!(12)), "{p:?}");
        let p = run(
            &observation(&[("extract", stage(80.0, 8.0, 7.9, 2.0))]),
            &[],
            &knobs,
        );
        assert_eq!(value(&p, "extract.slots"), Some(json!(9)), "{p:?}");
        assert!(p.expected_gain.is_some_and(|g| g > 0.0));
        let idle = stage(20.0, 8.0, 2.0, 0.0);
        let p = run(&observation(&[("extract", idle)]), &[], &knobs);
        assert!(p.changes.is_empty(), "{p:?}");
    }

    #[test]
    fn an_ineffective_increase_pauses_growth_until_the_load_changes() {
        let knobs = Knobs::default();
        let guard = Guard::from_toml("", "test").unwrap();
        // `then`: goodput during the earlier change's bake (now it is 50).
        let decide_after = |outcome: Outcome, queue: f64, then: f64| {
            let obs = observation(&[("extract", stage(80.0, 8.0, 7.9, queue))]);
            // One window of history with the same queue: not growing.
            let recent = vec![obs.clone()];
            let decisions = vec![super::super::Decision {
                seq: 1,
                at_ms: obs.at_ms - 4_000,
                policy: "heuristic".into(),
                changes: vec![Change {
                    knob: "extract.slots".into(),
                    value: json!(8),
                    reason: "earlier".into(),
                }],
                outcome,
                goodput_before: then,
                goodput_after: Some(then),
            }];
            decide(&Context {
                observation: &obs,
                recent: &recent,
                knobs: &knobs,
                version: 1,
                guard: &guard,
                decisions: &decisions,
            })
        };
        // Two windows after an ineffective step, with a few waiting: wait.
        assert!(decide_after(Outcome::Ineffective, 2.0, 30.0)
            .changes
            .is_empty());
        // Demand rose since (goodput 50 against 30) and a backlog as long as
        // the slots waits: grow by half.
        let p = decide_after(Outcome::Ineffective, 9.0, 30.0);
        assert_eq!(value(&p, "extract.slots"), Some(json!(12)), "{p:?}");
        // The same backlog at the same goodput is what a rate limit leaves
        // behind an ineffective increase: wait.
        assert!(decide_after(Outcome::Ineffective, 9.0, 50.0)
            .changes
            .is_empty());
        // After a rollback even rising demand does not override the pause.
        assert!(decide_after(Outcome::RolledBack, 9.0, 30.0)
            .changes
            .is_empty());
    }

    #[test]
    fn escalation_needs_confidence_not_a_lucky_sample() {
        // 2 of 4 pages low is a coin toss at a 10 % shell share...
        assert!(wilson_lower(0.5, 4) < ESCALATE_LOW_SHARE);
        // ... 4 of 4, or 9 of 10, is a JavaScript-only site.
        assert!(wilson_lower(1.0, 4) >= ESCALATE_LOW_SHARE);
        assert!(wilson_lower(0.9, 10) >= ESCALATE_LOW_SHARE);
        assert_eq!(wilson_lower(0.3, 0), 0.0);
    }

    #[test]
    fn latency_that_rose_after_growing_blocks_growth() {
        let knobs = Knobs::default();
        // The stage had 6 slots a window ago and 8 now: the rise is its own.
        let before = observation(&[("extract", stage(60.0, 6.0, 5.9, 40.0))]);
        let mut now = stage(80.0, 8.0, 7.9, 40.0);
        now.latency_p50_s = Some(0.2);
        let p = run(&observation(&[("extract", now.clone())]), &[before], &knobs);
        assert_eq!(value(&p, "extract.slots"), None, "{p:?}");
        // The same rise at an unchanged slot count is the upstream's: grow.
        let before = observation(&[("extract", stage(80.0, 8.0, 7.9, 40.0))]);
        let p = run(&observation(&[("extract", now)]), &[before], &knobs);
        assert_eq!(value(&p, "extract.slots"), Some(json!(16)), "{p:?}");
    }

    #[test]
    fn a_latency_jump_cuts_slots_only_when_self_inflicted() {
        let mut knobs = Knobs::default();
        knobs.extract.slots = 16;
        let mut jumped = stage(80.0, 16.0, 16.0, 0.0);
        jumped.latency_p50_s = Some(1.0);
        let steady = |slots: f64| observation(&[("extract", stage(80.0, slots, slots, 0.0))]);
        let grown = vec![steady(8.0), steady(8.0), steady(16.0), steady(16.0)];
        let p = run(&observation(&[("extract", jumped.clone())]), &grown, &knobs);
        assert_eq!(value(&p, "extract.slots"), Some(json!(8)), "{p:?}");
        let unchanged = vec![steady(16.0); 4];
        let p = run(&observation(&[("extract", jumped)]), &unchanged, &knobs);
        assert_eq!(value(&p, "extract.slots"), None, "{p:?}");
    }

    #[test]
    fn hanging_requests_shorten_the_timeout_instead_of_cutting_slots() {
        let knobs = Knobs::default();
        // Median 150 ms against a 10 s timeout: timeouts are lost requests.
        let mut s = stage(20.0, 8.0, 8.0, 100.0);
        s.latency_p50_s = Some(0.15);
        s.errors.insert("timeout".into(), 3);
        s.retries.insert("timeout".into(), 5);
        let p = run(&observation(&[("extract", s)]), &[], &knobs);
        assert_eq!(value(&p, "extract.timeout_ms"), Some(json!(3000)), "{p:?}");
        assert_eq!(value(&p, "extract.slots"), Some(json!(16)), "{p:?}");
        // A median close to the timeout: the upstream is slow, back off.
        let mut slow = stage(20.0, 8.0, 8.0, 100.0);
        slow.latency_p50_s = Some(4.0);
        slow.errors.insert("timeout".into(), 8);
        let p = run(&observation(&[("extract", slow)]), &[], &knobs);
        assert_eq!(value(&p, "extract.timeout_ms"), None, "{p:?}");
        assert_eq!(value(&p, "extract.slots"), Some(json!(4)), "{p:?}");
    }

    #[test]
    fn a_saturated_embed_stage_with_split_batches_doubles_its_batch() {
        let knobs = Knobs::default();
        // 2 calls/s of 17 inputs on average (groups of 34 split 32 + 2).
        let mut e = stage(2.0, 2.0, 2.0, 40.0);
        e.latency_p99_s = Some(0.6);
        let mut obs = observation(&[("embed", e)]);
        obs.goodput = 34.0;
        let p = run(&obs, &[], &knobs);
        assert_eq!(value(&p, "embed.batch_size"), Some(json!(64)), "{p:?}");
    }

    #[test]
    fn js_shell_domains_escalate_within_the_budget() {
        let knobs = Knobs::default();
        let mut obs = observation(&[]);
        obs.quality.domains = vec![
            DomainQuality {
                domain: "spa.sim.test".into(),
                render_mode: "http".into(),
                stats: QualityStats {
                    pages: 10,
                    mean: 0.1,
                    low_share: 0.9,
                },
            },
            DomainQuality {
                domain: "fine.sim.test".into(),
                render_mode: "http".into(),
                stats: QualityStats {
                    pages: 10,
                    mean: 0.9,
                    low_share: 0.0,
                },
            },
        ];
        let with_budget = |budget: f64| {
            let guard = Guard::from_toml(
                &format!("[global]\ncredits_budget_per_minute = {budget}"),
                "t",
            )
            .unwrap();
            decide(&Context {
                observation: &obs,
                recent: &[],
                knobs: &knobs,
                version: 1,
                guard: &guard,
                decisions: &[],
            })
        };
        // 10 pages per 2 s at 5 credits each = 1500 credits/min.
        let p = with_budget(2000.0);
        assert_eq!(
            value(&p, "extract.render_overrides"),
            Some(json!({"spa.sim.test": "remote"})),
            "{p:?}"
        );
        let p = with_budget(1000.0);
        assert_eq!(value(&p, "extract.render_overrides"), None, "{p:?}");
    }
}
