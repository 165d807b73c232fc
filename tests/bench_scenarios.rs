//! The scenario bench as a regression test of the controller: a short run
//! of two scenarios where tuning matters (a flash crowd that needs more
//! fetch slots, an upstream that starts losing requests),
//! `static` against
//! `heuristic`. If a change to the heuristic, the rollout judgement or the
//! controller loop costs the heuristic its lead, this fails.
//!
//! One test in this binary, so no other pipeline shares the process-wide
//! metrics tap the controller observes.

use std::path::Path;
use std::time::Duration;

use freshet::bench::oracle::OracleBudget;
use freshet::bench::run::{PolicyName, RunConfig};
use freshet::bench::{run_suite, SuiteOptions, BUILTIN_GUARDRAILS};
use freshet::control::guard::Guard;
use freshet::settings::Settings;
use freshet::sim::Scenario;

/// The heuristic's goodput must beat the static default's by this factor
/// (full-length runs show 2x on both scenarios; the short ones are noisier).
const MARGIN: f64 = 1.15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_beats_static_on_goodput() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scenarios = ["flash-crowd", "flaky-upstream"]
        .iter()
        .map(|name| {
            let file = root.join("scenarios").join(format!("{name}.toml"));
            (
                file.display().to_string(),
                Scenario::load(&file).expect("shipped scenario"),
            )
        })
        .collect();
    let work_dir = std::env::temp_dir().join(format!("freshet-bench-test-{}", std::process::id()));
    let opts = SuiteOptions {
        scenarios,
        policies: vec![PolicyName::Static, PolicyName::Heuristic],
        run: RunConfig {
            base: Settings::from_toml("", "<defaults>", std::iter::empty()).unwrap(),
            guard: Guard::from_toml(BUILTIN_GUARDRAILS, "guardrails").unwrap(),
            time_scale: 20.0,
            interval: Duration::from_millis(300),
            seed: 7,
            work_dir: work_dir.clone(),
        },
        budget: OracleBudget {
            warmup_s: 0.5,
            settle_s: 0.3,
            measure_s: 0.6,
            max_values: 1,
        },
        quick: true,
        progress: true,
    };
    let summary = run_suite(&opts).await.expect("the suite runs");
    tokio::time::sleep(Duration::from_secs(1)).await;
    freshet::bench::run::retire_dir(work_dir, 0);
    for s in &summary.scenarios {
        let goodput = |p: PolicyName| {
            s.runs
                .iter()
                .find(|r| r.policy == p)
                .map(|r| r.overall.goodput)
                .unwrap()
        };
        let (st, h) = (goodput(PolicyName::Static), goodput(PolicyName::Heuristic));
        eprintln!("{}: static {st:.1}, heuristic {h:.1} chunks/s", s.name);
        assert!(
            h > MARGIN * st,
            "{}: the heuristic's goodput {h:.1} chunks/s is not {MARGIN}x the static default's {st:.1}",
            s.name
        );
        for r in &s.runs {
            assert!(
                r.guard_violations.is_empty(),
                "{} / {}: {:?}",
                s.name,
                r.policy.as_str(),
                r.guard_violations
            );
            assert!(r.windows.len() >= 18, "{} windows", r.windows.len());
        }
    }
}
