//! The controller's own cost per decision: closing an observation window
//! over a realistically populated metrics tap (every stage, error classes,
//! 64 domains x 2 render modes), the heuristic's decision, and the guard's
//! verdicts; and the three together. What the data plane pays for the
//! controller is one snapshot load per unit of work (`benches/live.rs`).

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use freshet::control::guard::Guard;
use freshet::control::observe::Observer;
use freshet::control::policy::heuristic;
use freshet::control::policy::Context;
use freshet::knobs::Knobs;
use freshet::live::LiveConfig;
use freshet::metrics::{self, TapRecorder};

/// Records one window's worth of pipeline activity into the tap.
fn activity(i: u64) {
    for stage in ["search", "extract", "transform", "embed", "index"] {
        metrics::counter!(metrics::STAGE_REQUESTS_TOTAL, "stage" => stage).increment(100);
        for n in 0..100u64 {
            let outcome = if n % 25 == 0 { "error" } else { "ok" };
            metrics::histogram!(metrics::STAGE_LATENCY_SECONDS, "stage" => stage, "outcome" => outcome)
                .record(0.01 + (n * 7 % 100) as f64 / 500.0);
        }
        for class in ["timeout", "rate_limited", "no_content", "upstream"] {
            metrics::counter!(metrics::STAGE_ERRORS_TOTAL, "stage" => stage, "error_type" => class)
                .increment(1);
            metrics::counter!(metrics::STAGE_RETRIES_TOTAL, "stage" => stage, "error_type" => class)
                .increment(2);
        }
        metrics::gauge!(metrics::STAGE_IN_FLIGHT, "stage" => stage).set((i % 8) as f64);
        metrics::gauge!(metrics::STAGE_QUEUE_DEPTH, "stage" => stage).set((i % 5) as f64);
        metrics::histogram!(metrics::STAGE_BACKPRESSURE_SECONDS, "stage" => stage).record(0.001);
    }
    for d in 0..64 {
        for mode in ["http", "remote"] {
            metrics::histogram!(metrics::EXTRACT_DOMAIN_QUALITY, "domain" => format!("site{d}.example"), "render_mode" => mode)
                .record(((d * 13 + i) % 100) as f64 / 100.0);
        }
    }
    for mode in ["http", "remote"] {
        metrics::histogram!(metrics::EXTRACT_QUALITY, "render_mode" => mode).record(0.8);
    }
    metrics::counter!(metrics::CHUNKS_INDEXED_TOTAL).increment(500);
    metrics::counter!(metrics::CREDITS_TOTAL, "provider" => "serppost", "endpoint" => "search")
        .increment(20);
    for n in 0..200 {
        metrics::histogram!(metrics::FRESHNESS_SECONDS).record(0.05 + n as f64 / 1000.0);
    }
}

fn bench_controller(c: &mut Criterion) {
    let live = LiveConfig::new(Knobs::default()).expect("defaults are valid");
    let recorder = TapRecorder::default();
    let mut observer = Observer::with_tap(live.clone(), recorder.0.clone());
    let guard = Guard::from_toml(
        &std::fs::read_to_string("policies/guardrails.toml").expect("guardrails file"),
        "policies/guardrails.toml",
    )
    .expect("valid guardrails");
    let mut i = 0u64;
    let mut window = || {
        i += 1;
        ::metrics::with_local_recorder(&recorder, || activity(i));
    };
    window();
    let recent: Vec<_> = (0..6)
        .map(|_| {
            window();
            observer.observe()
        })
        .collect();
    window();
    let obs = observer.observe();
    let knobs = live.load().knobs.clone();
    let ctx = Context {
        observation: &obs,
        recent: &recent,
        knobs: &knobs,
        version: 1,
        guard: &guard,
        decisions: &[],
    };
    let proposal = heuristic::decide(&ctx);

    c.bench_function("controller_observe", |b| {
        b.iter(|| black_box(observer.observe().goodput))
    });
    c.bench_function("controller_heuristic", |b| {
        b.iter(|| black_box(heuristic::decide(&ctx).changes.len()))
    });
    c.bench_function("controller_guard", |b| {
        b.iter(|| black_box(guard.check(&proposal.changes, &knobs, |_| None).len()))
    });
    c.bench_function("controller_decision", |b| {
        b.iter(|| {
            let o = observer.observe();
            let ctx = Context {
                observation: &o,
                ..ctx
            };
            let p = heuristic::decide(&ctx);
            black_box(guard.check(&p.changes, &knobs, |_| None).len())
        })
    });
    let _ = Arc::strong_count(&live);
}

criterion_group!(benches, bench_controller);
criterion_main!(benches);
