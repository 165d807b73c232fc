//! One scenario run: the simulator, the whole pipeline and the controller
//! with one policy, driven through the scenario's phases while the bench
//! observes every window.
//!
//! The bench, not the simulator's clock, moves the phases: it pins phase
//! `i` with [`SimServer::set_phase`] at the moment its own windows say the
//! phase begins, so the load generator, the measurement and the simulated
//! web always agree on the phase. Time is compressed by `time_scale`: a
//! phase of `duration_s` scenario seconds lasts `duration_s / time_scale`
//! real seconds, the controller's cooldowns are counted in scenario time
//! ([`ControlState::with_time_scale`]), and the control window is given in
//! real time. Latencies and task rates are never scaled.
//!
//! Figures come from two observers of the process-wide metrics tap besides
//! the controller's own: one closes a window every control interval (the
//! timeline and the recovery times), one closes a window at every phase
//! boundary (exact per-phase goodput, credits, errors and freshness
//! percentiles). Runs must therefore happen one after another in a process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::load::TaskGen;
use crate::control::audit::{read_records, EventKind, Record};
use crate::control::guard::{Guard, Verdict};
use crate::control::observe::{Observation, Observer};
use crate::control::policy::{aimd::Aimd, baselines, heuristic::Heuristic, Policy, Static};
use crate::control::{ControlState, Controller, ControllerOptions, ControllerReport};
use crate::knobs::{Change, Knobs, RenderMode};
use crate::service::Runtime;
use crate::settings::{ControllerMode, Settings};
use crate::sim::{Scenario, SimOptions, SimServer};

/// The policies the scenario bench compares.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// The default knobs, never changed.
    Static,
    /// Slots only, additive increase / multiplicative decrease.
    Aimd,
    /// Netflix concurrency-limits Gradient2 (+ AIMD cut on drops).
    Gradient2,
    /// Netflix concurrency-limits Vegas.
    Vegas,
    /// Vector's Adaptive Request Concurrency.
    Arc,
    /// Envoy's adaptive-concurrency gradient controller.
    #[serde(rename = "envoy-gradient")]
    #[value(name = "envoy-gradient")]
    EnvoyGradient,
    /// DS2 / the Flink autoscaler: slots from useful time.
    Ds2,
    /// freshet's built-in policy.
    Heuristic,
    /// The LLM policy against the simulator's scripted chat endpoint.
    LlmScripted,
    /// The best static knobs per phase, found by a bounded search.
    Oracle,
}

impl PolicyName {
    /// Every policy, in table order.
    pub const ALL: [PolicyName; 10] = [
        PolicyName::Static,
        PolicyName::Aimd,
        PolicyName::Gradient2,
        PolicyName::Vegas,
        PolicyName::Arc,
        PolicyName::EnvoyGradient,
        PolicyName::Ds2,
        PolicyName::Heuristic,
        PolicyName::LlmScripted,
        PolicyName::Oracle,
    ];

    /// The name used on the command line and in the outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::Static => "static",
            PolicyName::Aimd => "aimd",
            PolicyName::Gradient2 => "gradient2",
            PolicyName::Vegas => "vegas",
            PolicyName::Arc => "arc",
            PolicyName::EnvoyGradient => "envoy-gradient",
            PolicyName::Ds2 => "ds2",
            PolicyName::Heuristic => "heuristic",
            PolicyName::LlmScripted => "llm-scripted",
            PolicyName::Oracle => "oracle",
        }
    }

    /// Parses a name, listing the valid ones on error.
    pub fn parse(name: &str) -> Result<PolicyName, String> {
        PolicyName::ALL
            .into_iter()
            .find(|p| p.as_str() == name.trim())
            .ok_or_else(|| {
                format!(
                    "unknown policy `{name}` (known: {})",
                    PolicyName::ALL.map(|p| p.as_str()).join(", ")
                )
            })
    }
}

/// How runs are made (shared by every run of a suite).
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Settings every run starts from (pointed at its simulator).
    pub base: Settings,
    /// The guardrails every policy's changes must pass.
    pub guard: Guard,
    /// Scenario seconds per real second.
    pub time_scale: f64,
    /// Real length of one control (and measurement) window.
    pub interval: Duration,
    /// Seed of the simulated web and the task stream.
    pub seed: u64,
    /// Where each run's data dir is made (and removed after).
    pub work_dir: PathBuf,
}

