//! Several seeds of the scenario bench: every figure as a mean with its
//! spread, and paired comparisons of the heuristic with every other policy.
//!
//! A run's figures depend on its seed (the simulated web, the task
//! stream) and on scheduling noise, so one run per policy says little
//! about a difference of a few per cent. With `--seeds N` the suite runs
//! once per seed and this module reports, per scenario and policy, the mean
//! and the half-width of its 95 % interval (Student's t over the seeds),
//! and for the heuristic against each other policy the interval of the
//! per-seed *paired* goodput differences (same scenario, same seed): a
//! "beats" or "behind" verdict needs that interval to exclude zero, else it
//! is a tie.

use serde::{Deserialize, Serialize};

use super::report::Summary;
use super::run::{PolicyName, RunResult};

/// Mean, standard deviation and 95 % half-width of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 with one value).
    pub sd: f64,
    /// Half-width of the 95 % interval of the mean (t over n − 1 degrees of
    /// freedom; infinite with one value).
    pub ci95: f64,
}

/// Student's t, two-sided 95 %, for `df` degrees of freedom.
pub fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= 30 => T[d - 1],
        _ => 1.96,
    }
}

impl Spread {
    /// The spread of `xs` (non-finite values are left out).
    pub fn of(xs: &[f64]) -> Spread {
        let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        let n = v.len();
        if n == 0 {
            return Spread::default();
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Spread {
            n,
            mean,
            sd,
            ci95: if n > 1 {
                t95(n - 1) * sd / (n as f64).sqrt()
            } else {
                f64::INFINITY
            },
        }
    }

    fn cell(&self, digits: usize) -> String {
        if self.n == 0 {
            "-".into()
        } else if self.n == 1 {
            format!("{:.*}", digits, self.mean)
        } else {
            format!("{:.*} ± {:.*}", digits, self.mean, digits, self.ci95)
        }
    }
}

/// One policy on one scenario over the seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicySeeds {
    /// The policy.
    pub policy: PolicyName,
    /// Goodput over the whole run, chunks/s.
    pub goodput: Spread,
    /// Freshness p99 over the whole run, seconds.
    pub freshness_p99_s: Spread,
    /// Operational errors per finished unit.
    pub error_rate: Spread,
    /// Knob changes applied.
    pub changes: Spread,
    /// Changes rolled back.
    pub rollbacks: Spread,
    /// Direction reversals per scenario minute, summed over the slot and
    /// batch knobs (see [`reversals_per_min`]).
    #[serde(default)]
    pub reversals_per_min: Spread,
    /// Guard violations found in the audit log (must be 0).
    pub guard_violations: usize,
}

/// The heuristic against one other policy, paired by seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paired {
    /// The other policy.
    pub other: PolicyName,
    /// Heuristic goodput minus the other's, paired by seed, as a share of
    /// the other's mean goodput over the seeds (0.05 = the heuristic got
    /// 5 % more); mean and interval of the paired differences, both scaled
    /// by that mean.
    pub relative_diff: Spread,
    /// `beats`, `behind` or `tie`.
    pub verdict: String,
}

/// One scenario over the seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioSeeds {
    /// Scenario name.
    pub name: String,
    /// Per policy, in table order.
    pub policies: Vec<PolicySeeds>,
    /// The heuristic against every other policy.
    pub heuristic_vs: Vec<Paired>,
}

/// `seeds.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedsSummary {
    /// The seeds, in run order.
    pub seeds: Vec<u64>,
    /// `--quick`.
    pub quick: bool,
    /// Scenario seconds per real second.
    pub time_scale: f64,
    /// Real control window, ms.
    pub interval_ms: u64,
    /// Logical CPUs of the machine.
    pub cpus: usize,
    /// Load average before the first seed and after the last.
    pub load: (Option<f64>, Option<f64>),
    /// Real seconds, all seeds.
    pub wall_s: f64,
    /// Per scenario.
    pub scenarios: Vec<ScenarioSeeds>,
}

