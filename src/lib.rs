//! freshet: a self-optimizing, real-time ETL service that keeps an LLM's
//! retrieval index fresh. `docs/ARCHITECTURE.md` holds the architecture;
//! this is the map of the code, kept current.
//!
//! ```text
//! cli/         one file per command: demo, run, bench, query, audit, dlq, config, extract, sim (mod.rs dispatches; main.rs only calls cli::main)
//! settings     static settings: TOML file + FRESHET_* env, validated into types
//! stage        Stage: the pipeline's stages as one leaf enum (metric labels, knob prefixes)
//! knobs        the live-tunable knobs, their paths ("extract.slots"), diff and patch
//! live         LiveConfig: ArcSwap of a versioned knob snapshot + change notifications; Slots
//! metrics      every metric name and label; the recorder: Prometheus + an in-process tap
//! netguard     the outbound address guard: every fetch of a URL someone else chose resolves and connects through it
//! dataplane/
//!   task       Task, Envelope, document ids, size limits
//!   pipeline   wiring only: the stages joined by bounded channels (flow: the items and what stages share)
//!   versions   per-document version ordering; dispatch: slot/spawn/reap with panic supervision
//!   events     typed internal events: one struct per outcome updates metric, tap and log together
//!   ack        per-source-message acknowledgement (fan-out aware) and commit watermarks
//!   source/    Source trait; embedded (files, stdin, POST /v1/ingest, in-process pushes); kafka (consumer
//!              group, ack-watermark commits, pause/resume); cdc (Debezium events -> tasks)
//!   search/    SearchProvider trait, SearchStage; serppost (SERPpost-style JSON API)
//!   extract/   fetch (limits, charsets), render (modes), depth (nesting cap), content (main content), quality,
//!              batch (many saved pages), corpus (real-page corpora and scoring)
//!              (each of search/, extract/, transform/, embed/, index/ has its stage in stage.rs)
//!   transform/ Polars micro-batches: normalize, filter, dedupe, chunk, ids
//!   embed/     Embedder trait; openai (async-openai), hash (lexical, tests)
//!   index/     VectorIndex trait; edge (qdrant-edge, embedded), qdrant (qdrant-client)
//!   retry      backoff with jitter honouring Retry-After; error classes; live knobs per attempt
//!   dlq/       DeadLetterSink trait and the Dlq front; file (fsynced JSONL), kafka (a topic with headers); replay
//! control/     the controller loop (mod.rs) and ControlState shared with the admin API
//!   observe    metrics tap snapshots -> windowed Observation
//!   policy/    Policy trait; static, aimd (concurrency baseline), heuristic (built in), llm/ (OpenAI-compatible chat: prompt, transport, answer)
//!   guard      policies/*.toml -> Guard; accept / clamp / reject with reasons
//!   rollout    apply (audit, fsync, then swap), bake, commit or roll back
//!   audit      append-only hash-chained change-audit log; verify, torn-line repair
//! kafka/       shared Kafka client code: client config + log context, admin (ensure/delete topic),
//!              assign_all, source refs, KafkaError; control_topic (producer, reader, leader group member)
//! service/     Runtime (settings -> running pipeline, one list of sources), http (health, metrics, ingest),
//!              search (POST /v1/search), mcp (MCP tools at /mcp and on stdio), lock (one process per data dir), admin API, shutdown, cluster (control topic records: shared knob versions, audit mirror,
//!              controller leadership)
//! bench/       the scenario bench: workload streams, runs, oracle search, report, SVG charts
//! sim/         the simulated web on loopback: pages, search/render/embeddings API, scenarios
//!              and their workloads; llm: a scripted OpenAI-compatible chat endpoint
//! ```

#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod control;
pub mod dataplane;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod knobs;
pub mod live;
pub mod metrics;
pub mod netguard;
pub mod service;
pub mod settings;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stage;
