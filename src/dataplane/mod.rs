//! The data plane: sources, search, extract, transform, embed, index.
//!
//! Each stage is one module with a config part and a runtime part
//! (`<stage>/stage.rs`); stages talk only through bounded channels of typed
//! items ([`task`] from the sources, `flow` between stages). Every stage
//! reads the live knobs ([`crate::live::LiveConfig`]) once per unit of work.
//! [`pipeline`] wires them; [`versions`] orders a document's versions; the
//! slotted stages share one supervised dispatch loop (`dispatch`); every
//! outcome is one typed event ([`events`]) that counts and logs together.

pub mod ack;
pub mod circuit;
mod dispatch;
pub mod dlq;
pub mod embed;
pub mod events;
pub mod extract;
mod flow;
pub mod index;
pub mod pace;
pub mod pipeline;
pub mod retry;
pub mod search;
pub mod source;
pub mod task;
pub mod transform;
pub mod versions;

pub use crate::stage::Stage;
pub use events::Counters;
pub use pipeline::{Deps, Pipeline};
pub use task::{Envelope, Task};
