//! `freshet query`: search the index and print url, title, score and the
//! chunk.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{init_logging, print_out, settings_in, Cli};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(super) struct QueryArgs {
    /// The query text.
    text: String,
    /// Results to show.
    #[arg(short = 'k', long, default_value_t = 5)]
    k: usize,
    /// The data dir holding the index.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs `freshet query`.
pub(super) async fn command(cli: &Cli, args: &QueryArgs) -> Result<ExitCode> {
    let s = settings_in(cli, &args.data_dir)?;
    init_logging(s.service.log_format, "warn");
    query_command(&s, &args.text, args.k).await
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
    if meta.embedder == "hash" || meta.model == crate::dataplane::embed::hash::SIM_MODEL {
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
