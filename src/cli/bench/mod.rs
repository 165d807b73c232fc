//! `freshet bench pipeline`: a fixed-rate load through the whole pipeline,
//! reporting throughput and freshness as a table.
//!
//! Documents (`--kind document`) need no network: they measure transform,
//! embedding (the `hash` embedder) and qdrant-edge. URLs (`--kind url`) go
//! through the simulator (fetch and extraction included). `freshet bench
//! kafka` (the `kafka` feature) is in [`kafka`]; `freshet bench scenarios`
//! drives [`crate::bench`].

mod embed;
mod freshness;
#[cfg(feature = "kafka")]
mod kafka;
mod retrieval;
mod soak;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};

use crate::dataplane::{Counters, Task};
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
    /// Documents or URLs.
    pub kind: BenchKind,
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

/// `base` with a fresh data dir of its own under the temp dir (returned
/// too, for removal) and the embedder `backend`: one bench run's service.
fn scratch_settings(base: &Settings, kind: &str, backend: EmbedBackend) -> (Settings, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "freshet-bench-{kind}-{}-{}",
        std::process::id(),
        crate::dataplane::task::now_ms()
    ));
    let mut settings = base.clone();
    settings.service.data_dir = dir.clone();
    settings.embed.backend = backend;
    (settings, dir)
}

/// Runs one bench and returns its row.
pub async fn run(base: &Settings, opts: &BenchOptions) -> Result<BenchRow> {
    let (mut settings, dir) = scratch_settings(base, "pipeline", EmbedBackend::Hash);
    let sim = if opts.kind == BenchKind::Url {
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
        let task = if opts.kind == BenchKind::Url {
            Task::Url {
                url: urls[i as usize % urls.len()].clone(),
                ts_ms: None,
            }
        } else {
            crate::bench::load::document(i, opts.words)
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
    let row = bench_row(
        opts.kind.as_str(),
        i as f64 / offered_secs,
        tracker.counts().finished as f64 / total_secs,
        &counters_after,
        total_secs,
    );
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

/// One row from a run's counters: `secs` is the run's length, for chunks/s.
fn bench_row(kind: &str, offered: f64, finished: f64, counters: &Counters, secs: f64) -> BenchRow {
    let q = |p| counters.freshness_quantile(p).unwrap_or(f64::NAN) * 1e3;
    BenchRow {
        kind: kind.to_string(),
        offered_per_s: offered,
        finished_per_s: finished,
        chunks_per_s: Counters::get(&counters.chunks_indexed) as f64 / secs,
        p50_ms: q(0.5),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
        dead_letters: Counters::get(&counters.dead_letters),
    }
}
/// `freshet bench scenarios` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ScenariosArgs {
    /// Scenario files (repeat the flag); default: every `scenarios/*.toml`.
    #[arg(long = "scenario", value_name = "FILE")]
    pub scenarios: Vec<std::path::PathBuf>,
    /// Policies to compare, in table order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "static,aimd,gradient2,vegas,arc,envoy-gradient,ds2,heuristic,llm-scripted,oracle"
    )]
    pub policies: Vec<crate::bench::run::PolicyName>,
    /// Where summary.json, scenarios.md and charts/ go.
    #[arg(long, default_value = "bench-results")]
    pub out: std::path::PathBuf,
    /// Every scenario shortened (the whole suite in under 3 minutes), same outputs.
    #[arg(long)]
    pub quick: bool,
    /// Seed of the simulated web and the task streams.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Run the suite once per seed (`--seed`, `--seed`+1, …) and report
    /// every figure as mean ± 95 % interval, with paired verdicts of the
    /// heuristic against each policy (seeds.md, seeds.json; each seed's
    /// own outputs under seed-N/).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub seeds: u64,
    /// Scenario seconds per real second (default 15, or 90 with --quick).
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Real length of a control window (default 500ms, or 200ms with --quick).
    #[arg(long, value_parser = super::parse_duration)]
    pub interval: Option<Duration>,
    /// Guardrails every policy's changes must pass (default
    /// policies/guardrails.toml, else the shipped copy compiled in).
    #[arg(long)]
    pub guardrails: Option<std::path::PathBuf>,
    /// Do not run anything: render the outputs (and --docs) again from a
    /// summary.json an earlier run wrote.
    /// Repeated (one summary.json per seed, as `--seeds` writes them under
    /// seed-N/), the multi-seed tables are made from them instead.
    #[arg(long, value_name = "SUMMARY_JSON")]
    pub from_summary: Vec<std::path::PathBuf>,
    /// Also write the tables into this Markdown file (between generated-section
    /// markers) and copy the charts next to it, e.g. docs/BENCHMARKS.md.
    #[arg(long)]
    pub docs: Option<std::path::PathBuf>,
}

