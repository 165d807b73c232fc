//! `freshet run`: the pipeline from a settings file until SIGTERM/Ctrl-C,
//! then drain. `freshet mcp` is the same service that also speaks MCP on
//! stdin/stdout, and drains when its MCP client goes away.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{init_logging, settings, Cli};
use crate::settings::Settings;

/// Runs `freshet run`.
pub(super) async fn command(cli: &Cli) -> Result<ExitCode> {
    let s = settings(cli)?;
    init_logging(s.service.log_format, &s.service.log_level);
    run_service(&s, false).await
}

/// Runs `freshet mcp`: `run`, plus the MCP server on stdio (logs on stderr).
pub(super) async fn mcp_command(cli: &Cli) -> Result<ExitCode> {
    let s = settings(cli)?;
    if s.source.stdin {
        anyhow::bail!(
            "[source] stdin = true reads tasks from standard input, which `freshet mcp` needs for the MCP client; turn it off (tasks can come through the `ingest_*` tools, files, /v1/ingest or Kafka)"
        );
    }
    init_logging(s.service.log_format, &s.service.log_level);
    run_service(&s, true).await
}

async fn run_service(s: &Settings, mcp_stdio: bool) -> Result<ExitCode> {
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
        runtime.http_state(handle, ready.clone()),
        async move {
            let _ = http_stop.changed().await;
        },
    )
    .await?;
    runtime.lock.set_addr(bound)?;
    tracing::info!(%bound, "serving /v1/ingest, /v1/search, /mcp, /metrics, /healthz, /readyz");
    let mut feeders = tokio::task::JoinSet::new();
    for file in &s.source.files {
        let source = runtime.source.clone();
        let file = file.clone();
        feeders.spawn(async move {
            let opened = tokio::fs::File::open(&file).await;
            match opened {
                Ok(f) => match source.feed_lines(tokio::io::BufReader::new(f), &file.display().to_string(), Default::default()).await {
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
            if let Err(e) = source.feed_lines(stdin, "stdin", Default::default()).await {
                tracing::error!(error = %e, "reading stdin failed");
            }
        });
    }
    if mcp_stdio {
        let backend = Arc::new(runtime.mcp_backend(ready.clone()));
        match crate::service::mcp::serve_stdio(backend, crate::service::shutdown::signal()).await {
            Ok(()) => tracing::info!("MCP client on stdio closed; draining"),
            Err(e) => tracing::error!(error = %e, "MCP on stdio ended; draining"),
        }
    } else {
        crate::service::shutdown::signal().await;
    }
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
