//! `freshet bench kafka`: Kafka -> index through a real broker. A backlog
//! run measures the sustained rate; fixed-rate rows measure freshness (each
//! task's `ts_ms`, its send time, to its upsert acknowledgement).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{bench_row, table, BenchRow};
use crate::dataplane::task::Task;
use crate::service::Runtime;
use crate::settings::{EmbedBackend, Settings};

/// Options of a Kafka bench run (`freshet bench kafka`).
#[derive(Debug, Clone)]
pub struct KafkaBenchOptions {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Partitions of the bench topic.
    pub partitions: i32,
    /// Words per generated document.
    pub words: usize,
}

/// Produces `count` document tasks to `topic`, `rate` per second (`None`:
/// as fast as the broker takes them), each stamped with its send time as
/// `ts_ms` and keyed by its id; returns how many were produced and the
/// seconds it took.
async fn produce_documents(
    producer: &rdkafka::producer::FutureProducer<crate::kafka::LogContext>,
    topic: &str,
    first: u64,
    count: u64,
    rate: Option<f64>,
    words: usize,
) -> Result<(u64, f64)> {
    use rdkafka::producer::FutureRecord;
    // The documents are made before the clock starts, so the load generator
    // (on the same cores as the pipeline) costs as little as it can while
    // it offers the rate.
    let mut documents: VecDeque<Task> = (first..first + count)
        .map(|i| crate::bench::load::document(i, words))
        .collect();
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(count as usize);
    for n in 0..count {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let Some(Task::Document {
            id,
            text,
            title,
            url,
            metadata,
            ..
        }) = documents.pop_front()
        else {
            unreachable!("document() makes documents")
        };
        let task = Task::Document {
            id: id.clone(),
            text,
            title,
            url,
            ts_ms: Some(crate::dataplane::task::now_ms()),
            metadata,
        };
        let payload = serde_json::to_vec(&task)?;
        let mut record = FutureRecord::to(topic).key(id.as_str()).payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((e, back)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ) {
                        anyhow::bail!("producing to {topic}: {e}");
                    }
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for d in deliveries {
        match d.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("producing to {topic}: {e}"),
            Err(_) => anyhow::bail!("producing to {topic}: producer dropped"),
        }
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

/// Kafka -> index: `rate` = `None` first fills the topic with `count`
/// documents and then measures how fast freshet indexes the backlog (the
/// sustained rate); `Some(r)` offers `r` documents/s for `duration` while
/// freshet consumes (freshness from each task's `ts_ms`).
pub async fn run_kafka(
    base: &Settings,
    opts: &KafkaBenchOptions,
    rate: Option<f64>,
    count: u64,
    duration: Duration,
) -> Result<BenchRow> {
    let stamp = crate::dataplane::task::now_ms();
    let topic = format!("freshet-bench-{}-{stamp}", std::process::id());
    let dir = std::env::temp_dir().join(format!(
        "freshet-bench-kafka-{}-{stamp}",
        std::process::id()
    ));
    let mut settings = base.clone();
    settings.service.data_dir = dir.clone();
    settings.embed.backend = EmbedBackend::Hash;
    settings.source.kind = crate::settings::SourceKind::Kafka;
    settings.kafka.brokers = opts.brokers.clone();
    settings.kafka.group_id = format!("{topic}-group");
    settings.kafka.task_topics = vec![topic.clone()];
    settings.kafka.tables.clear();
    settings.kafka.control_topic = String::new();
    settings.kafka.dlq_topic = String::new();
    crate::kafka::ensure_topic(&settings.kafka, &topic, opts.partitions, false).await?;
    // One record per batch: tansu 0.6 mishandles reads inside multi-record batches.
    let producer: rdkafka::producer::FutureProducer<crate::kafka::LogContext> =
        crate::kafka::client_config(&settings.kafka, "freshet-bench-producer")
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(crate::kafka::LogContext)
            .context("bench producer")?;
    if rate.is_none() {
        // The backlog: all of it in the topic before freshet starts.
        produce_documents(&producer, &topic, 0, count, None, opts.words).await?;
    }
    let runtime = Runtime::build(&settings).await?;
    let kafka = runtime.find_source("kafka").context("kafka source")?;
    // Event time starts when the group has settled, not during the join.
    wait_assigned(kafka.as_ref(), opts.partitions).await?;
    let started = Instant::now();
    let (produced, offered_secs) = match rate {
        None => (count, None),
        Some(rate) => {
            let n = (rate * duration.as_secs_f64()).round() as u64;
            let (produced, secs) =
                produce_documents(&producer, &topic, 0, n, Some(rate), opts.words).await?;
            (produced, Some(secs))
        }
    };
    wait_finished(kafka.as_ref(), produced, Duration::from_secs(600)).await?;
    let secs = started.elapsed().as_secs_f64();
    let (_, counters, _) = runtime.drain().await;
    let (kind, offered) = match offered_secs {
        None => ("kafka backlog", produced as f64 / secs),
        Some(offered_secs) => ("kafka", produced as f64 / offered_secs),
    };
    let row = bench_row(kind, offered, produced as f64 / secs, &counters, secs);
    tracing::info!(topic, produced, "bench run done");
    // Each row leaves nothing behind, so later rows do not run against a
    // broker holding earlier rows' data (tansu's memory storage slows down
    // as it fills).
    if let Err(e) = crate::kafka::delete_topic(&settings.kafka, &topic).await {
        tracing::warn!(topic, error = %e, "could not delete the bench topic");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(row)
}

/// Waits (at most 60 s) until the source holds `partitions` partitions.
pub(super) async fn wait_assigned(
    kafka: &dyn crate::dataplane::source::Source,
    partitions: i32,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while kafka.assignment().len() < partitions as usize {
        if Instant::now() > deadline {
            anyhow::bail!("the bench topic's partitions were not assigned within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn wait_finished(
    kafka: &dyn crate::dataplane::source::Source,
    count: u64,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while kafka.tracker().counts().finished < count {
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of {count} messages finished in {} s",
                kafka.tracker().counts().finished,
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// `freshet bench kafka`: the backlog run (unless `backlog` is 0), then
/// one row per rate, lightest first; prints the table.
pub(super) async fn command(
    s: &Settings,
    opts: &KafkaBenchOptions,
    backlog: u64,
    rate: &[String],
    duration: Duration,
) -> Result<()> {
    let mut rows = Vec::new();
    let mut sustained = None;
    if backlog > 0 {
        let row = run_kafka(s, opts, None, backlog, duration).await?;
        eprintln!("{}", serde_json::to_string(&row)?);
        sustained = Some(row.finished_per_s);
        rows.push(row);
    }
    let mut values = kafka_rates(rate, sustained)?;
    // Lightest load first: a row past what the machine sustains
    // leaves a broker (tansu's memory storage at least) slower for
    // the rows after it, which would charge them for its overload.
    values.sort_by(f64::total_cmp);
    for value in values {
        let row = run_kafka(s, opts, Some(value), 0, duration).await?;
        eprintln!("{}", serde_json::to_string(&row)?);
        rows.push(row);
    }
    super::super::print_out(&table(&rows))?;
    Ok(())
}

/// The `--rate` values of `freshet bench kafka` in documents/s: a number,
/// or a percentage of the backlog run's `sustained` rate.
fn kafka_rates(rate: &[String], sustained: Option<f64>) -> Result<Vec<f64>> {
    let mut values = Vec::with_capacity(rate.len());
    for r in rate {
        let value: f64 = match r.strip_suffix('%') {
            Some(share) => {
                let share: f64 = share
                    .parse()
                    .with_context(|| format!("--rate {r}: not a percentage"))?;
                sustained.context("a --rate in % needs the backlog run (--backlog > 0)")? * share
                    / 100.0
            }
            None => r
                .parse()
                .with_context(|| format!("--rate {r}: not a number"))?,
        };
        if !(value.is_finite() && value > 0.0) {
            anyhow::bail!("--rate {r}: must be a positive number of documents/s");
        }
        values.push(value);
    }
    Ok(values)
}
