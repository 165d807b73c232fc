//! The control plane (DESIGN.md §4-5).
//!
//! Here so far: the change-audit log ([`audit`]), which every later part
//! (policies, guard, rollout, operator overrides) writes to. The controller
//! loop, observation, policies, guard and rollout are the subject of the
//! control-plane issue and are not implemented yet.

pub mod audit;
