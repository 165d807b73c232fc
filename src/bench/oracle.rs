//! The oracle: the best *static* knob setting for each phase, found by a
//! bounded search on that phase alone.
//!
//! For each phase the simulator is pinned to it ([`SimServer::set_phase`])
//! and one pipeline runs under the phase's workload; after a warm-up,
//! candidate knob settings are swapped in one after another, each given a
//! settling time and then measured (the [`OracleBudget`]). Work left over
//! from the candidate before carries into the settling time only: under a
//! phase that overloads the defaults every candidate has a backlog to work
//! on anyway, so what is measured is what the candidate can sustain. The search is a coordinate search from
//! the default knobs over a fixed list of dimensions, in pipeline order:
//!
//! 1. `extract.render_overrides`: none, the most JavaScript-heavy domain,
//!    the more JavaScript-heavy half, or every domain that serves JavaScript shells to at least half its
//!    visitors in this phase (the oracle may read the scenario: that is
//!    what makes it an oracle);
//! 2. `extract.slots`: 16, 32, 64;
//! 3. `extract.timeout_ms`: 4000, 1500 (only when the phase makes requests hang);
//! 4. `search.slots`: 2, 8, 16 (only when the phase has keyword tasks;
//!    fewer can beat more against a throttled provider, so all are tried);
//! 5. `embed.slots` / `embed.batch_size`: 4/64, 4/128, 8/256.
//!
//! A dimension's values are tried in order; the best value so far is kept
//! and an ordered dimension (more of one resource) stops at the first value
//! that does not beat it (more of what did not help once will not help more). A setting
//! beats another when its goodput is higher by more than [`TIE`]; within
//! that band the one with fewer credits per chunk wins. A setting that
//! spends more credits per minute than the guard's budget is never chosen
//! (the oracle plays by the same budget as the policies). Dimensions that
//! cannot matter in the phase are skipped, so the number of evaluations per
//! phase is at most 13 and usually 5-8.
//!
//! Phases with the same web and workload (the "healthy" phase several
//! scenarios share) are searched once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::load::TaskGen;
use super::run::{run_settings, RunConfig};
use crate::control::observe::{Observation, Observer};
use crate::knobs::{KnobDiff, Knobs, RenderMode};
use crate::service::Runtime;
use crate::sim::{Phase, Scenario, SimOptions, SimServer};

/// Relative goodput difference within which two settings tie.
pub const TIE: f64 = 0.05;

/// How long each candidate is measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct OracleBudget {
    /// Real seconds of load before the first candidate (the pipeline fills up).
    pub warmup_s: f64,
    /// Real seconds after each candidate's knobs are swapped in, not measured.
    pub settle_s: f64,
    /// Real seconds measured per candidate.
    pub measure_s: f64,
    /// Values tried per dimension at most (`--quick` tries only the
    /// largest of an ordered dimension).
    pub max_values: usize,
}

/// One measured candidate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    /// What was tried (dimension and value).
    pub label: String,
    /// The knobs that differ from the defaults.
    pub changes: Vec<KnobDiff>,
    /// Chunks indexed per real second.
    pub goodput: f64,
    /// Credits per real minute.
    pub credits_per_min: f64,
    /// Credits per indexed chunk.
    pub credits_per_chunk: Option<f64>,
    /// Operational errors per finished unit.
    pub error_rate: f64,
}

/// The oracle's choice for one phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseOracle {
    /// Phase name.
    pub phase: String,
    /// The chosen knobs.
    #[serde(skip)]
    pub knobs: Knobs,
    /// How they differ from the defaults.
    pub changes: Vec<KnobDiff>,
    /// Index of the chosen candidate.
    pub chosen: usize,
    /// Everything measured, in order (the search budget actually spent).
    pub candidates: Vec<Candidate>,
    /// The search was done for an identical phase of this scenario/phase.
    pub reused_from: Option<String>,
}

/// Searches already made in this process, by phase content.
#[derive(Debug, Default)]
pub struct OracleCache {
    found: HashMap<String, (String, PhaseOracle)>,
}

