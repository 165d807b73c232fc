//! Assembling and running the service: settings become stages, the pipeline
//! starts, sources feed it, and a stop signal drains it.
//!
//! [`Runtime::build`] is shared by `freshet run`, `freshet demo`, `freshet dlq
//! replay` and the integration tests, so they all run the same wiring.

pub mod admin;
#[cfg(feature = "kafka")]
pub mod cluster;
pub mod http;
pub mod lock;
pub mod mcp;
pub mod search;
pub mod shutdown;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::control::{ControlState, Controller, ControllerOptions, ControllerReport};
use crate::dataplane::ack::AckTracker;
use crate::dataplane::dlq::{Dlq, ReplayTarget};
use crate::dataplane::embed::{
    distilled::StaticEmbedder, hash::HashEmbedder, local::LocalEmbedder, openai::OpenAiEmbedder,
    Embedder,
};
use crate::dataplane::extract::{fetch::Fetcher, render, ExtractStage};
use crate::dataplane::index::{edge::EdgeIndex, qdrant::QdrantIndex, VectorIndex};
use crate::dataplane::search::{serppost::SerpPost, SearchStage};
use crate::dataplane::source::embedded::EmbeddedSource;
use crate::dataplane::source::Source;
use crate::dataplane::{Deps, Pipeline};
use crate::knobs::Knobs;
use crate::live::LiveConfig;
use crate::settings::{ControllerMode, EmbedBackend, IndexBackend, Settings, SourceKind};

/// What the data dir's index was built with, so `freshet query` embeds the
/// query the same way and a changed vector size is caught at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// `edge` or `qdrant`.
    pub backend: String,
    /// `local`, `openai` or `hash`.
    pub embedder: String,
    /// Embedding model name (the model directory's name for local, empty
    /// for hash).
    pub model: String,
    /// Embedding base URL (empty for hash).
    pub base_url: String,
    /// Vector size.
    pub dimensions: u32,
}

impl IndexMeta {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("index-meta.json")
    }

    /// Reads the meta file of a data dir, if there is one.
    pub fn load(data_dir: &Path) -> Result<Option<IndexMeta>> {
        let path = IndexMeta::path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not valid index metadata", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn from_settings(settings: &Settings) -> IndexMeta {
        let openai = settings.embed.backend == EmbedBackend::Openai;
        IndexMeta {
            backend: match settings.index.backend {
                IndexBackend::Edge => "edge".into(),
                IndexBackend::Qdrant => "qdrant".into(),
            },
            embedder: match settings.embed.backend {
                EmbedBackend::Local => "local".into(),
                EmbedBackend::Static => "static".into(),
                EmbedBackend::Openai => "openai".into(),
                EmbedBackend::Hash => "hash".into(),
            },
            model: match settings.embed.backend {
                EmbedBackend::Local | EmbedBackend::Static => settings
                    .embed
                    .local_model_dir()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                EmbedBackend::Openai => settings.embed.model.clone(),
                EmbedBackend::Hash => String::new(),
            },
            base_url: if openai {
                crate::settings::scrub_userinfo(&settings.embed.base_url)
            } else {
                String::new()
            },
            dimensions: settings.embed.dimensions,
        }
    }

    /// Checks that `settings` fit the index in `data_dir`, then records them.
    pub fn check_and_store(data_dir: &Path, settings: &Settings) -> Result<()> {
        let want = IndexMeta::from_settings(settings);
        if let Some(have) = IndexMeta::load(data_dir)? {
            if have.dimensions != want.dimensions {
                bail!(
                    "the index in {} holds {}-dimensional vectors but [embed] dimensions = {}; use another --data-dir or the same embedder",
                    data_dir.display(),
                    have.dimensions,
                    want.dimensions
                );
            }
            if (have.embedder.as_str(), have.model.as_str())
                != (want.embedder.as_str(), want.model.as_str())
            {
                tracing::warn!(
                    "the index in {} was built with embedder {} {} and is now written with {} {}; old and new vectors are not comparable",
                    data_dir.display(), have.embedder, have.model, want.embedder, want.model
                );
            }
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let text = serde_json::to_string_pretty(&want)?;
        std::fs::write(IndexMeta::path(data_dir), text)
            .with_context(|| format!("writing {}", IndexMeta::path(data_dir).display()))?;
        Ok(())
    }
}