/// The suite options `args` ask for.
pub fn suite_options(base: &Settings, args: &ScenariosArgs) -> Result<crate::bench::SuiteOptions> {
    use crate::bench::run::RunConfig;
    let files = if args.scenarios.is_empty() {
        crate::bench::scenario_files(std::path::Path::new("scenarios"))
            .context("run from the repository root, or name scenario files with --scenario FILE")?
    } else {
        args.scenarios.clone()
    };
    let mut scenarios = Vec::new();
    for f in files {
        scenarios.push((f.display().to_string(), Scenario::load(&f)?));
    }
    let mut policies = Vec::new();
    for &p in &args.policies {
        if !policies.contains(&p) {
            policies.push(p);
        }
    }
    let guard = match &args.guardrails {
        Some(path) => crate::control::guard::Guard::load(path)?,
        None => {
            let default = std::path::Path::new("policies/guardrails.toml");
            if default.exists() {
                crate::control::guard::Guard::load(default)?
            } else {
                crate::control::guard::Guard::from_toml(
                    crate::bench::BUILTIN_GUARDRAILS,
                    "<shipped policies/guardrails.toml>",
                )?
            }
        }
    };
    let time_scale = args
        .time_scale
        .unwrap_or(if args.quick { 90.0 } else { 15.0 });
    if !(time_scale.is_finite() && time_scale > 0.0) {
        anyhow::bail!("--time-scale must be a positive number");
    }
    let interval = args
        .interval
        .unwrap_or(Duration::from_millis(if args.quick { 200 } else { 500 }));
    if interval < Duration::from_millis(100) {
        anyhow::bail!("--interval must be at least 100ms");
    }
    Ok(crate::bench::SuiteOptions {
        scenarios,
        policies,
        run: RunConfig {
            base: base.clone(),
            guard,
            time_scale,
            interval,
            seed: args.seed,
            work_dir: std::env::temp_dir()
                .join(format!("freshet-scenarios-{}", std::process::id())),
        },
        budget: if args.quick {
            crate::bench::oracle::OracleBudget {
                warmup_s: 0.4,
                settle_s: 0.2,
                measure_s: 0.5,
                max_values: 1,
            }
        } else {
            crate::bench::oracle::OracleBudget {
                warmup_s: 1.5,
                settle_s: 1.0,
                measure_s: 2.0,
                max_values: 3,
            }
        },
        quick: args.quick,
        progress: true,
    })
}

/// Runs `freshet bench scenarios` and writes its outputs.
pub async fn scenarios(base: &Settings, args: &ScenariosArgs) -> Result<()> {
    if args.from_summary.len() > 1 {
        let mut summaries = Vec::new();
        for path in &args.from_summary {
            summaries.push(read_summary(path)?);
        }
        let wall = summaries.iter().map(|s| s.wall_s).sum();
        return write_seeds(&summaries, wall, args);
    }
    if let Some(path) = args.from_summary.first() {
        let summary = read_summary(path)?;
        let md = crate::bench::write_outputs(&summary, &args.out)?;
        if let Some(doc) = &args.docs {
            crate::bench::write_docs(&summary, &args.out, doc)?;
        }
        println!("{md}");
        return Ok(());
    }
    let opts = suite_options(base, args)?;
    eprintln!(
        "freshet bench scenarios: {} scenarios x {} policies x {} seeds, time scale {}x, window {} ms{}",
        opts.scenarios.len(),
        opts.policies.len(),
        args.seeds,
        opts.run.time_scale,
        opts.run.interval.as_millis(),
        if opts.quick { " (quick)" } else { "" }
    );
    if args.seeds > 1 {
        return several_seeds(opts, args).await;
    }
    let summary = crate::bench::run_suite(&opts).await;
    // Let the last runs' aborted work let go of their files first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    crate::bench::run::retire_dir(opts.run.work_dir.clone(), 0);
    let summary = summary?;
    let md = crate::bench::write_outputs(&summary, &args.out)?;
    if let Some(doc) = &args.docs {
        crate::bench::write_docs(&summary, &args.out, doc)?;
    }
    println!("{md}");
    eprintln!(
        "wrote {}/summary.json, scenarios.md and charts/ ({:.0} s)",
        args.out.display(),
        summary.wall_s
    );
    Ok(())
}