impl RunConfig {
    /// Windows phase `i` of `scenario` lasts (at least two).
    pub fn windows_of(&self, scenario: &Scenario, i: usize) -> usize {
        let real = scenario.phases[i].duration_s / self.time_scale;
        ((real / self.interval.as_secs_f64()).round() as usize).max(2)
    }

    /// Scenario seconds one window stands for.
    pub fn window_scenario_s(&self) -> f64 {
        self.interval.as_secs_f64() * self.time_scale
    }
}

/// The knobs the charts and tables follow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KnobView {
    /// `search.slots`
    pub search_slots: u32,
    /// `extract.slots`
    pub extract_slots: u32,
    /// `embed.slots`
    pub embed_slots: u32,
    /// `index.slots`
    pub index_slots: u32,
    /// `embed.batch_size`
    pub embed_batch: u32,
    /// `extract.timeout_ms`
    pub extract_timeout_ms: u64,
    /// `extract.retry.max_attempts`
    pub extract_attempts: u32,
    /// Domains rendered remotely by override.
    pub remote_domains: usize,
    /// `extract.render_mode`
    pub render_mode: String,
}

impl KnobView {
    /// The view of `k`.
    pub fn of(k: &Knobs) -> KnobView {
        KnobView {
            search_slots: k.search.slots,
            extract_slots: k.extract.slots,
            embed_slots: k.embed.slots,
            index_slots: k.index.slots,
            embed_batch: k.embed.batch_size,
            extract_timeout_ms: k.extract.timeout_ms,
            extract_attempts: k.extract.retry.max_attempts,
            remote_domains: k
                .extract
                .render_overrides
                .values()
                .filter(|m| **m == RenderMode::Remote)
                .count(),
            render_mode: k.extract.render_mode.as_str().to_string(),
        }
    }
}

/// One control window of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    /// Scenario seconds since the start, at the window's end.
    pub t_s: f64,
    /// Phase index.
    pub phase: usize,
    /// Chunks indexed per (real) second.
    pub goodput: f64,
    /// Operational errors per finished unit.
    pub error_rate: f64,
    /// Credits per (real) minute.
    pub credits_per_min: f64,
    /// Freshness p99 in the window, seconds.
    pub freshness_p99_s: Option<f64>,
    /// Knobs in force at the window's end.
    pub knobs: KnobView,
}

/// The figures of one phase, or of a whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    /// Phase name (`all` for the whole run).
    pub name: String,
    /// Real seconds measured.
    pub seconds: f64,
    /// Tasks the generator offered.
    pub tasks_offered: u64,
    /// Chunks indexed.
    pub chunks: u64,
    /// Chunks indexed per real second (every indexed chunk passed the quality bar).
    pub goodput: f64,
    /// Goodput over the oracle's in the same phase (filled in by the suite).
    pub goodput_vs_oracle: Option<f64>,
    /// Credits spent.
    pub credits: f64,
    /// Credits per indexed chunk.
    pub credits_per_chunk: Option<f64>,
    /// Operational errors per finished unit over the network stages.
    pub error_rate: f64,
    /// Freshness p50, seconds.
    pub freshness_p50_s: Option<f64>,
    /// Freshness p99, seconds.
    pub freshness_p99_s: Option<f64>,
    /// Dead letters written per real second.
    pub dead_letters_per_s: f64,
    /// Knob changes the controller applied.
    pub knob_changes: u64,
    /// Changes it rolled back.
    pub rollbacks: u64,
    /// Proposals the guard refused or clamped.
    pub guard_interventions: u64,
    /// Windows from the phase's start until goodput stays within 10 % of
    /// the phase's steady level (None for the whole run, or when it never does).
    pub recovery_windows: Option<usize>,
    /// The same in scenario seconds.
    pub recovery_s: Option<f64>,
}

impl Figures {
    fn from_observation(
        name: &str,
        o: &Observation,
        tasks_offered: u64,
        before: &ControllerReport,
        after: &ControllerReport,
    ) -> Figures {
        let credits = o.credits_per_min * o.window_s / 60.0;
        Figures {
            name: name.to_string(),
            seconds: o.window_s,
            tasks_offered,
            chunks: o.chunks_indexed,
            goodput: o.goodput,
            goodput_vs_oracle: None,
            credits,
            credits_per_chunk: o.credits_per_chunk,
            error_rate: o.error_rate,
            freshness_p50_s: o.freshness_p50_s,
            freshness_p99_s: o.freshness_p99_s,
            dead_letters_per_s: o.dead_letters_per_s,
            knob_changes: after.applied - before.applied,
            rollbacks: after.rolled_back - before.rolled_back,
            guard_interventions: after.guard_interventions - before.guard_interventions,
            recovery_windows: None,
            recovery_s: None,
        }
    }
}

