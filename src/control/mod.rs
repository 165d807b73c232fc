//! The control plane (DESIGN.md §4-5).
//!
//! - [`observe`]: windowed statistics from the metrics tap -> `Observation`;
//! - [`policy`]: what to change next (heuristic, LLM);
//! - [`guard`]: `policies/guardrails.toml`, which every change must pass;
//! - [`audit`]: the hash-chained change-audit log every decision lands in.

pub mod audit;
pub mod guard;
pub mod observe;
pub mod policy;
