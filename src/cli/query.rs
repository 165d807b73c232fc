//! `freshet query`: search the index and print url, title, score and the
//! chunk.
//!
//! When the data dir is held by a running instance (its lock file, see
//! [`crate::service::lock`], names the address it serves), or with
//! `--addr`, the query goes to that instance's `POST /v1/search` with the
//! read token (`FRESHET_SERVICE__READ_TOKEN`, else the admin token): the
//! embedded index can only be opened by one process. Otherwise the index is
//! opened directly.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{init_logging, print_out, settings_in, Cli};
use crate::service::search::{SearchRequest, SearchResponse, SearchResult, ValidSearch};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(super) struct QueryArgs {
    /// The query text.
    text: String,
    /// Results to show.
    #[arg(short = 'k', long, default_value_t = 5)]
    k: usize,
    /// How results are ranked: `dense` (embedding), `sparse` (BM25) or
    /// `hybrid` (both, fused by reciprocal rank).
    #[arg(long, default_value_t = crate::service::search::DEFAULT_MODE.as_str().to_string())]
    mode: String,
    /// The data dir holding the index.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Ask the freshet instance serving at this address (`127.0.0.1:8080` or
    /// `http://host:port`) instead of the data dir's index.
    #[arg(long)]
    addr: Option<String>,
}

/// Runs `freshet query`.
pub(super) async fn command(cli: &Cli, args: &QueryArgs) -> Result<ExitCode> {
    let s = settings_in(cli, &args.data_dir)?;
    init_logging(s.service.log_format, "warn");
    let request = SearchRequest {
        query: args.text.clone(),
        k: Some(args.k),
        filter: None,
        mode: Some(args.mode.clone()),
    };
    let addr = match &args.addr {
        Some(addr) => Some(addr.clone()),
        None => super::remote::holder_addr(&s.service.data_dir, "search API")?,
    };
    let results = match addr {
        Some(addr) => remote(&s, &addr, &request).await?,
        // The instance checks its own input (its limits may differ);
        // here the same check runs before the index is opened.
        None => {
            let valid = request.validate().map_err(|why| anyhow::anyhow!("{why}"))?;
            local(&s, &valid).await?
        }
    };
    print_out(&render(&results))?;
    Ok(ExitCode::SUCCESS)
}

/// `POST /v1/search` on the instance at `addr`.
async fn remote(s: &Settings, addr: &str, request: &SearchRequest) -> Result<Vec<SearchResult>> {
    let token = if s.service.read_token.is_empty() {
        s.service.admin_token.expose()
    } else {
        s.service.read_token.expose()
    };
    let body = super::remote::Call {
        addr,
        path: "/v1/search",
        token,
        token_vars: "FRESHET_SERVICE__READ_TOKEN or FRESHET_SERVICE__ADMIN_TOKEN",
        body: Some(serde_json::to_value(request)?),
        timeout: std::time::Duration::from_secs(60),
    }
    .send()
    .await?;
    let answer: SearchResponse = serde_json::from_slice(&body).with_context(|| {
        format!("the instance at {addr} answered something that is not a search result")
    })?;
    Ok(answer.results)
}

fn render(results: &[SearchResult]) -> String {
    let mut out = String::new();
    if results.is_empty() {
        out.push_str("no results (the index is empty)\n");
    }
    for (i, p) in results.iter().enumerate() {
        let snippet: String = p.text.chars().take(400).collect();
        out.push_str(&format!(
            "{}. [{:.3}] {}\n   {}\n   {}{}\n\n",
            i + 1,
            p.score,
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
    out
}

/// Opens the data dir's index (no other process holds it) and searches it
/// as the service would.
async fn local(s: &Settings, search: &ValidSearch) -> Result<Vec<SearchResult>> {
    use crate::settings::EmbedBackend;
    let meta = crate::service::IndexMeta::load(&s.service.data_dir)?.with_context(|| {
        format!(
            "no index in {} (run `freshet demo` or `freshet run` first, or pass --data-dir)",
            s.service.data_dir.display()
        )
    })?;
    let mut s = s.clone();
    s.embed.dimensions = meta.dimensions;
    if meta.embedder == "hash" || meta.model == crate::dataplane::embed::hash::SIM_MODEL {
        // The simulator's model is the hash embedder served over HTTP.
        s.embed.backend = EmbedBackend::Hash;
    } else if meta.embedder == "local" || meta.embedder == "static" {
        // The same model directory as the settings name (a different
        // model there would warn at the next `run`, not here).
        s.embed.backend = if meta.embedder == "local" {
            EmbedBackend::Local
        } else {
            EmbedBackend::Static
        };
    } else {
        s.embed.backend = EmbedBackend::Openai;
        s.embed.model = meta.model.clone();
        s.embed.base_url = meta.base_url.clone();
    }
    if meta.backend == "qdrant" {
        s.index.backend = crate::settings::IndexBackend::Qdrant;
    }
    let searcher = crate::service::search::Searcher {
        embedder: crate::service::embedder(&s)?,
        index: crate::service::open_index(&s).await?,
        live: crate::live::LiveConfig::new(s.knobs.clone())?,
    };
    Ok(searcher.search(search).await?)
}
