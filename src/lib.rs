//! freshet: a self-optimizing, real-time ETL service that keeps an LLM's
//! retrieval index fresh. `../shared/DESIGN.md` (and `docs/`) hold the
//! architecture; this is the map of the code, kept current.
//!
//! ```text
//! cli          clap commands: config, extract, sim (the binary's main.rs only calls cli::main)
//! settings     static settings: TOML file + FRESHET_* env, validated into types
//! knobs        the live-tunable knobs, their paths ("extract.slots"), diff and patch
//! live         LiveConfig: ArcSwap of a versioned knob snapshot + change notifications; Slots
//! metrics      every metric name and label; the Prometheus recorder
//! dataplane/
//!   retry      backoff with jitter honouring Retry-After; error classes; live knobs per attempt
//!   search/    SearchProvider trait, SearchStage; serppost (SERPpost-style JSON API)
//!   extract/   fetch (limits, charsets), render (modes), content (main content), quality
//! sim/         the simulated web on loopback: pages, search/render API, scenarios
//! ```
//!
//! Not yet here (see the open issues): pipeline wiring and acknowledgement,
//! sources, transform, embed, index, dead letters, the control plane and the
//! admin service.

pub mod cli;
pub mod dataplane;
pub mod knobs;
pub mod live;
pub mod metrics;
pub mod service;
pub mod settings;
pub mod sim;
