//! The control plane (DESIGN.md §4-5).
//!
//! Here so far: the change-audit log ([`audit`]), which every later part
//! writes to, and the guard ([`guard`], `policies/guardrails.toml`) that
//! every proposed change must pass. The controller loop, observation,
//! policies and rollout are the subject of the control-plane issue and are
//! not implemented yet.

pub mod audit;
pub mod guard;