/// The dead-letter sink the settings name: the Kafka topic with `[source]
/// kind = "kafka"` and `[kafka] dlq_topic`, else the data dir's file.
/// Re-verifies the audit log every `every` and tells `verified` the result
/// (an error is logged once per change from good to bad); ends when the
/// log is dropped.
async fn reverify_audit(
    log: std::sync::Weak<crate::control::audit::AuditLog>,
    every: Duration,
    verified: impl Fn(bool),
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut was_ok = true;
    loop {
        tick.tick().await;
        let Some(log) = log.upgrade() else { break };
        let result = tokio::task::spawn_blocking(move || log.verify()).await;
        let ok = match result {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                if was_ok {
                    tracing::error!(error = %e, "the audit log no longer verifies: run `freshet audit verify`");
                }
                false
            }
            // The check itself panicked: that says nothing about the log.
            Err(_) => was_ok,
        };
        if ok && !was_ok {
            tracing::info!("the audit log verifies again");
        }
        was_ok = ok;
        verified(ok);
    }
}

async fn open_dlq(settings: &Settings, instance_id: &str) -> Result<Arc<Dlq>> {
    #[cfg(feature = "kafka")]
    if settings.source.kind == SourceKind::Kafka && !settings.kafka.dlq_topic.is_empty() {
        let topic = &settings.kafka.dlq_topic;
        let sink = crate::dataplane::dlq::KafkaSink::open(&settings.kafka, topic, instance_id)
            .await
            .with_context(|| format!("opening the dead-letter topic `{topic}`"))?;
        return Ok(Arc::new(Dlq::new(sink)));
    }
    let _ = instance_id;
    let data_dir = &settings.service.data_dir;
    Ok(Arc::new(Dlq::open(data_dir).with_context(|| {
        format!("opening the dead-letter file in {}", data_dir.display())
    })?))
}

/// Joins the cluster (with `[kafka] control_topic`) and starts the Kafka
/// source, adding it to `sources`; returns the cluster link.
#[cfg(feature = "kafka")]
#[allow(clippy::too_many_arguments)]
async fn start_kafka(
    settings: &Settings,
    instance_id: &str,
    live: &Arc<LiveConfig>,
    audit: Arc<crate::control::audit::AuditLog>,
    dlq: &Arc<Dlq>,
    pipeline: &Pipeline,
    controller_leader: &Arc<AtomicBool>,
    sources: &mut Vec<Arc<dyn Source>>,
) -> Result<Option<cluster::Cluster>> {
    let mut link = None;
    if !settings.kafka.control_topic.is_empty() {
        link = Some(
            cluster::Cluster::start(
                &settings.kafka,
                instance_id,
                live.clone(),
                audit,
                &settings.service.data_dir,
                controller_leader.clone(),
            )
            .await
            .context("joining the cluster through the control topic")?,
        );
    }
    sources.push(Arc::new(
        crate::dataplane::source::kafka::KafkaSource::start(
            &settings.kafka,
            instance_id,
            AckTracker::new(live),
            dlq.clone(),
            pipeline.sender(),
        )
        .await?,
    ));
    Ok(link)
}

/// A default instance id: host name, process id and start time.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "freshet".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        crate::dataplane::task::now_ms()
    )
}

/// The embedder the settings name (the local one loads its model here).
pub fn embedder(settings: &Settings) -> Result<Arc<dyn Embedder>> {
    let dim = settings.embed.dimensions as usize;
    Ok(match settings.embed.backend {
        EmbedBackend::Local => {
            Arc::new(LocalEmbedder::load(&settings.embed.local_model_dir(), dim)?)
        }
        EmbedBackend::Static => Arc::new(StaticEmbedder::load(
            &settings.embed.local_model_dir(),
            dim,
        )?),
        EmbedBackend::Hash => Arc::new(HashEmbedder::new(dim)),
        EmbedBackend::Openai => Arc::new(OpenAiEmbedder::new(
            &settings.embed.base_url,
            settings.embed.api_key.expose(),
            &settings.embed.model,
            dim,
            settings.embed.send_dimensions,
        )),
    })
}

/// Opens the index the settings name (creating it if needed).
pub async fn open_index(settings: &Settings) -> Result<Arc<dyn VectorIndex>> {
    let dim = settings.embed.dimensions as usize;
    Ok(match settings.index.backend {
        IndexBackend::Edge => {
            let dir = settings.service.data_dir.join("index");
            let index = tokio::task::spawn_blocking(move || EdgeIndex::open(&dir, dim))
                .await
                .context("opening the embedded index")??;
            Arc::new(index)
        }
        IndexBackend::Qdrant => {
            let key = (!settings.index.api_key.is_empty())
                .then(|| settings.index.api_key.expose().to_string());
            Arc::new(
                QdrantIndex::connect(&settings.index.url, key, &settings.index.collection, dim)
                    .await?,
            )
        }
    })
}

