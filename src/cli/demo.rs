//! `freshet demo`: the simulator and the pipeline in one process, on
//! embedded defaults, with live progress and a closing summary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use crate::dataplane::{Counters, Task};
use crate::service::Runtime;
use crate::settings::Settings;
use crate::sim::{Corpus, Scenario, SimOptions, SimServer};

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long to feed tasks before draining.
    pub duration: Duration,
    /// Scenario file; the built-in steady scenario when absent.
    pub scenario: Option<PathBuf>,
    /// Where the index, dead letters and metadata go.
    pub data_dir: PathBuf,
    /// Tasks per second of the built-in stream.
    pub rate: f64,
    /// Seed of the simulated web and the task stream.
    pub seed: u64,
    /// Embed through the simulator's OpenAI-compatible endpoint (else `hash` in-process).
    pub sim_embeddings: bool,
    /// Draw a progress bar (off when stderr is not a terminal).
    pub progress: bool,
    /// Length of one control window (the controller runs unless the
    /// settings say `[controller] mode = "off"`).
    pub control_interval: Duration,
    /// Kept up to date with the chunks indexed so far (for a watcher such
    /// as `freshet bench soak`).
    pub chunks_seen: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

/// What the demo did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoSummary {
    /// Seconds the stream ran.
    pub seconds: f64,
    /// Tasks sent.
    pub tasks: u64,
    /// Pages extracted.
    pub pages: u64,
    /// Documents indexed.
    pub docs_indexed: u64,
    /// Chunks upserted.
    pub chunks: u64,
    /// Chunks per second over the run.
    pub goodput: f64,
    /// Freshness p50, seconds.
    pub freshness_p50: Option<f64>,
    /// Freshness p99, seconds.
    pub freshness_p99: Option<f64>,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Duplicates and unchanged documents skipped.
    pub skipped: u64,
    /// Points in the index at the end.
    pub index_points: u64,
    /// Provider credits spent (search + remote render).
    pub credits: u64,
    /// Whether the drain finished in time.
    pub drained: bool,
    /// What the controller did (None when it was off).
    pub controller: Option<crate::control::ControllerReport>,
    /// The knob changes from the audit log: applied, committed, rolled back.
    pub changes: Vec<String>,
}

/// One line per controller event of the run, from the audit log (the
/// lines `freshet audit tail` prints).
fn change_lines(records: &[crate::control::audit::Record]) -> Vec<String> {
    use crate::control::audit::EventKind;
    records
        .iter()
        .filter(|r| {
            matches!(
                r.kind,
                EventKind::Applied
                    | EventKind::RolledBack
                    | EventKind::Committed
                    | EventKind::Rejected
                    | EventKind::PolicyError
            )
        })
        .map(crate::control::audit::Record::summary_line)
        .collect()
}

/// A deterministic stream of demo tasks: mostly URLs of simulated articles
/// (some of them JavaScript shells or near-duplicates, depending on the
/// scenario), some keywords, now and then a hostile page.
pub fn task_stream(corpus: &Corpus, port: u16, seed: u64) -> impl Iterator<Item = Task> {
    let articles = corpus.article_urls(port, 600);
    let dups: Vec<String> = corpus
        .near_duplicate_urls(port)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let hostile: Vec<String> = corpus
        .hostile_urls(port)
        .into_iter()
        .map(|(_, u)| u)
        .collect();
    let keywords = [
        "rust async runtimes",
        "heat pumps",
        "vector databases",
        "urban cycling",
        "coral reef restoration",
        "remote work policies",
        "electric vehicle batteries",
        "sourdough baking",
        "browser privacy",
        "kubernetes cost control",
    ];
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0u64..).map(move |i| {
        let r = next() % 100;
        if r < 10 {
            Task::Keyword {
                query: keywords[(next() % keywords.len() as u64) as usize].to_string(),
                ts_ms: None,
            }
        } else if r < 13 && !dups.is_empty() {
            Task::Url {
                url: dups[(next() % dups.len() as u64) as usize].clone(),
                ts_ms: None,
            }
        } else if r < 14 && !hostile.is_empty() {
            Task::Url {
                url: hostile[(next() % hostile.len() as u64) as usize].clone(),
                ts_ms: None,
            }
        } else {
            Task::Url {
                url: articles[(i as usize * 7 + (next() % 5) as usize) % articles.len()].clone(),
                ts_ms: None,
            }
        }
    })
}

fn fmt_secs(s: Option<f64>) -> String {
    match s {
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
        None => "-".into(),
    }
}