/// `--seeds N` with N > 1: the suite once per seed, then the aggregate.
async fn several_seeds(mut opts: crate::bench::SuiteOptions, args: &ScenariosArgs) -> Result<()> {
    let wall = Instant::now();
    let mut summaries = Vec::new();
    for i in 0..args.seeds {
        let seed = args.seed + i;
        opts.run.seed = seed;
        eprintln!("seed {seed} ({} of {})", i + 1, args.seeds);
        let summary = crate::bench::run_suite(&opts).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        crate::bench::run::retire_dir(opts.run.work_dir.clone(), 0);
        let summary = summary.with_context(|| format!("the suite with seed {seed}"))?;
        crate::bench::write_outputs(&summary, &args.out.join(format!("seed-{seed}")))?;
        summaries.push(summary);
    }
    write_seeds(&summaries, wall.elapsed().as_secs_f64(), args)
}

/// A `summary.json` an earlier run wrote.
fn read_summary(path: &std::path::Path) -> Result<crate::bench::report::Summary> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a scenario bench summary", path.display()))
}

/// The multi-seed outputs (seeds.json, seeds.md, `--docs`) of one summary per seed.
fn write_seeds(
    summaries: &[crate::bench::report::Summary],
    wall_s: f64,
    args: &ScenariosArgs,
) -> Result<()> {
    let agg = crate::bench::seeds::aggregate(summaries, wall_s);
    let md = crate::bench::seeds::markdown(&agg);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = args.out.join("seeds.json");
    std::fs::write(&json, serde_json::to_string_pretty(&agg)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let md_path = args.out.join("seeds.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    if let Some(doc) = &args.docs {
        crate::bench::seeds::write_docs(&md, doc)?;
    }
    println!("{md}");
    eprintln!(
        "wrote {}/seeds.json, seeds.md and seed-*/ ({:.0} s)",
        args.out.display(),
        agg.wall_s
    );
    Ok(())
}

/// What the pipeline bench offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchKind {
    /// Document tasks (no network).
    Document,
    /// URL tasks, through the simulator.
    Url,
}

