//! The simulated web used by `freshet demo`, tests and benchmarks.
//!
//! One axum server on a loopback port ([`SimServer`]) serves, routed by the
//! `Host` header:
//! - `*.sim.test` hosts: article pages with realistic boilerplate over five
//!   site templates, JavaScript-only shells, near-duplicates, and hostile pages
//!   on `hostile.sim.test` (see [`corpus`]);
//! - any other host (`127.0.0.1:PORT`): the SERPpost-style API
//!   (`POST /api/search`, `POST /api/url`, bearer key, credits) and the
//!   introspection endpoints `GET /sim/stats` and `GET /sim/truth?url=…`.
//!
//! A [`Scenario`] (TOML in `scenarios/`) is a timeline of phases that sets
//! latency, rate/concurrency limits, error, reset and timeout rates and the
//! share of JavaScript-only pages, per endpoint and per domain. Everything is
//! a function of the seed: pages from `(seed, url, js_share)`, fault draws
//! from `(seed, request sequence number)`.
//!
//! Clients must resolve every `*.sim.test` name to the server's address.
//!
//! [`llm`] is a separate loopback server: a scripted OpenAI-compatible chat
//! endpoint for the `llm` policy (tests, and the bench's `llm-scripted`).
pub mod block;
pub mod corpus;
pub mod llm;
pub mod scenario;
pub mod server;
pub mod templates;
pub mod text;

pub use block::Block;
pub use corpus::{Corpus, HostileKind, PageKind, SearchHit, SimPage, HOSTILE_DOMAIN};
pub use scenario::{
    DomainOverride, EndpointProfile, Latency, Phase, Scenario, TaskMix, Workload, WorkloadOverride,
};
pub use server::{serve, EndpointStats, SimOptions, SimServer, SimStats};
