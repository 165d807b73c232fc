//! The suite's results: `summary.json`, the acceptance targets per
//! scenario, and the Markdown tables.

use serde::{Deserialize, Serialize};

use super::oracle::{OracleBudget, PhaseOracle};
use super::run::{PolicyName, RunResult};
use crate::sim::Workload;

/// A phase as the report describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseInfo {
    /// Name.
    pub name: String,
    /// Scenario seconds.
    pub duration_s: f64,
    /// Real seconds it ran for (windows x interval).
    pub real_s: f64,
    /// Control windows.
    pub windows: usize,
    /// The load offered.
    pub workload: Workload,
}

/// The acceptance targets of one scenario (issue 6), checked on
/// whole-run figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Targets {
    /// Heuristic goodput over the oracle's (target >= 0.9).
    pub heuristic_vs_oracle: Option<f64>,
    /// Heuristic goodput over the static default's.
    pub heuristic_vs_static: Option<f64>,
    /// Oracle goodput over the static default's: the room tuning has. The
    /// 1.5x target applies only where this is at least 1.5 (elsewhere the
    /// default is already near the best static setting and the 90 %-of-oracle
    /// target is the one that binds).
    pub oracle_vs_static: Option<f64>,
    /// Heuristic goodput over aimd's (target >= 1).
    pub heuristic_vs_aimd: Option<f64>,
    /// Guard violations of the heuristic's changes (target 0).
    pub heuristic_guard_violations: usize,
    /// Heuristic credits per chunk over the oracle's (target <= 1.1; None
    /// when neither spent credits).
    pub heuristic_credits_vs_oracle: Option<f64>,
    /// Every target that applies is met.
    pub met: bool,
    /// The targets missed, in words.
    pub missed: Vec<String>,
    /// Comparisons short of their target by less than [`NOISE`]: ties
    /// within run-to-run noise, reported but not counted as misses.
    #[serde(default)]
    pub ties: Vec<String>,
}

/// Run-to-run noise of whole-run goodput: two runs of the same knobs differ
/// by up to about this share (the static run and an oracle run that kept
/// the defaults measured 0.7 % and 1.7 % apart, docs/BENCHMARKS.md). Where
/// every policy keeps up with the offered load their goodputs are equal up
/// to this noise, and "heuristic >= aimd" cannot be told from a coin flip.
pub const NOISE: f64 = 0.02;

/// Everything about one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// What it exercises.
    pub description: String,
    /// Its file.
    pub file: String,
    /// Its phases.
    pub phases: Vec<PhaseInfo>,
    /// One run per policy, in the order asked for.
    pub runs: Vec<RunResult>,
    /// The oracle's search, per phase (empty without the oracle).
    pub oracle: Vec<PhaseOracle>,
    /// The targets.
    pub targets: Targets,
}

/// The machine the figures come from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// 1-minute load average before the suite (Linux).
    pub load_before: Option<f64>,
    /// 1-minute load average after it.
    pub load_after: Option<f64>,
}