/// A built pipeline with its source and stores.
#[derive(Debug)]
pub struct Runtime {
    /// Live knobs.
    pub live: Arc<LiveConfig>,
    /// The running pipeline.
    pub pipeline: Pipeline,
    /// The embedded source's handle: pushes, files, stdin, `POST
    /// /v1/ingest`. Its state is also the first entry of
    /// [`sources`](Self::sources).
    pub source: EmbeddedSource,
    /// Every running source, the embedded one first (then Kafka with
    /// `[source] kind = "kafka"`); drained together.
    pub sources: Vec<Arc<dyn Source>>,
    /// The index.
    pub index: Arc<dyn VectorIndex>,
    /// The pipeline's embedder and index, for `POST /v1/search`.
    pub searcher: search::Searcher,
    /// The exclusive lock on the data dir, held while this runtime lives.
    pub lock: lock::DataDirLock,
    /// Dead letters.
    pub dlq: Arc<Dlq>,
    /// The search/render provider, when configured.
    pub provider: Option<Arc<SerpPost>>,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// Malformed lines one ingest request may carry
    /// (`[service] ingest_max_invalid_lines`).
    pub ingest_max_invalid: u64,
    /// The admin API's state (guard, audit log, token).
    pub admin: Arc<admin::AdminState>,
    /// Knobs, guard, change lock and audit log shared by the admin API and
    /// the controller.
    pub control: Arc<ControlState>,
    /// Whether this instance's controller may decide: always with the
    /// embedded source; with Kafka, only while it holds partition 0 of the
    /// control topic's group (see [`cluster`]).
    pub controller_leader: Arc<AtomicBool>,
    /// The scale-out link through the control topic (Kafka with `control_topic`).
    #[cfg(feature = "kafka")]
    pub cluster: Option<cluster::Cluster>,
    /// This instance's id (Kafka client id, control topic records).
    pub instance_id: String,
    controller: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

impl Runtime {
    /// Builds every stage from `settings` and starts the pipeline (and,
    /// with `[source] kind = "kafka"`, the Kafka source and the cluster link).
    pub async fn build(settings: &Settings) -> Result<Runtime> {
        Runtime::build_with(settings, true).await
    }

    /// Like [`build`](Self::build) but without consuming the input topics
    /// or joining the cluster (`freshet dlq replay` of a Kafka DLQ).
    pub async fn build_without_intake(settings: &Settings) -> Result<Runtime> {
        Runtime::build_with(settings, false).await
    }

