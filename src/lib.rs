//! freshet (skeleton; the module map is filled in as modules land)
pub mod sim;
