//! `freshet bench scenarios`: the scenario benchmark that measures how well
//! freshet tunes itself (docs/BENCHMARKS.md).
//!
//! For every scenario and every policy the whole pipeline runs against the
//! simulator through the scenario's timeline, time-compressed, seeded and
//! one run after another in this process (the controller observes a
//! process-wide metrics tap):
//!
//! - [`load`]: the task streams (the scenario's `[workload]`);
//! - [`run`]: one run: simulator, pipeline, controller with one policy,
//!   per-window and per-phase figures, guard re-check from the audit log;
//! - [`oracle`]: the best static knobs per phase by a bounded search;
//! - [`report`]: `summary.json`, acceptance targets, Markdown tables;
//! - [`chart`]: SVG charts of goodput and knobs over time.
//!
//! The policies compared: `static` (default knobs), `aimd` (slots only, the
//! adaptive-concurrency approach), `heuristic` (freshet's own), `oracle`
//! (per-phase best static knobs, switched at the phase boundaries) and
//! `llm-scripted` (the LLM policy end to end against the simulator's
//! scripted chat endpoint).

pub mod chart;
pub mod load;
pub mod oracle;
pub mod report;
pub mod run;
pub mod seeds;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use self::oracle::{OracleBudget, OracleCache};
use self::report::{PhaseInfo, ScenarioResult, Summary};
use self::run::{Driver, PolicyName, RunConfig};
use crate::sim::Scenario;

/// What a suite runs.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Scenarios with the file each came from.
    pub scenarios: Vec<(String, Scenario)>,
    /// Policies, in table order.
    pub policies: Vec<PolicyName>,
    /// How runs are made.
    pub run: RunConfig,
    /// Oracle search budget per candidate.
    pub budget: OracleBudget,
    /// The `--quick` variant (recorded in the summary).
    pub quick: bool,
    /// Print a line per run to stderr.
    pub progress: bool,
}

/// The shipped guardrails, compiled in for runs outside the repository.
pub const BUILTIN_GUARDRAILS: &str = include_str!("../../policies/guardrails.toml");

/// The shipped controller prompt, compiled in for runs outside the repository.
pub const BUILTIN_PROMPT: &str = include_str!("../../prompts/controller.md");

/// The `llm-scripted` policy: the real LLM policy (prompt, strict answer
/// schema, guard, fallback) talking to the simulator's scripted
/// OpenAI-compatible chat endpoint in its rule-based mode, which answers
/// from the numbers in the observation. Uses `prompts/controller.md` when
/// run from the repository, else the shipped copy.
async fn llm_scripted(
    work_dir: &Path,
) -> Result<(
    crate::sim::llm::LlmSim,
    std::sync::Arc<dyn crate::control::policy::Policy>,
)> {
    let sim = crate::sim::llm::LlmSim::start(crate::sim::llm::LlmSimOptions::default()).await?;
    let prompt = Path::new("prompts/controller.md").to_path_buf();
    let prompt = if prompt.exists() {
        prompt
    } else {
        let p = work_dir.join("controller.md");
        std::fs::write(&p, BUILTIN_PROMPT).with_context(|| format!("writing {}", p.display()))?;
        p
    };
    let settings = crate::settings::LlmSettings {
        base_url: sim.base_url(),
        model: "freshet-scripted".into(),
        timeout_ms: 2_000,
        ..Default::default()
    };
    let policy = crate::control::policy::llm::LlmPolicy::new(&settings, &prompt)
        .with_context(|| format!("setting up the llm policy with {}", prompt.display()))?;
    Ok((sim, std::sync::Arc::new(policy)))
}

/// Every `*.toml` in `dir`, sorted by file name.
pub fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no scenario files (*.toml) in {}", dir.display());
    }
    Ok(files)
}

fn say(opts: &SuiteOptions, line: String) {
    if opts.progress {
        eprintln!("{line}");
    }
}

/// The oracle's best static knobs for every phase of `scenario`, each
/// found by a bounded search (progress on stderr).
async fn oracle_schedule(
    opts: &SuiteOptions,
    scenario: &Scenario,
    cache: &mut OracleCache,
) -> Result<Vec<oracle::PhaseOracle>> {
    let mut schedule = Vec::new();
    for i in 0..scenario.phases.len() {
        let t = std::time::Instant::now();
        let found = oracle::search_phase(scenario, i, &opts.run, &opts.budget, cache)
            .await
            .with_context(|| {
                format!(
                    "oracle search of {} phase {}",
                    scenario.name, scenario.phases[i].name
                )
            })?;
        say(
            opts,
            format!(
                "{} / oracle search {}: {} ({} settings, {:.0} s)",
                scenario.name,
                found.phase,
                if found.changes.is_empty() {
                    "defaults".to_string()
                } else {
                    found
                        .changes
                        .iter()
                        .map(|d| format!("{}={}", d.knob, d.to))
                        .collect::<Vec<_>>()
                        .join(" ")
                },
                found.candidates.len(),
                t.elapsed().as_secs_f64()
            ),
        );
        schedule.push(found);
    }
    Ok(schedule)
}

