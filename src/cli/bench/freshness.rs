//! `freshet bench freshness`: event → searchable as a reader sees it.
//!
//! A fresh service (its own data dir, the chosen embedder, default knobs)
//! is started in the process and served on loopback HTTP. Three clients
//! speak to it over that HTTP, as an application would:
//!
//! - the **writer** posts one document at a time to `/v1/ingest` at a fixed
//!   rate; each carries a marker word of its own (letters only, so BM25
//!   keeps it whole) and the post's wall-clock time as `ts_ms`. With
//!   `--brokers` it writes Debezium change events (`op: c`, the row in
//!   `after`, `ts_ms` its send time) of a table `public.docs` to a fresh
//!   topic on that broker instead, which the service consumes as a Kafka
//!   table source (the `kafka` feature);
//! - the **watcher** asks `/v1/search` every [`POLL`] for the markers of
//!   every document not yet seen (`sparse` mode: the markers are words, and
//!   a sparse search costs no embedding, so watching does not load the
//!   embedder it measures); a document's freshness is the time from just
//!   before its post to the answer that first returned it;
//! - the **reader** sends ordinary queries (`--search-mode`, hybrid by
//!   default, so the query is embedded) at `--search-rate` and records
//!   each one's latency: search latency under the ingest load.
//!
//! The embedder's capacity is measured first (documents of the same size,
//! embedded in requests of `embed.batch_size`), so the offered rate can be
//! given as a share of it (`--load 0.7`) or in documents per second
//! (`--rate`). After the writer stops, the watcher waits at most
//! [`STRAGGLER_WAIT`] for the rest; a document never seen is counted.
//! Freshness includes up to one poll interval of waiting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::dataplane::index::Mode;
use crate::service::Runtime;
use crate::settings::{EmbedBackend, Secret, Settings};

/// Time between two watcher searches.
pub const POLL: Duration = Duration::from_millis(10);
/// How long the watcher waits for documents after the last post.
pub const STRAGGLER_WAIT: Duration = Duration::from_secs(30);
/// Most markers in one watcher query (the query limit is 2048 bytes).
const MARKERS_PER_POLL: usize = 150;

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct FreshnessOptions {
    /// The embedder of the service under test.
    pub embedder: EmbedBackend,
    /// Documents per second; `None`: `load` × the measured capacity.
    pub rate: Option<f64>,
    /// Share of the embedder's capacity offered when `rate` is not given.
    pub load: f64,
    /// How long documents are posted.
    pub duration: Duration,
    /// Words per document.
    pub words: usize,
    /// Reader queries per second (0: none).
    pub search_rate: f64,
    /// The reader's mode.
    pub search_mode: Mode,
    /// Kafka bootstrap brokers: write Debezium events there instead of
    /// posting to `/v1/ingest`.
    pub brokers: Option<String>,
}

/// One run's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FreshnessRow {
    /// The embedder.
    pub embedder: String,
    /// How documents arrived: `http` or `debezium`.
    pub input: String,
    /// Documents per second the embedder can take (measured first).
    pub capacity_docs_per_s: f64,
    /// Documents per second posted.
    pub offered_per_s: f64,
    /// Documents posted.
    pub posted: usize,
    /// Documents never seen by the watcher.
    pub unseen: usize,
    /// Event → searchable, p50, ms.
    pub fresh_p50_ms: f64,
    /// p99, ms.
    pub fresh_p99_ms: f64,
    /// Largest, ms.
    pub fresh_max_ms: f64,
    /// The reader's mode.
    pub search_mode: String,
    /// Reader queries answered.
    pub searches: usize,
    /// Reader query latency p50, ms.
    pub search_p50_ms: f64,
    /// p99, ms.
    pub search_p99_ms: f64,
    /// Points in the index at the end.
    pub points: u64,
}

/// The `q` quantile of `values` (sorted in place), NaN when empty.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// A word of letters only that names document `i`.
fn marker(i: u64) -> String {
    let mut s = String::from("frq");
    let mut x = i;
    loop {
        s.push((b'a' + (x % 26) as u8) as char);
        x /= 26;
        if x == 0 {
            break;
        }
    }
    s.push('z');
    s
}

fn document_text(i: u64, words: usize) -> (String, String) {
    let crate::dataplane::Task::Document { text, title, .. } =
        crate::bench::load::document(i, words)
    else {
        unreachable!("load::document makes documents")
    };
    (format!("{text} Reference {}.", marker(i)), title)
}

