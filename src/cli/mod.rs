//! The command line: `freshet demo`, `run`, `query`, `extract`, `dlq`,
//! `config`, `sim`.
//!
//! This is an edge of the program: errors are `anyhow` with context, printed
//! once, and turned into a non-zero exit code.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::dataplane::extract::{self, fetch::Fetcher, render, ExtractStage, Page};
use crate::dataplane::search::serppost::SerpPost;
use crate::knobs::{RenderMode, SPECS};
use crate::live::LiveConfig;
use crate::settings::{LogFormat, Settings};

pub mod bench;
pub mod demo;

/// freshet keeps an LLM's retrieval index fresh and tunes itself while it runs.
#[derive(Debug, Parser)]
#[command(name = "freshet", version, about)]
pub struct Cli {
    /// Settings file (TOML); FRESHET_* environment variables override it.
    #[arg(long, global = true, env = "FRESHET_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the simulator and the pipeline on embedded defaults, with live progress.
    Demo {
        /// How long to feed tasks (e.g. 60s, 2m) before draining.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: std::time::Duration,
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
        #[arg(long, default_value = "sim")]
        embed: String,
        /// Controller policy: `heuristic`, `llm` (needs `[controller.llm]` in
        /// the settings) or `off`.
        #[arg(long, default_value = "heuristic")]
        policy: String,
        /// Length of one control window.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        control_interval: std::time::Duration,
    },
    /// Run the pipeline from a settings file until SIGTERM/Ctrl-C, then drain.
    Run,
    /// Benchmarks that print a table (see docs/BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Search the index and print url, title, score and the chunk.
    Query {
        /// The query text.
        text: String,
        /// Results to show.
        #[arg(short = 'k', long, default_value_t = 5)]
        k: usize,
        /// The data dir holding the index.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The change-audit log: tail, show a record, verify the chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Dead letters: list them or replay them through the pipeline.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Check or show settings and knobs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Extract the main content of one page (a URL, or a saved file offline).
    Extract(ExtractArgs),
    /// The simulated web used by the demo, tests and benchmarks.
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Fixed-rate load through the whole pipeline: throughput and freshness.
    Pipeline {
        /// Tasks offered per second (several values: one row each).
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        rate: Vec<f64>,
        /// How long each rate is offered.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// `document` (no network) or `url` (through the simulator).
        #[arg(long, default_value = "document")]
        kind: String,
        /// Scenario for `--kind url`.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Words per generated document.
        #[arg(long, default_value_t = 400)]
        words: usize,
    },
    /// Kafka -> index: the sustained rate on a backlog, then freshness
    /// (task `ts_ms` to upsert ack) at fixed rates (a fresh topic per run).
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
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Partitions of the bench topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Words per generated document.
        #[arg(long, default_value_t = 400)]
        words: usize,
    },
    /// How well freshet tunes itself: every scenario under every policy
    /// (static, aimd, heuristic, llm-scripted, oracle), per-phase figures, summary.json,
    /// Markdown tables and SVG charts.
    Scenarios(bench::ScenariosArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the last records (and with -f keep printing new ones).
    Tail {
        /// Records to print.
        #[arg(short = 'n', long, default_value_t = 20)]
        n: usize,
        /// Follow the log.
        #[arg(short = 'f', long)]
        follow: bool,
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print one record in full.
    Show {
        /// Its sequence number.
        seq: u64,
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check the hash chain; exits non-zero and names the first bad record.
    Verify {
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the last records the other instances of a Kafka consumer group
    /// published on the control topic (`cluster-audit.jsonl`), each with
    /// its instance; each instance's own `audit.jsonl` is the one to verify.
    Cluster {
        /// Records to print.
        #[arg(short = 'n', long, default_value_t = 20)]
        n: usize,
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Count dead letters by stage and error type, and show the latest.
    List {
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How many of the latest records to print.
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
    /// Re-submit every dead letter's task; replayed records move to dlq.replayed.jsonl.
    Replay {
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 2m, 500ms"))?;
    let secs = match unit.trim() {
        "ms" => value / 1e3,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit `{other}` (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err("duration must be positive".into());
    }
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("`{text}` is too long a duration"))
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a settings file; exits non-zero with the field and line on error.
    Check {
        /// The settings file.
        file: PathBuf,
    },
    /// Print the effective settings (secrets hidden) and every knob.
    Show,
    /// Roll a running instance's knobs back to an earlier version (admin API).
    Rollback {
        /// The version to return to.
        #[arg(long = "to")]
        to: u64,
        /// Who rolls back (recorded in the audit log).
        #[arg(long, env = "USER")]
        operator: String,
        /// The instance's address (its `[service] listen`).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// Admin token.
        #[arg(long, env = "FRESHET_SERVICE__ADMIN_TOKEN", hide_env_values = true)]
        token: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Markdown,
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct ExtractArgs {
    /// The page to fetch and extract.
    #[arg(
        value_name = "URL",
        required_unless_present_any = ["file", "batch"],
        conflicts_with = "file"
    )]
    target: Option<String>,
    /// Extract many saved pages: a folder of *.html, a .jsonl of {url, html}
    /// or a file listing pages; one JSON line per page on stdout, a summary
    /// (pages/s, p50/p99 ms) on stderr.
    #[arg(long, visible_alias = "dir", value_name = "PATH", conflicts_with_all = ["file", "target", "render"])]
    batch: Option<PathBuf>,
    /// A saved HTML page to extract offline (`-` reads stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The page's original URL, for links and metadata (with --file).
    #[arg(long = "url", value_name = "URL", requires = "file")]
    url_hint: Option<String>,
    /// Output format; json adds title, quality and its parts, mode and timings.
    #[arg(long, value_enum, default_value = "markdown")]
    format: Format,
    /// Render mode (default: the knobs' mode for the URL's domain).
    #[arg(long, conflicts_with = "file")]
    render: Option<String>,
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Serve the simulated web until Ctrl-C.
    Serve {
        /// Scenario file (a timeline of phases).
        #[arg(long, default_value = "scenarios/steady.toml")]
        scenario: PathBuf,
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = "127.0.0.1:8089")]
        addr: SocketAddr,
        /// Seed of the generated pages and faults.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Bearer key the API endpoints require.
        #[arg(long, default_value = "sim-key", env = "FRESHET_SIM_API_KEY")]
        api_key: String,
        /// Run the timeline this many times faster than real time.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
    },
}

/// Parses arguments, runs the command, maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (`freshet … | head`) ends quietly.
fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn settings(cli: &Cli) -> Result<Settings> {
    Ok(match &cli.config {
        Some(path) => Settings::load(path)?,
        None => Settings::from_env()?,
    })
}

fn init_logging(format: LogFormat, level: &str) {
    // qdrant-edge logs start-up notes at warn level that are not actionable.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},qdrant_edge=error"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Demo {
            duration,
            scenario,
            data_dir,
            rate,
            seed,
            embed,
            policy,
            control_interval,
        } => {
            let mut s = settings(&cli)?;
            match policy.as_str() {
                "off" => s.controller.mode = crate::settings::ControllerMode::Off,
                "heuristic" => s.controller.policy = crate::settings::PolicyKind::Heuristic,
                "llm" => {
                    if s.controller.llm.base_url.is_empty() {
                        bail!("--policy llm needs [controller.llm] base_url and model in the settings (or FRESHET_CONTROLLER__LLM__BASE_URL / __MODEL)");
                    }
                    s.controller.policy = crate::settings::PolicyKind::Llm;
                }
                other => bail!("--policy must be `heuristic`, `llm` or `off`, got `{other}`"),
            }
            if control_interval.as_millis() < 100 {
                bail!("--control-interval must be at least 100ms");
            }
            init_logging(s.service.log_format, "error");
            let sim_embeddings = match embed.as_str() {
                "sim" => true,
                "hash" => false,
                other => bail!("--embed must be `sim` or `hash`, got `{other}`"),
            };
            if !(rate.is_finite() && *rate > 0.0) {
                bail!("--rate must be a positive number of tasks per second");
            }
            let scenario = if scenario.exists() {
                Some(scenario.clone())
            } else if scenario == std::path::Path::new("scenarios/steady.toml") {
                None // run from anywhere: the built-in copy of the steady scenario
            } else {
                bail!("scenario file {} does not exist", scenario.display());
            };
            crate::metrics::install();
            let opts = demo::DemoOptions {
                duration: *duration,
                scenario,
                data_dir: data_dir.clone(),
                rate: *rate,
                seed: *seed,
                sim_embeddings,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                control_interval: *control_interval,
            };
            eprintln!(
                "freshet demo: simulated web + pipeline for {:.0} s at {rate} tasks/s (Ctrl-C stops early)",
                duration.as_secs_f64()
            );
            let summary = demo::run(&s, opts).await?;
            print_out(&demo::render_summary(&summary, data_dir))?;
            Ok(if summary.drained {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench(BenchCommand::Pipeline {
            rate,
            duration,
            kind,
            scenario,
            words,
        }) => {
            let s = settings(&cli)?;
            init_logging(s.service.log_format, "error");
            if !matches!(kind.as_str(), "document" | "url") {
                bail!("--kind must be `document` or `url`");
            }
            let mut rows = Vec::new();
            for r in rate {
                let opts = bench::BenchOptions {
                    rate: *r,
                    duration: *duration,
                    kind: kind.clone(),
                    scenario: scenario.clone(),
                    words: *words,
                };
                let row = bench::run(&s, &opts).await?;
                eprintln!("{}", serde_json::to_string(&row)?);
                rows.push(row);
            }
            print_out(&bench::table(&rows))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Kafka {
            brokers,
            backlog,
            rate,
            duration,
            partitions,
            words,
        }) => {
            let s = settings(&cli)?;
            init_logging(s.service.log_format, "error");
            let opts = bench::KafkaBenchOptions {
                brokers: brokers.clone(),
                partitions: *partitions,
                words: *words,
            };
            let mut rows = Vec::new();
            let mut sustained = None;
            if *backlog > 0 {
                let row = bench::run_kafka(&s, &opts, None, *backlog, *duration).await?;
                eprintln!("{}", serde_json::to_string(&row)?);
                sustained = Some(row.finished_per_s);
                rows.push(row);
            }
            let mut values = Vec::with_capacity(rate.len());
            for r in rate {
                let value: f64 = match r.strip_suffix('%') {
                    Some(share) => {
                        let share: f64 = share
                            .parse()
                            .with_context(|| format!("--rate {r}: not a percentage"))?;
                        sustained.context("a --rate in % needs the backlog run (--backlog > 0)")?
                            * share
                            / 100.0
                    }
                    None => r
                        .parse()
                        .with_context(|| format!("--rate {r}: not a number"))?,
                };
                if !(value.is_finite() && value > 0.0) {
                    anyhow::bail!("--rate {r}: must be a positive number of documents/s");
                }
                values.push(value);
            }
            // Lightest load first: a row past what the machine sustains
            // leaves a broker (tansu's memory storage at least) slower for
            // the rows after it, which would charge them for its overload.
            values.sort_by(f64::total_cmp);
            for value in values {
                let row = bench::run_kafka(&s, &opts, Some(value), 0, *duration).await?;
                eprintln!("{}", serde_json::to_string(&row)?);
                rows.push(row);
            }
            print_out(&bench::table(&rows))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Scenarios(args)) => {
            let s = settings(&cli)?;
            init_logging(s.service.log_format, "error");
            bench::scenarios(&s, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let s = settings(&cli)?;
            init_logging(s.service.log_format, &s.service.log_level);
            run_service(&s).await
        }
        Command::Query { text, k, data_dir } => {
            let mut s = settings(&cli)?;
            if let Some(dir) = data_dir {
                s.service.data_dir = dir.clone();
            }
            init_logging(s.service.log_format, "warn");
            query_command(&s, text, *k).await
        }
        Command::Audit(cmd) => {
            let mut s = settings(&cli)?;
            let dir = match cmd {
                AuditCommand::Tail { data_dir, .. }
                | AuditCommand::Show { data_dir, .. }
                | AuditCommand::Verify { data_dir }
                | AuditCommand::Cluster { data_dir, .. } => data_dir.clone(),
            };
            if let Some(dir) = dir {
                s.service.data_dir = dir;
            }
            audit_command(&s.service.data_dir.join("audit.jsonl"), cmd).await
        }
        Command::Dlq(DlqCommand::List { data_dir, last }) => {
            let mut s = settings(&cli)?;
            if let Some(dir) = data_dir {
                s.service.data_dir = dir.clone();
            }
            let path = s.service.data_dir.join("dlq.jsonl");
            let (letters, bad, origin) = if s.source.kind == crate::settings::SourceKind::Kafka
                && !s.kafka.dlq_topic.is_empty()
            {
                let k = s.kafka.clone();
                let topic = k.dlq_topic.clone();
                let records = tokio::task::spawn_blocking(move || {
                    crate::dataplane::dlq::read_topic(&k, &topic)
                })
                .await??;
                let mut letters = Vec::new();
                let mut bad = Vec::new();
                for r in records {
                    match r.letter {
                        Ok(l) => letters.push(l),
                        Err(e) => bad.push((
                            r.offset as usize,
                            format!("partition {} offset {}: {e}", r.partition, r.offset),
                        )),
                    }
                }
                (letters, bad, format!("topic {}", s.kafka.dlq_topic))
            } else {
                let (letters, bad) = crate::dataplane::dlq::Dlq::read_all(&path)?;
                (letters, bad, path.display().to_string())
            };
            let mut by: std::collections::BTreeMap<(String, String), usize> = Default::default();
            for l in &letters {
                *by.entry((l.stage.clone(), l.error_type.clone()))
                    .or_default() += 1;
            }
            let mut out = format!("{} dead letters in {origin}\n", letters.len());
            for ((stage, class), n) in by {
                out.push_str(&format!("  {stage:<10} {class:<14} {n}\n"));
            }
            for l in letters.iter().rev().take(*last) {
                out.push_str(&format!(
                    "- [{}] {} {}: {}\n",
                    l.source, l.stage, l.error_type, l.message
                ));
            }
            for (line, why) in bad {
                out.push_str(&format!("! line {line} is not a dead letter ({why})\n"));
            }
            print_out(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(DlqCommand::Replay { data_dir }) => {
            let mut s = settings(&cli)?;
            if let Some(dir) = data_dir {
                s.service.data_dir = dir.clone();
            }
            init_logging(s.service.log_format, "warn");
            replay_command(&s).await
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let s = Settings::load(file)?;
            print_out(&format!(
                "{}: ok ({} knobs, data dir {})\n",
                file.display(),
                SPECS.len(),
                s.service.data_dir.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Rollback {
            to,
            operator,
            addr,
            token,
        }) => {
            let url = format!("http://{addr}/v1/rollback/{to}");
            let response = reqwest::Client::new()
                .post(&url)
                .query(&[("operator", operator)])
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| {
                    format!("cannot reach {addr} (is `freshet run` listening there?)")
                })?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if status.is_success() {
                print_out(&format!("{body}\n"))?;
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("rollback refused (HTTP {status}): {body}");
            }
        }
        Command::Config(ConfigCommand::Show) => {
            let s = settings(&cli)?;
            let mut shown = toml::Table::try_from(&s).context("settings do not render as TOML")?;
            shown.remove("knobs");
            let mut out = format!(
                "# effective settings (secrets hidden)\n{}\n# live knobs: path = value  (limits; meaning)\n",
                toml::to_string_pretty(&shown)?
            );
            let values = s.knobs.to_paths();
            for spec in SPECS {
                let value = &values[spec.path];
                let limits = match spec.kind {
                    crate::knobs::KnobKind::Integer | crate::knobs::KnobKind::Number => {
                        format!("[{}, {}]", spec.min, spec.max)
                    }
                    _ => "http|remote".to_string(),
                };
                out.push_str(&format!(
                    "{} = {value}  ({limits}; {})\n",
                    spec.path, spec.doc
                ));
            }
            print_out(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Extract(args) => {
            let s = settings(&cli)?;
            init_logging(s.service.log_format, "warn");
            extract_command(&s, args).await
        }
        Command::Sim(SimCommand::Serve {
            scenario,
            addr,
            seed,
            api_key,
            time_scale,
        }) => {
            init_logging(LogFormat::Text, "info");
            if !(time_scale.is_finite() && *time_scale > 0.0) {
                bail!("--time-scale must be a positive number, got {time_scale}");
            }
            let scenario = crate::sim::Scenario::load(scenario)
                .with_context(|| format!("loading scenario {}", scenario.display()))?;
            let server = crate::sim::SimServer::start(crate::sim::SimOptions {
                scenario,
                seed: *seed,
                addr: *addr,
                api_key: api_key.clone(),
                time_scale: *time_scale,
            })
            .await?;
            let port = server.addr().port();
            eprintln!("simulator listening on {}", server.base_url());
            eprintln!(
                "  try: curl -s -X POST {}/api/search -H 'Authorization: Bearer {api_key}' -d '{{\"s\":\"rust\"}}'",
                server.base_url()
            );
            eprintln!(
                "  pages live on *.sim.test:{port}; resolve them to 127.0.0.1 (e.g. curl --resolve or [extract.resolve] \"sim.test\" = \"127.0.0.1\")"
            );
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            eprintln!("stopping");
            server.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn extract_command(s: &Settings, args: &ExtractArgs) -> Result<ExitCode> {
    if let Some(path) = &args.batch {
        let source = extract::batch::Source::detect(path);
        let summary = extract::batch::run(&source, &mut std::io::stdout().lock(), &Default::default())?;
        eprintln!("{}", serde_json::to_string(&summary)?);
        return Ok(ExitCode::SUCCESS);
    }
    let result: Result<Page, extract::ExtractError> = if let Some(file) = &args.file {
        let mut bytes = Vec::new();
        if file.as_os_str() == "-" {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading stdin")?;
        } else {
            bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        }
        let url = args
            .url_hint
            .clone()
            .unwrap_or_else(|| "file:///page.html".to_string());
        let html = extract::fetch::decode(&bytes, None, &url)?;
        let target = url.clone();
        let page = tokio::task::spawn_blocking(move || extract::extract_html(&html, &target))
            .await
            .context("the extractor crashed on this page")?;
        if page.quality.score < extract::NO_CONTENT_SCORE {
            let mut err = extract::ExtractError::new(
                crate::dataplane::retry::ErrorClass::NoContent,
                &url,
                format!(
                    "no main content (quality {:.2}, {} words)",
                    page.quality.score, page.quality.words
                ),
            );
            err.page = Some(Box::new(page));
            Err(err)
        } else {
            Ok(page)
        }
    } else {
        let url = args.target.clone().expect("clap requires url or --file");
        let live = LiveConfig::new(s.knobs.clone())?;
        let fetcher = Fetcher::new(&s.extract, &s.resolve)?;
        let renderer: Arc<dyn render::RemoteRenderer> = if s.provider.api_key.is_empty() {
            Arc::new(render::NoRenderer)
        } else {
            Arc::new(SerpPost::new(&s.provider)?)
        };
        let stage = ExtractStage::new(fetcher, renderer, live);
        match &args.render {
            Some(mode) => {
                let mode = RenderMode::parse(mode).map_err(anyhow::Error::msg)?;
                stage.extract_with(&url, mode).await
            }
            None => stage.extract(&url).await,
        }
    };
    let (page, error) = match result {
        Ok(page) => (Some(page), None),
        Err(mut e) => (e.page.take().map(|p| *p), Some(e)),
    };
    match args.format {
        Format::Json => {
            let mut value = serde_json::json!({ "page": page });
            if let Some(e) = &error {
                value["error"] = serde_json::json!({"class": e.class, "message": e.message});
            }
            print_out(&format!("{}\n", serde_json::to_string_pretty(&value)?))?;
        }
        Format::Markdown => {
            if let Some(p) = &page {
                let title = if p.title.is_empty() {
                    String::new()
                } else {
                    format!("# {}\n\n", p.title)
                };
                print_out(&format!("{title}{}\n", p.markdown))?;
            }
        }
        Format::Text => {
            if let Some(p) = &page {
                print_out(&format!(
                    "{}\n",
                    extract::quality::markdown_text(&p.markdown).0.trim()
                ))?;
            }
        }
    }
    if let Some(e) = error {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_service(s: &Settings) -> Result<ExitCode> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let handle = crate::metrics::install();
    let mut runtime = crate::service::Runtime::build(s).await?;
    runtime.start_controller(s, None)?;
    let ready = Arc::new(AtomicBool::new(true));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listen: SocketAddr = s.service.listen.parse().with_context(|| {
        format!(
            "[service] listen = {:?} is not an address like 127.0.0.1:8080",
            s.service.listen
        )
    })?;
    let mut http_stop = stop_rx.clone();
    let (bound, http) = crate::service::http::serve(
        listen,
        crate::service::http::HttpState {
            source: runtime.source.clone(),
            metrics: handle,
            ready: ready.clone(),
            admin: Some(runtime.admin.clone()),
        },
        async move {
            let _ = http_stop.changed().await;
        },
    )
    .await?;
    tracing::info!(%bound, "serving /v1/ingest, /metrics, /healthz, /readyz");
    let mut feeders = tokio::task::JoinSet::new();
    for file in &s.source.files {
        let source = runtime.source.clone();
        let file = file.clone();
        feeders.spawn(async move {
            let opened = tokio::fs::File::open(&file).await;
            match opened {
                Ok(f) => match source.feed_lines(tokio::io::BufReader::new(f), &file.display().to_string()).await {
                    Ok(report) => tracing::info!(file = %file.display(), accepted = report.accepted, rejected = report.rejected, "file fed"),
                    Err(e) => tracing::error!(file = %file.display(), error = %e, "reading tasks failed"),
                },
                Err(e) => tracing::error!(file = %file.display(), error = %e, "cannot open task file"),
            }
        });
    }
    if s.source.stdin {
        let source = runtime.source.clone();
        feeders.spawn(async move {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            if let Err(e) = source.feed_lines(stdin, "stdin").await {
                tracing::error!(error = %e, "reading stdin failed");
            }
        });
    }
    crate::service::shutdown::signal().await;
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    feeders.abort_all();
    while feeders.join_next().await.is_some() {}
    let _ = http.await;
    let (drained, counters, tracker) = runtime.drain().await;
    let c = tracker.counts();
    tracing::info!(
        drained,
        finished = c.finished,
        abandoned = c.abandoned,
        chunks = crate::dataplane::Counters::get(&counters.chunks_indexed),
        "stopped"
    );
    Ok(if drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn query_command(s: &Settings, text: &str, k: usize) -> Result<ExitCode> {
    use crate::settings::EmbedBackend;
    let meta = crate::service::IndexMeta::load(&s.service.data_dir)?.with_context(|| {
        format!(
            "no index in {} (run `freshet demo` or `freshet run` first, or pass --data-dir)",
            s.service.data_dir.display()
        )
    })?;
    let mut s = s.clone();
    s.embed.dimensions = meta.dimensions;
    if meta.embedder == "hash" || meta.model == demo::SIM_EMBED_MODEL {
        // The simulator's model is the hash embedder served over HTTP.
        s.embed.backend = EmbedBackend::Hash;
    } else {
        s.embed.backend = EmbedBackend::Openai;
        s.embed.model = meta.model.clone();
        s.embed.base_url = meta.base_url.clone();
    }
    if meta.backend == "qdrant" {
        s.index.backend = crate::settings::IndexBackend::Qdrant;
    }
    let embedder = crate::service::embedder(&s);
    let index = crate::service::open_index(&s).await?;
    let vector = embedder
        .embed(&[text.to_string()])
        .await?
        .pop()
        .context("the embedder returned no vector")?;
    let hits = index.search(vector, k.max(1)).await?;
    let mut out = String::new();
    if hits.is_empty() {
        out.push_str("no results (the index is empty)\n");
    }
    for (i, hit) in hits.iter().enumerate() {
        let p = &hit.payload;
        let snippet: String = p.text.chars().take(400).collect();
        out.push_str(&format!(
            "{}. [{:.3}] {}\n   {}\n   {}{}\n\n",
            i + 1,
            hit.score,
            if p.title.is_empty() {
                &p.doc_id
            } else {
                &p.title
            },
            if p.url.is_empty() { &p.doc_id } else { &p.url },
            snippet,
            if p.text.chars().count() > 400 {
                "…"
            } else {
                ""
            }
        ));
    }
    print_out(&out)?;
    Ok(ExitCode::SUCCESS)
}

async fn replay_command(s: &Settings) -> Result<ExitCode> {
    // Replay only: no input topics, no cluster membership.
    let runtime = crate::service::Runtime::build_without_intake(s).await?;
    let (replayed, kept) = runtime.replay_dlq().await?;
    let dlq = runtime.dlq.clone();
    let before = dlq.written();
    let (drained, counters, _) = runtime.drain().await;
    let failed_again = dlq.written() - before;
    print_out(&format!(
        "replayed {replayed} dead letters ({kept} could not be parsed as tasks and stay): {} chunks indexed, {failed_again} failed again\n",
        crate::dataplane::Counters::get(&counters.chunks_indexed),
    ))?;
    Ok(if drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn audit_line(r: &crate::control::audit::Record) -> String {
    let versions = match (r.event.from_version, r.event.to_version) {
        (Some(a), Some(b)) => format!(" v{a}->v{b}"),
        (None, Some(b)) => format!(" v{b}"),
        _ => String::new(),
    };
    let diff = if r.event.diff.is_null() {
        String::new()
    } else {
        format!(" {}", r.event.diff)
    };
    let detail = if r.event.detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.event.detail)
    };
    format!(
        "#{} {} {:?}{versions}{diff}{detail}\n",
        r.seq, r.time_ms, r.kind
    )
}

async fn audit_command(path: &std::path::Path, cmd: &AuditCommand) -> Result<ExitCode> {
    use crate::control::audit;
    match cmd {
        AuditCommand::Cluster { n, .. } => {
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            let lines = crate::service::cluster::read_cluster_audit(dir)?;
            let out: String = lines
                .iter()
                .skip(lines.len().saturating_sub(*n))
                .map(|l| format!("[{}] {}", l.instance, audit_line(&l.record)))
                .collect();
            print_out(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { .. } => match audit::verify(path) {
            Ok(report) => {
                let torn = if report.torn_tail_bytes > 0 {
                    format!(
                        "; a torn last line of {} bytes will be cut off (and recorded) when freshet next opens the log",
                        report.torn_tail_bytes
                    )
                } else {
                    String::new()
                };
                print_out(&format!(
                    "{}: ok, {} records, head {}{torn}\n",
                    path.display(),
                    report.records,
                    report.head
                ))?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                Ok(ExitCode::FAILURE)
            }
        },
        AuditCommand::Show { seq, .. } => {
            let records = audit::read_records(path)?;
            let record = records.iter().find(|r| r.seq == *seq).with_context(|| {
                format!(
                    "no record with seq {seq} in {} ({} records)",
                    path.display(),
                    records.len()
                )
            })?;
            print_out(&format!("{}\n", serde_json::to_string_pretty(record)?))?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail { n, follow, .. } => {
            let records = audit::read_records(path)?;
            let mut last = records.last().map(|r| r.seq).unwrap_or(0);
            let out: String = records
                .iter()
                .skip(records.len().saturating_sub(*n))
                .map(audit_line)
                .collect();
            print_out(&out)?;
            if !*follow {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                let records = audit::read_records(path)?;
                let out: String = records
                    .iter()
                    .filter(|r| r.seq > last)
                    .map(audit_line)
                    .collect();
                if let Some(r) = records.last() {
                    last = last.max(r.seq);
                }
                print_out(&out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