/// How often a run's knobs changed direction: for each of the slot knobs
/// and `embed.batch_size`, the number of times a change went the other way
/// from the knob's previous change (up then down, or down then up), summed
/// over the knobs, per minute of scenario time. 0 for a policy that only
/// ever moves each knob one way.
pub fn reversals_per_min(r: &RunResult) -> f64 {
    let minutes = r.windows.last().map(|w| w.t_s / 60.0).unwrap_or(0.0);
    if minutes <= 0.0 {
        return 0.0;
    }
    let series: [fn(&super::run::KnobView) -> f64; 5] = [
        |k| k.search_slots as f64,
        |k| k.extract_slots as f64,
        |k| k.embed_slots as f64,
        |k| k.index_slots as f64,
        |k| k.embed_batch as f64,
    ];
    let mut n = 0usize;
    for f in series {
        let mut last_dir = 0.0f64;
        for w in r.windows.windows(2) {
            let d = f(&w[1].knobs) - f(&w[0].knobs);
            if d == 0.0 {
                continue;
            }
            if last_dir != 0.0 && d.signum() != last_dir {
                n += 1;
            }
            last_dir = d.signum();
        }
    }
    n as f64 / minutes
}

fn runs<'a>(summaries: &'a [Summary], scenario: &str, p: PolicyName) -> Vec<&'a RunResult> {
    summaries
        .iter()
        .filter_map(|s| s.scenarios.iter().find(|x| x.name == scenario))
        .filter_map(|s| s.runs.iter().find(|r| r.policy == p))
        .collect()
}

/// Paired differences `h − o` of `(h, o)` pairs, scaled by the mean of `o`
/// (a share of the other policy's goodput; one run that collapsed does not
/// blow the mean up as per-pair ratios would).
pub fn paired_relative(pairs: &[(f64, f64)]) -> Spread {
    let base = pairs.iter().map(|p| p.1).sum::<f64>() / pairs.len().max(1) as f64;
    let d = Spread::of(&pairs.iter().map(|(h, o)| h - o).collect::<Vec<_>>());
    if base <= 0.0 {
        return Spread { n: 0, ..d };
    }
    Spread {
        mean: d.mean / base,
        sd: d.sd / base,
        ci95: d.ci95 / base,
        ..d
    }
}

/// The verdict of a paired difference: the interval must exclude zero.
pub fn verdict(d: &Spread) -> &'static str {
    if d.n < 2 || !d.ci95.is_finite() {
        "tie"
    } else if d.mean - d.ci95 > 0.0 {
        "beats"
    } else if d.mean + d.ci95 < 0.0 {
        "behind"
    } else {
        "tie"
    }
}