/// Documents per second the embedder of `settings` takes, on documents
/// like the bench's, in requests of `embed.batch_size`.
async fn capacity(settings: &Settings, words: usize) -> Result<f64> {
    let embedder = crate::service::embedder(settings)?;
    let batch = settings.knobs.embed.batch_size.max(1) as usize;
    let texts: Vec<String> = (0..batch.max(32) as u64)
        .map(|i| document_text(1_000_000 + i, words).0)
        .collect();
    embedder.embed(&texts[..batch.min(texts.len())]).await?; // warm-up
    let started = Instant::now();
    for request in texts.chunks(batch) {
        embedder.embed(request).await?;
    }
    Ok(texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

struct Posted {
    at: Instant,
}

/// Where the writer sends documents.
enum Writer {
    /// `POST /v1/ingest`, one document a request.
    Http {
        client: reqwest::Client,
        url: String,
        token: String,
    },
    /// Debezium change events of `public.docs` on a Kafka topic.
    #[cfg(feature = "kafka")]
    Debezium {
        producer: rdkafka::producer::FutureProducer<crate::kafka::LogContext>,
        topic: String,
    },
}

/// The table the Debezium writer feeds, and its mapping.
#[cfg(feature = "kafka")]
const TABLE: &str = "public.docs";

impl Writer {
    /// Sends document `i`; returns once the service (or the broker) has it.
    async fn send(&self, i: u64, words: usize) -> Result<()> {
        let (text, title) = document_text(i, words);
        let now = crate::dataplane::task::now_ms();
        match self {
            Writer::Http { client, url, token } => {
                let line = json!({"type": "document", "id": format!("fresh-{i}"),
                                  "title": title, "text": text, "ts_ms": now});
                let answer = client
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/x-ndjson")
                    .body(format!("{line}\n"))
                    .send()
                    .await
                    .context("posting to /v1/ingest")?;
                if !answer.status().is_success() {
                    bail!(
                        "/v1/ingest answered {}: {}",
                        answer.status(),
                        answer.text().await.unwrap_or_default()
                    );
                }
            }
            #[cfg(feature = "kafka")]
            Writer::Debezium { producer, topic } => {
                use rdkafka::producer::FutureRecord;
                let key = json!({"id": i}).to_string();
                let value = json!({
                    "op": "c", "before": null, "ts_ms": now,
                    "after": {"id": i, "title": title, "body": text},
                    "source": {"connector": "postgresql", "db": "bench", "schema": "public",
                               "table": "docs", "ts_ms": now},
                })
                .to_string();
                let record = FutureRecord::to(topic).key(&key).payload(&value);
                producer
                    .send(record, Duration::from_secs(10))
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Points `settings` at a fresh Debezium topic on `brokers` for
/// [`TABLE`] (ids `fresh-<id>`, like the HTTP writer's) and returns the
/// writer and the topic.
#[cfg(feature = "kafka")]
async fn debezium(settings: &mut Settings, brokers: &str) -> Result<(Writer, String)> {
    let stamp = crate::dataplane::task::now_ms();
    let topic = format!("freshet-bench-cdc-{}-{stamp}", std::process::id());
    settings.source.kind = crate::settings::SourceKind::Kafka;
    settings.kafka.brokers = brokers.to_string();
    settings.kafka.group_id = format!("{topic}-group");
    settings.kafka.task_topics.clear();
    settings.kafka.control_topic = String::new();
    settings.kafka.dlq_topic = String::new();
    settings.kafka.tables = BTreeMap::from([(
        TABLE.to_string(),
        crate::settings::TableMapping {
            topic: topic.clone(),
            id_field: "id".into(),
            id_prefix: Some("fresh-".into()),
            title_field: "title".into(),
            text_fields: vec!["body".into()],
            ..Default::default()
        },
    )]);
    crate::kafka::ensure_topic(&settings.kafka, &topic, 1, false).await?;
    // One record per batch, as `bench kafka` (tansu 0.6 and multi-record batches).
    let producer = crate::kafka::client_config(&settings.kafka, "freshet-bench-cdc")
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create_with_context(crate::kafka::LogContext)
        .context("bench producer")?;
    Ok((
        Writer::Debezium {
            producer,
            topic: topic.clone(),
        },
        topic,
    ))
}

/// Runs one bench.
pub async fn run(base: &Settings, opts: &FreshnessOptions) -> Result<FreshnessRow> {
    if let Some(r) = opts.rate {
        if !(r > 0.0 && r.is_finite()) {
            bail!("--rate must be a positive number of documents per second");
        }
    }
    let (mut settings, dir) = super::scratch_settings(base, "freshness", opts.embedder);
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    settings.service.read_token = Secret::new(&token);
    settings.service.ingest_token = Secret::new(&token);
    settings.service.admin_token = Secret::new(&token);

    #[cfg(feature = "kafka")]
    let cdc = match &opts.brokers {
        Some(brokers) => Some(debezium(&mut settings, brokers).await?),
        None => None,
    };
    #[cfg(not(feature = "kafka"))]
    if opts.brokers.is_some() {
        bail!("--brokers needs the `kafka` feature (this build has no Kafka client)");
    }
    let capacity = capacity(&settings, opts.words).await?;
    let rate = opts.rate.unwrap_or(capacity * opts.load);
    eprintln!(
        "{:?}: capacity {capacity:.1} docs/s of {} words; offering {rate:.1} docs/s for {:?}",
        opts.embedder, opts.words, opts.duration
    );

    let runtime = Runtime::build(&settings).await?;
    #[cfg(feature = "kafka")]
    if cdc.is_some() {
        let kafka = runtime.find_source("kafka").context("kafka source")?;
        super::kafka::wait_assigned(kafka.as_ref(), 1).await?;
    }
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let state = runtime.http_state(
        crate::metrics::install(),
        Arc::new(std::sync::atomic::AtomicBool::new(true)),
    );
    let (addr, server) = crate::service::http::serve(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        state,
        async move {
            let _ = stop_rx.changed().await;
        },
    )
    .await?;
    let base_url = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let http = Writer::Http {
        client: client.clone(),
        url: format!("{base_url}/v1/ingest"),
        token: token.clone(),
    };
    #[cfg(feature = "kafka")]
    let (writer, topic) = match cdc {
        Some((w, topic)) => (w, Some(topic)),
        None => (http, None),
    };
    #[cfg(not(feature = "kafka"))]
    let writer = http;

    let pending: Arc<Mutex<BTreeMap<u64, Posted>>> = Arc::default();
    let fresh_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));

    let watcher = tokio::spawn(watch(
        client.clone(),
        base_url.clone(),
        token.clone(),
        pending.clone(),
        fresh_ms.clone(),
        writing.clone(),
    ));
    let reader = tokio::spawn(read(
        client.clone(),
        base_url.clone(),
        token.clone(),
        opts.search_rate,
        opts.search_mode,
        writing.clone(),
    ));

    // The writer.
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let mut next = tokio::time::Instant::now();
    let mut posted = 0u64;
    while started.elapsed() < opts.duration {
        pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(posted, Posted { at: Instant::now() });
        writer.send(posted, opts.words).await?;
        posted += 1;
        next += interval;
        tokio::time::sleep_until(next).await;
    }
    let offered = posted as f64 / started.elapsed().as_secs_f64();
    writing.store(false, std::sync::atomic::Ordering::Release);
    let mut searches = reader.await.context("the reader task")??;
    watcher.await.context("the watcher task")??;
    let points = runtime.index.count().await.unwrap_or(0);

    let _ = stop.send(true);
    let _ = server.await;
    let _ = runtime.drain().await;
    #[cfg(feature = "kafka")]
    if let Some(topic) = topic {
        if let Err(e) = crate::kafka::delete_topic(&settings.kafka, &topic).await {
            tracing::warn!(topic, error = %e, "could not delete the bench topic");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let unseen = pending.lock().unwrap_or_else(PoisonError::into_inner).len();
    let mut fresh = std::mem::take(&mut *fresh_ms.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(FreshnessRow {
        embedder: format!("{:?}", opts.embedder).to_lowercase(),
        input: if opts.brokers.is_some() {
            "debezium"
        } else {
            "http"
        }
        .into(),
        capacity_docs_per_s: capacity,
        offered_per_s: offered,
        posted: posted as usize,
        unseen,
        fresh_p50_ms: quantile(&mut fresh, 0.5),
        fresh_p99_ms: quantile(&mut fresh, 0.99),
        fresh_max_ms: quantile(&mut fresh, 1.0),
        search_mode: opts.search_mode.as_str().into(),
        searches: searches.len(),
        search_p50_ms: quantile(&mut searches, 0.5),
        search_p99_ms: quantile(&mut searches, 0.99),
        points,
    })
}

async fn search(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: Value,
) -> Result<Vec<Value>> {
    let answer = client
        .post(format!("{base}/v1/search"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .context("asking /v1/search")?;
    let status = answer.status();
    let value: Value = answer.json().await.context("reading a search answer")?;
    if !status.is_success() {
        bail!("/v1/search answered {status}: {value}");
    }
    Ok(value["results"].as_array().cloned().unwrap_or_default())
}

/// The watcher: polls for the markers of unseen documents until every
/// document posted was seen (or [`STRAGGLER_WAIT`] after the writer ends).
async fn watch(
    client: reqwest::Client,
    base: String,
    token: String,
    pending: Arc<Mutex<BTreeMap<u64, Posted>>>,
    fresh_ms: Arc<Mutex<Vec<f64>>>,
    writing: Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let mut writer_done_at: Option<Instant> = None;
    loop {
        let asked_at = Instant::now();
        let markers: Vec<u64> = pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .take(MARKERS_PER_POLL)
            .copied()
            .collect();
        if !markers.is_empty() {
            let query: Vec<String> = markers.iter().map(|&i| marker(i)).collect();
            let hits = search(
                &client,
                &base,
                &token,
                json!({"query": query.join(" "), "mode": "sparse", "k": 100}),
            )
            .await?;
            let now = Instant::now();
            let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
            let mut fresh = fresh_ms.lock().unwrap_or_else(PoisonError::into_inner);
            for h in hits {
                let Some(i) = h["doc_id"]
                    .as_str()
                    .and_then(|d| d.strip_prefix("fresh-"))
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                if let Some(p) = pending.remove(&i) {
                    fresh.push(now.duration_since(p.at).as_secs_f64() * 1e3);
                }
            }
        }
        if !writing.load(std::sync::atomic::Ordering::Acquire) {
            let done = *writer_done_at.get_or_insert_with(Instant::now);
            let empty = pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
            if empty || done.elapsed() > STRAGGLER_WAIT {
                return Ok(());
            }
        }
        tokio::time::sleep_until((asked_at + POLL).into()).await;
    }
}

/// The reader: ordinary queries at a fixed rate while the writer runs;
/// returns each one's latency in ms.
async fn read(
    client: reqwest::Client,
    base: String,
    token: String,
    rate: f64,
    mode: Mode,
    writing: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<f64>> {
    const TOPICS: &[&str] = &[
        "river council budget",
        "school energy market",
        "policy for the harbour station",
        "museum engineer garden",
        "library network festival",
        "hospital bridge factory",
        "village forest",
    ];
    let mut out = Vec::new();
    if rate <= 0.0 {
        return Ok(out);
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = tokio::time::Instant::now();
    let mut i = 0usize;
    while writing.load(std::sync::atomic::Ordering::Acquire) {
        let started = Instant::now();
        search(
            &client,
            &base,
            &token,
            json!({"query": TOPICS[i % TOPICS.len()], "mode": mode.as_str(), "k": 10}),
        )
        .await?;
        out.push(started.elapsed().as_secs_f64() * 1e3);
        i += 1;
        next += interval;
        tokio::time::sleep_until(next.max(tokio::time::Instant::now())).await;
    }
    Ok(out)
}

/// Rows as a Markdown table.
pub fn table(rows: &[FreshnessRow]) -> String {
    let mut out = String::from(
        "| embedder | input | capacity docs/s | offered docs/s | posted | unseen | searchable p50 | p99 | max | reader mode | searches | search p50 | p99 | points |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {} | {} | {:.1} ms | {:.1} ms | {} |\n",
            r.embedder,
            r.input,
            r.capacity_docs_per_s,
            r.offered_per_s,
            r.posted,
            r.unseen,
            r.fresh_p50_ms,
            r.fresh_p99_ms,
            r.fresh_max_ms,
            r.search_mode,
            r.searches,
            r.search_p50_ms,
            r.search_p99_ms,
            r.points
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_distinct_words_of_letters() {
        let all: std::collections::BTreeSet<String> = (0..2000).map(marker).collect();
        assert_eq!(all.len(), 2000);
        assert!(all
            .iter()
            .all(|m| m.chars().all(|c| c.is_ascii_lowercase())));
        // BM25 keeps each as one term of its own.
        for i in [0, 1, 25, 26, 1999] {
            let q = crate::dataplane::index::sparse::query(&marker(i));
            assert_eq!(q.indices.len(), 1, "{}", marker(i));
        }
        let a = crate::dataplane::index::sparse::query(&marker(1));
        let b = crate::dataplane::index::sparse::query(&marker(2));
        assert_ne!(a.indices, b.indices);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut v, 1.0), 100.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }
}