impl Machine {
    /// The 1-minute load average, where `/proc/loadavg` exists.
    pub fn load_average() -> Option<f64> {
        std::fs::read_to_string("/proc/loadavg")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// freshet version.
    pub version: String,
    /// Unix seconds when the suite started.
    pub started_unix_s: u64,
    /// The `--quick` variant.
    pub quick: bool,
    /// Scenario seconds per real second.
    pub time_scale: f64,
    /// Real length of a control window, ms.
    pub interval_ms: u64,
    /// Seed.
    pub seed: u64,
    /// Oracle search budget per candidate.
    pub oracle_budget: OracleBudget,
    /// Where it ran.
    pub machine: Machine,
    /// Real seconds the suite took.
    pub wall_s: f64,
    /// Per scenario.
    pub scenarios: Vec<ScenarioResult>,
}

fn run_of(s: &ScenarioResult, p: PolicyName) -> Option<&RunResult> {
    s.runs.iter().find(|r| r.policy == p)
}

/// Tolerance of the credits comparison for runs that spend almost nothing.
const CREDIT_EPSILON: f64 = 0.005;

/// Fills in goodput ratios against the oracle and checks the targets.
pub fn finish(s: &mut ScenarioResult) {
    if let Some(oracle) = run_of(s, PolicyName::Oracle).cloned() {
        for run in &mut s.runs {
            run.overall.goodput_vs_oracle = ratio(run.overall.goodput, oracle.overall.goodput);
            for (f, o) in run.phases.iter_mut().zip(&oracle.phases) {
                f.goodput_vs_oracle = ratio(f.goodput, o.goodput);
            }
        }
    }
    let mut t = Targets::default();
    let Some(h) = run_of(s, PolicyName::Heuristic) else {
        t.met = false;
        t.missed.push("no heuristic run".into());
        s.targets = t;
        return;
    };
    let g = |p| run_of(s, p).map(|r| r.overall.goodput);
    t.heuristic_vs_oracle = g(PolicyName::Oracle).and_then(|o| ratio(h.overall.goodput, o));
    t.heuristic_vs_static = g(PolicyName::Static).and_then(|o| ratio(h.overall.goodput, o));
    t.heuristic_vs_aimd = g(PolicyName::Aimd).and_then(|o| ratio(h.overall.goodput, o));
    t.oracle_vs_static = g(PolicyName::Oracle)
        .zip(g(PolicyName::Static))
        .and_then(|(o, st)| ratio(o, st));
    t.heuristic_guard_violations = h.guard_violations.len();
    if let Some(o) = run_of(s, PolicyName::Oracle) {
        let (hc, oc) = (
            h.overall.credits_per_chunk.unwrap_or(0.0),
            o.overall.credits_per_chunk.unwrap_or(0.0),
        );
        t.heuristic_credits_vs_oracle = if hc <= CREDIT_EPSILON && oc <= CREDIT_EPSILON {
            None
        } else {
            Some(hc / oc.max(CREDIT_EPSILON))
        };
        if hc > oc * 1.1 + CREDIT_EPSILON {
            t.missed.push(format!(
                "credits per chunk {hc:.3} > oracle's {oc:.3} + 10 %"
            ));
        }
    }
    if let Some(r) = t.heuristic_vs_oracle {
        if r < 0.9 {
            t.missed.push(format!(
                "goodput {:.0} % of the oracle's (< 90 %)",
                r * 100.0
            ));
        }
    }
    if let (Some(r), Some(room)) = (t.heuristic_vs_static, t.oracle_vs_static) {
        if room >= 1.5 && r < 1.5 {
            t.missed.push(format!(
                "goodput {r:.2}x the static default's (< 1.5x, where the oracle reaches {room:.2}x)"
            ));
        }
    }
    if let Some(r) = t.heuristic_vs_aimd {
        if r < 1.0 - NOISE {
            t.missed
                .push(format!("goodput {:.1} % of aimd's (< 100 %)", r * 100.0));
        } else if r < 1.0 {
            t.ties.push(format!(
                "goodput {:.1} % of aimd's, within the {:.0} % run-to-run noise",
                r * 100.0,
                NOISE * 100.0
            ));
        }
    }
    if t.heuristic_guard_violations > 0 {
        t.missed
            .push(format!("{} guard violations", t.heuristic_guard_violations));
    }
    t.met = t.missed.is_empty();
    s.targets = t;
}

/// The misses, then the ties within noise, after a verdict.
fn verdict_details(t: &Targets) -> String {
    let mut out = String::new();
    if !t.missed.is_empty() {
        out.push_str(&format!(": {}", t.missed.join("; ")));
    }
    if !t.ties.is_empty() {
        out.push_str(&format!(" (tie: {})", t.ties.join("; ")));
    }
    out
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn secs(s: Option<f64>) -> String {
    match s {
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1e3),
        Some(s) => format!("{s:.1} s"),
        None => "-".into(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// Describes a workload in a few words.
pub fn workload_words(w: &Workload) -> String {
    let [u, k, d] = w.mix.shares();
    let mut parts = Vec::new();
    for (share, name) in [(u, "url"), (k, "keyword"), (d, "document")] {
        if share > 0.0 {
            parts.push(format!("{:.0} % {name}", share * 100.0));
        }
    }
    format!("{:.0} tasks/s ({})", w.rate, parts.join(", "))
}

/// The Markdown section of one scenario (charts linked relative to `chart_dir`).
pub fn scenario_markdown(s: &ScenarioResult, chart_dir: &str) -> String {
    let mut out = format!("### {}\n\n{}\n\n", s.name, s.description);
    out.push_str("Phases: ");
    out.push_str(
        &s.phases
            .iter()
            .map(|p| {
                format!(
                    "**{}** ({:.0} s, {:.1} s real; {})",
                    p.name,
                    p.duration_s,
                    p.real_s,
                    workload_words(&p.workload)
                )
            })
            .collect::<Vec<_>>()
            .join(" → "),
    );
    out.push_str(&format!(" — `{}`\n\n", s.file));
    out.push_str("| policy | goodput (chunks/s) | vs oracle | credits/chunk | error rate | freshness p50 | p99 | knob changes | rollbacks | guard violations |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in &s.runs {
        let f = &r.overall;
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} | {:.1} % | {} | {} | {} | {} | {} |\n",
            r.policy.as_str(),
            f.goodput,
            opt(f.goodput_vs_oracle, 2),
            opt(f.credits_per_chunk, 3),
            f.error_rate * 100.0,
            secs(f.freshness_p50_s),
            secs(f.freshness_p99_s),
            f.knob_changes,
            f.rollbacks,
            r.guard_violations.len(),
        ));
    }
    out.push_str("\nGoodput per phase in chunks/s (ratio to the oracle), and recovery after the phase change (scenario seconds until goodput stays within 10 % of its steady level):\n\n| policy |");
    for p in &s.phases {
        out.push_str(&format!(" {} | recovery |", p.name));
    }
    out.push_str("\n| --- |");
    for _ in &s.phases {
        out.push_str(" ---: | ---: |");
    }
    out.push('\n');
    for r in &s.runs {
        out.push_str(&format!("| {} |", r.policy.as_str()));
        for f in &r.phases {
            out.push_str(&format!(
                " {:.1} ({}) | {} |",
                f.goodput,
                opt(f.goodput_vs_oracle, 2),
                f.recovery_s
                    .map(|s| format!("{s:.0} s"))
                    .unwrap_or_else(|| "-".into())
            ));
        }
        out.push('\n');
    }
    if !s.oracle.is_empty() {
        out.push_str("\nOracle (best static knobs per phase):\n\n");
        for o in &s.oracle {
            let changes = if o.changes.is_empty() {
                "the defaults".to_string()
            } else {
                o.changes
                    .iter()
                    .map(|d| format!("`{}` {} → {}", d.knob, d.from, d.to))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let how = match &o.reused_from {
                Some(from) => format!("same phase as {from}"),
                None => format!("{} settings measured", o.candidates.len()),
            };
            out.push_str(&format!("- {}: {changes} ({how})\n", o.phase));
        }
    }
    let t = &s.targets;
    out.push_str(&format!(
        "\nTargets: heuristic/oracle {}, heuristic/static {} (oracle/static {}), heuristic/aimd {}, credits per chunk heuristic/oracle {}, guard violations {} — **{}**{}\n\n",
        opt(t.heuristic_vs_oracle, 2),
        opt(t.heuristic_vs_static, 2),
        opt(t.oracle_vs_static, 2),
        opt(t.heuristic_vs_aimd, 2),
        opt(t.heuristic_credits_vs_oracle, 2),
        t.heuristic_guard_violations,
        if t.met { "met" } else { "missed" },
        verdict_details(t)
    ));
    out.push_str(&format!(
        "![{} goodput and knobs over time]({chart_dir}/{}.svg)\n\n",
        s.name, s.name
    ));
    out
}

/// The whole suite as Markdown: an overview table, then one section per scenario.
pub fn markdown(summary: &Summary, chart_dir: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{} run{}: time scale {}x, control window {} ms real ({:.1} s scenario time), seed {}, oracle budget per phase {:.1} s warm-up, then per setting {:.1} s settling + {:.1} s measured, at most {} values per dimension; {} CPUs, load average {} before and {} after; {:.0} s in all.\n\n",
        if summary.quick { "Quick" } else { "Full" },
        if summary.quick { " (`--quick`)" } else { "" },
        summary.time_scale,
        summary.interval_ms,
        summary.interval_ms as f64 / 1e3 * summary.time_scale,
        summary.seed,
        summary.oracle_budget.warmup_s,
        summary.oracle_budget.settle_s,
        summary.oracle_budget.measure_s,
        summary.oracle_budget.max_values,
        summary.machine.cpus,
        opt(summary.machine.load_before, 2),
        opt(summary.machine.load_after, 2),
        summary.wall_s,
    ));
    let policies: Vec<PolicyName> = summary
        .scenarios
        .first()
        .map(|s| s.runs.iter().map(|r| r.policy).collect())
        .unwrap_or_default();
    out.push_str("Goodput in chunks/s over the whole run (ratio to the oracle):\n\n| scenario |");
    for p in &policies {
        out.push_str(&format!(" {} |", p.as_str()));
    }
    out.push_str(" targets |\n| --- |");
    for _ in &policies {
        out.push_str(" ---: |");
    }
    out.push_str(" --- |\n");
    for s in &summary.scenarios {
        out.push_str(&format!("| {} |", s.name));
        for p in &policies {
            match run_of(s, *p) {
                Some(r) => out.push_str(&format!(
                    " {:.1} ({}) |",
                    r.overall.goodput,
                    opt(r.overall.goodput_vs_oracle, 2)
                )),
                None => out.push_str(" - |"),
            }
        }
        out.push_str(&format!(
            " {}{} |\n",
            if s.targets.met { "met" } else { "missed" },
            verdict_details(&s.targets)
        ));
    }
    out.push('\n');
    for s in &summary.scenarios {
        out.push_str(&scenario_markdown(s, chart_dir));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::run::{ControllerCounts, Figures};

    fn run(policy: PolicyName, goodput: f64) -> RunResult {
        RunResult {
            scenario: "s".into(),
            policy,
            overall: Figures {
                name: "all".into(),
                goodput,
                ..Figures::default()
            },
            phases: Vec::new(),
            windows: Vec::new(),
            controller: ControllerCounts::default(),
            guard_violations: Vec::new(),
            changes: Vec::new(),
            urls_wrapped: false,
            wall_s: 0.0,
        }
    }

    fn targets(static_: f64, aimd: f64, heuristic: f64, oracle: f64) -> Targets {
        let mut s = ScenarioResult {
            name: "s".into(),
            description: String::new(),
            file: String::new(),
            phases: Vec::new(),
            runs: vec![
                run(PolicyName::Static, static_),
                run(PolicyName::Aimd, aimd),
                run(PolicyName::Heuristic, heuristic),
                run(PolicyName::Oracle, oracle),
            ],
            oracle: Vec::new(),
            targets: Targets::default(),
        };
        finish(&mut s);
        s.targets
    }

    #[test]
    fn targets_follow_the_issue() {
        // Room to tune (oracle 2x static): the heuristic needs 1.5x static.
        let t = targets(100.0, 150.0, 190.0, 200.0);
        assert!(t.met, "{:?}", t.missed);
        let t = targets(100.0, 120.0, 140.0, 150.0);
        assert!(!t.met);
        assert!(t.missed[0].contains("1.40x the static"), "{:?}", t.missed);
        // Below 90 % of the oracle.
        let t = targets(100.0, 100.0, 105.0, 120.0);
        assert!(t.missed.iter().any(|m| m.contains("of the oracle's")));
    }

    #[test]
    fn aimd_ties_within_noise_are_reported_not_missed() {
        let t = targets(100.0, 101.0, 100.0, 100.0);
        assert!(t.met, "{:?}", t.missed);
        assert_eq!(t.ties.len(), 1, "{:?}", t.ties);
        assert!(verdict_details(&t).contains("tie: goodput 99.0 % of aimd's"));
        let t = targets(100.0, 105.0, 100.0, 100.0);
        assert!(!t.met);
        assert!(t.ties.is_empty());
        assert!(t.missed[0].contains("95.2 % of aimd's"), "{:?}", t.missed);
    }
}
