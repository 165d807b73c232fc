//! `freshet sim serve`: the simulated web used by the demo, tests and
//! benchmarks, until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::init_logging;
use crate::settings::LogFormat;

#[derive(Debug, Subcommand)]
pub(super) enum SimCommand {
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

/// Runs `freshet sim …`.
pub(super) async fn command(cmd: &SimCommand) -> Result<ExitCode> {
    let SimCommand::Serve {
        scenario,
        addr,
        seed,
        api_key,
        time_scale,
    } = cmd;
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
