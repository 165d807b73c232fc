//! `freshet dlq`: list dead letters (the file, or the Kafka topic) or
//! replay them through the pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
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
    ///
    /// When a running instance holds the data dir, it replays them (through
    /// its `POST /v1/dlq/replay`, with the admin token).
    Replay {
        /// The data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Ask the freshet instance serving at this address (`127.0.0.1:8080`
        /// or `http://host:port`) to replay its dead letters.
        #[arg(long)]
        addr: Option<String>,
        /// Who asks, recorded in the instance's audit log (default: $USER).
        #[arg(long)]
        operator: Option<String>,
    },
}

/// Runs `freshet dlq …`.
pub(super) async fn command(cli: &Cli, cmd: &DlqCommand) -> Result<ExitCode> {
    match cmd {
        DlqCommand::List { data_dir, last } => {
            let s = settings_in(cli, data_dir)?;
            list_command(&s, *last).await
        }
        DlqCommand::Replay {
            data_dir,
            addr,
            operator,
        } => {
            let s = settings_in(cli, data_dir)?;
            init_logging(s.service.log_format, "warn");
            let addr = match addr {
                Some(addr) => Some(addr.clone()),
                None => super::remote::holder_addr(&s.service.data_dir, "API to replay through")?,
            };
            match addr {
                Some(addr) => remote_replay(&s, &addr, operator.as_deref()).await,
                None => replay_command(&s).await,
            }
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

/// `POST /v1/dlq/replay` on the instance at `addr`.
async fn remote_replay(s: &Settings, addr: &str, operator: Option<&str>) -> Result<ExitCode> {
    let operator = operator
        .map(str::to_owned)
        .or_else(|| std::env::var("USER").ok())
        .filter(|o| !o.trim().is_empty())
        .unwrap_or_else(|| "freshet-cli".to_string());
    let path = format!(
        "/v1/dlq/replay?operator={}",
        url::form_urlencoded::byte_serialize(operator.as_bytes()).collect::<String>()
    );
    let body = super::remote::Call {
        addr,
        path: &path,
        token: s.service.admin_token.expose(),
        token_vars: "FRESHET_SERVICE__ADMIN_TOKEN",
        body: None,
        // A replay answers once every record is back in the pipeline.
        timeout: std::time::Duration::from_secs(600),
    }
    .send()
    .await?;
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("the instance at {addr} answered something that is not JSON"))?;
    print_out(&format!(
        "the instance at {addr} replayed {} dead letters ({} could not be parsed as tasks and stay); they are processed in the background\n",
        answer["replayed"], answer["kept"]
    ))?;
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
