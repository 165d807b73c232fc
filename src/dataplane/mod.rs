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
mod dispatch;
pub mod dlq;
pub mod embed;
pub mod events;
pub mod extract;
mod flow;
pub mod index;
pub mod pipeline;
pub mod retry;
pub mod search;
pub mod source;
pub mod task;
pub mod transform;
pub mod versions;

use serde::Serialize;

pub use events::Counters;
pub use pipeline::{Deps, Pipeline};
pub use task::{Envelope, Task};

/// The stages of the pipeline, as metric labels and knob prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Reading tasks from the embedded queue or Kafka.
    Source,
    /// Keyword -> URLs.
    Search,
    /// URL -> markdown and quality.
    Extract,
    /// Markdown -> clean chunks.
    Transform,
    /// Chunks -> vectors.
    Embed,
    /// Vectors -> the index.
    Index,
}

impl Stage {
    /// The `stage` metric label and knob prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Search => "search",
            Stage::Extract => "extract",
            Stage::Transform => "transform",
            Stage::Embed => "embed",
            Stage::Index => "index",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
