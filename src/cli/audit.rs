//! `freshet audit`: tail the change-audit log, show a record, diff the knobs
//! of two versions, verify the hash chain, print what the other instances of
//! a consumer group published. Records print as readable lines
//! ([`Record::summary_line`]); `--json` prints them as the log holds them.

use std::path::PathBuf;
use std::process::ExitCode;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::Value;

use crate::control::audit::{utc_time, EventKind, Record};

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
        /// One JSON record per line, as the log holds them.
        #[arg(long)]
        json: bool,
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print one record in full, with the observation it was based on.
    Show {
        /// Its sequence number.
        seq: u64,
        /// The record as JSON.
        #[arg(long)]
        json: bool,
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The knob differences between two config versions of the current run
    /// (versions restart at 1 with every start of the service).
    Diff {
        /// The first version.
        version_a: u64,
        /// The second version.
        version_b: u64,
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
        /// One JSON line per record, with its instance.
        #[arg(long)]
        json: bool,
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
        | AuditCommand::Diff { data_dir, .. }
        | AuditCommand::Verify { data_dir } => data_dir,
        #[cfg(feature = "kafka")]
        AuditCommand::Cluster { data_dir, .. } => data_dir,
    };
    let s = settings_in(cli, data_dir)?;
    audit_command(&s.service.data_dir.join("audit.jsonl"), cmd).await
}

/// One record for `tail`: its time and [`Record::summary_line`], or the
/// record as the log holds it.
fn audit_line(r: &Record, json: bool) -> Result<String> {
    Ok(if json {
        format!("{}\n", serde_json::to_string(r)?)
    } else {
        format!("{} {}\n", utc_time(r.time_ms), r.summary_line())
    })
}

