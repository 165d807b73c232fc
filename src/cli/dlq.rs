//! `freshet dlq`: list dead letters (the file, or the Kafka topic) or
//! replay them through the pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{init_logging, print_out, settings_in, Cli};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub(super) enum DlqCommand {
    /// Count dead letters by stage and error type, and show the latest.
    List {
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How many of the latest records to print.
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
    /// Re-submit every dead letter's task; replayed records move to dlq.replayed.jsonl.
    Replay {
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs `freshet dlq …`.
pub(super) async fn command(cli: &Cli, cmd: &DlqCommand) -> Result<ExitCode> {
    match cmd {
        DlqCommand::List { data_dir, last } => {
            let s = settings_in(cli, data_dir)?;
            list_command(&s, *last).await
        }
        DlqCommand::Replay { data_dir } => {
            let s = settings_in(cli, data_dir)?;
            init_logging(s.service.log_format, "warn");
            replay_command(&s).await
        }
    }
}

/// Dead letters, unreadable records (position, why) and where they came from.
type Letters = (
    Vec<crate::dataplane::dlq::DeadLetter>,
    Vec<(usize, String)>,
    String,
);

/// Reads the dead letters from the Kafka topic when the source is Kafka
/// and a DLQ topic is set, else from the data dir's `dlq.jsonl`.
async fn read_letters(s: &Settings) -> Result<Letters> {
    #[cfg(feature = "kafka")]
    if s.source.kind == crate::settings::SourceKind::Kafka && !s.kafka.dlq_topic.is_empty() {
        return read_topic_letters(s).await;
    }
    let path = s.service.data_dir.join("dlq.jsonl");
    let (letters, bad) = crate::dataplane::dlq::Dlq::read_all(&path)?;
    Ok((letters, bad, path.display().to_string()))
}

/// The dead letters of `[kafka] dlq_topic`, read back from the broker.
#[cfg(feature = "kafka")]
async fn read_topic_letters(s: &Settings) -> Result<Letters> {
    let k = s.kafka.clone();
    let topic = k.dlq_topic.clone();
    let records =
        tokio::task::spawn_blocking(move || crate::dataplane::dlq::read_topic(&k, &topic))
            .await??;
    let mut letters = Vec::new();
    let mut bad = Vec::new();
    for r in records {
        match r.letter {
            Ok(l) => letters.push(l),
            Err(e) => bad.push((
                r.offset as usize,
                format!("partition {} offset {}: {e}", r.partition, r.offset),
            )),
        }
    }
    Ok((letters, bad, format!("topic {}", s.kafka.dlq_topic)))
}

/// `freshet dlq list`: counts by stage and error type, then the `last` latest.
async fn list_command(s: &Settings, last: usize) -> Result<ExitCode> {
    let (letters, bad, origin) = read_letters(s).await?;
    let mut by: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for l in &letters {
        *by.entry((l.stage.clone(), l.error_type.clone()))
            .or_default() += 1;
    }
    let mut out = format!("{} dead letters in {origin}\n", letters.len());
    for ((stage, class), n) in by {
        out.push_str(&format!("  {stage:<10} {class:<14} {n}\n"));
    }
    for l in letters.iter().rev().take(last) {
        out.push_str(&format!(
            "- [{}] {} {}: {}\n",
            l.source, l.stage, l.error_type, l.message
        ));
    }
    for (line, why) in bad {
        out.push_str(&format!("! line {line} is not a dead letter ({why})\n"));
    }
    print_out(&out)?;
    Ok(ExitCode::SUCCESS)
}

async fn replay_command(s: &Settings) -> Result<ExitCode> {
    // Replay only: no input topics, no cluster membership.
    let runtime = crate::service::Runtime::build_without_intake(s).await?;
    let (replayed, kept) = runtime.replay_dlq().await?;
    let dlq = runtime.dlq.clone();
    let before = dlq.written();
    let (drained, counters, _) = runtime.drain().await;
    let failed_again = dlq.written() - before;
    print_out(&format!(
        "replayed {replayed} dead letters ({kept} could not be parsed as tasks and stay): {} chunks indexed, {failed_again} failed again\n",
        crate::dataplane::Counters::get(&counters.chunks_indexed),
    ))?;
    Ok(if drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