/// What the controller did over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControllerCounts {
    /// Windows observed.
    pub windows: u64,
    /// Proposals with changes.
    pub proposals: u64,
    /// Changes applied.
    pub applied: u64,
    /// Kept after their bake.
    pub committed: u64,
    /// Kept but delivered too little of the expected gain.
    pub ineffective: u64,
    /// Undone after their bake.
    pub rolled_back: u64,
    /// Proposals the guard refused entirely.
    pub rejected: u64,
    /// Guard verdicts that clamped or refused a change.
    pub guard_interventions: u64,
    /// Policy failures (the heuristic answered).
    pub policy_errors: u64,
}

impl From<&ControllerReport> for ControllerCounts {
    fn from(r: &ControllerReport) -> Self {
        ControllerCounts {
            windows: r.windows,
            proposals: r.proposals,
            applied: r.applied,
            committed: r.committed,
            ineffective: r.ineffective,
            rolled_back: r.rolled_back,
            rejected: r.rejected,
            guard_interventions: r.guard_interventions,
            policy_errors: r.policy_errors,
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Policy.
    pub policy: PolicyName,
    /// The whole run.
    pub overall: Figures,
    /// Per phase, in order.
    pub phases: Vec<Figures>,
    /// Every window.
    pub windows: Vec<Window>,
    /// What the controller did.
    pub controller: ControllerCounts,
    /// Applied changes that the guard, checked again after the run against
    /// the audit log, would not have let through as they were (must be empty).
    pub guard_violations: Vec<String>,
    /// Every change applied or rolled back, in order, with the policy's
    /// reason (from the audit log; scenario seconds since the start).
    pub changes: Vec<String>,
    /// The URL stream ran out and repeated pages (figures understate goodput).
    pub urls_wrapped: bool,
    /// Real seconds the run took, set-up and tear-down included.
    pub wall_s: f64,
}

/// A policy ready to run, or the oracle's schedule of knobs per phase.
#[derive(Debug, Clone)]
pub enum Driver {
    /// A policy behind the controller.
    Policy(Arc<dyn Policy>),
    /// The knobs to swap in at the start of each phase (no controller changes).
    Schedule(Vec<Knobs>),
}

impl Driver {
    /// The driver of a built-in policy (`llm-scripted` and `oracle` need
    /// more). Each call makes a new policy: the baselines keep state, and a
    /// run must not start from another run's.
    pub fn builtin(name: PolicyName) -> Option<Driver> {
        let p: Arc<dyn Policy> = match name {
            PolicyName::Static => Arc::new(Static),
            PolicyName::Aimd => Arc::new(Aimd),
            PolicyName::Gradient2 => Arc::new(baselines::gradient2::Gradient2::default()),
            PolicyName::Vegas => Arc::new(baselines::vegas::Vegas::default()),
            PolicyName::Arc => Arc::new(baselines::arc::VectorArc::default()),
            PolicyName::EnvoyGradient => Arc::new(baselines::envoy::EnvoyGradient::default()),
            PolicyName::Ds2 => Arc::new(baselines::ds2::Ds2::default()),
            PolicyName::Heuristic => Arc::new(Heuristic),
            PolicyName::LlmScripted | PolicyName::Oracle => return None,
        };
        Some(Driver::Policy(p))
    }
}

/// Settings of one run against `sim`, with its own data dir.
pub fn run_settings(cfg: &RunConfig, sim: &SimServer, data_dir: PathBuf) -> Result<Settings> {
    let mut s = sim.freshet_settings(&cfg.base, &data_dir, true)?;
    // A run's end is measured at the last window; what is still in flight
    // then is abandoned quickly instead of drained.
    s.service.drain_timeout_s = 1;
    s.service.guardrails = None;
    Ok(s)
}

pub(super) fn unique_dir(cfg: &RunConfig, label: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    cfg.work_dir.join(format!(
        "{}-{}-{}",
        label.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Drains `runtime`, abandoning what is left after a short deadline. The
/// data dir is not removed here: aborted work lets go of the index a moment
/// later (a blocking flush may still be running), so dirs are removed by
/// [`sweep`] once they are old.
pub(super) async fn teardown(mut runtime: Runtime) {
    runtime.drain_timeout = Duration::from_millis(300);
    let _ = runtime.drain().await;
}

/// Data dirs of finished runs, oldest first, waiting to be removed.
static PENDING: std::sync::Mutex<std::collections::VecDeque<PathBuf>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// Queues `dir` for removal and removes all queued dirs but the `keep`
/// newest: by the time a dir is two runs old nothing holds its files.
pub fn retire_dir(dir: PathBuf, keep: usize) {
    let mut q = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    q.push_back(dir);
    while q.len() > keep {
        if let Some(d) = q.pop_front() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The load generator: pushes tasks of the current phase's workload at its
/// rate until told to stop. Arrivals are open-loop: when the source pushes
/// back, the missed arrivals are offered as soon as it takes them again
/// (up to one second's worth, so a long stall does not end in a burst no
/// client would send).
pub(super) async fn generate(
    source: crate::dataplane::source::embedded::EmbeddedSource,
    scenario: Arc<Scenario>,
    phase: Arc<AtomicUsize>,
    mut tasks: TaskGen,
    offered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> TaskGen {
    let mut next = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let w = scenario.workload_of(phase.load(Ordering::Relaxed));
        let task = tasks.next_task(&w);
        tokio::select! {
            ok = source.push(task, "bench") => if !ok { break },
            _ = stop.changed() => break,
        }
        offered.fetch_add(1, Ordering::Relaxed);
        next += Duration::from_secs_f64(1.0 / w.rate);
        let now = Instant::now();
        if next + Duration::from_secs(1) < now {
            next = now - Duration::from_secs(1);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => break,
        }
    }
    tasks
}

/// Runs `scenario` once under `driver`.
pub async fn run_scenario(
    scenario: &Scenario,
    policy: PolicyName,
    driver: &Driver,
    cfg: &RunConfig,
) -> Result<RunResult> {
    let wall = std::time::Instant::now();
    let sim = SimServer::start(SimOptions::new(scenario.clone(), cfg.seed)).await?;
    sim.set_phase(0);
    let data_dir = unique_dir(cfg, &format!("{}-{}", scenario.name, policy.as_str()));
    let mut settings = run_settings(cfg, &sim, data_dir.clone())?;
    if let Driver::Schedule(s) = driver {
        settings.knobs = s
            .first()
            .cloned()
            .context("the oracle's schedule is empty")?;
    }
    let initial = settings.knobs.clone();
    let runtime = Runtime::build(&settings)
        .await
        .with_context(|| format!("building the pipeline in {}", data_dir.display()))?;
    let live = runtime.live.clone();
    let audit_path = runtime.control.audit.path().to_path_buf();
    let first_seq = runtime.control.audit.len();

    let (report, ctrl_stop, ctrl_task) = start_controller(&runtime, driver, cfg);

    let phase_now = Arc::new(AtomicUsize::new(0));
    let offered = Arc::new(AtomicU64::new(0));
    let (gen_stop, gen_stopped) = watch::channel(false);
    let tasks = TaskGen::new(sim.corpus(), sim.addr().port(), cfg.seed);
    let gen_task = tokio::spawn(generate(
        runtime.source.clone(),
        Arc::new(scenario.clone()),
        phase_now.clone(),
        tasks,
        offered.clone(),
        gen_stopped,
    ));

    let mut meter = Meter::new(&live, cfg.interval);
    let snapshot = |r: &Arc<std::sync::Mutex<ControllerReport>>| {
        r.lock().unwrap_or_else(|p| p.into_inner()).clone()
    };
    let start_report = snapshot(&report);
    let mut windows = Vec::new();
    let mut phases = Vec::new();
    for (i, ph) in scenario.phases.iter().enumerate() {
        sim.set_phase(i);
        phase_now.store(i, Ordering::Relaxed);
        driver.enter_phase(i, &live)?;
        let phase_report = snapshot(&report);
        let phase_offered = offered.load(Ordering::Relaxed);
        let first_window = windows.len();
        for _ in 0..cfg.windows_of(scenario, i) {
            let o = meter.window().await;
            windows.push(Window {
                t_s: meter.started.elapsed().as_secs_f64() * cfg.time_scale,
                phase: i,
                goodput: o.goodput,
                error_rate: o.error_rate,
                credits_per_min: o.credits_per_min,
                freshness_p99_s: o.freshness_p99_s,
                knobs: KnobView::of(&live.load().knobs),
            });
        }
        let o = meter.phase.observe();
        let mut f = Figures::from_observation(
            &ph.name,
            &o,
            offered.load(Ordering::Relaxed) - phase_offered,
            &phase_report,
            &snapshot(&report),
        );
        let g: Vec<f64> = windows[first_window..].iter().map(|w| w.goodput).collect();
        f.recovery_windows = recovery_windows(&g);
        f.recovery_s = f
            .recovery_windows
            .map(|w| w as f64 * cfg.window_scenario_s());
        phases.push(f);
    }
    let run = meter.run.observe();
    let end_report = snapshot(&report);
    let overall = Figures::from_observation(
        "all",
        &run,
        offered.load(Ordering::Relaxed),
        &start_report,
        &end_report,
    );

    // Tear down: no more load or decisions, then the web goes away (hanging
    // requests end at once) and the pipeline is abandoned after a short drain.
    let _ = gen_stop.send(true);
    let tasks = gen_task.await.context("the load generator failed")?;
    let _ = ctrl_stop.send(());
    let _ = ctrl_task.await;
    let records: Vec<Record> = read_records(&audit_path)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.seq > first_seq)
        .collect();
    sim.shutdown().await;
    teardown(runtime).await;
    retire_dir(data_dir, 2);

    let guard_violations = guard_violations(&records, &initial, &cfg.guard, cfg.time_scale);
    let changes = change_lines(&records, cfg.time_scale);
    Ok(RunResult {
        scenario: scenario.name.clone(),
        policy,
        overall,
        phases,
        windows,
        controller: ControllerCounts::from(&end_report),
        guard_violations,
        changes,
        urls_wrapped: tasks.wrapped(),
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

impl Driver {
    /// At the start of phase `i`: the oracle's schedule swaps in its knobs
    /// for the phase (if they differ); a policy changes nothing here.
    fn enter_phase(&self, i: usize, live: &crate::live::LiveConfig) -> Result<()> {
        if let Driver::Schedule(s) = self {
            if let Some(k) = s.get(i) {
                if *k != live.load().knobs {
                    live.swap(k.clone())
                        .context("swapping in the oracle's knobs")?;
                }
            }
        }
        Ok(())
    }
}

/// Observers over one run's windows, its current phase and the whole run,
/// sampled together on one clock: four ticks a window, gauges sampled on
/// the first three, the window closed on the fourth.
struct Meter {
    window: Observer,
    phase: Observer,
    run: Observer,
    started: Instant,
    tick: std::time::Duration,
    ticks: u32,
}

impl Meter {
    fn new(live: &Arc<crate::live::LiveConfig>, interval: std::time::Duration) -> Meter {
        Meter {
            window: Observer::new(live.clone()),
            phase: Observer::new(live.clone()),
            run: Observer::new(live.clone()),
            started: Instant::now(),
            tick: interval / 4,
            ticks: 0,
        }
    }

    /// Waits out the next window and returns its observation.
    async fn window(&mut self) -> crate::control::observe::Observation {
        for s in 0..4 {
            self.ticks += 1;
            tokio::time::sleep_until(self.started + self.tick * self.ticks).await;
            if s < 3 {
                self.window.sample();
                self.phase.sample();
                self.run.sample();
            }
        }
        self.window.observe()
    }
}

/// The controller of one run: `driver`'s policy (the oracle's schedule runs
/// under a static policy) over the run's pipeline, in auto mode. Returns
/// its report, the stop signal and the task.
#[allow(clippy::type_complexity)]
fn start_controller(
    runtime: &Runtime,
    driver: &Driver,
    cfg: &RunConfig,
) -> (
    Arc<std::sync::Mutex<ControllerReport>>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let policy: Arc<dyn Policy> = match driver {
        Driver::Policy(p) => p.clone(),
        Driver::Schedule(_) => Arc::new(Static),
    };
    let control = Arc::new(
        ControlState::new(
            runtime.live.clone(),
            cfg.guard.clone(),
            None,
            runtime.control.audit.clone(),
        )
        .with_time_scale(cfg.time_scale),
    );
    let controller = Controller::new(
        control,
        policy,
        ControllerOptions {
            mode: ControllerMode::Auto,
            interval: cfg.interval,
            samples: 4,
            history: 12,
        },
    );
    let report = controller.report();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller.run(async move {
        let _ = stopped.await;
    }));
    (report, stop, task)
}

/// One line per applied or rolled-back change, at its scenario time.
fn change_lines(records: &[Record], time_scale: f64) -> Vec<String> {
    let start_ms = records.first().map(|r| r.time_ms).unwrap_or(0);
    records
        .iter()
        .filter(|r| matches!(r.kind, EventKind::Applied | EventKind::RolledBack))
        .map(|r| {
            let diff = r.event.diff_summary();
            format!(
                "{:.0} s {}: {diff} ({})",
                r.time_ms.saturating_sub(start_ms) as f64 / 1e3 * time_scale,
                if r.kind == EventKind::Applied {
                    "applied"
                } else {
                    "rolled back"
                },
                r.event.detail
            )
        })
        .collect()
}

/// Share of the steady level a window's goodput must be within to count as
/// recovered.
pub const RECOVERY_BAND: f64 = 0.10;

/// Windows from a phase's start until goodput has reached its new steady
/// level (the mean of the phase's last third): the first window from which
/// the rolling mean of three windows is within [`RECOVERY_BAND`] of that
/// level three times in a row (single windows are too noisy to judge).
/// `None` when the phase is too short to tell (fewer than six windows) or
/// the goodput never settles.
pub fn recovery_windows(goodput: &[f64]) -> Option<usize> {
    let n = goodput.len();
    if n < 6 {
        return None;
    }
    let tail = &goodput[n - (n / 3).max(2)..];
    let steady = tail.iter().sum::<f64>() / tail.len() as f64;
    let band = (RECOVERY_BAND * steady).max(1.0);
    let within = |k: usize| {
        let w = &goodput[k..(k + 3).min(n)];
        let m = w.iter().sum::<f64>() / w.len() as f64;
        (m - steady).abs() <= band
    };
    (0..n - 2).find(|&k| (k..(k + 3).min(n - 2)).all(within))
}

/// Applied changes that the guard would not pass as they were, re-checked
/// from the audit log: each `applied` record's diff is judged against the
/// knobs before it (bounds, allowed values, step limits, approval, frozen
/// knobs, changes per decision) and the time since each knob last changed
/// (cooldowns, in scenario seconds). Roll-backs restore an earlier, already
/// judged state and are not re-checked.
pub fn guard_violations(
    records: &[Record],
    initial: &Knobs,
    guard: &Guard,
    time_scale: f64,
) -> Vec<String> {
    let mut knobs = initial.clone();
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    let mut out = Vec::new();
    for r in records {
        if !matches!(r.kind, EventKind::Applied | EventKind::RolledBack) {
            continue;
        }
        let changes: Vec<Change> = r
            .event
            .diff
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|c| Some(Change::new(c["knob"].as_str()?, c["to"].clone())))
                    .collect()
            })
            .unwrap_or_default();
        if r.kind == EventKind::Applied {
            // Seconds since the last change, rounded up: the controller read
            // its clock a moment before the record was written.
            let since = |k: &str| {
                last.get(k).map(|t| {
                    ((r.time_ms.saturating_sub(*t)) as f64 / 1e3 * time_scale).ceil() as u64 + 1
                })
            };
            // An approved change was checked for a person (the approval
            // rule is what they met).
            let verdicts = if r.event.actor["approval"].is_u64() {
                guard.check_approved(&changes, &knobs, since)
            } else {
                guard.check(&changes, &knobs, since)
            };
            for v in verdicts {
                match v {
                    Verdict::Accepted { .. } => {}
                    other => out.push(format!(
                        "audit #{}: {}",
                        r.seq,
                        serde_json::to_string(&other).unwrap_or_default()
                    )),
                }
            }
        }
        match knobs.apply_patch(&changes) {
            Ok(k) => knobs = k,
            Err(e) => out.push(format!("audit #{}: diff does not apply: {e}", r.seq)),
        }
        for c in &changes {
            last.insert(c.knob.clone(), r.time_ms);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_the_first_window_that_stays_near_the_steady_level() {
        let g = [10.0, 40.0, 70.0, 95.0, 100.0, 102.0, 99.0, 101.0, 100.0];
        assert_eq!(recovery_windows(&g), Some(3));
        let flat = [100.0; 9];
        assert_eq!(recovery_windows(&flat), Some(0));
        assert_eq!(recovery_windows(&[1.0, 2.0]), None);
    }

    #[test]
    fn policy_names_round_trip() {
        for p in PolicyName::ALL {
            assert_eq!(PolicyName::parse(p.as_str()), Ok(p));
        }
        assert!(PolicyName::parse("magic")
            .unwrap_err()
            .contains("heuristic"));
    }
}
