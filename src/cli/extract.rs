//! `freshet extract`: the main content of one page, fetched (a URL) or
//! offline (a saved file).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::ValueEnum;

use super::{init_logging, print_out, settings, Cli};
use crate::dataplane::extract::{self, fetch::Fetcher, render, ExtractStage, Page};
use crate::dataplane::search::serppost::SerpPost;
use crate::knobs::RenderMode;
use crate::live::LiveConfig;
use crate::settings::Settings;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Markdown,
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub(super) struct ExtractArgs {
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
    #[arg(long, conflicts_with = "file", value_parser = RenderMode::parse)]
    render: Option<RenderMode>,
}

/// Runs `freshet extract`.
pub(super) async fn command(cli: &Cli, args: &ExtractArgs) -> Result<ExitCode> {
    let s = settings(cli)?;
    init_logging(s.service.log_format, "warn");
    extract_command(&s, args).await
}

async fn extract_command(s: &Settings, args: &ExtractArgs) -> Result<ExitCode> {
    if let Some(path) = &args.batch {
        let source = extract::batch::Source::detect(path);
        let summary =
            extract::batch::run(&source, &mut std::io::stdout().lock(), &Default::default())?;
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
        let stage =
            ExtractStage::with_browser(fetcher, renderer, live, s.extract.browser_path.clone());
        match args.render {
            Some(mode) => stage.extract_with(&url, mode).await,
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