impl BenchKind {
    /// The name on the command line and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            BenchKind::Document => "document",
            BenchKind::Url => "url",
        }
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum BenchCommand {
    /// Fixed-rate load through the whole pipeline: throughput and freshness.
    Pipeline {
        /// Tasks offered per second (several values: one row each).
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        rate: Vec<f64>,
        /// How long each rate is offered.
        #[arg(long, default_value = "20s", value_parser = super::parse_duration)]
        duration: Duration,
        /// `document` (no network) or `url` (through the simulator).
        #[arg(long, value_enum, default_value = "document")]
        kind: BenchKind,
        /// Scenario for `--kind url`.
        #[arg(long)]
        scenario: Option<std::path::PathBuf>,
        /// Words per generated document.
        #[arg(long, default_value_t = 400)]
        words: usize,
    },
    /// Kafka -> index: the sustained rate on a backlog, then freshness
    /// (task `ts_ms` to upsert ack) at fixed rates (a fresh topic per run).
    #[cfg(feature = "kafka")]
    Kafka {
        /// Bootstrap brokers (or FRESHET_KAFKA_BROKERS).
        #[arg(long, env = "FRESHET_KAFKA_BROKERS")]
        brokers: String,
        /// Documents in the backlog run (0: skip it).
        #[arg(long, default_value_t = 20_000)]
        backlog: u64,
        /// Rates offered (documents/s; one row each, lightest first);
        /// `50%`/`90%` are shares of the backlog run's rate.
        #[arg(long, value_delimiter = ',', default_value = "50%,90%,1000")]
        rate: Vec<String>,
        /// How long each rate is offered.
        #[arg(long, default_value = "20s", value_parser = super::parse_duration)]
        duration: Duration,
        /// Partitions of the bench topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Words per generated document.
        #[arg(long, default_value_t = 400)]
        words: usize,
    },
    /// The demo workload for a long time with the controller on: RSS, open
    /// files, threads, disk use and goodput sampled every few seconds, a
    /// table, samples.csv and soak.svg; fails when they grow after warm-up.
    Soak {
        /// How long the workload runs (e.g. 30m).
        #[arg(long, default_value = "30m", value_parser = super::parse_duration)]
        duration: Duration,
        /// Time between samples.
        #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
        every: Duration,
        /// Tasks per second of the demo stream.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Seed of the simulated web and the stream.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The run's data dir (emptied first).
        #[arg(long, default_value = "./freshet-soak")]
        data_dir: std::path::PathBuf,
        /// Where samples.csv and soak.svg go.
        #[arg(long, default_value = "bench-out/soak")]
        out: std::path::PathBuf,
    },
    /// The local embedder's chunks/s on real page chunks, beside
    /// sentence-transformers on the same chunks (`--python`), with the
    /// lowest cosine between the two implementations' vectors.
    Embed {
        /// HTML pages to chunk (searched recursively).
        #[arg(long, default_value = "tests/data/realpages")]
        pages: std::path::PathBuf,
        /// Chunks to embed.
        #[arg(long, default_value_t = 256)]
        chunks: usize,
        /// Thread counts (one row each).
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
        threads: Vec<usize>,
        /// Chunks per request (as `embed.batch_size`).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// The model directory (default: `[embed] model_dir`).
        #[arg(long)]
        model_dir: Option<std::path::PathBuf>,
        /// A Python with sentence-transformers installed: adds the reference rows.
        #[arg(long)]
        python: Option<std::path::PathBuf>,
        /// The reference script.
        #[arg(long, default_value = "scripts/embed-reference.py")]
        script: std::path::PathBuf,
    },
    /// Retrieval quality (MRR@10, known-item search over real pages) and
    /// embedding speed of each embedder, side by side.
    Retrieval {
        /// HTML pages (searched recursively).
        #[arg(long, default_value = "tests/data/realpages")]
        pages: std::path::PathBuf,
        /// Embedders to compare.
        #[arg(long, value_delimiter = ',', default_values_t = ["hash".to_string(), "static".to_string(), "local".to_string()])]
        embedders: Vec<String>,
        /// The model directory (default: `[embed] model_dir`).
        #[arg(long)]
        model_dir: Option<std::path::PathBuf>,
    },
    /// Reader-side freshness: documents posted to `/v1/ingest` at a fixed
    /// rate, each watched for on `/v1/search` until it is returned, with
    /// ordinary queries' latency under that load (a fresh service on
    /// loopback HTTP).
    Freshness {
        /// The service's embedder: `local`, `static` or `hash`.
        #[arg(long, default_value = "local")]
        embedder: String,
        /// Documents per second (several values: one row each); default:
        /// `--load` × the embedder's measured capacity.
        #[arg(long, value_delimiter = ',')]
        rate: Vec<f64>,
        /// Share of the embedder's capacity to offer when no `--rate` is given.
        #[arg(long, default_value_t = 0.7)]
        load: f64,
        /// How long documents are posted.
        #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
        duration: Duration,
        /// Words per document (150: one chunk of ~200 model tokens).
        #[arg(long, default_value_t = 150)]
        words: usize,
        /// Reader queries per second.
        #[arg(long, default_value_t = 10.0)]
        search_rate: f64,
        /// The reader's mode: `dense`, `sparse` or `hybrid`.
        #[arg(long, default_value = "hybrid")]
        search_mode: String,
        /// Kafka bootstrap brokers: documents arrive as Debezium change
        /// events through a fresh topic there instead of `/v1/ingest`.
        #[arg(long)]
        brokers: Option<String>,
    },
    /// How well freshet tunes itself: every scenario under every policy
    /// (static, aimd, the published baselines, heuristic, llm-scripted,
    /// oracle), per-phase figures, summary.json,
    /// Markdown tables and SVG charts.
    Scenarios(ScenariosArgs),
}

