//! The command line: `freshet demo`, `run`, `mcp`, `bench`, `query`, `audit`,
//! `approvals`, `dlq`, `config`, `extract`, `model`, `sim`.
//!
//! This is an edge of the program: errors are `anyhow` with context, printed
//! once, and turned into a non-zero exit code. Each subcommand lives in its
//! own file with its arguments; [`run`] only dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::settings::{LogFormat, Settings};

mod approvals;
mod audit;
#[cfg(feature = "bench")]
pub mod bench;
mod config;
#[cfg(feature = "sim")]
pub mod demo;
mod dlq;
mod extract;
mod model;
mod query;
mod remote;
mod run;
#[cfg(feature = "sim")]
mod sim;

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
    #[cfg(feature = "sim")]
    Demo(demo::DemoArgs),
    /// Run the pipeline from a settings file until SIGTERM/Ctrl-C, then drain.
    Run,
    /// `run`, serving MCP (Model Context Protocol) on stdin/stdout for an LLM
    /// client that launches freshet; drains when the client disconnects.
    Mcp,
    /// Benchmarks that print a table (see docs/BENCHMARKS.md).
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Search the index and print url, title, score and the chunk.
    Query(query::QueryArgs),
    /// The change-audit log: tail, show a record, verify the chain.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Proposals waiting for a person: list, approve or reject them
    /// (through the running instance's admin API).
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Dead letters: list them or replay them through the pipeline.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Check or show settings and knobs.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Extract the main content of one page (a URL, or a saved file offline).
    Extract(extract::ExtractArgs),
    /// The local embedder's model: install it, check it.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// The simulated web used by the demo, tests and benchmarks.
    #[cfg(feature = "sim")]
    #[command(subcommand)]
    Sim(sim::SimCommand),
}

#[cfg_attr(not(feature = "sim"), allow(dead_code))]
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
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A blocking read of stdin (tasks from stdin, MCP on a terminal) cannot
    // be cancelled; do not wait on it forever once the work is done.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
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

/// The settings with `data_dir`, when given, as `[service] data_dir`.
fn settings_in(cli: &Cli, data_dir: &Option<PathBuf>) -> Result<Settings> {
    let mut s = settings(cli)?;
    if let Some(dir) = data_dir {
        s.service.data_dir = dir.clone();
    }
    Ok(s)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        #[cfg(feature = "sim")]
        Command::Demo(args) => demo::command(&cli, args).await,
        Command::Run => run::command(&cli).await,
        Command::Mcp => run::mcp_command(&cli).await,
        #[cfg(feature = "bench")]
        Command::Bench(cmd) => bench::command(&cli, cmd).await,
        Command::Query(args) => query::command(&cli, args).await,
        Command::Audit(cmd) => audit::command(&cli, cmd).await,
        Command::Approvals(cmd) => approvals::command(&cli, cmd).await,
        Command::Dlq(cmd) => dlq::command(&cli, cmd).await,
        Command::Config(cmd) => config::command(&cli, cmd).await,
        Command::Extract(args) => extract::command(&cli, args).await,
        Command::Model(cmd) => model::command(&cli, cmd).await,
        #[cfg(feature = "sim")]
        Command::Sim(cmd) => sim::command(cmd).await,
    }
}
