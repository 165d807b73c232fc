//! `freshet config`: check a settings file, show the effective settings
//! and every knob, roll a running instance back (admin API).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::{print_out, settings, Cli};
use crate::knobs::SPECS;
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub(super) enum ConfigCommand {
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

/// Runs `freshet config …`.
pub(super) async fn command(cli: &Cli, cmd: &ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => check(file),
        ConfigCommand::Show => show(&settings(cli)?),
        ConfigCommand::Rollback {
            to,
            operator,
            addr,
            token,
        } => rollback(*to, operator, addr, token).await,
    }
}

/// `freshet config check FILE`.
fn check(file: &std::path::Path) -> Result<ExitCode> {
    let s = Settings::load(file)?;
    print_out(&format!(
        "{}: ok ({} knobs, data dir {})\n",
        file.display(),
        SPECS.len(),
        s.service.data_dir.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `freshet config show`: the effective settings, then every knob with its
/// value, limits and meaning.
fn show(s: &Settings) -> Result<ExitCode> {
    let mut shown = toml::Table::try_from(s).context("settings do not render as TOML")?;
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

/// `freshet config rollback --to N`: asks the instance at `addr` to return
/// to version `to`.
async fn rollback(to: u64, operator: &str, addr: &str, token: &str) -> Result<ExitCode> {
    let url = format!("http://{addr}/v1/rollback/{to}");
    let response = reqwest::Client::new()
        .post(&url)
        .query(&[("operator", operator)])
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {addr} (is `freshet run` listening there?)"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        print_out(&format!("{body}\n"))?;
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("rollback refused (HTTP {status}): {body}");
    }
}