    async fn build_with(settings: &Settings, intake: bool) -> Result<Runtime> {
        if intake {
            admin::Access::from_settings(&settings.service)
                .check_listen(&settings.service.listen)?;
        }
        let data_dir = &settings.service.data_dir;
        let lock = lock::DataDirLock::acquire(data_dir)?;
        let kafka_mode = settings.source.kind == SourceKind::Kafka;
        let instance_id = if settings.kafka.instance_id.is_empty() {
            default_instance_id()
        } else {
            settings.kafka.instance_id.clone()
        };
        IndexMeta::check_and_store(data_dir, settings)?;
        let live = LiveConfig::new(settings.knobs.clone())?;
        // The version in force from the start (swaps set it from then on).
        crate::metrics::gauge!(crate::metrics::KNOBS_VERSION).set(live.version() as f64);
        let provider = if settings.provider.api_key.is_empty() {
            None
        } else {
            Some(Arc::new(SerpPost::new(&settings.provider)?))
        };
        let renderer: Arc<dyn render::RemoteRenderer> = match &provider {
            Some(p) => p.clone(),
            None => Arc::new(render::NoRenderer),
        };
        let fetcher = Fetcher::new(&settings.extract, &settings.resolve)?;
        let extract = Arc::new(ExtractStage::with_browser(
            fetcher,
            renderer,
            live.clone(),
            settings.extract.browser_path.clone(),
        ));
        let search = provider
            .clone()
            .map(|p| Arc::new(SearchStage::new(p, live.clone())));
        let embedder = embedder(settings)?;
        let index = open_index(settings).await?;
        let dlq = open_dlq(settings, &instance_id).await?;
        let searcher = search::Searcher {
            embedder: embedder.clone(),
            index: index.clone(),
            live: live.clone(),
        };
        let pipeline = Pipeline::start(Deps {
            live: live.clone(),
            search,
            extract,
            embedder,
            index: index.clone(),
            dlq: dlq.clone(),
            limits: crate::dataplane::transform::DocLimits {
                page: settings.source.page_min_words,
                document: settings.source.document_min_words,
                max_chunks: settings.transform.max_chunks_per_doc,
            },
        });
        let guard = match &settings.service.guardrails {
            Some(path) => crate::control::guard::Guard::load(path)?,
            None => crate::control::guard::Guard::builtin(),
        };
        let audit = Arc::new(crate::control::audit::AuditLog::open(
            &data_dir.join("audit.jsonl"),
        )?);
        // The chain is re-verified every minute while the service runs
        // (`freshet_audit_verify_ok`, alerted on in deploy/prometheus): an
        // edit made behind the service's back shows within a minute. A
        // broken chain is the operator's to look at, not a reason to stop
        // indexing. Opening the log verified it; the task ends with the log.
        crate::metrics::gauge!(crate::metrics::AUDIT_VERIFY_OK).set(1.0);
        tokio::spawn(reverify_audit(
            Arc::downgrade(&audit),
            Duration::from_secs(60),
            |ok| {
                crate::metrics::gauge!(crate::metrics::AUDIT_VERIFY_OK).set(f64::from(u8::from(ok)))
            },
        ));
        // Knob versions restart at 1 with every process: say so in the log,
        // so a reader never mistakes the last change before a restart (or
        // a change recorded just before a crash, never swapped in) for the
        // knobs in force now.
        audit.append(
            crate::control::audit::EventKind::Started,
            crate::control::audit::Event {
                to_version: Some(live.version()),
                diff: serde_json::to_value(Knobs::default().diff(&live.load().knobs))
                    .unwrap_or_default(),
                actor: serde_json::json!({"service": "freshet", "pid": std::process::id()}),
                detail: "started; knobs from the settings (differences from the defaults in diff)"
                    .into(),
                ..Default::default()
            },
        )?;
        let control = Arc::new(ControlState::new(
            live.clone(),
            guard,
            settings.service.guardrails.clone(),
            audit.clone(),
        ));
        let admin = Arc::new(admin::AdminState::new(
            control.clone(),
            admin::Access::from_settings(&settings.service),
        ));
        let tracker = AckTracker::new(&live);
        let source = EmbeddedSource::new(pipeline.sender(), tracker, dlq.clone());
        let controller_leader = Arc::new(AtomicBool::new(true));
        let embedded: Arc<dyn Source> = source.queue();
        #[cfg_attr(not(feature = "kafka"), allow(unused_mut))]
        let mut sources = vec![embedded];
        #[cfg(feature = "kafka")]
        let cluster = if kafka_mode && intake {
            start_kafka(
                settings,
                &instance_id,
                &live,
                audit,
                &dlq,
                &pipeline,
                &controller_leader,
                &mut sources,
            )
            .await?
        } else {
            None
        };
        #[cfg(not(feature = "kafka"))]
        let _ = (kafka_mode, intake, audit);
        Ok(Runtime {
            live,
            pipeline,
            source,
            index,
            searcher,
            lock,
            dlq,
            provider,
            drain_timeout: Duration::from_secs(settings.service.drain_timeout_s),
            ingest_max_invalid: u64::from(settings.service.ingest_max_invalid_lines),
            admin,
            control,
            controller_leader,
            sources,
            #[cfg(feature = "kafka")]
            cluster,
            instance_id,
            controller: None,
        })
    }

    /// Starts the controller (unless `[controller] mode = "off"`) with the
    /// settings' policy; `interval` overrides `controller.interval_ms`.
    /// Returns its live report.
    pub fn start_controller(
        &mut self,
        settings: &Settings,
        interval: Option<Duration>,
    ) -> Result<Option<Arc<std::sync::Mutex<ControllerReport>>>> {
        if settings.controller.mode == ControllerMode::Off || self.controller.is_some() {
            return Ok(None);
        }
        let policy = crate::control::policy::from_settings(&settings.controller)?;
        let opts = ControllerOptions {
            mode: settings.controller.mode,
            interval: interval
                .unwrap_or_else(|| Duration::from_millis(settings.controller.interval_ms)),
            ..Default::default()
        };
        let controller = Controller::new(self.control.clone(), policy, opts)
            .with_leader(self.controller_leader.clone());
        let report = controller.report();
        *self
            .admin
            .controller
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller.run(async move {
            let _ = stopped.await;
        }));
        self.controller = Some((task, stop));
        Ok(Some(report))
    }

