//! `freshet approvals`: the running instance's queue of proposals that wait
//! for a person (knobs with `approval = true` in the guardrails): list them,
//! approve one (it is applied, then baked and judged like any change) or
//! reject one with a reason. Every call goes through the instance's admin
//! API (`/v1/approvals`), found through the data dir's lock or `--addr`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::remote::{holder_addr, Call};
use super::{print_out, settings_in, Cli};
use crate::control::audit::{diff_lines, utc_time};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub(super) enum ApprovalsCommand {
    /// The proposals waiting for approval, oldest first.
    List {
        /// As the instance answers (JSON).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Approve a proposal: it is applied now, then baked and judged.
    Approve {
        /// The approval's id (`freshet approvals list`).
        id: u64,
        /// Who approves (recorded in the audit log).
        #[arg(long, env = "USER")]
        operator: String,
        #[command(flatten)]
        target: Target,
    },
    /// Reject a proposal; the reason is kept in the audit log.
    Reject {
        /// The approval's id (`freshet approvals list`).
        id: u64,
        /// Who rejects (recorded in the audit log).
        #[arg(long, env = "USER")]
        operator: String,
        /// Why not (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which instance to ask.
#[derive(Debug, clap::Args)]
pub(super) struct Target {
    /// The instance's address (`127.0.0.1:8080` or `http://host:port`);
    /// default: the one that holds the data dir.
    #[arg(long)]
    addr: Option<String>,
    /// The data dir whose instance to ask.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs `freshet approvals …`.
pub(super) async fn command(cli: &Cli, cmd: &ApprovalsCommand) -> Result<ExitCode> {
    let target = match cmd {
        ApprovalsCommand::List { target, .. }
        | ApprovalsCommand::Approve { target, .. }
        | ApprovalsCommand::Reject { target, .. } => target,
    };
    let s = settings_in(cli, &target.data_dir)?;
    let addr = match &target.addr {
        Some(addr) => addr.clone(),
        None => match holder_addr(&s.service.data_dir, "admin API")? {
            Some(addr) => addr,
            None => bail!(
                "no running freshet holds the data dir {}: pass --addr of the instance (its [service] listen)",
                s.service.data_dir.display()
            ),
        },
    };
    match cmd {
        ApprovalsCommand::List { json, .. } => list(&s, &addr, *json).await,
        ApprovalsCommand::Approve { id, operator, .. } => {
            let answer = admin_call(
                &s,
                &addr,
                &format!("/v1/approvals/{id}/approve"),
                json!({"operator": operator}),
            )
            .await?;
            let diff = diff_lines(&answer["diff"]).join(", ");
            print_out(&format!(
                "approved #{id}: applied as knob version {} ({diff}); the controller bakes and judges it (freshet audit tail)\n",
                answer["version"]
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Reject {
            id,
            operator,
            reason,
            ..
        } => {
            let answer = admin_call(
                &s,
                &addr,
                &format!("/v1/approvals/{id}/reject"),
                json!({"operator": operator, "reason": reason}),
            )
            .await?;
            print_out(&format!(
                "rejected #{id} (audit record #{})\n",
                answer["seq"]
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn admin_call(s: &Settings, addr: &str, path: &str, body: Value) -> Result<Value> {
    let body = Call {
        addr,
        path,
        token: s.service.admin_token.expose(),
        token_vars: "FRESHET_SERVICE__ADMIN_TOKEN",
        body: Some(body),
        timeout: Duration::from_secs(30),
    }
    .send()
    .await?;
    serde_json::from_slice(&body)
        .with_context(|| format!("the instance at {addr} answered something that is not JSON"))
}

async fn list(s: &Settings, addr: &str, as_json: bool) -> Result<ExitCode> {
    let token = if s.service.read_token.is_empty() {
        s.service.admin_token.expose()
    } else {
        s.service.read_token.expose()
    };
    let body = Call {
        addr,
        path: "/v1/approvals",
        token,
        token_vars: "FRESHET_SERVICE__READ_TOKEN or FRESHET_SERVICE__ADMIN_TOKEN",
        body: None,
        timeout: Duration::from_secs(30),
    }
    .get()
    .await?;
    let answer: Value = serde_json::from_slice(&body)
        .with_context(|| format!("the instance at {addr} answered something that is not JSON"))?;
    if as_json {
        print_out(&format!("{answer}\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = crate::dataplane::task::now_ms();
    let entries = answer["approvals"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        print_out("no proposals wait for approval\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for p in &entries {
        let changes = diff_lines(&p["diff"]);
        let expires = p["expires_at_ms"].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "#{} {} — {} ({}, proposed {} on v{}, expires in {})\n",
            p["id"],
            changes.join(", "),
            p["rationale"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or(""),
            p["policy"].as_str().unwrap_or("?"),
            utc_time(p["queued_at_ms"].as_u64().unwrap_or(0)),
            p["from_version"],
            remaining(expires.saturating_sub(now)),
        ));
    }
    out.push_str("approve: freshet approvals approve ID --operator NAME; reject: freshet approvals reject ID --operator NAME --reason TEXT\n");
    print_out(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// `1h 05m`, `4m 10s`, `12s`.
fn remaining(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}