/// A JSON value as an operator reads it: strings without quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `value` as indented `key  value` lines; an object of objects or an
/// array of objects as a table (one row each, a column per key).
fn render(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    let rows: Option<Vec<(String, &serde_json::Map<String, Value>)>> = match value {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| v.as_object().map(|o| (k.clone(), o)))
            .collect(),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_object().map(|o| ((i + 1).to_string(), o)))
            .collect(),
        _ => None,
    };
    if let Some(rows) = rows.filter(|r| {
        r.iter()
            .all(|(_, o)| o.values().all(|v| !v.is_object() && !v.is_array()))
    }) {
        let mut columns: Vec<&String> = Vec::new();
        for (_, o) in &rows {
            for k in o.keys() {
                if !columns.contains(&k) {
                    columns.push(k);
                }
            }
        }
        let mut cells: Vec<Vec<String>> = vec![std::iter::once(String::new())
            .chain(columns.iter().map(|c| c.to_string()))
            .collect()];
        for (name, o) in &rows {
            cells.push(
                std::iter::once(name.clone())
                    .chain(
                        columns
                            .iter()
                            .map(|c| o.get(*c).map(plain).unwrap_or_default()),
                    )
                    .collect(),
            );
        }
        let widths: Vec<usize> = (0..=columns.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in cells {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(&format!("{pad}{}\n", line.join("  ").trim_end()));
        }
        return;
    }
    match value {
        Value::Object(m) => {
            let width = m.keys().map(|k| k.len()).max().unwrap_or(0);
            for (k, v) in m {
                if v.is_object()
                    || v.is_array()
                        && v.as_array()
                            .is_some_and(|a| a.iter().any(|x| x.is_object()))
                {
                    out.push_str(&format!("{pad}{k}\n"));
                    render(out, v, indent + 2);
                } else {
                    out.push_str(&format!("{pad}{k:<width$}  {}\n", plain(v)));
                }
            }
        }
        Value::Array(a) => {
            for v in a {
                if v.is_object() || v.is_array() {
                    out.push_str(&format!("{pad}-\n"));
                    render(out, v, indent + 2);
                } else {
                    out.push_str(&format!("{pad}- {}\n", plain(v)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", plain(other))),
    }
}

/// One record in full: its line, then every field, the observation as a
/// table of its figures and stages.
fn show_record(r: &Record) -> String {
    let e = &r.event;
    let mut out = format!("{}\n", r.summary_line());
    out.push_str(&format!("  time         {}\n", utc_time(r.time_ms)));
    out.push_str(&format!(
        "  kind         {}\n",
        plain(&serde_json::to_value(r.kind).unwrap_or_default())
    ));
    match (e.from_version, e.to_version) {
        (Some(a), Some(b)) => out.push_str(&format!("  versions     v{a} -> v{b}\n")),
        (Some(a), None) => out.push_str(&format!("  version      v{a}\n")),
        (None, Some(b)) => out.push_str(&format!("  version      v{b}\n")),
        (None, None) => {}
    }
    if !e.actor.is_null() {
        out.push_str("  actor\n");
        render(&mut out, &e.actor, 4);
    }
    if let Some(diff) = e.diff.as_array().filter(|d| !d.is_empty()) {
        out.push_str("  changes\n");
        let width = diff
            .iter()
            .filter_map(|c| c["knob"].as_str())
            .map(str::len)
            .max()
            .unwrap_or(0);
        for c in diff {
            out.push_str(&format!(
                "    {:<width$}  {} -> {}\n",
                c["knob"].as_str().unwrap_or("?"),
                plain(&c["from"]),
                plain(&c["to"])
            ));
        }
    }
    if !e.detail.is_empty() {
        out.push_str("  detail\n");
        for line in e.detail.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    if !e.verdict.is_null() {
        out.push_str("  verdict\n");
        render(&mut out, &e.verdict, 4);
    }
    if e.observation.is_null() {
        out.push_str("  observation  none recorded\n");
    } else {
        out.push_str("  observation\n");
        render(&mut out, &e.observation, 4);
    }
    out.push_str(&format!(
        "  chain        prev {} hash {}{}\n",
        r.prev,
        r.hash,
        if r.keyed { " (keyed)" } else { "" }
    ));
    out
}

/// The knobs (by path) at every config version of the last run in
/// `records`: from the defaults and the `started` record's differences,
/// then each record's diff onto the version it came from. Returns them
/// with the `started` record's seq (None: the log has none, and version 1
/// is taken to be the defaults).
fn knobs_by_version(records: &[Record]) -> (BTreeMap<u64, BTreeMap<String, Value>>, Option<u64>) {
    let start = records.iter().rposition(|r| r.kind == EventKind::Started);
    let apply = |knobs: &mut BTreeMap<String, Value>, diff: &Value| {
        for c in diff.as_array().into_iter().flatten() {
            if let Some(k) = c["knob"].as_str() {
                knobs.insert(k.to_string(), c["to"].clone());
            }
        }
    };
    let mut base = crate::knobs::Knobs::default().to_paths();
    let mut versions = BTreeMap::new();
    let rest = match start {
        Some(i) => {
            apply(&mut base, &records[i].event.diff);
            versions.insert(records[i].event.to_version.unwrap_or(1), base);
            &records[i + 1..]
        }
        None => {
            versions.insert(1, base);
            records
        }
    };
    for r in rest {
        let (Some(from), Some(to)) = (r.event.from_version, r.event.to_version) else {
            continue;
        };
        if let Some(mut knobs) = versions.get(&from).cloned() {
            apply(&mut knobs, &r.event.diff);
            versions.insert(to, knobs);
        }
    }
    (versions, start.map(|i| records[i].seq))
}

/// `freshet audit diff A B`.
fn diff_versions(records: &[Record], a: u64, b: u64) -> Result<String> {
    let (versions, start) = knobs_by_version(records);
    let since = match start {
        Some(seq) => format!("the run that started at #{seq}"),
        None => "the log (no start recorded; version 1 taken as the defaults)".to_string(),
    };
    let known = || {
        versions
            .keys()
            .map(|v| format!("v{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let at = |v: u64| {
        versions
            .get(&v)
            .with_context(|| format!("no version {v} in {since}; its versions: {}", known()))
    };
    let (ka, kb) = (at(a)?, at(b)?);
    let changed: Vec<(&String, &Value, &Value)> = ka
        .iter()
        .filter_map(|(k, va)| {
            let vb = kb.get(k).unwrap_or(&Value::Null);
            (va != vb).then_some((k, va, vb))
        })
        .chain(
            kb.iter()
                .filter(|(k, _)| !ka.contains_key(*k))
                .map(|(k, vb)| (k, &Value::Null, vb)),
        )
        .collect();
    if changed.is_empty() {
        return Ok(format!("v{a} and v{b} have the same knobs ({since})\n"));
    }
    let width = changed.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("v{a} -> v{b}: {} knob(s) differ ({since})\n", changed.len());
    for (k, va, vb) in changed {
        out.push_str(&format!("  {k:<width$}  {} -> {}\n", plain(va), plain(vb)));
    }
    Ok(out)
}

async fn audit_command(path: &std::path::Path, cmd: &AuditCommand) -> Result<ExitCode> {
    use crate::control::audit;
    match cmd {
        #[cfg(feature = "kafka")]
        AuditCommand::Cluster { n, json, .. } => {
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            let lines = crate::service::cluster::read_cluster_audit(dir)?;
            let out: String = lines
                .iter()
                .skip(lines.len().saturating_sub(*n))
                .map(|l| {
                    Ok(if *json {
                        format!("{}\n", serde_json::to_string(l)?)
                    } else {
                        format!("[{}] {}", l.instance, audit_line(&l.record, false)?)
                    })
                })
                .collect::<Result<_>>()?;
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
        AuditCommand::Diff {
            version_a,
            version_b,
            ..
        } => {
            let records = audit::read_records(path)?;
            print_out(&diff_versions(&records, *version_a, *version_b)?)?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Show { seq, json, .. } => {
            let records = audit::read_records(path)?;
            let record = records.iter().find(|r| r.seq == *seq).with_context(|| {
                format!(
                    "no record with seq {seq} in {} ({} records)",
                    path.display(),
                    records.len()
                )
            })?;
            if *json {
                print_out(&format!("{}\n", serde_json::to_string_pretty(record)?))?;
            } else {
                print_out(&show_record(record))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail {
            n, follow, json, ..
        } => {
            let records = audit::read_records(path)?;
            let mut last = records.last().map(|r| r.seq).unwrap_or(0);
            let out: String = records
                .iter()
                .skip(records.len().saturating_sub(*n))
                .map(|r| audit_line(r, *json))
                .collect::<Result<_>>()?;
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
                    .map(|r| audit_line(r, *json))
                    .collect::<Result<_>>()?;
                if let Some(r) = records.last() {
                    last = last.max(r.seq);
                }
                print_out(&out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
