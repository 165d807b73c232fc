//! The scenario bench as a regression test of the controller: a short run
//! of two scenarios where tuning matters (a flash crowd that needs more
//! fetch slots, an upstream that starts losing requests),
//! `static` against
//! `heuristic`. If a change to the heuristic, the rollout judgement or the
//! controller loop costs the heuristic its lead, this fails.
//!
//! One test in this binary, so no other pipeline shares the process-wide
//! metrics tap the controller observes.

mod common;

use std::time::Duration;

use freshet::bench::run::PolicyName;
use freshet::bench::run_suite;

/// The heuristic's goodput must beat the static default's by this factor
/// (full-length runs show 2x on both scenarios; the short ones are noisier).
const MARGIN: f64 = 1.15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_beats_static_on_goodput() {
    let work_dir = std::env::temp_dir().join(format!("freshet-bench-test-{}", std::process::id()));
    let opts = common::bench::quick_suite(
        &["flash-crowd", "flaky-upstream"],
        vec![PolicyName::Static, PolicyName::Heuristic],
        work_dir.clone(),
    );
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
