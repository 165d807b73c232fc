//! The command line: `freshet config`, `freshet extract`, `freshet sim`.
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
enum ConfigCommand {
    /// Validate a settings file; exits non-zero with the field and line on error.
    Check {
        /// The settings file.
        file: PathBuf,
    },
    /// Print the effective settings (secrets hidden) and every knob.
    Show,
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
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    target: Option<String>,
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
    #[arg(long)]
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
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
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
                out.push_str(&format!("{} = {value}  ({limits}; {})\n", spec.path, spec.doc));
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
        let page = extract::extract_html(&html, &url);
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
                let title = if p.title.is_empty() { String::new() } else { format!("# {}\n\n", p.title) };
                print_out(&format!("{title}{}\n", p.markdown))?;
            }
        }
        Format::Text => {
            if let Some(p) = &page {
                print_out(&format!("{}\n", extract::quality::markdown_text(&p.markdown).0.trim()))?;
            }
        }
    }
    if let Some(e) = error {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