/// What makes two phases the same for the oracle: the web and the workload
/// (not the name or the length).
fn phase_key(scenario: &Scenario, i: usize) -> String {
    let mut p: Phase = scenario.phases[i].clone();
    p.name.clear();
    p.duration_s = 0.0;
    p.workload = Default::default();
    serde_json::to_string(&(p, scenario.workload_of(i))).unwrap_or_default()
}

/// Domains serving JavaScript shells to at least half their visitors in
/// the phase, most JavaScript-heavy first.
fn js_domains(phase: &Phase) -> Vec<String> {
    let mut d: Vec<(String, f64)> = crate::sim::corpus::DOMAIN_NAMES
        .iter()
        .map(|n| {
            let name = format!("{n}.sim.test");
            let js = phase.domain_profile(&name).1;
            (name, js)
        })
        .filter(|(_, js)| *js >= 0.5)
        .collect();
    d.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    d.into_iter().map(|(n, _)| n).collect()
}

fn hangs(phase: &Phase) -> bool {
    phase.pages.timeout > 0.0
        || phase.render.timeout > 0.0
        || phase.search.timeout > 0.0
        || phase
            .domains
            .values()
            .any(|o| o.timeout.unwrap_or(0.0) > 0.0)
}

/// A pipeline under phase `i`'s load on which candidates are measured one
/// after another by swapping their knobs in (the simulator is pinned).
struct Bench {
    runtime: Runtime,
    dir: std::path::PathBuf,
    stop: watch::Sender<bool>,
    generator: tokio::task::JoinHandle<TaskGen>,
}

impl Bench {
    async fn start(
        sim: &SimServer,
        scenario: &Scenario,
        i: usize,
        cfg: &RunConfig,
        budget: &OracleBudget,
    ) -> Result<Bench> {
        let dir = super::run::unique_dir(cfg, &format!("oracle-{}-{i}", scenario.name));
        let settings = run_settings(cfg, sim, dir.clone())?;
        let runtime = Runtime::build(&settings).await?;
        let (stop, stopped) = watch::channel(false);
        let generator = tokio::spawn(super::run::generate(
            runtime.source.clone(),
            Arc::new(scenario.clone()),
            Arc::new(AtomicUsize::new(i)),
            TaskGen::new(sim.corpus(), sim.addr().port(), cfg.seed),
            Arc::new(AtomicU64::new(0)),
            stopped,
        ));
        tokio::time::sleep(Duration::from_secs_f64(budget.warmup_s)).await;
        Ok(Bench {
            runtime,
            dir,
            stop,
            generator,
        })
    }

    /// Swaps `knobs` in, lets the pipeline settle, measures.
    async fn measure(&self, knobs: &Knobs, budget: &OracleBudget) -> Result<Observation> {
        if self.runtime.live.load().knobs != *knobs {
            self.runtime
                .live
                .swap(knobs.clone())
                .context("swapping in a candidate")?;
        }
        tokio::time::sleep(Duration::from_secs_f64(budget.settle_s)).await;
        let mut obs = Observer::new(self.runtime.live.clone());
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs_f64(budget.measure_s / 4.0)).await;
            obs.sample();
        }
        Ok(obs.observe())
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.generator.await;
        super::run::teardown(self.runtime).await;
        super::run::retire_dir(self.dir, 2);
    }
}

/// Whether `a` beats `b` (see the module docs).
fn beats(a: &Candidate, b: &Candidate, budget: f64) -> bool {
    let admissible = |c: &Candidate| c.credits_per_min <= budget;
    if admissible(a) != admissible(b) {
        return admissible(a);
    }
    if a.goodput > b.goodput * (1.0 + TIE) {
        return true;
    }
    if a.goodput < b.goodput * (1.0 - TIE) {
        return false;
    }
    let cpc = |c: &Candidate| c.credits_per_chunk.unwrap_or(f64::INFINITY);
    cpc(a) < cpc(b) * 0.97
}

