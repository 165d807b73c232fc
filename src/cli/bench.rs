//! `freshet bench pipeline`: a fixed-rate load through the whole pipeline,
//! reporting throughput and freshness as a table.
//!
//! Documents (`--kind document`) need no network: they measure transform,
//! embedding (the `hash` embedder) and qdrant-edge. URLs (`--kind url`) go
//! through the simulator (fetch and extraction included).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::dataplane::pipeline::{Counters, Task};
use crate::service::Runtime;
use crate::settings::{EmbedBackend, Settings};
use crate::sim::{Scenario, SimOptions, SimServer};

/// Options of a pipeline bench run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Tasks offered per second.
    pub rate: f64,
    /// How long tasks are offered.
    pub duration: Duration,
    /// `document` or `url`.
    pub kind: String,
    /// Scenario for URL runs.
    pub scenario: Option<std::path::PathBuf>,
    /// Words per generated document.
    pub words: usize,
}

/// One run's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    /// Task kind.
    pub kind: String,
    /// Tasks per second offered.
    pub offered_per_s: f64,
    /// Tasks per second finished (indexed, skipped or dead-lettered).
    pub finished_per_s: f64,
    /// Chunks indexed per second.
    pub chunks_per_s: f64,
    /// Freshness p50, ms.
    pub p50_ms: f64,
    /// Freshness p95, ms.
    pub p95_ms: f64,
    /// Freshness p99, ms.
    pub p99_ms: f64,
    /// Dead letters.
    pub dead_letters: u64,
}

fn document(i: u64, words: usize) -> Task {
    const VOCAB: &[&str] = &[
        "river", "council", "budget", "school", "energy", "market", "policy", "station", "harbour",
        "museum", "engineer", "garden", "library", "network", "festival", "hospital", "bridge",
        "factory", "village", "forest",
    ];
    let mut text = String::with_capacity(words * 8);
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for w in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(VOCAB[(x % VOCAB.len() as u64) as usize]);
        text.push_str(if w % 12 == 11 { ". The " } else { " " });
    }
    text.push_str(&format!("Document {i} ends here."));
    Task::Document {
        id: format!("bench-{i}"),
        text,
        title: format!("Bench document {i}"),
        url: String::new(),
        ts_ms: None,
        metadata: Default::default(),
    }
}

/// Runs one bench and returns its row.
pub async fn run(base: &Settings, opts: &BenchOptions) -> Result<BenchRow> {
    let dir = std::env::temp_dir().join(format!(
        "freshet-bench-{}-{}",
        std::process::id(),
        crate::dataplane::pipeline::now_ms()
    ));
    let mut settings = base.clone();
    settings.service.data_dir = dir.clone();
    settings.embed.backend = EmbedBackend::Hash;
    let sim = if opts.kind == "url" {
        let scenario = match &opts.scenario {
            Some(p) => Scenario::load(p).with_context(|| format!("loading {}", p.display()))?,
            None => Scenario::steady_default(),
        };
        let sim = SimServer::start(SimOptions::new(scenario, 5)).await?;
        settings.provider.base_url = sim.base_url();
        settings.provider.api_key = crate::settings::Secret::new("sim-key");
        settings.resolve = vec![("sim.test".into(), std::net::IpAddr::from([127, 0, 0, 1]))];
        Some(sim)
    } else {
        None
    };
    let runtime = Runtime::build(&settings).await?;
    let source = runtime.source.clone();
    let urls = sim
        .as_ref()
        .map(|s| s.corpus().article_urls(s.addr().port(), 5_000))
        .unwrap_or_default();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(0.1));
    let mut next = tokio::time::Instant::now();
    let mut i = 0u64;
    while started.elapsed() < opts.duration {
        let task = if opts.kind == "url" {
            Task::Url {
                url: urls[i as usize % urls.len()].clone(),
                ts_ms: None,
            }
        } else {
            document(i, opts.words)
        };
        if !source.push(task, "bench").await {
            break;
        }
        i += 1;
        next += interval;
        tokio::time::sleep_until(next).await;
    }
    drop(source);
    let offered_secs = started.elapsed().as_secs_f64();
    let tracker = runtime.source.tracker().clone();
    let (_, counters_after, _) = runtime.drain().await;
    let total_secs = started.elapsed().as_secs_f64();
    let q = |p| counters_after.freshness_quantile(p).unwrap_or(f64::NAN) * 1e3;
    let row = BenchRow {
        kind: opts.kind.clone(),
        offered_per_s: i as f64 / offered_secs,
        finished_per_s: tracker.counts().finished as f64 / total_secs,
        chunks_per_s: Counters::get(&counters_after.chunks_indexed) as f64 / total_secs,
        p50_ms: q(0.5),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
        dead_letters: Counters::get(&counters_after.dead_letters),
    };
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(row)
}

/// Rows as a Markdown table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| kind | offered/s | finished/s | chunks/s | freshness p50 | p95 | p99 | dead letters |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {} |\n",
            r.kind,
            r.offered_per_s,
            r.finished_per_s,
            r.chunks_per_s,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.dead_letters
        ));
    }
    out
}