/// The progress line of one finished run.
fn run_line(scenario: &str, policy: PolicyName, r: &run::RunResult) -> String {
    format!(
        "{} / {}: goodput {:.1} chunks/s [{}], credits/chunk {}, {} changes, {} rollbacks, {} guard violations ({:.0} s)",
        scenario,
        policy.as_str(),
        r.overall.goodput,
        r.phases
            .iter()
            .map(|p| format!("{:.0}", p.goodput))
            .collect::<Vec<_>>()
            .join(" | "),
        r.overall
            .credits_per_chunk
            .map(|c| format!("{c:.3}"))
            .unwrap_or_else(|| "-".into()),
        r.overall.knob_changes,
        r.overall.rollbacks,
        r.guard_violations.len(),
        r.wall_s
    )
}

/// Runs every scenario under every policy and returns the summary.
pub async fn run_suite(opts: &SuiteOptions) -> Result<Summary> {
    let wall = std::time::Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let load_before = report::Machine::load_average();
    std::fs::create_dir_all(&opts.run.work_dir)
        .with_context(|| format!("creating {}", opts.run.work_dir.display()))?;
    crate::metrics::install();
    let mut cache = OracleCache::default();
    let llm = if opts.policies.contains(&PolicyName::LlmScripted) {
        Some(llm_scripted(&opts.run.work_dir).await?)
    } else {
        None
    };
    let mut results = Vec::new();
    for (file, scenario) in &opts.scenarios {
        let cfg = &opts.run;
        let phases: Vec<PhaseInfo> = scenario
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| PhaseInfo {
                name: p.name.clone(),
                duration_s: p.duration_s,
                real_s: cfg.windows_of(scenario, i) as f64 * cfg.interval.as_secs_f64(),
                windows: cfg.windows_of(scenario, i),
                workload: scenario.workload_of(i),
            })
            .collect();
        let oracle = if opts.policies.contains(&PolicyName::Oracle) {
            oracle_schedule(opts, scenario, &mut cache).await?
        } else {
            Vec::new()
        };
        let mut runs = Vec::new();
        for &policy in &opts.policies {
            let driver = match policy {
                PolicyName::Oracle => {
                    Driver::Schedule(oracle.iter().map(|o| o.knobs.clone()).collect())
                }
                PolicyName::LlmScripted => Driver::Policy(
                    llm.as_ref()
                        .map(|(_, p)| p.clone())
                        .context("the scripted chat endpoint is not running")?,
                ),
                p => Driver::builtin(p).expect("built-in policy"),
            };
            let r = run::run_scenario(scenario, policy, &driver, cfg)
                .await
                .with_context(|| format!("{} under {}", scenario.name, policy.as_str()))?;
            say(opts, run_line(&scenario.name, policy, &r));
            if r.urls_wrapped {
                say(opts, format!("warning: {} / {} ran out of distinct article URLs; later URL tasks repeated pages", scenario.name, policy.as_str()));
            }
            runs.push(r);
        }
        let mut result = ScenarioResult {
            name: scenario.name.clone(),
            description: scenario.description.clone(),
            file: file.clone(),
            phases,
            runs,
            oracle,
            targets: Default::default(),
        };
        report::finish(&mut result);
        results.push(result);
    }
    if let Some((sim, _)) = llm {
        sim.shutdown().await;
    }
    Ok(Summary {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_unix_s,
        quick: opts.quick,
        time_scale: opts.run.time_scale,
        interval_ms: opts.run.interval.as_millis() as u64,
        seed: opts.run.seed,
        oracle_budget: opts.budget,
        machine: report::Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            load_before,
            load_after: report::Machine::load_average(),
        },
        wall_s: wall.elapsed().as_secs_f64(),
        scenarios: results,
    })
}

/// Markers around the generated section of a Markdown file.
pub const DOC_BEGIN: &str =
    "<!-- scenario-bench:begin (generated by `freshet bench scenarios --docs`) -->";
/// End marker.
pub const DOC_END: &str = "<!-- scenario-bench:end -->";

/// Writes `summary.json`, `scenarios.md` and `charts/*.svg` into `out`.
/// Returns the Markdown.
pub fn write_outputs(summary: &Summary, out: &Path) -> Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::to_string_pretty(summary)?;
    std::fs::write(out.join("summary.json"), json)
        .with_context(|| format!("writing {}", out.join("summary.json").display()))?;
    for s in &summary.scenarios {
        chart::write(s, &out.join("charts"))?;
    }
    let md = report::markdown(summary, "charts");
    std::fs::write(out.join("scenarios.md"), &md)
        .with_context(|| format!("writing {}", out.join("scenarios.md").display()))?;
    Ok(md)
}

/// Replaces the generated section of `doc` (between [`DOC_BEGIN`] and
/// [`DOC_END`], appended when absent) with the suite's Markdown, and copies
/// the charts next to it into `bench/`.
pub fn write_docs(summary: &Summary, out: &Path, doc: &Path) -> Result<()> {
    let dir = doc.parent().unwrap_or(Path::new(".")).join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for s in &summary.scenarios {
        let from = out.join("charts").join(format!("{}.svg", s.name));
        std::fs::copy(&from, dir.join(format!("{}.svg", s.name)))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    replace_section(doc, DOC_BEGIN, DOC_END, &report::markdown(summary, "bench"))
}

/// Replaces the text of `doc` between the markers `begin` and `end` (kept)
/// with `body`, or appends the marked section when the markers are absent.
pub fn replace_section(doc: &Path, begin: &str, end: &str, body: &str) -> Result<()> {
    let section = format!("{begin}\n{body}{end}");
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let new = match (text.find(begin), text.find(end)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{section}{}", &text[..a], &text[b + end.len()..])
        }
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))
}