/// A dimension: its name, whether its values are ordered (more of one
/// resource: the search stops at the first value that does not help), and
/// the candidate knobs.
type Dimension = (&'static str, bool, Vec<(String, Knobs)>);

/// The candidate values of each dimension, given the best knobs so far.
fn dimensions(scenario: &Scenario, i: usize, best: &Knobs) -> Vec<Dimension> {
    let phase = &scenario.phases[i];
    let mut dims: Vec<Dimension> = Vec::new();
    let js = js_domains(phase);
    if !js.is_empty() {
        let mut values = Vec::new();
        // The most JavaScript-heavy domain, half of them, all of them: the
        // smaller sets matter when the credits budget cannot pay for all.
        let mut sizes = vec![1, js.len().div_ceil(2), js.len()];
        sizes.dedup();
        for n in sizes {
            let set = &js[..n];
            let mut k = best.clone();
            for d in set {
                k.extract
                    .render_overrides
                    .insert(d.clone(), RenderMode::Remote);
            }
            values.push((
                format!("render {} JavaScript-heavy domains remotely", set.len()),
                k,
            ));
        }
        dims.push(("render", true, values));
    }
    let mut values = Vec::new();
    for n in [16u32, 32, 64] {
        let mut k = best.clone();
        k.extract.slots = n;
        values.push((format!("extract.slots = {n}"), k));
    }
    dims.push(("extract.slots", true, values));
    if hangs(phase) {
        let mut values = Vec::new();
        for ms in [4000u64, 1500] {
            let mut k = best.clone();
            k.extract.timeout_ms = ms;
            k.search.timeout_ms = ms.max(2000);
            values.push((format!("extract.timeout_ms = {ms}"), k));
        }
        dims.push(("timeout", true, values));
    }
    if scenario.workload_of(i).mix.keyword > 0.0 {
        let mut values = Vec::new();
        // Fewer (a throttled provider) or more: not ordered, all are tried.
        for n in [2u32, 8, 16] {
            let mut k = best.clone();
            k.search.slots = n;
            values.push((format!("search.slots = {n}"), k));
        }
        dims.push(("search.slots", false, values));
    }
    let mut values = Vec::new();
    for (slots, batch) in [(4u32, 64u32), (4, 128), (8, 256)] {
        let mut k = best.clone();
        k.embed.slots = slots;
        k.embed.batch_size = batch;
        values.push((
            format!("embed.slots = {slots}, embed.batch_size = {batch}"),
            k,
        ));
    }
    dims.push(("embed", true, values));
    dims
}

/// Searches the best static knobs for phase `i` of `scenario`.
pub async fn search_phase(
    scenario: &Scenario,
    i: usize,
    cfg: &RunConfig,
    budget: &OracleBudget,
    cache: &mut OracleCache,
) -> Result<PhaseOracle> {
    let key = phase_key(scenario, i);
    let name = scenario.phases[i].name.clone();
    if let Some((from, found)) = cache.found.get(&key) {
        let mut found = found.clone();
        found.phase = name;
        found.reused_from = Some(from.clone());
        return Ok(found);
    }
    let sim = SimServer::start(SimOptions::new(scenario.clone(), cfg.seed)).await?;
    sim.set_phase(i);
    let defaults = cfg.base.knobs.clone();
    let credit_budget = cfg.guard.global().credits_budget_per_minute;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut all_knobs: Vec<Knobs> = Vec::new();
    let bench = Bench::start(&sim, scenario, i, cfg, budget).await?;
    let measure = |label: String, knobs: Knobs| {
        let (bench, defaults) = (&bench, &defaults);
        async move {
            let o = bench
                .measure(&knobs, budget)
                .await
                .with_context(|| format!("oracle candidate `{label}`"))?;
            Ok::<_, anyhow::Error>((
                Candidate {
                    label,
                    changes: defaults.diff(&knobs),
                    goodput: o.goodput,
                    credits_per_min: o.credits_per_min,
                    credits_per_chunk: o.credits_per_chunk,
                    error_rate: o.error_rate,
                },
                knobs,
            ))
        }
    };
    let (c, k) = measure("defaults".into(), defaults.clone()).await?;
    candidates.push(c);
    all_knobs.push(k);
    let mut best = 0usize;
    let n_dims = dimensions(scenario, i, &defaults).len();
    for d in 0..n_dims {
        let dims = dimensions(scenario, i, &all_knobs[best]);
        let (_, ordered, values) = &dims[d];
        let start = best;
        let keep = budget.max_values.max(1).min(values.len());
        let values: Vec<(String, Knobs)> = if *ordered {
            values[values.len() - keep..].to_vec()
        } else {
            values[..keep].to_vec()
        };
        for (label, knobs) in values {
            let (c, k) = measure(label, knobs).await?;
            // Unordered values are each compared with the dimension's start.
            let against = if *ordered { best } else { start };
            let improved = beats(&c, &candidates[against], credit_budget)
                && beats(&c, &candidates[best], credit_budget);
            candidates.push(c);
            all_knobs.push(k);
            if improved {
                best = candidates.len() - 1;
            } else if *ordered {
                break;
            }
        }
    }
    bench.stop().await;
    sim.shutdown().await;
    let found = PhaseOracle {
        phase: name.clone(),
        knobs: all_knobs[best].clone(),
        changes: defaults.diff(&all_knobs[best]),
        chosen: best,
        candidates,
        reused_from: None,
    };
    cache
        .found
        .insert(key, (format!("{}/{}", scenario.name, name), found.clone()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(goodput: f64, credits_per_min: f64, cpc: Option<f64>) -> Candidate {
        Candidate {
            label: String::new(),
            changes: vec![],
            goodput,
            credits_per_min,
            credits_per_chunk: cpc,
            error_rate: 0.0,
        }
    }

    #[test]
    fn more_goodput_wins_ties_go_to_the_cheaper_and_the_budget_binds() {
        assert!(beats(
            &cand(120.0, 0.0, None),
            &cand(100.0, 0.0, None),
            600.0
        ));
        assert!(!beats(
            &cand(102.0, 0.0, None),
            &cand(100.0, 0.0, None),
            600.0
        ));
        assert!(beats(
            &cand(99.0, 10.0, Some(0.1)),
            &cand(100.0, 50.0, Some(0.5)),
            600.0
        ));
        assert!(!beats(
            &cand(300.0, 900.0, Some(0.1)),
            &cand(100.0, 50.0, Some(0.5)),
            600.0
        ));
    }

    #[test]
    fn phases_differing_only_in_name_and_length_share_a_search() {
        let sc = Scenario::from_toml_str(
            "name='s'\n[[phase]]\nname='a'\nduration_s=10\n[[phase]]\nname='b'\nduration_s=20\n[[phase]]\nname='c'\nduration_s=10\n[phase.workload]\nrate=99\n",
        )
        .unwrap();
        assert_eq!(phase_key(&sc, 0), phase_key(&sc, 1));
        assert_ne!(phase_key(&sc, 0), phase_key(&sc, 2));
    }

    #[test]
    fn dimensions_skip_what_cannot_matter() {
        let sc = Scenario::steady_default();
        let dims = dimensions(&sc, 0, &Knobs::default());
        let names: Vec<&str> = dims.iter().map(|d| d.0).collect();
        assert_eq!(names, ["extract.slots", "embed"]);
        let js = Scenario::from_toml_str(
            "name='j'\n[workload]\nmix={url=1,keyword=1}\n[[phase]]\nname='a'\nduration_s=1\n[phase.pages]\ntimeout=0.1\n[phase.domains.\"techdaily.sim.test\"]\njs_share=0.9\n[phase.domains.\"devdocs.sim.test\"]\njs_share=0.6\n",
        )
        .unwrap();
        let dims = dimensions(&js, 0, &Knobs::default());
        let names: Vec<&str> = dims.iter().map(|d| d.0).collect();
        assert_eq!(
            names,
            [
                "render",
                "extract.slots",
                "timeout",
                "search.slots",
                "embed"
            ]
        );
        // Half first (the most JavaScript-heavy domain), then both.
        let render = &dims[0].2;
        assert_eq!(render[0].1.extract.render_overrides.len(), 1);
        assert!(render[0]
            .1
            .extract
            .render_overrides
            .contains_key("techdaily.sim.test"));
        assert_eq!(render[1].1.extract.render_overrides.len(), 2);
    }
}