/// Runs the demo.
pub async fn run(base: &Settings, opts: DemoOptions) -> Result<DemoSummary> {
    let scenario = match &opts.scenario {
        Some(path) => {
            Scenario::load(path).with_context(|| format!("loading scenario {}", path.display()))?
        }
        None => Scenario::steady_default(),
    };
    let sim = SimServer::start(SimOptions {
        scenario,
        seed: opts.seed,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        api_key: "sim-key".into(),
        time_scale: 1.0,
    })
    .await?;
    let settings = sim.freshet_settings(base, &opts.data_dir, opts.sim_embeddings)?;
    let mut runtime = Runtime::build(&settings).await?;
    let audit_path = runtime.control.audit.path().to_path_buf();
    let first_seq = runtime.control.audit.len();
    let report = runtime.start_controller(&settings, Some(opts.control_interval))?;
    let counters = runtime.pipeline.counters();
    let index = runtime.index.clone();
    let dlq = runtime.dlq.clone();
    let provider = runtime.provider.clone();
    let source = runtime.source.clone();
    let port = sim.addr().port();
    let started = Instant::now();

    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid progress template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let status = |c: &Counters, secs: f64| {
        format!(
            "tasks {} | pages {} | chunks {} | goodput {:.1}/s | fresh p50 {} p99 {} | dead letters {}",
            Counters::get(&c.tasks),
            Counters::get(&c.pages),
            Counters::get(&c.chunks_indexed),
            Counters::get(&c.chunks_indexed) as f64 / secs.max(0.001),
            fmt_secs(c.freshness_quantile(0.5)),
            fmt_secs(c.freshness_quantile(0.99)),
            Counters::get(&c.dead_letters),
        )
    };

    // Feed the stream at the configured rate until the duration or Ctrl-C.
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(0.1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream = task_stream(sim.corpus(), port, opts.seed);
    let stop = tokio::time::sleep(opts.duration);
    tokio::pin!(stop);
    let ctrl_c = crate::service::shutdown::signal();
    tokio::pin!(ctrl_c);
    let mut last_draw = Instant::now();
    loop {
        tokio::select! {
                    _ = &mut stop => break,
                    _ = &mut ctrl_c => break,
                    _ = ticker.tick() => {
        if let Some(seen) = &opts.chunks_seen {
                            seen.store(Counters::get(&counters.chunks_indexed), std::sync::atomic::Ordering::Relaxed);
                        }
                        let task = stream.next().expect("the stream is endless");
                        if !source.push(task, "demo").await {
                            break;
                        }
                        if let Some(bar) = &bar {
                            if last_draw.elapsed() > Duration::from_millis(250) {
                                bar.set_message(status(&counters, started.elapsed().as_secs_f64()));
                                last_draw = Instant::now();
                            }
                        }
                    }
                }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(bar) = &bar {
        bar.set_message(format!("draining… {}", status(&counters, seconds)));
    }
    drop(source);
    let (drained, counters, _tracker) = runtime.drain().await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = DemoSummary {
        seconds,
        tasks: Counters::get(&counters.tasks),
        pages: Counters::get(&counters.pages),
        docs_indexed: Counters::get(&counters.docs_indexed),
        chunks: Counters::get(&counters.chunks_indexed),
        goodput: Counters::get(&counters.chunks_indexed) as f64 / seconds.max(0.001),
        freshness_p50: counters.freshness_quantile(0.5),
        freshness_p99: counters.freshness_quantile(0.99),
        dead_letters: dlq.written(),
        skipped: Counters::get(&counters.docs_duplicate) + Counters::get(&counters.docs_unchanged),
        index_points: index.count().await.unwrap_or(0),
        credits: provider
            .map(|p| crate::dataplane::search::SearchProvider::credits_used(p.as_ref()))
            .unwrap_or(0),
        drained,
        controller: report.map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        changes: crate::control::audit::read_records(&audit_path)
            .map(|records| {
                let ours: Vec<_> = records.into_iter().filter(|r| r.seq > first_seq).collect();
                change_lines(&ours)
            })
            .unwrap_or_default(),
    };
    sim.shutdown().await;
    Ok(summary)
}

/// The summary as a table.
pub fn render_summary(s: &DemoSummary, data_dir: &std::path::Path) -> String {
    let rows = [
        ("ran for", format!("{:.1} s", s.seconds)),
        ("tasks", s.tasks.to_string()),
        ("pages extracted", s.pages.to_string()),
        ("documents indexed", s.docs_indexed.to_string()),
        ("chunks indexed", s.chunks.to_string()),
        ("goodput", format!("{:.1} chunks/s", s.goodput)),
        (
            "freshness p50 / p99",
            format!(
                "{} / {}",
                fmt_secs(s.freshness_p50),
                fmt_secs(s.freshness_p99)
            ),
        ),
        ("skipped (duplicate/unchanged)", s.skipped.to_string()),
        ("dead letters", s.dead_letters.to_string()),
        ("credits spent", s.credits.to_string()),
        ("points in the index", s.index_points.to_string()),
        (
            "drained cleanly",
            if s.drained {
                "yes".into()
            } else {
                "no (unfinished work is redelivered)".into()
            },
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::from("\nfreshet demo summary\n");
    for (k, v) in rows {
        out.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    match &s.controller {
        None => out.push_str("\ncontroller: off\n"),
        Some(r) => {
            out.push_str(&format!(
                "\ncontroller: {} windows, {} proposals, {} applied, {} committed ({} ineffective), {} rolled back, {} refused by the guard, {} policy errors\n",
                r.windows, r.proposals, r.applied, r.committed, r.ineffective, r.rolled_back, r.rejected, r.policy_errors
            ));
            if s.changes.is_empty() {
                out.push_str("  no knob changes were needed\n");
            }
            for line in &s.changes {
                out.push_str(&format!("  {line}\n"));
            }
            out.push_str(&format!(
                "  review with: freshet audit tail --data-dir {}\n",
                data_dir.display()
            ));
        }
    }
    out.push_str(&format!(
        "\nindex and dead letters are in {}\ntry: freshet query \"heat pumps\" --data-dir {}\n",
        data_dir.display(),
        data_dir.display()
    ));
    out
}

/// Where the demo's embeddings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum DemoEmbed {
    /// The simulator's OpenAI-compatible endpoint.
    Sim,
    /// The in-process hash embedder.
    Hash,
}

/// The demo's controller policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum DemoPolicy {
    /// The built-in rules.
    Heuristic,
    /// The chat model of `[controller.llm]`.
    Llm,
    /// No controller.
    Off,
}

#[derive(Debug, clap::Args)]
pub(super) struct DemoArgs {
    /// How long to feed tasks (e.g. 60s, 2m) before draining.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    duration: Duration,
    /// Scenario of the simulated web.
    #[arg(long, default_value = "scenarios/steady.toml")]
    scenario: PathBuf,
    /// Where the index and dead letters go.
    #[arg(long, default_value = "./freshet-data")]
    data_dir: PathBuf,
    /// Tasks per second of the built-in stream.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seed of the simulated web and the stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Embeddings: `sim` (the simulator's OpenAI-compatible endpoint) or `hash` (in-process).
    #[arg(long, value_enum, default_value = "sim")]
    embed: DemoEmbed,
    /// Controller policy: `heuristic`, `llm` (needs `[controller.llm]` in
    /// the settings) or `off`.
    #[arg(long, value_enum, default_value = "heuristic")]
    policy: DemoPolicy,
    /// Length of one control window.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    control_interval: Duration,
}

/// Runs `freshet demo`: checks the arguments, runs the demo, prints the
/// summary; fails when the pipeline did not drain.
pub(super) async fn command(cli: &super::Cli, args: &DemoArgs) -> Result<ExitCode> {
    let mut s = super::settings(cli)?;
    match args.policy {
        DemoPolicy::Off => s.controller.mode = crate::settings::ControllerMode::Off,
        DemoPolicy::Heuristic => s.controller.policy = crate::settings::PolicyKind::Heuristic,
        DemoPolicy::Llm => {
            if s.controller.llm.base_url.is_empty() {
                bail!("--policy llm needs [controller.llm] base_url and model in the settings (or FRESHET_CONTROLLER__LLM__BASE_URL / __MODEL)");
            }
            s.controller.policy = crate::settings::PolicyKind::Llm;
        }
    }
    if args.control_interval.as_millis() < 100 {
        bail!("--control-interval must be at least 100ms");
    }
    super::init_logging(s.service.log_format, "error");
    let rate = args.rate;
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--rate must be a positive number of tasks per second");
    }
    let scenario = if args.scenario.exists() {
        Some(args.scenario.clone())
    } else if args.scenario == std::path::Path::new("scenarios/steady.toml") {
        None // run from anywhere: the built-in copy of the steady scenario
    } else {
        bail!("scenario file {} does not exist", args.scenario.display());
    };
    crate::metrics::install();
    let opts = DemoOptions {
        duration: args.duration,
        scenario,
        data_dir: args.data_dir.clone(),
        rate,
        seed: args.seed,
        sim_embeddings: args.embed == DemoEmbed::Sim,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        control_interval: args.control_interval,
        chunks_seen: None,
    };
    eprintln!(
        "freshet demo: simulated web + pipeline for {:.0} s at {rate} tasks/s (Ctrl-C stops early)",
        args.duration.as_secs_f64()
    );
    let summary = run(&s, opts).await?;
    super::print_out(&render_summary(&summary, &args.data_dir))?;
    Ok(if summary.drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