    /// The running source named `name` (`embedded`, `kafka`), if any.
    pub fn find_source(&self, name: &str) -> Option<Arc<dyn Source>> {
        self.sources.iter().find(|s| s.name() == name).cloned()
    }

    /// What re-submits the task of every dead letter (see
    /// [`DeadLetterSink::replay`](crate::dataplane::dlq::DeadLetterSink::replay)):
    /// from the file through the embedded source, from a topic in its own
    /// replay group. Records whose task does not parse (raw input that was
    /// never a task) stay. It holds a way into the pipeline: drop it before
    /// [`Runtime::drain`], like a clone of the source.
    pub fn replayer(&self) -> crate::dataplane::dlq::Replayer {
        crate::dataplane::dlq::Replayer::new(
            self.dlq.clone(),
            ReplayTarget {
                embedded: Arc::new(self.source.clone()),
                pipeline: self.pipeline.sender(),
                live: self.live.clone(),
                drain_timeout: self.drain_timeout,
            },
        )
    }

    /// Replays every dead letter once (see [`Runtime::replayer`]). Returns
    /// (replayed, kept).
    pub async fn replay_dlq(&self) -> Result<(usize, usize)> {
        let done = self
            .replayer()
            .replay()
            .await
            .context("a replay is already running")??;
        Ok((done.replayed, done.kept))
    }

    /// The HTTP endpoint's state over this runtime: ingest, search, the
    /// admin API and the MCP tools. `ready` turns false when draining starts.
    pub fn http_state(
        &self,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
        ready: Arc<std::sync::atomic::AtomicBool>,
    ) -> http::HttpState {
        http::HttpState {
            source: self.source.clone(),
            ingest_max_invalid: self.ingest_max_invalid,
            circuits: self.pipeline.circuits(),
            metrics,
            ready: ready.clone(),
            admin: Some(self.admin.clone()),
            search: Some(self.searcher.clone()),
            dlq: Some(Arc::new(self.replayer())),
            mcp: Some(Arc::new(self.mcp_backend(ready))),
        }
    }

    /// What the MCP tools work on ([`mcp`]).
    pub fn mcp_backend(&self, ready: Arc<std::sync::atomic::AtomicBool>) -> mcp::McpBackend {
        mcp::McpBackend {
            searcher: self.searcher.clone(),
            source: self.source.clone(),
            admin: self.admin.clone(),
            ready,
            counters: self.pipeline.counters(),
        }
    }

    /// Stops taking input, drains, and reports whether everything finished
    /// in time. Every clone of the source must be dropped first.
    pub async fn drain(mut self) -> (bool, Arc<crate::dataplane::Counters>, AckTracker) {
        // The controller stops first: no knob changes while draining.
        if let Some((task, stop)) = self.controller.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        for source in &self.sources {
            source.stop_intake();
        }
        let tracker = self.source.tracker().clone();
        let counters = self.pipeline.counters();
        drop(self.source);
        let drained = self.pipeline.finish(self.drain_timeout).await;
        for source in &self.sources {
            source.finish().await;
            let c = source.tracker().counts();
            tracing::info!(
                source = source.name(),
                registered = c.registered,
                finished = c.finished,
                abandoned = c.abandoned,
                dead_lettered = source.dead_lettered(),
                "source drained"
            );
        }
        #[cfg(feature = "kafka")]
        if let Some(cluster) = self.cluster.take() {
            cluster.stop().await;
        }
        (drained, counters, tracker)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::control::audit::{AuditLog, Event, EventKind};

    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<bool>) -> bool {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a check within 10 s")
            .expect("the task runs")
    }

    #[tokio::test]
    async fn the_audit_log_is_reverified_and_an_edit_turns_the_gauge_off() {
        let dir = std::env::temp_dir().join(format!(
            "freshet-reverify-{}-{}",
            std::process::id(),
            crate::dataplane::task::now_ms()
        ));
        let path = dir.join("audit.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        for i in 0..3 {
            log.append(
                EventKind::Override,
                Event {
                    detail: format!("change {i}"),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(super::reverify_audit(
            Arc::downgrade(&log),
            Duration::from_millis(20),
            move |ok| {
                let _ = tx.send(ok);
            },
        ));
        assert!(next(&mut rx).await);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("change 1", "change 9", 1)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while next(&mut rx).await {
            assert!(
                std::time::Instant::now() < deadline,
                "an edited log still verifies"
            );
        }
        drop(log);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends with the log")
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