/// Aggregates one summary per seed.
pub fn aggregate(summaries: &[Summary], wall_s: f64) -> SeedsSummary {
    let first = summaries.first();
    let names: Vec<String> = first
        .map(|s| s.scenarios.iter().map(|x| x.name.clone()).collect())
        .unwrap_or_default();
    let policies: Vec<PolicyName> = first
        .and_then(|s| s.scenarios.first())
        .map(|s| s.runs.iter().map(|r| r.policy).collect())
        .unwrap_or_default();
    let scenarios = names
        .iter()
        .map(|name| {
            let per: Vec<PolicySeeds> = policies
                .iter()
                .map(|&p| {
                    let rs = runs(summaries, name, p);
                    let f = |g: &dyn Fn(&RunResult) -> f64| {
                        Spread::of(&rs.iter().map(|r| g(r)).collect::<Vec<_>>())
                    };
                    PolicySeeds {
                        policy: p,
                        goodput: f(&|r| r.overall.goodput),
                        freshness_p99_s: f(&|r| r.overall.freshness_p99_s.unwrap_or(f64::NAN)),
                        error_rate: f(&|r| r.overall.error_rate),
                        changes: f(&|r| r.overall.knob_changes as f64),
                        rollbacks: f(&|r| r.overall.rollbacks as f64),
                        reversals_per_min: f(&reversals_per_min),
                        guard_violations: rs.iter().map(|r| r.guard_violations.len()).sum(),
                    }
                })
                .collect();
            let heuristic_vs = if policies.contains(&PolicyName::Heuristic) {
                policies
                    .iter()
                    .filter(|p| **p != PolicyName::Heuristic)
                    .map(|&other| {
                        let pairs: Vec<(f64, f64)> = summaries
                            .iter()
                            .filter_map(|s| s.scenarios.iter().find(|x| &x.name == name))
                            .filter_map(|s| {
                                let h =
                                    s.runs.iter().find(|r| r.policy == PolicyName::Heuristic)?;
                                let o = s.runs.iter().find(|r| r.policy == other)?;
                                Some((h.overall.goodput, o.overall.goodput))
                            })
                            .collect();
                        let d = paired_relative(&pairs);
                        Paired {
                            other,
                            relative_diff: d,
                            verdict: verdict(&d).to_string(),
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            ScenarioSeeds {
                name: name.clone(),
                policies: per,
                heuristic_vs,
            }
        })
        .collect();
    SeedsSummary {
        seeds: summaries.iter().map(|s| s.seed).collect(),
        quick: summaries.iter().any(|s| s.quick),
        time_scale: first.map(|s| s.time_scale).unwrap_or(0.0),
        interval_ms: first.map(|s| s.interval_ms).unwrap_or(0),
        cpus: first.map(|s| s.machine.cpus).unwrap_or(0),
        load: (
            first.and_then(|s| s.machine.load_before),
            summaries.last().and_then(|s| s.machine.load_after),
        ),
        wall_s,
        scenarios,
    }
}

/// The Markdown tables of a multi-seed run.
pub fn markdown(s: &SeedsSummary) -> String {
    let mut out = format!(
        "{} run over {} seeds ({}): time scale {}x, control window {} ms real; {} CPUs, load average {} before and {} after; {:.0} s in all. Each cell is the mean ± the half-width of its 95 % interval over the seeds (Student's t).\n\n",
        if s.quick { "Quick (`--quick`)" } else { "Full" },
        s.seeds.len(),
        s.seeds.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "),
        s.time_scale,
        s.interval_ms,
        s.cpus,
        s.load.0.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
        s.load.1.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
        s.wall_s
    );
    for sc in &s.scenarios {
        out.push_str(&format!(
            "**{}**\n\n| policy | goodput (chunks/s) | freshness p99 (s) | errors (per unit) | changes | rollbacks | reversals/min | guard violations | heuristic vs this (goodput) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
            sc.name
        ));
        for p in &sc.policies {
            let vs = sc
                .heuristic_vs
                .iter()
                .find(|v| v.other == p.policy)
                .map(|v| {
                    format!(
                        "{} ({:+.1} % ± {:.1})",
                        v.verdict,
                        v.relative_diff.mean * 100.0,
                        v.relative_diff.ci95 * 100.0
                    )
                })
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                p.policy.as_str(),
                p.goodput.cell(1),
                p.freshness_p99_s.cell(2),
                p.error_rate.cell(3),
                p.changes.cell(1),
                p.rollbacks.cell(1),
                p.reversals_per_min.cell(2),
                p.guard_violations,
                vs
            ));
        }
        out.push('\n');
    }
    let mut tally = std::collections::BTreeMap::<&str, (usize, usize, usize)>::new();
    for sc in &s.scenarios {
        for v in &sc.heuristic_vs {
            let e = tally.entry(v.other.as_str()).or_default();
            match v.verdict.as_str() {
                "beats" => e.0 += 1,
                "behind" => e.2 += 1,
                _ => e.1 += 1,
            }
        }
    }
    if !tally.is_empty() {
        out.push_str("Heuristic against each policy over the scenarios (paired by seed; a verdict needs the 95 % interval of the differences to exclude zero):\n\n| other policy | heuristic beats | tie | heuristic behind |\n| --- | ---: | ---: | ---: |\n");
        for (p, (b, t, l)) in tally {
            out.push_str(&format!("| {p} | {b} | {t} | {l} |\n"));
        }
        out.push('\n');
    }
    out
}

/// Markers around the generated multi-seed section of a Markdown file.
pub const DOC_BEGIN: &str =
    "<!-- scenario-seeds:begin (generated by `freshet bench scenarios --seeds N --docs`) -->";
/// End marker.
pub const DOC_END: &str = "<!-- scenario-seeds:end -->";

/// Replaces (or appends) the generated multi-seed section of `doc`.
pub fn write_docs(md: &str, doc: &std::path::Path) -> anyhow::Result<()> {
    super::replace_section(doc, DOC_BEGIN, DOC_END, md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_student_t() {
        let s = Spread::of(&[1.0, 2.0, 3.0]);
        assert_eq!(s.n, 3);
        assert!((s.mean - 2.0).abs() < 1e-12);
        assert!((s.sd - 1.0).abs() < 1e-12);
        assert!((s.ci95 - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!(Spread::of(&[5.0]).ci95.is_infinite());
        assert_eq!(Spread::of(&[f64::NAN, 1.0]).n, 1);
    }

    #[test]
    fn reversals_count_changes_of_direction_per_scenario_minute() {
        use crate::bench::run::{ControllerCounts, Figures, KnobView, Window};
        let window = |t_s: f64, extract: u32, embed: u32| Window {
            t_s,
            phase: 0,
            goodput: 1.0,
            error_rate: 0.0,
            credits_per_min: 0.0,
            freshness_p99_s: None,
            knobs: KnobView {
                extract_slots: extract,
                embed_slots: embed,
                ..Default::default()
            },
        };
        // extract 8 -> 16 -> 16 -> 8 -> 12: two reversals; embed only grows.
        let windows = vec![
            window(30.0, 8, 2),
            window(60.0, 16, 2),
            window(90.0, 16, 4),
            window(120.0, 8, 4),
            window(150.0, 12, 8),
            window(180.0, 12, 8),
        ];
        let r = RunResult {
            scenario: "s".into(),
            policy: PolicyName::Heuristic,
            overall: Figures::default(),
            phases: Vec::new(),
            windows,
            controller: ControllerCounts::default(),
            guard_violations: Vec::new(),
            changes: Vec::new(),
            urls_wrapped: false,
            wall_s: 1.0,
        };
        assert!((reversals_per_min(&r) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn paired_differences_are_shares_of_the_other_mean() {
        // Differences 18, 20, 22 over a mean of 100: 0.2 ± t(2) * 0.02 / sqrt 3.
        let d = paired_relative(&[(118.0, 100.0), (70.0, 50.0), (172.0, 150.0)]);
        assert!((d.mean - 0.2).abs() < 1e-12, "{d:?}");
        assert!((d.ci95 - 4.303 * 0.02 / 3f64.sqrt()).abs() < 1e-9, "{d:?}");
        assert_eq!(verdict(&d), "beats");
        // Differences 10, 20, 30: the interval (± 0.25) holds zero.
        let d = paired_relative(&[(110.0, 100.0), (70.0, 50.0), (180.0, 150.0)]);
        assert_eq!(verdict(&d), "tie");
    }

    #[test]
    fn a_verdict_needs_the_interval_to_exclude_zero() {
        assert_eq!(verdict(&Spread::of(&[0.05, 0.06, 0.04])), "beats");
        assert_eq!(verdict(&Spread::of(&[-0.05, -0.06, -0.04])), "behind");
        assert_eq!(verdict(&Spread::of(&[0.05, -0.04, 0.02])), "tie");
        assert_eq!(verdict(&Spread::of(&[0.5])), "tie");
    }
}
