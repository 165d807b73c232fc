//! `freshet audit`: tail the change-audit log, show a record, verify the
//! hash chain, print what the other instances of a consumer group published.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::{print_out, settings_in, Cli};

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
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
    #[cfg(feature = "kafka")]
    Cluster {
        /// Records to print.
        #[arg(short = 'n', long, default_value_t = 20)]
        n: usize,
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs `freshet audit …` on the data dir's `audit.jsonl`.
pub(super) async fn command(cli: &Cli, cmd: &AuditCommand) -> Result<ExitCode> {
    let data_dir = match cmd {
        AuditCommand::Tail { data_dir, .. }
        | AuditCommand::Show { data_dir, .. }
        | AuditCommand::Verify { data_dir } => data_dir,
        #[cfg(feature = "kafka")]
        AuditCommand::Cluster { data_dir, .. } => data_dir,
    };
    let s = settings_in(cli, data_dir)?;
    audit_command(&s.service.data_dir.join("audit.jsonl"), cmd).await
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
        #[cfg(feature = "kafka")]
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
