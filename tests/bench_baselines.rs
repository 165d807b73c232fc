//! The heuristic against published adaptive controllers (issue 14): two
//! short scenarios where tuning matters (a flash crowd, an upstream that
//! starts losing requests), two seeds each, `arc` (Vector) and `gradient2`
//! (Netflix concurrency-limits) against `heuristic`. The heuristic must not
//! be behind either: its goodput, paired by seed, must not be behind by an
//! interval that excludes zero, and its mean over the seeds must be at
//! least [`FLOOR`] of the baseline's (two seeds give a wide interval, so
//! the floor is the check that binds).
//!
//! One test in this binary, so no other pipeline shares the process-wide
//! metrics tap the controller observes.

mod common;

use std::time::Duration;

use freshet::bench::run::PolicyName;
use freshet::bench::{run_suite, seeds};

/// The heuristic's mean goodput over the seeds, as a share of a baseline's.
const FLOOR: f64 = 0.9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_is_not_behind_arc_or_gradient2() {
    let work_dir =
        std::env::temp_dir().join(format!("freshet-baselines-test-{}", std::process::id()));
    let mut opts = common::bench::quick_suite(
        &["flash-crowd", "flaky-upstream"],
        vec![
            PolicyName::Arc,
            PolicyName::Gradient2,
            PolicyName::Heuristic,
        ],
        work_dir.clone(),
    );
    let mut summaries = Vec::new();
    for seed in [7, 8] {
        opts.run.seed = seed;
        summaries.push(run_suite(&opts).await.expect("the suite runs"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        freshet::bench::run::retire_dir(work_dir.clone(), 0);
    }
    let agg = seeds::aggregate(&summaries, 0.0);
    eprintln!("{}", seeds::markdown(&agg));
    for s in &agg.scenarios {
        let mean = |p: PolicyName| {
            s.policies
                .iter()
                .find(|x| x.policy == p)
                .map(|x| x.goodput.mean)
                .unwrap()
        };
        let h = mean(PolicyName::Heuristic);
        for other in [PolicyName::Arc, PolicyName::Gradient2] {
            let b = mean(other);
            let paired = s.heuristic_vs.iter().find(|v| v.other == other).unwrap();
            assert_ne!(
                paired.verdict,
                "behind",
                "{}: the heuristic is behind {} ({:+.1} % ± {:.1})",
                s.name,
                other.as_str(),
                paired.relative_diff.mean * 100.0,
                paired.relative_diff.ci95 * 100.0
            );
            assert!(
                h >= FLOOR * b,
                "{}: the heuristic's mean goodput {h:.1} chunks/s is below {FLOOR} of {}'s {b:.1}",
                s.name,
                other.as_str()
            );
        }
        for p in &s.policies {
            assert_eq!(p.guard_violations, 0, "{} / {}", s.name, p.policy.as_str());
        }
    }
}