/// Runs `freshet bench …`.
pub(super) async fn command(cli: &super::Cli, cmd: &BenchCommand) -> Result<ExitCode> {
    let s = super::settings(cli)?;
    super::init_logging(s.service.log_format, "error");
    match cmd {
        BenchCommand::Pipeline {
            rate,
            duration,
            kind,
            scenario,
            words,
        } => {
            let mut rows = Vec::new();
            for r in rate {
                let opts = BenchOptions {
                    rate: *r,
                    duration: *duration,
                    kind: *kind,
                    scenario: scenario.clone(),
                    words: *words,
                };
                let row = run(&s, &opts).await?;
                eprintln!("{}", serde_json::to_string(&row)?);
                rows.push(row);
            }
            super::print_out(&table(&rows))?;
        }
        #[cfg(feature = "kafka")]
        BenchCommand::Kafka {
            brokers,
            backlog,
            rate,
            duration,
            partitions,
            words,
        } => {
            let opts = kafka::KafkaBenchOptions {
                brokers: brokers.clone(),
                partitions: *partitions,
                words: *words,
            };
            kafka::command(&s, &opts, *backlog, rate, *duration).await?;
        }
        BenchCommand::Scenarios(args) => scenarios(&s, args).await?,
        BenchCommand::Retrieval {
            pages,
            embedders,
            model_dir,
        } => {
            let model_dir = model_dir
                .clone()
                .unwrap_or_else(|| s.embed.local_model_dir());
            let (rows, about) = retrieval::run(pages, &model_dir, embedders).await?;
            eprintln!("{about}");
            super::print_out(&retrieval::table(&rows))?;
        }
        BenchCommand::Freshness {
            embedder,
            rate,
            load,
            duration,
            words,
            search_rate,
            search_mode,
            brokers,
        } => {
            let embedder: EmbedBackend = serde_json::from_value(serde_json::json!(embedder))
                .ok()
                .filter(|e| *e != EmbedBackend::Openai)
                .with_context(|| {
                    format!("--embedder `{embedder}`: use `local`, `static` or `hash`")
                })?;
            let search_mode =
                crate::dataplane::index::Mode::parse(search_mode).with_context(|| {
                    format!("--search-mode `{search_mode}`: use `dense`, `sparse` or `hybrid`")
                })?;
            if !(*load > 0.0 && load.is_finite()) {
                anyhow::bail!("--load must be a positive share of the capacity");
            }
            let rates: Vec<Option<f64>> = if rate.is_empty() {
                vec![None]
            } else {
                rate.iter().copied().map(Some).collect()
            };
            let mut rows = Vec::new();
            for r in rates {
                let opts = freshness::FreshnessOptions {
                    embedder,
                    rate: r,
                    load: *load,
                    duration: *duration,
                    words: *words,
                    search_rate: *search_rate,
                    search_mode,
                    brokers: brokers.clone(),
                };
                let row = freshness::run(&s, &opts).await?;
                eprintln!("{}", serde_json::to_string(&row)?);
                rows.push(row);
            }
            super::print_out(&freshness::table(&rows))?;
        }
        BenchCommand::Embed {
            pages,
            chunks,
            threads,
            batch,
            model_dir,
            python,
            script,
        } => {
            let opts = embed::EmbedBenchOptions {
                pages: pages.clone(),
                chunks: *chunks,
                threads: threads.clone(),
                batch: *batch,
                model_dir: model_dir
                    .clone()
                    .unwrap_or_else(|| s.embed.local_model_dir()),
                python: python.clone(),
                script: script.clone(),
            };
            let (rows, about) = tokio::task::spawn_blocking(move || embed::run(&opts)).await??;
            eprintln!("{about}");
            super::print_out(&embed::table(&rows))?;
        }
        BenchCommand::Soak {
            duration,
            every,
            rate,
            seed,
            data_dir,
            out,
        } => {
            crate::metrics::install();
            let opts = soak::SoakOptions {
                duration: *duration,
                every: *every,
                rate: *rate,
                seed: *seed,
                data_dir: data_dir.clone(),
                out: out.clone(),
            };
            let report = soak::run(&s, &opts).await?;
            super::print_out(&soak::table(&report))?;
            eprintln!("wrote {}/samples.csv and soak.svg", out.display());
            if !report.failures().is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
